//! The front door's guards against a broker (MockCluster without `KAFKA_BOOTSTRAP`): the clock
//! clamp on producers' timestamps (`--max-clock-skew`, issue #11.3).

use prefetch_testkit::*;
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};
use std::time::Duration;

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

fn config(kafka: &TestKafka, test: &str) -> ingest::Config {
    let mut cfg = ingest::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics(test);
    kafka.prepare(&cfg.topics);
    cfg
}

async fn spawn_ingest(cfg: ingest::Config) -> Service {
    spawn_service("ingest", |l, t| ingest::serve(cfg, l, t)).await
}

async fn post(url: &str, ct: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = http().post(url).header(CONTENT_TYPE, ct).body(body).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A producer whose clock runs an hour fast: its events are written with ingest's clock (not
/// refused, not trusted) and counted; one within the skew keeps its own `ts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ts_far_ahead_is_clamped_to_ingests_clock_and_counted() {
    let kafka = TestKafka::start();
    let cfg = config(&kafka, "clamp");
    assert_eq!(cfg.max_clock_skew, Duration::from_secs(60), "the documented default");
    let topic = cfg.topics.query_events_topic.clone();
    let ingest = spawn_ingest(cfg).await;
    let clamped = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("smart_prefetch_ingest_events_clamped_total "))
            .map(|v| v.trim().parse::<f64>().unwrap())
    };
    assert_eq!(clamped(&ingest.metrics().await), Some(0.0));

    let now = chrono::Utc::now();
    let ahead = (now + chrono::Duration::hours(1)).timestamp_millis();
    let near = (now + chrono::Duration::seconds(20)).timestamp_millis();
    let body = format!(
        "{}\n{}\n",
        json!({"ticker": "FAST", "module": "price", "ts": ahead}),
        json!({"ticker": "NEAR", "module": "price", "ts": near})
    );
    let sent = chrono::Utc::now();
    let (status, answer) = post(&ingest.url("/v1/events"), NDJSON, body).await;
    assert_eq!((status, answer), (200, json!({"accepted": 2})));
    let record = ingest.url("/api/v1/smart-prefetch?action=record");
    let fast = json!({"ticker": "REC", "module": "price", "ts": (now + chrono::Duration::hours(1)).to_rfc3339()});
    let (status, _) = post(&record, JSON, fast.to_string()).await;
    assert_eq!(status, 200);
    let answered = chrono::Utc::now();

    let got = read_topic(&kafka.bootstrap(), &topic, 3, Duration::from_secs(20)).await;
    let ts = |key: &str| {
        let r = got.iter().find(|r| r.key == key).unwrap_or_else(|| panic!("{key} in {got:?}"));
        chrono::DateTime::parse_from_rfc3339(r.value["ts"].as_str().unwrap()).unwrap().to_utc()
    };
    for key in ["FAST", "REC"] {
        let t = ts(key);
        // Ingest's clock, to the millisecond the topic carries.
        let window = sent - chrono::Duration::milliseconds(1)..=answered;
        assert!(window.contains(&t), "{key}: {t} not within {window:?}");
    }
    assert_eq!(ts("NEAR").timestamp_millis(), near, "within the skew the producer's ts stays");
    assert_eq!(clamped(&ingest.metrics().await), Some(2.0));
    ingest.stop().await;
}
