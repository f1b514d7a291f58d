//! Which event-driven predictions are new enough to publish.

use crate::keys::IdHash;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Event-driven predictions published lately, by key. A key is published again only when the
/// last one is older than a fifth of its horizon (event time) — or, with a cache view, was less
/// confident: every analyst opening `price` would otherwise re-publish the same `chart`
/// prediction, and the warmer would only skip it as fresh. Measured: 16% of the benchmark's
/// events caused a prediction, and publishing them cost 30% of the fold rate.
///
/// Why more confident counts only with a cache view (refresh-ahead): there, a candidate for a
/// key published moments ago has passed the view (no copy, or one about to expire), so it is a
/// refresh of the copy that warm stores — a fetch of its own, which the development traces pay
/// for (without the exception their mean share fell from 0.821 to 0.819). Without a view
/// nothing tells a refresh from a repeat, and a more confident repeat tells the warmer nothing
/// new: its decision does not depend on a confidence that reaches `min_confidence` (every
/// published one does); the repeat only moves the horizon's end by less than a fifth of it.
/// Rising confidences were most of what refresh-ahead off published: 57,625 of the 59,651
/// predictions of 300,000 benchmark events, each within 60 s of the last of its key and a
/// median 0.0015 more confident (BENCHMARKS.md #15).
///
/// Nearly every event's follow-up was published moments ago, so the check runs on the key's
/// interned ids, before any name is cloned into a prediction (with refresh-ahead off the
/// names' copies and the check by name were a third of `record`: BENCHMARKS.md #15). Ids are
/// recycled, so the entries of freed ids are forgotten when they are freed
/// ([`Recent::forget_freed`]).
#[derive(Default, Clone)]
pub(crate) struct Recent(HashMap<u64, Seen, IdHash>);

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent").field("entries", &self.0.len()).finish()
    }
}

#[derive(Clone, Copy)]
struct Seen {
    at: DateTime<Utc>,
    confidence: f64,
}

/// One published prediction, as [`Recent`] sees it: the key's ids, when and how sure.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Published {
    pub ticker: u32,
    pub module: u32,
    pub at: DateTime<Utc>,
    pub confidence: f64,
}

fn pack(ticker: u32, module: u32) -> u64 {
    (u64::from(ticker) << 32) | u64::from(module)
}

impl Recent {
    /// Whether `p` should be published now; remembers it if so.
    #[cfg(test)]
    pub fn fresh(&mut self, p: Published, horizon_s: u64, view: bool) -> bool {
        if !self.would_publish(p, horizon_s, view) {
            return false;
        }
        self.remember(p);
        true
    }

    /// Whether `p`, predicted for `horizon_s`, is new enough to publish; `view`: whether the
    /// model has a cache view, whose refreshes may follow a less confident warm of the key
    /// sooner (see [`Recent`]). Nothing is remembered: see [`Recent::remember`].
    pub fn would_publish(&self, p: Published, horizon_s: u64, view: bool) -> bool {
        let again_after = chrono::Duration::seconds((horizon_s / 5) as i64);
        match self.0.get(&pack(p.ticker, p.module)) {
            Some(seen) => p.at >= seen.at + again_after || (view && p.confidence > seen.confidence),
            None => true,
        }
    }

    /// Remembers `p` as published.
    pub fn remember(&mut self, p: Published) {
        self.0.insert(pack(p.ticker, p.module), Seen { at: p.at, confidence: p.confidence });
    }

    /// Forgets entries older than `horizon` before `now` (called on each tick: memory follows
    /// the keys predicted within one horizon).
    pub fn prune(&mut self, now: DateTime<Utc>, horizon: chrono::Duration) {
        self.0.retain(|_, s| s.at + horizon > now);
    }

