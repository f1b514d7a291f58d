//! The lazy tick: O(keys that changed, expire, resolve or open a calibration sample — a panel of
//! at most `schedule::PANEL_KEYS` per horizon — + keys popped) instead of a walk over every
//! live key, with exactly the full walk's result.
//!
//! # Why a bound stays valid
//! Between two events of a key and within one seasonal frame, its unweighted intensity
//! (`score::intensity` with weight 1) only falls as event time moves on: the fast and slow
//! EWMAs decay, so the prior's rate and the recent evidence fall and the posterior with them;
//! the idle bound `2 / idle` falls; the seasonal floor is constant (the key's seasonal rate is
//! cached per frame, and a new frame rebuilds the index). The hour weight and the calibration
//! map change for every key alike, so they are applied when the bound is read:
//! - without a cache view the rank is `1 − exp(−w·λ·H)`, increasing in `λ`, bounded by
//!   the same with the stored `λ`;
//! - with one, the rank is what a warm would serve, `1 − exp(−W·r)` with the window
//!   `W ≤ TTL` and the updated rate `r = u(prior) = (1 + q) / (1/prior + age)`
//!   (`score::updated_rate`), and the prior `w·λ·map(r)/r ≤ c·λ` (`r = 1 − e^(−w·λ·H)`),
//!   `c = K·w` with `K` the map's gain bound
//!   ([`Calibrator::gain_bound`](crate::calibration::Calibrator::gain_bound)). `u` increases
//!   with the prior and `u(a·x) ≤ a·u(x)` for `a ≥ 1`, so `W·r ≤ max(1, c/c₀)·TTL·u(c₀·λ)`
//!   for any fixed `c₀` (the schedule's `scale`, taken when the index is built). The stored
//!   scalar is `TTL·u(c₀·λ)` at the copy's `q` and age: it falls as `λ` falls and the age grows.
//!   `q` and the age change otherwise only with the key's own events (which re-bound it), a
//!   warm (queries and age back to 0) or the sweep that forgets a copy a day after it expired:
//!   both mark the key for a fresh bound ([`Model::copy_changed`]). Taking the age in the
//!   bound is what lets a key whose copy expired hours ago stay in the heap: at 1M keys with a
//!   copy each from hours before, bounds without it popped 179k keys a tick.
//!
//! Each tick pops bounds best first, scores each popped key exactly as the full walk does, and
//! stops once the best bound left cannot reach the `top_n`-th candidate (nor the confidence
//! floor). A popped key's copy that outlives the next tick parks it until its expiry nears.

use super::calibration::Calibrator;
use super::keys::{Interner, KeyTable, DEAD};
use super::refresh::CacheView;
use super::schedule::{crossed, Entry, Sampling};
use super::score::{self, Due, Rates};
use super::tick::{offer, Candidate, TickCtx, Top};
use super::window::{KeyState, NO_SAMPLE};
use super::Model;
use prefetch_contract::contract::Module;
use std::collections::BinaryHeap;

/// The live key in `slot`, if any.
fn live_mut(keys: &mut KeyTable, slot: u32) -> Option<&mut KeyState> {
    keys.slots_mut().get_mut(slot as usize).filter(|k| k.ticker != DEAD)
}

/// Relative slack on a stored bound, far above the f32/f64 rounding of the rates.
const SLACK: f64 = 1.0 + 1e-6;

/// What bounds a warm of a key with a cache view: `(q, TTL bound, age)` — queries of its
/// current copy, the most a warm of it can serve ([`CacheView::ttl_bound`]), and the copy's age
/// now (0 without a copy), as [`CacheView::due`] would give them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CopyFactors {
    queries: u32,
    ttl: u32,
    age: u32,
}

/// The scalar a key's bound is stored as: without a cache view its unweighted intensity now
/// (an upper bound from now to its next event); with one, `TTL · updated_rate(c₀·λ, q, age)` —
/// what a warm would serve, as a rate times its window, with the prior rate taken at the
/// scale `c₀` ([`Schedule::scale`](super::schedule::Schedule), fixed between rebuilds).
pub(crate) fn bound_scalar(rates: Rates, copy: Option<CopyFactors>, scale: f64) -> f64 {
    let (lambda, _) = score::intensity(rates, 1.0);
    match copy {
        None => lambda * SLACK,
        Some(CopyFactors { queries, ttl, age }) => {
            let due = Due { window: ttl, age, queries };
            score::updated_rate(scale * lambda * SLACK, due) * f64::from(ttl) * SLACK
        }
    }
}

