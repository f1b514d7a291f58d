//! The live configuration every analyzer and warmer instance applies: one JSON document, the
//! latest value of key [`CONFIG_KEY`] in the compacted `prefetch.config` topic.
//!
//! It is validated where it is written (ingest's `POST ?action=config`, the CLI through it) and
//! again where it is read, because a topic can be written by anyone: a reader that meets an
//! invalid value logs it and keeps the config it had. Until the topic holds a value, each
//! service runs with its own flags (whose defaults are [`LiveConfig::default`]).
//!
//! A change is a partial document ([`LiveConfig::patched`]): `{"top_n": 20}` changes `top_n`
//! and keeps the rest; `ttl_s` is merged module by module; an unknown field is refused by name.

use crate::budget::Budget;
use crate::contract::Module;
use chrono_tz::Tz;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// The key of the current config in the config topic (the topic is compacted: only the latest
/// value per key is kept).
pub const CONFIG_KEY: &str = "config";

/// Longest horizon a config may set (and a prediction may carry): one day.
pub const MAX_HORIZON_S: u64 = 86_400;
/// Longest TTL a config may set: 30 days.
const MAX_TTL_S: u64 = 30 * 86_400;

/// What the pipeline is asked to do: which predictions to publish and warm, and how long cached
/// entries live. Every field has a default (the original tool's), so `{}` is a valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveConfig {
    /// When false the analyzer keeps learning but publishes nothing, and the warmer warms nothing.
    pub enabled: bool,
    /// Most predictions one analyzer tick publishes, and most keys one warmer batch warms.
    pub top_n: usize,
    /// Least calibrated probability a prediction must reach to be published and warmed, in [0, 1].
    pub min_confidence: f64,
    /// Intensity multipliers by market hour: `{"9-11": 1.5, "21-9": 0.3}`. A range is the
    /// half-open interval of hours `[a, b)` in market time and may wrap past midnight. Ranges
    /// must not overlap; hours no range covers weigh 1. (An array of `["a-b", w]` pairs is read
    /// too.) Read in order of start hour.
    #[serde(serialize_with = "hour_weights_out", deserialize_with = "hour_weights_in")]
    pub hour_weights: Vec<(String, f64)>,
    /// IANA name of the market's time zone; hours and weekdays are read in it, DST included.
    pub market_tz: String,
    /// How far ahead a prediction looks, in seconds: a confidence is the probability of a query
    /// within this long.
    pub horizon_s: u64,
    /// Time to live of cached entries by module, in seconds.
    pub ttl_s: BTreeMap<String, u64>,
    /// Time to live of modules not in `ttl_s`, in seconds.
    pub default_ttl_s: u64,
    /// What warming may spend on the upstream: a ratio of all upstream calls over the calls of
    /// no warming (`1.3`: warms add up to 0.3× those), a rate (`"120/min"`), or `"off"`
    /// (only `top_n` and `min_confidence` limit warming). See [`Budget`].
    pub budget: Budget,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            top_n: 10,
            // Chosen on the trace family's development seeds (BENCHMARKS.md, "Evaluation on
            // held-out traces"): with the fetch budget holding the spend, a lower floor lets it
            // spend on the best candidates instead of leaving most of it unspent. 0.2 until the
            // warmer deferred refreshes to their copy's expiry; with refreshes that cheap, 0.1
            // lifted the development set's mean share from 0.806 to 0.821 (0.05: 0.820).
            min_confidence: 0.1,
            hour_weights: [
                ("9-11", 1.5),
                ("11-15", 1.2),
                ("15-17", 1.3),
                ("17-21", 0.8),
                ("21-9", 0.3),
            ]
            .into_iter()
            .map(|(r, w)| (r.to_owned(), w))
            .collect(),
            market_tz: "America/New_York".to_owned(),
            horizon_s: 300,
            ttl_s: [("price", 60), ("news", 300), ("fundamentals", 86_400)]
                .into_iter()
                .map(|(m, s)| (m.to_owned(), s))
                .collect(),
            default_ttl_s: 300,
            budget: Budget::default(),
        }
    }
}

