//! The one formula: a key's rates → its intensity → the probability of a query within a window.
//!
//! Every score the model publishes comes from here — the tick's ranking ([`Model::tick`]), its
//! explanation ([`Model::explain`]), refresh-on-hit and refresh-ahead's ranking by what a warm
//! would serve — so a change to the estimate changes all of them at once.
//!
//! Intensity: a gamma-Poisson update of the key's steady/seasonal rate with its recent events,
//! bounded by how long it has been idle, times the hour weight ([`intensity`]). The raw
//! probability of a query within the horizon `H` is `1 − exp(−λH)` (a Poisson arrival,
//! [`probability`]), which the calibrator then maps to an observed frequency. With a cache view,
//! [`serve_probability`] turns that calibrated probability back into a rate, updates it with the
//! key's own evidence at the scale of its TTL, and gives the probability that a copy stored now
//! serves a query; [`serve_bound`] bounds it without `exp` or `ln` so a tick can drop tail keys
//! cheaply.
//!
//! [`Model::tick`]: crate::Model::tick
//! [`Model::explain`]: crate::Model::explain

use crate::window::KeyState;
use prefetch_contract::prediction::Reason;

/// Pseudo-events of the gamma prior on a key's current rate (in [`intensity`]).
const PRIOR_EVENTS: f64 = 1.0;
/// Pseudo-events of the model's rate when updated with the queries a cached copy saw (in
/// [`updated_rate`]). The rate comes from EWMAs over minutes and the key's seasonal profile; a
/// copy's few queries over its TTL are noisy evidence of it. At 1 (the intensity's own prior
/// weight) a busy key's refresh swung with whether its last 30 s copy happened to be queried;
/// on the development traces 4 lifted every one of seven replayed, 10 a little more, 25 no
/// further (BENCHMARKS.md, issue #13, session 23).
const SERVE_PRIOR_EVENTS: f64 = 10.0;
/// Share of the seasonal rate in the prior, once a seasonal estimate exists.
const SEASONAL_SHARE: f64 = 0.8;
/// No event for `idle` seconds makes a rate above `IDLE_BOUND / idle` implausible (for a
/// Poisson stream, `P(idle > 2/λ) = e^-2`): this ends a burst's afterglow quickly.
const IDLE_BOUND: f64 = 2.0;
/// Share of the seasonal rate that stays even after a long idle spell (so a key that is
/// only busy in market hours is still predicted before the open).
pub(crate) const SEASONAL_FLOOR: f64 = 0.2;
/// Recent rate this many times the prior makes a burst.
const BURST_RATIO: f64 = 3.0;

/// Rates of one key at one instant, events/s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    /// Fast EWMA (time constant `window` seconds).
    pub recent: f64,
    /// Slow EWMA.
    pub popular: f64,
    /// Seasonal rate for this market hour and weekday, if any history covers it.
    pub seasonal: Option<f64>,
    /// Seconds since the key's latest event.
    pub idle: f64,
    /// The fast EWMA's time constant, seconds.
    pub window: f64,
}

impl Rates {
    /// The rates of key `k` at `at` (internal seconds), with EWMA time constants `tau_fast` and
    /// `tau_slow` and the seasonal rate when one is known.
    pub fn of(k: &KeyState, at: u32, tau: (f32, f32), seasonal: Option<f64>) -> Self {
        let (recent, popular) = k.rates(at, tau.0, tau.1);
        Self { recent, popular, seasonal, idle: f64::from(k.idle(at)), window: f64::from(tau.0) }
    }
}

/// A key's score at one instant: its intensity, the component behind it, and the raw
/// (uncalibrated) probability of a query within the horizon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Score {
    /// Events/s, hour weight included.
    pub lambda: f64,
    /// The component that dominated.
    pub reason: Reason,
    /// `1 − exp(−λ·horizon)`.
    pub raw: f64,
}

/// [`intensity`] then [`probability`] within `horizon` seconds.
pub(crate) fn score(r: Rates, weight: f64, horizon: u32) -> Score {
    let (lambda, reason) = intensity(r, weight);
    Score { lambda, reason, raw: probability(lambda, horizon) }
}