/// The factors of the key `k` for [`bound_scalar`] at `now`, with a cache view.
pub(crate) fn copy_factors(
    view: Option<&CacheView>,
    modules: &Interner<Module>,
    k: &KeyState,
    now: u32,
) -> Option<CopyFactors> {
    let view = view?;
    let ttl = view.ttl_bound(k.module, modules.name(k.module));
    Some(match view.copy(k.ticker, k.module) {
        Some(c) => CopyFactors { queries: c.queries, ttl, age: now.saturating_sub(c.fetched) },
        None => CopyFactors { queries: 0, ttl, age: 0 },
    })
}

impl Model {
    /// One tick over the index (see the module docs). Returns the best candidates; the keys
    /// that left the retention window are already removed.
    pub(crate) fn lazy_tick(&mut self, ctx: &TickCtx) -> (Top, Vec<u32>) {
        let TickCtx { wm, weight, class, horizon, oldest, epoch, season, has_season, .. } = *ctx;
        let taus = (self.tau_fast, self.tau_slow);

        // Expiry: keys with a bucket before the window, found by their oldest bucket.
        let mut expired = Vec::new();
        let expiring = self.schedule.take_expiring(oldest);
        self.schedule.visits.expiring += expiring.len() as u64;
        for slot in expiring {
            let Some(k) = live_mut(&mut self.keys, slot) else { continue };
            if k.expire(oldest) {
                expired.push(slot);
            } else if let Some((b, _)) = k.buckets().next() {
                self.schedule.expire_at(b, slot);
            }
        }
        self.remove_expired(&expired);

        // Keys with new events (or a copy warmed or forgotten): a seasonal rate for new keys,
        // then a fresh bound.
        let cache = self.cache.as_ref();
        let scale = self.schedule.scale;
        let dirty = self.schedule.take_dirty();
        self.schedule.visits.dirty += dirty.len() as u64;
        for slot in dirty {
            let Some(k) = live_mut(&mut self.keys, slot) else { continue };
            if k.season_epoch != epoch {
                k.season =
                    season.and_then(|f| f.rate(k.buckets(), &self.calendar)).unwrap_or(0.0) as f32;
                k.season_epoch = epoch;
            }
            let seasonal = has_season.then_some(f64::from(k.season));
            let factors = copy_factors(cache, &self.modules, k, wm);
            let bound = bound_scalar(Rates::of(k, wm, taus, seasonal), factors, scale);
            self.schedule.push(slot, bound);
        }

        // Samples that reached the end of the horizon are misses (in slot order, as the walk
        // adds them up).
        let resolving = self.schedule.take_resolving(wm);
        self.schedule.visits.resolving += resolving.len() as u64;
        for slot in resolving {
            let Some(k) = live_mut(&mut self.keys, slot) else { continue };
            if k.sample_at != NO_SAMPLE
                && u64::from(wm) >= u64::from(k.sample_at) + u64::from(horizon)
            {
                self.calibrator.resolve(k.sample_cell, false);
                k.sample_at = NO_SAMPLE;
            }
        }

        // Keys of the calibration panel whose sampling point passed open a sample.
        let prev = ctx.sampled_to.unwrap_or(wm);
        let keys = &self.keys;
        let sampling_of = |slot: u32| {
            keys.slot(slot)
                .filter(|k| k.ticker != DEAD)
                .map(|k| Sampling::of(k.ticker, k.module, horizon))
        };
        let opening = self.schedule.crossing(prev, wm, ctx.panel, sampling_of);
        self.schedule.visits.opening += opening.len() as u64;
        for slot in opening {
            let Some(k) = live_mut(&mut self.keys, slot) else { continue };
            let at = Sampling::of(k.ticker, k.module, horizon);
            if k.sample_at != NO_SAMPLE
                || at.level < ctx.panel
                || !crossed(ctx.sampled_to, wm, at.phase, horizon)
            {
                continue;
            }
            let seasonal = has_season.then_some(f64::from(k.season));
            let (lambda, _) = score::intensity(Rates::of(k, wm, taus, seasonal), weight);
            let cell = Calibrator::encode(class, score::probability(lambda, horizon));
            if k.open_sample(wm, horizon, cell, &mut self.calibrator) {
                self.schedule.resolve_at(wm.saturating_add(horizon), slot);
            }
        }

        self.schedule.visits.lazy_ticks += 1;
        if self.cache.is_none() {
            // Without a cache view the published confidence is the map after this tick's refit
            // (the floor test below reads it); refitting again at the same time changes nothing.
            self.calibrator.refit(wm);
        }
        let top = self.pop_best(ctx);
        self.schedule.trim(self.keys.len());
        (top, Vec::new())
    }

