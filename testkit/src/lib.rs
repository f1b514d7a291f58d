//! The broker side of every test harness, shared by the e2e crate (`tests/`) and the services'
//! own integration tests (the warmer's): [`TestKafka`] (a real broker from `KAFKA_BOOTSTRAP`, or
//! rdkafka's in-process `MockCluster` when it is unset), unique topic names, producing and
//! reading topics back ([`read_topic`], [`read_topic_until`], [`topic_count`]), [`eventually`]
//! for polling with a deadline (never a fixed sleep), and the `promtool` lint of an exposition.
//! It depends on no service crate, so any of them can dev-depend on it without a cycle.
//! `cluster.rs`: multi-instance scenarios — services as child processes that can be killed
//! with SIGKILL, Redis, an upstream that records arrival times, rate-limit arithmetic.
//!
//! Readers use `assign` (not a subscribed group consumer): dropping a subscribed consumer on the
//! MockCluster can hang (rust-rdkafka #453, #509, #611), and tests must never wait on that.

mod cluster;
mod scratch;
pub use cluster::*;
pub use scratch::ScratchDir;

use prefetch_common::kafka::{KafkaArgs, TopicArgs};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The broker a test talks to.
pub enum TestKafka {
    /// A real broker named by `KAFKA_BOOTSTRAP` (CI: Apache Kafka started by `scripts/kafka.sh`).
    Real(String),
    /// rdkafka's in-process mock cluster, for machines with nothing installed.
    Mock(MockCluster<'static, DefaultProducerContext>),
}

impl TestKafka {
    /// `KAFKA_BOOTSTRAP` when set, otherwise a fresh one-broker `MockCluster`.
    pub fn start() -> Self {
        init_logs();
        match std::env::var("KAFKA_BOOTSTRAP") {
            Ok(b) if !b.trim().is_empty() => Self::Real(b),
            _ => Self::Mock(MockCluster::new(1).expect("start rdkafka MockCluster")),
        }
    }

    /// Bootstrap servers for clients.
    pub fn bootstrap(&self) -> String {
        match self {
            Self::Real(b) => b.clone(),
            Self::Mock(m) => m.bootstrap_servers(),
        }
    }

    /// Whether this is a real broker.
    pub fn is_real(&self) -> bool {
        matches!(self, Self::Real(_))
    }

    /// Makes `topics` exist before a service starts. A real broker is left alone (the services
    /// create what they need, which is part of what is tested); the MockCluster does not answer
    /// CreateTopics, so its topics are made through the mock's own API.
    pub fn prepare(&self, topics: &TopicArgs) {
        if let Self::Mock(m) = self {
            for t in [&topics.query_events_topic, &topics.predictions_topic, &topics.dlq_topic] {
                m.create_topic(t, 3, 1).expect("mock create_topic");
            }
            for t in [&topics.config_topic, &topics.stats_topic] {
                m.create_topic(t, 1, 1).expect("mock create_topic");
            }
        }
    }

    /// Makes one extra topic exist (MockCluster only, as [`TestKafka::prepare`]).
    pub fn prepare_topic(&self, topic: &str, partitions: i32) {
        if let Self::Mock(m) = self {
            m.create_topic(topic, partitions, 1).expect("mock create_topic");
        }
    }

    /// Creates `topic` now, on either broker, for a test that writes to it before the service
    /// that would create it has started.
    pub async fn precreate(&self, topic: &str) {
        match self {
            Self::Mock(m) => {
                let _ = m.create_topic(topic, 3, 1);
            }
            Self::Real(_) => {
                let spec =
                    prefetch_common::kafka::TopicSpec { name: topic.to_owned(), compacted: false };
                prefetch_common::kafka::ensure_topics(
                    &self.kafka_args(),
                    &[spec],
                    Duration::from_secs(30),
                )
                .await
                .expect("create topic");
            }
        }
    }

