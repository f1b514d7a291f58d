//! Periodicity: when a key is asked next, not only how often.
//!
//! Dashboards and scheduled jobs poll a key at a fixed period. When the period is longer than
//! the cache's TTL every poll misses, and a rate says nothing useful about it: a key polled
//! every 120 s with copies of 15 s has a 12% chance of a query in any copy's lifetime, so
//! refresh-ahead never warms it, yet each poll comes at a time one can name to the second.
//! [`Cycle`] learns that time per key, from the key's own queries, with no client id needed:
//!
//! - **Period.** The lags from a query to the few before it (a ring of the last four query
//!   times) are candidate periods: the lag that recurs query after query is the period, with up
//!   to four dashboards polling the key at different phases (each query then has one predecessor
//!   exactly a period back, within the ring) and a few other queries in between. A key asked
//!   more often than four times a period is not tracked: its echoes leave the ring before they
//!   fall due, each counts as missed, and the period is dropped (such a key is busy enough for
//!   the tick's ranking and refresh-ahead). A candidate gains support
//!   when a new query has a lag within tolerance of it and loses it otherwise; a candidate with
//!   no support is replaced by another lag, taken from the ring in turn.
//! - **Echoes.** With a period `P` adopted, each query at `t` predicts an echo at `t + P`. When
//!   a later query arrives, every echo that fell due since the previous query is scored: it
//!   came (a query within tolerance of it) or it did not. The share that came, recent echoes
//!   weighing most, is the [`Cycle::precision`] of the period: the probability that a warm timed for an echo is
//!   used, what the tick ranks such a warm by. A period whose echoes mostly fail is dropped for
//!   a candidate that recurs.
//!
//! The model's view of the cache keeps one cycle per key next to its copy
//! ([`crate::refresh::Copy`]), and a wheel of the echoes to come; each tick warms the keys
//! whose echo falls before the next tick and whose copy would not serve it
//! ([`Reason::Periodic`](prefetch_contract::prediction::Reason::Periodic)).
//!
//! A cycle is not part of the analyzer's checkpoint: after a restore it is learnt again from
//! the key's next few queries (three periods).

use super::refresh::{unpack, CacheView};
use super::Model;
use std::collections::{BTreeMap, HashSet};

/// An echo is warmed at the last tick before it, or at the one before that when it falls
/// within this many seconds after the next tick (the warm must reach the cache before the poll).
pub(crate) const ECHO_MARGIN_S: u32 = 2;

/// Shortest period learnt, seconds: shorter ones are served by the copies themselves (no TTL
/// is shorter) and by the tick's ranking.
pub(crate) const MIN_PERIOD_S: u32 = 10;
/// Longest period learnt, seconds (the ring stores lags as `u16`).
pub(crate) const MAX_PERIOD_S: u32 = 6 * 3_600;
/// Support a candidate needs before it is adopted as the period: the same lag in three
/// queries in a row.
const ADOPT: u8 = 2;
/// Most support a candidate can hold (so a changed period takes over within as many queries).
const MAX_SUPPORT: u8 = 8;
/// Each scored echo moves the precision this share of the way to its outcome (an average
/// over the last eight or so, so a dashboard that closes stops being warmed within a dozen
/// missed polls).
const STEP: i32 = 8;
/// A period whose echoes came less often than this, after at least [`DROP_AFTER`] scored
/// echoes, is dropped: the key is not periodic (or no longer), and its queries stop waiting on
/// the wheel. (0.2 was the default `min_confidence` when this was chosen. When that default
/// went to 0.1, 0.1 here was tried on the development set: mean share 0.820 against 0.821.)
const DROP_BELOW: f64 = 0.2;
const DROP_AFTER: u8 = 8;

/// Tolerance of a match against period `p`: a second of rounding plus 2% of drift.
pub(crate) fn tolerance(p: u32) -> u32 {
    1 + p / 50
}

