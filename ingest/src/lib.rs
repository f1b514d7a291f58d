//! Smart Prefetch `ingest`: the front door. Query events arrive over HTTP (or from a recorded
//! JSON-lines log) and leave as canonical JSON on the query-events topic, keyed by ticker.
//!
//! # Layout
//! - `config.rs`: flags and environment ([`Config`]).
//! - `batch.rs`: a request body → events, all or nothing, problems located by index or line.
//! - `sink.rs`: [`sink::EventSink`], which answers only when Kafka acknowledged every event.
//! - `http.rs`: the routes (`/v1/events`, `/api/v1/smart-prefetch?action=…`, `/healthz`,
//!   `/readyz`, `/metrics`).
//! - `api/`: the original API's actions besides `record` — status (with the learning stage and
//!   hints), stats, predictions, config, warmup — fed by the config, stats and predictions
//!   topics (`api/views.rs`) and the warmer's admin API.
//! - `replay.rs`: `--from FILE|-`.
//! - `cors.rs`: CORS for browser clients (`--cors-origin`), off by default.
//! - `metrics.rs`: the Prometheus collectors.
//!
//! One event's path: `http::post_events` checks the content type (415) and size (413),
//! `batch::parse_body` validates every event through the shared contract (400 naming each
//! problem; nothing is produced; a line already in canonical form is kept as it is),
//! `EventSink::send_all` enqueues them all on the idempotent `acks=all` producer and waits until
//! its delivery callback has counted every acknowledgement, and only then does the client get
//! 2xx; if Kafka does not acknowledge within `--produce-timeout`, 503 with `Retry-After`.

pub mod api;
pub mod batch;
pub mod config;
pub mod cors;
pub mod http;
pub mod metrics;
pub mod replay;
pub mod sink;

pub use config::Config;

use anyhow::Context;
use prefetch_common::kafka::{ensure_topics, TopicSpec};
use sink::EventSink;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for the producer to deliver what it still holds.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an API action waits for the warmer's admin API (a warmup warms, so it may take a while).
const WARMER_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs ingest as configured: a replay when `--from` is given (returns its summary), otherwise
/// the HTTP service on `--listen` until `shutdown` is cancelled.
pub async fn run(
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<replay::ReplaySummary>> {
    if let Some(path) = cfg.from.clone() {
        let sink = connect(&cfg, Duration::from_secs(300)).await?;
        let summary = replay::replay_path(&path, &sink).await?;
        sink.flush(FLUSH_TIMEOUT).context("flushing the producer")?;
        return Ok(Some(summary));
    }
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    serve(cfg, listener, shutdown).await?;
    Ok(None)
}

/// Serves the HTTP API on a bound `listener` until `shutdown` is cancelled, then drains
/// in-flight requests and flushes the producer. Tests bind port 0 and pass the listener.
pub async fn serve(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sink = connect(&cfg, cfg.produce_timeout).await?;
    let api = connect_api(&cfg, &sink, shutdown.clone()).await?;
    let state = Arc::new(http::AppState {
        sink: sink.clone(),
        metrics: metrics::Metrics::new(),
        max_body_bytes: cfg.max_body_bytes,
        max_clock_skew: chrono::Duration::from_std(cfg.max_clock_skew)?,
        api,
    });
    let addr = listener.local_addr()?;
    tracing::info!(%addr, topic = %cfg.topics.query_events_topic, "Ingest listening.");
    let mut router = http::router(state);
    let cors = Arc::new(cors::Cors::new(&cfg.cors_origins));
    if cors.enabled() {
        router = router.layer(axum::middleware::from_fn_with_state(cors, cors::layer));
    }
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    tracing::info!("HTTP drained; flushing the producer.");
    tokio::task::spawn_blocking(move || sink.flush(FLUSH_TIMEOUT))
        .await?
        .context("flushing the producer")?;
    Ok(())
}

/// Waits for Kafka, creates the query-events topic if missing, and builds the sink.
async fn connect(cfg: &Config, delivery_timeout: Duration) -> anyhow::Result<EventSink> {
    let spec = TopicSpec { name: cfg.topics.query_events_topic.clone(), compacted: false };
    ensure_topics(&cfg.kafka, &[spec], cfg.startup_timeout).await?;
    let producer = cfg.kafka.producer(delivery_timeout)?;
    let events = cfg
        .kafka
        .producer_config(delivery_timeout)?
        .create_with_context(prefetch_common::kafka::AckContext)
        .context("creating the event producer")?;
    Ok(EventSink::new(events, producer, cfg.topics.query_events_topic.clone(), delivery_timeout))
}

/// Creates the topics the API reads and writes if missing, and starts following them.
async fn connect_api(
    cfg: &Config,
    sink: &EventSink,
    stop: CancellationToken,
) -> anyhow::Result<api::Api> {
    let specs = [
        TopicSpec { name: cfg.topics.config_topic.clone(), compacted: true },
        TopicSpec { name: cfg.topics.stats_topic.clone(), compacted: true },
        TopicSpec { name: cfg.topics.predictions_topic.clone(), compacted: false },
    ];
    ensure_topics(&cfg.kafka, &specs, cfg.startup_timeout).await?;
    let topics = api::views::ViewTopics {
        config: &cfg.topics.config_topic,
        stats: &cfg.topics.stats_topic,
        predictions: &cfg.topics.predictions_topic,
    };
    let views =
        api::views::Views::start(&cfg.kafka, topics, cfg.stats_max_age, cfg.startup_timeout, stop)
            .await?;
    Ok(api::Api {
        views,
        producer: sink.producer().clone(),
        config_topic: cfg.topics.config_topic.clone(),
        warmers: api::warmers::parse_list(&cfg.warmer_url),
        http: reqwest::Client::builder().timeout(WARMER_TIMEOUT).build()?,
        token: cfg.api_token.clone().filter(|t| !t.is_empty()),
        read_token: cfg.read_token.clone().filter(|t| !t.is_empty()),
        produce_timeout: cfg.produce_timeout,
    })
}
