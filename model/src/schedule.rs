//! What lets a tick visit only the keys that need it (see `lazy.rs`): a max-heap of score upper
//! bounds, a parking wheel for keys whose cached copy is fresh, a bucket-expiry wheel, a
//! calibration-resolution wheel, and a ring of keys by sampling phase and calibration-panel
//! level (a tick visits only the panel's lists: `calibration.rs`).
//!
//! Every structure refers to keys by slot. A slot's entries carry the slot's generation, bumped
//! whenever the key changes (an event, a removal), so stale entries are skipped when met instead
//! of searched for. Slot numbers change when the key table compacts; the schedule is then
//! [invalidated](Schedule::invalidate) and the next tick rebuilds it with one full walk.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

/// Ring buckets of sampling phases (at most one per second of the horizon).
const RING: u32 = 1_024;

/// One key's score upper bound, valid until the key's next event.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Upper bound of the key's unweighted intensity times `1 + queries` of its copy (times one
    /// without a cache view); see `Model::bound_scalar`.
    pub bound: f64,
    pub slot: u32,
    generation: u32,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bound.total_cmp(&other.bound).then(other.slot.cmp(&self.slot))
    }
}

/// The sampling phase of a key, seconds in `[0, horizon)`: each key opens its calibration
/// sample when event time crosses a multiple of the horizon shifted by its phase, so the keys'
/// samples open spread over the horizon instead of all on one tick.
pub(crate) fn phase(ticker: u32, module: u32, horizon: u32) -> u32 {
    let x = ((u64::from(ticker) << 32) | u64::from(module)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 32) % u64::from(horizon.max(1))) as u32
}

/// Levels of the calibration panel: a key's level is the count of leading zeros of a hash of
/// the key, capped at `LEVELS − 1`, so a share `2^−k` of the keys has level `k` or more.
pub(crate) const LEVELS: u32 = 16;

/// Most keys that sample calibration per horizon (see [`panel_level`]). Above it a tick opened
/// and resolved samples of `2/5` of the live keys at the default 300 s horizon and 60 s ticks:
/// 31,700 of its 36,400 key visits at 82k keys (BENCHMARKS.md, "Tick cost").
pub(crate) const PANEL_KEYS: usize = 8_192;

/// The panel level of a key (see [`LEVELS`]): a hash of its ids, independent of its traffic,
/// so the panel is a uniform draw of the keys and calibrating on it alone stays unbiased.
pub(crate) fn level(ticker: u32, module: u32) -> u32 {
    // splitmix64's finaliser: every input bit moves every output bit.
    let mut x = ((u64::from(ticker) << 32) | u64::from(module)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    x.leading_zeros().min(LEVELS - 1)
}

/// The least level a key needs to sample calibration when `live` keys are live and the panel
/// holds at most `panel` keys: the smallest `k` with `live / 2^k ≤ panel` (0 — every key — up
/// to `panel` keys), so the samples opened per horizon stay about `panel` however many keys
/// there are.
pub(crate) fn panel_level(live: usize, panel: usize) -> u32 {
    let mut k = 0;
    while k < LEVELS - 1 && (live >> k) > panel {
        k += 1;
    }
    k
}

/// Where a key samples calibration: its phase over the horizon and its panel level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sampling {
    pub phase: u32,
    pub level: u32,
}

impl Sampling {
    /// The sampling phase and panel level of the key `(ticker, module)`.
    pub fn of(ticker: u32, module: u32, horizon: u32) -> Self {
        Self { phase: phase(ticker, module, horizon), level: level(ticker, module) }
    }
}

/// Whether a key of phase `phase` crosses a sampling point in `(prev, now]` (always on the
/// first tick, `prev = None`).
pub(crate) fn crossed(prev: Option<u32>, now: u32, phase: u32, horizon: u32) -> bool {
    let h = u64::from(horizon.max(1));
    prev.is_none_or(|p| {
        (u64::from(p) + u64::from(phase)) / h != (u64::from(now) + u64::from(phase)) / h
    })
}

/// The lazy tick's index of live keys (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    /// False until a full walk builds it, and after anything that renumbers or rewrites keys.
    valid: bool,
    generation: Vec<u32>,
    heap: BinaryHeap<Entry>,
    /// Keys whose copy outlives the next tick, by the time they may be due.
    parked: BTreeMap<u32, Vec<Entry>>,
    parked_len: usize,
    /// Keys by a bucket index at or before their oldest bucket.
    expiry: BTreeMap<u32, Vec<u32>>,
    /// Keys with an open calibration sample, by the time it resolves as a miss.
    resolve: BTreeMap<u32, Vec<u32>>,
    /// Keys by sampling phase (`RING` buckets over the horizon) and panel level: list
    /// `r · LEVELS + level`.
    ring: Vec<Vec<u32>>,
    horizon: u32,
    /// Keys changed since the last tick.
    dirty: Vec<u32>,
    /// The rate scale `c₀` bounds with a cache view are stored at (`lazy::bound_scalar`): the
    /// calibration gain times the hour weight when the index was built (both are constant
    /// within a seasonal frame, or nearly, so `max(1, c/c₀)` stays near 1).
    pub scale: f64,
    /// What the ticks visited (kept across rebuilds).
    pub visits: TickVisits,
    /// Most keys of the calibration panel, when not [`PANEL_KEYS`] (tests take fewer, so a
    /// few thousand keys exercise it).
    panel_keys: Option<usize>,
}

