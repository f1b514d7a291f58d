//! Warming: the predictions consume loop and the executor it shares with `POST /v1/warmup`.
//!
//! The loop reads a batch (what is already fetched, up to [`BATCH_MAX`] messages or
//! `--batch-linger`, 20 ms by default) and warms every prediction in it the policy lets
//! through: the analyzer already spent its fetch budget on them, so no `top_n` cut applies here
//! ([`Trigger`]). [`warm_batch`] asks the cache when each key expires, lets [`policy::plan`]
//! decide, and fetches the chosen keys concurrently, each after a random delay
//! within the spread window (none for a learned follow-up of a query, `Reason::Sequence`, nor
//! for a warm timed for a periodic key's next poll, `Reason::Periodic`).
//!
//! Batches overlap: the next batch is read and warmed while earlier ones still fetch and
//! write, up to [`BATCHES_IN_FLIGHT`], so a prediction waits for neither the previous batch's
//! fetches nor its fsynced writes (issue #15.4: at 1,000 events/s that wait was most of the
//! event → warm latency). Offsets are stored in read order: a batch's once every warm in it
//! has ended (stored, skipped, dropped, or failed after its retries) *and* every earlier
//! batch's offsets are stored, so a committed offset never passes a warm still running:
//! at-least-once. A key is warmed by one task at a time ([`Shared::warming`]); a later batch's
//! prediction of a key still being fetched is skipped as a duplicate.
//!
//! A refresh of an entry still live is deferred to just before the entry expires
//! ([`Decision::WarmAt`]): it runs as a task of its own, after the batch's offsets are stored,
//! and looks the key up again when its time comes. One deferral per key waits at a time. A
//! warmer that stops drops the refreshes still waiting: each costs at most one miss, after
//! which the analyzer sees the key's copy gone and warms it again.

use crate::cache::{Entry, Source};
use crate::consume::{finish, next_batch, store_offsets, WarmerConsumer};
use crate::flight::{store_not_found, ttl_for};
use crate::pacing::jitter;
use crate::policy::{self, Decision, Key, Outcome, Trigger};
use crate::state::Shared;
use crate::upstream::FetchError;
use chrono::{DateTime, Utc};
use prefetch_common::prediction::{Prediction, Reason};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most messages in one batch.
pub const BATCH_MAX: usize = 1000;

/// Most batches warming at once. When every one of them still runs (a slow or rate-limited
/// upstream), reading waits: the consumer lag grows instead of the warmer's memory.
pub const BATCHES_IN_FLIGHT: usize = 8;

/// Decides and carries out the warms of one batch; returns each prediction with its outcome
/// (also counted in the metrics). `trigger` says who asks: published predictions follow the
/// schedule and are not cut to `top_n`; an operator's warm-up is the other way round.
///
/// Refreshes deferred to their entry's expiry are not in the result: each runs as a task of its
/// own ([`defer`]) and its outcome is counted when it ends.
pub async fn warm_batch(
    shared: &Arc<Shared>,
    preds: Vec<Prediction>,
    now: DateTime<Utc>,
    trigger: Trigger,
) -> Vec<(Prediction, Outcome)> {
    let mut expiry = std::collections::HashMap::new();
    for p in &preds {
        let key = Key::of(p);
        if expiry.contains_key(&key) {
            continue;
        }
        let e = expires_at(shared, &key).await;
        expiry.insert(key, e);
    }
    let decisions =
        policy::plan(&shared.policy(), &preds, now, trigger, |k| expiry.get(k).copied().flatten());
    let mut now_work = Vec::new();
    for (p, d) in preds.into_iter().zip(decisions) {
        match d {
            Decision::WarmAt(at) => defer(shared, p, at),
            d => now_work.push((p, d)),
        }
    }
    let work = now_work.into_iter().map(|(p, d)| async move {
        let outcome = match d {
            Decision::Skip(o) => o,
            _ => warm_one(shared, &p, None).await,
        };
        shared.metrics.warm(&shared.module_label(&p.module), outcome);
        (p, outcome)
    });
    futures::future::join_all(work).await
}

