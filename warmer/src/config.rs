//! Command-line flags (each with an environment fallback) for the `warmer` binary, and their
//! conversion into the runtime [`WarmPolicy`], TTL table and cache location.

use crate::cache::Ttls;
use crate::credentials::{redact_url, Redacted, Secret};
use crate::policy::{Schedule, WarmPolicy};
use chrono::{NaiveTime, Weekday};
use chrono_tz::Tz;
use clap::{ArgAction, Parser};
use prefetch_common::cli::parse_duration;
use prefetch_common::contract::Module;
use prefetch_common::kafka::{KafkaArgs, TopicArgs};
use prefetch_common::telemetry::LogArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Smart Prefetch warmer: reads predictions from Kafka and fetches the predicted keys from the
/// upstream data API into the cache before apps ask; serves the cache read-through to apps
/// (publishing each query as a query event); exports hit-rate metrics with a holdback group.
#[derive(Clone, Parser)]
#[command(name = "warmer", version, about, long_about = None)]
pub struct Config {
    /// Address the HTTP API (read-through cache, status, warm-up, health, metrics) listens on.
    #[arg(long, env = "PREFETCH_WARMER_LISTEN", default_value = "0.0.0.0:8082")]
    pub listen: SocketAddr,

    /// Consumer group for the predictions topic; the query-events consumer uses
    /// `<group>.queries`.
    #[arg(long, env = "PREFETCH_WARMER_GROUP", default_value = "prefetch-warmer")]
    pub group: String,

    /// Whether warming fetches at all (off: predictions are consumed and committed only).
    /// Start-up value: once the live config topic holds a config, its `enabled` applies.
    #[arg(long, env = "PREFETCH_WARMER_ENABLED", default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub enabled: bool,

    /// Most keys warmed per batch of predictions read together, highest confidence first.
    /// Start-up value: once the live config topic holds a config, its `top_n` applies.
    #[arg(long, env = "PREFETCH_WARMER_TOP_N", default_value_t = 10)]
    pub top_n: usize,

    /// Predictions below this confidence (0–1) are not warmed. Start-up value: once the live
    /// config topic holds a config, its `min_confidence` applies.
    #[arg(long, env = "PREFETCH_WARMER_MIN_CONFIDENCE", default_value_t = 0.1, value_parser = parse_share)]
    pub min_confidence: f64,

    /// Share of keys (0–1) never warmed, by a stable hash of ticker and module: the control
    /// group whose hit rate shows the lift (`group="holdback"` in the metrics).
    #[arg(long, env = "PREFETCH_WARMER_HOLDBACK", default_value_t = 0.05, value_parser = parse_share)]
    pub holdback: f64,

    /// Hours of the market day during which warming fetches, as HH:MM-HH:MM in `--market-tz`
    /// (e.g. 09:00-16:30; an end before the start spans midnight). Default: all day.
    #[arg(long, env = "PREFETCH_WARMER_ACTIVE_HOURS", value_parser = parse_hours, value_name = "HH:MM-HH:MM")]
    pub active_hours: Option<(NaiveTime, NaiveTime)>,

    /// Weekdays on which warming fetches, in `--market-tz`: a range or list such as `mon-fri`
    /// or `mon,wed,fri`. Default: every day.
    #[arg(long, env = "PREFETCH_WARMER_ACTIVE_DAYS", value_parser = parse_days, value_name = "DAYS")]
    pub active_days: Option<Weekdays>,

    /// Time zone of the market whose hours and weekdays the schedule follows (IANA name).
    /// Start-up value: once the live config topic holds a config, its `market_tz` applies.
    #[arg(long, env = "PREFETCH_MARKET_TZ", default_value = "America/New_York", value_parser = parse_tz)]
    pub market_tz: Tz,

