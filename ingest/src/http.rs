//! The HTTP API: batch ingest, the original API's actions (`record` here, the others in
//! `api/`), health and metrics.

use crate::api::Api;
use crate::batch::{parse_body, Accepted, Clock, Framing, Problem, Refusal};
use crate::metrics::{Metrics, Rejection};
use crate::sink::EventSink;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use futures::StreamExt;
use prefetch_common::contract::{QueryEvent, RecordAck};
use prefetch_common::http::{error_response, metrics_response, ErrorBody};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every handler shares.
pub struct AppState {
    /// Where accepted events go.
    pub sink: EventSink,
    /// Collectors for `/metrics`.
    pub metrics: Metrics,
    /// Largest accepted body in bytes.
    pub max_body_bytes: usize,
    /// A `ts` further ahead of ingest's clock than this is replaced by the clock.
    pub max_clock_skew: chrono::Duration,
    /// The original API's other actions.
    pub api: Api,
}

/// Seconds a client is asked to wait (`Retry-After`) after a 503.
const RETRY_AFTER_SECS: u64 = 5;

/// The original API's actions, for the 400 that lists them.
const ACTIONS: [&str; 6] = ["record", "status", "stats", "warmup", "config", "predictions"];

/// The router; the caller serves it.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/api/v1/smart-prefetch", get(original_api).post(original_api))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<Arc<AppState>>| async move {
                metrics_response("ingest", s.metrics.registry())
            }),
        )
        .with_state(state)
}

async fn post_events(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let wanted = "application/json (an event or an array) or application/x-ndjson";
    let (framing, body) = match read_body(&s, &headers, body, Some, wanted).await {
        Ok(fb) => fb,
        Err(resp) => return resp,
    };
    let clock = Clock { now: Utc::now(), max_skew: s.max_clock_skew };
    let batch = match parse_body(&body, framing, clock) {
        Ok(b) if b.events.is_empty() => {
            s.metrics.rejected(Rejection::Invalid, 0);
            return error_response(
                StatusCode::BAD_REQUEST,
                "empty_batch",
                "the body holds no events",
            );
        }
        Ok(b) => b,
        Err(refusal) => return refused(&s, refusal),
    };
    match produce(&s, &batch.events).await {
        Ok(()) => {
            s.metrics.clamped(batch.clamped);
            (StatusCode::OK, Json(json!({"accepted": batch.events.len()}))).into_response()
        }
        Err(resp) => resp,
    }
}

#[derive(Deserialize)]
struct ActionQuery {
    action: Option<String>,
    /// `action=predictions`: how many (default: the live config's top_n).
    limit: Option<usize>,
}

async fn original_api(
    State(s): State<Arc<AppState>>,
    method: axum::http::Method,
    q: Result<Query<ActionQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A query string that does not parse (`action=a&action=b`, `limit=-1`) gets the JSON error
    // body every other refusal has, not axum's plain-text rejection.
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => {
            s.metrics.rejected(Rejection::InvalidQuery, 0);
            let resp = error_response(StatusCode::BAD_REQUEST, "invalid_query", e.body_text());
            return close_if_unread(&headers, resp);
        }
    };
    let Some(action) = q.action.as_deref().filter(|a| ACTIONS.contains(a)) else {
        s.metrics.rejected(Rejection::UnknownAction, 0);
        let resp = (
            StatusCode::BAD_REQUEST,
            Json(json!({
                "error": "unknown_action",
                "message": format!("unknown action {:?}; available: {}", q.action.as_deref().unwrap_or(""), ACTIONS.join(", ")),
                "available": ACTIONS,
            })),
        )
            .into_response();
        return close_if_unread(&headers, resp);
    };
    let api = &s.api;
    let reads =
        matches!((action, method.as_str()), ("status" | "stats" | "predictions" | "config", "GET"));
    if let Some(refused) = reads.then(|| api.authorize_read(&headers)).flatten() {
        return close_if_unread(&headers, refused);
    }
    match (action, method.as_str()) {
        ("record", "POST") => record(s, headers, body).await,
        ("status", "GET") => api.status().await,
        ("stats", "GET") => api.stats(),
        ("predictions", "GET") => api.predictions(q.limit),
        ("config", "GET") => api.get_config(),
        ("config", "POST") => {
            if let Some(refused) = api.authorize(&headers) {
                return close_if_unread(&headers, refused);
            }
            let only_json = |f| (f == Framing::Json).then_some(f);
            match read_body(&s, &headers, body, only_json, "application/json").await {
                Ok((_, body)) => s.api.set_config(&body).await,
                Err(resp) => resp,
            }
        }
        ("warmup", "GET" | "POST") => match api.authorize(&headers) {
            Some(refused) => close_if_unread(&headers, refused),
            None => api.warmup().await,
        },
        (a, m) => {
            let allowed = match a {
                "record" => "POST",
                "config" => "GET or POST",
                "warmup" => "GET or POST",
                _ => "GET",
            };
            s.metrics.rejected(Rejection::MethodNotAllowed, 0);
            let resp = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("action {a:?} takes {allowed}, not {m}"),
            );
            close_if_unread(&headers, resp)
        }
    }
}

