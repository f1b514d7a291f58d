//! Readable tables of the API's answers. Missing fields print as `-`: an older or newer front
//! door must not make the CLI fail.

use serde_json::Value;
use std::fmt::Write;

/// Width of a confidence or hit-rate bar, in characters.
const BAR: usize = 20;

/// `[██████████░░░░░░░░░░]` for a share in [0, 1].
pub fn bar(share: f64) -> String {
    let filled = ((share.clamp(0.0, 1.0) * BAR as f64).round()) as usize;
    format!("[{}{}]", "█".repeat(filled), "░".repeat(BAR - filled))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64().map_or("-".to_owned(), |f| format!("{:.1}%", f * 100.0))
}

/// `cache-status`.
pub fn status(s: &Value) -> String {
    let mut out = String::from("Smart Prefetch status\n");
    let enabled = if s["enabled"].as_bool() == Some(true) { "yes" } else { "no" };
    let rows = [
        ("Enabled", enabled.to_owned()),
        (
            "Queries",
            format!(
                "{} (hits {}, misses {})",
                text(&s["total_queries"]),
                text(&s["cache_hits"]),
                text(&s["cache_misses"])
            ),
        ),
        (
            "Hit rate",
            format!("{:>6}  {}", pct(&s["hit_rate"]), bar(s["hit_rate"].as_f64().unwrap_or(0.0))),
        ),
        (
            "Cached items",
            format!(
                "{} ({:.2} MB)",
                text(&s["cached_items"]),
                s["cache_size_mb"].as_f64().unwrap_or(0.0)
            ),
        ),
        ("Fetch budget", budget_line(&s["budget"])),
        (
            "Learning stage",
            format!(
                "{} ({})",
                text(&s["learning_stage"]["stage"]),
                text(&s["learning_stage"]["range"])
            ),
        ),
        ("Live predictions", text(&s["live_predictions"])),
        (
            "Config",
            format!(
                "top_n {}, min_confidence {}, horizon {} s",
                text(&s["config"]["top_n"]),
                text(&s["config"]["min_confidence"]),
                text(&s["config"]["horizon_s"])
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<17} {v}");
    }
    let hints = s["hints"].as_array().cloned().unwrap_or_default();
    if !hints.is_empty() {
        out.push_str("\nWhat to do:\n");
        for h in hints {
            let _ = writeln!(out, "  - {}", text(&h));
        }
    }
    out
}

fn names(out: &mut String, title: &str, list: &Value) {
    let _ = writeln!(out, "\n{title}:");
    let items = list.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        out.push_str("  (none yet)\n");
    }
    for (i, item) in items.iter().enumerate().take(10) {
        let name = if item["name"].is_null() {
            format!("{} {}", text(&item["ticker"]), text(&item["module"]))
        } else {
            text(&item["name"])
        };
        let _ = writeln!(out, "  {:>2}. {:<24} {:>8}", i + 1, name, text(&item["count"]));
    }
}

/// `prefetch-stats`.
pub fn stats(s: &Value) -> String {
    let mut out = format!(
        "Usage patterns (market hour {}, {}; current hour weight {}; {} events in the window)\n",
        text(&s["market_hour"]),
        text(&s["market_weekday"]),
        text(&s["current_hour_weight"]),
        text(&s["events_in_window"])
    );
    names(&mut out, "Top tickers", &s["top_tickers"]);
    names(&mut out, "Top modules", &s["top_modules"]);
    names(&mut out, "Top pairs", &s["top_pairs"]);
    names(&mut out, "Popular this hour", &s["popular_this_hour"]);
    names(&mut out, "Popular this weekday", &s["popular_this_weekday"]);
    out.push_str("\nTop sequences:\n");
    let seqs = s["top_sequences"].as_array().cloned().unwrap_or_default();
    if seqs.is_empty() {
        out.push_str("  (none yet)\n");
    }
    for q in seqs.iter().take(10) {
        let p = q["probability"].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "  {:<12} → {:<18} {} {:>5.0}%",
            text(&q["from"]),
            text(&q["to"]),
            bar(p),
            p * 100.0
        );
    }
    out
}

fn prediction_rows(out: &mut String, items: &[Value], last: &str) {
    let _ = writeln!(
        out,
        "  {:<10} {:<14} {:<22} {:>6}  {}",
        "TICKER",
        "MODULE",
        "CONFIDENCE",
        "",
        last.to_uppercase()
    );
    for p in items {
        let c = p["confidence"].as_f64().unwrap_or(0.0);
        let extra = if last == "outcome" { text(&p["outcome"]) } else { text(&p["reason"]) };
        let _ = writeln!(
            out,
            "  {:<10} {:<14} {} {:>5.1}%  {}",
            text(&p["ticker"]),
            text(&p["module"]),
            bar(c),
            c * 100.0,
            extra
        );
    }
}

