//! Kafka consumers: a subscribed group consumer whose statistics feed the per-partition lag
//! gauge, and the shutdown step that commits and then lets go of it.

use crate::metrics::Metrics;
use prefetch_common::kafka::{KafkaArgs, KafkaSetupError};
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often librdkafka reports statistics (and so how fresh the lag gauge is).
const STATS_INTERVAL_MS: &str = "5000";
/// How long the final commit may take before shutdown goes on without it.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer context that turns librdkafka statistics into the lag gauge. It only sets
/// gauges: nothing in an rdkafka callback may panic.
pub struct LagContext {
    metrics: Metrics,
    consumer: &'static str,
}

impl ClientContext for LagContext {
    fn stats(&self, stats: Statistics) {
        for topic in stats.topics.values() {
            for (&partition, p) in &topic.partitions {
                // Partition -1 is librdkafka's internal "unassigned" queue; lag -1 means unknown.
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics.lag(self.consumer, partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for LagContext {}

/// A subscribed consumer of the warmer.
pub type WarmerConsumer = StreamConsumer<LagContext>;

/// A consumer of `topic` in `group` with manual offset storage (see
/// [`KafkaArgs::consumer_config`]); `label` names it in the lag gauge.
pub fn subscribe(
    kafka: &KafkaArgs,
    group: &str,
    topic: &str,
    label: &'static str,
    metrics: Metrics,
) -> Result<Arc<WarmerConsumer>, KafkaSetupError> {
    let mut c = kafka.consumer_config(group)?;
    if c.get("statistics.interval.ms").is_none() {
        c.set("statistics.interval.ms", STATS_INTERVAL_MS);
    }
    let consumer: WarmerConsumer = c
        .create_with_context(LagContext { metrics, consumer: label })
        .map_err(KafkaSetupError::Client)?;
    consumer.subscribe(&[topic]).map_err(KafkaSetupError::Client)?;
    tracing::info!(group, topic, "Subscribed.");
    Ok(Arc::new(consumer))
}

/// Commits what was stored, then lets go of the consumer without dropping it.
///
/// Dropping a subscribed `StreamConsumer` can hang (it leaves the group and waits on the
/// broker; seen on rdkafka's MockCluster: rust-rdkafka #453, #509, #611), and shutdown must
/// never wait on that. The consumer is leaked instead: the process is ending, or (in tests) one
/// consumer's memory is a fair price. The group notices by its session timeout.
pub async fn finish(consumer: Arc<WarmerConsumer>, label: &'static str) {
    let c = consumer.clone();
    let commit = tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync));
    match tokio::time::timeout(COMMIT_TIMEOUT, commit).await {
        Ok(Ok(Ok(()))) => tracing::info!(consumer = label, "Offsets committed."),
        Ok(Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)))) => {
            tracing::debug!(consumer = label, "Nothing new to commit.")
        }
        Ok(Ok(Err(e))) => {
            tracing::warn!(consumer = label, error = %e, "Final commit failed; the uncommitted messages will be redelivered.")
        }
        Ok(Err(e)) => tracing::warn!(consumer = label, error = %e, "Final commit task failed."),
        Err(_) => {
            tracing::warn!(consumer = label, "Final commit did not finish in time; going on.")
        }
    }
    std::mem::forget(consumer);
}

/// Runs one of the warmer's long-lived tasks; if it ends while `stop` is not cancelled (it
/// returned early or panicked), logs it, records its name in `failed` and cancels `stop`, so
/// the whole service shuts down and exits with an error instead of serving on half-alive
/// (issue #12: a panicking consume task left /healthz and /readyz at 200 while nothing warmed).
pub async fn guard(
    name: &'static str,
    task: impl std::future::Future<Output = ()>,
    stop: tokio_util::sync::CancellationToken,
    failed: Arc<std::sync::OnceLock<&'static str>>,
) {
    use futures::FutureExt;
    let ended = std::panic::AssertUnwindSafe(task).catch_unwind().await;
    if stop.is_cancelled() && ended.is_ok() {
        return;
    }
    match ended {
        Ok(()) => {
            tracing::error!(task = name, "A warmer task ended on its own; stopping the service.")
        }
        Err(_) => tracing::error!(task = name, "A warmer task panicked; stopping the service."),
    }
    let _ = failed.set(name);
    stop.cancel();
}

/// Dead-letters one prediction message that failed validation and waits for Kafka's
/// acknowledgement: only then may its offset be stored.
pub async fn dead_letter(
    shared: &crate::state::Shared,
    msg: &rdkafka::message::BorrowedMessage<'_>,
    reason: &str,
) -> Result<(), KafkaError> {
    use rdkafka::message::Message;
    let origin = prefetch_common::dlq::Origin {
        stage: "warmer",
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
    };
    let payload = msg.payload().unwrap_or_default();
    prefetch_common::dlq::send(
        &shared.producer,
        &shared.options.dlq_topic,
        msg.key(),
        origin,
        reason,
        payload,
    )
    .await
}

/// Stores a batch's `(partition, offset)`s of `topic` (committed by the client in the
/// background). A partition revoked meanwhile refuses: its new owner re-reads the message.
pub fn store_offsets(consumer: &WarmerConsumer, topic: &str, offsets: Vec<(i32, i64)>) {
    for (partition, offset) in offsets {
        if let Err(e) = consumer.store_offset(topic, partition, offset) {
            tracing::warn!(partition, offset, error = %e, "Could not store an offset.");
        }
    }
}

/// The next batch: the first message (waited for until `shutdown`, then `None`) and whatever
/// else arrives within `linger` of it, up to `max`. Both consume loops read this way, so a
/// batch's offsets can be stored together once what they caused is durable.
pub async fn next_batch<'a>(
    consumer: &'a WarmerConsumer,
    shutdown: &CancellationToken,
    max: usize,
    linger: Duration,
) -> Option<Vec<KafkaResult<BorrowedMessage<'a>>>> {
    let first = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return None,
        m = consumer.recv() => m,
    };
    let mut batch = vec![first];
    let linger_end = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        match tokio::time::timeout_at(linger_end, consumer.recv()).await {
            Ok(m) => batch.push(m),
            Err(_) => break,
        }
    }
    Some(batch)
}
