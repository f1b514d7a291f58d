//! Property tests over the contract's parsers of bytes from HTTP and Kafka: query events,
//! predictions and the live config. For each, seeded cases (noise, near-valid documents, and
//! mutations of valid ones; a failure names its case, `Gen::new(case)` replays it):
//! - no input makes the parser panic;
//! - what is accepted satisfies every rule the contract promises (so a consumer may trust it);
//! - what is accepted round-trips: its canonical form parses back to the same value and the
//!   same bytes.

use crate::config::LiveConfig;
use crate::contract::{QueryEvent, MAX_FUTURE_SKEW, MAX_LATENCY_MS, MIN_EPOCH_MS};
use crate::prediction::{Prediction, MAX_GENERATED_AT_MS};
use crate::testgen::{same_json, Gen};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

const CASES: u64 = 20_000;

fn now() -> DateTime<Utc> {
    "2026-03-09T14:30:00Z".parse().unwrap()
}

fn pick(g: &mut Gen) -> String {
    String::from_utf8_lossy(&g.bytes(3)).into_owned()
}

/// A well-formed event with random field values, to reach the validation paths.
fn near_valid_event(g: &mut Gen) -> Vec<u8> {
    let base = now().timestamp_millis();
    let ts = match g.below(4) {
        0 => json!(base - g.below(1 << 34) as i64 + g.below(1 << 20) as i64),
        1 => json!(pick(g)),
        2 => json!(g.next_u64() as i64),
        _ => json!((now() - chrono::Duration::seconds(g.below(1 << 28) as i64)).to_rfc3339()),
    };
    let mut v = json!({
        "ticker": if g.one_in(4) { pick(g) } else { "brk.b".into() },
        "module": if g.one_in(4) { pick(g) } else { "News".into() },
        "hit": g.one_in(2),
        "ts": ts,
    });
    if g.one_in(2) {
        v["latency_ms"] = if g.one_in(2) {
            json!(f64::from_bits(g.next_u64()))
        } else {
            json!(g.below(8_000_000) as f64 / 7.0)
        };
    }
    if g.one_in(3) {
        v["client"] = json!(pick(g));
    }
    if g.one_in(8) {
        v.as_object_mut().unwrap().remove("ts");
    }
    let bytes = serde_json::to_vec(&v).unwrap();
    if g.one_in(3) {
        g.mutate(&bytes)
    } else {
        bytes
    }
}

/// What every accepted event must satisfy, whatever it was read from.
fn check_event(case: u64, e: &QueryEvent) {
    let t = e.ticker.as_str();
    assert!(
        t.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b".-^=".contains(&b))
            && t.bytes().any(|b| b.is_ascii_alphanumeric()),
        "case {case}: ticker {t:?}"
    );
    assert!(e.module.as_str().bytes().any(|b| b.is_ascii_alphanumeric()), "case {case}");
    let ms = e.ts.timestamp_millis();
    assert!(ms >= MIN_EPOCH_MS && e.ts <= now() + MAX_FUTURE_SKEW, "case {case}: ts {}", e.ts);
    if let Some(l) = e.latency_ms {
        assert!(l.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&l), "case {case}: {l}");
    }
    let wire: Value = serde_json::from_slice(&e.to_json()).unwrap();
    let ts = wire["ts"].as_str().unwrap();
    assert_eq!(ts.len(), 24, "case {case}: {ts}");
    assert!(ts.ends_with('Z') && &ts[17..19] != "60", "case {case}: {ts} on the wire");
}

#[test]
fn any_bytes_parse_without_panic_and_accepted_events_round_trip() {
    let mut accepted = 0;
    for case in 0..CASES {
        let mut g = Gen::new(case);
        let bytes = if case % 2 == 0 { g.bytes(24) } else { near_valid_event(&mut g) };
        // Both boundaries: bytes (a Kafka payload) and a parsed tree (an item of a batch).
        let from_tree = crate::contract::parse_json_strict(&bytes)
            .ok()
            .map(|v| QueryEvent::from_value(&v, now()));
        // The analyzer's allocation-free reader never accepts what the contract refuses.
        let located = crate::contract::canonical::locate(&bytes, 0, now()).map(|l| l.view(&bytes));
        let Ok(e) = QueryEvent::from_json(&bytes, now()) else {
            assert!(!matches!(from_tree, Some(Ok(_))), "case {case}: the tree parser accepts");
            assert_eq!(located, None, "case {case}: locate accepts");
            continue;
        };
        accepted += 1;
        assert_eq!(from_tree, Some(Ok(e.clone())), "case {case}: the two paths disagree");
        if let Some(v) = located {
            assert_eq!(v.to_event(), e, "case {case}: locate reads another event");
        }
        // Its own canonical form is located (names are normal once parsed), unless an escaped
        // client or a latency in exponent form leaves it to serde.
        let wire = e.to_json();
        let v = crate::contract::canonical::locate(&wire, 0, now()).map(|l| l.view(&wire));
        let escaped = wire.contains(&b'\\');
        assert!(
            v.is_some() || e.latency_ms.is_some() || escaped,
            "case {case}: canonical bytes not located: {}",
            String::from_utf8_lossy(&wire)
        );
        check_event(case, &e);
        let again = QueryEvent::from_json(&wire, now())
            .unwrap_or_else(|err| panic!("case {case}: canonical form refused: {err}"));
        // Exact but for `latency_ms`: serde_json (without `float_roundtrip`) may read a
        // 17-digit number back one ulp off.
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
            (a, b) => a == b,
        };
        assert!(close(again.latency_ms, e.latency_ms), "case {case}");
        assert_eq!(QueryEvent { latency_ms: e.latency_ms, ..again.clone() }, e, "case {case}");
        assert!(same_json(&again.to_json(), &wire), "case {case}");
    }
    assert!(accepted > 1_000, "the generator reached the accepting path {accepted} times");
}

