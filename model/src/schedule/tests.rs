//! The index's parts: phases crossing, the calibration panel, stale and parked entries.

use super::*;

#[test]
fn crossing_finds_exactly_the_phases_whose_point_passed() {
    let h = 300;
    for (prev, now) in [(1_000, 1_005), (1_000, 1_060), (1_299, 1_301), (7, 7), (0, 5_000)] {
        let mut s = Schedule::default();
        s.rebuild(h as usize, h, 1.0);
        for slot in 0..h {
            s.add(slot, 0.0, None, Sampling { phase: slot, level: 0 }, None);
        }
        let got = s.crossing(prev, now, 0, |slot| Some(Sampling { phase: slot, level: 0 }));
        let want: Vec<u32> = (0..h).filter(|&p| crossed(Some(prev), now, p, h)).collect();
        assert!(want.iter().all(|p| got.contains(p)), "{prev}..{now}: {want:?} ⊄ {got:?}");
        // Whole ring buckets are returned, never far more than the phases that crossed.
        assert!(got.len() <= want.len() + 2, "{prev}..{now}: {} vs {}", got.len(), want.len());
    }
}

#[test]
fn the_panel_is_a_uniform_share_of_keys_and_stays_bounded() {
    // A share 2^-k of the keys has level k or more, whatever their ids.
    let keys: Vec<(u32, u32)> = (0..40_000).flat_map(|t| (0..5).map(move |m| (t, m))).collect();
    for k in 0..8 {
        let share =
            keys.iter().filter(|&&(t, m)| level(t, m) >= k).count() as f64 / keys.len() as f64;
        let want = 0.5f64.powi(k as i32);
        assert!((share / want - 1.0).abs() < 0.1, "level {k}: {share} vs {want}");
    }
    // The panel level keeps the keys that sample at most PANEL_KEYS (every key up to it).
    assert_eq!(panel_level(0, PANEL_KEYS), 0);
    assert_eq!(panel_level(PANEL_KEYS, PANEL_KEYS), 0);
    assert_eq!(panel_level(PANEL_KEYS + 1, PANEL_KEYS), 1);
    assert_eq!(panel_level(100_000, 8_192), 4);
    assert_eq!(panel_level(usize::MAX, 1), LEVELS - 1);
    // Crossing returns only keys of the panel, and all of those whose point passed.
    let (h, panel) = (300, 3);
    let mut s = Schedule::default();
    s.rebuild(keys.len(), h, 1.0);
    let at = |slot: u32| {
        let (t, m) = keys[slot as usize];
        Some(Sampling::of(t, m, h))
    };
    for slot in 0..keys.len() as u32 {
        s.add(slot, 0.0, None, at(slot).unwrap(), None);
    }
    let got = s.crossing(1_000, 1_060, panel, at);
    let want: Vec<u32> = (0..keys.len() as u32)
        .filter(|&slot| at(slot).is_some_and(|a| a.level >= panel))
        .filter(|&slot| crossed(Some(1_000), 1_060, at(slot).unwrap().phase, h))
        .collect();
    assert!(want.iter().all(|w| got.binary_search(w).is_ok()), "a panel key was missed");
    assert!(got.iter().all(|&slot| at(slot).unwrap().level >= panel));
    assert!(got.len() <= want.len() + want.len() / 20, "{} vs {}", got.len(), want.len());
}

#[test]
fn stale_and_parked_entries_come_back_only_when_current() {
    let mut s = Schedule::default();
    s.rebuild(4, 300, 1.0);
    s.push(0, 5.0);
    s.push(1, 3.0);
    s.touched(0, None, None); // key 0 changed: its entry is stale
    s.push(0, 1.0);
    assert_eq!(s.peek().map(|e| e.slot), Some(1));
    let e = s.pop().unwrap();
    s.park(e, 100);
    assert_eq!(s.peek().map(|e| (e.slot, e.bound)), Some((0, 1.0)));
    s.unpark(99);
    assert_eq!(s.peek().map(|e| e.slot), Some(0));
    s.unpark(100);
    assert_eq!(s.peek().map(|e| e.slot), Some(1));
    s.removed(1);
    assert_eq!(s.peek().map(|e| e.slot), Some(0));
    assert_eq!(s.take_dirty(), vec![0]);
    s.expire_at(9, 3);
    s.expire_at(5, 2);
    s.expire_at(5, 3);
    assert_eq!(s.take_expiring(9), vec![2, 3]);
    assert_eq!(s.take_expiring(10), vec![3]);
}
