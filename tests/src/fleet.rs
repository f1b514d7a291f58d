//! Several analyzers and warmers as one deployment: their binaries started as child processes
//! (so a scenario can `kill -9` one and restart it on the same port), steady generated traffic
//! on a 12-partition events topic, and the exactly-once check of the analyzers' per-key counts
//! against a reference analyzer fed the same events.

use crate::{bin_path, eventually, http, ChildService, TestKafka};
use prefetch_common::kafka::TopicArgs;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Partitions of the events topic (and of every topic the services create) in these scenarios.
pub const PARTITIONS: i32 = 12;

/// Per-key window counts (`ticker:module` → events) of one analyzer (`None` while it does not
/// answer).
pub async fn window(base: &str) -> Option<BTreeMap<String, u64>> {
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
pub async fn merged(bases: &[String]) -> Option<BTreeMap<String, u64>> {
    let mut all = BTreeMap::new();
    for b in bases {
        for (k, n) in window(b).await? {
            *all.entry(k).or_insert(0) += n;
        }
    }
    Some(all)
}

/// Waits until the instances together hold exactly the reference's counts, key by key, and the
/// reference holds `events` events; panics with the keys that differ otherwise. A key counted
/// twice (a partition restored on top of live state) or lost (a partition nobody restored)
/// makes the maps differ even when the key sets agree.
pub async fn assert_counts_match(
    bases: &[String],
    reference: &str,
    events: u64,
    deadline: Duration,
) {
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

/// An in-process analyzer's configuration for these scenarios: 12 partitions, a tick every
/// 500 ms, uniform hour weights, refresh-ahead off (predictions follow popularity only).
pub fn analyzer_config(
    kafka: &TestKafka,
    topics: &TopicArgs,
    group: &str,
) -> analyzer::service::Config {
    let mut cfg = analyzer::service::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.kafka.topic_partitions = PARTITIONS;
    cfg.topics = topics.clone();
    cfg.group_id = group.to_owned();
    cfg.tick_interval = Duration::from_millis(500);
    cfg.hour_weights = Some(String::new());
    cfg.refresh_ahead = false;
    kafka.prepare_topic(&cfg.state_topic(), PARTITIONS);
    cfg
}

/// The topic flags every service binary takes.
fn topic_flags(t: &TopicArgs) -> Vec<String> {
    [
        ("--query-events-topic", &t.query_events_topic),
        ("--predictions-topic", &t.predictions_topic),
        ("--config-topic", &t.config_topic),
        ("--stats-topic", &t.stats_topic),
        ("--dlq-topic", &t.dlq_topic),
    ]
    .into_iter()
    .flat_map(|(f, v)| [f.to_owned(), v.clone()])
    .collect()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Starts the analyzer binary as static member `id` of `cfg.group_id` on `port`, with
/// checkpoints every 2 s and the scenario settings of [`analyzer_config`].
pub fn start_analyzer(
    kafka: &TestKafka,
    cfg: &analyzer::service::Config,
    id: &str,
    port: u16,
) -> ChildService {
    let mut args = strings(&["--brokers", &kafka.bootstrap(), "--topic-partitions", "12"]);
    args.extend(strings(&["--listen", &format!("127.0.0.1:{port}"), "--group-id", &cfg.group_id]));
    args.extend(strings(&["--group-instance-id", id, "--instance-id", id]));
    args.extend(strings(&["--checkpoint-interval", "2s", "--tick-interval", "500ms"]));
    args.extend(strings(&["--hour-weights", "", "--refresh-ahead", "false"]));
    args.extend(topic_flags(&cfg.topics));
    ChildService::spawn(&bin_path("analyzer"), &args, &format!("{}-{id}", cfg.group_id), port)
}

/// How the scenario's warmers are set up (all of them alike: one cluster).
#[derive(Debug, Clone)]
pub struct WarmerFleet {
    /// Their topics.
    pub topics: TopicArgs,
    /// Their consumer group.
    pub group: String,
    /// `redis://…` (the shared cache).
    pub redis_url: String,
    /// `--redis-prefix`, unique to the scenario.
    pub redis_prefix: String,
    /// `--upstream-url`.
    pub upstream: String,
    /// `--rate-limit` for the whole cluster (requests/s).
    pub rate: f64,
    /// `--rate-burst`.
    pub burst: u32,
    /// `--rate-max-wait`.
    pub max_wait: Duration,
}

impl WarmerFleet {
    /// Starts warmer `id` (no spread, no holdback, every prediction considered) on `port`.
    pub fn start(&self, kafka: &TestKafka, id: &str, port: u16) -> ChildService {
        let mut args = strings(&["--brokers", &kafka.bootstrap(), "--topic-partitions", "12"]);
        args.extend(strings(&["--listen", &format!("127.0.0.1:{port}"), "--group", &self.group]));
        args.extend(strings(&["--cache", &self.redis_url, "--redis-prefix", &self.redis_prefix]));
        args.extend(strings(&["--upstream-url", &self.upstream, "--upstream-timeout", "5s"]));
        args.extend(strings(&["--rate-limit", &self.rate.to_string()]));
        args.extend(strings(&["--rate-burst", &self.burst.to_string()]));
        args.extend(strings(&["--rate-max-wait", &format!("{}ms", self.max_wait.as_millis())]));
        args.extend(strings(&["--spread", "0s", "--holdback", "0", "--min-confidence", "0"]));
        args.extend(topic_flags(&self.topics));
        ChildService::spawn(&bin_path("warmer"), &args, &format!("{}-{id}", self.group), port)
    }
}

/// Whether an analyzer's last tick published anything.
pub async fn predicts(base: &str) -> bool {
    let Ok(r) = http().get(format!("{base}/v1/predictions")).send().await else { return false };
    let v: Value = r.json().await.unwrap_or_default();
    v["predictions"].as_array().is_some_and(|p| !p.is_empty())
}

/// Creates the 12-partition events topic before anything reads it.
pub async fn create_events_topic(kafka: &TestKafka, topic: &str) {
    kafka.prepare_topic(topic, PARTITIONS);
    if kafka.is_real() {
        let mut args = kafka.kafka_args();
        args.topic_partitions = PARTITIONS;
        let spec = prefetch_common::kafka::TopicSpec { name: topic.to_owned(), compacted: false };
        prefetch_common::kafka::ensure_topics(&args, &[spec], Duration::from_secs(30))
            .await
            .expect("create the events topic");
    }
}

/// A producer of query events (acks from all replicas).
pub fn events_producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer")
}

/// Produces `n` query events over `tickers` × three modules (`price`, `chart`, `news`),
/// timestamped now, keyed by ticker, no `hit` (a miss); waits for every acknowledgement.
pub async fn produce_events(
    p: &FutureProducer,
    topic: &str,
    tickers: usize,
    n: usize,
    seq: &mut u64,
) {
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
    let sends: Vec<_> = bodies
        .iter()
        .map(|(key, body)| {
            p.send(FutureRecord::to(topic).key(key).payload(body), Duration::from_secs(30))
        })
        .collect();
    for s in sends {
        s.await.map_err(|(e, _)| e).expect("produce");
    }
}

/// Steady generated traffic: 50 events every 100 ms over 48 tickers, until stopped.
pub struct Traffic {
    stop: CancellationToken,
    produced: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    /// Starts it on `topic`.
    pub fn start(bootstrap: &str, topic: &str) -> Self {
        let stop = CancellationToken::new();
        let produced = Arc::new(AtomicU64::new(0));
        let p = events_producer(bootstrap);
        let (s, n, topic) = (stop.clone(), produced.clone(), topic.to_owned());
        let task = tokio::spawn(async move {
            let mut seq = 0;
            while !s.is_cancelled() {
                produce_events(&p, &topic, 48, 50, &mut seq).await;
                n.fetch_add(50, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { stop, produced, task }
    }

    /// Stops it; returns how many events it produced (every one acknowledged).
    pub async fn stop(self) -> u64 {
        self.stop.cancel();
        self.task.await.expect("traffic task");
        self.produced.load(Ordering::SeqCst)
    }
}

/// Waits until the analyzer at `base` publishes predictions again; returns how long that took.
pub async fn until_predicting(base: &str, deadline: Duration) -> Duration {
    let started = Instant::now();
    eventually(deadline, &format!("{base} predicting"), || async {
        predicts(base).await.then_some(())
    })
    .await;
    started.elapsed()
}
