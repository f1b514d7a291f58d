//! `prefetch backtest`: replays a recorded log through the analyzer's model and the warmer's
//! policy against a simulated cache, next to three baselines (no warming, the original
//! algorithm, an oracle), and reports hit rate against upstream fetches.
//!
//! # Layout
//! - `mod.rs`: [`BacktestArgs`] (also the flags `tune` shares: [`ReplayArgs`]), [`run`].
//!
//! The simulation itself is [`crate::sim`].

use crate::sim::report::{Report, SpendReport, Targets};
use crate::sim::svg::{self, Series};
use crate::sim::{self, HitFlags, Run, SimConfig, Strategy, Trace, TraceError, Warm};
use clap::Args;
use prefetch_common::budget::Budget;
use prefetch_common::config::LiveConfig;
use prefetch_common::contract::Module;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The log and the configuration a replay runs with (shared by `backtest` and `tune`).
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The recorded log of query events (`ticker`, `module`, `ts`, `client`; `hit` is ignored,
    /// the simulated cache decides it): NDJSON (.jsonl/.ndjson/.json), CSV with a header row
    /// (.csv) or Parquet (.parquet), read by a polars lazy scan of those columns. Rows are
    /// validated as ingest validates events; invalid rows are skipped, counted and reported on
    /// standard error (and in --json). Replayed in time order.
    #[arg(long, value_name = "FILE")]
    pub events: PathBuf,

    /// A live-config document (the JSON of the `prefetch.config` topic: enabled, top_n,
    /// min_confidence, hour_weights, market_tz, horizon_s, ttl_s, default_ttl_s). Flags
    /// override it; without it the defaults apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Seconds between analyzer ticks in event time (the live analyzer's --tick-interval).
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub tick_seconds: f64,

    /// Time to live of one module's entries, as MODULE=DURATION (repeatable). Built in:
    /// price=60, news=300, fundamentals=86400.
    #[arg(long = "ttl", value_name = "MODULE=DURATION", value_parser = parse_ttl)]
    pub ttls: Vec<(Module, u64)>,

    /// Time to live of modules without a --ttl, seconds (default 300).
    #[arg(long, value_name = "SECONDS")]
    pub default_ttl: Option<u64>,
}

/// The flags of `prefetch backtest` (its help text is the `Backtest` command's doc).
#[derive(Debug, Clone, Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub replay: ReplayArgs,

    /// Most keys one tick (or one event's follow-ups) warms; overrides the config's top_n.
    #[arg(long, value_name = "N")]
    pub top_n: Option<usize>,

    /// Least confidence a prediction needs to be warmed; overrides the config's min_confidence.
    #[arg(long, value_name = "X")]
    pub min_confidence: Option<f64>,

    /// How far ahead predictions look, seconds; overrides the config's horizon_s.
    #[arg(long, value_name = "SECONDS")]
    pub horizon: Option<u64>,

    /// The fetch budget, overriding the config's: a ratio such as 1.2 (all upstream calls at
    /// most 1.2x those of no warming), a rate such as 120/min, or off. The report shows what
    /// was spent against it.
    #[arg(long, value_name = "RATIO|N/min|off", value_parser = parse_budget)]
    pub budget: Option<Budget>,

    /// What the replayed producer reports as each event's `hit`: `cache` (the simulated
    /// cache's answer, as the warmer's read-through reports it) or `none` (always false, as a
    /// simple integration that does not know its cache sends).
    #[arg(long, value_name = "FLAGS", default_value = "cache")]
    pub hit_flags: HitFlags,

    /// Write every warm decision of the model as a JSON line {ts, ticker, module, confidence}.
    #[arg(long, value_name = "FILE")]
    pub warms_out: Option<PathBuf>,

    /// Write an SVG chart of the hit rate over time of the model and the baselines.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Print the report as one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Replay the model only (no baselines, no targets): faster.
    #[arg(long)]
    pub model_only: bool,
}

