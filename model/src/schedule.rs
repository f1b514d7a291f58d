//! What lets a tick visit only the keys that need it (see `lazy.rs`): a max-heap of score upper
//! bounds, a parking wheel for keys whose cached copy is fresh, a bucket-expiry wheel, a
//! calibration-resolution wheel, and a ring of keys by sampling phase.
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
    /// Keys by sampling phase (`RING` buckets over the horizon).
    ring: Vec<Vec<u32>>,
    horizon: u32,
    /// Keys changed since the last tick.
    dirty: Vec<u32>,
    /// Largest `(1 + queries)·TTL` any bound was taken with.
    pub max_factor: f64,
    /// What the ticks visited (kept across rebuilds).
    pub visits: TickVisits,
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

    /// Drops the index: the next tick walks every key.
    pub fn invalidate(&mut self) {
        if self.valid {
            *self = Self { visits: self.visits, ..Self::default() };
        }
    }

    /// Starts a rebuild for `slots` slots and a horizon of `horizon` seconds.
    pub fn rebuild(&mut self, slots: usize, horizon: u32) {
        let generation = std::mem::take(&mut self.generation);
        let visits = self.visits;
        *self = Self { valid: true, generation, horizon, visits, ..Self::default() };
        self.generation.resize(slots, 0);
        self.ring = vec![Vec::new(); RING.min(horizon.max(1)) as usize];
        self.max_factor = 1.0;
    }

    fn ring_of(&self, phase: u32) -> usize {
        (u64::from(phase) * self.ring.len() as u64 / u64::from(self.horizon.max(1))) as usize
    }

    /// Adds a key to the index: its bound, its oldest bucket, its phase, its open sample's
    /// resolution time (if any).
    pub fn add(
        &mut self,
        slot: u32,
        bound: f64,
        first: Option<u32>,
        phase: u32,
        resolves: Option<u32>,
    ) {
        if let Some(b) = first {
            self.expiry.entry(b).or_default().push(slot);
        }
        let r = self.ring_of(phase);
        self.ring[r].push(slot);
        if let Some(at) = resolves {
            self.resolve.entry(at).or_default().push(slot);
        }
        self.push(slot, bound);
    }

    /// A key changed at `slot` (an event folded): `created` when the slot is new, `first` when
    /// its oldest bucket moved earlier (or was created).
    pub fn touched(&mut self, slot: u32, created: Option<u32>, first: Option<u32>) {
        if !self.valid {
            return;
        }
        let s = slot as usize;
        if self.generation.len() <= s {
            self.generation.resize(s + 1, 0);
        }
        self.generation[s] = self.generation[s].wrapping_add(1);
        self.dirty.push(slot);
        if let Some(phase) = created {
            let r = self.ring_of(phase);
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

    /// Keys whose phase may cross a sampling point in `(prev, now]`, each once (callers check
    /// the exact phase). `phase_of` gives a live slot's phase, `None` for a free one; entries of
    /// removed or moved keys are dropped.
    pub fn crossing(
        &mut self,
        prev: u32,
        now: u32,
        phase_of: impl Fn(u32) -> Option<u32>,
    ) -> Vec<u32> {
        let (h, n) = (self.horizon.max(1), self.ring.len());
        let d = now.saturating_sub(prev);
        let buckets: Vec<usize> = if d == 0 {
            Vec::new()
        } else if d >= h {
            (0..n).collect()
        } else {
            // Phases φ with (now + φ) mod h < d: the cyclic interval [start, start + d).
            let start = (h - now % h) % h;
            let (a, b) = (self.ring_of(start), self.ring_of((start + d - 1) % h));
            if a <= b && (start + d - 1) < h {
                (a..=b).collect()
            } else {
                (a..n).chain(0..=b).collect()
            }
        };
        let mut out = Vec::new();
        for r in buckets {
            let mut list = std::mem::take(&mut self.ring[r]);
            list.sort_unstable();
            list.dedup();
            list.retain(|&slot| phase_of(slot).is_some_and(|p| self.ring_of(p) == r));
            out.extend_from_slice(&list);
            self.ring[r] = list;
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Notes the copy factors a bound was taken with (`lazy::copy_factors`).
    pub fn note_factors(&mut self, factors: Option<(u32, u32)>) {
        if let Some((q, ttl)) = factors {
            self.max_factor = self.max_factor.max((1.0 + f64::from(q)) * f64::from(ttl));
        }
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
mod tests {
    use super::*;

    #[test]
    fn crossing_finds_exactly_the_phases_whose_point_passed() {
        let h = 300;
        for (prev, now) in [(1_000, 1_005), (1_000, 1_060), (1_299, 1_301), (7, 7), (0, 5_000)] {
            let mut s = Schedule::default();
            s.rebuild(h as usize, h);
            for slot in 0..h {
                s.add(slot, 0.0, None, slot, None);
            }
            let got = s.crossing(prev, now, Some);
            let want: Vec<u32> = (0..h).filter(|&p| crossed(Some(prev), now, p, h)).collect();
            assert!(want.iter().all(|p| got.contains(p)), "{prev}..{now}: {want:?} ⊄ {got:?}");
            // Whole ring buckets are returned, never far more than the phases that crossed.
            assert!(got.len() <= want.len() + 2, "{prev}..{now}: {} vs {}", got.len(), want.len());
        }
    }

    #[test]
    fn stale_and_parked_entries_come_back_only_when_current() {
        let mut s = Schedule::default();
        s.rebuild(4, 300);
        s.push(0, 5.0);
        s.push(1, 3.0);
        s.touched(0, None, None); // key 0 changed: its entry is stale
        s.push(0, 1.0);
        assert_eq!(s.peek().map(|e| e.slot), Some(1));
        let e = s.pop().unwrap();
        s.park(e, 100);
        assert_eq!(s.peek().map(|e| (e.slot, e.bound)), Some((0, 1.0)));
        s.unpark(99);
        assert_eq!(s.peek().map(|e| e.slot), Some(0));
        s.unpark(100);
        assert_eq!(s.peek().map(|e| e.slot), Some(1));
        s.removed(1);
        assert_eq!(s.peek().map(|e| e.slot), Some(0));
        assert_eq!(s.take_dirty(), vec![0]);
        s.expire_at(9, 3);
        s.expire_at(5, 2);
        s.expire_at(5, 3);
        assert_eq!(s.take_expiring(9), vec![2, 3]);
        assert_eq!(s.take_expiring(10), vec![3]);
    }
}
