//! The compose stack's Prometheus files, checked by Prometheus's own tool: the configuration
//! and alert rules load (`promtool check config`, `check rules`), every alert's unit tests pass
//! (`promtool test rules`), every alert has a unit test in which it fires and one in which
//! it stays silent, and every alert's `runbook_url` leads to a section of `docs/runbook.md`.

use prefetch_e2e::*;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str], dir: &Path) -> Option<String> {
    let bin = ci_tool("promtool", "prometheus")?;
    let out = Command::new(bin).args(args).current_dir(dir).output().expect("run promtool");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {} failed:\n{text}", args.join(" "));
    Some(text)
}

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every alerting rule of rules.yml.
fn alerts() -> Vec<Value> {
    let rules = yaml("deploy/prometheus/rules.yml");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter(|r| r["alert"].is_string())
        .collect()
}

fn alert_names() -> BTreeSet<String> {
    alerts().iter().map(|r| r["alert"].as_str().unwrap().to_owned()).collect()
}

/// The anchors GitHub gives the headings of a Markdown file: lower case, spaces to `-`,
/// punctuation other than `-` and `_` dropped.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_prometheus_config_and_its_rule_files_load() {
    let dir = repo_path("deploy/prometheus");
    let Some(out) = promtool(&["check", "config", "prometheus.yml"], &dir) else { return };
    assert!(out.contains("1 rule files found"), "prometheus.yml loads rules.yml:\n{out}");
    let Some(out) = promtool(&["check", "rules", "rules.yml"], &dir) else { return };
    assert!(out.contains(&format!("{} rules found", alert_names().len())), "{out}");
}

#[test]
fn every_alert_passes_its_unit_tests() {
    let dir = repo_path("deploy/prometheus");
    let Some(out) = promtool(&["test", "rules", "rules_test.yml"], &dir) else { return };
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_case_that_fires_and_one_that_does_not() {
    let alerts = alert_names();
    for wanted in [
        "SmartPrefetchHitRatioLow",
        "SmartPrefetchUpstreamErrors",
        "SmartPrefetchConsumerLagGrowing",
        "SmartPrefetchNoPredictions",
        "SmartPrefetchServiceDown",
        "SmartPrefetchDeadLetters",
        "SmartPrefetchInvalidMessages",
        "SmartPrefetchCacheErrors",
        "SmartPrefetchIngestRejecting",
        "SmartPrefetchIngestKafkaUnavailable",
        "SmartPrefetchRestarting",
        "SmartPrefetchReadThroughSlow",
        "SmartPrefetchReadThroughErrors",
    ] {
        assert!(alerts.contains(wanted), "rules.yml lost {wanted}: {alerts:?}");
    }
    let tests = yaml("deploy/prometheus/rules_test.yml");
    assert_eq!(
        tests["rule_files"][0].as_str(),
        Some("rules.yml"),
        "the unit tests load the deployed rules"
    );
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for t in tests["tests"].as_sequence().expect("tests") {
        for case in t["alert_rule_test"].as_sequence().cloned().unwrap_or_default() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            assert!(
                alerts.contains(&name),
                "rules_test.yml tests {name}, which rules.yml does not define"
            );
            let expected = case["exp_alerts"].as_sequence().map_or(0, |a| a.len());
            if expected > 0 {
                fires.insert(name);
            } else {
                silent.insert(name);
            }
        }
    }
    for a in &alerts {
        assert!(fires.contains(a), "no unit test in which {a} fires");
        assert!(silent.contains(a), "no unit test in which {a} stays silent");
    }
}

#[test]
fn every_alert_has_a_runbook_section_that_says_what_to_do() {
    let runbook = std::fs::read_to_string(repo_path("docs/runbook.md")).expect("docs/runbook.md");
    let anchors = heading_anchors(&runbook);
    let alerts = alerts();
    assert!(!alerts.is_empty());
    for rule in &alerts {
        let name = rule["alert"].as_str().unwrap();
        for key in ["summary", "description", "runbook_url"] {
            assert!(rule["annotations"][key].is_string(), "{name} has no {key} annotation");
        }
        assert!(rule["labels"]["severity"].is_string(), "{name} has no severity label");
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = url
            .strip_prefix("docs/runbook.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not docs/runbook.md#<anchor>"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: the anchor is the alert's name");
        assert!(anchors.contains(anchor), "{name}: docs/runbook.md has no heading #{anchor}");
        // The section tells what to check and what to do, not just the alert's name.
        let section = runbook
            .split("\n## ")
            .find(|s| s.starts_with(&format!("{name}\n")))
            .unwrap_or_else(|| panic!("no `## {name}` section"));
        for part in ["**Means:**", "**Check:**", "**Do:**"] {
            assert!(section.contains(part), "runbook section {name} lacks {part}");
        }
    }
}

#[test]
fn heading_anchors_follow_githubs_rules() {
    let a =
        heading_anchors("# Runbook\n## SmartPrefetchHitRatioLow\n## First look, whatever fired\n");
    assert_eq!(
        a,
        BTreeSet::from([
            "runbook".to_owned(),
            "smartprefetchhitratiolow".to_owned(),
            "first-look-whatever-fired".to_owned()
        ])
    );
}
