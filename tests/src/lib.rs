//! The end-to-end harness: each test reads like a scenario against a real broker.
//!
//! # Layout
//! - `lib.rs` (this file): everything of `prefetch-testkit` (the broker, topics, polling),
//!   plus [`spawn_ingest`] and [`spawn_analyzer`] (entry points on port 0, ready when they
//!   return) and [`bin_path`] for the real binaries.
//! - `stack.rs`: the whole pipeline in one test ([`spawn_stack`]) with a local upstream.
//! - `fleet.rs`: several analyzers and warmers as child processes, steady traffic, and the
//!   exactly-once check of per-key counts against a reference analyzer.
//! - `tests/*.rs`: the scenarios.

pub use prefetch_testkit::*;
pub use stack::{spawn_stack, spawn_upstream, spawn_warmer, Stack, StackOptions};

pub mod fleet;
mod stack;

use std::path::PathBuf;

/// Starts ingest's entry point on port 0 and waits until `/readyz` answers 200.
pub async fn spawn_ingest(cfg: ingest::Config) -> Service {
    spawn_service("ingest", |l, t| ingest::serve(cfg, l, t)).await
}

/// Starts the analyzer's entry point with its admin HTTP on port 0; waits for `/readyz`.
pub async fn spawn_analyzer(cfg: analyzer::service::Config) -> Service {
    spawn_service("analyzer", |l, t| analyzer::service::serve(cfg, l, t)).await
}

/// Path of a workspace binary (built by `cargo test --workspace`, which builds every binary of
/// a package that has integration tests).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps/..");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built; run `cargo build --workspace --bins` (or `cargo test --workspace`)",
        p.display()
    );
    p
}
