//! Benchmarks, each side by side with the raw limit on the same machine in the same run.
//! Figures and the commands that produced them are in BENCHMARKS.md.

mod analyzer;
mod checkpoint_read;
mod cpu;
mod fold;
mod fold_analyzer;
mod hash;
mod ingest;
mod latency;
mod restart;
mod serve;
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
    AnalyzerThroughput(fold::ThroughputArgs),
    /// Model tick duration and resident memory at many live keys (no Kafka).
    AnalyzerKeys(analyzer::KeysArgs),
    /// Restart to first prediction with N events of history: checkpoint restore vs full replay.
    AnalyzerRestart(restart::RestartArgs),
    /// Checkpoint reads of one restore pass: a client per partition vs one client per pass.
    CheckpointRead(checkpoint_read::Args),
    /// Tick cost, lazy tick vs full walk: a 1M-event backtest replay and live ticks at 1M keys.
    Tick(tick::Args),
    /// Crafted hash collisions vs random tickers through the fold: unseeded vs seeded hasher.
    Hash(hash::Args),
    /// Warms/s and prediction → cache latency vs plain GET-and-write against a slow upstream.
    Warmer(warmer::Args),
    /// Event → warm latency: query events posted to ingest, their learned follow-up predicted by
    /// the analyzer and written to the cache by the warmer, on a real broker.
    Latency(latency::Args),
    /// (Internal) ingest in a process of its own, for the ingest bench's CPU per event.
    #[command(hide = true)]
    ServeIngest(serve::ServeArgs),
    /// (Internal) the analyzer in a process of its own, for analyzer-throughput.
    #[command(hide = true)]
    ServeAnalyzer(serve::ServeArgs),
    /// (Internal) the plain consumer in a process of its own, for analyzer-throughput.
    #[command(hide = true)]
    DrainRaw(fold::DrainRawArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().bench {
        Bench::Ingest(a) => ingest::run(a).await,
        Bench::AnalyzerThroughput(a) => fold::throughput(a).await,
        Bench::AnalyzerKeys(a) => analyzer::keys(a),
        Bench::AnalyzerRestart(a) => restart::restart(a).await,
        Bench::CheckpointRead(a) => checkpoint_read::run(a).await,
        Bench::Tick(a) => tick::run(a),
        Bench::Hash(a) => hash::run(a),
        Bench::Warmer(a) => warmer::run(a).await,
        Bench::Latency(a) => latency::run(a).await,
        Bench::ServeIngest(a) => serve::serve(serve::Service::Ingest, a).await,
        Bench::ServeAnalyzer(a) => serve::serve(serve::Service::Analyzer, a).await,
        Bench::DrainRaw(a) => fold::drain_raw_main(a).await,
    }
}
