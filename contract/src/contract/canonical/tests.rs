//! The canonical scanner (`canonical.rs`): what it takes, what it leaves to serde.

use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-09T14:30:00Z").unwrap().with_timezone(&Utc)
}

/// Both parsers agree, and the fast one did the work when `fast` says so.
fn agree(json: &str, fast: bool) {
    let want = QueryEvent::from_json(json.as_bytes(), now());
    assert_eq!(event(json.as_bytes(), now()), want, "{json}");
    assert_eq!(
        canonical(json.as_bytes(), now()).is_some(),
        fast,
        "fast path taken for {json}? {want:?}"
    );
}

#[test]
fn the_future_bound_holds_to_the_millisecond() {
    // `now` between two milliseconds; events a millisecond either side of `now + skew`.
    let at = now() + chrono::Duration::microseconds(400);
    for ms in [-1, 0, 1, 2] {
        let ts = now() + MAX_FUTURE_SKEW + chrono::Duration::milliseconds(ms);
        let e = QueryEvent {
            ticker: Ticker::parse("AAPL").unwrap(),
            module: Module::parse("price").unwrap(),
            hit: false,
            ts,
            client: None,
            latency_ms: None,
        };
        let within = ts <= at + MAX_FUTURE_SKEW;
        assert_eq!(within, ms <= 0);
        assert_eq!(fields(&e.to_json(), at).is_some(), within, "{ms} ms");
    }
}

#[test]
fn canonical_events_are_read_without_serde_and_agree_with_it() {
    let base = QueryEvent {
        ticker: Ticker::parse("BRK.B").unwrap(),
        module: Module::parse("price").unwrap(),
        hit: true,
        ts: now() - chrono::Duration::milliseconds(1_234),
        client: Some(ClientId::parse("analyst-7 é").unwrap()),
        latency_ms: Some(12.5),
    };
    let variants = [
        base.clone(),
        QueryEvent { client: None, latency_ms: None, hit: false, ..base.clone() },
        QueryEvent { latency_ms: Some(0.0), ..base.clone() },
        QueryEvent { latency_ms: Some(1e-7), ..base.clone() },
        QueryEvent { latency_ms: Some(123456.789), ..base.clone() },
        QueryEvent { client: None, ..base.clone() },
        QueryEvent {
            ticker: Ticker::parse("^GSPC").unwrap(),
            module: Module::parse("fundamentals_q-2").unwrap(),
            ..base.clone()
        },
        QueryEvent { ts: now() + chrono::Duration::minutes(5), ..base.clone() },
        QueryEvent {
            ts: DateTime::parse_from_rfc3339("2000-02-29T23:59:59.999Z")
                .unwrap()
                .with_timezone(&Utc),
            ..base.clone()
        },
    ];
    for e in variants {
        let json = String::from_utf8(e.to_json()).unwrap();
        // 1e-7 serialises in exponent form, which is left to serde.
        let fast = e.latency_ms != Some(1e-7);
        agree(&json, fast);
        assert_eq!(event(json.as_bytes(), now()).unwrap(), e);
        if fast {
            assert!(scan(json.as_bytes(), now()).unwrap().exact, "to_json's own bytes: {json}");
        }
    }
}

