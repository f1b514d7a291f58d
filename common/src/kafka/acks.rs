//! One acknowledgement counter for a group of produced messages, instead of a future each.
//!
//! A [`FutureProducer`](rdkafka::producer::FutureProducer) allocates a oneshot channel per
//! message and wakes a task per acknowledgement. Ingest (one request's events) and the
//! analyzer's fold (one chunk's predictions and dead letters) only need to know when the whole
//! group is durable, or that some of it is not: a [`ThreadedProducer<AckContext>`] counts each
//! group's deliveries on one shared [`Acks`] and wakes a waiter once, when the last is in
//! (issue #15).

use rdkafka::client::ClientContext;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// A group's outstanding deliveries.
///
/// It starts with one pending "open" count held by whoever enqueues the group, so the counter
/// cannot reach zero while messages are still being added: [`Acks::add`] before each send,
/// [`Acks::settle`] for each delivery (or message never enqueued), [`Acks::close`] once all
/// are enqueued.
#[derive(Debug)]
pub struct Acks {
    remaining: AtomicUsize,
    total: AtomicUsize,
    failed: AtomicUsize,
    first_error: Mutex<Option<String>>,
    done: Notify,
}

impl Default for Acks {
    fn default() -> Self {
        Self {
            remaining: AtomicUsize::new(1),
            total: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            done: Notify::new(),
        }
    }
}

/// Some of a group's messages were not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Kafka did not acknowledge {failed} of {total} messages: {first_error}")]
pub struct AcksError {
    /// Messages not acknowledged (some of the others may have been written: the caller treats
    /// the whole group as not durable, and a retry may duplicate; delivery is at-least-once).
    pub failed: usize,
    /// Messages in the group.
    pub total: usize,
    /// The first error seen.
    pub first_error: String,
}

impl Acks {
    /// One more message is about to be sent in the group.
    pub fn add(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a message of the group that failed (its delivery, or it was never enqueued).
    pub fn fail(&self, error: impl FnOnce() -> String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(error);
    }

    /// One message of the group is settled (delivered, failed, or never enqueued).
    pub fn settle(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    /// Every message of the group is enqueued: drops the open count.
    pub fn close(&self) {
        self.settle();
    }

    /// Whether every message of a closed group is settled.
    pub fn is_settled(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }

    /// Messages sent in the group so far.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Waits until the (closed) group is settled. `notify_one` keeps a permit when nobody waits
    /// yet, so a settle racing this wait is not lost.
    pub async fn settled(&self) {
        while !self.is_settled() {
            self.done.notified().await;
        }
    }

    /// The group's outcome once settled: `Ok` when every message was acknowledged.
    pub fn outcome(&self) -> Result<(), AcksError> {
        let failed = self.failed.load(Ordering::Acquire);
        if failed == 0 {
            return Ok(());
        }
        let first_error = self.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Err(AcksError { failed, total: self.total(), first_error: first_error.unwrap_or_default() })
    }
}

/// A producer context that settles each delivery on its group's [`Acks`]. Never panics (it runs
/// on librdkafka's polling thread).
pub struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = std::sync::Arc<Acks>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: std::sync::Arc<Acks>) {
        if let Err((e, _)) = result {
            acks.fail(|| e.to_string());
        }
        acks.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_settles_once_every_message_and_the_open_count_are_in() {
        let a = Arc::new(Acks::default());
        a.add();
        a.add();
        a.settle();
        assert!(!a.is_settled(), "one message and the open count are out");
        a.settle();
        assert!(!a.is_settled(), "still open: more messages may be added");
        a.close();
        assert!(a.is_settled());
        a.settled().await;
        assert_eq!(a.outcome(), Ok(()));
        assert_eq!(a.total(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_wakes_when_the_last_delivery_settles_on_another_thread() {
        let a = Arc::new(Acks::default());
        for _ in 0..1_000 {
            a.add();
        }
        a.close();
        let b = a.clone();
        let settler = std::thread::spawn(move || {
            for i in 0..1_000 {
                if i == 500 {
                    b.fail(|| "Message timed out".to_owned());
                }
                b.settle();
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), a.settled())
            .await
            .expect("the last settle wakes the waiter");
        settler.join().unwrap();
        let e = a.outcome().unwrap_err();
        assert_eq!((e.failed, e.total, e.first_error.as_str()), (1, 1_000, "Message timed out"));
    }
}
