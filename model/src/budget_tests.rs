//! The fetch budget (`budget.rs`): the token bucket on its own, and the model publishing —
//! ticks and event-driven warms alike — only what it pays for, noting only that as warmed.

use crate::budget::{Budget, Spend};
use crate::refresh::Observed;
use crate::Model;

/// A miss a cache never warmed would have had as well.
const DEMAND: Observed =
    Observed { refresh: None, demand: true, useful: false, bare: true, used_cell: None };
/// A hit on a warm where a cache never warmed would have fetched.
const USEFUL: Observed =
    Observed { refresh: None, demand: false, useful: true, bare: true, used_cell: None };
/// A miss a cache never warmed would not have had (a warmed copy expired before the one a
/// later miss would have made).
const SHIFTED: Observed =
    Observed { refresh: None, demand: true, useful: false, bare: false, used_cell: None };

/// A model publishing everything it finds (top 50, no confidence floor), copies living 90 s, a
/// rate budget of `per_minute` calls, and the 20 tickers `T00`..`T19` the tests query; with the
/// start time the tests count from.
fn twenty_keys_on_a_rate_budget(
    per_minute: f64,
) -> (Model, chrono::DateTime<chrono::Utc>, Vec<String>) {
    use crate::{CacheTtls, ModelConfig};
    let cfg = ModelConfig { top_n: 50, min_confidence: 0.0, ..ModelConfig::default() };
    let mut m = Model::new(cfg).unwrap();
    m.set_cache_ttls(CacheTtls { per_module: Default::default(), default_s: 90 });
    m.set_budget(Budget::PerMinute(per_minute));
    let names = (0..20).map(|i| format!("T{i:02}")).collect();
    (m, crate::tests::utc(2026, 3, 10, 14, 0), names)
}

#[test]
fn a_ratio_budget_holds_warms_to_its_share_of_the_fetches_of_no_warming() {
    let mut s = Spend::new(Budget::Ratio(1.2), 1);
    assert_eq!(s.admit(0, 0.0, [0.9]), 1, "the bucket starts with one tick's worth");
    assert_eq!(s.admit(0, 0.0, [0.9]), 0, "and nothing was earned yet");
    // 1 000 demand fetches over 1 000 s earn 200 warms; offered 5 a second, the budget
    // publishes about that many, never more.
    let mut warms = 1;
    for t in 1..=1_000u32 {
        s.observe(t, DEMAND);
        warms += s.admit(t, 0.0, [1.0; 5]) as u64;
    }
    let st = s.status(0.0);
    assert!((198..=201).contains(&warms), "{warms}");
    assert_eq!((st.warms, st.demand_fetches), (warms, 1_000));
    assert!(st.spend_ratio().unwrap() <= 1.2 + 1e-9, "{st:?}");
    // A warm that served a hit saved a demand fetch: it earns the ratio back.
    let before = s.status(0.0).tokens;
    s.observe(1_000, USEFUL);
    assert!((s.status(0.0).tokens - before - 1.2).abs() < 1e-9);
    // A miss the warms caused (no warming would have hit) costs a token and earns nothing.
    s.observe(1_000, SHIFTED);
    assert!((s.status(0.0).tokens - before - 0.2).abs() < 1e-9);
    let st = s.status(0.0);
    assert_eq!((st.no_warming_fetches, st.demand_fetches), (1_001, 1_001));
    assert_eq!(st.spend_ratio(), Some((1_001 + warms) as f64 / 1_001.0));
}

#[test]
fn a_draining_bucket_raises_the_price_so_only_sure_candidates_spend() {
    let mut s = Spend::new(Budget::Ratio(2.0), 10);
    assert_eq!(s.price(0.2), 0.2, "full: min_confidence is the bar");
    assert_eq!(s.admit(0, 0.2, [0.95, 0.9, 0.9, 0.9, 0.9]), 5);
    let half = s.price(0.2);
    assert!((half - (0.2 + 0.8 * 0.25)).abs() < 1e-9, "half full: {half}");
    assert_eq!(s.admit(0, 0.2, [0.45, 0.3]), 1, "0.3 is below the price once 0.45 spent");
    assert_eq!(s.status(0.2).refused, 1);
}

#[test]
fn a_rate_budget_earns_with_event_time_and_holds_a_minute_at_most() {
    let mut s = Spend::new(Budget::PerMinute(60.0), 10);
    assert_eq!(s.admit(0, 0.0, [1.0; 100]), 60, "starts with a minute's worth");
    assert_eq!(s.admit(30, 0.0, [1.0; 100]), 30, "30 s earn 30 calls");
    assert_eq!(s.admit(30_000, 0.0, [1.0; 100]), 60, "a quiet spell banks one minute");
    // Demand does not matter to a rate.
    s.observe(30_000, DEMAND);
    assert_eq!(s.admit(30_000, 0.0, [1.0]), 0);
}