/// A config value that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The field at fault, e.g. `min_confidence` or `hour_weights[2]`.
    pub field: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl LiveConfig {
    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        hour_table(&self.hour_weights)?;
        self.tz()?;
        if self.horizon_s == 0 || self.horizon_s > MAX_HORIZON_S {
            return Err(ConfigError::new(
                "horizon_s",
                format!("is {}; must be between 1 and {MAX_HORIZON_S} s", self.horizon_s),
            ));
        }
        for (module, ttl) in &self.ttl_s {
            let field = format!("ttl_s.{module}");
            let parsed =
                Module::parse(module).map_err(|e| ConfigError::new(&field, e.to_string()))?;
            if parsed.as_str() != module {
                return Err(ConfigError::new(
                    &field,
                    format!("module names are lower case: write {:?}", parsed.as_str()),
                ));
            }
            check_ttl(&field, *ttl)?;
        }
        check_ttl("default_ttl_s", self.default_ttl_s)?;
        self.budget.validate().map_err(|e| ConfigError::new("budget", e.0))
    }

    /// The market time zone.
    pub fn tz(&self) -> Result<Tz, ConfigError> {
        self.market_tz.parse().map_err(|_| {
            ConfigError::new(
                "market_tz",
                format!(
                    "{:?} is not an IANA time zone name (e.g. America/New_York)",
                    self.market_tz
                ),
            )
        })
    }

    /// The TTL of `module`'s entries, in seconds.
    pub fn ttl_for(&self, module: &str) -> u64 {
        self.ttl_s.get(module).copied().unwrap_or(self.default_ttl_s)
    }

    /// This config with the fields of `patch` (a JSON object) changed, validated. `ttl_s` is
    /// merged module by module; every other field is replaced whole.
    pub fn patched(&self, patch: &Value) -> Result<LiveConfig, ConfigError> {
        let Value::Object(changes) = patch else {
            return Err(ConfigError::new(
                "config",
                "must be a JSON object of the fields to change",
            ));
        };
        let Ok(Value::Object(mut merged)) = serde_json::to_value(self) else {
            unreachable!("a LiveConfig serialises to an object")
        };
        for (field, value) in changes {
            match (merged.get_mut(field), value) {
                (None, _) => return Err(unknown_field(field)),
                (Some(Value::Object(current)), Value::Object(update)) if field == "ttl_s" => {
                    current.extend(update.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                (Some(slot), _) => *slot = value.clone(),
            }
        }
        let cfg = LiveConfig::from_value(Value::Object(merged))?;
        Ok(cfg)
    }

    /// Reads a whole config document (absent fields take their defaults) and validates it.
    pub fn from_value(v: Value) -> Result<LiveConfig, ConfigError> {
        let cfg: LiveConfig = serde_json::from_value(v).map_err(|e| type_error(&e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a config document from JSON bytes (a topic message, a file) and validates it.
    pub fn from_json(bytes: &[u8]) -> Result<LiveConfig, ConfigError> {
        let v: Value = crate::contract::parse_json_strict(bytes)
            .map_err(|e| ConfigError::new("config", format!("is not JSON: {e}")))?;
        LiveConfig::from_value(v)
    }
}

fn check_ttl(field: &str, ttl: u64) -> Result<(), ConfigError> {
    if ttl == 0 || ttl > MAX_TTL_S {
        return Err(ConfigError::new(
            field,
            format!("is {ttl}; must be between 1 and {MAX_TTL_S} s"),
        ));
    }
    Ok(())
}

fn unknown_field(field: &str) -> ConfigError {
    ConfigError::new(
        field,
        "is not a config field; known fields: enabled, top_n, min_confidence, hour_weights, market_tz, horizon_s, ttl_s, default_ttl_s, budget",
    )
}

/// Turns serde's message ("unknown field `x`, expected …", "invalid type: … at line 1 column 9")
/// into an error that names the field when serde did.
fn type_error(msg: &str) -> ConfigError {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        return unknown_field(rest.split('`').next().unwrap_or(rest));
    }
    ConfigError::new("config", msg.to_owned())
}

/// Parses `"a-b"` into the market hours it covers, in order (`"21-9"` wraps past midnight;
/// `"20-24"` ends at midnight).
pub fn parse_hour_range(field: &str, raw: &str) -> Result<Vec<usize>, ConfigError> {
    let bad = |why: &str| {
        ConfigError::new(
            field,
            format!(
                "range {raw:?} {why}; expected \"a-b\" with hours 0-24, e.g. \"9-11\" or \"21-9\""
            ),
        )
    };
    let (a, b) = raw.trim().split_once('-').ok_or_else(|| bad("has no '-'"))?;
    let a: usize = a.trim().parse().map_err(|_| bad("does not start with an hour"))?;
    let b: usize = b.trim().parse().map_err(|_| bad("does not end with an hour"))?;
    if a > 23 || b > 24 {
        return Err(bad("is out of range"));
    }
    let b = b % 24;
    if a == b {
        return Err(bad("is empty (start equals end)"));
    }
    let len = (b + 24 - a) % 24;
    Ok((0..len).map(|i| (a + i) % 24).collect())
}

/// The weight of each market hour 0–23, and which range covers it (`ranges.len()` when none
/// does; hours outside every range weigh 1). Refuses overlapping ranges and weights outside
/// [0, 100], naming the range's index.
pub fn hour_table(ranges: &[(String, f64)]) -> Result<([f64; 24], [u8; 24]), ConfigError> {
    if ranges.len() > 24 {
        return Err(ConfigError::new(
            "hour_weights",
            format!("has {} ranges; at most 24 fit in a day", ranges.len()),
        ));
    }
    let mut weight = [1.0; 24];
    let mut class = [ranges.len() as u8; 24];
    let mut owner: [Option<usize>; 24] = [None; 24];
    for (i, (range, w)) in ranges.iter().enumerate() {
        let field = format!("hour_weights[{i}]");
        if !w.is_finite() || *w < 0.0 || *w > 100.0 {
            return Err(ConfigError::new(
                field,
                format!("weight {w} for {range:?} must be a number between 0 and 100"),
            ));
        }
        for h in parse_hour_range(&field, range)? {
            if let Some(j) = owner[h] {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "range {range:?} overlaps hour_weights[{j}] ({:?}) at hour {h}",
                        ranges[j].0
                    ),
                ));
            }
            owner[h] = Some(i);
            weight[h] = *w;
            class[h] = i as u8;
        }
    }
    Ok((weight, class))
}

