//! Warmers as one cluster, through the Redis cache they share: one upstream rate limit for all
//! of them (GCRA, one round trip), a short lease per key so a miss storm across instances makes
//! one upstream call, and the useful-warm ledger, so a hit served by any instance counts a warm
//! made by another.
//!
//! Every key lives under `<redis-prefix>cluster:` — warmers with the same Redis and prefix are
//! one cluster. With the file cache there is no cluster: the rate limit and the ledger stay per
//! instance ([`Limiter::Local`], `state::Ledger`'s map).
//!
//! The GCRA state is one number, the theoretical arrival time (TAT) of the next request in
//! microseconds of Redis's own clock (`TIME`), so instances with skewed clocks still agree. A
//! request may go at `max(now, TAT - tau)` with `tau = (burst - 1) / rate`; granting it moves
//! TAT on by `1 / rate`. Over any window of `t` seconds at most `burst + rate * t` requests are
//! granted, cluster-wide.

use crate::pacing::{random_unit, RateLimiter};
use redis::aio::ConnectionManager;
use redis::RedisError;
use std::time::Duration;

/// Reserves one request. KEYS: tat. ARGV: interval µs, tau µs, max wait µs, force (1: take a
/// slot now whatever the wait, for demand fetches). Returns the wait in µs, or -1 (nothing
/// reserved) when it would exceed the maximum.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local go = tat - tau
if go < now then go = now end
local wait = go - now
if ARGV[4] == '1' then
  wait = 0
elseif wait > tonumber(ARGV[3]) then
  return -1
end
local new = tat + T
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now + tau) / 1000) + 1000)
return math.floor(wait)
";

/// The upstream asked everyone to wait (429/503 with `Retry-After`): no request before
/// now + ARGV[1] µs, then the steady rate (no burst). KEYS: tat. ARGV: pause µs, tau µs.
const PAUSE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local want = now + tonumber(ARGV[1]) + tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < want then
  redis.call('SET', KEYS[1], string.format('%.0f', want), 'PX', math.ceil((want - now) / 1000) + 1000)
end
return 1
";

/// Releases a lease only if this instance still holds it. KEYS: lease. ARGV: holder id.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A hit at ARGV[1] (ms): the warmed entry's first hit when the mark exists and the hit is not
/// older than the warm. Returns the warm's time in ms (the mark is removed), or -1.
/// KEYS: mark.
const LEDGER_HIT: &str = r"
local stored = redis.call('GET', KEYS[1])
if not stored then return -1 end
if tonumber(ARGV[1]) < tonumber(stored) then return -1 end
redis.call('DEL', KEYS[1])
return tonumber(stored)
";

/// Keeps a lease only if this instance still holds it. KEYS: lease. ARGV: holder id, ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// Longest one cluster operation may take before the caller goes on without it (the
/// connection's own response timeout is 5 s, too long for a warm or an app to wait).
const OP_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a demand-fetch lease lives unless renewed; the holder renews it every third of
/// that while its fetch runs, so a warmer that dies (kill -9) holds others up at most this long.
pub const LEASE: Duration = Duration::from_secs(3);

/// The shared half of a cluster of warmers: a Redis connection, the key prefix, and this
/// instance's id (the value of the leases it holds).
#[derive(Clone)]
pub struct Cluster {
    conn: ConnectionManager,
    prefix: String,
    id: String,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 4)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4).max(1)
}

