use super::*;
use serde_json::{json, Value};

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
            "between 0 and 3600000",
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

#[test]
fn names_without_a_letter_or_digit_are_refused() {
    // `.` and `..` would address the upstream's directories once substituted into a URL.
    for t in [".", "..", "...", "-", "^=", " .. "] {
        let err = Ticker::parse(t).unwrap_err();
        assert_eq!(err.field, "ticker", "{t:?}");
    }
    for m in ["-", "_", "--_"] {
        assert_eq!(Module::parse(m).unwrap_err().field, "module", "{m:?}");
    }
    assert_eq!(Ticker::parse("^GSPC").unwrap().as_str(), "^GSPC");
    assert_eq!(Ticker::parse("brk.b").unwrap().as_str(), "BRK.B");
}

#[test]
fn non_ascii_is_refused_before_case_mapping() {
    // Unicode case mapping would turn these into real ASCII tickers: SPY, IBM, MASS.
    for t in ["\u{17f}py", "\u{131}bm", "ma\u{df}"] {
        assert!(Ticker::parse(t).is_err(), "{t:?} was accepted");
    }
    // The Kelvin sign lower-cases to `k`.
    assert!(Module::parse("\u{212a}ey").is_err());
    assert!(parse(json!({"ticker": "\u{17f}py", "module": "price"})).is_err());
}

#[test]
fn duplicate_keys_are_refused() {
    let now = now();
    for body in [
        r#"{"ticker":"AAPL","module":"price","ticker":"MSFT"}"#,
        r#"{"ticker":"AAPL","module":"price","hit":false,"hit":true}"#,
        r#"{"ts":"2026-03-09T14:00:00Z","ticker":"AAPL","module":"price","ts":1773066600000}"#,
    ] {
        let err = QueryEvent::from_json(body.as_bytes(), now).unwrap_err();
        assert!(err.to_string().contains("duplicate"), "{body}: {err}");
        assert!(parse_json_strict(body.as_bytes()).is_err(), "{body}");
    }
    // The strict parser (every HTTP body) refuses any repeated key, known or not.
    assert!(parse_json_strict(br#"{"ticker":"AAPL","module":"price","x":1,"x":2}"#).is_err());
    // Nested objects too; arrays of objects each on their own.
    assert!(parse_json_strict(br#"[{"a":1},{"a":2}]"#).is_ok());
    assert!(parse_json_strict(br#"{"o":{"a":1,"a":2}}"#).is_err());
}

#[test]
fn timestamps_before_2000_are_refused_in_every_form() {
    for ts in
        [json!("1999-12-31T23:59:59Z"), json!("1970-01-01T00:00:00Z"), json!(946_684_799_999_i64)]
    {
        let err = parse(json!({"ticker": "A", "module": "price", "ts": ts})).unwrap_err();
        assert_eq!(err.problems[0].field, "ts", "{ts}");
    }
    assert!(parse(json!({"ticker": "A", "module": "price", "ts": "2000-01-01T00:00:00Z"})).is_ok());
}

#[test]
fn a_leap_second_is_never_written_as_60() {
    let e =
        parse(json!({"ticker": "A", "module": "price", "ts": "2016-12-31T23:59:60.5Z"})).unwrap();
    let out = String::from_utf8(e.to_json()).unwrap();
    assert!(out.contains("2016-12-31T23:59:59.999Z"), "{out}");
    let typed = QueryEvent::from_json(
        br#"{"ticker":"A","module":"price","ts":"2016-12-31T23:59:60Z"}"#,
        now(),
    )
    .unwrap();
    assert!(!String::from_utf8(typed.to_json()).unwrap().contains(":60"));
}

#[test]
fn latency_is_bounded() {
    for (lat, ok) in [(0.0, true), (3_600_000.0, true), (3_600_000.5, false), (1e300, false)] {
        let r = parse(json!({"ticker": "A", "module": "price", "latency_ms": lat}));
        assert_eq!(r.is_ok(), ok, "{lat}");
        let body = format!(r#"{{"ticker":"A","module":"price","latency_ms":{lat}}}"#);
        assert_eq!(QueryEvent::from_json(body.as_bytes(), now()).is_ok(), ok, "typed {lat}");
    }
}

#[test]
fn a_ts_ahead_of_the_skew_is_clamped_only_when_asked() {
    let ahead = now() + chrono::Duration::hours(1);
    let v = json!({"ticker": "a", "module": "price", "ts": ahead.to_rfc3339()});
    assert!(QueryEvent::from_value(&v, now()).is_err(), "consumers still refuse it");
    let skew = chrono::Duration::minutes(1);
    let (e, clamped) = QueryEvent::from_value_clamped(&v, now(), skew).unwrap();
    assert!(clamped);
    assert_eq!(e.ts, now());
    let bytes = v.to_string();
    let (e, clamped) = QueryEvent::from_json_clamped(bytes.as_bytes(), now(), skew).unwrap();
    assert!(clamped);
    assert_eq!(e.ts, now());

    // Within the skew the producer's time stays.
    let near = now() + chrono::Duration::seconds(30);
    let v = json!({"ticker": "a", "module": "price", "ts": near.timestamp_millis()});
    let (e, clamped) = QueryEvent::from_value_clamped(&v, now(), skew).unwrap();
    assert_eq!((e.ts, clamped), (near, false));

    // A skew beyond what consumers accept is capped at MAX_FUTURE_SKEW.
    let ten = now() + chrono::Duration::minutes(10);
    let v = json!({"ticker": "a", "module": "price", "ts": ten.to_rfc3339()});
    let (e, clamped) =
        QueryEvent::from_value_clamped(&v, now(), chrono::Duration::hours(2)).unwrap();
    assert_eq!((e.ts, clamped), (now(), true));
    assert!(QueryEvent::from_json(&e.to_json(), now()).is_ok());

    // Everything else is still refused as before.
    let bad = json!({"ticker": "a;b", "module": "price", "ts": ahead.to_rfc3339()});
    let err = QueryEvent::from_value_clamped(&bad, now(), skew).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
}