/// `POST ?action=record` with the original body `{"ticker","module","hit"}`.
async fn record(s: Arc<AppState>, headers: HeaderMap, body: Body) -> Response {
    let only_json = |f| (f == Framing::Json).then_some(f);
    let (_, body) = match read_body(&s, &headers, body, only_json, "application/json").await {
        Ok(fb) => fb,
        Err(resp) => return resp,
    };
    let (event, clamped) = match QueryEvent::from_json_clamped(&body, Utc::now(), s.max_clock_skew)
    {
        Ok(ec) => ec,
        Err(e) => {
            let problems = e
                .problems
                .into_iter()
                .map(|p| Problem { index: None, line: None, field: p.field, message: p.message })
                .collect();
            return refused(&s, Refusal { problems, bad_events: 1 });
        }
    };
    let event = Accepted::rewritten(event);
    match produce(&s, std::slice::from_ref(&event)).await {
        Ok(()) => {
            s.metrics.clamped(usize::from(clamped));
            Json(RecordAck::from(&event.event)).into_response()
        }
        Err(resp) => resp,
    }
}

/// Checks the content type against what the route `accepts` (415 naming `wanted` otherwise)
/// and reads the body within the size limit (413 otherwise), counting either refusal.
async fn read_body(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
    accepts: impl Fn(Framing) -> Option<Framing>,
    wanted: &str,
) -> Result<(Framing, Bytes), Response> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let Some(framing) = Framing::from_content_type(ct).and_then(accepts) else {
        s.metrics.rejected(Rejection::UnsupportedMediaType, 0);
        let resp = error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type {:?} is not accepted; send {wanted}", ct.unwrap_or("")),
        );
        return Err(close_if_unread(headers, resp));
    };
    match read_limited(body, headers, s.max_body_bytes).await {
        Ok(b) => Ok((framing, b)),
        Err((reason, resp)) => {
            s.metrics.rejected(reason, 0);
            Err(resp)
        }
    }
}

async fn produce(s: &AppState, events: &[Accepted<'_>]) -> Result<(), Response> {
    let started = Instant::now();
    match s.sink.send_all(events).await {
        Ok(()) => {
            s.metrics.accepted(events.len(), started.elapsed());
            Ok(())
        }
        Err(e) => {
            tracing::warn!(events = events.len(), failed = e.failed, error = %e.first_error, "Kafka did not acknowledge a request; answering 503.");
            s.metrics.rejected(Rejection::KafkaUnavailable, events.len());
            let mut resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka_unavailable",
                format!("Kafka did not acknowledge the events ({}); nothing of this request counts as accepted, retry it", e.first_error),
            );
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            Err(resp)
        }
    }
}

fn refused(s: &AppState, refusal: Refusal) -> Response {
    s.metrics.rejected(Rejection::Invalid, refusal.bad_events);
    let body = ErrorBody {
        error: "invalid_events",
        message: format!(
            "{} event(s) refused; nothing of this request was recorded",
            refusal.bad_events
        ),
        problems: refusal.problems,
    };
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// A refusal sent without reading the request's body gets `Connection: close`: hyper cannot
/// reuse a connection with an unread body, and a keep-alive client told nothing would send its
/// next request into a closing connection.
fn close_if_unread(headers: &HeaderMap, mut resp: Response) -> Response {
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if has_body {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Reads the body up to `limit` bytes, or answers 413 (with `Connection: close`). A body
/// announced or found to be too large is still read to its end (up to a bound) before the
/// answer, so a client that writes its whole body before reading gets our 413 instead of a
/// broken pipe; a chunked body is found too large only while it is read, so it is drained the
/// same way.
async fn read_limited(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, (Rejection, Response)> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        let mut resp = error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the limit of {limit} bytes; split the batch"),
        );
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        (Rejection::TooLarge, resp)
    };
    let mut stream = body.into_data_stream();
    if announced.is_some_and(|n| n > limit as u64) {
        drain(&mut stream, limit).await;
        return Err(too_large());
    }
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) if buf.len() + c.len() <= limit => buf.extend_from_slice(&c),
            Ok(_) => {
                drain(&mut stream, limit).await;
                return Err(too_large());
            }
            Err(e) => {
                let mut resp = error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("could not read the body: {e}"),
                );
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Err((Rejection::BadBody, resp));
            }
        }
    }
    Ok(Bytes::from(buf))
}

/// Reads and drops what is left of a body, at most `4 × limit` bytes or 10 s.
async fn drain(stream: &mut axum::body::BodyDataStream, limit: usize) {
    let mut seen = 0usize;
    let bound = limit.saturating_mul(4);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > bound {
                break;
            }
        }
    })
    .await;
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    prefetch_common::http::kafka_readiness(s.sink.producer().clone(), s.sink.topic().to_owned())
        .await
}
