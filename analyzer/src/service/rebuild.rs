//! Rebuilding a partition's state after a restart or a rebalance, by re-reading the retained
//! window from the topic.
//!
//! The group's committed offset marks what the previous owner already folded and published. The
//! events before it that are still inside the model's retention are read again with a plain
//! assigned reader and folded silently (nothing is published for them: that was done before);
//! the group consumer then continues from the committed offset, so no event is folded twice.

use super::consumer::GroupContext;
use super::Shared;
use chrono::Utc;
use prefetch_common::kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Longest a rebuild of one partition may take before the service gives up on it (and keeps
/// going with what it read).
const REBUILD_LIMIT: Duration = Duration::from_secs(300);

/// Re-reads `partition` from the start of the retention window up to the group's committed
/// offset into the model. Returns how many events were folded. Blocking.
pub fn partition(
    shared: &Shared,
    consumer: &StreamConsumer<GroupContext>,
    kafka: &KafkaArgs,
    topic: &str,
    partition: i32,
) -> anyhow::Result<u64> {
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let end = match committed.find_partition(topic, partition).map(|e| e.offset()) {
        Some(Offset::Offset(o)) if o > 0 => o,
        // Nothing committed: the group consumer itself reads from the beginning.
        other => {
            tracing::debug!(partition, committed = ?other, "Nothing to rebuild.");
            return Ok(0);
        }
    };
    let retention_ms = shared.model().config().retention_s as i64 * 1000;
    let reader: BaseConsumer = kafka.reader_config()?.create()?;
    let mut q = TopicPartitionList::new();
    q.add_partition_offset(
        topic,
        partition,
        Offset::Offset(Utc::now().timestamp_millis() - retention_ms),
    )?;
    let start = match reader
        .offsets_for_times(q, timeout)?
        .find_partition(topic, partition)
        .map(|e| e.offset())
    {
        Some(Offset::Offset(o)) => Offset::Offset(o),
        // End means no message is that recent on a real broker, but the MockCluster answers End
        // for any timestamp. Reading from the start is right in both cases: the model drops
        // whatever lies outside its retention at the next tick. The cost is bounded by the
        // topic's own retention (set it near the model's).
        _ => Offset::Beginning,
    };
    tracing::debug!(partition, ?start, end, "Rebuild range.");
    if matches!(start, Offset::Offset(o) if o >= end) {
        return Ok(0);
    }
    let mut assign = TopicPartitionList::new();
    assign.add_partition_offset(topic, partition, start)?;
    reader.assign(&assign)?;
    let deadline = Instant::now() + REBUILD_LIMIT;
    let mut folded = 0u64;
    let mut last = -1;
    while last + 1 < end {
        if Instant::now() > deadline {
            tracing::warn!(
                partition,
                read_to = last,
                end,
                "Rebuild took too long; continuing with partial history."
            );
            break;
        }
        let Some(r) = reader.poll(Duration::from_millis(500)) else { continue };
        let m = r?;
        last = m.offset();
        if last >= end {
            break;
        }
        // Bad messages were dead-lettered when first read; skip them silently here.
        if let Ok(event) =
            super::pipeline::parse::event(m.payload().unwrap_or_default(), Utc::now())
        {
            shared.note_partition(&event, partition);
            shared.model().record_history(&event);
            folded += 1;
        }
    }
    Ok(folded)
}
