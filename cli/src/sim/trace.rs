//! A recorded log in memory, compactly: every event is a timestamp, a key id and a client id,
//! and the names live once in side tables. A replay, its baselines and a tune grid all read the
//! same [`Trace`], so the file is parsed once.

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use prefetch_common::contract::{ClientId, Module, QueryEvent, Ticker};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// `client` of an event that named none.
pub const NO_CLIENT: u32 = u32::MAX;

/// One event of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ev {
    /// Event time, epoch milliseconds.
    pub ts: i64,
    /// Index into [`Trace::keys`].
    pub key: u32,
    /// Index into [`Trace::clients`], or [`NO_CLIENT`].
    pub client: u32,
}

/// A `(ticker, module)` key of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceKey {
    /// Index into [`Trace::tickers`].
    pub ticker: u32,
    /// Index into [`Trace::modules`].
    pub module: u32,
}

/// A query log, in time order (ties keep their order in the file).
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Distinct tickers, in order of first appearance.
    pub tickers: Vec<Ticker>,
    /// Distinct modules, in order of first appearance.
    pub modules: Vec<Module>,
    /// Distinct keys, in order of first appearance.
    pub keys: Vec<TraceKey>,
    /// Distinct clients, in order of first appearance.
    pub clients: Vec<ClientId>,
    /// The events, sorted by time (stably).
    pub events: Vec<Ev>,
    /// Rows of the log the contract refused (skipped, counted and reported).
    pub invalid_rows: usize,
    /// The first few of them, `row N: reason`.
    pub invalid_examples: Vec<String>,
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line is not a valid query event.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The log holds no event.
    #[error("{0}: no events (blank lines only)")]
    Empty(PathBuf),
    /// The log could not be scanned (unknown format, missing column, unreadable file).
    #[error(transparent)]
    Scan(#[from] analyzer::logs::LogError),
    /// No row of the log is a valid event.
    #[error("{path}: none of its {rows} rows is a valid query event (first: {first})")]
    NoValidRow {
        /// The file.
        path: PathBuf,
        /// Rows read.
        rows: usize,
        /// The first refused row and why.
        first: String,
    },
}

/// Timestamps are checked against this instead of the wall clock: a recorded log may come
/// from anywhere in time, and a replay must not depend on when it runs.
fn far_future() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2130-01-01T00:00:00Z").expect("valid").with_timezone(&Utc)
}

#[derive(Default)]
struct Builder {
    trace: Trace,
    ticker_ids: HashMap<Ticker, u32>,
    module_ids: HashMap<Module, u32>,
    key_ids: HashMap<(u32, u32), u32>,
    client_ids: HashMap<ClientId, u32>,
}

fn intern<T: Clone + Eq + std::hash::Hash>(
    ids: &mut HashMap<T, u32>,
    names: &mut Vec<T>,
    v: &T,
) -> u32 {
    if let Some(&id) = ids.get(v) {
        return id;
    }
    let id = names.len() as u32;
    names.push(v.clone());
    ids.insert(v.clone(), id);
    id
}

impl Builder {
    fn push(&mut self, e: &QueryEvent) {
        let t = &mut self.trace;
        let ticker = intern(&mut self.ticker_ids, &mut t.tickers, &e.ticker);
        let module = intern(&mut self.module_ids, &mut t.modules, &e.module);
        let key = *self.key_ids.entry((ticker, module)).or_insert_with(|| {
            t.keys.push(TraceKey { ticker, module });
            (t.keys.len() - 1) as u32
        });
        let client = e
            .client
            .as_ref()
            .map_or(NO_CLIENT, |c| intern(&mut self.client_ids, &mut t.clients, c));
        t.events.push(Ev { ts: e.ts.timestamp_millis(), key, client });
    }

    fn finish(mut self) -> Trace {
        // A log written by one ingest is in order already; a merged one may not be. Stable, so
        // equal timestamps keep the file's order and the replay stays deterministic.
        if !self.trace.events.windows(2).all(|w| w[0].ts <= w[1].ts) {
            self.trace.events.sort_by_key(|e| e.ts);
        }
        self.trace
    }
}

