//! What crosses a process boundary in Smart Prefetch.
//!
//! # Layout
//! - `contract.rs`: the wire contract. [`contract::QueryEvent`] and its validated newtypes
//!   ([`contract::Ticker`], [`contract::Module`], [`contract::ClientId`]); the one parser every
//!   boundary uses, reporting every bad field.
//! - `kafka.rs`: connection flags ([`kafka::KafkaArgs`]), one builder per client kind with every
//!   semantic key set explicitly, topic names ([`kafka::TopicArgs`]) and start-up topic creation.
//! - `config.rs`: [`config::LiveConfig`], the one live configuration of every analyzer and
//!   warmer (compacted `prefetch.config` topic), its validation and partial updates.
//! - `feed.rs`: following a topic outside any group ([`feed::follow`]), and
//!   [`feed::ConfigFeed`], the live config as a watch channel.
//! - `prediction.rs`: [`prediction::Prediction`], what the analyzer publishes and the warmer reads.
//! - `http.rs`: `/metrics` rendering and the JSON error body shared by the HTTP services.
//! - `cli.rs`: command-line helpers (durations such as `5s`).
//! - `telemetry.rs`: `tracing` initialisation (text or JSON) and the shutdown signal.
//!
//! An event enters at a service boundary as JSON, becomes a `QueryEvent` through
//! `QueryEvent::from_value`, is written to Kafka as `QueryEvent::to_json` keyed by its ticker, and
//! is read back by consumers through `QueryEvent::from_json`, which re-validates it because a
//! topic can be written by anyone.

pub mod cli;
pub mod config;
pub mod contract;
pub mod feed;
pub mod http;
pub mod kafka;
pub mod prediction;
pub mod telemetry;
