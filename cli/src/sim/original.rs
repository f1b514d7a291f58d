//! The original tool's predictor, as a baseline: it looked at its last 10,000 queries and, for
//! each ticker, scored
//!
//! `0.3 × count + 0.4 × hour weight × count in the current hour + 0.2 × count on the current
//! weekday + 0.1 × count following the last ticker`,
//!
//! predicted the `top_n` tickers with `confidence = score / max score`, each with the module
//! most often asked for it, on every tick. Hours and weekdays are read in market time.

use super::trace::{Ev, Trace};
use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use prefetch_common::prediction::{Prediction, Reason};
use std::collections::{HashMap, VecDeque};

/// Queries the original remembered.
pub const WINDOW: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Seen {
    ticker: u32,
    module: u32,
    hour: u8,
    weekday: u8,
}

/// The original predictor's state over a trace.
#[derive(Debug)]
pub struct Original {
    tz: Tz,
    hour_weight: [f64; 24],
    top_n: usize,
    horizon_s: u64,
    modules: usize,
    window: VecDeque<Seen>,
    count: Vec<u32>,
    hour: Vec<u32>,
    weekday: Vec<u32>,
    module: Vec<u32>,
    follows: HashMap<(u32, u32), u32>,
    /// Tickers with a non-zero count, and each one's place in it.
    active: Vec<u32>,
    place: Vec<u32>,
    slot_cache: Option<(i64, (u8, u8))>,
}

impl Original {
    /// A predictor for `trace`'s tickers and modules.
    pub fn new(
        trace: &Trace,
        tz: Tz,
        hour_weight: [f64; 24],
        top_n: usize,
        horizon_s: u64,
    ) -> Self {
        let (t, m) = (trace.tickers.len(), trace.modules.len());
        Self {
            tz,
            hour_weight,
            top_n,
            horizon_s,
            modules: m,
            window: VecDeque::with_capacity(WINDOW + 1),
            count: vec![0; t],
            hour: vec![0; t * 24],
            weekday: vec![0; t * 7],
            module: vec![0; t * m],
            follows: HashMap::new(),
            active: Vec::new(),
            place: vec![u32::MAX; t],
            slot_cache: None,
        }
    }

    /// Market hour and weekday (Monday 0) of epoch ms `t`; cached per UTC hour, which lies in
    /// one market hour for whole-hour zones.
    fn slot(&mut self, t: i64) -> (u8, u8) {
        let h = t.div_euclid(3_600_000);
        if let Some((ch, s)) = self.slot_cache {
            if ch == h {
                return s;
            }
        }
        let local = self
            .tz
            .from_utc_datetime(&DateTime::from_timestamp_millis(t).unwrap_or_default().naive_utc());
        let s = (local.hour() as u8, local.weekday().num_days_from_monday() as u8);
        self.slot_cache = Some((h, s));
        s
    }

    fn bump(&mut self, s: Seen, up: bool) {
        let t = s.ticker as usize;
        let d = |v: &mut u32| if up { *v += 1 } else { *v -= 1 };
        d(&mut self.count[t]);
        d(&mut self.hour[t * 24 + usize::from(s.hour)]);
        d(&mut self.weekday[t * 7 + usize::from(s.weekday)]);
        d(&mut self.module[t * self.modules + s.module as usize]);
        if up && self.count[t] == 1 {
            self.place[t] = self.active.len() as u32;
            self.active.push(s.ticker);
        } else if !up && self.count[t] == 0 {
            let at = self.place[t] as usize;
            self.active.swap_remove(at);
            if let Some(&moved) = self.active.get(at) {
                self.place[moved as usize] = at as u32;
            }
            self.place[t] = u32::MAX;
        }
    }

    /// Remembers one query, forgetting the oldest beyond [`WINDOW`].
    pub fn observe(&mut self, trace: &Trace, e: &Ev) {
        let k = &trace.keys[e.key as usize];
        let (hour, weekday) = self.slot(e.ts);
        let s = Seen { ticker: k.ticker, module: k.module, hour, weekday };
        if let Some(prev) = self.window.back() {
            *self.follows.entry((prev.ticker, s.ticker)).or_default() += 1;
        }
        self.window.push_back(s);
        self.bump(s, true);
        if self.window.len() > WINDOW {
            let old = self.window.pop_front().expect("non-empty");
            if let Some(next) = self.window.front() {
                let pair = (old.ticker, next.ticker);
                if let Some(n) = self.follows.get_mut(&pair) {
                    *n -= 1;
                    if *n == 0 {
                        self.follows.remove(&pair);
                    }
                }
            }
            self.bump(old, false);
        }
    }

    /// The predictions of a tick at `now` (epoch ms): the `top_n` best-scored tickers.
    pub fn tick(&mut self, trace: &Trace, now: i64) -> Vec<Prediction> {
        let Some(last) = self.window.back().map(|s| s.ticker) else { return Vec::new() };
        let (hour, weekday) = self.slot(now);
        let w = self.hour_weight[usize::from(hour)];
        let mut scored: Vec<(f64, u32)> = self
            .active
            .iter()
            .map(|&t| {
                let i = t as usize;
                let follows = self.follows.get(&(last, t)).copied().unwrap_or(0);
                let score = 0.3 * f64::from(self.count[i])
                    + 0.4 * w * f64::from(self.hour[i * 24 + usize::from(hour)])
                    + 0.2 * f64::from(self.weekday[i * 7 + usize::from(weekday)])
                    + 0.1 * f64::from(follows);
                (score, t)
            })
            .collect();
        let n = self.top_n.min(scored.len());
        if n == 0 {
            return Vec::new();
        }
        let by_score = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if n < scored.len() {
            scored.select_nth_unstable_by(n - 1, by_score);
            scored.truncate(n);
        }
        scored.sort_by(by_score);
        let max = scored[0].0.max(f64::MIN_POSITIVE);
        let generated_at = DateTime::<Utc>::from_timestamp_millis(now).unwrap_or_default();
        scored
            .into_iter()
            .map(|(score, t)| {
                let row = &self.module[t as usize * self.modules..(t as usize + 1) * self.modules];
                // The most common module; the first seen wins a tie.
                let m = (0..self.modules)
                    .max_by(|&a, &b| row[a].cmp(&row[b]).then(b.cmp(&a)))
                    .unwrap_or(0);
                Prediction {
                    ticker: trace.tickers[t as usize].clone(),
                    module: trace.modules[m].clone(),
                    confidence: score / max,
                    horizon_s: self.horizon_s,
                    generated_at,
                    reason: Reason::Popularity,
                }
            })
            .collect()
    }
}