/// Running totals of the keys ticks visited, by why (`Model::tick_visits`): what a tick costs
/// follows these, not the live keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickVisits {
    /// Ticks served from the index.
    pub lazy_ticks: u64,
    /// Ticks that walked every live key (the first, a new seasonal frame, a renumbering).
    pub walks: u64,
    /// Keys the walks visited.
    pub walked: u64,
    /// Keys the lazy ticks visited because they had new events.
    pub dirty: u64,
    /// … because a bucket of theirs left the retention window.
    pub expiring: u64,
    /// … because their calibration sample reached the end of the horizon.
    pub resolving: u64,
    /// … because their sampling point passed.
    pub opening: u64,
    /// Bounds popped (keys scored for ranking).
    pub popped: u64,
}

impl Schedule {
    /// Whether the next tick can use the index (else it walks every key and rebuilds it).
    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The least panel level that samples calibration with `live` keys live ([`panel_level`]).
    pub fn panel_level(&self, live: usize) -> u32 {
        panel_level(live, self.panel_keys.unwrap_or(PANEL_KEYS))
    }

    /// Sets the most keys of the calibration panel (tests).
    #[cfg(test)]
    pub fn set_panel_keys(&mut self, n: usize) {
        self.panel_keys = Some(n);
    }

    /// Drops the index: the next tick walks every key.
    pub fn invalidate(&mut self) {
        if self.valid {
            *self = Self { visits: self.visits, panel_keys: self.panel_keys, ..Self::default() };
        }
    }

    /// Starts a rebuild for `slots` slots, a horizon of `horizon` seconds, and bounds stored at
    /// the rate scale `scale` (positive).
    pub fn rebuild(&mut self, slots: usize, horizon: u32, scale: f64) {
        let generation = std::mem::take(&mut self.generation);
        let (visits, panel_keys) = (self.visits, self.panel_keys);
        *self = Self { valid: true, generation, horizon, visits, panel_keys, ..Self::default() };
        self.generation.resize(slots, 0);
        self.ring = vec![Vec::new(); (RING.min(horizon.max(1)) * LEVELS) as usize];
        self.scale = scale;
    }

    /// Ring buckets over the horizon.
    fn buckets(&self) -> usize {
        self.ring.len() / LEVELS as usize
    }

    /// The ring bucket of a phase.
    fn bucket_of(&self, phase: u32) -> usize {
        (u64::from(phase) * self.buckets() as u64 / u64::from(self.horizon.max(1))) as usize
    }

    /// The ring list of a key.
    fn ring_of(&self, at: Sampling) -> usize {
        self.bucket_of(at.phase) * LEVELS as usize + at.level as usize
    }

    /// Adds a key to the index: its bound, its oldest bucket, its sampling phase and level, its
    /// open sample's resolution time (if any).
    pub fn add(
        &mut self,
        slot: u32,
        bound: f64,
        first: Option<u32>,
        at: Sampling,
        resolves: Option<u32>,
    ) {
        if let Some(b) = first {
            self.expiry.entry(b).or_default().push(slot);
        }
        let r = self.ring_of(at);
        self.ring[r].push(slot);
        if let Some(at) = resolves {
            self.resolve.entry(at).or_default().push(slot);
        }
        self.push(slot, bound);
    }

    /// A key changed at `slot` (an event folded): `created` when the slot is new, `first` when
    /// its oldest bucket moved earlier (or was created).
    pub fn touched(&mut self, slot: u32, created: Option<Sampling>, first: Option<u32>) {
        if !self.valid {
            return;
        }
        let s = slot as usize;
        if self.generation.len() <= s {
            self.generation.resize(s + 1, 0);
        }
        self.generation[s] = self.generation[s].wrapping_add(1);
        self.dirty.push(slot);
        if let Some(at) = created {
            let r = self.ring_of(at);
            self.ring[r].push(slot);
        }
        if let Some(b) = first {
            self.expiry.entry(b).or_default().push(slot);
        }
    }

    /// The key at `slot` is gone: its entries are stale from now on.
    pub fn removed(&mut self, slot: u32) {
        if let Some(g) = self.generation.get_mut(slot as usize) {
            *g = g.wrapping_add(1);
        }
    }

    /// Keys changed since the last tick, ascending, each once.
    pub fn take_dirty(&mut self) -> Vec<u32> {
        let mut d = std::mem::take(&mut self.dirty);
        d.sort_unstable();
        d.dedup();
        d
    }

    /// Keys whose entry bucket is before `oldest`, ascending, each once.
    pub fn take_expiring(&mut self, oldest: u32) -> Vec<u32> {
        drain_before(&mut self.expiry, oldest)
    }

    /// Notes that the key's oldest bucket is now `bucket`.
    pub fn expire_at(&mut self, bucket: u32, slot: u32) {
        self.expiry.entry(bucket).or_default().push(slot);
    }

