//! The prediction contract: what the analyzer publishes and the warmer consumes.
//!
//! Anyone who can write the predictions topic can write anything to it, so deserialising a
//! [`Prediction`] validates it like a query event: a timestamp in the same range, a confidence
//! in [0, 1], a horizon the live config could have set. Past that, the date arithmetic on it
//! cannot overflow (a `generated_at` of year +262142 once panicked the warmer's consume task).

use crate::config::MAX_HORIZON_S;
use crate::contract::{Module, Ticker, MIN_EPOCH_MS};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Latest `generated_at` accepted: 2200-01-01. The model's own clock ends in 2136.
pub const MAX_GENERATED_AT_MS: i64 = 7_258_118_400_000;

/// What drove a prediction, for people reading it and for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Steady recent demand for the key.
    Popularity,
    /// The key's seasonal profile (this hour, this weekday) in market time.
    TimeOfDay,
    /// A recent burst well above the key's usual rate.
    Burst,
    /// A learned follow-up of a query that just happened (e.g. `price` → `chart`).
    Sequence,
    /// The key is polled at a fixed period (a dashboard, a scheduled job) and its next poll
    /// comes before the next tick, when its copy will have expired.
    Periodic,
}

/// One prediction: `(ticker, module)` will probably be queried within `horizon_s` seconds of
/// `generated_at`, with calibrated probability `confidence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Unchecked")]
pub struct Prediction {
    /// The instrument.
    pub ticker: Ticker,
    /// The data module.
    pub module: Module,
    /// Probability in [0, 1] that the key is queried within the horizon.
    pub confidence: f64,
    /// The horizon the probability refers to, in seconds.
    pub horizon_s: u64,
    /// Event time at which the prediction was made.
    pub generated_at: DateTime<Utc>,
    /// What drove it.
    pub reason: Reason,
}

impl Prediction {
    /// The horizon as a duration (capped at ten years, so a hostile `horizon_s` cannot overflow
    /// the date arithmetic).
    pub fn horizon(&self) -> chrono::Duration {
        chrono::Duration::seconds(
            i64::try_from(self.horizon_s).unwrap_or(i64::MAX / 1000).min(10 * 365 * 86_400),
        )
    }

    /// Whether the horizon has passed at `now`: the prediction says nothing about the future
    /// any more (warming for it would be too late). Checked arithmetic: an end past chrono's
    /// range is never stale.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.generated_at.checked_add_signed(self.horizon()).is_some_and(|end| end < now)
    }

    /// Checks what deserialising checks, for a prediction built in code.
    pub fn validate(&self) -> Result<(), PredictionError> {
        let ms = self.generated_at.timestamp_millis();
        if !(MIN_EPOCH_MS..MAX_GENERATED_AT_MS).contains(&ms) {
            return Err(PredictionError(format!(
                "generated_at {} is outside 2000-01-01..2200-01-01",
                self.generated_at
            )));
        }
        if !(self.confidence.is_finite() && (0.0..=1.0).contains(&self.confidence)) {
            return Err(PredictionError(format!(
                "confidence {} is not within [0, 1]",
                self.confidence
            )));
        }
        if self.horizon_s == 0 || self.horizon_s > MAX_HORIZON_S {
            return Err(PredictionError(format!(
                "horizon_s {} is not within 1..={MAX_HORIZON_S}",
                self.horizon_s
            )));
        }
        Ok(())
    }
}

/// Why a prediction was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PredictionError(pub String);

/// The wire shape before validation.
#[derive(Deserialize)]
struct Unchecked {
    ticker: Ticker,
    module: Module,
    confidence: f64,
    horizon_s: u64,
    generated_at: DateTime<Utc>,
    reason: Reason,
}

impl TryFrom<Unchecked> for Prediction {
    type Error = PredictionError;
    fn try_from(u: Unchecked) -> Result<Self, PredictionError> {
        let p = Prediction {
            ticker: u.ticker,
            module: u.module,
            confidence: u.confidence,
            horizon_s: u.horizon_s,
            generated_at: u.generated_at,
            reason: u.reason,
        };
        p.validate()?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid() -> serde_json::Value {
        json!({"ticker": "AAPL", "module": "price", "confidence": 0.5, "horizon_s": 300,
               "generated_at": "2026-03-09T14:30:00Z", "reason": "popularity"})
    }

    fn parse(patch: serde_json::Value) -> Result<Prediction, serde_json::Error> {
        let mut v = valid();
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v)
    }

    #[test]
    fn hostile_predictions_are_refused_when_read() {
        assert!(parse(json!({})).is_ok());
        for bad in [
            json!({"generated_at": "+262142-12-31T23:59:59Z"}),
            json!({"generated_at": "1970-01-01T00:00:00Z"}),
            json!({"generated_at": "2300-01-01T00:00:00Z"}),
            json!({"confidence": 1.5}),
            json!({"confidence": -0.1}),
            json!({"horizon_s": 0}),
            json!({"horizon_s": u64::MAX}),
            json!({"ticker": ".."}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn staleness_never_overflows() {
        let mut p = parse(json!({})).unwrap();
        // Built in code past the checks: the arithmetic still does not panic.
        p.generated_at = DateTime::<Utc>::MAX_UTC;
        p.horizon_s = u64::MAX;
        assert!(!p.is_stale(Utc::now()));
        p.generated_at = "2026-03-09T14:30:00Z".parse().unwrap();
        p.horizon_s = 300;
        assert!(p.is_stale("2026-03-09T14:35:01Z".parse().unwrap()));
        assert!(!p.is_stale("2026-03-09T14:34:59Z".parse().unwrap()));
    }
}
