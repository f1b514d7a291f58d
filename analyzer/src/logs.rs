//! Recorded query logs read through polars lazy scans — NDJSON, CSV or Parquet (a warehouse's
//! export is usually Parquet) — for `prefetch backtest` and `prefetch tune`.
//!
//! Only the event columns are projected (`ticker`, `module`, `hit`, `ts`, `client`,
//! `latency_ms`; other columns are never read). Each row then goes through the contract's own
//! validation ([`QueryEvent::from_value`], the rules ingest applies), so a log is held to the
//! same rules as live traffic. A row that breaks them is counted and reported
//! ([`ScanReport::invalid`], with the first few row numbers and reasons), never silently
//! dropped; a file polars cannot parse at all (malformed JSON, a broken Parquet footer) is an
//! error.
//!
//! Cell types: NDJSON and Parquet columns keep their types (a `hit` stored as a string is
//! refused, as ingest refuses it); a Parquet timestamp column is read as epoch milliseconds.
//! CSV has no types, so `hit` is read from `true`/`false`/`1`/`0`, an all-digit `ts` as epoch
//! milliseconds and `latency_ms` as a number; an empty cell is a missing value.
//!
//! polars' `collect` may call `block_in_place`: call [`scan_events`] from a plain thread or
//! `spawn_blocking`, not from a current-thread runtime.

use chrono::{DateTime, Utc};
use polars::prelude::*;
use prefetch_common::contract::QueryEvent;
use serde_json::{Map, Number, Value};
use std::path::{Path, PathBuf};

/// The columns of a query event, in contract order.
pub const COLUMNS: [&str; 6] = ["ticker", "module", "hit", "ts", "client", "latency_ms"];
/// How many invalid rows a report describes (all are counted).
pub const MAX_EXAMPLES: usize = 10;

/// The file formats a log may be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines (`.jsonl`, `.ndjson`, `.json`).
    Ndjson,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
}

impl LogFormat {
    /// The format a file's extension names, if any.
    pub fn of_path(path: &Path) -> Option<LogFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Some(LogFormat::Ndjson),
            "csv" => Some(LogFormat::Csv),
            "parquet" | "pq" => Some(LogFormat::Parquet),
            _ => None,
        }
    }
}

/// One row the contract refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    /// 1-based data row (for NDJSON the line among non-blank lines; CSV rows after the header).
    pub row: usize,
    /// Every problem of the row, as ingest states them.
    pub reason: String,
}

/// What a scan read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// Rows read.
    pub rows: usize,
    /// Rows that became events.
    pub valid: usize,
    /// Rows the contract refused.
    pub invalid: usize,
    /// The first [`MAX_EXAMPLES`] refused rows.
    pub examples: Vec<InvalidRow>,
}

/// Why a log could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The extension names no known format.
    #[error("{0}: unknown log format (use .jsonl/.ndjson/.json, .csv or .parquet)")]
    UnknownFormat(PathBuf),
    /// A column every event needs is absent.
    #[error("{path}: no `{column}` column (a query log needs ticker, module and ts)")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: &'static str,
    },
    /// polars could not read the file.
    #[error("{path}: {source}")]
    Polars {
        /// The file.
        path: PathBuf,
        /// What polars said.
        source: PolarsError,
    },
}

