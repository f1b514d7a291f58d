//! The trace family's promises: a broad, structurally varied family with a fixed dev/eval
//! split, members that generate what they describe.

use super::calendar::Market;
use super::family::{self, Archetype, DEV_SEEDS, EVAL_SEEDS};
use super::*;
use chrono::{Duration, Timelike};
use std::collections::{HashMap, HashSet};

#[test]
fn dev_and_eval_seeds_are_disjoint_and_members_are_reproducible() {
    let dev: HashSet<u64> = DEV_SEEDS.collect();
    assert!(EVAL_SEEDS.clone().all(|s| !dev.contains(&s)));
    assert!(dev.len() >= 10 && EVAL_SEEDS.count() >= 8);
    let (a, b) = (family::member(1003), family::member(1003));
    assert_eq!(a.params, b.params);
    assert_eq!(a.ttl_s, b.ttl_s);
    assert_ne!(family::member(1003).params, family::member(1004).params);
}

#[test]
fn the_family_is_broad_in_structure_not_one_knob() {
    let members: Vec<_> = DEV_SEEDS.chain(EVAL_SEEDS).map(family::member).collect();
    let archetypes: HashSet<String> =
        members.iter().map(|m| format!("{:?}", m.archetype)).collect();
    let markets: HashSet<&str> = members.iter().map(|m| m.market_tz).collect();
    let tickers: Vec<usize> = members.iter().map(|m| m.params.tickers).collect();
    assert!(archetypes.len() >= 4, "{archetypes:?}");
    assert!(markets.len() >= 4 && markets.iter().any(|z| *z != "America/New_York"), "{markets:?}");
    assert!(tickers.iter().all(|n| (100..=20_000).contains(n)), "{tickers:?}");
    assert!(tickers.iter().max().unwrap() / tickers.iter().min().unwrap() >= 20, "{tickers:?}");
    for (what, n) in [
        ("no client ids", members.iter().filter(|m| m.params.shape.client_share == 0.0).count()),
        ("a regime change", members.iter().filter(|m| m.params.shape.regime_change).count()),
        ("hit:false only", members.iter().filter(|m| !m.hit_flags).count()),
        ("scheduled scans", members.iter().filter(|m| m.params.shape.scanners.0 > 0).count()),
    ] {
        assert!(n >= 1, "no member with {what}");
    }
    // The eval set alone covers the variants too, so the table tests each of them.
    let eval: Vec<_> = EVAL_SEEDS.map(family::member).collect();
    assert!(eval.iter().any(|m| m.params.shape.client_share < 1.0));
    assert!(eval.iter().any(|m| m.params.shape.regime_change));
    assert!(eval.iter().any(|m| !m.hit_flags));
    assert!(eval.iter().any(|m| m.market_tz != "America/New_York"));
    // Structure varies together: two members of one archetype still differ in mixes and TTLs.
    let ttl_mixes: HashSet<Vec<u64>> =
        members.iter().map(|m| m.ttl_s.values().copied().collect()).collect();
    assert!(ttl_mixes.len() >= members.len() / 2, "{} TTL mixes", ttl_mixes.len());
    assert!(members.iter().all(|m| m.live_config().validate().is_ok()));
    assert!(members.iter().any(|m| m.archetype == Archetype::Sessions));
}

/// A member cut to its first hours at a lighter rate, so a debug test stays quick.
fn light(seed: u64, hours: i64) -> Params {
    let p = family::member(seed).params;
    Params { duration: Duration::hours(hours), ..p }
}

#[test]
fn members_generate_what_they_describe() {
    for seed in DEV_SEEDS.chain(EVAL_SEEDS) {
        let m = family::member(seed);
        let p = light(seed, 3);
        let events: Vec<_> = Generator::new(&p).unwrap().take(20_000).collect();
        assert!(!events.is_empty(), "seed {seed}");
        assert!(events.windows(2).all(|w| w[0].ts <= w[1].ts));
        let named = events.iter().filter(|e| e.client.is_some()).count();
        match m.params.shape.client_share {
            s if s == 0.0 => assert_eq!(named, 0, "seed {seed}"),
            s if s == 1.0 => assert_eq!(named, events.len(), "seed {seed}"),
            _ => assert!(named > 0 && named < events.len(), "seed {seed}"),
        }
        let tickers: HashSet<&str> = events.iter().map(|e| e.ticker.as_str()).collect();
        assert!(tickers.len() <= m.params.tickers);
    }
}

#[test]
fn a_regime_change_moves_the_favourites_halfway() {
    let seed = DEV_SEEDS
        .chain(EVAL_SEEDS)
        .find(|s| family::member(*s).params.shape.regime_change)
        .expect("a member with a regime change");
    let p = family::member(seed).params;
    let half = p.start + p.duration / 2;
    // Four hours around the member's change (the generator places it halfway through any span).
    let around = Params { start: half - Duration::hours(2), duration: Duration::hours(4), ..p };
    let events = generate(&around).unwrap();
    let mid = around.start + around.duration / 2;
    let top = |before: bool| {
        let mut n: HashMap<&str, usize> = HashMap::new();
        for e in events.iter().filter(|e| (e.ts < mid) == before) {
            *n.entry(e.ticker.as_str()).or_default() += 1;
        }
        let mut v: Vec<(&str, usize)> = n.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.into_iter().take(5).map(|(t, _)| t.to_owned()).collect::<HashSet<_>>()
    };
    let (before, after) = (top(true), top(false));
    assert!(before.intersection(&after).count() < 5, "{before:?} {after:?}");
}

#[test]
fn another_market_opens_at_its_own_bell() {
    let tokyo = Market {
        tz: "Asia/Tokyo".parse().unwrap(),
        open: 9 * 60,
        close: 15 * 60 + 30,
        around_the_clock: false,
    };
    // Wednesday 2026-03-11: the open spike at 09:00 Tokyo is 00:00 UTC.
    let open = chrono::DateTime::parse_from_rfc3339("2026-03-11T00:00:00Z").unwrap().to_utc();
    let i = tokyo.intensity(open);
    assert!(i > 3.0 && i > 5.0 * tokyo.intensity(open - Duration::minutes(1)), "{i}");
    assert_eq!(open.with_timezone(&tokyo.tz).hour(), 9);
    // New York is asleep then.
    assert!(market_intensity(open) < 0.5);
    let crypto = Market { tz: chrono_tz::UTC, open: 0, close: 1440, around_the_clock: true };
    let saturday = chrono::DateTime::parse_from_rfc3339("2026-03-14T15:00:00Z").unwrap().to_utc();
    assert!(crypto.intensity(saturday) > 0.5, "a crypto venue trades at weekends");
}
