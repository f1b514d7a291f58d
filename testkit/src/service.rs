//! A service entry point run in-process on port 0 ([`spawn_service`]), and the checks every
//! service binary must pass: `--help` explains each flag, an unreachable broker is named.

use crate::{eventually, http};
use std::time::Duration;

/// A service started in-process on port 0 (any of ingest, analyzer, warmer).
pub struct Service {
    /// Where its HTTP listens.
    pub addr: std::net::SocketAddr,
    /// Cancel to shut it down.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Resolves when it has stopped.
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Its `/metrics` exposition.
    pub async fn metrics(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Stops it and checks that it ended cleanly within 30 s (drain, commit, flush).
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("service stops within 30 s")
            .unwrap()
            .expect("service ends cleanly");
    }
}

/// Starts a service entry point (`serve(listener, shutdown)`) on 127.0.0.1:0 and waits until its
/// `/readyz` answers 200; panics with the service's own error if it stops during start-up.
pub async fn spawn_service<F, Fut>(name: &str, serve: F) -> Service
where
    F: FnOnce(tokio::net::TcpListener, tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut handle = tokio::spawn(serve(listener, shutdown.clone()));
    let url = format!("http://{addr}/readyz");
    let what = format!("{name} ready");
    let ready = eventually(Duration::from_secs(30), &what, || async {
        if handle.is_finished() {
            return Some(false);
        }
        let r = http().get(&url).send().await.ok()?;
        r.status().is_success().then_some(true)
    });
    if !ready.await {
        panic!("{name} stopped during start-up: {:?}", (&mut handle).await);
    }
    Service { addr, shutdown, handle }
}

/// Runs `bin --help` and checks that every flag of `flags` is listed with an explanation (on its
/// line or the next).
pub fn assert_help_explains(bin: &str, flags: &[&str]) -> String {
    let out = std::process::Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin} --help failed");
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in flags {
        let i = help.lines().position(|l| {
            let l = l.trim_start();
            l.starts_with(&format!("{flag} ")) || l == *flag || l.contains(&format!(", {flag} "))
        });
        let i = i.unwrap_or_else(|| panic!("{flag} missing from --help:\n{help}"));
        let text: String = help.lines().skip(i).take(2).collect();
        assert!(text.split_whitespace().count() > 3, "{flag} has no explanation:\n{help}");
    }
    help
}

/// Runs `bin` against a broker address where nothing listens and checks that start-up fails
/// within its `--startup-timeout` with exit code 1 and a message naming the broker.
pub fn assert_unreachable_kafka_is_named(bin: &str) {
    let out = std::process::Command::new(bin)
        .args(["--brokers", "127.0.0.1:1", "--startup-timeout", "2s", "--listen", "127.0.0.1:0"])
        .env("PREFETCH_LOG_LEVEL", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{bin}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Kafka at 127.0.0.1:1 did not answer within 2s"), "{bin}: {stderr}");
}
