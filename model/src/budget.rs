//! The fetch budget, spent online: which of the model's candidates are published (and so
//! warmed), ticks and event-driven warms alike.
//!
//! [`Spend`] is an event-time token bucket. It earns from what the model observes and pays one
//! token per published warm:
//! - a **ratio** `r` ([`Budget::Ratio`]) bounds all upstream calls by `r ×` the calls of no
//!   warming `N`. The model's cache view counts those online: next to its copy of each key it
//!   keeps the copy a cache never warmed would hold (same TTLs, query times alone), and a query
//!   after that one's expiry is a call of no warming. So the warms `W` may reach `r·N − D`
//!   (`D`: the demand fetches): each call of no warming earns `r` tokens, each demand fetch
//!   costs one. (The first estimate, `N ≈ D + U` with `U` the first hits on warmed copies, read
//!   1.13 where the replay measured 1.21: a warm that expires before the copy a later miss would
//!   have made shifts a fetch rather than saving it.);
//! - a **rate** ([`Budget::PerMinute`]) earns its calls per minute as event time passes — the
//!   whole fleet's: an instance that owns a share of the query-events partitions earns that
//!   share ([`Model::set_budget_share`]), so N analyzers together spend the rate, not N× it (a
//!   ratio needs no share: each instance earns from its own partitions' demand fetches);
//! - **off** earns without bound (only `top_n` and `min_confidence` cap).
//!
//! Tokens are capped, so a quiet spell cannot bank a flood: at ten minutes of earnings for a
//! ratio (at least `top_n`, so the first tick after a start can publish), at one minute's
//! for a rate. The bucket starts full.
//!
//! Where the tokens go: candidates come best first (highest probability that the warm serves a
//! query — expected hits per fetch, one fetch each), and one is published only while a token is
//! left and its confidence reaches the budget's **price** `floor + (1 − floor)·(1 − fill)²`
//! (`floor` = `min_confidence`, `fill` = tokens / cap). With a full bucket anything above
//! `min_confidence` is worth a fetch; as the bucket drains only the surer candidates are, so a
//! mediocre candidate now does not take the token a better one would use a moment later.
//!
//! The model calls this from `tick` ([`Model::admit_tick`]) and from `record` (the event-driven
//! follow-ups and refresh-on-hit, [`Model::publish_event_driven`]), before it notes anything as
//! warmed, so its cache view holds exactly what it published.

use super::Model;
use crate::refresh::Observed;
use chrono::{DateTime, Utc};
pub use prefetch_contract::budget::Budget;
use prefetch_contract::prediction::{Prediction, Reason};
use serde::Serialize;

/// Seconds of earnings a ratio budget's bucket holds.
const RATIO_BURST_S: f64 = 600.0;
/// Seconds of earnings a rate budget's bucket holds.
const RATE_BURST_S: f64 = 60.0;

/// What the budget has earned and spent (event time), for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpendStatus {
    /// The budget in force.
    pub budget: Budget,
    /// Queries that fetched on demand (a miss), as the model saw them.
    pub demand_fetches: u64,
    /// Warms published (each one upstream call).
    pub warms: u64,
    /// Warms whose copy served a hit (as the model's cache view saw it).
    pub useful_warms: u64,
    /// Queries that would have fetched in a cache never warmed: the calls of no warming, as
    /// the model's cache view counts them (what a ratio budget is a multiple of).
    pub no_warming_fetches: u64,
    /// Candidates that reached `min_confidence` but not the budget's price, or found no token.
    pub refused: u64,
    /// Tokens left (upstream calls warming may still make now).
    pub tokens: f64,
    /// Most tokens the bucket holds.
    pub capacity: f64,
    /// The confidence a candidate needs now.
    pub price: f64,
    /// Event time the counts cover, seconds (from the first event or warm the budget saw).
    pub span_s: u64,
    /// Share (0–1) of a rate budget this instance earns: its query-events partitions over the
    /// topic's. 1 for a single instance and for the backtest.
    pub share: f64,
}

impl SpendStatus {
    /// All upstream calls over the calls of no warming, `(D + W) / N`: what a ratio budget
    /// holds below its ratio. `None` before any fetch.
    pub fn spend_ratio(&self) -> Option<f64> {
        prefetch_contract::budget::spend_ratio(
            self.demand_fetches,
            self.warms,
            self.no_warming_fetches,
        )
    }

    /// Warms per minute of event time (`None` before a minute has passed).
    pub fn warms_per_minute(&self) -> Option<f64> {
        (self.span_s >= 60).then(|| self.warms as f64 * 60.0 / self.span_s as f64)
    }

    /// Whether the spend is within the budget: the spend ratio at most the ratio, or the warms
    /// per minute at most the rate (plus the minute's worth the bucket starts with). `None`
    /// with the budget off or before anything was fetched.
    pub fn within_budget(&self) -> Option<bool> {
        self.budget.holds(self.spend_ratio(), self.warms, self.span_s, self.share)
    }
}

