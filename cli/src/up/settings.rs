//! What `up` configures: each service's settings (its defaults, the pass-through flags, the
//! demo's choices and the `--speed` compression, see the parent module) and the demo traffic.

use super::UpArgs;
use crate::demo::{Generator, Origin, Params};
use chrono::{DateTime, Utc};
use prefetch_common::contract::{Module, QueryEvent};
use prefetch_common::kafka::KafkaArgs;
use std::net::SocketAddr;
use std::time::Duration;

/// The demo trace: a Tuesday from 10:00 New York, six market hours long, asked over and over.
const DEMO_START: &str = "2026-03-10T10:00:00-04:00";
const DEMO_SPAN_HOURS: i64 = 6;
/// The demo's `--top-n` and `--horizon` defaults.
const DEMO_TOP_N: u32 = 100;
const DEMO_HORIZON: Duration = Duration::from_secs(60);

/// `d` divided by the demo's speed, but not below `floor`.
pub(super) fn compress(d: Duration, speed: f64, floor: Duration) -> Duration {
    d.div_f64(speed).max(floor)
}

/// `--top-n`, or the demo's: enough predictions per tick to cover the keys a busy app repeats.
pub(super) fn top_n(args: &UpArgs) -> Option<u32> {
    args.top_n.or(args.demo.then_some(DEMO_TOP_N))
}

/// `--horizon`, or the demo's (at 1×; [`compress`]ed by the caller): about the TTL of a price,
/// so an entry is warmed again only when it would expire before the next expected query.
pub(super) fn horizon(args: &UpArgs) -> Option<Duration> {
    args.horizon.or(args.demo.then_some(DEMO_HORIZON))
}

pub(super) fn analyzer_config(
    args: &UpArgs,
    brokers: &str,
    kafka: &KafkaArgs,
    listen: SocketAddr,
) -> analyzer::service::Config {
    let mut cfg = analyzer::service::Config::new(brokers);
    cfg.kafka = kafka.clone();
    cfg.listen = listen;
    cfg.instance_id = Some("prefetch-up".to_owned());
    cfg.top_n = top_n(args).map(|n| n as usize);
    if let Some(h) = horizon(args) {
        cfg.horizon_s = Some(compress(h, args.speed, Duration::from_secs(1)).as_secs());
    }
    if args.demo {
        // The demo's market hours are shifted onto the wall clock: the real hour means nothing.
        cfg.hour_weights = Some(String::new());
        cfg.tick_interval = compress(cfg.tick_interval, args.speed, Duration::from_millis(200));
    }
    // Refresh-ahead must know the TTLs the warmer stores with (compressed by --speed).
    let ttls = cache_ttls(args, brokers);
    cfg.cache_ttls =
        ttls.per_module.iter().map(|(m, d)| format!("{m}={}", d.as_secs().max(1))).collect();
    cfg.cache_default_ttl = Some(ttls.default.as_secs().max(1));
    cfg
}

/// The warmer's TTL table: its defaults, divided by `--speed` in the demo (at least 1 s).
fn cache_ttls(args: &UpArgs, brokers: &str) -> warmer::cache::Ttls {
    let ttls = warmer::Config::new(brokers).ttls();
    if !(args.demo && args.speed > 1.0) {
        return ttls;
    }
    let one_second = Duration::from_secs(1);
    warmer::cache::Ttls {
        default: compress(ttls.default, args.speed, one_second),
        per_module: ttls
            .per_module
            .iter()
            .map(|(m, d)| (m.clone(), compress(*d, args.speed, one_second)))
            .collect(),
    }
}

pub(super) fn warmer_config(
    args: &UpArgs,
    brokers: &str,
    kafka: &KafkaArgs,
    listen: SocketAddr,
    upstream_url: String,
) -> warmer::Config {
    let mut cfg = warmer::Config::new(brokers);
    cfg.kafka = kafka.clone();
    cfg.listen = listen;
    cfg.cache = args.cache.clone();
    cfg.upstream_url = upstream_url;
    cfg.enabled = !args.no_warming;
    if let Some(n) = top_n(args) {
        cfg.top_n = n as usize;
    }
    if args.demo && args.speed > 1.0 {
        let ttls = cache_ttls(args, brokers);
        cfg.ttls = ttls
            .per_module
            .iter()
            .filter_map(|(m, d)| Some((Module::parse(m).ok()?, *d)))
            .collect();
        cfg.default_ttl = ttls.default;
        cfg.spread = compress(cfg.spread, args.speed, Duration::from_millis(10));
        // The warm budget is per second of the demo's world too.
        cfg.rate_limit *= args.speed;
        cfg.rate_burst = (f64::from(cfg.rate_burst) * args.speed).round() as u32;
    }
    cfg
}

pub(super) fn demo_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(DEMO_START).expect("a valid constant").with_timezone(&Utc)
}

/// The demo traffic: the trace of [`DEMO_START`], repeated end to end for as long as `up` runs.
/// Dashboards and sessions scale with `--rate` (their defaults at 20 events/s), so any rate
/// leaves room for the one-off lookups.
pub(super) fn demo_events(
    args: &UpArgs,
) -> anyhow::Result<impl Iterator<Item = (QueryEvent, Origin)> + Send + 'static> {
    let scale = args.rate / 20.0;
    let params = Params {
        start: demo_start(),
        duration: chrono::Duration::hours(DEMO_SPAN_HOURS),
        seed: args.seed,
        tickers: args.tickers,
        rate: args.rate,
        dashboards: (20.0 * scale).round() as usize,
        sessions_per_hour: 600.0 * scale,
        ..Params::default()
    };
    Generator::new(&params).map_err(|e| anyhow::anyhow!("demo traffic: {e}"))?;
    let span = params.duration;
    Ok((0..).flat_map(move |lap: i32| {
        let mut g = Generator::new(&params).expect("checked above");
        let shift = span * lap;
        std::iter::from_fn(move || g.next_with_origin()).map(move |(mut e, o)| {
            e.ts += shift;
            (e, o)
        })
    }))
}
