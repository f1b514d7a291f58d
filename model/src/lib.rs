//! The pure core of Smart Prefetch: the model the analyzer runs, the warmer's policy, and the
//! publish de-duplication between them. No Kafka, no HTTP, no clock, no polars: everything is
//! driven by the timestamps it is given, so the live services, the tests (hand-made timestamps)
//! and `prefetch backtest` run the same code — the compiler checks that the backtest runs what
//! production runs.
//!
//! [`Model::record`] folds one event in, [`Model::tick`] advances the watermark and ranks keys,
//! [`Model::patterns_input`] copies what the patterns snapshot needs (the analyzer aggregates it
//! with polars outside its lock).
//!
//! # Layout
//! - `lib.rs`: [`Model`], [`Model::record`] and the public result types.
//! - `config.rs`: [`ModelConfig`] (serde, defaults) and its validation into the internal
//!   settings; [`ConfigError`] names the field at fault.
//! - `keys.rs`: interned ticker/module ids and the dense slot table of live keys.
//! - `window.rs`: one key's state — sparse count buckets over the retention window and two
//!   event-time EWMAs (recent and steady rate).
//! - `profile.rs`: event time ↔ market time (chrono-tz, DST-correct), the bucket→hour cache, and
//!   seasonal rates read off a key's buckets (hour of day × weekday factor).
//! - `sequence.rs`: per-client last query and the learned transition tables (module → module on
//!   one ticker, ticker → ticker:module); for queries naming no client, each ticker's last such
//!   query and same-ticker module tables of their own.
//! - `cycle.rs`: periodicity — each key's polling period and phases learnt from its queries,
//!   and the wheel of their next polls, which a tick warms just before they come.
//! - `refresh.rs`: refresh-ahead — the model's view of when cached copies expire, so a tick ranks
//!   keys by what a warm now would serve ([`Model::set_cache_ttls`]).
//! - `calibration.rs`: event-time online calibration (binned outcomes, isotonic fit).
//! - `report.rs`: what the model reports — admissions, counters, footprint, explanations.
//! - `usefulness.rs`: the share of published warms used, by reason and confidence — the
//!   confidence refresh-ahead publishes and the budget spends by.
//! - `score.rs`: the one formula — rates → intensity → probability of a query within a window
//!   (and of a warm now serving one) — used by ticks, refresh-on-hit and explanations.
//! - `tick.rs`: [`Model::tick`] — ranking, samples, expiry — its reference full walk
//!   ([`Model::tick_full_scan`]) and [`Model::explain`].
//! - `lazy.rs`: the tick that visits only keys that changed, expire, resolve or open a sample,
//!   and those whose score upper bound reaches the cut — and why the bounds hold.
//! - `schedule.rs`: its index — a max-heap of bounds, parking, expiry and sample wheels.
//! - `snapshot.rs`: [`Model::snapshot`] / [`Model::restore`] — the state of a set of tickers in
//!   a versioned binary form (the analyzer's per-partition checkpoints).
//! - `patterns.rs`: [`Model::patterns_input`] and the snapshot's result types.
//! - `recent.rs`: `Recent`, which event-driven predictions are new enough to publish.
//! - `budget.rs`: [`budget::Spend`], the fetch budget spent online — an event-time token bucket
//!   fed by the calls of no warming and drawn by demand fetches — which decides how many of a tick's or an event's
//!   candidates are published ([`Model::set_budget`], [`Model::spend_status`]).
//! - `policy.rs`: the warmer's pure decisions ([`policy::plan`]).
//!
//! # How one event flows
//! `record(event)` checks its time against the watermark (folded if late within the bound,
//! counted and dropped beyond it), interns its ticker and module, bumps the key's bucket and
//! EWMAs, closes the key's open calibration sample as a hit if it falls inside it, updates the
//! key's cached copy and polling period (refresh-ahead), and teaches the transition tables —
//! the client's when the event names one, else the ticker's own for queries naming no client —
//! returning any learned follow-up likely enough to publish ([`Reason::Sequence`]); `Recent`
//! then drops the ones published moments ago, by ids, before any is given its names.
//!
//! `tick(now)` moves the watermark and, for each key it must visit: expire old buckets (and the
//! key, if none is left), update a prior built from the steady and seasonal rates with the
//! recent events (gamma-Poisson), bound it by how long the key has been idle, scale it by the
//! hour weight, turn it into `1 − exp(−λ·horizon)`, map that through the calibrator, and keep
//! the best `top_n` at or above `min_confidence`; add the periodic keys whose next poll comes
//! before the next tick (`cycle.rs`); publish what the fetch budget pays for (`budget.rs`). The keys it visits are those the index of
//! `schedule.rs` names — new events, a bucket leaving the window, a sample to resolve or open,
//! a score bound that can still make the cut — not every live key (`lazy.rs`). The warmer's [`policy::plan`] decides which of
//! those to fetch.