/// Runs the refresh `p` at `at` (wall clock), in a task of its own: then the key is looked up
/// again and fetched unless a copy stored meanwhile outlives `at` ([`policy::refresh_still_due`]).
/// A key with a deferral waiting already is not deferred twice ([`Outcome::SkippedDuplicate`]).
fn defer(shared: &Arc<Shared>, p: Prediction, at: DateTime<Utc>) {
    let key = Key::of(&p);
    let waiting = {
        let mut deferred = shared.deferred.lock().unwrap_or_else(|e| e.into_inner());
        if !deferred.insert(key.clone()) {
            drop(deferred);
            shared.metrics.warm(&shared.module_label(&p.module), Outcome::SkippedDuplicate);
            return;
        }
        deferred.len()
    };
    shared.metrics.deferred(waiting);
    let shared = shared.clone();
    tokio::spawn(async move {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        let due = tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = shared.stopping.cancelled() => false,
        };
        if !due {
            // The service stops: the refresh is dropped (see the module docs).
            forget_deferral(&shared, &key);
            return;
        }
        let outcome = if policy::refresh_still_due(expires_at(&shared, &key).await, at) {
            warm_one(&shared, &p, Some(at)).await
        } else {
            Outcome::SkippedFresh
        };
        shared.metrics.warm(&shared.module_label(&p.module), outcome);
        forget_deferral(&shared, &key);
    });
}

/// When the cache's entry of `key` expires; `None` when absent, or when the cache cannot say
/// (counted and logged).
async fn expires_at(shared: &Shared, key: &Key) -> Option<DateTime<Utc>> {
    shared.cache.expires_at(key).await.unwrap_or_else(|e| {
        shared.metrics.cache_error("get");
        tracing::warn!(error = %e, "Cache did not say when an entry expires; treating it as absent.");
        None
    })
}

/// The deferral of `key` ended (carried out, skipped, or dropped at shutdown).
fn forget_deferral(shared: &Shared, key: &Key) {
    let waiting = {
        let mut deferred = shared.deferred.lock().unwrap_or_else(|e| e.into_inner());
        deferred.remove(key);
        deferred.len()
    };
    shared.metrics.deferred(waiting);
}

/// A key being warmed, in [`Shared::warming`] until dropped (also when its task is aborted).
struct Claim<'a> {
    shared: &'a Shared,
    key: Key,
}