    /// Where the cache lives: a directory (entries at `<dir>/<module>/<ticker>.json`) or a
    /// Redis URL (`redis://host:port/db`) for deployments sharing one cache.
    #[arg(
        long,
        env = "PREFETCH_WARMER_CACHE",
        default_value = "data/prefetch_cache",
        hide_env_values = true
    )]
    pub cache: String,

    /// Prefix of every Redis key this warmer writes (entries and its two index keys).
    #[arg(long, env = "PREFETCH_WARMER_REDIS_PREFIX", default_value = "prefetch:")]
    pub redis_prefix: String,

    /// Time to live of one module's entries, as MODULE=DURATION (repeatable). Built in:
    /// price=60, news=300, fundamentals=86400; a flag overrides that module only. Start-up
    /// values: once the live config topic holds a config, its `ttl_s` table applies.
    #[arg(long = "ttl", env = "PREFETCH_WARMER_TTL", value_delimiter = ',', value_parser = parse_ttl, value_name = "MODULE=DURATION")]
    pub ttls: Vec<(Module, Duration)>,

    /// Time to live of entries of modules without a `--ttl` (start-up value; the live
    /// config's `default_ttl_s` replaces it).
    #[arg(long, env = "PREFETCH_WARMER_DEFAULT_TTL", default_value = "300s", value_parser = parse_duration)]
    pub default_ttl: Duration,

    /// Most entries the cache holds; beyond it the soonest-expiring are evicted (0: no limit).
    #[arg(long, env = "PREFETCH_WARMER_MAX_ENTRIES", default_value_t = 100_000)]
    pub max_entries: u64,

    /// Most bytes of entries the cache holds; beyond it the soonest-expiring are evicted
    /// (0: no limit).
    #[arg(long, env = "PREFETCH_WARMER_MAX_BYTES", default_value_t = 1 << 30)]
    pub max_bytes: u64,

    /// Fsync each file-cache entry and its directory before it counts as stored, so entries
    /// survive a power loss or an OS crash. Off by default: an entry appears whole either way
    /// (written aside, then renamed), the start-up scan removes one a crash left unreadable,
    /// and each fsync also waits for the filesystem's other dirty data, which put seconds on
    /// the event → warm latency at 1,000 warms/s beside a Kafka broker (BENCHMARKS.md).
    #[arg(long, env = "PREFETCH_WARMER_CACHE_FSYNC", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    pub cache_fsync: bool,

    /// How often expired entries are removed and the size gauges refreshed.
    #[arg(long, env = "PREFETCH_WARMER_SWEEP_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub sweep_interval: Duration,

    /// URL of the upstream data API for one key (http or https); `{module}` and `{ticker}` are
    /// replaced by the percent-encoded values. Put API keys in --upstream-query or
    /// --upstream-header rather than here; either way, printed URLs drop their query.
    #[arg(
        long,
        env = "PREFETCH_WARMER_UPSTREAM_URL",
        hide_env_values = true,
        default_value = "http://data-api:8000/{module}/{ticker}"
    )]
    pub upstream_url: String,

    /// PEM file of certificates trusted for an HTTPS upstream besides the platform's roots
    /// (a private CA).
    #[arg(long, env = "PREFETCH_WARMER_UPSTREAM_CA", value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,

    /// Header sent with every upstream request, as `Name: value` (repeatable), e.g.
    /// `Authorization: Bearer ${API_KEY}`. `${VAR}` is read from the environment at start-up
    /// (an unset one is a start-up error). Values never reach logs, metrics or answers.
    #[arg(long = "upstream-header", env = "PREFETCH_WARMER_UPSTREAM_HEADER", value_delimiter = '\n', hide_env_values = true, value_parser = parse_secret, value_name = "NAME: VALUE")]
    pub upstream_headers: Vec<Secret>,

    /// File of upstream headers, one `Name: value` per line (blank lines and `#` comments
    /// skipped), taken literally: keeps keys out of argv and the environment.
    #[arg(long, env = "PREFETCH_WARMER_UPSTREAM_HEADER_FILE", value_name = "FILE")]
    pub upstream_header_file: Option<PathBuf>,

    /// Query parameter appended to every upstream URL, as `name=value` (repeatable), e.g.
    /// `apikey=${API_KEY}`; `${VAR}` as for --upstream-header. Printed URLs drop their query.
    #[arg(long = "upstream-query", env = "PREFETCH_WARMER_UPSTREAM_QUERY", value_delimiter = '\n', hide_env_values = true, value_parser = parse_secret, value_name = "NAME=VALUE")]
    pub upstream_query: Vec<Secret>,

    /// How long an upstream 404 (no such key) is remembered: read-through answers 404 from the
    /// cache meanwhile instead of asking again (0: not remembered).
    #[arg(long, env = "PREFETCH_WARMER_NEGATIVE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub negative_ttl: Duration,

    /// Let the upstream's `Cache-Control` shorten an entry's TTL below its module's
    /// (`s-maxage`, else `max-age`; `no-store`, `no-cache`, `private`: not stored).
    #[arg(long, env = "PREFETCH_WARMER_HONOR_CACHE_CONTROL", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_name = "BOOL")]
    pub honor_cache_control: bool,

    /// Most warm requests in flight to the upstream at once.
    #[arg(long, env = "PREFETCH_WARMER_UPSTREAM_CONCURRENCY", default_value_t = 8)]
    pub upstream_concurrency: usize,

    /// Time limit of one upstream request, body included.
    #[arg(long, env = "PREFETCH_WARMER_UPSTREAM_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,

    /// Retries after a failed upstream request (5xx, 429, timeout, connection error; a 4xx is
    /// final), with exponential backoff and full jitter.
    #[arg(long, env = "PREFETCH_WARMER_UPSTREAM_RETRIES", default_value_t = 2)]
    pub upstream_retries: u32,

    /// Base of the retry backoff (doubled per retry, capped at 30 s, jittered).
    #[arg(long, env = "PREFETCH_WARMER_RETRY_BACKOFF", default_value = "200ms", value_parser = parse_duration)]
    pub retry_backoff: Duration,

    /// Upstream requests per second that warming may make (0: no limit). With a Redis cache
    /// and `--rate-limit-scope cluster` the limit is shared by every warmer on that Redis and
    /// prefix; otherwise it is per instance. Read-through fetches for apps never wait for it,
    /// but count against it (warming then waits longer).
    #[arg(long, env = "PREFETCH_WARMER_RATE_LIMIT", default_value_t = 20.0)]
    pub rate_limit: f64,

    /// Requests the token bucket lets through at once after a quiet spell.
    #[arg(long, env = "PREFETCH_WARMER_RATE_BURST", default_value_t = 10)]
    pub rate_burst: u32,

    /// How far `--rate-limit` reaches: `cluster` (every warmer sharing the Redis cache and
    /// prefix; GCRA in Redis) or `instance` (this process). With a file cache it is always
    /// `instance`.
    #[arg(long, env = "PREFETCH_WARMER_RATE_LIMIT_SCOPE", default_value = "cluster", value_parser = ["cluster", "instance"])]
    pub rate_limit_scope: String,

    /// Longest a warm waits to start, for a concurrency slot and the rate limit together,
    /// before it is dropped (`dropped_rate_limit`).
    #[arg(long, env = "PREFETCH_WARMER_RATE_MAX_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub rate_max_wait: Duration,

    /// The warms of one batch start at random moments within this window, so refreshes of many
    /// keys never arrive at the upstream at once. Learned follow-ups of a query (`reason:
    /// sequence`) start at once: they come one per query event and are wanted within seconds;
    /// so do warms timed for a periodic key's next poll (`reason: periodic`).
    #[arg(long, env = "PREFETCH_WARMER_SPREAD", default_value = "2s", value_parser = parse_duration)]
    pub spread: Duration,

    /// How long a batch of predictions waits for more after its first before it is warmed (0:
    /// take what has already arrived and start at once). The wait gathers what one analyzer
    /// tick publishes together into one batch (one pass of cache lookups, one offset store),
    /// and it is added to every event-driven warm. 20 ms: 100 ms gave an event → warm p99 of
    /// 400–600 ms against a target of 250 ms at 1,000 events/s, and a tick's predictions are
    /// produced in one go, so they arrive within a few ms of each other (BENCHMARKS.md, event
    /// → warm latency).
    #[arg(long, env = "PREFETCH_WARMER_BATCH_LINGER", default_value = "20ms", value_parser = parse_duration)]
    pub batch_linger: Duration,

    /// Bearer token `POST /v1/warmup` requires (the same as ingest's --api-token, which ingest
    /// sends); also accepted on the read routes. Unset: open.
    #[arg(long, env = "PREFETCH_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Redacted>,

    /// Bearer token the read routes (`GET /v1/cache/...`, `/v1/status`) require (the API token
    /// is accepted too). Unset: open. Health, readiness and metrics stay open.
    #[arg(long, env = "PREFETCH_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<Redacted>,

    /// How long to wait for Kafka (and the cache) at start-up before giving up with an error.
    #[arg(long, env = "PREFETCH_WARMER_STARTUP_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
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

