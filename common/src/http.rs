//! HTTP plumbing shared by the services: the Prometheus exposition and JSON error bodies.
//!
//! Every service's `/metrics` carries, besides its own collectors, what every process has:
//! `smart_prefetch_build_info{service,version,librdkafka} 1` (which build answers, for dashboards
//! and alerts that join on it) and, on Linux, the standard `process_*` metrics (CPU seconds,
//! resident memory, open file descriptors, start time) from the prometheus crate's process
//! collector.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntGauge, Opts, Registry, TextEncoder};
use serde::Serialize;

/// `smart_prefetch_build_info` for `service`: a gauge of 1 whose labels say which build runs.
fn build_info(service: &str) -> Vec<MetricFamily> {
    let (_, librdkafka) = rdkafka::util::get_rdkafka_version();
    let opts = Opts::new(
        "smart_prefetch_build_info",
        "Which build of which service answers: always 1, the facts are the labels.",
    )
    .const_label("service", service)
    .const_label("version", env!("CARGO_PKG_VERSION"))
    .const_label("librdkafka", librdkafka);
    let gauge = IntGauge::with_opts(opts).expect("valid build_info");
    gauge.set(1);
    gauge.collect()
}

/// The process collector (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_start_time_seconds`, ...) of this process. Services that share
/// a process (`prefetch up`, the tests) report the same figures.
#[cfg(target_os = "linux")]
fn process_metrics() -> Vec<MetricFamily> {
    static PROCESS: std::sync::LazyLock<prometheus::process_collector::ProcessCollector> =
        std::sync::LazyLock::new(prometheus::process_collector::ProcessCollector::for_self);
    PROCESS.collect()
}

#[cfg(not(target_os = "linux"))]
fn process_metrics() -> Vec<MetricFamily> {
    Vec::new()
}

/// What `GET /metrics` of `service` exposes: its own `registry`, `smart_prefetch_build_info`
/// and the process metrics, sorted by name.
pub fn gather(service: &str, registry: &Registry) -> Vec<MetricFamily> {
    let mut families = registry.gather();
    families.extend(build_info(service));
    families.extend(process_metrics());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    families
}

/// Renders [`gather`] in the Prometheus text format (for `GET /metrics` of `service`).
pub fn metrics_response(service: &str, registry: &Registry) -> Response {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&gather(service, registry), &mut buf) {
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
