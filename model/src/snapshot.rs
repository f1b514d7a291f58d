//! Checkpoints of what the model learned, for the tickers of one input partition: written by
//! [`Model::snapshot`], read back by [`Model::restore`]. The analyzer service stores one per
//! partition on a compacted topic, so a new owner of the partition starts from it and replays
//! only the events after it instead of the whole retention window.
//!
//! What a snapshot holds: per key its count buckets, both EWMAs and its latest event time, and
//! refresh-ahead's belief about its cached copy; the calibration tables (global to the model:
//! they are taken only by a model that has resolved no sample yet, see [`Restored`]). What it
//! does not hold: the learned transition tables and the clients' last queries (they are keyed by
//! client, and a client's events span partitions; they are relearned from live traffic), open
//! calibration samples (the next grid point opens new ones) and cached seasonal rates
//! (recomputed on the next tick).
//!
//! # Format (version 2), little-endian, `varint` = LEB128
//! `"PFSN"`, `u16` version, `u32` bucket width (s), `u32` retention (s) — a model with other
//! values refuses the snapshot —, `u8` calibration classes, `u8` has-decay flag and `u32`
//! decayed-to, then per class and bin three `f64` (hits, samples, raw sum); `u8` cache view
//! flag; varint key count; per key: ticker and module as varint length + UTF-8, `u32` last
//! event, `f32` fast and slow EWMAs, then its buckets as held in memory (`buckets.rs`): varint
//! newest bucket, varint its count, varint count of the older buckets, varint length of their
//! tokens and the tokens; when the cache flag is set, a `u8` copy flag and, if set, `u32`
//! fetched, `u32` expires, varint queries.
//!
//! Version 1 (still read) wrote instead of the buckets a varint bucket count, then per bucket
//! the varint gap from the previous bucket index (the first from 0) and the varint count: about
//! 2 bytes a bucket for a key active every hour, against 1 in version 2 (measured in the bench,
//! `prefetch-bench analyzer-keys`). Every token is checked on restore.

use super::buckets::Buckets;
use super::calibration::BINS;
use super::refresh::{Copy, PROVEN};
use super::window::KeyState;
use super::Model;
use prefetch_contract::contract::{Module, Ticker};
use std::collections::HashSet;
use std::fmt;

/// The snapshot format this build writes (it also reads version 1).
pub const SNAPSHOT_VERSION: u16 = 2;
/// The oldest format this build still reads.
const OLDEST_READ: u16 = 1;
const MAGIC: &[u8; 4] = b"PFSN";

