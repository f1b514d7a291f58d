//! `GET ?action=status`: the original tool's status fields, with what to do about them.
//!
//! The counters and the cache size come from the warmers (each counts the query events of its
//! partitions, hit or miss, so the cluster's counters are their sum; a shared Redis cache is
//! counted once, file caches are added up); `enabled` and `config` are the live config. A
//! warmer that does not answer is listed under `warmers` with why, and its share is missing
//! from the counters (`complete: false`); none answering is a 502. The
//! learning stage is the original's table, by queries seen; the hints are its troubleshooting
//! advice, given only when they apply.

use super::warmers::{unreachable, WarmerAnswer};
use super::Api;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use prefetch_common::config::LiveConfig;
use serde::Serialize;
use serde_json::json;

/// Hit rate below which the status suggests warming more.
const LOW_HIT_RATE: f64 = 0.40;

/// The original tool's learning stages, by queries seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Stage {
    /// Below 50 queries: too little traffic to predict from.
    Learning,
    /// 50–200 queries.
    Good,
    /// 200–1000 queries.
    Excellent,
    /// 1000 queries and more.
    Optimal,
}

impl Stage {
    /// The stage after `queries` queries.
    pub fn of(queries: u64) -> Self {
        match queries {
            0..50 => Stage::Learning,
            50..200 => Stage::Good,
            200..1000 => Stage::Excellent,
            _ => Stage::Optimal,
        }
    }

    /// The range of queries the stage covers, as the original's table shows it.
    pub fn range(self) -> &'static str {
        match self {
            Stage::Learning => "< 50 queries",
            Stage::Good => "50-200 queries",
            Stage::Excellent => "200-1000 queries",
            Stage::Optimal => "1000+ queries",
        }
    }
}

/// The troubleshooting hints that apply.
pub fn hints(
    cfg: &LiveConfig,
    queries: u64,
    hit_rate: f64,
    live_predictions: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    if !cfg.enabled {
        out.push("Prefetching is disabled, so nothing is warmed: `prefetch prefetch-config --enable true`.".to_owned());
    } else if live_predictions == 0 {
        out.push(if queries < 50 {
            "No predictions yet: the model is still learning (fewer than 50 queries seen). Keep traffic flowing.".to_owned()
        } else {
            format!(
                "No live predictions, so nothing is warmed: check that an analyzer is running, or lower min_confidence (now {}).",
                cfg.min_confidence
            )
        });
    }
    if queries >= 50 && hit_rate < LOW_HIT_RATE {
        out.push(format!(
            "Hit rate {:.0}% is below 40%: lower the confidence threshold (now {}) or raise top_n (now {}), e.g. `prefetch prefetch-config --confidence {} --top {}`.",
            hit_rate * 100.0,
            cfg.min_confidence,
            cfg.top_n,
            ((cfg.min_confidence - 0.1).max(0.1) * 10.0).round() / 10.0,
            cfg.top_n * 2,
        ));
    }
    out
}

/// Spend against the fetch budget, from the analyzers' reports (`spend`: their merged
/// `budget` section; `None` when no analyzer reported): the budget, the counts, the spend ratio
/// (all upstream calls over the estimated calls of no warming) or the warms per minute, and
/// whether that is within the budget.
pub fn budget_status(cfg: &LiveConfig, spend: Option<&serde_json::Value>) -> serde_json::Value {
    let budget = serde_json::to_value(cfg.budget).unwrap_or_default();
    let Some(s) = spend.filter(|s| s.is_object()) else {
        return json!({"budget": budget, "reported": false});
    };
    let n = |f: &str| s[f].as_u64().unwrap_or(0);
    let (demand, warms, useful, span) =
        (n("demand_fetches"), n("warms"), n("useful_warms"), n("span_s"));
    // The calls of no warming as the analyzers count them (an analyzer older than that count
    // reports none: demand fetches plus useful warms, its estimate, stand in).
    let no_warming = match n("no_warming_fetches") {
        0 => demand + useful,
        n => n,
    };
    let spend_ratio = prefetch_common::budget::spend_ratio(demand, warms, no_warming);
    let per_minute = (span >= 60).then(|| warms as f64 * 60.0 / span as f64);
    // The analyzers' sums: the whole fleet's spend against the whole budget (share 1).
    let within = cfg.budget.holds(spend_ratio, warms, span, 1.0);
    json!({
        "budget": budget,
        "reported": true,
        // What the newest analyzer report applied: differs from `budget` until a change
        // reaches the analyzers.
        "analyzer_budget": s["budget"],
        "demand_fetches": demand,
        "warms": warms,
        "useful_warms": useful,
        "no_warming_fetches": no_warming,
        "refused": n("refused"),
        "spend_ratio": spend_ratio,
        "warms_per_minute": per_minute,
        "within_budget": within,
    })
}

