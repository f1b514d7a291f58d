//! The receive thread: the assigned partitions' messages, a chunk at a time, through
//! librdkafka's batch consume — the one place the project calls librdkafka's C API itself.
//!
//! Why (BENCHMARKS.md, #15): receiving through the group consumer's queue, one message per
//! call (`StreamConsumer::recv`, librdkafka's event API), cost the consume loop about 0.33 µs an
//! event: a poll, an event object, an `Arc` and two clock reads per message. That was a plain
//! consumer's whole cost, which the analyzer's target is measured against.
//! `rd_kafka_consume_batch_queue` takes up to a chunk's worth in one call.
//!
//! Batch consume must not serve the group consumer's queue: a rebalance event met there would
//! be handled by librdkafka's default (rdkafka registers no rebalance callback, it reads
//! rebalances as events), an unassign of everything. So each partition's fetch queue is routed
//! to a queue of our own ([`FetchQueue::route`], called by the consumer context just before a
//! partition is assigned), and only messages (and per-partition errors) arrive there. The group
//! consumer's queue still carries rebalances, commits, statistics and errors, served by the
//! consume loop's `recv` as before. librdkafka keeps a route the application set when it starts
//! fetching (`RD_KAFKA_Q_F_FWD_APP`), drops messages of a partition's older assignment before
//! they are returned (its version barriers), and counts each batch call as a poll for
//! `max.poll.interval.ms`.

// The FFI calls below are the only `unsafe` code of the workspace; each says why it is sound.
#![allow(unsafe_code)]

use super::fold::Chunk;
use rdkafka::bindings as rd;
use rdkafka::client::Client;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientContext;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, RwLock};

/// How long one wait for the first message of a chunk lasts before the thread checks whether
/// it should stop.
const WAIT_MS: i32 = 100;

/// A queue of our own that the assigned partitions' fetch queues forward to.
pub struct FetchQueue {
    /// The client and the queue; `None` once closed. The read lock is held across each batch
    /// call and each route, the write lock only to close.
    inner: RwLock<Option<Handles>>,
}

struct Handles {
    rk: *mut rd::rd_kafka_t,
    q: *mut rd::rd_kafka_queue_t,
}

// SAFETY: librdkafka's client and queue handles are thread-safe (its queues lock internally,
// and batch consume, forwarding and destroy may be called from any thread). The pointers are
// only used under `inner`'s lock, and the queue is destroyed only under its write lock.
unsafe impl Send for Handles {}
// SAFETY: as above.
unsafe impl Sync for Handles {}

impl FetchQueue {
    /// A new, empty queue on `client` (a consumer's). It must be closed before the client is
    /// destroyed: the receive thread closes it when it stops.
    pub fn new<C: ClientContext>(client: &Client<C>) -> Self {
        let rk = client.native_ptr();
        // SAFETY: `rk` is the live client borrowed here (which outlives this queue: the
        // receive thread closes it before the pipeline returns, and the consumer is dropped
        // after that).
        let q = unsafe { rd::rd_kafka_queue_new(rk) };
        assert!(!q.is_null(), "librdkafka returned no queue");
        Self { inner: RwLock::new(Some(Handles { rk, q })) }
    }

