//! The consume loop's timed publications: the tick's predictions and the patterns snapshot.

use super::Pipeline;
use futures::future::join_all;
use rdkafka::producer::FutureRecord;
use std::time::{Duration, Instant};

impl Pipeline {
    /// Advances the model to the event-time watermark and publishes its predictions.
    pub(super) async fn publish_tick(&self) -> anyhow::Result<()> {
        let Some(now) = self.shared.event_time() else { return Ok(()) };
        let shared = self.shared.clone();
        let started = Instant::now();
        // A partition still being restored has part of its history folded: its keys' rates are
        // underestimates until the restore ends, so none of them is published yet — held back
        // inside the model, so the fetch budget does not pay for them nor the cache view note
        // them as warmed.
        let predictions = tokio::task::spawn_blocking(move || {
            let restoring = shared.restoring_tickers();
            shared.model().tick_holding(now, &restoring)
        })
        .await?;
        {
            let model = self.shared.model();
            self.shared.metrics.ticked(started.elapsed(), model.footprint().keys);
            self.shared.metrics.spend(&model.spend_status());
        }
        let bodies: Vec<Vec<u8>> = predictions
            .iter()
            .map(|p| serde_json::to_vec(p).expect("a Prediction serialises"))
            .collect();
        let sends: Vec<_> = predictions
            .iter()
            .zip(&bodies)
            .map(|(p, body)| {
                self.producer.send(
                    FutureRecord::to(&self.topics.predictions_topic)
                        .key(p.ticker.as_str())
                        .payload(body),
                    Duration::from_secs(5),
                )
            })
            .collect();
        for (r, p) in join_all(sends).await.into_iter().zip(&predictions) {
            match r {
                Ok(_) => self.shared.metrics.published(p.reason),
                Err((e, _)) => {
                    tracing::warn!(error = %e, "Publishing a prediction failed; the next tick publishes afresh.")
                }
            }
        }
        tracing::debug!(predictions = predictions.len(), watermark = %now, "Tick published.");
        self.shared.set_predictions(predictions);
        Ok(())
    }

    /// Publishes the patterns snapshot to the compacted stats topic (best effort).
    pub(super) async fn publish_stats(&self) {
        let Some(now) = self.shared.event_time() else { return };
        let shared = self.shared.clone();
        let stats = match tokio::task::spawn_blocking(move || shared.stats_json(now)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return tracing::warn!(error = %e, "Stats snapshot failed."),
            Err(e) => return tracing::warn!(error = %e, "Stats task failed."),
        };
        let rec =
            FutureRecord::to(&self.stats_topic).key(self.instance_id.as_str()).payload(&stats);
        if let Err((e, _)) = self.producer.send(rec, Duration::from_secs(5)).await {
            tracing::warn!(error = %e, "Publishing the stats snapshot failed.");
        }
    }
}
