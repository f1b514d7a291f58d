//! What crosses a process boundary in Smart Prefetch.
//!
//! # Layout
//! - `contract`, `prediction`, `config`: the wire types and the live config, re-exported from the
//!   pure `prefetch-contract` crate (the model core and the thin CLI use that crate alone).
//! - `kafka.rs`: connection flags ([`kafka::KafkaArgs`]), one builder per client kind with every
//!   semantic key set explicitly, then the `--kafka-config` file, then `-X`, validated by
//!   librdkafka. `kafka/properties.rs` parses that file and decides which values are secret;
//!   `kafka/topics.rs` holds topic names ([`kafka::TopicArgs`]), start-up topic creation (which
//!   stops at once on refused credentials or certificates) and the readiness check.
//! - `feed.rs`: following a topic outside any group ([`feed::follow`]), and
//!   [`feed::ConfigFeed`], the live config as a watch channel.
//! - `dlq.rs`: the dead-letter envelope (payload cut to a prefix, length and SHA-256) and the
//!   acknowledged write whose success lets a stage store the source offset.
//! - `http.rs`: `/metrics` rendering and the JSON error body shared by the HTTP services.
//! - `env.rs`: the one `PREFETCH_` environment prefix, and the old names still adopted.
//! - `cli.rs`: command-line helpers (durations such as `5s`).
//! - `telemetry.rs`: `tracing` initialisation (text or JSON) and the shutdown signal.
//!
//! `kafka`, `feed`, `dlq`, `http` and `telemetry` are the default feature `services`; without
//! it (the thin `prefetch` client) the crate is the contract, `env` and `cli`, and builds
//! without librdkafka.
//!
//! An event enters at a service boundary as JSON, becomes a `QueryEvent` through
//! `QueryEvent::from_value`, is written to Kafka as `QueryEvent::to_json` keyed by its ticker, and
//! is read back by consumers through `QueryEvent::from_json`, which re-validates it because a
//! topic can be written by anyone.

pub mod cli;
#[cfg(feature = "services")]
pub mod dlq;
pub mod env;
#[cfg(feature = "services")]
pub mod feed;
#[cfg(feature = "services")]
pub mod http;
#[cfg(feature = "services")]
pub mod kafka;
#[cfg(feature = "services")]
pub mod telemetry;

pub use prefetch_contract::{budget, config, contract, prediction};
