//! `prefetch up`, `prefetch demo-upstream` and `prefetch demo-traffic --via-cache` as a user
//! runs them: the pipeline in one process on free ports, real HTTP, real cache files, the real
//! binary for ctrl-c. These always use `up`'s embedded Kafka, even when `KAFKA_BOOTSTRAP` is
//! set: that is what `up` is for, and `up` on a shared broker would use the default topic and
//! group names, which parallel tests must not share.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use prefetch::demo::{self, UpstreamBehaviour, UpstreamCounters};
use prefetch::up::{self, metric_sum, Endpoints, UpArgs};
use prefetch::{Cli, Command};
use prefetch_testkit::{eventually, http};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_prefetch")
}

fn up_args(extra: &[&str]) -> UpArgs {
    let mut argv = vec!["prefetch", "up"];
    argv.extend_from_slice(extra);
    match Cli::parse_from(argv).command {
        Command::Up(a) => a,
        other => panic!("parsed as {other:?}"),
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("prefetch-up-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn cache_files(dir: &std::path::Path) -> usize {
    let Ok(modules) = std::fs::read_dir(dir) else { return 0 };
    modules
        .flatten()
        .filter(|m| m.path().is_dir())
        .flat_map(|m| std::fs::read_dir(m.path()).into_iter().flatten().flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn up_demo_answers_the_api_learns_and_warms_then_stops_cleanly() {
    prefetch_testkit::init_logs();
    let cache = temp_dir("demo");
    let args = up_args(&[
        "--demo",
        "--port-base",
        "0",
        "--speed",
        "10",
        "--cache",
        cache.to_str().unwrap(),
    ]);
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<Endpoints>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    // `up` runs on a runtime of its own: if an assertion fails here, this test's runtime is
    // dropped, and that must not wait on the services' Kafka clients (rust-rdkafka #453).
    let stop = shutdown.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let report = rt.block_on(up::run(args, stop, move |e| {
            let _ = tx.send(e.clone());
        }));
        let _ = done_tx.send(report);
        rt.shutdown_background();
    });
    let e = tokio::time::timeout(Duration::from_secs(90), rx)
        .await
        .expect("ready within 90 s")
        .expect("up started");
    let client = http();

    // Ingest answers and takes events.
    let r = client.get(format!("http://{}/healthz", e.ingest)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("http://{}/v1/events", e.ingest))
        .json(&json!([{"ticker": "MSFT", "module": "news", "hit": false}, {"ticker": "MSFT", "module": "price", "hit": true}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 2);

    // The read-through: a key the demo app never asks misses, is fetched from the demo
    // upstream, and then hits.
    let url = format!("http://{}/v1/cache/price/ZZZZ", e.warmer);
    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-cache"], "MISS");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["ticker"], "ZZZZ");
    assert!(body["price"].as_f64().is_some_and(|p| p > 0.0), "{body}");
    let again = client.get(&url).send().await.unwrap();
    assert_eq!(again.headers()["x-cache"], "HIT");

    // The demo app's queries flow through Kafka to the analyzer, whose predictions the warmer
    // turns into warmed cache entries that then serve hits.
    let warmer_metrics = format!("http://{}/metrics", e.warmer);
    eventually(Duration::from_secs(120), "warms and useful warms", || async {
        let text = client.get(&warmer_metrics).send().await.ok()?.text().await.ok()?;
        let warms = metric_sum(&text, "smart_prefetch_warmer_warms_total", "outcome=\"stored\"");
        let useful = metric_sum(&text, "smart_prefetch_warmer_useful_warms_total", "");
        (warms > 0.0 && useful > 0.0).then_some(())
    })
    .await;
    assert!(cache_files(&cache) > 10, "cache files under {}", cache.display());
    let status: Value = client
        .get(format!("http://{}/v1/status", e.warmer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status["total_queries"].as_u64().unwrap() > 0, "{status}");
    assert!(status["cache_hits"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["config"]["cache_backend"], "fs", "{status}");
    // The original API on the front door answers from the same warmer (on its free port).
    let api = format!("http://{}/api/v1/smart-prefetch?action=status", e.ingest);
    let original: Value = client.get(&api).send().await.unwrap().json().await.unwrap();
    assert!(
        original["total_queries"].as_u64().unwrap() > 0
            && original["learning_stage"]["stage"].is_string(),
        "{original}"
    );

    // The demo upstream is reachable on its own address too.
    let upstream = e.upstream.expect("--demo runs the demo upstream");
    let quote: Value =
        eventually(Duration::from_secs(10), "a 200 from the demo upstream", || async {
            let r = client.get(format!("http://{upstream}/price/AAPL")).send().await.ok()?;
            if r.status() != 200 {
                return None; // one of its deliberate 503s
            }
            r.json().await.ok()
        })
        .await;
    assert_eq!(quote["ticker"], "AAPL");

    // Stopping ends every part cleanly and reports what happened.
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(60), done_rx)
        .await
        .expect("stops within 60 s")
        .unwrap()
        .expect("a clean stop");
    let app = report.app.expect("the demo app ran");
    assert!(app.hits > 0 && app.misses > 0, "{report}");
    assert!(report.totals.warms > 0.0, "{report}");
    assert!(report.upstream.is_some_and(|(ok, _)| ok > 0), "{report}");
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let cache = temp_dir("taken");
    let args = up_args(&[
        "--port-base",
        "0",
        "--warmer-listen",
        &format!("127.0.0.1:{port}"),
        "--cache",
        cache.to_str().unwrap(),
    ]);
    let err = up::run(args, CancellationToken::new(), |_| {}).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("warmer") && msg.contains(&port), "{msg}");
}

async fn start_upstream(
    behaviour: UpstreamBehaviour,
) -> (String, Arc<UpstreamCounters>, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let counters = Arc::new(UpstreamCounters::default());
    let stop = CancellationToken::new();
    tokio::spawn(demo::serve_upstream(listener, behaviour, counters.clone(), stop.clone()));
    (base, counters, stop)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_upstream_answers_plausible_json_after_a_delay() {
    let calm = UpstreamBehaviour { error_rate: 0.0, ..UpstreamBehaviour::default() };
    let (base, counters, stop) = start_upstream(calm).await;
    let client = http();
    for (module, field) in [
        ("price", "price"),
        ("chart", "points"),
        ("news", "items"),
        ("fundamentals", "market_cap"),
        ("options", "calls"),
    ] {
        let started = Instant::now();
        let r = client.get(format!("{base}/{module}/BRK.B")).send().await.unwrap();
        let took = started.elapsed();
        assert_eq!(r.status(), 200, "{module}");
        assert!(
            took >= Duration::from_millis(20),
            "{module} answered in {took:?}, faster than a data API"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["ticker"], "BRK.B", "{module}: {body}");
        assert!(!body[field].is_null(), "{module} has no {field}: {body}");
    }
    // A ticker keeps its price level from one answer to the next (within the wiggle).
    let price = |b: Value| b["price"].as_f64().unwrap();
    let a =
        price(client.get(format!("{base}/price/NVDA")).send().await.unwrap().json().await.unwrap());
    let b =
        price(client.get(format!("{base}/price/NVDA")).send().await.unwrap().json().await.unwrap());
    assert!((a - b).abs() <= 0.011 * a, "{a} vs {b}");
    assert_eq!(client.get(format!("{base}/price/not;valid")).send().await.unwrap().status(), 404);
    assert_eq!(counters.ok.load(std::sync::atomic::Ordering::Relaxed), 7);
    stop.cancel();

    // A failing data API answers 503, which the warmer retries.
    let (base, counters, stop) =
        start_upstream(UpstreamBehaviour { error_rate: 1.0, ..UpstreamBehaviour::default() }).await;
    let r = client.get(format!("{base}/price/AAPL")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(counters.failed.load(std::sync::atomic::Ordering::Relaxed), 1);
    stop.cancel();
}

/// Reads `child`'s stdout or stderr lines until one satisfies `pred`; panics after `deadline`.
fn read_until(
    reader: &mut impl BufRead,
    deadline: Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let end = Instant::now() + deadline;
    let mut seen = String::new();
    loop {
        assert!(Instant::now() < end, "no {what} within {deadline:?}:\n{seen}");
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("output ended before {what}:\n{seen}");
        }
        seen.push_str(&line);
        if pred(&line) {
            return line;
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("still running {deadline:?} after the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_binary_shows_progress_and_ctrl_c_stops_it_cleanly() {
    let cache = temp_dir("binary");
    let mut child = std::process::Command::new(bin())
        .args([
            "up",
            "--demo",
            "--port-base",
            "0",
            "--speed",
            "5",
            "--duration",
            "5m",
            "--cache",
            cache.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    read_until(&mut out, Duration::from_secs(90), "the warmer's address", |l| {
        l.trim_start().starts_with("warmer")
    });
    // Not a terminal: one plain line per second, with every figure.
    let line = read_until(&mut out, Duration::from_secs(30), "a progress line", |l| {
        l.starts_with("[ 0:0")
    });
    for part in ["events/s", "hit rate", "warms", "useful warms", "predictions"] {
        assert!(line.contains(part), "{part} missing from {line:?}");
    }
    read_until(&mut out, Duration::from_secs(30), "a later progress line", |l| {
        l.starts_with("[ 0:03]")
    });
    signal(&child, "-INT");
    let rest = {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).unwrap();
        s
    };
    let status = wait_with_deadline(&mut child, Duration::from_secs(60));
    assert!(status.success(), "exit {status:?}:\n{rest}");
    assert!(rest.contains("prefetch up: stopped after"), "{rest}");
    assert!(rest.contains("the demo app asked"), "{rest}");
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn without_demo_it_runs_for_its_duration_and_ends_by_itself() {
    let cache = temp_dir("duration");
    let started = Instant::now();
    let out = std::process::Command::new(bin())
        .args(["up", "--port-base", "0", "--duration", "2s", "--cache", cache.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ingest     http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("Kafka ") && stdout.contains("prefetch up: stopped after"), "{stdout}");
    assert!(!stdout.contains("events/s"), "no progress without --demo: {stdout}");
    assert!(started.elapsed() < Duration::from_secs(90));
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn the_standalone_demo_upstream_serves_until_sigterm() {
    let mut child = std::process::Command::new(bin())
        .args(["demo-upstream", "--listen", "127.0.0.1:0", "--error-rate", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let line = read_until(&mut err, Duration::from_secs(30), "the listening address", |l| {
        l.contains("listening on")
    });
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("an address")
        .to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body: Value = rt.block_on(async {
        http().get(format!("http://{addr}/news/TSLA")).send().await.unwrap().json().await.unwrap()
    });
    assert_eq!(body["ticker"], "TSLA");
    assert!(body["items"].as_array().is_some_and(|a| !a.is_empty()), "{body}");
    signal(&child, "-TERM");
    assert!(wait_with_deadline(&mut child, Duration::from_secs(10)).success());
}

/// A stand-in for the warmer's read-through: records each request and answers HIT for every
/// second one.
#[derive(Default)]
struct FakeCache {
    asked: Mutex<Vec<(String, String, Option<String>)>>,
}

async fn fake_read_through(
    State(s): State<Arc<FakeCache>>,
    Path((module, ticker)): Path<(String, String)>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let client = headers.get("x-client-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let n = {
        let mut asked = s.asked.lock().unwrap();
        asked.push((module, ticker, client));
        asked.len()
    };
    let mut r = Json(json!({"ok": true})).into_response();
    r.headers_mut()
        .insert("x-cache", HeaderValue::from_static(if n % 2 == 0 { "HIT" } else { "MISS" }));
    r
}

#[test]
fn demo_traffic_via_cache_asks_the_read_through_in_real_time() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = Arc::new(FakeCache::default());
    let router = Router::new()
        .route("/v1/cache/{module}/{ticker}", get(fake_read_through))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(fake.clone());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, router).await });

    let started = Instant::now();
    let out = std::process::Command::new(bin())
        .args([
            "demo-traffic",
            "--via-cache",
            &format!("http://{addr}"),
            "--start",
            "2026-03-10T10:00:00-04:00",
            "--duration",
            "3s",
        ])
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Real time: three seconds of trace take about three seconds.
    assert!(took >= Duration::from_millis(2500), "took {took:?}");
    let asked = fake.asked.lock().unwrap().clone();
    assert!(asked.len() > 20, "{} queries: {stderr}", asked.len());
    assert!(
        asked
            .iter()
            .all(|(m, t, c)| demo::MODULES.contains(&m.as_str()) && !t.is_empty() && c.is_some()),
        "{asked:?}"
    );
    let hits = asked.len() / 2;
    let expected = format!("cache: {hits} hits, {} misses", asked.len() - hits);
    assert!(stderr.contains(&expected), "want {expected:?} in {stderr}");
    assert!(stderr.contains(&format!("demo-traffic: {} events", asked.len())), "{stderr}");

    // Nothing listening: a clear error, not a silent run.
    let out = std::process::Command::new(bin())
        .args(["demo-traffic", "--via-cache", "http://127.0.0.1:1", "--duration", "1s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every flag of `prefetch <command>` is listed with an explanation on its line or the next.
fn assert_help_explains(command: &str, flags: &[&str]) {
    let out = std::process::Command::new(bin()).args([command, "--help"]).output().unwrap();
    assert!(out.status.success(), "{command} --help failed");
    let help = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = help.lines().collect();
    for flag in flags {
        let at = lines
            .iter()
            .position(|l| l.trim_start().split([' ', '=', ',']).any(|w| w == *flag))
            .unwrap_or_else(|| panic!("{flag} is not in `{command} --help`:\n{help}"));
        let rest: Vec<&str> = lines[at]
            .split_whitespace()
            .skip_while(|w| w.starts_with('-'))
            .skip_while(|w| w.starts_with('<'))
            .collect();
        let explanation =
            if rest.is_empty() { lines[at + 1].trim().to_owned() } else { rest.join(" ") };
        assert!(
            !explanation.starts_with('-') && explanation.split_whitespace().count() >= 4,
            "{flag} is not explained:\n{help}"
        );
    }
}

#[test]
fn help_explains_every_flag() {
    assert_help_explains(
        "up",
        &[
            "--demo",
            "--speed",
            "--no-warming",
            "--duration",
            "--brokers",
            "--kafka-option",
            "--cache",
            "--port-base",
            "--ingest-listen",
            "--analyzer-listen",
            "--warmer-listen",
            "--upstream-listen",
            "--upstream-url",
            "--rate",
            "--tickers",
            "--seed",
            "--log-level",
        ],
    );
    assert_help_explains(
        "demo-upstream",
        &["--listen", "--min-delay", "--max-delay", "--error-rate", "--upstream-seed"],
    );
    assert_help_explains("demo-traffic", &["--via-cache"]);
}
