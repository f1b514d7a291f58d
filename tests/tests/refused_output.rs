//! The analyzer's at-least-once rule when Kafka refuses its output (issue #12.4): a dead letter
//! the broker will not take fails its batch, and the analyzer stops before the offsets of that
//! batch are stored, so its events are read again after a restart instead of being lost.
//!
//! On a real broker the dead-letter topic is created with a `max.message.bytes` smaller than
//! any envelope, so the broker answers the produce with MSG_SIZE_TOO_LARGE; on rdkafka's
//! MockCluster every produce request is answered with that error instead.

use prefetch_e2e::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;
use std::time::Duration;

/// Creates `topic` (3 partitions) with a broker-side message size limit of `max_bytes`.
async fn create_tiny_topic(bootstrap: &str, topic: &str, max_bytes: usize) {
    let admin: AdminClient<_> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().expect("admin client");
    let limit = max_bytes.to_string();
    let new = NewTopic::new(topic, 3, TopicReplication::Fixed(1)).set("max.message.bytes", &limit);
    let done = admin.create_topics([&new], &AdminOptions::new()).await.expect("create_topics");
    for r in done {
        r.expect("the dead-letter topic is created");
    }
}

/// The offsets `group` has committed on `topic`'s partitions (`None`: nothing committed).
async fn committed(bootstrap: &str, group: &str, topic: &str) -> Vec<(i32, Option<i64>)> {
    let (bootstrap, group, topic) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let md = c.fetch_metadata(Some(&topic), Duration::from_secs(10)).expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition(&topic, p.id());
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), Some(o)),
                _ => (e.partition(), None),
            })
            .collect()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_kafka_refuses_stops_the_analyzer_before_its_offsets_are_stored() {
    let kafka = TestKafka::start();
    let bootstrap = kafka.bootstrap();
    let mut cfg = analyzer::service::Config::new(&bootstrap);
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics("refused");
    cfg.group_id = format!("{}analyzer", cfg.topics.query_events_topic);
    cfg.tick_interval = Duration::from_millis(500);
    cfg.hour_weights = Some(String::new());
    kafka.prepare(&cfg.topics);
    let (events, dlq, group) =
        (cfg.topics.query_events_topic.clone(), cfg.topics.dlq_topic.clone(), cfg.group_id.clone());
    if kafka.is_real() {
        // Smaller than any envelope: the producer (message.max.bytes 1 MB) sends it, and the
        // broker refuses it.
        create_tiny_topic(&bootstrap, &dlq, 256).await;
    }
    kafka.precreate(&events).await;

    // One partition's whole content: the poison first (offset 0), then events after it that
    // would be folded and committed if the refusal were ignored. The same key puts them all
    // on one partition.
    let poison = format!("not json {}", "x".repeat(2_000));
    produce_raw(&bootstrap, &events, "SAMEKEY", poison.as_bytes()).await;
    for i in 0..5 {
        let good = json!({"ticker": "SAMEKEY", "module": format!("m{i}")}).to_string();
        produce_raw(&bootstrap, &events, "SAMEKEY", good.as_bytes()).await;
    }
    if let TestKafka::Mock(m) = &kafka {
        // From here on, every produce request is refused as the real broker refuses it above.
        let errors =
            vec![rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 10_000];
        m.request_errors(rdkafka::types::RDKafkaApiKey::Produce, &errors);
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(analyzer::service::serve(cfg, listener, shutdown.clone()));
    let ended = tokio::time::timeout(Duration::from_secs(60), run).await;
    shutdown.cancel();
    let result = ended.expect("the analyzer stops by itself within 60 s").unwrap();
    let err = format!("{:#}", result.expect_err("the analyzer stops with an error"));
    assert!(
        err.contains("too large") || err.contains("TooLarge") || err.contains("SIZE_TOO_LARGE"),
        "the error names Kafka's refusal: {err}"
    );

    // Nothing of that partition was committed past the poison (offset 0): all six messages are
    // read again after a restart.
    let offsets = committed(&bootstrap, &group, &events).await;
    assert_eq!(offsets.len(), 3, "{offsets:?}");
    for (partition, offset) in &offsets {
        assert!(
            offset.is_none_or(|o| o == 0),
            "partition {partition}: committed {offset:?} past the refused dead letter"
        );
    }
    assert_eq!(topic_count(&bootstrap, &events).await, 6);
}
