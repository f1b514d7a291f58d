//! The fold stage: two threads of their own between the consume loop and the model.
//!
//! The consume loop only receives: it copies each ready message's key and payload into a
//! [`Chunk`] and hands the chunk over. This thread parses and validates the chunk's events
//! (outside the model's lock), folds them into the model in consume order under one lock, and
//! enqueues what they caused — the event-driven predictions the model published, dead
//! letters for bad messages — then hands the loop back a [`Folded`]: the chunk's one
//! acknowledgement counter ([`Acks`], not a future per message) and the last offset of each
//! partition. The loop stores those offsets only once the deliveries
//! are acknowledged, so at-least-once holds as before; chunks are folded one at a time in the
//! order they were received, so events stay in order per partition.
//!
//! Events in the canonical form with their names in normal form (every event ingest writes) are
//! only located in the chunk's buffer (`canonical::locate`) and folded as borrowed views
//! (`Model::record_view`): no string is allocated on the parse thread and freed on the fold
//! thread per field, as owned events did (a fifth of the fold path's CPU, BENCHMARKS.md #15).
//!
//! Measured (BENCHMARKS.md, analyzer): parse and validate cost more than the fold itself, and
//! both ran on the consume loop's thread; here they overlap with receiving.

use crate::model::IdHash;
use crate::service::Shared;
use chrono::{DateTime, Utc};
use prefetch_common::contract::canonical::Located;
use prefetch_common::contract::{EventError, QueryEvent, Ticker};
use prefetch_common::kafka::{AckContext, Acks, TopicArgs};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{mpsc, Arc};

/// Most messages in one chunk (the loop hands a chunk over sooner when no message is ready).
pub(crate) const CHUNK: usize = 512;

/// Consumed messages, copied out of the consumer's buffers, in consume order.
#[derive(Default)]
pub(crate) struct Chunk {
    bytes: Vec<u8>,
    messages: Vec<Raw>,
    /// Partition assignments seen by the loop when it handed the chunk over (see
    /// [`Folder::noted`]).
    pub epoch: u64,
}

struct Raw {
    partition: i32,
    offset: i64,
    key: Range<usize>,
    payload: Range<usize>,
}

impl Chunk {
    /// Copies one message in.
    pub fn push(&mut self, m: &BorrowedMessage<'_>) {
        self.push_parts(
            m.partition(),
            m.offset(),
            m.key().unwrap_or_default(),
            m.payload().unwrap_or_default(),
        );
    }

    /// Copies one message in, given its parts (the receive thread's batch consume).
    pub fn push_parts(&mut self, partition: i32, offset: i64, key: &[u8], payload: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let mid = self.bytes.len();
        self.bytes.extend_from_slice(payload);
        self.messages.push(Raw {
            partition,
            offset,
            key: start..mid,
            payload: mid..self.bytes.len(),
        });
    }

    /// Drops the messages of partitions `keep` rejects (revoked while their messages waited
    /// to be handed over). `keep` is asked once per run of one partition's messages.
    pub fn retain_partitions(&mut self, mut keep: impl FnMut(i32) -> bool) {
        let mut last: Option<(i32, bool)> = None;
        self.messages.retain(|m| match last {
            Some((p, k)) if p == m.partition => k,
            _ => {
                let k = keep(m.partition);
                last = Some((m.partition, k));
                k
            }
        });
    }

    /// Messages in the chunk.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Empties the chunk, keeping its buffers for the next one.
    fn clear(&mut self) {
        self.bytes.clear();
        self.messages.clear();
    }
}

#[cfg(test)]
impl Chunk {
    /// `(partition, offset)` of each message, in order.
    pub fn parts(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.messages.iter().map(|m| (m.partition, m.offset))
    }

    /// Each message's payload, in order.
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.messages.iter().map(|m| &self.bytes[m.payload.clone()])
    }
}

