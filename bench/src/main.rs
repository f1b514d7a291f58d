//! Benchmarks, each side by side with the raw limit on the same machine in the same run.
//! Figures and the commands that produced them are in BENCHMARKS.md.

mod analyzer;
mod hash;
mod ingest;
mod restart;
mod tick;
mod warmer;

use clap::{Parser, Subcommand};

/// Smart Prefetch benchmarks (run them in release, against a real broker).
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Batched NDJSON ingest vs a plain producer; single-event latency.
    Ingest(ingest::Args),
    /// Analyzer fold rate from a pre-filled topic vs a plain consumer draining it.
    AnalyzerThroughput(analyzer::ThroughputArgs),
    /// Model tick duration and resident memory at many live keys (no Kafka).
    AnalyzerKeys(analyzer::KeysArgs),
    /// Restart to first prediction with N events of history: checkpoint restore vs full replay.
    AnalyzerRestart(restart::RestartArgs),
    /// Tick cost, lazy tick vs full walk: a 1M-event backtest replay and live ticks at 1M keys.
    Tick(tick::Args),
    /// Crafted hash collisions vs random tickers through the fold: unseeded vs seeded hasher.
    Hash(hash::Args),
    /// Warms/s and prediction → cache latency vs plain GET-and-write against a slow upstream.
    Warmer(warmer::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Ingest(a) => ingest::run(a).await,
        Bench::AnalyzerThroughput(a) => analyzer::throughput(a).await,
        Bench::AnalyzerKeys(a) => analyzer::keys(a),
        Bench::AnalyzerRestart(a) => restart::restart(a).await,
        Bench::Tick(a) => tick::run(a),
        Bench::Hash(a) => hash::run(a),
        Bench::Warmer(a) => warmer::run(a).await,
    }
}
