//! The original tool's commands — `cache-status`, `prefetch-stats`, `prefetch-warmup`,
//! `prefetch-config`, `predictions`, `record-query` — as clients of the front door's HTTP API
//! (`/api/v1/smart-prefetch?action=…` on ingest).
//!
//! # Layout
//! - `mod.rs`: the shared flags ([`ApiArgs`]), the client and its errors, and [`run`].
//! - `render.rs`: the readable tables (with the original's confidence bars); `--json` prints
//!   the API's answer as it came.
//!
//! Exit codes: 0 done; 1 the API refused or failed (its message is printed); 2 usage; 3 the
//! API could not be reached.

mod render;

use clap::{ArgAction, Args, Subcommand};
use prefetch_common::budget::Budget;
use prefetch_common::config::{parse_hour_weights, parse_ttl_spec};
use reqwest::header::AUTHORIZATION;
use serde_json::{json, Map, Value};
use std::process::ExitCode;
use std::time::Duration;

/// How to reach the API; shared by every API command.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of the front door (the ingest service), e.g. http://prefetch.internal:8080.
    #[arg(long, env = "PREFETCH_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Bearer token for the mutating actions (config changes, warmup), when the ingest
    /// requires one (its --api-token).
    #[arg(long, env = "PREFETCH_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Bearer token for the read commands (status, stats, predictions, showing the config),
    /// when the ingest requires one (its --read-token). --token, when given, is sent instead:
    /// the ingest accepts its API token for reads too.
    #[arg(long, env = "PREFETCH_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Print the API's JSON answer instead of a table (for scripts).
    #[arg(long)]
    pub json: bool,
    /// How long to wait for an answer (a warmup fetches, so it can take a while).
    #[arg(long, default_value = "30s", value_parser = prefetch_common::cli::parse_duration)]
    pub timeout: Duration,
}

