//! Analyzer benchmarks.
//!
//! `analyzer-throughput`: pre-fills a topic with events, then drains it twice per round — with a
//! plain rdkafka consumer (the raw limit) and with the analyzer service (fold into the model,
//! store offsets) — in alternation, each in a fresh consumer group.
//!
//! `analyzer-keys`: builds a model with K live keys and reports tick duration and resident
//! memory (VmRSS) before and after, and the size of its checkpoint per key, with no Kafka.

use anyhow::Context;
use chrono::{Duration as CDuration, Utc};
use prefetch_common::contract::{Module, QueryEvent, Ticker};
use prefetch_common::kafka::{ensure_topics, KafkaArgs, TopicArgs, TopicSpec};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureRecord, Producer};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Flags of `analyzer-throughput`.
#[derive(clap::Args, Debug)]
pub struct ThroughputArgs {
    /// Kafka bootstrap servers (a real broker).
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Events in the pre-filled topic.
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// Rounds of (raw, analyzer).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Leave `client` out of the events, so no sequence is learned and nothing is published
    /// per event (isolates the cost of event-driven predictions).
    #[arg(long)]
    no_clients: bool,
    /// Extra librdkafka option (key=value, repeatable) for every client of the run — the plain
    /// consumer's and the analyzer's alike, so they keep the same settings.
    #[arg(short = 'X', long = "kafka-option")]
    kafka_option: Vec<String>,
    /// Only time the per-event CPU breakdown (no Kafka) and exit.
    #[arg(long)]
    cpu_only: bool,
    /// The analyzer's `--refresh-ahead` (its default is on; off publishes every likely
    /// follow-up, the heavier path for the same events).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    refresh_ahead: bool,
}

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

/// CPU seconds this process has used so far (all threads, librdkafka's included).
fn cpu_seconds() -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the `(comm)`; utime and stime are the 14th and 15th of the line.
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

/// One drain: events/s, and this process's CPU time per event over the timed span.
struct Drain {
    rate: f64,
    cpu_us: f64,
}

async fn drain_raw(kafka: &KafkaArgs, topic: &str, group: &str, n: usize) -> anyhow::Result<Drain> {
    let consumer: StreamConsumer = kafka.consumer_config(group)?.create()?;
    consumer.subscribe(&[topic])?;
    let mut started = None;
    let mut seen = 0usize;
    while seen < n {
        let m = consumer.recv().await?;
        started.get_or_insert_with(|| (Instant::now(), cpu_seconds()));
        // The raw limit: receive and store the offset, nothing else.
        std::hint::black_box(rdkafka::Message::payload(&m));
        consumer.store_offset_from_message(&m)?;
        seen += 1;
    }
    let (t0, cpu0) = started.context("no message")?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu_us = (cpu_seconds() - cpu0) * 1e6 / n as f64;
    // See the analyzer service: never wait on a subscribed consumer's drop.
    std::thread::spawn(move || drop(consumer));
    Ok(Drain { rate: n as f64 / secs, cpu_us })
}

