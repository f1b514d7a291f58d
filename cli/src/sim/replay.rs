//! One replay of a trace through one warming strategy, in event time.
//!
//! Order of work, which is what makes a replay causal: ticks fall on multiples of the tick
//! interval; a tick at `T` runs once every event with `ts ≤ T` has been served and recorded, and
//! before any later one. Each event is first served by the simulated cache (hit or miss), then
//! shown to the strategy with that outcome as its `hit` (as the live warmer's read-through
//! reports it), and the warms it triggers fetch at the event's time — a refresh of a copy still
//! live at its expiry less the lead, as the live warmer defers it (`policy::Decision::WarmAt`).
//! So a decision at `t` never sees an event after `t` — except the oracle's, whose point is to.

use super::cache::{Reliability, SimCache, Tally};
use super::oracle::Oracle;
use super::original::Original;
use super::trace::Trace;
use analyzer::model::SpendStatus;
use analyzer::{CacheTtls, ConfigError, Model, ModelConfig};
use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use prefetch_common::config::{hour_table, LiveConfig};
use prefetch_common::contract::{Module, Ticker};
use prefetch_common::prediction::Prediction;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use warmer::policy::{self, Decision, Key, Schedule, Trigger, WarmPolicy};

/// What a replay runs with: the live config (the document of the config topic) and the
/// analyzer's tick interval.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// top_n, min_confidence, horizon, hour weights, market time zone, TTLs, enabled.
    pub live: LiveConfig,
    /// Analyzer tick interval, ms (the live default is 5 s).
    pub tick_ms: i64,
    /// What the producer reports as each event's `hit`.
    pub hit_flags: HitFlags,
}

/// What the replayed producer says about its cache in each event's `hit` flag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum HitFlags {
    /// The simulated cache's answer, as the warmer's read-through reports it.
    #[default]
    Cache,
    /// Always `hit: false`, as a simple integration that does not know its cache sends.
    None,
}

impl SimConfig {
    /// The analyzer model's configuration for this config (its other fields at their defaults).
    pub fn model_config(&self) -> ModelConfig {
        ModelConfig::default().with_live(&self.live)
    }

    /// The warmer's policy for this config: no holdback (every key may be warmed), no schedule.
    pub fn policy(&self) -> WarmPolicy {
        WarmPolicy {
            enabled: self.live.enabled,
            top_n: self.live.top_n,
            min_confidence: self.live.min_confidence,
            holdback: 0.0,
            schedule: Schedule::always(),
        }
    }

    fn ttl_ms(&self, trace: &Trace) -> Vec<i64> {
        let per_module: Vec<i64> =
            trace.modules.iter().map(|m| self.live.ttl_for(m.as_str()) as i64 * 1000).collect();
        trace.keys.iter().map(|k| per_module[k.module as usize]).collect()
    }
}

/// Who decides what to warm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The analyzer's model and the warmer's policy, as the live services run them.
    Model,
    /// Nothing is warmed: every miss fetches.
    NoWarming,
    /// The original tool's predictor through the same warmer policy.
    Original,
    /// The future-seeing upper bound.
    Oracle,
}

impl Strategy {
    /// Every strategy, in report order.
    pub const ALL: [Strategy; 4] =
        [Strategy::Model, Strategy::NoWarming, Strategy::Original, Strategy::Oracle];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Model => "model",
            Strategy::NoWarming => "no_warming",
            Strategy::Original => "original",
            Strategy::Oracle => "oracle",
        }
    }
}

/// One warm decision (a line of `--warms-out`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warm {
    /// When it fetched (event time).
    #[serde(serialize_with = "ser_ts")]
    pub ts: DateTime<Utc>,
    /// The instrument.
    pub ticker: Ticker,
    /// The data module.
    pub module: Module,
    /// The prediction's confidence (1 for the oracle).
    pub confidence: f64,
}

fn ser_ts<S: serde::Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The result of one replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// Which strategy.
    pub strategy: Strategy,
    /// The counts.
    #[serde(flatten)]
    pub tally: Tally,
    /// The model's fetch budget: what it earned and spent, as the model saw it (the model only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spend: Option<SpendStatus>,
    /// `(queries, hits)` per bucket of [`timeline_bucket_ms`] from the first event.
    #[serde(skip)]
    pub timeline: Vec<(u64, u64)>,
    /// Width of one timeline bucket, ms.
    #[serde(skip)]
    pub bucket_ms: i64,
    /// Published warms and the useful ones by reason and confidence (the model and the
    /// original; the oracle's warms are not counted).
    #[serde(skip)]
    pub reliability: Reliability,
}

