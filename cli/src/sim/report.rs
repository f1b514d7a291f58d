//! The figures of a backtest and the targets, as text and JSON.

use super::replay::{Run, Strategy};
use prefetch_common::budget::Budget;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The targets of issue #7, measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Targets {
    /// Hit-rate gain of the model over no warming, in points of hit rate (0–1).
    pub model_gain: f64,
    /// The same for the oracle.
    pub oracle_gain: f64,
    /// The same for the original.
    pub original_gain: f64,
    /// `model_gain / oracle_gain`; the target is at least 0.5.
    pub share_of_oracle_gain: f64,
    /// Model upstream fetches over no-warming fetches; the target is at most 1.3.
    pub fetch_ratio: f64,
    /// `model_gain / original_gain` (infinite when the original gains nothing); the target is
    /// at least 2.
    pub gain_over_original: f64,
    /// Whether all three hold.
    pub met: bool,
}

impl Targets {
    /// The targets measured on a set of runs (which must include every strategy).
    pub fn of(runs: &[Run]) -> Option<Targets> {
        let get = |s: Strategy| runs.iter().find(|r| r.strategy == s).map(|r| r.tally);
        let (model, none, original, oracle) = (
            get(Strategy::Model)?,
            get(Strategy::NoWarming)?,
            get(Strategy::Original)?,
            get(Strategy::Oracle)?,
        );
        let gain = |t: super::Tally| t.hit_rate - none.hit_rate;
        let (model_gain, oracle_gain, original_gain) = (gain(model), gain(oracle), gain(original));
        let div = |a: f64, b: f64| {
            if b > 0.0 {
                a / b
            } else if a > 0.0 {
                f64::INFINITY
            } else {
                0.0
            }
        };
        let share_of_oracle_gain = div(model_gain, oracle_gain);
        let fetch_ratio = div(model.upstream_fetches as f64, none.upstream_fetches as f64);
        let gain_over_original = div(model_gain, original_gain.max(0.0));
        let met = share_of_oracle_gain >= 0.5
            && fetch_ratio <= 1.3
            && model_gain >= 2.0 * original_gain.max(0.0)
            && model_gain > 0.0;
        Some(Targets {
            model_gain,
            oracle_gain,
            original_gain,
            share_of_oracle_gain,
            fetch_ratio,
            gain_over_original,
            met,
        })
    }
}

/// The model's spend against its fetch budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpendReport {
    /// The budget replayed.
    pub budget: Budget,
    /// Model upstream fetches over no-warming fetches, measured (needs the baselines).
    pub fetch_ratio: Option<f64>,
    /// The same as the model counted it online, `(demand + warms) / calls of no warming` (its
    /// view's shadow of a cache never warmed).
    pub estimated_ratio: Option<f64>,
    /// Warms the model published.
    pub warms: u64,
    /// Warms per minute of event time over the trace.
    pub warms_per_minute: f64,
    /// Candidates at or above `min_confidence` the budget did not pay for.
    pub refused: u64,
    /// Whether spend stayed within the budget: a ratio against the measured fetch ratio (the
    /// estimate without baselines), a rate against its calls over the trace plus the one
    /// minute's worth the bucket starts with. `None` with the budget off.
    pub held: Option<bool>,
}

impl SpendReport {
    /// The spend of the model's run in `runs` (over `span_ms` of event time).
    pub fn of(runs: &[Run], budget: Budget, span_ms: i64) -> Option<SpendReport> {
        let model = runs.iter().find(|r| r.strategy == Strategy::Model)?;
        let spend = model.spend?;
        let none = runs.iter().find(|r| r.strategy == Strategy::NoWarming);
        let fetch_ratio = none
            .filter(|n| n.tally.upstream_fetches > 0)
            .map(|n| model.tally.upstream_fetches as f64 / n.tally.upstream_fetches as f64);
        let minutes = span_ms as f64 / 60_000.0;
        let warms = model.tally.warms;
        let held = match budget {
            Budget::Off => None,
            Budget::Ratio(r) => fetch_ratio.or(spend.spend_ratio()).map(|x| x <= r + 1e-9),
            Budget::PerMinute(m) => Some(warms as f64 <= m * (minutes + 1.0)),
        };
        Some(SpendReport {
            budget,
            fetch_ratio,
            estimated_ratio: spend.spend_ratio(),
            warms,
            warms_per_minute: if minutes > 0.0 { warms as f64 / minutes } else { 0.0 },
            refused: spend.refused,
            held,
        })
    }

