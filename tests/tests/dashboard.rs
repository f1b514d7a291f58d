//! The Grafana dashboard against the real pipeline: ingest, analyzer and warmer run in-process
//! on port 0 against the broker with a local upstream, real query traffic flows (recorded hits
//! and misses, a polling dashboard the analyzer predicts and the warmer warms, read-through
//! requests), a real Prometheus server (Debian's binary) scrapes the three services with the
//! production scrape jobs and alert rules, and EVERY PromQL expression of
//! deploy/grafana/dashboards/smart-prefetch.json must return a finite value. The alert rules
//! must evaluate without error against the same data, and each exposition pass
//! `promtool check metrics`. The dashboard's template variables (instance, module) list the
//! running services and the modules queried. Without Prometheus, the dashboard file is checked
//! on its own: every query filters by the variables and no panel shows a count in seconds.

use chrono::{Duration as CDuration, Utc};
use prefetch_e2e::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Prometheus's scrape interval here.
const SCRAPE_S: u64 = 1;
/// `$__interval` as Grafana derives it for a view of a few minutes.
const INTERVAL_S: u64 = 5;

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo_path("deploy/grafana/dashboards/smart-prefetch.json"))
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every query of the dashboard as (panel title, expression), with Grafana's interval
/// variables replaced the way Grafana replaces them for this scrape interval:
/// `$__rate_interval = max($__interval + scrape interval, 4 × scrape interval)`, and the
/// template variables as "All" (their `allValue`, `.*`).
fn dashboard_queries() -> Vec<(String, String)> {
    let dash = dashboard();
    let rate_interval = (INTERVAL_S + SCRAPE_S).max(4 * SCRAPE_S);
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", &format!("{rate_interval}s"))
                .replace("$__interval", &format!("{INTERVAL_S}s"))
                .replace("$instance", ".*")
                .replace("$module", ".*");
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

    // The template variables list what runs: every service's address, every module queried.
    let addr = |s: &Service| s.addr.to_string();
    let expected = BTreeMap::from([
        ("instance", vec![addr(&ingest), addr(&analyzer), addr(&warmer)]),
        // The warmer labels modules it has a TTL for by name, any other as `other` (chart).
        ("module", vec!["price".into(), "news".into(), "other".into()]),
    ]);
    for (var, metric, label) in variable_queries() {
        let result = prom.query(&format!("group by ({label}) ({metric})")).await.unwrap();
        let got: Vec<String> =
            result.iter().filter_map(|r| r["metric"][&label].as_str().map(str::to_owned)).collect();
        for want in &expected[var.as_str()] {
            assert!(got.contains(want), "variable {var} lists {got:?}, not {want}");
        }
    }

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

/// The dashboard's query variables as (name, metric, label) of `label_values(metric, label)`.
fn variable_queries() -> Vec<(String, String, String)> {
    let dash = dashboard();
    let mut out = Vec::new();
    for v in dash["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query")
    {
        let def = v["definition"].as_str().unwrap();
        let args =
            def.strip_prefix("label_values(").and_then(|d| d.strip_suffix(')')).unwrap_or_else(
                || panic!("variable {}: {def} is not label_values(metric, label)", v["name"]),
            );
        let (metric, label) = args.split_once(',').unwrap();
        assert_eq!(v["query"]["query"].as_str(), Some(def), "variable {}", v["name"]);
        assert_eq!(v["allValue"], ".*", "variable {}: All matches every value", v["name"]);
        out.push((
            v["name"].as_str().unwrap().to_owned(),
            metric.trim().into(),
            label.trim().into(),
        ));
    }
    let names: Vec<&str> = out.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(names, ["instance", "module"], "the dashboard's query variables");
    out
}

/// Each metric selector of `expr` as (metric name, the text between its braces).
fn selectors(expr: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find(|c: char| c.is_ascii_lowercase()) {
        let tail = &rest[i..];
        let len =
            tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let word = &tail[..len];
        let after = &tail[len..];
        if word.starts_with("smart_prefetch_") || word.starts_with("process_") {
            let labels = after
                .strip_prefix('{')
                .map(|a| a[..a.find('}').expect("closing brace")].to_owned())
                .unwrap_or_default();
            out.push((word.to_owned(), labels));
        }
        rest = after;
    }
    out
}

#[test]
fn every_query_filters_by_the_dashboard_variables() {
    variable_queries();
    // Metrics with a module label: the module variable applies to them.
    const BY_MODULE: [&str; 4] = [
        "smart_prefetch_warmer_queries_total",
        "smart_prefetch_warmer_warms_total",
        "smart_prefetch_warmer_useful_warms_total",
        "smart_prefetch_read_through_seconds",
    ];
    for p in dashboard()["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            let sels = selectors(expr);
            assert!(!sels.is_empty(), "panel {}: no metric in {expr}", p["title"]);
            for (metric, labels) in sels {
                assert!(
                    labels.contains(r#"instance=~"$instance""#),
                    "panel {}: {metric} is not filtered by $instance in {expr}",
                    p["title"]
                );
                if BY_MODULE.iter().any(|m| metric.starts_with(m)) {
                    assert!(
                        labels.contains(r#"module=~"$module""#),
                        "panel {}: {metric} is not filtered by $module in {expr}",
                        p["title"]
                    );
                }
            }
        }
    }
}

#[test]
fn no_panel_shows_a_count_in_seconds_or_bytes() {
    // A panel's unit applies to every query unless an override for that query's refId says
    // otherwise: a query of a `_seconds` metric in a panel of another unit, or of a non-seconds
    // metric in a panel in seconds, needs its own unit.
    let natural = |expr: &str| {
        let sels = selectors(expr);
        let all =
            |suffix: &str| sels.iter().all(|(m, _)| m.contains(suffix) || m.ends_with("_info"));
        if (expr.starts_with("histogram_quantile") && all("_seconds")) || all("_seconds_bucket") {
            Some("s")
        } else if all("_bytes") {
            Some("bytes")
        } else {
            None
        }
    };
    let mut checked = 0;
    for p in dashboard()["panels"].as_array().unwrap().iter().filter(|p| p["type"] == "timeseries")
    {
        let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let overridden =
                p["fieldConfig"]["overrides"].as_array().into_iter().flatten().any(|o| {
                    o["matcher"]["id"] == "byFrameRefID"
                        && o["matcher"]["options"] == t["refId"]
                        && o["properties"].as_array().unwrap().iter().any(|pr| pr["id"] == "unit")
                });
            let shown = if overridden { "(override)" } else { unit };
            match natural(expr) {
                Some(u) => assert!(
                    shown == u || overridden,
                    "panel {}: {expr} is in {u} but shown in {shown}",
                    p["title"]
                ),
                None => assert!(
                    !matches!(shown, "s" | "bytes"),
                    "panel {}: {expr} is not in {shown} but shown so",
                    p["title"]
                ),
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "{checked} queries checked");
}

#[test]
fn selectors_are_found_with_their_labels() {
    assert_eq!(
        selectors(r#"sum(rate(smart_prefetch_x_total{a="b"}[5m])) / process_open_fds"#),
        vec![
            ("smart_prefetch_x_total".to_owned(), r#"a="b""#.to_owned()),
            ("process_open_fds".to_owned(), String::new())
        ]
    );
}