mod buckets;
pub mod budget;
mod calibration;
pub mod config;
mod cycle;
mod keys;
mod lazy;
pub mod patterns;
pub mod policy;
mod profile;
mod recent;
mod refresh;
mod report;
mod schedule;
mod score;
mod sequence;
mod snapshot;
mod tick;
mod usefulness;
mod window;

#[cfg(test)]
mod buckets_tests;
#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tick_tests;
#[cfg(test)]
mod trace_tests;

pub use budget::{Budget, SpendStatus};
use calibration::Calibrator;
use chrono::{DateTime, Utc};
pub use config::parse_hour_weights;
use config::Settings;
pub use config::{ConfigError, ModelConfig};
pub use keys::{IdHash, IdHasher};
use keys::{Interner, KeyTable};
pub use patterns::{KeyCount, NameCount, PatternsInput, SequenceKind, SequenceStat, Stats};
use prefetch_contract::contract::{EventRef, Module, QueryEvent, Ticker};
use prefetch_contract::prediction::Reason;
use profile::{to_secs, Calendar, SeasonFrame, Slot};
use recent::Recent;
pub use refresh::CacheTtls;
use refresh::CacheView;
pub use report::{Admission, Counters, Explanation, Footprint, Recorded};
pub use schedule::TickVisits;
use sequence::Sequences;
pub use snapshot::{Restored, SnapshotError, SNAPSHOT_VERSION};
use std::hash::BuildHasher;
use window::NO_SAMPLE;

/// The current seasonal frame and the epoch keys compare their cached rate against.
#[derive(Debug, Clone, Copy)]
struct Season {
    hour_start: u32,
    frame: SeasonFrame,
}

/// The analyzer's model. CPU-bound and synchronous: an async service runs `tick` and `stats`
/// on `tokio::task::spawn_blocking` (or its own thread), because they can walk every key and
/// `stats` runs polars, which calls `block_in_place` and must not run on a current-thread
/// runtime.
#[derive(Debug)]
pub struct Model {
    cfg: ModelConfig,
    s: Settings,
    tau_fast: f32,
    tau_slow: f32,
    tickers: Interner<Ticker>,
    modules: Interner<Module>,
    keys: KeyTable,
    calendar: Calendar,
    calibrator: Calibrator,
    sequences: Sequences,
    /// Latest tick time (internal seconds) and the instant it was given as.
    watermark: Option<(u32, DateTime<Utc>)>,
    first_bucket: Option<u32>,
    season: Option<Season>,
    season_epoch: u32,
    /// The watermark of the last tick, from which the next one finds the keys whose sampling
    /// point passed (`None`: every key without an open sample opens one).
    grid: Option<u32>,
    /// The lazy tick's index of keys (`schedule.rs`).
    schedule: schedule::Schedule,
    housekept_at: Option<u32>,
    counters: Counters,
    /// Refresh-ahead's view of the cache, once TTLs are known ([`Model::set_cache_ttls`]).
    cache: Option<CacheView>,
    /// Slot and copy expiry of the key the event being recorded hit near its expiry.
    hit_refresh: Option<(u32, u32)>,
    /// The fetch budget and what it spent (`budget.rs`).
    spend: budget::Spend,
    /// Event-driven predictions published lately (the publish de-duplication).
    recent: Recent,
    /// The share of published warms used, by reason and confidence (with a cache view).
    usefulness: usefulness::Usefulness,
}

/// The client's key in the sequence tables. Seeded per process like every map of the model
/// ([`IdHash`]): the tables are not checkpointed, so the key needs to hold within one run
/// only. (SipHash, before, was 2.5% of `record`: BENCHMARKS.md #15.)
fn client_key(c: &str) -> u64 {
    IdHash.hash_one(c)
}

impl Model {
    /// Validates `cfg` and builds an empty model.
    pub fn new(cfg: ModelConfig) -> Result<Self, ConfigError> {
        let s = cfg.validate()?;
        Ok(Self {
            tau_fast: s.horizon as f32,
            tau_slow: (s.horizon as f32 * 12.0).max(3_600.0),
            tickers: Interner::new(),
            modules: Interner::new(),
            keys: KeyTable::default(),
            calendar: Calendar::new(s.tz, s.bucket, s.retention),
            calibrator: Calibrator::new(s.classes),
            sequences: Sequences::new(s.session_gap, s.horizon, s.retention),
            watermark: None,
            first_bucket: None,
            season: None,
            season_epoch: 0,
            grid: None,
            schedule: schedule::Schedule::default(),
            housekept_at: None,
            counters: Counters::default(),
            cache: None,
            hit_refresh: None,
            spend: budget::Spend::new(Budget::Off, s.top_n),
            recent: Recent::default(),
            usefulness: usefulness::Usefulness::default(),
            cfg,
            s,
        })
    }