/// Width of one point of the hit-rate timeline: the first of 5, 10, 15, 30 minutes, 1, 2, 4, 6,
/// 12 hours or a day that gives at most about 100 points over the trace.
pub fn timeline_bucket_ms(trace: &Trace) -> i64 {
    let span = match (trace.events.first(), trace.events.last()) {
        (Some(a), Some(b)) => b.ts - a.ts,
        _ => 0,
    };
    const MIN: i64 = 60_000;
    [5, 10, 15, 30, 60, 120, 240, 360, 720, 1_440]
        .iter()
        .map(|m| m * MIN)
        .find(|&w| span / w <= 100)
        .unwrap_or(1_440 * MIN)
}

/// Refreshes deferred to their copy's expiry, as the live warmer holds them (`warm.rs`).
#[derive(Default)]
struct Deferred {
    /// (when, order of deferral) → (key, reliability cell, the warm to report).
    due: BTreeMap<(i64, u64), (u32, u8, Warm)>,
    /// Keys with a deferral waiting: a second one is a duplicate.
    keys: HashSet<u32>,
    seq: u64,
}

impl Deferred {
    fn push(&mut self, id: u32, cell: u8, warm: Warm) {
        if self.keys.insert(id) {
            self.seq += 1;
            self.due.insert((warm.ts.timestamp_millis(), self.seq), (id, cell, warm));
        }
    }

    /// Carries out the refreshes due at or before `upto` (ms), each unless a copy stored since
    /// it was deferred outlives its time ([`policy::refresh_still_due`]).
    fn run(&mut self, cache: &mut SimCache, upto: i64, on_warm: &mut dyn FnMut(&Warm)) {
        while let Some(entry) = self.due.first_entry() {
            if entry.key().0 > upto {
                break;
            }
            let ((at, _), (id, cell, warm)) = entry.remove_entry();
            self.keys.remove(&id);
            let expires = cache.expires(id).and_then(DateTime::from_timestamp_millis);
            if policy::refresh_still_due(expires, warm.ts) {
                cache.warm_in(id, at, cell);
                on_warm(&warm);
            }
        }
    }
}

/// What a replay keeps of its strategy.
enum Driver {
    Model(Box<Model>, WarmPolicy),
    NoWarming,
    Original(Box<Original>, WarmPolicy),
    Oracle(Oracle),
}

