//! Market time: how busy the app is at a given instant, in America/New_York (DST-correct).
//!
//! The intensity is a multiplier of a source's market-hours rate: its mean over 09:30–16:00 on a
//! weekday is 1. The shape is the usual one for a market-data app: quiet overnight, a pre-market
//! ramp from 04:00, a spike at the 09:30 open that decays over a quarter of an hour, a lunch dip,
//! a smaller spike into the 16:00 close, after-hours decay, and a flat trickle at weekends.
//! Exchange holidays are not modelled: they trade like any weekday here.

use chrono::{DateTime, Datelike, Days, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::America::New_York;
use std::sync::OnceLock;

/// The exchange's time zone.
pub const MARKET_TZ: chrono_tz::Tz = New_York;

/// Minutes after local midnight of the opening bell (09:30).
pub const OPEN_MINUTE: u32 = 9 * 60 + 30;
/// Minutes after local midnight of the closing bell (16:00).
pub const CLOSE_MINUTE: u32 = 16 * 60;

const MS_PER_MINUTE: i64 = 60_000;

/// The un-normalised shape for local `minute` (0..1440) of a `weekday`.
fn raw_shape(weekday: Weekday, minute: u32) -> f64 {
    let m = f64::from(minute);
    match weekday {
        Weekday::Sat => 0.02,
        // Futures and Asia open on Sunday evening; a few people look.
        Weekday::Sun => {
            if minute >= 18 * 60 {
                0.04
            } else {
                0.02
            }
        }
        _ => match minute {
            0..240 => 0.03,
            240..480 => 0.03 + 0.09 * (m - 240.0) / 240.0,
            480..OPEN_MINUTE => 0.12 + 0.23 * (m - 480.0) / 90.0,
            OPEN_MINUTE..CLOSE_MINUTE => {
                let mid = f64::from(OPEN_MINUTE + CLOSE_MINUTE) / 2.0;
                let half = f64::from(CLOSE_MINUTE - OPEN_MINUTE) / 2.0;
                let u_shape = 0.75 + 0.25 * ((m - mid) / half).powi(2);
                let open = 2.5 * (-(m - f64::from(OPEN_MINUTE)) / 15.0).exp();
                let close = 1.0 * (-(f64::from(CLOSE_MINUTE) - 1.0 - m) / 8.0).exp();
                u_shape + open + close
            }
            CLOSE_MINUTE..1200 => 0.05 + 0.25 * (-(m - f64::from(CLOSE_MINUTE)) / 45.0).exp(),
            _ => 0.03,
        },
    }
}

/// Mean of the raw shape over a weekday's regular session, so that the normalised mean is 1.
fn norm() -> f64 {
    static NORM: OnceLock<f64> = OnceLock::new();
    *NORM.get_or_init(|| {
        let n = CLOSE_MINUTE - OPEN_MINUTE;
        (OPEN_MINUTE..CLOSE_MINUTE).map(|m| raw_shape(Weekday::Wed, m)).sum::<f64>() / f64::from(n)
    })
}

/// How busy the app is at `ts`, relative to an average minute of weekday market hours
/// (constant within each minute).
pub fn market_intensity(ts: DateTime<Utc>) -> f64 {
    let local = ts.with_timezone(&MARKET_TZ);
    raw_shape(local.weekday(), local.hour() * 60 + local.minute()) / norm()
}

/// The mean intensity over a whole weekday (about a third of the market-hours mean: the night,
/// pre-market and after-hours are quiet).
pub(crate) fn weekday_mean(floor: f64) -> f64 {
    (0..1440).map(|m| (raw_shape(Weekday::Wed, m) / norm()).max(floor)).sum::<f64>() / 1440.0
}

/// The UTC instant of local `minute` after midnight on `date` in market time. A local time that
/// a DST change skips is moved an hour later; one that occurs twice takes the first.
pub(crate) fn local_instant(date: NaiveDate, minute: u32) -> DateTime<Utc> {
    let naive = date.and_hms_opt(minute / 60, minute % 60, 0).expect("minute < 1440");
    let local = MARKET_TZ
        .from_local_datetime(&naive)
        .earliest()
        .or_else(|| MARKET_TZ.from_local_datetime(&(naive + chrono::Duration::hours(1))).earliest())
        .expect("a DST gap lasts less than an hour");
    local.with_timezone(&Utc)
}

/// The market-time date of `ts`.
pub(crate) fn local_date(ts: DateTime<Utc>) -> NaiveDate {
    ts.with_timezone(&MARKET_TZ).date_naive()
}

/// The latest Monday 00:00 in market time at which a trace of `duration` ends no later than
/// `now`: a default start whose events an ingest accepts (it refuses future timestamps).
pub fn default_start(now: DateTime<Utc>, duration: chrono::Duration) -> DateTime<Utc> {
    let today = local_date(now);
    let mut monday = today - Days::new(u64::from(today.weekday().num_days_from_monday()));
    loop {
        let start = local_instant(monday, 0);
        if start + duration <= now {
            return start;
        }
        monday = monday - Days::new(7);
    }
}

/// Intensity per UTC minute over a span, computed once so the generator's hot loop does no time
/// zone arithmetic.
#[derive(Debug, Clone)]
pub(crate) struct MinuteTable {
    first_minute: i64,
    values: Vec<f64>,
}

impl MinuteTable {
    /// Covers every minute that contains an instant of [start_ms, end_ms).
    pub(crate) fn new(start_ms: i64, end_ms: i64) -> Self {
        let first_minute = start_ms.div_euclid(MS_PER_MINUTE);
        let last_minute = (end_ms - 1).max(start_ms).div_euclid(MS_PER_MINUTE);
        let values = (first_minute..=last_minute)
            .map(|m| {
                market_intensity(
                    Utc.timestamp_millis_opt(m * MS_PER_MINUTE).single().expect("in range"),
                )
            })
            .collect();
        Self { first_minute, values }
    }

    /// The intensity of the minute holding `ms` and the instant that minute ends; `None` outside
    /// the span.
    pub(crate) fn at(&self, ms: i64) -> Option<(f64, i64)> {
        let minute = ms.div_euclid(MS_PER_MINUTE);
        let i = usize::try_from(minute - self.first_minute).ok()?;
        self.values.get(i).map(|v| (*v, (minute + 1) * MS_PER_MINUTE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn market_hours_average_one_and_dwarf_the_night() {
        let monday = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        let mean = (OPEN_MINUTE..CLOSE_MINUTE)
            .map(|m| market_intensity(local_instant(monday, m)))
            .sum::<f64>()
            / f64::from(CLOSE_MINUTE - OPEN_MINUTE);
        assert!((mean - 1.0).abs() < 1e-9, "{mean}");
        assert!(market_intensity(local_instant(monday, 3 * 60)) < 0.05);
        assert!(market_intensity(utc("2026-03-07T17:00:00Z")) < 0.05, "Saturday noon");
    }

    #[test]
    fn open_spike_is_at_0930_new_york_on_both_sides_of_dst() {
        // 2026-03-08: New York moves from UTC-5 to UTC-4.
        let before = utc("2026-03-06T14:30:00Z");
        let after = utc("2026-03-09T13:30:00Z");
        for open in [before, after] {
            let i = market_intensity(open);
            assert!(i > 3.0, "{open}: {i}");
            assert!(i > 5.0 * market_intensity(open - chrono::Duration::minutes(1)), "{open}");
            assert!(i > market_intensity(open + chrono::Duration::minutes(1)), "{open}");
        }
        // The same UTC minute on the other side of the change is pre-market or mid-morning.
        assert!(market_intensity(utc("2026-03-06T13:30:00Z")) < 0.5);
        assert!(market_intensity(utc("2026-03-09T14:30:00Z")) < 1.5);
    }

    #[test]
    fn default_start_is_a_past_monday_midnight_in_new_york() {
        let now = utc("2026-03-11T15:00:00Z"); // a Wednesday
        assert_eq!(default_start(now, chrono::Duration::days(1)), utc("2026-03-09T04:00:00Z"));
        // Two days from Monday would end Wednesday 00:00 New York: still in the past.
        assert_eq!(default_start(now, chrono::Duration::days(2)), utc("2026-03-09T04:00:00Z"));
        // Three would not; the Monday before, in winter time.
        assert_eq!(default_start(now, chrono::Duration::days(3)), utc("2026-03-02T05:00:00Z"));
    }

    #[test]
    fn minute_table_matches_the_function() {
        let start = utc("2026-03-06T14:29:30Z").timestamp_millis();
        let t = MinuteTable::new(start, start + 120_000);
        let (v, next) = t.at(start).unwrap();
        assert_eq!(v, market_intensity(utc("2026-03-06T14:29:00Z")));
        assert_eq!(next, utc("2026-03-06T14:30:00Z").timestamp_millis());
        assert!(t.at(start + 120_000).is_some(), "the minute holding the end is covered");
        assert!(t.at(start + 200_000).is_none());
        assert!(t.at(start - 60_000).is_none());
    }
}
