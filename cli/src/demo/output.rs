//! Where the events go: a JSON-lines file or standard output, and the summary of what went.

use super::Origin;
use chrono::{DateTime, SecondsFormat, Utc};
use prefetch_common::contract::QueryEvent;
use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Write};
use std::time::Duration;

/// What a run produced: counts, time span and distinct keys.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Events written or accepted.
    pub events: u64,
    /// Event time of the first event.
    pub first: Option<DateTime<Utc>>,
    /// Event time of the last event.
    pub last: Option<DateTime<Utc>>,
    /// Events per [`Origin`], in [`Origin::ALL`] order.
    pub by_origin: [u64; 5],
    /// POST requests made (with `--to`).
    pub batches: u64,
    /// Wall time the run took.
    pub elapsed: Duration,
    /// With --via-cache: how the read-through answered.
    pub cache: Option<CacheAnswers>,
    // Hashes rather than strings: a million events must not mean a million allocations here,
    // and a 64-bit collision among thousands of keys is not a concern for a summary.
    tickers: HashSet<u64>,
    keys: HashSet<u64>,
    clients: HashSet<u64>,
}

fn hash_of(parts: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

impl Summary {
    /// Counts one event.
    pub fn record(&mut self, event: &QueryEvent, origin: Origin) {
        self.events += 1;
        self.first.get_or_insert(event.ts);
        self.last = Some(event.ts);
        self.by_origin
            [Origin::ALL.iter().position(|o| *o == origin).expect("every origin is listed")] += 1;
        let (t, m) = (event.ticker.as_str(), event.module.as_str());
        self.tickers.insert(hash_of(&[t]));
        self.keys.insert(hash_of(&[t, m]));
        if let Some(c) = &event.client {
            self.clients.insert(hash_of(&[c.as_str()]));
        }
    }

    /// Distinct tickers seen.
    pub fn distinct_tickers(&self) -> usize {
        self.tickers.len()
    }

    /// Distinct (ticker, module) keys seen.
    pub fn distinct_keys(&self) -> usize {
        self.keys.len()
    }

    /// Distinct clients seen.
    pub fn distinct_clients(&self) -> usize {
        self.clients.len()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ts = |t: Option<DateTime<Utc>>| {
            t.map_or("-".to_owned(), |t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        };
        let span = match (self.first, self.last) {
            (Some(a), Some(b)) => {
                let m = (b - a).num_minutes();
                format!("{}h{:02}m", m / 60, m % 60)
            }
            _ => "0h00m".to_owned(),
        };
        writeln!(
            f,
            "{} events from {} to {} ({span})",
            self.events,
            ts(self.first),
            ts(self.last)
        )?;
        writeln!(
            f,
            "distinct: {} tickers, {} (ticker, module) keys, {} clients",
            self.distinct_tickers(),
            self.distinct_keys(),
            self.distinct_clients()
        )?;
        let parts: Vec<String> = Origin::ALL
            .iter()
            .zip(self.by_origin)
            .map(|(o, n)| format!("{} {n}", o.as_str()))
            .collect();
        writeln!(f, "by source: {}", parts.join(", "))?;
        let secs = self.elapsed.as_secs_f64();
        write!(f, "took {secs:.2} s ({:.0} events/s)", self.events as f64 / secs.max(1e-9))?;
        if self.batches > 0 {
            write!(f, " in {} batches", self.batches)?;
        }
        if let Some(c) = self.cache {
            let answered = (c.hits + c.misses).max(1) as f64;
            write!(
                f,
                "\ncache: {} hits, {} misses ({:.1}% hit rate), {} errors",
                c.hits,
                c.misses,
                100.0 * c.hits as f64 / answered,
                c.errors
            )?;
        }
        Ok(())
    }
}

/// How a warmer's read-through answered the queries of a `--via-cache` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheAnswers {
    /// Answered from the cache.
    pub hits: u64,
    /// Fetched from the upstream.
    pub misses: u64,
    /// Not answered 200.
    pub errors: u64,
}

/// Writes every event as a canonical JSON line. A closed pipe (`| head`) ends the run quietly.
pub fn write_lines(
    events: impl Iterator<Item = (QueryEvent, Origin)>,
    out: impl Write,
    summary: &mut Summary,
) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let result = (|| {
        for (event, origin) in events {
            out.write_all(&event.to_json())?;
            out.write_all(b"\n")?;
            summary.record(&event, origin);
        }
        out.flush()
    })();
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
