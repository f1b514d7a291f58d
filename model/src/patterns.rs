//! The patterns snapshot's input (the original tool's `analyze_patterns`): one pass over the
//! live keys copies what the summary needs — each key's alphabetical ticker and module ranks and
//! its counts in the window, in the current market hour (every day) and on the current weekday —
//! so the aggregation (polars, in the analyzer) runs on the copy, outside the model's lock.
//! Ties are broken alphabetically by ticker, then module, so the snapshot is deterministic.

use super::profile::{to_secs, WEEKDAYS};
use super::sequence::EdgeKind;
use super::Model;
use chrono::{DateTime, Utc};
use prefetch_contract::contract::{Module, Ticker};
use serde::{Deserialize, Serialize};

/// A name with its event count in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameCount {
    /// A ticker or a module.
    pub name: String,
    /// Events in the retention window.
    pub count: u64,
}

/// A `(ticker, module)` key with an event count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    /// The instrument.
    pub ticker: Ticker,
    /// The data module.
    pub module: Module,
    /// Events counted (what is counted depends on the list).
    pub count: u64,
}

/// Which transition table a sequence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceKind {
    /// Module to module on the same ticker, e.g. `price` → `chart`.
    Module,
    /// Ticker to `ticker:module`, e.g. `AAPL` → `MSFT:price`.
    Ticker,
}

/// One learned transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceStat {
    /// Which table.
    pub kind: SequenceKind,
    /// Source module or ticker.
    pub from: String,
    /// Target module, or `ticker:module`.
    pub to: String,
    /// Decayed count of the transition within the session gap.
    pub count: f64,
    /// Probability that it follows within the horizon.
    pub probability: f64,
}

/// The patterns snapshot, as the analyzer builds it from a [`PatternsInput`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// When it was taken (the later of `now` and the watermark).
    pub generated_at: DateTime<Utc>,
    /// Current market hour, 0–23.
    pub market_hour: u32,
    /// Current market weekday, `Mon`…`Sun`.
    pub market_weekday: String,
    /// The configured weight of the current market hour.
    pub current_hour_weight: f64,
    /// Live keys.
    pub live_keys: u64,
    /// Events in the retention window, all keys.
    pub events_in_window: u64,
    /// Tickers with the most events in the window.
    pub top_tickers: Vec<NameCount>,
    /// Modules with the most events in the window.
    pub top_modules: Vec<NameCount>,
    /// Keys with the most events in the window.
    pub top_pairs: Vec<KeyCount>,
    /// Keys with the most events in the current market hour, summed over the window's days.
    pub popular_this_hour: Vec<KeyCount>,
    /// Keys with the most events on the current market weekday within the window.
    pub popular_this_weekday: Vec<KeyCount>,
    /// Transitions seen most often within the session gap.
    pub top_sequences: Vec<SequenceStat>,
    /// Events per market hour 0–23 in the window.
    pub hourly_profile: Vec<u64>,
    /// Events per market weekday, Monday first, in the window.
    pub weekday_profile: Vec<u64>,
}

/// Everything the patterns snapshot needs, copied out of the model ([`Model::patterns_input`]).
#[derive(Debug, Clone)]
pub struct PatternsInput {
    /// When it was taken (the later of `now` and the watermark).
    pub generated_at: DateTime<Utc>,
    /// Current market hour, 0–23.
    pub market_hour: u32,
    /// Current market weekday, `Mon`…`Sun`.
    pub market_weekday: String,
    /// The configured weight of the current market hour.
    pub current_hour_weight: f64,
    /// Entries per list.
    pub top_n: usize,
    /// Tickers in alphabetical order; `ticker_rank` indexes into it.
    pub ticker_names: Vec<Ticker>,
    /// Modules in alphabetical order; `module_rank` indexes into it.
    pub module_names: Vec<Module>,
    /// Per live key: its ticker's alphabetical rank.
    pub ticker_rank: Vec<u32>,
    /// Per live key: its module's alphabetical rank.
    pub module_rank: Vec<u32>,
    /// Per live key: events in the retention window.
    pub total: Vec<u64>,
    /// Per live key: events in the current market hour, summed over the window's days.
    pub hour: Vec<u64>,
    /// Per live key: events on the current market weekday within the window.
    pub weekday: Vec<u64>,
    /// Transitions seen most often within the session gap, at most `top_n`.
    pub top_sequences: Vec<SequenceStat>,
    /// Events per market hour 0–23 in the window.
    pub hourly_profile: Vec<u64>,
    /// Events per market weekday, Monday first, in the window.
    pub weekday_profile: Vec<u64>,
}