/// Parses the command-line form `MODULE=DURATION` of one TTL (`chart=120`, `chart=2m`,
/// `news=1h30m`): the shared duration syntax, a bare number being seconds, in whole seconds.
/// The module and the range are checked by validation, like any other config.
pub fn parse_ttl_spec(spec: &str) -> Result<(String, u64), String> {
    let (m, d) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?} is not MODULE=DURATION (e.g. chart=120 or chart=2m)"))?;
    let d = crate::duration::parse_duration(d).map_err(|e| format!("{spec:?}: {e}"))?;
    if d.subsec_nanos() != 0 {
        return Err(format!("{spec:?}: a TTL is a whole number of seconds"));
    }
    Ok((m.trim().to_owned(), d.as_secs()))
}

/// Parses the command-line form `"9-11=1.5,11-15=1.2,21-9=0.3"` into `hour_weights` pairs.
/// The ranges themselves are checked by validation, like any other config.
pub fn parse_hour_weights(spec: &str) -> Result<Vec<(String, f64)>, ConfigError> {
    spec.split(',')
        .filter(|p| !p.trim().is_empty())
        .enumerate()
        .map(|(i, part)| {
            let field = || format!("hour_weights[{i}]");
            let (range, w) = part.split_once('=').ok_or_else(|| {
                ConfigError::new(field(), format!("{part:?} is not \"a-b=weight\""))
            })?;
            let w: f64 = w.trim().parse().map_err(|_| {
                ConfigError::new(field(), format!("weight {:?} is not a number", w.trim()))
            })?;
            Ok((range.trim().to_owned(), w))
        })
        .collect()
}

fn hour_weights_out<S: Serializer>(ranges: &[(String, f64)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(ranges.len()))?;
    for (r, w) in ranges {
        m.serialize_entry(r, w)?;
    }
    m.end()
}