    /// The configuration the model runs with.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Applies a changed configuration (the live config topic) to the running model, keeping
    /// what it learned. Settings that shape the stored history (retention, bucket width, session
    /// gap, late bound) cannot change live and are refused by name. A new market time zone
    /// re-derives market time; new hour ranges restart calibration (it keeps one table per
    /// range); a new horizon re-scales the decays from the next event on.
    pub fn reconfigure(&mut self, cfg: ModelConfig) -> Result<(), ConfigError> {
        let s = cfg.validate()?;
        let fixed = [
            ("retention_s", s.retention, self.s.retention),
            ("bucket_s", s.bucket, self.s.bucket),
            ("session_gap_s", s.session_gap, self.s.session_gap),
            ("late_bound_s", s.late_bound, self.s.late_bound),
        ];
        if let Some((field, _, now)) = fixed.iter().find(|(_, new, old)| new != old) {
            return Err(ConfigError::new(*field, format!("cannot change while the analyzer runs (it is {now} s); restart it with the new value")));
        }
        if s.tz != self.s.tz {
            self.calendar = Calendar::new(s.tz, s.bucket, s.retention);
            self.season = None;
        }
        if s.hour_class != self.s.hour_class || s.classes != self.s.classes {
            self.calibrator = Calibrator::new(s.classes);
            self.grid = None;
        }
        if s.horizon != self.s.horizon {
            self.tau_fast = s.horizon as f32;
            self.tau_slow = (s.horizon as f32 * 12.0).max(3_600.0);
            self.sequences.set_horizon(s.horizon);
            self.season = None;
        }
        self.s = s;
        self.cfg = cfg;
        self.schedule.invalidate();
        self.spend.set(self.spend.budget(), self.s.top_n);
        Ok(())
    }

    /// Folds one event into the state and returns the event-driven predictions it triggers.
    pub fn record(&mut self, event: &QueryEvent) -> Recorded {
        self.record_view(event.view())
    }

    /// [`Model::record`] for an event borrowed from the bytes it was read from (the analyzer's
    /// fold reads events this way, without a string allocated per field).
    pub fn record_view(&mut self, event: EventRef<'_>) -> Recorded {
        let dropped = Recorded { admission: Admission::Dropped, predictions: Vec::new() };
        let Some(t) = to_secs(event.ts) else {
            self.counters.events_dropped += 1;
            return dropped;
        };
        let admission = match self.watermark {
            Some((wm, _)) if u64::from(t) + u64::from(self.s.late_bound) < u64::from(wm) => {
                Admission::Dropped
            }
            Some((wm, _)) if t < wm => Admission::Late,
            _ => Admission::OnTime,
        };
        match admission {
            Admission::Dropped => {
                self.counters.events_dropped += 1;
                return dropped;
            }
            Admission::Late => self.counters.events_late += 1,
            Admission::OnTime => self.counters.events_on_time += 1,
        }
        let mut candidates = self.fold(event, t, true);
        if let Some((slot, expires)) = self.hit_refresh.take() {
            candidates.extend(self.refresh_on_hit(slot, t, expires));
        }
        let predictions = self.publish_event_driven(candidates, t, event.ts);
        Recorded { admission, predictions }
    }

    /// Folds an event re-read from history — a rebuild after a restart or a rebalance — with no
    /// late bound (history is older than the watermark by nature) and no predictions (they were
    /// published when the event was first read). Returns false for a timestamp the model cannot
    /// represent.
    pub fn record_history(&mut self, event: &QueryEvent) -> bool {
        let Some(t) = to_secs(event.ts) else { return false };
        self.counters.events_rebuilt += 1;
        self.fold(event.view(), t, false);
        self.hit_refresh = None;
        true
    }

    /// Forgets every key of `tickers` (their partition moved to another instance); returns how
    /// many keys went. Sequences learned from them fade out as usual.
    pub fn forget_tickers(&mut self, tickers: &std::collections::HashSet<Ticker>) -> usize {
        let ids: std::collections::HashSet<u32> =
            tickers.iter().filter_map(|t| self.tickers.id(t)).collect();
        if ids.is_empty() {
            return 0;
        }
        let gone: Vec<(u32, u32, u32)> = self
            .keys
            .slots_mut()
            .iter()
            .enumerate()
            .filter(|(_, k)| ids.contains(&k.ticker))
            .map(|(slot, k)| (slot as u32, k.ticker, k.module))
            .collect();
        for &(slot, t, m) in &gone {
            self.keys.remove(slot);
            self.tickers.release(t);
            self.modules.release(m);
        }
        self.keys.compact_if_sparse();
        self.schedule.invalidate();
        gone.len()
    }

