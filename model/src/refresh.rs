//! Refresh-ahead: the model's view of the cache, so that a tick spends its `top_n` on the keys a
//! warm would actually help, at the moment it helps most.
//!
//! Without it a tick ranks keys by how likely they are to be queried, and the most popular keys
//! — cached already, most of the time — take every slot. With cache TTLs
//! ([`Model::set_cache_ttls`]) the model also tracks when each key's cached copy expires:
//! a query with `hit: false` is a demand fetch (the copy now expires a TTL later), and every
//! prediction the model publishes is assumed warmed when published. A tick then only considers
//! keys whose copy is gone or expires before the next tick (a later tick can still refresh the
//! others, with fresher evidence, at no loss), and ranks them by the probability that the copy a
//! warm stores now serves a query: a query between the current expiry (or now) and now + TTL.
//! That probability is `score.rs`'s [`serve_probability`](crate::score::serve_probability): the
//! model's rate updated with the key's own evidence — the queries its current copy saw over the
//! copy's age, the scale of its TTL — and a Poisson arrival within the window.
//!
//! Event-driven follow-ups get the same treatment: one whose key the view holds fresh for a
//! while yet is not published (a refresh now would only shorten the copy's useful life).
//!
//! A view that drifts from the real cache corrects itself: a miss resets the key's expiry, and a
//! hit on a key the view believed gone marks it live, to be reconsidered at the next tick.

use super::cycle::{tolerance, Cycle, Echoes};
use super::keys::IdHash;
use super::score::{self, Due, Rates};
use super::Model;
use prefetch_contract::config::LiveConfig;
use prefetch_contract::contract::Module;
use std::collections::{BTreeMap, HashMap};

/// A hit on a copy expiring within this many seconds refreshes it (when likely to be used), so
/// busy keys renew on their own traffic and leave the tick's `top_n` to the others. The warmer
/// fetches the refresh just before the copy expires (`policy::Decision::WarmAt`), so an early
/// decision costs no copy life; it commits the budget earlier, on older evidence. Chosen on
/// the development traces: 10 s (when refreshes were fetched at once) → mean share 0.787,
/// 20–40 s a little more, 60 and 120 s → 0.806; no bound (an hour-long copy refreshed on its
/// first hit) → 0.502 against 10 s's 0.526 on the 17 development traces it was tried on.
pub(crate) const HIT_LEAD_S: u32 = 60;
/// A follow-up whose key is believed fresh for longer than this many seconds is not published.
pub(crate) const FOLLOW_UP_LEAD_S: u32 = 30;
/// A producer's hit flags are believed while it has sent a `hit: true` within this many
/// seconds. One that only ever sends `hit: false` (simple integrations do) says nothing about
/// the cache: a query on a copy the view believes live is then taken as a hit, not as a demand
/// fetch that would push the copy's expiry out with every query and never let the key fall due.
pub(crate) const TRUST_HITS_S: u32 = 3_600;
/// Most seconds between ticks the refresh lead follows (a longer pause is a gap in the stream,
/// not a slower tick).
pub(crate) const MAX_LEAD_S: u32 = 60;

/// How long the cache keeps each module's entries, as the warmer is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTtls {
    /// TTL by module name, seconds.
    pub per_module: BTreeMap<String, u64>,
    /// TTL of other modules, seconds.
    pub default_s: u64,
}

impl CacheTtls {
    /// The TTLs of a live config (`ttl_s`, `default_ttl_s`).
    pub fn of_live(live: &LiveConfig) -> Self {
        Self { per_module: live.ttl_s.clone(), default_s: live.default_ttl_s }
    }

    /// The TTL of `module`, seconds (at least 1).
    pub fn for_module(&self, module: &str) -> u32 {
        self.per_module
            .get(module)
            .copied()
            .unwrap_or(self.default_s)
            .clamp(1, u64::from(u32::MAX / 2)) as u32
    }
}

