//! Acting on a rebalance: revoked partitions settled, checkpointed and forgotten; assigned ones
//! restored on blocking tasks and resumed when they report back; the rate budget's share set
//! from the partitions owned.

use super::progress::{Progress, Stage};
use super::restore::{self, Outcome};
use super::{checkpoint, Pipeline};
use rdkafka::consumer::Consumer;
use std::sync::Arc;
use std::time::Duration;

impl Pipeline {
    /// Forgets revoked partitions' keys and rebuilds newly assigned ones from the topic.
    /// Every chunk handed over is folded first.
    pub(super) async fn apply_rebalances(
        &self,
        stage: &mut Stage,
        progress: &mut Progress,
    ) -> anyhow::Result<()> {
        let pending = {
            let c = self.consumer.context().changes.lock().unwrap_or_else(|p| p.into_inner());
            !c.assigned.is_empty() || !c.revoked.is_empty()
        };
        if !pending {
            return Ok(());
        }
        stage.drain(progress).await?;
        stage.epoch += 1;
        let (assigned, revoked) = {
            let mut c = self.consumer.context().changes.lock().unwrap_or_else(|p| p.into_inner());
            (std::mem::take(&mut c.assigned), std::mem::take(&mut c.revoked))
        };
        if !revoked.is_empty() {
            // Everything folded is acknowledged and committed before the state goes: the next
            // owner starts exactly where this one's published work ends.
            self.settle(progress, true).await?;
            if let Some(w) = self.checkpoint(progress, &revoked).await? {
                let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
            }
            let forgotten = self.shared.forget_partitions(&revoked);
            for p in &revoked {
                progress.owned.remove(p);
                progress.next.remove(p);
                progress.checkpointed.remove(p);
            }
            tracing::info!(partitions = ?revoked, tickers = forgotten, "Forgot the keys of revoked partitions.");
        }
        // One checkpoint reader for the whole rebalance: a client per partition took 0.62 s
        // for 12 partitions, mostly fetch waits, where this one takes 0.05 s (BENCHMARKS.md,
        // #11). The last restore task to finish drops it.
        let checkpoints = (!assigned.is_empty())
            .then_some(self.state_topic.as_deref())
            .flatten()
            .map(|t| Arc::new(checkpoint::SharedReader::new(&self.kafka, t)));
        for partition in assigned {
            progress.owned.insert(partition);
            progress.restoring += 1;
            let (shared, consumer, kafka, topic, checkpoints, tx) = (
                self.shared.clone(),
                self.consumer.clone(),
                self.kafka.clone(),
                self.topics.query_events_topic.clone(),
                checkpoints.clone(),
                progress.restores.0.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let r = restore::partition(
                    &shared,
                    &consumer,
                    &kafka,
                    &topic,
                    checkpoints.as_deref(),
                    partition,
                );
                let _ = tx.send(r);
            });
        }
        self.set_budget_share(progress).await;
        Ok(())
    }

    /// A rate budget is the fleet's: this instance earns the share of the query-events
    /// partitions it owns (read from the topic's metadata at each rebalance, as partitions can
    /// be added), so N analyzers spend the rate together, not N times it.
    async fn set_budget_share(&self, progress: &Progress) {
        let total = self.events_partitions().await;
        let share = budget_share(progress.owned.len(), total);
        self.shared.model().set_budget_share(share);
        tracing::info!(owned = progress.owned.len(), total, share, "Fetch budget share set.");
    }

    /// Partitions of the query-events topic, read through the group consumer's own connection:
    /// the consume loop waits on this at every rebalance, and a new client for it (as
    /// `checkpoint::partition_count` makes at startup) added a connection of its own, and its
    /// first metadata round trip, to the time before any partition folds again. The configured
    /// `--topic-partitions` when the metadata cannot be read.
    async fn events_partitions(&self) -> usize {
        let (consumer, topic) = (self.consumer.clone(), self.topics.query_events_topic.clone());
        let n = tokio::task::spawn_blocking(move || {
            checkpoint::partitions_seen_by(consumer.as_ref(), &topic)
        })
        .await
        .ok()
        .flatten();
        checkpoint::or_configured(n, &self.kafka)
    }

    /// A restore reported back: resumes its partition (or drops what it restored, if the
    /// partition was revoked meanwhile).
    pub(super) fn resume(&self, progress: &mut Progress, r: Outcome) -> anyhow::Result<()> {
        let p = r.partition;
        self.shared.metrics.rebuilt(r.replayed);
        self.shared.metrics.restored(r.seconds, r.fallback);
        if !progress.owned.contains(&p) || !self.shared.is_restoring(p) {
            self.shared.forget_partitions(&[p]);
            tracing::info!(partition = p, "Restored a partition revoked meanwhile; dropped it.");
            return Ok(());
        }
        let topic = &self.topics.query_events_topic;
        if let Some(o) = r.seek_to {
            self.consumer.seek(topic, p, rdkafka::Offset::Offset(o), Duration::from_secs(10))?;
        }
        if let Some(o) = r.position {
            progress.next.insert(p, o);
            if r.checkpoint == Some(o) {
                progress.checkpointed.insert(p, o);
            }
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(topic, p);
        self.consumer.resume(&tpl)?;
        self.shared.restored(p, r.backlog);
        tracing::info!(
            partition = p,
            checkpoint = ?r.checkpoint,
            keys = r.keys,
            replayed = r.replayed,
            seconds = r.seconds,
            fallback = r.fallback,
            "Partition restored; consuming it."
        );
        Ok(())
    }
}

/// The share of a rate budget an instance owning `owned` of `total` partitions earns.
pub(super) fn budget_share(owned: usize, total: usize) -> f64 {
    owned as f64 / total.max(owned).max(1) as f64
}
