//! The wire contract for query events: validated newtypes and the one parser every stage uses.
//!
//! An event is validated once, where it enters the system (ingest's HTTP handlers, the replay
//! reader, or a consumer reading a topic that someone else may have written to). Past that
//! boundary the types carry the guarantee: a [`Ticker`] is always upper-case and well-formed.
//!
//! Unknown fields are ignored and not forwarded: the topic carries only the canonical form
//! produced by [`QueryEvent::to_json`], so producers may add fields without breaking ingest,
//! and consumers never see anything the contract does not describe.

use chrono::{DateTime, SecondsFormat, SubsecRound, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

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

/// A problem with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field at fault (`ticker`, `module`, `hit`, `ts`, `client`, `latency_ms`, or `event`
    /// when the value is not a JSON object at all).
    pub field: &'static str,
    /// What is wrong, in words a producer can act on.
    pub message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A ticker symbol: trimmed, upper-cased, 1–20 characters of `A–Z 0–9 . - ^ =` with at least
/// one letter or digit (so `BRK.B`, `^GSPC` and `EURUSD=X` pass, and `.` or `..` — which would
/// address the upstream's directories once substituted into a URL — do not).
///
/// Only ASCII is case-mapped: Unicode case mapping turns `ſpy` into `SPY` and `ıbm` into `IBM`,
/// so a non-ASCII character is refused before any mapping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Ticker(String);

impl Ticker {
    /// Normalises and validates a ticker.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let t = raw.trim();
        check_len("ticker", t, TICKER_MAX_LEN)?;
        if let Some(bad) = t.chars().find(|c| !(c.is_ascii_alphanumeric() || ".-^=".contains(*c))) {
            return Err(FieldError::new(
                "ticker",
                format!("character {bad:?} is not allowed (use A-Z 0-9 . - ^ =)"),
            ));
        }
        if !t.chars().any(|c| c.is_ascii_alphanumeric()) {
            return Err(FieldError::new("ticker", "must contain a letter or a digit"));
        }
        Ok(Self(t.to_ascii_uppercase()))
    }

    /// The normalised symbol.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A data module such as `price`, `news` or `fundamentals`: trimmed, lower-cased,
/// 1–64 characters of `a–z 0–9 _ -` with at least one letter or digit. Only ASCII is
/// case-mapped (the Kelvin sign `K` would otherwise become `k`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Module(String);

impl Module {
    /// Normalises and validates a module name.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let m = raw.trim();
        check_len("module", m, MODULE_MAX_LEN)?;
        if let Some(bad) = m.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-".contains(*c))) {
            return Err(FieldError::new(
                "module",
                format!("character {bad:?} is not allowed (use a-z 0-9 _ -)"),
            ));
        }
        if !m.chars().any(|c| c.is_ascii_alphanumeric()) {
            return Err(FieldError::new("module", "must contain a letter or a digit"));
        }
        Ok(Self(m.to_ascii_lowercase()))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque client id (a session, a user, an API key's hash): 1–128 characters, no control
/// characters. Used to learn which query follows which for the same client.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    /// Validates a client id; it is kept exactly as sent.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Self::check(raw)?;
        Ok(Self(raw.to_owned()))
    }

    /// Validates a client id without keeping it.
    pub fn check(raw: &str) -> Result<(), FieldError> {
        check_len("client", raw, CLIENT_MAX_LEN)?;
        if raw.chars().any(char::is_control) {
            return Err(FieldError::new("client", "control characters are not allowed"));
        }
        Ok(())
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! try_from_string {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = FieldError;
            fn try_from(s: String) -> Result<Self, FieldError> {
                Self::parse(&s)
            }
        }
    )*};
}
// Deserialising a Ticker or Module validates it, so a typed message read from a topic is as
// trustworthy as one built at the HTTP boundary.
try_from_string!(Ticker, Module);

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display_as_str!(Ticker, Module, ClientId);

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), FieldError> {
    let n = s.chars().count();
    if n == 0 {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if n > max {
        return Err(FieldError::new(field, format!("is {n} characters long; the limit is {max}")));
    }
    Ok(())
}

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
    /// Validates a JSON value as an event. `now` stamps events without `ts` and bounds future
    /// timestamps; pass the receiving clock at the boundary.
    pub fn from_value(value: &Value, now: DateTime<Utc>) -> Result<Self, EventError> {
        Self::from_value_with(value, now, Future::Refuse)
    }

    /// Like [`QueryEvent::from_value`], but a `ts` more than `max_skew` ahead of `now` is not
    /// refused: it becomes `now`, the receiver's clock, and the flag says so. A producer whose
    /// clock runs ahead then cannot move event time (and the analyzer's watermark) forward.
    /// `max_skew` is capped at [`MAX_FUTURE_SKEW`], the bound every consumer re-checks.
    pub fn from_value_clamped(
        value: &Value,
        now: DateTime<Utc>,
        max_skew: chrono::Duration,
    ) -> Result<(Self, bool), EventError> {
        Self::from_value_with(value, now, Future::Keep).map(|e| e.clamped(now, max_skew))
    }

    /// [`QueryEvent::from_json`] with the clamp of [`QueryEvent::from_value_clamped`].
    pub fn from_json_clamped(
        bytes: &[u8],
        now: DateTime<Utc>,
        max_skew: chrono::Duration,
    ) -> Result<(Self, bool), EventError> {
        Self::from_json_with(bytes, now, Future::Keep).map(|e| e.clamped(now, max_skew))
    }

    fn clamped(mut self, now: DateTime<Utc>, max_skew: chrono::Duration) -> (Self, bool) {
        let ahead = self.ts > now + max_skew.min(MAX_FUTURE_SKEW);
        if ahead {
            self.ts = now;
        }
        (self, ahead)
    }

    fn from_value_with(
        value: &Value,
        now: DateTime<Utc>,
        future: Future,
    ) -> Result<Self, EventError> {
        let Some(obj) = value.as_object() else {
            return Err(EventError {
                problems: vec![FieldError::new(
                    "event",
                    format!("expected a JSON object, got {}", kind(value)),
                )],
            });
        };
        let mut problems = Vec::new();
        let ticker =
            required_str(obj, "ticker").and_then(Ticker::parse).map_err(|e| problems.push(e)).ok();
        let module =
            required_str(obj, "module").and_then(Module::parse).map_err(|e| problems.push(e)).ok();
        let hit = match obj.get("hit") {
            None | Some(Value::Null) => Some(false),
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => {
                problems.push(FieldError::new(
                    "hit",
                    format!("expected true or false, got {}", kind(v)),
                ));
                None
            }
        };
        let ts = parse_ts(obj.get("ts"), now, future).map_err(|e| problems.push(e)).ok();
        let client = match obj.get("client") {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => {
                ClientId::parse(s).map(Some).map_err(|e| problems.push(e)).ok()
            }
            Some(v) => {
                problems
                    .push(FieldError::new("client", format!("expected a string, got {}", kind(v))));
                None
            }
        };
        let latency_ms = match obj.get("latency_ms") {
            None | Some(Value::Null) => Some(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if latency_ok(x) => Some(Some(x)),
                _ => {
                    problems.push(latency_error());
                    None
                }
            },
            Some(v) => {
                problems.push(FieldError::new(
                    "latency_ms",
                    format!("expected a number, got {}", kind(v)),
                ));
                None
            }
        };
        match (ticker, module, hit, ts, client, latency_ms) {
            (Some(ticker), Some(module), Some(hit), Some(ts), Some(client), Some(latency_ms))
                if problems.is_empty() =>
            {
                Ok(Self { ticker, module, hit, ts, client, latency_ms })
            }
            _ => Err(EventError { problems }),
        }
    }

    /// Parses and validates one JSON document as an event (e.g. a Kafka message payload).
    pub fn from_json(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, EventError> {
        Self::from_json_with(bytes, now, Future::Refuse)
    }

    fn from_json_with(
        bytes: &[u8],
        now: DateTime<Utc>,
        future: Future,
    ) -> Result<Self, EventError> {
        if let Ok(typed) = serde_json::from_slice::<Typed<'_>>(bytes) {
            return typed.validate(now, future);
        }
        let value: Value = parse_json_strict(bytes).map_err(|e| EventError {
            problems: vec![FieldError::new("event", format!("invalid JSON: {e}"))],
        })?;
        Self::from_value_with(&value, now, future)
    }

    /// The canonical JSON form written to the query-events topic.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a QueryEvent always serialises")
    }
}

