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

/// Where and when the traced market trades: its time zone and regular session (local minutes
/// after midnight), or around the clock (a crypto venue: every day alike, a mild daily swing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Market {
    /// The exchange's time zone.
    pub tz: chrono_tz::Tz,
    /// Local minute of the opening bell.
    pub open: u32,
    /// Local minute of the closing bell (after `open`).
    pub close: u32,
    /// Trades every day and hour: no weekend, no bells.
    pub around_the_clock: bool,
}

impl Market {
    /// New York, 09:30–16:00: the demo's default.
    pub const NEW_YORK: Market =
        Market { tz: New_York, open: OPEN_MINUTE, close: CLOSE_MINUTE, around_the_clock: false };

    /// The un-normalised shape for local `minute` (0..1440) of a `weekday`. New York's is the
    /// demo's original curve; other sessions move the ramps and spikes with their bells.
    fn raw_shape(&self, weekday: Weekday, minute: u32) -> f64 {
        let m = f64::from(minute);
        if self.around_the_clock {
            // Busiest in the local afternoon, quietest before dawn; weekends a little quieter.
            let day = 0.75 + 0.25 * (std::f64::consts::TAU * (m - 15.0 * 60.0) / 1440.0).cos();
            return if matches!(weekday, Weekday::Sat | Weekday::Sun) { 0.8 * day } else { day };
        }
        let (open, close) = (self.open, self.close);
        let pre = open.saturating_sub(330);
        let ramp = open.saturating_sub(90);
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
            _ => {
                if minute < pre {
                    0.03
                } else if minute < ramp {
                    0.03 + 0.09 * (m - f64::from(pre)) / f64::from((ramp - pre).max(1))
                } else if minute < open {
                    0.12 + 0.23 * (m - f64::from(ramp)) / f64::from((open - ramp).max(1))
                } else if minute < close {
                    let mid = f64::from(open + close) / 2.0;
                    let half = f64::from(close - open) / 2.0;
                    let u_shape = 0.75 + 0.25 * ((m - mid) / half).powi(2);
                    let spike = 2.5 * (-(m - f64::from(open)) / 15.0).exp();
                    let into_close = 1.0 * (-(f64::from(close) - 1.0 - m) / 8.0).exp();
                    u_shape + spike + into_close
                } else if minute < close + 240 {
                    0.05 + 0.25 * (-(m - f64::from(close)) / 45.0).exp()
                } else {
                    0.03
                }
            }
        }
    }

    /// Mean of the raw shape over a weekday's regular session (the whole day around the
    /// clock), so that the normalised mean is 1.
    fn norm(&self) -> f64 {
        let (a, b) = if self.around_the_clock { (0, 1440) } else { (self.open, self.close) };
        (a..b).map(|m| self.raw_shape(Weekday::Wed, m)).sum::<f64>() / f64::from(b - a)
    }

    /// How busy the app is at `ts`, relative to an average minute of weekday market hours.
    pub fn intensity(&self, ts: DateTime<Utc>) -> f64 {
        self.intensity_normed(ts, self.norm())
    }

    fn intensity_normed(&self, ts: DateTime<Utc>, norm: f64) -> f64 {
        let local = ts.with_timezone(&self.tz);
        self.raw_shape(local.weekday(), local.hour() * 60 + local.minute()) / norm
    }

    /// The mean intensity over a whole weekday, each minute raised to at least `floor`.
    pub(crate) fn weekday_mean(&self, floor: f64) -> f64 {
        let norm = self.norm();
        (0..1440).map(|m| (self.raw_shape(Weekday::Wed, m) / norm).max(floor)).sum::<f64>() / 1440.0
    }

    /// The UTC instant of local `minute` after midnight on `date` in this market's time.
    pub(crate) fn local_instant(&self, date: NaiveDate, minute: u32) -> DateTime<Utc> {
        local_instant_in(self.tz, date, minute)
    }

    /// The market-time date of `ts`.
    pub(crate) fn local_date(&self, ts: DateTime<Utc>) -> NaiveDate {
        ts.with_timezone(&self.tz).date_naive()
    }
}

/// Mean of New York's raw shape over its regular session.
fn norm() -> f64 {
    static NORM: OnceLock<f64> = OnceLock::new();
    *NORM.get_or_init(|| Market::NEW_YORK.norm())
}

/// How busy the app is at `ts`, relative to an average minute of weekday market hours
/// (constant within each minute), in New York.
pub fn market_intensity(ts: DateTime<Utc>) -> f64 {
    Market::NEW_YORK.intensity_normed(ts, norm())
}

/// The UTC instant of local `minute` after midnight on `date` in market time. A local time that
/// a DST change skips is moved an hour later; one that occurs twice takes the first.
pub(crate) fn local_instant(date: NaiveDate, minute: u32) -> DateTime<Utc> {
    local_instant_in(MARKET_TZ, date, minute)
}

fn local_instant_in(tz: chrono_tz::Tz, date: NaiveDate, minute: u32) -> DateTime<Utc> {
    let naive = date.and_hms_opt(minute / 60, minute % 60, 0).expect("minute < 1440");
    let local = tz
        .from_local_datetime(&naive)
        .earliest()
        .or_else(|| tz.from_local_datetime(&(naive + chrono::Duration::hours(1))).earliest())
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
    pub(crate) fn new(market: &Market, start_ms: i64, end_ms: i64) -> Self {
        let norm = market.norm();
        let first_minute = start_ms.div_euclid(MS_PER_MINUTE);
        let last_minute = (end_ms - 1).max(start_ms).div_euclid(MS_PER_MINUTE);
        let values = (first_minute..=last_minute)
            .map(|m| {
                market.intensity_normed(
                    Utc.timestamp_millis_opt(m * MS_PER_MINUTE).single().expect("in range"),
                    norm,
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
        let t = MinuteTable::new(&Market::NEW_YORK, start, start + 120_000);
        let (v, next) = t.at(start).unwrap();
        assert_eq!(v, market_intensity(utc("2026-03-06T14:29:00Z")));
        assert_eq!(next, utc("2026-03-06T14:30:00Z").timestamp_millis());
        assert!(t.at(start + 120_000).is_some(), "the minute holding the end is covered");
        assert!(t.at(start + 200_000).is_none());
        assert!(t.at(start - 60_000).is_none());
    }
}
