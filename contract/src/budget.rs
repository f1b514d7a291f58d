//! The fetch budget: how many extra upstream calls warming may spend (issue #13).
//!
//! Users think in API quota, not in `min_confidence`. The budget is the primary knob of the live
//! config; `top_n` and `min_confidence` stay as caps on top of it.
//!
//! - A **ratio** (`1.3`, the default): every upstream call — demand fetches plus warms — may be
//!   at most this many times the calls no warming would have made. The analyzer counts the
//!   latter online from a shadow of each key's copy in a cache never warmed (same TTLs, query
//!   times alone), so a ratio of 1.3 lets warms add up to 0.3× the fetches of no warming. The
//!   backtest measures the real ratio next to it.
//! - An **absolute rate** (`120/min`, also `2/s` or `7200/h`): warms may spend this many calls
//!   per minute, whatever the demand.
//! - **off**: only `top_n` and `min_confidence` limit warming (the original tool's behaviour).
//!
//! In JSON a ratio is a number (`"budget": 1.3`) and the others are strings (`"budget":
//! "120/min"`, `"budget": "off"`); a string holding a ratio (`"1.3"`, `"1.3x"`) is read too. The
//! command line takes the same strings (`prefetch-config --budget 1.2`, `--budget 120/min`).

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Largest ratio a budget may set: warms may add at most 99× the fetches of no warming.
pub const MAX_RATIO: f64 = 100.0;
/// Largest absolute rate a budget may set, calls per minute.
pub const MAX_PER_MINUTE: f64 = 10_000_000.0;

/// How much warming may spend on the upstream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// No budget: only `top_n` and `min_confidence` limit warming.
    Off,
    /// All upstream calls at most this many times the calls of no warming (at least 1).
    Ratio(f64),
    /// Warms at most this many upstream calls per minute.
    PerMinute(f64),
}

impl Default for Budget {
    /// `1.3`: warms may add up to 0.3× the fetches no warming would make.
    fn default() -> Self {
        Budget::Ratio(1.3)
    }
}

/// A budget that cannot be parsed or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BudgetError(pub String);

impl Budget {
    /// Checks the bounds: a ratio in [1, 100], a rate in (0, 10 000 000] per minute.
    pub fn validate(&self) -> Result<(), BudgetError> {
        match *self {
            Budget::Off => Ok(()),
            Budget::Ratio(r) if r.is_finite() && (1.0..=MAX_RATIO).contains(&r) => Ok(()),
            Budget::Ratio(r) => Err(BudgetError(format!(
                "ratio {r} must be between 1 (no warming) and {MAX_RATIO}; e.g. 1.3 lets warms add 0.3× the fetches of no warming"
            ))),
            Budget::PerMinute(m) if m.is_finite() && m > 0.0 && m <= MAX_PER_MINUTE => Ok(()),
            Budget::PerMinute(m) => Err(BudgetError(format!(
                "rate {m}/min must be above 0 and at most {MAX_PER_MINUTE}/min"
            ))),
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Off => f.write_str("off"),
            Budget::Ratio(r) => write!(f, "{r}"),
            Budget::PerMinute(m) => write!(f, "{m}/min"),
        }
    }
}

impl FromStr for Budget {
    type Err = BudgetError;

    /// `1.3` or `1.3x` (a ratio), `120/min`, `2/s`, `7200/h` (a rate), `off`. Validated.
    fn from_str(s: &str) -> Result<Self, BudgetError> {
        let b = Budget::parse_unchecked(s)?;
        b.validate()?;
        Ok(b)
    }
}

/// All upstream calls over the calls of no warming, `(demand + warms) / no_warming`: what a
/// ratio budget holds below its ratio. `None` before any call of no warming.
pub fn spend_ratio(demand_fetches: u64, warms: u64, no_warming_fetches: u64) -> Option<f64> {
    (no_warming_fetches > 0).then(|| (demand_fetches + warms) as f64 / no_warming_fetches as f64)
}

