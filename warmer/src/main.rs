use clap::Parser;
use prefetch_common::telemetry;
use std::process::ExitCode;
use warmer::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = Config::parse();
    telemetry::init(&cfg.log);
    let shutdown = telemetry::cancel_on_signal();
    telemetry::exit_code("warmer", warmer::run(cfg, shutdown).await)
}