    /// Connection settings for a service under test (3 partitions per created topic).
    pub fn kafka_args(&self) -> KafkaArgs {
        let mut a = KafkaArgs::new(self.bootstrap());
        a.topic_partitions = 3;
        a
    }
}

/// Logs from the services under test, shown for failing tests (`RUST_LOG` filters; default warn).
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// Topic names no other test (or earlier run on the same broker) uses.
pub fn unique_topics(test: &str) -> TopicArgs {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            % 1_000_000_000;
    TopicArgs::prefixed(&format!(
        "t-{test}-{}-{nanos}-{}.",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// An HTTP client whose requests give up after 10 s (a test must never hang on a socket).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// Polls `f` until it returns `Some`, panicking with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition it was on.
    pub partition: i32,
    /// Its key as UTF-8.
    pub key: String,
    /// Its payload parsed as JSON.
    pub value: serde_json::Value,
}

/// Reads `topic` from the beginning of every partition until `expected` messages were seen or
/// `deadline` passes; returns what was read (in partition order, then offset order).
pub async fn read_topic(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    deadline: Duration,
) -> Vec<Record> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "e2e-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("reader");
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(&topic, p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let end = Instant::now() + deadline;
        let mut out = Vec::new();
        while out.len() < expected && Instant::now() < end {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(Record {
                    partition: m.partition(),
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .expect("payload is JSON"),
                }),
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out.sort_by_key(|r| r.partition);
        out
    })
    .await
    .unwrap()
}

/// Exactly how many messages `topic` holds, from the partitions' watermarks (no polling: an
/// acknowledged message has already moved the high watermark).
pub async fn topic_count(bootstrap: &str, topic: &str) -> i64 {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).create().expect("client");
        let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).expect("metadata");
        md.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (lo, hi) = consumer
                    .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                    .expect("watermarks");
                hi - lo
            })
            .sum()
    })
    .await
    .unwrap()
}

