//! The structure of a trace beyond its headline knobs: the market it follows, what each kind of
//! traffic asks for and how often, how analysts walk, how news breaks, whether clients are
//! named, and whether the world changes halfway. The CLI's traces use [`Shape::default`] (the
//! demo's original structure); the trace family ([`super::family`]) draws every field from a
//! seed, so its members differ in structure, not in one knob each.

use super::calendar::Market;

/// Index order of the module arrays: price, chart, news, fundamentals, options ([`MODULES`]).
///
/// [`MODULES`]: super::MODULES
pub type PerModule<T> = [T; 5];

/// How a trace is built. Two equal shapes (with equal [`super::Params`]) give equal events.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// The market whose clock the traffic follows.
    pub market: Market,
    /// Module weights of one-off lookups.
    pub lookup_mix: PerModule<f64>,
    /// Module weights of dashboard widgets.
    pub widget_mix: PerModule<f64>,
    /// Module weights of queries in a news burst.
    pub burst_mix: PerModule<f64>,
    /// Refresh period of a dashboard widget showing each module, seconds.
    pub widget_period_s: PerModule<i64>,
    /// Chance that an analyst goes on to another ticker (at most six in a session).
    pub session_continue: f64,
    /// Mean pause between two modules of one ticker in a session, seconds (plus 3 s).
    pub session_step_s: f64,
    /// Mean pause before the next ticker of a session, seconds (plus 20 s).
    pub session_next_s: f64,
    /// Shortest and longest news burst, minutes.
    pub burst_minutes: (f64, f64),
    /// A burst's starting rate as a share of `rate` (at least 0.5 events/s).
    pub burst_peak_share: f64,
    /// Scheduled jobs (always on) that scan a fixed list of tickers for one module every few
    /// minutes, queries 200 ms apart: `(jobs, tickers per job, period s)`.
    pub scanners: (usize, usize, i64),
    /// Share of events that name their client (0: a producer that sends no `client`).
    pub client_share: f64,
    /// Halfway through, the popularity of tickers is reshuffled (the top 10% of ranks move to
    /// other tickers) and every dashboard is replaced by a new one.
    pub regime_change: bool,
}

impl Default for Shape {
    /// The demo's original structure: New York, its module mixes and periods, no scanners,
    /// every event with a client, no regime change.
    fn default() -> Self {
        Self {
            market: Market::NEW_YORK,
            lookup_mix: [0.45, 0.20, 0.15, 0.10, 0.10],
            widget_mix: [0.40, 0.20, 0.20, 0.10, 0.10],
            burst_mix: [0.35, 0.15, 0.35, 0.0, 0.15],
            widget_period_s: [60, 300, 120, 3600, 60],
            session_continue: 0.5,
            session_step_s: 25.0,
            session_next_s: 90.0,
            burst_minutes: (10.0, 60.0),
            burst_peak_share: 0.1,
            scanners: (0, 0, 600),
            client_share: 1.0,
            regime_change: false,
        }
    }
}

/// The most tickers one analyst session looks at.
pub(crate) const SESSION_MAX_TICKERS: i32 = 6;
/// Chance that a session ticker's walk includes fundamentals, and options.
pub(crate) const SESSION_P_FUNDAMENTALS: f64 = 0.5;
pub(crate) const SESSION_P_OPTIONS: f64 = 0.25;

impl Shape {
    /// Why this shape cannot make a trace, naming the field.
    pub fn check(&self) -> Result<(), String> {
        let mix_ok = |m: &PerModule<f64>| {
            m.iter().all(|w| w.is_finite() && *w >= 0.0) && m.iter().sum::<f64>() > 0.0
        };
        if !(mix_ok(&self.lookup_mix) && mix_ok(&self.widget_mix) && mix_ok(&self.burst_mix)) {
            return Err("module mixes must be finite, ≥ 0 and not all 0".into());
        }
        if self.widget_period_s.iter().any(|p| *p < 1) || self.scanners.2 < 1 {
            return Err("widget and scanner periods must be at least 1 s".into());
        }
        let in_range = (0.0..1.0).contains(&self.session_continue)
            && (0.0..=1.0).contains(&self.client_share)
            && self.burst_peak_share.is_finite()
            && self.burst_peak_share >= 0.0;
        if !in_range {
            return Err("session_continue, client_share or burst_peak_share out of range".into());
        }
        let (lo, hi) = self.burst_minutes;
        if !(lo >= 1.0 && hi >= lo && hi <= 24.0 * 60.0) {
            return Err("burst_minutes must satisfy 1 ≤ shortest ≤ longest ≤ 1440".into());
        }
        if !(self.session_step_s >= 0.0 && self.session_next_s >= 0.0) {
            return Err("session pauses must be ≥ 0".into());
        }
        if !self.market.around_the_clock && self.market.open >= self.market.close.min(1440) {
            return Err("the market must open before it closes".into());
        }
        Ok(())
    }

    /// Mean events of one analyst session (tickers looked at × modules per ticker).
    pub(crate) fn session_mean_events(&self) -> f64 {
        let tickers: f64 = (0..SESSION_MAX_TICKERS).map(|k| self.session_continue.powi(k)).sum();
        tickers * (3.0 + SESSION_P_FUNDAMENTALS + SESSION_P_OPTIONS)
    }

    /// Mean queries of one burst starting at `peak_per_s`: decaying with time constant a
    /// third of a duration drawn uniformly from `burst_minutes`.
    pub(crate) fn expected_burst_events(&self, peak_per_s: f64) -> f64 {
        let mean_tau_s = (self.burst_minutes.0 + self.burst_minutes.1) / 2.0 * 60.0 / 3.0;
        peak_per_s * mean_tau_s * (1.0 - (-3.0f64).exp())
    }
}
