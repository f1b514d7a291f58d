//! `prefetch-bench latency`: event → warm latency through the whole pipeline on a real broker
//! (issue #15.4). Ingest, analyzer and warmer (`serve` entry points, in this process), a local
//! upstream answering at once and a file cache in a temporary directory.
//!
//! The analyzer first learns a habit from NDJSON history posted to ingest: sessions of `price`
//! then `chart` on one ticker. Then query events `{"ticker": T_i, "module": "price"}` of new
//! clients are posted one per request at a fixed rate, each on a ticker never seen before: the
//! analyzer predicts `chart` of T_i from the learned habit, the warmer fetches it and writes
//! `<cache>/chart/T_i.json`. Each measured client then does query `chart` of T_i a second
//! later (posted in NDJSON batches), as the habit says: a client that never followed up would
//! teach the analyzer that `price` is no longer followed by `chart`, and the follow-up's
//! probability (followed / opportunities) would fall under the live `min_confidence`
//! after as many such clients as training sessions — which is why an earlier version of this
//! bench saw only 298 of its events warmed with 300 training sessions. Latency is from just before the POST to the cache write, taken as
//! max(file ctime, entry `fetched_at`) as in the warmer bench; a column also gives the time to
//! the upstream's request for the key (the upstream notes when it is first asked), which
//! splits the path into getting to the fetch and the fetch and write. Each `--batch-linger` value runs
//! in a fresh stack (topics, group, cache).

use crate::cpu::load_average;
use anyhow::Context;
use axum::extract::Path;
use axum::routing::get;
use chrono::{DateTime, Duration as CDuration, Utc};
use prefetch_common::kafka::{KafkaArgs, TopicArgs};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags of `latency`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kafka bootstrap servers (a real broker).
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Query events per second, each rate in turn.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    rates: Vec<u64>,
    /// Seconds each rate runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The warmer's `--batch-linger` values to compare, in milliseconds (one stack each).
    #[arg(long, value_delimiter = ',', default_value = "100,0")]
    linger_ms: Vec<u64>,
    /// The warmer's `--upstream-concurrency`.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Training sessions (price then chart) posted before the measurement. They must outnumber
    /// the measured clients whose follow-up has not been posted yet (a second's worth), or the
    /// habit's probability drops under 0.5 at the start of a rate.
    #[arg(long, default_value_t = 3000)]
    sessions: usize,
    /// The analyzer's fetch budget (`1.3`, `300/min`, `off`; default: the analyzer's). A
    /// ratio budget's bucket holds what the last minutes earned, so a jump to a far higher rate
    /// is partly refused until the follow-ups that prove the warms arrive (the `refused`
    /// column); `off` measures the latency of every event.
    #[arg(long)]
    budget: Option<prefetch_common::budget::Budget>,
    /// How long after its `price` event each measured client queries `chart` (the habit).
    #[arg(long, default_value_t = 1000)]
    follow_up_ms: u64,
    /// Run ingest, analyzer and warmer on the bench's own runtime (2 workers shared with the
    /// bench's HTTP client and upstream), as before session 27; by default each runs on a
    /// runtime of its own, as each runs in a process of its own when deployed.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    shared_runtime: bool,
    /// The warmer's `--cache-fsync`: fsync each cache entry and its directory.
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    cache_fsync: bool,
}

/// One running stack.
struct Stack {
    ingest: String,
    /// When the upstream was first asked for each ticker's `chart`: where a warm's latency
    /// splits into getting to the fetch (ingest, Kafka, analyzer, Kafka, the warmer's batch) and
    /// the fetch and write.
    asked: Asked,
    /// When a consumer of the bench's own first read a `chart` prediction for each ticker:
    /// where getting to the fetch splits into the analyzer's side and the warmer's.
    seen: Asked,
    analyzer: String,
    /// The warmer's base URL (its metrics: how long the cache writes took).
    warmer: String,
    cache: PathBuf,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Ticker → when something first happened to its `chart` (asked of the upstream, seen on the
/// predictions topic).
type Asked = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>>>;

async fn listener() -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", l.local_addr()?);
    Ok((l, base))
}

/// Runs a service's `serve` on `listener`: on the bench's runtime when `shared`, else on a
/// runtime of its own (2 workers, threads named `name`), as in a process of its own. Sharing
/// one runtime, the warmer's loop waited in one run queue behind ingest's 1,000 requests a
/// second and the bench's own client: a queue no deployment has (BENCHMARKS.md, session 27).
fn service<F, Fut>(
    name: &str,
    shared: bool,
    listener: tokio::net::TcpListener,
    serve: F,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    if shared {
        return Ok(tokio::spawn(serve(listener)));
    }
    let listener = listener.into_std()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = name.to_owned();
    std::thread::Builder::new().name(thread.clone()).spawn(move || {
        let result = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(thread)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                let r = rt.block_on(async move {
                    serve(tokio::net::TcpListener::from_std(listener)?).await
                });
                // Never wait for what the service leaves behind (a leaked consumer's threads).
                rt.shutdown_background();
                r
            });
        let _ = tx.send(result);
    })?;
    let name = name.to_owned();
    Ok(tokio::spawn(async move {
        rx.await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the {name} thread ended without a result")))
    }))
}

