//! The watermark path: ranking, calibration samples, expiry, housekeeping.
//!
//! [`Model::tick`] visits only the keys that need it (`lazy.rs`, over the index of
//! `schedule.rs`); [`Model::tick_full_scan`] is the reference it must equal: one pass over the
//! dense slot table, each live key scored by the one formula of `score.rs` and a bounded heap
//! keeping the best `top_n`. A tick that starts a new seasonal frame (twice per market hour)
//! or follows a change that renumbered keys runs that walk and rebuilds the index.

use super::calibration::Calibrator;
use super::keys::DEAD;
use super::profile::{to_secs, SeasonFrame};
use super::schedule::{crossed, Sampling, TickVisits};
use super::score::{self, Rates};
use super::window::NO_SAMPLE;
use super::{Explanation, Model, Season};
use chrono::{DateTime, Utc};
use prefetch_contract::contract::{Module, Ticker};
use prefetch_contract::prediction::{Prediction, Reason};
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashSet};

/// A ranking candidate; ordered by rank, then slot for determinism.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub raw: f64,
    pub slot: u32,
    pub reason: Reason,
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

/// The best `top_n` candidates seen, worst on top.
pub(crate) type Top = BinaryHeap<Reverse<Candidate>>;

/// Keeps `c` if it is among the best `n`.
pub(crate) fn offer(top: &mut Top, n: usize, c: Candidate) {
    if top.len() < n {
        top.push(Reverse(c));
    } else if top.peek().is_some_and(|Reverse(min)| c > *min) {
        top.pop();
        top.push(Reverse(c));
    }
}

/// What one tick is computed against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TickCtx {
    pub wm: u32,
    pub generated_at: DateTime<Utc>,
    pub weight: f64,
    pub class: u8,
    pub horizon: u32,
    /// Oldest bucket index kept.
    pub oldest: u32,
    /// The previous tick's watermark for sampling (`None`: every panel key opens a sample).
    pub sampled_to: Option<u32>,
    /// The least panel level of a key that samples calibration (`Schedule::panel_level` of
    /// the keys live when the tick began: the walk and the lazy tick agree on it).
    pub panel: u32,
    pub epoch: u32,
    pub season: Option<SeasonFrame>,
    pub has_season: bool,
    /// Whether this tick started a new seasonal frame.
    pub new_season: bool,
}

