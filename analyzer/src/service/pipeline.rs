//! The consume loop: events in, state folded, predictions out, offsets stored only after what
//! they caused is durable.
//!
//! One `tokio::select!` over shutdown, the publish tick, the stats tick and the next message.
//! Messages are folded as they come; the predictions they cause (event-driven sequence
//! predictions, dead letters) are produced at once, and their offsets join a batch. Every
//! `BATCH` messages and at each tick the batch is sealed: its deliveries are awaited on a task
//! of their own while consumption goes on, and its offsets are stored and committed once it and
//! every earlier batch are durable. A rebalance and shutdown wait for all of them. A rebalance is acted on before the
//! next message is folded: revoked partitions' keys are forgotten, assigned ones are rebuilt.

use super::consumer::GroupContext;
use super::rebuild;
use super::Shared;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use prefetch_common::contract::{Module, QueryEvent, Ticker};
use prefetch_common::prediction::Prediction;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Messages folded before their offsets are settled (a tick settles a smaller batch).
const BATCH: usize = 2_000;

/// What the loop needs besides the consumer.
pub struct Pipeline {
    /// Model, last predictions, metrics.
    pub shared: Arc<Shared>,
    /// Produces predictions, stats and dead letters.
    pub producer: FutureProducer,
    /// The group consumer of query events.
    pub consumer: Arc<StreamConsumer<GroupContext>>,
    /// Topic names.
    pub topics: prefetch_common::kafka::TopicArgs,
    /// Stats topic and this instance's key in it.
    pub stats_topic: String,
    /// This instance's id.
    pub instance_id: String,
    /// Publish period.
    pub tick_interval: Duration,
    /// Stats period.
    pub stats_interval: Duration,
    /// Connection settings, for the rebuild reader.
    pub kafka: prefetch_common::kafka::KafkaArgs,
    /// Event-driven predictions published lately, so a burst of one sequence is published once.
    pub recent: Recent,
}

/// Event-driven predictions published lately, by key. A key is published again only when the
/// last one is older than a fifth of its horizon (event time) or was less confident: every
/// analyst opening `price` would otherwise re-publish the same `chart` prediction, and the
/// warmer would only skip it as fresh. Measured: 16% of the benchmark's events caused a
/// prediction, and publishing them cost 30% of the fold rate.
#[derive(Default)]
pub struct Recent(std::sync::Mutex<HashMap<(Ticker, Module), (DateTime<Utc>, f64)>>);

impl Recent {
    /// Whether `p` should be published now; remembers it if so.
    fn fresh(&self, p: &Prediction) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (p.ticker.clone(), p.module.clone());
        let again_after = chrono::Duration::seconds((p.horizon_s / 5) as i64);
        if let Some((at, conf)) = map.get(&key) {
            if p.generated_at < *at + again_after && p.confidence <= *conf {
                return false;
            }
        }
        map.insert(key, (p.generated_at, p.confidence));
        true
    }

    /// Forgets entries older than `horizon` before `now` (called on each tick: memory follows
    /// the keys predicted within one horizon).
    fn prune(&self, now: DateTime<Utc>, horizon: chrono::Duration) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (at, _)| *at + horizon > now);
    }
}

/// The open batch: offsets folded since the last seal, and the deliveries they caused.
#[derive(Default)]
struct Batch {
    deliveries: Vec<DeliveryFuture>,
    offsets: HashMap<i32, i64>,
    messages: usize,
}

/// A sealed batch: its deliveries are awaited on their own task while consumption goes on.
struct Sealed {
    done: Option<JoinHandle<Result<(), String>>>,
    offsets: HashMap<i32, i64>,
}

/// Offsets on their way to being stored: the open batch, then sealed ones in consume order.
/// An offset is stored only once its batch and every earlier one are durable.
#[derive(Default)]
struct Progress {
    open: Batch,
    sealed: VecDeque<Sealed>,
    committed_at: Option<Instant>,
}

/// Least time between two commits of stored offsets (rebalance and shutdown commit at once).
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// Sealed batches allowed in flight before consumption waits for the oldest.
const MAX_SEALED: usize = 16;

