//! Online calibration: learns, in event time, how often a raw probability came true, and maps
//! raw probabilities to calibrated ones.
//!
//! Sampling: at every multiple of the horizon shifted by the key's phase (a grid in event time
//! fixed per key, its phase a hash of the key — `schedule::phase` — so the keys' samples open
//! spread over the horizon rather than all on one tick) each key of the calibration panel opens
//! one sample holding its raw probability. The first event of the key within the horizon closes
//! it as a hit; reaching the end of the horizon closes it as a miss. Because samples open on a
//! fixed grid, not after the key's own events, they are an unbiased draw of "raw p at an
//! arbitrary time → queried within the horizon?".
//!
//! The panel: every key while at most `schedule::PANEL_KEYS` (8,192) are live; beyond that the
//! keys whose hash level reaches `schedule::panel_level` — a share `2^−k` of them, chosen by a
//! hash of their ids and not by their traffic, so still an unbiased draw — which keeps the
//! samples opened and resolved per horizon near 8,192 however many keys there are. (Sampling
//! every key cost a tick 2/5 of the live keys at a 300 s horizon and 60 s ticks: 31,700 of its
//! 36,400 key visits at 82k keys; BENCHMARKS.md, "Tick cost".)
//!
//! Fitting: outcomes are counted in 20 equal-width bins of the raw probability, one table per
//! hour-weight class (the weight multiplies the intensity, so each class needs its own map).
//! Counts decay with a one-day memory; each bin carries a prior of 20 pseudo-samples at its own
//! raw mean, so a cold model maps raw to (almost) itself. Pool-adjacent-violators makes the map
//! monotone, and it is read by linear interpolation between bin means.

/// Raw-probability bins per class.
pub(crate) const BINS: usize = 20;
/// Pseudo-samples per bin placed at the bin's raw mean.
const PRIOR: f64 = 20.0;
/// Event-time memory of outcome counts, in seconds.
const MEMORY_S: f64 = 86_400.0;
/// Resolution of the raw probability stored with an open sample.
const RAW_STEPS: u16 = 1_000;
/// Encoding stride of one class in a sample cell (`class * STRIDE + quantised raw`).
const STRIDE: u16 = 1_024;

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    hits: f64,
    samples: f64,
    raw_sum: f64,
}

/// Outcome counts and the fitted maps, per hour-weight class.
#[derive(Debug, Clone)]
pub(crate) struct Calibrator {
    cells: Vec<[Cell; BINS]>,
    /// Per class, `(raw mean, calibrated)` points, increasing in both.
    maps: Vec<[(f64, f64); BINS]>,
    decayed_to: Option<u32>,
    resolved: u64,
}

fn bin_of(raw: f64) -> usize {
    ((raw * BINS as f64) as usize).min(BINS - 1)
}

fn center(bin: usize) -> f64 {
    (bin as f64 + 0.5) / BINS as f64
}

impl Calibrator {
    /// A calibrator for `classes` hour-weight classes (at most 25, as validation allows).
    pub fn new(classes: usize) -> Self {
        let identity = std::array::from_fn(|b| (center(b), center(b)));
        Self {
            cells: vec![[Cell::default(); BINS]; classes],
            maps: vec![identity; classes],
            decayed_to: None,
            resolved: 0,
        }
    }

    /// Encodes an open sample: its class and raw probability, in 16 bits.
    pub fn encode(class: u8, raw: f64) -> u16 {
        u16::from(class) * STRIDE + (raw.clamp(0.0, 1.0) * f64::from(RAW_STEPS)).round() as u16
    }

    /// Counts the outcome of a sample opened with [`Calibrator::encode`].
    pub fn resolve(&mut self, cell: u16, hit: bool) {
        let class = usize::from(cell / STRIDE);
        let raw = f64::from(cell % STRIDE) / f64::from(RAW_STEPS);
        if let Some(table) = self.cells.get_mut(class) {
            let c = &mut table[bin_of(raw)];
            c.samples += 1.0;
            c.raw_sum += raw;
            c.hits += if hit { 1.0 } else { 0.0 };
            self.resolved += 1;
        }
    }

    /// Samples resolved since the model started.
    pub fn resolved(&self) -> u64 {
        self.resolved
    }

    /// The outcome counts `(hits, samples, raw sum)` per class and bin, and the time they were
    /// aged to, for a snapshot (`snapshot.rs`).
    pub(crate) fn export(&self) -> (Vec<[[f64; 3]; BINS]>, Option<u32>) {
        let cells = self.cells.iter().map(|t| t.map(|c| [c.hits, c.samples, c.raw_sum])).collect();
        (cells, self.decayed_to)
    }

    /// Replaces the counts with a snapshot's and refits; false (and nothing changed) when the
    /// class count differs.
    pub(crate) fn import(&mut self, cells: &[[[f64; 3]; BINS]], decayed_to: Option<u32>) -> bool {
        if cells.len() != self.cells.len() {
            return false;
        }
        for (table, saved) in self.cells.iter_mut().zip(cells) {
            *table = saved.map(|[hits, samples, raw_sum]| Cell { hits, samples, raw_sum });
        }
        self.decayed_to = decayed_to;
        for (table, map) in self.cells.iter().zip(self.maps.iter_mut()) {
            *map = fit(table);
        }
        true
    }

