//! The group consumer's context: rebalance bookkeeping (commit on revoke; on assign, pause the
//! new partitions until their state is restored) and consumer-lag metrics from librdkafka's
//! statistics.
//!
//! The assignor is `cooperative-sticky` (set in `serve`): a rebalance revokes and assigns only
//! the partitions that move, so the partitions an instance keeps go on being consumed with
//! their state untouched.

use super::metrics::Metrics;
use super::pipeline::FetchQueue;
use super::Shared;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::sync::Mutex;
use std::sync::{Arc, OnceLock};

/// Partition changes the consume loop has yet to act on.
#[derive(Debug, Default)]
pub struct Changes {
    /// Newly assigned partitions: their state must be rebuilt before their events are folded.
    pub assigned: Vec<i32>,
    /// Revoked partitions: their keys are no longer ours.
    pub revoked: Vec<i32>,
}

/// Context of the query-events consumer.
pub struct GroupContext {
    /// Where rebalances are noted for the consume loop.
    pub changes: Mutex<Changes>,
    /// For lag.
    pub metrics: Metrics,
    /// The topic consumed (lag is reported for it only).
    pub topic: String,
    /// Where restoring partitions are noted (readiness).
    pub shared: Arc<Shared>,
    /// Wakes the consume loop when there are changes to act on (a paused partition brings no
    /// message that would otherwise wake it).
    pub wake: tokio::sync::Notify,
    /// Where assigned partitions' messages are routed, once the consume loop's receive thread
    /// reads it (`receive.rs`); unset, they arrive on the group consumer's own queue.
    pub fetch: OnceLock<Arc<FetchQueue>>,
}

impl ClientContext for GroupContext {
    fn stats(&self, stats: Statistics) {
        if let Some(t) = stats.topics.get(&self.topic) {
            for (p, part) in &t.partitions {
                // librdkafka reports -1 for partitions it does not consume and for the internal
                // "unassigned" partition (-1).
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics.lag(*p, part.consumer_lag);
                    self.shared.note_backlog(*p, part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let (Rebalance::Assign(tpl), Some(fetch)) = (rebalance, self.fetch.get()) {
            // Before the assignment, so librdkafka keeps the route when it starts fetching.
            for e in tpl.elements().iter().filter(|e| e.topic() == self.topic) {
                fetch.route(&self.topic, e.partition());
            }
        }
        if let Rebalance::Revoke(tpl) = rebalance {
            // Offsets are stored only after what their events caused was produced, so committing
            // the stored ones now hands the next owner exactly the unfinished tail.
            if tpl.count() > 0 {
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::info!(error = %e, "Commit on revoke failed; the next owner re-reads from the last commit.");
                }
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<i32> = tpl
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == self.topic)
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(partitions = ?parts, "Partitions assigned.");
                // Nothing of a new partition is fetched before its state is restored; the
                // consume loop resumes it then (restore.rs). The other partitions keep flowing.
                if !parts.is_empty() {
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::warn!(error = %e, "Could not pause new partitions.");
                    }
                }
                self.shared.restoring(&parts);
                // A partition revoked and assigned again before the loop acted stays in
                // `revoked`: the loop forgets first, then restores, so nothing is counted twice.
                changes.assigned.extend(parts);
            }
            Rebalance::Revoke(tpl) => {
                let parts: Vec<i32> = tpl
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == self.topic)
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(partitions = ?parts, "Partitions revoked.");
                changes.assigned.retain(|p| !parts.contains(p));
                for p in &parts {
                    self.shared.restored(*p, None);
                }
                changes.revoked.extend(parts);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Rebalance error."),
        }
        self.wake.notify_one();
    }
}