impl Cluster {
    /// The cluster of warmers sharing `conn` under `prefix`.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        let id = format!("{}-{:x}", std::process::id(), (random_unit() * 2f64.powi(52)) as u64);
        Self { conn, prefix: format!("{prefix}cluster:"), id }
    }

    fn key(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// Runs `cmd`, giving up after [`OP_TIMEOUT`].
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(OP_TIMEOUT, cmd.query_async(&mut conn)).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the cluster's Redis did not answer within 1 s",
            ))),
        }
    }

    fn script(&self, script: &str, keys: &[String]) -> redis::Cmd {
        let mut c = redis::cmd("EVAL");
        c.arg(script).arg(keys.len()).arg(keys);
        c
    }

    /// GCRA parameters: the interval between requests and the burst tolerance, in µs.
    fn gcra(rate: f64, burst: u32) -> (f64, f64) {
        let t = 1e6 / rate;
        (t, t * f64::from(burst.max(1) - 1))
    }

    /// Reserves one upstream request at `rate`/s with `burst`: `Some(wait)` to go after it, or
    /// `None` when the wait would exceed `max_wait` (nothing reserved). `force` takes a slot
    /// now whatever the schedule (it still delays later reservations).
    pub async fn reserve(
        &self,
        rate: f64,
        burst: u32,
        max_wait: Duration,
        force: bool,
    ) -> Result<Option<Duration>, RedisError> {
        let (t, tau) = Self::gcra(rate, burst);
        let mut c = self.script(GCRA, &[self.key("ratelimit")]);
        c.arg(t).arg(tau).arg(micros(max_wait)).arg(if force { 1 } else { 0 });
        let wait: i64 = self.run(&c).await?;
        Ok((wait >= 0).then(|| Duration::from_micros(wait as u64)))
    }

    /// No request of the cluster before `pause` from now (the upstream said `Retry-After`).
    pub async fn pause(&self, rate: f64, burst: u32, pause: Duration) -> Result<(), RedisError> {
        let (_, tau) = Self::gcra(rate, burst);
        let mut c = self.script(PAUSE, &[self.key("ratelimit")]);
        c.arg(micros(pause)).arg(tau);
        self.run::<i64>(&c).await.map(|_| ())
    }

    fn lease_key(&self, member: &str) -> String {
        self.key(&format!("lock:{member}"))
    }

    /// Takes the lease on `member` for [`LEASE`]; false when another instance holds it.
    pub async fn try_lock(&self, member: &str) -> Result<bool, RedisError> {
        let mut c = redis::cmd("SET");
        c.arg(self.lease_key(member)).arg(&self.id).arg("NX").arg("PX").arg(millis(LEASE));
        let ok: Option<String> = self.run(&c).await?;
        Ok(ok.is_some())
    }

    /// Extends this instance's lease on `member` by [`LEASE`]; false if it no longer holds it.
    pub async fn renew(&self, member: &str) -> Result<bool, RedisError> {
        let mut c = self.script(RENEW, &[self.lease_key(member)]);
        c.arg(&self.id).arg(millis(LEASE));
        self.run::<i64>(&c).await.map(|n| n > 0)
    }

    /// Whether any instance holds the lease on `member`.
    pub async fn locked(&self, member: &str) -> Result<bool, RedisError> {
        let mut c = redis::cmd("EXISTS");
        c.arg(self.lease_key(member));
        self.run::<i64>(&c).await.map(|n| n > 0)
    }

    /// Gives the lease on `member` back, if this instance still holds it.
    pub async fn unlock(&self, member: &str) -> Result<(), RedisError> {
        let mut c = self.script(UNLOCK, &[self.lease_key(member)]);
        c.arg(&self.id);
        self.run::<i64>(&c).await.map(|_| ())
    }

    /// A warmed entry of `member` was stored at `stored_ms`, live for `ttl`.
    pub async fn ledger_warmed(
        &self,
        member: &str,
        stored_ms: i64,
        ttl: Duration,
    ) -> Result<(), RedisError> {
        let mut c = redis::cmd("SET");
        c.arg(self.key(&format!("ledger:{member}"))).arg(stored_ms).arg("PX").arg(millis(ttl));
        self.run::<()>(&c).await
    }

    /// `member`'s entry now comes from a demand fetch.
    pub async fn ledger_replaced(&self, member: &str) -> Result<(), RedisError> {
        let mut c = redis::cmd("DEL");
        c.arg(self.key(&format!("ledger:{member}")));
        self.run::<i64>(&c).await.map(|_| ())
    }

    /// A hit on `member` at `ts_ms`: the warm's time in ms when this is its first hit.
    pub async fn ledger_hit(&self, member: &str, ts_ms: i64) -> Result<Option<i64>, RedisError> {
        let mut c = self.script(LEDGER_HIT, &[self.key(&format!("ledger:{member}"))]);
        c.arg(ts_ms);
        let stored: i64 = self.run(&c).await?;
        Ok((stored >= 0).then_some(stored))
    }
}

/// The upstream rate limit: per instance, or shared by the cluster (falling back to the
/// instance's own bucket, with a warning and a metric, while Redis does not answer).
pub enum Limiter {
    /// This instance's token bucket.
    Local(RateLimiter),
    /// The cluster's GCRA in Redis.
    Global {
        /// The cluster.
        cluster: Cluster,
        /// Requests per second for the whole cluster.
        rate: f64,
        /// Burst for the whole cluster.
        burst: u32,
        /// Used while Redis fails.
        fallback: RateLimiter,
    },
}

/// What a limiter decided, and whether the cluster's limiter could not be asked.
pub struct Grant {
    /// Whether the request may go (after any wait, already waited).
    pub go: bool,
    /// Redis failed and the instance's own bucket decided.
    pub fell_back: bool,
}

impl Limiter {
    /// Per instance at `rate`/s (0: unlimited) with `burst`.
    pub fn local(rate: f64, burst: u32) -> Self {
        Self::Local(RateLimiter::new(rate, burst))
    }

    /// Shared by `cluster`; a `rate` of 0 (no limit) needs no cluster.
    pub fn global(cluster: Cluster, rate: f64, burst: u32) -> Self {
        if rate <= 0.0 {
            return Self::local(rate, burst);
        }
        Self::Global { cluster, rate, burst, fallback: RateLimiter::new(rate, burst) }
    }

    /// `global` or `local`, for logs and `/v1/status`.
    pub fn scope(&self) -> &'static str {
        match self {
            Self::Local(_) => "instance",
            Self::Global { .. } => "cluster",
        }
    }

    /// Waits for a slot (a warm): not granted when none is free within `max_wait`. `force`
    /// (a demand fetch, an app waiting) takes a slot now and pushes later ones back.
    pub async fn acquire(&self, max_wait: Duration, force: bool) -> Grant {
        match self {
            Self::Local(l) => {
                Grant { go: l.acquire_or_take(max_wait, force).await, fell_back: false }
            }
            Self::Global { cluster, rate, burst, fallback } => {
                match cluster.reserve(*rate, *burst, max_wait, force).await {
                    Ok(Some(wait)) => {
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        Grant { go: true, fell_back: false }
                    }
                    Ok(None) => Grant { go: false, fell_back: false },
                    Err(e) => {
                        tracing::warn!(error = %e, "The cluster's rate limit did not answer; this instance's own limit applies meanwhile.");
                        Grant {
                            go: fallback.acquire_or_take(max_wait, force).await,
                            fell_back: true,
                        }
                    }
                }
            }
        }
    }

    /// The upstream asked for a pause of `d` (`Retry-After`): no warm goes before it ends.
    pub async fn pause(&self, d: Duration) {
        match self {
            Self::Local(l) => l.pause(d),
            Self::Global { cluster, rate, burst, fallback } => {
                fallback.pause(d);
                if let Err(e) = cluster.pause(*rate, *burst, d).await {
                    tracing::warn!(error = %e, "Could not share the upstream's Retry-After with the cluster.");
                }
            }
        }
    }
}
