//! Following a topic outside any consumer group: every instance reads every partition. This is
//! how each service learns the live config (`prefetch.config`), and how the API front door keeps
//! its views of the stats snapshots and the latest predictions without calling other services.
//!
//! A follower runs on its own thread with a plain assigned `BaseConsumer` (no group, no
//! commits): a restart simply reads again from its start position. It reports, through a watch
//! channel, once it has read everything that was in the topic when it started, so a caller can
//! wait for "the config as of now" instead of guessing.

use crate::config::{LiveConfig, CONFIG_KEY};
use crate::kafka::{KafkaArgs, KafkaSetupError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where a follower starts in each partition.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    /// The oldest message (compacted topics: the latest value of every key).
    Beginning,
    /// The last `n` messages of each partition.
    Tail(i64),
}

/// Reads every partition of `topic` from `start` until `stop`, calling `on_message(key,
/// payload)` for each message in order per partition. The returned channel turns `true` once
/// the follower has reached the end each partition had when it started.
///
/// Everything blocking (metadata, watermarks, polling) happens on the follower's own thread, so
/// this returns at once; a topic that is not readable yet (e.g. its partition leader is still
/// being elected right after creation) is retried with a warning until it is, or until `stop`.
pub fn follow<F>(
    kafka: &KafkaArgs,
    topic: &str,
    start: Start,
    stop: CancellationToken,
    mut on_message: F,
) -> Result<watch::Receiver<bool>, KafkaSetupError>
where
    F: FnMut(Option<&[u8]>, Option<&[u8]>) + Send + 'static,
{
    let consumer: BaseConsumer =
        kafka.reader_config()?.create().map_err(KafkaSetupError::Client)?;
    let (caught_up, rx) = watch::channel(false);
    let topic = topic.to_owned();
    std::thread::Builder::new().name(format!("follow-{topic}")).spawn(move || {
        let mut pending = loop {
            match assign(&consumer, &topic, start) {
                Ok(pending) => break pending,
                Err(e) if stop.is_cancelled() => return tracing::debug!(%topic, error = %e, "Stopped before the topic was readable."),
                Err(e) => {
                    tracing::warn!(%topic, error = %e, "Cannot read the topic yet; retrying.");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        };
        if pending.is_empty() {
            caught_up.send_replace(true);
        }
        while !stop.is_cancelled() {
            let Some(r) = consumer.poll(Duration::from_millis(200)) else { continue };
            match r {
                Ok(m) => {
                    // A bug in a handler must not end the follower silently (its views would
                    // freeze while the service looks healthy): log it and go on with the next.
                    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        on_message(m.key(), m.payload())
                    }));
                    if handled.is_err() {
                        tracing::error!(%topic, partition = m.partition(), offset = m.offset(), "Handling a message panicked; skipped.");
                    }
                    if pending.get(&m.partition()).is_some_and(|&high| m.offset() + 1 >= high) {
                        pending.remove(&m.partition());
                        if pending.is_empty() {
                            caught_up.send_replace(true);
                        }
                    }
                }
                Err(e) => tracing::warn!(%topic, error = %e, "Reading the topic failed; retrying."),
            }
        }
    })?;
    Ok(rx)
}

/// Assigns every partition of `topic` at `start`; returns where each non-empty partition ends
/// now (the follower is caught up once it has read to there).
fn assign(
    consumer: &BaseConsumer,
    topic: &str,
    start: Start,
) -> Result<HashMap<i32, i64>, KafkaSetupError> {
    let failed = |source| KafkaSetupError::Follow { topic: topic.to_owned(), source };
    let timeout = Duration::from_secs(10);
    let md = consumer.fetch_metadata(Some(topic), timeout).map_err(failed)?;
    let mut tpl = TopicPartitionList::new();
    let mut pending = HashMap::new();
    for p in md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())) {
        let offset = match start {
            Start::Beginning => Offset::Beginning,
            Start::Tail(n) => Offset::OffsetTail(n),
        };
        tpl.add_partition_offset(topic, p, offset).map_err(failed)?;
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout).map_err(failed)?;
        if high > low {
            pending.insert(p, high);
        }
    }
    if tpl.count() == 0 {
        return Err(failed(rdkafka::error::KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        )));
    }
    consumer.assign(&tpl).map_err(failed)?;
    Ok(pending)
}

/// The live config as a follower of the config topic sees it: `None` until the topic holds a
/// valid value. Invalid values are logged and skipped; the previous config stays.
pub struct ConfigFeed {
    /// The latest valid config.
    pub config: watch::Receiver<Option<LiveConfig>>,
    /// Turns `true` once the topic has been read to where it ended at start-up.
    pub caught_up: watch::Receiver<bool>,
}

impl ConfigFeed {
    /// Follows `topic` from the beginning until `stop`.
    pub fn start(
        kafka: &KafkaArgs,
        topic: &str,
        stop: CancellationToken,
    ) -> Result<Self, KafkaSetupError> {
        let (tx, config) = watch::channel(None);
        let name = topic.to_owned();
        let caught_up = follow(kafka, topic, Start::Beginning, stop, move |key, payload| {
            if key != Some(CONFIG_KEY.as_bytes()) {
                return;
            }
            // A tombstone (no payload) leaves the config as it was: deleting the live config
            // is not a way to change it.
            let Some(payload) = payload else { return };
            match LiveConfig::from_json(payload) {
                Ok(cfg) => {
                    tracing::info!(topic = %name, top_n = cfg.top_n, min_confidence = cfg.min_confidence, enabled = cfg.enabled, "Live config read.");
                    tx.send_replace(Some(cfg));
                }
                Err(e) => {
                    tracing::warn!(topic = %name, error = %e, "Invalid config on the topic ignored; keeping the previous one.")
                }
            }
        })?;
        Ok(Self { config, caught_up })
    }

    /// Waits until the topic has been read to its end as of start-up, at most `timeout`.
    /// Returns whether it got there.
    pub async fn wait_caught_up(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.caught_up.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Calls `apply` with every config `config` receives from now on, until `stop` (the value
/// current at the call is the caller's to apply, before it starts work).
pub async fn on_change(
    mut config: watch::Receiver<Option<LiveConfig>>,
    stop: CancellationToken,
    mut apply: impl FnMut(&LiveConfig),
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = config.changed() => if changed.is_err() { return },
        }
        let live = config.borrow_and_update().clone();
        if let Some(live) = live {
            apply(&live);
        }
    }
}
