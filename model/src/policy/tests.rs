use super::*;
use chrono::TimeZone;
use prefetch_contract::prediction::Reason;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn pred(ticker: &str, module: &str, confidence: f64, generated_at: DateTime<Utc>) -> Prediction {
    Prediction {
        ticker: Ticker::parse(ticker).unwrap(),
        module: Module::parse(module).unwrap(),
        confidence,
        horizon_s: 300,
        generated_at,
        reason: Reason::Popularity,
    }
}

fn no_holdback() -> WarmPolicy {
    WarmPolicy { holdback: 0.0, ..WarmPolicy::default() }
}

/// A ticker in the warmed group under the default 5 % holdback.
fn warmed_ticker(i: usize) -> String {
    (i..)
        .map(|n| format!("T{n}"))
        .find(|t| {
            group_of(&Ticker::parse(t).unwrap(), &Module::parse("price").unwrap(), 0.05)
                == Group::Warmed
        })
        .unwrap()
}

#[test]
fn fnv1a_is_the_published_function_and_stable() {
    // FNV-1a 64 of the empty input is the offset basis; of "a" it is the published vector.
    let h = |s: &[u8]| {
        s.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        })
    };
    assert_eq!(h(b"a"), 0xaf63_dc4c_8601_ec8c);
    let (t, m) = (Ticker::parse("AAPL").unwrap(), Module::parse("price").unwrap());
    assert_eq!(key_hash(&t, &m), h(b"AAPL\0price"));
}

#[test]
fn holdback_share_is_honoured_and_extremes_are_exact() {
    let m = Module::parse("price").unwrap();
    let tickers: Vec<Ticker> =
        (0..20_000).map(|i| Ticker::parse(&format!("K{i}")).unwrap()).collect();
    let held = tickers.iter().filter(|t| group_of(t, &m, 0.05) == Group::Holdback).count();
    assert!((800..1200).contains(&held), "about 5 % of 20 000, got {held}");
    assert!(tickers.iter().all(|t| group_of(t, &m, 0.0) == Group::Warmed));
    assert!(tickers.iter().all(|t| group_of(t, &m, 1.0) == Group::Holdback));
    // Growing the share only moves keys into the holdback, never out.
    assert!(tickers
        .iter()
        .filter(|t| group_of(t, &m, 0.05) == Group::Holdback)
        .all(|t| group_of(t, &m, 0.10) == Group::Holdback));
}

#[test]
fn schedule_follows_market_time_across_dst() {
    let s = Schedule {
        tz: chrono_tz::America::New_York,
        hours: Some((
            NaiveTime::from_hms_opt(9, 30, 0).unwrap(),
            NaiveTime::from_hms_opt(16, 0, 0).unwrap(),
        )),
        weekdays: Some(vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri]),
    };
    // Winter (EST, UTC-5): 09:30 local is 14:30 UTC.
    assert!(!s.is_active(at("2026-01-12T14:29:59Z")));
    assert!(s.is_active(at("2026-01-12T14:30:00Z")));
    assert!(s.is_active(at("2026-01-12T20:59:59Z")));
    assert!(!s.is_active(at("2026-01-12T21:00:00Z")));
    // Summer (EDT, UTC-4): 09:30 local is 13:30 UTC.
    assert!(s.is_active(at("2026-07-13T13:30:00Z")));
    assert!(!s.is_active(at("2026-07-13T20:00:00Z")));
    // The day after the spring-forward switch (Sunday 2026-03-08): Monday 09:30 EDT = 13:30 UTC.
    assert!(s.is_active(at("2026-03-09T13:30:00Z")));
    assert!(!s.is_active(at("2026-03-09T13:29:00Z")));
    // Saturday 15:00 local: inside the hours, but not a weekday.
    assert!(!s.is_active(at("2026-01-17T20:00:00Z")));
    // 01:00 UTC Tuesday is still Monday evening in New York: weekday read locally, hours off.
    assert!(!s.is_active(at("2026-01-13T01:00:00Z")));
    let overnight = Schedule {
        hours: Some((
            NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            NaiveTime::from_hms_opt(2, 0, 0).unwrap(),
        )),
        weekdays: None,
        ..s
    };
    assert!(overnight.is_active(at("2026-01-13T04:00:00Z"))); // 23:00 local
    assert!(!overnight.is_active(at("2026-01-13T08:00:00Z"))); // 03:00 local
}

#[test]
fn plan_applies_each_rule_and_the_budget_by_confidence() {
    let now = at("2026-03-09T14:30:00Z");
    let policy = WarmPolicy { top_n: 2, min_confidence: 0.5, ..no_holdback() };
    let preds = vec![
        pred("A", "price", 0.9, now),
        pred("B", "price", 0.4, now), // below min_confidence
        pred("C", "price", 0.8, now), // cached long enough
        pred("D", "price", 0.7, now),
        pred("E", "price", 0.6, now),  // beyond top_n
        pred("A", "price", 0.55, now), // duplicate of the first
        pred("F", "price", 0.99, now - chrono::Duration::minutes(10)), // horizon passed
    ];
    let cached = |k: &Key| (k.ticker.as_str() == "C").then(|| now + chrono::Duration::minutes(6));
    let d = plan(&policy, &preds, now, Trigger::Operator, cached);
    use Decision::*;
    assert_eq!(
        d,
        vec![
            Warm,
            Skip(Outcome::SkippedConfidence),
            Skip(Outcome::SkippedFresh),
            Warm,
            Skip(Outcome::DroppedBudget),
            Skip(Outcome::SkippedDuplicate),
            Skip(Outcome::SkippedStale)
        ]
    );
    // An entry expiring inside the horizon does not count as fresh: it is refreshed, just
    // before it expires.
    let four = now + chrono::Duration::minutes(4);
    let short = |k: &Key| (k.ticker.as_str() == "C").then_some(four);
    assert_eq!(
        plan(&policy, &preds[2..3], now, Trigger::Published, short),
        vec![WarmAt(four - REFRESH_LEAD)]
    );
}