async fn start(args: &Args, prefix: &str, linger: Duration) -> anyhow::Result<Stack> {
    let stop = CancellationToken::new();
    let mut kafka = KafkaArgs::new(&args.brokers);
    kafka.topic_partitions = 6;
    let topics = TopicArgs::prefixed(prefix);
    let (l, upstream) = listener().await?;
    let asked = Asked::default();
    let noted = asked.clone();
    let app = axum::Router::new().route(
        "/{module}/{ticker}",
        get(|Path((m, t)): Path<(String, String)>| async move {
            if m == "chart" {
                let mut asked = noted.lock().unwrap_or_else(|p| p.into_inner());
                asked.entry(t.clone()).or_insert_with(Utc::now);
            }
            axum::Json(serde_json::json!({"ticker": t, "module": m, "last": 1.0}))
        }),
    );
    let s = stop.clone();
    tokio::spawn(
        async move { axum::serve(l, app).with_graceful_shutdown(s.cancelled_owned()).await },
    );
    let cache =
        std::env::temp_dir().join(format!("prefetch-bench-{}", prefix.trim_end_matches('.')));
    let _ = std::fs::remove_dir_all(&cache);

    let mut w = warmer::Config::new(args.brokers.clone());
    w.kafka = kafka.clone();
    w.topics = topics.clone();
    w.group = format!("{prefix}warmer");
    w.upstream_url = format!("{upstream}/{{module}}/{{ticker}}");
    w.cache = cache.display().to_string();
    w.spread = Duration::ZERO;
    w.holdback = 0.0;
    w.rate_limit = 0.0;
    w.min_confidence = 0.0;
    w.top_n = usize::MAX;
    w.upstream_concurrency = args.concurrency;
    w.batch_linger = linger;
    w.cache_fsync = args.cache_fsync;
    let (wl, warmer_base) = listener().await?;
    let (shared, st) = (args.shared_runtime, stop.clone());
    let mut tasks = vec![service("warmer", shared, wl, move |l| warmer::serve(w, l, st))?];

    let mut a = analyzer::service::Config::new(args.brokers.clone());
    a.kafka = kafka.clone();
    a.topics = topics.clone();
    a.group_id = format!("{prefix}analyzer");
    a.tick_interval = Duration::from_secs(3600);
    a.stats_interval = Duration::from_secs(3600);
    a.hour_weights = Some(String::new());
    if let Some(b) = args.budget {
        a.budget = b;
    }
    let (al, analyzer) = listener().await?;
    let st = stop.clone();
    tasks.push(service("analyzer", shared, al, move |l| analyzer::service::serve(a, l, st))?);

    let (kafka_for_watch, predictions) = (kafka.clone(), topics.predictions_topic.clone());
    let mut i = ingest::Config::new(args.brokers.clone());
    i.kafka = kafka;
    i.topics = topics;
    let (il, ingest) = listener().await?;
    let st = stop.clone();
    tasks.push(service("ingest", shared, il, move |l| ingest::serve(i, l, st))?);
    let http = reqwest::Client::new();
    for base in [&ingest, &analyzer, &warmer_base] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "{base} not ready in 120 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let seen = watch_predictions(&kafka_for_watch, &predictions, prefix, stop.clone())?;
    Ok(Stack { ingest, asked, seen, analyzer, warmer: warmer_base, cache, stop, tasks })
}

/// Reads the predictions topic from a group of its own and notes when each ticker's `chart`
/// prediction is first read.
fn watch_predictions(
    kafka: &KafkaArgs,
    topic: &str,
    prefix: &str,
    stop: CancellationToken,
) -> anyhow::Result<Asked> {
    let consumer: StreamConsumer =
        kafka.consumer_config(&format!("{prefix}bench-seen"))?.create()?;
    consumer.subscribe(&[topic])?;
    let seen = Asked::default();
    let noted = seen.clone();
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                _ = stop.cancelled() => break,
                m = consumer.recv() => m,
            };
            let Some(p) = m.ok().and_then(|m| {
                serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default()).ok()
            }) else {
                continue;
            };
            if let (Some("chart"), Some(t)) = (p["module"].as_str(), p["ticker"].as_str()) {
                let mut seen = noted.lock().unwrap_or_else(|p| p.into_inner());
                seen.entry(t.to_owned()).or_insert_with(Utc::now);
            }
        }
        // Never wait on dropping a subscribed consumer (rust-rdkafka #453, #509, #611).
        std::thread::spawn(move || drop(consumer));
    });
    Ok(seen)
}