/// Like the derived `Debug`, but URLs (the upstream template, a Redis location) drop their
/// query and userinfo: a key or password written there never reaches a log or a panic message.
/// Credentials and tokens redact themselves (`Secret`, `Redacted`).
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("group", &self.group)
            .field("enabled", &self.enabled)
            .field("top_n", &self.top_n)
            .field("min_confidence", &self.min_confidence)
            .field("holdback", &self.holdback)
            .field("active_hours", &self.active_hours)
            .field("active_days", &self.active_days)
            .field("market_tz", &self.market_tz)
            .field("cache", &redact_url(&self.cache))
            .field("redis_prefix", &self.redis_prefix)
            .field("ttls", &self.ttls)
            .field("default_ttl", &self.default_ttl)
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("cache_fsync", &self.cache_fsync)
            .field("sweep_interval", &self.sweep_interval)
            .field("upstream_url", &redact_url(&self.upstream_url))
            .field("upstream_ca", &self.upstream_ca)
            .field("upstream_headers", &self.upstream_headers)
            .field("upstream_header_file", &self.upstream_header_file)
            .field("upstream_query", &self.upstream_query)
            .field("negative_ttl", &self.negative_ttl)
            .field("honor_cache_control", &self.honor_cache_control)
            .field("upstream_concurrency", &self.upstream_concurrency)
            .field("upstream_timeout", &self.upstream_timeout)
            .field("upstream_retries", &self.upstream_retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("rate_limit", &self.rate_limit)
            .field("rate_burst", &self.rate_burst)
            .field("rate_limit_scope", &self.rate_limit_scope)
            .field("rate_max_wait", &self.rate_max_wait)
            .field("spread", &self.spread)
            .field("batch_linger", &self.batch_linger)
            .field("api_token", &self.api_token)
            .field("read_token", &self.read_token)
            .field("startup_timeout", &self.startup_timeout)
            .field("kafka", &self.kafka)
            .field("topics", &self.topics)
            .field("log", &self.log)
            .finish()
    }
}

