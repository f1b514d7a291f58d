//! `GET ?action=status`: the original tool's status fields, with what to do about them.
//!
//! The counters and the cache size come from the warmer (it counts every query event on the
//! topic, hit or miss, and owns the cache); `enabled` and `config` are the live config. The
//! learning stage is the original's table, by queries seen; the hints are its troubleshooting
//! advice, given only when they apply.

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

impl Api {
    /// `GET ?action=status`.
    pub async fn status(&self) -> Response {
        let warmer = match self.warmer_status().await {
            Ok(v) => v,
            Err(resp) => return resp,
        };
        let cfg = self.views.config();
        let n = |f: &str| warmer[f].as_u64().unwrap_or(0);
        let (hits, misses) = (n("cache_hits"), n("cache_misses"));
        let total = hits + misses;
        let hit_rate = if total == 0 { 0.0 } else { hits as f64 / total as f64 };
        let live = self.views.predictions(Utc::now(), usize::MAX).len();
        let stage = Stage::of(total);
        Json(json!({
            "enabled": cfg.enabled,
            "total_queries": total,
            "cache_hits": hits,
            "cache_misses": misses,
            "hit_rate": hit_rate,
            "cached_items": n("cached_items"),
            "cache_size_mb": warmer["cache_size_mb"].as_f64().unwrap_or(0.0),
            "config": cfg,
            "learning_stage": {"stage": stage, "range": stage.range()},
            "live_predictions": live,
            "hints": hints(&cfg, total, hit_rate, live),
            "warmer": {"url": self.warmer_url, "cache_backend": warmer["config"]["cache_backend"].clone()},
        }))
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn hints_apply_only_when_they_should() {
        let cfg = LiveConfig::default();
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
}