/// Produces JSON values to `topic`, keyed by their `ticker` field, and waits for every ack.
pub async fn produce_json(bootstrap: &str, topic: &str, values: &[serde_json::Value]) {
    let p = producer(bootstrap);
    for v in values {
        let key = v["ticker"].as_str().unwrap_or_default().to_uppercase();
        let body = v.to_string();
        p.send(FutureRecord::to(topic).key(&key).payload(&body), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
}

/// Produces one raw message (e.g. a poison message) and waits for its ack.
pub async fn produce_raw(bootstrap: &str, topic: &str, key: &str, payload: &[u8]) {
    producer(bootstrap)
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .expect("producer")
}

/// Reads `topic` from the beginning until a record satisfies `pred`; returns everything read up
/// to and including it. Panics after `deadline`.
pub async fn read_topic_until(
    bootstrap: &str,
    topic: &str,
    deadline: Duration,
    pred: impl Fn(&Record) -> bool,
) -> Vec<Record> {
    let end = Instant::now() + deadline;
    loop {
        let n = topic_count(bootstrap, topic).await as usize;
        if n > 0 {
            let got = read_topic(bootstrap, topic, n, Duration::from_secs(10)).await;
            if let Some(i) = got.iter().position(&pred) {
                return got[..=i].to_vec();
            }
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for a matching record on {topic}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Path of a file in the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(rel)
}

/// `promtool check metrics` on an exposition. CI installs promtool (Debian's `prometheus`) and
/// sets `CI`, so there it must be present; on a bare machine the check is reported as not run.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("NOTE: promtool not found ({e}); exposition lint not run (CI runs it)");
            return;
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A service started in-process on port 0 (any of ingest, analyzer, warmer).
pub struct Service {
    /// Where its HTTP listens.
    pub addr: std::net::SocketAddr,
    /// Cancel to shut it down.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Resolves when it has stopped.
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Its `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Stops it and checks that it ended cleanly within 30 s (drain, commit, flush).
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("service stops within 30 s")
            .unwrap()
            .expect("service ends cleanly");
    }
}

/// Starts a service entry point (`serve(listener, shutdown)`) on 127.0.0.1:0 and waits until its
/// `/readyz` answers 200; panics with the service's own error if it stops during start-up.
pub async fn spawn_service<F, Fut>(name: &str, serve: F) -> Service
where
    F: FnOnce(tokio::net::TcpListener, tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut handle = tokio::spawn(serve(listener, shutdown.clone()));
    let url = format!("http://{addr}/readyz");
    let what = format!("{name} ready");
    let ready = eventually(Duration::from_secs(30), &what, || async {
        if handle.is_finished() {
            return Some(false);
        }
        let r = http().get(&url).send().await.ok()?;
        r.status().is_success().then_some(true)
    });
    if !ready.await {
        panic!("{name} stopped during start-up: {:?}", (&mut handle).await);
    }
    Service { addr, shutdown, handle }
}

/// Runs `bin --help` and checks that every flag of `flags` is listed with an explanation (on its
/// line or the next).
pub fn assert_help_explains(bin: &str, flags: &[&str]) -> String {
    let out = std::process::Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} --help failed");
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in flags {
        let i = help.lines().position(|l| {
            let l = l.trim_start();
            l.starts_with(&format!("{flag} ")) || l == *flag || l.contains(&format!(", {flag} "))
        });
        let i = i.unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
        let text: String = help.lines().skip(i).take(2).collect();
        assert!(text.split_whitespace().count() > 3, "{flag} has no explanation:\n{help}");
    }
    help
}

/// Runs `bin` against a broker address where nothing listens and checks that start-up fails
/// within its `--startup-timeout` with exit code 1 and a message naming the broker.
pub fn assert_unreachable_kafka_is_named(bin: &str) {
    let out = std::process::Command::new(bin)
        .args(["--brokers", "127.0.0.1:1", "--startup-timeout", "2s", "--listen", "127.0.0.1:0"])
        .env("PREFETCH_LOG_LEVEL", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{bin}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Kafka at 127.0.0.1:1 did not answer within 2s"), "{bin}: {stderr}");
}

/// The path of `tool`, a program CI installs (from the Debian package `package`). Outside CI a
/// missing tool gives `None` and a note (the check is reported as not run); in CI it panics.
pub fn ci_tool(tool: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file());
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_none() => {
            eprintln!("NOTE: {tool} not found (Debian package `{package}`); this check is not run here (CI runs it)");
            None
        }
        None => panic!("CI must provide {tool} (Debian package `{package}`; .ci/run installs it)"),
    }
}

/// A real Prometheus server (Debian's `prometheus`) on a free port with a private storage
/// directory; killed and cleaned up when dropped.
pub struct TestPrometheus {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: std::process::Child,
    dir: PathBuf,
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestPrometheus {
    /// Starts `prometheus` with `config` (a prometheus.yml) and waits until it is ready; `None`
    /// outside CI when it is not installed (see [`ci_tool`]).
    pub async fn start(config: &str) -> Option<Self> {
        let bin = ci_tool("prometheus", "prometheus")?;
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "smart-prefetch-prom-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg_file = dir.join("prometheus.yml");
        std::fs::write(&cfg_file, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", cfg_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let me = Self { base: format!("http://127.0.0.1:{port}"), child, dir };
        let ready = format!("{}/-/ready", me.base);
        eventually(Duration::from_secs(60), "prometheus ready", || async {
            http().get(&ready).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        Some(me)
    }

    /// Its own log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The result vector of an instant query (`data.result`); `Err` carries Prometheus's error
    /// (a bad expression), so a test can tell "no data yet" from "never will".
    pub async fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let r = http()
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The first finite sample value an instant query returns, if any.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        finite_values(&self.query(promql).await.ok()?).into_iter().next()
    }
}

/// The finite sample values of a query's result vector (NaN and ±Inf left out).
pub fn finite_values(result: &[serde_json::Value]) -> Vec<f64> {
    result
        .iter()
        .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .filter(|x| x.is_finite())
        .collect()
}
