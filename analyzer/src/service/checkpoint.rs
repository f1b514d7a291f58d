//! Checkpoints of the state each query-events partition contributes, on a compacted topic.
//!
//! The state topic has one partition per query-events partition; partition `p`'s checkpoints
//! go to state partition `p` and nothing else does, so the newest record of a state partition
//! is always the head of its newest checkpoint. A checkpoint is a run of chunks (keys `p/0`,
//! `p/1`, …; a chunk is at most [`CHUNK_BYTES`], under the broker's default message limit) and
//! then a head (key `p/head`, JSON [`Head`]) naming the chunks' count, the offset of the first
//! one and the input offset the state covers. Chunks start with the checkpoint's generation, so
//! a chunk of an older or a concurrent writer is never mixed in.
//!
//! Reading one back costs one fetch of the head and one of the chunks after it, however long
//! the topic's uncompacted tail is. What the checkpoint holds is [`crate::Model::snapshot`]'s
//! format, versioned there; the head has a version of its own.
//!
//! A checkpoint of partition `p` is written only when every event of `p` folded so far is
//! settled (its predictions acknowledged, its offset committed), so the offset it covers is never
//! beyond what the group committed unless a later commit failed; see `restore.rs`.

use prefetch_common::kafka::KafkaArgs;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Largest chunk of a checkpoint (the broker's default `message.max.bytes` is 1 MiB).
pub const CHUNK_BYTES: usize = 900 * 1024;

/// The head format this build writes and reads.
pub const HEAD_VERSION: u32 = 1;

/// The record that closes a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Head format version ([`HEAD_VERSION`]).
    pub version: u32,
    /// The query-events partition.
    pub partition: i32,
    /// The next query-events offset: the state holds every event before it and none after.
    pub covered_offset: i64,
    /// Distinguishes checkpoints of one partition (the writer's clock in µs).
    pub generation: u64,
    /// Chunks in the checkpoint.
    pub chunks: u32,
    /// State-topic offset of the first chunk.
    pub first_offset: i64,
    /// Snapshot bytes over all chunks.
    pub bytes: u64,
    /// The partition's event-time watermark (latest event time folded from it), if any.
    #[serde(default)]
    pub watermark: Option<chrono::DateTime<chrono::Utc>>,
    /// When it was written (RFC 3339).
    pub written_at: String,
}

/// A checkpoint read back: its head and the snapshot bytes.
#[derive(Debug)]
pub struct Checkpoint {
    /// The head.
    pub head: Head,
    /// The model snapshot (`Model::restore` reads it).
    pub snapshot: Vec<u8>,
}

/// Why a checkpoint could not be read (the caller replays the partition instead).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The setup of the reader failed.
    #[error("reader: {0}")]
    Setup(#[from] prefetch_common::kafka::KafkaSetupError),
    /// The newest record is not a checkpoint head (e.g. a writer died between chunks).
    #[error("the newest record of state partition {0} is not a checkpoint head")]
    NoHead(i32),
    /// The head does not parse or has another version.
    #[error("unreadable checkpoint head: {0}")]
    BadHead(String),
    /// A chunk is missing or foreign.
    #[error("checkpoint chunks incomplete: {0}")]
    Chunks(String),
    /// Reading took too long.
    #[error("timed out reading the checkpoint")]
    Timeout,
}

/// Makes sure the state topic exists, compacted, with at least `partitions` partitions.
/// Returns false (checkpoints off, with a warning) when it cannot.
pub async fn ensure_state_topic(kafka: &KafkaArgs, topic: &str, partitions: usize) -> bool {
    let admin = match kafka.admin() {
        Ok(a) => std::sync::Arc::new(a),
        Err(e) => {
            tracing::warn!(error = %e, "No admin client; checkpoints off.");
            return false;
        }
    };
    let (a, t) = (admin.clone(), topic.to_owned());
    let have = tokio::task::spawn_blocking(move || {
        let md = a.inner().fetch_metadata(Some(&t), Duration::from_secs(5)).ok()?;
        let found = md.topics().iter().find(|x| x.name() == t && x.error().is_none())?;
        Some(found.partitions().len())
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(0);
    if have >= partitions {
        return true;
    }
    if have > 0 {
        tracing::warn!(topic, have, need = partitions, "The state topic has fewer partitions than the query-events topic; checkpoints off (recreate it).");
        return false;
    }
    let new =
        NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(kafka.topic_replication))
            .set("cleanup.policy", "compact")
            // Old checkpoints become compactable within minutes, not after a week's segment.
            .set("segment.ms", "600000")
            .set("min.cleanable.dirty.ratio", "0.1");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match tokio::time::timeout(Duration::from_secs(15), admin.create_topics([&new], &opts)).await {
        Ok(Ok(r)) => match r.first() {
            Some(Ok(_)) | Some(Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists))) => {
                tracing::info!(topic, partitions, "State topic ready.");
                true
            }
            other => {
                tracing::warn!(topic, result = ?other, "Could not create the state topic; checkpoints off.");
                false
            }
        },
        other => {
            tracing::warn!(topic, result = ?other.map(|r| r.map(|_| ())), "Could not create the state topic; checkpoints off.");
            false
        }
    }
}

