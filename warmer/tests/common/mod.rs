//! Helpers of the warmer's tests: a controllable upstream, temporary directories, a Redis
//! server, and a running warmer on port 0. The broker side comes from `prefetch-testkit`.
#![allow(dead_code)]

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use prefetch_common::contract::{Module, Ticker};
use prefetch_common::kafka::KafkaArgs;
use prefetch_common::prediction::{Prediction, Reason};
pub use prefetch_testkit::*;
use rdkafka::producer::FutureRecord;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the test upstream answers.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Delay before answering.
    pub delay: Duration,
    /// Paths answered after a delay of their own instead.
    pub slow: Vec<(&'static str, Duration)>,
    /// Answer this status to the first `fail_first` requests of each path.
    pub fail_first: usize,
    /// The failure status.
    pub fail_status: u16,
    /// Body padding, to make entries bigger.
    pub padding: usize,
    /// Headers of every answer (e.g. `Retry-After`, `Cache-Control`).
    pub headers: Vec<(&'static str, String)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            slow: Vec::new(),
            fail_first: 0,
            fail_status: 500,
            padding: 0,
            headers: Vec::new(),
        }
    }
}

#[derive(Default)]
struct UpState {
    requests: Mutex<Vec<(String, Instant)>>,
    seen: Mutex<Vec<(String, axum::http::HeaderMap)>>,
    behaviour: Mutex<Behaviour>,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
}

/// A local upstream data API that records every request.
pub struct TestUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<UpState>,
}

impl TestUpstream {
    /// Starts it on 127.0.0.1:0.
    pub async fn start() -> Self {
        let state = Arc::new(UpState::default());
        let app = axum::Router::new().fallback(answer).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    /// The URL template for the warmer.
    pub fn template(&self) -> String {
        format!("http://{}/data/{{module}}/{{ticker}}", self.addr)
    }

    /// Changes how it answers from now on.
    pub fn set(&self, b: Behaviour) {
        *self.state.behaviour.lock().unwrap() = b;
    }

    /// Paths requested so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
    }

    /// When each request arrived.
    pub fn times(&self) -> Vec<Instant> {
        self.state.requests.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }

    /// Requests of one path.
    pub fn count(&self, path: &str) -> usize {
        self.paths().iter().filter(|p| *p == path).count()
    }

    /// Every request's URI (path and query) and headers, in order.
    pub fn seen(&self) -> Vec<(String, axum::http::HeaderMap)> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Most requests that were ever in flight at once.
    pub fn max_in_flight(&self) -> u32 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

async fn answer(
    State(s): State<Arc<UpState>>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let path = uri.path().to_owned();
    s.seen.lock().unwrap().push((uri.to_string(), headers));
    let n = {
        let mut r = s.requests.lock().unwrap();
        r.push((path.clone(), Instant::now()));
        r.iter().filter(|(p, _)| *p == path).count()
    };
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let b = s.behaviour.lock().unwrap().clone();
    let delay = b.slow.iter().find(|(p, _)| *p == path).map_or(b.delay, |(_, d)| *d);
    tokio::time::sleep(delay).await;
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut resp = if n <= b.fail_first {
        (StatusCode::from_u16(b.fail_status).unwrap(), "upstream trouble").into_response()
    } else {
        axum::Json(serde_json::json!({"path": path, "n": n, "padding": "x".repeat(b.padding)}))
            .into_response()
    };
    for (name, value) in b.headers {
        resp.headers_mut().insert(name, value.parse().unwrap());
    }
    resp
}

/// A running warmer.
pub type Running = Service;

/// A warmer configuration for tests: unique topics and group, the given upstream and cache,
/// no spread, no holdback, generous rate, quick sweeps.
pub fn config(
    kafka: &TestKafka,
    test: &str,
    upstream: &TestUpstream,
    cache: &str,
) -> warmer::Config {
    let mut cfg = warmer::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics(test);
    kafka.prepare(&cfg.topics);
    cfg.group = format!("g-{}", cfg.topics.predictions_topic);
    cfg.upstream_url = upstream.template();
    cfg.cache = cache.to_owned();
    cfg.redis_prefix = format!("{}:", cfg.topics.predictions_topic);
    cfg.spread = Duration::ZERO;
    cfg.holdback = 0.0;
    cfg.min_confidence = 0.0;
    // Room for every prediction a test sends in one batch (the default, the original's 10,
    // would cut them); the top_n test sets its own.
    cfg.top_n = 1_000;
    cfg.rate_limit = 0.0;
    cfg.retry_backoff = Duration::from_millis(10);
    cfg.upstream_timeout = Duration::from_secs(2);
    cfg.sweep_interval = Duration::from_millis(200);
    cfg
}

/// Starts the warmer's entry point on port 0 and waits until `/readyz` answers 200.
pub async fn spawn_warmer(cfg: warmer::Config) -> Running {
    spawn_service("warmer", |l, t| warmer::serve(cfg, l, t)).await
}

/// A prediction made now.
pub fn prediction(ticker: &str, module: &str, confidence: f64) -> Prediction {
    Prediction {
        ticker: Ticker::parse(ticker).unwrap(),
        module: Module::parse(module).unwrap(),
        confidence,
        horizon_s: 300,
        generated_at: Utc::now(),
        reason: Reason::Popularity,
    }
}

/// Produces `preds` to `topic` (key = ticker) and waits for every acknowledgement.
pub async fn produce(kafka: &KafkaArgs, topic: &str, preds: &[Prediction]) {
    let producer = kafka.producer(Duration::from_secs(10)).unwrap();
    for p in preds {
        let payload = serde_json::to_vec(p).unwrap();
        producer
            .send(
                FutureRecord::to(topic).key(p.ticker.as_str()).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// The value of the sample `series` (`name{label="value",…}`, labels in any order) in an
/// exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    let want = parse_series(series);
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (parse_series(s) == want).then(|| v.trim().parse().ok()).flatten()
    })
}

fn parse_series(s: &str) -> (String, std::collections::BTreeSet<String>) {
    match s.split_once('{') {
        None => (s.trim().to_owned(), Default::default()),
        Some((name, labels)) => {
            let labels = labels.trim_end_matches('}');
            (
                name.to_owned(),
                labels
                    .split("\",")
                    .map(|l| l.trim_end_matches('"').to_owned())
                    .filter(|l| !l.is_empty())
                    .collect(),
            )
        }
    }
}

/// Parses an RFC 3339 time.
pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// How long a test waits for something the services do on their own.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls `/metrics` until `series` has value `want`.
pub async fn metric_reaches(w: &Running, series: &str, want: f64) -> String {
    let what = format!("{series} = {want}");
    eventually(WAIT, &what, || async {
        let text = w.metrics().await;
        (sample(&text, series) == Some(want)).then_some(text)
    })
    .await
}

/// GETs `url` (with `X-Client-Id` when given): status, `x-cache`, JSON body (null if none).
pub async fn get(url: &str, client: Option<&str>) -> (u16, Option<String>, serde_json::Value) {
    get_with(&http(), url, client).await
}

/// [`get`] through `http`: many requests at once share one client, as an app's do (building
/// a client each, a debug build spends milliseconds apiece loading root certificates, and
/// 50 "concurrent" requests then arrive one after another).
pub async fn get_with(
    http: &reqwest::Client,
    url: &str,
    client: Option<&str>,
) -> (u16, Option<String>, serde_json::Value) {
    let mut req = http.get(url);
    if let Some(c) = client {
        req = req.header("X-Client-Id", c);
    }
    let r = req.send().await.unwrap();
    let cache = r.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), cache, r.json().await.unwrap_or(serde_json::Value::Null))
}
