//! What a warm's confidence is worth: the share of published warms that were used, learnt
//! online by reason and confidence, and the confidence the model publishes and spends by.
//!
//! Each reason's confidence comes from a different estimate — a rate turned into the chance
//! that a copy stored now serves a query (popularity, time of day, burst), a learned
//! follow-up's frequency (sequence), the share of a period's echoes that came (periodic) — and
//! each can be off in its own way on a given deployment's traffic: on the development traces a
//! sequence follow-up at 0.9 was used 0.48 of the time on one trace and 0.97 on another; a
//! periodic warm at 0.2–0.5 was used 0.14–0.18 of the time on one and 0.6 on another. The
//! fetch budget ranks every candidate by its confidence and spends on the best, so a reason
//! that overstates takes tokens a better warm would have used.
//!
//! [`Usefulness`] counts, per reason and tenth of raw confidence, the warms published and those
//! the cache view saw used (the first hit the copy they replaced could not have served,
//! [`crate::refresh::Observed::useful`]). Counts decay with event time ([`TAU_S`]), so the map
//! follows the traffic. A candidate's published confidence is its cell's used share, shrunk
//! toward the raw confidence by [`PRIOR_WARMS`] pseudo-warms: with few warms in a cell the raw
//! estimate stands, and a cell no candidate reaches any more drifts back to it as its counts
//! decay. A warm not used yet counts as unused until its first use arrives — at most a copy's
//! lifetime later, short against [`TAU_S`].
//!
//! Not checkpointed: after a restart the map is learnt again from the next warms (the raw
//! confidences stand meanwhile).

use super::Model;
use prefetch_contract::prediction::Reason;

/// Time constant of the counts' decay, event seconds (six hours).
const TAU_S: f32 = 21_600.0;
/// Pseudo-warms at the raw confidence each cell starts from.
const PRIOR_WARMS: f32 = 8.0;
/// Reasons counted (every [`Reason`]).
const REASONS: usize = 5;

/// Decayed counts of one cell.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    warms: f32,
    used: f32,
    at: u32,
}

impl Counts {
    /// Decays the counts to `t` (never back).
    fn decay_to(&mut self, t: u32) {
        if t > self.at {
            let f = (-((t - self.at) as f32) / TAU_S).exp();
            self.warms *= f;
            self.used *= f;
            self.at = t;
        }
    }
}

/// Warms and uses by reason and tenth of raw confidence (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Usefulness {
    cells: [Counts; REASONS * 10],
}

impl Default for Usefulness {
    fn default() -> Self {
        Self { cells: [Counts::default(); REASONS * 10] }
    }
}

impl Usefulness {
    /// The cell of a candidate of `reason` with raw confidence `raw`.
    pub fn cell(reason: Reason, raw: f64) -> u8 {
        let tenth = (raw.clamp(0.0, 0.999_999) * 10.0) as u8;
        reason_index(reason) * 10 + tenth
    }

    /// The confidence to publish and spend by for a candidate of `reason` with raw confidence
    /// `raw` at `t`.
    pub fn confidence(&self, reason: Reason, raw: f64, t: u32) -> f64 {
        let mut c = self.cells[usize::from(Self::cell(reason, raw))];
        c.decay_to(t);
        let raw = raw.clamp(0.0, 1.0) as f32;
        f64::from((c.used + PRIOR_WARMS * raw) / (c.warms + PRIOR_WARMS))
    }

    /// A warm in `cell` was published at `t`.
    pub fn published(&mut self, cell: u8, t: u32) {
        if let Some(c) = self.cells.get_mut(usize::from(cell)) {
            c.decay_to(t);
            c.warms += 1.0;
        }
    }

    /// A warm in `cell` was used at `t`.
    pub fn used(&mut self, cell: u8, t: u32) {
        if let Some(c) = self.cells.get_mut(usize::from(cell)) {
            c.decay_to(t);
            c.used = (c.used + 1.0).min(c.warms.max(1.0));
        }
    }

    /// `(warms, used)` of a cell at `t`, for tests and status.
    #[cfg(test)]
    pub fn counts(&self, cell: u8, t: u32) -> (f32, f32) {
        let mut c = self.cells[usize::from(cell)];
        c.decay_to(t);
        (c.warms, c.used)
    }
}

impl Model {
    /// The confidence a candidate of `reason` with raw confidence `raw` is published and spent
    /// at, at `t`, and its cell: the used share with a view of the cache, the raw confidence
    /// without one (no warm's use is seen then).
    pub(crate) fn warm_confidence(&self, reason: Reason, raw: f64, t: u32) -> (f64, u8) {
        let cell = Usefulness::cell(reason, raw);
        match self.cache {
            Some(_) => (self.usefulness.confidence(reason, raw, t), cell),
            None => (raw, cell),
        }
    }

