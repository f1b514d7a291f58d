//! CORS for browser clients (off unless `--cors-origin` is given): a page on an allowed origin
//! may call ingest with `fetch`. Preflight `OPTIONS` requests are answered here with 204; every
//! other answer to an allowed origin carries `Access-Control-Allow-Origin`. Requests from other
//! origins are served as before but without the header, so the browser withholds the answer.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Which origins may call from a browser.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// Exact origins (`https://app.example.com`), compared as sent by the browser.
    origins: Vec<String>,
    /// `*` was given: any origin.
    any: bool,
}

/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE_S: &str = "600";

impl Cors {
    /// From the `--cors-origin` values; `*` allows any origin. Empty: CORS off.
    pub fn new(origins: &[String]) -> Self {
        let any = origins.iter().any(|o| o.trim() == "*");
        let origins = origins.iter().map(|o| o.trim().trim_end_matches('/').to_owned()).collect();
        Self { origins, any }
    }

    /// Whether any origin is allowed at all.
    pub fn enabled(&self) -> bool {
        self.any || !self.origins.is_empty()
    }

    fn allow(&self, origin: &str) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        self.origins.iter().any(|o| o == origin).then(|| HeaderValue::from_str(origin).ok())?
    }
}

/// The middleware: `axum::middleware::from_fn_with_state(Arc<Cors>, layer)`.
pub async fn layer(State(cors): State<Arc<Cors>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let allowed = origin.as_deref().and_then(|o| cors.allow(o));
    let preflight = req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let Some(allowed) = allowed else {
            return StatusCode::FORBIDDEN.into_response();
        };
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, authorization"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE_S));
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        return resp;
    }
    let mut resp = next.run(req).await;
    if let Some(allowed) = allowed {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_star() {
        let c = Cors::new(&["https://app.example.com/".into()]);
        assert!(c.enabled());
        assert_eq!(c.allow("https://app.example.com").unwrap(), "https://app.example.com");
        assert!(c.allow("https://evil.example.com").is_none());
        assert!(c.allow("https://app.example.com.evil.com").is_none());
        assert_eq!(Cors::new(&["*".into()]).allow("http://x").unwrap(), "*");
        assert!(!Cors::new(&[]).enabled());
    }
}
