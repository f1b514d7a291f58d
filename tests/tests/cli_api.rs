//! The original tool's commands, run as the real `prefetch` binary against a running stack.

use chrono::{Duration as CDuration, Utc};
use prefetch_e2e::*;
use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Runs `prefetch args…` off the async runtime.
async fn prefetch(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin_path("prefetch"))
            .args(&args)
            .env_remove("PREFETCH_API_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_commands_drive_a_running_pipeline() {
    let kafka = TestKafka::start();
    let stack = spawn_stack(&kafka, "cli-api", StackOptions { token: Some("tok".into()) }).await;
    let api = stack.ingest.url("");
    let end = Utc::now();
    let events: Vec<Value> = (0..60)
        .map(|i| json!({"ticker": "AAPL", "module": "price", "ts": (end - CDuration::seconds(60 * (60 - i))).to_rfc3339(), "client": "dash", "hit": false}))
        .collect();
    assert_eq!(
        http().post(stack.ingest.url("/v1/events")).json(&events).send().await.unwrap().status(),
        200
    );

    let out = prefetch(&["record-query", "aapl", "price", "--hit", "--api", &api]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "Recorded AAPL price (hit).\n");

    let status = eventually(WAIT, "61 queries in cache-status --json", || async {
        let out = prefetch(&["cache-status", "--json", "--api", &api]).await;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["total_queries"] == 61).then_some(v)
    })
    .await;
    assert_eq!(status["cache_hits"], 1);
    let table = stdout(&prefetch(&["cache-status", "--api", &api]).await);
    assert!(table.contains("Good (50-200 queries)") && table.contains("Hit rate"), "{table}");
    assert!(
        table.contains("What to do:") && table.contains("below 40%"),
        "1 hit in 61 queries needs advice: {table}"
    );

    let preds = eventually(WAIT, "AAPL in the predictions table", || async {
        let out = stdout(&prefetch(&["predictions", "--api", &api]).await);
        out.contains("AAPL").then_some(out)
    })
    .await;
    assert!(preds.contains("price") && preds.contains('█'), "{preds}");

    let stats = eventually(WAIT, "AAPL in prefetch-stats", || async {
        let out = prefetch(&["prefetch-stats", "--api", &api]).await;
        (out.status.success() && stdout(&out).contains("AAPL")).then(|| stdout(&out))
    })
    .await;
    assert!(stats.contains("Top tickers:") && stats.contains("Top sequences:"), "{stats}");

    // Changing the config needs the token; an invalid change names the field and changes nothing.
    let out =
        prefetch(&["prefetch-config", "--top", "5", "--confidence", "0.6", "--api", &api]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("token"), "{}", stderr(&out));
    let out = prefetch(&[
        "prefetch-config",
        "--top",
        "5",
        "--confidence",
        "0.6",
        "--enable",
        "true",
        "--ttl",
        "chart=30",
        "--budget",
        "1.2",
        "--token",
        "tok",
        "--api",
        &api,
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Config changed") && stdout(&out).contains("chart=30"),
        "{}",
        stdout(&out)
    );
    let out =
        prefetch(&["prefetch-config", "--confidence", "2", "--token", "tok", "--api", &api]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("min_confidence"), "{}", stderr(&out));
    let out = prefetch(&["prefetch-config", "--json", "--api", &api]).await;
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (cfg["config"]["top_n"].as_u64(), cfg["config"]["min_confidence"].as_f64()),
        (Some(5), Some(0.6))
    );
    assert_eq!(cfg["config"]["budget"].as_f64(), Some(1.2), "{cfg}");
    // cache-status shows the spend against it once the analyzer applied it and reported.
    let budget = eventually(WAIT, "the analyzer's spend under budget 1.2 in cache-status", || {
        let api = api.clone();
        async move {
            let out = prefetch(&["cache-status", "--json", "--api", &api]).await;
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let b = v["budget"].clone();
            (b["analyzer_budget"].as_f64() == Some(1.2)).then_some(b)
        }
    })
    .await;
    assert_eq!(budget["budget"].as_f64(), Some(1.2), "{budget}");
    // The 60 misses recorded are the demand fetches the ratio is measured against.
    assert!(budget["demand_fetches"].as_u64() >= Some(60), "{budget}");
    let ratio = budget["spend_ratio"].as_f64().expect("a spend ratio");
    assert!(ratio >= 1.0, "{budget}");
    assert_eq!(budget["within_budget"].as_bool(), Some(ratio <= 1.2 + 1e-9), "{budget}");
    let table = stdout(&prefetch(&["cache-status", "--api", &api]).await);
    let line = table.lines().find(|l| l.contains("Fetch budget")).unwrap_or_default();
    assert!(
        line.contains("1.2× the fetches of no warming; spent")
            && (line.contains("within budget") || line.contains("OVER budget")),
        "{table}"
    );
    // The absolute form, and a budget out of bounds refused before any request.
    let out =
        prefetch(&["prefetch-config", "--budget", "120/min", "--token", "tok", "--api", &api])
            .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("120/min"), "{}", stdout(&out));
    let out = prefetch(&["prefetch-config", "--budget", "0.5", "--api", &api]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("between 1"), "{}", stderr(&out));

    let out = prefetch(&["prefetch-warmup", "--token", "tok", "--api", &api]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Warmup ok:"), "{}", stdout(&out));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_is_a_clear_error_with_its_own_exit_code() {
    for cmd in
        ["cache-status", "prefetch-stats", "predictions", "prefetch-warmup", "prefetch-config"]
    {
        let out = prefetch(&[cmd, "--api", "http://127.0.0.1:1"]).await;
        assert_eq!(out.status.code(), Some(3), "{cmd}");
        let err = stderr(&out);
        assert!(
            err.contains("cannot reach the Smart Prefetch API at http://127.0.0.1:1")
                && err.contains("--api"),
            "{cmd}: {err}"
        );
    }
    // A malformed flag value is a usage error (2), found before any request.
    let out = prefetch(&["prefetch-config", "--ttl", "chart", "--api", "http://127.0.0.1:1"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("MODULE=DURATION"), "{}", stderr(&out));
}

#[test]
fn every_flag_of_the_api_commands_is_explained() {
    let flags = ["--api", "--token", "--read-token", "--json", "--timeout"];
    for (cmd, own) in [
        ("cache-status", &[][..]),
        ("predictions", &["--limit"][..]),
        ("record-query", &["--hit", "--client"][..]),
        (
            "prefetch-config",
            &[
                "--top",
                "--confidence",
                "--enable",
                "--hour-weights",
                "--market-tz",
                "--horizon",
                "--ttl",
                "--default-ttl",
                "--budget",
            ][..],
        ),
    ] {
        let out = std::process::Command::new(bin_path("prefetch"))
            .args([cmd, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8(out.stdout).unwrap();
        for flag in flags.iter().chain(own) {
            let line = help
                .lines()
                .position(|l| l.trim_start().starts_with(&format!("{flag} ")))
                .unwrap_or_else(|| panic!("{cmd}: {flag} missing:\n{help}"));
            let text: String = help.lines().skip(line).take(2).collect();
            assert!(text.split_whitespace().count() > 3, "{cmd}: {flag} unexplained:\n{help}");
        }
    }
}