impl Trace {
    /// A trace of `events` (for tests and generated traces).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a QueryEvent>) -> Trace {
        let mut b = Builder::default();
        for e in events {
            b.push(e);
        }
        b.finish()
    }

    /// A trace of a stream of events, without holding them (a generator's, say).
    pub fn collect(events: impl IntoIterator<Item = QueryEvent>) -> Trace {
        let mut b = Builder::default();
        for e in events {
            b.push(&e);
        }
        b.finish()
    }

    /// Reads a recorded log of query events — NDJSON (`.jsonl`, `.ndjson`, `.json`), CSV or
    /// Parquet, by extension — through the analyzer's polars lazy scan
    /// ([`analyzer::logs::scan_events`]): only the event columns are read, and every row is
    /// validated by the contract's rules, as ingest validates events. Rows it refuses are
    /// skipped but counted in [`Trace::invalid_rows`] (with the first few in
    /// [`Trace::invalid_examples`]); a log with no valid row is an error. `hit` is read but
    /// not used. `bar`, when given, ticks once the scan is done.
    pub fn read(path: &Path, bar: Option<&ProgressBar>) -> Result<Trace, TraceError> {
        std::fs::metadata(path)
            .map_err(|source| TraceError::Io { path: path.to_owned(), source })?;
        let mut b = Builder::default();
        let report = match analyzer::logs::scan_events(path, None, far_future(), |e| b.push(&e)) {
            Ok(r) => r,
            // polars names no line of malformed JSON ("ExpectedNull at character 0"): the line
            // reader finds it and says which (or reads the log, if polars was the problem).
            Err(analyzer::logs::LogError::Polars { .. })
                if analyzer::logs::LogFormat::of_path(path)
                    == Some(analyzer::logs::LogFormat::Ndjson) =>
            {
                let file = std::fs::File::open(path)
                    .map_err(|source| TraceError::Io { path: path.to_owned(), source })?;
                return Self::read_from(
                    std::io::BufReader::with_capacity(1 << 20, file),
                    path,
                    bar,
                );
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(bar) = bar {
            bar.set_length(report.rows as u64);
            bar.set_position(report.rows as u64);
        }
        let examples: Vec<String> =
            report.examples.iter().map(|r| format!("row {}: {}", r.row, r.reason)).collect();
        if b.trace.events.is_empty() {
            return match examples.first() {
                Some(first) => Err(TraceError::NoValidRow {
                    path: path.to_owned(),
                    rows: report.rows,
                    first: first.clone(),
                }),
                None => Err(TraceError::Empty(path.to_owned())),
            };
        }
        b.trace.invalid_rows = report.invalid;
        b.trace.invalid_examples = examples;
        Ok(b.finish())
    }

    /// Reads a JSON-lines log from any reader, line by line without polars (for small logs
    /// and tests); blank lines are skipped and the first invalid line stops the read with its
    /// number. `path` names it in errors.
    pub fn read_from(
        mut reader: impl BufRead,
        path: &Path,
        bar: Option<&ProgressBar>,
    ) -> Result<Trace, TraceError> {
        let now = far_future();
        let mut b = Builder::default();
        let mut line = Vec::with_capacity(256);
        let mut number = 0;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|source| TraceError::Io { path: path.to_owned(), source })?;
            if n == 0 {
                break;
            }
            number += 1;
            if let Some(bar) = bar {
                bar.inc(n as u64);
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let e = QueryEvent::from_json(&line, now).map_err(|e| TraceError::Line {
                path: path.to_owned(),
                line: number,
                message: e.to_string(),
            })?;
            b.push(&e);
        }
        if b.trace.events.is_empty() {
            return Err(TraceError::Empty(path.to_owned()));
        }
        Ok(b.finish())
    }

    /// The trace truncated to events before `end_ms` (for causality checks).
    pub fn before(&self, end_ms: i64) -> Trace {
        let n = self.events.partition_point(|e| e.ts < end_ms);
        Trace { events: self.events[..n].to_vec(), ..self.clone() }
    }

    /// The ticker and module of key `k`.
    pub fn names(&self, k: u32) -> (&Ticker, &Module) {
        let key = &self.keys[k as usize];
        (&self.tickers[key.ticker as usize], &self.modules[key.module as usize])
    }

    /// The event as the model reads it, with the simulated cache outcome as `hit`.
    pub fn event(&self, e: &Ev, hit: bool) -> QueryEvent {
        let (ticker, module) = self.names(e.key);
        QueryEvent {
            ticker: ticker.clone(),
            module: module.clone(),
            hit,
            ts: DateTime::from_timestamp_millis(e.ts).unwrap_or_default(),
            client: (e.client != NO_CLIENT).then(|| self.clients[e.client as usize].clone()),
            latency_ms: None,
        }
    }
}
