//! The warmer against an HTTPS upstream signed by a private CA (generated here), with a header
//! credential from the environment, one from a secrets file and a query credential: every
//! credential reaches the upstream, and none appears in the captured logs (debug level, the
//! `log` records of the HTTP client included), the answers, `/v1/status`, `/metrics` or the
//! config's `Debug`. Also: the tokens on the warmer's own routes, and a missing variable
//! failing start-up by name.

mod common;

use common::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HEADER_SECRET: &str = "hdr-S3CRET-1f0a";
const FILE_SECRET: &str = "file-S3CRET-77b2";
const QUERY_SECRET: &str = "qry-S3CRET-9c4d";
const API_TOKEN: &str = "api-S3CRET-token";
const READ_TOKEN: &str = "read-S3CRET-token";
const SECRETS: [&str; 5] = [HEADER_SECRET, FILE_SECRET, QUERY_SECRET, API_TOKEN, READ_TOKEN];

/// Everything every subscriber-visible log line of this test binary wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber (before the harness's own), once per test binary.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let c = Captured::default();
        let writer = c.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the capturing subscriber is the first");
        c
    })
}

/// One request the HTTPS upstream received: target (path and query) and headers.
type Seen = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

/// A private CA, and an HTTPS upstream on 127.0.0.1 whose certificate it signed. Answers 500
/// for tickers starting with FAIL, 404 for NOPE, else a JSON body.
async fn https_upstream(dir: &ScratchDir) -> (String, std::path::PathBuf, Seen) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "prefetch test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let mut lines = text.split("\r\n");
                let target =
                    lines.next().unwrap_or_default().split(' ').nth(1).unwrap_or("").to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                record.lock().unwrap().push((target.clone(), headers));
                let (status, body) = if target.contains("/FAIL") {
                    ("500 Internal Server Error", "{\"error\":\"boom\"}".to_owned())
                } else if target.contains("/NOPE") {
                    ("404 Not Found", "{\"error\":\"unknown\"}".to_owned())
                } else {
                    ("200 OK", serde_json::json!({"path": target.split('?').next()}).to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://127.0.0.1:{port}/api/v3/{{module}}/{{ticker}}"), ca_file, seen)
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows a credential ({s}):\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_upstream_with_credentials_that_appear_nowhere() {
    let logs = logs();
    let var = format!("PREFETCH_TEST_UPSTREAM_KEY_{}", std::process::id());
    // Set before any service thread reads the environment.
    std::env::set_var(&var, HEADER_SECRET);
    let dir = ScratchDir::new("warmer-https");
    let (template, ca_file, seen) = https_upstream(&dir).await;
    let header_file = dir.path().join("upstream-headers");
    std::fs::write(&header_file, format!("# the API's second key\n\nX-Api-Key: {FILE_SECRET}\n"))
        .unwrap();

    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let cache = dir.path().join("cache");
    let mut cfg = config(&kafka, "https", &up, cache.to_str().unwrap());
    cfg.upstream_url = template;
    cfg.upstream_ca = Some(ca_file);
    cfg.upstream_headers =
        vec![warmer::credentials::Secret(format!("Authorization: Bearer ${{{var}}}"))];
    cfg.upstream_header_file = Some(header_file);
    cfg.upstream_query = vec![warmer::credentials::Secret(format!("apikey={QUERY_SECRET}"))];
    cfg.upstream_retries = 0;
    cfg.api_token = Some(warmer::credentials::Redacted(API_TOKEN.into()));
    cfg.read_token = Some(warmer::credentials::Redacted(READ_TOKEN.into()));
    assert_no_secret("the config's Debug", &format!("{cfg:?}"));
    let kafka_args = cfg.kafka.clone();
    let topic = cfg.topics.predictions_topic.clone();
    let w = spawn_warmer(cfg).await;

    // Warming over HTTPS: the private CA is trusted, each credential arrives, and tickers are
    // percent-encoded segments under the template's path prefix.
    produce(
        &kafka_args,
        &topic,
        &[prediction("BRK.B", "price", 0.9), prediction("^GSPC", "price", 0.9)],
    )
    .await;
    let requests = eventually(Duration::from_secs(30), "both warms over HTTPS", || async {
        let s = seen.lock().unwrap().clone();
        (s.len() >= 2).then_some(s)
    })
    .await;
    let mut targets: Vec<&str> = requests.iter().map(|(t, _)| t.as_str()).collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            format!("/api/v3/price/%5EGSPC?apikey={QUERY_SECRET}"),
            format!("/api/v3/price/BRK.B?apikey={QUERY_SECRET}"),
        ]
    );
    for (_, h) in &requests {
        assert_eq!(
            h.get("authorization").map(String::as_str),
            Some(&*format!("Bearer {HEADER_SECRET}"))
        );
        assert_eq!(h.get("x-api-key").map(String::as_str), Some(FILE_SECRET));
    }

    // The read token guards the cache; the API token is accepted there too.
    let client = http();
    let url = w.url("/v1/cache/price/BRK.B");
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    let wrong = client.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let hit = eventually(Duration::from_secs(10), "the warmed entry", || async {
        let r = client.get(&url).bearer_auth(READ_TOKEN).send().await.ok()?;
        (r.headers().get("x-cache")?.to_str().ok()? == "HIT").then_some(r)
    })
    .await;
    let body = hit.text().await.unwrap();
    assert!(body.contains("/api/v3/price/BRK.B"), "{body}");
    assert_no_secret("a hit", &body);
    let by_api = client.get(&url).bearer_auth(API_TOKEN).send().await.unwrap();
    assert_eq!(by_api.status(), 200);

    // A failing upstream: 502 whose message names the URL without its query.
    let failed =
        client.get(w.url("/v1/cache/price/FAIL1")).bearer_auth(READ_TOKEN).send().await.unwrap();
    assert_eq!(failed.status(), 502);
    let body = failed.text().await.unwrap();
    assert!(body.contains("/api/v3/price/FAIL1?[redacted]"), "{body}");
    assert_no_secret("a 502", &body);
    // Unknown ticker: 404 passed through, then answered from the negative entry.
    let nope =
        client.get(w.url("/v1/cache/price/NOPE")).bearer_auth(READ_TOKEN).send().await.unwrap();
    assert_eq!(nope.status(), 404);
    assert_no_secret("a 404", &nope.text().await.unwrap());

    // The warm-up needs the API token (the read token is not enough).
    let warmup = w.url("/v1/warmup");
    assert_eq!(client.post(&warmup).send().await.unwrap().status(), 401);
    assert_eq!(client.post(&warmup).bearer_auth(READ_TOKEN).send().await.unwrap().status(), 401);
    assert_eq!(client.post(&warmup).bearer_auth(API_TOKEN).send().await.unwrap().status(), 200);

    let status = client.get(w.url("/v1/status")).bearer_auth(READ_TOKEN).send().await.unwrap();
    assert_eq!(status.status(), 200);
    assert_no_secret("/v1/status", &status.text().await.unwrap());
    let metrics = w.metrics().await;
    assert_no_secret("/metrics", &metrics);
    assert_eq!(
        sample(&metrics, "smart_prefetch_warmer_unauthorized_requests_total{route=\"warmup\"}"),
        Some(2.0)
    );
    w.stop().await;

    let captured = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(captured.contains("Upstream fetch failed"), "the failure was logged:\n{captured}");
    assert!(captured.contains("?[redacted]"), "logged URLs are redacted:\n{captured}");
    assert_no_secret("the logs", &captured);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_credential_variable_fails_start_up_by_name() {
    let _ = logs();
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-https-missing");
    let mut cfg = config(&kafka, "https-missing", &up, dir.path().to_str().unwrap());
    cfg.upstream_query =
        vec![warmer::credentials::Secret("apikey=${PREFETCH_TEST_SURELY_UNSET_VAR}".into())];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let e = tokio::time::timeout(Duration::from_secs(5), warmer::serve(cfg, listener, token))
        .await
        .expect("refused at once, before Kafka is asked")
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(
        msg.contains("PREFETCH_TEST_SURELY_UNSET_VAR") && msg.contains("--upstream-query"),
        "{msg}"
    );
}
