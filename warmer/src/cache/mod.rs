//! The cache: entries, per-module TTLs, and two backends behind one [`Cache`] type.
//!
//! - `fs.rs`: the embedded default, one JSON file per key written atomically.
//! - `redis.rs`: Redis, for deployments where several apps and warmers share one cache.
//!
//! Both expire entries by their TTL, sweep on request ([`Cache::sweep`], run periodically by
//! the service) and keep within a maximum number of entries and bytes by evicting the
//! soonest-expiring entries first.

pub mod fs;
pub mod redis;

use crate::policy::Key;
use chrono::{DateTime, Utc};
use prefetch_common::config::LiveConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Who put an entry in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The warmer, ahead of demand, from a prediction.
    Warm,
    /// A read-through miss: an app asked and the warmer fetched.
    Demand,
}

impl Source {
    /// The `source` metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Warm => "warm",
            Self::Demand => "demand",
        }
    }
}

/// One cached value with what is known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The data module.
    pub module: prefetch_common::contract::Module,
    /// The instrument.
    pub ticker: prefetch_common::contract::Ticker,
    /// When the upstream answered.
    pub fetched_at: DateTime<Utc>,
    /// When the entry stops being served.
    pub expires_at: DateTime<Utc>,
    /// Who fetched it.
    pub source: Source,
    /// The prediction's confidence, for warmed entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The upstream's JSON body, as it answered (null for a negative entry).
    pub body: serde_json::Value,
    /// The upstream answered 404: the key does not exist, and read-through answers 404 until
    /// the entry expires (`--negative-ttl`) instead of asking again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negative: bool,
}

impl Entry {
    /// An entry for `body` just fetched for `key` by `source`, living for its module's TTL.
    pub fn fetched(
        key: &Key,
        source: Source,
        confidence: Option<f64>,
        body: serde_json::Value,
        ttls: &Ttls,
    ) -> Self {
        Self::living(key, source, confidence, body, ttls.for_module(key.module.as_str()))
    }

    /// An entry for `body` just fetched, living for `ttl`.
    pub fn living(
        key: &Key,
        source: Source,
        confidence: Option<f64>,
        body: serde_json::Value,
        ttl: Duration,
    ) -> Self {
        let fetched_at = Utc::now();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        Self {
            module: key.module.clone(),
            ticker: key.ticker.clone(),
            fetched_at,
            expires_at: fetched_at.checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC),
            source,
            confidence,
            body,
            negative: false,
        }
    }

    /// A negative entry: the upstream answered 404 for `key`; remembered for `ttl`.
    pub fn not_found(key: &Key, source: Source, ttl: Duration) -> Self {
        Self { negative: true, ..Self::living(key, source, None, serde_json::Value::Null, ttl) }
    }

    /// The entry's key.
    pub fn key(&self) -> Key {
        Key { module: self.module.clone(), ticker: self.ticker.clone() }
    }

    /// Whether it may still be served at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }
}

/// Time to live per module, with a default for the others.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ttls {
    /// TTL of modules without their own.
    pub default: Duration,
    /// TTL by module name.
    pub per_module: BTreeMap<String, Duration>,
}

impl Ttls {
    /// The live config's default module TTLs (price 60 s, news 5 min, fundamentals 1 day);
    /// `default` for the rest.
    pub fn builtin(default: Duration) -> Self {
        Self { default, ..Self::of(&LiveConfig::default()) }
    }

    /// The TTL table a live config sets.
    pub fn of(cfg: &LiveConfig) -> Self {
        let per_module =
            cfg.ttl_s.iter().map(|(m, s)| (m.clone(), Duration::from_secs(*s))).collect();
        Self { default: Duration::from_secs(cfg.default_ttl_s), per_module }
    }

    /// The TTL of `module`'s entries.
    pub fn for_module(&self, module: &str) -> Duration {
        self.per_module.get(module).copied().unwrap_or(self.default)
    }
}

/// How big the cache is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Live entries.
    pub entries: u64,
    /// Their serialised size in bytes.
    pub bytes: u64,
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Entries past their TTL.
    pub expired: u64,
    /// Entries evicted to stay within the size limits.
    pub evicted: u64,
}

