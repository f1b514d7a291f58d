//! Ingest's HTTP manners on refusals (issue #12.6) and CORS (#12.7), against a broker: a
//! chunked body over the limit gets its 413 before the connection closes, refusals that leave
//! the body unread say `Connection: close`, every 400 is counted under a reason, and browsers
//! on an allowed origin get their preflight and CORS headers.

use prefetch_e2e::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: usize = 64 * 1024;

fn config(kafka: &TestKafka, test: &str) -> ingest::Config {
    let mut cfg = ingest::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics(test);
    cfg.max_body_bytes = LIMIT;
    kafka.prepare(&cfg.topics);
    cfg
}

/// Writes `head` and then `body` completely, and only then reads the answer (as many simple
/// clients do); returns the answer's head, lower-cased. A write error fails the test: that is
/// the broken pipe clients used to get.
async fn write_then_read(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.expect("writing the head");
    for chunk in body.chunks(8192) {
        s.write_all(chunk).await.expect("writing the whole body before reading (broken pipe?)");
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_lowercase();
    text.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(4096) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_answered_before_the_connection_closes_and_are_counted() {
    let kafka = TestKafka::start();
    let ingest = spawn_ingest(config(&kafka, "ingest-hygiene")).await;

    // A chunked body three times the limit, written whole before reading: the 413 arrives.
    let body = chunked(&vec![b' '; 3 * LIMIT]);
    let head = "POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    let answer = write_then_read(ingest.addr, head, &body).await;
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");

    // Refusals that do not read the body say so, and a keep-alive client's next request works.
    let big = vec![b'x'; 100];
    for (head, status) in [
        (format!("POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n", big.len()), "415"),
        (format!("POST /api/v1/smart-prefetch?action=explode HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", big.len()), "400"),
        (format!("POST /api/v1/smart-prefetch?action=stats HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", big.len()), "405"),
    ] {
        let answer = write_then_read(ingest.addr, &head, &big).await;
        assert!(answer.starts_with(&format!("http/1.1 {status}")), "{answer}");
        assert!(answer.contains("connection: close"), "{status}: {answer}");
    }
    let client = http();
    for _ in 0..3 {
        let r = client
            .post(ingest.url("/v1/events"))
            .header("content-type", "text/plain")
            .body(vec![b'x'; 2 * LIMIT])
            .send()
            .await
            .expect("refused request answered");
        assert_eq!(r.status(), 415);
        let r = client
            .post(ingest.url("/v1/events"))
            .header("content-type", "application/json")
            .body(r#"{"ticker":"AAPL","module":"price"}"#)
            .send()
            .await
            .expect("the next request on the keep-alive client works");
        assert_eq!(r.status(), 200);
    }

    // Every refusal is counted under its reason; unknown actions too.
    let r = client.get(ingest.url("/api/v1/smart-prefetch?action=nope")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let m = ingest.metrics().await;
    for (reason, n) in [
        ("unknown_action", 2),
        ("method_not_allowed", 1),
        ("too_large", 1),
        ("unsupported_media_type", 4),
    ] {
        let line =
            format!("smart_prefetch_ingest_requests_rejected_total{{reason=\"{reason}\"}} {n}");
        assert!(m.contains(&line), "{line} not in\n{m}");
    }
    promtool_check_metrics(&m);
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default_and_answers_allowed_origins() {
    let kafka = TestKafka::start();
    let plain = spawn_ingest(config(&kafka, "ingest-nocors")).await;
    let mut cfg = config(&kafka, "ingest-cors");
    cfg.cors_origins = vec!["https://app.example".into()];
    let cors = spawn_ingest(cfg).await;
    let client = http();
    let api = "/api/v1/smart-prefetch?action=record";

    let preflight = |base: &Service, origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, base.url(api))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let r = preflight(&cors, "https://app.example").await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    assert!(r.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(r.headers()["access-control-allow-headers"].to_str().unwrap().contains("content-type"));
    let r = preflight(&cors, "https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = preflight(&plain, "https://app.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none(), "off by default");

    // The README's browser fetch: record, then read the predictions.
    for (svc, allowed) in [(&cors, true), (&plain, false)] {
        let r = client
            .post(svc.url(api))
            .header("origin", "https://app.example")
            .header("content-type", "application/json")
            .body(r#"{"ticker":"AAPL","module":"price","hit":false}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let acao = r.headers().get("access-control-allow-origin").cloned();
        assert_eq!(acao.is_some(), allowed, "{acao:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "recorded");
    }
    plain.stop().await;
    cors.stop().await;
}
