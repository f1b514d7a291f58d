//! Kafka plumbing shared by every stage: connection flags, one builder per client kind that sets
//! every semantic key explicitly, topic names, and start-up topic creation.
//!
//! User settings reach every client in one order: built-in keys, then the `--kafka-config`
//! properties file ([`properties`]), then `-X key=value`; each builder validates the result with
//! librdkafka before returning, so a typo fails at start-up with the key and where it came from.

mod acks;
pub mod properties;
mod topics;

pub use acks::{AckContext, Acks, AcksError};
pub use properties::{KafkaConfigFile, PropertiesError};
pub use topics::{ensure_topics, topic_ready, SetupContext, TopicArgs, TopicSpec};

use clap::Args;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, FutureProducer};
use std::path::PathBuf;
use std::time::Duration;

/// Errors talking to Kafka at start-up or while checking readiness.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// A `-X key=value` option was not of that form.
    #[error("librdkafka option {0:?} is not of the form key=value")]
    BadOption(String),
    /// The `--kafka-config` file could not be read or parsed.
    #[error(transparent)]
    Properties(#[from] PropertiesError),
    /// librdkafka refused a key or value (unknown property, bad value, feature not built in).
    #[error("librdkafka refused {key:?} (set by {origin}): {reason}")]
    Refused {
        /// The librdkafka key.
        key: String,
        /// Where it came from: `-X`, `FILE:LINE` of `--kafka-config`, or the built-in settings.
        origin: String,
        /// librdkafka's explanation, with a sensitive value redacted.
        reason: String,
    },
    /// The brokers refused the credentials or the TLS handshake: retrying will not help.
    #[error("Kafka at {brokers} refused the connection: {reason}")]
    Rejected {
        /// The bootstrap list tried.
        brokers: String,
        /// librdkafka's report (names the broker, the mechanism and the failure).
        reason: String,
    },
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
/// `Debug` redacts sensitive values (passwords, secrets, keys, `sasl.*`).
#[derive(Clone, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long = "brokers", env = "PREFETCH_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Kafka client properties file (librdkafka keys as key=value lines, # comments), e.g.
    /// security.protocol, sasl.mechanism, sasl.username, sasl.password, ssl.ca.location. Keeps
    /// secrets out of argv and the environment. Applied after the built-in settings; -X wins.
    /// Read when each client is built: a bad file stops start-up with its path and line.
    #[arg(long = "kafka-config", value_name = "FILE", env = "PREFETCH_KAFKA_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// Extra librdkafka option for every client, as key=value (repeatable). Applied after the
    /// built-in settings and --kafka-config, so it overrides them (e.g. `-X acks=1`). Prefer
    /// --kafka-config for passwords: argv is visible to every local user.
    #[arg(
        short = 'X',
        long = "kafka-option",
        value_name = "KEY=VALUE",
        env = "PREFETCH_KAFKA_OPTIONS",
        value_delimiter = ','
    )]
    pub options: Vec<String>,
    /// Partitions for topics this service creates when they are missing.
    #[arg(long, env = "PREFETCH_KAFKA_TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
    /// Replication factor for topics this service creates when they are missing.
    #[arg(long, env = "PREFETCH_KAFKA_TOPIC_REPLICATION", default_value_t = 1)]
    pub topic_replication: i32,
}

impl KafkaArgs {
    /// Connection settings for `brokers`, with defaults for everything else.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            config_file: None,
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

    /// The `-X` options as (key, value) pairs.
    fn x_options(&self) -> Result<Vec<(&str, &str)>, KafkaSetupError> {
        self.options
            .iter()
            .map(|opt| {
                let (k, v) =
                    opt.split_once('=').ok_or_else(|| KafkaSetupError::BadOption(opt.clone()))?;
                Ok((k.trim(), v.trim()))
            })
            .collect()
    }

    /// Applies the properties file, then `-X`, then asks librdkafka to accept every key and
    /// value (without starting a client), so a refusal names the key and where it was set.
    fn apply_options(&self, c: &mut ClientConfig) -> Result<(), KafkaSetupError> {
        let file = self.config_file.as_ref().map(KafkaConfigFile::load).transpose()?;
        for p in file.iter().flat_map(|f| &f.properties) {
            c.set(&p.key, &p.value);
        }
        let x = self.x_options()?;
        for (k, v) in &x {
            c.set(*k, *v);
        }
        let Err(e) = c.create_native_config() else { return Ok(()) };
        let KafkaError::ClientConfig(_, desc, key, value) = e else {
            return Err(KafkaSetupError::Client(e));
        };
        let origin = if x.iter().any(|(k, _)| *k == key) {
            "-X".to_owned()
        } else if let Some((f, line)) = file.as_ref().and_then(|f| Some((f, f.line_of(&key)?))) {
            format!("--kafka-config {}:{line}", f.path.display())
        } else {
            "the built-in settings".to_owned()
        };
        let reason = if properties::is_sensitive(&key) && !value.is_empty() {
            desc.replace(&value, "[redacted]")
        } else {
            desc
        };
        Err(KafkaSetupError::Refused { key, origin, reason })
    }