/// What the warmers' `/v1/status` answers add up to.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    /// Hits counted by all warmers.
    pub hits: u64,
    /// Misses counted by all warmers.
    pub misses: u64,
    /// Entries cached (a shared Redis cache once).
    pub cached_items: u64,
    /// Their size in MB (likewise).
    pub cache_size_mb: f64,
    /// The backends the warmers named (`fs`, `redis`), without repeats.
    pub backends: Vec<String>,
    /// Whether every warmer answered.
    pub complete: bool,
}

/// Adds the answers up: counters summed (each warmer counts its own partitions), the cache
/// size summed for file caches and taken once (the largest report) for a shared Redis.
pub fn totals(answers: &[WarmerAnswer]) -> Totals {
    let ok: Vec<&serde_json::Value> =
        answers.iter().filter_map(|a| a.result.as_ref().ok()).collect();
    let n = |v: &serde_json::Value, f: &str| v[f].as_u64().unwrap_or(0);
    let mut backends: Vec<String> = ok
        .iter()
        .filter_map(|v| v["config"]["cache_backend"].as_str().map(str::to_owned))
        .collect();
    backends.dedup();
    let shared = |v: &&&serde_json::Value| v["config"]["cache_backend"] == "redis";
    let (redis, files): (Vec<&&serde_json::Value>, Vec<&&serde_json::Value>) =
        ok.iter().partition(shared);
    let cached_items = redis.iter().map(|v| n(v, "cached_items")).max().unwrap_or(0)
        + files.iter().map(|v| n(v, "cached_items")).sum::<u64>();
    let mb = |v: &serde_json::Value| v["cache_size_mb"].as_f64().unwrap_or(0.0);
    let cache_size_mb =
        redis.iter().map(|v| mb(v)).fold(0.0, f64::max) + files.iter().map(|v| mb(v)).sum::<f64>();
    Totals {
        hits: ok.iter().map(|v| n(v, "cache_hits")).sum(),
        misses: ok.iter().map(|v| n(v, "cache_misses")).sum(),
        cached_items,
        cache_size_mb,
        backends,
        complete: ok.len() == answers.len(),
    }
}