/// What one query was to the cache view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// The copy's expiry, when the query hit a copy that expires within [`HIT_LEAD_S`]: a
    /// candidate for refresh on hit.
    pub refresh: Option<u32>,
    /// The query fetched on demand (a miss).
    pub demand: bool,
    /// The query was the first hit on a warmed copy: that warm saved a demand fetch.
    pub useful: bool,
    /// The [`crate::usefulness`] cell of that warm.
    pub used_cell: Option<u8>,
    /// The query would have fetched in a cache never warmed (same TTLs): one of the calls of
    /// no warming, which a ratio budget is a multiple of.
    pub bare: bool,
}

/// What the view believes about one key's cached copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Copy {
    /// When it was fetched (internal seconds).
    pub fetched: u32,
    /// When it expires.
    pub expires: u32,
    /// Queries of the key since the fetch (the one that fetched it included).
    pub queries: u32,
    /// For a warmed copy no hit has proven yet, the time from which a hit proves it: when the
    /// warm replaced a copy still live, that copy's expiry (hits before it would have been
    /// served without the warm), else the warm's time. [`PROVEN`] otherwise.
    pub proves_from: u32,
    /// When the copy of a cache never warmed would expire: the counterfactual of no warming,
    /// kept from query times and TTLs alone (a warm does not move it).
    pub bare: u32,
    /// The milliseconds of that expiry within its second: a dashboard polling at its copies'
    /// TTL asks again in the very second they expire, before or after by a few ms.
    pub bare_ms: u16,
    /// When the key is asked next, from its own queries (`cycle.rs`).
    pub cycle: Cycle,
    /// The [`crate::usefulness`] cell of the warm that stored the copy, plus one, until a use
    /// proves it (0: none).
    pub warm_cell: u8,
}

/// [`Copy::proves_from`] of a copy with nothing left to prove (fetched on demand, or already
/// hit after the copy it replaced would have expired).
pub(crate) const PROVEN: u32 = u32::MAX;

pub(crate) fn pack(ticker: u32, module: u32) -> u64 {
    (u64::from(ticker) << 32) | u64::from(module)
}

