//! The upstream data API: one GET per key from a URL template (HTTPS with the platform's roots
//! plus `--upstream-ca`, credentials as headers or query parameters), with a time limit,
//! retries with jittered exponential backoff, and — for warming — a concurrency limit and a rate
//! limit (per instance, or shared by the cluster, `cluster.rs`) so warming never exceeds the
//! upstream's quota. Demand fetches take a slot of the same limit without waiting for it.
//!
//! The upstream's answers are read as a cache proxy reads them: 404 is an answer (the key does
//! not exist, [`FetchError::NotFound`]), 429 and 503 with `Retry-After` pause every warm for as
//! long as asked and delay the retry, and `Cache-Control: max-age` may cap the entry's TTL.
//! Errors are returned (and counted by status class), never panicked on: a failing upstream
//! leaves the cache as it was. URLs in errors and logs are redacted (`credentials.rs`).

use crate::cache::Source;
use crate::cluster::{Cluster, Limiter};
use crate::credentials::{describe, redact_url};
use crate::headers::{parse_cache_control, parse_retry_after};
use crate::metrics::Metrics;
use crate::pacing::backoff;
use crate::policy::Key;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderMap, CACHE_CONTROL, RETRY_AFTER};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Longest wait between two attempts, whatever the backoff base; a `Retry-After` longer than
/// this ends the fetch instead of waiting (the caller answers 503 with it).
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Characters left as they are in a path segment (RFC 3986 unreserved); everything else in a
/// ticker or module (`^`, `=`, `/`) is percent-encoded.
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
    /// Headers sent with every request (credentials; values marked sensitive).
    pub headers: HeaderMap,
    /// Query parameters appended to every URL (credentials).
    pub query: Vec<(String, String)>,
    /// PEM certificates trusted besides the platform's roots (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// Whether the upstream's `Cache-Control` may shorten an entry's TTL.
    pub honor_cache_control: bool,
}

impl UpstreamConfig {
    /// Defaults (as the flags have them) for `url_template`.
    pub fn new(url_template: impl Into<String>) -> Self {
        Self {
            url_template: url_template.into(),
            concurrency: 8,
            timeout: Duration::from_secs(5),
            retries: 2,
            backoff: Duration::from_millis(200),
            rate: 20.0,
            burst: 10,
            rate_max_wait: Duration::from_secs(10),
            headers: HeaderMap::new(),
            query: Vec::new(),
            ca_pem: None,
            honor_cache_control: false,
        }
    }
}

/// The upstream client could not be built (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The URL template does not make URLs.
    #[error("--upstream-url {template}: {why}")]
    Template {
        /// The template, redacted.
        template: String,
        /// What is wrong.
        why: String,
    },
    /// The CA file holds no usable certificate.
    #[error("--upstream-ca: {0}")]
    Ca(String),
    /// The HTTP client refused its settings.
    #[error("upstream HTTP client: {0}")]
    Client(String),
}

/// Why a fetch gave up. Every URL in it is redacted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// No concurrency slot and rate-limit slot within the maximum wait (warming only).
    #[error("rate limit: no request slot within {0:?}")]
    RateLimited(Duration),
    /// The upstream answered 404: it has no such key. An answer, not a failure.
    #[error("upstream has nothing at {url} (HTTP 404)")]
    NotFound {
        /// The URL asked.
        url: String,
    },
    /// The upstream answered with a non-success status (the last one, after retries).
    #[error("upstream answered HTTP {status} for {url}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The URL asked.
        url: String,
        /// What its `Retry-After` asked for (429, 503).
        retry_after: Option<Duration>,
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
        /// What the HTTP client said (without the URL).
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
            Self::RateLimited(_) | Self::InvalidBody { .. } | Self::NotFound { .. } => false,
        }
    }

    /// The upstream's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The JSON body.
    pub body: serde_json::Value,
    /// The longest the upstream lets a shared cache keep it (`Cache-Control`), when
    /// `--honor-cache-control` is on and it said; zero: do not store.
    pub max_age: Option<Duration>,
}

