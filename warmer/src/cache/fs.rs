//! The filesystem cache: `<root>/<module>/<ticker>.json`, one [`Entry`] per file.
//!
//! A write goes to a temporary file in the same directory, then is renamed over the entry: a
//! reader sees the old entry or the new one, never part of one. With `--cache-fsync` the file
//! is fsynced before the rename and the directory after it, so the entry also survives a power
//! loss; without (the default), a power loss or OS crash may leave an entry empty or torn,
//! which the start-up scan removes and a read in the meantime takes as a miss. A cache entry is
//! disposable, and an fsync waits for the filesystem's other dirty data too (ext4's ordered
//! mode), so on a disk shared with a Kafka broker it cost seconds of event → warm latency.
//!
//! An in-memory index (rebuilt from the directory at start-up) knows every entry's expiry and
//! size, for freshness checks, sweeps and eviction. One warmer process owns a directory.
//! Writes of different keys run in parallel (each pays its own fsyncs, when on; one lock over
//! every write made concurrency above ~8 buy little, issue #15);
//! writes of one key, and a write and the removal of that key, take turns under the key's
//! stripe of [`STRIPES`] locks, so the index always describes the file the last rename left.
//! Evictions and sweeps take one more lock among themselves; reads take none.

use super::{over_limits, CacheError, CacheStats, Entry, Limits, Removed};
use crate::policy::Key;
use chrono::{DateTime, Utc};
use prefetch_common::contract::{Module, Ticker};
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Temporary files start with this, so a start-up scan can remove leftovers of a crash.
const TMP_PREFIX: &str = ".tmp-";

/// Key stripes: enough that 32–64 concurrent warms rarely share one.
const STRIPES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Meta {
    expires_at: DateTime<Utc>,
    bytes: u64,
}

/// The in-memory index of what is on disk, with the byte total kept up to date so the limits
/// are checked without walking every entry on every write.
#[derive(Default)]
struct Index {
    map: HashMap<Key, Meta>,
    bytes: u64,
}

impl Index {
    fn insert(&mut self, key: Key, meta: Meta) {
        self.bytes += meta.bytes;
        if let Some(old) = self.map.insert(key, meta) {
            self.bytes -= old.bytes;
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.map.remove(key) {
            self.bytes -= old.bytes;
        }
    }
}

/// A cache in a directory. Cheap to clone (shared state).
#[derive(Clone)]
pub struct FsCache {
    root: Arc<PathBuf>,
    limits: Limits,
    index: Arc<Mutex<Index>>,
    /// A key's stripe: held across its atomic write and index update, and its removal.
    stripes: Arc<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
    /// Held by a sweep or an eviction (never while waiting for it inside a stripe).
    evicting: Arc<tokio::sync::Mutex<()>>,
    /// Fsync each entry and its directory (`--cache-fsync`).
    fsync: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io { path: path.display().to_string(), source }
}

impl FsCache {
    /// Opens (creating if needed) the cache under `root` and indexes what is already there.
    /// Unreadable entries and leftover temporary files are removed.
    pub async fn open(root: PathBuf, limits: Limits) -> Result<Self, CacheError> {
        let scan_root = root.clone();
        let index = tokio::task::spawn_blocking(move || scan(&scan_root)).await??;
        tracing::info!(root = %root.display(), entries = index.map.len(), "File cache opened.");
        Ok(Self {
            root: Arc::new(root),
            limits,
            index: Arc::new(Mutex::new(index)),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: RandomState::new(),
            evicting: Arc::default(),
            fsync: false,
        })
    }