    /// Notes that the copy of `(tid, mid)` changed other than through the key's own event — a
    /// warm resets its queries and age, a sweep forgets it — so its bound, which takes the copy's
    /// age, is taken again at the next tick (its current entries go stale).
    pub(crate) fn copy_changed(&mut self, tid: u32, mid: u32) {
        if let Some(slot) = self.keys.slot_of(tid, mid) {
            self.schedule.touched(slot, None, None);
        }
    }

    /// Pops bounds best first until none left can make the cut; scores popped keys exactly as
    /// the full walk does and requeues (or parks) them with a fresh bound.
    fn pop_best(&mut self, ctx: &TickCtx) -> Top {
        let TickCtx { wm, weight, class, horizon, has_season, .. } = *ctx;
        let taus = (self.tau_fast, self.tau_slow);
        let (n, floor) = (self.s.top_n, self.s.min_confidence);
        self.schedule.unpark(wm);
        let cache = self.cache.as_ref();
        // Rank bound of a stored scalar, as the module docs derive it.
        let stretch = (self.calibrator.gain_bound(class) * weight / self.schedule.scale).max(1.0);
        let scale = self.schedule.scale;
        let rank_bound = |s: f64| match cache {
            None => score::probability(weight * s, horizon),
            Some(_) => -(-stretch * s * SLACK).exp_m1(),
        };
        let mut top: Top = BinaryHeap::with_capacity(n + 1);
        let mut requeue: Vec<Entry> = Vec::new();
        while let Some(e) = self.schedule.peek() {
            let b = rank_bound(e.bound);
            if top.len() >= n && top.peek().is_some_and(|min| b < min.0.raw) {
                break;
            }
            let reachable = match cache {
                None => self.calibrator.map(class, b) >= floor,
                Some(_) => b >= floor,
            };
            if !reachable {
                break;
            }
            self.schedule.pop();
            let Some(k) = self.keys.slot(e.slot) else { continue };
            let seasonal = has_season.then_some(f64::from(k.season));
            let rates = Rates::of(k, wm, taus, seasonal);
            let (lambda, reason) = score::intensity(rates, weight);
            let copy = cache.and_then(|v| v.copy(k.ticker, k.module));
            let factors = copy_factors(cache, &self.modules, k, wm);
            let fresh = self.schedule.requeue(e, bound_scalar(rates, factors, scale));
            let raw = score::probability(lambda, horizon);
            let rank = match cache.map(|view| view.due(k.ticker, k.module, wm)) {
                None => raw,
                Some(None) => {
                    let expires = copy.map_or(wm, |c| c.expires);
                    let until = expires.saturating_sub(super::refresh::MAX_LEAD_S).max(wm + 1);
                    self.schedule.park(fresh, until);
                    continue;
                }
                Some(Some(d)) => {
                    score::serve_probability(self.calibrator.map(class, raw), raw, lambda, d)
                }
            };
            requeue.push(fresh);
            offer(&mut top, n, Candidate { raw: rank, slot: e.slot, reason });
        }
        self.schedule.extend(requeue);
        top
    }
}

#[cfg(test)]
impl Model {
    /// Asserts the index's invariant: every live key not waiting for a fresh bound has exactly
    /// one current entry, at least the bound the key would be given at `now` (bounds only fall
    /// until the key or its copy changes).
    pub(crate) fn check_index(&self, now: chrono::DateTime<chrono::Utc>) {
        if !self.schedule.valid() {
            return;
        }
        let wm = super::profile::to_secs(now).unwrap();
        let mut entries = std::collections::HashMap::new();
        for e in self.schedule.current() {
            assert!(entries.insert(e.slot, e.bound).is_none(), "two entries for slot {}", e.slot);
        }
        let has_season = self.season.is_some_and(|x| x.frame.observed());
        let dirty = self.schedule.pending();
        for (slot, k) in (0..).map_while(|s| self.keys.slot(s)).enumerate() {
            if k.ticker == DEAD || dirty.contains(&(slot as u32)) {
                continue;
            }
            let seasonal = has_season.then_some(f64::from(k.season));
            let rates = Rates::of(k, wm, (self.tau_fast, self.tau_slow), seasonal);
            let factors = copy_factors(self.cache.as_ref(), &self.modules, k, wm);
            let fresh = bound_scalar(rates, factors, self.schedule.scale) / SLACK;
            let bound = entries.get(&(slot as u32)).copied();
            assert!(bound.is_some_and(|b| b >= fresh), "slot {slot}: bound {bound:?} < {fresh}");
        }
    }
}
