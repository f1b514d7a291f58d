//! What to warm: pure, synchronous decisions driven by an explicit `now`.
//!
//! Nothing here does I/O or reads a clock, so the live consume loop, `POST /v1/warmup`, the
//! tests (with hand-made timestamps) and `prefetch backtest` all run the same code. The decisions
//! are, in order: enabled, active hours, staleness, holdback, confidence, freshness, and — for an
//! operator's warm-up only — `top_n` over what is left (highest confidence first).
//!
//! A published prediction of a key whose cached copy is still live is a refresh, and a refresh
//! fetched now would only shorten that copy's life: every query before its expiry is the old
//! copy's to serve. So it is [deferred](Decision::WarmAt) to [`REFRESH_LEAD`] before the copy
//! expires. (On development traces with 30 s price copies, refreshes fetched at the tick or
//! the hit that decided them came 5–7 s early, a fifth of each copy's life; deferring them
//! raised the model's share of the oracle's gain from 0.64 to 0.76 at the same budget:
//! BENCHMARKS.md, issue #13.)
//!
//! Predictions read from the topic are not cut to `top_n` per batch: the analyzer already spent
//! its fetch budget on them (`budget.rs`) and noted each as warmed in its view of the cache, so
//! a warmer that dropped some (20 refresh predictions arriving together against a `top_n` of
//! 10 lost half, picked by arrival order) would leave the two disagreeing about what was
//! fetched: the analyzer would wait for copies that were never stored.

use chrono::{DateTime, Datelike, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use prefetch_contract::contract::{Module, Ticker};
use prefetch_contract::prediction::Prediction;
use serde::Serialize;
use std::collections::HashMap;

/// One cache key: which data of which instrument.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Key {
    /// The data module (`price`, `news`, …).
    pub module: Module,
    /// The instrument.
    pub ticker: Ticker,
}

impl Key {
    /// The key a prediction is about.
    pub fn of(p: &Prediction) -> Self {
        Self { module: p.module.clone(), ticker: p.ticker.clone() }
    }
}

/// Whether a key takes part in warming or is held back as the control group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Warmed as predictions say.
    Warmed,
    /// Never warmed: the baseline the lift is measured against.
    Holdback,
}

impl Group {
    /// The `group` metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Warmed => "warmed",
            Self::Holdback => "holdback",
        }
    }
}

/// How one prediction's warm ended; the `outcome` metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Fetched and written to the cache.
    Stored,
    /// The cached entry outlives the prediction's horizon; nothing to do.
    SkippedFresh,
    /// The key is in the holdback group.
    SkippedHoldback,
    /// Confidence below `min_confidence`.
    SkippedConfidence,
    /// Warming is disabled.
    SkippedDisabled,
    /// Outside the active hours or weekdays.
    SkippedOffHours,
    /// The prediction's horizon had already passed when it was read.
    SkippedStale,
    /// A more confident prediction of the same key came in the same batch, or the key was
    /// being warmed already (by an earlier batch or a deferred refresh).
    SkippedDuplicate,
    /// Beyond the `top_n` of an operator's warm-up.
    DroppedBudget,
    /// The rate limit could not grant a request within its maximum wait.
    DroppedRateLimit,
    /// The upstream (or the cache write) failed after every retry.
    Failed,
}

impl Outcome {
    /// Every outcome, for pre-registering label values.
    pub const ALL: [Outcome; 11] = [
        Self::Stored,
        Self::SkippedFresh,
        Self::SkippedHoldback,
        Self::SkippedConfidence,
        Self::SkippedDisabled,
        Self::SkippedOffHours,
        Self::SkippedStale,
        Self::SkippedDuplicate,
        Self::DroppedBudget,
        Self::DroppedRateLimit,
        Self::Failed,
    ];

    /// The `outcome` metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::SkippedFresh => "skipped_fresh",
            Self::SkippedHoldback => "skipped_holdback",
            Self::SkippedConfidence => "skipped_confidence",
            Self::SkippedDisabled => "skipped_disabled",
            Self::SkippedOffHours => "skipped_off_hours",
            Self::SkippedStale => "skipped_stale",
            Self::SkippedDuplicate => "skipped_duplicate",
            Self::DroppedBudget => "dropped_budget",
            Self::DroppedRateLimit => "dropped_rate_limit",
            Self::Failed => "failed",
        }
    }
}

