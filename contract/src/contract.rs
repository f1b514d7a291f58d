//! The wire contract for query events: validated newtypes and the one parser every stage uses.
//!
//! An event is validated once, where it enters the system (ingest's HTTP handlers, the replay
//! reader, or a consumer reading a topic that someone else may have written to). Past that
//! boundary the types carry the guarantee: a [`Ticker`] is always upper-case and well-formed.
//!
//! Unknown fields are ignored and not forwarded: the topic carries only the canonical form
//! produced by [`QueryEvent::to_json`], so producers may add fields without breaking ingest,
//! and consumers never see anything the contract does not describe.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// How far in the future an event's timestamp may lie before it is refused (clock skew allowance).
pub const MAX_FUTURE_SKEW: chrono::Duration = chrono::Duration::minutes(5);
/// Epoch-millisecond timestamps before this instant (2000-01-01) are refused: they are almost
/// always epoch *seconds* sent by mistake.
pub const MIN_EPOCH_MS: i64 = 946_684_800_000;
/// Longest accepted ticker, in characters.
pub const TICKER_MAX_LEN: usize = 20;
/// Longest accepted module name, in characters.
pub const MODULE_MAX_LEN: usize = 64;
/// Longest accepted client id, in characters.
pub const CLIENT_MAX_LEN: usize = 128;
/// Largest accepted `latency_ms`: one hour. A longer answer is a broken clock or a unit
/// mistake (microseconds), not a latency.
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// One query the app answered: which data, whether the cache had it, when, and for whom.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueryEvent {
    /// The instrument queried.
    pub ticker: Ticker,
    /// The kind of data queried.
    pub module: Module,
    /// Whether the app's cache answered it.
    pub hit: bool,
    /// When the query happened (event time).
    #[serde(serialize_with = "ser_ts")]
    pub ts: DateTime<Utc>,
    /// Who asked, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientId>,
    /// How long the app took to answer, in milliseconds, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

fn ser_ts<S: serde::Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Why a JSON document could not become events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct EventError {
    /// Every problem found in the event, not only the first.
    pub problems: Vec<FieldError>,
}

impl QueryEvent {
    /// The canonical JSON form written to the query-events topic.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a QueryEvent always serialises")
    }
}

/// The original tool's `action=record` answer: `{"status":"recorded","ticker","module","hit"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordAck {
    /// Always `recorded`.
    pub status: String,
    /// The normalised ticker.
    pub ticker: String,
    /// The normalised module.
    pub module: String,
    /// The hit flag as recorded.
    pub hit: bool,
}

impl From<&QueryEvent> for RecordAck {
    fn from(e: &QueryEvent) -> Self {
        Self {
            status: "recorded".into(),
            ticker: e.ticker.to_string(),
            module: e.module.to_string(),
            hit: e.hit,
        }
    }
}

mod fields;
pub use fields::{ClientId, FieldError, Module, Ticker};
mod parse;
mod strict;
pub use strict::parse_json_strict;
pub mod canonical;
mod view;
pub use view::EventRef;
#[cfg(test)]
mod tests;
