//! `prefetch`: parse the command line, run the command, report how it ended.
//!
//! The commands of the default feature `full` run in `mod full`; the thin client (without it)
//! has the API commands and `completions` only.
use prefetch::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    #[cfg(not(feature = "full"))]
    if let Some(cmd) = std::env::args().nth(1).filter(|a| prefetch::FULL_ONLY.contains(&a.as_str()))
    {
        eprintln!("error: `{cmd}` is not in this build of prefetch.\n\n{}", prefetch::THIN_NOTE);
        return ExitCode::from(2);
    }
    let (cli, renamed) = prefetch_common::env::parse::<Cli>();
    for r in renamed {
        eprintln!("warning: {} is deprecated; set {} instead", r.old, r.new);
    }
    match cli.command {
        Command::Api(cmd) => api(&cmd),
        #[cfg(feature = "full")]
        Command::DemoTraffic(args) => full::demo_traffic(&args),
        #[cfg(feature = "full")]
        Command::Up(args) => full::up(args),
        #[cfg(feature = "full")]
        Command::DemoUpstream(args) => full::demo_upstream(args),
        #[cfg(feature = "full")]
        Command::Backtest(args) => full::backtest(&args),
        #[cfg(feature = "full")]
        Command::Tune(args) => full::tune(&args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "prefetch", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
}

/// The original tool's commands: the answer on stdout, a failure on stderr with its exit code
/// (1 refused, 2 usage, 3 unreachable).
fn api(cmd: &prefetch::api::ApiCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(prefetch::api::run(cmd)) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// The commands of the default feature `full`: they run services, replays and demo traffic.
#[cfg(feature = "full")]
mod full {
    use prefetch::demo::{self, DemoError};
    use prefetch_common::telemetry;
    use std::process::ExitCode;

    /// `prefetch demo-traffic`: the summary and where it went on stderr.
    pub fn demo_traffic(args: &demo::DemoArgs) -> ExitCode {
        match demo::run(args) {
            Ok(summary) => {
                let dest = match (&args.out, &args.to) {
                    (Some(path), _) if path.as_os_str() == "-" => "standard output".to_owned(),
                    (Some(path), _) => path.display().to_string(),
                    (_, Some(url)) => format!("{url}/v1/events"),
                    _ => format!(
                        "asked of {}/v1/cache",
                        args.via_cache.as_deref().unwrap_or_default()
                    ),
                };
                eprintln!("demo-traffic: {summary}\nwritten to {dest}");
                ExitCode::SUCCESS
            }
            // A trace the flags cannot describe is a usage error, reported like clap's (exit 2).
            Err(DemoError::Params(e)) => {
                eprintln!(
                    "error: {e}\n\nFor more information, try 'prefetch demo-traffic --help'."
                );
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("demo-traffic: error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// Exit code and message of a failed backtest or tune: a bad config or flag is a usage error
    /// (2, like clap's), anything else 1.
    fn sim_failure(command: &str, e: &prefetch::backtest::BacktestError) -> ExitCode {
        eprintln!("{command}: error: {e}");
        match e {
            prefetch::backtest::BacktestError::Config(_) => ExitCode::from(2),
            _ => ExitCode::FAILURE,
        }
    }

    /// `prefetch backtest`: the report on stdout (a table, or JSON with --json).
    pub fn backtest(args: &prefetch::backtest::BacktestArgs) -> ExitCode {
        print_report("backtest", prefetch::backtest::run(args).map(|r| (r.text(), r)), args.json)
    }

    /// `prefetch tune`: the grid and the recommendation on stdout.
    pub fn tune(args: &prefetch::tune::TuneArgs) -> ExitCode {
        print_report("tune", prefetch::tune::run(args).map(|r| (r.text(), r)), args.json)
    }

    /// Prints a simulation's report as its table, or as JSON with `json`; or reports its failure.
    fn print_report<R: serde::Serialize>(
        command: &str,
        result: Result<(String, R), prefetch::backtest::BacktestError>,
        json: bool,
    ) -> ExitCode {
        match result {
            Ok((_, report)) if json => {
                println!("{}", serde_json::to_string_pretty(&report).expect("a report serialises"));
                ExitCode::SUCCESS
            }
            Ok((text, _)) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => sim_failure(command, &e),
        }
    }

    /// `prefetch up`: the services' logs go to stderr (quiet by default), the progress to stdout.
    pub fn up(args: prefetch::up::UpArgs) -> ExitCode {
        let log = telemetry::LogArgs {
            log_format: telemetry::LogFormat::Text,
            log_level: Some(args.log_level.clone()),
        };
        telemetry::init(&log);
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("up: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = runtime.block_on(async {
            let shutdown = telemetry::cancel_on_signal();
            // The first ctrl-c stops everything cleanly; a second one does not wait for that.
            tokio::spawn(async {
                let _ = tokio::signal::ctrl_c().await;
                let _ = tokio::signal::ctrl_c().await;
                eprintln!("up: second ctrl-c; exiting without waiting");
                std::process::exit(130);
            });
            prefetch::up::run(args, shutdown, |_| {}).await
        });
        // The services detach their Kafka consumers (they are never waited for); do not wait for
        // their threads here either.
        runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        match result {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("up: error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }

    /// `prefetch demo-upstream`: serves until ctrl-c or SIGTERM.
    pub fn demo_upstream(args: demo::UpstreamArgs) -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("demo-upstream: cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result: anyhow::Result<()> = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
            eprintln!(
                "demo-upstream: listening on http://{}/{{module}}/{{ticker}}",
                listener.local_addr()?
            );
            let counters = std::sync::Arc::new(demo::UpstreamCounters::default());
            demo::serve_upstream(listener, args.behaviour, counters, telemetry::cancel_on_signal())
                .await?;
            Ok(())
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo-upstream: error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}
