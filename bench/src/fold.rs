//! `analyzer-throughput`: pre-fills a topic with events, then drains it twice per round — with a
//! plain rdkafka consumer (the raw limit, in the bench process) and with the analyzer service
//! (fold into the model, publish, store offsets; in a child process, `serve.rs`) — in
//! alternation, each in a fresh consumer group. Each side's CPU per event is its own process's
//! CPU time over its timed span (`cpu.rs`): the consumer's from its first message to its last,
//! the analyzer's from its first folded event (read off its `/metrics`) to its last
//! (`fold_analyzer.rs`). Under each round, each side's CPU by kind of thread and how often those
//! threads blocked, and for the analyzer the longest pause in its folding: where a gap between
//! the two sides comes from.

use crate::cpu::{
    fmt_opt, fmt_spread, fmt_threads, load_average, Meter, Sample, Stopwatch, Threads,
};
use anyhow::Context;
use chrono::{Duration as CDuration, Utc};
use prefetch_common::contract::QueryEvent;
use prefetch_common::kafka::{ensure_topics, KafkaArgs, TopicArgs, TopicSpec};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, FutureRecord, Producer, ThreadedProducer,
};
use std::time::{Duration, Instant};

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
    /// Leave `client` out of the events: only each ticker's own stream teaches same-ticker
    /// follow-ups (`model/src/sequence.rs`), none across tickers.
    #[arg(long)]
    no_clients: bool,
    /// Extra librdkafka option (key=value, repeatable) for every client of the run — the plain
    /// consumer's and the analyzer's alike, so they keep the same settings.
    #[arg(short = 'X', long = "kafka-option")]
    pub(crate) kafka_option: Vec<String>,
    /// Only time the per-event CPU breakdown (no Kafka) and exit.
    #[arg(long)]
    cpu_only: bool,
    /// The analyzer's `--refresh-ahead` (its default is on; off publishes the likely
    /// follow-ups of keys the model has no view of, the heavier path for the same events).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) refresh_ahead: bool,
    /// The analyzer's periodic checkpoints (`--checkpoint-interval`, 60 s; `false`: `0s`, off).
    /// Off by default here: a round's drain lasts well under a second, so no periodic one runs
    /// in it either way, but with them on each round's fresh group first reads its (empty)
    /// state topic with one new reader per partition, ~0.1 s each and in about one round in five
    /// ~1 s for one of them, while the other five partitions are folded — a pause of a second
    /// in the analyzer's span that is a group's first start (measured by `analyzer-restart`),
    /// not the fold (BENCHMARKS.md #15, "Analyzer fold: refresh-ahead off publishes what is
    /// new").
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) checkpoints: bool,
    /// Also count user-space instructions per event with `perf stat` (needs `perf` and a
    /// machine with hardware counters; `n/a` otherwise).
    #[arg(long)]
    pub(crate) perf: bool,
    /// The plain consumer also produces one prediction-sized message per N events consumed
    /// (0: none), with the services' producer settings, and its timed span ends once Kafka has
    /// acknowledged them all: the raw limit of a service that publishes for one event in N
    /// (with `--refresh-ahead false` the analyzer published for about one in eight until
    /// 2026-11-29, one in 150 since: BENCHMARKS.md #15).
    #[arg(long, default_value_t = 0, value_name = "N")]
    raw_produce_every: usize,
}

/// One drain: events/s, and what the draining process spent over the timed span.
pub(crate) struct Drain {
    pub rate: f64,
    pub events: usize,
    pub cpu: Sample,
}

impl Drain {
    fn cpu_us(&self) -> f64 {
        self.cpu.cpu_us_per(self.events)
    }
}

/// What the plain consumer produces besides (`--raw-produce-every`): one message per `every`
/// consumed, to `topic`.
struct RawOut<'a> {
    every: usize,
    topic: &'a str,
}

/// A message the size of a published prediction (about 190 bytes of JSON).
const PREDICTION_SIZED: &[u8] = br#"{"ticker":"AAPL","module":"chart","confidence":0.4837261904761905,"horizon_s":300,"generated_at":"2026-03-09T14:31:07.512Z","reason":"sequence","padding":"................"}"#;

