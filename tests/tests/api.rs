//! The original HTTP API end to end: ingest answers every action from the topics and the
//! warmer's admin API, and a config change is seen in what the analyzer and the warmer do.

use chrono::{Duration as CDuration, Utc};
use prefetch_e2e::*;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A dashboard polling `(ticker, module)` every 60 s for the last hour; every `hit_every`-th
/// query was a cache hit for the app.
fn dashboard(ticker: &str, module: &str, hit_every: usize) -> Vec<Value> {
    let end = Utc::now();
    (0..60)
        .map(|i| {
            let ts = end - CDuration::seconds(60 * (60 - i as i64));
            json!({"ticker": ticker, "module": module, "ts": ts.to_rfc3339(), "client": format!("dash-{ticker}"), "hit": i % hit_every == 0})
        })
        .collect()
}

/// One query of another key, a little after the dashboards' last: it moves the analyzer's
/// event-time watermark past the moment their cached copies (60 s price TTL) expire, so
/// refresh-ahead finds them due for a warm.
fn clock() -> Value {
    json!({"ticker": "SPY", "module": "quote", "ts": (Utc::now() + CDuration::seconds(5)).to_rfc3339(), "hit": true})
}

/// Posts `events`, waits until the analyzer has folded them all, then posts [`clock`]: were
/// they in one batch, the clock's partition could be folded first and the history would arrive
/// past the late bound.
async fn post_history_then_clock(stack: &Stack, events: &[Value]) {
    post_events(stack, events).await;
    let n = events.len() as u64;
    eventually(WAIT, "the analyzer folding the history", || async {
        let text =
            http().get(stack.analyzer.url("/metrics")).send().await.ok()?.text().await.ok()?;
        let folded: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("smart_prefetch_analyzer_events_total{admission=\"on_time\"} ")
            })?
            .trim()
            .parse()
            .ok()?;
        (folded >= n).then_some(())
    })
    .await;
    post_events(stack, &[clock()]).await;
}

