//! `prefetch-bench ingest`: batched NDJSON ingest throughput into a real broker, side by side in the
//! same run with a plain rdkafka producer sending the same events (the raw limit on this
//! machine), then single-event request latency at a fixed request rate.
//!
//! Ingest runs in a child process (`serve.rs`) and the raw producer in the bench process, so
//! each side's CPU per event is its own process's CPU time over its span (`cpu.rs`); the HTTP
//! client's cost (in the bench process, during ingest's span) is not ingest's.
//!
//! Run against a real broker (release build):
//! `scripts/kafka.sh start && cargo run --release -p prefetch-bench -- ingest --brokers 127.0.0.1:9092`

use crate::cpu::{fmt_opt, fmt_spread, load_average, Meter, Sample};
use crate::serve::{Service, ServiceProcess};
use anyhow::{ensure, Context};
use futures::stream::{FuturesUnordered, StreamExt};
use prefetch_common::contract::QueryEvent;
use prefetch_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use rdkafka::producer::{FutureRecord, Producer};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Benchmarks ingest against the raw producer limit.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kafka bootstrap servers (a real broker).
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Events per throughput round.
    #[arg(long, default_value_t = 400_000)]
    events: usize,
    /// Events per NDJSON request.
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Concurrent HTTP clients posting batches.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Rounds of (raw, ingest), alternated so drift hits both alike (0: latency only).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Single-event requests per second in the latency phase.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// librdkafka option for both producers, as key=value (repeatable), e.g. `-X linger.ms=0`.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    kafka_option: Vec<String>,
    /// Seconds of each latency phase (the raw producer's, then ingest's).
    #[arg(long, default_value_t = 15)]
    latency_seconds: u64,
    /// Rounds of (raw, ingest) single-event latency.
    #[arg(long, default_value_t = 1)]
    latency_rounds: usize,
    /// Also count user-space instructions per event with `perf stat` (needs `perf` and a
    /// machine with hardware counters; `n/a` otherwise).
    #[arg(long)]
    perf: bool,
}

pub fn events(n: usize) -> Vec<QueryEvent> {
    const MODULES: [&str; 5] = ["price", "chart", "news", "fundamentals", "options"];
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            let v = serde_json::json!({
                "ticker": format!("T{}", (i * 7919) % 2000),
                "module": MODULES[i % 5],
                "hit": i % 3 == 0,
                "ts": (now - chrono::Duration::milliseconds((n - i) as i64)).timestamp_millis(),
                "client": format!("client-{}", i % 500),
                "latency_ms": (i % 90) as f64 + 0.5,
            });
            QueryEvent::from_value(&v, now).unwrap()
        })
        .collect()
}

/// One side of one round: events/s and what its process spent.
struct Side {
    rate: f64,
    cpu: Sample,
}

async fn raw_round(
    kafka: &KafkaArgs,
    topic: &str,
    evs: &[QueryEvent],
    perf: bool,
) -> anyhow::Result<Side> {
    let producer = kafka.producer(Duration::from_secs(120))?;
    let meter = Meter::start(std::process::id(), perf);
    let started = Instant::now();
    let mut in_flight = VecDeque::new();
    for e in evs {
        let payload = e.to_json();
        let mut rec = FutureRecord::to(topic).key(e.ticker.as_str()).payload(&payload);
        loop {
            match producer.send_result(rec) {
                Ok(f) => {
                    in_flight.push_back(f);
                    break;
                }
                Err((_, r)) => {
                    rec = r;
                    in_flight
                        .pop_front()
                        .context("queue full with nothing in flight")?
                        .await?
                        .map_err(|(e, _)| e)?;
                }
            }
        }
    }
    for f in in_flight {
        f.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(10))?;
    let rate = evs.len() as f64 / started.elapsed().as_secs_f64();
    Ok(Side { rate, cpu: meter.stop() })
}

