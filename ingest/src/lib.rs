//! Smart Prefetch `ingest`: the front door. Query events arrive over HTTP (or from a recorded
//! JSON-lines log) and leave as canonical JSON on the query-events topic, keyed by ticker.
//!
//! # Layout
//! - `config.rs`: flags and environment ([`Config`]).
//! - `batch.rs`: a request body → events, all or nothing, problems located by index or line.
//! - `sink.rs`: [`sink::EventSink`], which answers only when Kafka acknowledged every event.
//! - `http.rs`: the routes (`/v1/events`, `/api/v1/smart-prefetch?action=record`, `/healthz`,
//!   `/readyz`, `/metrics`).
//! - `replay.rs`: `--from FILE|-`.
//! - `metrics.rs`: the Prometheus collectors.
//!
//! One event's path: `http::post_events` checks the content type (415) and size (413),
//! `batch::parse_body` validates every event through the shared contract (400 naming each
//! problem; nothing is produced), `EventSink::send_all` enqueues them all on the idempotent
//! `acks=all` producer and waits for every acknowledgement, and only then does the client get
//! 2xx; if Kafka does not acknowledge within `--produce-timeout`, 503 with `Retry-After`.

pub mod batch;
pub mod config;
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

/// Runs ingest as configured: a replay when `--from` is given (returns its summary), otherwise
/// the HTTP service on `--listen` until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<Option<replay::ReplaySummary>> {
    if let Some(path) = cfg.from.clone() {
        let sink = connect(&cfg, Duration::from_secs(300)).await?;
        let summary = replay::replay_path(&path, &sink).await?;
        sink.flush(FLUSH_TIMEOUT).context("flushing the producer")?;
        return Ok(Some(summary));
    }
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("cannot listen on {}", cfg.listen))?;
    serve(cfg, listener, shutdown).await?;
    Ok(None)
}

/// Serves the HTTP API on a bound `listener` until `shutdown` is cancelled, then drains
/// in-flight requests and flushes the producer. Tests bind port 0 and pass the listener.
pub async fn serve(cfg: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    let sink = connect(&cfg, cfg.produce_timeout).await?;
    let state = Arc::new(http::AppState { sink: sink.clone(), metrics: metrics::Metrics::new(), max_body_bytes: cfg.max_body_bytes });
    let addr = listener.local_addr()?;
    tracing::info!(%addr, topic = %cfg.topics.query_events_topic, "Ingest listening.");
    axum::serve(listener, http::router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    tracing::info!("HTTP drained; flushing the producer.");
    tokio::task::spawn_blocking(move || sink.flush(FLUSH_TIMEOUT)).await?.context("flushing the producer")?;
    Ok(())
}

/// Waits for Kafka, creates the query-events topic if missing, and builds the sink.
async fn connect(cfg: &Config, delivery_timeout: Duration) -> anyhow::Result<EventSink> {
    let spec = TopicSpec { name: cfg.topics.query_events_topic.clone(), compacted: false };
    ensure_topics(&cfg.kafka, &[spec], cfg.startup_timeout).await?;
    let producer = cfg.kafka.producer(delivery_timeout)?;
    Ok(EventSink::new(producer, cfg.topics.query_events_topic.clone(), delivery_timeout))
}
