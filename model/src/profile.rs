//! Event time, market time and seasonal profiles.
//!
//! Internally a time is `u32` seconds since 2000-01-01 UTC (the contract refuses earlier
//! timestamps), good until 2136. A bucket index is that divided by the bucket width; because the
//! width divides an hour, every bucket lies inside one market hour of a whole-hour time zone.
//!
//! A key's seasonal rate for market hour `h` on weekday `d` is read off its buckets: events in
//! hour `h` on earlier days divided by how long hour `h` has been observed, times a shrunk
//! weekday factor (this weekday's rate over the key's overall rate). Nothing per hour or weekday
//! is stored per key; the buckets already hold it.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// 2000-01-01T00:00:00Z in Unix seconds: internal time zero.
pub(crate) const EPOCH_2000: i64 = 946_684_800;

/// Pseudo-events that pull a thin weekday factor towards 1.
const WEEKDAY_PRIOR: f64 = 2.0;

/// Weekday names, Monday first, as `Stats` reports them.
pub(crate) const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Internal seconds for `ts`, or `None` before 2000 or after 2136.
pub(crate) fn to_secs(ts: DateTime<Utc>) -> Option<u32> {
    u32::try_from(ts.timestamp() - EPOCH_2000).ok()
}

/// The instant of internal seconds `secs`.
pub(crate) fn to_utc(secs: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(EPOCH_2000 + i64::from(secs), 0).single().unwrap_or_default()
}

/// Market hour (0–23) and weekday (Monday = 0) of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    pub hour: u8,
    pub weekday: u8,
}

/// Market-time lookups with a ring cache covering the retention window, so a tick never asks
/// chrono-tz twice about the same bucket.
#[derive(Debug, Clone)]
pub(crate) struct Calendar {
    tz: Tz,
    bucket: u32,
    ring: Vec<(u32, Slot)>,
}

impl Calendar {
    pub fn new(tz: Tz, bucket: u32, retention: u32) -> Self {
        let len = (retention / bucket + 2) as usize;
        Self { tz, bucket, ring: vec![(u32::MAX, Slot { hour: 0, weekday: 0 }); len] }
    }

    /// Market hour and weekday at internal time `secs`.
    pub fn slot_at(&self, secs: u32) -> Slot {
        let local = to_utc(secs).with_timezone(&self.tz);
        Slot { hour: local.hour() as u8, weekday: local.weekday().num_days_from_monday() as u8 }
    }

    /// Start of the market hour containing `secs` (DST-safe: it subtracts the local minutes).
    pub fn hour_start(&self, secs: u32) -> u32 {
        let local = to_utc(secs).with_timezone(&self.tz);
        secs.saturating_sub(local.minute() * 60 + local.second())
    }

    /// The slot of bucket `b`, from the cache when present.
    pub fn slot(&self, b: u32) -> Slot {
        match self.ring[b as usize % self.ring.len()] {
            (cached, slot) if cached == b => slot,
            _ => self.slot_at(b.saturating_mul(self.bucket)),
        }
    }

    /// The slot of bucket `b`, caching it.
    pub fn remember(&mut self, b: u32) -> Slot {
        let i = b as usize % self.ring.len();
        if self.ring[i].0 != b {
            self.ring[i] = (b, self.slot_at(b.saturating_mul(self.bucket)));
        }
        self.ring[i].1
    }

    /// Caches the slots of buckets `[start, end)`.
    pub fn warm(&mut self, start: u32, end: u32) {
        for b in start..end {
            self.remember(b);
        }
    }

    /// Bucket width in seconds.
    pub fn bucket(&self) -> u32 {
        self.bucket
    }
}

/// What a seasonal estimate is computed against: the target slot and how long each hour and
/// weekday has been observed in `[start, end)` (bucket indices).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeasonFrame {
    pub target: Slot,
    pub start: u32,
    pub end: u32,
    hour_exposure_s: f64,
    weekday_exposure_s: f64,
    total_exposure_s: f64,
}

impl SeasonFrame {
    /// Measures exposure over buckets `[start, end)` for `target` (warm the calendar first for
    /// speed: see [`Calendar::warm`]).
    pub fn measure(cal: &Calendar, target: Slot, start: u32, end: u32) -> Self {
        let (mut hour, mut weekday, mut total) = (0u32, 0u32, 0u32);
        for b in start..end {
            let s = cal.slot(b);
            hour += u32::from(s.hour == target.hour);
            weekday += u32::from(s.weekday == target.weekday);
            total += 1;
        }
        let w = f64::from(cal.bucket());
        Self {
            target,
            start,
            end,
            hour_exposure_s: f64::from(hour) * w,
            weekday_exposure_s: f64::from(weekday) * w,
            total_exposure_s: f64::from(total) * w,
        }
    }

