//! Command-line conventions: short aliases for the original tool's stuttering commands, and
//! shell completions generated from the same definitions.

use std::process::Command;

/// Built with the default feature `full` (else the thin client: API commands and completions).
const FULL: bool = cfg!(feature = "full");

fn prefetch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prefetch")).args(args).output().unwrap()
}

#[test]
fn short_aliases_run_the_original_commands() {
    for (alias, original) in [
        ("config", "prefetch-config"),
        ("stats", "prefetch-stats"),
        ("warmup", "prefetch-warmup"),
        ("status", "cache-status"),
    ] {
        let a = prefetch(&[alias, "--help"]);
        let o = prefetch(&[original, "--help"]);
        assert!(a.status.success(), "{alias}: {}", String::from_utf8_lossy(&a.stderr));
        // Same command: the same options and explanations (the usage line names the command).
        let body = |out: &std::process::Output| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with("Usage:"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(body(&a), body(&o), "{alias} is not {original}");
    }
    let help = String::from_utf8_lossy(&prefetch(&["--help"]).stdout).into_owned();
    assert!(help.contains("[alias: config]"), "aliases are shown in --help:\n{help}");
}

#[test]
fn completions_cover_every_command() {
    let out = prefetch(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for cmd in ["cache-status", "prefetch-config", "config", "predictions"] {
        assert!(script.contains(cmd), "bash completion lacks {cmd}");
    }
    // Whole words: `up` is also in `prefetch-warmup`.
    let words: Vec<&str> =
        script.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).collect();
    for cmd in prefetch::FULL_ONLY {
        assert_eq!(words.contains(cmd), FULL, "bash completion and {cmd} (full build: {FULL})");
    }
    assert!(prefetch(&["completions", "zsh"]).status.success());
    assert_eq!(prefetch(&["completions", "tcsh"]).status.code(), Some(2), "unknown shell");
}

#[test]
fn every_environment_variable_has_the_one_prefix() {
    // Every command's help, so a flag added anywhere is checked.
    let top = String::from_utf8_lossy(&prefetch(&["--help"]).stdout).into_owned();
    let mut names = Vec::new();
    let full_only = prefetch::FULL_ONLY.iter().filter(|_| FULL);
    for cmd in full_only.chain(&["cache-status", "prefetch-config"]) {
        assert!(top.contains(cmd), "{cmd} is not a command");
        let help = String::from_utf8_lossy(&prefetch(&[cmd, "--help"]).stdout).into_owned();
        names.extend(
            help.split("[env: ")
                .skip(1)
                .filter_map(|s| s.split(['=', ']']).next())
                .map(str::to_owned),
        );
    }
    // The thin client's two commands have --api and --token each.
    assert!(names.len() > if FULL { 10 } else { 3 }, "{names:?}");
    for n in names {
        assert!(n.starts_with("PREFETCH_"), "{n} lacks the PREFETCH_ prefix");
    }
}

#[test]
fn the_full_builds_commands_are_there_or_the_thin_client_says_where_they_are() {
    let top = String::from_utf8_lossy(&prefetch(&["--help"]).stdout).into_owned();
    assert_eq!(top.contains("This is the thin client"), !FULL, "{top}");
    for cmd in prefetch::FULL_ONLY {
        if FULL {
            let out = prefetch(&[cmd, "--help"]);
            assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        } else {
            let out = prefetch(&[cmd, "--help"]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
            assert!(err.contains(&format!("`{cmd}` is not in this build")), "{err}");
            assert!(err.contains("cargo install --path cli"), "{err}");
        }
    }
}