/// What folding a chunk produced: deliveries to await before its offsets may be stored.
#[derive(Default)]
pub(crate) struct Folded {
    /// Producer acknowledgements of the predictions and dead letters the chunk caused, if it
    /// caused any (closed: nothing more is added).
    pub acks: Option<Arc<Acks>>,
    /// The last offset folded per partition (a handful of partitions: a vector beats a map).
    pub offsets: Vec<(i32, i64)>,
    /// Messages in the chunk.
    pub messages: usize,
    /// A prediction or dead letter Kafka would not take: the chunk's offsets must not be
    /// stored, so the service stops and its events are re-read after the restart.
    pub failed: Option<String>,
    /// The chunk itself, emptied, for the loop to fill again (its buffers are not reallocated
    /// for every chunk).
    pub spare: Chunk,
}

/// A valid event of a chunk: located in the chunk's buffer (the canonical form with its names
/// in normal form: every event ingest writes), or parsed into an owned event (any other form).
enum Event {
    Located(Located),
    Owned(QueryEvent),
}

/// A chunk parsed and validated, ready to fold.
pub(crate) struct Parsed {
    chunk: Chunk,
    /// `(message index, event)` of the valid messages, in order.
    events: Vec<(usize, Event)>,
    /// `(message index, why)` of the others.
    bad: Vec<(usize, EventError)>,
}

/// The parse thread: runs until the loop drops its end of `chunks`; passes each chunk on to
/// the fold thread, parsed, in order.
pub(crate) fn parse_all(chunks: mpsc::Receiver<Chunk>, parsed: mpsc::Sender<Parsed>) {
    while let Ok(chunk) = chunks.recv() {
        // One clock read per chunk: the future-skew check does not need better.
        let now = Utc::now();
        let (mut events, mut bad) = (Vec::with_capacity(chunk.len()), Vec::new());
        for (i, m) in chunk.messages.iter().enumerate() {
            let payload = &chunk.bytes[m.payload.clone()];
            if let Some(l) = super::parse::locate(payload, m.payload.start, now) {
                events.push((i, Event::Located(l)));
                continue;
            }
            match super::parse::event(payload, now) {
                Ok(e) => events.push((i, Event::Owned(e))),
                Err(e) => bad.push((i, e)),
            }
        }
        if parsed.send(Parsed { chunk, events, bad }).is_err() {
            break;
        }
    }
}

/// What the fold thread needs.
pub(crate) struct Folder {
    pub shared: Arc<Shared>,
    pub producer: ThreadedProducer<AckContext>,
    pub topics: TopicArgs,
    /// Tickers already noted in [`Shared`]'s ticker → partition map by this thread, so each
    /// event need not lock and look it up again (it was a tenth of the fold thread's time).
    /// Forgotten when the chunks' epoch changes: a rebalance may have removed entries.
    pub noted: HashMap<Ticker, i32, IdHash>,
    pub epoch: u64,
}

impl Folder {
    /// Runs until the parse thread stops; answers each chunk on `folded`, in order.
    pub fn run(
        mut self,
        parsed: mpsc::Receiver<Parsed>,
        folded: tokio::sync::mpsc::UnboundedSender<Folded>,
    ) {
        let mut body = Vec::with_capacity(256);
        while let Ok(p) = parsed.recv() {
            let mut f = self.fold(&p, &mut body);
            let mut chunk = p.chunk;
            chunk.clear();
            f.spare = chunk;
            if folded.send(f).is_err() {
                break;
            }
        }
    }

