//! `prefetch tune`: the original tool's tuning guide, computed instead of guessed. Replays a
//! log over a grid of top_n × min_confidence × horizon, prints hit rate against upstream
//! fetches for each setting, marks the Pareto frontier, and recommends the setting with the
//! best hit rate within a fetch budget.

use crate::backtest::{checked, BacktestError, ReplayArgs};
use crate::sim::svg::{self, Point};
use crate::sim::{self, SimConfig, Strategy, Tally, Trace};
use clap::Args;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The flags of `prefetch tune` (its help text is the `Tune` command's doc).
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub replay: ReplayArgs,

    /// top_n values to try, comma-separated.
    #[arg(long, value_name = "N,N,…", value_delimiter = ',', default_values_t = [5, 10, 20, 40])]
    pub top_n: Vec<usize>,

    /// min_confidence values to try, comma-separated.
    #[arg(long, value_name = "X,X,…", value_delimiter = ',', default_values_t = [0.3, 0.5, 0.7, 0.9])]
    pub min_confidence: Vec<f64>,

    /// Horizons to try, seconds, comma-separated.
    #[arg(long, value_name = "S,S,…", value_delimiter = ',', default_values_t = [60, 300, 900])]
    pub horizon: Vec<u64>,

    /// Fetch budget as a multiple of the fetches without warming (1.3: at most 30% more
    /// upstream calls than no warming).
    #[arg(long, value_name = "RATIO", default_value_t = 1.3, conflicts_with = "budget_fetches")]
    pub budget: f64,

    /// Fetch budget as an absolute number of upstream fetches over the log.
    #[arg(long, value_name = "N")]
    pub budget_fetches: Option<u64>,

    /// Write an SVG of hit rate against upstream fetches (the frontier).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Print the result as one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One grid setting and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct Setting {
    /// top_n.
    pub top_n: usize,
    /// min_confidence.
    pub min_confidence: f64,
    /// horizon_s.
    pub horizon_s: u64,
    /// The replay's figures.
    #[serde(flatten)]
    pub tally: Tally,
    /// Upstream fetches over no-warming fetches.
    pub fetch_ratio: f64,
    /// No other setting has a higher hit rate for at most as many fetches.
    pub frontier: bool,
}

/// What `tune` found.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    /// Events replayed.
    pub events: usize,
    /// No warming, the reference.
    pub no_warming: Tally,
    /// The budget in upstream fetches.
    pub budget_fetches: u64,
    /// Every setting, by upstream fetches.
    pub settings: Vec<Setting>,
    /// Index into `settings` of the recommendation (none fits the budget: `None`).
    pub recommended: Option<usize>,
}

/// Runs the grid the flags describe.
pub fn run(args: &TuneArgs) -> Result<TuneReport, BacktestError> {
    let base = args.replay.live_config()?;
    let tick_ms = args.replay.tick_ms()?;
    if args.top_n.is_empty() || args.min_confidence.is_empty() || args.horizon.is_empty() {
        return Err(BacktestError::Config(
            "--top-n, --min-confidence and --horizon need at least one value each".into(),
        ));
    }
    if !(args.budget.is_finite() && args.budget > 0.0) {
        return Err(BacktestError::Config(format!(
            "--budget {}: must be a positive ratio",
            args.budget
        )));
    }
    let mut grid = Vec::new();
    for &top_n in &args.top_n {
        for &min_confidence in &args.min_confidence {
            for &horizon_s in &args.horizon {
                let live = prefetch_common::config::LiveConfig {
                    top_n,
                    min_confidence,
                    horizon_s,
                    ..base.clone()
                };
                grid.push(checked(live, tick_ms)?);
            }
        }
    }
    let trace = args.replay.trace()?;
    let none =
        sim::replay(&trace, &checked(base, tick_ms)?, Strategy::NoWarming, &mut |_| {}, None)
            .map_err(|e| BacktestError::Config(e.to_string()))?
            .tally;
    let budget =
        args.budget_fetches.unwrap_or((none.upstream_fetches as f64 * args.budget).floor() as u64);
    let tallies = grid_replay(&trace, &grid)?;
    let mut settings: Vec<Setting> = grid
        .iter()
        .zip(tallies)
        .map(|(cfg, tally)| Setting {
            top_n: cfg.live.top_n,
            min_confidence: cfg.live.min_confidence,
            horizon_s: cfg.live.horizon_s,
            tally,
            fetch_ratio: tally.upstream_fetches as f64 / none.upstream_fetches.max(1) as f64,
            frontier: false,
        })
        .collect();
    settings.sort_by(|a, b| {
        a.tally
            .upstream_fetches
            .cmp(&b.tally.upstream_fetches)
            .then(b.tally.hit_rate.total_cmp(&a.tally.hit_rate))
    });
    let mut best = f64::NEG_INFINITY;
    for s in &mut settings {
        if s.tally.hit_rate > best {
            s.frontier = true;
            best = s.tally.hit_rate;
        }
    }
    // The best hit rate within the budget; among equals, the fewest fetches (first in order).
    let recommended = settings
        .iter()
        .enumerate()
        .filter(|(_, s)| s.tally.upstream_fetches <= budget)
        .max_by(|(i, a), (j, b)| a.tally.hit_rate.total_cmp(&b.tally.hit_rate).then(j.cmp(i)))
        .map(|(i, _)| i);
    let report = TuneReport {
        events: trace.events.len(),
        no_warming: none,
        budget_fetches: budget,
        settings,
        recommended,
    };
    if let Some(path) = &args.svg {
        std::fs::write(path, chart(&report))
            .map_err(|source| BacktestError::Write { path: path.clone(), source })?;
    }
    Ok(report)
}