/// `locate` reads the same event as `event` whenever it reads one, without allocating, and
/// reads every canonical event whose names are in normal form.
#[test]
fn located_events_view_as_the_contract_reads_them() {
    let ts = r#""ts":"2026-03-09T14:29:59.000Z""#;
    for (json, located) in [
        (format!(r#"{{"ticker":"BRK.B","module":"price","hit":false,{ts}}}"#), true),
        (
            format!(
                r#"{{"ticker":"AAPL","module":"news","hit":true,{ts},"client":"c 1é","latency_ms":3}}"#
            ),
            true,
        ),
        (format!(r#"{{"ticker":"aapl","module":"price","hit":false,{ts}}}"#), false),
        (format!(r#"{{"ticker":"AAPL","module":"Price","hit":false,{ts}}}"#), false),
        (format!(r#"{{"ticker":"AAPL","module":"price","hit":false,{ts},"client":""}}"#), false),
        (format!(r#"{{"ticker":"..","module":"price","hit":false,{ts}}}"#), false),
        (format!(r#"{{"module":"price","ticker":"AAPL","hit":false,{ts}}}"#), false),
    ] {
        // In a buffer after other bytes, as the analyzer's chunks hold them.
        let mut buf = b"{prefix}".to_vec();
        let base = buf.len();
        buf.extend_from_slice(json.as_bytes());
        let l = locate(json.as_bytes(), base, now());
        assert_eq!(l.is_some(), located, "{json}");
        if let Some(l) = l {
            assert_eq!(l.view(&buf).to_event(), event(json.as_bytes(), now()).unwrap(), "{json}");
        }
    }
}

/// `exact` holds only when `to_json` would write the very same bytes (ingest then forwards
/// them unchanged), for every way the input may differ from the canonical form.
#[test]
fn exact_only_when_to_json_writes_the_same_bytes() {
    let ts = r#""ts":"2026-03-09T14:29:59.000Z""#;
    for (json, exact) in [
        (format!(r#"{{"ticker":"AAPL","module":"price","hit":false,{ts}}}"#), true),
        (
            format!(
                r#"{{"ticker":"AAPL","module":"price","hit":true,{ts},"client":"c 1é","latency_ms":12.5}}"#
            ),
            true,
        ),
        (
            format!(r#"{{"ticker":"AAPL","module":"price","hit":false,{ts},"latency_ms":3.0}}"#),
            true,
        ),
        (format!(r#"{{"ticker":"AAPL","module":"price","hit":false,{ts},"latency_ms":3}}"#), false),
        (
            format!(r#"{{"ticker":"AAPL","module":"price","hit":false,{ts},"latency_ms":0.50}}"#),
            false,
        ),
        (format!(r#"{{"ticker":"aapl","module":"price","hit":false,{ts}}}"#), false),
        (format!(r#"{{"ticker":" AAPL","module":"price","hit":false,{ts}}}"#), false),
        (format!(r#"{{"ticker":"AAPL","module":"Price","hit":false,{ts}}}"#), false),
    ] {
        let s = scan(json.as_bytes(), now()).expect("canonical shape");
        assert_eq!(s.exact, exact, "{json}");
        assert_eq!(s.exact, s.event.to_json() == json.as_bytes(), "{json}");
    }
}

#[test]
fn the_fast_path_keeps_the_contract_bounds() {
    // Canonical in shape, out of the contract's range: refused, as the contract parser does.
    for json in [
        r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"1999-12-31T23:59:59.000Z"}"#,
        r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z","latency_ms":3600001}"#,
        r#"{"ticker":"..","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z"}"#,
    ] {
        assert!(event(json.as_bytes(), now()).is_err(), "{json}");
    }
}

#[test]
fn every_other_shape_falls_back_to_the_contract_parser() {
    let ok = r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z","client":"c1","latency_ms":3}"#;
    agree(ok, true);
    for (json, why) in [
        (
            r#"{"ticker":"aapl ","module":" Price","hit":false,"ts":"2026-03-09T14:29:59.000Z"}"#,
            "normalised names: fast and same",
        ),
        (
            r#"{"module":"price","ticker":"AAPL","hit":false,"ts":"2026-03-09T14:29:59.000Z"}"#,
            "field order",
        ),
        (
            r#"{ "ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z"}"#,
            "whitespace",
        ),
        (
            r#"{"ticker":"AA\u0050L","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z"}"#,
            "escape",
        ),
        (
            r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59Z"}"#,
            "ts without millis",
        ),
        (
            r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T16:29:59.000+02:00"}"#,
            "ts offset",
        ),
        (r#"{"ticker":"AAPL","module":"price","hit":false,"ts":1773066599000}"#, "epoch millis"),
        (r#"{"ticker":"AAPL","module":"price","hit":false}"#, "no ts: stamped now"),
        (
            r#"{"ticker":"AAPL","module":"price","hit":null,"ts":"2026-03-09T14:29:59.000Z"}"#,
            "null hit",
        ),
        (
            r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z","latency_ms":1.5e2}"#,
            "exponent",
        ),
        (
            r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z","extra":1}"#,
            "unknown field",
        ),
        (
            r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z"} "#,
            "trailing space",
        ),
    ] {
        let fast = why.starts_with("normalised");
        agree(json, fast);
        assert!(event(json.as_bytes(), now()).is_ok(), "{why}: still a valid event");
    }
    for (json, why) in [
        (r#"{"ticker":"","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z"}"#, "empty ticker"),
        (r#"{"ticker":"AA PL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z"}"#, "bad ticker"),
        ("{\"ticker\":\"\tAAPL\",\"module\":\"price\",\"hit\":false,\"ts\":\"2026-03-09T14:29:59.000Z\"}", "raw control character"),
        (r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:40:00.000Z"}"#, "ten minutes ahead"),
        (r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-02-30T14:29:59.000Z"}"#, "no such day"),
        (r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T24:29:59.000Z"}"#, "no such hour"),
        (r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z","latency_ms":-1}"#, "negative latency"),
        (r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z","client":""}"#, "empty client"),
        (r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z""#, "truncated"),
        (r#"{"ticker":"AAPL","module":"price","hit":false,"ts":"2026-03-09T14:29:59.000Z","latency_ms":01}"#, "leading zero"),
        ("not json", "not JSON"),
        ("", "empty"),
    ] {
        agree(json, false);
        assert!(event(json.as_bytes(), now()).is_err(), "{why}: refused");
    }
}
