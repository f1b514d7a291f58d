//! `prefetch-bench warmer`: warms per second against a local upstream with a fixed latency, and
//! prediction → cache-write latency, side by side in the same run with the raw limit.
//!
//! One process holds an in-process upstream (axum on 127.0.0.1:0, answering JSON after
//! `--upstream-latency-ms`) and alternates, round after round,
//! - **raw**: N GETs with reqwest, at most `--concurrency` in flight, each body then written to
//!   a file the way the warmer's file cache must at minimum (temporary file, fsync, rename,
//!   fsync of the directory), writes in parallel — the limit of this machine for this upstream;
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

use anyhow::{ensure, Context};
use chrono::{DateTime, Utc};
use prefetch_common::contract::{Module, Ticker};
use prefetch_common::kafka::{KafkaArgs, TopicArgs};
use prefetch_common::prediction::{Prediction, Reason};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

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

/// Temporary file, fsync, rename over `path`, fsync the directory: what makes a cache entry
/// durable and never torn (the same steps as the warmer's file cache).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}", path.file_name().unwrap_or_default().to_string_lossy()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
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

async fn raw_round(
    upstream: &str,
    n: usize,
    concurrency: usize,
    dir: &Path,
) -> anyhow::Result<Round> {
    let dir = dir.join("price");
    std::fs::create_dir_all(&dir)?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    // Like the warmer, the limit holds upstream requests only: a write does not keep the
    // next GET waiting.
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, permits, path, url) = (
            http.clone(),
            permits.clone(),
            dir.join(format!("RAW{i}.json")),
            format!("{upstream}/price/RAW{i}"),
        );
        tasks.spawn(async move {
            let (started, body) = {
                let _permit = permits.acquire().await?;
                let started = Instant::now();
                let r = http.get(url).send().await?;
                ensure!(r.status() == 200, "upstream answered {}", r.status());
                (started, r.bytes().await?)
            };
            let get = started.elapsed().as_secs_f64() * 1000.0;
            tokio::task::spawn_blocking(move || write_atomic(&path, &body)).await??;
            Ok::<_, anyhow::Error>((Instant::now(), started.elapsed().as_secs_f64() * 1000.0, get))
        });
    }
    let mut done = Vec::with_capacity(n);
    while let Some(t) = tasks.join_next().await {
        done.push(t??);
    }
    let first = done.iter().map(|d| d.0).min().context("no warm")?;
    let last = done.iter().map(|d| d.0).max().context("no warm")?;
    let mut ms: Vec<f64> = done.iter().map(|d| d.1).collect();
    ms.sort_by(f64::total_cmp);
    let mut get: Vec<f64> = done.iter().map(|d| d.2).collect();
    get.sort_by(f64::total_cmp);
    Ok(Round {
        rate: (n - 1) as f64 / (last - first).as_secs_f64(),
        p50: quantile(&ms, 0.5),
        p99: quantile(&ms, 0.99),
        get_p50: Some(quantile(&get, 0.5)),
        hist: None,
    })
}

