//! The analyzer through Kafka: events in, predictions out; event-driven sequence predictions;
//! poison messages to the dead-letter topic while good events keep flowing; a restart that
//! keeps its predictions.

use chrono::{DateTime, Duration as CDuration, Utc};
use prefetch_e2e::*;
use serde_json::{json, Value};
use std::time::Duration;

fn config(kafka: &TestKafka, test: &str) -> analyzer::service::Config {
    let mut cfg = analyzer::service::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics(test);
    cfg.group_id = format!("{}analyzer", cfg.topics.query_events_topic);
    cfg.tick_interval = Duration::from_millis(500);
    // Uniform hour weights: these scenarios use events of the last hour, and must not depend on
    // the time of day they run at (the weights themselves are unit-tested on fixed timestamps).
    cfg.hour_weights = Some(String::new());
    // These scenarios are about what the service does with the model's predictions (publish,
    // rebuild, hand over); refresh-ahead, which holds back keys whose cached copy is fresh, has
    // its own scenario below.
    cfg.refresh_ahead = false;
    cfg.stats_interval = Duration::from_secs(1);
    kafka.prepare(&cfg.topics);
    kafka.prepare_topic(&cfg.state_topic(), 3);
    cfg
}

/// A dashboard polling `(ticker, module)` every 60 s for the hour before `end`.
fn dashboard(ticker: &str, module: &str, end: DateTime<Utc>) -> Vec<Value> {
    (0..60)
        .map(|i| json!({"ticker": ticker, "module": module, "ts": (end - CDuration::seconds(60 * (60 - i))).to_rfc3339(), "client": "dash"}))
        .collect()
}

