use ingest::Config;
use prefetch_common::telemetry;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let (cfg, renamed) = prefetch_common::env::parse::<Config>();
    telemetry::init(&cfg.log);
    prefetch_common::env::warn_renamed(&renamed);
    let shutdown = telemetry::cancel_on_signal();
    let summary = match ingest::run(cfg, shutdown).await {
        Ok(summary) => summary,
        Err(e) => return telemetry::exit_code("ingest", Err(e)),
    };
    let Some(summary) = summary else { return telemetry::exit_code("ingest", Ok(())) };
    // A replay: the summary on stdout for scripts, non-zero when anything was not recorded.
    println!("{}", serde_json::to_string(&summary).expect("summary serialises"));
    if summary.is_clean() {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "ingest: {} invalid line(s) skipped, {} event(s) not acknowledged",
        summary.invalid, summary.failed
    );
    ExitCode::FAILURE
}
