//! Bearer tokens on the warmer's HTTP API: `--api-token` (the same token ingest's mutating
//! actions take) guards `POST /v1/warmup`; the optional `--read-token` guards the read routes
//! (`/v1/cache/...`, `/v1/status`), where the API token is accepted too. Health, readiness and
//! metrics stay open for probes and scrapers.

use crate::state::Shared;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use prefetch_common::http::error_response;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads data or counters.
    Read,
    /// Changes what the warmer does or costs upstream calls on request.
    Admin,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Compares without stopping at the first difference (no timing hint of a token's prefix).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `None` when the request may go on; otherwise the 401 to answer (counted under `route`).
pub fn check(
    s: &Shared,
    headers: &HeaderMap,
    access: Access,
    route: &'static str,
) -> Option<Response> {
    let api = s.options.api_token.as_deref();
    let accepted: Vec<&str> = match access {
        Access::Admin => api.into_iter().collect(),
        Access::Read => match s.options.read_token.as_deref() {
            Some(read) => std::iter::once(read).chain(api).collect(),
            None => Vec::new(),
        },
    };
    if accepted.is_empty() {
        return None;
    }
    let given = bearer(headers).unwrap_or_default().as_bytes();
    if accepted.iter().any(|t| constant_time_eq(given, t.as_bytes())) {
        return None;
    }
    s.metrics.unauthorized(route);
    let why = match access {
        Access::Admin => "this route changes what the warmer does and needs the API token: send `Authorization: Bearer <token>` (the warmer's --api-token, the same as ingest's)",
        Access::Read => "this route needs the read token: send `Authorization: Bearer <token>` (the warmer's --read-token or --api-token)",
    };
    let mut resp = error_response(StatusCode::UNAUTHORIZED, "unauthorized", why);
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(resp)
}
