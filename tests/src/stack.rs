//! The whole pipeline in one test: ingest, analyzer and warmer on port 0, sharing unique topics,
//! with a local upstream and a temporary file cache.

use crate::{spawn_analyzer, spawn_ingest, spawn_service, unique_topics, Service, TestKafka};
use axum::extract::Path;
use axum::routing::get;
use axum::Json;
use prefetch_common::kafka::TopicArgs;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Starts the warmer's entry point on port 0 and waits until `/readyz` answers 200.
pub async fn spawn_warmer(cfg: warmer::Config) -> Service {
    spawn_service("warmer", |l, t| warmer::serve(cfg, l, t)).await
}

/// A local upstream data API: `GET /{module}/{ticker}` answers a small JSON body at once.
/// Returns the warmer's URL template for it; it stops with `stop`.
pub async fn spawn_upstream(stop: CancellationToken) -> String {
    let app = axum::Router::new().route(
        "/{module}/{ticker}",
        get(|Path((module, ticker)): Path<(String, String)>| async move {
            Json(json!({"ticker": ticker, "module": module, "value": 42}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
    });
    format!("http://{addr}/{{module}}/{{ticker}}")
}

/// The three services of one test.
pub struct Stack {
    /// The front door.
    pub ingest: Service,
    /// The analyzer (admin HTTP).
    pub analyzer: Service,
    /// The warmer (admin HTTP and read-through).
    pub warmer: Service,
    /// The topics they share.
    pub topics: TopicArgs,
    /// The warmer's file cache.
    pub cache: PathBuf,
    upstream: CancellationToken,
}

/// What a test may change before the stack starts.
pub struct StackOptions {
    /// `--api-token` of the ingest.
    pub token: Option<String>,
}

/// Starts a stack on `kafka` with topics unique to `test`. The analyzer ticks every 500 ms
/// with uniform hour weights (scenarios must not depend on the time of day they run at); the
/// warmer has no spread, holdback or rate limit, so its behaviour shows at once.
pub async fn spawn_stack(kafka: &TestKafka, test: &str, opts: StackOptions) -> Stack {
    let topics = unique_topics(test);
    kafka.prepare(&topics);
    let upstream = CancellationToken::new();
    let template = spawn_upstream(upstream.clone()).await;
    let cache = std::env::temp_dir().join(format!("prefetch-{}", topics.query_events_topic));

    let mut w = warmer::Config::new(kafka.bootstrap());
    w.kafka = kafka.kafka_args();
    w.topics = topics.clone();
    w.group = format!("{}warmer", topics.query_events_topic);
    w.upstream_url = template;
    w.cache = cache.display().to_string();
    w.spread = Duration::ZERO;
    w.holdback = 0.0;
    w.rate_limit = 0.0;
    // One token for every mutating door: ingest passes it on to the warmer's warm-up.
    w.api_token = opts.token.clone().map(warmer::credentials::Redacted);
    let warmer = spawn_warmer(w).await;

    let mut a = analyzer::service::Config::new(kafka.bootstrap());
    a.kafka = kafka.kafka_args();
    a.topics = topics.clone();
    a.group_id = format!("{}analyzer", topics.query_events_topic);
    a.tick_interval = Duration::from_millis(500);
    a.stats_interval = Duration::from_secs(1);
    a.hour_weights = Some(String::new());
    let analyzer = spawn_analyzer(a).await;

    let mut i = ingest::Config::new(kafka.bootstrap());
    i.kafka = kafka.kafka_args();
    i.topics = topics.clone();
    i.warmer_url = warmer.url("");
    i.api_token = opts.token;
    let ingest = spawn_ingest(i).await;
    Stack { ingest, analyzer, warmer, topics, cache, upstream }
}

impl Stack {
    /// URL of the original API with `query` (e.g. `action=status`).
    pub fn api(&self, query: &str) -> String {
        self.ingest.url(&format!("/api/v1/smart-prefetch?{query}"))
    }

    /// Stops every service and removes the cache.
    pub async fn stop(self) {
        self.ingest.stop().await;
        self.analyzer.stop().await;
        self.warmer.stop().await;
        self.upstream.cancel();
        let _ = std::fs::remove_dir_all(&self.cache);
    }
}