/// Limits on the cache's size (0: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries.
    pub max_entries: u64,
    /// Most bytes.
    pub max_bytes: u64,
}

/// A cache operation failed. The caller counts and logs it; a failed write leaves the previous
/// entry (or none) in place, never a partial one.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The filesystem refused.
    #[error("cache file {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Redis refused or did not answer.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// An entry could not be (de)serialised.
    #[error("cache entry: {0}")]
    Json(#[from] serde_json::Error),
    /// A blocking task died.
    #[error("cache worker: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The configured backend.
#[derive(Clone)]
pub enum Cache {
    /// Files under a directory.
    Fs(fs::FsCache),
    /// A Redis server.
    Redis(redis::RedisCache),
}

impl Cache {
    /// Opens the cache named by `location`: a `redis://`/`rediss://` URL or a directory.
    pub async fn open(
        location: &str,
        redis_prefix: &str,
        limits: Limits,
    ) -> Result<Self, CacheError> {
        if location.starts_with("redis://") || location.starts_with("rediss://") {
            Ok(Self::Redis(redis::RedisCache::connect(location, redis_prefix, limits).await?))
        } else {
            Ok(Self::Fs(fs::FsCache::open(location.into(), limits).await?))
        }
    }

    /// Fsyncs every file-cache entry from now on (`--cache-fsync`); Redis persists as it is
    /// configured to.
    pub fn set_fsync(&mut self, on: bool) {
        if let Self::Fs(c) = self {
            c.set_fsync(on);
        }
    }

    /// The live entry of `key` at `now`, if any.
    pub async fn get(&self, key: &Key, now: DateTime<Utc>) -> Result<Option<Entry>, CacheError> {
        match self {
            Self::Fs(c) => c.get(key, now).await,
            Self::Redis(c) => c.get(key, now).await,
        }
    }

    /// Stores `entry` (replacing the key's previous one), then evicts to stay within limits.
    pub async fn put(&self, entry: &Entry) -> Result<Removed, CacheError> {
        match self {
            Self::Fs(c) => c.put(entry).await,
            Self::Redis(c) => c.put(entry).await,
        }
    }

    /// When the cached entry of `key` expires, if there is one.
    pub async fn expires_at(&self, key: &Key) -> Result<Option<DateTime<Utc>>, CacheError> {
        match self {
            Self::Fs(c) => Ok(c.expires_at(key)),
            Self::Redis(c) => c.expires_at(key).await,
        }
    }

    /// Removes expired entries (and evicts beyond the limits).
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Removed, CacheError> {
        match self {
            Self::Fs(c) => c.sweep(now).await,
            Self::Redis(c) => c.sweep(now).await,
        }
    }

    /// Entries and bytes held.
    pub async fn stats(&self) -> Result<CacheStats, CacheError> {
        match self {
            Self::Fs(c) => Ok(c.stats()),
            Self::Redis(c) => c.stats().await,
        }
    }

    /// Whether the backend answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), CacheError> {
        match self {
            Self::Fs(c) => c.ping().await,
            Self::Redis(c) => c.ping().await,
        }
    }

    /// `fs` or `redis`, for logs and `/v1/status`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fs(_) => "fs",
            Self::Redis(_) => "redis",
        }
    }
}

/// Soonest-expiring first among `items` until both limits hold: the keys to evict.
pub(crate) fn over_limits<K: Clone>(
    mut items: Vec<(K, DateTime<Utc>, u64)>,
    limits: Limits,
) -> Vec<K> {
    let mut entries = items.len() as u64;
    let mut bytes: u64 = items.iter().map(|i| i.2).sum();
    let over = |e: u64, b: u64| {
        (limits.max_entries > 0 && e > limits.max_entries)
            || (limits.max_bytes > 0 && b > limits.max_bytes)
    };
    if !over(entries, bytes) {
        return Vec::new();
    }
    items.sort_by_key(|i| i.1);
    let mut out = Vec::new();
    for (k, _, size) in items {
        if !over(entries, bytes) {
            break;
        }
        entries -= 1;
        bytes -= size;
        out.push(k);
    }
    out
}
