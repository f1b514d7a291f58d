//! The cache view (`refresh.rs`): demand fetches, useful warms, the calls of no warming,
//! hit-flag trust, due keys, refresh on hit.

use super::*;
use chrono::{DateTime, Utc};
use prefetch_contract::prediction::{Prediction, Reason};

fn view() -> CacheView {
    let mut v = CacheView::new(CacheTtls {
        per_module: [("price".to_owned(), 60)].into_iter().collect(),
        default_s: 300,
    });
    v.resolve(0, "price");
    v.resolve(1, "chart");
    v
}

#[test]
fn a_producer_that_only_sends_misses_still_gets_refresh_ahead() {
    // 20 tickers queried every second for 75 s, every event `hit: false` (as simple
    // integrations send): the copies the view believes live must not be pushed out by each
    // query, or no key is ever due and nothing is published.
    use crate::tests::{ev, utc};
    let mut m = Model::new(crate::ModelConfig::default()).unwrap();
    m.set_cache_ttls(CacheTtls { per_module: BTreeMap::new(), default_s: 30 });
    let start = utc(2026, 3, 10, 14, 0);
    let mut published = 0;
    for s in 0..75 {
        let at = start + chrono::Duration::seconds(s);
        if s % 5 == 0 {
            published += m.tick(at).len();
        }
        for i in 0..20 {
            published += m.record(&ev(&format!("T{i:02}"), "price", at, None)).predictions.len();
        }
    }
    assert!(
        published >= 20,
        "every key refreshed at least once before its copy expired: {published}"
    );
    // Once the producer has sent a hit, its misses are its word again: a miss on a copy the
    // view believes live is a demand fetch (an eviction) and restarts the copy's life.
    let mut v = view();
    let price = "price";
    v.observe(7, 0, price, (1_000, 0), false);
    v.observe(7, 0, price, (1_010, 0), false);
    assert_eq!(v.expires(7, 0), Some(1_060), "no hit seen yet: the miss did not refetch");
    v.observe(7, 0, price, (1_020, 0), true);
    v.observe(7, 0, price, (1_030, 0), false);
    assert_eq!(v.expires(7, 0), Some(1_090), "flags trusted: the miss was a fetch");
    v.observe(7, 0, price, (1_030 + TRUST_HITS_S + 1, 0), false);
    v.observe(7, 0, price, (1_030 + TRUST_HITS_S + 2, 0), false);
    assert_eq!(
        v.expires(7, 0),
        Some(1_030 + TRUST_HITS_S + 61),
        "no hit for an hour: untrusted again"
    );
}

#[test]
fn the_view_tells_demand_fetches_and_the_first_hit_on_a_warmed_copy() {
    let mut v = view();
    let price = "price";
    let o = v.observe(7, 0, price, (1_000, 0), false);
    assert!(o.demand && !o.useful, "a miss fetched on demand");
    assert!(!v.observe(7, 0, price, (1_010, 0), true).useful, "a demand copy's hit proves no warm");
    v.warmed(8, 0, 1_000, 0);
    let o = v.observe(8, 0, price, (1_020, 0), true);
    assert!(o.useful && !o.demand, "the first hit on a warmed copy");
    assert!(!v.observe(8, 0, price, (1_030, 0), true).useful, "counted once");
    v.warmed(9, 0, 1_000, 0);
    assert!(v.observe(9, 0, price, (1_070, 0), false).demand, "the warm expired unused");
}

#[test]
fn a_refresh_of_a_live_copy_is_proven_only_by_a_hit_the_old_copy_could_not_serve() {
    // A demand copy until 1 060 refreshed at 1 050 (fetched at 1 059, until 1 119): hits before
    // 1 060 were the old copy's; the first hit from 1 060 on is the demand fetch it saved.
    let mut v = view();
    let price = "price";
    v.observe(7, 0, price, (1_000, 0), false);
    v.warmed(7, 0, 1_050, 0);
    assert!(!v.observe(7, 0, price, (1_055, 0), true).useful, "the old copy served it");
    assert!(!v.observe(7, 0, price, (1_059, 0), true).useful, "and this one");
    assert!(v.observe(7, 0, price, (1_060, 0), true).useful, "the old copy was gone");
    assert!(!v.observe(7, 0, price, (1_070, 0), true).useful, "counted once");
    // A refresh of a warm nobody has proven yet keeps that warm's bar: both saved one fetch
    // at most, proven by the first hit after the demand copy they replaced.
    v.observe(8, 0, price, (1_000, 0), false);
    v.warmed(8, 0, 1_050, 0);
    v.warmed(8, 0, 1_100, 0);
    assert!(!v.observe(8, 0, price, (1_058, 0), true).useful);
    assert!(v.observe(8, 0, price, (1_101, 0), true).useful);
    // A warm of a key with no live copy is proven by any hit on it.
    v.observe(9, 0, price, (1_000, 0), false);
    v.warmed(9, 0, 1_200, 0);
    assert!(v.observe(9, 0, price, (1_200, 0), true).useful);
}