/// Scans the log at `path` (format from its extension, or `format`), validates each row as
/// ingest would with `now` as the receiving clock, and hands every valid event to `on_event`
/// in file order.
pub fn scan_events(
    path: &Path,
    format: Option<LogFormat>,
    now: DateTime<Utc>,
    mut on_event: impl FnMut(QueryEvent),
) -> Result<ScanReport, LogError> {
    let format = format
        .or_else(|| LogFormat::of_path(path))
        .ok_or_else(|| LogError::UnknownFormat(path.into()))?;
    let polars_err = |source| LogError::Polars { path: path.to_owned(), source };
    let source = PlRefPath::new(path.to_string_lossy().as_ref());
    let mut lf = match format {
        LogFormat::Ndjson => LazyJsonLineReader::new(source)
            .with_infer_schema_length(None)
            .finish()
            .map_err(polars_err)?,
        // Every CSV column as text (no inference): the contract decides what a cell means.
        LogFormat::Csv => LazyCsvReader::new(source)
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .finish()
            .map_err(polars_err)?,
        LogFormat::Parquet => {
            LazyFrame::scan_parquet(source, ScanArgsParquet::default()).map_err(polars_err)?
        }
    };
    let schema = lf.collect_schema().map_err(polars_err)?;
    for column in ["ticker", "module", "ts"] {
        if !schema.contains(column) {
            return Err(LogError::MissingColumn { path: path.to_owned(), column });
        }
    }
    let present: Vec<&'static str> =
        COLUMNS.iter().copied().filter(|c| schema.contains(c)).collect();
    let df = lf.select(present.iter().map(|c| col(*c)).collect::<Vec<_>>()).collect();
    let df = df.map_err(polars_err)?;
    let columns: Vec<(&'static str, Column)> = present
        .iter()
        .map(|c| df.column(c).cloned().map(|s| (*c, s)))
        .collect::<PolarsResult<_>>()
        .map_err(polars_err)?;
    let mut report = ScanReport { rows: df.height(), ..ScanReport::default() };
    for i in 0..df.height() {
        let mut row = Map::with_capacity(columns.len());
        for (name, column) in &columns {
            let cell = column.get(i).map_err(polars_err)?;
            let value = if format == LogFormat::Csv { csv_cell(name, cell) } else { typed(cell) };
            if !value.is_null() {
                row.insert((*name).to_owned(), value);
            }
        }
        // Ingest stamps an event without `ts` with its own clock; a recorded log has no such
        // clock, so a row without one is refused.
        let parsed = if row.contains_key("ts") {
            QueryEvent::from_value(&Value::Object(row), now).map_err(|e| e.to_string())
        } else {
            Err("ts: missing (a recorded log needs event times)".to_owned())
        };
        match parsed {
            Ok(e) => {
                report.valid += 1;
                on_event(e);
            }
            Err(e) => {
                report.invalid += 1;
                if report.examples.len() < MAX_EXAMPLES {
                    report.examples.push(InvalidRow { row: i + 1, reason: e });
                }
            }
        }
    }
    Ok(report)
}

/// A typed cell as the JSON value ingest would have received.
fn typed(cell: AnyValue<'_>) -> Value {
    match cell {
        AnyValue::Null => Value::Null,
        AnyValue::Boolean(b) => Value::Bool(b),
        AnyValue::String(s) => Value::String(s.to_owned()),
        AnyValue::StringOwned(s) => Value::String(s.to_string()),
        AnyValue::Int8(v) => v.into(),
        AnyValue::Int16(v) => v.into(),
        AnyValue::Int32(v) => v.into(),
        AnyValue::Int64(v) => v.into(),
        AnyValue::UInt8(v) => v.into(),
        AnyValue::UInt16(v) => v.into(),
        AnyValue::UInt32(v) => v.into(),
        AnyValue::UInt64(v) => v.into(),
        AnyValue::Float32(v) => Number::from_f64(f64::from(v)).map_or(Value::Null, Value::Number),
        AnyValue::Float64(v) => Number::from_f64(v).map_or(Value::Null, Value::Number),
        AnyValue::Datetime(v, unit, _) | AnyValue::DatetimeOwned(v, unit, _) => {
            let ms = match unit {
                TimeUnit::Milliseconds => v,
                TimeUnit::Microseconds => v.div_euclid(1_000),
                TimeUnit::Nanoseconds => v.div_euclid(1_000_000),
            };
            ms.into()
        }
        // Anything else (a list, a struct, a date without time) is shown as text, which the
        // contract then refuses with the field's name.
        other => Value::String(other.to_string()),
    }
}

/// A CSV cell (text) as the JSON value it stands for.
fn csv_cell(column: &str, cell: AnyValue<'_>) -> Value {
    let text = match cell {
        AnyValue::Null => return Value::Null,
        AnyValue::String(s) => s.trim().to_owned(),
        AnyValue::StringOwned(s) => s.trim().to_owned(),
        other => return typed(other),
    };
    if text.is_empty() {
        return Value::Null;
    }
    match column {
        "hit" => match text.to_ascii_lowercase().as_str() {
            "true" | "1" => Value::Bool(true),
            "false" | "0" => Value::Bool(false),
            _ => Value::String(text),
        },
        "ts" if text.bytes().all(|b| b.is_ascii_digit()) => {
            text.parse::<i64>().map_or(Value::String(text), Value::from)
        }
        "latency_ms" => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        _ => Value::String(text),
    }
}

/// Writes `events` as a log at `path` in the format its extension names (or `format`): NDJSON
/// lines as the contract writes them, CSV with a header row and RFC 3339 times, or Parquet with
/// typed columns (`ts` a millisecond timestamp, `hit` a boolean). What [`scan_events`] reads
/// back is the same events. Returns how many were written.
pub fn write_events<'a>(
    path: &Path,
    format: Option<LogFormat>,
    events: impl IntoIterator<Item = &'a QueryEvent>,
) -> Result<usize, LogError> {
    let format = format
        .or_else(|| LogFormat::of_path(path))
        .ok_or_else(|| LogError::UnknownFormat(path.into()))?;
    let io_err = |e: std::io::Error| LogError::Polars { path: path.to_owned(), source: e.into() };
    let polars_err = |source| LogError::Polars { path: path.to_owned(), source };
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io_err)?);
    if format == LogFormat::Ndjson {
        use std::io::Write;
        let mut n = 0;
        for e in events {
            file.write_all(&e.to_json()).and_then(|_| file.write_all(b"\n")).map_err(io_err)?;
            n += 1;
        }
        file.flush().map_err(io_err)?;
        return Ok(n);
    }
    let events: Vec<&QueryEvent> = events.into_iter().collect();
    let strings = |f: &dyn Fn(&QueryEvent) -> Option<String>| -> Vec<Option<String>> {
        events.iter().map(|e| f(e)).collect()
    };
    let ts: Column = if format == LogFormat::Csv {
        Column::new(
            "ts".into(),
            strings(&|e| Some(e.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))),
        )
    } else {
        let ms: Vec<i64> = events.iter().map(|e| e.ts.timestamp_millis()).collect();
        Column::new("ts".into(), ms)
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
            .map_err(polars_err)?
    };
    let mut df = DataFrame::new_infer_height(vec![
        Column::new("ticker".into(), strings(&|e| Some(e.ticker.as_str().to_owned()))),
        Column::new("module".into(), strings(&|e| Some(e.module.as_str().to_owned()))),
        Column::new("hit".into(), events.iter().map(|e| e.hit).collect::<Vec<bool>>()),
        ts,
        Column::new(
            "client".into(),
            strings(&|e| e.client.as_ref().map(|c| c.as_str().to_owned())),
        ),
        Column::new(
            "latency_ms".into(),
            events.iter().map(|e| e.latency_ms).collect::<Vec<Option<f64>>>(),
        ),
    ])
    .map_err(polars_err)?;
    match format {
        LogFormat::Csv => CsvWriter::new(&mut file).finish(&mut df).map_err(polars_err)?,
        _ => {
            ParquetWriter::new(&mut file).finish(&mut df).map_err(polars_err)?;
        }
    }
    Ok(events.len())
}

#[cfg(test)]
mod tests;
