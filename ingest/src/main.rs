use clap::Parser;
use ingest::Config;
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
    match ingest::run(cfg, shutdown).await {
        Ok(Some(summary)) => {
            println!("{}", serde_json::to_string(&summary).expect("summary serialises"));
            if summary.is_clean() {
                ExitCode::SUCCESS
            } else {
                eprintln!("ingest: {} invalid line(s) skipped, {} event(s) not acknowledged", summary.invalid, summary.failed);
                ExitCode::FAILURE
            }
        }
        Ok(None) => {
            tracing::info!("Ingest stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "Ingest failed.");
            eprintln!("ingest: {e:#}");
            ExitCode::FAILURE
        }
    }
}
