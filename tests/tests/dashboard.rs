//! The Grafana dashboard against the real pipeline: ingest, analyzer and warmer run in-process
//! on port 0 against the broker with a local upstream, real query traffic flows (recorded hits
//! and misses, a polling dashboard the analyzer predicts and the warmer warms, read-through
//! requests), a real Prometheus server (Debian's binary) scrapes the three services with the
//! production scrape jobs and alert rules, and EVERY PromQL expression of
//! deploy/grafana/dashboards/smart-prefetch.json must return a finite value. The alert rules
//! must evaluate without error against the same data, and each exposition pass
//! `promtool check metrics`.

use chrono::{Duration as CDuration, Utc};
use prefetch_e2e::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Prometheus's scrape interval here.
const SCRAPE_S: u64 = 1;
/// `$__interval` as Grafana derives it for a view of a few minutes.
const INTERVAL_S: u64 = 5;

/// Every query of the dashboard as (panel title, expression), with Grafana's interval
/// variables replaced the way Grafana replaces them for this scrape interval:
/// `$__rate_interval = max($__interval + scrape interval, 4 × scrape interval)`.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_path("deploy/grafana/dashboards/smart-prefetch.json"))
        .unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let rate_interval = (INTERVAL_S + SCRAPE_S).max(4 * SCRAPE_S);
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", &format!("{rate_interval}s"))
                .replace("$__interval", &format!("{INTERVAL_S}s"));
            assert!(
                !expr.contains('$'),
                "panel {}: a variable this test does not know how to fill: {expr}",
                p["title"]
            );
            out.push((
                format!("{} [{}]", p["title"].as_str().unwrap(), t["refId"].as_str().unwrap()),
                expr,
            ));
        }
    }
    assert!(out.len() >= 20, "{} dashboard queries", out.len());
    out
}

/// The production scrape configuration with the jobs pointed at the services under test, a
/// 1 s interval, and the production alert rules.
fn prometheus_config(targets: &BTreeMap<&str, std::net::SocketAddr>) -> String {
    let text = std::fs::read_to_string(repo_path("deploy/prometheus/prometheus.yml")).unwrap();
    let mut cfg: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    cfg["global"]["scrape_interval"] = format!("{SCRAPE_S}s").into();
    cfg["global"]["evaluation_interval"] = format!("{SCRAPE_S}s").into();
    cfg["rule_files"] = serde_yaml::Value::Sequence(vec![repo_path("deploy/prometheus/rules.yml")
        .display()
        .to_string()
        .into()]);
    let jobs = cfg["scrape_configs"].as_sequence_mut().unwrap();
    jobs.retain(|j| j["job_name"] != "prometheus");
    for job in jobs.iter_mut() {
        let name = job["job_name"].as_str().unwrap().to_owned();
        let addr = targets
            .get(name.as_str())
            .unwrap_or_else(|| panic!("production scrape job {name} has no service under test"));
        job["static_configs"] =
            serde_yaml::from_str(&format!("[{{targets: ['{addr}']}}]")).unwrap();
    }
    assert_eq!(jobs.len(), targets.len(), "a production scrape job per service");
    serde_yaml::to_string(&cfg).unwrap()
}

/// A local upstream data API answering every key with a small JSON body.
async fn upstream() -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        axum::Json(json!({"path": uri.path(), "price": 1.0}))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The app's recorded queries: two hits in three.
const HITS: [bool; 3] = [true, true, false];

