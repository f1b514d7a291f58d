//! Warmers as one cluster over a real Redis (`REDIS_URL`, or a private redis-server) and a
//! broker: three warmers never exceed the one upstream rate limit together (the upstream
//! records arrival times), a miss storm on one cold key across three warmers makes exactly one
//! upstream call, and a hit served by one warmer counts as a useful warm made by another.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_warmers_share_one_upstream_rate_limit() {
    let Some(redis) = TestRedis::start() else { return };
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let mut base = config(&kafka, "cluster-rate", &up, &redis.url);
    base.rate_limit = 10.0;
    base.rate_burst = 1;
    base.rate_max_wait = Duration::from_secs(3);
    let (args, topic) = (base.kafka.clone(), base.topics.predictions_topic.clone());
    // Each in its own group, so each reads every prediction and wants to warm all 60 keys:
    // three times the load one warmer would make, against one limit.
    let mut warmers = Vec::new();
    for i in 0..3 {
        let mut cfg = base.clone();
        cfg.group = format!("{}-{i}", base.group);
        warmers.push(spawn_warmer(cfg).await);
    }
    let preds: Vec<_> = (0..60).map(|i| prediction(&format!("R{i}"), "price", 0.9)).collect();
    produce(&args, &topic, &preds).await;
    for w in &warmers {
        eventually(WAIT, "every prediction handled (stored, skipped or dropped)", || async {
            (metric_total(&w.metrics().await, "smart_prefetch_warmer_warms_total") >= 60.0)
                .then_some(())
        })
        .await;
    }
    let times = up.times();
    let busiest = busiest_second(times.clone());
    // GCRA grants at most burst + rate * t in any window of t seconds: 11 here (plus one for
    // the scheduling slack between a grant and its arrival at the upstream).
    assert!(busiest <= 12, "{busiest} upstream requests within one second (limit 10/s, burst 1)");
    assert!(times.len() >= 20, "the limit was put to work: only {} requests", times.len());
    let dropped: f64 = {
        let mut d = 0.0;
        for w in &warmers {
            d += sample(
                &w.metrics().await,
                "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"dropped_rate_limit\"}",
            )
            .unwrap_or(0.0);
        }
        d
    };
    assert!(dropped > 0.0, "three warmers' demand exceeded the shared limit and some was dropped");
    for w in warmers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_miss_storm_across_three_warmers_makes_one_upstream_call() {
    let Some(redis) = TestRedis::start() else { return };
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    up.set(Behaviour { delay: Duration::from_millis(300), ..Default::default() });
    let base = config(&kafka, "cluster-storm", &up, &redis.url);
    let mut warmers = Vec::new();
    for _ in 0..3 {
        warmers.push(spawn_warmer(base.clone()).await);
    }
    let urls: Vec<String> = (0..50).map(|i| warmers[i % 3].url("/v1/cache/price/COLD")).collect();
    let http = http();
    let answers = futures::future::join_all(urls.iter().map(|u| get_with(&http, u, None))).await;
    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["path"], "/data/price/COLD");
        assert_eq!(body["n"], 1, "every answer is the one fetch's: {body}");
    }
    assert_eq!(up.count("/data/price/COLD"), 1, "one upstream call for 50 misses on 3 warmers");
    let mut cluster_waits = 0.0;
    for w in &warmers {
        cluster_waits += sample(
            &w.metrics().await,
            "smart_prefetch_warmer_demand_coalesced_total{scope=\"cluster\"}",
        )
        .unwrap_or(0.0);
    }
    assert!(cluster_waits >= 1.0, "the other warmers waited on the lease");
    for w in warmers {
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hit_on_one_warmer_counts_a_warm_made_by_another() {
    let Some(redis) = TestRedis::start() else { return };
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let base = config(&kafka, "cluster-ledger", &up, &redis.url);
    // A warms (it reads the predictions) but never sees a query event; B serves and counts
    // the queries but never warms. Only a ledger they share can tell B the hit was A's warm.
    let mut a = base.clone();
    a.group = format!("{}-a", base.group);
    a.topics.query_events_topic = format!("{}-a", base.topics.query_events_topic);
    let mut b = base.clone();
    b.group = format!("{}-b", base.group);
    b.topics.predictions_topic = format!("{}-b", base.topics.predictions_topic);
    for t in [&a.topics.query_events_topic, &b.topics.predictions_topic] {
        kafka.prepare_topic(t, 3);
    }
    let (args, topic) = (base.kafka.clone(), base.topics.predictions_topic.clone());
    let wa = spawn_warmer(a).await;
    let wb = spawn_warmer(b).await;
    produce(&args, &topic, &[prediction("LEDG", "price", 0.9)]).await;
    metric_reaches(
        &wa,
        "smart_prefetch_warmer_warms_total{module=\"price\",outcome=\"stored\"}",
        1.0,
    )
    .await;
    let (status, cache, _) = get(&wb.url("/v1/cache/price/LEDG"), None).await;
    assert_eq!((status, cache.as_deref()), (200, Some("HIT")), "B serves A's warm from Redis");
    metric_reaches(&wb, "smart_prefetch_warmer_useful_warms_total{module=\"price\"}", 1.0).await;
    // Counted once: a second hit is not another useful warm.
    get(&wb.url("/v1/cache/price/LEDG"), None).await;
    metric_reaches(
        &wb,
        "smart_prefetch_warmer_queries_total{module=\"price\",result=\"hit\",group=\"warmed\"}",
        2.0,
    )
    .await;
    let text = wb.metrics().await;
    assert_eq!(
        sample(&text, "smart_prefetch_warmer_useful_warms_total{module=\"price\"}"),
        Some(1.0)
    );
    wa.stop().await;
    wb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_outlives_a_slow_fetch_but_not_a_dead_holder() {
    let Some(redis) = TestRedis::start() else { return };
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let mut base = config(&kafka, "cluster-lease", &up, &redis.url);
    base.upstream_timeout = Duration::from_secs(8);
    let prefix = base.redis_prefix.clone();
    let wa = spawn_warmer(base.clone()).await;
    let wb = spawn_warmer(base).await;
    // A fetch slower than the lease: the holder renews it, so the other warmer keeps waiting.
    up.set(Behaviour {
        delay: warmer::cluster::LEASE + Duration::from_secs(1),
        ..Default::default()
    });
    let (url_a, url_b) = (wa.url("/v1/cache/price/SLOW"), wb.url("/v1/cache/price/SLOW"));
    let (a, b) = tokio::join!(get(&url_a, None), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        get(&url_b, None).await
    });
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(up.count("/data/price/SLOW"), 1, "the lease expired under a live, slow fetch");
    // A holder that died (a lease nobody renews): the others wait it out, then fetch.
    up.set(Behaviour::default());
    let mut conn = redis::Client::open(redis.url.as_str()).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}cluster:lock:price:ORPHAN"))
        .arg("a-dead-warmer")
        .arg("PX")
        .arg(warmer::cluster::LEASE.as_millis() as u64)
        .query(&mut conn)
        .unwrap();
    let started = Instant::now();
    let (status, _, body) = get(&wa.url("/v1/cache/price/ORPHAN"), None).await;
    let waited = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(waited >= warmer::cluster::LEASE - Duration::from_millis(500), "{waited:?}");
    assert!(waited < warmer::cluster::LEASE + Duration::from_secs(3), "{waited:?}");
    assert_eq!(up.count("/data/price/ORPHAN"), 1);
    wa.stop().await;
    wb.stop().await;
}
