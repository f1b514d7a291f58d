//! Property tests of ingest's body parser, [`parse_body`]: the bytes of every `POST /v1/events`.
//! Seeded cases (a failure names its case; `Gen::new(case)` replays it):
//! - no body makes it panic, in either framing;
//! - all or nothing: a body is accepted exactly when every item (array element or non-blank
//!   NDJSON line) is a valid event on its own; then the events come in body order, each what
//!   the contract makes of its item; otherwise the refusal counts every bad item and locates
//!   each problem at one of them;
//! - the clamp count is the number of events whose `ts` lay beyond the skew;
//! - what is produced for each event (forwarded as sent or written again) is its canonical form.

use chrono::{DateTime, Duration, Utc};
use ingest::batch::{parse_body, Batch, Clock, Framing, MAX_LISTED_PROBLEMS};
use prefetch_common::contract::{parse_json_strict, QueryEvent};
use prefetch_contract::testgen::Gen;
use serde_json::{json, Value};

fn clock() -> Clock {
    Clock { now: "2026-03-09T14:30:00Z".parse().unwrap(), max_skew: Duration::minutes(1) }
}

/// One item: usually a valid event, sometimes a broken or hostile one.
fn item(g: &mut Gen) -> Vec<u8> {
    let now: DateTime<Utc> = clock().now;
    let ts = now + Duration::seconds(g.below(7_200) as i64 - 3_600);
    let ticker = ["AAPL", "brk.b", "^GSPC"][g.below(3)];
    let module = ["price", "News"][g.below(2)];
    let mut v = json!({"ticker": ticker, "module": module, "ts": ts.timestamp_millis()});
    if g.one_in(3) {
        v["client"] = json!(format!("c{}", g.below(9)));
    }
    let bytes = serde_json::to_vec(&v).unwrap();
    match g.below(10) {
        0 => g.bytes(8),
        1 | 2 => g.mutate(&bytes),
        _ => bytes,
    }
}

/// The accepted events, and that each one's payload is its canonical form.
fn events(b: &Batch<'_>) -> Vec<QueryEvent> {
    for a in &b.events {
        assert_eq!(a.payload().as_ref(), &a.event.to_json()[..]);
    }
    b.events.iter().map(|a| a.event.clone()).collect()
}

/// What the contract alone makes of one item.
fn alone(item: &[u8]) -> Option<(QueryEvent, bool)> {
    let v: Value = parse_json_strict(item).ok()?;
    QueryEvent::from_value_clamped(&v, clock().now, clock().max_skew).ok()
}

#[test]
fn any_body_parses_without_panic() {
    for case in 0..5_000u64 {
        let mut g = Gen::new(case);
        let body = g.bytes(32);
        for framing in [Framing::Json, Framing::Ndjson] {
            if let Ok(b) = parse_body(&body, framing, clock()) {
                for a in &b.events {
                    let e = &a.event;
                    assert_eq!(QueryEvent::from_json(&e.to_json(), clock().now).as_ref(), Ok(e));
                    // What is produced is the canonical form, forwarded or written again.
                    assert_eq!(a.payload().as_ref(), &e.to_json()[..], "case {case}");
                }
            }
        }
    }
}

#[test]
fn ndjson_bodies_are_all_or_nothing_and_problems_point_at_bad_lines() {
    let mut accepted = 0;
    for case in 0..3_000u64 {
        let mut g = Gen::new(case);
        let lines: Vec<Vec<u8>> = (0..g.below(12)).map(|_| item(&mut g)).collect();
        // Items may hold newlines themselves (mutations): frame, then judge what was framed.
        let mut body = Vec::new();
        for l in &lines {
            body.extend_from_slice(l);
            body.extend_from_slice(if g.one_in(4) { b"\r\n" } else { b"\n" });
            if g.one_in(6) {
                body.extend_from_slice(b"  \n");
            }
        }
        let framed: Vec<(usize, &[u8])> = body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .map(|(i, l)| (i + 1, l))
            .collect();
        let judged: Vec<(usize, Option<(QueryEvent, bool)>)> =
            framed.iter().map(|(n, l)| (*n, alone(l))).collect();
        let bad: Vec<usize> = judged.iter().filter(|(_, r)| r.is_none()).map(|(n, _)| *n).collect();
        match parse_body(&body, Framing::Ndjson, clock()) {
            Ok(b) => {
                accepted += 1;
                assert!(bad.is_empty(), "case {case}: accepted with bad lines {bad:?}");
                let expected: Vec<QueryEvent> =
                    judged.iter().map(|(_, r)| r.clone().unwrap().0).collect();
                assert_eq!(events(&b), expected, "case {case}");
                let clamped = judged.iter().filter(|(_, r)| r.as_ref().unwrap().1).count();
                assert_eq!(b.clamped, clamped, "case {case}");
            }
            Err(r) => {
                assert_eq!(r.bad_events, bad.len(), "case {case}");
                assert!(!r.problems.is_empty() && r.problems.len() <= MAX_LISTED_PROBLEMS);
                for p in &r.problems {
                    let line = p.line.expect("NDJSON problems name their line");
                    assert!(bad.contains(&line), "case {case}: line {line} is not bad");
                }
            }
        }
    }
    assert!(accepted > 300, "the generator reached the accepting path {accepted} times");
}

#[test]
fn json_arrays_are_all_or_nothing_and_problems_point_at_bad_items() {
    let mut accepted = 0;
    for case in 0..3_000u64 {
        let mut g = Gen::new(case);
        // Items that are JSON values (the array must parse for items to be judged one by one).
        let items: Vec<Value> = (0..g.below(12))
            .map(|_| {
                let i = item(&mut g);
                serde_json::from_slice(&i)
                    .unwrap_or(Value::String(String::from_utf8_lossy(&i).into()))
            })
            .collect();
        let body = serde_json::to_vec(&items).unwrap();
        let judged: Vec<Option<(QueryEvent, bool)>> =
            items.iter().map(|v| alone(&serde_json::to_vec(v).unwrap())).collect();
        let bad: Vec<usize> =
            judged.iter().enumerate().filter(|(_, r)| r.is_none()).map(|(i, _)| i).collect();
        match parse_body(&body, Framing::Json, clock()) {
            Ok(b) => {
                accepted += 1;
                assert!(bad.is_empty(), "case {case}: accepted with bad items {bad:?}");
                let expected: Vec<QueryEvent> =
                    judged.iter().map(|r| r.clone().unwrap().0).collect();
                assert_eq!(events(&b), expected, "case {case}");
            }
            Err(r) => {
                assert_eq!(r.bad_events, bad.len(), "case {case}");
                for p in &r.problems {
                    let index = p.index.expect("array problems name their index");
                    assert!(bad.contains(&index), "case {case}: item {index} is not bad");
                }
            }
        }
    }
    assert!(accepted > 300, "the generator reached the accepting path {accepted} times");
}
