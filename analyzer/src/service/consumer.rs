//! The group consumer's context: rebalance bookkeeping (commit on revoke, remember what to
//! rebuild on assign) and consumer-lag metrics from librdkafka's statistics.

use super::metrics::Metrics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;
use std::sync::Mutex;

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
}

impl ClientContext for GroupContext {
    fn stats(&self, stats: Statistics) {
        if let Some(t) = stats.topics.get(&self.topic) {
            for (p, part) in &t.partitions {
                // librdkafka reports -1 for partitions it does not consume and for the internal
                // "unassigned" partition (-1).
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics.lag(*p, part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Offsets are stored only after what their events caused was produced, so committing
            // the stored ones now hands the next owner exactly the unfinished tail.
            if tpl.count() > 0 {
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::warn!(error = %e, "Commit on revoke failed; the next owner re-reads from the last commit.");
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
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
                changes.revoked.retain(|p| !parts.contains(p));
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
                changes.revoked.extend(parts);
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Rebalance error."),
        }
    }
}
