//! The Smart Prefetch wire contract: the types every topic and HTTP boundary carries, with the
//! validation that turns bytes into them. Pure: serde, chrono and nothing of Kafka or HTTP, so the
//! model core, the thin CLI and every service share it at no build cost.
//!
//! # Layout
//! - `contract.rs`: [`contract::QueryEvent`], its limits and its canonical JSON form; under
//!   `contract/`: `fields.rs`, the validated newtypes ([`contract::Ticker`], [`contract::Module`],
//!   [`contract::ClientId`]) and [`contract::FieldError`]; `parse.rs`, the one parser every
//!   boundary uses, reporting every bad field; `strict.rs`, [`contract::parse_json_strict`]
//!   (duplicate keys refused); `canonical.rs`, the byte scanner for the canonical form;
//!   `view.rs`, [`contract::EventRef`], a valid event borrowing its names; `tests.rs`, the tests.
//! - `prediction.rs`: [`prediction::Prediction`], what the analyzer publishes and the warmer reads.
//! - `duration.rs`: [`duration::parse_duration`], the one duration syntax (`5s`, `1h30m`, `1d`).
//! - `budget.rs`: [`budget::Budget`], the fetch budget warming may spend (a ratio over the
//!   fetches of no warming, a rate, or off) and its command-line/JSON forms.
//! - `config.rs`: [`config::LiveConfig`], the one live configuration of every analyzer and warmer
//!   (compacted `prefetch.config` topic), its validation and partial updates.
//! - `testgen.rs`: the seeded generator of the parsers' property tests (test support, hidden).
//!
//! An event enters at a service boundary as JSON, becomes a `QueryEvent` through
//! `QueryEvent::from_value`, is written to Kafka as `QueryEvent::to_json` keyed by its ticker, and
//! is read back by consumers through `QueryEvent::from_json`, which re-validates it because a
//! topic can be written by anyone.

pub mod budget;
pub mod config;
pub mod contract;
pub mod duration;
pub mod prediction;
#[cfg(test)]
mod props;
#[doc(hidden)]
pub mod testgen;
