//! `analyzer-restart`: restart to first prediction with N events of history in the topic,
//! checkpoint restore against a full replay, side by side in one run.
//!
//! Per history size: pre-fills a fresh 12-partition topic with N events (one per ms up to now,
//! `--tickers` × 5 modules, compressed with `--compression` to spare the disk), lets an analyzer
//! fold them and stop cleanly (it commits and writes its checkpoints), then starts it again
//! twice in the same group — with checkpoints (restore + replay of what they do not cover:
//! nothing here) and with `--checkpoint-interval 0s` (the full replay of the retained window) —
//! and times each from `serve` to `/readyz` 200 and to the first non-empty `/v1/predictions`,
//! with live traffic (200 events/s at the current time) flowing from just before the start.
//! A restart that is not there within `--cap` is reported as "> cap". The size's topics are
//! deleted before the next size (unless `--keep-topics`).

use chrono::{Duration as CDuration, Utc};
use prefetch_common::kafka::{ensure_topics, KafkaArgs, TopicArgs, TopicSpec};
use rdkafka::admin::AdminOptions;
use rdkafka::producer::{FutureRecord, Producer};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Flags of `analyzer-restart`.
#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    /// Kafka bootstrap servers (a real broker).
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// History sizes (events in the topic), in order.
    #[arg(long, value_delimiter = ',', default_value = "1000000")]
    events: Vec<usize>,
    /// Distinct tickers of the events (five modules each).
    #[arg(long, default_value_t = 2_000)]
    tickers: usize,
    /// Longest a restart may take to its first prediction before it is reported as "> cap"
    /// and abandoned (seconds).
    #[arg(long, default_value_t = 600)]
    cap: u64,
    /// `compression.type` of the producer that fills the topic (none, gzip, snappy, lz4, zstd).
    #[arg(long, default_value = "lz4")]
    compression: String,
    /// Keep each size's topics instead of deleting them after its run.
    #[arg(long)]
    keep_topics: bool,
}

/// Starts the analyzer service on port 0; returns its base URL, shutdown token and task.
async fn start_analyzer(
    cfg: analyzer::service::Config,
) -> anyhow::Result<(String, CancellationToken, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(analyzer::service::serve(cfg, listener, shutdown.clone()));
    Ok((base, shutdown, task))
}

