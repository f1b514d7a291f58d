//! The generator's promises, checked on generated traces (event time only; no clock, no I/O).

use super::*;
use chrono::{DateTime, Duration, TimeZone, Utc};
use prefetch_common::contract::QueryEvent;
use std::collections::HashMap;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A lighter trace than the CLI default, so debug-build tests stay quick.
fn light(start: &str, duration: Duration) -> Params {
    Params {
        start: utc(start),
        duration,
        seed: 11,
        tickers: 300,
        zipf_s: 1.1,
        rate: 4.0,
        dashboards: 6,
        sessions_per_hour: 120.0,
        bursts_per_day: 3.0,
        shape: Shape::default(),
    }
}

fn tagged(p: &Params) -> Vec<(QueryEvent, Origin)> {
    let mut g = Generator::new(p).unwrap();
    std::iter::from_fn(|| g.next_with_origin()).collect()
}

fn count_between(events: &[(QueryEvent, Origin)], from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
    events.iter().filter(|(e, _)| e.ts >= from && e.ts < to).count()
}

#[test]
fn same_seed_same_events_other_seed_other_events() {
    let p = light("2026-03-09T13:00:00Z", Duration::hours(6));
    let a = generate(&p).unwrap();
    let b = generate(&p).unwrap();
    assert!(a.len() > 10_000, "{}", a.len());
    assert_eq!(a, b);
    let c = generate(&Params { seed: 12, ..p }).unwrap();
    assert_ne!(a, c);
    assert_ne!(a[..100], c[..100], "the streams differ from the start, not only somewhere");
}

#[test]
fn events_are_ordered_in_range_valid_and_canonical() {
    let p = light("2026-03-09T04:00:00Z", Duration::days(1));
    let events = generate(&p).unwrap();
    assert!(events.windows(2).all(|w| w[0].ts <= w[1].ts), "timestamps go backwards");
    let far_future = utc("2100-01-01T00:00:00Z");
    for e in &events {
        assert!(e.ts >= p.start && e.ts < p.end(), "{} outside the trace", e.ts);
        assert!(!e.hit && e.client.is_some() && e.latency_ms.is_none());
        assert_eq!(QueryEvent::from_json(&e.to_json(), far_future).as_ref(), Ok(e));
    }
    let modules: std::collections::HashSet<&str> =
        events.iter().map(|e| e.module.as_str()).collect();
    assert_eq!(modules.len(), MODULES.len(), "{modules:?}");
}