fn hour_weights_in<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    struct Ranges;
    impl<'de> Visitor<'de> for Ranges {
        type Value = Vec<(String, f64)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(r#"an object such as {"9-11": 1.5} or an array of ["9-11", 1.5] pairs"#)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = map.next_entry::<String, f64>()? {
                out.push(entry);
            }
            Ok(out)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(entry) = seq.next_element::<(String, f64)>()? {
                out.push(entry);
            }
            Ok(out)
        }
    }
    let mut ranges = d.deserialize_any(Ranges).map_err(de::Error::custom)?;
    // JSON objects have no order: keep the ranges in order of their start hour, so one config
    // reads the same whichever way it was written (ranges that do not parse go last and are
    // refused by validation).
    ranges.sort_by_key(|(r, _)| {
        r.split_once('-').and_then(|(a, _)| a.trim().parse::<u32>().ok()).unwrap_or(u32::MAX)
    });
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(patch: Value) -> String {
        LiveConfig::default().patched(&patch).expect_err("patch should be refused").field
    }

    #[test]
    fn defaults_are_the_original_tools_and_valid() {
        let d = LiveConfig::default();
        d.validate().unwrap();
        assert_eq!((d.top_n, d.min_confidence, d.enabled), (10, 0.1, true));
        let (w, class) = hour_table(&d.hour_weights).unwrap();
        assert_eq!((w[9], w[12], w[16], w[18], w[22], w[8]), (1.5, 1.2, 1.3, 0.8, 0.3, 0.3));
        assert_eq!(class[0], 4);
    }

    #[test]
    fn serialises_hour_weights_as_an_object_and_reads_both_forms() {
        let v = serde_json::to_value(LiveConfig::default()).unwrap();
        assert_eq!(v["hour_weights"]["21-9"], json!(0.3));
        let back: LiveConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, LiveConfig::default());
        let pairs = LiveConfig::from_value(json!({"hour_weights": [["0-12", 2.0]]})).unwrap();
        assert_eq!(pairs.hour_weights, vec![("0-12".to_owned(), 2.0)]);
    }

    #[test]
    fn a_patch_changes_only_its_fields_and_merges_ttls() {
        let cfg =
            LiveConfig::default().patched(&json!({"top_n": 20, "ttl_s": {"chart": 120}})).unwrap();
        assert_eq!(cfg.top_n, 20);
        assert_eq!(cfg.min_confidence, 0.1);
        assert_eq!(cfg.ttl_for("chart"), 120);
        assert_eq!(cfg.ttl_for("price"), 60, "modules not in the patch keep their TTL");
        assert_eq!(cfg.ttl_for("options"), 300);
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of(json!({"top_n": 0})), "top_n");
        assert_eq!(field_of(json!({"min_confidence": 1.5})), "min_confidence");
        assert_eq!(field_of(json!({"market_tz": "Mars/Olympus"})), "market_tz");
        assert_eq!(field_of(json!({"horizon_s": 0})), "horizon_s");
        assert_eq!(field_of(json!({"ttl_s": {"price": 0}})), "ttl_s.price");
        assert_eq!(field_of(json!({"ttl_s": {"bad module!": 5}})), "ttl_s.bad module!");
        assert_eq!(field_of(json!({"default_ttl_s": 40 * 86_400})), "default_ttl_s");
        assert_eq!(
            field_of(json!({"hour_weights": {"9-11": 1.0, "10-12": 1.0}})),
            "hour_weights[1]"
        );
        assert_eq!(field_of(json!({"hour_weights": {"9-25": 1.0}})), "hour_weights[0]");
        assert_eq!(field_of(json!({"topn": 3})), "topn");
        assert_eq!(field_of(json!({"budget": 0.8})), "budget");
        assert_eq!(field_of(json!({"budget": "-5/min"})), "budget");
        assert!(LiveConfig::default().patched(&json!([1])).is_err());
        // A wrong type is refused with serde's message, which names the field.
        let e = LiveConfig::default().patched(&json!({"top_n": "ten"})).unwrap_err();
        assert!(e.message.contains("invalid type"), "{e}");
    }

    #[test]
    fn the_budget_defaults_to_1_3_and_takes_a_ratio_a_rate_or_off() {
        assert_eq!(LiveConfig::default().budget, Budget::Ratio(1.3));
        let d = LiveConfig::default();
        assert_eq!(d.patched(&json!({"budget": 1.2})).unwrap().budget, Budget::Ratio(1.2));
        let rate = d.patched(&json!({"budget": "90/min"})).unwrap();
        assert_eq!(rate.budget, Budget::PerMinute(90.0));
        assert_eq!(serde_json::to_value(&rate).unwrap()["budget"], json!("90/min"));
        assert_eq!(d.patched(&json!({"budget": "off"})).unwrap().budget, Budget::Off);
        // A document written before the field existed reads with the default.
        assert_eq!(LiveConfig::from_value(json!({"top_n": 3})).unwrap().budget, Budget::Ratio(1.3));
    }

    #[test]
    fn hour_ranges_wrap_and_refuse_bad_syntax() {
        assert_eq!(parse_hour_range("f", "21-2").unwrap(), vec![21, 22, 23, 0, 1]);
        assert_eq!(parse_hour_range("f", "20-24").unwrap(), vec![20, 21, 22, 23]);
        for bad in ["9", "a-b", "9-9", "24-3", "3-25"] {
            assert!(parse_hour_range("f", bad).is_err(), "{bad} should be refused");
        }
        let w = parse_hour_weights("9-11=1.5, 21-9=0.3").unwrap();
        assert_eq!(w, vec![("9-11".to_owned(), 1.5), ("21-9".to_owned(), 0.3)]);
        assert_eq!(parse_hour_weights("9-11=fast").unwrap_err().field, "hour_weights[0]");
    }
}