impl Pipeline {
    /// Runs until `shutdown`; then settles the open batch and commits synchronously.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.tick_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stats = tokio::time::interval(self.stats_interval);
        stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut progress = Progress::default();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    self.apply_rebalances(&mut progress).await?;
                    self.settle(&mut progress, false).await?;
                    self.publish_tick().await?;
                }
                _ = stats.tick() => self.publish_stats().await,
                // `recv` is cancel-safe: a message not taken stays in the consumer's queue.
                r = self.consumer.recv() => {
                    self.apply_rebalances(&mut progress).await?;
                    match r {
                        Err(e) => tracing::warn!(error = %e, "Consumer error."),
                        Ok(m) => {
                            self.fold(&m, &mut progress.open);
                            if progress.open.messages >= BATCH {
                                self.settle(&mut progress, false).await?;
                            }
                        }
                    }
                }
            }
        }
        self.settle(&mut progress, true).await?;
        let c = self.consumer.clone();
        tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync)).await?.or_else(|e| {
            // Nothing stored since the last commit is also an error here; it loses nothing.
            tracing::debug!(error = %e, "Final commit.");
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(())
    }

    /// Folds one message: a valid event into the model (producing what it causes), anything
    /// else to the dead-letter topic.
    fn fold(&self, m: &BorrowedMessage<'_>, batch: &mut Batch) {
        batch.messages += 1;
        batch.offsets.insert(m.partition(), m.offset());
        let payload = m.payload().unwrap_or_default();
        let event = match QueryEvent::from_json(payload, Utc::now()) {
            Ok(e) => e,
            Err(e) => {
                self.shared.metrics.dead_letter();
                tracing::warn!(partition = m.partition(), offset = m.offset(), problems = %e, "Dead-lettering a bad message.");
                let dl = json!({
                    "stage": "analyzer",
                    "reason": e.to_string(),
                    "topic": m.topic(),
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "payload": String::from_utf8_lossy(payload),
                })
                .to_string();
                let key = m.key().unwrap_or_default();
                self.enqueue(&self.topics.dlq_topic, key, dl.as_bytes(), batch);
                return;
            }
        };
        self.shared.note_partition(&event, m.partition());
        let recorded = self.shared.model().record(&event);
        self.shared.metrics.event(recorded.admission);
        for p in &recorded.predictions {
            if !self.recent.fresh(p) {
                continue;
            }
            self.shared.metrics.published(p.reason);
            let body = serde_json::to_vec(p).expect("a Prediction serialises");
            self.enqueue(&self.topics.predictions_topic, p.ticker.as_str().as_bytes(), &body, batch);
        }
    }

    fn enqueue(&self, topic: &str, key: &[u8], payload: &[u8], batch: &mut Batch) {
        match self.producer.send_result(FutureRecord::to(topic).key(key).payload(payload)) {
            Ok(f) => batch.deliveries.push(f),
            // A full local queue: settle what is in flight, then the loop goes on (the message
            // is re-read after a restart because its offset is not stored). Rare enough to log.
            Err((e, _)) => tracing::warn!(error = %e, topic, "Could not enqueue; will retry after a restart."),
        }
    }

    /// Seals the open batch (its deliveries are awaited on their own task) and stores the
    /// offsets of every sealed batch that is durable, oldest first. With `all`, waits for every
    /// sealed batch (rebalance, shutdown); otherwise waits only when too many are in flight. A
    /// failed delivery stops the service before its offsets are stored: the events are re-read
    /// after the restart.
    async fn settle(&self, progress: &mut Progress, all: bool) -> anyhow::Result<()> {
        let open = std::mem::take(&mut progress.open);
        if open.messages > 0 {
            let done = (!open.deliveries.is_empty()).then(|| {
                tokio::spawn(async move {
                    for r in join_all(open.deliveries).await {
                        match r {
                            Ok(Ok(_)) => {}
                            Ok(Err((e, _))) => return Err(format!("Kafka did not take a produced message: {e}")),
                            Err(_) => return Err("the producer dropped a delivery report".to_owned()),
                        }
                    }
                    Ok(())
                })
            });
            progress.sealed.push_back(Sealed { done, offsets: open.offsets });
        }
        let mut stored = false;
        while let Some(front) = progress.sealed.front() {
            let ready = front.done.as_ref().is_none_or(JoinHandle::is_finished);
            if !ready && !all && progress.sealed.len() <= MAX_SEALED {
                break;
            }
            let sealed = progress.sealed.pop_front().expect("non-empty");
            if let Some(done) = sealed.done {
                done.await?.map_err(anyhow::Error::msg)?;
            }
            for (partition, offset) in sealed.offsets {
                // A revoked partition's offset cannot be stored any more; its next owner re-reads it.
                if let Err(e) = self.consumer.store_offset(&self.topics.query_events_topic, partition, offset) {
                    tracing::debug!(partition, offset, error = %e, "Offset not stored.");
                }
            }
            stored = true;
        }
        // Commit here rather than leave it to the auto-commit timer (the MockCluster was seen
        // not to run the timer's commits at all), but at most once per COMMIT_EVERY: a commit
        // per batch was measured to cost the broker enough to slow consumption. A successor
        // rebuilding a partition reads up to the committed offset and re-reads the rest live.
        if stored && (all || progress.committed_at.is_none_or(|t| t.elapsed() >= COMMIT_EVERY)) {
            let mode = if all { CommitMode::Sync } else { CommitMode::Async };
            if let Err(e) = self.consumer.commit_consumer_state(mode) {
                tracing::debug!(error = %e, "Commit not made.");
            }
            progress.committed_at = Some(Instant::now());
        }
        Ok(())
    }

    /// Forgets revoked partitions' keys and rebuilds newly assigned ones from the topic.
    async fn apply_rebalances(&self, progress: &mut Progress) -> anyhow::Result<()> {
        let (assigned, revoked) = {
            let mut c = self.consumer.context().changes.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut c.assigned), std::mem::take(&mut c.revoked))
        };
        if !revoked.is_empty() {
            self.settle(progress, true).await?;
            let forgotten = self.shared.forget_partitions(&revoked);
            tracing::info!(partitions = ?revoked, keys = forgotten, "Forgot the keys of revoked partitions.");
        }
        for partition in assigned {
            let started = Instant::now();
            let (shared, consumer, kafka, topic) =
                (self.shared.clone(), self.consumer.clone(), self.kafka.clone(), self.topics.query_events_topic.clone());
            let n = tokio::task::spawn_blocking(move || rebuild::partition(&shared, &consumer, &kafka, &topic, partition)).await??;
            self.shared.metrics.rebuilt(n);
            tracing::info!(partition, events = n, seconds = started.elapsed().as_secs_f64(), "Rebuilt partition state from the topic.");
        }
        Ok(())
    }

    /// Advances the model to the event-time watermark and publishes its predictions.
    async fn publish_tick(&self) -> anyhow::Result<()> {
        let Some(now) = self.shared.event_time() else { return Ok(()) };
        let shared = self.shared.clone();
        let started = Instant::now();
        let predictions = tokio::task::spawn_blocking(move || shared.model().tick(now)).await?;
        let horizon = chrono::Duration::seconds(self.shared.model().config().horizon_s as i64);
        self.recent.prune(now, horizon);
        self.shared.metrics.ticked(started.elapsed(), self.shared.model().footprint().keys);
        let bodies: Vec<Vec<u8>> = predictions.iter().map(|p| serde_json::to_vec(p).expect("a Prediction serialises")).collect();
        let sends: Vec<_> = predictions
            .iter()
            .zip(&bodies)
            .map(|(p, body)| {
                self.producer.send(FutureRecord::to(&self.topics.predictions_topic).key(p.ticker.as_str()).payload(body), Duration::from_secs(5))
            })
            .collect();
        for (r, p) in join_all(sends).await.into_iter().zip(&predictions) {
            match r {
                Ok(_) => self.shared.metrics.published(p.reason),
                Err((e, _)) => tracing::warn!(error = %e, "Publishing a prediction failed; the next tick publishes afresh."),
            }
        }
        tracing::debug!(predictions = predictions.len(), watermark = %now, "Tick published.");
        self.shared.set_predictions(predictions);
        Ok(())
    }

    /// Publishes the patterns snapshot to the compacted stats topic (best effort).
    async fn publish_stats(&self) {
        let Some(now) = self.shared.event_time() else { return };
        let shared = self.shared.clone();
        let stats = match tokio::task::spawn_blocking(move || shared.stats_json(now)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return tracing::warn!(error = %e, "Stats snapshot failed."),
            Err(e) => return tracing::warn!(error = %e, "Stats task failed."),
        };
        let rec = FutureRecord::to(&self.stats_topic).key(self.instance_id.as_str()).payload(&stats);
        if let Err((e, _)) = self.producer.send(rec, Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "Publishing the stats snapshot failed.");
        }
    }
}