/// NDJSON of a dashboard polling each of `keys` every 60 s for the hour before now: what makes
/// the analyzer confident about them at once.
fn polled_history(keys: &[(&str, &str)]) -> String {
    let now = Utc::now();
    let mut lines = Vec::new();
    for (ticker, module) in keys {
        for i in 0..60 {
            let ts = now - CDuration::seconds(60 * (60 - i));
            lines.push(json!({"ticker": ticker, "module": module, "ts": ts.to_rfc3339(), "client": "dash", "hit": false}).to_string());
        }
    }
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_query_returns_data_from_the_running_pipeline() {
    let queries = dashboard_queries();
    if ci_tool("prometheus", "prometheus").is_none() {
        return;
    }
    let kafka = TestKafka::start();
    let topics = unique_topics("dash");
    kafka.prepare(&topics);
    let up = upstream().await;
    let cache_dir =
        std::env::temp_dir().join(format!("smart-prefetch-dash-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache_dir);

    let mut icfg = ingest::Config::new(kafka.bootstrap());
    icfg.kafka = kafka.kafka_args();
    icfg.topics = topics.clone();
    let ingest = spawn_ingest(icfg).await;

    let mut acfg = analyzer::service::Config::new(kafka.bootstrap());
    acfg.kafka = kafka.kafka_args();
    acfg.topics = topics.clone();
    acfg.group_id = format!("{}analyzer", topics.query_events_topic);
    acfg.tick_interval = Duration::from_millis(500);
    // Uniform hour weights: the predictions must not depend on the time of day the test runs.
    acfg.hour_weights = Some(String::new());
    // Every tick publishes the confident keys. With refresh-ahead (the default) the app's own
    // misses below keep these keys' copies fresh, so the analyzer would rightly publish almost
    // nothing and the prediction panels would have nothing to show in two minutes; refresh-ahead
    // has its own scenario in tests/analyzer.rs.
    acfg.refresh_ahead = false;
    let analyzer = spawn_analyzer(acfg).await;

    let mut wcfg = warmer::Config::new(kafka.bootstrap());
    wcfg.kafka = kafka.kafka_args();
    wcfg.topics = topics.clone();
    wcfg.group = format!("{}warmer", topics.predictions_topic);
    wcfg.upstream_url = format!("http://{up}/data/{{module}}/{{ticker}}");
    wcfg.cache = cache_dir.display().to_string();
    wcfg.spread = Duration::ZERO;
    wcfg.holdback = 0.0;
    wcfg.rate_limit = 0.0;
    wcfg.sweep_interval = Duration::from_millis(200);
    let warmer = spawn_service("warmer", |l, t| warmer::serve(wcfg, l, t)).await;

    let targets = BTreeMap::from([
        ("ingest", ingest.addr),
        ("analyzer", analyzer.addr),
        ("warmer", warmer.addr),
    ]);
    let prom = TestPrometheus::start(&prometheus_config(&targets))
        .await
        .expect("prometheus (checked above)");
    eventually(
        Duration::from_secs(60),
        "prometheus scraping all three services (sum(up) == 3)",
        || async { (prom.value("sum(up)").await == Some(3.0)).then_some(()) },
    )
    .await;

    // An hour of a polling dashboard, so the analyzer predicts those keys with confidence.
    let keys = [("AAPL", "price"), ("MSFT", "price"), ("NVDA", "chart")];
    let r = http()
        .post(ingest.url("/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(polled_history(&keys))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // Live traffic until every query has answered: the app's queries of the predicted keys
    // (hits and misses, recorded through ingest), and read-through requests to the warmer
    // (a miss for each new key, then hits).
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = {
        let (stop, ingest_url, warmer_url) =
            (stop.clone(), ingest.url("/v1/events"), warmer.url("/v1/cache"));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let batch: Vec<Value> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, (t, m))| json!({"ticker": t, "module": m, "hit": (HITS[(n as usize + i) % HITS.len()]), "client": "app"}))
                    .collect();
                let r =
                    http().post(&ingest_url).json(&batch).send().await.expect("POST /v1/events");
                assert_eq!(r.status(), 200);
                let r = http()
                    .get(format!("{warmer_url}/news/R{}", n / 4))
                    .send()
                    .await
                    .expect("GET read-through");
                assert_eq!(r.status(), 200);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // Each expression must yield a finite value at least once while the traffic flows; an
    // expression Prometheus refuses fails at once.
    let mut pending: BTreeMap<String, String> = queries.into_iter().collect();
    let end = Instant::now() + Duration::from_secs(120);
    while !pending.is_empty() && Instant::now() < end {
        let mut done = Vec::new();
        for (name, expr) in &pending {
            match prom.query(expr).await {
                Ok(result) if !finite_values(&result).is_empty() => done.push(name.clone()),
                Ok(_) => {}
                Err(e) => panic!("{name}: Prometheus refuses {expr}: {e}"),
            }
        }
        for d in done {
            pending.remove(&d);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if traffic.is_finished() {
        panic!("the traffic stopped early: {:?}", traffic.await);
    }
    let log = prom.log();
    let log_tail: Vec<&str> = log.lines().rev().take(20).collect();
    assert!(pending.is_empty(), "dashboard queries without data after 120 s of traffic:\n{pending:#?}\nprometheus log (last lines, newest first):\n{}", log_tail.join("\n"));

    // What Prometheus scraped passes its own lint, histograms filled by the traffic included.
    for svc in [&ingest, &analyzer, &warmer] {
        promtool_check_metrics(&svc.metrics().await);
    }

    // The alert rules evaluate against the same series without error.
    let rules: Value = http()
        .get(format!("{}/api/v1/rules", prom.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rules: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let alerts = std::fs::read_to_string(repo_path("deploy/prometheus/rules.yml"))
        .unwrap()
        .matches("- alert:")
        .count();
    assert_eq!(rules.len(), alerts, "the production alert rules are loaded");
    for r in rules {
        assert_eq!(r["health"], "ok", "alert {} does not evaluate: {}", r["name"], r["lastError"]);
    }

    stop.cancel();
    traffic.await.unwrap();
    drop(prom);
    warmer.stop().await;
    analyzer.stop().await;
    ingest.stop().await;
    let _ = std::fs::remove_dir_all(&cache_dir);
}
