//! Writes events to the query-events topic and reports success only once Kafka has
//! acknowledged every one of them.

use futures::future::join_all;
use prefetch_common::contract::QueryEvent;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
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

/// The producing half of ingest: one idempotent `acks=all` producer and the topic it writes.
#[derive(Clone)]
pub struct EventSink {
    producer: FutureProducer,
    topic: String,
    timeout: Duration,
}

impl EventSink {
    /// A sink writing to `topic`; `timeout` bounds how long [`EventSink::send_all`] waits.
    pub fn new(producer: FutureProducer, topic: String, timeout: Duration) -> Self {
        Self { producer, topic, timeout }
    }

    /// The producer, for readiness checks and the final flush.
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// The topic written to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Enqueues every event (key = ticker) and waits until each is acknowledged or the
    /// timeout passes. `Ok` means all of them are durable on the brokers.
    pub async fn send_all(&self, events: &[QueryEvent]) -> Result<(), SinkError> {
        let deadline = Instant::now() + self.timeout;
        let mut pending = Vec::with_capacity(events.len());
        let mut first_error = None;
        let mut failed = 0;
        for event in events {
            match self.enqueue(event, deadline).await {
                Ok(f) => pending.push(f),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        // message.timeout.ms equals our timeout, so librdkafka resolves every future by then;
        // the extra second only guards against a lost callback.
        let results =
            tokio::time::timeout_at(deadline + Duration::from_secs(1), join_all(pending)).await;
        match results {
            Ok(results) => {
                for r in results {
                    let err = match r {
                        Ok(Ok(_)) => continue,
                        Ok(Err((e, _))) => e.to_string(),
                        Err(_) => "producer dropped the delivery report".to_owned(),
                    };
                    failed += 1;
                    first_error.get_or_insert(err);
                }
            }
            Err(_) => {
                failed = events.len();
                first_error
                    .get_or_insert_with(|| "timed out waiting for acknowledgements".to_owned());
            }
        }
        match first_error {
            None => Ok(()),
            Some(first_error) => Err(SinkError { failed, total: events.len(), first_error }),
        }
    }

    /// Enqueues one event, waiting for room while the local queue is full (backpressure).
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

    /// Waits (up to `timeout`) for everything enqueued to be delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
