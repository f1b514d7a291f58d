//! The simulated cache and what it counts.
//!
//! Semantics (the whole of them): a key is `(ticker, module)`; a fetch stores the key until
//! fetch time + the module's TTL; a query at `t` hits when its key is stored with expiry `> t`,
//! else it misses and the miss fetches on demand; a warm fetches at its timestamp, also when
//! the key is still stored (a refresh). A warm is *useful* when the copy it stored serves at
//! least one hit before the next fetch of the key replaces it.

use serde::Serialize;

/// Expiry of a key never fetched.
const NEVER: i64 = i64::MIN;

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Epoch ms the stored copy expires at, or [`NEVER`].
    expires: i64,
    /// The stored copy came from a warm that has not served a hit yet.
    unproven_warm: bool,
    /// For a warmed copy, its [`Reliability`] cell until a hit proves it ([`NO_CELL`] else).
    cell: u8,
    /// From when a hit proves the warm: the expiry of the copy it replaced, if that was live.
    proves_from: i64,
}

/// No [`Reliability`] cell.
const NO_CELL: u8 = u8::MAX;

/// Warms by confidence tenth (and any label the caller gives, e.g. the reason), and those that
/// proved useful: a hit on the copy the warm stored that the copy it replaced (if any) could
/// not have served — the hits the warm added, which is what its confidence estimates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reliability {
    /// `[warms, useful]` by `label * 10 + tenth`.
    pub cells: Vec<[u64; 2]>,
}

impl Reliability {
    /// The cell of a warm with `confidence` and `label` (< 25).
    pub fn cell(label: u8, confidence: f64) -> u8 {
        let tenth = (confidence.clamp(0.0, 0.999_999) * 10.0) as u8;
        label.min(24) * 10 + tenth
    }
}

/// What a strategy's replay did, in the terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Queries replayed.
    pub queries: u64,
    /// Queries the cache answered.
    pub hits: u64,
    /// `hits / queries`.
    pub hit_rate: f64,
    /// Warm fetches.
    pub warms: u64,
    /// Misses plus warms: every call to the upstream.
    pub upstream_fetches: u64,
    /// Warms whose copy served at least one hit, over warms (0 with no warms).
    pub warm_precision: f64,
    /// Warms whose copy served at least one hit.
    pub useful_warms: u64,
}

/// The cache of one replay, indexed by trace key id.
#[derive(Debug, Clone)]
pub struct SimCache {
    slots: Vec<Slot>,
    ttl_ms: Vec<i64>,
    tally: Tally,
    reliability: Reliability,
}

impl SimCache {
    /// An empty cache; `ttl_ms[k]` is the TTL of key `k`'s module.
    pub fn new(ttl_ms: Vec<i64>) -> Self {
        Self {
            slots: vec![
                Slot {
                    expires: NEVER,
                    unproven_warm: false,
                    cell: NO_CELL,
                    proves_from: NEVER
                };
                ttl_ms.len()
            ],
            ttl_ms,
            tally: Tally::default(),
            reliability: Reliability { cells: vec![[0; 2]; 250] },
        }
    }

    /// Serves a query of `key` at `t` (epoch ms); returns whether it hit. A miss fetches.
    pub fn query(&mut self, key: u32, t: i64) -> bool {
        let ttl = self.ttl_ms[key as usize];
        let s = &mut self.slots[key as usize];
        self.tally.queries += 1;
        if s.expires > t {
            self.tally.hits += 1;
            if s.unproven_warm {
                s.unproven_warm = false;
                self.tally.useful_warms += 1;
            }
            if s.cell != NO_CELL && t >= s.proves_from {
                self.reliability.cells[usize::from(s.cell)][1] += 1;
                s.cell = NO_CELL;
            }
            true
        } else {
            *s = Slot {
                expires: t.saturating_add(ttl),
                unproven_warm: false,
                cell: NO_CELL,
                proves_from: NEVER,
            };
            false
        }
    }

