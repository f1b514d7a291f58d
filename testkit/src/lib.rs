//! The broker side of every test harness, shared by the e2e crate (`tests/`) and the services'
//! own integration tests (the warmer's): [`TestKafka`] (a real broker from `KAFKA_BOOTSTRAP`, or
//! rdkafka's in-process `MockCluster` when it is unset), unique topic names, producing and
//! reading topics back ([`read_topic`], [`read_topic_until`], [`topic_count`]), [`eventually`]
//! for polling with a deadline (never a fixed sleep), and the `promtool` lint of an exposition.
//! It depends on no service crate, so any of them can dev-depend on it without a cycle.
//!
//! Readers use `assign` (not a subscribed group consumer): dropping a subscribed consumer on the
//! MockCluster can hang (rust-rdkafka #453, #509, #611), and tests must never wait on that.
//!
//! # Layout
//! - `lib.rs`: [`init_logs`], [`http`], [`eventually`], [`repo_path`].
//! - `kafka.rs`: [`TestKafka`], [`unique_topics`], producing and reading topics back.
//! - `service.rs`: a service run in-process ([`spawn_service`]) and the checks of a binary's
//!   `--help` and of its start-up error when Kafka does not answer.
//! - `prometheus.rs`: the `promtool` lint, [`ci_tool`] and a real Prometheus
//!   ([`TestPrometheus`]).
//! - `cluster.rs`: multi-instance scenarios — services as child processes that can be killed
//!   with SIGKILL, Redis, an upstream that records arrival times, rate-limit arithmetic.
//! - `scratch.rs`: [`ScratchDir`], a scratch directory removed on drop.

mod cluster;
mod kafka;
mod prometheus;
mod scratch;
mod service;
pub use cluster::*;
pub use kafka::{
    produce_json, produce_raw, read_topic, read_topic_until, topic_count, unique_topics, Record,
    TestKafka,
};
pub use prometheus::{ci_tool, finite_values, promtool_check_metrics, TestPrometheus};
pub use scratch::ScratchDir;
pub use service::{
    assert_help_explains, assert_unreachable_kafka_is_named, spawn_service, Service,
};

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Logs from the services under test, shown for failing tests (`RUST_LOG` filters; default warn).
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// An HTTP client whose requests give up after 10 s (a test must never hang on a socket).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// Polls `f` until it returns `Some`, panicking with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Path of a file in the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(rel)
}