fn is_prediction_for(v: &Value, ticker: &str, module: &str) -> bool {
    v["ticker"] == ticker && v["module"] == module
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_dashboard_is_predicted_and_served_on_the_admin_api() {
    let kafka = TestKafka::start();
    let cfg = config(&kafka, "an-dash");
    let (events, predictions) =
        (cfg.topics.query_events_topic.clone(), cfg.topics.predictions_topic.clone());
    let stats_topic = cfg.topics.stats_topic.clone();
    kafka.precreate(&events).await;
    produce_json(&kafka.bootstrap(), &events, &dashboard("AAPL", "price", Utc::now())).await;
    let an = spawn_analyzer(cfg).await;

    // A tick may run while only part of the hour has been folded (a lower confidence then);
    // once it is all in, a key polled every 60 s is near-certain within the horizon.
    let got = read_topic_until(&kafka.bootstrap(), &predictions, Duration::from_secs(60), |r| {
        is_prediction_for(&r.value, "AAPL", "price")
            && r.value["confidence"].as_f64().unwrap() >= 0.8
    })
    .await;
    let p = &got.last().unwrap().value;
    assert_eq!(got.last().unwrap().key, "AAPL");
    for field in ["horizon_s", "generated_at", "reason"] {
        assert!(p.get(field).is_some(), "{field} missing: {p}");
    }
    let listed: Value =
        http().get(an.url("/v1/predictions")).send().await.unwrap().json().await.unwrap();
    assert!(
        listed["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| is_prediction_for(v, "AAPL", "price")),
        "{listed}"
    );
    let stats: Value = http().get(an.url("/v1/stats")).send().await.unwrap().json().await.unwrap();
    assert!(stats.to_string().contains("AAPL"), "top tickers name AAPL: {stats}");
    let metrics = http().get(an.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("smart_prefetch_analyzer_events_total{admission=\"on_time\"} 60"),
        "{metrics}"
    );
    // The patterns snapshot also reaches the compacted stats topic, for the front door.
    let snap = read_topic_until(&kafka.bootstrap(), &stats_topic, Duration::from_secs(30), |r| {
        r.value["top_tickers"].to_string().contains("AAPL")
    })
    .await;
    assert!(!snap.last().unwrap().key.is_empty(), "keyed by instance id");
    an.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_sequence_is_predicted_as_soon_as_its_first_step_arrives() {
    let kafka = TestKafka::start();
    let mut cfg = config(&kafka, "an-seq");
    // No tick during the test: whatever is published comes from the event-driven path.
    cfg.tick_interval = Duration::from_secs(3600);
    let (events, predictions) =
        (cfg.topics.query_events_topic.clone(), cfg.topics.predictions_topic.clone());
    let an = spawn_analyzer(cfg).await;
    let start = Utc::now() - CDuration::minutes(50);
    let mut history = Vec::new();
    for s in 0..20 {
        let t = start + CDuration::minutes(2 * s);
        let client = format!("analyst-{s}");
        history.push(
            json!({"ticker": "MSFT", "module": "price", "ts": t.to_rfc3339(), "client": client}),
        );
        history.push(json!({"ticker": "MSFT", "module": "chart", "ts": (t + CDuration::seconds(5)).to_rfc3339(), "client": client}));
    }
    produce_json(&kafka.bootstrap(), &events, &history).await;
    produce_json(&kafka.bootstrap(), &events, &[json!({"ticker": "MSFT", "module": "price", "ts": Utc::now().to_rfc3339(), "client": "new-analyst"})]).await;
    // Early in the history the follow-up is less sure (published from min_confidence, 0.1 by
    // default); once learnt it is predicted with the habit's confidence.
    let got = read_topic_until(&kafka.bootstrap(), &predictions, Duration::from_secs(30), |r| {
        is_prediction_for(&r.value, "MSFT", "chart")
            && r.value["reason"] == "sequence"
            && r.value["confidence"].as_f64().is_some_and(|c| c >= 0.5)
    })
    .await;
    assert!(got.last().unwrap().value["confidence"].as_f64().unwrap() >= 0.5);
    an.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_topic_and_good_events_keep_flowing() {
    let kafka = TestKafka::start();
    let cfg = config(&kafka, "an-dlq");
    let (events, dlq) = (cfg.topics.query_events_topic.clone(), cfg.topics.dlq_topic.clone());
    let an = spawn_analyzer(cfg).await;
    produce_raw(&kafka.bootstrap(), &events, "X", b"this is not json").await;
    produce_raw(&kafka.bootstrap(), &events, "X", br#"{"ticker":"BAD TICKER","module":"price"}"#)
        .await;
    produce_json(&kafka.bootstrap(), &events, &dashboard("GOOD", "price", Utc::now())).await;

    let dead = read_topic(&kafka.bootstrap(), &dlq, 2, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reasons: Vec<&str> = dead.iter().map(|r| r.value["reason"].as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("invalid JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("ticker")), "{reasons:?}");
    for d in &dead {
        assert_eq!(d.value["topic"], events);
        assert!(d.value["partition"].is_i64() && d.value["offset"].is_i64(), "{}", d.value);
    }
    eventually(Duration::from_secs(30), "good events folded after the poison", || async {
        let m = http().get(an.url("/metrics")).send().await.ok()?.text().await.ok()?;
        m.contains("smart_prefetch_analyzer_events_total{admission=\"on_time\"} 60").then_some(())
    })
    .await;
    an.stop().await;
}

/// Events of `ticker:module` the instance holds in its window (`/v1/window`).
async fn window_count(an: &Service, key: &str) -> Option<u64> {
    let v: Value = http().get(an.url("/v1/window")).send().await.ok()?.json().await.ok()?;
    v["keys"]
        .as_array()?
        .iter()
        .find(|k| format!("{}:{}", k[0].as_str().unwrap(), k[1].as_str().unwrap()) == key)
        .and_then(|k| k[2].as_u64())
}

/// Stops an analyzer that folded a dashboard's 60 events, starts another in the same group and
/// checks it holds those 60 events as soon as it is ready, folded nothing twice, and predicts
/// again. With checkpoints the state comes from the one written on shutdown (nothing is
/// replayed); without, from a replay of the topic (`--checkpoint-interval 0s`).
async fn restart_keeps_state(test: &str, checkpoints: bool) {
    let kafka = TestKafka::start();
    let mut cfg = config(&kafka, test);
    if !checkpoints {
        cfg.checkpoint_interval = Duration::ZERO;
    }
    let (events, predictions) =
        (cfg.topics.query_events_topic.clone(), cfg.topics.predictions_topic.clone());
    kafka.precreate(&events).await;
    produce_json(&kafka.bootstrap(), &events, &dashboard("NVDA", "price", Utc::now())).await;
    let an = spawn_analyzer(cfg.clone()).await;
    read_topic_until(&kafka.bootstrap(), &predictions, Duration::from_secs(60), |r| {
        is_prediction_for(&r.value, "NVDA", "price")
    })
    .await;
    assert_eq!(window_count(&an, "NVDA:price").await, Some(60));
    an.stop().await;

    // Same group: the new instance starts at the committed offset, with nothing new to read.
    let before = topic_count(&kafka.bootstrap(), &predictions).await;
    let an = spawn_analyzer(cfg).await;
    // Ready means restored: the state is complete the moment /readyz answers 200.
    assert_eq!(window_count(&an, "NVDA:price").await, Some(60), "state complete when ready");
    let m = an.metrics().await;
    let replayed = if checkpoints { 0 } else { 60 };
    assert!(
        m.contains(&format!("smart_prefetch_analyzer_rebuild_events_total {replayed}\n")),
        "{replayed} events replayed: {m}"
    );
    if checkpoints {
        assert!(m.contains("smart_prefetch_analyzer_restore_duration_seconds_count 3"), "{m}");
    }
    let listed_url = an.url("/v1/predictions");
    eventually(Duration::from_secs(30), "the restarted instance predicting NVDA", || async {
        let v: Value = http().get(&listed_url).send().await.ok()?.json().await.ok()?;
        v["predictions"]
            .as_array()?
            .iter()
            .any(|p| is_prediction_for(p, "NVDA", "price"))
            .then_some(())
    })
    .await;
    assert!(
        topic_count(&kafka.bootstrap(), &predictions).await > before,
        "predictions resumed after the restart"
    );
    let m = an.metrics().await;
    assert!(
        m.contains("smart_prefetch_analyzer_events_total{admission=\"on_time\"} 0"),
        "nothing re-folded as new: {m}"
    );
    an.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_state_from_its_checkpoint_and_keeps_predicting() {
    restart_keeps_state("an-restart-cp", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_checkpoints_a_restart_rebuilds_state_from_the_topic() {
    restart_keeps_state("an-restart", false).await;
}

/// Keys `(ticker, module)` an instance currently predicts.
async fn predicted(an: &Service) -> Option<std::collections::BTreeSet<String>> {
    let v: Value = http().get(an.url("/v1/predictions")).send().await.ok()?.json().await.ok()?;
    Some(
        v["predictions"]
            .as_array()?
            .iter()
            .map(|p| format!("{}:{}", p["ticker"].as_str().unwrap(), p["module"].as_str().unwrap()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_hands_keys_over_between_instances() {
    let kafka = TestKafka::start();
    let mut cfg = config(&kafka, "an-rebalance");
    cfg.top_n = Some(100);
    let events = cfg.topics.query_events_topic.clone();
    kafka.precreate(&events).await;
    let tickers =
        ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH", "III", "JJJ", "KKK", "LLL"];
    let now = Utc::now();
    for t in tickers {
        produce_json(&kafka.bootstrap(), &events, &dashboard(t, "price", now)).await;
    }
    let all: std::collections::BTreeSet<String> =
        tickers.iter().map(|t| format!("{t}:price")).collect();

    // The rate budget's share comes from the topic's metadata at each rebalance: a fallback
    // of 7 (what `--topic-partitions` says, unlike the topic) would show as 3/7 or 6/7.
    cfg.kafka.topic_partitions = 7;
    let a = spawn_analyzer(cfg.clone()).await;
    eventually(Duration::from_secs(60), "A predicting every key", || async {
        (predicted(&a).await? == all).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "A earning the whole rate budget", || async {
        (budget_share(&a).await? == 1.0).then_some(())
    })
    .await;

    // B joins the group: the partitions split, each key is predicted by exactly one instance.
    let b = spawn_analyzer(cfg.clone()).await;
    eventually(Duration::from_secs(90), "the keys split between A and B", || async {
        let (pa, pb) = (predicted(&a).await?, predicted(&b).await?);
        let disjoint = pa.is_disjoint(&pb);
        let union: std::collections::BTreeSet<String> = pa.union(&pb).cloned().collect();
        (disjoint && union == all && !pa.is_empty() && !pb.is_empty()).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "A and B sharing the rate budget", || async {
        let (sa, sb) = (budget_share(&a).await?, budget_share(&b).await?);
        (sa > 0.0 && sb > 0.0 && (sa + sb - 1.0).abs() < 1e-9).then_some(())
    })
    .await;

    // B leaves: A takes its partitions back, rebuilds them from the topic, predicts them all.
    b.stop().await;
    eventually(Duration::from_secs(90), "A predicting every key again", || async {
        (predicted(&a).await? == all).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "A earning the whole rate budget again", || async {
        (budget_share(&a).await? == 1.0).then_some(())
    })
    .await;
    a.stop().await;
}

/// The share of a rate budget the instance earns (`/v1/stats`, `budget.share`).
async fn budget_share(an: &Service) -> Option<f64> {
    let stats: Value = http().get(an.url("/v1/stats")).send().await.ok()?.json().await.ok()?;
    stats["budget"]["share"].as_f64()
}

/// Ticks the analyzer has run so far (the tick-duration histogram's count).
async fn ticks(an: &Service) -> u64 {
    let metrics = http().get(an.url("/metrics")).send().await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("smart_prefetch_analyzer_tick_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_warms_a_key_when_its_cached_copy_is_about_to_expire() {
    let kafka = TestKafka::start();
    let mut cfg = config(&kafka, "an-refresh");
    cfg.refresh_ahead = true;
    let (events, predictions) =
        (cfg.topics.query_events_topic.clone(), cfg.topics.predictions_topic.clone());
    kafka.precreate(&events).await;
    // A dashboard polling AAPL/price every 60 s, each query a miss the app fetched: the last
    // copy was fetched at `end - 60 s` and lives for the price TTL (60 s), until `end`.
    // Event time is kept to the millisecond the topic carries, so `end` is too.
    let end = chrono::SubsecRound::trunc_subsecs(Utc::now(), 3);
    produce_json(&kafka.bootstrap(), &events, &dashboard("AAPL", "price", end)).await;
    let an = spawn_analyzer(cfg).await;
    let folded = eventually(Duration::from_secs(60), "the hour folded", || async {
        let listed: Value =
            http().get(an.url("/v1/predictions")).send().await.ok()?.json().await.ok()?;
        (listed["watermark"].as_str()?
            == (end - CDuration::seconds(60)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .then_some(())
    });
    folded.await;
    // Ticks at that event time find the copy fresh: nothing to warm.
    let before = ticks(&an).await;
    eventually(Duration::from_secs(30), "three more ticks", || async {
        (ticks(&an).await >= before + 3).then_some(())
    })
    .await;
    let listed: Value =
        http().get(an.url("/v1/predictions")).send().await.unwrap().json().await.unwrap();
    assert!(
        !listed["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| is_prediction_for(v, "AAPL", "price")),
        "fresh copy predicted: {listed}"
    );

    // Event time moves past the copy's expiry (another key's query): the dashboard key is due.
    let clock = end + CDuration::seconds(5);
    produce_json(
        &kafka.bootstrap(),
        &events,
        &[json!({"ticker": "SPY", "module": "quote", "ts": clock.to_rfc3339(), "hit": true})],
    )
    .await;
    let got = read_topic_until(&kafka.bootstrap(), &predictions, Duration::from_secs(60), |r| {
        is_prediction_for(&r.value, "AAPL", "price")
    })
    .await;
    let aapl: Vec<&Value> =
        got.iter().map(|r| &r.value).filter(|v| is_prediction_for(v, "AAPL", "price")).collect();
    for p in &aapl {
        let at = DateTime::parse_from_rfc3339(p["generated_at"].as_str().unwrap()).unwrap();
        assert!(at >= clock - CDuration::seconds(1), "published while its copy was fresh: {p}");
    }
    assert!(aapl[0]["confidence"].as_f64().unwrap() >= 0.5, "{}", aapl[0]);
    an.stop().await;
}
