//! The analyzer: learns which `(ticker, module)` keys will be queried soon and says so with a
//! calibrated probability.
//!
//! Two halves. The model lives in the pure `prefetch-model` crate (re-exported here as
//! [`model`]): no Kafka, no HTTP, no clock. Everything is driven by the event times it is handed,
//! so the live service, the tests (hand-made timestamps) and `prefetch backtest` all run the same
//! code. The service (`service/`) wraps it: it calls [`Model::record`] per consumed event and
//! [`Model::tick`] on a timer (on `spawn_blocking`, see [`Model`]), publishes what they return,
//! and serves the admin HTTP.
//!
//! # Layout
//! - `logs.rs`: recorded query logs (NDJSON, CSV, Parquet) through polars lazy scans, each row
//!   validated by the contract, for `prefetch backtest` and `prefetch tune`.
//! - `stats.rs`: the patterns snapshot aggregated with polars from the copy the model hands out
//!   ([`Model::patterns_input`]), outside the model's lock; polars stays in this crate.
//! - `service/`: the Kafka consume loop, rebuild after restart/rebalance, admin HTTP, metrics
//!   (its own `# Layout` in `service/mod.rs`); [`service::serve`] is the entry point.
//! - the model's own files are listed in `prefetch-model`'s `# Layout`.
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

pub use prefetch_model as model;
pub mod logs;
pub mod service;
pub mod stats;

pub use model::config::{parse_hour_weights, ConfigError, ModelConfig};
pub use model::patterns::{KeyCount, NameCount, SequenceKind, SequenceStat, Stats};
pub use model::{Admission, CacheTtls, Counters, Explanation, Footprint, Model, Recorded};
pub use stats::StatsError;