    /// Whether the target hour has been observed at all (else no key has a seasonal rate).
    pub fn observed(&self) -> bool {
        self.hour_exposure_s > 0.0
    }

    /// The seasonal rate (events/s) of a key with these buckets (oldest first), or `None` when the target hour
    /// has never been observed (a model younger than a day).
    pub fn rate(
        &self,
        buckets: impl IntoIterator<Item = (u32, u32)>,
        cal: &Calendar,
    ) -> Option<f64> {
        if self.hour_exposure_s <= 0.0 {
            return None;
        }
        let (mut in_hour, mut in_weekday, mut total) = (0u64, 0u64, 0u64);
        for (b, n) in buckets.into_iter().skip_while(|&(b, _)| b < self.start) {
            if b >= self.end {
                break;
            }
            let s = cal.slot(b);
            let n = u64::from(n);
            in_hour += if s.hour == self.target.hour { n } else { 0 };
            in_weekday += if s.weekday == self.target.weekday { n } else { 0 };
            total += n;
        }
        let hourly = in_hour as f64 / self.hour_exposure_s;
        if total == 0 || self.weekday_exposure_s <= 0.0 {
            return Some(hourly);
        }
        let expected = total as f64 * self.weekday_exposure_s / self.total_exposure_s;
        let factor = (in_weekday as f64 + WEEKDAY_PRIOR) / (expected + WEEKDAY_PRIOR);
        Some(hourly * factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn secs(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u32 {
        to_secs(Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()).unwrap()
    }

    #[test]
    fn market_hour_follows_new_york_dst() {
        let cal = Calendar::new(chrono_tz::America::New_York, 3600, 7 * 86_400);
        // 13:30 UTC is 08:30 EST on Friday 2026-03-06 and 09:30 EDT on Monday 2026-03-09.
        assert_eq!(cal.slot_at(secs(2026, 3, 6, 13, 30)), Slot { hour: 8, weekday: 4 });
        assert_eq!(cal.slot_at(secs(2026, 3, 9, 13, 30)), Slot { hour: 9, weekday: 0 });
        assert_eq!(cal.hour_start(secs(2026, 3, 9, 13, 30)), secs(2026, 3, 9, 13, 0));
        assert_eq!(
            to_utc(secs(2026, 3, 9, 13, 30)),
            Utc.with_ymd_and_hms(2026, 3, 9, 13, 30, 0).unwrap()
        );
        assert_eq!(to_secs(Utc.with_ymd_and_hms(1999, 12, 31, 0, 0, 0).unwrap()), None);
    }

    #[test]
    fn seasonal_rate_reads_same_hour_on_earlier_days() {
        let cal = Calendar::new(chrono_tz::UTC, 3600, 7 * 86_400);
        // Wednesday 2026-01-07 10:00 UTC; history from Monday 00:00 (bucket = hour).
        let start = secs(2026, 1, 5, 0, 0) / 3600;
        let now = secs(2026, 1, 7, 10, 0);
        let target = cal.slot_at(now);
        // 36 events in the 10:00 hour on Monday and on Tuesday, nothing else.
        let buckets = [(start + 10, 36), (start + 34, 36)];
        let frame = SeasonFrame::measure(&cal, target, start, now / 3600);
        let rate = frame.rate(buckets.iter().copied(), &cal).unwrap();
        // 72 events over two observed 10:00 hours = 0.01/s; Wednesday has no history, so the
        // weekday factor is (0 + 2) / (72 × 10/58 + 2) — the shrinkage keeps it from being 0.
        let expected = 0.01 * 2.0 / (72.0 * 10.0 / 58.0 + 2.0);
        assert!((rate - expected).abs() < 1e-9, "{rate} vs {expected}");
        // Asking for Tuesday's slot instead gives a factor above 1.
        let tuesday = Slot { hour: 10, weekday: 1 };
        let frame = SeasonFrame::measure(&cal, tuesday, start, now / 3600);
        assert!(frame.rate(buckets.iter().copied(), &cal).unwrap() > 0.01);
        // A model with no earlier 10:00 hour has no seasonal estimate.
        let young = SeasonFrame::measure(&cal, target, now / 3600 - 3, now / 3600);
        assert_eq!(young.rate(buckets.iter().copied(), &cal), None);
    }
}
