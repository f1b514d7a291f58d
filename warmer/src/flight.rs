//! Demand fetches (read-through misses) as single flights: one upstream call per key however
//! many apps ask at once.
//!
//! Within an instance, the first miss of a key starts the fetch as its own task (so an app that
//! hangs up does not cancel it for the others) and later misses of the key wait for the same
//! result. Across instances (a cluster, `cluster.rs`), the task first takes a short lease on the
//! key in Redis; an instance that finds the lease taken polls the shared cache until the
//! holder's entry (or negative entry) appears, and fetches itself only if the lease is released
//! without one or outlives the longest fetch. Whoever fetches looks at the cache once more
//! first, so a miss that raced a store does not ask the upstream again.
//!
//! The answers are those of a cache proxy: a body (stored for the module's TTL, capped by
//! `Cache-Control` when `--honor-cache-control` is on), a 404 (stored as a negative entry for
//! `--negative-ttl`), or the failure.

use crate::cache::redis::RedisCache;
use crate::cache::{Entry, Source};
use crate::cluster::{Cluster, LEASE};
use crate::policy::Key;
use crate::state::Shared;
use crate::upstream::{FetchError, Fetched};
use chrono::Utc;
use futures::future::{BoxFuture, FutureExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a warmer waiting on another instance's lease looks at the cache.
const POLL: Duration = Duration::from_millis(25);

/// What a demand fetch ended with, shared by every request that waited on it.
#[derive(Debug, Clone)]
pub enum Demand {
    /// The upstream's body (stored unless `Cache-Control` forbade it).
    Body(Arc<serde_json::Value>),
    /// The upstream has no such key (404), remembered as a negative entry.
    NotFound,
    /// The fetch failed (already logged and counted).
    Failed(FetchError),
}

type Flight = futures::future::Shared<BoxFuture<'static, Demand>>;

/// The demand fetches in flight in this instance, by key.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<Key, (u64, Flight)>>,
    next: AtomicU64,
}

impl Flights {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (u64, Flight)>> {
        // Every update is one map operation: a poisoned map is consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn done(&self, key: &Key, id: u64) {
        let mut map = self.lock();
        if map.get(key).is_some_and(|(i, _)| *i == id) {
            map.remove(key);
        }
    }

    /// Demand fetches in flight now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The answer for a read-through miss of `key`: the flight in progress for it, or a new one.
pub async fn demand(shared: &Arc<Shared>, key: &Key) -> Demand {
    let (flight, joined) = {
        let mut map = shared.flights.lock();
        match map.get(key) {
            Some((_, f)) => (f.clone(), true),
            None => {
                let id = shared.flights.next.fetch_add(1, Ordering::Relaxed);
                let (s, k) = (shared.clone(), key.clone());
                let task = tokio::spawn(async move {
                    let out = fetch_clustered(&s, &k).await;
                    s.flights.done(&k, id);
                    out
                });
                let f = async move {
                    task.await.unwrap_or_else(|e| {
                        Demand::Failed(FetchError::Transport {
                            url: String::new(),
                            message: format!("the fetch task failed: {e}"),
                        })
                    })
                }
                .boxed()
                .shared();
                map.insert(key.clone(), (id, f.clone()));
                (f, false)
            }
        }
    };
    if joined {
        shared.metrics.coalesced("instance");
    }
    flight.await
}

/// The cached answer for `key`, if the cache holds one now.
async fn cached(s: &Shared, key: &Key) -> Option<Demand> {
    match s.cache.get(key, Utc::now()).await {
        Ok(Some(e)) if e.negative => Some(Demand::NotFound),
        Ok(Some(e)) => Some(Demand::Body(Arc::new(e.body))),
        Ok(None) => None,
        Err(e) => {
            s.metrics.cache_error("get");
            tracing::warn!(error = %e, "Cache read failed; treating it as a miss.");
            None
        }
    }
}

async fn fetch_clustered(s: &Shared, key: &Key) -> Demand {
    let Some(cluster) = &s.cluster else {
        return recheck_then_fetch(s, key).await;
    };
    let member = RedisCache::member(key);
    // However the lease changes hands, nobody waits longer than one fetch of their own would
    // take on top of the longest fetch.
    let deadline = Instant::now() + s.upstream.max_fetch_time() * 2 + LEASE;
    let mut counted = false;
    loop {
        match cluster.try_lock(&member).await {
            Ok(true) => return fetch_holding_lease(s, cluster, key, &member).await,
            Ok(false) => {}
            Err(e) => {
                s.metrics.cache_error("lock");
                tracing::warn!(error = %e, "Cluster lease unavailable; fetching without it.");
                return recheck_then_fetch(s, key).await;
            }
        }
        if !counted {
            s.metrics.coalesced("cluster");
            counted = true;
        }
        // Another instance is fetching: its entry will appear in the shared cache.
        loop {
            tokio::time::sleep(POLL).await;
            if let Some(d) = cached(s, key).await {
                return d;
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    "Waited on another warmer's fetch longer than a fetch takes; fetching here."
                );
                return recheck_then_fetch(s, key).await;
            }
            // Released (or expired: its holder died) without an entry: try for the lease.
            if !matches!(cluster.locked(&member).await, Ok(true)) {
                break;
            }
        }
    }
}