/// Parses JSON like `serde_json::from_slice::<Value>`, but refuses an object that names a key
/// twice (serde_json keeps the last one silently, so `{"ticker":"A","ticker":"B"}` would mean
/// whatever the last parser in a chain decides). Every boundary that takes event or config
/// bytes parses with this.
pub fn parse_json_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<Strict>(bytes).map(|s| s.0)
}

/// A JSON value whose objects have no duplicate keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if out.insert(key.clone(), v).is_some() {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
        }
        Ok(Value::Object(out))
    }
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, FieldError> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(FieldError::new(field, "is required")),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(FieldError::new(field, format!("expected a string, got {}", kind(v)))),
    }
}

/// What a parser does with a timestamp beyond [`MAX_FUTURE_SKEW`].
#[derive(Debug, Clone, Copy)]
enum Future {
    /// Refuse it (every consumer of a topic).
    Refuse,
    /// Keep it for the caller to clamp (ingest, which owns the receiving clock).
    Keep,
}

fn parse_ts(
    v: Option<&Value>,
    now: DateTime<Utc>,
    future: Future,
) -> Result<DateTime<Utc>, FieldError> {
    let ts = match v {
        None | Some(Value::Null) => return Ok(now),
        Some(Value::String(s)) => ts_from_str(s)?,
        Some(Value::Number(n)) => {
            let ms = n.as_i64().ok_or_else(|| {
                FieldError::new("ts", format!("{n} is not a whole number of epoch milliseconds"))
            })?;
            ts_from_millis(ms)?
        }
        Some(v) => {
            return Err(FieldError::new(
                "ts",
                format!("expected an RFC 3339 string or epoch milliseconds, got {}", kind(v)),
            ))
        }
    };
    not_future(ts, now, future)
}

