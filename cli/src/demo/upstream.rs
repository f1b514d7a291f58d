//! The demo upstream: a stand-in for the financial data API the warmer fetches from.
//!
//! `GET /{module}/{ticker}` answers plausible JSON for the five demo modules (a price that
//! wanders around a level fixed per ticker, a chart, headlines, fundamentals, an option chain)
//! after a realistic delay, and now and then a 503 — what a real data API does, so the warmer's
//! timeouts, retries and read-through misses are exercised. `prefetch up --demo` runs it in
//! process; `prefetch demo-upstream` runs it alone (the docker-compose demo's `data-api`).

use super::rng::Rng;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{Duration as Span, SecondsFormat, Utc};
use clap::Args;
use prefetch_common::cli::parse_duration;
use prefetch_common::contract::{Module, Ticker};
use serde_json::{json, Value};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Run the demo upstream data API: `GET /{module}/{ticker}` answers plausible JSON after a
/// realistic delay (and an occasional 503), for the warmer's `--upstream-url
/// 'http://HOST:PORT/{module}/{ticker}'`. `GET /healthz` answers 200.
#[derive(Debug, Clone, Args)]
pub struct UpstreamArgs {
    /// Address to listen on.
    #[arg(
        long,
        value_name = "ADDR",
        env = "PREFETCH_DEMO_UPSTREAM_LISTEN",
        default_value = "127.0.0.1:8000"
    )]
    pub listen: SocketAddr,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub behaviour: UpstreamBehaviour,
}

/// How the demo upstream behaves: its delays and its failures.
#[derive(Debug, Clone, Args)]
pub struct UpstreamBehaviour {
    /// Shortest delay before an answer (e.g. `20ms`); each answer waits a uniform random time
    /// between this and --max-delay.
    #[arg(long, value_name = "DURATION", default_value = "20ms", value_parser = parse_duration)]
    pub min_delay: Duration,

    /// Longest delay before an answer.
    #[arg(long, value_name = "DURATION", default_value = "80ms", value_parser = parse_duration)]
    pub max_delay: Duration,

    /// Share of requests (0–1) answered 503 Service Unavailable, as an overloaded data API
    /// does now and then.
    #[arg(long, value_name = "SHARE", default_value_t = 0.01, value_parser = parse_share)]
    pub error_rate: f64,

    /// Seed of the delays, failures and values.
    #[arg(long = "upstream-seed", value_name = "N", default_value_t = 1)]
    pub seed: u64,
}

impl Default for UpstreamBehaviour {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(80),
            error_rate: 0.01,
            seed: 1,
        }
    }
}

/// What the demo upstream has answered, for summaries and tests.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    /// Requests answered 200.
    pub ok: AtomicU64,
    /// Requests answered 503 on purpose.
    pub failed: AtomicU64,
}

struct UpstreamState {
    behaviour: UpstreamBehaviour,
    rng: Mutex<Rng>,
    counters: Arc<UpstreamCounters>,
}

/// The routes of the demo upstream.
pub fn upstream_router(behaviour: UpstreamBehaviour, counters: Arc<UpstreamCounters>) -> Router {
    let rng = Mutex::new(Rng::new(behaviour.seed, 0x0075_7073));
    let state = Arc::new(UpstreamState { behaviour, rng, counters });
    Router::new()
        .route("/{module}/{ticker}", get(answer))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

/// Serves the demo upstream on a bound `listener` until `shutdown` is cancelled.
pub async fn serve_upstream(
    listener: TcpListener,
    behaviour: UpstreamBehaviour,
    counters: Arc<UpstreamCounters>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, upstream_router(behaviour, counters))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn answer(
    State(s): State<Arc<UpstreamState>>,
    Path((module, ticker)): Path<(String, String)>,
) -> Response {
    let (module, ticker) = match (Module::parse(&module), Ticker::parse(&ticker)) {
        (Ok(m), Ok(t)) => (m, t),
        (Err(e), _) | (_, Err(e)) => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not_found", "message": e.to_string()})),
            )
                .into_response()
        }
    };
    let (delay, fail, noise) = {
        let mut rng = s.rng.lock().unwrap_or_else(|p| p.into_inner());
        let lo = s.behaviour.min_delay.as_secs_f64();
        let hi = s.behaviour.max_delay.as_secs_f64().max(lo);
        (
            Duration::from_secs_f64(rng.range(lo, hi)),
            rng.chance(s.behaviour.error_rate),
            rng.next_u64(),
        )
    };
    tokio::time::sleep(delay).await;
    if fail {
        s.counters.failed.fetch_add(1, Ordering::Relaxed);
        let body = json!({"error": "unavailable", "message": "the data API is overloaded; retry"});
        return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], Json(body))
            .into_response();
    }
    s.counters.ok.fetch_add(1, Ordering::Relaxed);
    Json(body(module.as_str(), ticker.as_str(), noise)).into_response()
}

