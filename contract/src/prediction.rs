//! The prediction contract: what the analyzer publishes and the warmer consumes.

use crate::contract::{Module, Ticker};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
}

/// One prediction: `(ticker, module)` will probably be queried within `horizon_s` seconds of
/// `generated_at`, with calibrated probability `confidence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// any more (warming for it would be too late).
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.generated_at + self.horizon() < now
    }
}
