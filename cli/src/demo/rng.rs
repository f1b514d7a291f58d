//! A small seeded random number generator and the Zipf sampler.
//!
//! The generator is written out here rather than taken from `rand` so that a seed means the same
//! trace on every build: backtests (issue #7) compare runs over logs regenerated from a seed, and
//! a dependency upgrade must not silently change them.

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64 so that nearby seeds give
/// unrelated streams.
#[derive(Debug, Clone)]
pub(crate) struct Rng([u64; 4]);

impl Rng {
    /// A stream for `seed`, separated from other streams of the same seed by `stream`.
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        let mut sm = seed ^ stream.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Uniform index in [0, n); `n` must be positive.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        // Lemire's multiply-shift; the bias for the small n used here is far below 2^-40.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// An exponential variate with the given mean.
    pub(crate) fn exp(&mut self, mean: f64) -> f64 {
        // 1 - f64() lies in (0, 1], so the logarithm is finite.
        -mean * (1.0 - self.f64()).ln()
    }

    /// Picks an index by weight; `weights` must not be empty and must sum to more than zero.
    pub(crate) fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.f64() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// Ranks 0..n drawn with probability proportional to `1 / (rank + 1)^s`.
#[derive(Debug, Clone)]
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += (k as f64).powf(-s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let x = rng.f64();
        self.cdf.partition_point(|c| *c <= x).min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7, 1);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7, 1);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7, 2);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn uniform_and_exponential_means() {
        let mut r = Rng::new(1, 0);
        let n = 100_000;
        let u: f64 = (0..n).map(|_| r.f64()).sum::<f64>() / n as f64;
        let e: f64 = (0..n).map(|_| r.exp(3.0)).sum::<f64>() / n as f64;
        assert!((u - 0.5).abs() < 0.01, "uniform mean {u}");
        assert!((e - 3.0).abs() < 0.1, "exponential mean {e}");
        assert!((0..1000).all(|_| r.below(5) < 5));
    }

    #[test]
    fn zipf_follows_its_law() {
        let z = Zipf::new(100, 1.0);
        let mut r = Rng::new(3, 0);
        let mut counts = [0usize; 100];
        for _ in 0..200_000 {
            counts[z.sample(&mut r)] += 1;
        }
        // Rank 1 is asked twice as often as rank 2 and ten times as often as rank 10.
        let ratio2 = counts[0] as f64 / counts[1] as f64;
        let ratio10 = counts[0] as f64 / counts[9] as f64;
        assert!((1.8..2.2).contains(&ratio2), "{ratio2}");
        assert!((8.5..11.5).contains(&ratio10), "{ratio10}");
    }
}