/// Replays the model under every config of `grid`, on as many threads as there are cores.
fn grid_replay(trace: &Trace, grid: &[SimConfig]) -> Result<Vec<Tally>, BacktestError> {
    let bar = sim::progress(trace.events.len() as u64 * grid.len() as u64, "tuning");
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Result<Tally, String>>>> = Mutex::new(vec![None; grid.len()]);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(grid.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(cfg) = grid.get(i) else { break };
                let r = sim::replay(trace, cfg, Strategy::Model, &mut |_| {}, bar.as_ref())
                    .map(|r| r.tally)
                    .map_err(|e| e.to_string());
                out.lock().expect("no panics while held")[i] = Some(r);
            });
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    out.into_inner()
        .expect("no panics while held")
        .into_iter()
        .map(|r| r.expect("every setting ran").map_err(BacktestError::Config))
        .collect()
}

impl TuneReport {
    /// The grid as a table, and the recommendation.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let n = &self.no_warming;
        let _ = writeln!(
            s,
            "{} events; no warming: hit rate {:.2}% with {} upstream fetches; budget {} fetches",
            self.events,
            100.0 * n.hit_rate,
            n.upstream_fetches,
            self.budget_fetches
        );
        let _ = writeln!(
            s,
            "{:>5} {:>14} {:>9} {:>9} {:>16} {:>8} {:>9} {:>14}  ",
            "top_n",
            "min_confidence",
            "horizon_s",
            "hit_rate",
            "upstream_fetches",
            "ratio",
            "warms",
            "warm_precision"
        );
        for (i, x) in self.settings.iter().enumerate() {
            let mut mark = String::new();
            if x.frontier {
                mark.push_str(" frontier");
            }
            if Some(i) == self.recommended {
                mark.push_str(" ← recommended");
            }
            let _ = writeln!(
                s,
                "{:>5} {:>14} {:>9} {:>8.2}% {:>16} {:>8.3} {:>9} {:>13.1}% {}",
                x.top_n,
                x.min_confidence,
                x.horizon_s,
                100.0 * x.tally.hit_rate,
                x.tally.upstream_fetches,
                x.fetch_ratio,
                x.tally.warms,
                100.0 * x.tally.warm_precision,
                mark
            );
        }
        match self.recommended.map(|i| &self.settings[i]) {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "recommended within {} fetches: top_n={} min_confidence={} horizon_s={} (hit rate {:.2}%, {:+.2} pts over no warming, {} fetches)\n  config patch: {{\"top_n\": {}, \"min_confidence\": {}, \"horizon_s\": {}}}",
                    self.budget_fetches,
                    r.top_n,
                    r.min_confidence,
                    r.horizon_s,
                    100.0 * r.tally.hit_rate,
                    100.0 * (r.tally.hit_rate - n.hit_rate),
                    r.tally.upstream_fetches,
                    r.top_n,
                    r.min_confidence,
                    r.horizon_s
                );
            }
            None => {
                let _ = writeln!(s, "no setting fits within {} fetches; raise --budget or try smaller top_n / higher min_confidence", self.budget_fetches);
            }
        }
        s
    }
}

/// The frontier chart of a tune report.
pub fn chart(r: &TuneReport) -> String {
    let points: Vec<Point> = r
        .settings
        .iter()
        .enumerate()
        .map(|(i, s)| Point {
            fetches: s.tally.upstream_fetches as f64,
            hit_rate: s.tally.hit_rate,
            frontier: s.frontier,
            recommended: Some(i) == r.recommended,
        })
        .collect();
    svg::frontier(
        &format!("Hit rate against upstream fetches, {} settings", r.settings.len()),
        &points,
        (r.no_warming.upstream_fetches as f64, r.no_warming.hit_rate),
        Some(r.budget_fetches as f64),
    )
}
