//! Scale-out: several analyzers in one group hold exactly what one analyzer fed the same events
//! holds — per key, by count — through joins, leaves, and a `kill -9` with a restart.
//!
//! The reference is an analyzer in a group of its own (checkpoints off) reading the same topic.
//! Each instance's state is read from `/v1/window` (every live key with its events in the
//! window); the instances' counts are added up per key and compared with the reference's.

use prefetch_e2e::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Per-key window counts of one instance (`None` while it does not answer).
async fn window(base: &str) -> Option<BTreeMap<String, u64>> {
    let v: Value = http().get(format!("{base}/v1/window")).send().await.ok()?.json().await.ok()?;
    Some(
        v["keys"]
            .as_array()?
            .iter()
            .map(|k| {
                (
                    format!("{}:{}", k[0].as_str().unwrap(), k[1].as_str().unwrap()),
                    k[2].as_u64().unwrap(),
                )
            })
            .collect(),
    )
}

/// The instances' counts added up per key.
async fn merged(bases: &[String]) -> Option<BTreeMap<String, u64>> {
    let mut all = BTreeMap::new();
    for b in bases {
        for (k, n) in window(b).await? {
            *all.entry(k).or_insert(0) += n;
        }
    }
    Some(all)
}

/// Waits until the instances together hold exactly the reference's counts, and the reference
/// holds `events` events; panics with both maps' difference otherwise.
async fn assert_counts_match(bases: &[String], reference: &str, events: u64, deadline: Duration) {
    let start = Instant::now();
    loop {
        let (got, want) = (merged(bases).await, window(reference).await);
        if let (Some(got), Some(want)) = (&got, &want) {
            if want.values().sum::<u64>() == events && got == want {
                return;
            }
        }
        if start.elapsed() > deadline {
            let (got, want) = (got.unwrap_or_default(), want.unwrap_or_default());
            let diff: Vec<_> = want
                .keys()
                .chain(got.keys())
                .filter(|k| got.get(*k) != want.get(*k))
                .map(|k| format!("{k}: instances {:?} reference {:?}", got.get(k), want.get(k)))
                .take(20)
                .collect();
            panic!(
                "counts differ after {deadline:?} (produced {events}, instances {}, reference {}): {diff:#?}",
                got.values().sum::<u64>(),
                want.values().sum::<u64>()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn base_config(
    kafka: &TestKafka,
    topics: &prefetch_common::kafka::TopicArgs,
    group: &str,
) -> analyzer::service::Config {
    let mut cfg = analyzer::service::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.kafka.topic_partitions = 12;
    cfg.topics = topics.clone();
    cfg.group_id = group.to_owned();
    cfg.tick_interval = Duration::from_millis(500);
    cfg.hour_weights = Some(String::new());
    cfg.refresh_ahead = false;
    kafka.prepare_topic(&cfg.state_topic(), 12);
    cfg
}

/// `n` events over `tickers` × three modules, timestamped now, keyed by ticker.
async fn produce_events(p: &FutureProducer, topic: &str, tickers: usize, n: usize, seq: &mut u64) {
    let modules = ["price", "chart", "news"];
    let bodies: Vec<(String, String)> = (0..n)
        .map(|_| {
            *seq += 1;
            let t = format!("T{:02}", *seq as usize * 7 % tickers);
            let m = modules[(*seq / 3) as usize % 3];
            let body = json!({"ticker": t, "module": m, "ts": chrono::Utc::now().to_rfc3339(), "client": format!("c{}", *seq % 17)}).to_string();
            (t, body)
        })
        .collect();
    let mut sends = Vec::with_capacity(n);
    for (key, body) in &bodies {
        sends.push(p.send(FutureRecord::to(topic).key(key).payload(body), Duration::from_secs(30)));
    }
    for r in futures_join(sends).await {
        r.map_err(|(e, _)| e).expect("produce");
    }
}

async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::with_capacity(fs.len());
    for f in fs {
        out.push(f.await);
    }
    out
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

async fn create_events_topic(kafka: &TestKafka, topic: &str) {
    kafka.prepare_topic(topic, 12);
    if kafka.is_real() {
        let mut args = kafka.kafka_args();
        args.topic_partitions = 12;
        let spec = prefetch_common::kafka::TopicSpec { name: topic.to_owned(), compacted: false };
        prefetch_common::kafka::ensure_topics(&args, &[spec], Duration::from_secs(30))
            .await
            .expect("create the events topic");
    }
}

/// One instance joins and leaves while events flow in batches: after each step the instances
/// together hold the reference's counts, key by key — a partition kept is not restored again
/// (no double count), a partition handed over is restored from the checkpoint written on revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_a_leave_keep_every_count_exact() {
    let kafka = TestKafka::start();
    let topics = unique_topics("so-joinleave");
    kafka.prepare(&topics);
    create_events_topic(&kafka, &topics.query_events_topic).await;
    let group = format!("{}analyzers", topics.query_events_topic);
    let cfg = base_config(&kafka, &topics, &group);
    let mut reference_cfg = base_config(&kafka, &topics, &format!("{group}-reference"));
    reference_cfg.checkpoint_interval = Duration::ZERO;
    let p = producer(&kafka.bootstrap());
    let mut seq = 0;

    let reference = spawn_analyzer(reference_cfg).await;
    let a = spawn_analyzer(cfg.clone()).await;
    produce_events(&p, &topics.query_events_topic, 36, 600, &mut seq).await;
    assert_counts_match(&[a.url("")], &reference.url(""), 600, Duration::from_secs(60)).await;

    let b = spawn_analyzer(cfg.clone()).await;
    produce_events(&p, &topics.query_events_topic, 36, 600, &mut seq).await;
    assert_counts_match(
        &[a.url(""), b.url("")],
        &reference.url(""),
        1_200,
        Duration::from_secs(90),
    )
    .await;
    let (wa, wb) = (window(&a.url("")).await.unwrap(), window(&b.url("")).await.unwrap());
    assert!(!wa.is_empty() && !wb.is_empty(), "the partitions are split: A {wa:?} B {wb:?}");

    b.stop().await;
    produce_events(&p, &topics.query_events_topic, 36, 600, &mut seq).await;
    assert_counts_match(&[a.url("")], &reference.url(""), 1_800, Duration::from_secs(90)).await;
    a.stop().await;
    reference.stop().await;
}

/// An analyzer binary with an admin port of its own.
struct Proc {
    child: Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_analyzer(kafka: &TestKafka, cfg: &analyzer::service::Config, id: &str, port: u16) -> Proc {
    let t = &cfg.topics;
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("{}-{id}.log", cfg.group_id)))
            .unwrap();
    let child = Command::new(bin_path("analyzer"))
        .args(["--brokers", &kafka.bootstrap(), "--topic-partitions", "12"])
        .args(["--listen", &format!("127.0.0.1:{port}"), "--group-id", &cfg.group_id])
        .args(["--group-instance-id", id, "--instance-id", id])
        .args(["--checkpoint-interval", "2s", "--tick-interval", "500ms", "--hour-weights", ""])
        .args(["--refresh-ahead", "false"])
        .args([
            "--query-events-topic",
            &t.query_events_topic,
            "--predictions-topic",
            &t.predictions_topic,
        ])
        .args([
            "--config-topic",
            &t.config_topic,
            "--stats-topic",
            &t.stats_topic,
            "--dlq-topic",
            &t.dlq_topic,
        ])
        .env("PREFETCH_LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the analyzer binary");
    Proc { child, base: format!("http://127.0.0.1:{port}") }
}

async fn ready(base: &str, deadline: Duration) {
    let url = format!("{base}/readyz");
    eventually(deadline, &format!("{base} ready"), || async {
        http().get(&url).send().await.ok()?.status().is_success().then_some(())
    })
    .await;
}

async fn predicts(base: &str) -> bool {
    let Ok(r) = http().get(format!("{base}/v1/predictions")).send().await else { return false };
    let v: Value = r.json().await.unwrap_or_default();
    v["predictions"].as_array().is_some_and(|p| !p.is_empty())
}

/// Three analyzer processes on a 12-partition topic under steady traffic; one is killed with
/// SIGKILL and restarted under the same static member id. Every event is folded exactly once
/// (the three together hold the reference's counts, key by key), the restarted one restores
/// its partitions from checkpoints (no full replay) and predicts again within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_analyzers_survive_a_kill_9_with_every_event_folded_once() {
    let kafka = TestKafka::start();
    let topics = unique_topics("so-kill9");
    kafka.prepare(&topics);
    create_events_topic(&kafka, &topics.query_events_topic).await;
    let group = format!("{}analyzers", topics.query_events_topic);
    let cfg = base_config(&kafka, &topics, &group);
    let mut reference_cfg = base_config(&kafka, &topics, &format!("{group}-reference"));
    reference_cfg.checkpoint_interval = Duration::ZERO;
    let reference = spawn_analyzer(reference_cfg).await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut procs: Vec<Proc> =
        (0..3).map(|i| start_analyzer(&kafka, &cfg, &format!("an-{i}"), ports[i])).collect();
    for p in &procs {
        ready(&p.base, Duration::from_secs(60)).await;
    }

    // Steady traffic: 50 events every 100 ms over 48 tickers until told to stop.
    let stop = CancellationToken::new();
    let produced = Arc::new(AtomicU64::new(0));
    let traffic = {
        let (stop, produced, topic) =
            (stop.clone(), produced.clone(), topics.query_events_topic.clone());
        let p = producer(&kafka.bootstrap());
        tokio::spawn(async move {
            let mut seq = 0;
            while !stop.is_cancelled() {
                produce_events(&p, &topic, 48, 50, &mut seq).await;
                produced.fetch_add(50, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Long enough for checkpoints (every 2 s) to cover most of what each instance folded.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for p in &procs {
        assert!(predicts(&p.base).await, "{} predicts before the kill", p.base);
    }

    // kill -9 one analyzer mid-traffic and restart it as the same static member.
    procs[1].child.kill().unwrap();
    procs[1].child.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted_at = Instant::now();
    procs[1] = start_analyzer(&kafka, &cfg, "an-1", ports[1]);
    let base = procs[1].base.clone();
    eventually(Duration::from_secs(30), "the restarted analyzer predicting", || async {
        predicts(&base).await.then_some(())
    })
    .await;
    let took = restarted_at.elapsed();
    assert!(took < Duration::from_secs(10), "predictions again {took:?} after the restart");
    let m = http().get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |name: &str| -> f64 {
        m.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(-1.0)
    };
    assert!(value("smart_prefetch_analyzer_restore_duration_seconds_count") >= 1.0, "{m}");
    assert_eq!(
        value("smart_prefetch_analyzer_checkpoint_fallbacks_total{reason=\"missing\"}"),
        0.0,
        "every partition restored from a checkpoint: {m}"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    traffic.await.unwrap();
    let events = produced.load(Ordering::SeqCst);
    let bases: Vec<String> = procs.iter().map(|p| p.base.clone()).collect();
    assert_counts_match(&bases, &reference.url(""), events, Duration::from_secs(60)).await;
    drop(procs);
    reference.stop().await;
}
