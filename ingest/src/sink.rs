//! Writes events to the query-events topic and reports success only once Kafka has
//! acknowledged every one of them.
//!
//! A request's events share one [`Acks`]: librdkafka's delivery callback counts each
//! acknowledgement (or failure) on it and wakes the request when the last one is in. The
//! request still answers 2xx only when every event is acknowledged, as with one future per
//! event, but without an allocation, a channel and a wake-up per event (issue #15).

use crate::batch::Accepted;
use prefetch_common::contract::QueryEvent;
use prefetch_common::kafka::{AckContext, Acks};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryFuture, FutureProducer, FutureRecord, Producer, ThreadedProducer,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Kafka did not take (all of) a batch in time.
#[derive(Debug, thiserror::Error)]
#[error("Kafka did not acknowledge {failed} of {total} events: {first_error}")]
pub struct SinkError {
    /// Events not acknowledged (some of the others may have been written: the caller must treat
    /// the whole batch as not accepted, and a retry may duplicate; delivery is at-least-once).
    pub failed: usize,
    /// Events in the batch.
    pub total: usize,
    /// The first error seen, for the log and the 503 body.
    pub first_error: String,
}

/// The producing half of ingest: one idempotent `acks=all` producer for the events, another
/// (same settings) for the API's writes and readiness, and the topic the events go to.
#[derive(Clone)]
pub struct EventSink {
    events: Arc<ThreadedProducer<AckContext>>,
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl EventSink {
    /// A sink writing to `topic` with `events`; `producer` serves everything else. `timeout`
    /// bounds how long [`EventSink::send_all`] waits.
    pub fn new(
        events: ThreadedProducer<AckContext>,
        producer: FutureProducer,
        topic: String,
        timeout: Duration,
    ) -> Self {
        Self { events: Arc::new(events), producer, topic, timeout }
    }

    /// The general-purpose producer, for the API's writes, readiness checks and replays.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Enqueues every event (key = ticker) and waits until each is acknowledged or the
    /// timeout passes. `Ok` means all of them are durable on the brokers.
    pub async fn send_all(&self, events: &[Accepted<'_>]) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.timeout;
        let acks = Arc::new(Acks::default());
        for a in events {
            let payload = a.payload();
            let mut record = BaseRecord::with_opaque_to(&self.topic, acks.clone())
                .key(a.event.ticker.as_str())
                .payload(payload.as_ref());
            acks.add();
            loop {
                match self.events.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                        if Instant::now() < deadline =>
                    {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => {
                        acks.fail(|| e.to_string());
                        acks.settle();
                        break;
                    }
                }
            }
        }
        acks.close();
        let total = events.len();
        // message.timeout.ms equals our timeout, so librdkafka settles every delivery by then;
        // the extra second only guards against a lost callback.
        if tokio::time::timeout_at(deadline + Duration::from_secs(1), acks.settled()).await.is_err()
        {
            return Err(SinkError {
                failed: total,
                total,
                first_error: "timed out waiting for acknowledgements".to_owned(),
            });
        }
        acks.outcome().map_err(|e| SinkError {
            failed: e.failed,
            total,
            first_error: e.first_error,
        })
    }

    /// Enqueues one event on the general-purpose producer, waiting for room while the local
    /// queue is full (backpressure); for replays, which settle their own futures.
    pub async fn enqueue(
        &self,
        event: &QueryEvent,
        deadline: Instant,
    ) -> Result<DeliveryFuture, KafkaError> {
        let payload = event.to_json();
        let mut record = FutureRecord::to(&self.topic).key(event.ticker.as_str()).payload(&payload);
        loop {
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Waits (up to `timeout`) for everything enqueued on either producer to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.events.flush(timeout)?;
        self.producer.flush(timeout)
    }
}
