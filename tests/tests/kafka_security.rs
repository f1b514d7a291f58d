//! Kafka over TLS with SASL (SCRAM-SHA-256), as managed Kafka services require: the pipeline
//! scenario (record over HTTP → prediction → warm) with every service configured only through
//! `--kafka-config FILE`, and a wrong password that stops every service within seconds with a
//! message naming the failure, the mechanism and the broker; and mutual TLS with the client
//! certificate named by a properties file (refused without it).
//!
//! The broker is Apache Kafka's SASL_SSL and SSL listeners: `KAFKA_SASL_SSL_BOOTSTRAP`,
//! `KAFKA_CLIENT_PROPERTIES`, `KAFKA_SSL_BOOTSTRAP`, `KAFKA_SSL_CLIENT_PROPERTIES` (set by
//! `.ci/run`), or else a private broker this test starts with
//! `scripts/kafka.sh` (needs Java and Maven). Without either the test fails: the MockCluster
//! has no TLS or SASL, so there is nothing to fall back to.

use chrono::{Duration as CDuration, Utc};
use clap::Parser;
use prefetch_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use prefetch_e2e::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// The SASL_SSL listener and its client properties file, and the mutual-TLS listener and its.
struct SecureKafka {
    bootstrap: String,
    properties: PathBuf,
    ssl_bootstrap: String,
    ssl_properties: PathBuf,
    _private: Option<PrivateBroker>,
}