impl Budget {
    /// Whether a spend is within the budget: `spend_ratio` at most a ratio budget, or `warms`
    /// over `span_s` seconds of event time at most the `share` (0–1) of a rate budget's calls,
    /// plus the minute's worth its bucket starts with. `None` with the budget off or before
    /// there is anything to judge.
    pub fn holds(
        &self,
        spend_ratio: Option<f64>,
        warms: u64,
        span_s: u64,
        share: f64,
    ) -> Option<bool> {
        match *self {
            Budget::Off => None,
            Budget::Ratio(r) => spend_ratio.map(|x| x <= r + 1e-9),
            Budget::PerMinute(m) => {
                (span_s > 0).then(|| warms as f64 <= m * share * (span_s as f64 / 60.0 + 1.0))
            }
        }
    }

    /// The syntax of [`FromStr`] without the bounds (the config's validation checks those and
    /// names the field).
    fn parse_unchecked(s: &str) -> Result<Self, BudgetError> {
        let s = s.trim();
        let bad = || {
            BudgetError(format!(
                "{s:?} is not a budget; expected a ratio such as 1.3, a rate such as 120/min (or 2/s, 7200/h), or off"
            ))
        };
        let number = |n: &str| n.trim().parse::<f64>().map_err(|_| bad());
        Ok(if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
            Budget::Off
        } else if let Some((n, unit)) = s.split_once('/') {
            let per_minute = match unit.trim().to_ascii_lowercase().as_str() {
                "s" | "sec" | "second" => 60.0,
                "m" | "min" | "minute" => 1.0,
                "h" | "hour" => 1.0 / 60.0,
                _ => return Err(bad()),
            };
            Budget::PerMinute(number(n)? * per_minute)
        } else {
            Budget::Ratio(number(s.strip_suffix(['x', 'X']).unwrap_or(s))?)
        })
    }
}

impl Serialize for Budget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Budget::Ratio(r) => s.serialize_f64(*r),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Budget;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a ratio such as 1.3, a rate such as "120/min", or "off""#)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Budget, E> {
                Ok(Budget::Ratio(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Budget, E> {
                Ok(Budget::Ratio(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Budget, E> {
                Ok(Budget::Ratio(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Budget, E> {
                // Bounds are checked by the config's validation, which names the field.
                Budget::parse_unchecked(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ratios_rates_and_off_and_refuses_the_rest() {
        assert_eq!("1.2".parse::<Budget>().unwrap(), Budget::Ratio(1.2));
        assert_eq!("1.5x".parse::<Budget>().unwrap(), Budget::Ratio(1.5));
        assert_eq!("120/min".parse::<Budget>().unwrap(), Budget::PerMinute(120.0));
        assert_eq!("2/s".parse::<Budget>().unwrap(), Budget::PerMinute(120.0));
        assert_eq!("7200/h".parse::<Budget>().unwrap(), Budget::PerMinute(120.0));
        assert_eq!("OFF".parse::<Budget>().unwrap(), Budget::Off);
        for bad in ["0.9", "101", "NaN", "-3/min", "0/min", "5/fortnight", "lots", "", "inf"] {
            assert!(bad.parse::<Budget>().is_err(), "{bad} should be refused");
        }
        assert!("0.5".parse::<Budget>().unwrap_err().0.contains("between 1"));
    }

    #[test]
    fn json_round_trips_a_ratio_as_a_number_and_a_rate_as_a_string() {
        for b in [Budget::Ratio(1.3), Budget::PerMinute(90.0), Budget::Off] {
            let v = serde_json::to_value(b).unwrap();
            assert_eq!(serde_json::from_value::<Budget>(v).unwrap(), b);
        }
        assert_eq!(serde_json::to_value(Budget::Ratio(1.3)).unwrap(), serde_json::json!(1.3));
        assert_eq!(serde_json::to_value(Budget::PerMinute(90.0)).unwrap(), "90/min");
        assert_eq!(
            serde_json::from_value::<Budget>(serde_json::json!(2)).unwrap(),
            Budget::Ratio(2.0)
        );
        assert!(serde_json::from_value::<Budget>(serde_json::json!(true)).is_err());
        // Out of bounds but well-formed: read, then refused by validation (naming the field).
        assert_eq!(
            serde_json::from_value::<Budget>(serde_json::json!("0.5")).unwrap(),
            Budget::Ratio(0.5)
        );
    }
}
