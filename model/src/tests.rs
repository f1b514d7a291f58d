//! Scenario tests of the whole model, time driven by hand-made timestamps.

use super::patterns::SequenceKind;
use super::*;
use chrono::{Duration, TimeZone};
use prefetch_contract::contract::ClientId;
use prefetch_contract::prediction::Prediction;

pub(super) fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

pub(super) fn ev(
    ticker: &str,
    module: &str,
    ts: DateTime<Utc>,
    client: Option<&str>,
) -> QueryEvent {
    QueryEvent {
        ticker: Ticker::parse(ticker).unwrap(),
        module: Module::parse(module).unwrap(),
        hit: false,
        ts,
        client: client.map(|c| ClientId::parse(c).unwrap()),
        latency_ms: None,
    }
}

/// A config that publishes every live key, so tests can read any key's confidence.
pub(super) fn publish_all() -> ModelConfig {
    ModelConfig { top_n: 100_000, min_confidence: 0.0, ..ModelConfig::default() }
}

fn confidence(preds: &[Prediction], ticker: &str, module: &str) -> Option<(f64, Reason)> {
    preds
        .iter()
        .find(|p| p.ticker.as_str() == ticker && p.module.as_str() == module)
        .map(|p| (p.confidence, p.reason))
}

#[test]
fn dashboard_polling_every_minute_is_predicted_with_high_confidence() {
    let mut m = Model::new(ModelConfig::default()).unwrap();
    // Tuesday 2026-01-06, 10:00–11:00 in New York (EST, UTC−5).
    let start = utc(2026, 1, 6, 15, 0);
    m.record(&ev("MSFT", "news", start, None));
    let mut last = Vec::new();
    for minute in 0..=60 {
        let t = start + Duration::minutes(minute);
        m.record(&ev("AAPL", "price", t, None));
        last = m.tick(t + Duration::seconds(5));
    }
    assert_eq!(last.len(), 1, "only the dashboard key clears 0.5: {last:?}");
    let p = &last[0];
    assert_eq!((p.ticker.as_str(), p.module.as_str()), ("AAPL", "price"));
    assert!(p.confidence >= 0.9, "confidence {}", p.confidence);
    assert_eq!(p.reason, Reason::Popularity);
    assert_eq!(p.horizon_s, 300);
    assert_eq!(p.generated_at, start + Duration::minutes(60) + Duration::seconds(5));
    // The one-off query an hour ago is known but far from likely.
    let news = m
        .explain(&Ticker::parse("MSFT").unwrap(), &Module::parse("news").unwrap(), p.generated_at)
        .unwrap();
    assert!(news.confidence < 0.1, "{news:?}");
}

#[test]
fn a_burst_raises_confidence_and_it_decays_afterwards() {
    let mut m = Model::new(publish_all()).unwrap();
    // Every 20 minutes from 06:00 to 12:00 New York time (11:00–17:00 UTC in January).
    let start = utc(2026, 1, 6, 11, 0);
    let mut t = start;
    let mut out = Vec::new();
    while t < start + Duration::hours(6) {
        if (t - start).num_minutes() % 20 == 0 {
            m.record(&ev("TSLA", "price", t, None));
        }
        out = m.tick(t + Duration::seconds(30));
        t += Duration::minutes(1);
    }
    let (before, _) = confidence(&out, "TSLA", "price").unwrap();
    // 30 queries in one minute.
    for s in 0..30 {
        m.record(&ev("TSLA", "price", t + Duration::seconds(2 * s), None));
    }
    let (during, reason) = confidence(&m.tick(t + Duration::seconds(61)), "TSLA", "price").unwrap();
    assert!(during > before + 0.3, "burst did not raise confidence: {before} -> {during}");
    assert!(during > 0.9, "{during}");
    assert_eq!(reason, Reason::Burst);
    // Silence for 45 minutes (ticking every minute).
    let mut after = during;
    for minute in 2..=45 {
        let (c, _) = confidence(&m.tick(t + Duration::minutes(minute)), "TSLA", "price").unwrap();
        // (The calibration map is refitted every tick, hence a little slack.)
        assert!(
            c <= after + 0.01,
            "confidence rose during silence at minute {minute}: {after} -> {c}"
        );
        after = c;
    }
    assert!(after < during - 0.3, "burst did not decay: {during} -> {after}");
}