impl Config {
    /// Defaults for everything but the brokers; what tests and embedding callers start from.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self::parse_from(["warmer", "--brokers", &brokers.into()])
    }

    /// The warming policy these flags describe (the initial value of the live policy).
    pub fn policy(&self) -> WarmPolicy {
        WarmPolicy {
            enabled: self.enabled,
            top_n: self.top_n,
            min_confidence: self.min_confidence,
            holdback: self.holdback,
            schedule: Schedule {
                tz: self.market_tz,
                hours: self.active_hours,
                weekdays: self.active_days.clone().map(|d| d.0),
            },
        }
    }

    /// The TTL table: built-in module TTLs, overridden by `--ttl`, and `--default-ttl`.
    pub fn ttls(&self) -> Ttls {
        let mut t = Ttls::builtin(self.default_ttl);
        for (m, d) in &self.ttls {
            t.per_module.insert(m.as_str().to_owned(), *d);
        }
        t
    }
}

/// A set of weekdays from `--active-days` (a newtype: clap reads a bare `Vec` as many values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weekdays(pub Vec<Weekday>);

fn parse_secret(s: &str) -> Result<Secret, String> {
    if s.trim().is_empty() {
        return Err("an empty value".into());
    }
    Ok(Secret(s.to_owned()))
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

fn parse_ttl(s: &str) -> Result<(Module, Duration), String> {
    let (m, d) =
        s.split_once('=').ok_or_else(|| format!("{s:?} is not of the form MODULE=DURATION"))?;
    let module = Module::parse(m).map_err(|e| format!("{s:?}: module {e}"))?;
    let ttl = parse_duration(d)?;
    if ttl < Duration::from_secs(1) {
        return Err(format!("{s:?}: a TTL must be at least 1s"));
    }
    Ok((module, ttl))
}

fn parse_hours(s: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let (a, b) =
        s.split_once('-').ok_or_else(|| format!("{s:?} is not of the form HH:MM-HH:MM"))?;
    let t = |x: &str| {
        NaiveTime::parse_from_str(x.trim(), "%H:%M")
            .map_err(|_| format!("{x:?} is not a time of day HH:MM"))
    };
    let (start, end) = (t(a)?, t(b)?);
    if start == end {
        return Err(format!("{s:?} is an empty window"));
    }
    Ok((start, end))
}

fn parse_days(s: &str) -> Result<Weekdays, String> {
    let day = |x: &str| {
        x.trim().parse::<Weekday>().map_err(|_| format!("{x:?} is not a weekday (use mon, tue, …)"))
    };
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (mut d, end) = (day(a)?, day(b)?);
                out.push(d);
                while d != end {
                    d = d.succ();
                    out.push(d);
                }
            }
            None => out.push(day(part)?),
        }
    }
    if out.is_empty() {
        return Err("no weekday given".into());
    }
    Ok(Weekdays(out))
}