    /// [`SimCache::warm`], counted in `cell` of the [`Reliability`] table.
    pub fn warm_in(&mut self, key: u32, t: i64, cell: u8) {
        let s = self.slots[key as usize];
        let proves_from = match s.expires {
            e if e > t && s.cell != NO_CELL => s.proves_from,
            e if e > t => e,
            _ => t,
        };
        self.warm(key, t);
        self.reliability.cells[usize::from(cell)][0] += 1;
        let s = &mut self.slots[key as usize];
        s.cell = cell;
        s.proves_from = proves_from;
    }

    /// The warms by cell and the useful ones.
    pub fn reliability(&self) -> &Reliability {
        &self.reliability
    }

    /// Fetches `key` at `t` ahead of demand (stored or not).
    pub fn warm(&mut self, key: u32, t: i64) {
        let ttl = self.ttl_ms[key as usize];
        self.tally.warms += 1;
        self.slots[key as usize] = Slot {
            expires: t.saturating_add(ttl),
            unproven_warm: true,
            cell: NO_CELL,
            proves_from: NEVER,
        };
    }

    /// A warm of a key the trace never queries: an upstream call that cannot serve anything.
    pub fn warm_unknown(&mut self) {
        self.tally.warms += 1;
    }

    /// When `key`'s stored copy expires (epoch ms), if it was ever fetched; past expiries are
    /// returned too, as a real cache's index does until its sweep.
    pub fn expires(&self, key: u32) -> Option<i64> {
        let e = self.slots[key as usize].expires;
        (e != NEVER).then_some(e)
    }

    /// The TTL of `key`, ms.
    pub fn ttl(&self, key: u32) -> i64 {
        self.ttl_ms[key as usize]
    }

    /// The counts so far, with the ratios filled in.
    pub fn tally(&self) -> Tally {
        let t = self.tally;
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Tally {
            hit_rate: ratio(t.hits, t.queries),
            upstream_fetches: t.queries - t.hits + t.warms,
            warm_precision: ratio(t.useful_warms, t.warms),
            ..t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_misses_ttl_edge_and_refresh() {
        let mut c = SimCache::new(vec![60_000, 300_000]);
        assert!(!c.query(0, 1_000), "never fetched: miss");
        assert!(c.query(0, 60_999), "stored until 61 000");
        assert!(!c.query(0, 61_000), "expiry is exclusive: a query at the expiry misses");
        // A warm while stored is a refresh: it moves the expiry.
        c.warm(0, 100_000);
        assert!(c.query(0, 159_999));
        assert!(!c.query(0, 160_000));
        // A warm replaced before any hit is not useful.
        c.warm(1, 0);
        c.warm(1, 10_000);
        assert!(c.query(1, 20_000));
        assert!(c.query(1, 30_000), "the second hit does not count the warm twice");
        let t = c.tally();
        assert_eq!((t.queries, t.hits, t.warms, t.useful_warms), (7, 4, 3, 2));
        assert_eq!(t.upstream_fetches, 3 + 3);
        assert!((t.warm_precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.expires(1), Some(310_000));
    }

    #[test]
    fn reliability_counts_the_hits_a_warm_added() {
        let mut c = SimCache::new(vec![60_000]);
        let cell = Reliability::cell(3, 0.95);
        assert_eq!(cell, 39);
        // A warm of a key not stored, queried within its copy's life: used.
        c.warm_in(0, 0, cell);
        assert!(c.query(0, 30_000));
        // A refresh at 40 s of the copy that lives to 60 s: a hit at 50 s was the old copy's;
        // the hit at 70 s is the warm's.
        c.warm_in(0, 40_000, cell);
        assert!(c.query(0, 50_000));
        assert_eq!(c.reliability().cells[39], [2, 1]);
        assert!(c.query(0, 70_000));
        assert_eq!(c.reliability().cells[39], [2, 2]);
        // A refresh nobody queries past the old copy's expiry, then a demand fetch: unused.
        let low = Reliability::cell(0, 0.2);
        c.warm_in(0, 90_000, low);
        assert!(c.query(0, 95_000));
        assert!(!c.query(0, 200_000));
        assert!(c.query(0, 201_000));
        assert_eq!(c.reliability().cells[usize::from(low)], [1, 0]);
    }
}