    /// Keys whose sample may resolve at `now`, ascending, each once.
    pub fn take_resolving(&mut self, now: u32) -> Vec<u32> {
        drain_before(&mut self.resolve, now.saturating_add(1))
    }

    /// Notes a sample opened that resolves at `at`.
    pub fn resolve_at(&mut self, at: u32, slot: u32) {
        self.resolve.entry(at).or_default().push(slot);
    }

    /// Keys of panel level `level` or more whose phase may cross a sampling point in
    /// `(prev, now]`, each once (callers check the exact phase). `sampling_of` gives a live
    /// slot's phase and level, `None` for a free one; entries of removed or moved keys are
    /// dropped. Its cost follows the panel, not the live keys.
    pub fn crossing(
        &mut self,
        prev: u32,
        now: u32,
        level: u32,
        sampling_of: impl Fn(u32) -> Option<Sampling>,
    ) -> Vec<u32> {
        let (h, n) = (self.horizon.max(1), self.buckets());
        let d = now.saturating_sub(prev);
        let buckets: Vec<usize> = if d == 0 {
            Vec::new()
        } else if d >= h {
            (0..n).collect()
        } else {
            // Phases φ with (now + φ) mod h < d: the cyclic interval [start, start + d).
            let start = (h - now % h) % h;
            let (a, b) = (self.bucket_of(start), self.bucket_of((start + d - 1) % h));
            if a <= b && (start + d - 1) < h {
                (a..=b).collect()
            } else {
                (a..n).chain(0..=b).collect()
            }
        };
        let mut out = Vec::new();
        for r in buckets {
            for l in level.min(LEVELS - 1)..LEVELS {
                let i = r * LEVELS as usize + l as usize;
                let mut list = std::mem::take(&mut self.ring[i]);
                list.sort_unstable();
                list.dedup();
                list.retain(|&slot| sampling_of(slot).is_some_and(|at| self.ring_of(at) == i));
                out.extend_from_slice(&list);
                self.ring[i] = list;
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Queues the key's bound, valid until its next event.
    pub fn push(&mut self, slot: u32, bound: f64) {
        let generation = self.generation.get(slot as usize).copied().unwrap_or(0);
        self.heap.push(Entry { bound, slot, generation });
    }

    /// Parks the key's bound until `until` (its copy is fresh until then).
    pub fn park(&mut self, entry: Entry, until: u32) {
        self.parked.entry(until).or_default().push(entry);
        self.parked_len += 1;
    }

    /// Returns keys parked until `now` or earlier to the heap.
    pub fn unpark(&mut self, now: u32) {
        while let Some(e) = self.parked.first_entry() {
            if *e.key() > now {
                break;
            }
            let list = e.remove();
            self.parked_len -= list.len();
            let generation = &self.generation;
            self.heap.extend(
                list.into_iter().filter(|e| generation.get(e.slot as usize) == Some(&e.generation)),
            );
        }
    }

    fn is_current(&self, e: &Entry) -> bool {
        self.generation.get(e.slot as usize) == Some(&e.generation)
    }

    /// The best current bound (stale entries on top are dropped).
    pub fn peek(&mut self) -> Option<Entry> {
        while let Some(&top) = self.heap.peek() {
            if self.is_current(&top) {
                return Some(top);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes the best entry (call after `peek`).
    pub fn pop(&mut self) -> Option<Entry> {
        self.visits.popped += 1;
        self.heap.pop()
    }

    /// A popped key's entry with a new bound (same generation: the key did not change).
    pub fn requeue(&mut self, e: Entry, bound: f64) -> Entry {
        Entry { bound, ..e }
    }

    /// Puts requeued entries back.
    pub fn extend(&mut self, entries: Vec<Entry>) {
        self.heap.extend(entries);
    }

    /// Drops stale entries once they outnumber live keys, so the heap stays O(live keys).
    pub fn trim(&mut self, live: usize) {
        if self.heap.len() + self.parked_len > 2 * live + 1_024 {
            let generation = &self.generation;
            self.heap.retain(|e| generation.get(e.slot as usize) == Some(&e.generation));
            for list in self.parked.values_mut() {
                list.retain(|e| generation.get(e.slot as usize) == Some(&e.generation));
            }
            self.parked.retain(|_, l| !l.is_empty());
            self.parked_len = self.parked.values().map(Vec::len).sum();
        }
    }
}

/// Removes every list keyed before `end` and returns their slots, ascending, each once.
fn drain_before(map: &mut BTreeMap<u32, Vec<u32>>, end: u32) -> Vec<u32> {
    let mut out = Vec::new();
    while let Some(e) = map.first_entry() {
        if *e.key() >= end {
            break;
        }
        out.extend(e.remove());
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
impl Schedule {
    /// Keys waiting for a fresh bound, for checks.
    pub fn pending(&self) -> &[u32] {
        &self.dirty
    }

    /// Current entries (heap and parked), for checks.
    pub fn current(&self) -> Vec<Entry> {
        self.heap
            .iter()
            .chain(self.parked.values().flatten())
            .filter(|e| self.is_current(e))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests;
