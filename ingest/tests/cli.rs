//! The binary's command line: every flag explained, bad values and an unreachable broker refused
//! with a clear message and a non-zero exit. (Also makes `cargo test` build the binary that the
//! end-to-end tests in `tests/` run.)

use std::process::Command;

fn ingest() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ingest"))
}

#[test]
fn help_explains_every_flag() {
    let help = prefetch_testkit::assert_help_explains(
        env!("CARGO_BIN_EXE_ingest"),
        &[
            "--listen",
            "--from",
            "--max-body-bytes",
            "--produce-timeout",
            "--startup-timeout",
            "--brokers",
            "--kafka-option",
            "--topic-partitions",
            "--topic-replication",
            "--query-events-topic",
            "--predictions-topic",
            "--config-topic",
            "--dlq-topic",
            "--log-format",
            "--log-level",
        ],
    );
    assert!(help.contains("[env: PREFETCH_KAFKA_BROKERS="), "env fallbacks are shown:\n{help}");
}

#[test]
fn bad_flag_values_are_refused_before_anything_starts() {
    let out = ingest().args(["--produce-timeout", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a duration"));
    let out = ingest().args(["--listen", "nowhere"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unreachable_kafka_fails_start_up_with_a_clear_message() {
    prefetch_testkit::assert_unreachable_kafka_is_named(env!("CARGO_BIN_EXE_ingest"));
}

#[test]
fn missing_replay_file_is_named() {
    let out = ingest()
        .args([
            "--brokers",
            "127.0.0.1:1",
            "--startup-timeout",
            "1s",
            "--from",
            "/nonexistent/log.jsonl",
        ])
        .env("PREFETCH_LOG_LEVEL", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("127.0.0.1:1") || stderr.contains("/nonexistent/log.jsonl"),
        "{stderr}"
    );
}
