//! No message can stop a service, and none is lost (issue #12.4), against a real broker:
//! a prediction whose timestamp overflows date arithmetic is dead-lettered by the warmer while
//! the warmer keeps warming and ingest keeps answering, also after both restart; a 1 MB
//! non-JSON event reaches the dead-letter topic (its envelope carries a prefix, the length and
//! the SHA-256 of the payload).

use chrono::Utc;
use prefetch_common::kafka::TopicArgs;
use prefetch_e2e::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const POISON: &str = r#"{"ticker":"AAPL","module":"price","confidence":0.9,"horizon_s":300,"generated_at":"+262142-12-31T23:59:59Z","reason":"burst"}"#;

fn warmer_config(
    kafka: &TestKafka,
    topics: &TopicArgs,
    template: &str,
    cache: &str,
) -> warmer::Config {
    let mut w = warmer::Config::new(kafka.bootstrap());
    w.kafka = kafka.kafka_args();
    w.topics = topics.clone();
    w.group = format!("{}warmer", topics.query_events_topic);
    w.upstream_url = template.to_owned();
    w.cache = cache.to_owned();
    w.spread = Duration::ZERO;
    w.holdback = 0.0;
    w.rate_limit = 0.0;
    w
}

fn ingest_config(kafka: &TestKafka, topics: &TopicArgs, warmer: &Service) -> ingest::Config {
    let mut i = ingest::Config::new(kafka.bootstrap());
    i.kafka = kafka.kafka_args();
    i.topics = topics.clone();
    i.warmer_url = warmer.url("");
    i
}

fn prediction(ticker: &str) -> Value {
    json!({"ticker": ticker, "module": "price", "confidence": 0.9, "horizon_s": 300,
           "generated_at": Utc::now().to_rfc3339(), "reason": "burst"})
}