async fn post_events(stack: &Stack, events: &[Value]) {
    let r = http().post(stack.ingest.url("/v1/events")).json(events).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

async fn get(url: &str) -> (u16, Value) {
    let r = http().get(url).send().await.expect("request");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn post_json(url: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = http().post(url).header(CONTENT_TYPE, "application/json").body(body.to_owned());
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let r = req.send().await.expect("request");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn keys(preds: &Value) -> Vec<String> {
    preds
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}/{}", p["ticker"].as_str().unwrap(), p["module"].as_str().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_original_action_answers_from_the_pipeline() {
    let kafka = TestKafka::start();
    let stack =
        spawn_stack(&kafka, "api-actions", StackOptions { token: Some("s3cret".into()) }).await;
    // 60 AAPL/price queries, every other one a hit; 5 MSFT/news misses; one SPY/quote hit.
    let mut events = dashboard("AAPL", "price", 2);
    events.extend(dashboard("MSFT", "news", 1000).into_iter().take(5).map(|mut e| {
        e["hit"] = json!(false);
        e
    }));
    post_history_then_clock(&stack, &events).await;

    let status = eventually(WAIT, "status counting all 66 queries", || async {
        let (code, s) = get(&stack.api("action=status")).await;
        (code == 200 && s["total_queries"] == 66).then_some(s)
    })
    .await;
    assert_eq!(
        (status["cache_hits"].as_u64(), status["cache_misses"].as_u64()),
        (Some(31), Some(35))
    );
    assert!((status["hit_rate"].as_f64().unwrap() - 31.0 / 66.0).abs() < 1e-9, "{status}");
    assert_eq!(status["enabled"], true);
    assert_eq!(
        status["learning_stage"]["stage"], "Good",
        "65 queries is the original's 50-200 stage"
    );
    assert_eq!(status["config"]["top_n"], 10);
    for field in ["cached_items", "cache_size_mb"] {
        assert!(status[field].is_number(), "{field} missing: {status}");
    }
    assert!(
        !status["hints"].to_string().contains("below 40%"),
        "a hit rate of 47% needs no advice: {status}"
    );

    let preds = eventually(WAIT, "AAPL/price among the predictions", || async {
        let (_, p) = get(&stack.api("action=predictions")).await;
        keys(&p["predictions"]).contains(&"AAPL/price".to_owned()).then_some(p)
    })
    .await;
    let top = &preds["predictions"][0];
    assert!(top["confidence"].as_f64().unwrap() >= 0.5, "{preds}");
    assert!(top["reason"].is_string() && top["horizon_s"] == 300, "{preds}");

    let stats = eventually(WAIT, "stats with AAPL on top", || async {
        let (code, s) = get(&stack.api("action=stats")).await;
        (code == 200 && s["top_tickers"][0]["name"] == "AAPL").then_some(s)
    })
    .await;
    for field in [
        "top_modules",
        "top_pairs",
        "popular_this_hour",
        "popular_this_weekday",
        "top_sequences",
        "current_hour_weight",
    ] {
        assert!(!stats[field].is_null(), "{field} missing: {stats}");
    }
    assert_eq!(stats["top_pairs"][0], json!({"ticker": "AAPL", "module": "price", "count": 60}));

    let (code, cfg) = get(&stack.api("action=config")).await;
    assert_eq!(code, 200);
    assert_eq!(
        (
            cfg["config"]["top_n"].as_u64(),
            cfg["config"]["min_confidence"].as_f64(),
            cfg["stored"].as_bool()
        ),
        (Some(10), Some(0.1), Some(false))
    );
    assert_eq!(cfg["config"]["hour_weights"]["9-11"], 1.5);

    // The mutating actions need the token.
    let (code, body) = get(&stack.api("action=warmup")).await;
    assert_eq!((code, body["error"].as_str()), (401, Some("unauthorized")));
    let (code, _) = post_json(&stack.api("action=config"), Some("wrong"), r#"{"top_n": 3}"#).await;
    assert_eq!(code, 401);
    // The warmer warmed the predicted key by itself: the status shows it cached.
    eventually(WAIT, "the predicted key in the cache", || async {
        let (_, s) = get(&stack.api("action=status")).await;
        (s["cached_items"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    assert!(stack.cache.join("price").join("AAPL.json").exists());

    // An explicit warm-up goes over the latest predictions the warmer read.
    let r = http()
        .post(stack.api("action=warmup"))
        .header(AUTHORIZATION, "Bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let warm: Value = r.json().await.unwrap();
    assert_eq!(warm["status"], "ok");
    assert!(keys(&warm["items"]).contains(&"AAPL/price".to_owned()), "{warm}");
    assert!(warm["cached"].is_number(), "{warm}");

    let (code, body) = get(&stack.api("action=bogus")).await;
    assert_eq!(code, 400);
    assert_eq!(
        body["available"],
        json!(["record", "status", "stats", "warmup", "config", "predictions"])
    );
    let (code, _) = post_json(&stack.api("action=status"), None, "{}").await;
    assert_eq!(code, 405);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_change_is_seen_in_what_the_analyzer_and_the_warmer_do() {
    let kafka = TestKafka::start();
    let stack = spawn_stack(&kafka, "api-config", StackOptions { token: None }).await;
    // A floor the clock's key (about 0.15) stays under, to be the one published after the
    // change, and the dashboards' keys (over 0.5: an hour of one poll a minute, the last copy
    // expired) clear. Every hour weighs 1: the events are stamped with the wall clock, and the
    // default weights (0.3 from 21:00 New York) would move the scores with the hour the test
    // runs at (the dashboards scored 0.49 at 20:30 and 0.23 at 21:15 New York).
    let (code, body) = post_json(
        &stack.api("action=config"),
        None,
        r#"{"min_confidence": 0.3, "hour_weights": {}}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let mut events = dashboard("AAPL", "price", 1000);
    events.extend(dashboard("MSFT", "price", 1000));
    events.extend(dashboard("TSLA", "price", 1000));
    post_history_then_clock(&stack, &events).await;
    let analyzer_predictions =
        || async { get(&stack.analyzer.url("/v1/predictions")).await.1["predictions"].clone() };
    eventually(WAIT, "three keys predicted", || async {
        (keys(&analyzer_predictions().await).len() == 3).then_some(())
    })
    .await;

    // top_n 1: the analyzer's next tick publishes only the best key. A chart TTL of 7 s: the
    // warmer stores the next chart entry for 7 s (its built-in default is 300 s).
    let (code, body) = post_json(
        &stack.api("action=config"),
        None,
        r#"{"top_n": 1, "min_confidence": 0.1, "ttl_s": {"chart": 7}}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["config"]["top_n"].as_u64(), body["config"]["ttl_s"]["chart"].as_u64()),
        (Some(1), Some(7))
    );
    assert_eq!(body["config"]["ttl_s"]["price"], 60, "a partial change keeps the other TTLs");
    // The three keys were warmed (as refresh-ahead assumes of what it publishes); once event time
    // passes their copies' expiry they are due again, and a tick now publishes only the best.
    let later = json!({"ticker": "SPY", "module": "quote", "ts": (Utc::now() + CDuration::seconds(70)).to_rfc3339(), "hit": true});
    post_events(&stack, &[later]).await;
    eventually(WAIT, "the analyzer publishing one key", || async {
        (keys(&analyzer_predictions().await).len() == 1).then_some(())
    })
    .await;

    // Each probe asks for a new chart key: a miss, fetched and stored with the TTL in force.
    let probes = std::sync::atomic::AtomicU32::new(0);
    let entry_ttl = || async {
        let ticker = format!("NV{}", probes.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let r = http()
            .get(stack.warmer.url(&format!("/v1/cache/chart/{ticker}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let path = stack.cache.join("chart").join(format!("{ticker}.json"));
        let entry: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let at =
            |f: &str| chrono::DateTime::parse_from_rfc3339(entry[f].as_str().unwrap()).unwrap();
        (at("expires_at") - at("fetched_at")).num_seconds()
    };
    eventually(WAIT, "the warmer storing chart entries for 7 s", || async {
        (entry_ttl().await == 7).then_some(())
    })
    .await;

    // Disabled: the analyzer publishes nothing and the warmer refuses to warm.
    let (code, _) = post_json(&stack.api("action=config"), None, r#"{"enabled": false}"#).await;
    assert_eq!(code, 200);
    eventually(WAIT, "the analyzer publishing nothing", || async {
        analyzer_predictions().await.as_array().is_some_and(|a| a.is_empty()).then_some(())
    })
    .await;
    eventually(WAIT, "the warmer's warmup disabled", || async {
        let (_, w) = get(&stack.api("action=warmup")).await;
        (w["status"] == "disabled").then_some(())
    })
    .await;
    let (_, status) = get(&stack.api("action=status")).await;
    assert_eq!(status["enabled"], false);
    assert!(status["hints"].to_string().contains("disabled"), "{status}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_refused_by_field_and_the_old_one_stays() {
    let kafka = TestKafka::start();
    let stack = spawn_stack(&kafka, "api-invalid", StackOptions { token: None }).await;
    let url = stack.api("action=config");
    let (code, _) = post_json(&url, None, r#"{"min_confidence": 0.7}"#).await;
    assert_eq!(code, 200);
    for (body, field) in [
        (r#"{"min_confidence": 2}"#, "min_confidence"),
        (r#"{"top_n": 0}"#, "top_n"),
        (r#"{"market_tz": "Mars/Olympus"}"#, "market_tz"),
        (r#"{"hour_weights": {"9-11": 1.5, "10-12": 1.0}}"#, "hour_weights[1]"),
        (r#"{"hour_weights": {"9-25": 1.5}}"#, "hour_weights[0]"),
        (r#"{"ttl_s": {"price": -5}}"#, "config"),
        (r#"{"topn": 5}"#, "topn"),
    ] {
        let (code, answer) = post_json(&url, None, body).await;
        assert_eq!(code, 400, "{body} should be refused: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
        assert_eq!(
            answer["config"]["min_confidence"], 0.7,
            "the refusal shows the config that stays"
        );
    }
    let (code, answer) = post_json(&url, None, "not json").await;
    assert_eq!((code, answer["error"].as_str()), (400, Some("invalid_json")));
    let (_, cfg) = get(&url).await;
    assert_eq!(
        (cfg["config"]["min_confidence"].as_f64(), cfg["stored"].as_bool()),
        (Some(0.7), Some(true))
    );
    // Only the valid change reached the topic.
    let records =
        read_topic(&kafka.bootstrap(), &stack.topics.config_topic, 1, Duration::from_secs(10))
            .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value["min_confidence"], 0.7);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_warmer_or_analyzer_is_named_in_the_answer() {
    let kafka = TestKafka::start();
    let mut cfg = ingest::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics("api-alone");
    kafka.prepare(&cfg.topics);
    cfg.warmer_url = "http://127.0.0.1:1".into();
    let ingest = spawn_ingest(cfg).await;
    let url = |q: &str| ingest.url(&format!("/api/v1/smart-prefetch?{q}"));
    for action in ["status", "warmup"] {
        let (code, body) = get(&url(&format!("action={action}"))).await;
        assert_eq!(
            (code, body["error"].as_str()),
            (502, Some("warmer_unreachable")),
            "{action}: {body}"
        );
        assert!(body["message"].as_str().unwrap().contains("http://127.0.0.1:1"), "{body}");
    }
    // No analyzer has published a snapshot: stats says so; predictions are simply none yet.
    let (code, body) = get(&url("action=stats")).await;
    assert_eq!((code, body["error"].as_str()), (503, Some("no_stats")), "{body}");
    let (code, body) = get(&url("action=predictions")).await;
    assert_eq!((code, body["count"].as_u64()), (200, Some(0)));
    ingest.stop().await;
}
