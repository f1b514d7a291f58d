//! Snapshots (`snapshot.rs`): round trips, the version-1 format, refusal of malformed input.

use super::super::tests::{ev, publish_all, utc};
use super::*;
use crate::config::ModelConfig;
use chrono::Duration;

fn names(ts: &[&str]) -> HashSet<Ticker> {
    ts.iter().map(|t| Ticker::parse(t).unwrap()).collect()
}

/// A model fed A and B, snapshotted for A and restored into a fresh model, holds and
/// predicts A exactly as a model fed only A's events does.
#[test]
fn a_restored_snapshot_equals_the_state_it_was_taken_from() {
    let mut full = Model::new(publish_all()).unwrap();
    let mut only_a = Model::new(publish_all()).unwrap();
    let start = utc(2026, 1, 5, 15, 0);
    for i in 0..3_000i64 {
        let t = start + Duration::minutes(i * 7 % 5_000) + Duration::seconds(i % 13);
        let module = ["price", "chart", "news"][i as usize % 3];
        let a = ev("AAPL", module, t, None);
        full.record(&a);
        only_a.record(&a);
        full.record(&ev("MSFT", module, t, None));
        if i % 500 == 0 {
            full.tick(t);
            only_a.tick(t);
        }
    }
    let bytes = full.snapshot(&names(&["AAPL"]));
    let mut restored = Model::new(publish_all()).unwrap();
    let r = restored.restore(&bytes).unwrap();
    assert_eq!(r.keys, 3);
    assert!(r.calibration, "a fresh model takes the calibration tables");
    let mut want = only_a.window_counts();
    let mut got = restored.window_counts();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(got.iter().map(|c| c.2).sum::<u64>() > 1_000, "{got:?}");
    let now = start + Duration::minutes(5_001);
    let (t, m) = (Ticker::parse("AAPL").unwrap(), Module::parse("chart").unwrap());
    let (a, b) = (only_a.explain(&t, &m, now).unwrap(), restored.explain(&t, &m, now).unwrap());
    assert!((a.rate_recent - b.rate_recent).abs() < 1e-12, "{a:?} vs {b:?}");
    assert!((a.rate_popular - b.rate_popular).abs() < 1e-12, "{a:?} vs {b:?}");
    assert!(
        (a.confidence - b.confidence).abs() < 0.05,
        "calibration restored with the keys: {a:?} vs {b:?}"
    );
    // Gap encoding: 3 keys of ~1,000 events in ~800 hourly buckets each, far below 8 bytes
    // a bucket.
    let buckets = restored.footprint().buckets;
    let calibration = restored.calibrator.export().0.len() * BINS * 24;
    let fixed = 32 + calibration + 3 * 32;
    assert!(bytes.len() < fixed + buckets * 3, "{} bytes for {buckets} buckets", bytes.len());
}

#[test]
fn a_bad_snapshot_changes_nothing_and_says_why() {
    let mut m = Model::new(ModelConfig::default()).unwrap();
    m.record(&ev("AAPL", "price", utc(2026, 1, 5, 15, 0), None));
    let bytes = m.snapshot(&names(&["AAPL"]));
    let mut fresh = Model::new(ModelConfig::default()).unwrap();
    assert_eq!(fresh.restore(b"nope"), Err(SnapshotError::NotASnapshot));
    assert_eq!(fresh.restore(&bytes[..bytes.len() - 3]), Err(SnapshotError::Truncated));
    let mut v3 = bytes.clone();
    v3[4] = 3;
    assert_eq!(fresh.restore(&v3), Err(SnapshotError::Version(3)));
    let mut other =
        Model::new(ModelConfig { retention_s: 86_400, ..ModelConfig::default() }).unwrap();
    assert!(matches!(
        other.restore(&bytes),
        Err(SnapshotError::Settings { field: "retention_s", .. })
    ));
    assert!(fresh.window_counts().is_empty() && other.window_counts().is_empty());
    assert_eq!(fresh.restore(&bytes).unwrap().keys, 1);
}
fn fixture_ttls() -> crate::CacheTtls {
    crate::CacheTtls {
        per_module: [("price".to_owned(), 60)].into_iter().collect(),
        default_s: 600,
    }
}

/// The model behind `testdata/snapshot_v1.bin`: two tickers × three modules over a week,
/// hourly and busier buckets, late events, a gap of days, refresh-ahead's cache view.
fn fixture_model() -> Model {
    let mut m = Model::new(publish_all()).unwrap();
    m.set_cache_ttls(fixture_ttls());
    let start = utc(2026, 1, 5, 0, 0);
    for i in 0..2_000i64 {
        let module = ["price", "chart", "news"][i as usize % 3];
        // Mostly one event every ~5 minutes; a burst of 300 in one hour; a 3-day gap.
        let minutes = if (600..900).contains(&i) { 3_000 + i / 10 } else { i * 5 + i % 7 };
        let minutes = if i > 1_500 { minutes + 3 * 1_440 } else { minutes };
        let t = start + Duration::minutes(minutes) + Duration::seconds(i * 13 % 60);
        m.record(&ev("AAPL", module, t, None));
        if i % 4 == 0 {
            let mut late = ev("MSFT", module, t - Duration::minutes(3), None);
            late.hit = i % 8 == 0;
            m.record(&late);
        }
        if i % 97 == 0 {
            m.tick(t);
        }
    }
    m
}