/// Events the analyzer has folded, from its `/metrics`.
async fn folded(http: &reqwest::Client, analyzer: &str) -> usize {
    let text = match http.get(format!("{analyzer}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    text.lines()
        .filter(|l| l.starts_with("smart_prefetch_analyzer_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

/// Candidates the analyzer's fetch budget has refused so far (its live status in `/v1/stats`).
async fn refused(http: &reqwest::Client, analyzer: &str) -> anyhow::Result<u64> {
    let stats: serde_json::Value =
        http.get(format!("{analyzer}/v1/stats")).send().await?.error_for_status()?.json().await?;
    stats["budget"]["refused"].as_u64().context("no budget.refused in /v1/stats")
}

/// Posts the habit: `sessions` clients, each `price` then `chart` 5 s later on one ticker,
/// spread over the last 50 minutes; waits until the analyzer has folded them.
async fn train(http: &reqwest::Client, stack: &Stack, sessions: usize) -> anyhow::Result<()> {
    let start = Utc::now() - CDuration::minutes(50);
    let mut body = String::new();
    for s in 0..sessions {
        let t = start + CDuration::milliseconds((s * 3_000_000 / sessions.max(1)) as i64);
        for (module, dt) in [("price", 0), ("chart", 5)] {
            body.push_str(&format!(
                "{{\"ticker\":\"TR{}\",\"module\":\"{module}\",\"ts\":{},\"client\":\"train-{s}\"}}\n",
                s % 50,
                (t + CDuration::seconds(dt)).timestamp_millis()
            ));
        }
    }
    let r = http
        .post(format!("{}/v1/events", stack.ingest))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "training batch answered {}", r.status());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while folded(http, &stack.analyzer).await < 2 * sessions {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "training not folded in 120 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// When `chart/<ticker>.json` was written, if it was.
fn written_at(cache: &std::path::Path, ticker: &str) -> Option<DateTime<Utc>> {
    let path = cache.join("chart").join(format!("{ticker}.json"));
    let meta = std::fs::metadata(&path).ok()?;
    let ctime = DateTime::from_timestamp(meta.ctime(), meta.ctime_nsec() as u32)?;
    let entry: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let fetched: DateTime<Utc> = entry["fetched_at"].as_str()?.parse().ok()?;
    Some(ctime.max(fetched))
}

/// Posts the measured clients' `chart` queries (the habit the prediction was drawn from) in
/// one NDJSON request, each at its own timestamp.
fn post_follow_ups(
    http: &reqwest::Client,
    url: &str,
    due: Vec<(String, String, DateTime<Utc>)>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let mut body = String::new();
    for (ticker, client, at) in &due {
        body.push_str(&format!(
            "{{\"ticker\":\"{ticker}\",\"module\":\"chart\",\"hit\":false,\"ts\":{},\"client\":\"{client}\"}}\n",
            at.timestamp_millis()
        ));
    }
    let req = http.post(url).header("content-type", "application/x-ndjson").body(body).send();
    tokio::spawn(async move {
        let r = req.await?;
        anyhow::ensure!(r.status() == 200, "ingest answered {} to follow-ups", r.status());
        Ok(())
    })
}

/// Posts `rate` events/s for `seconds`, and each client's follow-up `follow_up` later; returns
/// each ticker and when its POST started.
async fn post_at_rate(
    http: &reqwest::Client,
    stack: &Stack,
    tag: &str,
    rate: u64,
    seconds: u64,
    follow_up: Duration,
) -> anyhow::Result<Vec<(String, DateTime<Utc>)>> {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let n = rate * seconds;
    let url = format!("{}/v1/events", stack.ingest);
    let mut sent = Vec::with_capacity(n as usize);
    let mut tasks = Vec::with_capacity(n as usize);
    let mut due = std::collections::VecDeque::new();
    let mut flushed = tokio::time::Instant::now();
    let follow = CDuration::from_std(follow_up)?;
    for i in 0..n {
        tick.tick().await;
        let ticker = format!("{tag}N{i}");
        let client = format!("lat-{tag}-{i}");
        let body =
            format!(r#"{{"ticker":"{ticker}","module":"price","hit":false,"client":"{client}"}}"#);
        let at = Utc::now();
        sent.push((ticker.clone(), at));
        due.push_back((ticker, client, at + follow));
        let req = http.post(&url).header("content-type", "application/json").body(body).send();
        tasks.push(tokio::spawn(async move {
            let r = req.await?;
            anyhow::ensure!(r.status() == 200, "ingest answered {}", r.status());
            Ok(())
        }));
        if flushed.elapsed() >= Duration::from_millis(100) {
            flushed = tokio::time::Instant::now();
            let now = Utc::now();
            let k = due.iter().take_while(|(_, _, at)| *at <= now).count();
            if k > 0 {
                tasks.push(post_follow_ups(http, &url, due.drain(..k).collect()));
            }
        }
    }
    tokio::time::sleep(follow_up).await;
    tasks.push(post_follow_ups(http, &url, due.into_iter().collect()));
    for t in tasks {
        t.await??;
    }
    Ok(sent)
}

/// p50 / p99 ms from each event's POST to when `at` noted its ticker ("–": none noted).
fn since_post(at: &Asked, sent: &[(String, DateTime<Utc>)]) -> String {
    let mut ms: Vec<f64> = {
        let at = at.lock().unwrap_or_else(|p| p.into_inner());
        sent.iter()
            .filter_map(|(t, posted)| {
                Some((*at.get(t)? - *posted).num_microseconds()? as f64 / 1000.0)
            })
            .collect()
    };
    if ms.is_empty() {
        return "–".to_owned();
    }
    let (p50, p99, _) = quantiles(&mut ms);
    format!("{p50:.1} / {p99:.1}")
}

/// The warmer's cache-write histogram's buckets now.
async fn cache_writes(http: &reqwest::Client, warmer: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = http.get(format!("{warmer}/metrics")).send().await?.text().await?;
    Ok(crate::warmer::buckets_of(&text, "smart_prefetch_warmer_cache_write_duration_seconds"))
}

/// p50, p99, max of `ms` (sorted in place).
fn quantiles(ms: &mut [f64]) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.99), q(1.0))
}

/// Runs `latency`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let run = std::process::id();
    let http = reqwest::Client::new();
    let budget = args.budget.map_or("the analyzer's default".to_owned(), |b| b.to_string());
    println!("fetch budget: {budget}");
    println!("| warmer --batch-linger | rate events/s | events | warmed | refused by the fetch budget | p50 ms | p99 ms | max ms | to the prediction read: p50 / p99 ms | to the upstream request: p50 / p99 ms | cache write: p50 / p99 ms | load |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &linger in &args.linger_ms {
        let prefix = format!("bench-lat-{run}-{linger}.");
        let stack = start(&args, &prefix, Duration::from_millis(linger)).await?;
        train(&http, &stack, args.sessions).await?;
        for &rate in &args.rates {
            let tag = format!("L{linger}R{rate}");
            let follow_up = Duration::from_millis(args.follow_up_ms);
            let refused_before = refused(&http, &stack.analyzer).await?;
            let writes_before = cache_writes(&http, &stack.warmer).await?;
            let sent = post_at_rate(&http, &stack, &tag, rate, args.seconds, follow_up).await?;
            // Every event's follow-up should be written; wait for the stragglers, then read.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let missing =
                    sent.iter().filter(|(t, _)| written_at(&stack.cache, t).is_none()).count();
                if missing == 0 || tokio::time::Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let mut ms: Vec<f64> = sent
                .iter()
                .filter_map(|(t, at)| {
                    let done = written_at(&stack.cache, t)?;
                    Some((done - *at).num_microseconds()? as f64 / 1000.0)
                })
                .collect();
            anyhow::ensure!(!ms.is_empty(), "no follow-up was warmed at {rate}/s");
            let warmed = ms.len();
            let refused = refused(&http, &stack.analyzer).await? - refused_before;
            let (p50, p99, max) = quantiles(&mut ms);
            let (seen, fetch) = (since_post(&stack.seen, &sent), since_post(&stack.asked, &sent));
            let writes = cache_writes(&http, &stack.warmer).await?;
            let (w50, w99) = (
                crate::warmer::hist_quantile(&writes_before, &writes, 0.5),
                crate::warmer::hist_quantile(&writes_before, &writes, 0.99),
            );
            println!(
                "| {linger} ms | {rate} | {} | {warmed} | {refused} | {p50:.1} | {p99:.1} | {max:.1} | {seen} | {fetch} | {w50:.1} / {w99:.1} | {} |",
                sent.len(),
                load_average()
            );
        }
        stack.stop.cancel();
        for t in stack.tasks {
            t.await?.context("a service of the stack failed")?;
        }
        let _ = std::fs::remove_dir_all(&stack.cache);
    }
    Ok(())
}