/// A running warmer with its cache directory.
struct Warmer {
    url: String,
    cache: PathBuf,
    topic: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Warmer {
    async fn start(args: &Args, upstream: &str, name: &str) -> anyhow::Result<Self> {
        let mut cfg = warmer::Config::new(args.brokers.clone());
        cfg.kafka = KafkaArgs::new(&args.brokers);
        cfg.topics = TopicArgs::prefixed(&format!("bench-wa-{}-{name}.", std::process::id()));
        cfg.group = format!("bench-wa-{}-{name}", std::process::id());
        cfg.upstream_url = format!("{upstream}/{{module}}/{{ticker}}");
        cfg.upstream_concurrency = args.concurrency;
        let cache =
            args.dir.join(format!("prefetch-bench-warmer-{}", std::process::id())).join(name);
        prefill(&cache, args.prefill)?;
        cfg.cache = cache.display().to_string();
        // Nothing but the upstream and the cache may bind: every key is warmed, at once.
        cfg.spread = Duration::ZERO;
        cfg.holdback = 0.0;
        cfg.min_confidence = 0.0;
        cfg.top_n = usize::MAX;
        cfg.rate_limit = 0.0;
        cfg.active_hours = None;
        cfg.active_days = None;
        let topic = cfg.topics.predictions_topic.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(warmer::serve(cfg, listener, shutdown.clone()));
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            ensure!(!task.is_finished(), "the warmer stopped during start-up");
            ensure!(Instant::now() < deadline, "the warmer was not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { url, cache, topic, shutdown, task })
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.url)).await?.text().await?)
    }

    /// Waits until `n` predictions have ended (any outcome); fails unless all were stored.
    async fn wait_handled(&self, n: usize, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics().await?;
            let handled = sum(&text, "smart_prefetch_warmer_warms_total{", "");
            if handled >= n as f64 {
                let stored = sum(&text, "smart_prefetch_warmer_warms_total{", "outcome=\"stored\"");
                let outcomes: Vec<&str> = text
                    .lines()
                    .filter(|l| l.starts_with("smart_prefetch_warmer_warms_total{"))
                    .collect();
                ensure!(stored == n as f64, "{stored} of {n} predictions stored: {outcomes:?}");
                return Ok(text);
            }
            ensure!(
                Instant::now() < deadline,
                "only {handled} of {n} predictions handled within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When `ticker`'s entry became visible: max(file ctime, entry fetched_at).
    fn stored_at(&self, ticker: &str) -> anyhow::Result<DateTime<Utc>> {
        let path = self.cache.join("price").join(format!("{ticker}.json"));
        let meta =
            std::fs::metadata(&path).with_context(|| format!("{} missing", path.display()))?;
        let ctime =
            DateTime::from_timestamp(meta.ctime(), meta.ctime_nsec() as u32).context("ctime")?;
        let entry: warmer::cache::Entry = serde_json::from_slice(&std::fs::read(&path)?)?;
        Ok(ctime.max(entry.fetched_at))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("the warmer did not stop within 30 s")???;
        Ok(())
    }
}

/// Writes `k` live entries of another module into a fresh cache directory, as a warmer that has
/// been running would find them (indexed at start-up).
fn prefill(cache: &Path, k: usize) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(cache);
    std::fs::create_dir_all(cache)?;
    if k == 0 {
        return Ok(());
    }
    let dir = cache.join("fundamentals");
    std::fs::create_dir_all(&dir)?;
    let now = Utc::now();
    for i in 0..k {
        let entry = warmer::cache::Entry {
            module: Module::parse("fundamentals")?,
            ticker: Ticker::parse(&format!("PRE{i}"))?,
            fetched_at: now,
            expires_at: now + chrono::Duration::days(1),
            source: warmer::cache::Source::Warm,
            confidence: Some(0.9),
            body: serde_json::json!({"price": 187.42, "currency": "USD"}),
            negative: false,
        };
        std::fs::write(dir.join(format!("PRE{i}.json")), serde_json::to_vec_pretty(&entry)?)?;
    }
    Ok(())
}

/// Sum of the samples starting with `prefix` whose labels contain `label`.
fn sum(text: &str, prefix: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cumulative buckets `(le, count)` of the prediction → cache histogram.
fn buckets(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| {
            l.strip_prefix("smart_prefetch_warmer_prediction_to_cache_seconds_bucket{le=\"")
        })
        .filter_map(|l| {
            let (le, rest) = l.split_once('"')?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// Quantile `q` (in ms) of the observations between two scrapes, interpolated linearly within
/// the bucket it falls in (`histogram_quantile`).
fn hist_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let cum: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, c)| (le, c - before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1)))
        .collect();
    let total = cum.last().map_or(0.0, |b| b.1);
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for &(le, c) in &cum {
        if c >= rank {
            if le.is_infinite() {
                return lo * 1000.0;
            }
            return (lo + (le - lo) * (rank - below) / (c - below).max(f64::MIN_POSITIVE)) * 1000.0;
        }
        (lo, below) = (le, c);
    }
    f64::NAN
}

fn prediction(ticker: &str) -> anyhow::Result<Prediction> {
    Ok(Prediction {
        ticker: Ticker::parse(ticker)?,
        module: Module::parse("price")?,
        confidence: 0.9,
        horizon_s: 300,
        generated_at: Utc::now(),
        reason: Reason::Popularity,
    })
}