    /// Forgets the entries of ticker and module ids just freed (`true` at their index), before
    /// the ids name other tickers or modules.
    pub fn forget_freed(&mut self, freed_tickers: &[bool], freed_modules: &[bool]) {
        let freed = |v: &[bool], id: u64| v.get(id as usize).copied().unwrap_or(false);
        self.0.retain(|&k, _| {
            !freed(freed_tickers, k >> 32) && !freed(freed_modules, k & 0xffff_ffff)
        });
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSFT: u32 = 3;
    const CHART: u32 = 1;
    const NEWS: u32 = 2;

    fn p(secs: i64, confidence: f64) -> Published {
        Published {
            ticker: MSFT,
            module: CHART,
            at: DateTime::from_timestamp(1_773_066_600 + secs, 0).unwrap(),
            confidence,
        }
    }

    #[test]
    fn a_sequence_prediction_is_republished_only_when_stale_or_more_confident() {
        let mut r = Recent::default();
        assert!(r.fresh(p(0, 0.6), 300, true));
        assert!(
            !r.fresh(p(30, 0.6), 300, true),
            "same key, same confidence, within a fifth of the horizon"
        );
        assert!(r.fresh(p(31, 0.7), 300, true), "more confident: published");
        assert!(!r.fresh(p(80, 0.7), 300, true));
        assert!(
            r.fresh(p(91, 0.5), 300, true),
            "a fifth of the horizon (60 s) after the last: published again"
        );
        r.prune(p(391, 0.5).at, chrono::Duration::seconds(300));
        assert_eq!(r.len(), 0, "pruned after one horizon");
        let other = Published { module: NEWS, ..p(0, 0.6) };
        assert!(r.fresh(other, 300, true) && r.fresh(p(392, 0.1), 300, true));
        assert!(!r.fresh(other, 300, true), "each key has its own entry");
    }

    #[test]
    fn without_a_cache_view_a_more_confident_repeat_waits_like_any_other() {
        let mut r = Recent::default();
        assert!(r.fresh(p(0, 0.2), 300, false));
        assert!(!r.fresh(p(10, 0.9), 300, false), "more confident, within 60 s: held back");
        assert!(!r.fresh(p(59, 0.95), 300, false));
        assert!(r.fresh(p(60, 0.3), 300, false), "60 s after the last published one");
        assert!(!r.fresh(p(61, 0.99), 300, false), "counted from the one published at 60 s");
        // The same history with a view publishes the more confident one at once.
        assert!(r.would_publish(p(61, 0.99), 300, true));
    }

    /// Analysts who each open MSFT `price` and then `chart`, one every 3 s: the model learns
    /// `price` → `chart` and publishes the follow-up at each `price`, more confident each time.
    /// Returns when each `chart` follow-up was published, seconds from the start.
    fn follow_ups(m: &mut crate::Model) -> Vec<i64> {
        let start = crate::tests::utc(2026, 1, 6, 15, 0);
        let mut at = Vec::new();
        for i in 0..40i64 {
            let t = start + chrono::Duration::seconds(3 * i);
            let client = format!("analyst-{i}");
            for (module, dt) in [("price", 0), ("chart", 1)] {
                let e = crate::tests::ev(
                    "MSFT",
                    module,
                    t + chrono::Duration::seconds(dt),
                    Some(&client),
                );
                let r = m.record(&e);
                at.extend(
                    r.predictions
                        .iter()
                        .filter(|p| p.module.as_str() == "chart")
                        .map(|p| (p.generated_at - start).num_seconds()),
                );
            }
        }
        at
    }

    #[test]
    fn a_model_without_a_cache_view_publishes_a_follow_up_once_per_interval() {
        let mut m = crate::Model::new(crate::ModelConfig::default()).unwrap();
        let at = follow_ups(&mut m);
        assert!(!at.is_empty(), "the follow-up is learnt and published");
        // 40 analysts over 120 s, each more sure: once, then once 60 s later.
        assert!(at.windows(2).all(|w| w[1] - w[0] >= 60), "{at:?}");
        assert!(at.len() <= 2, "{at:?}");
        // With a view whose copies last 1 s (every `chart` copy is gone by the next `price`),
        // a more confident follow-up is a refresh of its own and goes out within the interval.
        let mut m = crate::Model::new(crate::ModelConfig::default()).unwrap();
        m.set_cache_ttls(crate::CacheTtls { per_module: Default::default(), default_s: 1 });
        let at = follow_ups(&mut m);
        assert!(at.windows(2).any(|w| w[1] - w[0] < 60), "{at:?}");
    }

    #[test]
    fn freed_ids_are_forgotten_before_they_name_another_key() {
        let mut r = Recent::default();
        let news_of_7 = Published { ticker: 7, module: NEWS, ..p(0, 0.9) };
        for q in [p(0, 0.9), news_of_7, Published { ticker: 7, module: CHART, ..p(0, 0.9) }] {
            assert!(r.fresh(q, 300, true));
        }
        // Ticker 7 freed (its id may now name another ticker): its entries go, MSFT's stays.
        let mut freed_tickers = vec![false; 8];
        freed_tickers[7] = true;
        r.forget_freed(&freed_tickers, &[]);
        assert!(r.would_publish(Published { confidence: 0.1, ..news_of_7 }, 300, true));
        assert!(!r.would_publish(p(1, 0.9), 300, true));
        // A freed module goes for every ticker.
        let mut freed_modules = vec![false; 3];
        freed_modules[CHART as usize] = true;
        r.forget_freed(&[], &freed_modules);
        assert!(r.would_publish(p(2, 0.1), 300, true));
        assert_eq!(r.len(), 0);
    }
}
