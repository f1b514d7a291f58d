//! Applying the live config (`prefetch.config`) to the running model.
//!
//! The model starts from the flags; once the config topic holds a valid value, its fields
//! (top_n, min_confidence, enabled, hour weights, market time zone, horizon, fetch budget)
//! replace the flags' and every later change is applied within moments, without a restart and without losing what
//! the model learned. A value the model refuses (e.g. a horizon longer than its retention) is
//! logged and the model keeps the config it had. With refresh-ahead on, the live config's TTLs
//! tell the model how long the warmer's cached copies live.

use super::Shared;
use crate::{CacheTtls, ModelConfig};
use prefetch_common::config::LiveConfig;
use prefetch_common::feed::on_change;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Applies every change of `config` from now on, until `stop` (the value current at the call
/// is the caller's to apply).
pub async fn follow(
    shared: Arc<Shared>,
    base: Base,
    config: watch::Receiver<Option<LiveConfig>>,
    stop: CancellationToken,
) {
    on_change(config, stop, |live| apply(&shared, &base, live)).await
}

/// What the flags set and the live config does not.
#[derive(Debug, Clone)]
pub struct Base {
    /// The model's deployment settings (retention, buckets…) and start-up values.
    pub model: ModelConfig,
    /// Whether refresh-ahead is on (`--refresh-ahead`).
    pub refresh_ahead: bool,
}

/// Applies one live config to the model now.
pub fn apply(shared: &Shared, base: &Base, live: &LiveConfig) {
    let mut model = shared.model();
    match model.reconfigure(base.model.with_live(live)) {
        Ok(()) => {
            model.set_budget(live.budget);
            if base.refresh_ahead {
                model.set_cache_ttls(CacheTtls::of_live(live));
            }
            tracing::info!(
                top_n = live.top_n,
                min_confidence = live.min_confidence,
                enabled = live.enabled,
                horizon_s = live.horizon_s,
                budget = %live.budget,
                "Live config applied."
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "Live config refused by the model; keeping the previous one.")
        }
    }
}
