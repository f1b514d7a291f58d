//! The end-to-end harness: each test reads like a scenario against a real broker.
//!
//! # Layout
//! - `lib.rs` (this file): everything of `prefetch-testkit` (the broker, topics, polling),
//!   plus [`spawn_ingest`] and [`spawn_analyzer`] (entry points on port 0, ready when they
//!   return) and [`bin_path`] for the real binaries.
//! - `tests/*.rs`: the scenarios.

pub use prefetch_testkit::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running ingest service.
pub struct Ingest {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Cancel to shut it down.
    pub shutdown: CancellationToken,
    /// Resolves when it has stopped.
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl Ingest {
    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops it and waits for the drain and flush.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await?
    }
}

/// Starts ingest's entry point on port 0 and waits until `/readyz` answers 200.
pub async fn spawn_ingest(cfg: ingest::Config) -> Ingest {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let mut handle = tokio::spawn(ingest::serve(cfg, listener, shutdown.clone()));
    let url = format!("http://{addr}/readyz");
    let ready = eventually(Duration::from_secs(30), "ingest ready", || async {
        if handle.is_finished() {
            return Some(false);
        }
        let r = http().get(&url).send().await.ok()?;
        r.status().is_success().then_some(true)
    });
    if !ready.await {
        panic!("ingest stopped during start-up: {:?}", (&mut handle).await);
    }
    Ingest { addr, shutdown, handle }
}

/// A running analyzer.
pub struct Analyzer {
    /// Where its admin HTTP listens.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Analyzer {
    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops it (commit, flush) and checks it ended cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle).await.expect("analyzer stops").unwrap().expect("analyzer ends cleanly");
    }
}

/// Starts the analyzer's entry point with its admin HTTP on port 0; waits for `/readyz`.
pub async fn spawn_analyzer(cfg: analyzer::service::Config) -> Analyzer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let mut handle = tokio::spawn(analyzer::service::serve(cfg, listener, shutdown.clone()));
    let url = format!("http://{addr}/readyz");
    let ready = eventually(Duration::from_secs(30), "analyzer ready", || async {
        if handle.is_finished() {
            return Some(false);
        }
        let r = http().get(&url).send().await.ok()?;
        r.status().is_success().then_some(true)
    });
    if !ready.await {
        panic!("analyzer stopped during start-up: {:?}", (&mut handle).await);
    }
    Analyzer { addr, shutdown, handle }
}

/// Path of a workspace binary (built by `cargo test --workspace`, which builds every binary of
/// a package that has integration tests).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps/..");
    let p = dir.join(name);
    assert!(p.exists(), "{} not built; run `cargo build --workspace --bins` (or `cargo test --workspace`)", p.display());
    p
}