/// `now` is outside the model's time range (before 2000 or after 2136).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("time {0} is out of range")]
pub struct TimeOutOfRange(pub DateTime<Utc>);

/// Values sorted alphabetically by `name`, and each id's rank among them.
fn ranks<'a, T: 'a>(
    items: impl Iterator<Item = (u32, &'a T)>,
    ids: usize,
    name: impl Fn(&T) -> &str,
) -> (Vec<u32>, Vec<&'a T>) {
    let mut sorted: Vec<(u32, &T)> = items.collect();
    sorted.sort_by(|a, b| name(a.1).cmp(name(b.1)));
    let mut rank = vec![u32::MAX; ids];
    for (r, (id, _)) in sorted.iter().enumerate() {
        rank[*id as usize] = r as u32;
    }
    (rank, sorted.into_iter().map(|(_, n)| n).collect())
}

impl Model {
    /// A copy of what the patterns snapshot at `now` (or the watermark, if later) needs: O(live
    /// keys), cheap next to the aggregation, which the caller runs after releasing the model.
    pub fn patterns_input(&self, now: DateTime<Utc>) -> Result<PatternsInput, TimeOutOfRange> {
        let at =
            to_secs(now).ok_or(TimeOutOfRange(now))?.max(self.watermark.map_or(0, |(wm, _)| wm));
        let generated_at = match self.watermark {
            Some((wm, t)) if wm >= at => t,
            _ => now,
        };
        let (slot, weight, _) = self.hour_context(at);
        let oldest = at.saturating_sub(self.s.retention) / self.s.bucket;
        let (ticker_rank, ticker_names) =
            ranks(self.tickers.iter(), self.tickers.capacity(), Ticker::as_str);
        let (module_rank, module_names) =
            ranks(self.modules.iter(), self.modules.capacity(), Module::as_str);

        let n = self.keys.len();
        let (mut t_col, mut m_col) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut total_col, mut hour_col, mut wd_col) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut hourly, mut weekly) = (vec![0u64; 24], vec![0u64; 7]);
        for k in self.keys.iter() {
            let (mut total, mut hour, mut wd) = (0u64, 0u64, 0u64);
            for (b, c) in k.buckets().filter(|&(b, _)| b >= oldest) {
                let s = self.calendar.slot(b);
                let c = u64::from(c);
                total += c;
                hour += if s.hour == slot.hour { c } else { 0 };
                wd += if s.weekday == slot.weekday { c } else { 0 };
                hourly[usize::from(s.hour)] += c;
                weekly[usize::from(s.weekday)] += c;
            }
            t_col.push(ticker_rank[k.ticker as usize]);
            m_col.push(module_rank[k.module as usize]);
            total_col.push(total);
            hour_col.push(hour);
            wd_col.push(wd);
        }
        Ok(PatternsInput {
            generated_at,
            market_hour: u32::from(slot.hour),
            market_weekday: WEEKDAYS[usize::from(slot.weekday)].to_owned(),
            current_hour_weight: weight,
            top_n: self.s.top_n,
            ticker_names: ticker_names.into_iter().cloned().collect(),
            module_names: module_names.into_iter().cloned().collect(),
            ticker_rank: t_col,
            module_rank: m_col,
            total: total_col,
            hour: hour_col,
            weekday: wd_col,
            top_sequences: self.top_sequences(at, self.s.top_n),
            hourly_profile: hourly,
            weekday_profile: weekly,
        })
    }

    fn top_sequences(&self, at: u32, k: usize) -> Vec<SequenceStat> {
        let mut edges = self.sequences.edges(at);
        edges.sort_by(|a, b| {
            b.in_gap.total_cmp(&a.in_gap).then(b.probability.total_cmp(&a.probability))
        });
        edges
            .into_iter()
            .filter_map(|e| {
                let to_module = self.modules.name(e.to_module)?.as_str();
                let (kind, from, to) = match e.kind {
                    EdgeKind::Module => (
                        SequenceKind::Module,
                        self.modules.name(e.from)?.to_string(),
                        to_module.to_owned(),
                    ),
                    EdgeKind::Ticker => (
                        SequenceKind::Ticker,
                        self.tickers.name(e.from)?.to_string(),
                        format!("{}:{to_module}", self.tickers.name(e.to_ticker)?),
                    ),
                };
                Some(SequenceStat { kind, from, to, count: e.in_gap, probability: e.probability })
            })
            .take(k)
            .collect()
    }
}