#[test]
fn hour_weights_apply_in_market_time_across_dst_and_midnight() {
    // The same history ending at the same UTC clock time, either side of New York's
    // 2026-03-08 switch to daylight time: 13:30 UTC is 08:30 EST (Friday, "21-9" → 0.3) but
    // 09:30 EDT (Monday, "9-11" → 1.5).
    let probe = |now: DateTime<Utc>| {
        let mut m = Model::new(publish_all()).unwrap();
        for minute in (0..30).rev() {
            m.record(&ev(
                "SPY",
                "quote",
                now - Duration::minutes(minute) - Duration::seconds(30),
                None,
            ));
        }
        let preds = m.tick(now);
        let x = m
            .explain(&Ticker::parse("SPY").unwrap(), &Module::parse("quote").unwrap(), now)
            .unwrap();
        let stats = m.patterns_input(now).unwrap();
        (confidence(&preds, "SPY", "quote").unwrap().0, x, stats)
    };
    let (c_est, x_est, s_est) = probe(utc(2026, 3, 6, 13, 30));
    let (c_edt, x_edt, s_edt) = probe(utc(2026, 3, 9, 13, 30));
    assert_eq!((x_est.hour_weight, x_edt.hour_weight), (0.3, 1.5));
    assert_eq!((s_est.market_hour, s_est.market_weekday.as_str()), (8, "Fri"));
    assert_eq!((s_edt.market_hour, s_edt.market_weekday.as_str()), (9, "Mon"));
    assert_eq!((s_est.current_hour_weight, s_edt.current_hour_weight), (0.3, 1.5));
    assert!((x_edt.intensity / x_est.intensity - 5.0).abs() < 1e-6, "{x_est:?} {x_edt:?}");
    assert!(c_edt > c_est + 0.1, "{c_est} vs {c_edt}");
    // Wrap-around: 22:30 EDT Sunday and 08:59 are in "21-9"; 09:00 is not (half-open).
    assert_eq!(probe(utc(2026, 3, 9, 2, 30)).1.hour_weight, 0.3);
    assert_eq!(probe(utc(2026, 3, 9, 12, 59)).1.hour_weight, 0.3);
    assert_eq!(probe(utc(2026, 3, 9, 13, 0)).1.hour_weight, 1.5);
    // 17:00–21:00 is "17-21" → 0.8, whatever the season: 21:30 UTC is 17:30 EDT.
    assert_eq!(probe(utc(2026, 3, 9, 21, 30)).1.hour_weight, 0.8);
}

#[test]
fn sequences_produce_event_driven_predictions() {
    let mut m = Model::new(ModelConfig::default()).unwrap();
    let mut emitted = 0;
    let mut rec = |m: &mut Model, e: QueryEvent| {
        let r = m.record(&e);
        emitted += r.predictions.len() as u64;
        r
    };
    let start = utc(2026, 1, 6, 15, 0);
    // Twenty clients each open a quote page (price) and then its chart 30 s later; the first
    // ten also move on from AAPL to MSFT.
    for c in 0..20 {
        let t = start + Duration::minutes(c);
        let client = format!("client-{c}");
        let ticker = format!("T{c}");
        rec(&mut m, ev(&ticker, "price", t, Some(&client)));
        rec(&mut m, ev(&ticker, "chart", t + Duration::seconds(30), Some(&client)));
        if c < 10 {
            rec(&mut m, ev("AAPL", "news", t + Duration::seconds(40), Some(&client)));
            rec(&mut m, ev("MSFT", "price", t + Duration::seconds(50), Some(&client)));
        }
    }
    m.tick(start + Duration::minutes(20));
    let now = start + Duration::minutes(25);
    let r = rec(&mut m, ev("NVDA", "price", now, Some("newcomer")));
    assert_eq!(r.admission, Admission::OnTime);
    assert_eq!(r.predictions.len(), 1, "{:?}", r.predictions);
    let p = &r.predictions[0];
    assert_eq!(
        (p.ticker.as_str(), p.module.as_str(), p.reason),
        ("NVDA", "chart", Reason::Sequence)
    );
    // A client's first query on price was followed by its chart 20 times in 21 opportunities
    // (this event counts), shrunk by one: about 20/22. The 10 MSFT prices came after another
    // ticker — another place in the session — and do not dilute it.
    assert!(p.confidence > 0.85 && p.confidence < 0.95, "{}", p.confidence);
    assert_eq!((p.generated_at, p.horizon_s), (now, 300));
    // Ticker to ticker: AAPL was followed by MSFT price 10 times out of 10.
    let r = rec(&mut m, ev("AAPL", "news", now, Some("another")));
    assert!(
        r.predictions.iter().any(|p| p.ticker.as_str() == "MSFT" && p.module.as_str() == "price"),
        "{:?}",
        r.predictions
    );
    // No client, no sequence; a chart has no learned follow-up.
    assert!(rec(&mut m, ev("AMD", "price", now, None)).predictions.is_empty());
    assert!(rec(&mut m, ev("AMD", "chart", now, Some("third"))).predictions.is_empty());
    // Every prediction returned was counted; the early clients, before the habit was clear,
    // got none for price → chart (below 0.5).
    assert!(emitted >= 2);
    assert_eq!(m.counters().predictions_sequence, emitted);
    let stats = m.patterns_input(now).unwrap();
    let top = &stats.top_sequences[0];
    assert_eq!(
        (top.kind, top.from.as_str(), top.to.as_str()),
        (SequenceKind::Module, "price", "chart")
    );
    assert!(stats
        .top_sequences
        .iter()
        .any(|s| s.kind == SequenceKind::Ticker && s.from == "AAPL" && s.to == "MSFT:price"));
    // Disabled: still learns, publishes nothing.
    let mut off = Model::new(ModelConfig { enabled: false, ..ModelConfig::default() }).unwrap();
    for c in 0..5 {
        off.record(&ev("X", "price", start + Duration::minutes(c), Some(&c.to_string())));
        off.record(&ev(
            "X",
            "chart",
            start + Duration::minutes(c) + Duration::seconds(5),
            Some(&c.to_string()),
        ));
    }
    assert!(off.record(&ev("Y", "price", now, Some("z"))).predictions.is_empty());
    assert!(off.tick(now).is_empty());
}