fn parse_tz(s: &str) -> Result<Tz, String> {
    s.trim()
        .parse::<Tz>()
        .map_err(|_| format!("{s:?} is not an IANA time zone (e.g. America/New_York)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_policy_schedule_and_ttls() {
        let cfg = Config::parse_from([
            "warmer",
            "--active-hours",
            "09:30-16:00",
            "--active-days",
            "mon-fri",
            "--market-tz",
            "Europe/London",
            "--ttl",
            "price=5",
            "--ttl",
            "chart=2m",
            "--default-ttl",
            "90",
            "--holdback",
            "0.1",
            "--enabled",
            "false",
        ]);
        let p = cfg.policy();
        assert!(!p.enabled);
        assert_eq!(p.holdback, 0.1);
        assert_eq!(p.schedule.tz, chrono_tz::Europe::London);
        assert_eq!(p.schedule.weekdays.as_ref().unwrap().len(), 5);
        assert_eq!(p.schedule.hours.unwrap().0, NaiveTime::from_hms_opt(9, 30, 0).unwrap());
        let t = cfg.ttls();
        let mut secret = cfg.clone();
        secret.upstream_url = "https://u:pw@h/{module}/{ticker}?apikey=K3Y".into();
        secret.cache = "redis://:PASSW0RD@r:6379/0".into();
        let shown = format!("{secret:?}");
        assert!(
            !shown.contains("K3Y") && !shown.contains("PASSW0RD") && !shown.contains("pw@"),
            "{shown}"
        );
        assert_eq!(t.for_module("price"), Duration::from_secs(5));
        assert_eq!(t.for_module("chart"), Duration::from_secs(120));
        assert_eq!(t.for_module("fundamentals"), Duration::from_secs(86_400), "built-ins kept");
        assert_eq!(t.for_module("other"), Duration::from_secs(90));
        assert_eq!(
            parse_days("fri-mon").unwrap().0,
            vec![Weekday::Fri, Weekday::Sat, Weekday::Sun, Weekday::Mon]
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        assert!(parse_share("1.5").unwrap_err().contains("between 0 and 1"));
        assert!(parse_ttl("price").unwrap_err().contains("MODULE=DURATION"));
        assert!(parse_ttl("pri ce=5").is_err());
        assert!(parse_ttl("price=0").unwrap_err().contains("at least 1s"));
        assert!(parse_hours("9-5").is_err());
        assert!(parse_days("funday").is_err());
        assert!(parse_tz("Mars/Olympus").is_err());
    }
}
