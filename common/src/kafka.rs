//! Kafka plumbing shared by every stage: connection flags, one builder per client kind that sets
//! every semantic key explicitly, topic names, and start-up topic creation.

use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use std::time::Duration;

/// Errors talking to Kafka at start-up or while checking readiness.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// A `-X key=value` option was not of that form.
    #[error("librdkafka option {0:?} is not of the form key=value")]
    BadOption(String),
    /// The client could not be created (bad configuration).
    #[error("could not create the Kafka client: {0}")]
    Client(#[source] KafkaError),
    /// The brokers did not answer a metadata request.
    #[error("Kafka at {brokers} did not answer within {timeout:?}: {source}")]
    Unreachable {
        /// The bootstrap list tried.
        brokers: String,
        /// How long we waited.
        timeout: Duration,
        /// The last error.
        #[source]
        source: KafkaError,
    },
    /// A topic was missing and could not be created.
    #[error("topic {topic:?} is missing and could not be created: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// What the broker said.
        reason: String,
    },
    /// A topic could not be read (metadata, watermarks or assignment failed).
    #[error("cannot read topic {topic:?}: {source}")]
    Follow {
        /// The topic.
        topic: String,
        /// What the client said.
        #[source]
        source: KafkaError,
    },
    /// The thread that follows a topic could not be started.
    #[error("cannot start a reader thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// How to reach Kafka. Shared by every binary so the flags read the same everywhere.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long = "brokers", env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Extra librdkafka option for every client, as key=value (repeatable). Applied after the
    /// built-in settings, so it can override them (e.g. `-X security.protocol=ssl`).
    #[arg(
        short = 'X',
        long = "kafka-option",
        value_name = "KEY=VALUE",
        env = "KAFKA_OPTIONS",
        value_delimiter = ','
    )]
    pub options: Vec<String>,
    /// Partitions for topics this service creates when they are missing.
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
    /// Replication factor for topics this service creates when they are missing.
    #[arg(long, env = "KAFKA_TOPIC_REPLICATION", default_value_t = 1)]
    pub topic_replication: i32,
}

impl KafkaArgs {
    /// Connection settings for `brokers`, with defaults for everything else.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            options: Vec::new(),
            topic_partitions: 6,
            topic_replication: 1,
        }
    }

    fn base_config(&self) -> Result<ClientConfig, KafkaSetupError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        c.set("client.id", "smart-prefetch");
        // librdkafka's own log lines reach `tracing` through the `log` bridge.
        c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
        Ok(c)
    }

    fn apply_options(&self, c: &mut ClientConfig) -> Result<(), KafkaSetupError> {
        for opt in &self.options {
            let (k, v) =
                opt.split_once('=').ok_or_else(|| KafkaSetupError::BadOption(opt.clone()))?;
            c.set(k.trim(), v.trim());
        }
        Ok(())
    }

    /// A producer that never loses an acknowledged event: idempotent, `acks=all`, and a bounded
    /// delivery timeout so a caller learns of an outage within `delivery_timeout`.
    pub fn producer(&self, delivery_timeout: Duration) -> Result<FutureProducer, KafkaSetupError> {
        let mut c = self.base_config()?;
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", delivery_timeout.as_millis().to_string())
            // Measured (BENCHMARKS.md): 0 beats librdkafka's default of 5 for both batched
            // throughput (batches still form while a request is in flight) and the latency of
            // single-event requests (p50 6 ms → 0.5 ms).
            .set("linger.ms", "0")
            .set("compression.type", "lz4")
            // Room for a whole 8 MiB batch request of small events, several requests deep.
            .set("queue.buffering.max.messages", "1000000")
            // Keyed by ticker: murmur2 matches the Java client, so any producer of the topic
            // places a ticker on the same partition.
            .set("partitioner", "murmur2_random");
        self.apply_options(&mut c)?;
        c.create().map_err(KafkaSetupError::Client)
    }

    /// An admin client, for creating topics and reading metadata.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, KafkaSetupError> {
        let mut c = self.base_config()?;
        self.apply_options(&mut c)?;
        c.create().map_err(KafkaSetupError::Client)
    }

    /// A consumer in `group` with manual offset storage: the caller stores an offset only after
    /// what it caused is durable (at-least-once), and the client commits stored offsets.
    pub fn consumer_config(&self, group: &str) -> Result<ClientConfig, KafkaSetupError> {
        let mut c = self.base_config()?;
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            // librdkafka's default (1000 ms) stalls a partition's fetching for a whole second
            // whenever the local queue is full: a consumer slower than its fetcher drains in
            // bursts (BENCHMARKS.md, analyzer).
            .set("fetch.queue.backoff.ms", "10")
            .set("enable.partition.eof", "false");
        self.apply_options(&mut c)?;
        Ok(c)
    }
}