#[test]
fn a_refresh_of_a_live_copy_is_fetched_just_before_it_expires() {
    // The warmer defers it (`policy::Decision::WarmAt`); the view must expect the new copy
    // from then, or it falls due a whole lead-and-wait too early and is refreshed again.
    let mut v = view();
    v.observe(7, 0, "price", (1_000, 0), false); // live until 1 060
    v.warmed(7, 0, 1_030, 0);
    assert_eq!(v.copy(7, 0).map(|c| (c.fetched, c.expires)), Some((1_059, 1_119)));
    v.warmed(7, 0, 1_040, 0);
    assert_eq!(v.expires(7, 0), Some(1_119), "a second warm while the first waits: nothing");
    assert_eq!(v.observe(7, 0, "price", (1_045, 0), true).refresh, None, "nor a hit then");
    v.warmed(7, 0, 1_070, 0);
    assert_eq!(v.copy(7, 0).map(|c| (c.fetched, c.expires)), Some((1_118, 1_178)));
    v.warmed(8, 0, 1_030, 0);
    assert_eq!(v.expires(8, 0), Some(1_090), "no live copy: warmed at once");
}

#[test]
fn the_calls_of_no_warming_are_counted_from_query_times_and_ttls_alone() {
    // Price copies live 60 s. A demand fetch at 1 000 (no warming fetches too), a refresh at
    // 1 050 (fetched at 1 059, until 1 119), a query at 1 061: no warming fetches, the warm
    // saved it. At 1 119 the warmed copy is gone but no warming's (fetched at 1 061) lives
    // until 1 121: a miss the warm shifted rather than saved.
    let mut v = view();
    let price = "price";
    let o = v.observe(7, 0, price, (1_000, 0), false);
    assert!(o.demand && o.bare);
    assert!(!v.observe(7, 0, price, (1_030, 0), true).bare, "no warming hits as well");
    assert!(!v.observe(7, 0, price, (1_059, 999), true).bare, "its copy lives until 1 060");
    v.warmed(7, 0, 1_050, 0);
    let o = v.observe(7, 0, price, (1_061, 0), true);
    assert!(o.bare && o.useful && !o.demand, "{o:?}");
    let o = v.observe(7, 0, price, (1_119, 0), false);
    assert!(o.demand && !o.bare, "{o:?}");
    assert!(!v.observe(7, 0, price, (1_120, 999), true).bare, "fresh until 1 121.000");
    assert!(v.observe(7, 0, price, (1_121, 0), true).bare, "no warming's copy expired");
}

#[test]
fn a_copy_is_due_only_when_it_expires_before_the_next_tick() {
    let mut v = view();
    let price = "price";
    v.tick(1_000);
    v.tick(1_005);
    assert_eq!(v.lead, 5);
    let window = |v: &CacheView, now| v.due(7, 0, now).map(|d| d.window);
    assert_eq!(window(&v, 1_005), Some(60), "never fetched: a warm serves a whole TTL");
    v.observe(7, 0, price, (1_000, 0), false);
    v.observe(7, 1, "chart", (1_000, 0), false);
    assert_eq!(
        v.observe(7, 1, "chart", (1_020, 0), true).refresh,
        None,
        "a hit far from the expiry (1 300)"
    );
    assert_eq!(
        v.observe(7, 0, price, (1_020, 0), true).refresh,
        Some(1_060),
        "a hit within a minute of the expiry"
    );
    assert_eq!(window(&v, 1_030), None, "fresh until 1 060, beyond the next tick");
    assert_eq!(window(&v, 1_056), Some(56), "expires at 1 060: a refresh adds 1 116 − 1 060");
    assert_eq!(v.due(7, 0, 1_056), Some(Due { window: 56, age: 56, queries: 2 }));
    assert_eq!(
        v.observe(7, 0, price, (1_055, 0), true).refresh,
        Some(1_060),
        "a hit near the expiry"
    );
    assert_eq!(window(&v, 1_060), Some(60), "expired");
    // A hit on a key believed gone: live now, reconsidered at once.
    v.observe(7, 0, price, (2_000, 0), true);
    assert_eq!(v.expires(7, 0), Some(2_001));
    v.warmed(7, 1, 2_000, 0);
    assert_eq!(v.expires(7, 1), Some(2_300), "chart uses the default TTL");
    v.sweep(2_001 + 86_400, &[], &[]);
    assert_eq!((v.expires(7, 0), v.expires(7, 1)), (None, Some(2_300)));
}

