//! The upstream data API: one GET per key from a URL template, with a time limit, retries with
//! jittered exponential backoff, and — for warming — a concurrency limit and a token-bucket
//! rate limit so warming never exceeds the upstream's quota.
//!
//! Errors are returned (and counted by status class), never panicked on: a failing upstream
//! leaves the cache as it was.

use crate::cache::Source;
use crate::metrics::Metrics;
use crate::pacing::{backoff, RateLimiter};
use crate::policy::Key;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Longest wait between two attempts, whatever the backoff base.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Characters left as they are in a path segment (RFC 3986 unreserved); everything else in a
/// ticker or module (`^`, `=`) is percent-encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// How to reach and pace the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// URL with `{module}` and `{ticker}` placeholders.
    pub url_template: String,
    /// Most warm requests in flight at once.
    pub concurrency: usize,
    /// Time limit of one attempt, body included.
    pub timeout: Duration,
    /// Retries after a retryable failure.
    pub retries: u32,
    /// Base of the exponential backoff.
    pub backoff: Duration,
    /// Warm requests per second (0: unlimited).
    pub rate: f64,
    /// Token-bucket burst.
    pub burst: u32,
    /// Longest a warm waits for a token before it is dropped.
    pub rate_max_wait: Duration,
}

/// Why a fetch gave up.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The rate limit had no slot within the maximum wait (warming only).
    #[error("rate limit: no request slot within {0:?}")]
    RateLimited(Duration),
    /// The upstream answered with a non-success status (the last one, after retries).
    #[error("upstream answered HTTP {status} for {url}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The URL asked.
        url: String,
    },
    /// The last attempt timed out.
    #[error("upstream did not answer {url} within {timeout:?}")]
    Timeout {
        /// The URL asked.
        url: String,
        /// The per-attempt limit.
        timeout: Duration,
    },
    /// The last attempt could not connect or was cut off.
    #[error("upstream request to {url} failed: {message}")]
    Transport {
        /// The URL asked.
        url: String,
        /// What the HTTP client said.
        message: String,
    },
    /// The upstream answered 2xx with a body that is not JSON; it is not cached.
    #[error("upstream answered {url} with a body that is not JSON: {message}")]
    InvalidBody {
        /// The URL asked.
        url: String,
        /// The parse error.
        message: String,
    },
}

impl FetchError {
    fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Timeout { .. } | Self::Transport { .. } => true,
            Self::RateLimited(_) | Self::InvalidBody { .. } => false,
        }
    }
}

/// The upstream client. Shared by the warm loop and the read-through handler.
pub struct Upstream {
    client: reqwest::Client,
    cfg: UpstreamConfig,
    permits: Semaphore,
    limiter: RateLimiter,
    metrics: Metrics,
}

/// The URL of `key` under `template`, with both values percent-encoded.
pub fn url_for(template: &str, key: &Key) -> String {
    template
        .replace("{module}", &utf8_percent_encode(key.module.as_str(), SEGMENT).to_string())
        .replace("{ticker}", &utf8_percent_encode(key.ticker.as_str(), SEGMENT).to_string())
}

impl Upstream {
    /// A client for `cfg`, counting into `metrics`.
    pub fn new(cfg: UpstreamConfig, metrics: Metrics) -> Self {
        // Redirects are followed (a data API behind a moved path still works); the per-attempt
        // timeout is set on each request.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .build()
            .unwrap_or_default();
        Self {
            client,
            permits: Semaphore::new(cfg.concurrency.max(1)),
            limiter: RateLimiter::new(cfg.rate, cfg.burst),
            cfg,
            metrics,
        }
    }

    /// Fetches `key`'s JSON body. Warm fetches wait for the rate limit (or give up with
    /// [`FetchError::RateLimited`]) and a concurrency slot; demand fetches, an app waiting on
    /// them, do neither. Retryable failures are retried with jittered backoff.
    pub async fn fetch(&self, key: &Key, source: Source) -> Result<serde_json::Value, FetchError> {
        let url = url_for(&self.cfg.url_template, key);
        let mut attempt = 0;
        loop {
            let result = self.attempt(&url, source).await;
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && attempt < self.cfg.retries => {
                    let wait = backoff(attempt, self.cfg.backoff, BACKOFF_CAP);
                    tracing::debug!(%url, attempt, error = %e, wait_ms = wait.as_millis() as u64, "Upstream attempt failed; retrying.");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => {
                    if !matches!(e, FetchError::RateLimited(_)) {
                        tracing::warn!(%url, attempts = attempt + 1, source = source.label(), error = %e, "Upstream fetch failed.");
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn attempt(&self, url: &str, source: Source) -> Result<serde_json::Value, FetchError> {
        let _permit = if source == Source::Warm {
            if !self.limiter.acquire(self.cfg.rate_max_wait).await {
                return Err(FetchError::RateLimited(self.cfg.rate_max_wait));
            }
            // The semaphore is never closed, so acquiring cannot fail; a closed one would only
            // mean no limit.
            self.permits.acquire().await.ok()
        } else {
            None
        };
        let started = Instant::now();
        let result = self.get(url).await;
        let class = match &result {
            Ok(_) | Err(FetchError::InvalidBody { .. }) => "2xx",
            Err(FetchError::Status { status, .. }) => match status {
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Err(FetchError::Timeout { .. }) => "timeout",
            Err(_) => "error",
        };
        self.metrics.upstream(source, class, started.elapsed());
        result
    }

    async fn get(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        let timeout = self.cfg.timeout;
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout { url: url.to_owned(), timeout }
            } else {
                FetchError::Transport { url: url.to_owned(), message: e.to_string() }
            }
        };
        let resp = self.client.get(url).timeout(timeout).send().await.map_err(classify)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(FetchError::Status { status: status.as_u16(), url: url.to_owned() });
        }
        let body = resp.bytes().await.map_err(classify)?;
        serde_json::from_slice(&body)
            .map_err(|e| FetchError::InvalidBody { url: url.to_owned(), message: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefetch_common::contract::{Module, Ticker};

    #[test]
    fn url_values_are_percent_encoded() {
        let key = Key {
            module: Module::parse("price").unwrap(),
            ticker: Ticker::parse("^gspc").unwrap(),
        };
        assert_eq!(url_for("http://h:8000/{module}/{ticker}", &key), "http://h:8000/price/%5EGSPC");
        let key = Key {
            module: Module::parse("fx_rate").unwrap(),
            ticker: Ticker::parse("EURUSD=X").unwrap(),
        };
        assert_eq!(
            url_for("http://h/q?m={module}&t={ticker}", &key),
            "http://h/q?m=fx_rate&t=EURUSD%3DX"
        );
        let key =
            Key { module: Module::parse("news").unwrap(), ticker: Ticker::parse("BRK.B").unwrap() };
        assert_eq!(url_for("http://h/{ticker}/{module}", &key), "http://h/BRK.B/news");
    }
}
