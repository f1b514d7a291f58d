//! The upstream client against a local HTTP server: the rate limit per window, concurrency,
//! retries and giving up on 500s and timeouts, no retry on 4xx, and the metrics it counts.

mod common;

use common::{sample, Behaviour, TestUpstream};
use prefetch_common::contract::{Module, Ticker};
use std::time::{Duration, Instant};
use warmer::cache::Source;
use warmer::metrics::Metrics;
use warmer::policy::Key;
use warmer::upstream::{FetchError, Upstream, UpstreamConfig};

fn key(t: &str) -> Key {
    Key { module: Module::parse("price").unwrap(), ticker: Ticker::parse(t).unwrap() }
}

fn cfg(up: &TestUpstream) -> UpstreamConfig {
    UpstreamConfig {
        concurrency: 16,
        timeout: Duration::from_secs(2),
        retries: 2,
        backoff: Duration::from_millis(10),
        rate: 0.0,
        burst: 1,
        rate_max_wait: Duration::from_secs(30),
        ..UpstreamConfig::new(up.template())
    }
}

fn client(cfg: UpstreamConfig, metrics: Metrics) -> Upstream {
    Upstream::new(cfg, metrics, None).unwrap()
}

fn exposition(m: &Metrics) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new().encode(&m.registry().gather(), &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warm_requests_honour_the_rate_limit_per_window() {
    let up = TestUpstream::start().await;
    let metrics = Metrics::new();
    // 10 requests/s, bursts of 3: 23 requests need at least 2 s.
    let client = std::sync::Arc::new(client(
        UpstreamConfig { rate: 10.0, burst: 3, ..cfg(&up) },
        metrics.clone(),
    ));
    let started = Instant::now();
    let tasks: Vec<_> = (0..23)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.fetch(&key(&format!("K{i}")), Source::Warm).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().expect("every request is served, only later");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "23 requests at 10/s burst 3 took only {:?}",
        started.elapsed()
    );
    let mut times = up.times();
    times.sort();
    assert_eq!(times.len(), 23);
    // Any one-second window holds at most burst + rate (plus one for scheduling slack).
    for (i, &t0) in times.iter().enumerate() {
        let n = times[i..].iter().take_while(|&&t| t < t0 + Duration::from_secs(1)).count();
        assert!(n <= 3 + 10 + 1, "{n} upstream requests within one second");
    }
    // Demand fetches are never held back by warming's budget.
    let before = Instant::now();
    for i in 0..5 {
        client.fetch(&key(&format!("D{i}")), Source::Demand).await.unwrap();
    }
    assert!(
        before.elapsed() < Duration::from_millis(500),
        "demand fetches waited {:?}",
        before.elapsed()
    );
    assert_eq!(
        sample(
            &exposition(&metrics),
            "smart_prefetch_warmer_upstream_requests_total{source=\"warm\",status=\"2xx\"}"
        ),
        Some(23.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_warm_that_cannot_get_a_token_in_time_is_dropped_without_a_request() {
    let up = TestUpstream::start().await;
    let client = client(
        UpstreamConfig {
            rate: 1.0,
            burst: 1,
            rate_max_wait: Duration::from_millis(100),
            ..cfg(&up)
        },
        Metrics::new(),
    );
    client.fetch(&key("A"), Source::Warm).await.unwrap();
    let e = client.fetch(&key("B"), Source::Warm).await.unwrap_err();
    assert!(matches!(e, FetchError::RateLimited(_)), "{e}");
    assert_eq!(up.paths(), vec!["/data/price/A"], "the dropped warm made no request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_limit_bounds_requests_in_flight() {
    let up = TestUpstream::start().await;
    up.set(Behaviour { delay: Duration::from_millis(100), ..Default::default() });
    let client =
        std::sync::Arc::new(client(UpstreamConfig { concurrency: 3, ..cfg(&up) }, Metrics::new()));
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.fetch(&key(&format!("C{i}")), Source::Warm).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(up.max_in_flight(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warms_waiting_for_a_concurrency_slot_keep_the_rate_when_slots_free_at_once() {
    // Four slow requests hold all four slots and end together; four more warms wait for slots
    // meanwhile. They must still reach the upstream at the rate (10/s: 100 ms apart), not all
    // at once when the slots free, as they did when a warm took its rate slot first.
    let up = TestUpstream::start().await;
    let hold = |ms| Duration::from_millis(ms);
    up.set(Behaviour {
        slow: vec![
            ("/data/price/A", hold(1300)),
            ("/data/price/B", hold(1200)),
            ("/data/price/C", hold(1100)),
            ("/data/price/D", hold(1000)),
        ],
        ..Default::default()
    });
    let client = std::sync::Arc::new(client(
        UpstreamConfig { concurrency: 4, rate: 10.0, burst: 1, ..cfg(&up) },
        Metrics::new(),
    ));
    let mut tasks = Vec::new();
    for t in ["A", "B", "C", "D", "E", "F", "G", "H"] {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { c.fetch(&key(t), Source::Warm).await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let arrivals: Vec<(String, Instant)> = up.paths().into_iter().zip(up.times()).collect();
    let mut late: Vec<Instant> = arrivals
        .iter()
        .filter(|(p, _)| ["E", "F", "G", "H"].iter().any(|t| *p == format!("/data/price/{t}")))
        .map(|(_, t)| *t)
        .collect();
    late.sort();
    assert_eq!(late.len(), 4);
    let span = late[3] - late[0];
    assert!(
        span >= Duration::from_millis(250),
        "the four warms that waited for slots reached the upstream within {span:?} (10/s: 300 ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_500s_then_succeeds_or_gives_up_after_the_last_retry() {
    let up = TestUpstream::start().await;
    let metrics = Metrics::new();
    let client = client(cfg(&up), metrics.clone());
    // Two failures, then success: retries = 2 is just enough.
    up.set(Behaviour { fail_first: 2, ..Default::default() });
    let fetched = client.fetch(&key("FLAKY"), Source::Warm).await.expect("third attempt succeeds");
    assert_eq!(fetched.body["n"], 3);
    assert_eq!(up.count("/data/price/FLAKY"), 3);
    // Always failing: 1 + 2 attempts, then the error.
    up.set(Behaviour { fail_first: 1000, ..Default::default() });
    let e = client.fetch(&key("DOWN"), Source::Warm).await.unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 500, .. }), "{e}");
    assert_eq!(up.count("/data/price/DOWN"), 3);
    // A 404 is an answer, not a failure to retry.
    up.set(Behaviour { fail_first: 1000, fail_status: 404, ..Default::default() });
    let e = client.fetch(&key("NOPE"), Source::Warm).await.unwrap_err();
    assert!(matches!(e, FetchError::NotFound { .. }), "{e}");
    assert_eq!(up.count("/data/price/NOPE"), 1);
    let text = exposition(&metrics);
    assert_eq!(
        sample(
            &text,
            "smart_prefetch_warmer_upstream_requests_total{source=\"warm\",status=\"5xx\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "smart_prefetch_warmer_upstream_requests_total{source=\"warm\",status=\"4xx\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "smart_prefetch_warmer_upstream_request_duration_seconds_count{source=\"warm\"}"
        ),
        Some(7.0),
        "3 + 3 + 1 attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeouts_are_retried_then_reported() {
    let up = TestUpstream::start().await;
    up.set(Behaviour { delay: Duration::from_millis(800), ..Default::default() });
    let metrics = Metrics::new();
    let client = client(
        UpstreamConfig { timeout: Duration::from_millis(150), retries: 1, ..cfg(&up) },
        metrics.clone(),
    );
    let started = Instant::now();
    let e = client.fetch(&key("SLOW"), Source::Demand).await.unwrap_err();
    assert!(matches!(e, FetchError::Timeout { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_millis(780),
        "the timeout cut the request short: {:?}",
        started.elapsed()
    );
    assert_eq!(up.count("/data/price/SLOW"), 2);
    assert_eq!(
        sample(
            &exposition(&metrics),
            "smart_prefetch_warmer_upstream_requests_total{source=\"demand\",status=\"timeout\"}"
        ),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_after_delays_the_retry_and_pauses_every_warm() {
    let up = std::sync::Arc::new(TestUpstream::start().await);
    let metrics = Metrics::new();
    let client = std::sync::Arc::new(client(
        UpstreamConfig { rate: 100.0, burst: 10, ..cfg(&up) },
        metrics.clone(),
    ));
    // The first answer is 429 "come back in 1 s"; the retry must not come sooner.
    up.set(Behaviour {
        fail_first: 1,
        fail_status: 429,
        headers: vec![("retry-after", "1".into())],
        ..Default::default()
    });
    let other = {
        let (c, up, metrics) = (client.clone(), up.clone(), metrics.clone());
        tokio::spawn(async move {
            // Another key asked once the 429 is in (and answered at once): warming as a whole
            // is paused.
            let series = "smart_prefetch_warmer_upstream_throttled_total{status=\"429\",retry_after=\"yes\"}";
            while sample(&exposition(&metrics), series).is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            up.set(Behaviour::default());
            c.fetch(&key("OTHER"), Source::Warm).await.unwrap();
        })
    };
    client.fetch(&key("BUSY"), Source::Warm).await.expect("the retry succeeds");
    other.await.unwrap();
    // Measured where it matters, at the upstream: arrivals after the 429's.
    let arrivals: Vec<(String, Instant)> = up.paths().into_iter().zip(up.times()).collect();
    let at = |p: &str, n: usize| arrivals.iter().filter(|(q, _)| q == p).nth(n).unwrap().1;
    let first = at("/data/price/BUSY", 0);
    let retried = at("/data/price/BUSY", 1) - first;
    assert!(retried >= Duration::from_millis(950), "retried after only {retried:?}");
    let other = at("/data/price/OTHER", 0) - first;
    assert!(
        other >= Duration::from_millis(950),
        "another warm went during the pause, after {other:?}"
    );
    assert_eq!(up.count("/data/price/BUSY"), 2);
    let text = exposition(&metrics);
    assert_eq!(
        sample(
            &text,
            "smart_prefetch_warmer_upstream_throttled_total{status=\"429\",retry_after=\"yes\"}"
        ),
        Some(1.0)
    );
    // A pause longer than the backoff cap ends the fetch with the upstream's Retry-After.
    up.set(Behaviour {
        fail_first: 1000,
        fail_status: 503,
        headers: vec![("retry-after", "120".into())],
        ..Default::default()
    });
    let e = client.fetch(&key("DOWN"), Source::Demand).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(120)), "{e}");
    assert_eq!(up.count("/data/price/DOWN"), 1, "not retried within the pause");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_control_is_reported_only_when_honoured() {
    let up = TestUpstream::start().await;
    up.set(Behaviour {
        headers: vec![("cache-control", "public, max-age=7".into())],
        ..Default::default()
    });
    let plain = client(cfg(&up), Metrics::new());
    assert_eq!(plain.fetch(&key("A"), Source::Warm).await.unwrap().max_age, None);
    let honouring =
        client(UpstreamConfig { honor_cache_control: true, ..cfg(&up) }, Metrics::new());
    assert_eq!(
        honouring.fetch(&key("A"), Source::Warm).await.unwrap().max_age,
        Some(Duration::from_secs(7))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_credentials_reach_the_upstream_and_never_an_error_message() {
    let up = TestUpstream::start().await;
    let template = format!("http://user:pw@{}/api/v3/{{module}}/{{ticker}}", up.addr);
    let client = client(
        UpstreamConfig {
            query: vec![("apikey".into(), "QK-123secret".into())],
            retries: 0,
            ..UpstreamConfig { url_template: template, ..cfg(&up) }
        },
        Metrics::new(),
    );
    let k =
        Key { module: Module::parse("price").unwrap(), ticker: Ticker::parse("BRK.B").unwrap() };
    client.fetch(&k, Source::Demand).await.unwrap();
    client.fetch(&key("^GSPC"), Source::Demand).await.unwrap();
    let seen: Vec<String> = up.seen().into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        seen,
        vec![
            "/api/v3/price/BRK.B?apikey=QK-123secret",
            "/api/v3/price/%5EGSPC?apikey=QK-123secret"
        ]
    );
    up.set(Behaviour { fail_first: 1000, ..Default::default() });
    let e = client.fetch(&key("X"), Source::Demand).await.unwrap_err().to_string();
    assert!(!e.contains("QK-123secret") && !e.contains("pw@"), "{e}");
    assert!(e.contains("/api/v3/price/X?[redacted]"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_never_follow_a_redirect_to_another_host() {
    let elsewhere = TestUpstream::start().await;
    // An upstream that sends everything to another host (another port counts).
    let app = axum::Router::new().fallback({
        let to = format!("http://{}/stolen", elsewhere.addr);
        move || {
            let to = to.clone();
            async move { axum::response::Redirect::temporary(&to) }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", "K-secret".parse().unwrap());
    let client = client(
        UpstreamConfig {
            headers,
            retries: 0,
            ..UpstreamConfig::new(format!("http://{addr}/{{module}}/{{ticker}}"))
        },
        Metrics::new(),
    );
    let e = client.fetch(&key("A"), Source::Demand).await.unwrap_err();
    assert!(matches!(e, FetchError::Status { status: 307, .. }), "{e}");
    assert!(elsewhere.paths().is_empty(), "the redirect to another host was followed");
}

#[test]
fn bad_upstream_settings_fail_start_up_with_the_reason() {
    let bad =
        |cfg: UpstreamConfig| Upstream::new(cfg, Metrics::new(), None).err().unwrap().to_string();
    let base = UpstreamConfig::new("https://h/api/{module}/{ticker}?apikey=K3Y");
    let e = bad(UpstreamConfig { ca_pem: Some(b"not a certificate".to_vec()), ..base.clone() });
    assert!(e.contains("--upstream-ca"), "{e}");
    let e = bad(UpstreamConfig::new("ftp://u:pw@h/{module}/{ticker}?apikey=K3Y"));
    assert!(e.contains("not http or https") && !e.contains("K3Y") && !e.contains("pw@"), "{e}");
    let e = bad(UpstreamConfig::new("no scheme/{module}/{ticker}"));
    assert!(e.contains("--upstream-url"), "{e}");
}
