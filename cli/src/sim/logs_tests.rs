//! Recorded logs in every format the backtest reads: one trace, one result; the rows ingest
//! would refuse are refused here too, in ingest's words, by row.

use super::*;
use crate::backtest::backtest;
use crate::demo::{family, Generator, Params};
use chrono::{DateTime, Duration};
use ingest::batch::{parse_body, Clock, Framing};
use prefetch_common::contract::QueryEvent;
use prefetch_testkit::ScratchDir;

/// The report without its wall time, as JSON.
fn figures(trace: &Trace, cfg: &SimConfig) -> serde_json::Value {
    let mut r = serde_json::to_value(backtest(trace, cfg, None, true).unwrap()).unwrap();
    r.as_object_mut().unwrap().remove("model_replay_s");
    r
}

#[test]
fn one_trace_as_ndjson_csv_and_parquet_backtests_to_identical_results() {
    // An hour of a dev member's market day: dashboards, lookups, clients, a mix of modules.
    let member = family::member(11);
    let p = Params {
        start: member.params.start + Duration::hours(14),
        duration: Duration::hours(1),
        ..member.params.clone()
    };
    let events: Vec<QueryEvent> = Generator::new(&p).unwrap().take(30_000).collect();
    assert!(events.len() > 5_000, "{} events", events.len());
    let d = ScratchDir::new("sim-logs-formats");
    let cfg = crate::backtest::checked(member.live_config(), 5_000).unwrap();
    // The line reader without polars is the reference.
    let ndjson = d.join("log.jsonl");
    analyzer::logs::write_events(&ndjson, None, &events).unwrap();
    let bytes = std::fs::read(&ndjson).unwrap();
    let reference = Trace::read_from(&bytes[..], &ndjson, None).unwrap();
    let want = figures(&reference, &cfg);
    assert_eq!(want["events"], events.len());
    assert!(want["strategies"]["model"]["warms"].as_u64().unwrap() > 0, "{want}");
    for name in ["log.jsonl", "log.csv", "log.parquet"] {
        let path = d.join(name);
        analyzer::logs::write_events(&path, None, &events).unwrap();
        let trace = Trace::read(&path, None).unwrap();
        assert_eq!(trace.invalid_rows, 0, "{name}");
        assert_eq!(figures(&trace, &cfg), want, "{name}");
    }
}

#[test]
fn invalid_rows_are_refused_with_ingests_errors_naming_the_row() {
    let rows = [
        r#"{"ticker":"AAPL","module":"price","hit":true,"ts":"2026-03-09T14:00:00.000Z","client":"c1"}"#,
        r#"{"ticker":"AA PL","module":"price","hit":false,"ts":"2026-03-09T14:00:01.000Z"}"#,
        r#"{"ticker":"MSFT","hit":false,"ts":"2026-03-09T14:00:02.000Z"}"#,
        r#"{"ticker":"MSFT","module":"news","hit":false,"ts":"yesterday"}"#,
        r#"{"ticker":"MSFT","module":"news","hit":false,"ts":"2026-03-09T14:00:03.000Z"}"#,
        r#"{"ticker":"A;A","module":"we ather","hit":false,"ts":"2026-03-09T14:00:04.000Z","client":"c 1"}"#,
    ];
    let csv = "ticker,module,hit,ts,client\n\
               AAPL,price,true,2026-03-09T14:00:00.000Z,c1\n\
               AA PL,price,false,2026-03-09T14:00:01.000Z,\n\
               MSFT,,false,2026-03-09T14:00:02.000Z,\n\
               MSFT,news,false,yesterday,\n\
               MSFT,news,false,2026-03-09T14:00:03.000Z,\n\
               A;A,we ather,false,2026-03-09T14:00:04.000Z,c 1\n";
    // What ingest answers for the same body: every problem, by line.
    let clock = Clock {
        now: DateTime::parse_from_rfc3339("2026-03-10T00:00:00Z").unwrap().to_utc(),
        max_skew: Duration::minutes(1),
    };
    let body = rows.join("\n");
    let refusal = parse_body(body.as_bytes(), Framing::Ndjson, clock).unwrap_err();
    let mut want: Vec<(usize, String)> = Vec::new();
    for p in &refusal.problems {
        let line = p.line.unwrap();
        match want.last_mut() {
            Some((l, text)) if *l == line => *text += &format!("; {}: {}", p.field, p.message),
            _ => want.push((line, format!("{}: {}", p.field, p.message))),
        }
    }
    assert_eq!(want.iter().map(|w| w.0).collect::<Vec<_>>(), [2, 3, 4, 6], "{want:?}");
    assert!(want[3].1.contains("ticker") && want[3].1.contains("module"), "{want:?}");
    let d = ScratchDir::new("sim-logs-invalid");
    for (name, text) in [("log.jsonl", body.clone()), ("log.csv", csv.to_owned())] {
        let path = d.join(name);
        std::fs::write(&path, text).unwrap();
        let trace = Trace::read(&path, None).unwrap();
        assert_eq!((trace.events.len(), trace.invalid_rows), (2, 4), "{name}");
        let got: Vec<String> = trace.invalid_examples.clone();
        let expected: Vec<String> = want.iter().map(|(l, t)| format!("row {l}: {t}")).collect();
        assert_eq!(got, expected, "{name}");
    }
}