async fn drain_raw(
    kafka: &KafkaArgs,
    topic: &str,
    group: &str,
    n: usize,
    perf: bool,
    out: Option<RawOut<'_>>,
) -> anyhow::Result<Drain> {
    let consumer: StreamConsumer = kafka.consumer_config(group)?.create()?;
    consumer.subscribe(&[topic])?;
    let producer: Option<ThreadedProducer<DefaultProducerContext>> = match out {
        Some(_) => Some(kafka.producer_config(Duration::from_secs(60))?.create()?),
        None => None,
    };
    let mut started = None;
    let mut seen = 0usize;
    while seen < n {
        let m = consumer.recv().await?;
        if started.is_none() {
            started = Some((Instant::now(), Meter::start(std::process::id(), perf)));
        }
        // The raw limit: receive and store the offset, nothing else (but the messages asked for).
        std::hint::black_box(rdkafka::Message::payload(&m));
        if let (Some(p), Some(o)) = (&producer, &out) {
            if seen.is_multiple_of(o.every) {
                let key = rdkafka::Message::key(&m).unwrap_or_default();
                let mut record = BaseRecord::to(o.topic).key(key).payload(PREDICTION_SIZED);
                while let Err((e, r)) = p.send(record) {
                    anyhow::ensure!(
                        matches!(e, KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)),
                        "producing failed: {e}"
                    );
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        consumer.store_offset_from_message(&m)?;
        seen += 1;
    }
    if let Some(p) = &producer {
        p.flush(Duration::from_secs(60))?;
    }
    let (t0, meter) = started.context("no message")?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = meter.stop();
    // See the analyzer service: never wait on a subscribed consumer's drop.
    std::thread::spawn(move || drop(consumer));
    Ok(Drain { rate: n as f64 / secs, events: n, cpu })
}

/// Flags of the internal `drain-raw` (the plain consumer in a process of its own).
#[derive(clap::Args, Debug)]
pub struct DrainRawArgs {
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// The pre-filled topic.
    #[arg(long)]
    topic: String,
    /// A fresh consumer group.
    #[arg(long)]
    group: String,
    /// Messages to drain.
    #[arg(long)]
    events: usize,
    /// Extra librdkafka option (key=value, repeatable).
    #[arg(short = 'X', long = "kafka-option")]
    kafka_option: Vec<String>,
    /// Count instructions with `perf stat`.
    #[arg(long)]
    perf: bool,
    /// Also produce one message per N consumed to `--out-topic` (0: none).
    #[arg(long, default_value_t = 0)]
    produce_every: usize,
    /// Where those go (required with `--produce-every`).
    #[arg(long, default_value = "")]
    out_topic: String,
}

/// `drain-raw`: drains the topic and prints `DRAINED <events/s> <CPU s> <instructions|->` and
/// `THREADS <name>|<CPU s>|<switches>;…`.
pub async fn drain_raw_main(args: DrainRawArgs) -> anyhow::Result<()> {
    let mut kafka = KafkaArgs::new(&args.brokers);
    kafka.options = args.kafka_option;
    anyhow::ensure!(
        args.produce_every == 0 || !args.out_topic.is_empty(),
        "--produce-every needs --out-topic"
    );
    let out = (args.produce_every > 0)
        .then_some(RawOut { every: args.produce_every, topic: &args.out_topic });
    let d = drain_raw(&kafka, &args.topic, &args.group, args.events, args.perf, out).await?;
    let instructions = d.cpu.instructions.map_or("-".to_owned(), |i| i.to_string());
    println!("DRAINED {} {} {instructions}", d.rate, d.cpu.cpu_seconds);
    let threads: Vec<String> = d
        .cpu
        .threads
        .iter()
        .map(|t| format!("{}|{}|{}", t.name, t.cpu_seconds, t.switches))
        .collect();
    println!("THREADS {}", threads.join(";"));
    Ok(())
}

/// The plain consumer's drain in a child process (`drain-raw`), so its CPU is its own process's
/// as the analyzer's is (and `valgrind --trace-children=yes` counts each side apart).
async fn drain_raw_child(
    args: &ThroughputArgs,
    topic: &str,
    group: &str,
    out_topic: &str,
) -> anyhow::Result<Drain> {
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["drain-raw", "--brokers", &args.brokers, "--topic", topic, "--group", group])
        .args(["--events", &args.events.to_string()]);
    if args.raw_produce_every > 0 {
        cmd.args(["--produce-every", &args.raw_produce_every.to_string()])
            .args(["--out-topic", out_topic]);
    }
    for o in &args.kafka_option {
        cmd.args(["-X", o]);
    }
    if args.perf {
        cmd.arg("--perf");
    }
    cmd.stderr(std::process::Stdio::inherit());
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    anyhow::ensure!(out.status.success(), "drain-raw failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("DRAINED "))
        .context("drain-raw printed no DRAINED line")?;
    let f: Vec<&str> = line.split_whitespace().collect();
    anyhow::ensure!(f.len() == 3, "drain-raw printed {line:?}");
    let threads = text
        .lines()
        .find_map(|l| l.strip_prefix("THREADS "))
        .unwrap_or_default()
        .split(';')
        .filter_map(|t| {
            let mut p = t.split('|');
            Some(Threads {
                name: p.next()?.to_owned(),
                cpu_seconds: p.next()?.parse().ok()?,
                switches: p.next()?.parse().ok()?,
            })
        })
        .collect();
    Ok(Drain {
        rate: f[0].parse()?,
        events: args.events,
        cpu: Sample { cpu_seconds: f[1].parse()?, instructions: f[2].parse().ok(), threads },
    })
}

/// Times the analyzer's per-event work on one thread with no Kafka — parse and validate, fold,
/// serialise the predictions it returns — so the fold rate can be read against its parts. Each
/// part is the thread's CPU time ([`Stopwatch`]), so the figures hold while others run.
fn cpu_breakdown(evs: &[QueryEvent], refresh_ahead: bool) -> anyhow::Result<()> {
    use analyzer::service::pipeline::parse;
    let bodies: Vec<Vec<u8>> = evs.iter().map(QueryEvent::to_json).collect();
    let now = Utc::now() + CDuration::seconds(1);
    let started = Stopwatch::start();
    let parsed: Vec<QueryEvent> =
        bodies.iter().filter_map(|b| QueryEvent::from_json(b, now).ok()).collect();
    let parse = started.seconds();
    // The analyzer's parse thread: located in the buffer without allocating, the rest parsed.
    let started = Stopwatch::start();
    let located: Vec<_> = bodies.iter().filter_map(|b| parse::locate(b, 0, now)).collect();
    let parse_fast = started.seconds();
    anyhow::ensure!(located.len() == parsed.len(), "every generated event is located");
    // The fold thread's model, built as the service builds it.
    let mut cfg = analyzer::service::Config::new("unused:9092");
    cfg.refresh_ahead = refresh_ahead;
    let started = Stopwatch::start();
    let mut predictions = Vec::new();
    let mut model = analyzer::service::model_for(&cfg, cfg.model_config()?)?;
    for (l, b) in located.iter().zip(&bodies) {
        predictions.extend(model.record_view(l.view(b)).predictions);
    }
    let record = started.seconds();
    // The same with owned events, parsed, recorded and dropped, as the analyzer did before.
    let started = Stopwatch::start();
    let mut model = analyzer::service::model_for(&cfg, cfg.model_config()?)?;
    for b in &bodies {
        let e = parse::event(b, now).expect("a generated event is valid");
        std::hint::black_box(model.record(&e));
    }
    let owned = started.seconds();
    let started = Stopwatch::start();
    let bytes: usize =
        predictions.iter().map(|p| serde_json::to_vec(p).map_or(0, |b| b.len())).sum();
    let serialise = started.seconds();
    std::hint::black_box(bytes);
    let us = |s: f64| s * 1e6 / evs.len() as f64;
    println!(
        "CPU per event, one thread (its CPU time), no Kafka, refresh-ahead {refresh_ahead}: parse+validate {:.3} µs (QueryEvent::from_json) / {:.3} µs (the analyzer's parse::locate); record {:.3} µs; locate + record {:.3} µs against parse::event + record + drop {:.3} µs; serialise {} predictions {:.3} µs",
        us(parse),
        us(parse_fast),
        us(record),
        us(parse_fast + record),
        us(owned),
        predictions.len(),
        us(serialise)
    );
    Ok(())
}

/// Runs `analyzer-throughput`.
pub async fn throughput(args: ThroughputArgs) -> anyhow::Result<()> {
    if args.cpu_only {
        let mut evs = crate::ingest::events(args.events);
        if args.no_clients {
            evs.iter_mut().for_each(|e| e.client = None);
        }
        return cpu_breakdown(&evs, args.refresh_ahead);
    }
    let mut kafka = KafkaArgs::new(&args.brokers);
    kafka.topic_partitions = 6;
    kafka.options = args.kafka_option.clone();
    let run = std::process::id();
    let topics = TopicArgs::prefixed(&format!("bench-an-{run}."));
    let raw_out = format!("bench-an-{run}.raw-out");
    let specs = [
        TopicSpec { name: topics.query_events_topic.clone(), compacted: false },
        TopicSpec { name: raw_out.clone(), compacted: false },
    ];
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
    cpu_breakdown(&evs, args.refresh_ahead)?;
    println!("load average at start: {}; refresh-ahead {}", load_average(), args.refresh_ahead);
    if args.raw_produce_every > 0 {
        println!(
            "the plain consumer also produces one prediction-sized message per {} events",
            args.raw_produce_every
        );
    }
    println!("| round | plain consumer events/s | analyzer events/s | analyzer / raw | CPU µs/event raw | CPU µs/event analyzer | CPU analyzer / raw | instructions/event raw | instructions/event analyzer | load |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut cols: [Vec<f64>; 6] = Default::default();
    let prefix = format!("bench-an-{run}.");
    for round in 1..=args.rounds {
        let group = format!("bench-raw-{run}-{round}");
        let raw = drain_raw_child(&args, &topics.query_events_topic, &group, &raw_out).await?;
        let an = crate::fold_analyzer::drain_analyzer(
            &args.brokers,
            &prefix,
            &format!("bench-an-{run}-{round}"),
            args.events,
            &args,
        )
        .await?;
        let figures = [
            raw.rate,
            an.rate,
            an.rate / raw.rate,
            raw.cpu_us(),
            an.cpu_us(),
            an.cpu_us() / raw.cpu_us(),
        ];
        let [raw_rate, an_rate, rate_ratio, raw_cpu, an_cpu, cpu_ratio] = figures;
        println!(
            "| {round} | {raw_rate:.0} | {an_rate:.0} | {rate_ratio:.2} | {raw_cpu:.2} | {an_cpu:.2} | {cpu_ratio:.2} | {} | {} | {} |",
            fmt_opt(raw.cpu.instructions_per(raw.events), 0),
            fmt_opt(an.cpu.instructions_per(an.events), 0),
            load_average(),
        );
        // By kind of thread, CPU µs per event (voluntary context switches per 1,000 events):
        // where each side's CPU goes, and how often its threads block and are woken.
        println!("  threads, plain consumer: {}", fmt_threads(&raw.cpu.threads, raw.events));
        println!("  threads, analyzer: {}", fmt_threads(&an.cpu.threads, an.events));
        for (c, v) in cols.iter_mut().zip(figures) {
            c.push(v);
        }
    }
    if args.rounds == 0 {
        // (Pre-filled only: `scripts/instructions.sh` drains it under callgrind.)
        return Ok(());
    }
    println!(
        "| median (min–max) | {} | {} | **{}** | {} | {} | **{}** | | | |",
        fmt_spread(&cols[0], 0),
        fmt_spread(&cols[1], 0),
        fmt_spread(&cols[2], 2),
        fmt_spread(&cols[3], 2),
        fmt_spread(&cols[4], 2),
        fmt_spread(&cols[5], 2),
    );
    Ok(())
}
