//! The watermark path: intensity per key, ranking, calibration samples, expiry, housekeeping.
//!
//! Intensity: `λ = w(hour) × (0.6·recent + 0.25·popular + 0.15·seasonal)` events/s (without a
//! seasonal estimate yet, the other two weights are rescaled to sum to 1). The raw probability
//! of a query within the horizon `H` is `1 − exp(−λH)` (a Poisson arrival), which the calibrator
//! then maps to an observed frequency. One pass over the dense slot table per tick: a few
//! multiplications and three `exp` per key, plus a bounded heap of `top_n`.

use super::calibration::Calibrator;
use super::keys::DEAD;
use super::profile::{to_secs, SeasonFrame};
use super::window::NO_SAMPLE;
use super::{Explanation, Model, Season};
use chrono::{DateTime, Utc};
use prefetch_common::contract::{Module, Ticker};
use prefetch_common::prediction::{Prediction, Reason};
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

const W_RECENT: f64 = 0.6;
const W_POPULAR: f64 = 0.25;
const W_SEASONAL: f64 = 0.15;
/// Recent rate this many times the steady and seasonal ones makes a burst.
const BURST_RATIO: f64 = 3.0;

/// Blends the rates into an intensity (events/s) and names the dominant component.
pub(crate) fn intensity(recent: f64, popular: f64, seasonal: Option<f64>, weight: f64) -> (f64, Reason) {
    let (wr, wp, ws) = match seasonal {
        Some(_) => (W_RECENT, W_POPULAR, W_SEASONAL),
        None => (W_RECENT / (W_RECENT + W_POPULAR), W_POPULAR / (W_RECENT + W_POPULAR), 0.0),
    };
    let seasonal = seasonal.unwrap_or(0.0);
    let (cr, cp, cs) = (wr * recent, wp * popular, ws * seasonal);
    let reason = if cs > 0.0 && cs >= cr && cs >= cp {
        Reason::TimeOfDay
    } else if recent > BURST_RATIO * popular.max(seasonal) {
        Reason::Burst
    } else {
        Reason::Popularity
    };
    (weight * (cr + cp + cs), reason)
}

fn probability(lambda: f64, horizon: u32) -> f64 {
    -(-lambda * f64::from(horizon)).exp_m1()
}

/// A ranking candidate; ordered by raw probability, then slot for determinism.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    raw: f64,
    slot: u32,
    reason: Reason,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.raw.total_cmp(&other.raw).then(other.slot.cmp(&self.slot))
    }
}

impl Model {
    /// Advances the watermark to `now` (it never moves back) and returns the keys whose
    /// calibrated probability of a query within the horizon is at least `min_confidence`, best
    /// first, at most `top_n`. Also expires buckets and keys that left the retention window,
    /// resolves and opens calibration samples, and (once per bucket width) forgets idle
    /// clients, faded sequences and unused ids. Returns nothing when the model is disabled.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Prediction> {
        let Some(now_s) = to_secs(now) else { return Vec::new() };
        let wm = match self.watermark {
            Some((wm, at)) if wm >= now_s => {
                self.watermark = Some((wm, at));
                wm
            }
            _ => {
                self.watermark = Some((now_s, now));
                now_s
            }
        };
        let generated_at = self.watermark.map_or(now, |(_, at)| at);
        self.refresh_season(wm);
        let (_, weight, class) = self.hour_context(wm);
        let horizon = self.s.horizon;
        let oldest = wm.saturating_sub(self.s.retention) / self.s.bucket;
        let grid = wm / horizon;
        let open_samples = self.grid != Some(grid);
        self.grid = Some(grid);
        let (epoch, season) = (self.season_epoch, self.season.map(|s| s.frame));
        let has_season = season.is_some_and(|f| f.observed());

        let mut heap: BinaryHeap<Reverse<Candidate>> = BinaryHeap::with_capacity(self.s.top_n + 1);
        let mut expired = Vec::new();
        for (slot, k) in self.keys.slots_mut().iter_mut().enumerate() {
            if k.ticker == DEAD {
                continue;
            }
            if k.expire(oldest) {
                expired.push(slot as u32);
                continue;
            }
            if k.season_epoch != epoch {
                k.season = season.and_then(|f| f.rate(k.buckets(), &self.calendar)).unwrap_or(0.0) as f32;
                k.season_epoch = epoch;
            }
            let (recent, popular) = k.rates(wm, self.tau_fast, self.tau_slow);
            let seasonal = has_season.then_some(f64::from(k.season));
            let (lambda, reason) = intensity(recent, popular, seasonal, weight);
            let raw = probability(lambda, horizon);
            if k.sample_at != NO_SAMPLE && u64::from(wm) >= u64::from(k.sample_at) + u64::from(horizon) {
                self.calibrator.resolve(k.sample_cell, false);
                k.sample_at = NO_SAMPLE;
            }
            if open_samples && k.sample_at == NO_SAMPLE {
                k.sample_at = wm;
                k.sample_cell = Calibrator::encode(class, raw);
            }
            let c = Candidate { raw, slot: slot as u32, reason };
            if heap.len() < self.s.top_n {
                heap.push(Reverse(c));
            } else if heap.peek().is_some_and(|Reverse(min)| c > *min) {
                heap.pop();
                heap.push(Reverse(c));
            }
        }
        for slot in expired {
            let k = self.keys.slot_mut(slot);
            let (t, m) = (k.ticker, k.module);
            self.keys.remove(slot);
            self.tickers.release(t);
            self.modules.release(m);
            self.counters.keys_expired += 1;
        }
        self.calibrator.refit(wm);
        if self.housekept_at.is_none_or(|at| wm >= at.saturating_add(self.s.bucket)) {
            self.housekeep(wm);
        }
        if !self.s.enabled {
            return Vec::new();
        }

