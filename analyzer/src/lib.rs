//! The analyzer: learns which `(ticker, module)` keys will be queried soon and says so with a
//! calibrated probability.
//!
//! Two halves. The model (`model/`) is pure: no Kafka, no HTTP, no clock. Everything is driven
//! by the event times it is handed, so the live service, the tests (hand-made timestamps) and an
//! offline replay all run the same code. The service (`service/`) wraps it: it calls
//! [`Model::record`] per consumed event and [`Model::tick`] on a timer (on `spawn_blocking`, see
//! [`Model`]), publishes what they return, and serves the admin HTTP.
//!
//! # Layout
//! - `model/mod.rs`: [`Model`], [`Model::record`] and the public result types.
//! - `model/config.rs`: [`ModelConfig`] (serde, defaults) and its validation into the internal
//!   settings; [`ConfigError`] names the field at fault.
//! - `model/keys.rs`: interned ticker/module ids and the dense slot table of live keys.
//! - `model/window.rs`: one key's state — sparse count buckets over the retention window and two
//!   event-time EWMAs (recent and steady rate).
//! - `model/profile.rs`: event time ↔ market time (chrono-tz, DST-correct), the bucket→hour
//!   cache, and seasonal rates read off a key's buckets (hour of day × weekday factor).
//! - `model/sequence.rs`: per-client last query and the learned transition tables
//!   (module → module on one ticker, ticker → ticker:module).
//! - `model/refresh.rs`: refresh-ahead — the model's view of when cached copies expire, so a
//!   tick ranks keys by what a warm now would serve ([`Model::set_cache_ttls`]).
//! - `model/calibration.rs`: event-time online calibration (binned outcomes, isotonic fit).
//! - `model/tick.rs`: [`Model::tick`] — intensity blend, ranking, samples, expiry — and
//!   [`Model::explain`].
//! - `model/stats.rs`: [`Model::stats`], the patterns snapshot aggregated with polars.
//! - `service/`: the Kafka consume loop, rebuild after restart/rebalance, admin HTTP, metrics
//!   (its own `# Layout` in `service/mod.rs`); [`service::serve`] is the entry point.
//!
//! # How one event flows
//! `record(event)` checks its time against the watermark (folded if late within the bound,
//! counted and dropped beyond it), interns its ticker and module, bumps the key's bucket and
//! EWMAs, closes the key's open calibration sample as a hit if it falls inside it, and, when the
//! event names a client, teaches the transition tables and returns any learned follow-up likely
//! enough to publish ([`prediction::Reason::Sequence`]).
//!
//! `tick(now)` moves the watermark and walks every live key once: expire old buckets (and the
//! key, if none is left), update a prior built from the steady and seasonal rates with the
//! recent events (gamma-Poisson), bound it by how long the key has been idle, scale it by the
//! hour weight, turn it into `1 − exp(−λ·horizon)`, map that through the calibrator, and keep
//! the best `top_n` at or above `min_confidence`.
//!
//! [`prediction::Reason::Sequence`]: prefetch_common::prediction::Reason::Sequence

pub mod model;
pub mod service;

pub use model::config::{parse_hour_weights, ConfigError, ModelConfig};
pub use model::stats::{KeyCount, NameCount, SequenceKind, SequenceStat, Stats, StatsError};
pub use model::{Admission, CacheTtls, Counters, Explanation, Footprint, Model, Recorded};