/// Seconds from `started` until `/readyz` answers 200 (every partition restored) and until
/// `/v1/predictions` lists a prediction; `None` for what did not happen within `cap`.
async fn first_prediction(
    base: &str,
    started: Instant,
    cap: Duration,
) -> (Option<f64>, Option<f64>) {
    let http = reqwest::Client::new();
    let mut ready = None;
    while started.elapsed() < cap {
        if ready.is_none() {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    ready = Some(started.elapsed().as_secs_f64());
                }
            }
        } else if let Ok(r) = http.get(format!("{base}/v1/predictions")).send().await {
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            if v["predictions"].as_array().is_some_and(|p| !p.is_empty()) {
                return (ready, Some(started.elapsed().as_secs_f64()));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (ready, None)
}

/// The sum of the metric lines starting with `prefix` on `/metrics`.
async fn metric(base: &str, prefix: &str) -> f64 {
    let text = match reqwest::get(format!("{base}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `i`-th event of the bench's traffic, at `ts_ms`, over `tickers` × 5 modules and 500
/// clients: its key (the ticker) and body.
fn event(i: usize, tickers: usize, ts_ms: i64) -> (String, String) {
    const MODULES: [&str; 5] = ["price", "chart", "news", "fundamentals", "options"];
    let t = format!("T{}", (i * 7919) % tickers);
    let body = format!(
        r#"{{"ticker":"{t}","module":"{}","ts":{ts_ms},"client":"c{}"}}"#,
        MODULES[i % 5],
        i % 500
    );
    (t, body)
}

/// Fills `topic` with `n` events one per ms up to now over `tickers` × 5 modules.
async fn fill(kafka: &KafkaArgs, topic: &str, n: usize, tickers: usize) -> anyhow::Result<()> {
    let producer = kafka.producer(Duration::from_secs(300))?;
    let start = Utc::now() - CDuration::milliseconds(n as i64);
    for base in (0..n).step_by(100_000) {
        let bodies: Vec<(String, String)> = (base..(base + 100_000).min(n))
            .map(|i| {
                event(i, tickers, (start + CDuration::milliseconds(i as i64)).timestamp_millis())
            })
            .collect();
        let futs: Vec<_> = bodies
            .iter()
            .map(|(k, b)| {
                producer.send_result(FutureRecord::to(topic).key(k).payload(b)).map_err(|(e, _)| e)
            })
            .collect::<Result<_, _>>()?;
        for f in futures::future::join_all(futs).await {
            f?.map_err(|(e, _)| e)?;
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// Events a second of live traffic while an analyzer restarts (see [`trickle`]).
const LIVE_RATE: u64 = 200;

/// Live traffic during a restart: [`LIVE_RATE`] events a second stamped with the current time,
/// over the history's keys, until `stop`; returns how many were sent. Without it the model's
/// clock stands at the history's last event and the fetch budget earns nothing (it earns from
/// the queries it sees), so a restarted analyzer would have nothing new to publish once
/// its first tick spent the bucket — as in no deployment.
async fn trickle(
    kafka: KafkaArgs,
    topic: String,
    tickers: usize,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let producer = kafka.producer(Duration::from_secs(30))?;
    let mut every = tokio::time::interval(Duration::from_millis(1_000 / LIVE_RATE));
    let mut sent = 0u64;
    while !stop.is_cancelled() {
        every.tick().await;
        let (t, body) = event(sent as usize, tickers, Utc::now().timestamp_millis());
        producer
            .send_result(FutureRecord::to(&topic).key(&t).payload(&body))
            .map_err(|(e, _)| e)?;
        sent += 1;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(sent)
}

/// Deletes every topic whose name starts with `prefix`.
async fn delete_topics(kafka: &KafkaArgs, prefix: &str) -> anyhow::Result<usize> {
    let admin = kafka.admin()?;
    let md = admin.inner().fetch_metadata(None, Duration::from_secs(10))?;
    let names: Vec<String> =
        md.topics().iter().map(|t| t.name().to_owned()).filter(|n| n.starts_with(prefix)).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    if !refs.is_empty() {
        for r in admin.delete_topics(&refs, &AdminOptions::new()).await? {
            if let Err((name, e)) = r {
                eprintln!("could not delete {name}: {e}");
            }
        }
    }
    Ok(refs.len())
}

/// One timed restart under live traffic ([`trickle`]): (ready, first prediction, events
/// replayed).
async fn timed_restart(
    cfg: analyzer::service::Config,
    tickers: usize,
    cap: Duration,
) -> anyhow::Result<(Option<f64>, Option<f64>, f64)> {
    let live = CancellationToken::new();
    let traffic = tokio::spawn(trickle(
        cfg.kafka.clone(),
        cfg.topics.query_events_topic.clone(),
        tickers,
        live.clone(),
    ));
    let started = Instant::now();
    let (base, stop, task) = start_analyzer(cfg).await?;
    let (ready, first) = first_prediction(&base, started, cap).await;
    let replayed = metric(&base, "smart_prefetch_analyzer_rebuild_events_total").await;
    live.cancel();
    let sent = traffic.await??;
    eprintln!("  live traffic during the restart: {sent} events");
    stop.cancel();
    // A capped replay may still be reading; give it a minute to notice the shutdown.
    match tokio::time::timeout(Duration::from_secs(60), task).await {
        Ok(r) => r??,
        Err(_) => eprintln!("the analyzer did not stop within 60 s of the cap; going on"),
    }
    Ok((ready, first, replayed))
}

fn secs(v: Option<f64>, cap: Duration) -> String {
    v.map_or_else(|| format!("> {} s (cap)", cap.as_secs()), |s| format!("{s:.2} s"))
}

/// Runs `analyzer-restart`.
pub async fn restart(args: RestartArgs) -> anyhow::Result<()> {
    let mut kafka = KafkaArgs::new(&args.brokers);
    kafka.topic_partitions = 12;
    let mut filler = kafka.clone();
    filler.options = vec![
        format!("compression.type={}", args.compression),
        "linger.ms=50".into(),
        "batch.num.messages=10000".into(),
    ];
    let cap = Duration::from_secs(args.cap);
    let run = std::process::id();
    println!("| events of history | checkpoints: ready | checkpoints: first prediction | events replayed | full replay (`--checkpoint-interval 0s`): ready | full replay: first prediction | events replayed |");
    println!("|---|---|---|---|---|---|---|");
    for &n in &args.events {
        let prefix = format!("bench-restart-{run}-{n}.");
        let topics = TopicArgs::prefixed(&prefix);
        let specs = [TopicSpec { name: topics.query_events_topic.clone(), compacted: false }];
        ensure_topics(&kafka, &specs, Duration::from_secs(30)).await?;
        let t = Instant::now();
        fill(&filler, &topics.query_events_topic, n, args.tickers).await?;
        eprintln!("{n}: filled in {:.0} s", t.elapsed().as_secs_f64());
        let mut cfg = analyzer::service::Config::new(kafka.brokers.clone());
        cfg.kafka = kafka.clone();
        cfg.topics = topics.clone();
        cfg.group_id = format!("bench-restart-{run}-{n}");
        cfg.tick_interval = Duration::from_millis(500);
        cfg.stats_interval = Duration::from_secs(3600);
        cfg.checkpoint_interval = Duration::from_secs(3600);
        cfg.refresh_ahead = false;
        // First life: fold everything, stop cleanly (commit + checkpoint of every partition).
        let t = Instant::now();
        let (base, stop, task) = start_analyzer(cfg.clone()).await?;
        while (metric(&base, "smart_prefetch_analyzer_events_total{").await as usize) < n {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.cancel();
        task.await??;
        eprintln!("{n}: first life folded in {:.0} s", t.elapsed().as_secs_f64());
        let (cp_ready, cp_first, cp_replayed) =
            timed_restart(cfg.clone(), args.tickers, cap).await?;
        let mut replay = cfg.clone();
        replay.checkpoint_interval = Duration::ZERO;
        let (rp_ready, rp_first, rp_replayed) = timed_restart(replay, args.tickers, cap).await?;
        println!(
            "| {n} | {} | {} | {cp_replayed:.0} | {} | {} | {rp_replayed:.0} |",
            secs(cp_ready, cap),
            secs(cp_first, cap),
            secs(rp_ready, cap),
            secs(rp_first, cap),
        );
        if !args.keep_topics {
            let gone = delete_topics(&kafka, &prefix).await?;
            eprintln!("{n}: deleted {gone} topics");
        }
    }
    Ok(())
}