    /// Folds one parsed chunk and publishes what it caused.
    fn fold(&mut self, p: &Parsed, body: &mut Vec<u8>) -> Folded {
        let chunk = &p.chunk;
        let mut out = Folded { messages: chunk.len(), ..Folded::default() };
        // One counter for everything the chunk causes, closed once all of it is enqueued.
        let acks = Arc::new(Acks::default());
        for m in &chunk.messages {
            match out.offsets.iter_mut().find(|(p, _)| *p == m.partition) {
                Some(o) => o.1 = m.offset,
                None => out.offsets.push((m.partition, m.offset)),
            }
        }
        for (i, e) in &p.bad {
            let m = &chunk.messages[*i];
            let payload = &chunk.bytes[m.payload.clone()];
            self.shared.metrics.dead_letter();
            tracing::warn!(partition = m.partition, offset = m.offset, problems = %e, "Dead-lettering a bad message.");
            let origin = prefetch_common::dlq::Origin {
                stage: "analyzer",
                topic: &self.topics.query_events_topic,
                partition: m.partition,
                offset: m.offset,
            };
            // The envelope carries a bounded prefix of the payload: it always fits the broker's
            // message.max.bytes, so the write is acknowledged before the offset is stored.
            let dl = prefetch_common::dlq::envelope(origin, &e.to_string(), payload);
            self.enqueue(&acks, &self.topics.dlq_topic, &chunk.bytes[m.key.clone()], &dl, &mut out);
        }
        if chunk.epoch != self.epoch {
            self.noted.clear();
            self.epoch = chunk.epoch;
        }
        // One lock for the chunk, so no tick runs in the middle of it: noting a ticker's
        // partition when it is first seen and each partition's latest event time once, at the
        // end, leaves `Shared` as noting every event would.
        let recorded: Vec<_> = {
            let mut model = self.shared.model();
            let mut latest: Vec<(i32, DateTime<Utc>)> = Vec::new();
            let recorded = p
                .events
                .iter()
                .map(|(i, e)| {
                    let e = match e {
                        Event::Located(l) => l.view(&chunk.bytes),
                        Event::Owned(e) => e.view(),
                    };
                    let partition = chunk.messages[*i].partition;
                    if self.noted.get(e.ticker()) != Some(&partition) {
                        let ticker = e.to_ticker();
                        self.shared.note_ticker(&ticker, partition);
                        self.noted.insert(ticker, partition);
                    }
                    match latest.iter_mut().find(|(p, _)| *p == partition) {
                        Some(l) => l.1 = l.1.max(e.ts),
                        None => latest.push((partition, e.ts)),
                    }
                    model.record_view(e)
                })
                .collect();
            for (partition, ts) in latest {
                self.shared.advance(partition, ts);
            }
            recorded
        };
        // What the model returns is what it published: de-duplicated (`Recent`) and paid for by
        // the fetch budget, and noted as warmed in its cache view.
        for r in recorded {
            self.shared.metrics.event(r.admission);
            for p in &r.predictions {
                self.shared.metrics.published(p.reason);
                body.clear();
                serde_json::to_writer(&mut *body, p).expect("a Prediction serialises");
                self.enqueue(
                    &acks,
                    &self.topics.predictions_topic,
                    p.ticker.as_str().as_bytes(),
                    body,
                    &mut out,
                );
            }
        }
        acks.close();
        if acks.total() > 0 {
            out.acks = Some(acks);
        }
        out
    }

    fn enqueue(&self, acks: &Arc<Acks>, topic: &str, key: &[u8], payload: &[u8], out: &mut Folded) {
        let mut record = BaseRecord::with_opaque_to(topic, acks.clone()).key(key).payload(payload);
        acks.add();
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                // A full local queue drains as Kafka acknowledges: wait for room (this is the
                // folder's own thread) rather than go on, which would store the offset of a
                // message whose output was never enqueued.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                // Not retryable (every message the analyzer writes is bounded in size): stop
                // before this chunk's offsets are stored, so its events are folded again.
                Err((e, _)) => {
                    acks.settle();
                    tracing::error!(error = %e, topic, "Could not enqueue a message; stopping before its offsets are stored.");
                    if out.failed.is_none() {
                        out.failed = Some(format!("could not produce to {topic}: {e}"));
                    }
                    return;
                }
            }
        }
    }
}