/// The key's intensity (events/s, hour weight included) and the component that drove it.
///
/// The current rate gets a gamma prior centred on the steady rate (blended with the seasonal
/// one when known) worth [`PRIOR_EVENTS`] events, updated with the events of the recent
/// window: `λ = (α + n) / (α/prior + window)`. A quiet key's lone event then barely moves its
/// rate, while a burst of many events does; a busy key's silence pulls it down fast. The
/// idle bound and the seasonal floor follow, then the hour weight multiplies.
pub(crate) fn intensity(r: Rates, weight: f64) -> (f64, Reason) {
    let prior = match r.seasonal {
        Some(s) => (1.0 - SEASONAL_SHARE) * r.popular + SEASONAL_SHARE * s,
        None => r.popular,
    }
    .max(1e-9);
    let events = r.recent * r.window;
    let posterior = (PRIOR_EVENTS + events) / (PRIOR_EVENTS / prior + r.window);
    let seasonal_floor = SEASONAL_FLOOR * r.seasonal.unwrap_or(0.0);
    let lambda = posterior.min(IDLE_BOUND / r.idle.max(1.0)).max(seasonal_floor);
    let reason = if r.recent > BURST_RATIO * prior {
        Reason::Burst
    } else if r.seasonal.is_some_and(|s| s > r.popular)
        || (seasonal_floor > 0.0 && lambda <= seasonal_floor)
    {
        Reason::TimeOfDay
    } else {
        Reason::Popularity
    };
    (weight * lambda, reason)
}

/// Probability of at least one Poisson arrival of rate `lambda` within `window` seconds.
pub(crate) fn probability(lambda: f64, window: u32) -> f64 {
    -(-lambda * f64::from(window)).exp_m1()
}

/// A key due for a warm: how long a copy stored now would serve beyond the current one, and
/// the key's recent evidence (the current copy's age and the queries it saw).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Due {
    pub window: u32,
    pub age: u32,
    pub queries: u32,
}

/// The model's rate `prior` updated (gamma prior worth [`SERVE_PRIOR_EVENTS`]) with the
/// queries a copy saw over its age.
/// Increasing in `prior`, and `updated_rate(a·x) ≤ a·updated_rate(x)` for `a ≥ 1`, which the
/// lazy tick's bounds rely on (`lazy.rs`).
pub(crate) fn updated_rate(prior: f64, due: Due) -> f64 {
    (SERVE_PRIOR_EVENTS + f64::from(due.queries))
        / (SERVE_PRIOR_EVENTS / prior.max(1e-9) + f64::from(due.age))
}

/// Probability that a copy stored now serves a query: the model's rate as a gamma prior,
/// updated with the queries the current copy saw over its age — the key's own evidence at the
/// scale of its TTL — then a Poisson arrival within the window.
///
/// The prior is the intensity `lambda` scaled by the calibration of its probability within
/// the horizon, `lambda · p / raw` (`raw = 1 − e^(−lambda·H)`, `p` its calibrated value). It was
/// the rate behind `p` alone, `−ln(1 − p) / H`, which is the same for small probabilities but
/// saturates for busy keys: every key queried more than every minute or so has a query within a
/// 300 s horizon, so `p` is about 0.98 whatever its rate, and that rate read back as 0.013/s —
/// a key asked every 20 s looked like one asked every 77 s, and its refresh of a 30 s copy like a
/// 32% chance where it is 78%.
pub(crate) fn serve_probability(p: f64, raw: f64, lambda: f64, due: Due) -> f64 {
    let prior = if raw > 0.0 { lambda * p.clamp(0.0, 1.0) / raw } else { 0.0 };
    probability(updated_rate(prior, due), due.window)
}