/// Why a backtest or tune could not run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The log could not be read.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The config file could not be read.
    #[error("cannot read {path}: {source}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The config (file and flags together) is invalid; a usage error.
    #[error("config: {0}")]
    Config(String),
    /// An output file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

fn parse_budget(s: &str) -> Result<Budget, String> {
    s.parse().map_err(|e: prefetch_common::budget::BudgetError| e.0)
}

fn parse_ttl(s: &str) -> Result<(Module, u64), String> {
    let (m, secs) = prefetch_common::config::parse_ttl_spec(s)?;
    let module = Module::parse(&m).map_err(|e| format!("{s:?}: {e}"))?;
    if secs == 0 {
        return Err(format!("{s:?}: a TTL must be at least 1 second"));
    }
    Ok((module, secs))
}

impl ReplayArgs {
    /// The live config: the file (or the defaults), then the flags, validated.
    pub fn live_config(&self) -> Result<LiveConfig, BacktestError> {
        let mut cfg = match &self.config {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|source| BacktestError::ConfigFile { path: path.clone(), source })?;
                LiveConfig::from_json(&bytes)
                    .map_err(|e| BacktestError::Config(format!("{}: {e}", path.display())))?
            }
            None => LiveConfig::default(),
        };
        for (m, s) in &self.ttls {
            cfg.ttl_s.insert(m.as_str().to_owned(), *s);
        }
        if let Some(d) = self.default_ttl {
            cfg.default_ttl_s = d;
        }
        Ok(cfg)
    }

    /// The tick interval, ms.
    pub fn tick_ms(&self) -> Result<i64, BacktestError> {
        if !(self.tick_seconds.is_finite()
            && self.tick_seconds >= 0.001
            && self.tick_seconds <= 86_400.0)
        {
            return Err(BacktestError::Config(format!(
                "--tick-seconds {}: must be between 0.001 and 86400",
                self.tick_seconds
            )));
        }
        Ok((self.tick_seconds * 1000.0).round() as i64)
    }

    /// Reads the log, with a progress bar on a terminal.
    pub fn trace(&self) -> Result<Trace, BacktestError> {
        let bar = sim::progress(0, "reading");
        let trace = Trace::read(&self.events, bar.as_ref())?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if trace.invalid_rows > 0 {
            eprintln!(
                "{}: skipped {} invalid rows of {} (the contract's rules, as ingest applies them):\n  {}",
                self.events.display(),
                trace.invalid_rows,
                trace.invalid_rows + trace.events.len(),
                trace.invalid_examples.join("\n  ")
            );
        }
        Ok(trace)
    }
}

/// Validates a config assembled from a file and flags.
pub fn checked(cfg: LiveConfig, tick_ms: i64) -> Result<SimConfig, BacktestError> {
    cfg.validate().map_err(|e| BacktestError::Config(e.to_string()))?;
    Ok(SimConfig { live: cfg, tick_ms, hit_flags: Default::default() })
}

fn write_err(path: &Path) -> impl Fn(std::io::Error) -> BacktestError + '_ {
    move |source| BacktestError::Write { path: path.to_owned(), source }
}

/// Runs the backtest the flags describe and returns its report (already written to the
/// `--warms-out` and `--svg` files).
pub fn run(args: &BacktestArgs) -> Result<Report, BacktestError> {
    let mut live = args.replay.live_config()?;
    if let Some(n) = args.top_n {
        live.top_n = n;
    }
    if let Some(x) = args.min_confidence {
        live.min_confidence = x;
    }
    if let Some(h) = args.horizon {
        live.horizon_s = h;
    }
    if let Some(b) = args.budget {
        live.budget = b;
    }
    let mut cfg = checked(live, args.replay.tick_ms()?)?;
    cfg.hit_flags = args.hit_flags;
    let trace = args.replay.trace()?;
    let report = backtest(&trace, &cfg, args.warms_out.as_deref(), !args.model_only)?;
    if let Some(path) = &args.svg {
        std::fs::write(path, chart(&report)).map_err(write_err(path))?;
    }
    Ok(report)
}

