//! Ingest over HTTP against a broker: what lands on the topic, what is refused, and health.

use prefetch_e2e::*;
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

async fn post(url: &str, ct: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = http().post(url).header(CONTENT_TYPE, ct).body(body).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_record_action_lands_exactly_that_event() {
    let kafka = TestKafka::start();
    let cfg = config(&kafka, "record");
    let topic = cfg.topics.query_events_topic.clone();
    let ingest = spawn_ingest(cfg).await;

    let (status, body) = post(
        &ingest.url("/api/v1/smart-prefetch?action=record"),
        JSON,
        r#"{"ticker":"aapl","module":"price","hit":true}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "recorded", "ticker": "AAPL", "module": "price", "hit": true})
    );

    let got = read_topic(&kafka.bootstrap(), &topic, 1, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key, "AAPL");
    let v = &got[0].value;
    assert_eq!(
        (v["ticker"].as_str(), v["module"].as_str(), v["hit"].as_bool()),
        (Some("AAPL"), Some("price"), Some(true))
    );
    let ts = chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap())
        .expect("ingest stamps an RFC 3339 ts");
    assert!(
        (chrono::Utc::now() - ts.to_utc()).num_seconds().abs() < 60,
        "stamped with ingest's clock"
    );
    assert_eq!(
        v.as_object().unwrap().len(),
        4,
        "no client or latency was sent, none is invented: {v}"
    );
    assert_eq!(topic_count(&kafka.bootstrap(), &topic).await, 1, "exactly one message");
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_as_json_array_and_ndjson_land_whole_and_keyed_by_ticker() {
    let kafka = TestKafka::start();
    let cfg = config(&kafka, "batch");
    let topic = cfg.topics.query_events_topic.clone();
    let ingest = spawn_ingest(cfg).await;

    let array = json!([
        {"ticker": "MSFT", "module": "price", "ts": "2026-03-09T14:30:00Z", "client": "c1", "latency_ms": 3.5},
        {"ticker": "MSFT", "module": "chart", "ts": 1773066601000i64, "client": "c1", "extra": "ignored"},
        {"ticker": "^GSPC", "module": "price", "ts": "2026-03-09T14:30:02Z", "hit": true},
    ]);
    let (status, body) = post(&ingest.url("/v1/events"), JSON, array.to_string()).await;
    assert_eq!((status, body), (200, json!({"accepted": 3})));

    let mut nd = String::new();
    for i in 0..40 {
        nd.push_str(&json!({"ticker": "BRK.B", "module": "news", "ts": 1773066610000i64 + i, "client": format!("s{i}")}).to_string());
        nd.push('\n');
    }
    let (status, body) = post(&ingest.url("/v1/events"), NDJSON, nd).await;
    assert_eq!((status, body), (200, json!({"accepted": 40})));

    let got = read_topic(&kafka.bootstrap(), &topic, 43, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 43);
    assert_eq!(topic_count(&kafka.bootstrap(), &topic).await, 43);
    for r in &got {
        assert_eq!(r.key, r.value["ticker"].as_str().unwrap(), "key = ticker");
    }
    let msft: Vec<_> = got.iter().filter(|r| r.key == "MSFT").collect();
    assert_eq!(msft.len(), 2);
    assert_eq!(msft[0].partition, msft[1].partition, "one ticker, one partition");
    assert_eq!(
        msft[0].value,
        json!({"ticker": "MSFT", "module": "price", "hit": false, "ts": "2026-03-09T14:30:00.000Z", "client": "c1", "latency_ms": 3.5})
    );
    assert_eq!(msft[1].value["ts"], "2026-03-09T14:30:01.000Z", "epoch ms normalised");
    assert!(msft[1].value.get("extra").is_none(), "unknown fields are not forwarded");
    // One ticker's events keep their order on their partition.
    let brk: Vec<i64> = got
        .iter()
        .filter(|r| r.key == "BRK.B")
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(r.value["ts"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    assert_eq!(brk, (0..40).map(|i| 1773066610000i64 + i).collect::<Vec<_>>());
    ingest.stop().await;
}

/// Every bad request: status, error code, and (for event problems) the field named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_clear_message_and_nothing_reaches_the_topic() {
    let kafka = TestKafka::start();
    let mut cfg = config(&kafka, "bad");
    cfg.max_body_bytes = 8 * 1024 * 1024;
    let topic = cfg.topics.query_events_topic.clone();
    let ingest = spawn_ingest(cfg).await;
    let events = ingest.url("/v1/events");
    let record = ingest.url("/api/v1/smart-prefetch?action=record");
    let big = "x".repeat(9 * 1024 * 1024);
    let big_ndjson =
        format!("{}\n", json!({"ticker": "A", "module": "price"})).repeat(9 * 1024 * 1024 / 28 + 1);

    // (url, content type, body, status, error code, field expected in problems)
    type Case<'a> = (&'a str, &'a str, String, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            &events,
            JSON,
            json!({"ticker": "AAPL; rm -rf /", "module": "price"}).to_string(),
            400,
            "invalid_events",
            Some("ticker"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "$(curl evil)", "module": "price"}).to_string(),
            400,
            "invalid_events",
            Some("ticker"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "A`id`", "module": "price"}).to_string(),
            400,
            "invalid_events",
            Some("ticker"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "AAPL", "module": "price && reboot"}).to_string(),
            400,
            "invalid_events",
            Some("module"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "Ünïcödé", "module": "price"}).to_string(),
            400,
            "invalid_events",
            Some("ticker"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "AAPL", "module": "价格"}).to_string(),
            400,
            "invalid_events",
            Some("module"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": 123, "module": "price"}).to_string(),
            400,
            "invalid_events",
            Some("ticker"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "AAPL", "module": "price", "hit": "yes"}).to_string(),
            400,
            "invalid_events",
            Some("hit"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "", "module": "price"}).to_string(),
            400,
            "invalid_events",
            Some("ticker"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "AAPL", "module": ""}).to_string(),
            400,
            "invalid_events",
            Some("module"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "A".repeat(21), "module": "price"}).to_string(),
            400,
            "invalid_events",
            Some("ticker"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "AAPL", "module": "m".repeat(65)}).to_string(),
            400,
            "invalid_events",
            Some("module"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "AAPL", "module": "price", "client": "c".repeat(129)}).to_string(),
            400,
            "invalid_events",
            Some("client"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "AAPL", "module": "price", "ts": "not a time"}).to_string(),
            400,
            "invalid_events",
            Some("ts"),
        ),
        (
            &events,
            JSON,
            json!({"ticker": "AAPL", "module": "price", "ts": 1773066600}).to_string(),
            400,
            "invalid_events",
            Some("ts"),
        ),
        (
            &events,
            JSON,
            json!([{"ticker": "GOOD", "module": "price"}, {"ticker": "BAD!", "module": "price"}])
                .to_string(),
            400,
            "invalid_events",
            Some("ticker"),
        ),
        (
            &events,
            NDJSON,
            "{\"ticker\":\"GOOD\",\"module\":\"price\"}\n{\"ticker\":\"GOOD\"\n".into(),
            400,
            "invalid_events",
            Some("event"),
        ),
        (&events, JSON, "{not json".into(), 400, "invalid_events", Some("event")),
        (&events, JSON, "[]".into(), 400, "empty_batch", None),
        (&events, JSON, format!("\"{big}\""), 413, "payload_too_large", None),
        (&events, NDJSON, big_ndjson, 413, "payload_too_large", None),
        (
            &events,
            "text/plain",
            json!({"ticker": "AAPL", "module": "price"}).to_string(),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            &events,
            "application/x-www-form-urlencoded",
            "ticker=AAPL&module=price".into(),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            &record,
            NDJSON,
            json!({"ticker": "AAPL", "module": "price"}).to_string(),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            &record,
            JSON,
            json!({"ticker": "AAPL|cat /etc/passwd", "module": "price", "hit": false}).to_string(),
            400,
            "invalid_events",
            Some("ticker"),
        ),
        (
            &record,
            JSON,
            json!({"ticker": "AAPL", "hit": 1}).to_string(),
            400,
            "invalid_events",
            Some("module"),
        ),
    ];
    for (url, ct, body, want_status, want_error, want_field) in cases {
        let shown: String = body.chars().take(80).collect();
        let (status, resp) = post(url, ct, body).await;
        assert_eq!(status, want_status, "{ct} {shown}: {resp}");
        assert_eq!(resp["error"], want_error, "{shown}: {resp}");
        assert!(
            !resp["message"].as_str().unwrap_or("").is_empty(),
            "{shown}: a message for people"
        );
        if let Some(field) = want_field {
            let problems = resp["problems"]
                .as_array()
                .unwrap_or_else(|| panic!("{shown}: no problems listed: {resp}"));
            assert!(
                problems.iter().any(|p| p["field"] == field),
                "{shown}: field {field} not named: {resp}"
            );
            assert!(
                problems.iter().all(|p| p.get("index").is_some()
                    || p.get("line").is_some()
                    || *url == record
                    || ct == JSON),
                "{shown}: problems are located: {resp}"
            );
        }
    }
    // The mixed batch names index 1; the NDJSON one names line 2.
    let (_, resp) = post(
        &events,
        JSON,
        json!([{"ticker": "GOOD", "module": "price"}, {"ticker": "BAD!", "module": "price"}])
            .to_string(),
    )
    .await;
    assert_eq!(resp["problems"][0]["index"], 1, "{resp}");
    let (_, resp) =
        post(&events, NDJSON, "{\"ticker\":\"GOOD\",\"module\":\"price\"}\n{\"ticker\":\"GOOD\"\n")
            .await;
    assert_eq!(resp["problems"][0]["line"], 2, "{resp}");
    // Unknown actions list the available ones.
    let r = get(ingest.url("/api/v1/smart-prefetch?action=explode")).await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["available"].as_array().unwrap().iter().any(|a| a == "record"), "{v}");

    // Nothing of the above was produced: after one good sentinel the topic holds exactly it.
    let (status, _) =
        post(&events, JSON, json!({"ticker": "SENTINEL", "module": "price"}).to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(topic_count(&kafka.bootstrap(), &topic).await, 1);
    let got = read_topic(&kafka.bootstrap(), &topic, 1, Duration::from_secs(20)).await;
    assert_eq!(got[0].key, "SENTINEL");

    let metrics = get(ingest.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("smart_prefetch_ingest_requests_rejected_total{reason=\"too_large\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("smart_prefetch_ingest_events_accepted_total 1"), "{metrics}");
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_exposition() {
    let kafka = TestKafka::start();
    let ingest = spawn_ingest(config(&kafka, "health")).await;
    assert_eq!(get(ingest.url("/healthz")).await.unwrap().status(), 200);
    assert_eq!(get(ingest.url("/readyz")).await.unwrap().status(), 200);
    let (status, _) =
        post(&ingest.url("/v1/events"), JSON, r#"{"ticker":"AAPL","module":"price"}"#).await;
    assert_eq!(status, 200);
    let r = get(ingest.url("/metrics")).await.unwrap();
    assert!(r.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    let text = r.text().await.unwrap();
    for name in [
        "smart_prefetch_ingest_events_accepted_total 1",
        "smart_prefetch_ingest_events_rejected_total{reason=\"invalid\"} 0",
        "smart_prefetch_ingest_produce_duration_seconds_count 1",
    ] {
        assert!(text.contains(name), "missing {name:?} in\n{text}");
    }
    promtool_check_metrics(&text);
    ingest.stop().await;
}

async fn get(url: String) -> reqwest::Result<reqwest::Response> {
    http().get(url).send().await
}
