//! `prefetch`: parse the command line, run the command, report how it ended.
use clap::Parser;
use prefetch::demo::{self, DemoError};
use prefetch::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::DemoTraffic(args) => match demo::run(&args) {
            Ok(summary) => {
                let dest = match (&args.out, &args.to) {
                    (Some(path), _) if path.as_os_str() == "-" => "standard output".to_owned(),
                    (Some(path), _) => path.display().to_string(),
                    (_, Some(url)) => format!("{url}/v1/events"),
                    _ => String::new(),
                };
                eprintln!("demo-traffic: {summary}\nwritten to {dest}");
                ExitCode::SUCCESS
            }
            // A trace the flags cannot describe is a usage error, reported like clap's (exit 2).
            Err(DemoError::Params(e)) => {
                eprintln!("error: {e}\n\nFor more information, try 'prefetch demo-traffic --help'.");
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("demo-traffic: error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