#[test]
fn a_tick_publishes_what_the_budget_pays_for_and_the_view_notes_only_that_as_warmed() {
    use crate::tests::ev;
    // Five calls a minute, and the bucket starts with one minute's worth.
    let (mut m, start, names) = twenty_keys_on_a_rate_budget(5.0);
    let at = |s: i64| start + chrono::Duration::seconds(s);
    let mut published = Vec::new();
    for s in 0..=85 {
        if s % 5 == 0 {
            published = m.tick(at(s));
        }
        // Queries stop before any copy is within refresh-on-hit's reach (60 s of expiry).
        if s <= 15 {
            for n in &names {
                m.record(&ev(n, "price", at(s), None));
            }
        }
    }
    // At 85 s all 20 copies expire before the next tick: 20 candidates, 5 paid for.
    assert_eq!(published.len(), 5, "{published:?}");
    let view = m.cache.as_ref().unwrap();
    let mid = m.modules.id(&prefetch_contract::contract::Module::parse("price").unwrap());
    let s0 = crate::profile::to_secs(start).unwrap();
    for n in &names {
        let tid = m.tickers.id(&prefetch_contract::contract::Ticker::parse(n).unwrap());
        let expires = view.expires(tid.unwrap(), mid.unwrap()).unwrap() - s0;
        let warmed = published.iter().any(|p| p.ticker.as_str() == n);
        // A warmed copy is a refresh of one live until 90 s, deferred to 1 s before then.
        assert_eq!(expires, if warmed { 179 } else { 90 }, "{n}: warmed {warmed}");
    }
    let st = m.spend_status();
    assert_eq!((st.warms, st.refused), (5, 15), "{st:?}");
}

#[test]
fn twenty_synchronised_refreshes_on_hit_publish_and_note_only_what_is_paid_for() {
    use crate::tests::ev;
    let (mut m, start, names) = twenty_keys_on_a_rate_budget(5.0);
    let at = |s: i64| start + chrono::Duration::seconds(s);
    let mut published = Vec::new();
    for s in 0..=30 {
        for n in &names {
            // At 30 s every copy is within 60 s of its expiry: 20 refresh-on-hit candidates.
            published.extend(m.record(&ev(n, "price", at(s), None)).predictions);
        }
    }
    assert_eq!(published.len(), 5, "{published:?}");
    let price = prefetch_contract::contract::Module::parse("price").unwrap();
    let mid = m.modules.id(&price).unwrap();
    let s0 = crate::profile::to_secs(start).unwrap();
    let view = m.cache.as_ref().unwrap();
    for n in &names {
        let tid = m.tickers.id(&prefetch_contract::contract::Ticker::parse(n).unwrap());
        let expires = view.expires(tid.unwrap(), mid).unwrap() - s0;
        let warmed = published.iter().any(|p| p.ticker.as_str() == n);
        // Refreshed at 89 s (deferred to 1 s before the live copy's expiry), not at 30 s.
        assert_eq!(expires, if warmed { 179 } else { 90 }, "{n}: warmed {warmed}");
    }
}

#[test]
fn off_publishes_every_candidate_and_still_counts() {
    let mut s = Spend::new(Budget::Off, 10);
    assert_eq!(s.admit(0, 0.5, [0.9; 1_000]), 1_000);
    assert_eq!(s.status(0.5).warms, 1_000);
    s.set(Budget::Ratio(1.3), 10);
    assert_eq!(s.admit(0, 0.5, [1.0; 100]), 10, "switched on: a full bucket of top_n");
}

/// The believed expiry of `ticker`'s `module` copy, seconds after `start`.
fn expiry(m: &Model, ticker: &str, module: &str, start: chrono::DateTime<chrono::Utc>) -> u32 {
    use prefetch_contract::contract::{Module, Ticker};
    let tid = m.tickers.id(&Ticker::parse(ticker).unwrap()).unwrap();
    let mid = m.modules.id(&Module::parse(module).unwrap()).unwrap();
    let s0 = crate::profile::to_secs(start).unwrap();
    m.cache.as_ref().unwrap().expires(tid, mid).unwrap() - s0
}

#[test]
fn tickers_held_back_by_a_tick_are_neither_paid_for_nor_noted_as_warmed() {
    // The analyzer holds back the tickers of a partition it is still restoring. Dropping them
    // after the tick (as it did) left the budget paying for warms nobody made and the cache
    // view believing copies nobody stored.
    use crate::tests::ev;
    let (mut m, start, names) = twenty_keys_on_a_rate_budget(60.0);
    let at = |s: i64| start + chrono::Duration::seconds(s);
    let held: std::collections::HashSet<_> =
        names[..8].iter().map(|n| prefetch_contract::contract::Ticker::parse(n).unwrap()).collect();
    let mut published = Vec::new();
    for s in 0..=85 {
        if s % 5 == 0 {
            published = m.tick_holding(at(s), &held);
        }
        if s <= 15 {
            for n in &names {
                m.record(&ev(n, "price", at(s), None));
            }
        }
    }
    // At 85 s every copy is due; the budget (a minute's worth: 60) pays for all but the held.
    assert_eq!(published.len(), 12, "{published:?}");
    assert!(published.iter().all(|p| !held.contains(&p.ticker)), "{published:?}");
    for n in &names {
        let want = if held.contains(&prefetch_contract::contract::Ticker::parse(n).unwrap()) {
            90
        } else {
            179 // refreshed at 89 s: deferred to 1 s before the live copy's expiry
        };
        assert_eq!(expiry(&m, n, "price", start), want, "{n}");
    }
    let st = m.spend_status();
    assert_eq!((st.warms, st.refused), (12, 0), "held keys are not spent nor refused: {st:?}");
    assert_eq!(m.counters().predictions_tick, 12);
}