/// Sends `p` (generated now) without waiting for its acknowledgement.
fn send(
    producer: &FutureProducer,
    topic: &str,
    p: &Prediction,
) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
    let payload = serde_json::to_vec(p)?;
    producer
        .send_result(FutureRecord::to(topic).key(p.ticker.as_str()).payload(&payload))
        .map_err(|(e, _)| e.into())
}

async fn acked(futs: Vec<rdkafka::producer::DeliveryFuture>) -> anyhow::Result<()> {
    for f in futs {
        f.await?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Produces one prediction and waits until it is stored: the consumer is assigned and the
/// connections are open before anything is timed. Returns the metrics text then.
async fn warm_up(w: &Warmer, producer: &FutureProducer) -> anyhow::Result<String> {
    acked(vec![send(producer, &w.topic, &prediction("WARMUP")?)?]).await?;
    w.wait_handled(1, Duration::from_secs(60)).await
}

/// Latencies (ms, sorted) and first/last done times of `preds` in `w`'s cache.
fn done_times(
    w: &Warmer,
    preds: &[Prediction],
) -> anyhow::Result<(Vec<f64>, DateTime<Utc>, DateTime<Utc>)> {
    let mut ms = Vec::with_capacity(preds.len());
    let (mut first, mut last) = (DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC);
    for p in preds {
        let at = w.stored_at(p.ticker.as_str())?;
        ms.push((at - p.generated_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0);
        (first, last) = (first.min(at), last.max(at));
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms, first, last))
}

async fn warmer_round(
    args: &Args,
    upstream: &str,
    producer: &FutureProducer,
    round: usize,
) -> anyhow::Result<Round> {
    let w = Warmer::start(args, upstream, &format!("r{round}")).await?;
    let before = buckets(&warm_up(&w, producer).await?);
    let mut preds = Vec::with_capacity(args.warms);
    let mut futs = Vec::with_capacity(args.warms);
    for i in 0..args.warms {
        let p = prediction(&format!("R{round}K{i}"))?;
        futs.push(send(producer, &w.topic, &p)?);
        preds.push(p);
    }
    acked(futs).await?;
    let bound =
        args.warms as f64 * args.upstream_latency_ms as f64 / 1000.0 / args.concurrency as f64;
    let text = w.wait_handled(args.warms + 1, Duration::from_secs_f64(60.0 + 10.0 * bound)).await?;
    let after = buckets(&text);
    let (ms, first, last) = done_times(&w, &preds)?;
    w.stop().await?;
    Ok(Round {
        rate: (args.warms - 1) as f64 / (last - first).to_std()?.as_secs_f64(),
        p50: quantile(&ms, 0.5),
        p99: quantile(&ms, 0.99),
        get_p50: None,
        hist: Some((hist_quantile(&before, &after, 0.5), hist_quantile(&before, &after, 0.99))),
    })
}

/// The steady phase: one prediction every 1/`rate` s for `seconds`.
async fn steady(args: &Args, upstream: &str, producer: &FutureProducer) -> anyhow::Result<()> {
    let w = Warmer::start(args, upstream, "steady").await?;
    let before = buckets(&warm_up(&w, producer).await?);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / args.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + Duration::from_secs(args.latency_seconds);
    let (mut preds, mut futs) = (Vec::new(), Vec::new());
    while Instant::now() < end {
        tick.tick().await;
        let p = prediction(&format!("S{}", preds.len()))?;
        futs.push(send(producer, &w.topic, &p)?);
        preds.push(p);
    }
    acked(futs).await?;
    let after = buckets(&w.wait_handled(preds.len() + 1, Duration::from_secs(60)).await?);
    let (ms, _, _) = done_times(&w, &preds)?;
    w.stop().await?;
    println!(
        "\nsteady {} predictions/s for {} s ({} predictions): prediction → cache p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         (histogram estimate p50 {:.0} ms, p99 {:.0} ms)",
        args.rate,
        args.latency_seconds,
        preds.len(),
        quantile(&ms, 0.5),
        quantile(&ms, 0.99),
        quantile(&ms, 1.0),
        hist_quantile(&before, &after, 0.5),
        hist_quantile(&before, &after, 0.99)
    );
    Ok(())
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
        let raw = raw_round(&upstream, args.warms, args.concurrency, &raw_dir).await?;
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
