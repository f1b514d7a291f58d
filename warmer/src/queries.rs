//! The query-events consume loop (its own group): hit-rate metrics by module, result and
//! holdback group, the `/v1/status` totals, and useful warms (a warmed entry's first hit).
//!
//! Every query counts here, whoever answered it: the app's own (recorded through ingest) and
//! this warmer's read-through endpoint (which publishes to the same topic). The warmer's own
//! warm fetches are never published, so they never count as queries.

use crate::consume::{finish, WarmerConsumer};
use crate::policy::{group_of, Key};
use crate::state::Shared;
use chrono::Utc;
use prefetch_common::contract::QueryEvent;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Counts one valid query event.
pub async fn record(shared: &Shared, ev: &QueryEvent) {
    let group = group_of(&ev.ticker, &ev.module, shared.policy.borrow().holdback);
    let module = shared.module_label(&ev.module);
    shared.metrics.query(&module, ev.hit, group);
    shared.counters.record(ev.hit);
    if ev.hit {
        let key = Key { module: ev.module.clone(), ticker: ev.ticker.clone() };
        if let Some(after) = shared.ledger.hit(&key, ev.ts).await {
            shared.metrics.useful_warm(&module, after);
        }
    }
}

/// Runs until `shutdown`, then commits and lets go of the consumer.
pub async fn run(shared: Arc<Shared>, consumer: Arc<WarmerConsumer>, shutdown: CancellationToken) {
    loop {
        let m = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        let msg = match m {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(error = %e, "Kafka error on the query-events consumer.");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match QueryEvent::from_json(msg.payload().unwrap_or_default(), Utc::now()) {
            Ok(ev) => record(&shared, &ev).await,
            Err(e) => {
                shared.metrics.invalid("queries");
                tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "Skipping an invalid query event.");
            }
        }
        // Counting is all the work there is: the offset may be stored at once.
        if let Err(e) = consumer.store_offset(&shared.query_topic, msg.partition(), msg.offset()) {
            tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "Could not store an offset.");
        }
    }
    finish(consumer, "queries").await;
}
