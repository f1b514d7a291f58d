//! Turns a request body into events, all or nothing: a batch with one bad event is refused
//! whole, with every problem located by index (JSON array) or line (NDJSON).

use chrono::{DateTime, Utc};
use prefetch_common::contract::{FieldError, QueryEvent};
use serde::Serialize;
use serde_json::Value;

/// How the body is framed, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `application/json`: one event object, or an array of them.
    Json,
    /// `application/x-ndjson`: one event object per line; blank lines are ignored.
    Ndjson,
}

impl Framing {
    /// The framing for a `Content-Type` header value, or `None` when it is not one we read.
    pub fn from_content_type(ct: Option<&str>) -> Option<Self> {
        let essence = ct?.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(Self::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonlines"
            | "application/jsonl" => Some(Self::Ndjson),
            _ => None,
        }
    }
}

/// One problem of a refused batch, located so a producer can find it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 0-based position in a JSON array (absent for NDJSON and single objects).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// 1-based line number in an NDJSON body (absent for JSON bodies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The field at fault (`event` when the item is not an object or not JSON).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// At most this many problems are listed in one answer; the count says how many there were.
pub const MAX_LISTED_PROBLEMS: usize = 100;

/// Why a body was refused.
#[derive(Debug)]
pub struct Refusal {
    /// Every problem found, in order (capped at [`MAX_LISTED_PROBLEMS`]).
    pub problems: Vec<Problem>,
    /// How many events were bad (the body as a whole counts as one when it is not JSON).
    pub bad_events: usize,
}

/// Ingest's clock as the parser applies it.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Stamps events without a timestamp.
    pub now: DateTime<Utc>,
    /// A `ts` further than this ahead of `now` becomes `now` (`--max-clock-skew`).
    pub max_skew: chrono::Duration,
}

/// The events of an accepted body.
#[derive(Debug)]
pub struct Batch {
    /// Every event, in body order.
    pub events: Vec<QueryEvent>,
    /// How many of them had their `ts` clamped to ingest's clock.
    pub clamped: usize,
}

/// Parses a whole body.
pub fn parse_body(body: &[u8], framing: Framing, clock: Clock) -> Result<Batch, Refusal> {
    let mut out = Vec::new();
    let mut clamped = 0;
    let mut problems = Vec::new();
    let mut bad = 0;
    let Clock { now, max_skew } = clock;
    let parse = |v: &Value| QueryEvent::from_value_clamped(v, now, max_skew);
    let mut take = |r: Result<(QueryEvent, bool), Vec<FieldError>>,
                    index: Option<usize>,
                    line: Option<usize>| match r {
        Ok((e, c)) => {
            clamped += usize::from(c);
            out.push(e);
        }
        Err(errs) => {
            bad += 1;
            for fe in errs {
                if problems.len() < MAX_LISTED_PROBLEMS {
                    problems.push(Problem { index, line, field: fe.field, message: fe.message });
                }
            }
        }
    };
    match framing {
        Framing::Json => match prefetch_common::contract::parse_json_strict(body) {
            Err(e) => take(Err(vec![not_json(e)]), None, None),
            Ok(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    take(parse(item).map_err(|e| e.problems), Some(i), None);
                }
            }
            Ok(item) => take(parse(&item).map_err(|e| e.problems), None, None),
        },
        Framing::Ndjson => {
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let r = prefetch_common::contract::parse_json_strict(line)
                    .map_err(|e| vec![not_json(e)])
                    .and_then(|v| parse(&v).map_err(|e| e.problems));
                take(r, None, Some(i + 1));
            }
        }
    }
    if bad > 0 {
        return Err(Refusal { problems, bad_events: bad });
    }
    Ok(Batch { events: out, clamped })
}

fn not_json(e: serde_json::Error) -> FieldError {
    FieldError { field: "event", message: format!("invalid JSON: {e}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-03-09T14:30:00Z".parse().unwrap()
    }

    fn clock() -> Clock {
        Clock { now: now(), max_skew: chrono::Duration::minutes(1) }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Framing::from_content_type(Some("application/json; charset=utf-8")),
            Some(Framing::Json)
        );
        assert_eq!(Framing::from_content_type(Some("Application/X-NDJSON")), Some(Framing::Ndjson));
        assert_eq!(Framing::from_content_type(Some("text/plain")), None);
        assert_eq!(Framing::from_content_type(Some("application/x-www-form-urlencoded")), None);
        assert_eq!(Framing::from_content_type(None), None);
    }

    #[test]
    fn arrays_objects_and_lines_parse() {
        let arr = br#"[{"ticker":"a","module":"price"},{"ticker":"b","module":"news","hit":true}]"#;
        let evs = parse_body(arr, Framing::Json, clock()).unwrap().events;
        assert_eq!(evs.iter().map(|e| e.ticker.as_str()).collect::<Vec<_>>(), ["A", "B"]);
        let one = parse_body(br#"{"ticker":"c","module":"price"}"#, Framing::Json, clock())
            .unwrap()
            .events;
        assert_eq!(one.len(), 1);
        let nd = b"{\"ticker\":\"a\",\"module\":\"price\"}\n\n  \r\n{\"ticker\":\"b\",\"module\":\"price\"}\r\n";
        assert_eq!(parse_body(nd, Framing::Ndjson, clock()).unwrap().events.len(), 2);
    }

    #[test]
    fn one_bad_event_refuses_the_batch_and_is_located() {
        let arr = br#"[{"ticker":"a","module":"price"},{"ticker":"a;b","module":"price"},{"module":"x"}]"#;
        let r = parse_body(arr, Framing::Json, clock()).unwrap_err();
        assert_eq!(r.bad_events, 2);
        assert_eq!((r.problems[0].index, r.problems[0].field), (Some(1), "ticker"));
        assert_eq!((r.problems[1].index, r.problems[1].field), (Some(2), "ticker"));

        let nd = b"{\"ticker\":\"a\",\"module\":\"price\"}\n\n{not json\n";
        let r = parse_body(nd, Framing::Ndjson, clock()).unwrap_err();
        assert_eq!((r.problems[0].line, r.problems[0].field), (Some(3), "event"));
        assert!(r.problems[0].message.starts_with("invalid JSON"));
    }

    #[test]
    fn a_ts_ahead_of_the_skew_is_clamped_and_counted() {
        let ahead = (now() + chrono::Duration::hours(1)).timestamp_millis();
        let near = (now() + chrono::Duration::seconds(30)).timestamp_millis();
        let body = format!(
            "{{\"ticker\":\"a\",\"module\":\"price\",\"ts\":{ahead}}}\n{{\"ticker\":\"b\",\"module\":\"price\",\"ts\":{near}}}\n"
        );
        let b = parse_body(body.as_bytes(), Framing::Ndjson, clock()).unwrap();
        assert_eq!(b.clamped, 1);
        assert_eq!(b.events[0].ts, now());
        assert_eq!(b.events[1].ts.timestamp_millis(), near);
    }

    #[test]
    fn problems_are_capped_but_counted() {
        let body = "{\"ticker\":\"\",\"module\":\"p\"}\n".repeat(500);
        let r = parse_body(body.as_bytes(), Framing::Ndjson, clock()).unwrap_err();
        assert_eq!(r.bad_events, 500);
        assert_eq!(r.problems.len(), MAX_LISTED_PROBLEMS);
    }
}
