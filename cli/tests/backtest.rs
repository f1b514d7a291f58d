//! `prefetch backtest` and `prefetch tune` as a user runs them: the real binary, real files.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn prefetch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prefetch")).args(args).output().expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("prefetch-backtest-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Three market hours of demo traffic, written by the binary itself.
fn demo_log(d: &std::path::Path) -> PathBuf {
    let path = d.join("demo.jsonl");
    let out = prefetch(&[
        "demo-traffic",
        "--out",
        path.to_str().unwrap(),
        "--start",
        "2026-03-10T10:00:00-04:00",
        "--duration",
        "3h",
        "--seed",
        "3",
        "--rate",
        "5",
        "--tickers",
        "200",
        "--sessions-per-hour",
        "200",
        "--dashboards",
        "8",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    path
}

#[test]
fn help_explains_every_flag() {
    let out = prefetch(&["backtest", "--help"]);
    let help = text(&out.stdout);
    for flag in [
        "--events",
        "--config",
        "--tick-seconds",
        "--top-n",
        "--min-confidence",
        "--horizon",
        "--ttl",
        "--default-ttl",
        "--warms-out",
        "--svg",
        "--json",
        "--model-only",
    ] {
        assert!(help.contains(flag), "backtest --help lacks {flag}:\n{help}");
    }
    assert!(help.contains("expiry > t"), "the semantics are stated:\n{help}");
    let help = text(&prefetch(&["tune", "--help"]).stdout);
    for flag in [
        "--events",
        "--top-n",
        "--min-confidence",
        "--horizon",
        "--budget",
        "--budget-fetches",
        "--svg",
        "--json",
        "--ttl",
    ] {
        assert!(help.contains(flag), "tune --help lacks {flag}:\n{help}");
    }
}

#[test]
fn reports_the_model_and_the_baselines_and_writes_warms_and_a_chart() {
    let d = dir("report");
    let log = demo_log(&d);
    let (warms, svg) = (d.join("warms.jsonl"), d.join("hit-rate.svg"));
    let out = prefetch(&[
        "backtest",
        "--events",
        log.to_str().unwrap(),
        "--json",
        "--warms-out",
        warms.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--ttl",
        "chart=120",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["config"]["ttl_s"]["chart"], 120, "--ttl reaches the config");
    let s = &report["strategies"];
    for name in ["model", "no_warming", "original", "oracle"] {
        let r = &s[name];
        for field in ["queries", "hits", "hit_rate", "warms", "upstream_fetches", "warm_precision"]
        {
            assert!(r[field].is_number(), "{name}.{field} missing: {r}");
        }
        assert_eq!(r["queries"], report["events"]);
        let fetches = r["queries"].as_u64().unwrap() - r["hits"].as_u64().unwrap()
            + r["warms"].as_u64().unwrap();
        assert_eq!(
            r["upstream_fetches"].as_u64(),
            Some(fetches),
            "{name}: fetches are misses plus warms"
        );
    }
    assert_eq!(s["no_warming"]["warms"], 0);
    assert_eq!(s["oracle"]["warm_precision"], 1.0);
    let rate = |n: &str| s[n]["hit_rate"].as_f64().unwrap();
    assert!(rate("oracle") > rate("model") && rate("model") > rate("no_warming"), "{s}");
    assert!(report["targets"]["share_of_oracle_gain"].is_number());
    // One JSON line per warm of the model.
    let lines = std::fs::read_to_string(&warms).unwrap();
    assert_eq!(lines.lines().count() as u64, s["model"]["warms"].as_u64().unwrap());
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    for field in ["ts", "ticker", "module", "confidence"] {
        assert!(!first[field].is_null(), "{first}");
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.matches("<polyline").count() >= 4, "{chart}");

    // The table form says the same.
    let out = prefetch(&["backtest", "--events", log.to_str().unwrap(), "--model-only"]);
    let table = text(&out.stdout);
    assert!(
        out.status.success() && table.contains("model") && !table.contains("oracle"),
        "{table}"
    );
}

#[test]
fn tune_prints_the_grid_and_recommends_within_the_budget() {
    let d = dir("tune");
    let log = demo_log(&d);
    let svg = d.join("frontier.svg");
    let out = prefetch(&[
        "tune",
        "--events",
        log.to_str().unwrap(),
        "--top-n",
        "5,10",
        "--min-confidence",
        "0.5,0.7",
        "--horizon",
        "300",
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let settings = r["settings"].as_array().unwrap();
    assert_eq!(settings.len(), 4);
    let budget = r["budget_fetches"].as_u64().unwrap();
    let none = r["no_warming"]["upstream_fetches"].as_u64().unwrap();
    assert_eq!(budget, (none as f64 * 1.3).floor() as u64);
    let best = &settings[r["recommended"].as_u64().expect("a setting fits") as usize];
    assert!(best["upstream_fetches"].as_u64().unwrap() <= budget);
    let fitting = settings.iter().filter(|s| s["upstream_fetches"].as_u64().unwrap() <= budget);
    assert!(
        fitting.clone().all(|s| s["hit_rate"].as_f64() <= best["hit_rate"].as_f64()),
        "{settings:?}"
    );
    assert!(settings.iter().any(|s| s["frontier"] == true));
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<circle"));
    // A budget nothing fits is said plainly.
    let out = prefetch(&[
        "tune",
        "--events",
        log.to_str().unwrap(),
        "--top-n",
        "10",
        "--min-confidence",
        "0.5",
        "--horizon",
        "300",
        "--budget-fetches",
        "1",
    ]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("no setting fits within 1 fetches"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bad_input_is_refused_clearly() {
    let d = dir("bad");
    let log = d.join("bad.jsonl");
    std::fs::write(
        &log,
        "{\"ticker\":\"AAPL\",\"module\":\"price\",\"ts\":\"2026-03-10T14:00:00Z\"}\nnot json\n",
    )
    .unwrap();
    let out = prefetch(&["backtest", "--events", log.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("bad.jsonl:2:"), "{}", text(&out.stderr));

    let good = d.join("good.jsonl");
    std::fs::write(
        &good,
        "{\"ticker\":\"AAPL\",\"module\":\"price\",\"ts\":\"2026-03-10T14:00:00Z\"}\n",
    )
    .unwrap();
    let out =
        prefetch(&["backtest", "--events", good.to_str().unwrap(), "--min-confidence", "1.5"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("min_confidence"), "{}", text(&out.stderr));
    let cfg = d.join("config.json");
    std::fs::write(&cfg, r#"{"top_n": 3, "horizon": 60}"#).unwrap();
    let out = prefetch(&[
        "backtest",
        "--events",
        good.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("horizon"),
        "the unknown field is named: {}",
        text(&out.stderr)
    );
    let out = prefetch(&["backtest", "--events", good.to_str().unwrap(), "--ttl", "price"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("MODULE=DURATION"));
    let out = prefetch(&["backtest", "--events", d.join("missing.jsonl").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("missing.jsonl"));
}
