//! The consume loop: events in, state folded, predictions out, offsets stored only after what
//! they caused is durable.
//!
//! One `tokio::select!` over shutdown, the publish tick, the stats tick, folded chunks coming
//! back and the next chunk of messages. A receive thread (`receive.rs`) takes the assigned
//! partitions' messages from librdkafka a batch at a time (what is waiting, up to
//! [`fold::CHUNK`]) and copies them into a chunk; the loop hands each chunk to the fold stage
//! (`fold.rs`), after acting on any rebalance: a parse thread (`contract::canonical`, the canonical form read
//! without serde) and a fold thread that folds the events into the model and publishes what
//! they cause, chunk after chunk in the order received. Each folded chunk comes back with its
//! delivery futures and offsets and joins the open batch. Every `BATCH` messages and at each
//! tick the batch is sealed: its deliveries are awaited on a task of their own while
//! consumption goes on, and its offsets are stored and committed once it and every earlier
//! batch are durable. A rebalance and shutdown first wait for every chunk handed over to be
//! folded, then for all batches. A rebalance is acted on before the next chunk is handed over:
//! revoked partitions are settled and committed, checkpointed, and only then their keys are
//! forgotten; assigned ones (paused by the consumer's context) are restored on a blocking task
//! each (`restore.rs`) while the loop goes on with the others, and resumed when it reports back.
//!
//! Every `--checkpoint-interval` (and on shutdown) the loop drains and settles everything
//! folded, commits, and snapshots each owned partition's state at that point; the snapshots are
//! written to the state topic on a task of their own (`checkpoint.rs`).
//!
//! Why these threads (BENCHMARKS.md, analyzer): on one loop the analyzer was CPU-bound at
//! ~1.9 µs an event against ~0.6 µs for a plain consumer's receive-and-store; receiving,
//! parsing and folding now overlap, each at about the plain consumer's cost or less. The
//! group consumer's own queue, served by the loop's `recv`, carries rebalances, commits and
//! errors.
//!
//! Files: the batches and the fold stage's two ends are in `progress.rs`, the tick's and the
//! stats' publications in `publish.rs`, acting on a rebalance in `rebalance.rs`, the receive
//! thread in `receive.rs`, the tests in `pipeline_tests.rs`.

#[path = "fold.rs"]
mod fold;
#[path = "progress.rs"]
mod progress;
#[path = "publish.rs"]
mod publish;
#[path = "rebalance.rs"]
mod rebalance;
#[path = "receive.rs"]
mod receive;
/// The canonical-form scanner, shared with ingest (it lives in the contract).
pub use prefetch_common::contract::canonical as parse;
pub use receive::FetchQueue;

use super::consumer::GroupContext;
use super::restore;
use super::{checkpoint, Shared};
use chrono::{DateTime, Utc};
use fold::Folder;
use futures::FutureExt;
use prefetch_common::kafka::AckContext;
use prefetch_common::prediction::Prediction;
use progress::{Progress, Sealed, Stage};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, ThreadedProducer};
use serde_json::json;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Messages folded before their offsets are settled (a tick settles a smaller batch).
const BATCH: usize = 2_000;

/// Chunks handed to the fold thread and not yet back; the loop stops receiving at this many.
const CHUNKS_IN_FLIGHT: usize = 8;

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
    /// The checkpoint topic (`None`: checkpoints off, assignments replay the retained window).
    pub state_topic: Option<String>,
    /// Checkpoint period.
    pub checkpoint_interval: Duration,
}

/// How long the fold thread's producer lets event-driven predictions gather into one request.
/// Measured (BENCHMARKS.md, analyzer): with the project's default of 0, the predictions of a
/// busy fold went out in many small requests, and producing them cost the analyzer about
/// 0.45 µs of CPU per consumed event; 5 ms cut that to a small share (and adds at most 5 ms to
/// a prediction whose horizon is minutes).
const FOLD_LINGER: &str = "linger.ms=5";

/// The producer of event-driven predictions and dead letters: the common one, with
/// [`FOLD_LINGER`] unless the operator set `linger.ms` (their `-X` options are applied after).
fn fold_producer(
    kafka: &prefetch_common::kafka::KafkaArgs,
) -> anyhow::Result<ThreadedProducer<AckContext>> {
    let mut k = kafka.clone();
    k.options.insert(0, FOLD_LINGER.to_owned());
    Ok(k.producer_config(FOLD_DELIVERY_TIMEOUT)?.create_with_context(AckContext)?)
}

/// librdkafka reports every fold delivery within this (`message.timeout.ms`); a sealed batch
/// waits a little longer before it calls a missing report a failure.
const FOLD_DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The loop's timers.
struct Timers<'a> {
    tick: &'a mut tokio::time::Interval,
    stats: &'a mut tokio::time::Interval,
    checkpoints: &'a mut tokio::time::Interval,
}

/// Least time between two commits of stored offsets (rebalance and shutdown commit at once).
const COMMIT_EVERY: Duration = Duration::from_secs(1);