/// Waits until the warmer has stored a warm (the counter is cumulative: callers warm one new
/// ticker each time after a fresh start), then checks it serves `ticker` from its cache.
async fn warmed(warmer: &Service, ticker: &str) {
    let what = format!("{ticker} warmed");
    eventually(Duration::from_secs(30), &what, || async {
        let m = http().get(warmer.url("/metrics")).send().await.ok()?.text().await.ok()?;
        let stored: f64 = m
            .lines()
            .filter(|l| {
                l.starts_with("smart_prefetch_warmer_warms_total")
                    && l.contains("outcome=\"stored\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        (stored >= 1.0).then_some(())
    })
    .await;
    let r = http().get(warmer.url(&format!("/v1/cache/price/{ticker}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "HIT", "{ticker} was warmed before it was asked for");
}

/// Ingest answers `action=predictions` and `action=status` with 200 and lists `ticker`.
async fn ingest_answers(ingest: &Service, ticker: &str) {
    let url = ingest.url("/api/v1/smart-prefetch?action=predictions");
    let what = format!("ingest lists {ticker}");
    eventually(Duration::from_secs(30), &what, || async {
        let r = http().get(&url).send().await.ok()?;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.ok()?;
        v["predictions"].as_array()?.iter().any(|p| p["ticker"] == ticker).then_some(())
    })
    .await;
    let r = http().get(ingest.url("/api/v1/smart-prefetch?action=status")).send().await.unwrap();
    assert_eq!(r.status(), 200, "action=status answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_prediction_is_dead_lettered_and_warmer_and_ingest_keep_working_after_restarts() {
    let kafka = TestKafka::start();
    let topics = unique_topics("poison-pred");
    kafka.prepare(&topics);
    let upstream = CancellationToken::new();
    let template = spawn_upstream(upstream.clone()).await;
    let cache = std::env::temp_dir().join(format!("prefetch-{}", topics.query_events_topic));
    let cache = cache.display().to_string();
    let bootstrap = kafka.bootstrap();

    let warmer = spawn_warmer(warmer_config(&kafka, &topics, &template, &cache)).await;
    let ingest = spawn_ingest(ingest_config(&kafka, &topics, &warmer)).await;
    produce_raw(&bootstrap, &topics.predictions_topic, "AAPL", POISON.as_bytes()).await;
    produce_json(&bootstrap, &topics.predictions_topic, &[prediction("MSFT")]).await;

    let dead = read_topic(&bootstrap, &topics.dlq_topic, 1, Duration::from_secs(30)).await;
    let d = &dead.first().expect("the poison prediction reaches the DLQ").value;
    assert_eq!(
        (d["stage"].as_str(), d["topic"].as_str()),
        (Some("warmer"), Some(&*topics.predictions_topic))
    );
    assert!(d["reason"].as_str().unwrap().contains("generated_at"), "{d}");
    assert_eq!(d["payload"], POISON);
    assert_eq!(dead[0].key, "AAPL");
    // The message after the poison was warmed: the loop lives on.
    warmed(&warmer, "MSFT").await;
    ingest_answers(&ingest, "MSFT").await;
    assert!(!warmer.handle.is_finished() && !ingest.handle.is_finished());

    // Both restart: the warmer in the same group, ingest re-reading the predictions' tail
    // (poison included). Each stops cleanly, comes back ready, and keeps working.
    ingest.stop().await;
    warmer.stop().await;
    let _ = std::fs::remove_dir_all(&cache);
    // In a new group, so it reads the topic from the start and meets the first poison again
    // (the redelivery that used to kill warming after every restart). The same group would
    // not do in one process: a stopped warmer's consumer is leaked, never dropped (see
    // `warmer::consume::finish`), and keeps its partitions until the process exits.
    let mut again = warmer_config(&kafka, &topics, &template, &cache);
    again.group = format!("{}-restarted", again.group);
    let warmer = spawn_warmer(again).await;
    let ingest = spawn_ingest(ingest_config(&kafka, &topics, &warmer)).await;
    produce_raw(&bootstrap, &topics.predictions_topic, "AAPL", POISON.as_bytes()).await;
    produce_json(&bootstrap, &topics.predictions_topic, &[prediction("NVDA")]).await;
    warmed(&warmer, "NVDA").await;
    ingest_answers(&ingest, "NVDA").await;
    let dead = read_topic(&bootstrap, &topics.dlq_topic, 3, Duration::from_secs(30)).await;
    assert!(dead.len() >= 3, "the redelivered and the second poison are dead-lettered: {dead:?}");
    ingest.stop().await;
    warmer.stop().await;
    upstream.cancel();
    let _ = std::fs::remove_dir_all(&cache);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1mb_poison_event_reaches_the_dead_letter_topic() {
    let kafka = TestKafka::start();
    let mut cfg = analyzer::service::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics("poison-1mb");
    cfg.group_id = format!("{}analyzer", cfg.topics.query_events_topic);
    cfg.tick_interval = Duration::from_millis(500);
    cfg.hour_weights = Some(String::new());
    kafka.prepare(&cfg.topics);
    let (events, dlq) = (cfg.topics.query_events_topic.clone(), cfg.topics.dlq_topic.clone());
    let an = spawn_analyzer(cfg).await;

    // Just under librdkafka's default message.max.bytes (1,000,000), and not UTF-8: as lossy
    // text in a JSON envelope it would be ~2.5 MB, far over the broker's limit.
    let big: Vec<u8> = (0..999_000u32).map(|i| (i % 251) as u8 | 0x80).collect();
    produce_raw(&kafka.bootstrap(), &events, "BIG", &big).await;
    produce_json(&kafka.bootstrap(), &events, &[json!({"ticker": "GOOD", "module": "price"})])
        .await;

    let dead = read_topic(&kafka.bootstrap(), &dlq, 1, Duration::from_secs(30)).await;
    let d = &dead.first().expect("the 1 MB poison event reaches the DLQ").value;
    assert_eq!(d["payload_bytes"], 999_000);
    assert_eq!(d["truncated"], true);
    assert_eq!(d["topic"], events);
    assert!(d["offset"].is_i64() && d["partition"].is_i64(), "{d}");
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&big).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!(d["payload_sha256"], sha);
    eventually(Duration::from_secs(30), "the good event after it is folded", || async {
        let m = http().get(an.url("/metrics")).send().await.ok()?.text().await.ok()?;
        m.contains("smart_prefetch_analyzer_events_total{admission=\"on_time\"} 1").then_some(())
    })
    .await;
    an.stop().await;
}