    /// A warm of `(tid, mid)` in `cell` was published at `t`: the cache view takes the copy it
    /// stores, the cell counts it, and the lazy tick re-bounds the key.
    pub(crate) fn note_warmed(&mut self, tid: u32, mid: u32, t: u32, cell: u8) {
        if let Some(view) = self.cache.as_mut() {
            view.warmed(tid, mid, t, cell);
            self.usefulness.published(cell, t);
            self.copy_changed(tid, mid);
        }
    }
}

fn reason_index(reason: Reason) -> u8 {
    match reason {
        Reason::Popularity => 0,
        Reason::TimeOfDay => 1,
        Reason::Burst => 2,
        Reason::Sequence => 3,
        Reason::Periodic => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_that_overstates_is_published_at_what_its_warms_earned() {
        let mut u = Usefulness::default();
        let cell = Usefulness::cell(Reason::Sequence, 0.92);
        // Unknown: the raw confidence stands.
        assert!((u.confidence(Reason::Sequence, 0.92, 1_000) - 0.92).abs() < 1e-6);
        // 200 warms at 0.92 over an hour, every other one used.
        for i in 0..200u32 {
            let t = 1_000 + i * 18;
            u.published(cell, t);
            if i % 2 == 0 {
                u.used(cell, t + 10);
            }
        }
        let p = u.confidence(Reason::Sequence, 0.95, 4_700);
        assert!((0.48..0.55).contains(&p), "{p}");
        // Other reasons and tenths are untouched.
        assert!((u.confidence(Reason::Popularity, 0.92, 4_700) - 0.92).abs() < 1e-6);
        assert!((u.confidence(Reason::Sequence, 0.85, 4_700) - 0.85).abs() < 1e-6);
        // Nothing published in the cell for days: it drifts back to the raw confidence.
        let later = u.confidence(Reason::Sequence, 0.95, 4_700 + 5 * 86_400);
        assert!(later > 0.9, "{later}");
    }

    #[test]
    fn a_follow_up_that_comes_less_often_is_published_at_what_its_warms_earn() {
        use crate::tests::{ev, utc};
        use crate::{CacheTtls, Model, ModelConfig};
        let mut m = Model::new(ModelConfig::default()).unwrap();
        m.set_cache_ttls(CacheTtls { per_module: Default::default(), default_s: 120 });
        let start = utc(2026, 3, 10, 14, 0);
        // An analyst per minute, each on a ticker of their own: price, then chart 10 s later.
        // For 150 minutes the chart always follows; then only every other time. The learned
        // follow-up's frequency counts every session since the start (it fades over days),
        // the warms' use the last few hours.
        let mut last = Vec::new();
        for i in 0..450i64 {
            let at = start + chrono::Duration::seconds(i * 60);
            let (ticker, client) = (format!("T{i}"), format!("c{i}"));
            let r = m.record(&ev(&ticker, "price", at, Some(&client)));
            let follow = r.predictions.iter().find(|p| p.module.as_str() == "chart");
            if i >= 400 {
                last.push(follow.map(|p| p.confidence));
            }
            if i < 150 || i % 2 == 0 {
                let then = at + chrono::Duration::seconds(10);
                m.record(&ev(&ticker, "chart", then, Some(&client)));
            }
            m.tick(at + chrono::Duration::seconds(30));
        }
        // 300 of the 450 followed (0.67), and half of the last 300.
        let published: Vec<f64> = last.iter().flatten().copied().collect();
        assert_eq!(published.len(), last.len(), "every session's follow-up is published");
        let mean = published.iter().sum::<f64>() / published.len() as f64;
        assert!((0.45..0.6).contains(&mean), "{mean}");
    }

    #[test]
    fn an_understating_reason_is_lifted_and_uses_never_exceed_warms() {
        let mut u = Usefulness::default();
        let cell = Usefulness::cell(Reason::Periodic, 0.25);
        for i in 0..100u32 {
            u.published(cell, 100 + i);
            u.used(cell, 100 + i);
            u.used(cell, 100 + i);
        }
        let (warms, used) = u.counts(cell, 200);
        assert!(used <= warms + 1e-3, "{used} of {warms}");
        let p = u.confidence(Reason::Periodic, 0.25, 200);
        assert!(p > 0.9, "{p}");
    }
}
