//! Property tests of the checkpoint decoder, [`Model::restore`]: its bytes come from the
//! analyzer's state topic, which anyone with write access can fill. Seeded cases (a failure
//! names its case; `Gen::new(case)` replays it), through the public API only, so they hold
//! for any version of the format:
//! - a snapshot restores into a fresh model with the same keys and window counts, and the
//!   restored model's own snapshot restores to the same state again;
//! - every strict prefix of a snapshot is refused, and a refused restore changes nothing;
//! - no corrupted or random bytes make it panic, and whatever it accepts still ticks into
//!   predictions that satisfy the prediction contract.

use chrono::{DateTime, Duration, Utc};
use prefetch_contract::contract::{ClientId, Module, QueryEvent, Ticker};
use prefetch_contract::testgen::Gen;
use prefetch_model::{Model, ModelConfig};
use std::collections::HashSet;

fn now() -> DateTime<Utc> {
    "2026-03-09T14:30:00Z".parse().unwrap()
}

/// A model fed a few hundred events of `seed`'s making over the last six hours, ticked along.
fn fed(seed: u64) -> (Model, HashSet<Ticker>) {
    let mut g = Gen::new(seed);
    let mut m = Model::new(ModelConfig::default()).unwrap();
    let tickers: Vec<Ticker> =
        (0..12).map(|i| Ticker::parse(&format!("T{seed}X{i}")).unwrap()).collect();
    let modules: Vec<Module> =
        ["price", "chart", "news"].iter().map(|m| Module::parse(m).unwrap()).collect();
    let start = now() - Duration::hours(6);
    let mut t = start;
    for i in 0..400 {
        t += Duration::seconds(g.below(100) as i64);
        let e = QueryEvent {
            ticker: tickers[g.below(tickers.len()).min(g.below(tickers.len()))].clone(),
            module: modules[g.below(modules.len())].clone(),
            hit: g.one_in(3),
            ts: t,
            client: g.one_in(2).then(|| ClientId::parse(&format!("c{}", g.below(5))).unwrap()),
            latency_ms: None,
        };
        m.record(&e);
        if i % 50 == 49 {
            m.tick(t);
        }
    }
    (m, tickers.into_iter().collect())
}

fn counts(m: &Model) -> Vec<(Ticker, Module, u64)> {
    let mut c = m.window_counts();
    c.sort();
    c
}

#[test]
fn snapshots_restore_to_the_same_state() {
    for seed in 0..20 {
        let (m, tickers) = fed(seed);
        let bytes = m.snapshot(&tickers);
        let mut back = Model::new(ModelConfig::default()).unwrap();
        let r = back.restore(&bytes).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(r.keys, m.footprint().keys, "seed {seed}");
        assert!(!counts(&m).is_empty());
        assert_eq!(counts(&back), counts(&m), "seed {seed}");
        let again = back.snapshot(&tickers);
        assert_eq!(again.len(), bytes.len(), "seed {seed}");
        let mut third = Model::new(ModelConfig::default()).unwrap();
        third.restore(&again).unwrap();
        assert_eq!(counts(&third), counts(&m), "seed {seed}");
    }
}

#[test]
fn every_strict_prefix_is_refused_and_changes_nothing() {
    let (m, tickers) = fed(1);
    let bytes = m.snapshot(&tickers);
    let (mut target, _) = fed(2);
    let before = counts(&target);
    for cut in 0..bytes.len() {
        assert!(target.restore(&bytes[..cut]).is_err(), "a prefix of {cut} bytes was accepted");
    }
    assert_eq!(counts(&target), before, "a refused restore changed the model");
}

#[test]
fn corrupt_snapshots_never_panic_and_what_is_accepted_stays_within_the_contract() {
    let (m, tickers) = fed(3);
    let valid = m.snapshot(&tickers);
    let (mut target, _) = fed(4);
    let mut before = counts(&target);
    let mut accepted = 0;
    for case in 0..3_000u64 {
        let mut g = Gen::new(case);
        let bytes = match g.below(8) {
            0 => g.bytes(64),
            // A valid header, then noise: reaches the key decoding.
            1 => {
                let mut b = valid[..valid.len().min(40)].to_vec();
                b.extend(g.bytes(64));
                b
            }
            _ => g.mutate(&valid),
        };
        match target.restore(&bytes) {
            Err(_) => assert_eq!(counts(&target), before, "case {case}: refused but changed"),
            Ok(_) => {
                accepted += 1;
                for p in target.tick(now()) {
                    assert_eq!(p.validate(), Ok(()), "case {case}: {p:?}");
                }
                (target, _) = fed(4);
                before = counts(&target);
            }
        }
    }
    assert!(accepted > 50, "mutations reached the accepting path {accepted} times");
}
