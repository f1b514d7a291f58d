//! Writes events to the query-events topic and reports success only once Kafka has
//! acknowledged every one of them.
//!
//! A request's events share one [`BatchAck`]: librdkafka's delivery callback counts each
//! acknowledgement (or failure) on it and wakes the request when the last one is in. The
//! request still answers 2xx only when every event is acknowledged, as with one future per
//! event, but without an allocation, a channel and a wake-up per event (issue #15).

use crate::batch::Accepted;
use prefetch_common::contract::QueryEvent;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DeliveryFuture, DeliveryResult, FutureProducer, FutureRecord, Producer,
    ProducerContext, ThreadedProducer,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
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

/// One request's outstanding deliveries.
#[derive(Default)]
pub struct BatchAck {
    /// Deliveries not reported yet, plus one held by the request until it has enqueued all.
    remaining: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    done: Notify,
}

impl BatchAck {
    fn fail(&self, error: impl FnOnce() -> String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(error);
    }

    /// One delivery (or one event that was never enqueued) is settled.
    fn settle(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// The event producer's context: settles each delivery on its batch. Never panics (it runs on
/// librdkafka's polling thread).
pub struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Arc<BatchAck>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Arc<BatchAck>) {
        if let Err((e, _)) = result {
            ack.fail(|| e.to_string());
        }
        ack.settle();
    }
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
        let ack = Arc::new(BatchAck::default());
        ack.remaining.store(events.len() + 1, Ordering::Release);
        for a in events {
            let payload = a.payload();
            let mut record = BaseRecord::with_opaque_to(&self.topic, ack.clone())
                .key(a.event.ticker.as_str())
                .payload(payload.as_ref());
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
                        ack.fail(|| e.to_string());
                        ack.settle();
                        break;
                    }
                }
            }
        }
        let total = events.len();
        // message.timeout.ms equals our timeout, so librdkafka settles every delivery by then;
        // the extra second only guards against a lost callback.
        if ack.remaining.fetch_sub(1, Ordering::AcqRel) != 1
            && tokio::time::timeout_at(deadline + Duration::from_secs(1), ack.done.notified())
                .await
                .is_err()
        {
            return Err(SinkError {
                failed: total,
                total,
                first_error: "timed out waiting for acknowledgements".to_owned(),
            });
        }
        let failed = ack.failed.load(Ordering::Acquire);
        if failed == 0 {
            return Ok(());
        }
        let first_error = ack.first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
        Err(SinkError { failed, total, first_error: first_error.unwrap_or_default() })
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
