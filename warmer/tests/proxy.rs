//! The read-through as a cache proxy: an upstream 404 passed through and cached negatively,
//! bounded metrics labels, a miss storm on one key coalesced into one upstream call, and the
//! upstream's `Cache-Control` capping the TTL.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_404_is_passed_through_cached_negatively_and_labels_stay_bounded() {
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-svc-404");
    let mut cfg = config(&kafka, "notfound", &up, dir.path().to_str().unwrap());
    cfg.negative_ttl = Duration::from_secs(1);
    let w = spawn_warmer(cfg).await;
    up.set(Behaviour { fail_first: 1000, fail_status: 404, ..Default::default() });
    let (status, cache, body) = get(&w.url("/v1/cache/price/NOSUCH"), None).await;
    assert_eq!((status, cache.as_deref()), (404, Some("MISS")), "{body}");
    assert_eq!(body["error"], "not_found");
    // Within the negative TTL the 404 comes from the cache, without asking the upstream.
    let (status, cache, _) = get(&w.url("/v1/cache/price/NOSUCH"), None).await;
    assert_eq!((status, cache.as_deref()), (404, Some("HIT")));
    assert_eq!(up.count("/data/price/NOSUCH"), 1);
    // After it, the upstream is asked again (and now has the key).
    up.set(Behaviour::default());
    let fetched = eventually(Duration::from_secs(10), "the negative entry expires", || async {
        let (status, _, body) = get(&w.url("/v1/cache/price/NOSUCH"), None).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(fetched["path"], "/data/price/NOSUCH");
    assert_eq!(up.count("/data/price/NOSUCH"), 2);
    // A module nobody configured is counted as `other`: random names mint no series.
    for i in 0..5 {
        let (status, _, _) = get(&w.url(&format!("/v1/cache/zz{i}rand/A")), None).await;
        assert_eq!(status, 200);
    }
    let text = w.metrics().await;
    assert!(!text.contains("zz0rand"), "a client-chosen module became a label:\n{text}");
    assert_eq!(
        sample(
            &text,
            "smart_prefetch_read_through_seconds_count{module=\"other\",result=\"miss\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "smart_prefetch_read_through_seconds_count{module=\"price\",result=\"not_found\"}"
        ),
        Some(1.0)
    );
    // Answered from the negative entry: the second GET and the polls until it expired.
    let negative_hits = sample(
        &text,
        "smart_prefetch_read_through_seconds_count{module=\"price\",result=\"negative_hit\"}",
    );
    assert!(negative_hits.unwrap_or(0.0) >= 1.0, "{text}");
    assert_eq!(
        sample(&text, "smart_prefetch_warmer_negative_entries_total{event=\"stored\"}"),
        Some(1.0)
    );
    // The query events reach the queries consumer under the same bounded label.
    metric_reaches(
        &w,
        "smart_prefetch_warmer_queries_total{module=\"other\",result=\"miss\",group=\"warmed\"}",
        5.0,
    )
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_miss_storm_on_one_key_makes_one_upstream_call_and_cache_control_caps_the_ttl() {
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-svc-storm");
    let mut cfg = config(&kafka, "storm", &up, dir.path().to_str().unwrap());
    cfg.honor_cache_control = true;
    let w = spawn_warmer(cfg).await;
    up.set(Behaviour {
        delay: Duration::from_millis(300),
        headers: vec![("cache-control", "max-age=1".into())],
        ..Default::default()
    });
    let url = w.url("/v1/cache/price/STORM");
    let answers = futures::future::join_all((0..50).map(|_| get(&url, None))).await;
    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["n"], 1, "every waiter shares the one fetch");
    }
    assert_eq!(up.count("/data/price/STORM"), 1);
    // Each of the other 49 either waited on the one fetch (coalesced) or, on a loaded machine,
    // arrived after it was stored (a hit): none went upstream.
    let hits = answers.iter().filter(|(_, cache, _)| cache.as_deref() == Some("HIT")).count();
    let text = w.metrics().await;
    let coalesced =
        sample(&text, "smart_prefetch_warmer_demand_coalesced_total{scope=\"instance\"}")
            .unwrap_or(0.0);
    assert_eq!(coalesced as usize + hits, 49, "coalesced {coalesced}, hits {hits}");
    // max-age=1 shortened price's 60 s TTL: a second later the upstream is asked again.
    up.set(Behaviour::default());
    eventually(Duration::from_secs(10), "the capped entry expires", || async {
        let (_, cache, _) = get(&url, None).await;
        (cache.as_deref() == Some("MISS")).then_some(())
    })
    .await;
    assert_eq!(up.count("/data/price/STORM"), 2);
    w.stop().await;
}
