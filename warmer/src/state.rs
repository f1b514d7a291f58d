//! What the consume loops and the HTTP handlers share: the cache, the upstream, the live
//! policy, the query counters behind `/v1/status`, the ledger of warmed entries (for "useful
//! warm" metrics; in Redis when the warmers are a cluster), the demand fetches in flight, the
//! tokens, and the latest prediction of each key (for `POST /v1/warmup`).

use crate::cache::redis::RedisCache;
use crate::cache::{Cache, Ttls};
use crate::cluster::Cluster;
use crate::flight::Flights;
use crate::metrics::Metrics;
use crate::policy::{Key, WarmPolicy};
use crate::upstream::Upstream;
use chrono::{DateTime, TimeZone, Utc};
use prefetch_common::contract::Module;
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
    /// Demand fetches in flight (single-flight per key).
    pub flights: Flights,
    /// The cluster of warmers sharing the Redis cache; `None` with the file cache.
    pub cluster: Option<Cluster>,
    /// What the HTTP side needs besides: tokens, the negative TTL.
    pub options: Options,
    latest: Mutex<HashMap<Key, Prediction>>,
    /// Keys with a refresh deferred to their entry's expiry (`warm.rs`).
    pub deferred: Mutex<std::collections::HashSet<Key>>,
    /// Keys being warmed now (`warm.rs`): a second warm of one of them, from a later batch or a
    /// deferred refresh, is skipped instead of fetching it twice.
    pub warming: Mutex<std::collections::HashSet<Key>>,
    /// Cancelled when the service stops: deferred refreshes still waiting are dropped then.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// Settings of the HTTP side.
#[derive(Clone, Default)]
pub struct Options {
    /// How long a 404 from the upstream is remembered (0: not at all).
    pub negative_ttl: Duration,
    /// Bearer token of the mutating routes (`POST /v1/warmup`), if set.
    pub api_token: Option<String>,
    /// Bearer token of the read routes (`/v1/cache`, `/v1/status`), if set; the API token
    /// is accepted there too.
    pub read_token: Option<String>,
    /// Dead-letter topic for predictions that fail validation.
    pub dlq_topic: String,
    /// How long a batch of predictions waits for more after its first (`--batch-linger`).
    pub batch_linger: Duration,
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
        cluster: Option<Cluster>,
        options: Options,
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
            ledger: Ledger { cluster: cluster.clone(), ..Ledger::default() },
            flights: Flights::default(),
            cluster,
            options,
            latest: Mutex::default(),
            deferred: Mutex::default(),
            warming: Mutex::default(),
            stopping: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// The `module` metrics label: the module when it is configured (in the TTL table), else
    /// `other`, so client-chosen module names never mint series.
    pub fn module_label(&self, module: &Module) -> String {
        let ttls = self.ttls.borrow();
        if ttls.per_module.contains_key(module.as_str()) {
            module.as_str().to_owned()
        } else {
            "other".to_owned()
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
/// (counted once); an entry replaced by a demand fetch, or expired, leaves the ledger. With a
/// cluster the marks live in Redis (`cluster.rs`), so a hit seen by any instance counts a warm
/// made by another; if Redis fails, this instance's map stands in (and the failure is logged).
#[derive(Default)]
pub struct Ledger {
    marks: Mutex<HashMap<Key, Mark>>,
    cluster: Option<Cluster>,
}

impl Ledger {
    /// A warmed entry of `key` was stored.
    pub async fn warmed(&self, key: Key, stored_at: DateTime<Utc>, expires_at: DateTime<Utc>) {
        if let Some(c) = &self.cluster {
            let ttl = (expires_at - Utc::now()).to_std().unwrap_or_default();
            match c
                .ledger_warmed(&RedisCache::member(&key), stored_at.timestamp_millis(), ttl)
                .await
            {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "Could not record a warm in the cluster's ledger; recording it here.")
                }
            }
        }
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
    pub async fn replaced(&self, key: &Key) {
        if let Some(c) = &self.cluster {
            if let Err(e) = c.ledger_replaced(&RedisCache::member(key)).await {
                tracing::warn!(error = %e, "Could not clear a mark in the cluster's ledger.");
            }
        }
        lock(&self.marks).remove(key);
    }

    /// A hit on `key` at `ts`: the time since the warm when this is the warmed entry's first hit.
    pub async fn hit(&self, key: &Key, ts: DateTime<Utc>) -> Option<Duration> {
        if let Some(c) = &self.cluster {
            match c.ledger_hit(&RedisCache::member(key), ts.timestamp_millis()).await {
                Ok(Some(ms)) => {
                    let stored = Utc.timestamp_millis_opt(ms).single()?;
                    return (ts - stored).to_std().ok();
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "Could not read the cluster's ledger."),
            }
        }
        let mut marks = lock(&self.marks);
        let m = *marks.get(key)?;
        if ts < m.stored_at || ts >= m.expires_at {
            return None;
        }
        marks.remove(key);
        (ts - m.stored_at).to_std().ok()
    }

    /// Drops marks of entries expired at `now` (Redis expires the cluster's by itself).
    pub fn prune(&self, now: DateTime<Utc>) {
        lock(&self.marks).retain(|_, m| m.expires_at > now);
    }
}
