//! Property test of the analyzer's event scanner (`analyzer::service::pipeline::parse::event`),
//! the parser of every byte on the query-events topic: a hand-written fast path for the
//! canonical form, falling back to the contract's `QueryEvent::from_json`. Seeded cases (a
//! failure names its case; `Gen::new(case)` replays it) of canonical events, mutations of them
//! and noise: the scanner never panics and gives exactly the contract's answer, accepted event
//! or refusal, on every input.

use analyzer::service::pipeline::parse::event;
use chrono::{DateTime, Duration, Utc};
use prefetch_common::contract::{ClientId, Module, QueryEvent, Ticker};
use prefetch_contract::testgen::Gen;

fn now() -> DateTime<Utc> {
    "2026-03-09T14:30:00Z".parse().unwrap()
}

/// The canonical form of a random valid event.
fn canonical(g: &mut Gen) -> Vec<u8> {
    let e = QueryEvent {
        ticker: Ticker::parse(["AAPL", "BRK.B", "^GSPC", "X-1=Y"][g.below(4)]).unwrap(),
        module: Module::parse(["price", "News", "chart_1d"][g.below(3)]).unwrap(),
        hit: g.one_in(2),
        // Up to ~17 years back (the contract refuses a ts before 2000), up to 10 min ahead.
        ts: now() - Duration::milliseconds(g.below(1 << 39) as i64)
            + Duration::milliseconds(g.below(600_000) as i64),
        client: g.one_in(2).then(|| ClientId::parse(&format!("c-{}", g.below(1000))).unwrap()),
        latency_ms: g
            .one_in(2)
            .then(|| [0.0, 12.5, 3_600_000.0, g.below(1 << 20) as f64 / 8.0][g.below(4)]),
    };
    e.to_json()
}

#[test]
fn the_scanner_agrees_with_the_contract_on_every_input() {
    let mut fast_accepted = 0;
    for case in 0..20_000u64 {
        let mut g = Gen::new(case);
        let bytes = match g.below(4) {
            0 => g.bytes(24),
            1 => canonical(&mut g),
            _ => {
                let c = canonical(&mut g);
                g.mutate(&c)
            }
        };
        let want = QueryEvent::from_json(&bytes, now());
        let got = event(&bytes, now());
        assert_eq!(got, want, "case {case}: {:?}", String::from_utf8_lossy(&bytes));
        fast_accepted += usize::from(got.is_ok());
    }
    assert!(fast_accepted > 5_000, "accepted {fast_accepted} events");
}