    /// Updates the key's state and the sequences with an admitted event at `t` (seconds);
    /// returns the event-driven predictions when `predict`.
    fn fold(&mut self, event: EventRef<'_>, t: u32, predict: bool) -> Vec<budget::Candidate> {
        let bucket = t / self.s.bucket;
        self.first_bucket = Some(self.first_bucket.map_or(bucket, |b| b.min(bucket)));
        let tid = self.tickers.intern_str(event.ticker(), || event.to_ticker());
        let mid = self.modules.intern_str(event.module(), || event.to_module());
        let (slot, created) = self.keys.get_or_insert(tid, mid);
        if created {
            self.tickers.retain(tid);
            self.modules.retain(mid);
        }
        let k = self.keys.slot_mut(slot);
        let first = k.buckets().next().map(|b| b.0);
        k.record(t, bucket, self.tau_fast, self.tau_slow);
        let horizon = self.s.horizon;
        self.schedule.touched(
            slot,
            created.then(|| schedule::Sampling::of(tid, mid, horizon)),
            first.is_none_or(|f| bucket < f).then_some(bucket),
        );
        let observed = match self.cache.as_mut() {
            Some(view) => view.observe(
                tid,
                mid,
                event.module(),
                (t, event.ts.timestamp_subsec_millis() as u16),
                event.hit,
            ),
            // No view of the cache: each miss is taken for a call no warming would make too.
            None => {
                refresh::Observed { demand: !event.hit, bare: !event.hit, ..Default::default() }
            }
        };
        self.hit_refresh = observed.refresh.map(|e| (slot, e));
        if let Some(cell) = observed.used_cell {
            self.usefulness.used(cell, t);
        }
        if predict {
            self.spend.observe(t, observed);
        }
        if k.sample_at != NO_SAMPLE && t > k.sample_at && t - k.sample_at <= self.s.horizon {
            self.calibrator.resolve(k.sample_cell, true);
            k.sample_at = NO_SAMPLE;
        }

        let min_p = self.s.min_confidence;
        let window = self.cache.as_ref().map_or(u32::MAX, |v| v.ttl(mid));
        let mut follows = match event.client() {
            Some(c) => self.sequences.observe(client_key(c), tid, mid, t, min_p, window),
            None => self.sequences.observe_anonymous(tid, mid, t, min_p, window),
        };
        if !predict || !self.s.enabled || follows.is_empty() {
            return Vec::new();
        }
        // The best `top_n` follow-ups by confidence; with a view of the cache, only those whose
        // copy is missing or about to expire. By id: most follow-ups of a busy session are held
        // back, and only what is published is given its names (`publish_event_driven`).
        follows.retain(|f| {
            self.tickers.name(f.ticker).is_some() && self.modules.name(f.module).is_some()
        });
        let confidence = |f: &sequence::Follow| f.probability.clamp(0.0, 1.0);
        follows.sort_by(|a, b| confidence(b).total_cmp(&confidence(a)));
        follows.truncate(self.s.top_n);
        if let Some(view) = &self.cache {
            follows.retain(|f| view.wants_follow_up(f.ticker, f.module, t));
        }
        follows
            .iter()
            .map(|f| budget::Candidate {
                ticker: f.ticker,
                module: f.module,
                confidence: confidence(f),
                reason: Reason::Sequence,
            })
            .collect()
    }

    /// Running totals since the model was built.
    pub fn counters(&self) -> Counters {
        Counters { calibration_samples: self.calibrator.resolved(), ..self.counters }
    }

    /// The current watermark (latest `tick` time), if any tick happened.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        self.watermark.map(|(_, at)| at)
    }

    /// How much state the model holds.
    pub fn footprint(&self) -> Footprint {
        Footprint {
            keys: self.keys.len(),
            buckets: self.keys.iter().map(|k| k.bucket_count()).sum(),
            tickers: self.tickers.len(),
            modules: self.modules.len(),
            clients: self.sequences.live_clients(),
            key_bytes: self.keys.approx_bytes(),
        }
    }

    /// Market hour and weekday of `secs` and the configured weight and calibration class there.
    fn hour_context(&self, secs: u32) -> (Slot, f64, u8) {
        let slot = self.calendar.slot_at(secs);
        let h = usize::from(slot.hour);
        (slot, self.s.hour_weight[h], self.s.hour_class[h])
    }
}