    /// Fsyncs every entry written from now on, and its directory (`--cache-fsync`).
    pub fn set_fsync(&mut self, on: bool) {
        self.fsync = on;
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key`'s entry lives. Tickers may contain `.` but, with `.json` appended, never
    /// form `.` or `..`; modules contain no dots or slashes.
    pub fn path_of(&self, key: &Key) -> PathBuf {
        self.root.join(key.module.as_str()).join(format!("{}.json", key.ticker.as_str()))
    }

    fn stripe(&self, key: &Key) -> &tokio::sync::Mutex<()> {
        &self.stripes[self.hasher.hash_one(key) as usize % STRIPES]
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // Every update is a single insert or remove; a poisoned map is still consistent.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live entry of `key` at `now`.
    pub async fn get(&self, key: &Key, now: DateTime<Utc>) -> Result<Option<Entry>, CacheError> {
        let path = self.path_of(key);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let entry: Entry = serde_json::from_slice(&bytes)?;
        Ok(entry.is_live(now).then_some(entry))
    }

    /// When `key`'s entry expires, from the index.
    pub fn expires_at(&self, key: &Key) -> Option<DateTime<Utc>> {
        self.index().map.get(key).map(|m| m.expires_at)
    }

    /// Writes `entry` atomically, then evicts beyond the limits.
    pub async fn put(&self, entry: &Entry) -> Result<Removed, CacheError> {
        let bytes = serde_json::to_vec_pretty(entry)?;
        let key = entry.key();
        let path = self.path_of(&key);
        let size = bytes.len() as u64;
        {
            let _k = self.stripe(&key).lock().await;
            let fsync = self.fsync;
            tokio::task::spawn_blocking(move || write_atomic(&path, &bytes, fsync)).await??;
            self.index().insert(key, Meta { expires_at: entry.expires_at, bytes: size });
        }
        let evicted = if self.over() {
            let _e = self.evicting.lock().await;
            self.evict().await?
        } else {
            0
        };
        Ok(Removed { expired: 0, evicted })
    }

    /// Removes entries expired at `now`, then evicts beyond the limits.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Removed, CacheError> {
        let _e = self.evicting.lock().await;
        let expired: Vec<(Key, Meta)> = self
            .index()
            .map
            .iter()
            .filter(|(_, m)| m.expires_at <= now)
            .map(|(k, m)| (k.clone(), *m))
            .collect();
        let expired = self.remove(&expired).await?;
        let evicted = self.evict().await?;
        Ok(Removed { expired, evicted })
    }

    /// Whether the index is beyond a limit: O(1), from the running totals.
    fn over(&self) -> bool {
        let idx = self.index();
        (self.limits.max_entries > 0 && idx.map.len() as u64 > self.limits.max_entries)
            || (self.limits.max_bytes > 0 && idx.bytes > self.limits.max_bytes)
    }

    /// Call with `evicting` held.
    async fn evict(&self) -> Result<u64, CacheError> {
        if !self.over() {
            // The common case: no entry list is built.
            return Ok(0);
        }
        let items: Vec<((Key, Meta), DateTime<Utc>, u64)> = self
            .index()
            .map
            .iter()
            .map(|(k, m)| ((k.clone(), *m), m.expires_at, m.bytes))
            .collect();
        let victims = over_limits(items, self.limits);
        self.remove(&victims).await
    }

    /// Removes each key whose index entry is still `meta` (one rewritten meanwhile is newer than
    /// what was chosen, and stays); returns how many were removed.
    async fn remove(&self, keys: &[(Key, Meta)]) -> Result<u64, CacheError> {
        let mut removed = 0;
        for (key, meta) in keys {
            let _k = self.stripe(key).lock().await;
            if self.index().map.get(key) != Some(meta) {
                continue;
            }
            let path = self.path_of(key);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            self.index().remove(key);
            removed += 1;
        }
        Ok(removed)
    }

    /// Entries and bytes in the index.
    pub fn stats(&self) -> CacheStats {
        let idx = self.index();
        CacheStats { entries: idx.map.len() as u64, bytes: idx.bytes }
    }

    /// Whether the directory is still there.
    pub async fn ping(&self) -> Result<(), CacheError> {
        tokio::fs::metadata(self.root.as_path()).await.map(|_| ()).map_err(io_err(&self.root))
    }
}

/// Write to a temporary file beside `path` and rename it over `path`; with `fsync`, fsync the
/// file before the rename and the directory after it.
fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> Result<(), CacheError> {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{name}.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        if fsync {
            f.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io_err(path))?;
        if fsync {
            // The rename is durable only once the directory is.
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Indexes `<root>/<module>/<ticker>.json`, removing temporary leftovers and unreadable files.
fn scan(root: &Path) -> Result<Index, CacheError> {
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    let mut index = Index::default();
    for module_dir in std::fs::read_dir(root).map_err(io_err(root))?.flatten() {
        let Ok(module) = Module::parse(&module_dir.file_name().to_string_lossy()) else { continue };
        let dir = module_dir.path();
        if !dir.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
            let path = file.path();
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(ticker) = name
                .strip_suffix(".json")
                .and_then(|t| Ticker::parse(t).ok().filter(|p| p.as_str() == t))
            else {
                continue;
            };
            let parsed = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok().map(|e| (e, b.len())));
            match parsed {
                Some((e, len)) if e.ticker == ticker && e.module == module => {
                    index.insert(e.key(), Meta { expires_at: e.expires_at, bytes: len as u64 });
                }
                _ => {
                    tracing::warn!(path = %path.display(), "Removing an unreadable cache file.");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    Ok(index)
}