/// `predictions`.
pub fn predictions(a: &Value) -> String {
    let items = a["predictions"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        return "No live predictions (the model may still be learning, or prefetching is disabled; see `prefetch cache-status`).\n".to_owned();
    }
    let mut out = format!("{} live prediction(s), most confident first:\n", items.len());
    prediction_rows(&mut out, &items, "reason");
    out
}

/// `prefetch-warmup`.
pub fn warmup(a: &Value) -> String {
    let items = a["items"].as_array().cloned().unwrap_or_default();
    let mut out = format!(
        "Warmup {}: {} of {} predicted key(s) fetched into the cache.\n",
        text(&a["status"]),
        text(&a["cached"]),
        items.len()
    );
    if !items.is_empty() {
        prediction_rows(&mut out, &items, "outcome");
    }
    out
}

/// `prefetch-config`: the config, after a change when `changed`.
pub fn config(a: &Value, changed: bool) -> String {
    let c = &a["config"];
    let mut out = String::from(if changed {
        "Config changed; every analyzer and warmer applies it within seconds.\n"
    } else if a["stored"].as_bool() == Some(false) {
        "Config (the defaults: nothing has been stored in the config topic yet):\n"
    } else {
        "Config:\n"
    });
    let rows = [
        ("enabled", text(&c["enabled"])),
        ("top_n", text(&c["top_n"])),
        ("min_confidence", text(&c["min_confidence"])),
        ("horizon_s", text(&c["horizon_s"])),
        ("market_tz", text(&c["market_tz"])),
        ("hour_weights", kv(&c["hour_weights"])),
        ("ttl_s", kv(&c["ttl_s"])),
        ("default_ttl_s", text(&c["default_ttl_s"])),
        ("budget", budget_text(&c["budget"])),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<15} {v}");
    }
    out
}

/// Spend against the fetch budget, as `cache-status` shows it.
fn budget_line(b: &Value) -> String {
    if b.is_null() {
        return "-".to_owned();
    }
    let limit = budget_text(&b["budget"]);
    if b["reported"].as_bool() != Some(true) {
        return format!("{limit}; no analyzer has reported its spend yet");
    }
    let spent = match (b["spend_ratio"].as_f64(), b["warms_per_minute"].as_f64()) {
        (Some(r), _) if b["budget"].is_number() => format!("spent {r:.2}×"),
        (_, Some(m)) => format!("spent {m:.1}/min"),
        (Some(r), None) => format!("spent {r:.2}×"),
        (None, None) => "nothing fetched yet".to_owned(),
    };
    let mut verdict = match b["within_budget"].as_bool() {
        Some(true) => " — within budget".to_owned(),
        Some(false) => " — OVER budget".to_owned(),
        None => String::new(),
    };
    if !b["analyzer_budget"].is_null() && b["analyzer_budget"] != b["budget"] {
        let applied = budget_text(&b["analyzer_budget"]);
        verdict.push_str(&format!(" (the analyzers still apply {applied})"));
    }
    format!(
        "{limit}; {spent} ({} warms, {} demand fetches, {} useful warms){verdict}",
        text(&b["warms"]),
        text(&b["demand_fetches"]),
        text(&b["useful_warms"])
    )
}

/// The budget as the user reads it: `1.3× the fetches of no warming`, `120/min`, `off`.
fn budget_text(v: &Value) -> String {
    match v {
        Value::Number(r) => format!("{r}× the fetches of no warming"),
        Value::Null => "-".to_owned(),
        other => text(other),
    }
}

fn kv(v: &Value) -> String {
    v.as_object().map_or("-".to_owned(), |m| {
        m.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(", ")
    })
}

/// `record-query`.
pub fn recorded(a: &Value) -> String {
    format!(
        "Recorded {} {} ({}).\n",
        text(&a["ticker"]),
        text(&a["module"]),
        if a["hit"].as_bool() == Some(true) { "hit" } else { "miss" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bars_fill_with_the_share() {
        assert_eq!(bar(0.0), format!("[{}]", "░".repeat(20)));
        assert_eq!(bar(0.5), format!("[{}{}]", "█".repeat(10), "░".repeat(10)));
        assert_eq!(bar(1.7), format!("[{}]", "█".repeat(20)));
    }

    #[test]
    fn status_shows_stage_rate_and_hints_and_survives_missing_fields() {
        let s = json!({"enabled": true, "total_queries": 120, "cache_hits": 30, "cache_misses": 90, "hit_rate": 0.25,
            "learning_stage": {"stage": "Good", "range": "50-200 queries"}, "hints": ["lower the confidence"]});
        let out = status(&s);
        assert!(
            out.contains("Good (50-200 queries)")
                && out.contains("25.0%")
                && out.contains("- lower the confidence"),
            "{out}"
        );
        assert!(status(&json!({})).contains("Enabled           no"));
    }
}
