//! The analyzer's admin HTTP: patterns, the last predictions, health and metrics.

use super::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prefetch_common::http::{error_response, metrics_response};
use rdkafka::producer::FutureProducer;
use std::sync::Arc;

/// What the handlers share.
pub struct AdminState {
    /// Model and predictions.
    pub shared: Arc<Shared>,
    /// For readiness (Kafka reachable, topic present).
    pub producer: FutureProducer,
    /// The consumed topic.
    pub topic: String,
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/stats", get(stats))
        .route("/v1/predictions", get(predictions))
        .route("/v1/window", get(window))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<Arc<AdminState>>| async move {
                metrics_response("analyzer", s.shared.metrics.registry())
            }),
        )
        .with_state(state)
}

async fn stats(State(s): State<Arc<AdminState>>) -> Response {
    let Some(now) = s.shared.event_time() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_events_yet",
            "no query event has been folded yet",
        );
    };
    let shared = s.shared.clone();
    match tokio::task::spawn_blocking(move || shared.stats_json(now)).await {
        Ok(Ok(body)) => {
            ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Ok(Err(e)) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "stats_failed", e.to_string())
        }
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "stats_failed", e.to_string()),
    }
}

async fn predictions(State(s): State<Arc<AdminState>>) -> Response {
    Json(super::pipeline::predictions_json(&s.shared.predictions(), s.shared.event_time()))
        .into_response()
}

/// Not ready while any assigned partition is being restored (its keys would be missing from
/// the predictions), nor before the group assigned anything; then Kafka's own readiness.
async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    if let Some(why) = s.shared.not_ready() {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "restoring", why);
    }
    prefetch_common::http::kafka_readiness(s.producer.clone(), s.topic.clone()).await
}

/// `GET /v1/window`: every live key's events in the retention window, as
/// `{"keys": [[ticker, module, count], …], "events": total}` — for comparing deployments (the
/// scale-out tests check that several analyzers together hold what one fed the same events
/// holds). One pass over the keys under the model lock.
async fn window(State(s): State<Arc<AdminState>>) -> Response {
    let shared = s.shared.clone();
    match tokio::task::spawn_blocking(move || shared.model().window_counts()).await {
        Ok(keys) => {
            let events: u64 = keys.iter().map(|k| k.2).sum();
            Json(serde_json::json!({ "keys": keys, "events": events })).into_response()
        }
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "window_failed", e.to_string()),
    }
}
