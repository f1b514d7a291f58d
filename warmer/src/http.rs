//! The HTTP API: the read-through cache for apps, the admin endpoints, health and metrics.
//!
//! Read-through answers as a cache proxy: 200 with the body (`x-cache: HIT` or `MISS`), 404
//! when the upstream has no such key (remembered for `--negative-ttl`), 503 with `Retry-After`
//! when the upstream asked for a pause, 502 when it failed. Misses of one key share one
//! upstream call (`flight.rs`). Tokens: `auth.rs`.

use crate::auth::{self, Access};
use crate::flight::{self, Demand};
use crate::policy::{Key, Outcome};
use crate::state::Shared;
use crate::upstream::FetchError;
use crate::warm::warm_batch;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use prefetch_common::contract::{ClientId, Module, QueryEvent, Ticker};
use prefetch_common::http::{error_response, metrics_response};
use rdkafka::producer::FutureRecord;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The header an app names its client with (a session, a user), forwarded in the query event.
pub const CLIENT_HEADER: &str = "x-client-id";
/// Answer header saying whether the cache answered: `HIT` or `MISS`.
pub const CACHE_HEADER: &str = "x-cache";

/// The router; the caller serves it.
pub fn router(state: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/cache/{module}/{ticker}", get(read_through))
        .route("/v1/status", get(status))
        .route("/v1/warmup", post(warmup))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    // Refresh the size gauges at scrape time, so they never lag a sweep interval behind.
    if let Ok(stats) = s.cache.stats().await {
        s.metrics.cache_size(stats);
    }
    metrics_response("warmer", s.metrics.registry())
}

/// `GET /v1/cache/{module}/{ticker}`: the cached body on a hit; on a miss the upstream's,
/// stored as a demand entry. Either way the query is published as a query event.
async fn read_through(
    State(s): State<Arc<Shared>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    if let Some(refused) = auth::check(&s, &headers, Access::Read, "cache") {
        return refused;
    }
    // A segment that is not UTF-8 once percent-decoded (`/v1/cache/%FF/AAPL`) gets the JSON
    // error body every other refusal has, not axum's plain-text rejection.
    let (module, ticker) = match path {
        Ok(Path(p)) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid_key", e.body_text()),
    };
    let key = match (Module::parse(&module), Ticker::parse(&ticker)) {
        (Ok(module), Ok(ticker)) => Key { module, ticker },
        (Err(e), _) | (_, Err(e)) => {
            return error_response(StatusCode::BAD_REQUEST, "invalid_key", e.to_string())
        }
    };
    let client = match headers.get(CLIENT_HEADER).map(|v| {
        v.to_str()
            .map_err(|_| "is not visible ASCII".to_owned())
            .and_then(|v| ClientId::parse(v).map_err(|e| e.message))
    }) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(why)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                format!("header {CLIENT_HEADER} {why}"),
            )
        }
    };
    let now = Utc::now();
    let cached = s.cache.get(&key, now).await.unwrap_or_else(|e| {
        // A broken cache must not break the app: answer from the upstream instead.
        s.metrics.cache_error("get");
        tracing::warn!(ticker = %key.ticker, module = %key.module, error = %e, "Cache read failed; treating it as a miss.");
        None
    });
    let (hit, result, resp) = match cached {
        Some(entry) if entry.negative => {
            s.metrics.negative_served();
            (true, "negative_hit", not_found_response(&key, "HIT"))
        }
        Some(entry) => (true, "hit", body_response(&entry.body, "HIT")),
        None => match flight::demand(&s, &key).await {
            Demand::Body(body) => (false, "miss", body_response(&body, "MISS")),
            Demand::NotFound => (false, "not_found", not_found_response(&key, "MISS")),
            Demand::Failed(e) => (false, "error", failed_response(&e)),
        },
    };
    s.metrics.read_through(&s.module_label(&key.module), result, started.elapsed());
    let event = QueryEvent {
        ticker: key.ticker,
        module: key.module,
        hit,
        ts: now,
        client,
        latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
    };
    publish(&s, &event);
    resp
}

fn not_found_response(key: &Key, cache: &'static str) -> Response {
    let mut resp = error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("the upstream has no {} for {}", key.module, key.ticker),
    );
    resp.headers_mut().insert(CACHE_HEADER, HeaderValue::from_static(cache));
    resp
}