    /// Ages the counts to `now` and refits every class's map.
    pub fn refit(&mut self, now: u32) {
        if let Some(then) = self.decayed_to {
            let keep = (-(f64::from(now.saturating_sub(then))) / MEMORY_S).exp();
            for c in self.cells.iter_mut().flatten() {
                c.hits *= keep;
                c.samples *= keep;
                c.raw_sum *= keep;
            }
        }
        self.decayed_to = Some(now.max(self.decayed_to.unwrap_or(0)));
        for (table, map) in self.cells.iter().zip(self.maps.iter_mut()) {
            *map = fit(table);
        }
    }

    /// The calibrated probability for a raw one in `class`.
    pub fn map(&self, class: u8, raw: f64) -> f64 {
        let Some(points) = self.maps.get(usize::from(class)) else { return raw };
        let raw = raw.clamp(0.0, 1.0);
        let (x0, y0) = points[0];
        if raw <= x0 {
            // Below the first bin's mean: proportional, so a zero intensity stays zero.
            return y0 * raw / x0;
        }
        for w in points.windows(2) {
            let ((xa, ya), (xb, yb)) = (w[0], w[1]);
            if raw <= xb {
                return ya + (yb - ya) * (raw - xa) / (xb - xa);
            }
        }
        points[BINS - 1].1
    }
}

impl Calibrator {
    /// A factor `K` such that `map(class, r) ≤ K·r` for every raw probability `r`: how much the
    /// map can stretch a probability, and so the rate a warm's probability is computed from
    /// (`score::serve_probability` scales the intensity by `map(r)/r`). A tick bounds what a
    /// warm would serve with it (`lazy.rs`).
    ///
    /// The map is `c·r` below the first bin mean, linear between bin means, and flat above the
    /// last; on a linear piece `(a + b·r)/r` is monotone, so the ratio's largest value is at a
    /// bin mean: `K = max y/x` over the map's points.
    pub fn gain_bound(&self, class: u8) -> f64 {
        let Some(points) = self.maps.get(usize::from(class)) else { return 1.0 };
        points.iter().map(|&(x, y)| y / x.max(1e-12)).fold(0.0, f64::max) * (1.0 + 1e-9)
    }
}

/// Weighted pool-adjacent-violators over the bins, each carrying its prior.
fn fit(table: &[Cell; BINS]) -> [(f64, f64); BINS] {
    let mut xs = [0.0; BINS];
    // (weighted sum of rates, weight, bins pooled)
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(BINS);
    for (b, c) in table.iter().enumerate() {
        let x = (c.raw_sum + PRIOR * center(b)) / (c.samples + PRIOR);
        xs[b] = x;
        let w = c.samples + PRIOR;
        blocks.push((c.hits + PRIOR * x, w, 1));
        while blocks.len() >= 2 {
            let (s1, w1, n1) = blocks[blocks.len() - 1];
            let (s0, w0, n0) = blocks[blocks.len() - 2];
            if s0 / w0 <= s1 / w1 {
                break;
            }
            blocks.pop();
            let last = blocks.len() - 1;
            blocks[last] = (s0 + s1, w0 + w1, n0 + n1);
        }
    }
    let mut out = [(0.0, 0.0); BINS];
    let mut b = 0;
    for (s, w, n) in blocks {
        for _ in 0..n {
            out[b] = (xs[b], s / w);
            b += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cold_calibrator_is_near_identity() {
        let c = Calibrator::new(2);
        for raw in [0.0, 0.01, 0.3, 0.5, 0.77, 0.96] {
            assert!((c.map(0, raw) - raw).abs() < 1e-9, "{raw} -> {}", c.map(0, raw));
        }
        assert_eq!(c.map(9, 0.3), 0.3, "unknown class passes raw through");
    }

    #[test]
    fn learns_an_overconfident_raw_score_per_class() {
        let mut c = Calibrator::new(2);
        c.refit(0);
        // Class 0: raw 0.8 came true only 40% of the time; class 1: 80% as claimed.
        for i in 0..2_000 {
            c.resolve(Calibrator::encode(0, 0.8), i % 5 < 2);
            c.resolve(Calibrator::encode(1, 0.8), i % 5 < 4);
        }
        c.refit(60);
        assert!((c.map(0, 0.8) - 0.4).abs() < 0.02, "{}", c.map(0, 0.8));
        assert!((c.map(1, 0.8) - 0.8).abs() < 0.02, "{}", c.map(1, 0.8));
        // Monotone: a higher raw probability never maps lower.
        let ys: Vec<f64> = (0..=100).map(|i| c.map(0, f64::from(i) / 100.0)).collect();
        assert!(ys.windows(2).all(|w| w[0] <= w[1] + 1e-12), "{ys:?}");
        // A day later e^-1 of the evidence is left, still far more than the prior.
        c.refit(60 + 86_400);
        assert!((c.map(0, 0.8) - 0.4).abs() < 0.05);
        assert_eq!(c.resolved(), 4_000);
        // The gain bound holds at every raw probability, for both learned maps.
        for class in 0..2 {
            let k = c.gain_bound(class);
            for i in 1..2_000 {
                let x = f64::from(i) / 200.0;
                let r = 1.0 - (-x).exp();
                let p = c.map(class, r);
                assert!(p <= k * r * (1.0 + 1e-12), "{class} {x}: {p} vs K {k}");
            }
        }
        assert!(
            (Calibrator::new(1).gain_bound(0) - 1.0).abs() < 0.2,
            "a cold map barely stretches"
        );
    }
}
