//! Applying the live config (`prefetch.config`) to the running model.
//!
//! The model starts from the flags; once the config topic holds a valid value, its fields
//! (top_n, min_confidence, enabled, hour weights, market time zone, horizon) replace the flags'
//! and every later change is applied within moments, without a restart and without losing what
//! the model learned. A value the model refuses (e.g. a horizon longer than its retention) is
//! logged and the model keeps the config it had.

use super::Shared;
use crate::ModelConfig;
use prefetch_common::config::LiveConfig;
use prefetch_common::feed::on_change;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Applies every change of `config` from now on, until `stop` (the value current at the call
/// is the caller's to apply).
pub async fn follow(shared: Arc<Shared>, base: ModelConfig, config: watch::Receiver<Option<LiveConfig>>, stop: CancellationToken) {
    on_change(config, stop, |live| apply(&shared, &base, live)).await
}

/// Applies one live config to the model now.
pub fn apply(shared: &Shared, base: &ModelConfig, live: &LiveConfig) {
    match shared.model().reconfigure(base.with_live(live)) {
        Ok(()) => tracing::info!(top_n = live.top_n, min_confidence = live.min_confidence, enabled = live.enabled, horizon_s = live.horizon_s, "Live config applied."),
        Err(e) => tracing::warn!(error = %e, "Live config refused by the model; keeping the previous one."),
    }
}