/// A cache as the warmer keeps it, for the model-level tests: expiry per key, from demand
/// fetches and warms alike.
#[derive(Default)]
struct Cache(std::collections::HashMap<(String, String), DateTime<Utc>>);

impl Cache {
    /// Serves a query at `at`: whether it hit; a miss stores a copy for `ttl`.
    fn serve(&mut self, ticker: &str, module: &str, at: DateTime<Utc>, ttl: i64) -> bool {
        let key = (ticker.to_owned(), module.to_owned());
        let hit = self.0.get(&key).is_some_and(|&e| at < e);
        if !hit {
            self.0.insert(key, at + chrono::Duration::seconds(ttl));
        }
        hit
    }

    fn warm(&mut self, p: &Prediction, at: DateTime<Utc>, ttl: i64) {
        self.0.insert(
            (p.ticker.to_string(), p.module.to_string()),
            at + chrono::Duration::seconds(ttl),
        );
    }
}

#[test]
fn a_dashboard_polling_slower_than_its_ttl_is_warmed_just_before_each_poll() {
    // Price copies live 15 s; a dashboard with no client id polls two prices every 120 s and
    // 90 s. Each poll misses without warming, and a poll's rate (one per 120 s) makes a warm at
    // expiry 12% likely to be used, below `min_confidence`: only the period names the moment.
    use crate::tests::{ev, utc};
    let mut m = Model::new(crate::ModelConfig::default()).unwrap();
    m.set_cache_ttls(CacheTtls {
        per_module: [("price".to_owned(), 15)].into_iter().collect(),
        default_s: 300,
    });
    let start = utc(2026, 3, 10, 14, 0);
    let mut cache = Cache::default();
    let polls = [("AAA", 120_000i64, 3_250i64), ("BBB", 90_000, 41_700)];
    let (mut hits, mut late_polls, mut periodic) = (0, 0, 0);
    let mut warmed_ahead = Vec::new();
    // Two hours, ticks every 5 s, events in between in time order.
    for tick in 1..=(2 * 3_600 / 5) {
        let at = start + chrono::Duration::seconds(tick * 5);
        let from = at - chrono::Duration::seconds(5);
        let mut due: Vec<(i64, &str)> = Vec::new();
        for &(ticker, period, offset) in &polls {
            let mut ms = offset;
            while ms < (at - start).num_milliseconds() {
                if ms >= (from - start).num_milliseconds() {
                    due.push((ms, ticker));
                }
                ms += period;
            }
        }
        due.sort_unstable();
        for (ms, ticker) in due {
            let ts = start + chrono::Duration::milliseconds(ms);
            let hit = cache.serve(ticker, "price", ts, 15);
            let mut e = ev(ticker, "price", ts, None);
            e.hit = hit;
            assert!(m.record(&e).predictions.is_empty(), "no client: no follow-up");
            if ts - start > chrono::Duration::minutes(10) {
                late_polls += 1;
                hits += usize::from(hit);
            }
        }
        for p in m.tick(at) {
            if p.reason == Reason::Periodic {
                periodic += 1;
                warmed_ahead.push(p.ticker.to_string());
            }
            cache.warm(&p, at, 15);
        }
    }
    assert!(periodic > 0 && warmed_ahead.iter().all(|t| t == "AAA" || t == "BBB"));
    // After ten minutes of learning, nearly every poll is served from a warmed copy, and the
    // warms were few: about one per poll.
    assert!(hits * 10 >= late_polls * 9, "{hits} of {late_polls} polls hit");
    assert!(periodic <= 140 + 10, "{periodic} periodic warms for 140 polls");
    // The wheel holds the polls to come, not the past.
    let waiting = m.cache.as_ref().map(|v| v.echoes.len());
    assert!(waiting.is_some_and(|n| (1..=4).contains(&n)), "{waiting:?} echoes waiting");
}

