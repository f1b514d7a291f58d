//! The broker a test talks to ([`TestKafka`]), unique topic names, and producing to and reading
//! back topics. Readers use `assign`, never a subscribed group consumer (see the crate docs).

use crate::init_logs;
use prefetch_common::kafka::{KafkaArgs, TopicArgs};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The broker a test talks to.
pub enum TestKafka {
    /// A real broker named by `KAFKA_BOOTSTRAP` (CI: Apache Kafka started by `scripts/kafka.sh`).
    Real(String),
    /// rdkafka's in-process mock cluster, for machines with nothing installed.
    Mock(MockCluster<'static, DefaultProducerContext>),
}

impl TestKafka {
    /// `KAFKA_BOOTSTRAP` when set, otherwise a fresh one-broker `MockCluster`.
    pub fn start() -> Self {
        init_logs();
        match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(b) if !b.trim().is_empty() => Self::Real(b),
            _ => Self::Mock(MockCluster::new(1).expect("start rdkafka MockCluster")),
        }
    }

    /// Bootstrap servers for clients.
    pub fn bootstrap(&self) -> String {
        match self {
            Self::Real(b) => b.clone(),
            Self::Mock(m) => m.bootstrap_servers(),
        }
    }

    /// Whether this is a real broker.
    pub fn is_real(&self) -> bool {
        matches!(self, Self::Real(_))
    }

    /// Makes `topics` exist before a service starts. A real broker is left alone (the services
    /// create what they need, which is part of what is tested); the MockCluster does not answer
    /// CreateTopics, so its topics are made through the mock's own API.
    pub fn prepare(&self, topics: &TopicArgs) {
        if let Self::Mock(m) = self {
            for t in [&topics.query_events_topic, &topics.predictions_topic, &topics.dlq_topic] {
                m.create_topic(t, 3, 1).expect("mock create_topic");
            }
            for t in [&topics.config_topic, &topics.stats_topic] {
                m.create_topic(t, 1, 1).expect("mock create_topic");
            }
        }
    }

    /// Makes one extra topic exist (MockCluster only, as [`TestKafka::prepare`]).
    pub fn prepare_topic(&self, topic: &str, partitions: i32) {
        if let Self::Mock(m) = self {
            m.create_topic(topic, partitions, 1).expect("mock create_topic");
        }
    }

    /// Creates `topic` now, on either broker, for a test that writes to it before the service
    /// that would create it has started.
    pub async fn precreate(&self, topic: &str) {
        match self {
            Self::Mock(m) => {
                let _ = m.create_topic(topic, 3, 1);
            }
            Self::Real(_) => {
                let spec =
                    prefetch_common::kafka::TopicSpec { name: topic.to_owned(), compacted: false };
                prefetch_common::kafka::ensure_topics(
                    &self.kafka_args(),
                    &[spec],
                    Duration::from_secs(30),
                )
                .await
                .expect("create topic");
            }
        }
    }

    /// Connection settings for a service under test (3 partitions per created topic).
    pub fn kafka_args(&self) -> KafkaArgs {
        let mut a = KafkaArgs::new(self.bootstrap());
        a.topic_partitions = 3;
        a
    }
}

/// Topic names no other test (or earlier run on the same broker) uses.
pub fn unique_topics(test: &str) -> TopicArgs {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            % 1_000_000_000;
    TopicArgs::prefixed(&format!(
        "t-{test}-{}-{nanos}-{}.",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition it was on.
    pub partition: i32,
    /// Its key as UTF-8.
    pub key: String,
    /// Its payload parsed as JSON.
    pub value: serde_json::Value,
}

/// Reads `topic` from the beginning of every partition until `expected` messages were seen or
/// `deadline` passes; returns what was read (in partition order, then offset order).
pub async fn read_topic(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    deadline: Duration,
) -> Vec<Record> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "e2e-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("reader");
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(&topic, p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let end = Instant::now() + deadline;
        let mut out = Vec::new();
        while out.len() < expected && Instant::now() < end {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(Record {
                    partition: m.partition(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .expect("payload is JSON"),
                }),
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out.sort_by_key(|r| r.partition);
        out
    })
    .await
    .unwrap()
}

/// Exactly how many messages `topic` holds, from the partitions' watermarks (no polling: an
/// acknowledged message has already moved the high watermark).
pub async fn topic_count(bootstrap: &str, topic: &str) -> i64 {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).create().expect("client");
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).expect("metadata");
        md.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (lo, hi) = consumer
                    .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                    .expect("watermarks");
                hi - lo
            })
            .sum()
    })
    .await
    .unwrap()
}

/// Produces JSON values to `topic`, keyed by their `ticker` field, and waits for every ack.
pub async fn produce_json(bootstrap: &str, topic: &str, values: &[serde_json::Value]) {
    let p = producer(bootstrap);
    for v in values {
        let key = v["ticker"].as_str().unwrap_or_default().to_uppercase();
        let body = v.to_string();
        p.send(FutureRecord::to(topic).key(&key).payload(&body), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// Produces one raw message (e.g. a poison message) and waits for its ack.
pub async fn produce_raw(bootstrap: &str, topic: &str, key: &str, payload: &[u8]) {
    producer(bootstrap)
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer")
}

/// Reads `topic` from the beginning until a record satisfies `pred`; returns everything read up
/// to and including it. Panics after `deadline`.
pub async fn read_topic_until(
    bootstrap: &str,
    topic: &str,
    deadline: Duration,
    pred: impl Fn(&Record) -> bool,
) -> Vec<Record> {
    let end = Instant::now() + deadline;
    loop {
        let n = topic_count(bootstrap, topic).await as usize;
        if n > 0 {
            let got = read_topic(bootstrap, topic, n, Duration::from_secs(10)).await;
            if let Some(i) = got.iter().position(&pred) {
                return got[..=i].to_vec();
            }
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for a matching record on {topic}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
