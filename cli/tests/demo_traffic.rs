//! `prefetch demo-traffic` as a user runs it: the real binary, real files, real HTTP.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use prefetch_common::contract::QueryEvent;
use serde_json::{json, Value};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn prefetch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prefetch")).args(args).output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn far_future() -> DateTime<Utc> {
    "2100-01-01T00:00:00Z".parse().unwrap()
}

fn parse_lines(text: &str, now: DateTime<Utc>) -> Vec<QueryEvent> {
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            QueryEvent::from_json(l.as_bytes(), now)
                .unwrap_or_else(|e| panic!("line {}: {e}: {l}", i + 1))
        })
        .collect()
}

/// The number after "demo-traffic: " in the summary.
fn summary_events(stderr: &str) -> usize {
    let rest =
        stderr.split("demo-traffic: ").nth(1).unwrap_or_else(|| panic!("no summary in {stderr:?}"));
    rest.split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no event count in {stderr:?}"))
}

#[test]
fn writes_canonical_json_lines_and_a_summary() {
    let dir = std::env::temp_dir().join(format!("prefetch-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("six-hours.jsonl");
    let out = prefetch(&[
        "demo-traffic",
        "--out",
        file.to_str().unwrap(),
        "--duration",
        "6h",
        "--seed",
        "7",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    // The default start lies in the past, so an ingest would accept every event now.
    let events = parse_lines(&text, Utc::now());
    assert!(events.len() > 500, "{} events", events.len());
    assert!(events.windows(2).all(|w| w[0].ts <= w[1].ts));
    for (line, e) in text.lines().zip(&events) {
        assert_eq!(line.as_bytes(), e.to_json(), "not the canonical form");
    }
    let err = stderr(&out);
    assert_eq!(summary_events(&err), events.len(), "{err}");
    assert!(err.contains("(ticker, module) keys") && err.contains("by source: lookups"), "{err}");

    // A fixed start makes the file reproducible; another seed makes another file.
    let run = |seed: &str, name: &str| {
        let path = dir.join(name);
        let o = prefetch(&[
            "demo-traffic",
            "--out",
            path.to_str().unwrap(),
            "--start",
            "2026-03-09",
            "--duration",
            "2h",
            "--seed",
            seed,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(path).unwrap()
    };
    assert_eq!(run("7", "a.jsonl"), run("7", "b.jsonl"));
    assert_ne!(run("7", "a.jsonl"), run("8", "c.jsonl"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stdout_gets_the_lines_and_stderr_the_summary() {
    let out = prefetch(&[
        "demo-traffic",
        "--out",
        "-",
        "--start",
        "2026-03-09T14:00:00Z",
        "--duration",
        "10m",
        "--rate",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = parse_lines(&String::from_utf8_lossy(&out.stdout), far_future());
    assert_eq!(summary_events(&stderr(&out)), events.len());
    assert!(events.len() > 1000);
}

#[test]
fn help_explains_every_flag() {
    let out = prefetch(&["demo-traffic", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = help.lines().collect();
    for flag in [
        "--out",
        "--to",
        "--realtime",
        "--batch-size",
        "--start",
        "--duration",
        "--seed",
        "--tickers",
        "--zipf-s",
        "--rate",
        "--dashboards",
        "--sessions-per-hour",
        "--bursts-per-day",
    ] {
        let at = lines
            .iter()
            .position(|l| l.trim_start().split([' ', '=']).next() == Some(flag))
            .unwrap_or_else(|| panic!("{flag} is not in the help:\n{help}"));
        // The explanation follows the flag and its value name, on the same line or the next.
        let rest: Vec<&str> =
            lines[at].split_whitespace().skip(1).skip_while(|w| w.starts_with('<')).collect();
        let explanation =
            if rest.is_empty() { lines[at + 1].trim().to_owned() } else { rest.join(" ") };
        assert!(
            !explanation.starts_with('-') && explanation.split_whitespace().count() >= 4,
            "{flag} is not explained:\n{help}"
        );
    }
    // `prefetch` alone shows the commands instead of doing nothing.
    let bare = prefetch(&[]);
    assert!(!bare.status.success());
    assert!(
        String::from_utf8_lossy(&bare.stderr).contains("demo-traffic")
            || String::from_utf8_lossy(&bare.stdout).contains("demo-traffic")
    );
}

#[test]
fn bad_flags_exit_2_with_the_reason() {
    let file =
        std::env::temp_dir().join(format!("prefetch-bad-flags-{}.jsonl", std::process::id()));
    let x = file.to_str().unwrap();
    for (args, says) in [
        (&["demo-traffic", "--out", x, "--bogus"][..], "--bogus"),
        (&["demo-traffic", "--duration", "1h"][..], "--out"),
        (&["demo-traffic", "--out", x, "--duration", "5x"][..], "unknown unit"),
        (&["demo-traffic", "--out", x, "--start", "yesterday"][..], "RFC 3339"),
        (&["demo-traffic", "--out", x, "--realtime"][..], "cannot be used with"),
        (&["demo-traffic", "--out", x, "--to", "http://127.0.0.1:1"][..], "cannot be used with"),
        (&["demo-traffic", "--to", "https://ingest.example"][..], "https is not supported"),
        (&["demo-traffic", "--out", x, "--rate", "0.2"][..], "raise --rate"),
        (&["demo-traffic", "--out", x, "--tickers", "0"][..], "--tickers"),
    ] {
        let out = prefetch(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!std::path::Path::new(x).exists(), "{args:?} wrote a file");
    }
}

#[test]
fn an_unreachable_ingest_is_a_clear_failure() {
    let out = prefetch(&[
        "demo-traffic",
        "--to",
        "http://127.0.0.1:1",
        "--start",
        "2026-03-09T14:00:00Z",
        "--duration",
        "1h",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot reach ingest at http://127.0.0.1:1/v1/events"), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
}

/// A stand-in ingest on 127.0.0.1:0 recording each request's content type and body, answering
/// `{"accepted":N}` (or, when `refuse`, ingest's 400 error).
struct FakeIngest {
    url: String,
    requests: Requests,
}

/// (content type, body) of each request received.
type Requests = Arc<Mutex<Vec<(String, String)>>>;

fn fake_ingest(refuse: bool) -> FakeIngest {
    let requests: Requests = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = (requests.clone(), refuse);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let app = Router::new().route("/v1/events", post(record)).with_state(state);
            axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app).await.unwrap();
        });
    });
    FakeIngest { url, requests }
}

async fn record(
    State((requests, refuse)): State<(Requests, bool)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let ct =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let n = body.lines().filter(|l| !l.trim().is_empty()).count();
    requests.lock().unwrap().push((ct, body));
    if refuse {
        let problems =
            [json!({"line": 1, "field": "ticker", "message": "character ';' is not allowed"})];
        let message = "1 event(s) refused; nothing of this request was recorded";
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_events", "message": message, "problems": problems})),
        );
    }
    (StatusCode::OK, Json(json!({ "accepted": n })))
}

#[test]
fn posts_the_same_events_as_ndjson_batches() {
    let ingest = fake_ingest(false);
    let flags = ["--start", "2026-03-09T14:00:00Z", "--duration", "20m", "--seed", "5"];
    let out = prefetch(
        &[&["demo-traffic", "--to", &ingest.url, "--batch-size", "500"][..], &flags].concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let file = prefetch(&[&["demo-traffic", "--out", "-"][..], &flags].concat());
    assert!(file.status.success());

    let requests = ingest.requests.lock().unwrap().clone();
    assert!(requests.len() > 2, "{} requests", requests.len());
    let mut posted = String::new();
    for (ct, body) in &requests {
        assert_eq!(ct, "application/x-ndjson");
        assert!(body.lines().count() <= 500);
        posted.push_str(body);
    }
    // Exactly the lines the file would hold, in order, none lost or repeated.
    assert_eq!(posted, String::from_utf8(file.stdout).unwrap());
    let err = stderr(&out);
    assert_eq!(summary_events(&err), posted.lines().count(), "{err}");
    assert!(err.contains(&format!("in {} batches", requests.len())), "{err}");
}

#[test]
fn a_refused_batch_prints_ingests_error_and_fails() {
    let ingest = fake_ingest(true);
    let out = prefetch(&[
        "demo-traffic",
        "--to",
        &ingest.url,
        "--start",
        "2026-03-09T14:00:00Z",
        "--duration",
        "1h",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("400 Bad Request") && err.contains(r#""error":"invalid_events""#),
        "{err}"
    );
    assert_eq!(ingest.requests.lock().unwrap().len(), 1, "nothing is sent after a refusal");
}

#[test]
fn realtime_moves_the_trace_onto_the_wall_clock_and_paces_it() {
    let ingest = fake_ingest(false);
    let before = Utc::now();
    let started = Instant::now();
    let out = prefetch(&[
        "demo-traffic",
        "--to",
        &ingest.url,
        "--realtime",
        "--start",
        "2026-03-09T09:30:00-04:00",
        "--duration",
        "2s",
        "--rate",
        "50",
        "--dashboards",
        "0",
        "--sessions-per-hour",
        "0",
        "--bursts-per-day",
        "0",
    ]);
    let took = started.elapsed();
    let after = Utc::now();
    assert!(out.status.success(), "{}", stderr(&out));
    let requests = ingest.requests.lock().unwrap().clone();
    let body: String = requests.iter().map(|(_, b)| b.as_str()).collect();
    let events = parse_lines(&body, after);
    assert!(events.len() > 50, "{} events", events.len());
    // Events due close together share a request rather than one request each.
    assert!(
        requests.len() * 5 < events.len(),
        "{} requests for {} events",
        requests.len(),
        events.len()
    );
    for e in &events {
        assert!(e.ts >= before && e.ts <= after, "{} is not between {before} and {after}", e.ts);
    }
    // Sent when due, not all at once: the run lasts as long as the events it spans.
    let span = (events.last().unwrap().ts - events[0].ts).to_std().unwrap();
    assert!(span.as_millis() > 1500, "{span:?}");
    assert!(took >= span, "took {took:?} for events spanning {span:?}");
}