/// Polls `ticker`'s price every 120 s (3 s past the minute) for `minutes`, ticking every 5 s
/// from `start`; returns the periodic predictions of the ticks.
fn poll_every_two_minutes(
    m: &mut Model,
    ticker: &str,
    start: DateTime<Utc>,
    minutes: i64,
) -> usize {
    use crate::tests::ev;
    let mut periodic = 0;
    for tick in 1..=(minutes * 60 / 5) {
        let at = start + chrono::Duration::seconds(tick * 5);
        let since = (at - start).num_seconds() - 5;
        let poll = (since + 120 - 3).div_euclid(120) * 120 + 3;
        if poll < since + 5 {
            m.record(&ev(ticker, "price", start + chrono::Duration::seconds(poll), None));
        }
        periodic += m.tick(at).iter().filter(|p| p.reason == Reason::Periodic).count();
    }
    periodic
}

/// The ids of AAA's price.
fn aaa_price(m: &Model) -> (u32, u32) {
    use prefetch_contract::contract::{Module, Ticker};
    let (t, p) = (Ticker::parse("AAA").unwrap(), Module::parse("price").unwrap());
    (m.tickers.id(&t).unwrap(), m.modules.id(&p).unwrap())
}

fn fifteen_second_prices() -> Model {
    let mut m = Model::new(crate::ModelConfig::default()).unwrap();
    m.set_cache_ttls(CacheTtls {
        per_module: [("price".to_owned(), 15)].into_iter().collect(),
        default_s: 300,
    });
    m
}

#[test]
fn a_disabled_model_keeps_no_echoes_waiting() {
    let mut m = fifteen_second_prices();
    m.s.enabled = false;
    let start = crate::tests::utc(2026, 3, 10, 14, 0);
    assert_eq!(poll_every_two_minutes(&mut m, "AAA", start, 120), 0);
    // Sixty polls learnt a period; the wheel holds the next one, not every one past.
    let c = m.cache.as_ref().unwrap();
    let (t, p) = aaa_price(&m);
    assert_eq!(c.copy(t, p).unwrap().cycle.period(), Some(120));
    assert!(c.echoes.len() <= 1, "{} echoes waiting", c.echoes.len());
}

#[test]
fn a_stale_echo_does_not_hide_the_keys_next_poll() {
    let mut m = fifteen_second_prices();
    let start = crate::tests::utc(2026, 3, 10, 14, 0);
    // Nineteen minutes: the last poll at 1_083 s, its echo at 1_203 s waits for the tick at
    // 1_200 s, whose candidates are taken here.
    assert!(poll_every_two_minutes(&mut m, "AAA", start, 19) > 0);
    let (t, p) = aaa_price(&m);
    let wm = crate::profile::to_secs(start).unwrap() + 1_200;
    let view = m.cache.as_mut().unwrap();
    let waiting = view.echoes.take_until(u32::MAX);
    let [(e, key)] = waiting[..] else { panic!("{waiting:?} waiting, one expected") };
    assert_eq!((e, key), (wm + 3, pack(t, p)));
    // An echo of the same key the cycle does not await (a stale phase), due first.
    view.echoes.push(e - 1, key);
    view.echoes.push(e, key);
    let slot = m.keys.slot_of(t, p).unwrap();
    let got = m.echo_candidates(wm, &std::collections::HashSet::new());
    assert_eq!(got.iter().map(|&(s, _)| s).collect::<Vec<_>>(), [slot], "{got:?}");
}

#[test]
fn a_key_ranked_by_its_rate_too_is_warmed_at_its_periods_probability() {
    // With no floor, AAA's price is also ranked by its rate (a poll every 120 s: about 12%
    // likely within a 15 s copy); the warm timed for its next poll is far likelier than that.
    let mut m = fifteen_second_prices();
    m.s.min_confidence = 0.0;
    let start = crate::tests::utc(2026, 3, 10, 14, 0);
    poll_every_two_minutes(&mut m, "AAA", start, 29);
    // The tick before the poll at 1_803 s names it periodic, at the period's precision.
    let at = start + chrono::Duration::seconds(1_800);
    let got: Vec<_> = m.tick(at).into_iter().filter(|p| p.ticker.as_str() == "AAA").collect();
    assert!(
        got.len() == 1 && got[0].reason == Reason::Periodic && got[0].confidence > 0.5,
        "{got:?}"
    );
}
