//! The Redis cache, for deployments where apps and several warmers share one cache.
//!
//! An entry is `SET <prefix><module>:<ticker> <entry JSON> EX <ttl>`, so Redis itself expires
//! it. Two index keys make sweeps and size limits possible without scanning the keyspace:
//! `<prefix>index:expiry` (sorted set: member `<module>:<ticker>`, score = expiry in epoch ms)
//! and `<prefix>index:bytes` (hash: member → size), with their total in `<prefix>index:total`.
//! Writes and removals run as Lua scripts, so the entry and the index change together even
//! with several warmers writing. (Tickers are upper case, so no entry key collides with the
//! lower-case index keys.)

use super::{CacheError, CacheStats, Entry, Limits, Removed};
use crate::policy::Key;
use chrono::{DateTime, TimeZone, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// Stores an entry and updates the index. KEYS: entry, expiry zset, bytes hash, total.
/// ARGV: value, ttl seconds, member, expiry ms, size.
const PUT: &str = r"
local old = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
redis.call('INCRBY', KEYS[4], tonumber(ARGV[5]) - old)
return 1
";

/// Removes members whose expiry is still at most ARGV[2] (so an entry rewritten meanwhile by
/// another warmer survives). KEYS: expiry zset, bytes hash, total. ARGV: prefix, max expiry
/// ms, members…
const REMOVE: &str = r"
local n = 0
for i = 3, #ARGV do
  local m = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], m)
  if score and tonumber(score) <= tonumber(ARGV[2]) then
    local s = redis.call('HGET', KEYS[2], m)
    if s then redis.call('DECRBY', KEYS[3], s) end
    redis.call('HDEL', KEYS[2], m)
    redis.call('ZREM', KEYS[1], m)
    redis.call('DEL', ARGV[1] .. m)
    n = n + 1
  end
end
return n
";

/// Members handled per round trip in sweeps and evictions.
const CHUNK: isize = 500;

/// A cache in Redis. Cheap to clone (one multiplexed, self-reconnecting connection).
#[derive(Clone)]
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    limits: Limits,
}

impl RedisCache {
    /// Connects to `url`; every key written starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str, limits: Limits) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(5))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        tracing::info!(prefix, "Redis cache connected.");
        Ok(Self { conn, prefix: prefix.to_owned(), limits })
    }

    /// The connection (shared with the cluster's rate limit, leases and ledger).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The member name of `key` in the index (`<module>:<ticker>`), also the cluster's.
    pub fn member(key: &Key) -> String {
        format!("{}:{}", key.module, key.ticker)
    }

    /// The Redis key holding `key`'s entry.
    pub fn entry_key(&self, key: &Key) -> String {
        format!("{}{}", self.prefix, Self::member(key))
    }

    fn index(&self, what: &str) -> String {
        format!("{}index:{what}", self.prefix)
    }

    /// The live entry of `key` at `now`.
    pub async fn get(&self, key: &Key, now: DateTime<Utc>) -> Result<Option<Entry>, CacheError> {
        let raw: Option<Vec<u8>> =
            redis::cmd("GET").arg(self.entry_key(key)).query_async(&mut self.conn.clone()).await?;
        match raw {
            None => Ok(None),
            Some(b) => {
                let e: Entry = serde_json::from_slice(&b)?;
                Ok(e.is_live(now).then_some(e))
            }
        }
    }

    /// When `key`'s entry expires, from the index.
    pub async fn expires_at(&self, key: &Key) -> Result<Option<DateTime<Utc>>, CacheError> {
        let ms: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.index("expiry"))
            .arg(Self::member(key))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(ms.and_then(|ms| Utc.timestamp_millis_opt(ms as i64).single()))
    }

    /// Stores `entry` with `EX` set to its remaining lifetime, then evicts beyond the limits.
    pub async fn put(&self, entry: &Entry) -> Result<Removed, CacheError> {
        let value = serde_json::to_vec(entry)?;
        let key = entry.key();
        let remaining_ms = (entry.expires_at - Utc::now()).num_milliseconds().max(0);
        let ttl_s = ((remaining_ms + 999) / 1000).max(1);
        redis::cmd("EVAL")
            .arg(PUT)
            .arg(4)
            .arg(self.entry_key(&key))
            .arg(self.index("expiry"))
            .arg(self.index("bytes"))
            .arg(self.index("total"))
            .arg(&value)
            .arg(ttl_s)
            .arg(Self::member(&key))
            .arg(entry.expires_at.timestamp_millis())
            .arg(value.len())
            .query_async::<i64>(&mut self.conn.clone())
            .await?;
        Ok(Removed { expired: 0, evicted: self.evict().await? })
    }

    async fn remove(&self, members: &[String], max_expiry_ms: i64) -> Result<u64, CacheError> {
        if members.is_empty() {
            return Ok(0);
        }
        let n: u64 = redis::cmd("EVAL")
            .arg(REMOVE)
            .arg(3)
            .arg(self.index("expiry"))
            .arg(self.index("bytes"))
            .arg(self.index("total"))
            .arg(&self.prefix)
            .arg(max_expiry_ms)
            .arg(members)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(n)
    }

    /// Removes index entries of keys expired at `now` (Redis already dropped the values), then
    /// evicts beyond the limits.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Removed, CacheError> {
        let now_ms = now.timestamp_millis();
        let mut expired = 0;
        loop {
            let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.index("expiry"))
                .arg("-inf")
                .arg(now_ms)
                .arg("LIMIT")
                .arg(0)
                .arg(CHUNK)
                .query_async(&mut self.conn.clone())
                .await?;
            let n = self.remove(&members, now_ms).await?;
            expired += n;
            if (members.len() as isize) < CHUNK || n == 0 {
                break;
            }
        }
        Ok(Removed { expired, evicted: self.evict().await? })
    }

    /// Evicts soonest-expiring entries until both limits hold.
    async fn evict(&self) -> Result<u64, CacheError> {
        let mut evicted = 0;
        loop {
            let s = self.stats().await?;
            let over_entries = self.limits.max_entries > 0 && s.entries > self.limits.max_entries;
            let over_bytes = self.limits.max_bytes > 0 && s.bytes > self.limits.max_bytes;
            if !over_entries && !over_bytes {
                return Ok(evicted);
            }
            // Enough to fix the entry count; for bytes, one chunk at a time from the soonest.
            let want =
                if over_entries { (s.entries - self.limits.max_entries) as isize } else { 1 };
            let scored: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(self.index("expiry"))
                .arg(0)
                .arg(want.min(CHUNK) - 1)
                .arg("WITHSCORES")
                .query_async(&mut self.conn.clone())
                .await?;
            let Some(max_ms) = scored.iter().map(|(_, s)| *s as i64).max() else {
                return Ok(evicted);
            };
            let members: Vec<String> = scored.into_iter().map(|(m, _)| m).collect();
            let n = self.remove(&members, max_ms).await?;
            if n == 0 {
                return Ok(evicted);
            }
            evicted += n;
        }
    }

    /// Entries and bytes, from the index.
    pub async fn stats(&self) -> Result<CacheStats, CacheError> {
        let (entries, total): (u64, Option<i64>) = redis::pipe()
            .cmd("ZCARD")
            .arg(self.index("expiry"))
            .cmd("GET")
            .arg(self.index("total"))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(CacheStats { entries, bytes: total.unwrap_or(0).max(0) as u64 })
    }

    /// `PING`.
    pub async fn ping(&self) -> Result<(), CacheError> {
        redis::cmd("PING").query_async::<String>(&mut self.conn.clone()).await?;
        Ok(())
    }
}