/// A stable number in [0, 1) per ticker and purpose, so a ticker keeps its price level and
/// sector from one answer to the next.
fn stable(ticker: &str, purpose: &str) -> f64 {
    let mut h = DefaultHasher::new();
    (ticker, purpose).hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The JSON the data API answers for one key; `noise` moves the price a little per answer.
pub fn body(module: &str, ticker: &str, noise: u64) -> Value {
    let now = Utc::now();
    let as_of = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let level = 5.0 * (160.0f64).powf(stable(ticker, "level")); // 5 to 800
    let wiggle = ((noise >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.01;
    let price = round2(level * (1.0 + wiggle));
    let change = round2(level * (stable(ticker, "change") - 0.5) * 0.04);
    match module {
        "price" => json!({
            "ticker": ticker, "price": price, "change": change,
            "change_percent": round2(change / level * 100.0),
            "volume": (stable(ticker, "volume") * 5e7) as u64 + noise % 10_000,
            "currency": "USD", "market_state": "REGULAR", "as_of": as_of,
        }),
        "chart" => {
            let points: Vec<Value> = (0..78)
                .map(|i| {
                    let t = now - Span::minutes(5 * (77 - i));
                    let close = level * (1.0 + 0.01 * ((i as f64) / 7.0 + stable(ticker, "phase") * 6.0).sin());
                    json!({"t": t.to_rfc3339_opts(SecondsFormat::Secs, true), "close": round2(close)})
                })
                .collect();
            json!({"ticker": ticker, "interval": "5m", "range": "1d", "points": points, "as_of": as_of})
        }
        "news" => {
            let publishers =
                ["Reuters", "Bloomberg", "MarketWatch", "Barron's", "The Wall Street Journal"];
            let headlines = [
                "shares move as traders weigh guidance",
                "analysts revise price targets after earnings call",
                "options activity points to a volatile week",
                "institutional holders add to positions",
            ];
            let items: Vec<Value> = (0..4)
                .map(|i| {
                    let p = publishers[(noise as usize + i) % publishers.len()];
                    let at = now - Span::minutes(17 * (i as i64 + 1) + (noise % 13) as i64);
                    json!({"title": format!("{ticker} {}", headlines[i]), "publisher": p,
                           "published_at": at.to_rfc3339_opts(SecondsFormat::Secs, true)})
                })
                .collect();
            json!({"ticker": ticker, "items": items, "as_of": as_of})
        }
        "fundamentals" => {
            let sectors = [
                "Technology",
                "Financials",
                "Health Care",
                "Energy",
                "Consumer Discretionary",
                "Industrials",
            ];
            let shares = 1e8 + stable(ticker, "shares") * 1.5e10;
            let pe = 8.0 + stable(ticker, "pe") * 60.0;
            json!({
                "ticker": ticker, "sector": sectors[(stable(ticker, "sector") * sectors.len() as f64) as usize],
                "market_cap": (shares * level).round(), "pe_ratio": round2(pe), "eps": round2(level / pe),
                "dividend_yield": round2(stable(ticker, "dividend") * 3.5), "as_of": as_of,
            })
        }
        "options" => {
            let expiration = (now + Span::days(7)).date_naive().to_string();
            let chain = |kind: f64| -> Vec<Value> {
                (-2..=2)
                    .map(|k| {
                        let strike = round2(level * (1.0 + 0.05 * f64::from(k)));
                        let mid = ((level - strike) * kind).max(0.0) + level * 0.02;
                        json!({"strike": strike, "bid": round2(mid * 0.98), "ask": round2(mid * 1.02)})
                    })
                    .collect()
            };
            json!({"ticker": ticker, "expiration": expiration, "calls": chain(1.0), "puts": chain(-1.0), "as_of": as_of})
        }
        other => {
            json!({"ticker": ticker, "module": other, "data": {"value": price}, "as_of": as_of})
        }
    }
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