/// Serialises a prediction list for `/v1/predictions`.
pub fn predictions_json(ps: &[Prediction], watermark: Option<DateTime<Utc>>) -> serde_json::Value {
    json!({ "watermark": watermark, "predictions": ps })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefetch_common::prediction::Reason;

    fn p(secs: i64, confidence: f64) -> Prediction {
        Prediction {
            ticker: Ticker::parse("MSFT").unwrap(),
            module: Module::parse("chart").unwrap(),
            confidence,
            horizon_s: 300,
            generated_at: DateTime::from_timestamp(1_773_066_600 + secs, 0).unwrap(),
            reason: Reason::Sequence,
        }
    }

    #[test]
    fn a_sequence_prediction_is_republished_only_when_stale_or_more_confident() {
        let r = Recent::default();
        assert!(r.fresh(&p(0, 0.6)));
        assert!(!r.fresh(&p(30, 0.6)), "same key, same confidence, within a fifth of the horizon");
        assert!(r.fresh(&p(31, 0.7)), "more confident: published");
        assert!(!r.fresh(&p(80, 0.7)));
        assert!(r.fresh(&p(91, 0.5)), "a fifth of the horizon (60 s) after the last: published again");
        r.prune(p(391, 0.5).generated_at, chrono::Duration::seconds(300));
        assert!(r.0.lock().unwrap().is_empty(), "pruned after one horizon");
        let other = Prediction { module: Module::parse("news").unwrap(), ..p(0, 0.6) };
        assert!(r.fresh(&other) && r.fresh(&p(392, 0.1)));
    }
}
