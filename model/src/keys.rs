//! Compact identities: interned tickers and modules, and the slot table of live keys.
//!
//! A key is `(ticker id, module id)` packed into a `u64`; its state lives in a dense `Vec` slot so
//! a tick walks memory linearly. Ids are reference-counted by live keys and recycled by
//! [`Interner::sweep`], so neither table outgrows what the retention window holds.

use super::window::KeyState;
use foldhash::fast::{FoldHasher, SeedableRandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::LazyLock;

/// Marks a free slot in [`KeyTable`].
pub(crate) const DEAD: u32 = u32::MAX;

/// The hasher of every map in the model: foldhash, fast on integers and short names alike,
/// with a random seed per process. Tickers, modules and clients are chosen by clients, and an
/// unseeded hash lets anyone craft keys that share one probe chain: 4,096 tickers crafted
/// against the previous unseeded hash cut the interner's lookups from 17.3 M/s to 2.8 M/s,
/// while under this one they run at 34 M/s (random tickers: 37 M/s; BENCHMARKS.md, "Seeded
/// hasher"). One seed for the process, so every map and every `IdHash.build_hasher()` hashes
/// alike within a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHash;

static SEED: LazyLock<SeedableRandomState> = LazyLock::new(SeedableRandomState::random);

/// The hasher [`IdHash`] builds.
#[derive(Clone)]
pub struct IdHasher(FoldHasher<'static>);

impl BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(SEED.build_hasher())
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // foldhash's low bits follow its input's low bits for some seeds: packed keys that
        // differ only in the ticker (the high half) filled 1,092 of 4,096 buckets under one
        // seed. hashbrown indexes buckets by the low bits, so the high half is folded in.
        let h = self.0.finish();
        h ^ (h >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
    fn write_u8(&mut self, x: u8) {
        self.0.write_u8(x);
    }
    fn write_u32(&mut self, x: u32) {
        self.0.write_u32(x);
    }
    fn write_u64(&mut self, x: u64) {
        self.0.write_u64(x);
    }
    fn write_usize(&mut self, x: usize) {
        self.0.write_usize(x);
    }
}

/// Strings (tickers, modules) to small ids and back, with reference counts.
#[derive(Debug)]
pub(crate) struct Interner<T> {
    /// Short validated names (tickers, modules) hashed with [`IdHash`]: SipHash was a visible
    /// share of `record` in the analyzer's profile.
    ids: HashMap<T, u32, IdHash>,
    names: Vec<Option<T>>,
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl<T: Eq + Hash + Clone> Interner<T> {
    pub fn new() -> Self {
        Self { ids: HashMap::default(), names: Vec::new(), refs: Vec::new(), free: Vec::new() }
    }

    /// The id of `v`, if interned.
    pub fn id(&self, v: &T) -> Option<u32> {
        self.ids.get(v).copied()
    }

    /// The id of `v`, interning it if new (with no references yet).
    pub fn intern(&mut self, v: &T) -> u32 {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = Some(v.clone());
                id
            }
            None => {
                self.names.push(Some(v.clone()));
                self.refs.push(0);
                (self.names.len() - 1) as u32
            }
        };
        self.ids.insert(v.clone(), id);
        id
    }

    /// [`Interner::intern`] by the value's text: `make` builds the value only when it is new,
    /// so a known name costs a lookup and no allocation.
    pub fn intern_str(&mut self, s: &str, make: impl FnOnce() -> T) -> u32
    where
        T: std::borrow::Borrow<str>,
    {
        match self.ids.get(s) {
            Some(&id) => id,
            None => self.intern(&make()),
        }
    }

    /// The value behind a live id.
    pub fn name(&self, id: u32) -> Option<&T> {
        self.names.get(id as usize).and_then(Option::as_ref)
    }

    /// Records one more live key using `id`.
    pub fn retain(&mut self, id: u32) {
        if let Some(r) = self.refs.get_mut(id as usize) {
            *r += 1;
        }
    }

    /// Records one fewer live key using `id`.
    pub fn release(&mut self, id: u32) {
        if let Some(r) = self.refs.get_mut(id as usize) {
            *r = r.saturating_sub(1);
        }
    }

    /// Frees every id no live key uses and returns a map `id → freed` sized to the id space, so
    /// callers can purge tables that refer to ids before they are recycled.
    pub fn sweep(&mut self) -> Vec<bool> {
        let mut freed = vec![false; self.names.len()];
        for (id, name) in self.names.iter_mut().enumerate() {
            if self.refs[id] == 0 {
                if let Some(v) = name.take() {
                    self.ids.remove(&v);
                    self.free.push(id as u32);
                    freed[id] = true;
                }
            }
        }
        freed
    }

    /// Live `(id, value)` pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.names.iter().enumerate().filter_map(|(i, n)| n.as_ref().map(|n| (i as u32, n)))
    }

    /// Size of the id space (live and free ids).
    pub fn capacity(&self) -> usize {
        self.names.len()
    }

    /// Live ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Live keys: a hash index from packed ids to dense slots.
#[derive(Debug, Default)]
pub(crate) struct KeyTable {
    index: HashMap<u64, u32, IdHash>,
    slots: Vec<KeyState>,
    free: Vec<u32>,
}

fn pack(ticker: u32, module: u32) -> u64 {
    (u64::from(ticker) << 32) | u64::from(module)
}

impl KeyTable {
    /// The slot of `(ticker, module)`, created if new; `true` when created.
    pub fn get_or_insert(&mut self, ticker: u32, module: u32) -> (u32, bool) {
        if let Some(&slot) = self.index.get(&pack(ticker, module)) {
            return (slot, false);
        }
        let state = KeyState::new(ticker, module);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = state;
                slot
            }
            None => {
                self.slots.push(state);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(pack(ticker, module), slot);
        (slot, true)
    }

    /// The state of `(ticker, module)`, if live.
    pub fn get(&self, ticker: u32, module: u32) -> Option<&KeyState> {
        self.index.get(&pack(ticker, module)).map(|&s| &self.slots[s as usize])
    }

    /// The slot of `(ticker, module)`, if live.
    pub fn slot_of(&self, ticker: u32, module: u32) -> Option<u32> {
        self.index.get(&pack(ticker, module)).copied()
    }

    /// The state in `slot`.
    pub fn slot_mut(&mut self, slot: u32) -> &mut KeyState {
        &mut self.slots[slot as usize]
    }

    /// The state in `slot`, if the slot exists.
    pub fn slot(&self, slot: u32) -> Option<&KeyState> {
        self.slots.get(slot as usize)
    }

    /// Every slot, live or free (free ones have `ticker == DEAD`).
    pub fn slots_mut(&mut self) -> &mut [KeyState] {
        &mut self.slots
    }

    /// Live states.
    pub fn iter(&self) -> impl Iterator<Item = &KeyState> {
        self.slots.iter().filter(|k| k.ticker != DEAD)
    }

    /// Forgets the key in `slot`, releasing its bucket memory.
    pub fn remove(&mut self, slot: u32) {
        let k = &mut self.slots[slot as usize];
        self.index.remove(&pack(k.ticker, k.module));
        *k = KeyState::new(DEAD, DEAD);
        self.free.push(slot);
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Rebuilds the table without free slots once they outnumber live ones, so memory follows
    /// the live set down after a wave of expiries. Slot numbers change: call it only between
    /// passes, never while holding one.
    pub fn compact_if_sparse(&mut self) {
        if self.slots.len() < 64 || self.free.len() <= self.index.len() {
            return;
        }
        self.slots.retain(|k| k.ticker != DEAD);
        self.slots.shrink_to_fit();
        self.free = Vec::new();
        let mut index = HashMap::with_capacity_and_hasher(self.slots.len(), IdHash);
        for (slot, k) in self.slots.iter().enumerate() {
            index.insert(pack(k.ticker, k.module), slot as u32);
        }
        self.index = index;
    }

    /// Approximate bytes held: slots, index and bucket vectors.
    pub fn approx_bytes(&self) -> usize {
        let slots = self.slots.capacity() * std::mem::size_of::<KeyState>();
        // hashbrown: one control byte plus the entry per bucket, at most 8/7 buckets per entry.
        let index = self.index.capacity() * 8 / 7 * (1 + std::mem::size_of::<(u64, u32)>());
        let heap: usize = self.slots.iter().map(KeyState::heap_bytes).sum();
        slots + index + heap + self.free.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_recycled_only_after_sweep() {
        let mut i = Interner::new();
        let a = i.intern(&"AAPL".to_owned());
        i.retain(a);
        let b = i.intern(&"MSFT".to_owned());
        i.retain(b);
        i.release(b);
        assert_eq!(i.intern(&"AAPL".to_owned()), a);
        let freed = i.sweep();
        assert_eq!((freed[a as usize], freed[b as usize]), (false, true));
        assert_eq!(i.id(&"MSFT".to_owned()), None);
        assert_eq!(i.len(), 1);
        // The freed id is reused, so the id space stays as large as the live set.
        assert_eq!(i.intern(&"NVDA".to_owned()), b);
        assert_eq!(i.name(b).map(String::as_str), Some("NVDA"));
        assert_eq!(i.capacity(), 2);
    }

    #[test]
    fn key_slots_are_reused() {
        let mut t = KeyTable::default();
        let (s1, new1) = t.get_or_insert(1, 2);
        let (s1b, new1b) = t.get_or_insert(1, 2);
        assert!(new1 && !new1b && s1 == s1b);
        let (s2, _) = t.get_or_insert(2, 2);
        t.remove(s1);
        assert!(t.get(1, 2).is_none());
        assert_eq!(t.len(), 1);
        let (s3, new3) = t.get_or_insert(3, 2);
        assert!(new3);
        assert_eq!(s3, s1);
        assert_ne!(s2, s3);
        assert_eq!(t.iter().count(), 2);
    }

    #[test]
    fn sparse_table_is_compacted() {
        let mut t = KeyTable::default();
        for i in 0..100 {
            t.get_or_insert(i, 0);
        }
        let full = t.approx_bytes();
        for i in 0..90 {
            t.remove(i);
        }
        t.compact_if_sparse();
        assert_eq!(t.len(), 10);
        assert_eq!(t.get(95, 0).map(|k| k.ticker), Some(95));
        assert!(t.approx_bytes() < full / 4, "{} vs {full}", t.approx_bytes());
        // Still usable: new keys take fresh slots.
        let (s, new) = t.get_or_insert(500, 0);
        assert!(new && s == 10);
    }

    #[test]
    fn id_hash_spreads_module_only_differences() {
        // Keys differing only in the ticker (high half) must not collide in the low bits.
        // The seed is random per process, so the bound must hold for any seed: 4,096 keys in
        // 4,096 buckets fill about 2,589 (1 − 1/e) when the low bits are uniform; 64 keys in
        // 256 buckets (the test before) fell under its bound for 1 seed in 18.
        let low = |t: u32| {
            let mut h = IdHash.build_hasher();
            h.write_u64(pack(t, 1));
            h.finish() & 0xfff
        };
        let distinct: std::collections::HashSet<u64> = (0..4_096).map(low).collect();
        assert!(distinct.len() > 2_300, "{}", distinct.len());
    }
}