/// The upstream client. Shared by the warm loop and the read-through handler.
pub struct Upstream {
    client: reqwest::Client,
    cfg: UpstreamConfig,
    permits: Semaphore,
    limiter: Limiter,
    metrics: Metrics,
}

/// The URL of `key` under `template`, with both values percent-encoded.
pub fn url_for(template: &str, key: &Key) -> String {
    template
        .replace("{module}", &utf8_percent_encode(key.module.as_str(), SEGMENT).to_string())
        .replace("{ticker}", &utf8_percent_encode(key.ticker.as_str(), SEGMENT).to_string())
}

impl Upstream {
    /// A client for `cfg`, counting into `metrics`; the rate limit is the cluster's when a
    /// cluster is given, else this instance's.
    pub fn new(
        cfg: UpstreamConfig,
        metrics: Metrics,
        cluster: Option<Cluster>,
    ) -> Result<Self, SetupError> {
        let probe = cfg.url_template.replace("{module}", "m").replace("{ticker}", "T");
        let template_error =
            |why: String| SetupError::Template { template: redact_url(&cfg.url_template), why };
        match reqwest::Url::parse(&probe) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => {
                return Err(template_error(format!("scheme {} is not http or https", u.scheme())))
            }
            Err(e) => return Err(template_error(e.to_string())),
        }
        // Redirects within the upstream's own scheme, host and port are followed (a data API
        // behind a moved path still works); one that leaves them is not, since reqwest would
        // carry custom credential headers (`X-Api-Key`) along: it ends the fetch as a 3xx.
        // The timeout is set per request.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let (next, first) = (attempt.url(), &attempt.previous()[0]);
            let same = next.scheme() == first.scheme()
                && next.host_str() == first.host_str()
                && next.port_or_known_default() == first.port_or_known_default();
            if !same || attempt.previous().len() > 5 {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .redirect(redirects)
            .default_headers(cfg.headers.clone());
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| SetupError::Ca(describe(e)))?;
            if certs.is_empty() {
                return Err(SetupError::Ca("no PEM certificate in the file".into()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder.build().map_err(|e| SetupError::Client(describe(e)))?;
        let limiter = match cluster {
            Some(c) => Limiter::global(c, cfg.rate, cfg.burst),
            None => Limiter::local(cfg.rate, cfg.burst),
        };
        Ok(Self { client, permits: Semaphore::new(cfg.concurrency.max(1)), limiter, cfg, metrics })
    }

    /// `instance` or `cluster`: how far the rate limit reaches.
    pub fn limit_scope(&self) -> &'static str {
        self.limiter.scope()
    }

    /// The longest one fetch can take, retries included (the lease a demand fetch holds).
    pub fn max_fetch_time(&self) -> Duration {
        let attempts = self.cfg.retries.saturating_add(1);
        self.cfg.timeout.saturating_mul(attempts)
            + self.cfg.backoff.saturating_mul(1 << self.cfg.retries.min(8)).min(BACKOFF_CAP)
    }

    fn url(&self, key: &Key) -> String {
        let raw = url_for(&self.cfg.url_template, key);
        if self.cfg.query.is_empty() {
            return raw;
        }
        match reqwest::Url::parse(&raw) {
            Ok(mut u) => {
                u.query_pairs_mut().extend_pairs(self.cfg.query.iter());
                u.to_string()
            }
            Err(_) => raw,
        }
    }

    /// Fetches `key`'s JSON body. Warm fetches wait for a concurrency slot, then the rate limit
    /// (or give up with [`FetchError::RateLimited`]); demand fetches, an app waiting on
    /// them, take a slot of the limit without waiting. Retryable failures are retried with
    /// jittered backoff, at least as late as the upstream's `Retry-After`.
    pub async fn fetch(&self, key: &Key, source: Source) -> Result<Fetched, FetchError> {
        let url = self.url(key);
        let shown = redact_url(&url);
        let mut attempt = 0;
        loop {
            let result = self.attempt(&url, &shown, source).await;
            let retry_after = result.as_ref().err().and_then(FetchError::retry_after);
            if let Some(d) = retry_after {
                self.limiter.pause(d).await;
            }
            match result {
                Ok(v) => return Ok(v),
                Err(e)
                    if e.retryable()
                        && attempt < self.cfg.retries
                        && retry_after.is_none_or(|d| d <= BACKOFF_CAP) =>
                {
                    let wait = backoff(attempt, self.cfg.backoff, BACKOFF_CAP)
                        .max(retry_after.unwrap_or_default());
                    tracing::debug!(url = %shown, attempt, error = %e, wait_ms = wait.as_millis() as u64, "Upstream attempt failed; retrying.");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => {
                    if !matches!(e, FetchError::RateLimited(_) | FetchError::NotFound { .. }) {
                        tracing::warn!(url = %shown, attempts = attempt + 1, source = source.label(), error = %e, "Upstream fetch failed.");
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn attempt(&self, url: &str, shown: &str, source: Source) -> Result<Fetched, FetchError> {
        let warm = source == Source::Warm;
        // The concurrency slot first, then the rate's: a request granted its rate slot goes at
        // once. The other way round, requests granted while every slot was busy (a slow
        // upstream) would queue for slots and reach the upstream together when they free,
        // over the rate. `--rate-max-wait` bounds both waits together, so under a load the
        // quota cannot serve, warms are dropped instead of queueing without end.
        let deadline = tokio::time::Instant::now() + self.cfg.rate_max_wait;
        let _permit = if warm {
            match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
                // The semaphore is never closed; a closed one would only mean no limit.
                Ok(p) => p.ok(),
                Err(_) => return Err(FetchError::RateLimited(self.cfg.rate_max_wait)),
            }
        } else {
            None
        };
        let max_wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let grant = self.limiter.acquire(max_wait, !warm).await;
        if grant.fell_back {
            self.metrics.rate_limiter_fallback();
        }
        if !grant.go {
            return Err(FetchError::RateLimited(self.cfg.rate_max_wait));
        }
        let started = Instant::now();
        let result = self.get(url, shown).await;
        let class = match &result {
            Ok(_) | Err(FetchError::InvalidBody { .. }) => "2xx",
            Err(FetchError::NotFound { .. }) => "4xx",
            Err(FetchError::Status { status, .. }) => match status {
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Err(FetchError::Timeout { .. }) => "timeout",
            Err(_) => "error",
        };
        self.metrics.upstream(source, class, started.elapsed());
        if let Err(FetchError::Status { status: s @ (429 | 503), retry_after, .. }) = &result {
            self.metrics.throttled(*s, retry_after.is_some());
        }
        result
    }

    async fn get(&self, url: &str, shown: &str) -> Result<Fetched, FetchError> {
        let timeout = self.cfg.timeout;
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout { url: shown.to_owned(), timeout }
            } else {
                FetchError::Transport { url: shown.to_owned(), message: describe(e) }
            }
        };
        let resp = self.client.get(url).timeout(timeout).send().await.map_err(classify)?;
        let status = resp.status();
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound { url: shown.to_owned() });
        }
        if !status.is_success() {
            let retry_after = matches!(status.as_u16(), 429 | 503)
                .then(|| header(RETRY_AFTER).and_then(|v| parse_retry_after(v, chrono::Utc::now())))
                .flatten();
            return Err(FetchError::Status {
                status: status.as_u16(),
                url: shown.to_owned(),
                retry_after,
            });
        }
        let max_age = if self.cfg.honor_cache_control {
            header(CACHE_CONTROL).and_then(parse_cache_control)
        } else {
            None
        };
        let body = resp.bytes().await.map_err(classify)?;
        let body = serde_json::from_slice(&body).map_err(|e| FetchError::InvalidBody {
            url: shown.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Fetched { body, max_age })
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
        let key = Key {
            module: Module::parse("price").unwrap(),
            ticker: Ticker::parse("^GSPC").unwrap(),
        };
        assert_eq!(
            url_for("https://h/api/v3/{module}/{ticker}", &key),
            "https://h/api/v3/price/%5EGSPC"
        );
    }
}