/// A broker started by this test, stopped on drop (also when the test fails).
struct PrivateBroker {
    env: Vec<(&'static str, String)>,
    data: PathBuf,
}

impl PrivateBroker {
    fn cmd(&self, verb: &str) -> bool {
        let mut c = Command::new("bash");
        c.arg(repo_path("scripts/kafka.sh")).arg(verb);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.status().expect("run scripts/kafka.sh").success()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.cmd("stop");
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl SecureKafka {
    /// One broker for the tests of this process: both tests hold it, the last one stops it.
    fn shared() -> Arc<Self> {
        static SHARED: Mutex<Weak<SecureKafka>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = shared.upgrade() {
            return k;
        }
        let k = Arc::new(Self::start());
        *shared = Arc::downgrade(&k);
        k
    }

    fn start() -> Self {
        init_logs();
        let var = |v| std::env::var(v).unwrap_or_default();
        let vars = [
            "KAFKA_SASL_SSL_BOOTSTRAP",
            "KAFKA_CLIENT_PROPERTIES",
            "KAFKA_SSL_BOOTSTRAP",
            "KAFKA_SSL_CLIENT_PROPERTIES",
        ]
        .map(var);
        if vars.iter().all(|v| !v.is_empty()) {
            let [bootstrap, properties, ssl_bootstrap, ssl_properties] = vars;
            return Self {
                bootstrap,
                properties: properties.into(),
                ssl_bootstrap,
                ssl_properties: ssl_properties.into(),
                _private: None,
            };
        }
        for tool in ["java", "mvn", "openssl"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "KAFKA_SASL_SSL_BOOTSTRAP/KAFKA_CLIENT_PROPERTIES are unset and {tool} is missing, \
                 so no SASL_SSL broker can be started: run `bash .ci/run`, or install Java, Maven \
                 and openssl (this test does not skip)"
            );
        }
        // Ports of our own, clear of the shared broker's and of ingest_outage's (19092..20092).
        let port = 21000 + (std::process::id() % 500) as u16 * 4;
        let data = std::env::temp_dir().join(format!("smart-prefetch-sasl-{port}"));
        let _ = std::fs::remove_dir_all(&data);
        let broker = PrivateBroker {
            env: vec![
                ("KAFKA_PORT", port.to_string()),
                ("KAFKA_SASL_SSL_PORT", (port + 2).to_string()),
                ("KAFKA_SSL_PORT", (port + 3).to_string()),
                ("KAFKA_DATA", data.display().to_string()),
            ],
            data: data.clone(),
        };
        assert!(broker.cmd("start"), "the private SASL_SSL broker did not start");
        Self {
            bootstrap: format!("127.0.0.1:{}", port + 2),
            properties: data.join("client-sasl-ssl.properties"),
            ssl_bootstrap: format!("127.0.0.1:{}", port + 3),
            ssl_properties: data.join("client-ssl.properties"),
            _private: Some(broker),
        }
    }

    /// Connection settings exactly as a service parses them from its flags.
    fn kafka_args(&self, properties: &Path) -> KafkaArgs {
        self.kafka_args_at(&self.bootstrap, properties)
    }

    fn kafka_args_at(&self, bootstrap: &str, properties: &Path) -> KafkaArgs {
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            kafka: KafkaArgs,
        }
        let p = properties.display().to_string();
        let mut k = Flags::try_parse_from(["svc", "--brokers", bootstrap, "--kafka-config", &p])
            .unwrap_or_else(|e| panic!("--kafka-config {p}: {e}"))
            .kafka;
        assert!(k.options.is_empty(), "configured only through --kafka-config");
        k.topic_partitions = 3;
        k
    }
}

/// The three services' configurations on unique topics, all with `kafka`.
fn configs(
    kafka: &KafkaArgs,
    test: &str,
    upstream: String,
) -> (ingest::Config, analyzer::service::Config, warmer::Config, PathBuf) {
    let topics = unique_topics(test);
    let cache = std::env::temp_dir().join(format!("prefetch-{}", topics.query_events_topic));
    let mut w = warmer::Config::new(&kafka.brokers);
    w.kafka = kafka.clone();
    w.topics = topics.clone();
    w.group = format!("{}warmer", topics.query_events_topic);
    w.upstream_url = upstream;
    w.cache = cache.display().to_string();
    w.spread = Duration::ZERO;
    w.holdback = 0.0;
    w.rate_limit = 0.0;
    let mut a = analyzer::service::Config::new(&kafka.brokers);
    a.kafka = kafka.clone();
    a.topics = topics.clone();
    a.group_id = format!("{}analyzer", topics.query_events_topic);
    a.tick_interval = Duration::from_millis(500);
    a.stats_interval = Duration::from_secs(1);
    a.hour_weights = Some(String::new());
    let mut i = ingest::Config::new(&kafka.brokers);
    i.kafka = kafka.clone();
    i.topics = topics;
    (i, a, w, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipeline_over_sasl_ssl_with_scram_from_a_properties_file() {
    let broker = SecureKafka::shared();
    let kafka = broker.kafka_args(&broker.properties);
    let stop_upstream = tokio_util::sync::CancellationToken::new();
    let (mut i, a, w, cache) = configs(&kafka, "sasl", spawn_upstream(stop_upstream.clone()).await);
    let warmer = spawn_warmer(w).await;
    let analyzer = spawn_analyzer(a).await;
    i.warmer_url = warmer.url("");
    let ingest = spawn_ingest(i).await;
    let api = |q: &str| ingest.url(&format!("/api/v1/smart-prefetch?{q}"));

    // A dashboard polling SECU/price every minute for the last hour, recorded one query at a
    // time over HTTP → query-events over SASL_SSL → the analyzer folds them.
    let end = Utc::now();
    for n in 0..60 {
        let ts = end - CDuration::seconds(60 * (60 - n));
        let body =
            json!({"ticker": "SECU", "module": "price", "hit": n % 2 == 0, "ts": ts.to_rfc3339()});
        let r = http().post(api("action=record")).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "record: {}", r.status());
    }
    eventually(WAIT, "the analyzer folding the 60 queries", || async {
        let text = http().get(analyzer.url("/metrics")).send().await.ok()?.text().await.ok()?;
        let folded: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("smart_prefetch_analyzer_events_total{admission=\"on_time\"} ")
            })?
            .trim()
            .parse()
            .ok()?;
        (folded >= 60).then_some(())
    })
    .await;
    // One later query of another key moves event time past the cached copy's expiry, so
    // refresh-ahead finds SECU/price due (as in api.rs).
    let clock = json!({"ticker": "SPY", "module": "quote", "hit": true,
        "ts": (Utc::now() + CDuration::seconds(5)).to_rfc3339()});
    let r = http().post(api("action=record")).json(&clock).send().await.unwrap();
    assert!(r.status().is_success(), "record: {}", r.status());

    // The analyzer's prediction, read back by ingest from the predictions topic.
    eventually(WAIT, "SECU/price among the predictions", || async {
        let p: Value =
            http().get(api("action=predictions")).send().await.ok()?.json().await.ok()?;
        let found = p["predictions"].as_array()?.iter().any(|p| p["ticker"] == "SECU");
        found.then_some(())
    })
    .await;
    // The warmer warmed it from the upstream into its cache.
    let file = cache.join("price").join("SECU.json");
    eventually(WAIT, "SECU/price warmed into the cache", || async { file.exists().then_some(()) })
        .await;
    let body = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
    assert!(body.contains("SECU") && body.contains("42"), "the upstream's answer: {body}");