/// The copies in `testdata/snapshot_v1.bin`, sorted: `ticker/module fetched expires queries
/// proves_from bare bare_ms` (internal seconds).
const V1_COPIES: [&str; 6] = [
    "AAPL/chart 821745547 821746147 1 proven 821746147 0",
    "AAPL/news 821744861 821745461 1 proven 821745461 0",
    "AAPL/price 821745234 821745294 1 proven 821745294 0",
    "MSFT/chart 821744308 821744908 1 proven 821744908 0",
    "MSFT/news 821741864 821742464 1 proven 821742464 0",
    "MSFT/price 821743296 821743297 1 proven 821743297 0",
];

/// `testdata/snapshot_v1.bin` was written by the version-1 build (commit e5994d6) from
/// [`fixture_model`]: it still restores, to the state this build holds for the same events.
#[test]
fn a_version_1_checkpoint_still_restores() {
    let v1: &[u8] = include_bytes!("../testdata/snapshot_v1.bin");
    assert_eq!(u16::from_le_bytes([v1[4], v1[5]]), 1);
    let mut want = fixture_model();
    let mut got = Model::new(publish_all()).unwrap();
    got.set_cache_ttls(fixture_ttls());
    let r = got.restore(v1).unwrap();
    assert_eq!(r.keys, 6);
    assert!(r.calibration);
    let (mut a, mut b) = (want.window_counts(), got.window_counts());
    a.sort();
    b.sort();
    assert_eq!(a, b);
    let all = names(&["AAPL", "MSFT"]);
    // The v1 build learnt its calibration from these events under the old sampling rule
    // (a sample of a key with an event past the tick now settles at once:
    // `KeyState::open_sample`), so only the restored counts can be compared with the
    // file's: they restore whole, and the fixture's samples count within a few of them.
    let (restored, _) = got.calibrator.export();
    let (learnt, _) = want.calibrator.export();
    let samples = |c: &[[[f64; 3]; BINS]]| c.iter().flatten().map(|x| x[1]).sum::<f64>();
    let (v1_samples, now_samples) = (samples(&restored), samples(&learnt));
    assert!(v1_samples > 10.0, "the v1 calibration restored: {v1_samples} samples");
    assert!(
        (v1_samples - now_samples).abs() <= 0.1 * now_samples,
        "{v1_samples} samples restored against {now_samples} learnt now"
    );
    let (cells, decayed_to) = got.calibrator.export();
    want.calibrator.import(&cells, decayed_to);
    // The copies are what the v1 build believed it had warmed, and restore as it wrote them:
    // golden values read off the file. (This build warms more for the same events — it also
    // warms same-ticker follow-ups of queries naming no client, `sequence.rs` — so its own
    // copies differ from these; a restored copy carries no polling period, `cycle.rs`.)
    let mut restored: Vec<String> = got
        .keys
        .iter()
        .map(|k| {
            let c = got.cache.as_ref().unwrap().copy(k.ticker, k.module).unwrap();
            let (t, m) = (got.tickers.name(k.ticker).unwrap(), got.modules.name(k.module).unwrap());
            assert_eq!(c.cycle, Default::default());
            let proves = if c.proves_from == PROVEN {
                "proven".to_owned()
            } else {
                c.proves_from.to_string()
            };
            format!(
                "{t}/{m} {} {} {} {proves} {} {}",
                c.fetched, c.expires, c.queries, c.bare, c.bare_ms
            )
        })
        .collect();
    restored.sort();
    assert_eq!(restored, V1_COPIES);
    // With the v1 copies in the model built now, everything else is the same model.
    let copies = want.cache.as_ref().map_or(0, |v| v.copies_len());
    assert_eq!(got.cache.as_ref().map(|v| v.copies_len()), Some(copies));
    for k in want.keys.iter() {
        let (t, m) = (want.tickers.name(k.ticker).unwrap(), want.modules.name(k.module).unwrap());
        let (gt, gm) = (got.tickers.id(t).unwrap(), got.modules.id(m).unwrap());
        let c = got.cache.as_ref().unwrap().copy(gt, gm).unwrap();
        want.cache.as_mut().unwrap().restore_copy(k.ticker, k.module, c);
    }
    let v2 = want.snapshot(&all);
    // Same buckets, EWMAs, copies and calibration: the same version-2 bytes.
    assert!(got.snapshot(&all) == v2, "restored v1 differs from the model it was taken of");
    assert!(v2.len() < v1.len(), "v2 {} bytes, v1 {}", v2.len(), v1.len());
    let later = utc(2026, 1, 12, 0, 0);
    assert_eq!(got.tick(later), want.tick(later));
}

/// A version-2 snapshot with a malformed token is refused whole.
#[test]
fn malformed_buckets_are_refused() {
    let m = fixture_model();
    let mut bytes = m.snapshot(&names(&["AAPL"]));
    let k = m.keys.iter().next().unwrap();
    let (_, _, entries, tokens) = k.raw_buckets().encoded();
    assert!(entries > 2);
    let at = bytes.windows(tokens.len()).position(|w| w == tokens).unwrap();
    // The last token made an escape with nothing after it.
    bytes[at + tokens.len() - 1] = 0x00;
    let mut fresh = Model::new(publish_all()).unwrap();
    assert_eq!(fresh.restore(&bytes), Err(SnapshotError::Buckets));
    assert!(fresh.window_counts().is_empty());
}
