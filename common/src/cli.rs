//! Command-line helpers shared by every binary.

/// The one duration parser of every flag (`250ms`, `5s`, `1h30m`, `1d`; a bare number is
/// seconds), from the wire-contract crate so the thin CLI and the config share it.
pub use prefetch_contract::duration::parse_duration;
