//! Issue #7's target on several generated traces: the model reaches at least half of the
//! oracle's hit-rate gain over no warming, with at most 1.3× the upstream fetches of no
//! warming, and at least twice the original algorithm's gain.
//!
//! Two days of demo traffic per trace, about 7M events in all: run it in release, where it takes
//! a few minutes (BENCHMARKS.md, "Backtest (issue #7)", has the figures):
//!
//! ```sh
//! cargo run --release -p prefetch --example backtest_targets
//! ```
//!
//! It prints the table and exits non-zero when a trace misses a target. (A measurement, not a
//! test: `cargo test` in debug would take the better part of an hour.)

use chrono::{DateTime, Duration, Utc};
use prefetch::backtest::backtest;
use prefetch::demo::{Generator, Params};
use prefetch::sim::{SimConfig, Trace};
use prefetch_common::config::LiveConfig;

/// The traces of BENCHMARKS.md: (name, knobs), each two days from Monday 2026-03-09 00:00 New York.
fn traces() -> Vec<(&'static str, Params)> {
    let base = Params {
        start: DateTime::parse_from_rfc3339("2026-03-09T00:00:00-04:00")
            .unwrap()
            .with_timezone(&Utc),
        duration: Duration::days(2),
        ..Params::default()
    };
    vec![
        ("A default", Params { seed: 1, ..base.clone() }),
        (
            "B flat skew, 2k tickers",
            Params { seed: 2, zipf_s: 0.7, tickers: 2_000, ..base.clone() },
        ),
        (
            "C steep skew, 60 dashboards",
            Params { seed: 3, zipf_s: 1.4, tickers: 200, dashboards: 60, ..base.clone() },
        ),
        (
            "D sessions",
            Params {
                seed: 4,
                sessions_per_hour: 2_000.0,
                dashboards: 5,
                tickers: 1_000,
                ..base.clone()
            },
        ),
        (
            "E bursts, 5k tickers",
            Params { seed: 5, bursts_per_day: 30.0, zipf_s: 1.0, tickers: 5_000, ..base },
        ),
    ]
}

fn main() {
    // One setting for every trace (not tuned to any): the defaults with a 120 s horizon.
    let cfg =
        SimConfig { live: LiveConfig { horizon_s: 120, ..LiveConfig::default() }, tick_ms: 5_000 };
    println!("| trace | events | no warming | original | oracle | model | model/oracle gain | fetches/no warming |");
    println!("|---|---:|---|---|---|---|---:|---:|");
    let mut missed = Vec::new();
    for (name, params) in traces() {
        let trace = Trace::collect(Generator::new(&params).unwrap());
        let report = backtest(&trace, &cfg, None, true).unwrap();
        let t = report.targets.expect("every baseline ran");
        let cell = |s: &str| {
            let r = &report.strategies[s].tally;
            format!("{:.2}% / {}", 100.0 * r.hit_rate, r.upstream_fetches)
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.2} | {:.3} |",
            report.events,
            cell("no_warming"),
            cell("original"),
            cell("oracle"),
            cell("model"),
            t.share_of_oracle_gain,
            t.fetch_ratio
        );
        if !t.met {
            missed.push(format!("{name}: {t:?}"));
        }
    }
    if !missed.is_empty() {
        eprintln!("targets missed:\n{}", missed.join("\n"));
        std::process::exit(1);
    }
}
