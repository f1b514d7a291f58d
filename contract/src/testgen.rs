//! Seeded input generation for the property tests of every parser that takes bytes from HTTP
//! or Kafka (this crate's, ingest's batch bodies, the analyzer's event scanner, the model's
//! checkpoints, the Kafka properties file). Test support, not part of the contract: it lives
//! here, dependency-free, so each crate's tests share one generator without a cargo feature
//! (a feature turned on only by dev-dependencies would build every dependent crate twice).
//!
//! Every case is a pure function of its seed, so a failure message that names the case number
//! reproduces it exactly: `Gen::new(case)`.

/// A small deterministic generator (xorshift64).
#[derive(Debug, Clone)]
pub struct Gen(u64);

/// Pieces the byte generator splices together: JSON syntax, the contract's field names, values
/// near its bounds, and characters that once fooled a parser (`ſ`, the Kelvin sign, `..`).
const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "ticker",
    "module",
    "ts",
    "hit",
    "client",
    "latency_ms",
    "true",
    "false",
    "null",
    "-",
    ".",
    "..",
    "0",
    "1",
    "1e3",
    "9e999",
    "-0",
    "3600000",
    "3600000.001",
    "2026-03-09T14:30:00Z",
    "2026-03-09T14:30:00.123+01:00",
    "1999-12-31T23:59:59Z",
    "2016-12-31T23:59:60Z",
    "+262142-12-31T23:59:59Z",
    "1773066600000",
    "946684799999",
    "\\u017f",
    "ſ",
    "\u{212a}",
    "\\u0000",
    "\n",
    "\r\n",
    " ",
    "AAPL",
    "brk.b",
    "price",
    "News",
    "confidence",
    "horizon_s",
    "generated_at",
    "reason",
    "burst",
    "sequence",
    "top_n",
    "min_confidence",
    "enabled",
    "=",
    "#",
    "!",
    "sasl.password",
    "bootstrap.servers",
];

impl Gen {
    /// The generator of case `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability 1/`n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// Up to `max` pieces: random bytes mixed with [`PIECES`], so parsers see both noise and
    /// near-valid input.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        let mut out = Vec::new();
        for _ in 0..n {
            match self.below(4) {
                0 => out.push(self.next_u64() as u8),
                _ => out.extend_from_slice(PIECES[self.below(PIECES.len())].as_bytes()),
            }
        }
        out
    }

    /// `bytes` with a few random edits: a byte flipped, a span cut or duplicated, a piece
    /// inserted. What a corrupted or hostile copy of a valid message looks like.
    pub fn mutate(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for _ in 0..=self.below(3) {
            let at = if out.is_empty() { 0 } else { self.below(out.len() + 1) };
            match self.below(4) {
                0 if at < out.len() => out[at] ^= 1 << self.below(8),
                1 => out.truncate(at),
                2 => {
                    let end = (at + self.below(8)).min(out.len());
                    let span = out[at..end].to_vec();
                    out.splice(at..at, span);
                }
                _ => {
                    let piece = PIECES[self.below(PIECES.len())].as_bytes();
                    out.splice(at..at, piece.iter().copied());
                }
            }
        }
        out
    }
}

/// Whether two JSON documents are equal up to float parsing: serde_json (without its
/// `float_roundtrip` feature) may read a 17-digit number back one ulp off, so numbers compare
/// with a relative tolerance of 1e-12 and everything else exactly.
pub fn same_json(a: &[u8], b: &[u8]) -> bool {
    use serde_json::Value;
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                _ => x == y,
            },
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }
    match (serde_json::from_slice(a), serde_json::from_slice(b)) {
        (Ok(a), Ok(b)) => same(&a, &b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_reproducible_and_varied() {
        let a: Vec<Vec<u8>> = (0..50).map(|c| Gen::new(c).bytes(16)).collect();
        let b: Vec<Vec<u8>> = (0..50).map(|c| Gen::new(c).bytes(16)).collect();
        assert_eq!(a, b, "a case is a function of its seed");
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 40, "{}", distinct.len());
        let doc = b"{\"ticker\":\"A\"}";
        let changed = (0..20).filter(|&c| Gen::new(c).mutate(doc) != doc.to_vec()).count();
        assert!(changed >= 15, "mutations change the input: {changed} of 20");
    }
}
