//! Scale-out on a 12-partition events topic: several analyzers in one group hold exactly what one
//! analyzer fed the same events holds — per key, by count — through joins, leaves and `kill -9`;
//! three warmers on one Redis act as one cluster (one upstream rate limit, one upstream call per
//! miss storm, one useful-warm ledger), also across a `kill -9`; ingest's status adds them up.
//!
//! The reference is an analyzer in a group of its own (checkpoints off) reading the same topic.
//! Each instance's state is read from `/v1/window` (every live key with its events in the
//! window); the instances' counts are added up per key and compared with the reference's.

use prefetch_e2e::fleet::*;
use prefetch_e2e::*;
use serde_json::{json, Value};
use std::time::Duration;

/// One instance joins and leaves while events flow in batches: after each step the instances
/// together hold the reference's counts, key by key — a partition kept is not restored again
/// (no double count), a partition handed over is restored from the checkpoint written on revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_and_a_leave_keep_every_count_exact() {
    let kafka = TestKafka::start();
    let topics = unique_topics("so-joinleave");
    kafka.prepare(&topics);
    create_events_topic(&kafka, &topics.query_events_topic).await;
    let group = format!("{}analyzers", topics.query_events_topic);
    let cfg = analyzer_config(&kafka, &topics, &group);
    let mut reference_cfg = analyzer_config(&kafka, &topics, &format!("{group}-reference"));
    reference_cfg.checkpoint_interval = Duration::ZERO;
    let p = events_producer(&kafka.bootstrap());
    let mut seq = 0;

    let reference = spawn_analyzer(reference_cfg).await;
    let a = spawn_analyzer(cfg.clone()).await;
    produce_events(&p, &topics.query_events_topic, 36, 600, &mut seq).await;
    assert_counts_match(&[a.url("")], &reference.url(""), 600, Duration::from_secs(60)).await;

    let b = spawn_analyzer(cfg.clone()).await;
    produce_events(&p, &topics.query_events_topic, 36, 600, &mut seq).await;
    assert_counts_match(
        &[a.url(""), b.url("")],
        &reference.url(""),
        1_200,
        Duration::from_secs(90),
    )
    .await;
    let (wa, wb) = (window(&a.url("")).await.unwrap(), window(&b.url("")).await.unwrap());
    assert!(!wa.is_empty() && !wb.is_empty(), "the partitions are split: A {wa:?} B {wb:?}");

    b.stop().await;
    produce_events(&p, &topics.query_events_topic, 36, 600, &mut seq).await;
    assert_counts_match(&[a.url("")], &reference.url(""), 1_800, Duration::from_secs(90)).await;
    a.stop().await;
    reference.stop().await;
}

/// The sum of `name` over the warmers' expositions.
async fn fleet_total(warmers: &[ChildService], name: &str) -> f64 {
    let mut sum = 0.0;
    for w in warmers {
        sum += metric_total(&w.metrics().await, name);
    }
    sum
}

/// GET `url`: status, `X-Cache`, JSON body.
async fn read_through(url: &str) -> (u16, String, Value) {
    let r = http().get(url).send().await.expect("read-through answers");
    let cache = r.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), cache.unwrap_or_default(), r.json().await.unwrap_or_default())
}

/// `/v1/status` of every warmer (`None` while one does not answer).
async fn statuses(warmers: &[ChildService]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for w in warmers {
        let r = http().get(format!("{}/v1/status", w.base)).send().await.ok()?;
        out.push(r.json().await.ok()?);
    }
    Some(out)
}

