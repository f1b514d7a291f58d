//! `prefetch-bench hash`: can clients who choose tickers slow the analyzer's fold by crafting
//! hash collisions?
//!
//! Tickers come from clients, and the analyzer interns every event's ticker in a hash map
//! (`model/src/keys.rs`, `Interner`). Until the switch to a seeded hasher, that map hashed with
//! `UnseededIdHash` below — the old `IdHash`, copied here byte for byte as the baseline — whose
//! output anyone can compute offline. Tickers whose hashes share their low `--bits` bits start
//! hashbrown's probe at the same group for any table of up to 2^bits buckets, so each lookup
//! walks the whole cluster.
//!
//! The crafted tickers are derived from the hasher itself: candidates `Q00000`, `Q00001`, … are
//! hashed exactly as `Hash for str` feeds a hasher (bytes, then `0xff`) and kept when the low bits
//! are zero; each kept one is checked against `hash_one(&Ticker)`. Then, side by side in one run:
//! - the interner's map (`HashMap<Ticker, u32, H>`, a lookup per event and an insert per new
//!   ticker) under the unseeded hasher and under foldhash with a random per-process seed, each
//!   with the crafted tickers and with as many random ones;
//! - the analyzer's real fold (`Model::record`, with whatever hasher the model is built with)
//!   over the same two ticker sets.

use chrono::{Duration as CDuration, Utc};
use prefetch_common::contract::{Module, QueryEvent, Ticker};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

/// Flags of `prefetch-bench hash`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Crafted tickers (and as many random ones): the distinct keys the fold cycles over.
    #[arg(long, default_value_t = 4096)]
    keys: usize,
    /// Low hash bits every crafted ticker shares under the unseeded hasher (they collide in
    /// every table of up to 2^bits buckets; crafting costs about keys × 2^bits hashes).
    #[arg(long, default_value_t = 16)]
    bits: u32,
    /// Events folded per measurement (cycling over the tickers).
    #[arg(long, default_value_t = 2_000_000)]
    events: usize,
}

/// The analyzer's `IdHash` before the seeded hasher, copied unchanged: the baseline.
#[derive(Clone, Copy, Default)]
struct UnseededIdHash;

struct UnseededIdHasher(u64);

impl BuildHasher for UnseededIdHash {
    type Hasher = UnseededIdHasher;
    fn build_hasher(&self) -> UnseededIdHasher {
        UnseededIdHasher(0)
    }
}

impl Hasher for UnseededIdHasher {
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = self.0.rotate_left(32) ^ x;
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
}

const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// `prefix` followed by `n` in base 36 over five digits.
fn name(prefix: u8, mut n: u64) -> [u8; 6] {
    let mut out = [prefix, b'0', b'0', b'0', b'0', b'0'];
    for slot in out[1..].iter_mut().rev() {
        *slot = ALPHABET[(n % 36) as usize];
        n /= 36;
    }
    out
}

/// `count` tickers whose unseeded hashes have their low `bits` bits zero, and how many
/// candidates were hashed to find them.
fn crafted(count: usize, bits: u32) -> anyhow::Result<(Vec<Ticker>, u64)> {
    let mask = (1u64 << bits) - 1;
    let mut out = Vec::with_capacity(count);
    let mut tried = 0u64;
    while out.len() < count {
        anyhow::ensure!(tried < 36u64.pow(5), "ran out of 6-character candidates");
        let bytes = name(b'Q', tried);
        tried += 1;
        // What `Hash for str` (and so for `Ticker`) writes: the bytes, then 0xff.
        let mut h = UnseededIdHash.build_hasher();
        h.write(&bytes);
        h.write_u8(0xff);
        let hash = h.finish();
        if hash & mask == 0 {
            let t = Ticker::parse(std::str::from_utf8(&bytes)?)?;
            anyhow::ensure!(UnseededIdHash.hash_one(&t) == hash, "craft does not match Hash");
            out.push(t);
        }
    }
    Ok((out, tried))
}

/// `count` distinct tickers of the same length, at random.
fn random(count: usize) -> Vec<Ticker> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seen.insert(name(b'R', x % 36u64.pow(5)));
    }
    seen.into_iter().map(|b| Ticker::parse(std::str::from_utf8(&b).unwrap()).unwrap()).collect()
}

/// Events per second through an interner-shaped map: look the ticker up, insert it if new.
fn intern_rate<S: BuildHasher + Default>(tickers: &[Ticker], events: usize) -> (f64, u32) {
    let mut ids: HashMap<Ticker, u32, S> = HashMap::default();
    let started = Instant::now();
    let mut sum = 0u32;
    for i in 0..events {
        let t = &tickers[i % tickers.len()];
        let id = match ids.get(t) {
            Some(&id) => id,
            None => {
                let id = ids.len() as u32;
                ids.insert(t.clone(), id);
                id
            }
        };
        sum = sum.wrapping_add(id);
    }
    (events as f64 / started.elapsed().as_secs_f64(), sum)
}

/// Events per second through the analyzer's fold, one module, event time moving forward.
fn fold_rate(tickers: &[Ticker], events: usize) -> anyhow::Result<f64> {
    let mut model = analyzer::Model::new(analyzer::ModelConfig::default())?;
    let module = Module::parse("price")?;
    let start = Utc::now() - CDuration::hours(1);
    let started = Instant::now();
    for i in 0..events {
        let e = QueryEvent {
            ticker: tickers[i % tickers.len()].clone(),
            module: module.clone(),
            hit: false,
            ts: start + CDuration::milliseconds((i / 1000) as i64),
            client: None,
            latency_ms: None,
        };
        model.record(&e);
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(model.footprint().keys == tickers.len(), "every ticker should be live");
    Ok(rate)
}

/// Runs the benchmark and prints a markdown table.
pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!((1..=30).contains(&args.bits), "--bits must be within 1..=30");
    let started = Instant::now();
    let (bad, tried) = crafted(args.keys, args.bits)?;
    println!(
        "crafted {} tickers sharing their low {} hash bits from {tried} candidates in {:.1} s",
        bad.len(),
        args.bits,
        started.elapsed().as_secs_f64()
    );
    let good = random(args.keys);
    println!("| structure | hasher | random tickers (events/s) | crafted tickers (events/s) | crafted / random |");
    println!("|---|---|---|---|---|");
    let row = |what: &str, hasher: &str, r: f64, c: f64| {
        println!("| {what} | {hasher} | {r:.0} | {c:.0} | {:.2} |", c / r);
    };
    let (r, _) = intern_rate::<UnseededIdHash>(&good, args.events);
    let (c, _) = intern_rate::<UnseededIdHash>(&bad, args.events);
    row("interner map", "unseeded IdHash (old)", r, c);
    let (r, _) = intern_rate::<foldhash::fast::RandomState>(&good, args.events);
    let (c, _) = intern_rate::<foldhash::fast::RandomState>(&bad, args.events);
    row("interner map", "foldhash, random seed", r, c);
    let r = fold_rate(&good, args.events)?;
    let c = fold_rate(&bad, args.events)?;
    row("Model::record", "the model's IdHash", r, c);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_tickers_share_their_low_bits_and_random_ones_do_not() {
        let (bad, _) = crafted(32, 8).unwrap();
        assert!(bad.iter().all(|t| UnseededIdHash.hash_one(t) & 0xff == 0));
        let good = random(32);
        let low: std::collections::HashSet<u64> =
            good.iter().map(|t| UnseededIdHash.hash_one(t) & 0xff).collect();
        assert!(low.len() > 20, "{}", low.len());
    }
}
