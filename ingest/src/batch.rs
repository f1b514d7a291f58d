//! Turns a request body into events, all or nothing: a batch with one bad event is refused
//! whole, with every problem located by index (JSON array) or line (NDJSON).
//!
//! An NDJSON line or a single JSON object in the canonical form is read by the contract's byte
//! scanner (`contract::canonical`), and when it is exactly what `QueryEvent::to_json` would
//! write (and needs no clamp), its bytes are produced as they are: no JSON tree, no second
//! serialisation (issue #15: the two cost more than producing the event). Anything else goes
//! through the tree-based parser, which refuses duplicate keys and names every problem.

use chrono::{DateTime, Utc};
use prefetch_common::contract::canonical;
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

/// One accepted event, and its bytes in the body when those are already its canonical form.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted<'a> {
    /// The validated event.
    pub event: QueryEvent,
    /// The body's bytes of it, exactly what `event.to_json()` would write (produced as they
    /// are); `None` when the event must be written again.
    pub canonical: Option<&'a [u8]>,
}

impl Accepted<'_> {
    /// An event to be written again.
    pub fn rewritten(event: QueryEvent) -> Self {
        Accepted { event, canonical: None }
    }

    /// The payload to produce.
    pub fn payload(&self) -> std::borrow::Cow<'_, [u8]> {
        match self.canonical {
            Some(b) => b.into(),
            None => self.event.to_json().into(),
        }
    }
}

/// The events of an accepted body.
#[derive(Debug)]
pub struct Batch<'a> {
    /// Every event, in body order.
    pub events: Vec<Accepted<'a>>,
    /// How many of them had their `ts` clamped to ingest's clock.
    pub clamped: usize,
}

/// The canonical fast path: the event when `doc` is in the canonical shape, valid, and needs
/// no clamp (its `ts` within `max_skew` of `now`); `None` sends it to the tree parser.
fn scanned(doc: &[u8], clock: Clock) -> Option<Accepted<'_>> {
    let s = canonical::scan(doc, clock.now)?;
    (s.event.ts <= clock.now + clock.max_skew)
        .then(|| Accepted { canonical: s.exact.then_some(doc), event: s.event })
}

/// Parses a whole body.
pub fn parse_body<'a>(
    body: &'a [u8],
    framing: Framing,
    clock: Clock,
) -> Result<Batch<'a>, Refusal> {
    let mut out = Vec::new();
    let mut clamped = 0;
    let mut problems = Vec::new();
    let mut bad = 0;
    let Clock { now, max_skew } = clock;
    let parse = |v: &Value| {
        QueryEvent::from_value_clamped(v, now, max_skew).map(|(e, c)| (Accepted::rewritten(e), c))
    };
    let mut take = |r: Result<(Accepted<'a>, bool), Vec<FieldError>>,
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
        Framing::Json => match scanned(body, clock) {
            Some(a) => take(Ok((a, false)), None, None),
            None => match prefetch_common::contract::parse_json_strict(body) {
                Err(e) => take(Err(vec![not_json(e)]), None, None),
                Ok(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        take(parse(item).map_err(|e| e.problems), Some(i), None);
                    }
                }
                Ok(item) => take(parse(&item).map_err(|e| e.problems), None, None),
            },
        },
        Framing::Ndjson => {
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let r = match scanned(line, clock) {
                    Some(a) => Ok((a, false)),
                    None => prefetch_common::contract::parse_json_strict(line)
                        .map_err(|e| vec![not_json(e)])
                        .and_then(|v| parse(&v).map_err(|e| e.problems)),
                };
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
        assert_eq!(evs.iter().map(|e| e.event.ticker.as_str()).collect::<Vec<_>>(), ["A", "B"]);
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
        assert_eq!(b.events[0].event.ts, now());
        assert_eq!(b.events[1].event.ts.timestamp_millis(), near);
    }

    #[test]
    fn problems_are_capped_but_counted() {
        let body = "{\"ticker\":\"\",\"module\":\"p\"}\n".repeat(500);
        let r = parse_body(body.as_bytes(), Framing::Ndjson, clock()).unwrap_err();
        assert_eq!(r.bad_events, 500);
        assert_eq!(r.problems.len(), MAX_LISTED_PROBLEMS);
    }

    /// A canonical line is forwarded byte for byte; any other spelling of the same event is
    /// written again, to the same canonical bytes; a canonical line ahead of the skew is
    /// clamped, not forwarded.
    #[test]
    fn canonical_lines_are_forwarded_others_rewritten() {
        let canon = br#"{"ticker":"AAPL","module":"price","hit":true,"ts":"2026-03-09T14:29:59.000Z","client":"c1","latency_ms":3.0}"#;
        let variants: [&[u8]; 4] = [
            br#"{"ticker":"aapl","module":"price","hit":true,"ts":"2026-03-09T14:29:59.000Z","client":"c1","latency_ms":3.0}"#,
            br#"{"ticker":"AAPL","module":"price","hit":true,"ts":"2026-03-09T14:29:59.000Z","client":"c1","latency_ms":3}"#,
            br#"{"module":"price","ticker":"AAPL","hit":true,"ts":"2026-03-09T14:29:59.000Z","client":"c1","latency_ms":3.0}"#,
            br#"{"ticker":"AAPL","module":"price","hit":true,"ts":1773066599000,"client":"c1","latency_ms":3.0}"#,
        ];
        let mut body = canon.to_vec();
        body.extend_from_slice(b"\r\n");
        for v in variants {
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        let evs = parse_body(&body, Framing::Ndjson, clock()).unwrap().events;
        assert_eq!(evs.len(), 5);
        assert_eq!(evs[0].canonical, Some(&canon[..]), "forwarded as sent (CR stripped)");
        for e in &evs {
            assert_eq!(e.payload().as_ref(), &canon[..], "same bytes on the topic");
            assert_eq!(e.event, evs[0].event);
        }
        assert!(evs[1..].iter().all(|e| e.canonical.is_none()));
        let single = parse_body(canon, Framing::Json, clock()).unwrap().events;
        assert_eq!(single[0].canonical, Some(&canon[..]));
        // Duplicate keys are never canonical and still refused by the tree parser.
        let dup = br#"{"ticker":"AAPL","module":"price","hit":true,"ts":"2026-03-09T14:29:59.000Z","ticker":"MSFT"}"#;
        assert!(parse_body(dup, Framing::Ndjson, clock()).is_err());
        // Canonical, but 3 minutes ahead: within the consumers' 5 minutes, beyond ingest's skew.
        let ahead =
            br#"{"ticker":"AAPL","module":"price","hit":true,"ts":"2026-03-09T14:33:00.000Z"}"#;
        let b = parse_body(ahead, Framing::Ndjson, clock()).unwrap();
        assert_eq!((b.clamped, b.events[0].canonical, b.events[0].event.ts), (1, None, now()));
    }
}
