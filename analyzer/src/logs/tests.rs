//! The scans on fixtures each test writes itself.
use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().to_utc()
}

fn scan(path: &Path) -> (Vec<QueryEvent>, ScanReport) {
    let mut events = Vec::new();
    let report = scan_events(path, None, now(), |e| events.push(e)).unwrap();
    (events, report)
}

fn dir() -> prefetch_testkit::ScratchDir {
    prefetch_testkit::ScratchDir::new("logs-test")
}

#[test]
fn ndjson_rows_are_validated_and_invalid_ones_counted() {
    let d = dir();
    let path = d.join("log.jsonl");
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
    let path = d.join("log.csv");
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
    let path = d.join("log.parquet");
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
    let txt = d.join("log.txt");
    std::fs::write(&txt, "x").unwrap();
    let err = scan_events(&txt, None, now(), |_| {}).unwrap_err();
    assert!(matches!(err, LogError::UnknownFormat(_)), "{err}");
    let csv = d.join("log.csv");
    std::fs::write(&csv, "ticker,module\nAAPL,price\n").unwrap();
    let err = scan_events(&csv, None, now(), |_| {}).unwrap_err();
    assert!(matches!(err, LogError::MissingColumn { column: "ts", .. }), "{err}");
    let broken = d.join("log.parquet");
    std::fs::write(&broken, "not parquet").unwrap();
    assert!(matches!(
        scan_events(&broken, None, now(), |_| {}).unwrap_err(),
        LogError::Polars { .. }
    ));
}

#[test]
fn what_is_written_in_each_format_scans_back_to_the_same_events() {
    let d = dir();
    let at = |s: u32| {
        DateTime::parse_from_rfc3339("2026-03-09T14:00:00.250Z").unwrap().to_utc()
            + chrono::Duration::milliseconds(i64::from(s) * 1_501)
    };
    let event = |json: String| QueryEvent::from_json(json.as_bytes(), now()).unwrap();
    let events: Vec<QueryEvent> = (0..50u32)
        .map(|i| {
            let client = if i % 3 == 0 { String::new() } else { format!(r#","client":"c{i}""#) };
            let latency =
                if i % 4 == 0 { r#","latency_ms":12.5"#.to_owned() } else { String::new() };
            event(format!(
                r#"{{"ticker":"{}","module":"{}","hit":{},"ts":"{}"{client}{latency}}}"#,
                ["AAPL", "BRK.B", "^GSPC", "EURUSD=X"][i as usize % 4],
                ["price", "news", "chart"][i as usize % 3],
                i % 2 == 0,
                at(i).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ))
        })
        .collect();
    for name in ["log.jsonl", "log.csv", "log.parquet"] {
        let path = d.join(name);
        assert_eq!(write_events(&path, None, &events).unwrap(), events.len());
        let (back, report) = scan(&path);
        assert_eq!((report.rows, report.invalid), (events.len(), 0), "{name}");
        assert_eq!(back, events, "{name}");
    }
}
