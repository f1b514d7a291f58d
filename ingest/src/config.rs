//! Command-line flags (each with an environment fallback) for the `ingest` binary.

use clap::Parser;
use prefetch_common::cli::parse_duration;
use prefetch_common::contract::MAX_FUTURE_SKEW;
use prefetch_common::kafka::{KafkaArgs, TopicArgs};
use prefetch_common::telemetry::LogArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Smart Prefetch ingest: accepts query events over HTTP (or replays a JSON-lines log) and
/// writes them to the query-events topic, keyed by ticker. An HTTP 2xx means Kafka has
/// acknowledged every event of the request.
#[derive(Debug, Clone, Parser)]
#[command(name = "ingest", version, about, long_about = None)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "PREFETCH_INGEST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Replay a JSON-lines log of query events into the topic instead of serving HTTP
    /// (`-` reads standard input). Invalid lines are reported by line number and skipped; the
    /// exit code is non-zero when any line was skipped or not acknowledged.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,

    /// Largest accepted request body in bytes (larger ones get 413).
    #[arg(long, env = "PREFETCH_INGEST_MAX_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long a request may wait for Kafka to acknowledge its events before the answer is
    /// 503 with Retry-After (e.g. `5s`, `1500ms`).
    #[arg(long, env = "PREFETCH_INGEST_PRODUCE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub produce_timeout: Duration,

    /// A producer's `ts` more than this far ahead of ingest's clock is replaced by ingest's
    /// clock (and counted in `smart_prefetch_ingest_events_clamped_total`) instead of being
    /// written as sent: a producer whose clock runs fast cannot move event time forward. At
    /// most 5m, the bound every consumer re-checks.
    #[arg(long, env = "PREFETCH_INGEST_MAX_CLOCK_SKEW", default_value = "1m", value_parser = parse_skew)]
    pub max_clock_skew: Duration,

    /// Base URL of the warmer's admin API, which answers `action=status` (cache counters and
    /// size) and `action=warmup`; with several warmers, all of them, comma-separated (status
    /// adds their counters up, warm-up asks each). Ingest sends them its --api-token.
    #[arg(long, env = "PREFETCH_INGEST_WARMER_URL", default_value = "http://127.0.0.1:8082")]
    pub warmer_url: String,

    /// Bearer token required by the mutating API actions (`config` changes, `warmup`); unset,
    /// they are open. Clients send `Authorization: Bearer <token>`.
    #[arg(long, env = "PREFETCH_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Bearer token the read actions (`status`, `stats`, `predictions`, `GET config`) require,
    /// as the warmer's --read-token guards its read routes; the API token is accepted too.
    /// Unset: they are open. `record`, `/v1/events`, health, readiness and metrics are not
    /// guarded by it. Also sent to the warmers for `status` when ingest has no API token.
    #[arg(long, env = "PREFETCH_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,

    /// Browser origin allowed to call ingest with `fetch` (CORS), e.g.
    /// `https://app.example.com`; repeat the flag or separate with commas for several, `*` for
    /// any. Unset (the default), no CORS headers are sent and browsers on other origins cannot
    /// read ingest's answers.
    #[arg(long = "cors-origin", env = "PREFETCH_INGEST_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Snapshots older than this are left out of `action=stats` (analyzers that stopped or
    /// restarted under a new id).
    #[arg(long, env = "PREFETCH_INGEST_STATS_MAX_AGE", default_value = "5m", value_parser = parse_duration)]
    pub stats_max_age: Duration,

    /// How long to wait for Kafka at start-up before giving up with an error.
    #[arg(long, env = "PREFETCH_INGEST_STARTUP_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub startup_timeout: Duration,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub topics: TopicArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
}

/// A `--max-clock-skew`: a duration of at most [`MAX_FUTURE_SKEW`].
fn parse_skew(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let max = MAX_FUTURE_SKEW.to_std().unwrap_or_default();
    if d > max {
        return Err(format!(
            "at most {}s: the analyzer refuses events further ahead than that",
            max.as_secs()
        ));
    }
    Ok(d)
}

impl Config {
    /// Defaults for everything but the brokers; what tests and embedding callers start from.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self::parse_from(["ingest", "--brokers", &brokers.into()])
    }
}
