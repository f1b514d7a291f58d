//! The `demo-traffic` flags and their conversion to generator [`Params`].

use super::calendar;
use super::params::Params;
use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use prefetch_common::cli::parse_duration;
use std::path::PathBuf;

/// Generate realistic, reproducible query traffic: Zipf-popular tickers, New York market hours
/// with open and close spikes, dashboards polling fixed pairs, analyst sessions walking
/// price → chart → news, and news bursts. Writes canonical JSON lines (`--out`) or posts them
/// to an ingest (`--to`). The same flags and `--seed` give the same events.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("sink").required(true).args(["out", "to", "via_cache"])))]
pub struct DemoArgs {
    /// Write the events as canonical JSON lines to FILE (`-` for standard output); a summary
    /// goes to standard error.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Post the events to the ingest at URL (`POST URL/v1/events`, application/x-ndjson, in
    /// batches of --batch-size), as fast as it accepts them unless --realtime.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub to: Option<String>,

    /// Behave as the app against a warmer's read-through cache at URL (e.g.
    /// `http://warmer:8082`): ask `GET URL/v1/cache/{module}/{ticker}` for each event when its
    /// time comes (on the wall clock, as --realtime), so the warmer answers from its cache or the
    /// upstream and publishes each query with the true hit or miss. The summary on standard
    /// error includes the hit rate the app saw; ctrl-c ends the run early.
    #[arg(long, value_name = "URL", value_parser = parse_url, conflicts_with = "realtime")]
    pub via_cache: Option<String>,

    /// With --to: move the trace onto the wall clock (its start becomes now) and send each
    /// event when its time comes. Without --start the trace then starts now, so the traffic
    /// follows the real New York clock.
    #[arg(long, conflicts_with = "out")]
    pub realtime: bool,

    /// Events per POST with --to.
    #[arg(long, value_name = "N", default_value_t = 1000, env = "PREFETCH_DEMO_BATCH_SIZE",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,

    /// Event time of the first instant of the trace: RFC 3339 (`2026-03-09T09:30:00-04:00`) or
    /// a date (`2026-03-09`, midnight in New York). Default: the latest Monday 00:00 New York
    /// from which the whole trace lies in the past (pass it explicitly for a reproducible file).
    #[arg(long, value_name = "TIME", env = "PREFETCH_DEMO_START", value_parser = parse_start)]
    pub start: Option<DateTime<Utc>>,

    /// Length of the trace in event time: `2d`, `6h`, `90m`, `30s`.
    #[arg(long, value_name = "SPAN", default_value = "1d", env = "PREFETCH_DEMO_DURATION", value_parser = parse_span)]
    pub duration: chrono::Duration,

    /// Seed of every random choice; the same seed and flags give the same events.
    #[arg(long, value_name = "N", default_value_t = 1, env = "PREFETCH_DEMO_SEED")]
    pub seed: u64,

    /// Number of distinct tickers (well-known symbols first, then synthetic ones).
    #[arg(long, value_name = "N", default_value_t = 500, env = "PREFETCH_DEMO_TICKERS")]
    pub tickers: usize,

    /// Zipf exponent of ticker popularity: the k-th most popular ticker is asked ∝ 1/k^S
    /// (0 = uniform).
    #[arg(long, value_name = "S", default_value_t = 1.1, env = "PREFETCH_DEMO_ZIPF_S")]
    pub zipf_s: f64,

    /// Mean events per second over weekday market hours (09:30–16:00 New York), dashboards and
    /// sessions included; one-off lookups fill the rest. Nights and weekends are much quieter;
    /// news bursts come on top. About 570k events per weekday at 20.
    #[arg(long, value_name = "EVENTS_PER_S", default_value_t = 20.0, env = "PREFETCH_DEMO_RATE")]
    pub rate: f64,

    /// Number of dashboards, each refreshing 2–6 fixed (ticker, module) pairs at fixed periods
    /// (price and options every 60 s, news 120 s, chart 300 s, fundamentals 3600 s), most of
    /// them on weekdays from morning to evening, one in five around the clock.
    #[arg(long, value_name = "N", default_value_t = 20, env = "PREFETCH_DEMO_DASHBOARDS")]
    pub dashboards: usize,

