//! The model's configuration: what operators write ([`ModelConfig`]) and the validated form the
//! model runs on ([`Settings`]).
//!
//! Validation happens once, in [`ModelConfig::validate`]; every error names the field at fault so
//! an operator can fix a config file without reading code.

use chrono_tz::Tz;
use prefetch_contract::config::{hour_table, LiveConfig};
pub use prefetch_contract::config::{parse_hour_weights, ConfigError};
use serde::{Deserialize, Serialize};

/// What the analyzer's model is asked to do. Every field has a default, so `{}` is a valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Most predictions one tick publishes (best first).
    pub top_n: usize,
    /// Least calibrated probability a prediction must reach to be published, in [0, 1].
    pub min_confidence: f64,
    /// When false the model still learns but publishes nothing.
    pub enabled: bool,
    /// Intensity multipliers by market hour, as ordered `("a-b", weight)` pairs. A range is the
    /// half-open interval of hours `[a, b)` in market time; `"21-9"` wraps past midnight.
    /// Ranges must not overlap; hours no range covers weigh 1.
    pub hour_weights: Vec<(String, f64)>,
    /// IANA name of the market's time zone; hours and weekdays are read in it, DST included.
    pub market_tz: String,
    /// How far ahead a prediction looks, in seconds: `confidence` is the probability of a query
    /// within this long.
    pub horizon_s: u64,
    /// How long per-key history is kept, in seconds. Keys with no event in it are forgotten.
    pub retention_s: u64,
    /// Width of the per-key count buckets, in seconds. Must divide 3600 so that no bucket
    /// straddles a market hour.
    pub bucket_s: u64,
    /// Longest pause between two queries of one client that still counts as one session (and so
    /// as a learnable sequence), in seconds.
    pub session_gap_s: u64,
    /// How far behind the watermark an event may be and still be folded in, in seconds. Older
    /// events are counted and dropped.
    pub late_bound_s: u64,
}

impl Default for ModelConfig {
    /// The live config's defaults (the original tool's), and a week of hourly buckets.
    fn default() -> Self {
        let base = ModelConfig {
            top_n: 0,
            min_confidence: 0.0,
            enabled: false,
            hour_weights: Vec::new(),
            market_tz: String::new(),
            horizon_s: 0,
            retention_s: 7 * 86_400,
            bucket_s: 3_600,
            session_gap_s: 30 * 60,
            late_bound_s: 5 * 60,
        };
        base.with_live(&LiveConfig::default())
    }
}

/// The validated configuration, in the units the model computes with.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub top_n: usize,
    pub min_confidence: f64,
    pub enabled: bool,
    pub tz: Tz,
    /// Weight of each market hour 0–23.
    pub hour_weight: [f64; 24],
    /// Which configured range covers each market hour (`hour_weights.len()` when none does);
    /// the calibration layer keeps one table per range.
    pub hour_class: [u8; 24],
    pub classes: usize,
    pub horizon: u32,
    pub retention: u32,
    pub bucket: u32,
    pub session_gap: u32,
    pub late_bound: u32,
}

impl ModelConfig {
    /// This config with the fields the live config sets (the `prefetch.config` topic) taken
    /// from `live`; the rest (retention, buckets, session gap, late bound) are deployment
    /// settings and stay.
    pub fn with_live(&self, live: &LiveConfig) -> ModelConfig {
        ModelConfig {
            top_n: live.top_n,
            min_confidence: live.min_confidence,
            enabled: live.enabled,
            hour_weights: live.hour_weights.clone(),
            market_tz: live.market_tz.clone(),
            horizon_s: live.horizon_s,
            ..self.clone()
        }
    }

