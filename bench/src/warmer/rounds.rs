//! The measured phases: a raw round (GET and write), a warmer round (a burst of predictions),
//! and the steady phase.

use super::instance::{buckets, hist_quantile, Warmer};
use super::{quantile, Args, Round};
use anyhow::{ensure, Context};
use chrono::{DateTime, Utc};
use prefetch_common::contract::{Module, Ticker};
use prefetch_common::prediction::{Prediction, Reason};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Temporary file, rename over `path`: what makes a cache entry never torn; with `fsync`, the
/// file before the rename and the directory after it, which make it durable too (the same
/// steps as the warmer's file cache).
fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tmp-{}", path.file_name().unwrap_or_default().to_string_lossy()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    if fsync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if fsync {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

pub(super) async fn raw_round(
    upstream: &str,
    n: usize,
    concurrency: usize,
    dir: &Path,
    fsync: bool,
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
            tokio::task::spawn_blocking(move || write_atomic(&path, &body, fsync)).await??;
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

pub(super) async fn warmer_round(
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
pub(super) async fn steady(
    args: &Args,
    upstream: &str,
    producer: &FutureProducer,
) -> anyhow::Result<()> {
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
