//! The original tool's HTTP API, backed by the pipeline: `GET ?action=status|stats|warmup|
//! config|predictions` and `POST ?action=config` (`record` lives with the other event routes in
//! `http.rs`).
//!
//! The front door reaches the other services only through topics and their documented admin
//! HTTP: the config, stats and predictions come from topics ([`views::Views`]); the cache's
//! counters and the warmup come from every warmer's admin API (`--warmer-url`, a list;
//! `warmers.rs`), which ingest calls with its API token. Mutating actions (config, warmup) need
//! `Authorization: Bearer <token>` when `--api-token` is set; the read actions (status, stats,
//! predictions, the config's GET) need the read token (or the API token) when `--read-token`
//! is set.

pub mod status;
pub mod views;
pub mod warmers;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use prefetch_common::config::{LiveConfig, CONFIG_KEY};
use prefetch_common::http::error_response;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use std::time::Duration;
use views::Views;

/// What the API actions need besides the event sink.
pub struct Api {
    /// The topic-fed views.
    pub views: std::sync::Arc<Views>,
    /// Producer for config changes.
    pub producer: FutureProducer,
    /// The live config topic.
    pub config_topic: String,
    /// Base URLs of the warmers' admin APIs (every instance of the cluster).
    pub warmers: Vec<String>,
    /// HTTP client for the warmer.
    pub http: reqwest::Client,
    /// Bearer token the mutating actions require, if set.
    pub token: Option<String>,
    /// Bearer token the read actions require (the API token is accepted too), if set.
    pub read_token: Option<String>,
    /// How long a config write may wait for Kafka's acknowledgement.
    pub produce_timeout: Duration,
}

impl Api {
    /// `None` when the request may mutate; otherwise the 401 to answer.
    pub fn authorize(&self, headers: &HeaderMap) -> Option<Response> {
        let expected = self.token.as_deref()?;
        if bearer_is(headers, expected) {
            return None;
        }
        Some(unauthorized(
            "this action changes the pipeline and needs the API token: send `Authorization: Bearer <token>` (the ingest's --api-token)",
        ))
    }

    /// `None` when the request may read; otherwise the 401 to answer. Open unless
    /// `--read-token` is set; then the read token or the API token is required.
    pub fn authorize_read(&self, headers: &HeaderMap) -> Option<Response> {
        let read = self.read_token.as_deref()?;
        if bearer_is(headers, read) || self.token.as_deref().is_some_and(|t| bearer_is(headers, t))
        {
            return None;
        }
        Some(unauthorized(
            "this action needs the read token: send `Authorization: Bearer <token>` (the ingest's --read-token or --api-token)",
        ))
    }

    /// `GET ?action=config`: the full live config.
    pub fn get_config(&self) -> Response {
        Json(json!({"config": self.views.config(), "stored": self.views.config_is_set()}))
            .into_response()
    }

    /// `POST ?action=config`: a partial config (the fields to change), validated, written to the
    /// config topic, answered once Kafka acknowledged it. An invalid change is refused (400
    /// naming the field) and the stored config stays.
    pub async fn set_config(&self, body: &[u8]) -> Response {
        let patch: Value = match prefetch_common::contract::parse_json_strict(body) {
            Ok(v) => v,
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("the body is not JSON: {e}"),
                )
            }
        };
        let current = self.views.config();
        let next = match current.patched(&patch) {
            Ok(c) => c,
            Err(e) => {
                let body = json!({"error": "invalid_config", "field": e.field, "message": e.to_string(), "config": current});
                return (StatusCode::BAD_REQUEST, Json(body)).into_response();
            }
        };
        if let Err(e) = self.write_config(&next).await {
            tracing::warn!(error = %e, "Config change not acknowledged by Kafka.");
            let mut resp = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka_unavailable",
                format!("the config change was not stored ({e}); the old config stays, retry"),
            );
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(5u32));
            return resp;
        }
        // Read your write: answer once this instance's view of the topic shows the change, so
        // a `GET ?action=config` right after sees it.
        let mut view = self.views.config_receiver();
        let shown = tokio::time::timeout(
            self.produce_timeout,
            view.wait_for(|c| c.as_ref() == Some(&next)),
        )
        .await;
        if !matches!(shown, Ok(Ok(_))) {
            tracing::warn!("Config change stored but not yet read back from the topic.");
        }
        tracing::info!(
            top_n = next.top_n,
            min_confidence = next.min_confidence,
            enabled = next.enabled,
            "Config changed."
        );
        Json(json!({"status": "ok", "config": next})).into_response()
    }

    async fn write_config(&self, cfg: &LiveConfig) -> Result<(), String> {
        let payload = serde_json::to_vec(cfg).map_err(|e| e.to_string())?;
        let rec = FutureRecord::to(&self.config_topic).key(CONFIG_KEY).payload(&payload);
        self.producer
            .send(rec, self.produce_timeout)
            .await
            .map(|_| ())
            .map_err(|(e, _)| e.to_string())
    }

    /// `GET ?action=predictions[&limit=N]`: the latest live predictions, most confident first.
    pub fn predictions(&self, limit: Option<usize>) -> Response {
        let limit = limit.unwrap_or_else(|| self.views.config().top_n).clamp(1, 10_000);
        let preds = self.views.predictions(Utc::now(), limit);
        Json(json!({"count": preds.len(), "predictions": preds})).into_response()
    }

    /// `GET ?action=stats`: the usage patterns, merged over the analyzers' latest snapshots.
    pub fn stats(&self) -> Response {
        match self.views.stats(Utc::now()) {
            Some(stats) => Json(stats).into_response(),
            None => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_stats",
                "no analyzer has published a stats snapshot recently; is an analyzer running against the same Kafka?",
            ),
        }
    }
}

/// Whether the request's bearer token is `expected`.
fn bearer_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|g| constant_time_eq(g.trim().as_bytes(), expected.as_bytes()))
}

fn unauthorized(why: &'static str) -> Response {
    let mut resp = error_response(StatusCode::UNAUTHORIZED, "unauthorized", why);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
