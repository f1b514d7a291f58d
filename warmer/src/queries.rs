//! The query-events consume loop (its own group): hit-rate metrics by module, result and
//! holdback group, the `/v1/status` totals, and useful warms (a warmed entry's first hit).
//!
//! Every query counts here, whoever answered it: the app's own (recorded through ingest) and
//! this warmer's read-through endpoint (which publishes to the same topic). The warmer's own
//! warm fetches are never published, so they never count as queries.

use crate::consume::{finish, next_batch, store_offsets, WarmerConsumer};
use crate::policy::{group_of, Key};
use crate::state::Shared;
use chrono::Utc;
use prefetch_common::contract::QueryEvent;
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

/// Most query events counted together.
const BATCH_MAX: usize = 500;
/// How long a batch waits for more events after its first.
const BATCH_LINGER: Duration = Duration::from_millis(10);

/// Runs until `shutdown`, then commits and lets go of the consumer. Events are counted in
/// small batches, concurrently: with a cluster each hit asks the ledger in Redis, and the
/// multiplexed connection pipelines a batch's questions into about one round trip instead of
/// one per event. Offsets are stored once the whole batch is counted.
pub async fn run(shared: Arc<Shared>, consumer: Arc<WarmerConsumer>, shutdown: CancellationToken) {
    loop {
        let Some(batch) = next_batch(&consumer, &shutdown, BATCH_MAX, BATCH_LINGER).await else {
            break;
        };
        let mut offsets = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        for m in batch {
            let msg = match m {
                Ok(msg) => msg,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka error on the query-events consumer.");
                    continue;
                }
            };
            offsets.push((msg.partition(), msg.offset()));
            match QueryEvent::from_json(msg.payload().unwrap_or_default(), Utc::now()) {
                Ok(ev) => events.push(ev),
                Err(e) => {
                    shared.metrics.invalid("queries");
                    tracing::warn!(partition = msg.partition(), offset = msg.offset(), error = %e, "Skipping an invalid query event.");
                }
            }
        }
        if offsets.is_empty() {
            // Only errors: do not spin on a broken connection.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        futures::future::join_all(events.iter().map(|ev| record(&shared, ev))).await;
        // Counting is all the work there is: the offsets may be stored now.
        store_offsets(&consumer, &shared.query_topic, offsets);
    }
    finish(consumer, "queries").await;
}