/// Replays `trace` through the model (writing its warms to `warms_out`) and, with
/// `baselines`, through the three baselines, on two threads.
pub fn backtest(
    trace: &Trace,
    cfg: &SimConfig,
    warms_out: Option<&Path>,
    baselines: bool,
) -> Result<Report, BacktestError> {
    let strategies: Vec<Strategy> =
        if baselines { Strategy::ALL.to_vec() } else { vec![Strategy::Model] };
    let bar = sim::progress(trace.events.len() as u64 * strategies.len() as u64, "replaying");
    let mut file = match warms_out {
        Some(path) => Some((
            std::io::BufWriter::new(std::fs::File::create(path).map_err(write_err(path))?),
            path,
        )),
        None => None,
    };
    let mut write_error = None;
    let (model, others) = std::thread::scope(|s| {
        let others = s.spawn(|| {
            strategies[1..]
                .iter()
                .map(|&st| sim::replay(trace, cfg, st, &mut |_| {}, bar.as_ref()))
                .collect::<Result<Vec<Run>, _>>()
        });
        let started = Instant::now();
        let mut on_warm = |w: &Warm| {
            if let Some((out, _)) = file.as_mut() {
                if write_error.is_none() {
                    let line = serde_json::to_string(w).expect("a warm serialises");
                    if let Err(e) = writeln!(out, "{line}") {
                        write_error = Some(e);
                    }
                }
            }
        };
        let model = sim::replay(trace, cfg, Strategy::Model, &mut on_warm, bar.as_ref())
            .map(|r| (r, started.elapsed()));
        (model, others.join().expect("baseline replay thread"))
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some((mut out, path)) = file {
        if let Some(e) = write_error {
            return Err(write_err(path)(e));
        }
        out.flush().map_err(write_err(path))?;
    }
    let config_err = |e: analyzer::ConfigError| BacktestError::Config(e.to_string());
    let (model, elapsed) = model.map_err(config_err)?;
    let mut runs = vec![model];
    runs.extend(others.map_err(config_err)?);
    let ts = |e: Option<&sim::Ev>| {
        e.and_then(|e| chrono::DateTime::from_timestamp_millis(e.ts))
            .map_or_else(String::new, |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let mut config = serde_json::to_value(&cfg.live).expect("config serialises");
    config["tick_seconds"] = serde_json::json!(cfg.tick_ms as f64 / 1000.0);
    config["hit_flags"] = serde_json::json!(cfg.hit_flags);
    let span_ms = match (trace.events.first(), trace.events.last()) {
        (Some(a), Some(b)) => b.ts - a.ts,
        _ => 0,
    };
    Ok(Report {
        spend: SpendReport::of(&runs, cfg.live.budget, span_ms),
        events: trace.events.len(),
        keys: trace.keys.len(),
        invalid_rows: trace.invalid_rows,
        from: ts(trace.events.first()),
        to: ts(trace.events.last()),
        config,
        targets: Targets::of(&runs),
        strategies: runs.into_iter().map(|r| (r.strategy.name(), r)).collect::<BTreeMap<_, _>>(),
        model_replay_s: elapsed.as_secs_f64(),
    })
}

/// The hit-rate timeline of a report.
pub fn chart(report: &Report) -> String {
    let bucket_min =
        report.strategies.values().next().map_or(60.0, |r| r.bucket_ms as f64 / 60_000.0);
    let series: Vec<Series<'_>> = ["model", "no_warming", "original", "oracle"]
        .iter()
        .filter_map(|n| {
            report
                .strategies
                .get(n)
                .map(|r| Series { name: n.replace('_', " "), points: &r.timeline })
        })
        .collect();
    svg::timeline(
        &format!("Hit rate per {bucket_min} min, {} .. {} (UTC)", report.from, report.to),
        &series,
        bucket_min / 60.0,
        20,
    )
}