#[test]
fn a_follow_up_held_back_by_recent_is_neither_paid_for_nor_noted_as_warmed_again() {
    // Clients move from AAPL news to MSFT price; a follow-up published moments ago is not
    // published again (`Recent`), so it must not spend a token nor restart the copy's life.
    use crate::tests::{ev, utc};
    use crate::{CacheTtls, ModelConfig};
    let mut m = Model::new(ModelConfig::default()).unwrap();
    // Copies live 20 s: never fresh beyond the follow-up lead, so only Recent holds back.
    m.set_cache_ttls(CacheTtls { per_module: Default::default(), default_s: 20 });
    m.set_budget(Budget::Ratio(1.3));
    let start = utc(2026, 1, 6, 15, 0);
    for c in 0..10 {
        let t = start + chrono::Duration::minutes(c);
        let client = format!("client-{c}");
        m.record(&ev("AAPL", "news", t, Some(&client)));
        m.record(&ev("MSFT", "price", t + chrono::Duration::seconds(10), Some(&client)));
    }
    m.tick(start + chrono::Duration::minutes(20));
    let now = start + chrono::Duration::minutes(25);
    let first = m.record(&ev("AAPL", "news", now, Some("a"))).predictions;
    assert!(
        first.iter().any(|p| p.ticker.as_str() == "MSFT" && p.module.as_str() == "price"),
        "{first:?}"
    );
    let warms = m.spend_status().warms;
    let published = m.counters().predictions_sequence;
    assert_eq!(expiry(&m, "MSFT", "price", start), 25 * 60 + 20, "warmed when published");
    // Ten seconds later another client does the same: the follow-up is held back.
    let again = m.record(&ev("AAPL", "news", now + chrono::Duration::seconds(10), Some("b")));
    assert!(again.predictions.is_empty(), "{:?}", again.predictions);
    assert_eq!(m.spend_status().warms, warms, "a held-back follow-up is not spent");
    assert_eq!(m.counters().predictions_sequence, published);
    assert_eq!(
        expiry(&m, "MSFT", "price", start),
        25 * 60 + 20,
        "the copy believed stored at the first publish keeps its expiry"
    );
}

#[test]
fn a_rate_budget_is_the_fleets_each_instance_earns_its_share_of_partitions() {
    // Three analyzers owning 4, 4 and 4 of 12 partitions under 60/min: 20/min each, so
    // together the rate, not three times it.
    let mut fleet: Vec<Spend> = (0..3).map(|_| Spend::new(Budget::PerMinute(60.0), 10)).collect();
    let mut warms = 0;
    for s in &mut fleet {
        s.set_share(4.0 / 12.0);
        warms += s.admit(0, 0.0, [1.0; 100]);
    }
    assert_eq!(warms, 60, "the buckets hold a minute of the fleet's rate together");
    for t in 1..=600u32 {
        for s in &mut fleet {
            warms += s.admit(t, 0.0, [1.0; 5]);
        }
    }
    // Ten minutes at 60/min, plus the minute the buckets started with (rounding: one a bucket).
    assert!((657..=660).contains(&warms), "{warms}");
    let st = fleet[0].status(0.0);
    assert_eq!((st.share, st.within_budget()), (4.0 / 12.0, Some(true)), "{st:?}");
    // A share of none earns nothing; out-of-range shares are clamped.
    let mut idle = Spend::new(Budget::PerMinute(60.0), 10);
    idle.set_share(-1.0);
    idle.admit(0, 0.0, [1.0; 100]);
    assert_eq!(idle.admit(600, 0.0, [1.0; 100]), 0);
}

#[test]
fn without_a_cache_view_each_miss_is_a_call_of_no_warming() {
    // Refresh-ahead off: no view of the cache, so nothing tells a shifted miss from a saved one;
    // a miss earns `r − 1` as a call no warming would make too (a budget that only paid for
    // misses would never publish: the analyzer's shutdown test caught it).
    let mut m = Model::new(crate::ModelConfig::default()).unwrap();
    m.set_budget(Budget::Ratio(1.3));
    let start = crate::tests::utc(2026, 3, 10, 14, 0);
    for i in 0..100 {
        m.record(&crate::tests::ev("T", "price", start + chrono::Duration::seconds(i), None));
    }
    let st = m.spend_status();
    assert_eq!((st.demand_fetches, st.no_warming_fetches), (100, 100));
    assert!(st.tokens > 10.0, "the bucket filled from its start: {st:?}");
}
