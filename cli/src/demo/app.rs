//! Behaving as the app: each generated query is asked of the warmer's read-through cache
//! (`GET {URL}/v1/cache/{module}/{ticker}`, the client in `x-client-id`) when its time comes.
//!
//! This is what makes a demo's hit rate mean something: the warmer answers from its cache or
//! fetches from the upstream, and itself publishes the query event with the true hit or miss,
//! stamped with its own clock. So the events carry no made-up `hit` flag, and the generated
//! time only decides *when* a query is asked — scaled by the clock's speed.

use super::output::Summary;
use super::send::SendError;
use super::Origin;
use chrono::{DateTime, Utc};
use prefetch_common::contract::QueryEvent;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most queries in flight at once; beyond it the app waits (as a real app's connection pool
/// would), so a stalled warmer slows the traffic instead of piling up requests.
pub const MAX_IN_FLIGHT: usize = 256;
/// The header the warmer answers `HIT` or `MISS` in.
const CACHE_HEADER: &str = "x-cache";
/// The header naming the client.
const CLIENT_HEADER: &str = "x-client-id";

/// What the app saw, shared with whoever reports progress.
#[derive(Debug, Default)]
pub struct AppCounters {
    /// Answers from the cache (`x-cache: HIT`).
    pub hits: AtomicU64,
    /// Answers fetched from the upstream (`x-cache: MISS`).
    pub misses: AtomicU64,
    /// Queries that got no 200 (the upstream failed after the warmer's retries, or no answer).
    pub errors: AtomicU64,
}

impl AppCounters {
    /// `(hits, misses, errors)` so far.
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// When each generated query is asked: trace time `origin` happens at the instant `at`, and
/// trace time then runs `speed` times as fast as the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// A trace time (usually the trace's start).
    pub origin: DateTime<Utc>,
    /// The instant `origin` maps to.
    pub at: Instant,
    /// Trace seconds per wall second (1 = real time).
    pub speed: f64,
}

impl Clock {
    /// The instant the query of trace time `ts` is due.
    pub fn due(&self, ts: DateTime<Utc>) -> Instant {
        let trace = (ts - self.origin).to_std().unwrap_or_default();
        self.at + trace.div_f64(self.speed.max(1e-9))
    }
}

/// Asks the read-through at `base` for every event when its time comes, until the events end
/// or `stop` is cancelled; waits for the queries in flight. Fails if the warmer does not
/// answer `GET {base}/healthz` at the start.
pub async fn ask_cache(
    events: impl Iterator<Item = (QueryEvent, Origin)>,
    base: &str,
    clock: Clock,
    counters: Arc<AppCounters>,
    summary: &mut Summary,
    stop: CancellationToken,
) -> Result<(), SendError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()
        .map_err(|e| SendError::Client(e.to_string()))?;
    let base_url =
        reqwest::Url::parse(base).map_err(|e| SendError::Client(format!("{base}: {e}")))?;
    let health = format!("{base}/healthz");
    match client.get(&health).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            return Err(SendError::Unreachable {
                url: health,
                reason: format!("answered {}", r.status()),
            })
        }
        Err(e) => {
            return Err(SendError::Unreachable { url: health, reason: super::send::chain(&e) })
        }
    }
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    for (event, origin) in events {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(clock.due(event.ts)) => {}
        }
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let mut url = base_url.clone();
        url.path_segments_mut()
            .map_err(|()| SendError::Client(format!("{base} cannot be a base URL")))?
            .pop_if_empty()
            .extend(["v1", "cache", event.module.as_str(), event.ticker.as_str()]);
        let mut request = client.get(url);
        if let Some(c) = &event.client {
            request = request.header(CLIENT_HEADER, c.as_str());
        }
        let counters = counters.clone();
        tokio::spawn(async move {
            let counter = match request.send().await {
                Ok(r) if r.status().is_success() => {
                    let hit = r
                        .headers()
                        .get(CACHE_HEADER)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"hit"));
                    // Read the body as an app would, so the connection goes back to the pool.
                    let _ = r.bytes().await;
                    if hit {
                        &counters.hits
                    } else {
                        &counters.misses
                    }
                }
                _ => &counters.errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        summary.record(&event, origin);
    }
    // Every query in flight ends within the client's timeout.
    let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
    Ok(())
}
