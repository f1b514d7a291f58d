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

pub mod api;
pub mod backtest;
pub mod demo;
pub mod sim;
pub mod tune;
pub mod up;

use clap::{Parser, Subcommand};

/// Smart Prefetch command line.
#[derive(Debug, Parser)]
#[command(name = "prefetch", version, about, arg_required_else_help = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The original tool's commands, against a running pipeline's API.
    #[command(flatten)]
    Api(api::ApiCommand),
    /// Generate realistic, reproducible query traffic to a JSON-lines file or an ingest.
    #[command(name = "demo-traffic")]
    DemoTraffic(demo::DemoArgs),

    /// Run ingest, analyzer and warmer in one process (embedded Kafka unless --brokers);
    /// `--demo` adds a demo data API and app traffic and shows the hit rate rising.
    Up(up::UpArgs),

    /// Run the demo upstream data API alone (what `up --demo` runs for the warmer to fetch).
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
    Backtest(backtest::BacktestArgs),

    /// Replay a log over a grid of top_n × min_confidence × horizon and recommend a setting
    /// for a fetch budget.
    ///
    /// Prints hit rate against upstream fetches for every setting (the model, as `backtest`
    /// replays it), marks the frontier (no other setting has a better hit rate for as few
    /// fetches), and recommends the best hit rate within the budget, with the config patch.
    Tune(tune::TuneArgs),

    /// Print a shell completion script, e.g. `prefetch completions bash >
    /// /etc/bash_completion.d/prefetch` or `prefetch completions zsh > ~/.zfunc/_prefetch`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}