/// Sealed batches allowed in flight before consumption waits for the oldest.
const MAX_SEALED: usize = 16;

impl Pipeline {
    /// Runs until `shutdown`; then folds what was handed over, settles and commits synchronously.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.tick_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stats = tokio::time::interval(self.stats_interval);
        stats.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut progress = Progress::default();
        // Held here as well as by the fold thread: dropping a producer purges what it has in
        // flight, so it must outlive the final settle, which awaits those deliveries.
        let producer = fold_producer(&self.kafka)?;
        let folder = Folder {
            shared: self.shared.clone(),
            producer: producer.clone(),
            topics: self.topics.clone(),
            noted: Default::default(),
            epoch: 0,
        };
        let (chunks_tx, chunks_rx) = mpsc::channel();
        let (parsed_tx, parsed_rx) = mpsc::channel();
        let (folded_tx, folded_rx) = tokio::sync::mpsc::unbounded_channel();
        let parse = std::thread::Builder::new()
            .name("analyzer-parse".into())
            .spawn(move || fold::parse_all(chunks_rx, parsed_tx))?;
        let fold = std::thread::Builder::new()
            .name("analyzer-fold".into())
            .spawn(move || folder.run(parsed_rx, folded_tx))?;
        // The assigned partitions' messages come through the receive thread (`receive.rs`);
        // the queue is the context's before the loop serves the first rebalance.
        let queue = Arc::new(FetchQueue::new(self.consumer.client()));
        if self.consumer.context().fetch.set(queue.clone()).is_err() {
            anyhow::bail!("the consumer already has a receive queue (one pipeline per consumer)");
        }
        let mut receiver = receive::Receiver::start(queue, fold::CHUNK)?;
        let mut stage = Stage {
            chunks: Some(chunks_tx),
            folded: folded_rx,
            in_flight: 0,
            threads: vec![parse, fold],
            spare: Vec::new(),
            recycle: Some(receiver.spares.clone()),
            epoch: 0,
        };
        // The first checkpoint one period after the start (interval's first tick is at once).
        let period = self.checkpoint_interval.max(Duration::from_secs(1));
        let mut checkpoints =
            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        checkpoints.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut timers =
            Timers { tick: &mut tick, stats: &mut stats, checkpoints: &mut checkpoints };
        let result =
            self.consume(&shutdown, &mut stage, &mut progress, &mut timers, &mut receiver).await;
        // What the receive thread holds and the loop did not take is dropped unfolded: its
        // offsets are never stored.
        receiver.stop().await;
        // Even after an error, the threads are stopped (what was handed over is folded first);
        // the loop's own error is the one reported.
        let stopped = stage.stop(&mut progress).await;
        result?;
        stopped?;
        self.settle(&mut progress, true).await?;
        drop(producer);
        let c = self.consumer.clone();
        tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync))
            .await?
            .or_else(|e| {
                // Nothing stored since the last commit is also an error here; it loses nothing.
                tracing::debug!(error = %e, "Final commit.");
                Ok::<_, anyhow::Error>(())
            })?;
        // A last checkpoint, so a clean restart (a rolling deploy) replays nothing.
        let owned: Vec<i32> = progress.owned.iter().copied().collect();
        if let Some(w) = self.checkpoint(&mut progress, &owned).await? {
            let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
        }
        Ok(())
    }

    async fn consume(
        &self,
        shutdown: &CancellationToken,
        stage: &mut Stage,
        progress: &mut Progress,
        timers: &mut Timers<'_>,
        receiver: &mut receive::Receiver,
    ) -> anyhow::Result<()> {
        let Timers { tick, stats, checkpoints } = timers;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                f = stage.next(), if stage.in_flight > 0 => {
                    let spare = progress.absorb(f?);
                    stage.recycle(spare);
                    if progress.open.messages >= BATCH {
                        self.settle(progress, false).await?;
                    }
                }
                _ = tick.tick() => {
                    self.apply_rebalances(stage, progress).await?;
                    self.settle(progress, false).await?;
                    self.publish_tick().await?;
                }
                _ = stats.tick() => self.publish_stats().await,
                _ = self.consumer.context().wake.notified() => {
                    self.apply_rebalances(stage, progress).await?;
                }
                r = progress.restores.1.recv(), if progress.restoring > 0 => {
                    progress.restoring -= 1;
                    let r = r.ok_or_else(|| anyhow::anyhow!("restore channel closed"))?;
                    self.resume(progress, r?)?;
                }
                _ = checkpoints.tick(), if self.state_topic.is_some()
                    && progress.writing.as_ref().is_none_or(JoinHandle::is_finished) => {
                    stage.drain(progress).await?;
                    self.settle(progress, true).await?;
                    let owned: Vec<i32> = progress.owned.iter().copied().collect();
                    progress.writing = self.checkpoint(progress, &owned).await?;
                }
                c = receiver.chunks.recv(), if stage.in_flight < CHUNKS_IN_FLIGHT => {
                    let mut chunk = c.ok_or_else(|| anyhow::anyhow!("the receive thread stopped"))?;
                    self.apply_rebalances(stage, progress).await?;
                    // A partition revoked while its messages waited here is no longer ours.
                    chunk.retain_partitions(|p| progress.owned.contains(&p));
                    if chunk.len() > 0 {
                        stage.send(chunk)?;
                    } else {
                        stage.recycle(chunk);
                    }
                }
                // `recv` is cancel-safe: a message not taken stays in the consumer's queue. It
                // serves rebalances, commits and errors; messages arrive here only for a
                // partition the receive thread's queue could not take.
                r = self.consumer.recv(), if stage.in_flight < CHUNKS_IN_FLIGHT => {
                    let mut chunk = stage.spare.pop().unwrap_or_default();
                    match r {
                        Err(e) => tracing::warn!(error = %e, "Consumer error."),
                        Ok(m) => chunk.push(&m),
                    }
                    // Whatever else is already waiting joins the chunk; one poll each, no wait.
                    while chunk.len() < fold::CHUNK {
                        match self.consumer.recv().now_or_never() {
                            Some(Ok(m)) => chunk.push(&m),
                            Some(Err(e)) => tracing::warn!(error = %e, "Consumer error."),
                            None => break,
                        }
                    }
                    self.apply_rebalances(stage, progress).await?;
                    if chunk.len() > 0 {
                        stage.send(chunk)?;
                    }
                }
            }
        }
    }

    /// Seals the open batch (its deliveries are awaited on their own task) and stores the
    /// offsets of every sealed batch that is durable, oldest first. With `all`, waits for every
    /// sealed batch (rebalance, shutdown); otherwise waits only when too many are in flight. A
    /// failed delivery stops the service before its offsets are stored: the events are re-read
    /// after the restart.
    async fn settle(&self, progress: &mut Progress, all: bool) -> anyhow::Result<()> {
        let open = std::mem::take(&mut progress.open);
        if let Some(why) = open.failed {
            // Stop before storing: the batch's events are re-read after the restart.
            anyhow::bail!("{why}");
        }
        if open.messages > 0 {
            let done = (!open.acks.is_empty()).then(|| {
                tokio::spawn(async move {
                    let wait = FOLD_DELIVERY_TIMEOUT + Duration::from_secs(5);
                    for acks in open.acks {
                        if tokio::time::timeout(wait, acks.settled()).await.is_err() {
                            return Err(format!("no delivery report within {wait:?}"));
                        }
                        acks.outcome().map_err(|e| e.to_string())?;
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
                if let Err(e) =
                    self.consumer.store_offset(&self.topics.query_events_topic, partition, offset)
                {
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

    /// Snapshots `partitions` (those restored, with something new since their last checkpoint)
    /// as they are now and writes them on a task of their own, returned. Call it only when
    /// everything folded is settled and committed.
    async fn checkpoint(
        &self,
        progress: &mut Progress,
        partitions: &[i32],
    ) -> anyhow::Result<Option<JoinHandle<()>>> {
        let Some(state_topic) = self.state_topic.clone() else { return Ok(None) };
        let due: Vec<(i32, i64)> = partitions
            .iter()
            .filter(|p| !self.shared.is_restoring(**p))
            .filter_map(|p| Some((*p, *progress.next.get(p)?)))
            .filter(|(p, o)| progress.checkpointed.get(p) != Some(o))
            .collect();
        if due.is_empty() {
            return Ok(None);
        }
        let shared = self.shared.clone();
        let snapshots = tokio::task::spawn_blocking(move || {
            due.into_iter()
                .map(|(p, covered)| {
                    let tickers = shared.tickers_of(p);
                    (p, covered, shared.watermark_of(p), shared.model().snapshot(&tickers))
                })
                .collect::<Vec<_>>()
        })
        .await?;
        for (p, covered, _, _) in &snapshots {
            progress.checkpointed.insert(*p, *covered);
        }
        let (producer, shared) = (self.producer.clone(), self.shared.clone());
        Ok(Some(tokio::spawn(async move {
            for (p, covered, watermark, bytes) in snapshots {
                let started = Instant::now();
                match checkpoint::write(&producer, &state_topic, p, covered, watermark, &bytes)
                    .await
                {
                    Ok(head) => {
                        shared.metrics.checkpointed(head.bytes);
                        tracing::debug!(
                            partition = p,
                            covered,
                            bytes = head.bytes,
                            chunks = head.chunks,
                            seconds = started.elapsed().as_secs_f64(),
                            "Checkpoint written."
                        );
                    }
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "Checkpoint not written; the next one retries.")
                    }
                }
            }
        })))
    }
}

/// Serialises a prediction list for `/v1/predictions`.
pub fn predictions_json(ps: &[Prediction], watermark: Option<DateTime<Utc>>) -> serde_json::Value {
    json!({ "watermark": watermark, "predictions": ps })
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