    /// Checks every field and returns the form the model runs on, or the first field at fault.
    pub(crate) fn validate(&self) -> Result<Settings, ConfigError> {
        if self.top_n == 0 || self.top_n > 100_000 {
            return Err(ConfigError::new(
                "top_n",
                format!("is {}; must be between 1 and 100000", self.top_n),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(ConfigError::new(
                "min_confidence",
                format!("is {}; must be a probability in [0, 1]", self.min_confidence),
            ));
        }
        let tz: Tz = self.market_tz.parse().map_err(|_| {
            ConfigError::new(
                "market_tz",
                format!(
                    "{:?} is not an IANA time zone name (e.g. America/New_York)",
                    self.market_tz
                ),
            )
        })?;
        let bucket = secs("bucket_s", self.bucket_s, 60, 3_600)?;
        if 3_600 % bucket != 0 {
            return Err(ConfigError::new(
                "bucket_s",
                format!("is {bucket}; must divide 3600 (e.g. 60, 300, 900, 3600)"),
            ));
        }
        let retention = secs("retention_s", self.retention_s, 3_600, 31 * 86_400)?;
        if retention % bucket != 0 {
            return Err(ConfigError::new(
                "retention_s",
                format!("is {retention}; must be a whole number of buckets of {bucket} s"),
            ));
        }
        let horizon = secs("horizon_s", self.horizon_s, 1, retention.into())?;
        let session_gap = secs("session_gap_s", self.session_gap_s, 1, retention.into())?;
        let late_bound = secs("late_bound_s", self.late_bound_s, 0, retention.into())?;
        let (hour_weight, hour_class) = hour_table(&self.hour_weights)?;
        Ok(Settings {
            top_n: self.top_n,
            min_confidence: self.min_confidence,
            enabled: self.enabled,
            tz,
            hour_weight,
            hour_class,
            classes: self.hour_weights.len() + 1,
            horizon,
            retention,
            bucket,
            session_gap,
            late_bound,
        })
    }
}

fn secs(field: &str, v: u64, min: u64, max: u64) -> Result<u32, ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::new(
            field,
            format!("is {v} s; must be between {min} and {max} s"),
        ));
    }
    // max is at most 31 days, well inside u32.
    Ok(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(cfg: ModelConfig) -> String {
        cfg.validate().expect_err("config should be refused").field
    }

    #[test]
    fn defaults_validate_and_cover_the_day() {
        let s = ModelConfig::default().validate().unwrap();
        assert_eq!(s.hour_weight[9], 1.5);
        assert_eq!(s.hour_weight[14], 1.2);
        assert_eq!(s.hour_weight[16], 1.3);
        assert_eq!(s.hour_weight[20], 0.8);
        // "21-9" wraps past midnight and is half-open: 21 and 8 are in, 9 is not.
        assert_eq!((s.hour_weight[21], s.hour_weight[0], s.hour_weight[8]), (0.3, 0.3, 0.3));
        assert_eq!(s.hour_class[23], 4);
        assert_eq!(s.classes, 6);
    }

    #[test]
    fn each_bad_field_is_named() {
        let d = ModelConfig::default;
        assert_eq!(field_of(ModelConfig { top_n: 0, ..d() }), "top_n");
        assert_eq!(field_of(ModelConfig { min_confidence: 1.5, ..d() }), "min_confidence");
        assert_eq!(field_of(ModelConfig { min_confidence: f64::NAN, ..d() }), "min_confidence");
        assert_eq!(field_of(ModelConfig { market_tz: "Mars/Olympus".into(), ..d() }), "market_tz");
        assert_eq!(field_of(ModelConfig { bucket_s: 700, ..d() }), "bucket_s");
        assert_eq!(field_of(ModelConfig { retention_s: 10, ..d() }), "retention_s");
        assert_eq!(field_of(ModelConfig { horizon_s: 0, ..d() }), "horizon_s");
        assert_eq!(field_of(ModelConfig { session_gap_s: 0, ..d() }), "session_gap_s");
        assert_eq!(field_of(ModelConfig { late_bound_s: 40 * 86_400, ..d() }), "late_bound_s");
    }

    #[test]
    fn bad_hour_ranges_name_their_index() {
        let with = |ranges: &[(&str, f64)]| ModelConfig {
            hour_weights: ranges.iter().map(|(r, w)| (r.to_string(), *w)).collect(),
            ..ModelConfig::default()
        };
        let err = with(&[("9-11", 1.0), ("10-12", 1.0)]).validate().unwrap_err();
        assert_eq!(err.field, "hour_weights[1]");
        assert!(err.message.contains("overlaps hour_weights[0]"), "{err}");
        assert_eq!(field_of(with(&[("9-11", 1.0), ("nine-11", 1.0)])), "hour_weights[1]");
        assert_eq!(field_of(with(&[("9-9", 1.0)])), "hour_weights[0]");
        assert_eq!(field_of(with(&[("9-25", 1.0)])), "hour_weights[0]");
        assert_eq!(field_of(with(&[("9-11", -1.0)])), "hour_weights[0]");
        // "20-24" is the last four hours; uncovered hours fall back to the default weight.
        let s = with(&[("20-24", 2.0)]).validate().unwrap();
        assert_eq!(
            (s.hour_weight[19], s.hour_weight[20], s.hour_weight[23], s.hour_weight[0]),
            (1.0, 2.0, 2.0, 1.0)
        );
    }

    #[test]
    fn deserialises_partial_json_and_refuses_unknown_fields() {
        let cfg: ModelConfig =
            serde_json::from_str(r#"{"top_n": 3, "hour_weights": [["0-12", 2.0]]}"#).unwrap();
        assert_eq!(cfg.top_n, 3);
        assert_eq!(cfg.hour_weights, vec![("0-12".to_owned(), 2.0)]);
        assert_eq!(cfg.horizon_s, 300);
        assert!(serde_json::from_str::<ModelConfig>(r#"{"topn": 3}"#).is_err());
    }

    #[test]
    fn command_line_hour_weights() {
        let w = parse_hour_weights("9-11=1.5, 21-9=0.3").unwrap();
        assert_eq!(w, vec![("9-11".to_owned(), 1.5), ("21-9".to_owned(), 0.3)]);
        assert_eq!(parse_hour_weights("9-11=fast").unwrap_err().field, "hour_weights[0]");
        assert_eq!(parse_hour_weights("9-11=1,12-13").unwrap_err().field, "hour_weights[1]");
    }
}