impl Api {
    /// `GET ?action=status`.
    pub async fn status(&self) -> Response {
        let answers = self.ask_warmers("/v1/status", false).await;
        if answers.iter().all(|a| a.result.is_err()) {
            return unreachable(&answers);
        }
        let t = totals(&answers);
        let cfg = self.views.config();
        let total = t.hits + t.misses;
        let hit_rate = if total == 0 { 0.0 } else { t.hits as f64 / total as f64 };
        let live = self.views.predictions(Utc::now(), usize::MAX).len();
        let stage = Stage::of(total);
        let spend = self.views.stats(Utc::now()).map(|s| s["budget"].clone());
        let warmers: Vec<serde_json::Value> = answers.iter().map(WarmerAnswer::summary).collect();
        Json(json!({
            "enabled": cfg.enabled,
            "total_queries": total,
            "cache_hits": t.hits,
            "cache_misses": t.misses,
            "hit_rate": hit_rate,
            "cached_items": t.cached_items,
            "cache_size_mb": t.cache_size_mb,
            "config": cfg,
            "learning_stage": {"stage": stage, "range": stage.range()},
            "live_predictions": live,
            "budget": budget_status(&cfg, spend.as_ref()),
            "hints": hints(&cfg, total, hit_rate, live),
            "warmer": {"url": self.warmers.join(","), "cache_backend": t.backends.join(",")},
            "warmers": warmers,
            "complete": t.complete,
        }))
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefetch_common::budget::Budget;

    #[test]
    fn stages_follow_the_original_table() {
        assert_eq!(Stage::of(0), Stage::Learning);
        assert_eq!(Stage::of(49), Stage::Learning);
        assert_eq!(Stage::of(50), Stage::Good);
        assert_eq!(Stage::of(199), Stage::Good);
        assert_eq!(Stage::of(200), Stage::Excellent);
        assert_eq!(Stage::of(999), Stage::Excellent);
        assert_eq!(Stage::of(1000), Stage::Optimal);
    }

    #[test]
    fn spend_is_judged_against_a_ratio_or_a_rate() {
        let spend = json!({"demand_fetches": 1000, "warms": 250, "useful_warms": 100, "refused": 7, "span_s": 600});
        let ratio = LiveConfig { budget: Budget::Ratio(1.2), ..LiveConfig::default() };
        let b = budget_status(&ratio, Some(&spend));
        // (1000 + 250) / (1000 + 100) = 1.136
        assert!((b["spend_ratio"].as_f64().unwrap() - 1250.0 / 1100.0).abs() < 1e-9);
        assert_eq!((b["within_budget"].as_bool(), b["budget"].as_f64()), (Some(true), Some(1.2)));
        let tight = LiveConfig { budget: Budget::Ratio(1.1), ..LiveConfig::default() };
        assert_eq!(budget_status(&tight, Some(&spend))["within_budget"], json!(false));
        let rate = LiveConfig { budget: Budget::PerMinute(20.0), ..LiveConfig::default() };
        let b = budget_status(&rate, Some(&spend));
        assert_eq!(
            (b["warms_per_minute"].as_f64(), b["within_budget"].as_bool()),
            (Some(25.0), Some(false))
        );
        // Analyzers that count the calls of no warming (a shadow cache never warmed) are judged
        // by that count: (1000 + 250) / 1300.
        let counted = json!({"demand_fetches": 1000, "warms": 250, "useful_warms": 100, "no_warming_fetches": 1300, "span_s": 600});
        let b = budget_status(&tight, Some(&counted));
        assert!((b["spend_ratio"].as_f64().unwrap() - 1250.0 / 1300.0).abs() < 1e-9);
        assert_eq!(
            (b["within_budget"].as_bool(), b["no_warming_fetches"].as_u64()),
            (Some(true), Some(1300))
        );
        assert_eq!(budget_status(&ratio, None)["reported"], json!(false));
        let applied = json!({"budget": 1.3, "demand_fetches": 10, "warms": 1, "span_s": 60});
        assert_eq!(budget_status(&ratio, Some(&applied))["analyzer_budget"], json!(1.3));
    }

    #[test]
    fn hints_apply_only_when_they_should() {
        let cfg = LiveConfig { min_confidence: 0.5, ..LiveConfig::default() };
        assert!(hints(&cfg, 500, 0.8, 3).is_empty(), "healthy: no advice");
        let low = hints(&cfg, 500, 0.2, 3);
        assert_eq!(low.len(), 1);
        assert!(
            low[0].contains("below 40%")
                && low[0].contains("--confidence 0.4")
                && low[0].contains("--top 20"),
            "{low:?}"
        );
        assert!(
            hints(&cfg, 10, 0.0, 0)[0].contains("still learning"),
            "few queries: learning, and no low-hit-rate alarm"
        );
        let disabled = LiveConfig { enabled: false, ..LiveConfig::default() };
        assert!(hints(&disabled, 500, 0.9, 0)[0].contains("disabled"));
        assert!(hints(&cfg, 500, 0.9, 0)[0].contains("No live predictions"));
    }

    fn answer(url: &str, backend: &str, hits: u64, misses: u64, items: u64) -> WarmerAnswer {
        WarmerAnswer {
            url: url.into(),
            result: Ok(json!({"cache_hits": hits, "cache_misses": misses, "cached_items": items,
                "cache_size_mb": items as f64 / 10.0, "config": {"cache_backend": backend}})),
        }
    }

    #[test]
    fn warmer_counters_add_up_and_a_shared_cache_counts_once() {
        let down = WarmerAnswer { url: "http://c".into(), result: Err("refused".into()) };
        let t = totals(&[
            answer("http://a", "redis", 3, 1, 50),
            answer("http://b", "redis", 5, 2, 50),
            down,
        ]);
        assert_eq!((t.hits, t.misses, t.cached_items), (8, 3, 50));
        assert!((t.cache_size_mb - 5.0).abs() < 1e-9);
        assert_eq!(t.backends, vec!["redis"]);
        assert!(!t.complete);
        let t = totals(&[answer("http://a", "fs", 1, 1, 10), answer("http://b", "fs", 1, 0, 20)]);
        assert_eq!((t.hits, t.misses, t.cached_items), (2, 1, 30));
        assert!(t.complete);
    }
}