/// The deployment of the README's "Scaling out", under steady traffic: three analyzer and three
/// warmer processes, Redis, a recording upstream. One analyzer and one warmer are killed with
/// SIGKILL and restarted. Then: every event folded exactly once; predictions again within
/// 10 s; the upstream never saw more than the cluster's limit in any second; a miss storm on
/// one key over the three warmers made one upstream call; hits on one warmer count as useful
/// warms of another; ingest's `action=status` adds the three warmers up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_analyzers_and_three_warmers_survive_kill_9_as_one_cluster() {
    let Some(redis) = TestRedis::start() else { return };
    let kafka = TestKafka::start();
    let topics = unique_topics("so-cluster");
    kafka.prepare(&topics);
    create_events_topic(&kafka, &topics.query_events_topic).await;
    let group = format!("{}analyzers", topics.query_events_topic);
    let cfg = analyzer_config(&kafka, &topics, &group);
    let mut reference_cfg = analyzer_config(&kafka, &topics, &format!("{group}-reference"));
    reference_cfg.checkpoint_interval = Duration::ZERO;
    let reference = spawn_analyzer(reference_cfg).await;

    // 20 ms per answer, like a quick data API. The analyzers ask for far more warms than 5/s
    // (3 × top 10 every 500 ms, each re-warmed since a 60 s price entry is never fresh for a
    // 300 s horizon), so the limit is saturated for the whole run.
    let upstream = RecordingUpstream::start(Duration::from_millis(20)).await;
    let fleet = WarmerFleet {
        topics: topics.clone(),
        group: format!("{}warmers", topics.query_events_topic),
        redis_url: redis.url.clone(),
        redis_prefix: format!("{}:", topics.query_events_topic),
        upstream: upstream.template(),
        rate: 5.0,
        burst: 1,
        max_wait: Duration::from_secs(1),
    };
    let analyzer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let warmer_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut analyzers: Vec<ChildService> = (0..3)
        .map(|i| start_analyzer(&kafka, &cfg, &format!("an-{i}"), analyzer_ports[i]))
        .collect();
    let mut warmers: Vec<ChildService> =
        (0..3).map(|i| fleet.start(&kafka, &format!("wa-{i}"), warmer_ports[i])).collect();
    for s in analyzers.iter_mut().chain(warmers.iter_mut()) {
        s.ready(Duration::from_secs(60)).await;
    }
    let mut ingest_cfg = ingest::Config::new(kafka.bootstrap());
    ingest_cfg.kafka = kafka.kafka_args();
    ingest_cfg.topics = topics.clone();
    ingest_cfg.warmer_url = warmers.iter().map(|w| w.base.clone()).collect::<Vec<_>>().join(",");
    let ingest = spawn_ingest(ingest_cfg).await;

    let traffic = Traffic::start(&kafka.bootstrap(), &topics.query_events_topic);
    for a in &analyzers {
        until_predicting(&a.base, Duration::from_secs(60)).await;
    }
    eventually(Duration::from_secs(60), "warms reaching the upstream", || async {
        (upstream.times().len() >= 10).then_some(())
    })
    .await;
    // Long enough for checkpoints (every 2 s) to cover most of what each analyzer folded.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // kill -9 one analyzer and one warmer mid-traffic; restart both on their ports (the
    // analyzer as the same static member).
    analyzers[1].kill9();
    warmers[1].kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    analyzers[1] = start_analyzer(&kafka, &cfg, "an-1", analyzer_ports[1]);
    warmers[1] = fleet.start(&kafka, "wa-1", warmer_ports[1]);
    let took = until_predicting(&analyzers[1].base, Duration::from_secs(30)).await;
    assert!(took < Duration::from_secs(10), "predictions again {took:?} after the restart");
    let m = analyzers[1].metrics().await;
    assert!(
        metric_total(&m, "smart_prefetch_analyzer_restore_duration_seconds_count") >= 1.0,
        "{m}"
    );
    let missing = m.lines().find_map(|l| {
        l.strip_prefix("smart_prefetch_analyzer_checkpoint_fallbacks_total{reason=\"missing\"}")?
            .trim()
            .parse::<f64>()
            .ok()
    });
    assert_eq!(missing, Some(0.0), "every partition restored from a checkpoint: {m}");
    warmers[1].ready(Duration::from_secs(60)).await;

    // A miss storm on one cold key, spread over the three warmers (the restarted one too): one
    // upstream call, and every answer is that call's. `fundamentals` entries live a day, so no
    // warm of the key follows while the test looks.
    let storm = "/data/fundamentals/STORM";
    let urls: Vec<String> =
        (0..60).map(|i| format!("{}/v1/cache/fundamentals/STORM", warmers[i % 3].base)).collect();
    // One client for the 60, as an app has: a client each would spend the test's runtime on
    // loading root certificates 60 times over.
    let client = http();
    let storm_gets: Vec<_> = urls
        .into_iter()
        .map(|u| {
            let client = client.clone();
            tokio::spawn(async move {
                let r = client.get(&u).send().await.expect("read-through answers");
                (r.status().as_u16(), r.json::<Value>().await.unwrap_or_default())
            })
        })
        .collect();
    for get in storm_gets {
        let (status, body) = get.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["path"].as_str(), body["n"].as_u64()), (Some(storm), Some(1)), "{body}");
    }
    assert_eq!(upstream.count(storm), 1, "one upstream call for 60 misses over 3 warmers");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let produced = traffic.stop().await;
    // Every read-through of the storm is a query event too (published by the warmer).
    let events = produced + 60;
    let bases: Vec<String> = analyzers.iter().map(|a| a.base.clone()).collect();
    assert_counts_match(&bases, &reference.url(""), events, Duration::from_secs(60)).await;
    drop(analyzers);
    reference.stop().await;

    // The useful-warm ledger, with the predictions stopped: warm one key at a time (a
    // prediction produced straight to the topic), see which warmer warmed it, and hit it on
    // another. Each warm's first hit counts once, whichever warmer served it and whichever
    // warmer's query consumer reads the hit.
    let stored = "smart_prefetch_warmer_warms_total{module=\"fundamentals\",outcome=\"stored\"}";
    let useful = "smart_prefetch_warmer_useful_warms_total";
    let useful_before = fleet_total(&warmers, useful).await;
    let keys = 6;
    for k in 0..keys {
        let ticker = format!("LEDG{k}");
        let before: Vec<f64> = {
            let mut v = Vec::new();
            for w in &warmers {
                v.push(metric_total(&w.metrics().await, stored));
            }
            v
        };
        let prediction = json!({"ticker": ticker, "module": "fundamentals", "confidence": 0.99,
            "horizon_s": 300, "generated_at": chrono::Utc::now().to_rfc3339(), "reason": "popularity"});
        // A warm the limiter dropped (the last predictions may still hold it) is asked again.
        let warmed_by =
            eventually(Duration::from_secs(60), &format!("{ticker} warmed"), || async {
                if upstream.count(&format!("/data/fundamentals/{ticker}")) == 0 {
                    produce_json(
                        &kafka.bootstrap(),
                        &topics.predictions_topic,
                        std::slice::from_ref(&prediction),
                    )
                    .await;
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                for (i, w) in warmers.iter().enumerate() {
                    if metric_total(&w.metrics().await, stored) > before[i] {
                        return Some(i);
                    }
                }
                None
            })
            .await;
        let server = &warmers[(warmed_by + 1) % 3];
        let (status, cache, body) =
            read_through(&format!("{}/v1/cache/fundamentals/{ticker}", server.base)).await;
        assert_eq!(
            (status, cache.as_str()),
            (200, "HIT"),
            "{ticker} served from the shared cache: {body}"
        );
    }
    eventually(Duration::from_secs(30), "every first hit counted as a useful warm", || async {
        (fleet_total(&warmers, useful).await - useful_before >= keys as f64).then_some(())
    })
    .await;

    // ingest's status is the three warmers' counters added up (the shared cache counted once).
    let api = ingest.url("/api/v1/smart-prefetch?action=status");
    eventually(Duration::from_secs(30), "ingest's status equal to the warmers' sum", || async {
        let before = statuses(&warmers).await?;
        let s: Value = http().get(&api).send().await.ok()?.json().await.ok()?;
        let after = statuses(&warmers).await?;
        if before != after {
            return None; // the counters moved meanwhile: ask again
        }
        let sum = |f: &str| after.iter().map(|v| v[f].as_u64().unwrap()).sum::<u64>();
        assert_eq!(s["complete"], true, "{s}");
        assert_eq!(s["warmers"].as_array().map(Vec::len), Some(3), "{s}");
        assert_eq!(
            s["cached_items"], after[0]["cached_items"],
            "one Redis cache, counted once: {s}"
        );
        assert!(sum("cache_hits") >= keys as u64, "the ledger's hits are counted: {after:?}");
        (s["cache_hits"].as_u64() == Some(sum("cache_hits"))
            && s["cache_misses"].as_u64() == Some(sum("cache_misses")))
        .then_some(())
    })
    .await;

    // The upstream's own record of the whole run (start, kills, restarts, storm, ledger).
    let times = upstream.times();
    let busiest = busiest_second(times.clone());
    let limit = fleet.rate as usize + fleet.burst as usize;
    let fallbacks =
        fleet_total(&warmers, "smart_prefetch_warmer_rate_limiter_fallbacks_total").await;
    eprintln!(
        "upstream: {} requests, busiest second {busiest} (limit {}/s, burst {}): {}; analyzer predicting {took:?} after its restart",
        times.len(),
        fleet.rate,
        fleet.burst,
        upstream.busiest_timeline()
    );
    // GCRA grants at most `burst + rate·t` in any `t` seconds; the storm's one demand fetch
    // takes its slot at once rather than wait (README), so it may come on top.
    assert!(
        busiest <= limit + 1,
        "{busiest} upstream requests within one second (limit {}/s, burst {}; {} requests in \
         all; rate-limiter fallbacks of the live warmers: {fallbacks}): {}",
        fleet.rate,
        fleet.burst,
        times.len(),
        upstream.busiest_timeline()
    );
    assert!(busiest >= fleet.rate as usize, "the limit was put to work: busiest second {busiest}");
    assert_eq!(
        fleet_total(&warmers, useful).await - useful_before,
        keys as f64,
        "each first hit once"
    );
    assert_eq!(upstream.count(storm), 1, "the storm's key was fetched once in the whole run");
    ingest.stop().await;
}