/// The API commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ApiCommand {
    /// Show whether prefetching is on, queries, hits and misses, hit rate, cache size, the
    /// learning stage, and what to do when the hit rate is low or nothing is warmed.
    #[command(name = "cache-status", visible_alias = "status")]
    CacheStatus {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show the usage patterns: top tickers, modules and pairs, popular this hour and this
    /// weekday, learned sequences, the current hour weight.
    #[command(name = "prefetch-stats", visible_alias = "stats")]
    PrefetchStats {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Warm the currently predicted keys now (needs the token when the API has one).
    #[command(name = "prefetch-warmup", visible_alias = "warmup")]
    PrefetchWarmup {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show the live config, or change it: only the fields given change; every analyzer and
    /// warmer applies the change within seconds. An invalid change is refused and the old
    /// config stays.
    #[command(name = "prefetch-config", visible_alias = "config")]
    PrefetchConfig {
        #[command(flatten)]
        change: ConfigChange,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show the live predictions, most confident first.
    Predictions {
        /// How many (default: the config's top_n).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Record one query, as the original `record` action (for trying things out; apps post
    /// events to ingest directly).
    #[command(name = "record-query")]
    RecordQuery {
        /// The ticker, e.g. AAPL.
        ticker: String,
        /// The data module, e.g. price.
        module: String,
        /// The query was a cache hit.
        #[arg(long)]
        hit: bool,
        /// Who asked (groups queries into sessions for sequence learning).
        #[arg(long)]
        client: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

impl ApiCommand {
    /// How this command reaches the API.
    pub fn api(&self) -> &ApiArgs {
        match self {
            ApiCommand::CacheStatus { api }
            | ApiCommand::PrefetchStats { api }
            | ApiCommand::PrefetchWarmup { api }
            | ApiCommand::PrefetchConfig { api, .. }
            | ApiCommand::Predictions { api, .. }
            | ApiCommand::RecordQuery { api, .. } => api,
        }
    }
}

/// The fields `prefetch-config` can change; none given shows the config.
#[derive(Debug, Clone, Args)]
pub struct ConfigChange {
    /// The fetch budget, the primary knob: a ratio such as 1.2 (every upstream call, demand
    /// fetches and warms, at most 1.2× the calls of no warming — warms add up to 0.2×), a rate
    /// such as 120/min (also 2/s, 7200/h: warms per minute whatever the demand, for the whole
    /// deployment — each analyzer spends the share of the events partitions it owns), or off
    /// (only --top and --confidence limit warming). They stay caps under any budget.
    #[arg(long, value_name = "RATIO|N/min|off", value_parser = parse_budget)]
    pub budget: Option<Budget>,
    /// Most predictions published per analyzer tick (a cap under the budget), and most keys
    /// one warm-up fetches.
    #[arg(long = "top", value_name = "N")]
    pub top_n: Option<usize>,
    /// Least confidence a prediction needs to be published and warmed, in [0, 1].
    #[arg(long = "confidence", value_name = "X")]
    pub min_confidence: Option<f64>,
    /// Turn prefetching on or off (the model keeps learning either way).
    #[arg(long = "enable", value_name = "BOOL", action = ArgAction::Set)]
    pub enabled: Option<bool>,
    /// Hour weights in market time, replacing the current ones, e.g.
    /// `9-11=1.5,11-15=1.2,15-17=1.3,17-21=0.8,21-9=0.3` (ranges [a, b), may wrap midnight).
    #[arg(long, value_name = "SPEC")]
    pub hour_weights: Option<String>,
    /// The market's IANA time zone, e.g. America/New_York.
    #[arg(long, value_name = "TZ")]
    pub market_tz: Option<String>,
    /// Prediction horizon in seconds.
    #[arg(long = "horizon", value_name = "SECONDS")]
    pub horizon_s: Option<u64>,
    /// Time to live of one module's cached entries, as MODULE=DURATION (repeatable; other
    /// modules keep theirs).
    #[arg(long = "ttl", value_name = "MODULE=DURATION")]
    pub ttl: Vec<String>,
    /// Time to live of modules without their own, in seconds.
    #[arg(long = "default-ttl", value_name = "SECONDS")]
    pub default_ttl_s: Option<u64>,
}

impl ConfigChange {
    /// The change as the partial config document the API takes (`None`: nothing to change).
    pub fn patch(&self) -> Result<Option<Value>, String> {
        let mut p = Map::new();
        let mut put = |k: &str, v: Value| p.insert(k.to_owned(), v);
        if let Some(v) = self.budget {
            put("budget", json!(v));
        }
        if let Some(v) = self.top_n {
            put("top_n", json!(v));
        }
        if let Some(v) = self.min_confidence {
            put("min_confidence", json!(v));
        }
        if let Some(v) = self.enabled {
            put("enabled", json!(v));
        }
        if let Some(spec) = &self.hour_weights {
            let pairs = parse_hour_weights(spec).map_err(|e| format!("--hour-weights: {e}"))?;
            put("hour_weights", json!(pairs));
        }
        if let Some(v) = &self.market_tz {
            put("market_tz", json!(v));
        }
        if let Some(v) = self.horizon_s {
            put("horizon_s", json!(v));
        }
        if !self.ttl.is_empty() {
            let mut ttls = Map::new();
            for t in &self.ttl {
                let (m, s) = parse_ttl_spec(t).map_err(|e| format!("--ttl {e}"))?;
                ttls.insert(m, json!(s));
            }
            put("ttl_s", Value::Object(ttls));
        }
        if let Some(v) = self.default_ttl_s {
            put("default_ttl_s", json!(v));
        }
        Ok((!p.is_empty()).then_some(Value::Object(p)))
    }
}

fn parse_budget(s: &str) -> Result<Budget, String> {
    s.parse::<Budget>().map_err(|e| e.0)
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing answered at the URL.
    #[error("cannot reach the Smart Prefetch API at {url}: {reason}\nIs ingest running there? Point --api (or PREFETCH_API) at it.")]
    Unreachable {
        /// What was asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The API answered with an error.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's message (and field, for a refused config).
        message: String,
    },
    /// A flag could not be turned into a request.
    #[error("{0}")]
    Usage(String),
}

impl ApiError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ApiError::Refused { .. } => ExitCode::FAILURE,
            ApiError::Usage(_) => ExitCode::from(2),
            ApiError::Unreachable { .. } => ExitCode::from(3),
        }
    }
}

/// Runs `cmd` and returns what to print.
pub async fn run(cmd: &ApiCommand) -> Result<String, ApiError> {
    let args = cmd.api();
    let client = Client::new(args)?;
    let answer = match cmd {
        ApiCommand::CacheStatus { .. } => client.call("GET", "status", None).await?,
        ApiCommand::PrefetchStats { .. } => client.call("GET", "stats", None).await?,
        ApiCommand::PrefetchWarmup { .. } => client.call("POST", "warmup", None).await?,
        ApiCommand::PrefetchConfig { change, .. } => {
            match change.patch().map_err(ApiError::Usage)? {
                Some(patch) => client.call("POST", "config", Some(patch)).await?,
                None => client.call("GET", "config", None).await?,
            }
        }
        ApiCommand::Predictions { limit, .. } => {
            let action = match limit {
                Some(n) => format!("predictions&limit={n}"),
                None => "predictions".to_owned(),
            };
            client.call("GET", &action, None).await?
        }
        ApiCommand::RecordQuery { ticker, module, hit, client: who, .. } => {
            let mut ev = json!({"ticker": ticker, "module": module, "hit": hit});
            if let Some(c) = who {
                ev["client"] = json!(c);
            }
            client.call("POST", "record", Some(ev)).await?
        }
    };
    if args.json {
        return Ok(serde_json::to_string_pretty(&answer).unwrap_or_default() + "\n");
    }
    Ok(match cmd {
        ApiCommand::CacheStatus { .. } => render::status(&answer),
        ApiCommand::PrefetchStats { .. } => render::stats(&answer),
        ApiCommand::PrefetchWarmup { .. } => render::warmup(&answer),
        ApiCommand::PrefetchConfig { change, .. } => {
            render::config(&answer, change.patch().ok().flatten().is_some())
        }
        ApiCommand::Predictions { .. } => render::predictions(&answer),
        ApiCommand::RecordQuery { .. } => render::recorded(&answer),
    })
}

struct Client<'a> {
    http: reqwest::Client,
    args: &'a ApiArgs,
}

impl<'a> Client<'a> {
    fn new(args: &'a ApiArgs) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(args.timeout)
            .build()
            .map_err(|e| ApiError::Usage(e.to_string()))?;
        Ok(Self { http, args })
    }

    async fn call(
        &self,
        method: &str,
        action: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let url = format!(
            "{}/api/v1/smart-prefetch?action={action}",
            self.args.api.trim_end_matches('/')
        );
        let mut req = match method {
            "POST" => self.http.post(&url),
            _ => self.http.get(&url),
        };
        if let Some(t) = self.args.token.as_ref().or(self.args.read_token.as_ref()) {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ApiError::Unreachable { url: url.clone(), reason: root_cause(&e) })?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| ApiError::Unreachable { url: url.clone(), reason: root_cause(&e) })?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 400 {
            let message = match (answer["message"].as_str(), answer["problems"].as_array()) {
                (Some(m), Some(problems)) if !problems.is_empty() => {
                    let list: Vec<String> = problems
                        .iter()
                        .map(|p| {
                            format!(
                                "  {}: {}",
                                p["field"].as_str().unwrap_or("?"),
                                p["message"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    format!("{m}\n{}", list.join("\n"))
                }
                (Some(m), _) => m.to_owned(),
                (None, _) => format!("the API answered {status}: {answer}"),
            };
            return Err(ApiError::Refused { status, message });
        }
        Ok(answer)
    }
}

/// The innermost cause of a request error ("Connection refused" rather than "error sending
/// request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