/// When warming may fetch: optional hours and weekdays in the market's time zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// The market time zone the hours and weekdays are read in (DST-correct).
    #[serde(serialize_with = "ser_tz")]
    pub tz: Tz,
    /// Active from the first to the second local time (end exclusive; an end before the start
    /// spans midnight). `None`: all day.
    pub hours: Option<(NaiveTime, NaiveTime)>,
    /// Active weekdays (local). `None`: every day.
    pub weekdays: Option<Vec<Weekday>>,
}

fn ser_tz<S: serde::Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

impl Schedule {
    /// Always active, in America/New_York.
    pub fn always() -> Self {
        Self { tz: chrono_tz::America::New_York, hours: None, weekdays: None }
    }

    /// Whether `now` falls inside the active hours and weekdays.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.tz);
        if let Some(days) = &self.weekdays {
            if !days.contains(&local.weekday()) {
                return false;
            }
        }
        match self.hours {
            None => true,
            Some((start, end)) => {
                let t = local.time().with_nanosecond(0).unwrap_or(local.time());
                if start <= end {
                    start <= t && t < end
                } else {
                    t >= start || t < end
                }
            }
        }
    }
}

/// The live warming policy. Held behind a `tokio::sync::watch` channel so a later config topic
/// can swap it while the service runs; every decision reads one consistent copy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WarmPolicy {
    /// Master switch: when off, predictions are consumed and committed but nothing is fetched.
    pub enabled: bool,
    /// Most keys one operator warm-up (`POST /v1/warmup`) fetches, highest confidence first.
    /// Predictions from the topic are not cut by it: the analyzer capped and budgeted them.
    pub top_n: usize,
    /// Predictions below this confidence are not warmed.
    pub min_confidence: f64,
    /// Share of keys (0–1) never warmed, chosen by a stable hash of ticker and module.
    pub holdback: f64,
    /// When warming may fetch.
    pub schedule: Schedule,
}

impl Default for WarmPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            top_n: 50,
            min_confidence: 0.1,
            holdback: 0.05,
            schedule: Schedule::always(),
        }
    }
}

/// FNV-1a (64 bit) of `ticker`, a zero byte and `module`: stable across processes, releases
/// and machines (unlike `RandomState`), so a key stays in its group for good.
pub fn key_hash(ticker: &Ticker, module: &Module) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = ticker.as_str().bytes().chain(std::iter::once(0)).chain(module.as_str().bytes());
    bytes.fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The group of a key when a share `holdback` (0–1) of all keys is held back.
pub fn group_of(ticker: &Ticker, module: &Module, holdback: f64) -> Group {
    // 10 000 buckets: a share is honoured to 0.01 %.
    let bucket = key_hash(ticker, module) % 10_000;
    if (bucket as f64) < holdback.clamp(0.0, 1.0) * 10_000.0 {
        Group::Holdback
    } else {
        Group::Warmed
    }
}

/// Whether a cached entry expiring at `expires_at` still serves `p`'s whole horizon, counted
/// from `now` or from when the prediction was made, whichever is later.
pub fn fresh_beyond_horizon(
    expires_at: Option<DateTime<Utc>>,
    p: &Prediction,
    now: DateTime<Utc>,
) -> bool {
    let horizon_end = now.max(p.generated_at) + p.horizon();
    expires_at.is_some_and(|e| e >= horizon_end)
}

/// Whether a refresh deferred to `at` ([`Decision::WarmAt`]) still fetches when `at` comes,
/// given when the key's copy expires then: not if a copy stored meanwhile outlives `at` by more
/// than [`REFRESH_LEAD`].
pub fn refresh_still_due(expires_at: Option<DateTime<Utc>>, at: DateTime<Utc>) -> bool {
    expires_at.is_none_or(|e| e <= at + REFRESH_LEAD)
}

