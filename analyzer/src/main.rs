use analyzer::service::{self, Config};
use clap::Parser;
use prefetch_common::telemetry;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

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
    match service::run(cfg, shutdown).await {
        Ok(()) => {
            tracing::info!("Analyzer stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "Analyzer failed.");
            eprintln!("analyzer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