/// 503 with the upstream's `Retry-After` when it asked for a pause; 502 otherwise. The message
/// names the URL without its query or userinfo.
fn failed_response(e: &FetchError) -> Response {
    match e.retry_after() {
        Some(d) => {
            let mut resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_busy",
                format!("{e}; it asked to retry after {} s", d.as_secs()),
            );
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            resp
        }
        None => error_response(StatusCode::BAD_GATEWAY, "upstream_unavailable", e.to_string()),
    }
}

fn body_response(body: &serde_json::Value, cache: &'static str) -> Response {
    let mut resp = Json(body).into_response();
    resp.headers_mut().insert(CACHE_HEADER, HeaderValue::from_static(cache));
    resp
}

/// Enqueues the query event (key = ticker) without making the app wait for Kafka; the
/// delivery result is counted when it comes.
fn publish(s: &Arc<Shared>, event: &QueryEvent) {
    let payload = event.to_json();
    let record = FutureRecord::to(&s.query_topic).key(event.ticker.as_str()).payload(&payload);
    match s.producer.send_result(record) {
        Ok(delivery) => {
            let s = s.clone();
            tokio::spawn(async move {
                let ok = matches!(delivery.await, Ok(Ok(_)));
                if !ok {
                    tracing::warn!("Kafka did not take a read-through query event.");
                }
                s.metrics.published(ok);
            });
        }
        Err((e, _)) => {
            tracing::warn!(error = %e, "Could not enqueue a read-through query event.");
            s.metrics.published(false);
        }
    }
}

/// `GET /v1/status`: the original tool's cache-status fields.
async fn status(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = auth::check(&s, &headers, Access::Read, "status") {
        return refused;
    }
    let (hits, misses) = s.counters.get();
    let total = hits + misses;
    let stats = s.cache.stats().await.unwrap_or_else(|e| {
        s.metrics.cache_error("stats");
        tracing::warn!(error = %e, "Cache size unknown.");
        Default::default()
    });
    let policy = s.policy();
    let table = s.ttls();
    let ttls: serde_json::Map<String, serde_json::Value> =
        table.per_module.iter().map(|(m, d)| (m.clone(), json!(d.as_secs()))).collect();
    Json(json!({
        "enabled": policy.enabled,
        "total_queries": total,
        "cache_hits": hits,
        "cache_misses": misses,
        "hit_rate": if total == 0 { 0.0 } else { hits as f64 / total as f64 },
        "cached_items": stats.entries,
        "cache_size_mb": stats.bytes as f64 / (1024.0 * 1024.0),
        "config": {
            "enabled": policy.enabled,
            "top_n": policy.top_n,
            "min_confidence": policy.min_confidence,
            "holdback": policy.holdback,
            "schedule": policy.schedule,
            "cache_backend": s.cache.kind(),
            "ttl_seconds": ttls,
            "default_ttl_seconds": table.default.as_secs(),
            "negative_ttl_seconds": s.options.negative_ttl.as_secs(),
            "rate_limit_scope": s.upstream.limit_scope(),
        },
    }))
    .into_response()
}

/// `POST /v1/warmup`: warm now from the latest prediction of each key seen (the schedule is
/// not applied to an operator's explicit request; everything else is).
async fn warmup(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(refused) = auth::check(&s, &headers, Access::Admin, "warmup") {
        return refused;
    }
    let now = Utc::now();
    let preds = s.latest(now);
    let enabled = s.policy().enabled;
    let results = warm_batch(&s, preds, now, crate::policy::Trigger::Operator).await;
    let cached = results.iter().filter(|(_, o)| *o == Outcome::Stored).count();
    let items: Vec<_> = results
        .iter()
        .map(|(p, o)| json!({"ticker": p.ticker, "module": p.module, "confidence": p.confidence, "outcome": o}))
        .collect();
    Json(json!({"status": if enabled { "ok" } else { "disabled" }, "cached": cached, "items": items})).into_response()
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if let Err(e) = s.cache.ping().await {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready", format!("cache: {e}"));
    }
    let producer = s.producer.clone();
    let topic = s.predictions_topic.clone();
    let r = tokio::task::spawn_blocking(move || {
        prefetch_common::kafka::topic_ready(
            rdkafka::producer::Producer::client(&producer),
            &topic,
            Duration::from_secs(2),
        )
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match r {
        Ok(()) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ready\n").into_response()
        }
        Err(why) => error_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why),
    }
}