impl KafkaArgs {
    /// A plain reader (no group membership, no commits) for `assign`-based reads such as
    /// rebuilding state from a topic.
    pub fn reader_config(&self) -> Result<ClientConfig, KafkaSetupError> {
        let mut c = self.base_config()?;
        c.set("group.id", "smart-prefetch-reader")
            // A start offset that retention already deleted falls back to the oldest message.
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        self.apply_options(&mut c)?;
        Ok(c)
    }
}

/// Topic names, configurable so several deployments (or tests) can share one cluster.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Topic of query events (key = ticker).
    #[arg(long, env = "TOPIC_QUERY_EVENTS", default_value = "prefetch.query-events")]
    pub query_events_topic: String,
    /// Topic of predictions.
    #[arg(long, env = "TOPIC_PREDICTIONS", default_value = "prefetch.predictions")]
    pub predictions_topic: String,
    /// Compacted topic holding the live configuration.
    #[arg(long, env = "TOPIC_CONFIG", default_value = "prefetch.config")]
    pub config_topic: String,
    /// Compacted topic of the analyzers' patterns snapshots (key = analyzer instance), read by
    /// the API front door for `action=stats`.
    #[arg(long, env = "TOPIC_STATS", default_value = "prefetch.stats")]
    pub stats_topic: String,
    /// Dead-letter topic for messages that could not be processed.
    #[arg(long, env = "TOPIC_DLQ", default_value = "prefetch.dlq")]
    pub dlq_topic: String,
}

impl Default for TopicArgs {
    fn default() -> Self {
        Self {
            query_events_topic: "prefetch.query-events".into(),
            predictions_topic: "prefetch.predictions".into(),
            config_topic: "prefetch.config".into(),
            stats_topic: "prefetch.stats".into(),
            dlq_topic: "prefetch.dlq".into(),
        }
    }
}

impl TopicArgs {
    /// Every name with `prefix` prepended (tests use it to isolate themselves on a shared broker).
    pub fn prefixed(prefix: &str) -> Self {
        let d = Self::default();
        Self {
            query_events_topic: format!("{prefix}{}", d.query_events_topic),
            predictions_topic: format!("{prefix}{}", d.predictions_topic),
            config_topic: format!("{prefix}{}", d.config_topic),
            stats_topic: format!("{prefix}{}", d.stats_topic),
            dlq_topic: format!("{prefix}{}", d.dlq_topic),
        }
    }
}

/// A topic a service needs, and how to create it when it is missing.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// The topic name.
    pub name: String,
    /// Log compaction (for the config and stats topics) instead of time retention.
    pub compacted: bool,
}

/// Waits (up to `timeout`) for the brokers to answer, then creates whichever of `specs` are
/// missing. Fails with a message that names the topic or the brokers at fault.
pub async fn ensure_topics(
    args: &KafkaArgs,
    specs: &[TopicSpec],
    timeout: Duration,
) -> Result<(), KafkaSetupError> {
    let admin = std::sync::Arc::new(args.admin()?);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut existing = loop {
        let a = admin.clone();
        // Metadata requests block; keep them off the async workers.
        let md = tokio::task::spawn_blocking(move || {
            a.inner()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|md| md.topics().iter().map(|t| t.name().to_owned()).collect::<Vec<_>>())
        })
        .await
        .expect("metadata task panicked");
        match md {
            Ok(names) => break names,
            Err(source) if tokio::time::Instant::now() >= deadline => {
                return Err(KafkaSetupError::Unreachable {
                    brokers: args.brokers.clone(),
                    timeout,
                    source,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, brokers = %args.brokers, "Kafka not answering yet; retrying.");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let missing: Vec<_> = specs.iter().filter(|s| !existing.contains(&s.name)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let new_topics: Vec<NewTopic> = missing
        .iter()
        .map(|s| {
            let partitions = if s.compacted { 1 } else { args.topic_partitions };
            let t =
                NewTopic::new(&s.name, partitions, TopicReplication::Fixed(args.topic_replication));
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let create_err =
        |reason: String| KafkaSetupError::CreateTopic { topic: missing[0].name.clone(), reason };
    // The future has been seen to never resolve against a broker that lacks CreateTopics
    // (rdkafka's MockCluster); bound it so start-up fails with a message instead of hanging.
    let results =
        tokio::time::timeout(Duration::from_secs(15), admin.create_topics(&new_topics, &opts))
            .await
            .map_err(|_| create_err("the broker did not answer CreateTopics within 15s".into()))?
            .map_err(|e| create_err(e.to_string()))?;
    for r in results {
        match r {
            Ok(name) => {
                tracing::info!(topic = %name, "Created missing topic.");
                existing.push(name);
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::CreateTopic { topic, reason: code.to_string() })
            }
        }
    }
    Ok(())
}

/// Whether the brokers answer and `topic` exists with at least one partition (for `/readyz`).
/// Blocking: call it from `spawn_blocking`.
pub fn topic_ready<C: rdkafka::ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<(), String> {
    let md = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("Kafka unreachable: {e}"))?;
    match md.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
        Some(t) => Err(format!("topic {topic:?} not available: {:?}", t.error())),
        None => Err(format!("topic {topic:?} not found")),
    }
}
