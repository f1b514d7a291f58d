//! Re-reading a range of a partition into the model (`restore.rs` decides the range).
//!
//! The group's committed offset marks what the previous owner already folded and published. The
//! events before it that the restored state lacks — after its checkpoint, or, without one, all
//! those still inside the model's retention — are read again with a plain assigned reader and
//! folded silently (nothing is published for them: that was done before); the group consumer
//! then continues from the committed offset, so no event is folded twice.

use super::consumer::GroupContext;
use super::Shared;
use chrono::Utc;
use prefetch_common::kafka::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// Longest a replay of one partition may take before the service gives up on it (and keeps
/// going with what it read).
const REBUILD_LIMIT: Duration = Duration::from_secs(300);

/// The first offset of `partition` still inside the model's retention window.
pub fn retention_start(
    shared: &Shared,
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Offset> {
    let retention_ms = shared.model().config().retention_s as i64 * 1000;
    let mut q = TopicPartitionList::new();
    q.add_partition_offset(
        topic,
        partition,
        Offset::Offset(Utc::now().timestamp_millis() - retention_ms),
    )?;
    Ok(
        match reader
            .offsets_for_times(q, Duration::from_secs(10))?
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => Offset::Offset(o),
            // End means no message is that recent on a real broker, but the MockCluster answers End
            // for any timestamp. Reading from the start is right in both cases: the model drops
            // whatever lies outside its retention at the next tick. The cost is bounded by the
            // topic's own retention (set it near the model's).
            _ => Offset::Beginning,
        },
    )
}

/// The group's committed offset of `partition`, if any.
pub fn committed(
    consumer: &StreamConsumer<GroupContext>,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(match committed.find_partition(topic, partition).map(|e| e.offset()) {
        Some(Offset::Offset(o)) if o >= 0 => Some(o),
        _ => None,
    })
}

/// Re-reads `partition` from `start` up to (not including) `end` into the model, silently.
/// Returns how many events were folded. Blocking.
pub fn replay(
    shared: &Shared,
    kafka: &KafkaArgs,
    topic: &str,
    partition: i32,
    start: Option<i64>,
    end: i64,
) -> anyhow::Result<u64> {
    let reader: BaseConsumer = kafka.reader_config()?.create()?;
    let start = match start {
        Some(o) => Offset::Offset(o),
        None => retention_start(shared, &reader, topic, partition)?,
    };
    tracing::debug!(partition, ?start, end, "Replay range.");
    if end <= 0 || matches!(start, Offset::Offset(o) if o >= end) {
        return Ok(0);
    }
    let mut assign = TopicPartitionList::new();
    assign.add_partition_offset(topic, partition, start)?;
    reader.assign(&assign)?;
    let deadline = Instant::now() + REBUILD_LIMIT;
    let mut folded = 0u64;
    let mut last = -1;
    let mut batch = Vec::with_capacity(512);
    while last + 1 < end {
        if Instant::now() > deadline {
            tracing::warn!(
                partition,
                read_to = last,
                end,
                "Replay took too long; continuing with partial history."
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
            batch.push(event);
        }
        // The model is locked per batch, not per event: the fold thread shares it.
        if batch.len() == batch.capacity() || last + 1 >= end {
            folded += fold_history(shared, partition, &mut batch);
        }
    }
    folded += fold_history(shared, partition, &mut batch);
    Ok(folded)
}

fn fold_history(
    shared: &Shared,
    partition: i32,
    batch: &mut Vec<prefetch_common::contract::QueryEvent>,
) -> u64 {
    if batch.is_empty() {
        return 0;
    }
    let mut tickers: Vec<&prefetch_common::contract::Ticker> = Vec::new();
    {
        let mut model = shared.model();
        for e in batch.iter() {
            model.record_history(e);
        }
    }
    if let Some(latest) = batch.iter().map(|e| e.ts).max() {
        shared.advance(partition, latest);
    }
    for e in batch.iter() {
        if tickers.last() != Some(&&e.ticker) {
            tickers.push(&e.ticker);
        }
    }
    tickers.sort_unstable();
    tickers.dedup();
    for t in tickers {
        shared.note_ticker(t, partition);
    }
    let n = batch.len() as u64;
    batch.clear();
    n
}
