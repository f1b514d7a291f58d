//! Topic names, start-up topic creation and readiness checks.

use super::{KafkaArgs, KafkaSetupError};
use clap::Args;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{Producer, ProducerContext};
use std::sync::Mutex;
use std::time::Duration;

/// Client context of the start-up metadata probe: logs librdkafka's errors like the default
/// context and keeps the first one that retrying cannot fix (wrong credentials, a certificate
/// the client does not trust), so [`ensure_topics`] fails in seconds with librdkafka's own
/// report (broker, mechanism, reason) instead of waiting out its timeout.
#[derive(Default)]
pub struct SetupContext {
    rejected: Mutex<Option<String>>,
}

impl SetupContext {
    /// The first authentication or TLS failure seen, if any.
    pub fn rejected(&self) -> Option<String> {
        self.rejected.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ClientContext for SetupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let refused = match code {
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::SSL,
            ) => true,
            // A certificate the broker refuses ("sslv3 alert bad certificate", mutual TLS
            // without a client certificate) or the client does not trust ("certificate verify
            // failed") arrives as a transport failure; other transport failures may heal.
            Some(RDKafkaErrorCode::BrokerTransportFailure) => {
                reason.contains("certificate") || reason.contains("SSL handshake failed")
            }
            _ => false,
        };
        if !refused {
            // Expected while the brokers start (librdkafka's own log says why); ensure_topics warns
            // once per retry.
            tracing::debug!(error = %error, reason, "librdkafka error during start-up.");
            return;
        }
        tracing::error!(error = %error, reason, "Kafka refused the connection.");
        let mut r = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        r.get_or_insert_with(|| reason.to_owned());
    }
}

impl ProducerContext for SetupContext {
    type DeliveryOpaque = ();
    // The probe never produces.
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Topic names, configurable so several deployments (or tests) can share one cluster.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Topic of query events (key = ticker).
    #[arg(long, env = "PREFETCH_TOPIC_QUERY_EVENTS", default_value = "prefetch.query-events")]
    pub query_events_topic: String,
    /// Topic of predictions.
    #[arg(long, env = "PREFETCH_TOPIC_PREDICTIONS", default_value = "prefetch.predictions")]
    pub predictions_topic: String,
    /// Compacted topic holding the live configuration.
    #[arg(long, env = "PREFETCH_TOPIC_CONFIG", default_value = "prefetch.config")]
    pub config_topic: String,
    /// Compacted topic of the analyzers' patterns snapshots (key = analyzer instance), read by
    /// the API front door for `action=stats`.
    #[arg(long, env = "PREFETCH_TOPIC_STATS", default_value = "prefetch.stats")]
    pub stats_topic: String,
    /// Dead-letter topic for messages that could not be processed.
    #[arg(long, env = "PREFETCH_TOPIC_DLQ", default_value = "prefetch.dlq")]
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
    let probe = std::sync::Arc::new(args.probe()?);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut existing = loop {
        let p = probe.clone();
        // Metadata requests block; keep them off the async workers. Polling before and after
        // serves the error events (a failed SASL handshake is reported there, not as the
        // metadata error, which is only a timeout).
        let (md, rejected) = tokio::task::spawn_blocking(move || {
            p.poll(Duration::ZERO);
            let md = p
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|md| md.topics().iter().map(|t| t.name().to_owned()).collect::<Vec<_>>());
            p.poll(Duration::ZERO);
            (md, p.context().rejected())
        })
        .await
        .expect("metadata task panicked");
        if let Some(reason) = rejected {
            return Err(KafkaSetupError::Rejected { brokers: args.brokers.clone(), reason });
        }
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
    drop(probe);
    let admin = args.admin()?;
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
