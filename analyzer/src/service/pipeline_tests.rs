//! The consume loop against a real broker (or the MockCluster): shutdown and budget share.

use super::rebalance::budget_share;
use crate::service::{serve, Config};
use prefetch_testkit::{http, produce_json, topic_count, unique_topics, TestKafka};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[test]
fn a_rate_budget_share_is_the_partitions_owned_over_the_topics() {
    assert_eq!(budget_share(4, 12), 4.0 / 12.0);
    assert_eq!(budget_share(12, 12), 1.0);
    assert_eq!(budget_share(0, 12), 0.0, "owning nothing, earning nothing");
    // Metadata that lags an assignment (partitions just added) never gives more than all.
    assert_eq!(budget_share(3, 2), 1.0);
    assert_eq!(budget_share(0, 0), 0.0);
}

/// A shutdown the moment the last event is counted as folded: the predictions it caused may
/// still be lingering in the fold's producer. They must be delivered, not purged, and every
/// offset committed — at-least-once without duplicates on a clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_right_after_the_fold_delivers_what_it_caused_and_commits_everything() {
    let kafka = TestKafka::start();
    let mut cfg = Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    // Predictions wait a second in the producer, so the stop below comes while they do.
    cfg.kafka.options.push("linger.ms=1000".into());
    cfg.topics = unique_topics("an-pipeline-shutdown");
    cfg.group_id = format!("{}analyzer", cfg.topics.query_events_topic);
    cfg.tick_interval = Duration::from_secs(3600);
    cfg.stats_interval = Duration::from_secs(3600);
    // Every likely follow-up is published (refresh-ahead would hold back follow-ups of keys
    // whose copies these misses keep fresh, and this scenario needs produced messages).
    cfg.refresh_ahead = false;
    kafka.prepare(&cfg.topics);
    kafka.prepare_topic(&cfg.state_topic(), 3);
    kafka.precreate(&cfg.topics.query_events_topic).await;
    // Twenty clients each walk the same ten tickers in order, a second apart: from the
    // second client on, every step predicts the next one.
    let start = chrono::Utc::now() - chrono::Duration::minutes(10);
    let events: Vec<serde_json::Value> = (0..20)
        .flat_map(|c| {
            (0..10).map(move |t| {
                let ts = start + chrono::Duration::seconds(c * 10 + t);
                serde_json::json!({"ticker": format!("T{t}"), "module": "price", "ts": ts.to_rfc3339(), "client": format!("c{c}")})
            })
        })
        .collect();
    produce_json(&kafka.bootstrap(), &cfg.topics.query_events_topic, &events).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(cfg.clone(), listener, shutdown.clone()));
    let count = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let published = loop {
        assert!(
            Instant::now() < deadline,
            "the analyzer did not fold {} events in time",
            events.len()
        );
        let text = match http().get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if count(&text, "smart_prefetch_analyzer_events_total{") as usize >= events.len() {
            break count(&text, "smart_prefetch_analyzer_predictions_total{");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    shutdown.cancel();
    task.await.unwrap().expect("a clean stop, every delivery acknowledged");
    assert!(published > 0.0, "the scenario publishes event-driven predictions");
    assert!(
        topic_count(&kafka.bootstrap(), &cfg.topics.predictions_topic).await as f64 >= published,
        "every prediction counted as published is on the topic"
    );

    let group: BaseConsumer = cfg.kafka.consumer_config(&cfg.group_id).unwrap().create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition(&cfg.topics.query_events_topic, p);
    }
    let committed = group.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    let total: i64 =
        committed.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o > 0).sum();
    assert_eq!(total, events.len() as i64, "every folded offset committed: {committed:?}");
}
