//! One environment prefix: every setting a flag reads from the environment is `PREFETCH_<NAME>`
//! (`PREFETCH_KAFKA_BROKERS`, `PREFETCH_WARMER_CACHE`, `PREFETCH_MARKET_TZ` for both the analyzer
//! and the warmer). The names of earlier releases (`KAFKA_BROKERS`, `WARMER_CACHE`, the warmer's
//! `MARKET_TZ`, …) still work: [`parse`] copies a value set only under the old name to the new
//! one before the flags are read, and [`warn_renamed`] says which to rename once logging is up.

use clap::{CommandFactory, FromArgMatches};

/// The prefix of every environment variable a flag reads.
pub const PREFIX: &str = "PREFETCH_";

/// Old names are the new ones without the prefix, for the families earlier releases used. Only
/// these are adopted: a bare `API` or `TOP_N` in someone's environment is not ours.
const LEGACY_FAMILIES: &[&str] =
    &["ANALYZER_", "INGEST_", "WARMER_", "KAFKA_", "TOPIC_", "LOG_", "DEMO_"];
const LEGACY_NAMES: &[&str] = &["MARKET_TZ"];

/// An old environment variable whose value was taken under its new name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    /// The name of earlier releases, still set.
    pub old: String,
    /// The name that now carries the value.
    pub new: String,
}

/// The old name of `new`, when it had one.
pub fn legacy_name(new: &str) -> Option<&str> {
    let old = new.strip_prefix(PREFIX)?;
    (LEGACY_FAMILIES.iter().any(|f| old.starts_with(f)) || LEGACY_NAMES.contains(&old))
        .then_some(old)
}

/// Parses the command line of `T` (exiting with clap's message and code 2 on a usage error, as
/// `T::parse` does) after adopting old environment names; returns what was adopted.
pub fn parse<T: CommandFactory + FromArgMatches>() -> (T, Vec<Renamed>) {
    let renamed = adopt(&T::command());
    // Built again: clap reads each variable when the command is built, not when it parses.
    let matches = T::command().get_matches();
    let parsed = T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    (parsed, renamed)
}

/// Copies every old name that is set, and whose new name is not, to the new name.
fn adopt(cmd: &clap::Command) -> Vec<Renamed> {
    let mut out = Vec::new();
    let mut stack = vec![cmd];
    while let Some(c) = stack.pop() {
        stack.extend(c.get_subcommands());
        for arg in c.get_arguments() {
            let Some(new) = arg.get_env().and_then(|e| e.to_str()) else { continue };
            let Some(old) = legacy_name(new) else { continue };
            if std::env::var_os(new).is_some() || out.iter().any(|r: &Renamed| r.new == new) {
                continue;
            }
            if let Some(v) = std::env::var_os(old) {
                // Before any thread of ours reads the environment: called first thing in main.
                std::env::set_var(new, v);
                out.push(Renamed { old: old.to_owned(), new: new.to_owned() });
            }
        }
    }
    out
}

/// Logs one warning per adopted old name.
pub fn warn_renamed(renamed: &[Renamed]) {
    for r in renamed {
        tracing::warn!(old = %r.old, new = %r.new, "Deprecated environment variable: rename it; the old name will stop working in a later release.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_families_have_old_names() {
        assert_eq!(legacy_name("PREFETCH_KAFKA_BROKERS"), Some("KAFKA_BROKERS"));
        assert_eq!(legacy_name("PREFETCH_WARMER_CACHE"), Some("WARMER_CACHE"));
        assert_eq!(legacy_name("PREFETCH_MARKET_TZ"), Some("MARKET_TZ"));
        assert_eq!(legacy_name("PREFETCH_API"), None);
        assert_eq!(legacy_name("PREFETCH_TOP_N"), None);
        assert_eq!(legacy_name("KAFKA_BROKERS"), None);
    }
}
