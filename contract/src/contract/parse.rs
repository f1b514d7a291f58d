//! The one parser every boundary uses: a JSON value or document becomes a [`QueryEvent`] or an
//! [`EventError`] naming every bad field. The typed fast path reads the usual shape straight from
//! the bytes; anything else goes through the JSON tree.

use super::{
    parse_json_strict, ClientId, EventError, FieldError, Module, QueryEvent, Ticker,
    MAX_FUTURE_SKEW, MAX_LATENCY_MS, MIN_EPOCH_MS,
};
use chrono::{DateTime, SecondsFormat, SubsecRound, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

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
