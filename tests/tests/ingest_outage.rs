//! While Kafka is unreachable ingest answers 503 with Retry-After after a bounded wait, never
//! 2xx, and recovers by itself when the broker returns.
//!
//! With `KAFKA_BOOTSTRAP` set (CI) the outage is real: the test runs a private Apache Kafka
//! broker with `scripts/kafka.sh` on its own port and data directory, and stops it. Without it,
//! the MockCluster's broker is taken down.

use prefetch_e2e::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A private real broker, stopped on drop (also when the test fails).
struct PrivateBroker {
    port: u16,
    data: std::path::PathBuf,
}

impl PrivateBroker {
    fn cmd(&self, verb: &str) -> bool {
        Command::new("bash")
            .arg(repo_path("scripts/kafka.sh"))
            .arg(verb)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_DATA", &self.data)
            .status()
            .expect("run scripts/kafka.sh")
            .success()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.cmd("stop");
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

enum Outage {
    Mock(TestKafka),
    Real(PrivateBroker),
}

impl Outage {
    fn start() -> (Self, String) {
        let kafka = TestKafka::start();
        if !kafka.is_real() {
            let b = kafka.bootstrap();
            return (Self::Mock(kafka), b);
        }
        let port = 19092 + (std::process::id() % 500) as u16 * 2;
        let data = std::env::temp_dir().join(format!("smart-prefetch-outage-{port}"));
        let _ = std::fs::remove_dir_all(&data);
        let broker = PrivateBroker { port, data };
        assert!(broker.cmd("start"), "private broker did not start");
        (Self::Real(broker), format!("127.0.0.1:{port}"))
    }

    fn down(&self) {
        match self {
            Self::Mock(TestKafka::Mock(m)) => m.broker_down(1).unwrap(),
            Self::Real(b) => assert!(b.cmd("stop")),
            Self::Mock(_) => unreachable!(),
        }
    }

    fn up(&self) {
        match self {
            Self::Mock(TestKafka::Mock(m)) => m.broker_up(1).unwrap(),
            Self::Real(b) => assert!(b.cmd("start")),
            Self::Mock(_) => unreachable!(),
        }
    }

    fn prepare(&self, topics: &prefetch_common::kafka::TopicArgs) {
        if let Self::Mock(k) = self {
            k.prepare(topics)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_gives_503_with_retry_after_and_recovers() {
    let (outage, bootstrap) = Outage::start();
    let mut cfg = ingest::Config::new(bootstrap.clone());
    cfg.topics = unique_topics("outage");
    cfg.produce_timeout = Duration::from_secs(2);
    outage.prepare(&cfg.topics);
    let topic = cfg.topics.query_events_topic.clone();
    let ingest = spawn_ingest(cfg).await;
    let post = |ticker: &'static str| {
        let url = ingest.url("/v1/events");
        async move {
            http()
                .post(url)
                .header("content-type", "application/json")
                .body(format!(r#"{{"ticker":"{ticker}","module":"price"}}"#))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post("BEFORE").await.status(), 200);

    outage.down();
    let started = Instant::now();
    let r = post("DURING").await;
    let waited = started.elapsed();
    assert_eq!(r.status(), 503, "never 2xx while Kafka is down");
    assert_eq!(r.headers()["retry-after"], "5");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "kafka_unavailable", "{body}");
    assert!(
        waited < Duration::from_secs(6),
        "the wait is bounded by --produce-timeout (2s): took {waited:?}"
    );
    let ready = http().get(ingest.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while Kafka is down");

    outage.up();
    // Once the broker is back, a retried request is accepted (the client's retry after 503).
    eventually(Duration::from_secs(60), "ingest to accept again", || async {
        (post("AFTER").await.status() == 200).then_some(())
    })
    .await;
    let got = read_topic(&bootstrap, &topic, 2, Duration::from_secs(20)).await;
    let keys: Vec<_> = got.iter().map(|r| r.key.as_str()).collect();
    assert!(keys.contains(&"BEFORE") && keys.contains(&"AFTER"), "{keys:?}");
    ingest.stop().await;
}
