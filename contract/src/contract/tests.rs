use super::*;
use serde_json::json;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-09T14:30:00Z").unwrap().with_timezone(&Utc)
}

fn parse(v: Value) -> Result<QueryEvent, EventError> {
    QueryEvent::from_value(&v, now())
}

#[test]
fn good_events_are_normalised() {
    let table = [
        (json!({"ticker": "aapl", "module": "price"}), "AAPL", "price", false),
        (
            json!({"ticker": "  brk.b ", "module": "Fundamentals", "hit": true}),
            "BRK.B",
            "fundamentals",
            true,
        ),
        (json!({"ticker": "^GSPC", "module": "chart_1d"}), "^GSPC", "chart_1d", false),
        (
            json!({"ticker": "EURUSD=X", "module": "fx-rates", "hit": null}),
            "EURUSD=X",
            "fx-rates",
            false,
        ),
        (
            json!({"ticker": "A".repeat(20), "module": "m".repeat(64)}),
            "AAAAAAAAAAAAAAAAAAAA",
            &*"m".repeat(64),
            false,
        ),
    ];
    for (input, ticker, module, hit) in table {
        let e = parse(input.clone()).unwrap_or_else(|err| panic!("{input} refused: {err}"));
        assert_eq!((e.ticker.as_str(), e.module.as_str(), e.hit), (ticker, module, hit), "{input}");
        assert_eq!(e.ts, now(), "absent ts is stamped with the receiving clock");
    }
}

#[test]
fn timestamps_accept_rfc3339_and_epoch_millis() {
    let e =
        parse(json!({"ticker": "X", "module": "m", "ts": "2026-03-09T10:30:00-04:00"})).unwrap();
    assert_eq!(e.ts, now());
    let e = parse(json!({"ticker": "X", "module": "m", "ts": now().timestamp_millis()})).unwrap();
    assert_eq!(e.ts, now());
    // Just inside the skew allowance is fine; a year-old event (a replayed log) is fine too.
    let e = parse(json!({"ticker": "X", "module": "m", "ts": "2026-03-09T14:34:59Z"})).unwrap();
    assert_eq!(e.ts.timestamp(), now().timestamp() + 299);
    assert!(parse(json!({"ticker": "X", "module": "m", "ts": "2025-03-09T14:30:00Z"})).is_ok());
}

#[test]
fn optional_fields_round_trip_through_the_canonical_form() {
    let e = parse(json!({"ticker": "msft", "module": "news", "hit": true, "ts": 1773066600123i64,
                         "client": "sess-ü-42", "latency_ms": 12.5, "unknown": {"nested": 1}}))
    .unwrap();
    let wire: Value = serde_json::from_slice(&e.to_json()).unwrap();
    assert_eq!(
        wire,
        json!({"ticker": "MSFT", "module": "news", "hit": true, "ts": "2026-03-09T14:30:00.123Z",
               "client": "sess-ü-42", "latency_ms": 12.5}),
        "unknown fields are dropped, the rest is canonical"
    );
    assert_eq!(QueryEvent::from_json(&e.to_json(), now()).unwrap(), e);
}

#[test]
fn bad_events_name_the_field() {
    let long_client = "c".repeat(129);
    let table: Vec<(Value, &str, &str)> = vec![
        (json!("AAPL"), "event", "expected a JSON object, got a string"),
        (json!([1]), "event", "an array"),
        (json!({"module": "price"}), "ticker", "is required"),
        (json!({"ticker": "", "module": "price"}), "ticker", "must not be empty"),
        (json!({"ticker": "   ", "module": "price"}), "ticker", "must not be empty"),
        (json!({"ticker": "A".repeat(21), "module": "price"}), "ticker", "limit is 20"),
        (json!({"ticker": "AAPL; rm -rf /", "module": "price"}), "ticker", "';' is not allowed"),
        (json!({"ticker": "$(reboot)", "module": "price"}), "ticker", "'$' is not allowed"),
        (json!({"ticker": "AAPL`id`", "module": "price"}), "ticker", "'`' is not allowed"),
        (json!({"ticker": "A|B", "module": "price"}), "ticker", "'|' is not allowed"),
        (json!({"ticker": "ÄPFEL", "module": "price"}), "ticker", "'Ä' is not allowed"),
        (json!({"ticker": "📈", "module": "price"}), "ticker", "is not allowed"),
        (json!({"ticker": "../etc", "module": "price"}), "ticker", "'/' is not allowed"),
        (json!({"ticker": 42, "module": "price"}), "ticker", "expected a string, got a number"),
        (json!({"ticker": "AAPL"}), "module", "is required"),
        (json!({"ticker": "AAPL", "module": "price/../../x"}), "module", "'/' is not allowed"),
        (json!({"ticker": "AAPL", "module": "pri ce"}), "module", "' ' is not allowed"),
        (json!({"ticker": "AAPL", "module": "m".repeat(65)}), "module", "limit is 64"),
        (json!({"ticker": "AAPL", "module": ["price"]}), "module", "got an array"),
        (
            json!({"ticker": "AAPL", "module": "price", "hit": "true"}),
            "hit",
            "expected true or false, got a string",
        ),
        (json!({"ticker": "AAPL", "module": "price", "hit": 1}), "hit", "got a number"),
        (
            json!({"ticker": "AAPL", "module": "price", "ts": "yesterday"}),
            "ts",
            "not an RFC 3339 timestamp",
        ),
        (
            json!({"ticker": "AAPL", "module": "price", "ts": "2026-03-09 14:30"}),
            "ts",
            "not an RFC 3339",
        ),
        (
            json!({"ticker": "AAPL", "module": "price", "ts": "2026-03-09T14:35:01Z"}),
            "ts",
            "more than 5 minutes in the future",
        ),
        (
            json!({"ticker": "AAPL", "module": "price", "ts": 1773066600}),
            "ts",
            "epoch seconds sent by mistake",
        ),
        (json!({"ticker": "AAPL", "module": "price", "ts": 1.5e12}), "ts", "not a whole number"),
        (json!({"ticker": "AAPL", "module": "price", "ts": true}), "ts", "got a boolean"),
        (json!({"ticker": "AAPL", "module": "price", "client": ""}), "client", "must not be empty"),
        (
            json!({"ticker": "AAPL", "module": "price", "client": long_client}),
            "client",
            "limit is 128",
        ),
        (
            json!({"ticker": "AAPL", "module": "price", "client": "a\u{0}b"}),
            "client",
            "control characters",
        ),
        (json!({"ticker": "AAPL", "module": "price", "client": 7}), "client", "expected a string"),
        (
            json!({"ticker": "AAPL", "module": "price", "latency_ms": -1}),
            "latency_ms",
            "non-negative",
        ),
        (
            json!({"ticker": "AAPL", "module": "price", "latency_ms": "5"}),
            "latency_ms",
            "expected a number",
        ),
    ];
    for (input, field, needle) in table {
        let err = parse(input.clone()).expect_err(&format!("{input} was accepted"));
        let p = err
            .problems
            .iter()
            .find(|p| p.field == field)
            .unwrap_or_else(|| panic!("{input}: no problem on {field}: {err}"));
        assert!(p.message.contains(needle), "{input}: {:?} does not contain {needle:?}", p.message);
    }
}

