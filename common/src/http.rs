//! HTTP plumbing shared by the services: the Prometheus exposition and JSON error bodies.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, Registry, TextEncoder};
use serde::Serialize;

/// Renders `registry` in the Prometheus text format (for `GET /metrics`).
pub fn metrics_response(registry: &Registry) -> Response {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let mut resp = buf.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(prometheus::TEXT_FORMAT));
    resp
}

/// The JSON body of every error answer: a machine-readable `error` code, a sentence for people,
/// and, where they apply, the individual problems.
#[derive(Debug, Serialize)]
pub struct ErrorBody<P: Serialize = ()> {
    /// Stable code, e.g. `invalid_events`, `payload_too_large`, `kafka_unavailable`.
    pub error: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
    /// The individual problems (e.g. one per bad event and field).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<P>,
}

/// A JSON error answer with `status`.
pub fn error_response(
    status: StatusCode,
    error: &'static str,
    message: impl Into<String>,
) -> Response {
    (status, axum::Json(ErrorBody::<()> { error, message: message.into(), problems: Vec::new() }))
        .into_response()
}

/// `/readyz` for a service whose readiness is "Kafka answers and `topic` exists": 200, or 503
/// with the reason. The metadata request blocks, so it runs on a blocking thread.
pub async fn kafka_readiness(
    producer: rdkafka::producer::FutureProducer,
    topic: String,
) -> Response {
    use rdkafka::producer::Producer;
    let r = tokio::task::spawn_blocking(move || {
        crate::kafka::topic_ready(producer.client(), &topic, std::time::Duration::from_secs(2))
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match r {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => error_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why),
    }
}