#[test]
fn late_events_are_folded_within_the_bound_and_dropped_beyond_it() {
    let mut m = Model::new(ModelConfig::default()).unwrap();
    let now = utc(2026, 1, 6, 15, 0);
    m.record(&ev("IBM", "price", now - Duration::minutes(1), None));
    m.tick(now);
    let ibm = (Ticker::parse("IBM").unwrap(), Module::parse("price").unwrap());
    let count = |m: &Model| m.explain(&ibm.0, &ibm.1, now).map_or(0, |x| x.events_in_window);
    assert_eq!(count(&m), 1);
    // Four minutes behind the watermark: within the 5-minute bound, folded in.
    assert_eq!(
        m.record(&ev("IBM", "price", now - Duration::minutes(4), None)).admission,
        Admission::Late
    );
    assert_eq!(count(&m), 2);
    // Ten minutes behind: dropped and counted, state unchanged; a key seen only late is not created.
    assert_eq!(
        m.record(&ev("IBM", "price", now - Duration::minutes(10), None)).admission,
        Admission::Dropped
    );
    assert_eq!(
        m.record(&ev("ORCL", "price", now - Duration::hours(2), None)).admission,
        Admission::Dropped
    );
    assert_eq!(count(&m), 2);
    assert!(m.explain(&Ticker::parse("ORCL").unwrap(), &ibm.1, now).is_none());
    assert_eq!(
        m.record(&ev("IBM", "price", now + Duration::seconds(1), None)).admission,
        Admission::OnTime
    );
    // Before 2000: outside the model's time range, dropped too.
    assert_eq!(
        m.record(&ev("IBM", "price", utc(1999, 12, 31, 0, 0), None)).admission,
        Admission::Dropped
    );
    let c = m.counters();
    assert_eq!((c.events_on_time, c.events_late, c.events_dropped), (2, 1, 3));
    // The watermark never moves back.
    m.tick(now - Duration::hours(1));
    assert_eq!(m.watermark(), Some(now));
}

#[test]
fn expired_buckets_and_keys_are_dropped_so_memory_stays_bounded() {
    let cfg = ModelConfig { retention_s: 86_400, ..publish_all() };
    let mut m = Model::new(cfg).unwrap();
    let start = utc(2026, 1, 5, 0, 0);
    for i in 0..1_000 {
        let t = start + Duration::seconds(i);
        m.record(&ev(&format!("K{i}"), "price", t, Some(&format!("c{i}"))));
    }
    m.tick(start + Duration::minutes(30));
    let f = m.footprint();
    assert_eq!((f.keys, f.tickers, f.modules, f.clients), (1_000, 1_000, 1, 1_000));
    let bytes_full = f.key_bytes;
    // One key keeps being polled every minute for three days, ticking every minute.
    let mut t = start + Duration::minutes(31);
    let mut max_buckets = 0;
    while t < start + Duration::days(3) {
        m.record(&ev("LIVE", "price", t, Some("poller")));
        m.tick(t);
        max_buckets = max_buckets.max(m.footprint().buckets);
        t += Duration::minutes(1);
    }
    let f = m.footprint();
    assert_eq!((f.keys, f.tickers, f.modules, f.clients), (1, 1, 1, 1), "{f:?}");
    assert_eq!(m.counters().keys_expired, 1_000);
    // A day of one-hour buckets, plus the one the window's edge cuts.
    assert!(max_buckets <= 25 + 1_000, "{max_buckets}");
    assert!(f.buckets <= 25, "{f:?}");
    assert!(f.key_bytes < bytes_full / 4, "{} vs {bytes_full}", f.key_bytes);
    // Expired keys are gone from every view.
    assert!(m
        .explain(&Ticker::parse("K1").unwrap(), &Module::parse("price").unwrap(), t)
        .is_none());
    let stats = m.patterns_input(t).unwrap();
    assert_eq!(stats.total.len(), 1);
    assert!(stats.top_sequences.iter().all(|s| !s.from.starts_with('K')));
}