/// Writes one partition's checkpoint: the chunks, then the head once they are acknowledged.
/// Returns the head written.
pub async fn write(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    covered_offset: i64,
    watermark: Option<chrono::DateTime<chrono::Utc>>,
    snapshot: &[u8],
) -> anyhow::Result<Head> {
    let generation = chrono::Utc::now().timestamp_micros() as u64;
    let chunks: Vec<&[u8]> =
        if snapshot.is_empty() { vec![&[][..]] } else { snapshot.chunks(CHUNK_BYTES).collect() };
    let payloads: Vec<(String, Vec<u8>)> = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut payload = Vec::with_capacity(chunk.len() + 12);
            payload.extend_from_slice(&generation.to_le_bytes());
            payload.extend_from_slice(&(i as u32).to_le_bytes());
            payload.extend_from_slice(chunk);
            (format!("{partition}/{i}"), payload)
        })
        .collect();
    // All chunks in flight at once: the idempotent producer keeps them in order in the partition.
    let sends = payloads.iter().map(|(key, payload)| {
        producer.send(
            FutureRecord::to(topic).partition(partition).key(key).payload(payload),
            Duration::from_secs(30),
        )
    });
    let mut first_offset = -1;
    for (i, r) in futures::future::join_all(sends).await.into_iter().enumerate() {
        let d = r.map_err(|(e, _)| anyhow::anyhow!("checkpoint chunk not written: {e}"))?;
        if i == 0 {
            first_offset = d.offset;
        }
    }
    let head = Head {
        version: HEAD_VERSION,
        partition,
        covered_offset,
        generation,
        chunks: chunks.len() as u32,
        first_offset,
        bytes: snapshot.len() as u64,
        watermark,
        written_at: chrono::Utc::now().to_rfc3339(),
    };
    let body = serde_json::to_vec(&head)?;
    let key = format!("{partition}/head");
    producer
        .send(
            FutureRecord::to(topic).partition(partition).key(&key).payload(&body),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("checkpoint head not written: {e}"))?;
    Ok(head)
}

