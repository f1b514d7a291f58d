//! The oracle: a warmer that sees the future, as the upper bound of what warming on ticks can
//! do. At each tick it warms, within the same `top_n`, the keys whose next query falls before
//! the next tick and inside the TTL and would miss, those whose copy would serve the most
//! queries first.

use super::cache::SimCache;
use super::trace::Trace;

/// Every key's query times, for looking ahead.
#[derive(Debug)]
pub struct Oracle {
    times: Vec<Vec<i64>>,
    /// Tick number at which a key was last considered (one candidate per key and tick).
    seen: Vec<u64>,
    ticks: u64,
    top_n: usize,
}

impl Oracle {
    /// An oracle over `trace` warming at most `top_n` keys per tick.
    pub fn new(trace: &Trace, top_n: usize) -> Self {
        let mut times = vec![Vec::new(); trace.keys.len()];
        for e in &trace.events {
            times[e.key as usize].push(e.ts);
        }
        Self { times, seen: vec![0; trace.keys.len()], ticks: 0, top_n }
    }

    /// The keys to warm at `now` (epoch ms), best first, given that the next tick is at
    /// `next_tick` and `trace.events[from..]` are the events after `now`.
    pub fn tick(
        &mut self,
        trace: &Trace,
        from: usize,
        now: i64,
        next_tick: i64,
        cache: &SimCache,
    ) -> Vec<u32> {
        self.ticks += 1;
        // (queries served, first query time, key)
        let mut picks: Vec<(usize, i64, u32)> = Vec::new();
        for e in trace.events[from..].iter().take_while(|e| e.ts <= next_tick) {
            let seen = &mut self.seen[e.key as usize];
            if *seen == self.ticks {
                continue;
            }
            *seen = self.ticks;
            let ttl = cache.ttl(e.key);
            let would_miss = cache.expires(e.key).is_none_or(|x| x <= e.ts);
            if e.ts - now >= ttl || !would_miss {
                continue;
            }
            let times = &self.times[e.key as usize];
            let lo = times.partition_point(|&t| t <= now);
            let hi = times.partition_point(|&t| t < now + ttl);
            picks.push((hi - lo, e.ts, e.key));
        }
        picks.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        picks.into_iter().take(self.top_n).map(|p| p.2).collect()
    }
}