impl Model {
    /// Advances the watermark to `now` (it never moves back) and returns the keys whose
    /// calibrated probability of a query within the horizon is at least `min_confidence`, best
    /// first: at most `top_n` of them ranked by rate, and the periodic keys whose next poll
    /// comes before the next tick (`cycle.rs`), all within the fetch budget. Also expires buckets and keys that left the retention window,
    /// resolves and opens calibration samples, and (once per bucket width) forgets idle
    /// clients, faded sequences and unused ids. Returns nothing when the model is disabled.
    ///
    /// Its cost follows the keys that changed, expire, resolve or open a sample since the last
    /// tick and the keys whose score bound reaches the cut, not every live key (`lazy.rs`); it
    /// returns exactly what [`Model::tick_full_scan`] would.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Prediction> {
        self.tick_holding(now, &HashSet::new())
    }

    /// [`Model::tick`], holding back the keys of `held` tickers: they are not published, so
    /// the fetch budget does not pay for them and the cache view does not note them as warmed.
    /// The analyzer holds back the tickers of partitions it is still restoring (their rates
    /// are underestimates until the restore ends).
    pub fn tick_holding(&mut self, now: DateTime<Utc>, held: &HashSet<Ticker>) -> Vec<Prediction> {
        let held: HashSet<u32> = held.iter().filter_map(|t| self.tickers.id(t)).collect();
        let Some(ctx) = self.begin_tick(now) else { return Vec::new() };
        if ctx.new_season || !self.schedule.valid() || ctx.sampled_to.is_none() {
            let (top, expired) = self.walk(&ctx, true);
            return self.finish_tick(&ctx, top, expired, &held);
        }
        let (top, expired) = self.lazy_tick(&ctx);
        self.finish_tick(&ctx, top, expired, &held)
    }

    /// The reference tick: the same result as [`Model::tick`], computed by walking every live
    /// key. Kept for the equivalence tests and the tick benchmark; it drops the lazy tick's
    /// index (the next `tick` rebuilds it).
    #[doc(hidden)]
    pub fn tick_full_scan(&mut self, now: DateTime<Utc>) -> Vec<Prediction> {
        let Some(ctx) = self.begin_tick(now) else { return Vec::new() };
        self.schedule.invalidate();
        let (top, expired) = self.walk(&ctx, false);
        self.finish_tick(&ctx, top, expired, &HashSet::new())
    }

    /// Running totals of the keys ticks visited, by why: the cost of [`Model::tick`] follows
    /// them (the tick benchmark reports them per tick).
    #[doc(hidden)]
    pub fn tick_visits(&self) -> TickVisits {
        self.schedule.visits
    }

    /// Moves the watermark and the seasonal frame; `None` for an unrepresentable `now`.
    fn begin_tick(&mut self, now: DateTime<Utc>) -> Option<TickCtx> {
        let now_s = to_secs(now)?;
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
        let epoch_before = self.season_epoch;
        self.refresh_season(wm);
        let (_, weight, class) = self.hour_context(wm);
        let sampled_to = self.grid;
        self.grid = Some(wm);
        if let Some(view) = self.cache.as_mut() {
            view.tick(wm);
        }
        let season = self.season.map(|s| s.frame);
        Some(TickCtx {
            wm,
            generated_at,
            weight,
            class,
            horizon: self.s.horizon,
            oldest: wm.saturating_sub(self.s.retention) / self.s.bucket,
            sampled_to,
            panel: self.schedule.panel_level(self.keys.len()),
            epoch: self.season_epoch,
            season,
            has_season: season.is_some_and(|f| f.observed()),
            new_season: epoch_before != self.season_epoch,
        })
    }

    /// Walks every live key: expiry, seasonal rate, samples, ranking. With `index`, rebuilds
    /// the lazy tick's index on the way. Returns the best candidates and the expired slots.
    fn walk(&mut self, ctx: &TickCtx, index: bool) -> (Top, Vec<u32>) {
        let TickCtx { wm, weight, class, horizon, oldest, epoch, season, has_season, .. } = *ctx;
        if index {
            // Bounds are stored at this frame's rate scale (`lazy::bound_scalar`).
            let scale = (self.calibrator.gain_bound(class) * weight).max(1e-6);
            self.schedule.rebuild(self.keys.slots_mut().len(), horizon, scale);
        }
        self.schedule.visits.walks += 1;
        self.schedule.visits.walked += self.keys.len() as u64;
        let cache = self.cache.as_ref();
        let mut heap: Top = BinaryHeap::with_capacity(self.s.top_n + 1);
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
                k.season =
                    season.and_then(|f| f.rate(k.buckets(), &self.calendar)).unwrap_or(0.0) as f32;
                k.season_epoch = epoch;
            }
            let seasonal = has_season.then_some(f64::from(k.season));
            let rates = Rates::of(k, wm, (self.tau_fast, self.tau_slow), seasonal);
            let (lambda, reason) = score::intensity(rates, weight);
            if k.sample_at != NO_SAMPLE
                && u64::from(wm) >= u64::from(k.sample_at) + u64::from(horizon)
            {
                self.calibrator.resolve(k.sample_cell, false);
                k.sample_at = NO_SAMPLE;
            }
            let at = Sampling::of(k.ticker, k.module, horizon);
            let opens = k.sample_at == NO_SAMPLE
                && at.level >= ctx.panel
                && crossed(ctx.sampled_to, wm, at.phase, horizon);
            if index {
                let factors = super::lazy::copy_factors(cache, &self.modules, k, wm);
                let bound = super::lazy::bound_scalar(rates, factors, self.schedule.scale);
                let resolves = (k.sample_at != NO_SAMPLE)
                    .then(|| k.sample_at.saturating_add(horizon))
                    .or(opens.then(|| wm.saturating_add(horizon)));
                let first = k.buckets().next().map(|b| b.0);
                self.schedule.add(slot as u32, bound, first, at, resolves);
            }
            // With refresh-ahead the rank is what a warm now would serve (already calibrated);
            // a key whose copy outlives the next tick waits for a later tick, and one whose
            // upper bound cannot make the cut is dropped before any `exp` or `ln`.
            let due = match cache.map(|view| view.due(k.ticker, k.module, wm)) {
                Some(None) if !opens => continue,
                due => due,
            };
            if let Some(Some(d)) = due {
                let full = heap.len() >= self.s.top_n;
                let floor =
                    heap.peek().filter(|_| full).map_or(self.s.min_confidence, |Reverse(min)| {
                        min.raw.max(self.s.min_confidence)
                    });
                let bound = score::serve_bound(
                    self.calibrator.map(class, (lambda * f64::from(horizon)).min(1.0)),
                    lambda,
                    horizon,
                    d,
                );
                if bound < floor && !opens {
                    continue;
                }
            }
            let raw = score::probability(lambda, horizon);
            if opens {
                k.open_sample(wm, horizon, Calibrator::encode(class, raw), &mut self.calibrator);
            }
            let rank = match due {
                None => raw,
                Some(None) => continue,
                Some(Some(d)) => {
                    score::serve_probability(self.calibrator.map(class, raw), raw, lambda, d)
                }
            };
            offer(&mut heap, self.s.top_n, Candidate { raw: rank, slot: slot as u32, reason });
        }
        (heap, expired)
    }

    /// Removes expired keys (ascending slots, as the walk found them), refits the calibrator,
    /// turns the best candidates (but those of `held` ticker ids) into predictions and marks
    /// them warmed, then housekeeps.
    fn finish_tick(
        &mut self,
        ctx: &TickCtx,
        heap: Top,
        expired: Vec<u32>,
        held: &HashSet<u32>,
    ) -> Vec<Prediction> {
        self.remove_expired(&expired);
        let (wm, class, horizon) = (ctx.wm, ctx.class, ctx.horizon);
        self.calibrator.refit(wm);
        let mut out = Vec::new();
        if self.s.enabled {
            let ranked = heap.into_sorted_vec(); // ascending Reverse = best first
            let calibrated = self.cache.is_some();
            let mut ranked: Vec<(Candidate, f64)> = ranked
                .into_iter()
                .map(|Reverse(c)| c)
                .map(|c| (c, if calibrated { c.raw } else { self.calibrator.map(class, c.raw) }))
                .take_while(|&(_, p)| p >= self.s.min_confidence)
                .filter(|(c, _)| {
                    held.is_empty()
                        || self.keys.slot(c.slot).is_none_or(|k| !held.contains(&k.ticker))
                })
                .collect();
            // Periodic keys whose next poll comes before the next tick (`cycle.rs`): each is one
            // past query's echo, so, like a follow-up, it is not cut by the tick's `top_n`; it
            // competes for the budget by the probability that its warm is used.
            // A key ranked already is warmed once, at the better of its two probabilities.
            let echoes = self.echo_candidates(wm, held);
            if !echoes.is_empty() {
                for (slot, p) in echoes {
                    let periodic = Candidate { raw: p, slot, reason: Reason::Periodic };
                    match ranked.iter_mut().find(|(c, _)| c.slot == slot) {
                        Some(r) if p > r.1 => *r = (periodic, p),
                        Some(_) => {}
                        None if p >= self.s.min_confidence => ranked.push((periodic, p)),
                        None => {}
                    }
                }
            }
            // With a view of the cache, each candidate is published (and spent on) at the share
            // of its reason's warms at its confidence that were used (`usefulness.rs`).
            let mut ranked: Vec<(Candidate, f64, u8)> = ranked
                .into_iter()
                .map(|(c, p)| {
                    let (p, cell) = self.warm_confidence(c.reason, p, wm);
                    (c, p, cell)
                })
                .filter(|&(_, p, _)| p >= self.s.min_confidence)
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.slot.cmp(&b.0.slot)));
            // The fetch budget publishes the best it can pay for (`budget.rs`); the lazy tick
            // and the full walk both end here, so they spend alike.
            let admitted = self.admit_tick(wm, ctx.generated_at, ranked.iter().map(|&(_, p, _)| p));
            ranked.truncate(admitted);
            let mut warmed = Vec::new();
            out = ranked
                .into_iter()
                .filter_map(|(c, p, cell)| {
                    let k = self.keys.slot(c.slot)?;
                    warmed.push((k.ticker, k.module, cell));
                    Some(Prediction {
                        ticker: self.tickers.name(k.ticker)?.clone(),
                        module: self.modules.name(k.module)?.clone(),
                        confidence: p,
                        horizon_s: u64::from(horizon),
                        generated_at: ctx.generated_at,
                        reason: c.reason,
                    })
                })
                .collect();
            for (t, m, cell) in warmed {
                self.note_warmed(t, m, wm, cell);
            }
            self.counters.predictions_tick += out.len() as u64;
        } else {
            self.skip_echoes(wm);
        }
        // After the predictions are named: housekeeping may compact the table (new slots).
        if self.housekept_at.is_none_or(|at| wm >= at.saturating_add(self.s.bucket)) {
            self.housekeep(wm);
        }
        out
    }

    /// Forgets the keys in `slots` (ascending: the free list, and so later slot numbers, then
    /// match the full walk's).
    pub(crate) fn remove_expired(&mut self, slots: &[u32]) {
        for &slot in slots {
            let k = self.keys.slot_mut(slot);
            let (t, m) = (k.ticker, k.module);
            self.keys.remove(slot);
            self.schedule.removed(slot);
            self.tickers.release(t);
            self.modules.release(m);
            self.counters.keys_expired += 1;
        }
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
        self.recent.forget_freed(&freed_tickers, &freed_modules);
        if let Some(view) = self.cache.as_mut() {
            for (t, m) in view.sweep(wm, &freed_tickers, &freed_modules) {
                self.copy_changed(t, m);
            }
        }
        let slots = self.keys.slots_mut().len();
        self.keys.compact_if_sparse();
        if self.keys.slots_mut().len() != slots {
            self.schedule.invalidate();
        }
        self.housekept_at = Some(wm);
    }

    /// The components behind a key's confidence at `now` (or at the watermark, if later),
    /// computed as `tick` would without changing any state. `None` for an unknown key.
    pub fn explain(
        &self,
        ticker: &Ticker,
        module: &Module,
        now: DateTime<Utc>,
    ) -> Option<Explanation> {
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
        let rates = Rates::of(k, at, (self.tau_fast, self.tau_slow), seasonal);
        let s = score::score(rates, weight, self.s.horizon);
        Some(Explanation {
            rate_recent: rates.recent,
            rate_popular: rates.popular,
            rate_seasonal: seasonal,
            hour_weight: weight,
            intensity: s.lambda,
            raw_probability: s.raw,
            confidence: self.calibrator.map(class, s.raw),
            reason: s.reason,
            events_in_window: k.total(),
        })
    }
}