#[test]
fn every_problem_of_an_event_is_reported() {
    let err = parse(json!({"ticker": "", "module": 5, "hit": "no", "ts": "x"})).unwrap_err();
    let fields: Vec<_> = err.problems.iter().map(|p| p.field).collect();
    assert_eq!(fields, ["ticker", "module", "hit", "ts"]);
}

#[test]
fn invalid_json_is_an_event_error() {
    let err = QueryEvent::from_json(b"{\"ticker\": ", now()).unwrap_err();
    assert_eq!(err.problems[0].field, "event");
    assert!(err.problems[0].message.starts_with("invalid JSON"));
}

/// The published JSON Schema describes exactly the canonical form and the same limits.
#[test]
fn json_schema_matches_the_contract() {
    let schema: Value =
        serde_json::from_str(include_str!("../../../docs/query-event.schema.json")).unwrap();
    let props = schema["properties"].as_object().unwrap();
    let e = parse(json!({"ticker": "A", "module": "m", "client": "c", "latency_ms": 1})).unwrap();
    let wire: Value = serde_json::from_slice(&e.to_json()).unwrap();
    let mut schema_fields: Vec<_> = props.keys().cloned().collect();
    let mut wire_fields: Vec<_> = wire.as_object().unwrap().keys().cloned().collect();
    schema_fields.sort();
    wire_fields.sort();
    assert_eq!(schema_fields, wire_fields);
    assert_eq!(schema["required"], json!(["ticker", "module"]));
    assert!(props["ticker"]["pattern"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{{1,{TICKER_MAX_LEN}}}$")));
    assert!(props["module"]["pattern"]
        .as_str()
        .unwrap()
        .ends_with(&format!("{{1,{MODULE_MAX_LEN}}}$")));
    assert_eq!(props["client"]["maxLength"], CLIENT_MAX_LEN);
    assert_eq!(props["ts"]["oneOf"][1]["minimum"], MIN_EPOCH_MS);
}

/// The fast path and the tree-based parser agree on every event of the table, good or bad.
#[test]
fn the_fast_path_agrees_with_the_tree_parser() {
    let table = [
        json!({"ticker": " brk.b ", "module": "News", "hit": true, "ts": "2026-03-09T10:30:00-04:00", "client": "c1", "latency_ms": 2.5, "x": [1]}),
        json!({"ticker": "A", "module": "m", "ts": 1773066600123i64}),
        json!({"ticker": "A", "module": "m", "hit": null, "ts": null, "client": null, "latency_ms": null}),
        json!({"ticker": "AAPL;", "module": "m"}),
        json!({"ticker": "A", "module": "m", "ts": "2026-03-09T14:35:01Z"}),
        json!({"ticker": "A", "module": "m", "ts": 1773066600}),
        json!({"ticker": "A", "module": "m", "latency_ms": -3}),
        json!({"ticker": "A", "module": "m", "client": ""}),
        json!({"ticker": "A", "module": "m", "hit": "yes"}),
        json!({"ticker": "A", "module": "m", "ts": 1.5e12}),
        json!({"module": "m"}),
    ];
    for v in table {
        let bytes = serde_json::to_vec(&v).unwrap();
        assert_eq!(QueryEvent::from_json(&bytes, now()), QueryEvent::from_value(&v, now()), "{v}");
    }
    // Escaped strings cannot be borrowed: the tree parser takes them, with the same result.
    for raw in
        [&br#"{"ticker":"A\u00c4","module":"m"}"#[..], br#"{"ticker":"\u0041","module":"m"}"#]
    {
        let v: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(QueryEvent::from_json(raw, now()), QueryEvent::from_value(&v, now()));
    }
    assert_eq!(
        QueryEvent::from_json(br#"{"ticker":"\u0041","module":"m"}"#, now())
            .unwrap()
            .ticker
            .as_str(),
        "A"
    );
}