async fn ingest_round(
    url: &str,
    bodies: &[String],
    clients: usize,
    n: usize,
    (pid, perf): (u32, bool),
) -> anyhow::Result<Side> {
    let http = reqwest::Client::new();
    let meter = Meter::start(pid, perf);
    let started = Instant::now();
    let mut next = 0;
    let mut running = FuturesUnordered::new();
    while next < bodies.len() || !running.is_empty() {
        while running.len() < clients && next < bodies.len() {
            let req = http
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(bodies[next].clone())
                .send();
            running.push(req);
            next += 1;
        }
        let r = running.next().await.expect("non-empty")?;
        ensure!(r.status() == 200, "ingest answered {}", r.status());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    Ok(Side { rate, cpu: meter.stop() })
}

/// Sends one request (or message) every `1/rate` s for `secs` s, each timed by `one` on a task
/// of its own; p50, p99, max (ms) and the count.
async fn paced<F, Fut>(rate: u64, secs: u64, one: F) -> anyhow::Result<(f64, f64, f64, usize)>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks = Vec::new();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut i = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        i += 1;
        let t = Instant::now();
        let fut = one(i);
        tasks.push(tokio::spawn(async move {
            fut.await?;
            Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut ms = Vec::new();
    for t in tasks {
        ms.push(t.await??);
    }
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    Ok((q(0.5), q(0.99), q(1.0), ms.len()))
}

/// Single-event `action=record` requests to ingest: POST to answer (ingest answers once Kafka
/// has acknowledged the event).
async fn latency(url: &str, rate: u64, secs: u64) -> anyhow::Result<(f64, f64, f64, usize)> {
    let http = reqwest::Client::new();
    paced(rate, secs, |i| {
        let req = http
            .post(url)
            .header("content-type", "application/json")
            .body(format!(r#"{{"ticker":"LAT{}","module":"price","hit":false}}"#, i % 100))
            .send();
        async move {
            let r = req.await?;
            ensure!(r.status() == 200, "status {}", r.status());
            Ok(())
        }
    })
    .await
}

/// The raw limit of the same: one event produced by a plain producer (the same settings as
/// ingest's), send to acknowledgement.
async fn raw_latency(
    kafka: &KafkaArgs,
    topic: &str,
    rate: u64,
    secs: u64,
) -> anyhow::Result<(f64, f64, f64, usize)> {
    let producer = kafka.producer(Duration::from_secs(30))?;
    // Warm, as ingest's producer is: metadata and the idempotent producer id are fetched first.
    producer
        .send(FutureRecord::to(topic).key("LAT").payload("{}"), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)?;
    let topic = topic.to_owned();
    let r = paced(rate, secs, |i| {
        let key = format!("LAT{}", i % 100);
        let payload = format!(
            r#"{{"ticker":"{key}","module":"price","hit":false,"ts":"{}"}}"#,
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let sent = producer
            .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
            .map_err(|(e, _)| anyhow::anyhow!("enqueue: {e}"));
        async move {
            sent?.await?.map_err(|(e, _)| e)?;
            Ok(())
        }
    })
    .await;
    producer.flush(Duration::from_secs(10))?;
    r
}

/// Runs the benchmark and prints its tables.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut kafka = KafkaArgs::new(&args.brokers);
    kafka.topic_partitions = 6;
    kafka.options = args.kafka_option.clone();
    let run = std::process::id();
    let prefix = format!("bench-{run}.");
    let raw_topic = format!("bench-{run}.raw");
    let specs = [TopicSpec { name: raw_topic.clone(), compacted: false }];
    ensure_topics(&kafka, &specs, Duration::from_secs(30)).await?;

    let evs = events(args.events);
    let bodies: Vec<String> = evs
        .chunks(args.batch)
        .map(|c| c.iter().map(|e| String::from_utf8(e.to_json()).unwrap() + "\n").collect())
        .collect();
    let bytes: usize = bodies.iter().map(String::len).sum();

    let mut child_args =
        vec!["--brokers".to_owned(), args.brokers.clone(), "--prefix".into(), prefix];
    for o in &args.kafka_option {
        child_args.extend(["-X".to_owned(), o.clone()]);
    }
    let ingest = ServiceProcess::start(Service::Ingest, &child_args).await?;
    let url = ingest.base.clone();
    let http = reqwest::Client::new();
    while http.get(format!("{url}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!(
        "events per round: {}, NDJSON bytes: {bytes}, batch: {}, clients: {}, librdkafka overrides: {:?}, load average at start: {}",
        args.events, args.batch, args.clients, args.kafka_option, load_average()
    );
    println!("| round | raw producer events/s | ingest events/s | ingest / raw | CPU µs/event raw | CPU µs/event ingest | CPU ingest / raw | instructions/event raw | instructions/event ingest | load |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let (mut rates, mut cpus) =
        ((Vec::new(), Vec::new(), Vec::new()), (Vec::new(), Vec::new(), Vec::new()));
    for round in 1..=args.rounds {
        let raw = raw_round(&kafka, &raw_topic, &evs, args.perf).await?;
        let ing = ingest_round(
            &format!("{url}/v1/events"),
            &bodies,
            args.clients,
            evs.len(),
            (ingest.pid(), args.perf),
        )
        .await?;
        let n = evs.len();
        let (rc, ic) = (raw.cpu.cpu_us_per(n), ing.cpu.cpu_us_per(n));
        println!(
            "| {round} | {:.0} | {:.0} | {:.2} | {rc:.2} | {ic:.2} | {:.2} | {} | {} | {} |",
            raw.rate,
            ing.rate,
            ing.rate / raw.rate,
            ic / rc,
            fmt_opt(raw.cpu.instructions_per(n), 0),
            fmt_opt(ing.cpu.instructions_per(n), 0),
            load_average(),
        );
        rates.0.push(raw.rate);
        rates.1.push(ing.rate);
        rates.2.push(ing.rate / raw.rate);
        cpus.0.push(rc);
        cpus.1.push(ic);
        cpus.2.push(ic / rc);
    }
    // (`--rounds 0` measures latency only.)
    if args.rounds > 0 {
        println!(
            "| median (min–max) | {} | {} | **{}** | {} | {} | **{}** | | | |",
            fmt_spread(&rates.0, 0),
            fmt_spread(&rates.1, 0),
            fmt_spread(&rates.2, 2),
            fmt_spread(&cpus.0, 2),
            fmt_spread(&cpus.1, 2),
            fmt_spread(&cpus.2, 2),
        );
    }

    // Side by side in the same window (each at the rate): the raw producer's send to
    // acknowledgement and ingest's request to answer, so both meet the same broker pauses.
    println!("\n| single event at {} /s each, {} s | raw p50 ms | raw p99 ms | raw max ms | ingest p50 ms | ingest p99 ms | ingest max ms | load |", args.rate, args.latency_seconds);
    println!("|---|---|---|---|---|---|---|---|");
    let record = format!("{url}/api/v1/smart-prefetch?action=record");
    for round in 1..=args.latency_rounds {
        let (raw, ing) = tokio::join!(
            raw_latency(&kafka, &raw_topic, args.rate, args.latency_seconds),
            latency(&record, args.rate, args.latency_seconds),
        );
        let ((r50, r99, rmax, _), (i50, i99, imax, _)) = (raw?, ing?);
        println!(
            "| round {round} | {r50:.2} | {r99:.2} | {rmax:.2} | {i50:.2} | {i99:.2} | {imax:.2} | {} |",
            load_average()
        );
    }
    ingest.stop().await
}