/// Fetches while renewing the lease, so it outlives a slow upstream but not a dead warmer.
async fn fetch_holding_lease(s: &Shared, cluster: &Cluster, key: &Key, member: &str) -> Demand {
    let renew = async {
        let mut tick = tokio::time::interval(LEASE / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            if !matches!(cluster.renew(member).await, Ok(true)) {
                tracing::warn!(
                    "Lost a demand-fetch lease while fetching; another warmer may fetch too."
                );
                std::future::pending::<()>().await;
            }
        }
    };
    let out = tokio::select! {
        out = recheck_then_fetch(s, key) => out,
        _ = renew => unreachable!("renewing never ends"),
    };
    if let Err(e) = cluster.unlock(member).await {
        // The lease expires by itself; others wait at most that long.
        tracing::warn!(error = %e, "Could not release a demand-fetch lease.");
    }
    out
}

async fn recheck_then_fetch(s: &Shared, key: &Key) -> Demand {
    if let Some(d) = cached(s, key).await {
        return d;
    }
    match s.upstream.fetch(key, Source::Demand).await {
        Ok(f) => {
            let Some(ttl) = ttl_for(s, key, &f, Source::Demand) else {
                return Demand::Body(Arc::new(f.body));
            };
            let entry = Entry::living(key, Source::Demand, None, f.body, ttl);
            store(s, &entry).await;
            Demand::Body(Arc::new(entry.body))
        }
        Err(FetchError::NotFound { .. }) => {
            store_not_found(s, key, Source::Demand).await;
            Demand::NotFound
        }
        Err(e) => Demand::Failed(e),
    }
}

/// The TTL of a fresh answer for `key`: the module's, capped by the upstream's
/// `Cache-Control` when honoured; `None` when it must not be stored.
pub fn ttl_for(s: &Shared, key: &Key, f: &Fetched, source: Source) -> Option<Duration> {
    let ttl = s.ttls().for_module(key.module.as_str());
    match f.max_age {
        Some(max) if max < ttl => {
            s.metrics.ttl_capped(source, !max.is_zero());
            (!max.is_zero()).then_some(max)
        }
        _ => Some(ttl),
    }
}

/// Stores a demand `entry`; it replaces a warmed one, if any, in the ledger.
async fn store(s: &Shared, entry: &Entry) {
    let key = entry.key();
    match s.cache.put(entry).await {
        Ok(removed) => {
            s.metrics.removed(removed);
            s.ledger.replaced(&key).await;
        }
        Err(e) => {
            s.metrics.cache_error("put");
            tracing::warn!(ticker = %key.ticker, module = %key.module, error = %e, "Could not store a demand entry.");
        }
    }
}

/// Remembers that the upstream has no `key`, for `--negative-ttl` (0: not at all).
pub async fn store_not_found(s: &Shared, key: &Key, source: Source) {
    let ttl = s.options.negative_ttl;
    if ttl.is_zero() {
        return;
    }
    store(s, &Entry::not_found(key, source, ttl)).await;
    s.metrics.negative_stored();
}