/// `(ticker, module)` ids of a [`pack`]ed key.
pub(crate) fn unpack(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// The model's belief about the cache: when each key's copy expires.
#[derive(Debug)]
pub(crate) struct CacheView {
    ttls: CacheTtls,
    /// TTL by module id (0: not resolved yet); cleared when module ids are recycled.
    by_module: Vec<u32>,
    /// Believed copies of keys fetched or warmed.
    copies: HashMap<u64, Copy, IdHash>,
    /// The previous tick, for the refresh lead.
    last_tick: Option<u32>,
    /// Seconds until the next tick, as the last two ticks were apart.
    pub lead: u32,
    /// Event time of the latest `hit: true` (see [`TRUST_HITS_S`]).
    hit_seen: Option<u32>,
    /// Echoes of periodic keys to come whose copy would not serve them (`cycle.rs`).
    pub echoes: Echoes,
}

impl CacheView {
    pub fn new(ttls: CacheTtls) -> Self {
        Self {
            ttls,
            by_module: Vec::new(),
            copies: HashMap::default(),
            last_tick: None,
            lead: 5,
            hit_seen: None,
            echoes: Echoes::default(),
        }
    }

    /// Resolves (and remembers) the TTL of module id `mid` named `name`.
    pub fn resolve(&mut self, mid: u32, name: &str) -> u32 {
        let i = mid as usize;
        if self.by_module.len() <= i {
            self.by_module.resize(i + 1, 0);
        }
        if self.by_module[i] == 0 {
            self.by_module[i] = self.ttls.for_module(name);
        }
        self.by_module[i]
    }

    /// The longest TTL any module can get (bounds what a warm can serve, `lazy.rs`).
    pub fn max_ttl(&self) -> u32 {
        let most = self.ttls.per_module.values().copied().max().unwrap_or(0);
        most.max(self.ttls.default_s).clamp(1, u64::from(u32::MAX / 2)) as u32
    }

    /// The most seconds a warm of a key of module `mid` (named `name`) can serve, now or later:
    /// its resolved TTL, or, while unresolved, the larger of its own and the default.
    pub fn ttl_bound(&self, mid: u32, name: Option<&Module>) -> u32 {
        match self.by_module.get(mid as usize) {
            Some(&t) if t > 0 => t,
            _ => {
                name.map_or(self.max_ttl(), |n| self.ttls.for_module(n.as_str())).max(self.ttl(mid))
            }
        }
    }

    /// The TTL of a module id already resolved (the default otherwise).
    pub fn ttl(&self, mid: u32) -> u32 {
        match self.by_module.get(mid as usize) {
            Some(&t) if t > 0 => t,
            _ => self.ttls.default_s.clamp(1, u64::from(u32::MAX / 2)) as u32,
        }
    }

    /// A query of the key at `t`: a miss was fetched on demand; a hit on a key believed gone
    /// shows the view missed a fetch. While the producer's flags are not trusted
    /// ([`TRUST_HITS_S`]) a miss on a copy believed live counts as a hit. Returns what the
    /// query was to the view (see [`Observed`]).
    pub fn observe(
        &mut self,
        tid: u32,
        mid: u32,
        module: &str,
        (t, ms): (u32, u16),
        hit: bool,
    ) -> Observed {
        let ttl = self.resolve(mid, module);
        if hit {
            self.hit_seen = Some(self.hit_seen.map_or(t, |h| h.max(t)));
        }
        let trusted = self.trusts_hits(t);
        let c = self.copies.entry(pack(tid, mid)).or_default();
        let hit = hit || (!trusted && c.expires > t);
        // Without warming, a query after the copy's expiry fetches and starts a new copy. (A
        // warm shifts fetches as well as saving them: a warmed copy that expires before the
        // one a later miss would have made leaves a miss no-warming would not have had, so
        // counting first hits on warms alone overstated the calls of no warming by a fifth.)
        let bare = (t, ms) >= (c.bare, c.bare_ms);
        if bare {
            (c.bare, c.bare_ms) = (t.saturating_add(ttl), ms);
        }
        let mut o = Observed { bare, ..Default::default() };
        if !hit {
            o.demand = true;
            // (`..*c` below keeps the shadow of no warming: a fetch of ours does not move it.)
            if t.saturating_add(ttl) > c.expires {
                *c = Copy {
                    fetched: t,
                    expires: t.saturating_add(ttl),
                    queries: 1,
                    proves_from: PROVEN,
                    warm_cell: 0,
                    ..*c
                };
            }
        } else if c.expires <= t {
            *c = Copy {
                fetched: t,
                expires: t.saturating_add(1),
                queries: 1,
                proves_from: PROVEN,
                warm_cell: 0,
                ..*c
            };
        } else {
            // The first hit on a warmed copy once the copy it replaced would have expired: the
            // warm saved the demand fetch that hit would have been. A hit before that was the
            // old copy's to serve, and a refresh that nobody queries past it saved nothing.
            o.useful = t >= c.proves_from;
            if o.useful {
                c.proves_from = PROVEN;
                o.used_cell = c.warm_cell.checked_sub(1);
                c.warm_cell = 0;
            }
            c.queries = c.queries.saturating_add(1);
            // (Not while a refresh is deferred: the warmer would skip a second one.)
            o.refresh = (c.fetched <= t && c.expires - t <= HIT_LEAD_S).then_some(c.expires);
        }
        // The key's next poll, if it has a period, waits on the wheel unless the copy it has
        // now will serve it.
        let echo = c.cycle.observe(t);
        let period = c.cycle.period().unwrap_or(0);
        if let Some(e) = echo.filter(|&e| c.expires <= e.saturating_add(tolerance(period))) {
            self.echoes.push(e, pack(tid, mid));
        }
        o
    }

    /// Whether the producer's hit flags are believed at `t` (a `hit: true` within
    /// [`TRUST_HITS_S`]).
    pub fn trusts_hits(&self, t: u32) -> bool {
        self.hit_seen.is_some_and(|h| t <= h.saturating_add(TRUST_HITS_S))
    }

    /// The key was (assumed) warmed at `t`, by a warm of [`crate::usefulness`] cell `cell`.
    ///
    /// (The lazy tick's score bounds rely on a copy's `queries` growing only with the key's own
    /// events, folded through `Model::record`; see `lazy.rs`.)
    ///
    /// A warm of a key whose copy is live is a refresh, which the warmer defers to
    /// [`REFRESH_LEAD`](crate::policy::REFRESH_LEAD) before that copy expires
    /// ([`Decision::WarmAt`](crate::policy::Decision::WarmAt)): the new copy is fetched then,
    /// not at `t`. A second warm while one is pending changes nothing (the warmer finds the
    /// first one's copy fresh when the second one's time comes).
    pub fn warmed(&mut self, tid: u32, mid: u32, t: u32, cell: u8) {
        let ttl = self.ttl(mid);
        let c = self.copies.entry(pack(tid, mid)).or_default();
        if c.fetched > t {
            return;
        }
        let lead = crate::policy::REFRESH_LEAD.num_seconds() as u32;
        let fetched = if c.expires > t { c.expires.saturating_sub(lead).max(t) } else { t };
        let proves_from = match *c {
            // A refresh of a warm nobody has proven yet proves from where that one did.
            Copy { expires, proves_from, .. } if expires > t && proves_from != PROVEN => {
                proves_from
            }
            Copy { expires, .. } => expires.max(t),
        };
        *c = Copy {
            fetched,
            expires: fetched.saturating_add(ttl),
            queries: 0,
            proves_from,
            warm_cell: cell.saturating_add(1),
            ..*c
        };
    }

    /// Sets the believed copy of a key read back from a snapshot (`snapshot.rs`).
    pub(crate) fn restore_copy(&mut self, tid: u32, mid: u32, c: Copy) {
        self.copies.insert(pack(tid, mid), c);
    }

    /// Keys with a believed copy.
    #[cfg(test)]
    pub fn copies_len(&self) -> usize {
        self.copies.len()
    }

    /// Believed copy of the key, if it was ever fetched.
    pub fn copy(&self, tid: u32, mid: u32) -> Option<Copy> {
        self.copies.get(&pack(tid, mid)).copied()
    }

    /// Believed expiry of the key, if it was ever fetched.
    pub fn expires(&self, tid: u32, mid: u32) -> Option<u32> {
        self.copy(tid, mid).map(|c| c.expires)
    }

    /// Whether a follow-up of the key at `t` is worth warming: no copy, or one expiring within
    /// [`FOLLOW_UP_LEAD_S`] (the others are held back; the ones published are noted as warmed
    /// once the budget admits them: `budget.rs`).
    pub fn wants_follow_up(&self, tid: u32, mid: u32, t: u32) -> bool {
        self.expires(tid, mid).is_none_or(|e| e <= t.saturating_add(FOLLOW_UP_LEAD_S))
    }

    /// Starts a tick at `now`: updates the lead from the spacing of ticks.
    pub fn tick(&mut self, now: u32) {
        if let Some(prev) = self.last_tick {
            if now > prev {
                self.lead = (now - prev).min(MAX_LEAD_S);
            }
        }
        self.last_tick = Some(now);
    }

    /// For a key due for a warm at `now` — no copy, or one expiring before the next tick — the
    /// seconds a copy stored now would serve that the current one does not; `None` when the
    /// current copy outlives the next tick.
    pub fn due(&self, tid: u32, mid: u32, now: u32) -> Option<Due> {
        let ttl = self.ttl(mid);
        match self.copy(tid, mid) {
            Some(c) if c.expires > now.saturating_add(self.lead) => None,
            Some(c) => Some(Due {
                window: now.saturating_add(ttl).saturating_sub(c.expires.max(now)).max(1),
                age: now.saturating_sub(c.fetched),
                queries: c.queries,
            }),
            None => Some(Due { window: ttl, age: 0, queries: 0 }),
        }
    }

    /// Forgets expiries long past and everything about recycled ids. Returns the `(ticker,
    /// module)` ids of the copies forgotten (the lazy tick takes their bounds again).
    pub fn sweep(
        &mut self,
        now: u32,
        freed_tickers: &[bool],
        freed_modules: &[bool],
    ) -> Vec<(u32, u32)> {
        let freed = |v: &[bool], id: u32| v.get(id as usize).copied().unwrap_or(false);
        let mut gone = Vec::new();
        // A copy long gone still carries evidence (its queries over its age) until a day passes.
        self.copies.retain(|&k, c| {
            let keep = c.expires.saturating_add(86_400) > now
                && !freed(freed_tickers, (k >> 32) as u32)
                && !freed(freed_modules, k as u32);
            if !keep {
                gone.push(((k >> 32) as u32, k as u32));
            }
            keep
        });
        // Only recycled ids lose their TTL: a live module's stays resolved, which the lazy
        // tick's bounds rely on (`ttl_bound`).
        for (t, _) in self.by_module.iter_mut().zip(freed_modules).filter(|(_, &f)| f) {
            *t = 0;
        }
        gone
    }
}

impl Model {
    /// The refresh-on-hit candidate for the key in `slot`, just hit at `t` on a copy expiring
    /// at `expires`: one when a copy stored now would likely serve a query after the current
    /// one expires (published, and noted as warmed, only if the budget admits it: `budget.rs`).
    pub(crate) fn refresh_on_hit(
        &self,
        slot: u32,
        t: u32,
        expires: u32,
    ) -> Option<crate::budget::Candidate> {
        if !self.s.enabled {
            return None;
        }
        let k = self.keys.slot(slot)?;
        let view = self.cache.as_ref()?;
        let horizon = self.s.horizon;
        let copy = view.copy(k.ticker, k.module).unwrap_or_default();
        let due = Due {
            window: t.saturating_add(view.ttl(k.module)).saturating_sub(expires).max(1),
            age: t.saturating_sub(copy.fetched),
            queries: copy.queries,
        };
        let (_, weight, class) = self.hour_context(t);
        let has_season =
            self.season.is_some_and(|s| s.frame.observed()) && k.season_epoch == self.season_epoch;
        // The key was just queried, so its idle time is the minimum (1 s), as in a tick.
        let seasonal = has_season.then_some(f64::from(k.season));
        let rates = Rates::of(k, t, (self.tau_fast, self.tau_slow), seasonal);
        let score::Score { reason, raw, lambda } = score::score(rates, weight, horizon);
        let p = score::serve_probability(self.calibrator.map(class, raw), raw, lambda, due);
        if p < self.s.min_confidence {
            return None;
        }
        Some(crate::budget::Candidate { ticker: k.ticker, module: k.module, confidence: p, reason })
    }

    /// Turns on refresh-ahead with the cache's TTLs (see the module docs of `refresh.rs`): from
    /// now on a tick publishes the keys whose warm now is most likely to serve a query — no
    /// cached copy, or one expiring before the next tick — with that probability as the
    /// confidence, and follow-ups of keys believed fresh are held back. Call it again when the
    /// TTLs change; the view of the cache is kept.
    pub fn set_cache_ttls(&mut self, ttls: CacheTtls) {
        self.schedule.invalidate();
        match &mut self.cache {
            Some(view) => {
                view.ttls = ttls;
                view.by_module.clear();
            }
            None => self.cache = Some(CacheView::new(ttls)),
        }
    }
}

#[cfg(test)]
mod tests;