#[test]
fn clamping_only_ever_moves_a_future_ts_to_now() {
    let skew = chrono::Duration::minutes(1);
    for case in 0..CASES / 4 {
        let mut g = Gen::new(case);
        let ahead = now() + chrono::Duration::milliseconds(g.below(1 << 32) as i64);
        let v = json!({"ticker": "A", "module": "price", "ts": ahead.timestamp_millis()});
        let (e, clamped) = QueryEvent::from_value_clamped(&v, now(), skew).unwrap();
        assert_eq!(clamped, ahead > now() + skew, "case {case}");
        assert_eq!(e.ts, if clamped { now() } else { ahead }, "case {case}");
        assert!(QueryEvent::from_json(&e.to_json(), now()).is_ok(), "case {case}");
    }
}

fn near_valid_prediction(g: &mut Gen) -> Vec<u8> {
    let mut v = json!({"ticker": "AAPL", "module": "price", "confidence": 0.5, "horizon_s": 300,
                       "generated_at": "2026-03-09T14:30:00Z", "reason": "popularity"});
    let field =
        ["ticker", "module", "confidence", "horizon_s", "generated_at", "reason"][g.below(6)];
    v[field] = match g.below(5) {
        0 => json!(f64::from_bits(g.next_u64())),
        1 => json!(g.next_u64() >> g.below(64)),
        2 => json!(pick(g)),
        3 => json!((now() + chrono::Duration::seconds(g.next_u64() as i32 as i64)).to_rfc3339()),
        _ => v[field].clone(),
    };
    let bytes = serde_json::to_vec(&v).unwrap();
    if g.one_in(2) {
        g.mutate(&bytes)
    } else {
        bytes
    }
}

#[test]
fn any_bytes_parse_without_panic_and_accepted_predictions_round_trip() {
    let mut accepted = 0;
    for case in 0..CASES {
        let mut g = Gen::new(case);
        let bytes = if case % 2 == 0 { g.bytes(24) } else { near_valid_prediction(&mut g) };
        let Ok(p) = serde_json::from_slice::<Prediction>(&bytes) else { continue };
        accepted += 1;
        assert_eq!(p.validate(), Ok(()), "case {case}");
        let ms = p.generated_at.timestamp_millis();
        assert!((MIN_EPOCH_MS..MAX_GENERATED_AT_MS).contains(&ms), "case {case}");
        // The arithmetic consumers do on it never panics, at any clock.
        for at in [now(), DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            let _ = p.is_stale(at);
        }
        let wire = serde_json::to_vec(&p).unwrap();
        let again: Prediction = serde_json::from_slice(&wire)
            .unwrap_or_else(|e| panic!("case {case}: canonical form refused: {e}"));
        // Exact but for `confidence`, which may come back one ulp off (see the events' test).
        let (x, y) = (again.confidence, p.confidence);
        assert!(x == y || (x - y).abs() <= 1e-12 * x.max(y), "case {case}");
        assert_eq!(Prediction { confidence: p.confidence, ..again.clone() }, p, "case {case}");
        assert!(same_json(&serde_json::to_vec(&again).unwrap(), &wire), "case {case}");
    }
    assert!(accepted > 1_000, "the generator reached the accepting path {accepted} times");
}

#[test]
fn any_bytes_parse_without_panic_and_accepted_configs_round_trip() {
    let mut accepted = 0;
    let fields = ["enabled", "top_n", "min_confidence", "market_tz", "horizon_s", "ttl_s"];
    for case in 0..CASES {
        let mut g = Gen::new(case);
        let bytes = if case % 2 == 0 {
            g.bytes(24)
        } else {
            let mut v = serde_json::to_value(LiveConfig::default()).unwrap();
            let field = fields[g.below(fields.len())];
            v[field] = match g.below(4) {
                0 => json!(f64::from_bits(g.next_u64())),
                1 => json!(g.next_u64() >> g.below(64)),
                2 => json!(pick(&mut g)),
                _ => v[field].clone(),
            };
            let bytes = serde_json::to_vec(&v).unwrap();
            if g.one_in(3) {
                g.mutate(&bytes)
            } else {
                bytes
            }
        };
        let Ok(cfg) = LiveConfig::from_json(&bytes) else { continue };
        accepted += 1;
        assert!((0.0..=1.0).contains(&cfg.min_confidence), "case {case}");
        let wire = serde_json::to_vec(&cfg).unwrap();
        let again = LiveConfig::from_json(&wire)
            .unwrap_or_else(|e| panic!("case {case}: canonical form refused: {e}"));
        assert!(same_json(&serde_json::to_vec(&again).unwrap(), &wire), "case {case}");
        // A patch of the accepted document's own fields is accepted and changes nothing.
        let patch: Value = serde_json::from_slice(&wire).unwrap();
        let patched = cfg.patched(&patch).unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert!(same_json(&serde_json::to_vec(&patched).unwrap(), &wire), "case {case}");
    }
    assert!(accepted > 1_000, "the generator reached the accepting path {accepted} times");
    assert!(LiveConfig::from_json(br#"{"top_n":1,"top_n":2}"#).is_err(), "duplicate keys");
}