/// The token bucket (see the module docs). Pure: driven by the event times it is given.
#[derive(Debug, Clone)]
pub struct Spend {
    budget: Budget,
    /// Smallest capacity of a ratio budget (`top_n`).
    min_burst: f64,
    tokens: f64,
    /// Earnings per second, EWMA over [`RATIO_BURST_S`] (ratio budgets).
    earn_rate: f64,
    /// First and latest event time seen (internal seconds).
    first: Option<u32>,
    last: Option<u32>,
    status: SpendStatus,
}

impl Spend {
    /// A full bucket for `budget`; `min_burst` (the tick's `top_n`) is the least a ratio
    /// budget's bucket holds.
    pub fn new(budget: Budget, min_burst: usize) -> Self {
        let mut s = Self {
            budget,
            min_burst: min_burst.max(1) as f64,
            tokens: 0.0,
            earn_rate: 0.0,
            first: None,
            last: None,
            status: SpendStatus {
                budget,
                demand_fetches: 0,
                warms: 0,
                useful_warms: 0,
                no_warming_fetches: 0,
                refused: 0,
                tokens: 0.0,
                capacity: 0.0,
                price: 0.0,
                span_s: 0,
                share: 1.0,
            },
        };
        s.tokens = s.capacity();
        s
    }

    /// Changes the budget (the live config); keeps the counts and the tokens (within the new
    /// capacity).
    pub fn set(&mut self, budget: Budget, min_burst: usize) {
        let was_off = self.budget == Budget::Off;
        self.budget = budget;
        self.status.budget = budget;
        self.min_burst = min_burst.max(1) as f64;
        self.tokens = if was_off { self.capacity() } else { self.tokens.min(self.capacity()) };
    }

    /// Sets the share (clamped to 0–1) of a rate budget this instance earns; the tokens stay
    /// within the new capacity.
    pub fn set_share(&mut self, share: f64) {
        self.status.share = if share.is_finite() { share.clamp(0.0, 1.0) } else { 1.0 };
        self.tokens = self.tokens.min(self.capacity());
    }

    /// The budget in force.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    fn capacity(&self) -> f64 {
        match self.budget {
            Budget::Off => f64::INFINITY,
            Budget::Ratio(_) => (self.earn_rate * RATIO_BURST_S).max(self.min_burst),
            Budget::PerMinute(m) => (m * self.status.share / 60.0 * RATE_BURST_S).max(1.0),
        }
    }

    /// Moves event time to `t` (never back): a rate budget earns the time passed, a ratio
    /// budget's earning rate decays.
    fn advance(&mut self, t: u32) {
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        let Some(last) = self.last.filter(|&l| t > l) else {
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
            return;
        };
        let dt = f64::from(t - last);
        self.last = Some(t);
        match self.budget {
            Budget::PerMinute(m) => {
                self.tokens = (self.tokens + m * self.status.share / 60.0 * dt).min(self.capacity())
            }
            Budget::Ratio(_) => self.earn_rate *= (-dt / RATIO_BURST_S).exp(),
            Budget::Off => {}
        }
    }

    fn earn(&mut self, tokens: f64) {
        self.earn_rate += tokens / RATIO_BURST_S;
        self.tokens = (self.tokens + tokens).min(self.capacity());
    }

    /// What the model's view made of one query at `t`: under a ratio budget a call of no
    /// warming earns `r` tokens and a demand fetch costs one.
    pub(crate) fn observe(&mut self, t: u32, o: Observed) {
        self.advance(t);
        self.status.no_warming_fetches += u64::from(o.bare);
        self.status.demand_fetches += u64::from(o.demand);
        self.status.useful_warms += u64::from(o.useful);
        if let Budget::Ratio(r) = self.budget {
            // One net amount, so a query that fetches either way earns `r − 1` as before.
            let net = if o.bare { r } else { 0.0 } - if o.demand { 1.0 } else { 0.0 };
            if net != 0.0 {
                self.earn(net);
            }
        }
    }

    /// The confidence a candidate needs now, at least `floor`.
    pub fn price(&self, floor: f64) -> f64 {
        let cap = self.capacity();
        if !cap.is_finite() {
            return floor;
        }
        let fill = (self.tokens / cap).clamp(0.0, 1.0);
        floor + (1.0 - floor) * (1.0 - fill).powi(2)
    }

    /// How many of `confidences` (best first, each already at or above `floor`) are published
    /// at `t`; pays for them. The rest are counted as refused.
    pub fn admit(
        &mut self,
        t: u32,
        floor: f64,
        confidences: impl IntoIterator<Item = f64>,
    ) -> usize {
        self.advance(t);
        let off = self.budget == Budget::Off;
        let mut n = 0;
        let mut offered = 0;
        for p in confidences {
            offered += 1;
            if !off && (self.tokens < 1.0 || p < self.price(floor)) {
                continue;
            }
            if !off {
                self.tokens -= 1.0;
            }
            n += 1;
        }
        self.status.warms += n as u64;
        self.status.refused += (offered - n) as u64;
        n
    }

    /// Earned, spent and left so far.
    pub fn status(&self, floor: f64) -> SpendStatus {
        SpendStatus {
            tokens: if self.tokens.is_finite() { self.tokens } else { -1.0 },
            capacity: if self.capacity().is_finite() { self.capacity() } else { -1.0 },
            price: self.price(floor),
            span_s: u64::from(self.last.unwrap_or(0).saturating_sub(self.first.unwrap_or(0))),
            ..self.status
        }
    }
}