/// Why a snapshot could not be restored. Nothing is applied when restoring fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Not a snapshot (wrong magic).
    NotASnapshot,
    /// Written by a build with another format version.
    Version(u16),
    /// Shorter than its contents say.
    Truncated,
    /// A setting that shapes the stored history differs from this model's.
    Settings {
        /// `bucket_s` or `retention_s`.
        field: &'static str,
        /// The snapshot's value.
        snapshot: u32,
        /// This model's value.
        model: u32,
    },
    /// A ticker or module name that does not validate.
    Name(String),
    /// Count buckets out of order, with a zero count, or with malformed tokens.
    Buckets,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotASnapshot => write!(f, "not a model snapshot"),
            Self::Version(v) => {
                write!(
                    f,
                    "snapshot format version {v}; this build reads {OLDEST_READ} to {SNAPSHOT_VERSION}"
                )
            }
            Self::Truncated => write!(f, "snapshot is truncated"),
            Self::Settings { field, snapshot, model } => write!(
                f,
                "snapshot was written with {field} = {snapshot}, the model runs with {model}"
            ),
            Self::Name(e) => write!(f, "snapshot holds an invalid name: {e}"),
            Self::Buckets => write!(f, "snapshot holds malformed count buckets"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// What [`Model::restore`] applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Restored {
    /// Keys restored.
    pub keys: usize,
    /// The tickers of the restored keys.
    pub tickers: Vec<Ticker>,
    /// Whether the calibration tables were taken (only by a model with no resolved sample).
    pub calibration: bool,
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn f32(&mut self) -> Result<f32, SnapshotError> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn f64(&mut self) -> Result<f64, SnapshotError> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn varint(&mut self) -> Result<u64, SnapshotError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(SnapshotError::Truncated)
    }
    fn u32v(&mut self) -> Result<u32, SnapshotError> {
        u32::try_from(self.varint()?).map_err(|_| SnapshotError::Truncated)
    }
    fn str(&mut self) -> Result<&'a str, SnapshotError> {
        let n = self.varint()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|e| SnapshotError::Name(e.to_string()))
    }
    /// A key's buckets in version 2: as held in memory, every token checked.
    fn buckets(&mut self) -> Result<Buckets, SnapshotError> {
        let (newest, count, entries) = (self.u32v()?, self.u32v()?, self.u32v()?);
        let n = self.varint()? as usize;
        Buckets::from_encoded(newest, count, entries, self.take(n)?).ok_or(SnapshotError::Buckets)
    }
    /// A key's buckets in version 1: a count, then (gap, count) varint pairs.
    fn buckets_v1(&mut self) -> Result<Buckets, SnapshotError> {
        let nb = self.varint()? as usize;
        let mut pairs = Vec::with_capacity(nb.min(self.0.len() / 2));
        let mut b = 0u32;
        for _ in 0..nb {
            b = b.checked_add(self.u32v()?).ok_or(SnapshotError::Buckets)?;
            pairs.push((b, self.u32v()?));
        }
        Buckets::from_pairs(&pairs).ok_or(SnapshotError::Buckets)
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// One key as read from a snapshot, before anything is applied.
struct Key {
    ticker: Ticker,
    module: Module,
    state: KeyState,
    copy: Option<Copy>,
}

impl Model {
    /// The state of every live key whose ticker is in `tickers`, with the calibration tables,
    /// in the format above. Cost: one pass over the live keys.
    pub fn snapshot(&self, tickers: &HashSet<Ticker>) -> Vec<u8> {
        let ids: HashSet<u32> = tickers.iter().filter_map(|t| self.tickers.id(t)).collect();
        let mut out = Vec::with_capacity(64 + ids.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&self.s.bucket.to_le_bytes());
        out.extend_from_slice(&self.s.retention.to_le_bytes());
        let (cells, decayed_to) = self.calibrator.export();
        out.push(cells.len() as u8);
        out.push(u8::from(decayed_to.is_some()));
        out.extend_from_slice(&decayed_to.unwrap_or(0).to_le_bytes());
        for cell in cells.iter().flatten() {
            for v in cell {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out.push(u8::from(self.cache.is_some()));
        // Only keys whose names resolve are written, and the count says exactly how many.
        let keys: Vec<_> = self
            .keys
            .iter()
            .filter(|k| ids.contains(&k.ticker))
            .filter_map(|k| Some((k, self.tickers.name(k.ticker)?, self.modules.name(k.module)?)))
            .collect();
        varint(&mut out, keys.len() as u64);
        for (k, t, m) in keys {
            string(&mut out, t.as_str());
            string(&mut out, m.as_str());
            let (fast, slow, last) = k.parts();
            out.extend_from_slice(&last.to_le_bytes());
            out.extend_from_slice(&fast.to_le_bytes());
            out.extend_from_slice(&slow.to_le_bytes());
            let (newest, count, entries, tokens) = k.raw_buckets().encoded();
            for v in [newest, count, entries, tokens.len() as u32] {
                varint(&mut out, u64::from(v));
            }
            out.extend_from_slice(tokens);
            if let Some(view) = &self.cache {
                match view.copy(k.ticker, k.module) {
                    Some(c) => {
                        out.push(1);
                        out.extend_from_slice(&c.fetched.to_le_bytes());
                        out.extend_from_slice(&c.expires.to_le_bytes());
                        varint(&mut out, u64::from(c.queries));
                    }
                    None => out.push(0),
                }
            }
        }
        out
    }

    /// Applies a snapshot written by [`Model::snapshot`]: its keys replace any live state of
    /// the same keys; its calibration tables are taken only if this model has resolved no
    /// sample yet (several partitions' snapshots carry the same global tables, and adding them
    /// up would count each sample several times). All or nothing: a snapshot that does not
    /// parse changes nothing.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<Restored, SnapshotError> {
        let mut r = Reader(bytes);
        if r.take(4).map_err(|_| SnapshotError::NotASnapshot)? != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let version = r.u16()?;
        if !(OLDEST_READ..=SNAPSHOT_VERSION).contains(&version) {
            return Err(SnapshotError::Version(version));
        }
        for (field, model) in [("bucket_s", self.s.bucket), ("retention_s", self.s.retention)] {
            let snapshot = r.u32()?;
            if snapshot != model {
                return Err(SnapshotError::Settings { field, snapshot, model });
            }
        }
        let classes = usize::from(r.u8()?);
        let decayed = r.u8()? != 0;
        let decayed_to = r.u32()?;
        let mut cells = Vec::with_capacity(classes);
        for _ in 0..classes {
            let mut table = [[0f64; 3]; BINS];
            for cell in &mut table {
                for v in cell.iter_mut() {
                    *v = r.f64()?;
                }
            }
            cells.push(table);
        }
        let with_copies = r.u8()? != 0;
        let n = r.varint()? as usize;
        let mut keys = Vec::with_capacity(n.min(bytes.len() / 16));
        for _ in 0..n {
            let ticker = Ticker::parse(r.str()?).map_err(|e| SnapshotError::Name(e.to_string()))?;
            let module = Module::parse(r.str()?).map_err(|e| SnapshotError::Name(e.to_string()))?;
            let last = r.u32()?;
            let (fast, slow) = (r.f32()?, r.f32()?);
            let buckets = if version == 1 { r.buckets_v1()? } else { r.buckets()? };
            let copy = if with_copies && r.u8()? != 0 {
                let (fetched, expires, queries) = (r.u32()?, r.u32()?, r.u32v()?);
                // What a warm replaced is not kept: an unqueried warm proves from its own time.
                let proves_from = if queries == 0 { fetched } else { PROVEN };
                // Nor the copy of no warming: the current copy's expiry is the best guess.
                Some(Copy {
                    fetched,
                    expires,
                    queries,
                    proves_from,
                    bare: expires,
                    bare_ms: 0,
                    // Not checkpointed: learnt again from the next few queries.
                    cycle: Default::default(),
                    // Nor the usefulness counts (`usefulness.rs`): a restored warm's use is not
                    // counted.
                    warm_cell: 0,
                })
            } else {
                None
            };
            let state = KeyState::restored(buckets, fast, slow, last);
            keys.push(Key { ticker, module, state, copy });
        }
        let calibration = self.calibrator.resolved() == 0
            && cells.len() == self.s.classes
            && self.calibrator.import(&cells, decayed.then_some(decayed_to));
        for k in &keys {
            if let Some((first, _)) = k.state.buckets().next() {
                self.first_bucket = Some(self.first_bucket.map_or(first, |b| b.min(first)));
            }
        }
        let restored = keys.len();
        self.schedule.invalidate();
        let mut tickers: Vec<Ticker> = Vec::new();
        for k in keys {
            if tickers.last() != Some(&k.ticker) {
                tickers.push(k.ticker.clone());
            }
            let tid = self.tickers.intern(&k.ticker);
            let mid = self.modules.intern(&k.module);
            let (slot, created) = self.keys.get_or_insert(tid, mid);
            if created {
                self.tickers.retain(tid);
                self.modules.retain(mid);
            }
            let mut state = k.state;
            (state.ticker, state.module) = (tid, mid);
            *self.keys.slot_mut(slot) = state;
            if let (Some(view), Some(c)) = (self.cache.as_mut(), k.copy) {
                view.resolve(mid, k.module.as_str());
                view.restore_copy(tid, mid, c);
            }
        }
        tickers.sort_unstable();
        tickers.dedup();
        Ok(Restored { keys: restored, tickers, calibration })
    }

    /// Every live key with its events in the retention window, for checks that compare two
    /// deployments' state (e.g. several analyzers against one fed the same events).
    pub fn window_counts(&self) -> Vec<(Ticker, Module, u64)> {
        self.keys
            .iter()
            .filter_map(|k| {
                Some((
                    self.tickers.name(k.ticker)?.clone(),
                    self.modules.name(k.module)?.clone(),
                    k.total(),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
