//! The binary's command line: every flag explained; a bad model configuration or an
//! unreachable broker refused with a message naming the problem.

use std::process::Command;

fn analyzer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_analyzer"))
}

#[test]
fn help_explains_every_flag() {
    prefetch_testkit::assert_help_explains(
        env!("CARGO_BIN_EXE_analyzer"),
        &[
            "--listen",
            "--group-id",
            "--tick-interval",
            "--stats-interval",
            "--stats-topic",
            "--instance-id",
            "--model-config",
            "--top-n",
            "--min-confidence",
            "--enabled",
            "--hour-weights",
            "--market-tz",
            "--horizon-s",
            "--retention-s",
            "--startup-timeout",
            "--brokers",
            "--kafka-option",
            "--query-events-topic",
            "--predictions-topic",
            "--dlq-topic",
            "--log-format",
        ],
    );
}

#[test]
fn a_bad_model_configuration_names_the_field() {
    for (args, needle) in [
        (vec!["--min-confidence", "1.5"], "min_confidence"),
        (vec!["--market-tz", "Mars/Olympus"], "market_tz"),
        (vec!["--hour-weights", "9-11=1.5,10-12=2"], "hour_weights"),
        (vec!["--top-n", "0"], "top_n"),
    ] {
        let out = analyzer()
            .args(&args)
            .args(["--brokers", "127.0.0.1:1", "--listen", "127.0.0.1:0"])
            .env("PREFETCH_LOG_LEVEL", "off")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn unreachable_kafka_fails_start_up_with_a_clear_message() {
    prefetch_testkit::assert_unreachable_kafka_is_named(env!("CARGO_BIN_EXE_analyzer"));
}