/// An upper bound of [`serve_probability`] with no `exp` or `ln`, from an upper bound `p` of
/// the calibrated probability and the intensity `lambda`: `raw ≥ λH / (1 + λH)` bounds the
/// prior by `p·(1 + λH)/H`, and `1 − e^(−x) ≤ x`. Lets a tick drop tail keys that cannot reach
/// the cut cheaply.
pub(crate) fn serve_bound(p: f64, lambda: f64, horizon: u32, due: Due) -> f64 {
    let h = f64::from(horizon.max(1));
    let prior = p.clamp(0.0, 1.0) * (1.0 + lambda.max(0.0) * h) / h;
    updated_rate(prior, due) * f64::from(due.window)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probability of a query within `window` seconds, from the probability `p` of one within
    /// `horizon` seconds (a Poisson arrival): what [`serve_probability`] is with no evidence.
    fn within(p: f64, horizon: u32, window: u32) -> f64 {
        let p = p.clamp(0.0, 1.0);
        if p >= 1.0 {
            return 1.0;
        }
        1.0 - (1.0 - p).powf(f64::from(window) / f64::from(horizon.max(1)))
    }

    #[test]
    fn intensity_names_the_dominant_component() {
        let r = |recent, popular, seasonal, idle| Rates {
            recent,
            popular,
            seasonal,
            idle,
            window: 300.0,
        };
        // Steady: recent ≈ popular, and the estimate is that rate.
        let (l, why) = intensity(r(0.01, 0.01, None, 30.0), 1.0);
        assert_eq!(why, Reason::Popularity);
        assert!((l - 0.01).abs() < 1e-9, "{l}");
        // Recent far above the prior.
        assert_eq!(intensity(r(0.05, 0.01, Some(0.005), 5.0), 1.0).1, Reason::Burst);
        // Nothing lately, but this hour is usually busy: the seasonal floor survives idleness.
        let (l, why) = intensity(r(0.0, 0.0, Some(0.02), 36_000.0), 1.0);
        assert_eq!(why, Reason::TimeOfDay);
        assert!((l - SEASONAL_FLOOR * 0.02).abs() < 1e-9, "{l}");
        // A quiet key's lone event barely moves it; ten events do.
        let one = intensity(r(1.0 / 300.0, 1.0 / 3600.0, None, 1.0), 1.0).0;
        let ten = intensity(r(10.0 / 300.0, 10.0 / 3600.0, None, 1.0), 1.0).0;
        assert!(one < 2.0 / 3600.0 && ten > 20.0 / 3600.0, "{one} {ten}");
        // Silence bounds the rate: nothing for 20 minutes means at most 2 per 20 minutes.
        let (l, _) = intensity(r(0.05, 0.05, None, 1_200.0), 2.0);
        assert!((l - 2.0 * 2.0 / 1_200.0).abs() < 1e-12, "{l}");
        assert!((probability(1.0 / 60.0, 300) - (1.0 - (-5.0f64).exp())).abs() < 1e-12);
        let s = score(r(0.01, 0.01, None, 30.0), 2.0, 300);
        assert_eq!(s.reason, Reason::Popularity);
        assert!((s.raw - probability(0.02, 300)).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn probability_scales_with_the_window_and_the_copys_evidence() {
        assert!((within(0.75, 300, 150) - 0.5).abs() < 1e-12);
        // No evidence of its own: the model's rate as is.
        // (An intensity whose probability within 300 s is 0.75, calibrated as is.)
        let lam = -(0.25f64).ln() / 300.0;
        let cold = serve_probability(0.75, 0.75, lam, Due { window: 150, age: 0, queries: 0 });
        assert!((cold - 0.5).abs() < 1e-9, "{cold}");
        assert!((cold - within(0.75, 300, 150)).abs() < 1e-9);
        // A copy's evidence moves it, worth as much as the model's rate over ten expected
        // queries (~2,160 s here): a copy that served nothing in ten minutes lowers it, one
        // queried ten times in a minute raises it; a minute's silence barely does.
        let due = |age, queries| Due { window: 150, age, queries };
        let quiet = serve_probability(0.75, 0.75, lam, due(600, 0));
        let busy = serve_probability(0.75, 0.75, lam, due(60, 10));
        let minute = serve_probability(0.75, 0.75, lam, due(60, 0));
        assert!(quiet < cold - 0.05 && busy > cold + 0.2, "{quiet} {busy}");
        assert!(minute < cold && minute > cold - 0.02, "{minute}");
        // A busy key's rate survives its saturated probability: asked every 20 s, it has a
        // query within 300 s all but surely, calibrated to 0.98; a 30 s copy of it serves a
        // query 77% of the time (the rate behind 0.98 alone, 0.013/s, said 32%).
        let busy_key = serve_probability(
            0.98,
            probability(0.05, 300),
            0.05,
            Due { window: 30, age: 0, queries: 0 },
        );
        assert!((busy_key - probability(0.05 * 0.98, 30)).abs() < 1e-6, "{busy_key}");
        // The cheap bound never falls below the probability it bounds.
        for (p, lam) in [
            (0.0, 0.0),
            (0.01, 0.000_03),
            (0.3, 0.001_2),
            (0.75, 0.004_6),
            (0.99, 0.05),
            (0.98, 0.2),
        ] {
            for due in [
                Due { window: 150, age: 0, queries: 0 },
                Due { window: 60, age: 55, queries: 3 },
                Due { window: 300, age: 900, queries: 1 },
            ] {
                // (The map scales the raw probability by up to a half either way.)
                let raw = probability(lam, 300);
                for cal in [raw * 0.5, raw, (raw * 1.5).min(1.0)] {
                    let ub = (cal * 1.01).min(1.0);
                    assert!(
                        serve_bound(ub, lam, 300, due)
                            >= serve_probability(cal, raw, lam, due) - 1e-12,
                        "{p} {cal} {due:?}"
                    );
                }
            }
        }
        assert!((within(0.75, 300, 600) - 0.9375).abs() < 1e-12);
        assert_eq!(within(1.0, 300, 1), 1.0);
        assert_eq!(within(0.0, 300, 1_000), 0.0);
    }
}
