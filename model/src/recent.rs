//! Which event-driven predictions are new enough to publish.

use crate::keys::IdHash;
use chrono::{DateTime, Utc};
use prefetch_contract::contract::{Module, Ticker};
use prefetch_contract::prediction::Prediction;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// Event-driven predictions published lately, by key. A key is published again only when the
/// last one is older than a fifth of its horizon (event time) or was less confident: every
/// analyst opening `price` would otherwise re-publish the same `chart` prediction, and the
/// warmer would only skip it as fresh. Measured: 16% of the benchmark's events caused a
/// prediction, and publishing them cost 30% of the fold rate.
///
/// Nearly every event's follow-up was published moments ago, so the check must not allocate:
/// entries are found by a hash of the names and confirmed by comparing them; the names are
/// cloned only when an entry is written.
#[derive(Default, Clone)]
pub struct Recent(HashMap<u64, Seen, PassThrough>);

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent").field("entries", &self.0.len()).finish()
    }
}

#[derive(Clone)]
struct Seen {
    ticker: Ticker,
    module: Module,
    at: DateTime<Utc>,
    confidence: f64,
}

/// The map's keys are already hashes: use them as they are.
#[derive(Default, Clone, Copy)]
struct PassThrough;

struct PassThroughHasher(u64);

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

/// The hash of `ticker \xff module`. Collisions are harmless: the names are compared, and a
/// mismatch publishes.
fn key_hash(ticker: &str, module: &str) -> u64 {
    let mut h = IdHash.build_hasher();
    h.write(ticker.as_bytes());
    h.write(&[0xff]);
    h.write(module.as_bytes());
    h.finish()
}

impl Recent {
    /// Whether `p` should be published now; remembers it if so.
    pub fn fresh(&mut self, p: &Prediction) -> bool {
        if !self.would_publish(p) {
            return false;
        }
        self.remember(p);
        true
    }

    /// Whether `p` is new enough to publish (nothing is remembered: see [`Recent::remember`]).
    pub fn would_publish(&self, p: &Prediction) -> bool {
        let again_after = chrono::Duration::seconds((p.horizon_s / 5) as i64);
        let h = key_hash(p.ticker.as_str(), p.module.as_str());
        match self.0.get(&h) {
            Some(seen) if seen.ticker == p.ticker && seen.module == p.module => {
                p.generated_at >= seen.at + again_after || p.confidence > seen.confidence
            }
            _ => true,
        }
    }

    /// Remembers `p` as published.
    pub fn remember(&mut self, p: &Prediction) {
        let h = key_hash(p.ticker.as_str(), p.module.as_str());
        match self.0.get_mut(&h) {
            Some(seen) if seen.ticker == p.ticker && seen.module == p.module => {
                (seen.at, seen.confidence) = (p.generated_at, p.confidence);
            }
            _ => {
                self.0.insert(
                    h,
                    Seen {
                        ticker: p.ticker.clone(),
                        module: p.module.clone(),
                        at: p.generated_at,
                        confidence: p.confidence,
                    },
                );
            }
        }
    }

    /// Forgets entries older than `horizon` before `now` (called on each tick: memory follows
    /// the keys predicted within one horizon).
    pub fn prune(&mut self, now: DateTime<Utc>, horizon: chrono::Duration) {
        self.0.retain(|_, s| s.at + horizon > now);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prefetch_contract::prediction::Reason;

    fn p(secs: i64, confidence: f64) -> Prediction {
        Prediction {
            ticker: Ticker::parse("MSFT").unwrap(),
            module: Module::parse("chart").unwrap(),
            confidence,
            horizon_s: 300,
            generated_at: DateTime::from_timestamp(1_773_066_600 + secs, 0).unwrap(),
            reason: Reason::Sequence,
        }
    }

    #[test]
    fn a_sequence_prediction_is_republished_only_when_stale_or_more_confident() {
        let mut r = Recent::default();
        assert!(r.fresh(&p(0, 0.6)));
        assert!(!r.fresh(&p(30, 0.6)), "same key, same confidence, within a fifth of the horizon");
        assert!(r.fresh(&p(31, 0.7)), "more confident: published");
        assert!(!r.fresh(&p(80, 0.7)));
        assert!(
            r.fresh(&p(91, 0.5)),
            "a fifth of the horizon (60 s) after the last: published again"
        );
        r.prune(p(391, 0.5).generated_at, chrono::Duration::seconds(300));
        assert!(r.is_empty(), "pruned after one horizon");
        let other = Prediction { module: Module::parse("news").unwrap(), ..p(0, 0.6) };
        assert!(r.fresh(&other) && r.fresh(&p(392, 0.1)));
        assert!(!r.fresh(&other), "each key has its own entry");
    }

    #[test]
    fn a_hash_collision_publishes_rather_than_suppresses() {
        let mut r = Recent::default();
        let a = p(0, 0.6);
        // Plant an entry for another key under `a`'s hash, as a collision would.
        let h = key_hash(a.ticker.as_str(), a.module.as_str());
        r.0.insert(
            h,
            Seen {
                ticker: Ticker::parse("AAPL").unwrap(),
                module: a.module.clone(),
                at: a.generated_at,
                confidence: 1.0,
            },
        );
        assert!(r.fresh(&a), "a different key's entry must not suppress this one");
        assert!(!r.fresh(&p(10, 0.6)), "and this key is remembered from now on");
    }

    #[test]
    fn names_are_hashed_apart() {
        // `AB`+`C` and `A`+`BC` must not meet: the separator is not a name byte.
        assert_ne!(key_hash("AB", "c"), key_hash("A", "bc"));
    }
}
