//! The front door's guards against a broker (MockCluster without `KAFKA_BOOTSTRAP`): the clock
//! clamp on producers' timestamps (`--max-clock-skew`, issue #11.3) and the read token on the
//! read actions (`--read-token`, issue #12.7).

use prefetch_testkit::*;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
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

const READ: &str = "r3ad-only";
const ADMIN: &str = "adm1n";

async fn get(url: &str, token: Option<&str>) -> (u16, Value, Option<String>) {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let challenge = r.headers().get(WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap_or(Value::Null), challenge)
}

/// With `--read-token` set, the read actions answer 401 without a token or with a wrong one,
/// and their usual answer with the read token or the API token; the read token opens no
/// mutating action; events are still recorded without any token (issue #12.7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_actions_need_the_read_token_when_one_is_set() {
    let kafka = TestKafka::start();
    let mut cfg = ingest::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics("read-token");
    kafka.prepare(&cfg.topics);
    cfg.api_token = Some(ADMIN.into());
    cfg.read_token = Some(READ.into());
    // No warmer: `status` gets past the token and then reports the warmer unreachable.
    cfg.warmer_url = "http://127.0.0.1:1".into();
    let ingest = spawn_ingest(cfg).await;
    let api = |action: &str| ingest.url(&format!("/api/v1/smart-prefetch?action={action}"));

    for action in ["predictions", "config", "stats", "status"] {
        for token in [None, Some("wrong"), Some("r3ad-only-but-longer")] {
            let (status, body, challenge) = get(&api(action), token).await;
            assert_eq!(status, 401, "{action} with {token:?}: {body}");
            assert_eq!(body["error"], "unauthorized");
            assert!(body["message"].as_str().unwrap().contains("--read-token"), "{body}");
            assert_eq!(challenge.as_deref(), Some("Bearer"));
        }
        for token in [READ, ADMIN] {
            let (status, body, _) = get(&api(action), Some(token)).await;
            // stats: 503 until an analyzer publishes; status: 502 without a warmer. Neither
            // is the token's refusal.
            let expected = match action {
                "stats" => 503,
                "status" => 502,
                _ => 200,
            };
            assert_eq!(status, expected, "{action} with a valid token: {body}");
        }
    }
    let (_, body, _) = get(&api("predictions"), Some(READ)).await;
    assert!(body["predictions"].is_array(), "{body}");

    // The read token opens nothing that mutates.
    let r = http()
        .post(api("config"))
        .header(AUTHORIZATION, format!("Bearer {READ}"))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"top_n": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Recording needs no token, as before.
    let r = http()
        .post(ingest.url("/v1/events"))
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"ticker":"AAPL","module":"price"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Probes and scrapers stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(http().get(ingest.url(path)).send().await.unwrap().status(), 200, "{path}");
    }

    ingest.stop().await;
}
