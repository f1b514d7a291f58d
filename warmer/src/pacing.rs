//! Pacing of upstream requests: a token bucket (requests per second with a burst), jitter, and
//! exponential backoff with full jitter.
//!
//! [`TokenBucket`] is pure and takes `now` explicitly, so tests drive it by hand;
//! [`RateLimiter`] wraps it for async callers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket that hands out reservations: a caller gets either "go now", "go after this
/// wait" (its token is already taken, so later callers queue behind it), or "not within your
/// maximum wait" (nothing taken). Over any window of length `t` it grants at most
/// `burst + rate * t` requests.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// With no rate (unlimited), a pause asked by the upstream still holds requests back.
    paused_until: Option<Instant>,
}

impl TokenBucket {
    /// `rate` tokens per second, holding at most `burst` (at least 1); starts full.
    /// A rate of 0 means no limit.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: rate.max(0.0), burst, tokens: burst, last: now, paused_until: None }
    }

    /// Reserves one request at `now`: `Some(wait)` to go after `wait`, or `None` when the wait
    /// would exceed `max_wait` (then nothing is reserved).
    pub fn reserve(&mut self, now: Instant, max_wait: Duration) -> Option<Duration> {
        if self.rate == 0.0 {
            let wait =
                self.paused_until.map_or(Duration::ZERO, |p| p.saturating_duration_since(now));
            return (wait <= max_wait).then_some(wait);
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Some(Duration::ZERO);
        }
        // Tokens may be negative: reservations already queued. Ours comes after theirs.
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.rate);
        if wait > max_wait {
            return None;
        }
        self.tokens -= 1.0;
        Some(wait)
    }

    /// Takes a token at `now` whatever the wait (a demand fetch: an app is waiting). The debt
    /// delays later reservations, so warming gives way to demand.
    pub fn take(&mut self, now: Instant) {
        if self.rate > 0.0 {
            self.refill(now);
            self.tokens -= 1.0;
        }
    }

    /// No reservation goes before `now + d`; after it, the steady rate (no burst).
    pub fn pause(&mut self, now: Instant, d: Duration) {
        if self.rate > 0.0 {
            self.refill(now);
            self.tokens = self.tokens.min(1.0 - d.as_secs_f64() * self.rate);
        } else {
            self.paused_until = Some(self.paused_until.map_or(now + d, |p| p.max(now + d)));
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }
}

/// A shared [`TokenBucket`] for async callers.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Mutex<TokenBucket>,
}

impl RateLimiter {
    /// `rate` requests per second (0: unlimited) with bursts of up to `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { bucket: Mutex::new(TokenBucket::new(rate, burst, Instant::now())) }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        // A panic elsewhere while holding the lock cannot leave the bucket inconsistent
        // (every update is a plain assignment), so keep using it.
        self.bucket.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a request slot; `false` (without waiting) when none is free within `max_wait`.
    pub async fn acquire(&self, max_wait: Duration) -> bool {
        self.acquire_or_take(max_wait, false).await
    }

    /// [`acquire`](Self::acquire), or with `force` [`TokenBucket::take`] (always `true`, no wait).
    pub async fn acquire_or_take(&self, max_wait: Duration, force: bool) -> bool {
        if force {
            self.bucket().take(Instant::now());
            return true;
        }
        let reserved = self.bucket().reserve(Instant::now(), max_wait);
        match reserved {
            Some(wait) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                true
            }
            None => false,
        }
    }

    /// No reservation before `d` from now (the upstream said `Retry-After`).
    pub fn pause(&self, d: Duration) {
        self.bucket().pause(Instant::now(), d);
    }
}

/// A uniformly random fraction in [0, 1). Not for secrets: it only spreads requests in time.
pub fn random_unit() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // SplitMix64 over a shared counter, mixed with the clock so processes differ.
    let mut z = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A random delay in [0, `max`).
pub fn jitter(max: Duration) -> Duration {
    max.mul_f64(random_unit())
}

