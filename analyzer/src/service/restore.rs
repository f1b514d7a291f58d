//! Restoring a newly assigned partition: its checkpoint, then only the events after it.
//!
//! The partition is paused from the moment it is assigned (`consumer.rs`) and a blocking task
//! runs the steps below while the consume loop goes on with the other partitions (so the poll
//! interval is never missed, however long a restore takes):
//!
//! 1. read the group's committed offset `c` (what the previous owner folded and published);
//! 2. read the partition's newest checkpoint (`checkpoint.rs`; one reader serves every partition
//!    assigned in the same rebalance) and apply it to the model; it covers the events before its
//!    offset `k`;
//! 3. replay `k..c` silently (`rebuild.rs`) — or, when there is no usable checkpoint (none,
//!    unreadable, another format version or model settings), the retained window `..c`, with a
//!    warning and `smart_prefetch_analyzer_checkpoint_fallbacks_total{reason}`;
//! 4. hand the loop where consumption resumes: `c`, or `k` when the checkpoint is ahead of the
//!    committed offset (a commit after the checkpoint failed, or the checkpoint was written on
//!    revoke after the last commit: its events are in the state and their predictions were
//!    acknowledged before it was written, so they must not be folded again).
//!
//! The loop then resumes the partition; `/readyz` answers 200 once no partition is restoring.

use super::checkpoint;
use super::consumer::GroupContext;
use super::rebuild;
use super::Shared;
use prefetch_common::kafka::KafkaArgs;
use rdkafka::consumer::{Consumer, StreamConsumer};
use std::time::{Duration, Instant};

/// What restoring one partition did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The partition.
    pub partition: i32,
    /// The offset the restored checkpoint covered, if one was used.
    pub checkpoint: Option<i64>,
    /// Keys the checkpoint restored.
    pub keys: usize,
    /// Events replayed from the topic.
    pub replayed: u64,
    /// Where the group consumer must resume when it is not the committed offset.
    pub seek_to: Option<i64>,
    /// The next offset to fold (for the next checkpoint), if known.
    pub position: Option<i64>,
    /// Why there was no checkpoint to start from, if there was not.
    pub fallback: Option<&'static str>,
    /// Events of the partition in Kafka after `position` (what the group consumer still has
    /// to read), if the broker said.
    pub backlog: Option<i64>,
    /// Wall time the restore took.
    pub seconds: f64,
}

/// Longest the checkpoint read may take before the partition falls back to a replay.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Restores `partition` (blocking; run it on `spawn_blocking`). `checkpoints` reads the state
/// topic, one client for every partition of the rebalance (`None` when checkpoints are off).
pub fn partition(
    shared: &Shared,
    consumer: &StreamConsumer<GroupContext>,
    kafka: &KafkaArgs,
    topic: &str,
    checkpoints: Option<&checkpoint::SharedReader>,
    partition: i32,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let committed = rebuild::committed(consumer, topic, partition)?;
    let mut out = Outcome {
        partition,
        checkpoint: None,
        keys: 0,
        replayed: 0,
        seek_to: None,
        position: committed,
        fallback: None,
        backlog: None,
        seconds: 0.0,
    };
    if let Some(checkpoints) = checkpoints {
        match checkpoints.read(partition, READ_TIMEOUT) {
            Ok(Some(cp)) => {
                let restored = shared.model().restore(&cp.snapshot);
                match restored {
                    Ok(r) => {
                        for t in &r.tickers {
                            shared.note_ticker(t, partition);
                        }
                        if let Some(ts) = cp.head.watermark {
                            shared.advance(partition, ts);
                        }
                        out.keys = r.keys;
                        out.checkpoint = Some(cp.head.covered_offset);
                    }
                    Err(e) => {
                        tracing::warn!(partition, error = %e, "Checkpoint not usable; replaying the retained window instead.");
                        out.fallback = Some("unusable");
                    }
                }
            }
            Ok(None) => {
                // The normal case on a group's first start; still a full replay, so it counts.
                tracing::info!(partition, "No checkpoint yet; replaying the retained window.");
                out.fallback = Some("missing");
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "Checkpoint unreadable; replaying the retained window instead.");
                out.fallback = Some("unreadable");
            }
        }
    }
    match (out.checkpoint, committed) {
        (Some(k), Some(c)) if k < c => {
            out.replayed = rebuild::replay(shared, kafka, topic, partition, Some(k), c)?;
        }
        (Some(k), c) if c.is_none_or(|c| k > c) => {
            out.seek_to = Some(k);
            out.position = Some(k);
        }
        (Some(_), _) => {}
        (None, Some(c)) => {
            out.replayed = rebuild::replay(shared, kafka, topic, partition, None, c)?
        }
        // Nothing committed: the group consumer itself reads from the beginning.
        (None, None) => {}
    }
    out.backlog = match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
        // Nothing committed: the group consumer reads from the beginning.
        Ok((low, high)) => Some(high - out.position.unwrap_or(low)),
        Err(e) => {
            tracing::info!(partition, error = %e, "High watermark unknown; the backlog is learnt from the consumer's statistics.");
            None
        }
    };
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}
