//! Property-style tests of the compact buckets against the plain `Vec<(u32, u32)>` they
//! replace, over seeded random operations.

use super::buckets::Buckets;
use prefetch_contract::testgen::Gen;

/// The previous implementation, kept as the reference: sorted pairs, no zero counts.
#[derive(Default)]
struct Reference(Vec<(u32, u32)>);

impl Reference {
    fn add(&mut self, bucket: u32) {
        match self.0.binary_search_by_key(&bucket, |&(b, _)| b) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(1),
            Err(i) => self.0.insert(i, (bucket, 1)),
        }
    }
    fn expire(&mut self, oldest: u32) -> bool {
        let keep_from = self.0.partition_point(|&(b, _)| b < oldest);
        self.0.drain(..keep_from);
        self.0.is_empty()
    }
}

/// A bucket number in `0..n`.
fn below(rng: &mut Gen, n: u64) -> u32 {
    rng.below(n as usize) as u32
}

fn check(seed: u64, got: &Buckets, want: &Reference) {
    let pairs: Vec<(u32, u32)> = got.iter().collect();
    assert_eq!(pairs, want.0, "seed {seed}");
    assert_eq!(got.len(), want.0.len(), "seed {seed}");
    let (newest, count, entries, tokens) = got.encoded();
    let back = Buckets::from_encoded(newest, count, entries, tokens).expect("own encoding");
    assert_eq!(back.iter().collect::<Vec<_>>(), want.0, "seed {seed}: encoded round trip");
    assert_eq!(Buckets::from_pairs(&want.0).as_ref().map(Buckets::encoded), Some(got.encoded()));
}

/// Random streams — mostly in order, some late, some far apart, bursts that overflow the
/// one-byte counts, a start at bucket 0, and expiries — keep exactly the reference's pairs.
#[test]
fn compact_buckets_match_the_reference_over_random_operations() {
    for seed in 1..=300u64 {
        let mut rng = Gen::new(seed);
        let (mut got, mut want) = (Buckets::default(), Reference::default());
        let mut now = match seed % 3 {
            0 => 0,
            1 => below(&mut rng, 1_000),
            _ => 230_000 + below(&mut rng, 10_000),
        };
        let width: u64 = [3, 40, 200, 5_000][seed as usize % 4];
        for _ in 0..400 {
            let op = below(&mut rng, 100);
            if op < 55 {
                // The newest bucket, or a few ahead: a live stream.
                now += [0, 0, 0, 1, 1, 2, 13, 130, 300, 70_000][below(&mut rng, 10) as usize];
                got.add(now);
                want.add(now);
            } else if op < 70 {
                let burst = [1, 126, 127, 128, 300][below(&mut rng, 5) as usize];
                for _ in 0..burst {
                    got.add(now);
                    want.add(now);
                }
            } else if op < 92 {
                // A late event somewhere in the window (or just before it).
                let b = now.saturating_sub(below(&mut rng, width + 2));
                got.add(b);
                want.add(b);
            } else {
                let oldest = now.saturating_sub(below(&mut rng, width * 2));
                assert_eq!(got.expire(oldest), want.expire(oldest), "seed {seed}");
            }
            check(seed, &got, &want);
        }
    }
}

#[test]
fn counts_saturate_like_the_reference() {
    let mut b = Buckets::from_pairs(&[(5, u32::MAX - 1), (9, u32::MAX)]).unwrap();
    b.add(5);
    b.add(5);
    b.add(9);
    assert_eq!(b.iter().collect::<Vec<_>>(), [(5, u32::MAX), (9, u32::MAX)]);
}

#[test]
fn malformed_parts_are_refused() {
    assert!(Buckets::from_pairs(&[(5, 1), (5, 1)]).is_none(), "not increasing");
    assert!(Buckets::from_pairs(&[(5, 0), (6, 1)]).is_none(), "zero count");
    assert!(Buckets::from_pairs(&[(5, 1), (6, 0)]).is_none(), "zero newest count");
    let ok = Buckets::from_pairs(&[(7, 2), (8, 1), (20, 3)]).unwrap();
    let (newest, count, entries, tokens) = ok.encoded();
    assert!(Buckets::from_encoded(newest, count, entries, tokens).is_some());
    assert!(Buckets::from_encoded(newest, count, entries + 1, tokens).is_none(), "count");
    assert!(Buckets::from_encoded(8, count, entries, tokens).is_none(), "newest not newest");
    assert!(Buckets::from_encoded(newest, 0, entries, tokens).is_none(), "no newest");
    assert!(Buckets::from_encoded(newest, count, entries, &tokens[..1]).is_none(), "cut");
    assert!(Buckets::from_encoded(newest, count, 2, &[0x00, 7, 2, 0x00, 0, 1]).is_none(), "gap 0");
}

/// What the 1M-key memory bound rests on (with `window.rs`'s 64-byte key state): one byte per
/// older bucket of a key active every hour, and no heap at all for a key with a single bucket.
#[test]
fn an_hourly_key_costs_about_a_byte_a_bucket() {
    let mut b = Buckets::default();
    b.add(227_000);
    b.add(227_000);
    assert_eq!(b.heap_bytes(), 0);
    for h in 1..168 {
        for _ in 0..(h % 40) {
            b.add(227_000 + h);
        }
        b.add(227_000 + h);
    }
    assert_eq!(b.len(), 168);
    let (_, _, _, tokens) = b.encoded();
    // 167 older buckets: one escape for the first (absolute) index, one byte for each other.
    assert!(tokens.len() <= 167 + 5, "{} token bytes", tokens.len());
    assert!(b.heap_bytes() <= 12 + tokens.len() * 5 / 4 + 24, "{} heap bytes", b.heap_bytes());
    // A week later everything but the newest expired: the heap string is gone.
    assert!(!b.expire(227_167));
    assert_eq!((b.len(), b.heap_bytes()), (1, 0));
}