/// The wait before retry number `attempt` (0-based): full jitter over `base * 2^attempt`,
/// capped at `cap`, so retries of many keys do not arrive in lockstep.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    jitter(ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_grants_burst_then_the_rate_and_queues_reservations() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t0);
        let max = Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(b.reserve(t0, max), Some(Duration::ZERO));
        }
        // The next ones queue 100 ms apart.
        let w1 = b.reserve(t0, max).unwrap();
        let w2 = b.reserve(t0, max).unwrap();
        assert!((w1.as_secs_f64() - 0.1).abs() < 1e-9, "{w1:?}");
        assert!((w2.as_secs_f64() - 0.2).abs() < 1e-9, "{w2:?}");
        // A caller that will not wait 300 ms gets nothing and takes nothing.
        assert_eq!(b.reserve(t0, Duration::from_millis(250)), None);
        assert!((b.reserve(t0, max).unwrap().as_secs_f64() - 0.3).abs() < 1e-9);
        // 350 ms later the debt of 3 is paid and half a token accrued: a 50 ms wait.
        let t1 = t0 + Duration::from_millis(350);
        assert!((b.reserve(t1, max).unwrap().as_secs_f64() - 0.05).abs() < 1e-9);
        // Idle for long: refilled to the burst, no more.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.reserve(t2, max), Some(Duration::ZERO));
        }
        assert!(b.reserve(t2, max).unwrap() > Duration::ZERO);
    }

    #[test]
    fn bucket_never_exceeds_burst_plus_rate_times_window() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 2, t0);
        // Callers arriving every 10 ms for 3 s; record when each is allowed to go.
        let mut go: Vec<f64> = Vec::new();
        for i in 0..300 {
            let now = t0 + Duration::from_millis(i * 10);
            if let Some(w) = b.reserve(now, Duration::from_millis(50)) {
                go.push((now + w - t0).as_secs_f64());
            }
        }
        for (i, &start) in go.iter().enumerate() {
            let in_window = go[i..].iter().take_while(|&&t| t < start + 1.0).count();
            assert!(in_window <= 2 + 5, "{in_window} requests in the second from {start}");
        }
        assert!(go.len() >= 15, "the rate is actually used: {}", go.len());
    }

    #[test]
    fn demand_debt_and_upstream_pauses_delay_later_reservations() {
        let t0 = Instant::now();
        let max = Duration::from_secs(60);
        let mut b = TokenBucket::new(10.0, 1, t0);
        b.take(t0);
        b.take(t0);
        // One token of burst, two taken: the next reservation waits for two intervals.
        assert!((b.reserve(t0, max).unwrap().as_secs_f64() - 0.2).abs() < 1e-9);
        let mut b = TokenBucket::new(10.0, 5, t0);
        b.pause(t0, Duration::from_secs(3));
        let w = b.reserve(t0, max).unwrap();
        assert!((w.as_secs_f64() - 3.0).abs() < 1e-9, "{w:?}");
        let w2 = b.reserve(t0, max).unwrap();
        assert!((w2.as_secs_f64() - 3.1).abs() < 1e-9, "no burst after a pause: {w2:?}");
        assert_eq!(b.reserve(t0, Duration::from_secs(1)), None);
        let mut u = TokenBucket::new(0.0, 1, t0);
        u.pause(t0, Duration::from_secs(2));
        assert_eq!(u.reserve(t0, Duration::from_secs(1)), None, "unlimited still pauses");
        assert_eq!(u.reserve(t0 + Duration::from_secs(2), Duration::ZERO), Some(Duration::ZERO));
    }

    #[test]
    fn zero_rate_is_unlimited_and_backoff_is_bounded() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 1, t0);
        assert!((0..1000).all(|_| b.reserve(t0, Duration::ZERO) == Some(Duration::ZERO)));
        for attempt in 0..40 {
            let d = backoff(attempt, Duration::from_millis(100), Duration::from_secs(2));
            assert!(d < Duration::from_secs(2), "{d:?}");
        }
        let xs: Vec<f64> = (0..1000).map(|_| random_unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
