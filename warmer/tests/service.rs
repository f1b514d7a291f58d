//! The warmer's entry point against a broker (MockCluster, or real Kafka with KAFKA_BOOTSTRAP),
//! a local upstream, and each cache backend: predictions in, cache entries out; read-through
//! with query events; holdback; budget; schedule and warm-up; status and metrics.

mod common;

use chrono::{Datelike, Utc};
use common::*;
use serde_json::Value;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;
use warmer::policy::{group_of, Group};

/// Offsets the group has committed on `topic`, summed over partitions (= messages done).
async fn committed(bootstrap: &str, group: &str, topic: &str) -> i64 {
    let (b, g, t) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &b)
            .set("group.id", &g)
            .create()
            .unwrap();
        let md = c.fetch_metadata(Some(&t), Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition(&t, p.id());
        }
        let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
        got.elements().iter().map(|e| if let Offset::Offset(n) = e.offset() { n } else { 0 }).sum()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn predictions_become_file_entries_then_a_hit_makes_a_useful_warm() {
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-svc-fs");
    let mut cfg = config(&kafka, "fs", &up, dir.path().to_str().unwrap());
    cfg.min_confidence = 0.5;
    let (topic, group, args) =
        (cfg.topics.predictions_topic.clone(), cfg.group.clone(), cfg.kafka.clone());
    let w = spawn_warmer(cfg).await;

    produce(
        &args,
        &topic,
        &[
            prediction("AAPL", "price", 0.9),
            prediction("^GSPC", "news", 0.8),
            prediction("GOOG", "price", 0.1),
        ],
    )
    .await;
    let aapl = dir.path().join("price/AAPL.json");
    let gspc = dir.path().join("news/^GSPC.json");
    eventually(WAIT, "both warmed entries on disk", || async {
        (aapl.exists() && gspc.exists()).then_some(())
    })
    .await;
    let v: Value = serde_json::from_slice(&std::fs::read(&aapl).unwrap()).unwrap();
    assert_eq!((v["source"].as_str(), v["confidence"].as_f64()), (Some("warm"), Some(0.9)));
    assert_eq!(v["body"]["path"], "/data/price/AAPL");
    let (f, e) = (at(v["fetched_at"].as_str().unwrap()), at(v["expires_at"].as_str().unwrap()));
    assert_eq!((e - f).num_seconds(), 60, "price TTL");
    let text = metric_reaches(
        &w,
        "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"skipped_confidence\"}",
        1.0,
    )
    .await;
    assert_eq!(
        sample(&text, "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"stored\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "smart_prefetch_warmer_prediction_to_cache_seconds_count"), Some(2.0));
    assert_eq!(up.count("/data/price/GOOG"), 0, "below min_confidence: never fetched");
    assert_eq!(up.count("/data/news/%5EGSPC"), 1, "values are URL-encoded");

    // The app asks for the warmed key: a hit, served from the file, counted as a useful warm.
    let (status, cache, body) = get(&w.url("/v1/cache/price/AAPL"), None).await;
    assert_eq!((status, cache.as_deref()), (200, Some("HIT")));
    assert_eq!(body["path"], "/data/price/AAPL");
    assert_eq!(up.count("/data/price/AAPL"), 1, "a hit does not go upstream");
    let text =
        metric_reaches(&w, "smart_prefetch_warmer_useful_warms_total{module=\"price\"}", 1.0).await;
    assert_eq!(sample(&text, "smart_prefetch_warmer_warm_to_first_hit_seconds_count"), Some(1.0));
    get(&w.url("/v1/cache/price/AAPL"), None).await;
    metric_reaches(
        &w,
        "smart_prefetch_warmer_queries_total{module=\"price\",result=\"hit\",group=\"warmed\"}",
        2.0,
    )
    .await;
    assert_eq!(
        sample(&w.metrics().await, "smart_prefetch_warmer_useful_warms_total{module=\"price\"}"),
        Some(1.0),
        "counted once per warm"
    );

    // At-least-once: every prediction's offset is committed once its warm is done.
    w.stop().await;
    assert_eq!(committed(&kafka.bootstrap(), &group, &topic).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn predictions_become_redis_entries_with_ttl() {
    let Some(redis) = TestRedis::start() else { return };
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let cfg = config(&kafka, "redis", &up, &redis.url);
    let (topic, args, prefix) =
        (cfg.topics.predictions_topic.clone(), cfg.kafka.clone(), cfg.redis_prefix.clone());
    let w = spawn_warmer(cfg).await;
    produce(&args, &topic, &[prediction("MSFT", "fundamentals", 0.7)]).await;
    let mut conn = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    let key = format!("{prefix}fundamentals:MSFT");
    let raw: String = eventually(WAIT, "entry in Redis", || {
        let got: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
        async move { got }
    })
    .await;
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["source"], "warm");
    assert_eq!(v["body"]["path"], "/data/fundamentals/MSFT");
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut conn).unwrap();
    assert!((86_390..=86_400).contains(&ttl), "fundamentals TTL is a day: {ttl}");
    let (status, cache, _) = get(&w.url("/v1/cache/fundamentals/msft"), None).await;
    assert_eq!((status, cache.as_deref()), (200, Some("HIT")));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_through_answers_stores_and_publishes_each_query() {
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-svc-rt");
    let cfg = config(&kafka, "rt", &up, dir.path().to_str().unwrap());
    let events_topic = cfg.topics.query_events_topic.clone();
    let w = spawn_warmer(cfg).await;

    let (status, cache, body) = get(&w.url("/v1/cache/price/aapl"), Some("c1")).await;
    assert_eq!((status, cache.as_deref(), body["n"].as_u64()), (200, Some("MISS"), Some(1)));
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("price/AAPL.json")).unwrap())
            .unwrap();
    assert_eq!(v["source"], "demand");
    assert!(v.get("confidence").is_none());
    let (status, cache, body) = get(&w.url("/v1/cache/price/AAPL"), Some("c1")).await;
    assert_eq!(
        (status, cache.as_deref(), body["n"].as_u64()),
        (200, Some("HIT"), Some(1)),
        "the stored body"
    );
    assert_eq!(up.count("/data/price/AAPL"), 1);

    // Bad input: 400 with a JSON error, nothing fetched, nothing published.
    let long_client = "c".repeat(129);
    for (path, client) in [
        ("/v1/cache/price/AA;PL", None),
        ("/v1/cache/pri%20ce/AAPL", None),
        ("/v1/cache/price/AAPL", Some(long_client.as_str())),
    ] {
        let mut req = http().get(w.url(path));
        if let Some(c) = client {
            req = req.header("X-Client-Id", c);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"] == "invalid_key" || e["error"] == "invalid_client", "{e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    // The upstream failing: 502, the cache untouched, and the miss still published.
    up.set(Behaviour { fail_first: 1000, ..Default::default() });
    let (status, _, e) = get(&w.url("/v1/cache/news/IBM"), None).await;
    assert_eq!((status, e["error"].as_str()), (502, Some("upstream_unavailable")));
    assert!(!dir.path().join("news/IBM.json").exists());

    let got = read_topic(&kafka.bootstrap(), &events_topic, 3, WAIT).await;
    assert_eq!(got.len(), 3, "one event per answered query: {got:?}");
    let mut aapl: Vec<_> =
        got.iter().filter(|r| r.key == "AAPL").map(|r| r.value.clone()).collect();
    aapl.sort_by_key(|v| v["ts"].as_str().unwrap().to_owned());
    assert_eq!(
        aapl.iter().map(|v| v["hit"].as_bool().unwrap()).collect::<Vec<_>>(),
        vec![false, true]
    );
    assert!(aapl.iter().all(|v| v["client"] == "c1" && v["module"] == "price"), "{aapl:?}");
    assert!(
        (Utc::now() - at(aapl[0]["ts"].as_str().unwrap())).num_seconds().abs() < 60,
        "ts = now"
    );
    assert_eq!(got.iter().find(|r| r.key == "IBM").unwrap().value["hit"], false);

    // The query consumer counts them; /v1/status and /metrics agree; promtool accepts it.
    let text = metric_reaches(
        &w,
        "smart_prefetch_warmer_queries_total{module=\"price\",result=\"hit\",group=\"warmed\"}",
        1.0,
    )
    .await;
    assert_eq!(
        sample(
            &text,
            "smart_prefetch_warmer_queries_total{module=\"news\",result=\"miss\",group=\"warmed\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "smart_prefetch_warmer_cache_entries"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "smart_prefetch_warmer_upstream_requests_total{source=\"demand\",status=\"5xx\"}"
        ),
        Some(3.0)
    );
    let text = metric_reaches(
        &w,
        "smart_prefetch_warmer_query_events_published_total{outcome=\"ok\"}",
        3.0,
    )
    .await;
    assert!(
        text.contains("smart_prefetch_warmer_upstream_request_duration_seconds_bucket"),
        "{text}"
    );
    promtool_check_metrics(&text);
    let s: Value = http().get(w.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (s["total_queries"].as_u64(), s["cache_hits"].as_u64(), s["cache_misses"].as_u64()),
        (Some(3), Some(1), Some(2)),
        "{s}"
    );
    assert!((s["hit_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!((s["enabled"].as_bool(), s["cached_items"].as_u64()), (Some(true), Some(1)));
    assert!(s["cache_size_mb"].as_f64().unwrap() > 0.0);
    assert_eq!(s["config"]["ttl_seconds"]["price"], 60);
    assert_eq!(http().get(w.url("/healthz")).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(http().get(w.url("/readyz")).send().await.unwrap().status().as_u16(), 200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holdback_keys_are_never_warmed_and_counted_apart() {
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-svc-hb");
    let mut cfg = config(&kafka, "hb", &up, dir.path().to_str().unwrap());
    cfg.holdback = 0.3;
    let (topic, args) = (cfg.topics.predictions_topic.clone(), cfg.kafka.clone());
    let w = spawn_warmer(cfg).await;
    let preds: Vec<_> = (0..40).map(|i| prediction(&format!("HB{i}"), "price", 0.9)).collect();
    let held: Vec<_> = preds
        .iter()
        .filter(|p| group_of(&p.ticker, &p.module, 0.3) == Group::Holdback)
        .map(|p| p.ticker.to_string())
        .collect();
    assert!(
        held.len() >= 4 && held.len() <= 24,
        "the test needs both groups: {} held back",
        held.len()
    );
    produce(&args, &topic, &preds).await;
    let text = metric_reaches(
        &w,
        "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"skipped_holdback\"}",
        held.len() as f64,
    )
    .await;
    let stored =
        sample(&text, "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"stored\"}")
            .unwrap_or(0.0);
    let text = if stored < (40 - held.len()) as f64 {
        metric_reaches(
            &w,
            "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"stored\"}",
            (40 - held.len()) as f64,
        )
        .await
    } else {
        text
    };
    assert!(text.contains("outcome=\"stored\"} "), "{text}");
    for t in &held {
        assert_eq!(up.count(&format!("/data/price/{t}")), 0, "held-back {t} was fetched");
        assert!(!dir.path().join(format!("price/{t}.json")).exists());
    }
    assert_eq!(up.paths().len(), 40 - held.len());
    // A query of a held-back key carries group="holdback", so the lift is visible.
    get(&w.url(&format!("/v1/cache/price/{}", held[0])), None).await;
    metric_reaches(
        &w,
        "smart_prefetch_warmer_queries_total{module=\"price\",result=\"miss\",group=\"holdback\"}",
        1.0,
    )
    .await;
    w.stop().await;
}

/// The analyzer spent its fetch budget on what it published and its cache view assumes every
/// one warmed: a batch read from the topic is warmed whole, whatever `top_n` (20 synchronised
/// refresh predictions against `top_n` 10 once lost half). `top_n` still caps an operator's
/// warm-up, most confident first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_published_batch_is_warmed_whole_and_top_n_caps_only_a_warm_up() {
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-svc-budget");
    let mut cfg = config(&kafka, "budget", &up, dir.path().to_str().unwrap());
    cfg.top_n = 2;
    let (topic, args) = (cfg.topics.predictions_topic.clone(), cfg.kafka.clone());
    // Written before the warmer starts, one ticker (one partition): read as one batch.
    let modules = ["m1", "m2", "m3", "m4", "m5"];
    // Configured modules (a TTL each) keep their own metrics label; others count as `other`.
    // 60 s is shorter than the 300 s horizon: a warm-up later refreshes them.
    cfg.ttls = modules
        .iter()
        .map(|m| (prefetch_common::contract::Module::parse(m).unwrap(), Duration::from_secs(60)))
        .collect();
    let preds: Vec<_> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| prediction("BUD", m, 0.5 + 0.1 * i as f64))
        .collect();
    // On a real broker the topic must exist before the warmer would create it.
    let spec = prefetch_common::kafka::TopicSpec { name: topic.clone(), compacted: false };
    prefetch_common::kafka::ensure_topics(&args, &[spec], WAIT).await.unwrap();
    produce(&args, &topic, &preds).await;
    let w = spawn_warmer(cfg).await;
    for m in modules {
        metric_reaches(
            &w,
            &format!("smart_prefetch_warmer_warms_total{{module=\"{m}\",outcome=\"stored\"}}"),
            1.0,
        )
        .await;
    }
    let text = w.metrics().await;
    for m in modules {
        let dropped = sample(
            &text,
            &format!(
                "smart_prefetch_warmer_warms_total{{module=\"{m}\",outcome=\"dropped_budget\"}}"
            ),
        );
        assert_eq!(dropped.unwrap_or(0.0), 0.0, "{text}");
    }
    let mut paths = up.paths();
    paths.sort();
    assert_eq!(paths, modules.map(|m| format!("/data/{m}/BUD")));

    // An operator's warm-up of the same five: the two most confident.
    let r: Value = http().post(w.url("/v1/warmup")).send().await.unwrap().json().await.unwrap();
    let outcome = |m: &str| {
        r["items"].as_array().unwrap().iter().find(|i| i["module"] == m).unwrap()["outcome"].clone()
    };
    assert_eq!(r["cached"].as_u64(), Some(2), "{r}");
    for (m, want) in [
        ("m1", "dropped_budget"),
        ("m2", "dropped_budget"),
        ("m3", "dropped_budget"),
        ("m4", "stored"),
        ("m5", "stored"),
    ] {
        assert_eq!(outcome(m), want, "{m}: {r}");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn off_hours_and_disabled_fetch_nothing_but_warmup_does() {
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-svc-sched");
    let mut cfg = config(&kafka, "sched", &up, dir.path().to_str().unwrap());
    // Active only on a weekday that is not today in New York.
    let today = Utc::now().with_timezone(&chrono_tz::America::New_York).weekday();
    cfg.active_days = Some(warmer::config::Weekdays(vec![today.succ()]));
    let (topic, group, args) =
        (cfg.topics.predictions_topic.clone(), cfg.group.clone(), cfg.kafka.clone());
    let w = spawn_warmer(cfg).await;
    produce(
        &args,
        &topic,
        &[prediction("OFF", "price", 0.9), prediction("HRS", "fundamentals", 0.9)],
    )
    .await;
    metric_reaches(
        &w,
        "smart_prefetch_warmer_warms_total{module=\"fundamentals\",outcome=\"skipped_off_hours\"}",
        1.0,
    )
    .await;
    metric_reaches(
        &w,
        "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"skipped_off_hours\"}",
        1.0,
    )
    .await;
    assert!(up.paths().is_empty(), "idle outside the schedule");
    eventually(WAIT, "offsets committed while idle", || async {
        (committed(&kafka.bootstrap(), &group, &topic).await == 2).then_some(())
    })
    .await;

    // An operator's warm-up uses the latest predictions, whatever the hour.
    let r: Value = http().post(w.url("/v1/warmup")).send().await.unwrap().json().await.unwrap();
    assert_eq!((r["status"].as_str(), r["cached"].as_u64()), (Some("ok"), Some(2)), "{r}");
    assert_eq!(r["items"].as_array().unwrap().len(), 2);
    assert!(
        dir.path().join("price/OFF.json").exists()
            && dir.path().join("fundamentals/HRS.json").exists()
    );
    // Again: a price entry lives 60 s, less than the 300 s horizon, so it is refreshed; a
    // fundamentals entry lives a day, beyond the horizon, so it is skipped as fresh.
    let r: Value = http().post(w.url("/v1/warmup")).send().await.unwrap().json().await.unwrap();
    let outcome = |m: &str| {
        r["items"].as_array().unwrap().iter().find(|i| i["module"] == m).unwrap()["outcome"].clone()
    };
    assert_eq!(
        (outcome("price"), outcome("fundamentals")),
        ("stored".into(), "skipped_fresh".into()),
        "{r}"
    );
    w.stop().await;

    // Disabled: consumed and committed, nothing fetched.
    let up2 = TestUpstream::start().await;
    let mut cfg = config(&kafka, "disabled", &up2, dir.path().to_str().unwrap());
    cfg.enabled = false;
    let (topic, group) = (cfg.topics.predictions_topic.clone(), cfg.group.clone());
    let w = spawn_warmer(cfg).await;
    produce(&args, &topic, &[prediction("DIS", "price", 0.9)]).await;
    metric_reaches(
        &w,
        "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"skipped_disabled\"}",
        1.0,
    )
    .await;
    let r: Value = http().post(w.url("/v1/warmup")).send().await.unwrap().json().await.unwrap();
    assert_eq!((r["status"].as_str(), r["cached"].as_u64()), (Some("disabled"), Some(0)));
    assert!(up2.paths().is_empty());
    eventually(WAIT, "offsets committed while disabled", || async {
        (committed(&kafka.bootstrap(), &group, &topic).await == 1).then_some(())
    })
    .await;
    w.stop().await;
}

/// A learned follow-up of a query (`reason: sequence`) is warmed at once, whatever the spread:
/// with a spread of ten hours, a spread warm would start within the test's minute 0.2% of the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_learned_follow_up_is_not_spread() {
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-svc-seq");
    let mut cfg = config(&kafka, "seq", &up, dir.path().to_str().unwrap());
    cfg.spread = Duration::from_secs(36_000);
    let (topic, args) = (cfg.topics.predictions_topic.clone(), cfg.kafka.clone());
    let w = spawn_warmer(cfg).await;
    let mut p = prediction("MSFT", "chart", 0.9);
    p.reason = prefetch_common::prediction::Reason::Sequence;
    produce(&args, &topic, &[p]).await;
    let path = dir.path().join("chart/MSFT.json");
    eventually(WAIT, "the follow-up warmed", || async { path.exists().then_some(()) }).await;
    assert_eq!(up.count("/data/chart/MSFT"), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_of_a_live_entry_is_fetched_just_before_it_expires() {
    // Fetching a refresh as soon as it is read shortens the live entry's life for nothing:
    // every query before its expiry is that entry's to serve.
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-svc-defer");
    let mut cfg = config(&kafka, "defer", &up, dir.path().to_str().unwrap());
    cfg.ttls =
        vec![(prefetch_common::contract::Module::parse("price").unwrap(), Duration::from_secs(4))];
    let (topic, group, args) =
        (cfg.topics.predictions_topic.clone(), cfg.group.clone(), cfg.kafka.clone());
    let w = spawn_warmer(cfg).await;
    produce(&args, &topic, &[prediction("AAPL", "price", 0.9)]).await;
    let path = dir.path().join("price/AAPL.json");
    eventually(WAIT, "the first warm stored", || async { path.exists().then_some(()) }).await;
    let first: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let expires = at(first["expires_at"].as_str().unwrap());

    // A refresh, then another of the same key while the first waits.
    produce(&args, &topic, &[prediction("AAPL", "price", 0.8)]).await;
    metric_reaches(&w, "smart_prefetch_warmer_deferred_refreshes", 1.0).await;
    produce(&args, &topic, &[prediction("AAPL", "price", 0.7)]).await;
    metric_reaches(
        &w,
        "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"skipped_duplicate\"}",
        1.0,
    )
    .await;
    assert_eq!(up.count("/data/price/AAPL"), 1, "deferred, not fetched at once");

    let text = metric_reaches(
        &w,
        "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"stored\"}",
        2.0,
    )
    .await;
    assert_eq!(sample(&text, "smart_prefetch_warmer_deferred_refreshes"), Some(0.0));
    let second: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let fetched = at(second["fetched_at"].as_str().unwrap());
    assert!(
        fetched >= expires - chrono::Duration::seconds(1),
        "fetched at {fetched}, the live entry expired at {expires}"
    );
    assert_eq!(second["confidence"].as_f64(), Some(0.8));
    assert_eq!(up.count("/data/price/AAPL"), 2);
    // Each offset is stored once its prediction is handled: deferred, or skipped.
    w.stop().await;
    assert_eq!(committed(&kafka.bootstrap(), &group, &topic).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_warmer_drops_the_refreshes_it_deferred() {
    // `prefetch up` runs the warmer inside a longer-lived process: a refresh deferred before the
    // warmer stopped must not fetch and write the cache afterwards.
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-svc-defer-stop");
    let mut cfg = config(&kafka, "defer-stop", &up, dir.path().to_str().unwrap());
    cfg.ttls =
        vec![(prefetch_common::contract::Module::parse("price").unwrap(), Duration::from_secs(3))];
    let (topic, args) = (cfg.topics.predictions_topic.clone(), cfg.kafka.clone());
    let w = spawn_warmer(cfg).await;
    produce(&args, &topic, &[prediction("AAPL", "price", 0.9)]).await;
    let path = dir.path().join("price/AAPL.json");
    eventually(WAIT, "the first warm stored", || async { path.exists().then_some(()) }).await;
    produce(&args, &topic, &[prediction("AAPL", "price", 0.8)]).await;
    metric_reaches(&w, "smart_prefetch_warmer_deferred_refreshes", 1.0).await;
    w.stop().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(up.count("/data/price/AAPL"), 1, "the deferred refresh was dropped at the stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_warm_holds_up_neither_later_batches_nor_its_offset_nor_a_second_fetch() {
    // Batches overlap (issue #15.4): a prediction read while an earlier batch still fetches is
    // warmed at once, the earlier batch's key is not fetched a second time meanwhile, and no
    // offset is committed past the warm still running.
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    up.set(Behaviour {
        slow: vec![("/data/price/SLOW", Duration::from_secs(60))],
        ..Behaviour::default()
    });
    let dir = ScratchDir::new("warmer-svc-overlap");
    let mut cfg = config(&kafka, "overlap", &up, dir.path().to_str().unwrap());
    cfg.upstream_timeout = Duration::from_secs(90);
    let (topic, group, args) =
        (cfg.topics.predictions_topic.clone(), cfg.group.clone(), cfg.kafka.clone());
    let w = spawn_warmer(cfg).await;
    produce(&args, &topic, &[prediction("SLOW", "price", 0.9)]).await;
    eventually(WAIT, "the slow key's fetch under way", || async {
        (up.count("/data/price/SLOW") == 1).then_some(())
    })
    .await;
    produce(&args, &topic, &[prediction("SLOW", "price", 0.8), prediction("FAST", "price", 0.9)])
        .await;
    let fast = dir.path().join("price/FAST.json");
    eventually(WAIT, "the later batch warmed while the first still fetches", || async {
        fast.exists().then_some(())
    })
    .await;
    metric_reaches(
        &w,
        "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"skipped_duplicate\"}",
        1.0,
    )
    .await;
    assert_eq!(up.count("/data/price/SLOW"), 1, "a key being fetched is not fetched again");
    assert!(!dir.path().join("price/SLOW.json").exists(), "the first batch still fetches");
    w.stop().await;
    assert_eq!(
        committed(&kafka.bootstrap(), &group, &topic).await,
        0,
        "the later batch's offsets wait for the first batch's, which never ended"
    );
}
