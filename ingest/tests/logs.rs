//! JSON logs as log pipelines (Vector, Loki, Fluent Bit) expect them: one object per line with
//! `message`, `level` and the event's fields at the top level, not nested under `fields`.

use std::process::Command;

#[test]
fn json_logs_put_the_message_at_the_top_level() {
    // An unreachable broker: the service logs its start and the failure, then exits.
    let out = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["--log-format", "json", "--log-level", "info"])
        .args(["--brokers", "127.0.0.1:1", "--startup-timeout", "2s", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unreachable broker is an error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let objects: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!objects.is_empty(), "no JSON log line:\n{stderr}");
    for o in &objects {
        assert!(o["message"].is_string(), "no top-level message: {o}");
        assert!(o["level"].is_string(), "no level: {o}");
        assert!(o.get("fields").is_none(), "fields are flattened: {o}");
    }
}

#[test]
fn old_environment_names_still_work_and_say_they_are_deprecated() {
    // `LOG_FORMAT` is the name of earlier releases; `PREFETCH_LOG_FORMAT` is the one now.
    let out = Command::new(env!("CARGO_BIN_EXE_ingest"))
        .args(["--log-level", "info"])
        .args(["--brokers", "127.0.0.1:1", "--startup-timeout", "1s", "--listen", "127.0.0.1:0"])
        .env("LOG_FORMAT", "json")
        .env_remove("PREFETCH_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|o| o["message"].as_str().is_some_and(|m| m.contains("Deprecated environment")))
        .unwrap_or_else(|| {
            panic!("the old name took effect (JSON) and was warned about:\n{stderr}")
        });
    assert_eq!(
        (warning["old"].as_str(), warning["new"].as_str()),
        (Some("LOG_FORMAT"), Some("PREFETCH_LOG_FORMAT"))
    );
}

#[test]
fn every_environment_variable_has_the_one_prefix() {
    let out = Command::new(env!("CARGO_BIN_EXE_ingest")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> =
        help.split("[env: ").skip(1).filter_map(|s| s.split(['=', ']']).next()).collect();
    assert!(names.len() > 10, "{help}");
    for n in names {
        assert!(n.starts_with("PREFETCH_"), "{n} lacks the PREFETCH_ prefix");
    }
}
