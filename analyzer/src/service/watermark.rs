//! The model's clock from per-partition watermarks.
//!
//! Each partition's watermark is the latest event time folded from it. The model's clock is the
//! minimum over the partitions that are *active*, so one producer whose clock runs ahead, or one
//! partition far ahead of a lagging one, cannot move the clock past the others' events and get
//! them dropped as late. A partition is active when:
//! - it is being restored (its replay is still feeding the model), or
//! - Kafka holds events of it not yet read (its backlog, from the restore and then from
//!   librdkafka's statistics) and it delivered an event within ten idle timeouts (a partition
//!   that stops delivering for that long no longer holds everyone back), or
//! - an event of it arrived within the idle timeout (wall clock).
//!
//! An active partition that has not delivered an event yet holds the clock where it is: after a
//! restart or an outage every partition has a backlog, and the first one read must not carry the
//! clock hours past the others (measured: 490k of 10M events dropped as late on a catch-up before
//! this rule). When no partition is active the clock is the maximum (nothing is held back by a
//! quiet partition).

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Part {
    /// Latest event time folded from it, if any.
    latest: Option<DateTime<Utc>>,
    /// When its last event arrived (or it was assigned).
    seen: Instant,
    /// Being restored.
    restoring: bool,
    /// Events of it in Kafka not read yet (0 when unknown).
    backlog: i64,
}

/// Per-partition event-time watermarks.
#[derive(Debug)]
pub struct Watermarks {
    parts: HashMap<i32, Part>,
    idle: Duration,
    /// The clock last returned (held while an active partition has no event yet).
    held: Option<DateTime<Utc>>,
}

impl Watermarks {
    /// No partition yet; a partition is idle after `idle` without an event.
    pub fn new(idle: Duration) -> Self {
        Self { parts: HashMap::new(), idle, held: None }
    }

    fn part(&mut self, partition: i32, now: Instant) -> &mut Part {
        self.parts.entry(partition).or_insert(Part {
            latest: None,
            seen: now,
            restoring: false,
            backlog: 0,
        })
    }

    /// `partition` was assigned and is being restored: it holds the clock until
    /// [`Watermarks::restored`].
    pub fn restoring(&mut self, partition: i32, now: Instant) {
        let p = self.part(partition, now);
        p.restoring = true;
        p.seen = now;
    }

    /// `partition` is restored; `backlog` events of it wait in Kafka (`None`: unknown).
    pub fn restored(&mut self, partition: i32, backlog: Option<i64>, now: Instant) {
        let p = self.part(partition, now);
        p.restoring = false;
        p.backlog = backlog.unwrap_or(0).max(0);
    }

    /// `partition`'s backlog as librdkafka's statistics last reported it.
    pub fn backlog(&mut self, partition: i32, backlog: i64) {
        if let Some(p) = self.parts.get_mut(&partition) {
            p.backlog = backlog.max(0);
        }
    }

    /// An event of `partition` at `ts` arrived at `now`.
    pub fn advance(&mut self, partition: i32, ts: DateTime<Utc>, now: Instant) {
        let p = self.part(partition, now);
        p.latest = Some(p.latest.map_or(ts, |l| l.max(ts)));
        p.seen = now;
    }

    fn is_active(&self, p: &Part, now: Instant) -> bool {
        let quiet = now.saturating_duration_since(p.seen);
        let behind = p.backlog > 0 && quiet < self.idle * 10;
        p.restoring || behind || (p.latest.is_some() && quiet < self.idle)
    }

    /// The model's clock at `now`, if any event was folded.
    pub fn clock(&mut self, now: Instant) -> Option<DateTime<Utc>> {
        let active: Vec<Option<DateTime<Utc>>> =
            self.parts.values().filter(|p| self.is_active(p, now)).map(|p| p.latest).collect();
        let clock = if active.iter().any(Option::is_none) {
            self.held
        } else {
            active
                .into_iter()
                .flatten()
                .min()
                .or_else(|| self.parts.values().filter_map(|p| p.latest).max())
        };
        // The clock never moves back (a partition assigned later may be behind it).
        self.held = self.held.max(clock);
        self.held
    }

    /// `partition`'s watermark, if it folded any event.
    pub fn of(&self, partition: i32) -> Option<DateTime<Utc>> {
        self.parts.get(&partition).and_then(|p| p.latest)
    }

    /// Forgets partitions no longer owned.
    pub fn forget(&mut self, partitions: &[i32]) {
        self.parts.retain(|p, _| !partitions.contains(p));
    }

    /// Partitions holding the clock back (active ones).
    pub fn active(&self, now: Instant) -> usize {
        self.parts.values().filter(|p| self.is_active(p, now)).count()
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
        // Partition 0 speaks again, behind the clock: the clock never moves back (the model's
        // watermark would not either).
        w.advance(0, t(130), start + Duration::from_secs(56));
        assert_eq!(w.clock(start + Duration::from_secs(56)), Some(t(340)));
    }

    #[test]
    fn a_partition_with_a_backlog_holds_the_clock_until_it_is_read() {
        let start = Instant::now();
        let s = |n| start + Duration::from_secs(n);
        let mut w = Watermarks::new(Duration::from_secs(30));
        // After an outage all three partitions are assigned; 0 is restored first and its first
        // events come in two hours ahead of where partitions 1 and 2 start.
        for p in 0..3 {
            w.restoring(p, start);
        }
        w.restored(0, Some(1_000_000), start);
        w.advance(0, t(7_200), s(1));
        assert_eq!(w.clock(s(1)), None, "1 and 2 are still restoring");
        w.restored(1, Some(500), s(2));
        w.restored(2, Some(0), s(2)); // an empty partition holds nothing back
        assert_eq!(w.clock(s(2)), None, "1 has a backlog and no event yet");
        w.advance(1, t(10), s(3));
        assert_eq!(w.clock(s(3)), Some(t(10)), "the backlog's oldest side sets the clock");
        // Partition 1 is starved by the fetcher for longer than the idle timeout: its backlog
        // still holds the clock...
        assert_eq!(w.clock(s(100)), Some(t(10)));
        assert_eq!(w.active(s(100)), 2);
        // ...until the statistics report it read, or it stayed silent for ten idle timeouts.
        w.backlog(1, 0);
        assert_eq!(w.clock(s(101)), Some(t(7_200)));
        w.backlog(0, 5);
        assert_eq!(w.active(s(299)), 1);
        assert_eq!(w.active(s(302)), 0, "silent for 10 idle timeouts: no longer holds");
    }

    #[test]
    fn forgotten_and_revoked_partitions_hold_nothing() {
        let start = Instant::now();
        let mut w = Watermarks::new(Duration::from_secs(30));
        w.restoring(0, start);
        w.restoring(1, start);
        w.advance(0, t(50), start);
        assert_eq!(w.clock(start), None);
        // Revoked before it was restored: no backlog, no event — it holds nothing.
        w.restored(1, None, start);
        assert_eq!(w.clock(start), Some(t(50)));
        w.forget(&[0]);
        assert_eq!(w.of(0), None);
        assert_eq!(w.clock(start), Some(t(50)), "the clock stays where it was");
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
