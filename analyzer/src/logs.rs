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

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().to_utc()
    }

    fn scan(path: &Path) -> (Vec<QueryEvent>, ScanReport) {
        let mut events = Vec::new();
        let report = scan_events(path, None, now(), |e| events.push(e)).unwrap();
        (events, report)
    }

    fn dir() -> tempdir::Dir {
        tempdir::Dir::new()
    }

    /// A scratch directory removed on drop (no tempfile dependency for one test module).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir().join(format!("logs-test-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn ndjson_rows_are_validated_and_invalid_ones_counted() {
        let d = dir();
        let path = d.0.join("log.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"ticker":"aapl","module":"price","hit":true,"ts":"2026-03-09T14:00:00.000Z","client":"c1","extra":1}"#,
                "\n",
                r#"{"ticker":"AA PL","module":"price","hit":false,"ts":"2026-03-09T14:00:01.000Z","client":"c1","extra":2}"#,
                "\n",
                r#"{"ticker":"MSFT","module":null,"hit":false,"ts":"2026-03-09T14:00:02.000Z","client":null,"extra":3}"#,
                "\n",
                r#"{"ticker":"MSFT","module":"news","hit":false,"ts":"2026-03-09T14:00:03.000Z","client":null,"extra":4}"#,
                "\n",
            ),
        )
        .unwrap();
        let (events, report) = scan(&path);
        assert_eq!((report.rows, report.valid, report.invalid), (4, 2, 2));
        assert_eq!(events[0].ticker.as_str(), "AAPL", "normalised as ingest does");
        assert!(events[0].hit && events[0].client.as_ref().unwrap().as_str() == "c1");
        assert_eq!(events[1].module.as_str(), "news");
        assert_eq!(events[1].client, None);
        assert_eq!(report.examples[0].row, 2);
        assert!(report.examples[0].reason.contains("ticker"), "{:?}", report.examples);
        assert_eq!(report.examples[1].row, 3);
        assert!(report.examples[1].reason.contains("module"), "{:?}", report.examples);
    }

    #[test]
    fn csv_cells_are_typed_by_the_contract_and_bad_ones_refused() {
        let d = dir();
        let path = d.0.join("log.csv");
        std::fs::write(
            &path,
            "ts,ticker,module,hit,client,region\n\
             1773064800000,AAPL,price,true,c1,eu\n\
             2026-03-09T14:00:01Z,MSFT,chart,0,,us\n\
             2026-03-09T14:00:02Z,MSFT,chart,maybe,,us\n\
             2026-03-09T14:00:03Z,MS;FT,chart,false,,us\n\
             2126-03-09T14:00:03Z,MSFT,chart,false,,us\n",
        )
        .unwrap();
        let (events, report) = scan(&path);
        assert_eq!((report.rows, report.valid, report.invalid), (5, 2, 3));
        assert_eq!(events[0].ts.timestamp_millis(), 1_773_064_800_000);
        assert!(events[0].hit && !events[1].hit);
        assert_eq!(events[1].client, None, "an empty cell is a missing client");
        let reasons: Vec<(usize, &str)> =
            report.examples.iter().map(|r| (r.row, r.reason.as_str())).collect();
        assert!(reasons[0].0 == 3 && reasons[0].1.contains("hit"), "{reasons:?}");
        assert!(reasons[1].0 == 4 && reasons[1].1.contains("ticker"), "{reasons:?}");
        assert!(reasons[2].0 == 5 && reasons[2].1.contains("ts"), "future: {reasons:?}");
    }

    #[test]
    fn parquet_with_typed_columns_and_extra_ones() {
        let d = dir();
        let path = d.0.join("log.parquet");
        let ts: Vec<i64> = vec![1_773_064_800_000, 1_773_064_801_000, 1_773_064_802_000];
        let mut df = DataFrame::new_infer_height(vec![
            Column::new("ticker".into(), ["AAPL", "BAD TICKER", "^GSPC"]),
            Column::new("module".into(), ["price", "price", "chart"]),
            Column::new("hit".into(), [Some(true), Some(false), None]),
            Column::new("ts".into(), ts)
                .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
                .unwrap(),
            Column::new("client".into(), [Some("c1"), None, None]),
            Column::new("warehouse_id".into(), [1i64, 2, 3]),
        ])
        .unwrap();
        let file = std::fs::File::create(&path).unwrap();
        ParquetWriter::new(file).finish(&mut df).unwrap();
        let (events, report) = scan(&path);
        assert_eq!((report.rows, report.valid, report.invalid), (3, 2, 1));
        assert_eq!(events[0].ts.timestamp_millis(), 1_773_064_800_000);
        assert_eq!(events[1].ticker.as_str(), "^GSPC");
        assert!(!events[1].hit, "a null hit is a miss, as in ingest");
        assert_eq!(report.examples[0].row, 2);
    }

    #[test]
    fn unknown_formats_and_missing_columns_are_errors() {
        let d = dir();
        let txt = d.0.join("log.txt");
        std::fs::write(&txt, "x").unwrap();
        let err = scan_events(&txt, None, now(), |_| {}).unwrap_err();
        assert!(matches!(err, LogError::UnknownFormat(_)), "{err}");
        let csv = d.0.join("log.csv");
        std::fs::write(&csv, "ticker,module\nAAPL,price\n").unwrap();
        let err = scan_events(&csv, None, now(), |_| {}).unwrap_err();
        assert!(matches!(err, LogError::MissingColumn { column: "ts", .. }), "{err}");
        let broken = d.0.join("log.parquet");
        std::fs::write(&broken, "not parquet").unwrap();
        assert!(matches!(
            scan_events(&broken, None, now(), |_| {}).unwrap_err(),
            LogError::Polars { .. }
        ));
    }
}
