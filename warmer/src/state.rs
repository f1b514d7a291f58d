//! What the consume loops and the HTTP handlers share: the cache, the upstream, the live
//! policy, the query counters behind `/v1/status`, the ledger of warmed entries (for "useful
//! warm" metrics), and the latest prediction of each key (for `POST /v1/warmup`).

use crate::cache::{Cache, Ttls};
use crate::metrics::Metrics;
use crate::policy::{Key, WarmPolicy};
use crate::upstream::Upstream;
use chrono::{DateTime, Utc};
use prefetch_common::prediction::Prediction;
use rdkafka::producer::FutureProducer;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Most keys remembered for `POST /v1/warmup` and in the warm ledger; beyond it the oldest
/// are forgotten first (a bound on memory whatever the analyzer sends).
pub const MEMORY_KEYS: usize = 100_000;

/// Everything the loops and handlers share.
pub struct Shared {
    /// The cache backend.
    pub cache: Cache,
    /// The upstream data API.
    pub upstream: Upstream,
    /// Collectors for `/metrics`.
    pub metrics: Metrics,
    /// The live policy. The config topic swaps it (`live.rs`); readers take a copy with
    /// [`Shared::policy`] so one decision sees one policy.
    pub policy: watch::Sender<WarmPolicy>,
    /// TTL per module, live like the policy (the config topic swaps it).
    pub ttls: watch::Sender<Ttls>,
    /// The window over which one batch's warms are spread.
    pub spread: Duration,
    /// Producer of read-through query events.
    pub producer: FutureProducer,
    /// The query-events topic.
    pub query_topic: String,
    /// The predictions topic (for readiness).
    pub predictions_topic: String,
    /// Queries seen on the query-events topic, for `/v1/status`.
    pub counters: QueryCounters,
    /// Warmed entries not yet hit.
    pub ledger: Ledger,
    latest: Mutex<HashMap<Key, Prediction>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single map operation: a poisoned map is consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Bundles the parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cache: Cache,
        upstream: Upstream,
        metrics: Metrics,
        policy: WarmPolicy,
        ttls: Ttls,
        spread: Duration,
        producer: FutureProducer,
        query_topic: String,
        predictions_topic: String,
    ) -> Self {
        Self {
            cache,
            upstream,
            metrics,
            policy: watch::Sender::new(policy),
            ttls: watch::Sender::new(ttls),
            spread,
            producer,
            query_topic,
            predictions_topic,
            counters: QueryCounters::default(),
            ledger: Ledger::default(),
            latest: Mutex::default(),
        }
    }

    /// A consistent copy of the live policy.
    pub fn policy(&self) -> WarmPolicy {
        self.policy.borrow().clone()
    }

    /// A copy of the live TTL table.
    pub fn ttls(&self) -> Ttls {
        self.ttls.borrow().clone()
    }

    /// Remembers the newest prediction of each key.
    pub fn remember(&self, preds: &[Prediction]) {
        let mut latest = lock(&self.latest);
        for p in preds {
            let newer = latest.get(&Key::of(p)).is_none_or(|q| q.generated_at <= p.generated_at);
            if newer {
                latest.insert(Key::of(p), p.clone());
            }
        }
        if latest.len() > MEMORY_KEYS {
            let mut by_age: Vec<(DateTime<Utc>, Key)> =
                latest.iter().map(|(k, p)| (p.generated_at, k.clone())).collect();
            by_age.sort();
            for (_, k) in by_age.into_iter().take(latest.len() - MEMORY_KEYS) {
                latest.remove(&k);
            }
        }
    }

    /// The remembered predictions whose horizon has not passed at `now`.
    pub fn latest(&self, now: DateTime<Utc>) -> Vec<Prediction> {
        let mut latest = lock(&self.latest);
        latest.retain(|_, p| !crate::policy::is_stale(p, now));
        let mut out: Vec<Prediction> = latest.values().cloned().collect();
        out.sort_by(|a, b| (&a.module, &a.ticker).cmp(&(&b.module, &b.ticker)));
        out
    }
}

/// Query totals for `/v1/status` (the metrics carry the same by label).
#[derive(Debug, Default)]
pub struct QueryCounters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl QueryCounters {
    /// Counts one query.
    pub fn record(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (hits, misses) so far.
    pub fn get(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    stored_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// Warmed entries that have not served a hit yet. A hit on one makes it a "useful warm"
/// (counted once); an entry replaced by a demand fetch, or expired, leaves the ledger.
#[derive(Debug, Default)]
pub struct Ledger {
    marks: Mutex<HashMap<Key, Mark>>,
}

impl Ledger {
    /// A warmed entry of `key` was stored.
    pub fn warmed(&self, key: Key, stored_at: DateTime<Utc>, expires_at: DateTime<Utc>) {
        let mut marks = lock(&self.marks);
        if marks.len() >= MEMORY_KEYS && !marks.contains_key(&key) {
            // Forget the entry closest to expiry: it has the least chance of a first hit.
            if let Some(k) = marks.iter().min_by_key(|(_, m)| m.expires_at).map(|(k, _)| k.clone())
            {
                marks.remove(&k);
            }
        }
        marks.insert(key, Mark { stored_at, expires_at });
    }

    /// `key`'s entry now comes from elsewhere (a demand fetch).
    pub fn replaced(&self, key: &Key) {
        lock(&self.marks).remove(key);
    }

    /// A hit on `key` at `ts`: the time since the warm when this is the warmed entry's first hit.
    pub fn hit(&self, key: &Key, ts: DateTime<Utc>) -> Option<Duration> {
        let mut marks = lock(&self.marks);
        let m = *marks.get(key)?;
        if ts < m.stored_at || ts >= m.expires_at {
            return None;
        }
        marks.remove(key);
        (ts - m.stored_at).to_std().ok()
    }

    /// Drops marks of entries expired at `now`.
    pub fn prune(&self, now: DateTime<Utc>) {
        lock(&self.marks).retain(|_, m| m.expires_at > now);
    }
}
