//! The `prefetch` command line, as a library so that other crates and tests can call its parts
//! (issue #7's backtests generate their logs with [`demo::Generator`]).
//!
//! # Layout
//! - `lib.rs`: [`Cli`] and its [`Command`]s.
//! - `main.rs`: parses the command line, runs the command, reports how it ended.
//! - `demo/`: `demo-traffic`, the deterministic generator of realistic query events and its
//!   outputs (JSON lines, or NDJSON batches to an ingest); the demo upstream data API
//!   (`demo-upstream`). See [`demo`].
//! - `up/`: `up`, the three services in one process, with an embedded Kafka and `--demo`.
//!   See [`up`].
//! - `sim/`: the offline replay of a log through the model and the warmer policy against a
//!   simulated cache, and its baselines; `backtest/` and `tune/` are its two commands.
//!
//! - `api/`: the original tool's commands (`cache-status`, `prefetch-stats`, `prefetch-warmup`,
//!   `prefetch-config`, `predictions`, `record-query`), clients of the front door's HTTP API.
//!
//! Everything but `api/` and `completions` is the default feature `full`, which brings
//! librdkafka and polars; `cargo install --path cli --no-default-features` builds the thin
//! client without them.

pub mod api;
#[cfg(feature = "full")]
pub mod backtest;
#[cfg(feature = "full")]
pub mod demo;
#[cfg(feature = "full")]
pub mod sim;
#[cfg(feature = "full")]
pub mod tune;
#[cfg(feature = "full")]
pub mod up;

use clap::{Parser, Subcommand};

/// The commands of the default feature `full`, which the thin client lacks.
pub const FULL_ONLY: &[&str] = &["demo-traffic", "up", "demo-upstream", "backtest", "tune"];

/// What the thin client says about the commands it lacks (in `--help`, and when one is asked for).
pub const THIN_NOTE: &str = "This is the thin client (built without the `full` feature): `up`, \
`backtest`, `tune`, `demo-traffic` and `demo-upstream` are in the full build, \
`cargo install --path cli` from the repository (the README says what it needs to build).";

/// Smart Prefetch command line.
#[derive(Debug, Parser)]
#[command(name = "prefetch", version, about, arg_required_else_help = true)]
#[cfg_attr(not(feature = "full"), command(after_help = THIN_NOTE))]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// One value per process: boxing the API commands (large next to `completions` in the thin
// client) would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The original tool's commands, against a running pipeline's API.
    #[command(flatten)]
    Api(api::ApiCommand),
    /// Generate realistic, reproducible query traffic to a JSON-lines file or an ingest.
    #[cfg(feature = "full")]
    #[command(name = "demo-traffic")]
    DemoTraffic(demo::DemoArgs),

    /// Run ingest, analyzer and warmer in one process (embedded Kafka unless --brokers);
    /// `--demo` adds a demo data API and app traffic and shows the hit rate rising.
    #[cfg(feature = "full")]
    Up(up::UpArgs),

    /// Run the demo upstream data API alone (what `up --demo` runs for the warmer to fetch).
    #[cfg(feature = "full")]
    #[command(name = "demo-upstream")]
    DemoUpstream(demo::UpstreamArgs),

    /// Replay a recorded log through the model and warmer policy against a simulated cache;
    /// report hit rate and upstream fetches next to no warming, the original and an oracle.
    ///
    /// The same analyzer model and warmer policy code as the live services run in event time:
    /// ticks every --tick-seconds, event-driven predictions at each event. Simulation: a key is
    /// (ticker, module); a fetch stores it until fetch time + the module's TTL; a query at t hits
    /// when its key is stored with expiry > t, else it misses and fetches on demand; a warm
    /// fetches at its time, also when the key is still stored (a refresh). upstream_fetches =
    /// misses + warms; warm_precision = warms whose copy served a hit / warms. A decision at t
    /// sees only events up to t (the oracle excepted: it is the upper bound).
    #[cfg(feature = "full")]
    Backtest(backtest::BacktestArgs),

    /// Replay a log over a grid of top_n × min_confidence × horizon and recommend a setting
    /// for a fetch budget.
    ///
    /// Prints hit rate against upstream fetches for every setting (the model, as `backtest`
    /// replays it), marks the frontier (no other setting has a better hit rate for as few
    /// fetches), and recommends the best hit rate within the budget, with the config patch.
    #[cfg(feature = "full")]
    Tune(tune::TuneArgs),

    /// Print a shell completion script, e.g. `prefetch completions bash >
    /// /etc/bash_completion.d/prefetch` or `prefetch completions zsh > ~/.zfunc/_prefetch`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}
