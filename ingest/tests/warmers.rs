//! Ingest as the client of a cluster of warmers (`--warmer-url a,b,c`): the status adds their
//! counters up (a shared Redis cache counted once), the warm-up asks every one, ingest's API
//! token goes with each call, and a warmer that does not answer is named, not hidden.
//!
//! The warmers here are small HTTP servers that answer like the warmer's API and refuse calls
//! without the token (the real warmer's token handling is tested in `warmer/tests/https.rs`;
//! the real pair in `tests/tests/api.rs`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use prefetch_testkit::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "cluster-token";

#[derive(Clone)]
struct Fake {
    hits: u64,
    misses: u64,
    calls: Arc<Mutex<Vec<String>>>,
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn status(State(f): State<Fake>, h: HeaderMap) -> axum::response::Response {
    f.calls.lock().unwrap().push("status".into());
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!({"cache_hits": f.hits, "cache_misses": f.misses, "cached_items": 40,
        "cache_size_mb": 2.0, "config": {"cache_backend": "redis"}}))
    .into_response()
}

async fn warmup(State(f): State<Fake>, h: HeaderMap) -> axum::response::Response {
    f.calls.lock().unwrap().push("warmup".into());
    if !authorized(&h) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    axum::Json(json!({"status": "ok", "cached": f.hits,
        "items": [{"ticker": format!("T{}", f.hits), "module": "price", "outcome": "stored"}]}))
    .into_response()
}

async fn fake_warmer(hits: u64, misses: u64) -> (String, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v1/status", get(status))
        .route("/v1/warmup", post(warmup))
        .with_state(Fake { hits, misses, calls: calls.clone() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/"), calls)
}

async fn get_json(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_adds_up_every_warmer_and_warmup_asks_each_with_the_token() {
    let kafka = TestKafka::start();
    let (a, a_calls) = fake_warmer(30, 10).await;
    let (b, b_calls) = fake_warmer(12, 8).await;
    let mut cfg = ingest::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics("ingest-warmers");
    kafka.prepare(&cfg.topics);
    cfg.api_token = Some(TOKEN.into());
    cfg.warmer_url = format!("{a}, {b}");
    let ingest = spawn_service("ingest", |l, t| ingest::serve(cfg, l, t)).await;
    let api = |q: &str| ingest.url(&format!("/api/v1/smart-prefetch?{q}"));

    let (code, s) = get_json(&api("action=status"), None).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!((s["cache_hits"].as_u64(), s["cache_misses"].as_u64()), (Some(42), Some(18)));
    assert_eq!(s["total_queries"], 60);
    assert!((s["hit_rate"].as_f64().unwrap() - 0.7).abs() < 1e-9, "{s}");
    assert_eq!(s["cached_items"], 40, "one shared Redis cache, counted once: {s}");
    assert_eq!(s["complete"], true);
    assert_eq!(s["warmers"].as_array().unwrap().len(), 2);

    let (code, w) = get_json(&api("action=warmup"), Some(TOKEN)).await;
    assert_eq!(code, 200, "{w}");
    assert_eq!(w["cached"], 42);
    assert_eq!(w["items"].as_array().unwrap().len(), 2, "{w}");
    for calls in [&a_calls, &b_calls] {
        assert_eq!(*calls.lock().unwrap(), vec!["status", "warmup"], "each warmer asked once");
    }
    ingest.stop().await;

    // One warmer gone: its share is missing and the answer says which and why.
    let (c, _) = fake_warmer(1, 1).await;
    let mut cfg = ingest::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics("ingest-warmers-down");
    kafka.prepare(&cfg.topics);
    cfg.api_token = Some(TOKEN.into());
    cfg.warmer_url = format!("{c},http://127.0.0.1:1");
    let ingest = spawn_service("ingest", |l, t| ingest::serve(cfg, l, t)).await;
    let (code, s) = get_json(&ingest.url("/api/v1/smart-prefetch?action=status"), None).await;
    assert_eq!(code, 200, "{s}");
    assert_eq!((s["total_queries"].as_u64(), s["complete"].as_bool()), (Some(2), Some(false)));
    let down = &s["warmers"][1];
    assert_eq!(
        (down["url"].as_str(), down["ok"].as_bool()),
        (Some("http://127.0.0.1:1"), Some(false))
    );
    ingest.stop().await;

    // A warmer whose token differs: the 401 is named with what to do.
    let (d, _) = fake_warmer(1, 1).await;
    let mut cfg = ingest::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics("ingest-warmers-401");
    kafka.prepare(&cfg.topics);
    cfg.warmer_url = d;
    let ingest = spawn_service("ingest", |l, t| ingest::serve(cfg, l, t)).await;
    let (code, s) = get_json(&ingest.url("/api/v1/smart-prefetch?action=status"), None).await;
    assert_eq!((code, s["error"].as_str()), (502, Some("warmer_unreachable")), "{s}");
    assert!(s["message"].as_str().unwrap().contains("--api-token"), "{s}");
    ingest.stop().await;
}
