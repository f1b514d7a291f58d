//! What a trace looks like: the knobs of the generator, checked before anything is generated.

use super::shape::Shape;
use chrono::{DateTime, Utc};

/// The shape of a demo trace. Every field is a knob of `prefetch demo-traffic`; two generators
/// built from equal `Params` yield identical events.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Event time of the start of the trace (inclusive).
    pub start: DateTime<Utc>,
    /// Length of the trace in event time; events lie in `[start, start + duration)`.
    pub duration: chrono::Duration,
    /// Seed of every random choice.
    pub seed: u64,
    /// Size of the ticker universe; ticker of popularity rank k is asked ∝ 1/k^`zipf_s`.
    pub tickers: usize,
    /// Exponent of the Zipf popularity law (0 is uniform; about 1 is typical of real traffic).
    pub zipf_s: f64,
    /// Mean events per second, all sources together, over weekday market hours (09:30–16:00
    /// New York) before news bursts, which come on top. What the dashboards and analyst sessions
    /// do not use is filled with one-off lookups by a pool of users.
    pub rate: f64,
    /// Number of dashboards, each polling a few fixed (ticker, module) pairs at fixed periods.
    pub dashboards: usize,
    /// Analyst sessions starting per hour over weekday market hours (fewer off-hours, following
    /// the same intensity as the rest of the traffic).
    pub sessions_per_hour: f64,
    /// Mean news bursts per weekday: one ticker suddenly hot for tens of minutes.
    pub bursts_per_day: f64,
    /// The structure beyond these knobs (market, mixes, periods, clients, regime change); the
    /// CLI always uses the default, the trace family draws it.
    pub shape: Shape,
}

impl Default for Params {
    /// A day from Monday 2026-03-09 00:00 New York at the CLI's default knobs.
    fn default() -> Self {
        Self {
            start: DateTime::parse_from_rfc3339("2026-03-09T00:00:00-04:00")
                .expect("valid")
                .with_timezone(&Utc),
            duration: chrono::Duration::days(1),
            seed: 0,
            tickers: 500,
            zipf_s: 1.1,
            rate: 20.0,
            dashboards: 20,
            sessions_per_hour: 600.0,
            bursts_per_day: 4.0,
            shape: Shape::default(),
        }
    }
}

/// The largest ticker universe (synthetic symbols beyond the well-known ones run out of
/// four-letter names well above this).
pub const MAX_TICKERS: usize = 100_000;
/// The longest trace: the generator keeps one intensity value per minute of it.
pub const MAX_DURATION_DAYS: i64 = 366;

/// Why `Params` cannot make a trace. Each message names the CLI flag at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// A knob outside its range.
    #[error("--{flag} {value}: {rule}")]
    OutOfRange {
        /// The flag's name without dashes.
        flag: &'static str,
        /// The value given.
        value: String,
        /// The range it must lie in.
        rule: &'static str,
    },
    /// The trace's structure is inconsistent (a programming error of a family member).
    #[error("trace shape: {0}")]
    Shape(String),
    /// `rate` is less than the dashboards and sessions alone produce.
    #[error(
        "--rate {rate}: the dashboards ({dashboards:.2}/s) and analyst sessions ({sessions:.2}/s) alone make \
         {:.2} events/s in market hours; raise --rate or lower --dashboards / --sessions-per-hour",
        dashboards + sessions
    )]
    RateTooLow {
        /// The rate asked for.
        rate: f64,
        /// Market-hours events/s of the dashboards.
        dashboards: f64,
        /// Market-hours events/s of the analyst sessions.
        sessions: f64,
    },
}

impl Params {
    /// Checks every knob on its own; the rate budget is checked when the generator is built,
    /// because it depends on the dashboards the seed draws.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let bad = |flag, value: String, rule| Err(ParamsError::OutOfRange { flag, value, rule });
        if self.tickers == 0 || self.tickers > MAX_TICKERS {
            return bad("tickers", self.tickers.to_string(), "must be between 1 and 100000");
        }
        if !(self.zipf_s.is_finite() && (0.0..=10.0).contains(&self.zipf_s)) {
            return bad("zipf-s", self.zipf_s.to_string(), "must be between 0 and 10");
        }
        for (flag, v) in [
            ("rate", self.rate),
            ("sessions-per-hour", self.sessions_per_hour),
            ("bursts-per-day", self.bursts_per_day),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(flag, v.to_string(), "must be a finite number ≥ 0");
            }
        }
        if self.duration <= chrono::Duration::zero()
            || self.duration > chrono::Duration::days(MAX_DURATION_DAYS)
        {
            return bad(
                "duration",
                format!("{}s", self.duration.num_seconds()),
                "must be positive and at most 366d",
            );
        }
        self.shape.check().map_err(ParamsError::Shape)?;
        if self.start.checked_add_signed(self.duration).is_none() {
            return bad(
                "start",
                self.start.to_rfc3339(),
                "the trace would end beyond the representable time",
            );
        }
        Ok(())
    }

    /// Event time of the end of the trace (exclusive).
    pub fn end(&self) -> DateTime<Utc> {
        self.start + self.duration
    }
}

/// Mean events per second of each source over weekday market hours, as planned for a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Dashboards polling their pairs (all are open during market hours).
    pub dashboards: f64,
    /// Analyst sessions.
    pub sessions: f64,
    /// One-off lookups by the user pool: `rate` minus the two above.
    pub lookups: f64,
    /// News bursts, averaged over a weekday (they come on top of `rate`).
    pub bursts: f64,
}
