//! The `prefetch` command line. Its commands (cache-status, prefetch-stats, prefetch-warmup,
//! prefetch-config, predictions, up, backtest, tune) arrive with issues #5, #6 and #7.
use clap::Parser;

/// Smart Prefetch command line.
#[derive(Parser)]
#[command(name = "prefetch", version, about)]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    eprintln!("prefetch: no commands yet (see issues #5, #6, #7); the ingest binary is ready");
    std::process::ExitCode::FAILURE
}