    /// Routes `topic`'s `partition` here: from now on its fetched messages arrive on this queue,
    /// not on the group consumer's. Call it before the partition is assigned (librdkafka then
    /// keeps the route when it starts fetching). A no-op once closed.
    pub fn route(&self, topic: &str, partition: i32) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let Some(h) = inner.as_ref() else { return };
        let Ok(topic) = CString::new(topic) else { return };
        // SAFETY: `h.rk` and `h.q` are live (not closed: we hold the read lock); `topic` is a
        // NUL-terminated string that outlives the call. `rd_kafka_queue_get_partition` creates
        // the partition's handle if it does not exist yet and returns a new reference to its
        // fetch queue, which we release after forwarding it.
        unsafe {
            let src = rd::rd_kafka_queue_get_partition(h.rk, topic.as_ptr(), partition);
            if src.is_null() {
                tracing::warn!(partition, "No fetch queue for the partition; it is received on the group consumer's queue.");
                return;
            }
            rd::rd_kafka_queue_forward(src, h.q);
            rd::rd_kafka_queue_destroy(src);
        }
    }

    /// Appends to `chunk` what is waiting, up to `batch.len()` messages; if nothing is, waits up to
    /// [`WAIT_MS`] for the first and then takes what else is waiting. Returns 0 once closed.
    fn fill(&self, chunk: &mut Chunk, batch: &mut [*mut rd::rd_kafka_message_t]) -> usize {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let Some(h) = inner.as_ref() else { return 0 };
        // Never wait for a full chunk (librdkafka's batch call waits for `max` messages or the
        // timeout): take what is there, or wait for one message and then take what is there.
        let mut n = consume(h.q, 0, batch);
        if n == 0 {
            n = consume(h.q, WAIT_MS, &mut batch[..1]);
            if n == 1 {
                n += consume(h.q, 0, &mut batch[1..]);
            }
        }
        for &m in &batch[..n] {
            // SAFETY: librdkafka returned `m` as a valid message, ours until destroyed below;
            // its key and payload (when not null) hold `key_len` and `len` bytes, which we copy
            // before destroying it.
            unsafe {
                let msg = &*m;
                if msg.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    chunk.push_parts(
                        msg.partition,
                        msg.offset,
                        bytes(msg.key, msg.key_len),
                        bytes(msg.payload, msg.len),
                    );
                } else {
                    let code = RDKafkaErrorCode::from(msg.err);
                    tracing::warn!(partition = msg.partition, error = %code, "Consumer error.");
                }
                rd::rd_kafka_message_destroy(m);
            }
        }
        n
    }

    fn is_closed(&self) -> bool {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// Destroys the queue (idempotent). Partitions still routed here lose what they fetch from
    /// now on, which is never acknowledged, so their next reader re-reads it.
    fn close(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = inner.take() {
            // SAFETY: the write lock excludes every other use of the handle; it is taken out,
            // so it is destroyed once. Partition queues still forwarding here hold their own
            // references: librdkafka frees the queue when the last one goes.
            unsafe { rd::rd_kafka_queue_destroy(h.q) }
        }
    }
}

impl Drop for FetchQueue {
    fn drop(&mut self) {
        self.close();
    }
}

/// One batch call: up to `out.len()` messages into `out`, waiting up to `timeout_ms`.
fn consume(
    q: *mut rd::rd_kafka_queue_t,
    timeout_ms: i32,
    out: &mut [*mut rd::rd_kafka_message_t],
) -> usize {
    if out.is_empty() {
        return 0;
    }
    // SAFETY: `q` is live (the caller holds the read lock) and `out` has room for `out.len()`
    // pointers, which is all librdkafka writes.
    let n = unsafe { rd::rd_kafka_consume_batch_queue(q, timeout_ms, out.as_mut_ptr(), out.len()) };
    usize::try_from(n).unwrap_or(0)
}

/// The bytes behind a message's key or payload (empty when absent).
///
/// # Safety
/// `ptr`, when not null, points to `len` readable bytes that outlive the returned slice.
unsafe fn bytes<'a>(ptr: *mut std::ffi::c_void, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }
    }
}

/// The receive thread's ends: chunks out to the consume loop, emptied chunks back.
pub struct Receiver {
    /// Filled chunks, in the order received.
    pub chunks: tokio::sync::mpsc::Receiver<Chunk>,
    /// Emptied chunks to fill again.
    pub spares: mpsc::Sender<Chunk>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Chunks received and not yet taken by the consume loop. Two: one being handed over while the
/// next fills; more would only hold messages the loop cannot fold yet.
const READY: usize = 2;

impl Receiver {
    /// Starts the thread on `queue`; each chunk holds at most `max` messages.
    pub fn start(queue: Arc<FetchQueue>, max: usize) -> std::io::Result<Self> {
        let (tx, chunks) = tokio::sync::mpsc::channel(READY);
        let (spares, spare_rx) = mpsc::channel::<Chunk>();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("analyzer-recv".into()).spawn(move || {
            let mut batch = vec![std::ptr::null_mut(); max.max(1)];
            while !flag.load(Ordering::Relaxed) {
                let mut chunk = spare_rx.try_recv().unwrap_or_default();
                while chunk.len() == 0 && !flag.load(Ordering::Relaxed) {
                    if queue.fill(&mut chunk, &mut batch) == 0 && queue.is_closed() {
                        break;
                    }
                }
                if chunk.len() == 0 || tx.blocking_send(chunk).is_err() {
                    break;
                }
            }
            queue.close();
        })?;
        Ok(Self { chunks, spares, stop, thread: Some(thread) })
    }

