//! Per-key state over the retention window: sparse count buckets plus two event-time EWMAs.
//!
//! One [`KeyState`] is 64 bytes, its newest bucket included, plus about one byte per older
//! non-empty bucket (delta-coded in `buckets.rs`), so memory grows with live keys times
//! *occupied* buckets, never with the window's full width for a quiet key.
//! Times are seconds since 2000-01-01 UTC as `u32` (see [`super::time`]).

use super::buckets::{Buckets, Iter};

/// Marks a calibration sample slot as free.
pub(crate) const NO_SAMPLE: u32 = u32::MAX;

/// What the model remembers about one `(ticker, module)`.
#[derive(Debug, Clone)]
pub(crate) struct KeyState {
    /// Interned ticker id.
    pub ticker: u32,
    /// Interned module id.
    pub module: u32,
    /// `(bucket index, count)`, oldest first, no zero counts.
    buckets: Buckets,
    /// Exponentially decayed event count with the fast time constant, as of `last`.
    fast: f32,
    /// The same with the slow time constant.
    slow: f32,
    /// Latest event time seen for the key.
    last: u32,
    /// Cached seasonal rate (events/s) and the model's season epoch it was computed in.
    pub season: f32,
    pub season_epoch: u32,
    /// Start of the open calibration sample, or [`NO_SAMPLE`].
    pub sample_at: u32,
    /// Calibration cell (class × bin) of the open sample.
    pub sample_cell: u16,
}

impl KeyState {
    /// Opens a calibration sample at `wm` in `cell` — unless the key already has an event
    /// after `wm`. The model's clock is the slowest active partition's, so a key's own partition
    /// can be ahead of it (a catch-up reads partitions at different speeds): an event within the
    /// horizon settles the sample as a hit now, as it would have folded after the tick; one
    /// beyond the horizon leaves the horizon's outcome unknown, and no sample is taken. (Before
    /// this, such samples waited for an event already folded and resolved as misses: a 10M-event
    /// catch-up learnt confidence 0.29 for keys queried every 2 s.) Returns whether a sample was
    /// left open, to resolve at `wm + horizon`.
    pub fn open_sample(
        &mut self,
        wm: u32,
        horizon: u32,
        cell: u16,
        calibrator: &mut crate::calibration::Calibrator,
    ) -> bool {
        if self.last > wm {
            if self.last - wm <= horizon {
                calibrator.resolve(cell, true);
            }
            return false;
        }
        self.sample_at = wm;
        self.sample_cell = cell;
        true
    }

    pub fn new(ticker: u32, module: u32) -> Self {
        Self {
            ticker,
            module,
            buckets: Buckets::default(),
            fast: 0.0,
            slow: 0.0,
            last: 0,
            season: 0.0,
            season_epoch: u32::MAX,
            sample_at: NO_SAMPLE,
            sample_cell: 0,
        }
    }

    /// Counts one event at `t` in `bucket`. Out-of-order events are folded exactly: an event
    /// older than `last` adds its already-decayed weight instead of moving the clock back.
    pub fn record(&mut self, t: u32, bucket: u32, tau_fast: f32, tau_slow: f32) {
        if t == self.last {
            // Nothing fades within a second (`exp(-0) = 1`): a busy key's events skip both `exp`.
            self.fast += 1.0;
            self.slow += 1.0;
        } else if t > self.last {
            let dt = (t - self.last) as f32;
            self.fast = self.fast * (-dt / tau_fast).exp() + 1.0;
            self.slow = self.slow * (-dt / tau_slow).exp() + 1.0;
            self.last = t;
        } else {
            let age = (self.last - t) as f32;
            self.fast += (-age / tau_fast).exp();
            self.slow += (-age / tau_slow).exp();
        }
        self.buckets.add(bucket);
    }

    /// Drops buckets before `oldest`. Returns true when nothing is left: the key had no event in
    /// the window and should be forgotten.
    pub fn expire(&mut self, oldest: u32) -> bool {
        self.buckets.expire(oldest)
    }