    ingest.stop().await;
    analyzer.stop().await;
    warmer.stop().await;
    stop_upstream.cancel();
    let _ = std::fs::remove_dir_all(cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_password_stops_every_service_within_seconds_naming_the_failure() {
    let broker = SecureKafka::shared();
    let good = std::fs::read_to_string(&broker.properties).unwrap();
    assert!(good.contains("sasl.password="), "{}", broker.properties.display());
    let bad: String = good
        .lines()
        .map(|l| if l.starts_with("sasl.password=") { "sasl.password=not-the-password" } else { l })
        .map(|l| format!("{l}\n"))
        .collect();
    let bad_file =
        std::env::temp_dir().join(format!("prefetch-bad-{}.properties", std::process::id()));
    std::fs::write(&bad_file, bad).unwrap();
    let kafka = broker.kafka_args(&bad_file);
    let (i, a, w, cache) = configs(&kafka, "badpw", "http://127.0.0.1:9/{module}/{ticker}".into());

    let started = Instant::now();
    let run = |name: &'static str,
               fut: std::pin::Pin<
        Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>,
    >| async move {
        let r = tokio::time::timeout(Duration::from_secs(20), fut).await;
        (name, r)
    };
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let t = tokio_util::sync::CancellationToken::new();
    let results = futures_join3(
        run("ingest", Box::pin(ingest::serve(i, bind().await, t.clone()))),
        run("analyzer", Box::pin(analyzer::service::serve(a, bind().await, t.clone()))),
        run("warmer", Box::pin(warmer::serve(w, bind().await, t.clone()))),
    )
    .await;
    let elapsed = started.elapsed();
    t.cancel();
    let _ = std::fs::remove_file(&bad_file);
    let _ = std::fs::remove_dir_all(cache);
    for (name, r) in results {
        let err = match r {
            Ok(Err(e)) => format!("{e:#}"),
            Ok(Ok(())) => panic!("{name} started with a wrong password"),
            Err(_) => panic!("{name} still running after 20 s with a wrong password"),
        };
        eprintln!("{name}: {err}");
        let lower = err.to_lowercase();
        assert!(lower.contains("authentication"), "{name}: {err}");
        assert!(err.contains("SCRAM-SHA-256"), "{name} should name the mechanism: {err}");
        assert!(err.contains(&broker.bootstrap), "{name} should name the broker: {err}");
        assert!(!err.contains("not-the-password"), "{name} leaked the password: {err}");
    }
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?} to give up");
}

/// Runs three futures concurrently (the services start in parallel, as in a deployment).
async fn futures_join3<A, B, C>(a: A, b: B, c: C) -> [A::Output; 3]
where
    A: std::future::Future,
    B: std::future::Future<Output = A::Output>,
    C: std::future::Future<Output = A::Output>,
{
    let (a, b, c) = tokio::join!(a, b, c);
    [a, b, c]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_the_client_certificate_of_a_properties_file() {
    let broker = SecureKafka::shared();
    let kafka = broker.kafka_args_at(&broker.ssl_bootstrap, &broker.ssl_properties);
    let topic = format!("{}mtls", unique_topics("mtls").query_events_topic);
    let spec = TopicSpec { name: topic.clone(), compacted: false };
    ensure_topics(&kafka, std::slice::from_ref(&spec), Duration::from_secs(30))
        .await
        .expect("topic created over mutual TLS");
    // Round trip over the same listener: produced with the client certificate, read back.
    let producer = kafka.producer(Duration::from_secs(10)).unwrap();
    producer
        .send(FutureRecord::<str, str>::to(&topic).key("k").payload("over mTLS"), Duration::ZERO)
        .await
        .expect("delivered");
    let reader: BaseConsumer = kafka.reader_config().unwrap().create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..kafka.topic_partitions {
        tpl.add_partition_offset(&topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    reader.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let payload = loop {
        assert!(Instant::now() < deadline, "nothing read back over mutual TLS");
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(500)) {
            break m.payload().map(|p| String::from_utf8_lossy(p).into_owned());
        }
    };
    assert_eq!(payload.as_deref(), Some("over mTLS"));

    // Without the certificate the broker (ssl.client.auth=required) refuses the handshake.
    let text = std::fs::read_to_string(&broker.ssl_properties).unwrap();
    let no_cert: String = text
        .lines()
        .filter(|l| {
            !l.starts_with("ssl.certificate.location") && !l.starts_with("ssl.key.location")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let file =
        std::env::temp_dir().join(format!("prefetch-nocert-{}.properties", std::process::id()));
    std::fs::write(&file, no_cert).unwrap();
    let anonymous = broker.kafka_args_at(&broker.ssl_bootstrap, &file);
    let started = Instant::now();
    let r = ensure_topics(&anonymous, &[spec], Duration::from_secs(20)).await;
    let _ = std::fs::remove_file(&file);
    let err = r.expect_err("a client without a certificate was let in").to_string();
    eprintln!("without a client certificate: {err}");
    assert!(err.contains("refused") && err.contains("certificate"), "{err}");
    assert!(err.contains(&broker.ssl_bootstrap), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "gave up after {:?}", started.elapsed());
}