/// Reads partition `partition`'s newest checkpoint through a client of its own; `Ok(None)` when
/// there is none. Blocking. To read several partitions, use one [`CheckpointReader`] (or
/// [`SharedReader`]): a client costs ~0.1 s to create and connect, sometimes ~1 s.
pub fn read(
    kafka: &KafkaArgs,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<Option<Checkpoint>, CheckpointError> {
    CheckpointReader::new(kafka, topic)?.read(partition, timeout)
}

/// One client that reads the checkpoints of any partitions of the state topic, one partition at
/// a time (it is assigned the partition it reads, then unassigned).
///
/// Why one for many: creating a client and its first metadata and watermark round-trip took
/// ~0.1 s and sometimes ~1 s, even for a partition without a checkpoint; with a client per
/// partition, a rebalance of 12 partitions paused folding for up to ~1 s (BENCHMARKS.md, #11).
pub struct CheckpointReader {
    reader: BaseConsumer,
    topic: String,
}

/// How long the broker may hold the reader's fetch of a partition with nothing more to read
/// (`fetch.wait.max.ms`). librdkafka keeps one fetch per broker in flight, so once a read has
/// what it wants, the next assignment's fetch waits for the broker to answer the one after it:
/// with the default 500 ms, one checkpoint (head, then chunks) took ~0.6 s to read, and 12
/// partitions through one client ~7.5 s; with 10 ms, 0.2 s; with 1 ms, 0.06 s (BENCHMARKS.md,
/// `checkpoint-read`). The reader is assigned only while it reads a range that ends at a record
/// that exists, so the short wait costs no idle polling. Set after the operator's options: it
/// concerns only this reader.
pub const READER_FETCH_WAIT_MS: u32 = 1;

impl CheckpointReader {
    /// A reader of the checkpoints on `topic` (creates the client; connects on first use).
    pub fn new(kafka: &KafkaArgs, topic: &str) -> Result<Self, CheckpointError> {
        let mut config = kafka.reader_config()?;
        config.set("fetch.wait.max.ms", READER_FETCH_WAIT_MS.to_string());
        Self::from_config(&config, topic)
    }

    /// A reader with a client configured by the caller (e.g. a benchmark comparing settings).
    pub fn from_config(config: &ClientConfig, topic: &str) -> Result<Self, CheckpointError> {
        Ok(Self { reader: config.create()?, topic: topic.to_owned() })
    }

    /// Reads partition `partition`'s newest checkpoint; `Ok(None)` when there is none. Blocking.
    /// An error concerns this partition only: the reader can read the next one.
    pub fn read(
        &self,
        partition: i32,
        timeout: Duration,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let read = self.read_assigned(partition, timeout);
        // Nothing is fetched for this partition while the reader waits for the next one.
        if let Err(e) = self.reader.unassign() {
            tracing::debug!(partition, error = %e, "Checkpoint reader not unassigned.");
        }
        read
    }

    fn read_assigned(
        &self,
        partition: i32,
        timeout: Duration,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let (reader, topic) = (&self.reader, self.topic.as_str());
        let (low, high) = reader.fetch_watermarks(topic, partition, timeout)?;
        if high <= low {
            return Ok(None);
        }
        let deadline = Instant::now() + timeout;
        let mut head = None;
        read_range(reader, topic, partition, high - 1, high, deadline, |m| {
            if m.key() != Some(format!("{partition}/head").as_bytes()) {
                return Err(CheckpointError::NoHead(partition));
            }
            let h: Head = serde_json::from_slice(m.payload().unwrap_or_default())
                .map_err(|e| CheckpointError::BadHead(e.to_string()))?;
            head = Some(h);
            Ok(())
        })?;
        let head = head.ok_or(CheckpointError::NoHead(partition))?;
        if head.version != HEAD_VERSION || head.partition != partition {
            return Err(CheckpointError::BadHead(format!(
                "version {} for partition {} (this build reads version {HEAD_VERSION})",
                head.version, head.partition
            )));
        }
        let mut parts: Vec<Option<Vec<u8>>> = vec![None; head.chunks as usize];
        read_range(reader, topic, partition, head.first_offset, high - 1, deadline, |m| {
            let p = m.payload().unwrap_or_default();
            if p.len() < 12 || u64::from_le_bytes(p[..8].try_into().expect("8")) != head.generation
            {
                return Ok(());
            }
            let i = u32::from_le_bytes(p[8..12].try_into().expect("4")) as usize;
            if let Some(slot) = parts.get_mut(i) {
                *slot = Some(p[12..].to_vec());
            }
            Ok(())
        })?;
        let mut snapshot = Vec::with_capacity(head.bytes as usize);
        for (i, p) in parts.into_iter().enumerate() {
            snapshot.extend(p.ok_or_else(|| {
                CheckpointError::Chunks(format!("chunk {i} of {} is missing", head.chunks))
            })?);
        }
        Ok(Some(Checkpoint { head, snapshot }))
    }
}

/// A [`CheckpointReader`] shared by the partitions of one restore pass, which restore on blocking
/// tasks of their own: the first read creates the client, later reads reuse it, one at a time
/// (a read is two short fetches; the replays after them still run side by side). When the client
/// cannot be created, that read fails as before and the next one tries again.
pub struct SharedReader {
    kafka: KafkaArgs,
    topic: String,
    reader: std::sync::Mutex<Option<CheckpointReader>>,
}

impl SharedReader {
    /// A reader of the checkpoints on `topic`; no client until the first read.
    pub fn new(kafka: &KafkaArgs, topic: &str) -> Self {
        Self { kafka: kafka.clone(), topic: topic.to_owned(), reader: Default::default() }
    }

    /// [`CheckpointReader::read`] through the shared client. Blocking.
    pub fn read(
        &self,
        partition: i32,
        timeout: Duration,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if reader.is_none() {
            *reader = Some(CheckpointReader::new(&self.kafka, &self.topic)?);
        }
        reader.as_ref().expect("created above").read(partition, timeout)
    }
}

/// Reads `[from, to)` of one partition, calling `each` per record.
fn read_range(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    deadline: Instant,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<(), CheckpointError>,
) -> Result<(), CheckpointError> {
    if from >= to {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
    reader.assign(&tpl)?;
    loop {
        if Instant::now() > deadline {
            return Err(CheckpointError::Timeout);
        }
        let Some(r) = reader.poll(Duration::from_millis(200)) else { continue };
        let m = r?;
        // A record fetched for an earlier assignment of this reader (librdkafka is meant to
        // drop those) would otherwise pass for this partition's.
        if m.partition() != partition || m.topic() != topic || m.offset() < from {
            continue;
        }
        if m.offset() >= to {
            return Ok(());
        }
        each(&m)?;
        if m.offset() + 1 >= to {
            return Ok(());
        }
    }
}

/// Partitions of `topic` (the configured default when its metadata cannot be read), through a
/// client of its own: for startup, before the group consumer exists.
pub async fn partition_count(kafka: &KafkaArgs, topic: &str) -> usize {
    let (k, t) = (kafka.clone(), topic.to_owned());
    let n = tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer = k.reader_config().ok()?.create().ok()?;
        partitions_seen_by(&reader, &t)
    })
    .await
    .ok()
    .flatten();
    or_configured(n, kafka)
}

/// Partitions of `topic` in the metadata `client` fetches (blocking, up to 5 s); `None` when
/// it cannot say.
pub fn partitions_seen_by<C: Consumer<X>, X: ConsumerContext>(
    client: &C,
    topic: &str,
) -> Option<usize> {
    let md = client.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
    md.topics().iter().find(|x| x.name() == topic).map(|x| x.partitions().len())
}

/// `n` partitions if known and non-zero, else the configured `--topic-partitions`.
pub fn or_configured(n: Option<usize>, kafka: &KafkaArgs) -> usize {
    n.filter(|&n| n > 0).unwrap_or(kafka.topic_partitions.max(1) as usize)
}

#[cfg(test)]
mod tests;