/// What one key's queries say about its period (see the module docs). 20 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cycle {
    /// Latest query time (internal seconds; 0 before the first).
    newest: u32,
    /// Seconds before `newest` of the three queries before it, newest first (0: none).
    ago: [u16; 3],
    /// The adopted period, seconds (0: none).
    period: u16,
    /// The candidate period and its support.
    candidate: u16,
    support: u8,
    /// The share of `period`'s echoes that came, recent ones weighing most, in 1/255.
    hit_rate: u8,
    /// Echoes of `period` scored (saturating).
    scored: u8,
    /// Which lag the next candidate is taken from.
    turn: u8,
}

impl Cycle {
    /// The query times the ring holds, newest first.
    fn times(&self) -> impl Iterator<Item = u32> + '_ {
        let newest = self.newest;
        std::iter::once(newest)
            .filter(|&n| n > 0)
            .chain(self.ago.iter().filter(|&&a| a > 0).map(move |&a| newest - u32::from(a)))
    }

    /// The adopted period, seconds.
    pub fn period(&self) -> Option<u32> {
        (self.period > 0).then_some(u32::from(self.period))
    }

    /// Probability that an echo of the period comes: the share of scored echoes that came, an
    /// exponentially weighted average that starts at one half when the period is adopted.
    pub fn precision(&self) -> f64 {
        f64::from(self.hit_rate) / 255.0
    }

    /// Scores one echo of the period: it came, or it did not.
    fn score(&mut self, came: bool) {
        let target = if came { 255 } else { 0 };
        let p = i32::from(self.hit_rate);
        self.hit_rate = (p + (target - p) / STEP).clamp(0, 255) as u8;
        self.scored = self.scored.saturating_add(1);
    }

    /// Whether the cycle predicts an echo at `e` that has not come yet.
    pub fn awaits(&self, e: u32) -> bool {
        let Some(p) = self.period() else { return false };
        self.newest.saturating_add(tolerance(p)) < e
            && self.times().any(|r| r.saturating_add(p) == e)
    }

    /// A query at `t` (internal seconds). Returns the echo it predicts, if a period is adopted.
    /// Queries in the same second as the latest, or before it, are not polls of a new period
    /// and change nothing.
    pub fn observe(&mut self, t: u32) -> Option<u32> {
        if self.newest == 0 {
            self.newest = t;
            return None;
        }
        if t <= self.newest {
            return None;
        }
        self.score_echoes(t);
        self.learn(t);
        let gap = t - self.newest;
        let shift = |a: u16| {
            let a = u32::from(a) + gap;
            if a == gap || a > u32::from(u16::MAX) {
                0
            } else {
                a as u16
            }
        };
        let gap16 = if gap > u32::from(u16::MAX) { 0 } else { gap as u16 };
        self.ago = [gap16, shift(self.ago[0]), shift(self.ago[1])];
        // (`shift` maps an empty entry, 0, to 0: `a == gap` only when it was 0.)
        self.newest = t;
        self.period().filter(|_| self.precision() >= DROP_BELOW).map(|p| t.saturating_add(p))
    }

    /// Scores the echoes of the adopted period that fell due since the previous query.
    fn score_echoes(&mut self, t: u32) {
        let Some(p) = self.period() else { return };
        let tol = tolerance(p);
        let (mut came, mut failed) = (false, 0u8);
        let times: [Option<u32>; 4] = {
            let mut it = self.times();
            [it.next(), it.next(), it.next(), it.next()]
        };
        for (i, r) in times.into_iter().enumerate() {
            let Some(r) = r else { continue };
            let e = r.saturating_add(p);
            // Due at or before the previous query: scored then.
            if e <= self.newest.saturating_add(tol) {
                continue;
            }
            // Not due yet: scored by a later query, unless this query pushes its time out of
            // the ring (the key is asked more than four times a period), which would leave the
            // echo never scored and the precision frozen: it counts as missed.
            if e > t.saturating_add(tol) {
                if i == times.len() - 1 {
                    failed += 1;
                }
                continue;
            }
            if t.abs_diff(e) <= tol {
                came = true;
            } else {
                failed += 1;
            }
        }
        for _ in 0..failed {
            self.score(false);
        }
        if came {
            self.score(true);
        }
    }

    /// Updates the candidate period with the lags of a query at `t`, and adopts it when it
    /// recurs and the adopted period (if any) does not hold.
    fn learn(&mut self, t: u32) {
        let lags: [Option<u32>; 4] = {
            let mut it =
                self.times().map(|r| t - r).filter(|d| (MIN_PERIOD_S..=MAX_PERIOD_S).contains(d));
            [it.next(), it.next(), it.next(), it.next()]
        };
        let n = lags.iter().flatten().count();
        let c = u32::from(self.candidate);
        if c > 0 && lags.iter().flatten().any(|&d| d.abs_diff(c) <= tolerance(c)) {
            self.support = (self.support + 1).min(MAX_SUPPORT);
        } else if self.support > 0 {
            self.support -= 1;
        } else if n > 0 {
            let d = lags.iter().flatten().nth(usize::from(self.turn) % n).copied().unwrap_or(0);
            self.candidate = d as u16;
            self.turn = self.turn.wrapping_add(1);
        }
        if self.period > 0 && self.scored >= DROP_AFTER && self.precision() < DROP_BELOW {
            // The candidate is most likely the dropped period itself: learning starts over, or
            // it would be adopted again at once.
            self.period = 0;
            self.candidate = 0;
            self.support = 0;
        }
        let holds = self.period == 0 || self.scored < 4 || self.precision() >= 0.5;
        if self.candidate != self.period && self.support >= ADOPT && (self.period == 0 || !holds) {
            self.period = self.candidate;
            self.hit_rate = 128;
            self.scored = 0;
        }
    }
}

