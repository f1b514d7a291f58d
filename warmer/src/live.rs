//! Applying the live config (`prefetch.config`) to the running warmer.
//!
//! The warmer starts from its flags; once the config topic holds a valid value, its fields
//! replace them: `enabled`, `top_n`, `min_confidence` and the market time zone in the policy,
//! and the whole TTL table. The next batch of predictions (and the next read-through fetch)
//! uses the new values; nothing restarts. The holdback share and the active hours stay as the
//! flags set them: they are per-deployment experiment settings, not part of the shared config.

use crate::cache::Ttls;
use crate::state::Shared;
use prefetch_common::config::LiveConfig;
use prefetch_common::feed::on_change;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Applies every change of `config` from now on, until `stop` (the value current at the call
/// is the caller's to apply).
pub async fn follow(
    shared: Arc<Shared>,
    config: watch::Receiver<Option<LiveConfig>>,
    stop: CancellationToken,
) {
    on_change(config, stop, |live| apply(&shared, live)).await
}

/// Applies one live config now.
pub fn apply(shared: &Shared, live: &LiveConfig) {
    // Validated by the feed, so the zone parses; keep the old one if it somehow does not.
    let tz = live.tz().ok();
    shared.policy.send_modify(|p| {
        p.enabled = live.enabled;
        p.top_n = live.top_n;
        p.min_confidence = live.min_confidence;
        if let Some(tz) = tz {
            p.schedule.tz = tz;
        }
    });
    shared.ttls.send_replace(Ttls::of(live));
    tracing::info!(
        enabled = live.enabled,
        top_n = live.top_n,
        min_confidence = live.min_confidence,
        "Live config applied."
    );
}