    /// Analyst sessions starting per hour in market hours; each walks price → chart → news
    /// (→ fundamentals, options) for one to six tickers, seconds to minutes apart.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 600.0,
        env = "PREFETCH_DEMO_SESSIONS_PER_HOUR"
    )]
    pub sessions_per_hour: f64,

    /// Mean news bursts per weekday: a ticker outside the top ten suddenly hot for 10–60
    /// minutes.
    #[arg(long, value_name = "N", default_value_t = 4.0, env = "PREFETCH_DEMO_BURSTS_PER_DAY")]
    pub bursts_per_day: f64,

    /// Generate member N of the trace family of the backtest targets instead (its structure —
    /// traffic mix, universe, skew, market, TTLs, clients, regime change — drawn from N; the
    /// knobs above and --start, --duration, --seed are then ignored). Seeds 1–36 are the
    /// development set, 1001–1010 the evaluation set. The summary names the member and the
    /// `prefetch backtest` flags that replay it as evaluated.
    #[arg(long, value_name = "N")]
    pub family_seed: Option<u64>,

    /// With --family-seed: write the member's live config (the defaults with its TTLs and
    /// market time zone) to FILE, for `prefetch backtest --config FILE`.
    #[arg(long, value_name = "FILE", requires = "family_seed")]
    pub family_config: Option<PathBuf>,
}

impl DemoArgs {
    /// The generator's parameters; `now` only chooses the default start.
    pub fn params(&self, now: DateTime<Utc>) -> Params {
        if let Some(seed) = self.family_seed {
            return super::family::member(seed).params;
        }
        let start = match (self.start, self.realtime) {
            (Some(start), _) => start,
            (None, true) => now,
            (None, false) if self.via_cache.is_some() => now,
            (None, false) => calendar::default_start(now, self.duration),
        };
        Params {
            start,
            duration: self.duration,
            seed: self.seed,
            tickers: self.tickers,
            zipf_s: self.zipf_s,
            rate: self.rate,
            dashboards: self.dashboards,
            sessions_per_hour: self.sessions_per_hour,
            bursts_per_day: self.bursts_per_day,
            shape: Default::default(),
        }
    }
}

/// A span of demo time: the shared duration syntax ([`parse_duration`]: `2d`, `1.5d`, `6h`,
/// `1d12h`).
pub fn parse_span(s: &str) -> Result<chrono::Duration, String> {
    let std = parse_duration(s)?;
    chrono::Duration::from_std(std).map_err(|_| format!("{s:?} is too long"))
}

/// RFC 3339, or a date meaning midnight in New York.
pub fn parse_start(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(date) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(calendar::local_instant(date, 0));
    }
    DateTime::parse_from_rfc3339(t).map(|d| d.with_timezone(&Utc)).map_err(|e| {
        format!(
            "{s:?} is neither RFC 3339 (2026-03-09T09:30:00-04:00) nor a date (2026-03-09): {e}"
        )
    })
}

/// An `http://` base URL, without a trailing slash.
fn parse_url(s: &str) -> Result<String, String> {
    let t = s.trim().trim_end_matches('/');
    if t.starts_with("https://") {
        return Err(format!("{s:?}: https is not supported by this build; use http://"));
    }
    let rest = t
        .strip_prefix("http://")
        .ok_or_else(|| format!("{s:?} is not an http:// URL (e.g. http://127.0.0.1:8080)"))?;
    if rest.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_take_days_on_top_of_the_shared_units() {
        assert_eq!(parse_span("2d"), Ok(chrono::Duration::days(2)));
        assert_eq!(parse_span("1.5d"), Ok(chrono::Duration::hours(36)));
        assert_eq!(parse_span("6h"), Ok(chrono::Duration::hours(6)));
        assert_eq!(parse_span("90m"), Ok(chrono::Duration::minutes(90)));
        assert_eq!(parse_span("1d12h"), Ok(chrono::Duration::hours(36)));
        assert!(parse_span("xd").unwrap_err().contains("not a duration"));
        assert!(parse_span("3w").is_err());
    }

    #[test]
    fn starts_are_rfc3339_or_a_new_york_date() {
        assert_eq!(parse_start("2026-03-09").unwrap().to_rfc3339(), "2026-03-09T04:00:00+00:00");
        assert_eq!(parse_start("2026-03-06").unwrap().to_rfc3339(), "2026-03-06T05:00:00+00:00");
        assert_eq!(
            parse_start("2026-03-09T09:30:00-04:00").unwrap().to_rfc3339(),
            "2026-03-09T13:30:00+00:00"
        );
        assert!(parse_start("monday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn urls_are_plain_http() {
        assert_eq!(parse_url("http://127.0.0.1:8080/"), Ok("http://127.0.0.1:8080".to_owned()));
        assert!(parse_url("https://x").unwrap_err().contains("https"));
        assert!(parse_url("127.0.0.1:8080").unwrap_err().contains("http://"));
    }
}