/// The wheel of echoes to come: `(ticker, module)` ids (`refresh::pack`) by the time of the poll they
/// expect. An entry is checked when taken (the key may have been queried, warmed or forgotten
/// since), so nothing is ever searched for and removed.
#[derive(Debug, Default)]
pub(crate) struct Echoes {
    due: BTreeMap<u32, Vec<u64>>,
}

impl Echoes {
    /// Expects a poll of `key` at `e`.
    pub fn push(&mut self, e: u32, key: u64) {
        self.due.entry(e).or_default().push(key);
    }

    /// Removes and returns the echoes expected at or before `until`, earliest first.
    pub fn take_until(&mut self, until: u32) -> Vec<(u32, u64)> {
        let later = self.due.split_off(&until.saturating_add(1));
        let taken = std::mem::replace(&mut self.due, later);
        taken.into_iter().flat_map(|(e, keys)| keys.into_iter().map(move |k| (e, k))).collect()
    }

    /// Echoes waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.due.values().map(Vec::len).sum()
    }
}

impl CacheView {
    /// Takes the echoes a tick at `wm` warms: those due before the next tick, or within
    /// [`ECHO_MARGIN_S`] after it.
    fn take_echoes(&mut self, wm: u32) -> Vec<(u32, u64)> {
        self.echoes.take_until(wm.saturating_add(self.lead + ECHO_MARGIN_S))
    }
}

impl Model {
    /// Drops the echoes a tick at `wm` would take, warming none: the model is disabled, and
    /// the wheel must not grow until it is enabled again.
    pub(crate) fn skip_echoes(&mut self, wm: u32) {
        if let Some(view) = self.cache.as_mut() {
            view.take_echoes(wm);
        }
    }

