//! `prefetch demo-traffic`: a deterministic generator of realistic query events.
//!
//! The core is pure: [`Generator::new`] takes [`Params`] and yields [`QueryEvent`]s in event-time
//! order, reading no clock and doing no I/O, so a seed names a trace (issue #7's backtests replay
//! such logs). [`run`] wraps it for the command line: a JSON-lines file, or batches posted to an
//! ingest, optionally paced on the wall clock.
//!
//! # Layout
//! - `params.rs`: [`Params`] (the knobs), their checks ([`ParamsError`]) and the planned
//!   [`Budget`] of events per source.
//! - `calendar.rs`: market time — [`Market`] (New York by default, any zone and session, or
//!   around the clock), [`market_intensity`] (open and close spikes, quiet nights and weekends,
//!   DST-correct) and the default start.
//! - `shape.rs`: [`Shape`], the structure beyond the headline knobs (mixes, periods, sessions,
//!   bursts, scans, clients, a regime change).
//! - `family.rs`: the trace family of issue #13 ([`family::member`]) and its dev/eval seeds.
//! - `rng.rs`: the seeded random stream and the Zipf sampler, written out so a seed means the
//!   same trace on every build.
//! - `sources.rs`: the traffic sources — one-off lookups, dashboard widgets, scheduled scans,
//!   analyst sessions, news bursts — each with its own clock and random stream; the widgets of
//!   dashboards and scans are in `sources/widget.rs`.
//! - `generator.rs`: [`Generator`], a priority queue of the sources' next firing times.
//! - `args.rs`: [`DemoArgs`], the flags.
//! - `output.rs`: JSON lines to a file or stdout, and the run's [`Summary`].
//! - `send.rs`: NDJSON batches to `POST {URL}/v1/events`.
//! - `app.rs`: `--via-cache`, behaving as the app against a warmer's read-through cache (the
//!   warmer publishes each query with the true hit or miss); also drives `prefetch up --demo`.
//! - `upstream.rs`: the demo upstream data API (`prefetch demo-upstream`, and in `up --demo`).
//!
//! One event: the generator pops the source due first (say a session at 14:31:07.250), the
//! source emits `(ticker, module, client)` and schedules its next firing (chart, 20 s later),
//! the generator wraps the emission in a `QueryEvent` stamped with the popped time, and `run`
//! writes its `to_json` line or adds it to the next batch.

mod app;
mod args;
mod calendar;
pub mod family;
#[cfg(test)]
mod family_tests;
mod generator;
mod output;
mod params;
mod rng;
mod send;
mod shape;
mod sources;
#[cfg(test)]
mod tests;
mod upstream;

pub use app::{ask_cache, AppCounters, Clock, MAX_IN_FLIGHT};
pub use args::{parse_span, parse_start, DemoArgs};
pub use calendar::{default_start, market_intensity, Market, MARKET_TZ};
pub use generator::{Generator, Origin};
pub use output::{write_lines, CacheAnswers, Summary};
pub use params::{Budget, Params, ParamsError, MAX_DURATION_DAYS, MAX_TICKERS};
pub use send::{send, Pace, SendError};
pub use shape::{PerModule, Shape};
pub use sources::{dashboard_period, MODULES};
pub use upstream::{
    body as upstream_body, serve_upstream, upstream_router, UpstreamArgs, UpstreamBehaviour,
    UpstreamCounters,
};

use chrono::Utc;
use prefetch_common::contract::QueryEvent;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

/// Why `demo-traffic` failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The flags describe no valid trace (a usage error).
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// The output file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Ingest could not be reached or refused events.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The async runtime for `--to` could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
}

/// Runs `demo-traffic`: generates the trace the flags describe and writes or posts it. The
/// wall clock is read once, for the default start (and the realtime mapping).
pub fn run(args: &DemoArgs) -> Result<Summary, DemoError> {
    let now = Utc::now();
    let params = args.params(now);
    if let Some(seed) = args.family_seed {
        let member = family::member(seed);
        if let Some(path) = &args.family_config {
            let json = serde_json::to_vec_pretty(&member.live_config()).expect("config serialises");
            std::fs::write(path, json)
                .map_err(|source| DemoError::Write { path: path.clone(), source })?;
        }
        eprintln!(
            "family member {seed} ({} set): {}\nreplay as evaluated: prefetch backtest --events FILE --config CONFIG{}{}",
            if family::EVAL_SEEDS.contains(&seed) { "evaluation" } else if family::DEV_SEEDS.contains(&seed) { "development" } else { "no" },
            member.describe(),
            if args.family_config.is_none() { " (write CONFIG with --family-config)" } else { "" },
            if member.hit_flags { "" } else { " --hit-flags none" },
        );
    }
    let generator = Generator::new(&params)?;
    let mut summary = Summary::default();
    let started = Instant::now();
    let events = std::iter::from_fn({
        let mut g = generator;
        move || g.next_with_origin()
    });
    match (&args.out, &args.to) {
        (Some(path), _) if path.as_os_str() == "-" => {
            write_lines(events, io::stdout().lock(), &mut summary)
                .map_err(|source| DemoError::Write { path: path.clone(), source })?;
        }
        (Some(path), _) => {
            let file = File::create(path)
                .map_err(|source| DemoError::Write { path: path.clone(), source })?;
            write_lines(events, file, &mut summary)
                .map_err(|source| DemoError::Write { path: path.clone(), source })?;
        }
        (None, Some(url)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(DemoError::Runtime)?;
            runtime.block_on(async {
                let pace = if args.realtime {
                    let now = Utc::now();
                    Pace::Realtime {
                        shift: now - params.start,
                        origin: now,
                        at: tokio::time::Instant::now(),
                    }
                } else {
                    Pace::AsFastAsAccepted
                };
                send(events, url, args.batch_size as usize, pace, &mut summary).await
            })?;
        }
        (None, None) => {
            let url = args.via_cache.as_deref().expect("clap requires --out, --to or --via-cache");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(DemoError::Runtime)?;
            let counters = std::sync::Arc::new(AppCounters::default());
            runtime.block_on(async {
                let stop = tokio_util::sync::CancellationToken::new();
                let on_signal = stop.clone();
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    on_signal.cancel();
                });
                let clock =
                    Clock { origin: params.start, at: tokio::time::Instant::now(), speed: 1.0 };
                ask_cache(events, url, clock, counters.clone(), &mut summary, stop).await
            })?;
            let (hits, misses, errors) = counters.snapshot();
            summary.cache = Some(CacheAnswers { hits, misses, errors });
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Every event of `params`, collected (for tests and small traces).
pub fn generate(params: &Params) -> Result<Vec<QueryEvent>, ParamsError> {
    Ok(Generator::new(params)?.collect())
}
