//! The binary's command line: every flag explained with its environment fallback; bad values
//! and an unreachable broker refused with a clear message and a non-zero exit.

use std::process::Command;

fn warmer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_warmer"))
}

#[test]
fn help_explains_every_flag() {
    let help = prefetch_testkit::assert_help_explains(
        env!("CARGO_BIN_EXE_warmer"),
        &[
            "--listen",
            "--group",
            "--enabled",
            "--top-n",
            "--min-confidence",
            "--holdback",
            "--active-hours",
            "--active-days",
            "--market-tz",
            "--cache",
            "--redis-prefix",
            "--ttl",
            "--default-ttl",
            "--max-entries",
            "--max-bytes",
            "--sweep-interval",
            "--upstream-url",
            "--upstream-ca",
            "--upstream-header",
            "--upstream-header-file",
            "--upstream-query",
            "--negative-ttl",
            "--honor-cache-control",
            "--rate-limit-scope",
            "--api-token",
            "--read-token",
            "--upstream-concurrency",
            "--upstream-timeout",
            "--upstream-retries",
            "--retry-backoff",
            "--rate-limit",
            "--rate-burst",
            "--rate-max-wait",
            "--spread",
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
    for env in [
        "PREFETCH_WARMER_LISTEN",
        "PREFETCH_WARMER_TTL",
        "PREFETCH_WARMER_RATE_LIMIT",
        "PREFETCH_MARKET_TZ",
        "PREFETCH_KAFKA_BROKERS",
        "PREFETCH_WARMER_CACHE",
    ] {
        assert!(help.contains(&format!("[env: {env}")), "{env} fallback not shown:\n{help}");
    }
}

#[test]
fn bad_flag_values_are_refused_before_anything_starts() {
    for (args, says) in [
        (vec!["--ttl", "price"], "MODULE=DURATION"),
        (vec!["--holdback", "2"], "between 0 and 1"),
        (vec!["--market-tz", "Mars/Base"], "IANA time zone"),
        (vec!["--active-hours", "nine-five"], "HH:MM"),
        (vec!["--upstream-timeout", "soon"], "is not a duration"),
        (vec!["--rate-limit-scope", "galaxy"], "cluster"),
    ] {
        let out = warmer().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn unreachable_kafka_fails_start_up_with_a_clear_message() {
    prefetch_testkit::assert_unreachable_kafka_is_named(env!("CARGO_BIN_EXE_warmer"));
}