    /// A producer that never loses an acknowledged event: idempotent, `acks=all`, and a bounded
    /// delivery timeout so a caller learns of an outage within `delivery_timeout`.
    pub fn producer(&self, delivery_timeout: Duration) -> Result<FutureProducer, KafkaSetupError> {
        self.producer_config(delivery_timeout)?.create().map_err(KafkaSetupError::Client)
    }

    /// The settings of [`KafkaArgs::producer`], for a producer with a context of its own (ingest
    /// counts a batch's acknowledgements in its delivery callback instead of one future each).
    pub fn producer_config(
        &self,
        delivery_timeout: Duration,
    ) -> Result<ClientConfig, KafkaSetupError> {
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
        Ok(c)
    }

    /// An admin client, for creating topics and reading metadata.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, KafkaSetupError> {
        let mut c = self.base_config()?;
        self.apply_options(&mut c)?;
        c.create().map_err(KafkaSetupError::Client)
    }

    /// A bare client for start-up metadata requests whose errors are served by `poll`, so
    /// [`SetupContext`] sees an authentication or TLS failure (an admin client never polls the
    /// queue librdkafka reports them on).
    pub(crate) fn probe(&self) -> Result<BaseProducer<SetupContext>, KafkaSetupError> {
        let mut c = self.base_config()?;
        self.apply_options(&mut c)?;
        c.create_with_context(SetupContext::default()).map_err(KafkaSetupError::Client)
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

impl std::fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: Vec<String> = self
            .options
            .iter()
            .map(|o| match o.split_once('=') {
                Some((k, v)) => format!("{k}={}", properties::shown(k.trim(), v)),
                None => o.clone(),
            })
            .collect();
        f.debug_struct("KafkaArgs")
            .field("brokers", &self.brokers)
            .field("config_file", &self.config_file)
            .field("options", &options)
            .field("topic_partitions", &self.topic_partitions)
            .field("topic_replication", &self.topic_replication)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str) -> (KafkaArgs, PathBuf) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join(format!("prefetch-kafka-config-{}-{n}.properties", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let mut a = KafkaArgs::new("127.0.0.1:1");
        a.config_file = Some(path.clone());
        (a, path)
    }

    #[test]
    fn the_file_applies_after_built_ins_and_x_overrides_it() {
        let (mut a, path) =
            with_file("# comment\nacks=1\nclient.id=from-file\nsasl.password=hunter2\n");
        a.options = vec!["client.id=from-x".into()];
        let c = a.consumer_config("g").unwrap();
        assert_eq!(c.get("client.id"), Some("from-x"));
        assert_eq!(c.get("acks"), Some("1"));
        assert_eq!(c.get("group.id"), Some("g"));
        let d = format!("{a:?}");
        assert!(!d.contains("hunter2"), "{d}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn an_unknown_key_names_the_key_and_the_file_line() {
        let (a, path) = with_file("security.protocol=plaintext\n\nsasl.pasword=hunter2\n");
        let e = a.reader_config().unwrap_err().to_string();
        assert!(e.contains("\"sasl.pasword\""), "{e}");
        assert!(e.contains(&format!("{}:3", path.display())), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let mut x = KafkaArgs::new("127.0.0.1:1");
        x.options = vec!["sasl.pasword=hunter2".into()];
        let e = x.admin().err().unwrap().to_string();
        assert!(e.contains("\"sasl.pasword\"") && e.contains("-X") && !e.contains("hunter2"));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn tls_and_scram_are_built_in() {
        let (a, path) = with_file(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.username=u\nsasl.password=p\n",
        );
        // librdkafka checks the protocol when the key is set and the mechanism when a client is
        // made; without OpenSSL both are refused.
        a.consumer_config("g").expect("librdkafka built with SSL");
        for m in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] {
            let mut b = a.clone();
            b.options = vec![format!("sasl.mechanism={m}")];
            if let Err(e) = b.admin() {
                panic!("{m}: {e}");
            }
        }
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn an_unreadable_or_bad_file_is_named() {
        let mut a = KafkaArgs::new("127.0.0.1:1");
        a.config_file = Some("/nonexistent/client.properties".into());
        let e = a.reader_config().unwrap_err().to_string();
        assert!(e.contains("/nonexistent/client.properties"), "{e}");
        let (b, path) = with_file("acks=all\nnot a property\n");
        let e = b.reader_config().unwrap_err().to_string();
        assert!(e.contains(&format!("{}:2", path.display())), "{e}");
        let _ = std::fs::remove_file(path);
    }
}