/// Whether the prediction's horizon has passed: warming for it now would be too late.
pub fn is_stale(p: &Prediction, now: DateTime<Utc>) -> bool {
    p.is_stale(now)
}

/// Who asks for a batch of warms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Predictions the analyzer published: the schedule applies; `top_n` does not (the
    /// analyzer's tick and its fetch budget already chose them, and its cache view assumes
    /// every one is warmed).
    Published,
    /// An operator's explicit warm-up: the schedule does not apply; `top_n` caps it.
    Operator,
}

/// How long before a live copy's expiry a deferred refresh fetches: the fetch and the cache
/// write take time, and a copy written after its predecessor expired leaves a gap of misses.
pub const REFRESH_LEAD: chrono::Duration = chrono::Duration::seconds(1);

/// What to do with one prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Fetch and store it.
    Warm,
    /// Fetch and store it at this time, [`REFRESH_LEAD`] before the live copy expires (a
    /// published refresh; see the module docs). When the time comes, the key is looked up
    /// again: a copy that outlives it by more than the lead (a demand fetch or another refresh
    /// stored meanwhile) makes it [`Outcome::SkippedFresh`] instead ([`refresh_still_due`]).
    WarmAt(DateTime<Utc>),
    /// Do not fetch; the outcome says why.
    Skip(Outcome),
}

/// Decides, for a batch of predictions read together, which to warm. `expires_at` answers when
/// the cached entry of a key expires (`None`: not cached); `trigger` says who asks (see
/// [`Trigger`]). Returns one decision per prediction, in input order.
pub fn plan(
    policy: &WarmPolicy,
    preds: &[Prediction],
    now: DateTime<Utc>,
    trigger: Trigger,
    expires_at: impl Fn(&Key) -> Option<DateTime<Utc>>,
) -> Vec<Decision> {
    if !policy.enabled {
        return vec![Decision::Skip(Outcome::SkippedDisabled); preds.len()];
    }
    if trigger == Trigger::Published && !policy.schedule.is_active(now) {
        return vec![Decision::Skip(Outcome::SkippedOffHours); preds.len()];
    }
    // The best prediction of each key in the batch (highest confidence, then latest).
    let mut best: HashMap<Key, usize> = HashMap::new();
    for (i, p) in preds.iter().enumerate() {
        let better = |j: usize| {
            let q = &preds[j];
            p.confidence.total_cmp(&q.confidence).then(p.generated_at.cmp(&q.generated_at)).is_gt()
        };
        best.entry(Key::of(p))
            .and_modify(|j| {
                if better(*j) {
                    *j = i
                }
            })
            .or_insert(i);
    }
    let mut out = Vec::with_capacity(preds.len());
    let mut candidates = Vec::new();
    for (i, p) in preds.iter().enumerate() {
        let key = Key::of(p);
        let expires = expires_at(&key);
        let d = if best[&key] != i {
            Decision::Skip(Outcome::SkippedDuplicate)
        } else if is_stale(p, now) {
            Decision::Skip(Outcome::SkippedStale)
        } else if group_of(&p.ticker, &p.module, policy.holdback) == Group::Holdback {
            Decision::Skip(Outcome::SkippedHoldback)
        } else if p.confidence.is_nan() || p.confidence < policy.min_confidence {
            Decision::Skip(Outcome::SkippedConfidence)
        } else if fresh_beyond_horizon(expires, p, now) {
            Decision::Skip(Outcome::SkippedFresh)
        } else {
            candidates.push(i);
            match expires.map(|e| e - REFRESH_LEAD) {
                Some(at) if trigger == Trigger::Published && at > now => Decision::WarmAt(at),
                _ => Decision::Warm,
            }
        };
        out.push(d);
    }
    if trigger == Trigger::Published {
        return out;
    }
    candidates
        .sort_by(|&a, &b| preds[b].confidence.total_cmp(&preds[a].confidence).then(a.cmp(&b)));
    for &i in candidates.iter().skip(policy.top_n) {
        out[i] = Decision::Skip(Outcome::DroppedBudget);
    }
    out
}

#[cfg(test)]
mod tests;