    /// The tick's periodic candidates at `wm`: keys whose next poll falls before the next tick
    /// (or just after it, [`ECHO_MARGIN_S`]), whose copy would not serve that poll and which a
    /// copy stored now would, with the period's precision as the probability that the warm is
    /// used; `(slot, precision)`, earliest poll first, one per key, none of a `held` ticker.
    /// The lazy tick and the full walk both take them in `finish_tick`, so they agree.
    pub(crate) fn echo_candidates(&mut self, wm: u32, held: &HashSet<u32>) -> Vec<(u32, f64)> {
        let Some(view) = self.cache.as_mut() else { return Vec::new() };
        let taken = view.take_echoes(wm);
        let mut out: Vec<(u32, f64)> = Vec::new();
        let mut seen: HashSet<u64> = HashSet::new();
        for (e, key) in taken {
            let (tid, mid) = unpack(key);
            // (A key is marked seen only once it is taken: an echo of it that fails the checks
            // below, e.g. a stale one, must not hide a later one that passes.)
            if e < wm || held.contains(&tid) || seen.contains(&key) {
                continue;
            }
            let Some(c) = view.copy(tid, mid) else { continue };
            let Some(p) = c.cycle.period() else { continue };
            let serves_now = c.expires > e.saturating_add(tolerance(p));
            let warm_lasts = wm.saturating_add(view.ttl(mid)) > e;
            if !c.cycle.awaits(e) || serves_now || !warm_lasts {
                continue;
            }
            if let Some(slot) = self.keys.slot_of(tid, mid) {
                seen.insert(key);
                out.push((slot, c.cycle.precision()));
            }
        }
        debug_assert!(out.iter().all(|&(s, _)| self.keys.slot(s).is_some()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `times` in order; returns the cycle and the echoes it predicted.
    fn feed(times: &[u32]) -> (Cycle, Vec<Option<u32>>) {
        let mut c = Cycle::default();
        let echoes = times.iter().map(|&t| c.observe(t)).collect();
        (c, echoes)
    }

    #[test]
    fn one_poller_is_learnt_within_a_few_polls_and_its_echoes_come() {
        let times: Vec<u32> = (0..20).map(|i| 1_000 + 120 * i).collect();
        let (c, echoes) = feed(&times);
        assert_eq!(c.period(), Some(120));
        assert_eq!(echoes.last(), Some(&Some(1_000 + 120 * 19 + 120)));
        assert!(echoes[..3].iter().all(Option::is_none), "{echoes:?}");
        assert!(c.precision() > 0.9, "{c:?}");
        assert!(c.awaits(1_000 + 120 * 20) && !c.awaits(1_000 + 120 * 19 + 60));
    }

    #[test]
    fn two_pollers_at_different_phases_share_the_period() {
        // Two dashboards polling every 60 s, 17 s apart: the gaps alternate 17 and 43.
        let mut times: Vec<u32> = (0..30).flat_map(|i| [500 + 60 * i, 517 + 60 * i]).collect();
        times.sort_unstable();
        let (c, _) = feed(&times);
        assert_eq!(c.period(), Some(60), "{c:?}");
        assert!(c.precision() > 0.9, "{c:?}");
        let last = *times.last().unwrap();
        // Both phases' next polls are awaited.
        assert!(c.awaits(last + 60 - 17) && c.awaits(last + 60), "{c:?}");
    }

    #[test]
    fn extra_queries_between_polls_do_not_break_the_period() {
        let mut times: Vec<u32> = (0..30).map(|i| 2_000 + 90 * i).collect();
        // A lookup now and then, at no particular time.
        times.extend([2_031, 2_400, 2_777, 3_105, 3_333]);
        times.sort_unstable();
        let (c, _) = feed(&times);
        assert_eq!(c.period(), Some(90), "{c:?}");
        assert!(c.precision() > 0.7, "{c:?}");
    }

    #[test]
    fn irregular_queries_learn_no_reliable_period() {
        // Gaps drawn from a fixed pseudo-random sequence (no lag recurs for long).
        let mut t = 10_000u32;
        let mut x = 12_345u32;
        let times: Vec<u32> = (0..200)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                t += 10 + (x >> 16) % 300;
                t
            })
            .collect();
        let (c, echoes) = feed(&times);
        assert!(c.period().is_none() || c.precision() < 0.5, "{c:?}");
        // Whatever it tried, it does not keep the wheel busy: few of its queries await an echo.
        let waiting = echoes.iter().flatten().count();
        assert!(waiting < times.len() / 5, "{waiting} echoes of {} queries", times.len());
    }

    #[test]
    fn a_period_that_stops_coming_true_is_dropped() {
        // A dashboard polls every 120 s, then closes; lookups go on at no particular time.
        let mut times: Vec<u32> = (0..20).map(|i| 1_000 + 120 * i).collect();
        let (mut t, mut x) = (*times.last().unwrap(), 777u32);
        for _ in 0..100 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            t += 200 + (x >> 16) % 900;
            times.push(t);
        }
        let (c, echoes) = feed(&times);
        assert!(echoes[19].is_some(), "periodic while the dashboard polled");
        assert_eq!(c.period(), None, "{c:?}");
        assert!(echoes[70..].iter().all(Option::is_none), "{echoes:?}");
    }

