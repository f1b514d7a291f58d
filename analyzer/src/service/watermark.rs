//! The model's clock from per-partition watermarks.
//!
//! Each partition's watermark is the latest event time folded from it. The model's clock is the
//! minimum over the partitions that are not idle (an event arrived within the idle timeout, wall
//! clock), so one producer whose clock runs ahead, or one partition far ahead of a lagging one,
//! cannot move the clock past the others' events and get them dropped as late. When every
//! partition is idle the clock is the maximum (nothing is held back by a quiet partition).

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Part {
    latest: DateTime<Utc>,
    seen: Instant,
}

/// Per-partition event-time watermarks.
#[derive(Debug)]
pub struct Watermarks {
    parts: HashMap<i32, Part>,
    idle: Duration,
}

impl Watermarks {
    /// No partition yet; a partition is idle after `idle` without an event.
    pub fn new(idle: Duration) -> Self {
        Self { parts: HashMap::new(), idle }
    }

    /// An event of `partition` at `ts` arrived at `now`.
    pub fn advance(&mut self, partition: i32, ts: DateTime<Utc>, now: Instant) {
        let p = self.parts.entry(partition).or_insert(Part { latest: ts, seen: now });
        p.latest = p.latest.max(ts);
        p.seen = now;
    }

    /// The model's clock at `now`, if any event was folded.
    pub fn clock(&self, now: Instant) -> Option<DateTime<Utc>> {
        let active = self
            .parts
            .values()
            .filter(|p| now.saturating_duration_since(p.seen) < self.idle)
            .map(|p| p.latest)
            .min();
        active.or_else(|| self.parts.values().map(|p| p.latest).max())
    }

    /// `partition`'s watermark, if it folded any event.
    pub fn of(&self, partition: i32) -> Option<DateTime<Utc>> {
        self.parts.get(&partition).map(|p| p.latest)
    }

    /// Forgets partitions no longer owned.
    pub fn forget(&mut self, partitions: &[i32]) {
        self.parts.retain(|p, _| !partitions.contains(p));
    }

    /// Partitions holding the clock back: active, with the minimum watermark.
    pub fn active(&self, now: Instant) -> usize {
        self.parts.values().filter(|p| now.saturating_duration_since(p.seen) < self.idle).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_773_066_600 + s, 0).unwrap()
    }

    #[test]
    fn a_fast_partition_does_not_move_the_clock_past_the_others() {
        let start = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(30));
        assert_eq!(w.clock(start), None);
        w.advance(0, t(100), start);
        // Partition 1's producer runs four minutes ahead.
        w.advance(1, t(340), start);
        w.advance(0, t(90), start);
        assert_eq!(w.clock(start), Some(t(100)), "the minimum over active partitions");
        w.advance(0, t(120), start + Duration::from_secs(20));
        assert_eq!(w.clock(start + Duration::from_secs(20)), Some(t(120)));
        // Partition 0 goes quiet: after the idle timeout it no longer holds the clock back.
        assert_eq!(w.clock(start + Duration::from_secs(55)), Some(t(340)));
        // Partition 0 speaks again; partition 1 is idle now, so 0 alone sets the clock.
        w.advance(0, t(130), start + Duration::from_secs(56));
        assert_eq!(w.clock(start + Duration::from_secs(56)), Some(t(130)));
        w.forget(&[0]);
        assert_eq!(w.clock(start + Duration::from_secs(56)), Some(t(340)));
    }

    #[test]
    fn when_every_partition_is_idle_the_clock_is_the_latest() {
        let start = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(1));
        w.advance(0, t(10), start);
        w.advance(1, t(20), start);
        assert_eq!(w.clock(start + Duration::from_secs(5)), Some(t(20)));
        assert_eq!(w.active(start + Duration::from_secs(5)), 0);
    }
}