async fn drain_analyzer(
    kafka: &KafkaArgs,
    topics: &TopicArgs,
    group: &str,
    n: usize,
    refresh_ahead: bool,
) -> anyhow::Result<Drain> {
    let mut cfg = analyzer::service::Config::new(kafka.brokers.clone());
    cfg.refresh_ahead = refresh_ahead;
    cfg.kafka = kafka.clone();
    cfg.topics = topics.clone();
    cfg.group_id = group.to_owned();
    cfg.tick_interval = Duration::from_secs(3600);
    cfg.stats_interval = Duration::from_secs(3600);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(analyzer::service::serve(cfg, listener, shutdown.clone()));
    let http = reqwest::Client::new();
    let folded = |text: &str| -> usize {
        text.lines()
            .filter(|l| l.starts_with("smart_prefetch_analyzer_events_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as usize
    };
    let mut started = None;
    loop {
        let text = match http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let k = folded(&text);
        if k > 0 && started.is_none() {
            started = Some((Instant::now(), k, cpu_seconds()));
        }
        if k >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t0, k0, cpu0) = started.context("no event folded")?;
    let rate = (n - k0) as f64 / t0.elapsed().as_secs_f64();
    let cpu_us = (cpu_seconds() - cpu0) * 1e6 / (n - k0) as f64;
    let text = http.get(&url).send().await?.text().await?;
    let predictions: f64 = text
        .lines()
        .filter(|l| l.starts_with("smart_prefetch_analyzer_predictions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!(
        "analyzer round: {n} events folded, {predictions} event-driven predictions published"
    );
    shutdown.cancel();
    task.await??;
    Ok(Drain { rate, cpu_us })
}

/// Times the analyzer's per-event work on one thread with no Kafka — parse and validate, fold,
/// serialise the predictions it returns — so the fold rate can be read against its parts.
fn cpu_breakdown(evs: &[QueryEvent]) {
    let bodies: Vec<Vec<u8>> = evs.iter().map(QueryEvent::to_json).collect();
    let now = Utc::now() + CDuration::seconds(1);
    let started = Instant::now();
    let parsed: Vec<QueryEvent> =
        bodies.iter().filter_map(|b| QueryEvent::from_json(b, now).ok()).collect();
    let parse = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let fast =
        bodies.iter().filter(|b| analyzer::service::pipeline::parse::event(b, now).is_ok()).count();
    let parse_fast = started.elapsed().as_secs_f64();
    assert_eq!(fast, parsed.len(), "the analyzer's parser and the contract's agree");
    let mut model = analyzer::Model::new(analyzer::ModelConfig::default()).expect("default config");
    let started = Instant::now();
    let mut predictions = Vec::new();
    for e in &parsed {
        predictions.extend(model.record(e).predictions);
    }
    let record = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let bytes: usize =
        predictions.iter().map(|p| serde_json::to_vec(p).map_or(0, |b| b.len())).sum();
    let serialise = started.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    let us = |s: f64| s * 1e6 / evs.len() as f64;
    println!(
        "CPU per event, one thread, no Kafka: parse+validate {:.3} µs (QueryEvent::from_json) / {:.3} µs (the analyzer's parse::event), record {:.3} µs, serialise {} predictions {:.3} µs",
        us(parse),
        us(parse_fast),
        us(record),
        predictions.len(),
        us(serialise)
    );
}

/// Runs `analyzer-throughput`.
pub async fn throughput(args: ThroughputArgs) -> anyhow::Result<()> {
    if args.cpu_only {
        let mut evs = crate::ingest::events(args.events);
        if args.no_clients {
            evs.iter_mut().for_each(|e| e.client = None);
        }
        cpu_breakdown(&evs);
        return Ok(());
    }
    let mut kafka = KafkaArgs::new(&args.brokers);
    kafka.topic_partitions = 6;
    kafka.options = args.kafka_option.clone();
    let run = std::process::id();
    let topics = TopicArgs::prefixed(&format!("bench-an-{run}."));
    let specs = [TopicSpec { name: topics.query_events_topic.clone(), compacted: false }];
    ensure_topics(&kafka, &specs, Duration::from_secs(30)).await?;
    let mut evs = crate::ingest::events(args.events);
    if args.no_clients {
        evs.iter_mut().for_each(|e| e.client = None);
    }
    let producer = kafka.producer(Duration::from_secs(120))?;
    for chunk in evs.chunks(50_000) {
        let futs: Vec<_> = chunk
            .iter()
            .map(|e| {
                let body = e.to_json();
                let key = e.ticker.as_str().to_owned();
                let f = producer.send_result(
                    FutureRecord::to(&topics.query_events_topic).key(&key).payload(&body),
                );
                f.map_err(|(e, _)| e)
            })
            .collect::<Result<_, _>>()?;
        for f in futures::future::join_all(futs).await {
            f?.map_err(|(e, _)| e)?;
        }
    }
    producer.flush(Duration::from_secs(30))?;
    println!("pre-filled {} events into {} (6 partitions)", args.events, topics.query_events_topic);
    cpu_breakdown(&evs);
    println!("| round | plain consumer events/s | analyzer events/s | analyzer / raw | CPU µs/event raw | CPU µs/event analyzer |");
    println!("|---|---|---|---|---|---|");
    let (mut raws, mut ans) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let raw = drain_raw(
            &kafka,
            &topics.query_events_topic,
            &format!("bench-raw-{run}-{round}"),
            args.events,
        )
        .await?;
        let an = drain_analyzer(
            &kafka,
            &topics,
            &format!("bench-an-{run}-{round}"),
            args.events,
            args.refresh_ahead,
        )
        .await?;
        println!(
            "| {round} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
            raw.rate,
            an.rate,
            an.rate / raw.rate,
            raw.cpu_us,
            an.cpu_us
        );
        raws.push(raw.rate);
        ans.push(an.rate);
    }
    raws.sort_by(f64::total_cmp);
    ans.sort_by(f64::total_cmp);
    let (r, a) = (raws[raws.len() / 2], ans[ans.len() / 2]);
    println!("| median | {r:.0} | {a:.0} | **{:.2}** | | |", a / r);
    Ok(())
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
