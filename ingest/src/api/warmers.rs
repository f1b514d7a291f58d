//! Ingest as the warmers' client: every call goes to every warmer of the cluster
//! (`--warmer-url`, a comma-separated list), concurrently, with ingest's API token (the
//! warmers' `POST /v1/warmup` needs it; their read routes accept it).
//!
//! Each warmer reads its share of the predictions and query-events partitions, so the warm-up
//! asks all of them, and the status adds their counters; what one unreachable warmer leaves out
//! is said in the answer, never silently dropped.

use super::Api;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prefetch_common::http::error_response;
use serde_json::{json, Value};

/// One warmer's answer, or why there is none.
#[derive(Debug, Clone)]
pub struct WarmerAnswer {
    /// Its base URL.
    pub url: String,
    /// Its JSON answer, or what went wrong.
    pub result: Result<Value, String>,
}

impl WarmerAnswer {
    /// `{url, ok, error?}` for the answer's `warmers` list.
    pub fn summary(&self) -> Value {
        match &self.result {
            Ok(_) => json!({"url": self.url, "ok": true}),
            Err(e) => json!({"url": self.url, "ok": false, "error": e}),
        }
    }
}

/// The 502 for warmers none of which answered, naming each and why.
pub fn unreachable(answers: &[WarmerAnswer]) -> Response {
    if answers.is_empty() {
        return error_response(
            StatusCode::BAD_GATEWAY,
            "warmer_unreachable",
            "no warmer is configured: set --warmer-url (a comma-separated list of base URLs)",
        );
    }
    let why: Vec<String> = answers
        .iter()
        .filter_map(|a| a.result.as_ref().err().map(|e| format!("{} ({e})", a.url)))
        .collect();
    error_response(
        StatusCode::BAD_GATEWAY,
        "warmer_unreachable",
        format!(
            "no warmer answered: {}; are they running, and is --warmer-url right?",
            why.join("; ")
        ),
    )
}

impl Api {
    async fn call(&self, base: &str, path: &str, post: bool) -> WarmerAnswer {
        let url = format!("{base}{path}");
        let mut req = if post { self.http.post(&url) } else { self.http.get(&url) };
        // The warmer takes the API token on every route; a read needs only its read token.
        let token = if post {
            self.token.as_ref()
        } else {
            self.token.as_ref().or(self.read_token.as_ref())
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let result = match req.send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()),
            Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
                Err(format!("it answered {}: give ingest the warmer's --api-token", r.status()))
            }
            Ok(r) => Err(format!("it answered {}", r.status())),
            Err(e) => Err(e.without_url().to_string()),
        };
        WarmerAnswer { url: base.to_owned(), result }
    }

    /// Every warmer's answer to `path`, in `--warmer-url` order.
    pub async fn ask_warmers(&self, path: &str, post: bool) -> Vec<WarmerAnswer> {
        futures::future::join_all(self.warmers.iter().map(|w| self.call(w, path, post))).await
    }

    /// `GET|POST ?action=warmup`: asks every warmer to warm its current predictions now; the
    /// items of all of them, `cached` summed.
    pub async fn warmup(&self) -> Response {
        let answers = self.ask_warmers("/v1/warmup", true).await;
        let ok: Vec<&Value> = answers.iter().filter_map(|a| a.result.as_ref().ok()).collect();
        if ok.is_empty() {
            return unreachable(&answers);
        }
        let cached: u64 = ok.iter().map(|v| v["cached"].as_u64().unwrap_or(0)).sum();
        let items: Vec<Value> =
            ok.iter().flat_map(|v| v["items"].as_array().cloned().unwrap_or_default()).collect();
        // The warmers share the live config, so they agree on enabled/disabled.
        let status = ok[0]["status"].clone();
        let warmers: Vec<Value> = answers.iter().map(WarmerAnswer::summary).collect();
        Json(json!({"status": status, "cached": cached, "items": items, "warmers": warmers}))
            .into_response()
    }
}

/// The list `--warmer-url` names: comma-separated base URLs, trailing slashes dropped.
pub fn parse_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmer_lists_are_split_and_trimmed() {
        assert_eq!(parse_list("http://a:8082/"), vec!["http://a:8082"]);
        assert_eq!(
            parse_list(" http://a:8082, http://b:8082/ ,,"),
            vec!["http://a:8082", "http://b:8082"]
        );
        assert!(parse_list("").is_empty());
    }
}