#[test]
fn a_published_refresh_of_a_live_entry_waits_for_its_expiry() {
    // Fetching a 30 s price copy's refresh 5 s early (at the tick, or the hit, that decided it)
    // cost a sixth of every refreshed copy's life.
    let now = at("2026-03-09T14:30:00Z");
    let preds = vec![
        pred("A", "price", 0.9, now), // live for 20 s more: deferred
        pred("B", "price", 0.9, now), // not cached: now
        pred("C", "price", 0.9, now), // expires within the lead: now
        pred("D", "price", 0.9, now), // expired: now
    ];
    let secs = chrono::Duration::seconds;
    let expiry = |k: &Key| match k.ticker.as_str() {
        "A" => Some(now + secs(20)),
        "C" => Some(now + REFRESH_LEAD),
        "D" => Some(now - secs(3)),
        _ => None,
    };
    use Decision::*;
    assert_eq!(
        plan(&no_holdback(), &preds, now, Trigger::Published, expiry),
        vec![WarmAt(now + secs(19)), Warm, Warm, Warm]
    );
    // An operator's warm-up fetches at once.
    assert_eq!(plan(&no_holdback(), &preds, now, Trigger::Operator, expiry), vec![Warm; 4]);
    // When its time comes: due unless a copy stored meanwhile outlives it by more than the lead.
    let due = now + secs(19);
    assert!(refresh_still_due(Some(now + secs(20)), due), "the copy it refreshes");
    assert!(refresh_still_due(None, due), "the copy is gone");
    assert!(!refresh_still_due(Some(due + secs(30)), due), "a demand fetch refreshed it");
}

#[test]
fn disabled_off_hours_and_holdback_fetch_nothing() {
    let now = Utc.with_ymd_and_hms(2026, 1, 17, 15, 0, 0).unwrap(); // a Saturday
    let preds: Vec<_> = (0..5).map(|i| pred(&warmed_ticker(i * 7), "price", 0.9, now)).collect();
    let off = WarmPolicy { enabled: false, ..WarmPolicy::default() };
    assert!(plan(&off, &preds, now, Trigger::Published, |_| None)
        .iter()
        .all(|d| *d == Decision::Skip(Outcome::SkippedDisabled)));
    let weekdays = WarmPolicy {
        schedule: Schedule { weekdays: Some(vec![Weekday::Mon]), ..Schedule::always() },
        ..WarmPolicy::default()
    };
    assert!(plan(&weekdays, &preds, now, Trigger::Published, |_| None)
        .iter()
        .all(|d| *d == Decision::Skip(Outcome::SkippedOffHours)));
    assert!(
        plan(&weekdays, &preds, now, Trigger::Operator, |_| None)
            .iter()
            .all(|d| *d == Decision::Warm),
        "warm-up ignores the schedule"
    );
    let all_held = WarmPolicy { holdback: 1.0, ..WarmPolicy::default() };
    assert!(plan(&all_held, &preds, now, Trigger::Published, |_| None)
        .iter()
        .all(|d| *d == Decision::Skip(Outcome::SkippedHoldback)));
}

#[test]
fn twenty_synchronised_predictions_are_all_warmed_whatever_top_n() {
    // 20 refresh predictions the analyzer published together (it budgeted every one and its
    // cache view assumes each was warmed): a warmer `top_n` of 10 must not drop half of them.
    let now = at("2026-03-09T14:30:00Z");
    let policy = WarmPolicy { top_n: 10, ..no_holdback() };
    let preds: Vec<_> = (0..20)
        .map(|i| pred(&format!("T{i:02}"), "price", 0.6 + f64::from(i) / 100.0, now))
        .collect();
    let published = plan(&policy, &preds, now, Trigger::Published, |_| None);
    assert_eq!(published, vec![Decision::Warm; 20]);
    // An operator's warm-up is still capped by top_n, highest confidence first.
    let operator = plan(&policy, &preds, now, Trigger::Operator, |_| None);
    assert_eq!(operator.iter().filter(|d| **d == Decision::Warm).count(), 10);
    assert!(operator[10..].iter().all(|d| *d == Decision::Warm), "the 10 most confident");
    assert!(operator[..10].iter().all(|d| *d == Decision::Skip(Outcome::DroppedBudget)));
}

#[test]
fn nan_confidence_is_never_warmed() {
    let now = at("2026-03-09T14:30:00Z");
    assert_eq!(
        plan(&no_holdback(), &[pred("A", "price", f64::NAN, now)], now, Trigger::Published, |_| {
            None
        }),
        vec![Decision::Skip(Outcome::SkippedConfidence)]
    );
}