        let ranked = heap.into_sorted_vec(); // ascending Reverse = best first
        let out: Vec<Prediction> = ranked
            .into_iter()
            .map(|Reverse(c)| c)
            .map(|c| (c, self.calibrator.map(class, c.raw)))
            .take_while(|&(_, p)| p >= self.s.min_confidence)
            .filter_map(|(c, p)| {
                let k = self.keys.slot(c.slot)?;
                Some(Prediction {
                    ticker: self.tickers.name(k.ticker)?.clone(),
                    module: self.modules.name(k.module)?.clone(),
                    confidence: p,
                    horizon_s: u64::from(horizon),
                    generated_at,
                    reason: c.reason,
                })
            })
            .collect();
        self.counters.predictions_tick += out.len() as u64;
        out
    }

    /// Rebuilds the seasonal frame when the market hour or the horizon's target slot changes,
    /// which invalidates every key's cached seasonal rate (recomputed lazily by the next pass).
    fn refresh_season(&mut self, wm: u32) {
        let hour_start = self.calendar.hour_start(wm);
        let target = self.calendar.slot_at(wm.saturating_add(self.s.horizon / 2));
        if self.season.is_some_and(|s| s.hour_start == hour_start && s.frame.target == target) {
            return;
        }
        let (start, end) = self.season_span(wm, hour_start);
        self.calendar.warm(start, end);
        let frame = SeasonFrame::measure(&self.calendar, target, start, end);
        self.season = Some(Season { hour_start, frame });
        self.season_epoch = self.season_epoch.wrapping_add(1);
    }

    /// Buckets `[start, end)` the seasonal profile reads: from the first event (or the start of
    /// the retention window) to the start of the current market hour.
    fn season_span(&self, wm: u32, hour_start: u32) -> (u32, u32) {
        let end = hour_start / self.s.bucket;
        let oldest = wm.saturating_sub(self.s.retention) / self.s.bucket;
        let start = self.first_bucket.unwrap_or(end).max(oldest).min(end);
        (start, end)
    }

    fn housekeep(&mut self, wm: u32) {
        let freed_tickers = self.tickers.sweep();
        let freed_modules = self.modules.sweep();
        self.sequences.sweep(wm, &freed_tickers, &freed_modules);
        self.housekept_at = Some(wm);
    }

    /// The components behind a key's confidence at `now` (or at the watermark, if later),
    /// computed as `tick` would without changing any state. `None` for an unknown key.
    pub fn explain(&self, ticker: &Ticker, module: &Module, now: DateTime<Utc>) -> Option<Explanation> {
        let k = self.keys.get(self.tickers.id(ticker)?, self.modules.id(module)?)?;
        let at = to_secs(now)?.max(self.watermark.map_or(0, |(wm, _)| wm));
        let (_, weight, class) = self.hour_context(at);
        let hour_start = self.calendar.hour_start(at);
        let target = self.calendar.slot_at(at.saturating_add(self.s.horizon / 2));
        let frame = match self.season {
            Some(s) if s.hour_start == hour_start && s.frame.target == target => s.frame,
            _ => {
                let (start, end) = self.season_span(at, hour_start);
                SeasonFrame::measure(&self.calendar, target, start, end)
            }
        };
        let seasonal = frame.rate(k.buckets(), &self.calendar);
        let (recent, popular) = k.rates(at, self.tau_fast, self.tau_slow);
        let (lambda, reason) = intensity(recent, popular, seasonal, weight);
        let raw = probability(lambda, self.s.horizon);
        Some(Explanation {
            rate_recent: recent,
            rate_popular: popular,
            rate_seasonal: seasonal,
            hour_weight: weight,
            intensity: lambda,
            raw_probability: raw,
            confidence: self.calibrator.map(class, raw),
            reason,
            events_in_window: k.total(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intensity_names_the_dominant_component() {
        // Steady: recent ≈ popular.
        assert_eq!(intensity(0.01, 0.01, Some(0.01), 1.0).1, Reason::Popularity);
        // Recent far above both steady and seasonal.
        assert_eq!(intensity(0.05, 0.01, Some(0.005), 1.0).1, Reason::Burst);
        // Nothing lately, but this hour is usually busy.
        assert_eq!(intensity(0.0, 0.0, Some(0.02), 1.0).1, Reason::TimeOfDay);
        // The weight multiplies; a missing seasonal estimate rescales the others to sum to one.
        let (a, _) = intensity(0.01, 0.01, None, 2.0);
        assert!((a - 0.02).abs() < 1e-12, "{a}");
        assert!((probability(1.0 / 60.0, 300) - (1.0 - (-5.0f64).exp())).abs() < 1e-12);
    }
}