/// Replays `trace` through `strategy`. Every warm is passed to `on_warm` as it happens; `bar`,
/// when given, advances by one per event.
pub fn replay(
    trace: &Trace,
    cfg: &SimConfig,
    strategy: Strategy,
    on_warm: &mut dyn FnMut(&Warm),
    bar: Option<&ProgressBar>,
) -> Result<Run, ConfigError> {
    let mut cache = SimCache::new(cfg.ttl_ms(trace));
    let key_ids: HashMap<Key, u32> = (0..trace.keys.len() as u32)
        .map(|k| {
            let (ticker, module) = trace.names(k);
            (Key { ticker: ticker.clone(), module: module.clone() }, k)
        })
        .collect();
    let mut driver = match strategy {
        Strategy::Model => {
            let mut model = Model::new(cfg.model_config())?;
            model.set_cache_ttls(CacheTtls::of_live(&cfg.live));
            model.set_budget(cfg.live.budget);
            Driver::Model(Box::new(model), cfg.policy())
        }
        Strategy::NoWarming => Driver::NoWarming,
        Strategy::Original => {
            let (weights, _) = hour_table(&cfg.live.hour_weights)
                .map_err(|e| ConfigError { field: e.field, message: e.message })?;
            let tz =
                cfg.live.tz().map_err(|e| ConfigError { field: e.field, message: e.message })?;
            Driver::Original(
                Box::new(Original::new(trace, tz, weights, cfg.live.top_n, cfg.live.horizon_s)),
                cfg.policy(),
            )
        }
        Strategy::Oracle => Driver::Oracle(Oracle::new(trace, cfg.live.top_n)),
    };
    let bucket_ms = timeline_bucket_ms(trace);
    let start = trace.events.first().map_or(0, |e| e.ts);
    let mut timeline: Vec<(u64, u64)> = Vec::new();
    let tick_ms = cfg.tick_ms.max(1);
    let mut next_tick = start.div_euclid(tick_ms) * tick_ms;
    if next_tick < start {
        next_tick += tick_ms;
    }

    // Refreshes the policy deferred to their copy's expiry (`Decision::WarmAt`), by when and
    // order of deferral, with the key and reliability cell. As the live warmer does, one waits
    // per key at a time, and each is carried out before the first event at or after its time,
    // unless a copy stored meanwhile outlives it.
    let mut deferred = Deferred::default();
    let apply = |cache: &mut SimCache,
                 deferred: &mut Deferred,
                 policy: &WarmPolicy,
                 preds: Vec<Prediction>,
                 now: i64,
                 on_warm: &mut dyn FnMut(&Warm)| {
        if preds.is_empty() {
            return;
        }
        let at = DateTime::from_timestamp_millis(now).unwrap_or_default();
        let expiry = |k: &Key| {
            key_ids
                .get(k)
                .and_then(|&id| cache.expires(id))
                .and_then(DateTime::from_timestamp_millis)
        };
        let decisions = policy::plan(policy, &preds, at, Trigger::Published, expiry);
        for (p, d) in preds.iter().zip(decisions) {
            let when = match d {
                Decision::Warm => at,
                Decision::WarmAt(later) => later,
                Decision::Skip(_) => continue,
            };
            let cell = Reliability::cell(p.reason as u8, p.confidence);
            let warm = Warm {
                ts: when,
                ticker: p.ticker.clone(),
                module: p.module.clone(),
                confidence: p.confidence,
            };
            match key_ids.get(&Key::of(p)) {
                Some(&id) if when > at => deferred.push(id, cell, warm),
                Some(&id) => {
                    cache.warm_in(id, now, cell);
                    on_warm(&warm);
                }
                None => {
                    cache.warm_unknown();
                    on_warm(&warm);
                }
            }
        }
    };

    for (i, e) in trace.events.iter().enumerate() {
        if !matches!(driver, Driver::NoWarming) {
            while next_tick < e.ts {
                let now = next_tick;
                next_tick += tick_ms;
                match &mut driver {
                    Driver::Model(model, policy) => {
                        let at = DateTime::from_timestamp_millis(now).unwrap_or_default();
                        let preds = model.tick(at);
                        deferred.run(&mut cache, now, on_warm);
                        apply(&mut cache, &mut deferred, policy, preds, now, on_warm);
                    }
                    Driver::Original(original, policy) => {
                        let preds = original.tick(trace, now);
                        deferred.run(&mut cache, now, on_warm);
                        apply(&mut cache, &mut deferred, policy, preds, now, on_warm);
                    }
                    Driver::Oracle(oracle) => {
                        let at = DateTime::from_timestamp_millis(now).unwrap_or_default();
                        for k in oracle.tick(trace, i, now, next_tick, &cache) {
                            cache.warm(k, now);
                            let (ticker, module) = trace.names(k);
                            on_warm(&Warm {
                                ts: at,
                                ticker: ticker.clone(),
                                module: module.clone(),
                                confidence: 1.0,
                            });
                        }
                    }
                    Driver::NoWarming => {}
                }
            }
        }
        deferred.run(&mut cache, e.ts, on_warm);
        let hit = cache.query(e.key, e.ts);
        let b = ((e.ts - start) / bucket_ms) as usize;
        if timeline.len() <= b {
            timeline.resize(b + 1, (0, 0));
        }
        timeline[b].0 += 1;
        timeline[b].1 += u64::from(hit);
        match &mut driver {
            Driver::Model(model, policy) => {
                // The model de-duplicates and budgets its event-driven predictions itself, as
                // it does in the live fold.
                let reported = hit && cfg.hit_flags == HitFlags::Cache;
                let preds = model.record(&trace.event(e, reported)).predictions;
                apply(&mut cache, &mut deferred, policy, preds, e.ts, on_warm);
            }
            Driver::Original(original, _) => original.observe(trace, e),
            Driver::NoWarming | Driver::Oracle(_) => {}
        }
        if let Some(bar) = bar {
            if i % 65_536 == 65_535 {
                bar.inc(65_536);
            }
        }
    }
    // Refreshes still deferred at the end of the trace fetch all the same.
    deferred.run(&mut cache, i64::MAX, on_warm);
    if let Some(bar) = bar {
        bar.inc(trace.events.len() as u64 % 65_536);
    }
    let spend = match &driver {
        Driver::Model(model, _) => Some(model.spend_status()),
        _ => None,
    };
    let reliability = cache.reliability().clone();
    Ok(Run { strategy, tally: cache.tally(), spend, timeline, bucket_ms, reliability })
}