    #[test]
    fn a_changed_period_takes_over() {
        let mut times: Vec<u32> = (0..20).map(|i| 100 + 60 * i).collect();
        let start = *times.last().unwrap();
        times.extend((1..40).map(|i| start + 150 * i));
        let last = *times.last().unwrap();
        let (c, _) = feed(&times);
        // 150 s or a multiple of it (a lag that recurs just as well: the ring still names the
        // next poll from an older query).
        assert!(c.period().is_some_and(|p| p % 150 == 0), "{c:?}");
        assert!(c.awaits(last + 150) && c.precision() > 0.9, "{c:?}");
    }

    #[test]
    fn a_key_asked_more_than_four_times_a_period_drops_it() {
        // A dashboard polls every 60 s; then the key gets busy, a query every 2 s (a lag too
        // short to be a period): each poll's echo leaves the four-query ring before it falls due.
        let mut times: Vec<u32> = (0..20).map(|i| 1_000 + 60 * i).collect();
        let busy_from = *times.last().unwrap();
        times.extend((1..300).map(|i| busy_from + 2 * i));
        let (c, echoes) = feed(&times);
        assert!(echoes[19].is_some(), "periodic while the dashboard polled");
        assert_eq!(c.period(), None, "{c:?}");
        // Within a couple of dozen busy queries it stops predicting echoes.
        let predicted = echoes[20..].iter().flatten().count();
        assert!(predicted < 30, "{predicted} echoes predicted while busy");
    }

    #[test]
    fn a_dropped_period_is_not_adopted_again_at_once() {
        // A period whose echoes failed, with its candidate still well supported; a query that
        // matches none of its lags drops it.
        let mut c = Cycle {
            newest: 1_000,
            ago: [120, 240, 360],
            period: 120,
            candidate: 120,
            support: MAX_SUPPORT,
            hit_rate: 30,
            scored: DROP_AFTER,
            turn: 0,
        };
        assert_eq!(c.observe(1_060), None);
        assert_eq!(c.period(), None, "{c:?}");
    }

    #[test]
    fn late_and_same_second_queries_change_nothing() {
        let (mut c, _) = feed(&[100, 160, 220, 280, 340]);
        let before = c;
        assert_eq!(c.observe(340), None);
        assert_eq!(c.observe(200), None);
        assert_eq!(c, before);
    }

    #[test]
    fn a_poller_that_stops_scores_its_missed_echo() {
        let times: Vec<u32> = (0..10).map(|i| 1_000 + 120 * i).collect();
        let (mut c, _) = feed(&times);
        let came = c.precision();
        // It stops for an hour, then polls again.
        c.observe(1_000 + 120 * 9 + 3_600);
        assert!(c.precision() < came, "{c:?}");
    }
}