impl<'a> Claim<'a> {
    /// Claims `key`, unless another warm holds it.
    fn take(shared: &'a Shared, key: Key) -> Option<Self> {
        let mut warming = shared.warming.lock().unwrap_or_else(|e| e.into_inner());
        if !warming.insert(key.clone()) {
            return None;
        }
        Some(Self { shared, key })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.shared.warming.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

/// Fetches and stores `p`'s key, now or as the refresh deferred to `deferred_to`. The
/// prediction-to-cache histogram counts from when the warm was wanted: the prediction's time,
/// or the deferred refresh's.
async fn warm_one(shared: &Shared, p: &Prediction, deferred_to: Option<DateTime<Utc>>) -> Outcome {
    let Some(_claim) = Claim::take(shared, Key::of(p)) else {
        return Outcome::SkippedDuplicate;
    };
    // Spread the batch so refreshes of many keys never reach the upstream at once. A learned
    // follow-up is not one of them: it comes from one query event, at the pace of the events,
    // and is wanted within seconds (BENCHMARKS.md, event → warm latency). Nor is a periodic
    // key's warm: it is timed for a poll due within seconds, nor a deferred refresh, timed for
    // its entry's expiry.
    if deferred_to.is_none() && !matches!(p.reason, Reason::Sequence | Reason::Periodic) {
        tokio::time::sleep(jitter(shared.spread)).await;
    }
    let key = Key::of(p);
    let fetched = match shared.upstream.fetch(&key, Source::Warm).await {
        Ok(f) => f,
        Err(FetchError::RateLimited(_)) => return Outcome::DroppedRateLimit,
        Err(FetchError::NotFound { .. }) => {
            // Apps asking for it get their 404 from the cache instead of the upstream.
            store_not_found(shared, &key, Source::Warm).await;
            return Outcome::Failed;
        }
        Err(_) => return Outcome::Failed,
    };
    let Some(ttl) = ttl_for(shared, &key, &fetched, Source::Warm) else {
        // The upstream forbids storing it (Cache-Control): a warm cannot help.
        return Outcome::Failed;
    };
    let entry = Entry::living(&key, Source::Warm, Some(p.confidence), fetched.body, ttl);
    let writing = std::time::Instant::now();
    let put = shared.cache.put(&entry).await;
    shared.metrics.cache_write(writing.elapsed());
    match put {
        Ok(removed) => {
            shared.metrics.removed(removed);
            shared.ledger.warmed(key, entry.fetched_at, entry.expires_at).await;
            let since = deferred_to.unwrap_or(p.generated_at);
            shared.metrics.stored((Utc::now() - since).to_std().unwrap_or_default());
            Outcome::Stored
        }
        Err(e) => {
            shared.metrics.cache_error("put");
            tracing::warn!(ticker = %p.ticker, module = %p.module, error = %e, "Could not store a warmed entry.");
            Outcome::Failed
        }
    }
}

/// The predictions consume loop: runs until `shutdown`, then commits what it stored and lets
/// go of the consumer (see [`finish`]). Batches warm as tasks of their own, overlapping (see
/// the module docs); their offsets are stored in the order the batches were read.
pub async fn run(shared: Arc<Shared>, consumer: Arc<WarmerConsumer>, shutdown: CancellationToken) {
    let warming = pump(&shared, &consumer, &shutdown).await;
    if !warming.is_empty() {
        tracing::info!(
            batches = warming.len(),
            "Stopping during warms; their offsets are not stored, so they will be redelivered."
        );
    }
    for w in warming {
        w.task.abort();
    }
    finish(consumer, "predictions").await;
}

/// Reads and warms batches until `shutdown`, or until something the loop cannot go on after
/// (a dead letter not acknowledged, a warm task that panicked; the service stops with the
/// loop). Returns the batches still warming, whose offsets must not be stored.
async fn pump(
    shared: &Arc<Shared>,
    consumer: &WarmerConsumer,
    shutdown: &CancellationToken,
) -> VecDeque<Warming> {
    let linger = shared.options.batch_linger;
    // Batches warming, oldest first, each with the offsets to store once it has ended.
    let mut warming: VecDeque<Warming> = VecDeque::new();
    // The read in progress: never dropped half-way (its messages would be lost to the offsets
    // stored after them), only paused while BATCHES_IN_FLIGHT batches warm.
    let mut reading = std::pin::pin!(next_batch(consumer, shutdown, BATCH_MAX, linger));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            ended = async { (&mut warming[0].task).await }, if !warming.is_empty() => {
                let done = warming.pop_front().expect("not empty");
                if let Err(e) = ended {
                    // Not stored, so the batch is read again after a restart.
                    tracing::error!(error = %e, "A batch's warm task failed; stopping the predictions loop.");
                    return warming;
                }
                store_offsets(consumer, &shared.predictions_topic, done.offsets);
                shared.metrics.batches_warming(warming.len());
            }
            batch = &mut reading, if warming.len() < BATCHES_IN_FLIGHT => {
                let Some(batch) = batch else { break };
                let Some((offsets, preds)) = parse(shared, batch).await else {
                    return warming;
                };
                reading.set(next_batch(consumer, shutdown, BATCH_MAX, linger));
                if offsets.is_empty() {
                    // Only errors: do not spin on a broken connection.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                shared.remember(&preds);
                let s = shared.clone();
                let task = tokio::spawn(async move {
                    warm_batch(&s, preds, Utc::now(), Trigger::Published).await;
                });
                warming.push_back(Warming { offsets, task });
                shared.metrics.batches_warming(warming.len());
            }
        }
    }
    // Batches that ended meanwhile keep their place in the order.
    while warming.front().is_some_and(|w| w.task.is_finished()) {
        let done = warming.pop_front().expect("not empty");
        if done.task.await.is_err() {
            break;
        }
        store_offsets(consumer, &shared.predictions_topic, done.offsets);
    }
    warming
}

/// A batch warming: its task, and the offsets to store once it has ended.
struct Warming {
    offsets: Vec<(i32, i64)>,
    task: tokio::task::JoinHandle<()>,
}

/// A batch's offsets and its valid predictions. Validated like at every consumer (anyone can
/// write the topic): what fails goes to the DLQ with its reason, its offset kept with the
/// batch's, so it is stored only once that write is acknowledged. `None` when a dead letter
/// was not acknowledged: storing the batch's offsets would lose the message.
async fn parse(
    shared: &Shared,
    batch: Vec<KafkaResult<BorrowedMessage<'_>>>,
) -> Option<(Vec<(i32, i64)>, Vec<Prediction>)> {
    let mut offsets = Vec::with_capacity(batch.len());
    let mut preds = Vec::with_capacity(batch.len());
    for m in batch {
        let msg = match m {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(error = %e, "Kafka error on the predictions consumer.");
                continue;
            }
        };
        offsets.push((msg.partition(), msg.offset()));
        match serde_json::from_slice::<Prediction>(msg.payload().unwrap_or_default()) {
            Ok(p) => preds.push(p),
            Err(e) => {
                shared.metrics.invalid("predictions");
                tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "Dead-lettering an invalid prediction.");
                if let Err(de) = crate::consume::dead_letter(shared, &msg, &e.to_string()).await {
                    tracing::error!(partition = msg.partition(), offset = msg.offset(), error = %de, "The dead letter was not acknowledged; stopping the predictions loop.");
                    return None;
                }
            }
        }
    }
    Some((offsets, preds))
}
