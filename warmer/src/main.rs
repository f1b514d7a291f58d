use prefetch_common::telemetry;
use std::process::ExitCode;
use warmer::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let (cfg, renamed) = prefetch_common::env::parse::<Config>();
    telemetry::init(&cfg.log);
    prefetch_common::env::warn_renamed(&renamed);
    let shutdown = telemetry::cancel_on_signal();
    telemetry::exit_code("warmer", warmer::run(cfg, shutdown).await)
}