    /// Stops the thread and closes the queue; what it received and the loop did not take is
    /// dropped unacknowledged.
    pub async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A thread blocked handing a chunk over wakes with an error.
        self.chunks.close();
        while self.chunks.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefetch_testkit::{unique_topics, TestKafka};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    use std::time::{Duration, Instant};

    #[test]
    fn a_chunk_keeps_only_the_partitions_it_is_told_to() {
        let mut c = Chunk::default();
        for (p, o) in [(0, 1), (0, 2), (1, 7), (2, 3), (1, 8), (0, 3)] {
            c.push_parts(p, o, b"K", format!("{p}:{o}").as_bytes());
        }
        let mut asked = Vec::new();
        c.retain_partitions(|p| {
            asked.push(p);
            p != 1
        });
        assert_eq!(c.len(), 4, "partition 1's two messages dropped");
        assert_eq!(asked, [0, 1, 2, 1, 0], "asked once per run of one partition");
        let kept: Vec<(i32, i64)> = c.parts().collect();
        assert_eq!(kept, [(0, 1), (0, 2), (2, 3), (0, 3)]);
    }

    /// A routed partition's messages come through the batch queue, byte for byte and in
    /// order; an unrouted one's still come through the consumer's own queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_routed_partition_is_received_in_batches_and_the_others_as_before() {
        let kafka = TestKafka::start();
        let topic = unique_topics("an-receive").query_events_topic;
        kafka.prepare_topic(&topic, 2);
        kafka.precreate(&topic).await;
        let producer: FutureProducer =
            ClientConfig::new().set("bootstrap.servers", kafka.bootstrap()).create().unwrap();
        let payload = |p: i32, i: usize| format!("{{\"p\":{p},\"i\":{i}}}");
        for i in 0..300 {
            for p in [0, 1] {
                let body = payload(p, i);
                let record = FutureRecord::to(&topic).partition(p).key("K").payload(&body);
                producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
            }
        }

        let consumer: BaseConsumer = kafka.kafka_args().reader_config().unwrap().create().unwrap();
        let queue = FetchQueue::new(consumer.client());
        queue.route(&topic, 0);
        let mut tpl = TopicPartitionList::new();
        for p in [0, 1] {
            tpl.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();

        let (mut batched, mut polled) = (Chunk::default(), Vec::new());
        let mut batch = vec![std::ptr::null_mut(); 64];
        let deadline = Instant::now() + Duration::from_secs(30);
        while (batched.len() < 300 || polled.len() < 300) && Instant::now() < deadline {
            let n = queue.fill(&mut batched, &mut batch);
            assert!(n <= 64, "a batch call returned {n} messages for room for 64");
            // (`fill` waits up to 100 ms when partition 0 has nothing; take all that is here.)
            while let Some(m) = consumer.poll(Duration::from_millis(10)) {
                let m = m.unwrap();
                polled.push((m.partition(), m.payload().unwrap().to_vec()));
            }
        }
        let got: Vec<(i32, i64)> = batched.parts().collect();
        let expected: Vec<(i32, i64)> = (0..300).map(|i| (0, i)).collect();
        assert_eq!(got, expected, "partition 0, every offset once, in order");
        for (i, m) in batched.payloads().enumerate() {
            assert_eq!(m, payload(0, i).as_bytes());
        }
        assert_eq!(polled.len(), 300);
        for (i, (p, body)) in polled.iter().enumerate() {
            assert_eq!((*p, body.as_slice()), (1, payload(1, i).as_bytes()));
        }
        queue.close();
        assert_eq!(queue.fill(&mut batched, &mut batch), 0, "a closed queue gives nothing");
        // Never wait on dropping a consumer (MockCluster: rust-rdkafka #453, #509, #611).
        std::thread::spawn(move || drop(consumer));
    }
}
