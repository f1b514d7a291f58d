use clap::Parser;
use prefetch_common::telemetry;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use warmer::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = Config::parse();
    telemetry::init(&cfg.log);
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        telemetry::shutdown_signal().await;
        on_signal.cancel();
    });
    match warmer::run(cfg, shutdown).await {
        Ok(()) => {
            tracing::info!("Warmer stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "Warmer failed.");
            eprintln!("warmer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
