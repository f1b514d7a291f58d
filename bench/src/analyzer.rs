//! Analyzer benchmarks.
//!
//! `analyzer-throughput` is in `fold.rs`.
//!
//! `analyzer-keys`: builds a model with K live keys and reports tick duration and resident
//! memory (VmRSS) before and after, and the size of its checkpoint per key, with no Kafka.

use chrono::{Duration as CDuration, Utc};
use prefetch_common::contract::{Module, QueryEvent, Ticker};
use std::time::Instant;

/// Flags of `analyzer-keys`.
#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    /// Live key counts to measure, in order.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    keys: Vec<usize>,
    /// Events per key (spread over the last day).
    #[arg(long, default_value_t = 3)]
    events_per_key: usize,
    /// Ticks timed per size.
    #[arg(long, default_value_t = 5)]
    ticks: usize,
    /// Hours of history the events of a key are spread over (168: a week, one bucket an hour).
    #[arg(long, default_value_t = 24)]
    span_hours: usize,
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs `analyzer-keys`.
pub fn keys(args: KeysArgs) -> anyhow::Result<()> {
    const MODULES: [&str; 5] = ["price", "chart", "news", "fundamentals", "options"];
    println!("| live keys | events | RSS before | RSS after | model bytes (own estimate) | record events/s | tick p50 | tick max | occupied buckets/key | checkpoint bytes/key |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &k in &args.keys {
        let rss0 = rss_bytes();
        let mut model = analyzer::Model::new(analyzer::ModelConfig::default())?;
        let now = Utc::now();
        let tickers: Vec<Ticker> =
            (0..k.div_ceil(5)).map(|i| Ticker::parse(&format!("T{i}")).unwrap()).collect();
        let modules: Vec<Module> = MODULES.iter().map(|m| Module::parse(m).unwrap()).collect();
        let started = Instant::now();
        let mut n = 0u64;
        for round in 0..args.events_per_key {
            // Oldest round first, so event time moves forward as it would live.
            let span = 3_600 * args.span_hours;
            let ts = now
                - CDuration::seconds(
                    (span / args.events_per_key.max(1) * (args.events_per_key - round)) as i64,
                );
            for i in 0..k {
                let e = QueryEvent {
                    ticker: tickers[i / 5].clone(),
                    module: modules[i % 5].clone(),
                    hit: false,
                    ts,
                    client: None,
                    latency_ms: None,
                };
                model.record(&e);
                n += 1;
            }
        }
        let record_rate = n as f64 / started.elapsed().as_secs_f64();
        let mut ticks = Vec::new();
        for t in 0..args.ticks {
            let s = Instant::now();
            let _ = model.tick(now + CDuration::seconds(5 * t as i64));
            ticks.push(s.elapsed().as_secs_f64() * 1000.0);
        }
        ticks.sort_by(f64::total_cmp);
        let rss1 = rss_bytes();
        let fp = model.footprint();
        anyhow::ensure!(fp.keys == k, "expected {k} live keys, model has {}", fp.keys);
        let all: std::collections::HashSet<Ticker> = tickers.iter().cloned().collect();
        let snapshot = model.snapshot(&all).len();
        println!(
            "| {k} | {n} | {:.0} MB | {:.0} MB | {:.0} MB | {record_rate:.0} | {:.1} ms | {:.1} ms | {:.0} | {:.0} |",
            rss0 as f64 / 1e6,
            rss1 as f64 / 1e6,
            fp.key_bytes as f64 / 1e6,
            ticks[ticks.len() / 2],
            ticks[ticks.len() - 1],
            fp.buckets as f64 / k as f64,
            snapshot as f64 / k as f64
        );
        drop(model);
    }
    Ok(())
}
