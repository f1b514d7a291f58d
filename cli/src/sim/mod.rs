//! The offline replay behind `prefetch backtest` and `prefetch tune`: a recorded log of query
//! events run, in event time, through the real analyzer model and warmer policy against a
//! simulated cache, next to three baselines on the same log with the same semantics.
//!
//! # Layout
//! - `trace.rs`: [`Trace`], the log in memory (ids instead of strings, sorted by time), read
//!   from JSON lines with line-numbered errors.
//! - `cache.rs`: [`SimCache`], the simulated cache and its [`Tally`] (hits, warms, fetches,
//!   precision). The simulation's semantics are stated there.
//! - `replay.rs`: [`replay`], one strategy over one trace: the tick schedule, the model and the
//!   policy (fed the simulated cache's expiries), warms as they happen.
//! - `original.rs`: the original tool's predictor, a baseline.
//! - `oracle.rs`: the future-seeing upper bound.
//! - `report.rs`: the figures of a backtest, the targets, text and JSON.
//! - `svg.rs`: the hit-rate timeline and the tune frontier, hand-written SVG.
//!
//! One event: the replay runs every tick due before the event (model tick → policy plan with
//! the cache's expiries → warms), serves the event from the cache (hit, or a miss that
//! fetches), records it in the model with that outcome as `hit`, and warms what the model's
//! event-driven predictions ask for, at the event's time.

mod cache;
#[cfg(test)]
mod logs_tests;
mod oracle;
mod original;
mod replay;
pub mod report;
pub mod svg;
#[cfg(test)]
mod tests;
mod trace;

pub use cache::{Reliability, SimCache, Tally};
pub use oracle::Oracle;
pub use original::{Original, WINDOW};
pub use replay::{replay, timeline_bucket_ms, HitFlags, Run, SimConfig, Strategy, Warm};
pub use trace::{Ev, Trace, TraceError, TraceKey, NO_CLIENT};

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// A progress bar on standard error when it is a terminal, else nothing.
pub fn progress(len: u64, what: &str) -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{msg:>12} {bar:40} {pos}/{len} ({eta})")
                .expect("static template"),
        );
        bar.set_message(what.to_owned());
        bar
    })
}