fn ts_from_str(s: &str) -> Result<DateTime<Utc>, FieldError> {
    let ts = DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| FieldError::new("ts", format!("{s:?} is not an RFC 3339 timestamp ({e})")))?;
    if ts.timestamp_millis() < MIN_EPOCH_MS {
        return Err(FieldError::new("ts", format!("{s:?} is before 2000-01-01")));
    }
    // Kept to the millisecond the topic carries, so the event ingest accepted is exactly the
    // one consumers read back (the property test in `props.rs` found sub-millisecond times
    // that did not survive the round trip).
    Ok(no_leap_second(ts).trunc_subsecs(3))
}

/// A leap second (`23:59:60`, which chrono keeps as a nanosecond count past one second) becomes
/// the last instant of the second before it: third-party consumers of the topic reject `:60`.
fn no_leap_second(ts: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::Timelike;
    if ts.nanosecond() >= 1_000_000_000 {
        ts.with_nanosecond(999_999_999).unwrap_or(ts)
    } else {
        ts
    }
}

fn ts_from_millis(ms: i64) -> Result<DateTime<Utc>, FieldError> {
    if ms < MIN_EPOCH_MS {
        return Err(FieldError::new(
            "ts",
            format!(
                "{ms} is before 2000-01-01 in epoch milliseconds (epoch seconds sent by mistake?)"
            ),
        ));
    }
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| FieldError::new("ts", format!("{ms} is out of range")))
}

fn not_future(
    ts: DateTime<Utc>,
    now: DateTime<Utc>,
    future: Future,
) -> Result<DateTime<Utc>, FieldError> {
    if matches!(future, Future::Refuse) && ts > now + MAX_FUTURE_SKEW {
        return Err(FieldError::new(
            "ts",
            format!(
                "{} is more than 5 minutes in the future",
                ts.to_rfc3339_opts(SecondsFormat::Millis, true)
            ),
        ));
    }
    Ok(ts)
}

/// The usual shape of an event, read straight from the bytes without building a JSON tree (the
/// consumers' hot path). Anything it cannot read — a wrong type, an escaped string, a missing
/// field — falls back to the tree-based parser, which names every problem.
#[derive(Deserialize)]
struct Typed<'a> {
    ticker: &'a str,
    module: &'a str,
    hit: Option<bool>,
    #[serde(borrow)]
    ts: Option<TypedTs<'a>>,
    client: Option<&'a str>,
    latency_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TypedTs<'a> {
    Text(&'a str),
    Millis(i64),
}

impl Typed<'_> {
    fn validate(self, now: DateTime<Utc>, future: Future) -> Result<QueryEvent, EventError> {
        let mut problems = Vec::new();
        let ticker = Ticker::parse(self.ticker).map_err(|e| problems.push(e)).ok();
        let module = Module::parse(self.module).map_err(|e| problems.push(e)).ok();
        let ts = match self.ts {
            None => Ok(now),
            Some(TypedTs::Text(s)) => ts_from_str(s).and_then(|t| not_future(t, now, future)),
            Some(TypedTs::Millis(ms)) => {
                ts_from_millis(ms).and_then(|t| not_future(t, now, future))
            }
        }
        .map_err(|e| problems.push(e))
        .ok();
        let client =
            self.client.map(ClientId::parse).transpose().map_err(|e| problems.push(e)).ok();
        if self.latency_ms.is_some_and(|x| !latency_ok(x)) {
            problems.push(latency_error());
        }
        match (ticker, module, ts, client) {
            (Some(ticker), Some(module), Some(ts), Some(client)) if problems.is_empty() => {
                Ok(QueryEvent {
                    ticker,
                    module,
                    hit: self.hit.unwrap_or(false),
                    ts,
                    client,
                    latency_ms: self.latency_ms,
                })
            }
            _ => Err(EventError { problems }),
        }
    }
}

fn latency_ok(x: f64) -> bool {
    x.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&x)
}

fn latency_error() -> FieldError {
    FieldError::new("latency_ms", "must be a number of milliseconds between 0 and 3600000")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
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

pub mod canonical;
mod view;
pub use view::EventRef;
#[cfg(test)]
mod tests;