    fn line(&self) -> String {
        let ratio = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.3}"));
        let verdict = match self.held {
            Some(true) => "held",
            Some(false) => "NOT held",
            None => "no budget",
        };
        let budget = match self.budget {
            Budget::Ratio(r) => format!("{r}x the fetches of no warming"),
            other => other.to_string(),
        };
        format!(
            "budget {budget}: fetches / no warming {} (model's online estimate {}), {} warms ({:.1}/min), {} candidates refused: {verdict}",
            ratio(self.fetch_ratio),
            ratio(self.estimated_ratio),
            self.warms,
            self.warms_per_minute,
            self.refused
        )
    }
}

/// A backtest's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Events replayed.
    pub events: usize,
    /// Distinct `(ticker, module)` keys.
    pub keys: usize,
    /// Rows of the log the contract refused (skipped; reported on standard error).
    pub invalid_rows: usize,
    /// First and last event time.
    pub from: String,
    /// Last event time.
    pub to: String,
    /// The configuration replayed (the live config document plus the tick interval).
    pub config: serde_json::Value,
    /// Figures per strategy: `model`, `no_warming`, `original`, `oracle`.
    pub strategies: BTreeMap<&'static str, Run>,
    /// The targets, when every baseline ran.
    pub targets: Option<Targets>,
    /// The model's spend against its fetch budget.
    pub spend: Option<SpendReport>,
    /// Wall time of the model's replay, seconds.
    pub model_replay_s: f64,
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

impl Report {
    /// The report as a text table.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ =
            writeln!(s, "{} events, {} keys, {} .. {}", self.events, self.keys, self.from, self.to);
        let _ = writeln!(
            s,
            "{:<11} {:>10} {:>10} {:>9} {:>9} {:>16} {:>14}",
            "strategy",
            "queries",
            "hits",
            "hit_rate",
            "warms",
            "upstream_fetches",
            "warm_precision"
        );
        for name in ["model", "no_warming", "original", "oracle"] {
            let Some(r) = self.strategies.get(name) else { continue };
            let t = r.tally;
            let _ = writeln!(
                s,
                "{:<11} {:>10} {:>10} {:>9} {:>9} {:>16} {:>14}",
                name,
                t.queries,
                t.hits,
                pct(t.hit_rate),
                t.warms,
                t.upstream_fetches,
                if t.warms == 0 { "-".to_owned() } else { pct(t.warm_precision) }
            );
        }
        if let Some(spend) = &self.spend {
            let _ = writeln!(s, "{}", spend.line());
        }
        if let Some(t) = self.targets {
            let mark = |ok: bool| if ok { "met" } else { "NOT met" };
            let _ = writeln!(
                s,
                "hit-rate gain over no warming: model {:+.2} pts, original {:+.2} pts, oracle {:+.2} pts",
                100.0 * t.model_gain,
                100.0 * t.original_gain,
                100.0 * t.oracle_gain
            );
            let _ = writeln!(
                s,
                "  model / oracle gain   {:>7.2}  (target ≥ 0.5: {})",
                t.share_of_oracle_gain,
                mark(t.share_of_oracle_gain >= 0.5)
            );
            let _ = writeln!(
                s,
                "  fetches / no warming  {:>7.3}  (target ≤ 1.3: {})",
                t.fetch_ratio,
                mark(t.fetch_ratio <= 1.3)
            );
            let _ = writeln!(
                s,
                "  model / original gain {:>7.2}  (target ≥ 2: {})",
                t.gain_over_original,
                mark(t.model_gain >= 2.0 * t.original_gain.max(0.0) && t.model_gain > 0.0)
            );
        }
        s
    }
}