/// An event-driven prediction before the budget and the publish de-duplication decide on it:
/// by ids, so one held back (most are) costs no name copied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate {
    pub ticker: u32,
    pub module: u32,
    pub confidence: f64,
    pub reason: Reason,
}

impl Candidate {
    fn published(&self, at: DateTime<Utc>) -> crate::recent::Published {
        crate::recent::Published {
            ticker: self.ticker,
            module: self.module,
            at,
            confidence: self.confidence,
        }
    }
}

impl Model {
    /// Sets the fetch budget (the live config's `budget`; the services and the backtest set it
    /// before the first event). A model built without one has none ([`Budget::Off`]): only
    /// `top_n` and `min_confidence` limit it. What was spent so far is kept.
    pub fn set_budget(&mut self, budget: Budget) {
        self.spend.set(budget, self.s.top_n);
    }

    /// Sets the share of a rate budget this model earns: the instance's query-events
    /// partitions over the topic's (the analyzer, after each rebalance). A ratio budget
    /// ignores it.
    pub fn set_budget_share(&mut self, share: f64) {
        self.spend.set_share(share);
    }

    /// What the budget earned and spent, and what a candidate needs now.
    pub fn spend_status(&self) -> SpendStatus {
        self.spend.status(self.s.min_confidence)
    }

    /// How many of a tick's candidates (best first, at or above `min_confidence`) the budget
    /// publishes at `wm`; also prunes the publish de-duplication (it remembers one horizon).
    pub(crate) fn admit_tick(
        &mut self,
        wm: u32,
        at: DateTime<Utc>,
        confidences: impl IntoIterator<Item = f64>,
    ) -> usize {
        self.recent.prune(at, chrono::Duration::seconds(i64::from(self.s.horizon)));
        self.spend.admit(wm, self.s.min_confidence, confidences)
    }

    /// The event-driven candidates of one event at `t` (event time `at`) — learned follow-ups
    /// and refresh on hit — best first, through the publish de-duplication (`recent.rs`) and the
    /// budget; what is published is remembered, noted as warmed in the cache view, and only then
    /// given its names.
    pub(crate) fn publish_event_driven(
        &mut self,
        candidates: Vec<Candidate>,
        t: u32,
        at: DateTime<Utc>,
    ) -> Vec<Prediction> {
        if candidates.is_empty() {
            return Vec::new();
        }
        // Each is published at the share of its reason's warms at its confidence that were used
        // (`usefulness.rs`), as the tick's are.
        let mut ranked: Vec<(Candidate, u8)> = candidates
            .into_iter()
            .filter(|c| {
                self.tickers.name(c.ticker).is_some() && self.modules.name(c.module).is_some()
            })
            .map(|mut c| {
                let cell;
                (c.confidence, cell) = self.warm_confidence(c.reason, c.confidence, t);
                (c, cell)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.confidence.total_cmp(&a.0.confidence));
        let horizon_s = u64::from(self.s.horizon);
        ranked.retain(|(c, _)| {
            c.confidence >= self.s.min_confidence
                && self.recent.would_publish(c.published(at), horizon_s, self.cache.is_some())
        });
        let n =
            self.spend.admit(t, self.s.min_confidence, ranked.iter().map(|(c, _)| c.confidence));
        ranked.truncate(n);
        let mut published = Vec::with_capacity(ranked.len());
        for (c, cell) in ranked {
            self.recent.remember(c.published(at));
            self.note_warmed(c.ticker, c.module, t, cell);
            let (Some(ticker), Some(module)) =
                (self.tickers.name(c.ticker), self.modules.name(c.module))
            else {
                continue;
            };
            published.push(Prediction {
                ticker: ticker.clone(),
                module: module.clone(),
                confidence: c.confidence,
                horizon_s,
                generated_at: at,
                reason: c.reason,
            });
        }
        self.counters.predictions_sequence += published.len() as u64;
        published
    }
}
