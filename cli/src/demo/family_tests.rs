//! The trace family's promises: a broad, structurally varied family with a fixed dev/eval
//! split, members that generate what they describe.

use super::calendar::Market;
use super::family::{self, Archetype, DEV_SEEDS, EVAL_SEEDS};
use super::*;
use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use prefetch_common::contract::QueryEvent;
use std::collections::{HashMap, HashSet};

#[test]
fn dev_and_eval_seeds_are_disjoint_and_members_are_reproducible() {
    let dev: HashSet<u64> = DEV_SEEDS.collect();
    assert!(EVAL_SEEDS.clone().all(|s| !dev.contains(&s)));
    assert!(dev.len() >= 10 && EVAL_SEEDS.count() >= 8);
    // A seed names its traffic: drawn twice, the same events; another seed, other events.
    let first = |seed: u64| -> Vec<QueryEvent> {
        Generator::new(&light(seed, 2)).unwrap().take(5_000).collect()
    };
    for seed in [1, 6, 12, 1001, 1006, 1010] {
        let (a, b) = (first(seed), first(seed));
        assert!(a.len() > 100, "seed {seed}: {} events", a.len());
        assert_eq!(a, b, "seed {seed}");
        assert_eq!(family::member(seed).ttl_s, family::member(seed).ttl_s);
    }
    assert_ne!(first(1003), first(1004));
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
        let share = m.params.shape.client_share;
        if share == 0.0 {
            assert_eq!(named, 0, "seed {seed}");
        } else if share == 1.0 {
            assert_eq!(named, events.len(), "seed {seed}");
        } else {
            assert!(named > 0 && named < events.len(), "seed {seed}");
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

/// The member's traffic from 90 minutes before to 90 minutes after its market's first opening
/// bell (UTC midnight for a venue trading around the clock), with the source of each event, and
/// that bell.
fn around_open(seed: u64) -> (Vec<(QueryEvent, Origin)>, DateTime<Utc>) {
    let p = family::member(seed).params;
    let market = p.shape.market;
    let day = p.start.with_timezone(&market.tz).date_naive();
    let bell = day.and_hms_opt(market.open / 60, market.open % 60, 0).unwrap();
    let open = market.tz.from_local_datetime(&bell).earliest().unwrap().with_timezone(&Utc);
    let window = Params { start: open - Duration::minutes(90), duration: Duration::hours(3), ..p };
    let mut g = Generator::new(&window).unwrap();
    (std::iter::from_fn(|| g.next_with_origin()).collect(), open)
}

/// Share of `events` that `origin` produced.
fn share(events: &[(QueryEvent, Origin)], origin: Origin) -> f64 {
    events.iter().filter(|(_, o)| *o == origin).count() as f64 / events.len().max(1) as f64
}

#[test]
fn the_traffic_follows_each_members_market_archetype_universe_and_skew() {
    let members: Vec<_> = DEV_SEEDS.chain(EVAL_SEEDS).map(family::member).collect();
    let traffic: Vec<_> = members.iter().map(|m| around_open(m.seed)).collect();
    // The market: local open is where the day starts; a crypto venue has no bell.
    for (m, (events, open)) in members.iter().zip(&traffic) {
        let hour = |from: DateTime<Utc>| count_in(events, from, from + Duration::hours(1));
        let (before, after) = (hour(*open - Duration::hours(1)), hour(*open));
        let ratio = after as f64 / before.max(1) as f64;
        if m.params.shape.market.around_the_clock {
            assert!((0.6..1.6).contains(&ratio), "seed {}: {before} → {after}", m.seed);
        } else {
            assert!(ratio > 1.3, "seed {} ({}): {before} → {after}", m.seed, m.market_tz);
        }
    }
    // The archetype: the traffic it is named after takes a far larger share of its members'
    // events than of other members' (lookups are every member's floor, so less so there).
    for (archetype, origin, factor) in [
        (Archetype::Dashboards, Origin::Dashboard, 3.0),
        (Archetype::Sessions, Origin::Session, 3.0),
        (Archetype::Bursts, Origin::Burst, 3.0),
        (Archetype::Lookups, Origin::Lookup, 1.2),
    ] {
        let mean = |own: bool| {
            let xs: Vec<f64> = members
                .iter()
                .zip(&traffic)
                .filter(|(m, _)| m.archetype != Archetype::Mixed)
                .filter(|(m, _)| (m.archetype == archetype) == own)
                .map(|(_, (events, _))| share(events, origin))
                .collect();
            assert!(!xs.is_empty(), "{archetype:?}");
            xs.iter().sum::<f64>() / xs.len() as f64
        };
        let (own, others) = (mean(true), mean(false));
        assert!(own > factor * others, "{archetype:?}: {own:.3} vs {others:.3}");
    }
    // The universe: from about a hundred tickers asked to thousands.
    let distinct: Vec<usize> = traffic
        .iter()
        .map(|(events, _)| {
            events.iter().map(|(e, _)| e.ticker.as_str()).collect::<HashSet<_>>().len()
        })
        .collect();
    for (m, n) in members.iter().zip(&distinct) {
        assert!(*n <= m.params.tickers, "seed {}", m.seed);
    }
    let (lo, hi) = (distinct.iter().min().unwrap(), distinct.iter().max().unwrap());
    assert!(*hi >= 20 * lo && *hi > 5_000, "{distinct:?}");
    // The skew: where lookups make nearly all the traffic, the ten most asked tickers take the
    // share the member's Zipf law gives them, and that share differs widely across members.
    let mut expected = Vec::new();
    for (m, (events, _)) in members.iter().zip(&traffic) {
        if share(events, Origin::Lookup) < 0.95 {
            continue;
        }
        let law = |k: usize| (k as f64).powf(-m.params.zipf_s);
        let want = (1..=10).map(law).sum::<f64>() / (1..=m.params.tickers).map(law).sum::<f64>();
        let mut n: HashMap<&str, usize> = HashMap::new();
        for (e, _) in events {
            *n.entry(e.ticker.as_str()).or_default() += 1;
        }
        let mut counts: Vec<usize> = n.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let got = counts.iter().take(10).sum::<usize>() as f64 / events.len() as f64;
        assert!((got - want).abs() < 0.05, "seed {}: top 10 {got:.3}, Zipf {want:.3}", m.seed);
        expected.push(want);
    }
    assert!(expected.len() >= 3, "{} lookup-only members", expected.len());
    let spread =
        expected.iter().copied().fold(0.0, f64::max) - expected.iter().copied().fold(1.0, f64::min);
    assert!(spread > 0.3, "top-10 shares {expected:?}");
}

fn count_in(events: &[(QueryEvent, Origin)], from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
    events.iter().filter(|(e, _)| e.ts >= from && e.ts < to).count()
}