    /// Recent and steady rates in events/s at `now`: the fast and slow EWMAs divided by their
    /// time constants (for a Poisson stream of rate λ both converge to λ).
    pub fn rates(&self, now: u32, tau_fast: f32, tau_slow: f32) -> (f64, f64) {
        let dt = now.saturating_sub(self.last) as f32;
        let fast = self.fast * (-dt / tau_fast).exp() / tau_fast;
        let slow = self.slow * (-dt / tau_slow).exp() / tau_slow;
        (fast as f64, slow as f64)
    }

    /// Seconds from the key's latest event to `now` (at least 1).
    pub fn idle(&self, now: u32) -> u32 {
        now.saturating_sub(self.last).max(1)
    }

    /// The occupied buckets as `(bucket index, count)`, oldest first (decoded on the fly:
    /// an iterator, no longer a slice).
    pub fn buckets(&self) -> Iter<'_> {
        self.buckets.iter()
    }

    /// Occupied buckets.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Events in the window.
    pub fn total(&self) -> u64 {
        self.buckets().map(|(_, n)| u64::from(n)).sum()
    }

    /// The EWMAs and the latest event time, for a snapshot (`snapshot.rs`).
    pub(crate) fn parts(&self) -> (f32, f32, u32) {
        (self.fast, self.slow, self.last)
    }

    /// The compact buckets, for a snapshot.
    pub(crate) fn raw_buckets(&self) -> &Buckets {
        &self.buckets
    }

    /// A key state read back from a snapshot (ids are set by the caller).
    pub(crate) fn restored(buckets: Buckets, fast: f32, slow: f32, last: u32) -> Self {
        Self { buckets, fast, slow, last, ..Self::new(0, 0) }
    }

    /// Heap bytes held beyond the struct itself.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_stays_compact() {
        // The 1M-key memory budget assumes this.
        assert!(std::mem::size_of::<KeyState>() <= 64, "{}", std::mem::size_of::<KeyState>());
    }

    #[test]
    fn steady_stream_rates_converge_to_its_rate() {
        let mut k = KeyState::new(0, 0);
        for i in 0..240u32 {
            k.record(1_000 + i * 60, (1_000 + i * 60) / 3600, 300.0, 3600.0);
        }
        let (fast, slow) = k.rates(1_000 + 239 * 60, 300.0, 3600.0);
        // One event a minute is 1/60 per second; the EWMA sits between its sawtooth extremes.
        assert!((fast * 60.0 - 1.0).abs() < 0.15, "fast {fast}");
        assert!((slow * 60.0 - 1.0).abs() < 0.1, "slow {slow}");
    }

    #[test]
    fn late_event_is_folded_without_moving_the_clock_back() {
        let mut a = KeyState::new(0, 0);
        a.record(10_000, 2, 300.0, 3600.0);
        a.record(9_700, 2, 300.0, 3600.0);
        let mut b = KeyState::new(0, 0);
        b.record(9_700, 2, 300.0, 3600.0);
        b.record(10_000, 2, 300.0, 3600.0);
        let (fa, sa) = a.rates(10_100, 300.0, 3600.0);
        let (fb, sb) = b.rates(10_100, 300.0, 3600.0);
        assert!(
            (fa - fb).abs() < 1e-9 && (sa - sb).abs() < 1e-9,
            "order changed the result: {fa} vs {fb}"
        );
        assert_eq!(a.buckets().collect::<Vec<_>>(), [(2, 2)]);
    }

    #[test]
    fn buckets_stay_sorted_and_expire() {
        let mut k = KeyState::new(0, 0);
        for (t, b) in [(100, 5), (200, 7), (150, 6), (120, 5), (300, 9)] {
            k.record(t, b, 300.0, 3600.0);
        }
        assert_eq!(k.buckets().collect::<Vec<_>>(), [(5, 2), (6, 1), (7, 1), (9, 1)]);
        assert_eq!(k.total(), 5);
        assert!(!k.expire(7));
        assert_eq!(k.buckets().collect::<Vec<_>>(), [(7, 1), (9, 1)]);
        assert!(k.expire(10));
        assert_eq!(k.total(), 0);
    }
}