#[test]
fn history_is_folded_past_the_late_bound_without_predictions_and_rebuilds_the_same_confidence() {
    // The live instance: a dashboard key, then a tick far past its history.
    let start = utc(2026, 1, 6, 15, 0);
    let events: Vec<_> =
        (0..=60).map(|i| ev("AAPL", "price", start + Duration::minutes(i), Some("dash"))).collect();
    let mut live = Model::new(ModelConfig::default()).unwrap();
    for e in &events {
        live.record(e);
    }
    let now = start + Duration::minutes(61);
    let live_preds = live.tick(now);

    // A restarted instance whose watermark is already past the events (it ticked on newer ones).
    let mut rebuilt = Model::new(ModelConfig::default()).unwrap();
    rebuilt.tick(now);
    assert_eq!(
        rebuilt.record(&events[0]).admission,
        Admission::Dropped,
        "the live path drops history"
    );
    for e in &events {
        assert!(rebuilt.record_history(e));
    }
    assert_eq!(rebuilt.counters().events_rebuilt, 61);
    assert_eq!(rebuilt.counters().predictions_sequence, 0, "history publishes nothing");
    let rebuilt_preds = rebuilt.tick(now + Duration::seconds(1));
    let c = |ps: &[Prediction]| confidence(ps, "AAPL", "price").map(|(c, _)| c);
    let (a, b) = (c(&live_preds).unwrap(), c(&rebuilt_preds).unwrap());
    assert!((a - b).abs() < 0.05, "rebuilt confidence {b} vs live {a}");
}

#[test]
fn forgetting_tickers_removes_their_keys_only() {
    let mut m = Model::new(publish_all()).unwrap();
    let t = utc(2026, 1, 6, 15, 0);
    for (tk, md) in [("AAPL", "price"), ("AAPL", "news"), ("MSFT", "price"), ("NVDA", "chart")] {
        m.record(&ev(tk, md, t, None));
    }
    assert_eq!(m.footprint().keys, 4);
    let gone: std::collections::HashSet<Ticker> =
        ["AAPL", "NVDA"].iter().map(|s| Ticker::parse(s).unwrap()).collect();
    assert_eq!(m.forget_tickers(&gone), 3);
    assert_eq!(m.footprint().keys, 1);
    let preds = m.tick(t + Duration::seconds(1));
    assert!(preds.iter().all(|p| p.ticker.as_str() == "MSFT"), "{preds:?}");
    // A forgotten ticker can come back.
    m.record(&ev("AAPL", "price", t + Duration::seconds(2), None));
    assert_eq!(m.footprint().keys, 2);
}

#[test]
fn a_live_reconfiguration_keeps_what_was_learned() {
    let mut m = Model::new(publish_all()).unwrap();
    let start = utc(2026, 1, 6, 15, 0);
    for minute in 0..=30 {
        let t = start + Duration::minutes(minute);
        m.record(&ev("AAPL", "price", t, None));
        m.record(&ev("MSFT", "news", t, None));
    }
    let now = start + Duration::minutes(30) + Duration::seconds(5);
    assert_eq!(m.tick(now).len(), 2);
    // top_n 1 and a threshold: the next tick publishes one key, learned before the change.
    m.reconfigure(ModelConfig { top_n: 1, min_confidence: 0.5, ..publish_all() }).unwrap();
    let preds = m.tick(now + Duration::seconds(5));
    assert_eq!(preds.len(), 1, "{preds:?}");
    assert!(preds[0].confidence > 0.9, "the rates survived the change: {preds:?}");
    // Disabled: still learning, publishing nothing.
    m.reconfigure(ModelConfig { enabled: false, ..publish_all() }).unwrap();
    assert!(m.tick(now + Duration::seconds(10)).is_empty());
    // Settings that shape stored history are refused by name, and the model keeps its config.
    let err = m.reconfigure(ModelConfig { retention_s: 86_400, ..publish_all() }).unwrap_err();
    assert_eq!(err.field, "retention_s");
    assert!(!m.config().enabled);
    // A new time zone and horizon apply; predictions carry the new horizon.
    m.reconfigure(ModelConfig {
        market_tz: "Europe/London".into(),
        horizon_s: 60,
        ..publish_all()
    })
    .unwrap();
    let preds = m.tick(now + Duration::seconds(15));
    assert!(!preds.is_empty() && preds.iter().all(|p| p.horizon_s == 60), "{preds:?}");
}
