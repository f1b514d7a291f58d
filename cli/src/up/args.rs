//! The `prefetch up` flags.

use clap::Args;
use prefetch_common::cli::parse_duration;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Run ingest, analyzer and warmer in one process. Without --brokers an embedded Kafka
/// (rdkafka's in-process mock cluster, in memory) is started, so nothing needs to be
/// installed. With --demo a demo upstream data API and a realistic app asking the warmer's
/// read-through cache run too, and the progress (events/s, hit rate, warms, useful warms,
/// predictions) is shown once a second. Ctrl-C stops everything cleanly.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Add the demo: a demo upstream data API (answers `GET /{module}/{ticker}` after 20–80 ms,
    /// 1% 503s) that the warmer fetches from, and an app whose realistic traffic (dashboards,
    /// analyst sessions, lookups, news bursts) asks the warmer's read-through cache, so the hit
    /// rate is the one an app would see. Progress is printed once a second.
    #[arg(long)]
    pub demo: bool,

    /// With --demo: run the demo's world N times faster than real time (1–60). The traffic
    /// comes N times as fast, the cache TTLs, the prediction horizon, the analyzer's tick and
    /// the warm spread are divided by N and the warm rate limit multiplied by N, so the learning
    /// shows N times sooner while every event keeps the wall-clock time the warmer stamps it
    /// with.
    #[arg(long, value_name = "N", default_value_t = 1.0, requires = "demo", value_parser = parse_speed)]
    pub speed: f64,

    /// Most predictions the analyzer publishes per tick, and most keys the warmer warms per
    /// batch of them. Default: the services' own defaults (10 and 50), or 100 with --demo.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub top_n: Option<u32>,

    /// How far ahead a prediction looks: its confidence is the probability of a query within
    /// this long, and an entry that outlives it is not warmed again (e.g. `60s`; divided by
    /// --speed). Default: the analyzer's own (300 s), or 60 s with --demo.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub horizon: Option<Duration>,

    /// Let the warmer serve the read-through but never warm (predictions are still made): the
    /// baseline hit rate that caching on demand alone gets, to compare a normal run with.
    #[arg(long)]
    pub no_warming: bool,

    /// Stop after this long (e.g. `90s`, `5m`); default: run until ctrl-c.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Kafka bootstrap servers (host:port, comma-separated) of a cluster to use. Default: an
    /// embedded in-process Kafka whose topics live in memory and vanish when `up` stops.
    #[arg(long, value_name = "HOST:PORT", env = "PREFETCH_KAFKA_BROKERS")]
    pub brokers: Option<String>,

    /// Kafka client properties file for --brokers (librdkafka keys as key=value lines, e.g.
    /// security.protocol=SASL_SSL, sasl.mechanism, sasl.username, sasl.password,
    /// ssl.ca.location); keeps passwords out of argv. -X overrides it.
    #[arg(long = "kafka-config", value_name = "FILE", env = "PREFETCH_KAFKA_CONFIG_FILE")]
    pub kafka_config: Option<std::path::PathBuf>,

    /// Extra librdkafka option for every Kafka client, as key=value (repeatable), e.g.
    /// `-X acks=1`; applied after --kafka-config.
    #[arg(short = 'X', long = "kafka-option", value_name = "KEY=VALUE")]
    pub kafka_options: Vec<String>,

    /// Where the warmer's cache lives: a directory (entries at `<dir>/<module>/<ticker>.json`)
    /// or a Redis URL (`redis://host:port/db`).
    #[arg(long, value_name = "DIR|URL", default_value = "data/prefetch_cache")]
    pub cache: String,

    /// Ports on 127.0.0.1: ingest on N, analyzer on N+1, warmer on N+2, the demo upstream on
    /// N+3 (0: any free ports, printed at start). The --*-listen flags override one each.
    #[arg(long, value_name = "N", default_value_t = 8080)]
    pub port_base: u16,

    /// Address of ingest's HTTP API (`/v1/events`, the original record API, health, metrics).
    #[arg(long, value_name = "ADDR")]
    pub ingest_listen: Option<SocketAddr>,

    /// Address of the analyzer's admin API (`/v1/stats`, `/v1/predictions`, health, metrics).
    #[arg(long, value_name = "ADDR")]
    pub analyzer_listen: Option<SocketAddr>,

    /// Address of the warmer's API (read-through `/v1/cache/{module}/{ticker}`, `/v1/status`,
    /// `/v1/warmup`, health, metrics).
    #[arg(long, value_name = "ADDR")]
    pub warmer_listen: Option<SocketAddr>,

    /// With --demo: address of the demo upstream data API.
    #[arg(long, value_name = "ADDR")]
    pub upstream_listen: Option<SocketAddr>,

    /// URL template of the upstream data API the warmer fetches (`{module}` and `{ticker}` are
    /// replaced). Default: the demo upstream with --demo, otherwise `http://data-api:8000/{module}/{ticker}`.
    #[arg(long, value_name = "URL")]
    pub upstream_url: Option<String>,

    /// With --demo: mean queries per second of the demo app in market hours (at --speed 1).
    #[arg(long, value_name = "EVENTS_PER_S", default_value_t = 20.0)]
    pub rate: f64,

    /// With --demo: distinct tickers the demo app asks for (Zipf-popular, well-known first).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub tickers: usize,

    /// With --demo: seed of the demo traffic (the same seed asks the same queries in the same order).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Log filter of the services in `tracing` syntax (e.g. `info`, `warmer=debug`); logs go to
    /// standard error. The default keeps the terminal for the progress.
    #[arg(long, value_name = "FILTER", default_value = "warn")]
    pub log_level: String,
}

impl UpArgs {
    /// Where the services listen, in the order ingest, analyzer, warmer, demo upstream.
    pub fn addrs(&self) -> [SocketAddr; 4] {
        let port = |k: u16| if self.port_base == 0 { 0 } else { self.port_base.saturating_add(k) };
        let at = |k| SocketAddr::from((Ipv4Addr::LOCALHOST, port(k)));
        [
            self.ingest_listen.unwrap_or_else(|| at(0)),
            self.analyzer_listen.unwrap_or_else(|| at(1)),
            self.warmer_listen.unwrap_or_else(|| at(2)),
            self.upstream_listen.unwrap_or_else(|| at(3)),
        ]
    }
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('x').parse::<f64>() {
        Ok(x) if (1.0..=60.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a speed between 1 and 60")),
    }
}
