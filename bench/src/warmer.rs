//! `prefetch-bench warmer`: warms per second against a local upstream with a fixed latency, and
//! prediction → cache-write latency, side by side in the same run with the raw limit.
//!
//! One process holds an in-process upstream (axum on 127.0.0.1:0, answering JSON after
//! `--upstream-latency-ms`) and alternates, round after round,
//! - **raw**: N GETs with reqwest, at most `--concurrency` in flight, each body then written to
//!   a file the way the warmer's file cache must at minimum (temporary file, rename; with
//!   `--cache-fsync`, an fsync of the file and of the directory too), writes in parallel — the
//!   limit of this machine for this upstream;
//! - **warmer**: `warmer::serve` (file cache, no spread, no holdback, no rate limit, no
//!   `top_n` budget, same concurrency) against a real broker in fresh topics, fed N predictions
//!   of distinct keys produced at once.
//!
//! Warmer timings are read from the cache files themselves: a key is done at
//! max(file ctime, entry `fetched_at`). The rename sets the ctime (ext4 and most Linux file
//! systems), but from the kernel's coarse clock (a few ms early), and `fetched_at` is taken
//! just before the write, so the later of the two is the best bound on when the entry became
//! visible. Warms/s is (N − 1) / (last done − first done), for raw and warmer alike.
//! The warmer's own histogram `smart_prefetch_warmer_prediction_to_cache_seconds` is reported
//! beside it, its quantiles interpolated linearly within buckets (as PromQL's
//! `histogram_quantile` does), so only as fine as its buckets.
//!
//! Before anything is timed, each warmer stores one warm-up prediction (group joined,
//! connections open). `--prefill K` starts each warmer with K entries already in its cache, as
//! a warmer that has been running finds it.
//!
//! Last, a steady phase produces `--rate` predictions per second for `--latency-seconds` to one
//! more warmer: the latency of a prediction that does not queue behind a burst.
//!
//! Run against a real broker (release build):
//! `scripts/kafka.sh start && cargo run --release -p prefetch-bench -- warmer --brokers 127.0.0.1:9092`
//!
//! # Layout
//! - `warmer.rs`: the flags, the local upstream and the tables ([`run`]);
//! - `warmer/rounds.rs`: one raw round, one warmer round, the steady phase;
//! - `warmer/instance.rs`: a warmer under test (start, wait, read its cache, stop) and the
//!   parsing of its metrics.

use anyhow::ensure;
use chrono::Utc;
use prefetch_common::kafka::KafkaArgs;
use std::path::PathBuf;
use std::time::Duration;

mod instance;
pub(crate) use instance::{buckets_of, hist_quantile};
mod rounds;

use rounds::{raw_round, steady, warmer_round};

/// Flags of `warmer`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kafka bootstrap servers (a real broker).
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Warms per round (distinct keys).
    #[arg(long, default_value_t = 3000)]
    warms: usize,
    /// Requests in flight to the upstream at once, for raw and warmer (the warmer's
    /// `--upstream-concurrency`, default 8).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long the local upstream waits before answering.
    #[arg(long, default_value_t = 10)]
    upstream_latency_ms: u64,
    /// Rounds of (raw, warmer), alternated so drift hits both alike.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Entries already in each warmer's cache when it starts (a cache that has been running).
    #[arg(long, default_value_t = 0)]
    prefill: usize,
    /// Predictions per second in the steady latency phase (0: skip it).
    #[arg(long, default_value_t = 20)]
    rate: u64,
    /// Seconds of the steady latency phase.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Fsync each cache entry and its directory, raw and warmer alike (the warmer's
    /// `--cache-fsync`).
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    cache_fsync: bool,
    /// Where the caches are written (a fresh directory under it, removed at the end).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: PathBuf,
}

/// The local upstream: JSON about the asked path, after `latency`.
async fn start_upstream(latency: Duration) -> anyhow::Result<String> {
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
        tokio::time::sleep(latency).await;
        axum::Json(serde_json::json!({
            "path": uri.path(), "price": 187.42, "change": -0.53, "currency": "USD", "volume": 51_234_000,
            "asOf": Utc::now().to_rfc3339(),
        }))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}"))
}

/// What one round measured.
struct Round {
    rate: f64,
    /// Per-warm latency quantiles in ms: raw GET start → written; warmer generated_at → stored.
    p50: f64,
    p99: f64,
    /// Raw only: the GET alone, p50 in ms.
    get_p50: Option<f64>,
    /// The warmer's histogram estimate of the same (ms); raw has none.
    hist: Option<(f64, f64)>,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs the benchmark and prints its tables.
pub async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.warms >= 2 && args.concurrency >= 1 && args.rounds >= 1,
        "need --warms ≥ 2, --concurrency ≥ 1, --rounds ≥ 1"
    );
    let latency = Duration::from_millis(args.upstream_latency_ms);
    let upstream = start_upstream(latency).await?;
    let producer = KafkaArgs::new(&args.brokers).producer(Duration::from_secs(60))?;
    let base = args.dir.join(format!("prefetch-bench-warmer-{}", std::process::id()));
    let bound = args.concurrency as f64 / latency.as_secs_f64().max(1e-9);
    println!(
        "warms per round: {}, concurrency: {}, upstream latency: {} ms, bound concurrency / latency: {bound:.0} warms/s, \
         cache under {}, prefilled entries: {}",
        args.warms,
        args.concurrency,
        args.upstream_latency_ms,
        base.display(),
        args.prefill
    );
    println!(
        "| round | raw warms/s | warmer warms/s | warmer / raw | raw GET p50 | raw GET+write p50 / p99 | warmer prediction → cache p50 / p99 | same from its histogram |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for round in 1..=args.rounds {
        let raw_dir = base.join(format!("raw{round}"));
        let raw =
            raw_round(&upstream, args.warms, args.concurrency, &raw_dir, args.cache_fsync).await?;
        let _ = std::fs::remove_dir_all(&raw_dir);
        let wr = warmer_round(&args, &upstream, &producer, round).await?;
        let _ = std::fs::remove_dir_all(base.join(format!("r{round}")));
        let h = wr.hist.unwrap_or((f64::NAN, f64::NAN));
        let row = [
            raw.rate,
            wr.rate,
            wr.rate / raw.rate,
            raw.get_p50.unwrap_or(f64::NAN),
            raw.p50,
            raw.p99,
            wr.p50,
            wr.p99,
            h.0,
            h.1,
        ];
        println!("| {round} | {}", fmt_row(&row));
        rows.push(row);
    }
    let median: Vec<f64> = (0..10)
        .map(|c| {
            let mut col: Vec<f64> = rows.iter().map(|r| r[c]).collect();
            col.sort_by(f64::total_cmp);
            col[col.len() / 2]
        })
        .collect();
    let mut median = median;
    // The ratio of the medians, as in the other benchmarks.
    median[2] = median[1] / median[0];
    println!("| median | {}", fmt_row(&median));
    if args.rate > 0 {
        steady(&args, &upstream, &producer).await?;
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

/// The cells after the round of one table row (medians are taken per column).
fn fmt_row(r: &[f64]) -> String {
    format!(
        "{:.0} | {:.0} | {:.2} | {:.1} ms | {:.1} / {:.1} ms | {:.0} / {:.0} ms | {:.0} / {:.0} ms |",
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]
    )
}