#[test]
fn popular_tickers_follow_zipf() {
    let events = tagged(&light("2026-03-09T13:30:00Z", Duration::hours(6)));
    let mut per_ticker: HashMap<&str, usize> = HashMap::new();
    for (e, _) in &events {
        *per_ticker.entry(e.ticker.as_str()).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_ticker.values().copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let (top, median) = (counts[0], counts[counts.len() / 2]);
    assert!(top > 20 * median, "top {top}, median {median}");
    assert_eq!(per_ticker.iter().max_by_key(|(_, n)| **n).map(|(t, _)| *t), Some("AAPL"));
}

#[test]
fn market_hours_are_busy_nights_and_weekends_quiet_and_rate_is_kept() {
    let p = Params { bursts_per_day: 0.0, ..light("2026-03-09T04:00:00Z", Duration::days(1)) };
    let monday = tagged(&p);
    let per_hour = |from: &str, to: &str| {
        let (a, b) = (utc(from), utc(to));
        count_between(&monday, a, b) as f64 / (b - a).num_seconds() as f64 * 3600.0
    };
    let day = per_hour("2026-03-09T14:00:00Z", "2026-03-09T20:00:00Z"); // 10:00–16:00 New York
    let night = per_hour("2026-03-09T06:00:00Z", "2026-03-09T09:00:00Z"); // 02:00–05:00
    let saturday = Params { start: utc("2026-03-14T04:00:00Z"), ..p.clone() };
    let saturday = generate(&saturday).unwrap().len() as f64 / 24.0;
    assert!(day > 5.0 * night, "day {day}/h, night {night}/h");
    assert!(day > 5.0 * saturday, "day {day}/h, Saturday {saturday}/h");
    // --rate is the mean over the regular session (09:30–16:00 New York), all sources included.
    let session = per_hour("2026-03-09T13:30:00Z", "2026-03-09T20:00:00Z") / 3600.0;
    assert!((session / p.rate - 1.0).abs() < 0.1, "{session} events/s for --rate {}", p.rate);
}

#[test]
fn the_open_spike_is_at_0930_new_york_on_both_sides_of_dst() {
    // New York moves from UTC-5 to UTC-4 on 2026-03-08; each window holds 13:30 and 14:30 UTC.
    for (start, open) in [
        ("2026-03-06T13:00:00Z", "2026-03-06T14:30:00Z"),
        ("2026-03-09T13:00:00Z", "2026-03-09T13:30:00Z"),
    ] {
        let p = Params {
            rate: 10.0,
            dashboards: 0,
            bursts_per_day: 0.0,
            ..light(start, Duration::hours(2))
        };
        let events = generate(&p).unwrap();
        let mut per_minute: HashMap<i64, usize> = HashMap::new();
        for e in &events {
            *per_minute.entry(e.ts.timestamp() / 60).or_default() += 1;
        }
        let (busiest, _) = per_minute.iter().max_by_key(|(m, n)| (**n, -**m)).unwrap();
        let busiest = Utc.timestamp_opt(busiest * 60, 0).unwrap();
        let open = utc(open);
        assert!(
            busiest >= open && busiest < open + Duration::minutes(5),
            "busiest minute {busiest}, open {open}"
        );
        let before = count_between_plain(&events, open - Duration::minutes(15), open);
        let after = count_between_plain(&events, open, open + Duration::minutes(15));
        assert!(after > 3 * before, "{open}: {before} events in the 15 min before, {after} after");
    }
}

fn count_between_plain(events: &[QueryEvent], from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
    events.iter().filter(|e| e.ts >= from && e.ts < to).count()
}

#[test]
fn sessions_walk_price_then_chart_for_the_same_ticker_within_minutes() {
    let events = tagged(&light("2026-03-09T13:30:00Z", Duration::hours(6)));
    let mut by_client: HashMap<&str, Vec<&QueryEvent>> = HashMap::new();
    for (e, origin) in &events {
        if *origin == Origin::Session {
            assert!(e.client.as_ref().unwrap().as_str().starts_with("sess-"));
            by_client.entry(e.client.as_ref().unwrap().as_str()).or_default().push(e);
        }
    }
    assert!(by_client.len() > 300, "{} sessions", by_client.len());
    let (mut prices, mut then_chart) = (0, 0);
    for walk in by_client.values() {
        for pair in walk.windows(2) {
            if pair[0].module.as_str() == "price" {
                prices += 1;
                let gap = pair[1].ts - pair[0].ts;
                if pair[1].module.as_str() == "chart"
                    && pair[1].ticker == pair[0].ticker
                    && gap <= Duration::minutes(5)
                {
                    then_chart += 1;
                }
            }
        }
    }
    let share = f64::from(then_chart) / f64::from(prices);
    assert!(share > 0.75, "price → chart (same ticker, ≤ 5 min) in {then_chart} of {prices}");
    assert!(share < 1.0, "analysts never deviate: too regular to be realistic");
}

#[test]
fn dashboards_poll_each_pair_at_its_period() {
    let events = tagged(&light("2026-03-09T04:00:00Z", Duration::days(2)));
    let mut last: HashMap<(&str, &str, &str), DateTime<Utc>> = HashMap::new();
    let (mut on_period, mut gaps) = (0, 0);
    for (e, origin) in &events {
        if *origin != Origin::Dashboard {
            continue;
        }
        let client = e.client.as_ref().unwrap().as_str();
        assert!(client.starts_with("dash-"));
        let period = Duration::from_std(dashboard_period(e.module.as_str()).unwrap()).unwrap();
        if let Some(prev) = last.insert((client, e.ticker.as_str(), e.module.as_str()), e.ts) {
            let gap = e.ts - prev;
            if gap == period {
                on_period += 1;
            } else {
                // Only a board closing for the night may break the rhythm.
                assert!(
                    gap > Duration::hours(10),
                    "{client} {} {}: {gap} after {prev}",
                    e.ticker,
                    e.module
                );
                gaps += 1;
            }
        }
    }
    assert!(last.len() >= 12, "{} dashboard pairs", last.len());
    assert!(
        on_period > 1000 && gaps > 0 && gaps * 50 < on_period,
        "{on_period} on period, {gaps} overnight gaps"
    );
}

#[test]
fn a_burst_ticker_is_far_above_its_baseline_in_its_window() {
    let p = Params { bursts_per_day: 12.0, ..light("2026-03-09T04:00:00Z", Duration::days(1)) };
    let events = tagged(&p);
    let mut windows: HashMap<&str, (DateTime<Utc>, DateTime<Utc>, usize)> = HashMap::new();
    for (e, origin) in &events {
        if *origin == Origin::Burst {
            let w = windows.entry(e.ticker.as_str()).or_insert((e.ts, e.ts, 0));
            w.1 = e.ts;
            w.2 += 1;
        }
    }
    let checked: Vec<_> = windows.iter().filter(|(_, (_, _, n))| *n >= 100).collect();
    assert!(checked.len() >= 3, "{} bursts of 100+ queries: {windows:?}", checked.len());
    let day_s = p.duration.num_seconds() as f64;
    for (ticker, (from, to, _)) in checked {
        let in_window = events
            .iter()
            .filter(|(e, _)| e.ticker.as_str() == *ticker && e.ts >= *from && e.ts <= *to)
            .count();
        let window_s = (*to - *from).num_milliseconds() as f64 / 1000.0;
        let baseline = events
            .iter()
            .filter(|(e, o)| e.ticker.as_str() == *ticker && *o != Origin::Burst)
            .count();
        // At least one everyday query assumed, so a ticker nobody else asked for still compares.
        let baseline_rate = baseline.max(1) as f64 / day_s;
        let burst_rate = in_window as f64 / window_s;
        assert!(
            burst_rate > 20.0 * baseline_rate,
            "{ticker}: {burst_rate}/s in its burst, {baseline_rate}/s all day"
        );
    }
}

#[test]
fn bad_knobs_are_refused_with_the_flag_named() {
    let p = light("2026-03-09T04:00:00Z", Duration::hours(1));
    let low = Generator::new(&Params { rate: 0.5, ..p.clone() }).err().unwrap();
    assert!(matches!(low, ParamsError::RateTooLow { .. }));
    assert!(low.to_string().contains("--rate 0.5"), "{low}");
    for (bad, flag) in [
        (Params { tickers: 0, ..p.clone() }, "--tickers"),
        (Params { zipf_s: f64::NAN, ..p.clone() }, "--zipf-s"),
        (Params { sessions_per_hour: -1.0, ..p.clone() }, "--sessions-per-hour"),
        (Params { duration: Duration::zero(), ..p.clone() }, "--duration"),
    ] {
        let e = Generator::new(&bad).err().unwrap();
        assert!(e.to_string().starts_with(flag), "{e}");
    }
    // Nothing but lookups is fine, and so is a trace of only dashboards.
    let only_lookups =
        Params { dashboards: 0, sessions_per_hour: 0.0, bursts_per_day: 0.0, ..p.clone() };
    assert!(tagged(&only_lookups).iter().all(|(_, o)| *o == Origin::Lookup));
    let only_boards = Params { rate: 0.0, sessions_per_hour: 0.0, bursts_per_day: 0.0, ..p };
    let boards = Generator::new(&only_boards);
    assert!(matches!(boards, Err(ParamsError::RateTooLow { .. })), "6 dashboards need some rate");
}
