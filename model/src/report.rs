//! What the model reports: how an event was taken in ([`Admission`], [`Recorded`]), its
//! running totals ([`Counters`]), the state it holds ([`Footprint`]) and why a key has its
//! confidence ([`Explanation`]).

use prefetch_contract::prediction::{Prediction, Reason};
use serde::Serialize;

/// How an event was taken in, relative to the watermark (the latest `tick` time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// At or after the watermark.
    OnTime,
    /// Behind the watermark but within the late bound: folded into the state.
    Late,
    /// Further behind than the late bound (or before 2000): counted and ignored.
    Dropped,
}

/// What [`Model::record`](crate::Model::record) did with an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Whether the event was used.
    pub admission: Admission,
    /// Event-driven [`Reason::Sequence`] predictions: learned follow-ups of this event whose
    /// probability within the horizon reaches `min_confidence`, best first, at most `top_n`.
    pub predictions: Vec<Prediction>,
}

/// Running totals since the model was built (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Events at or after the watermark.
    pub events_on_time: u64,
    /// Events behind the watermark but within the late bound, folded in.
    pub events_late: u64,
    /// Events beyond the late bound, dropped.
    pub events_dropped: u64,
    /// Keys forgotten because nothing of them was left in the retention window.
    pub keys_expired: u64,
    /// Predictions returned by `tick`.
    pub predictions_tick: u64,
    /// Predictions returned by `record`.
    pub predictions_sequence: u64,
    /// Events folded from history by `record_history`.
    pub events_rebuilt: u64,
    /// Calibration samples resolved (hit or miss).
    pub calibration_samples: u64,
}

/// How much state the model holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Footprint {
    /// Live `(ticker, module)` keys.
    pub keys: usize,
    /// Occupied count buckets over all keys.
    pub buckets: usize,
    /// Interned tickers.
    pub tickers: usize,
    /// Interned modules.
    pub modules: usize,
    /// Clients seen within the session gap (as of the last housekeeping).
    pub clients: usize,
    /// Approximate bytes of the key table (slots, index, buckets).
    pub key_bytes: usize,
}

/// Why a key has the confidence it has (see [`Model::explain`](crate::Model::explain)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Recent rate, events/s (EWMA with a time constant of one horizon).
    pub rate_recent: f64,
    /// Steady rate, events/s (EWMA with a time constant of max(1 h, 12 horizons)).
    pub rate_popular: f64,
    /// Seasonal rate for this market hour and weekday, events/s, once a day of history exists.
    pub rate_seasonal: Option<f64>,
    /// The configured weight of the current market hour.
    pub hour_weight: f64,
    /// Estimated current rate including the hour weight, events/s.
    pub intensity: f64,
    /// `1 − exp(−intensity × horizon)`.
    pub raw_probability: f64,
    /// The raw probability after online calibration: what `tick` publishes.
    pub confidence: f64,
    /// The component that dominated.
    pub reason: Reason,
    /// Events of the key in the retention window.
    pub events_in_window: u64,
}
