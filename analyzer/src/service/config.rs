//! Command-line flags (each with an environment fallback) for the `analyzer` binary.

use crate::ModelConfig;
use clap::Parser;
use prefetch_common::cli::parse_duration;
use prefetch_common::kafka::{KafkaArgs, TopicArgs};
use prefetch_common::telemetry::LogArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Smart Prefetch analyzer: consumes query events in a consumer group, learns per-key rates,
/// seasonality and sequences in event time, and publishes calibrated predictions.
#[derive(Debug, Clone, Parser)]
#[command(name = "analyzer", version, about, long_about = None)]
pub struct Config {
    /// Address of the admin HTTP API (`/v1/stats`, `/v1/predictions`, health, metrics).
    #[arg(long, env = "PREFETCH_ANALYZER_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// Consumer group; analyzers in one group split the partitions (and so the tickers).
    #[arg(long, env = "PREFETCH_ANALYZER_GROUP", default_value = "prefetch-analyzer")]
    pub group_id: String,

    /// Static membership: this instance's `group.instance.id`, stable across restarts (e.g. the
    /// pod name of a StatefulSet). A restart within the session timeout then keeps its
    /// partitions without a rebalance. Unset: dynamic membership.
    #[arg(long, env = "PREFETCH_ANALYZER_GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,

    /// How often the state each owned partition contributes is checkpointed to the state topic
    /// (a new owner restores it and replays only the events after it). `0s` turns
    /// checkpoints off: every assignment then replays the retention window.
    #[arg(long, env = "PREFETCH_ANALYZER_CHECKPOINT_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,

    /// The compacted topic checkpoints go to, one partition per query-events partition
    /// (created if missing). Default: `<group id>.state`.
    #[arg(long, env = "PREFETCH_ANALYZER_STATE_TOPIC")]
    pub state_topic: Option<String>,

    /// A partition whose newest event arrived longer ago than this (wall clock) is idle: it no
    /// longer holds back the model's clock, which is the minimum event time over the other
    /// partitions.
    #[arg(long, env = "PREFETCH_ANALYZER_PARTITION_IDLE", default_value = "30s", value_parser = parse_duration)]
    pub partition_idle: Duration,

    /// How often predictions are published (wall-clock period; the model itself advances on
    /// event time).
    #[arg(long, env = "PREFETCH_ANALYZER_TICK_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub tick_interval: Duration,

    /// Refresh-ahead: track when the cache's copies expire (from the queries' hit flags, its own
    /// predictions and the live config's TTLs) and publish the keys whose warm now is most
    /// likely to serve a query, instead of the most popular keys, which are mostly cached
    /// already. `false` publishes the plain top keys by probability of a query.
    #[arg(long, env = "PREFETCH_ANALYZER_REFRESH_AHEAD", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub refresh_ahead: bool,

    /// TTL of the warmer's cached copies of one module, as MODULE=DURATION (repeatable), for
    /// refresh-ahead until the live config's `ttl_s` applies. Set it like the warmer's `--ttl`.
    /// Default: the live config's defaults (price 60, news 300, fundamentals 86400).
    #[arg(
        long = "cache-ttl",
        env = "PREFETCH_ANALYZER_CACHE_TTL",
        value_delimiter = ',',
        value_name = "MODULE=DURATION"
    )]
    pub cache_ttls: Vec<String>,

    /// TTL of other modules' cached copies in seconds, like the warmer's `--default-ttl`
    /// (start-up value; the live config's `default_ttl_s` replaces it).
    #[arg(
        long = "cache-default-ttl",
        env = "PREFETCH_ANALYZER_CACHE_DEFAULT_TTL",
        value_name = "SECONDS"
    )]
    pub cache_default_ttl: Option<u64>,

    /// How often the patterns snapshot is published to the stats topic.
    #[arg(long, env = "PREFETCH_ANALYZER_STATS_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub stats_interval: Duration,

    /// Id of this instance in the stats topic (default: host name and process id).
    #[arg(long, env = "PREFETCH_ANALYZER_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Model configuration as a JSON file (fields of the model config; absent fields keep their
    /// defaults). The flags below override it. These are start-up values: once the live config
    /// topic (`--config-topic`) holds a config, its top_n, min_confidence, enabled,
    /// hour_weights, market_tz and horizon_s apply, and change without a restart.
    #[arg(long, env = "PREFETCH_ANALYZER_MODEL_CONFIG", value_name = "FILE")]
    pub model_config: Option<PathBuf>,

    /// Most predictions one tick publishes.
    #[arg(long, env = "PREFETCH_TOP_N")]
    pub top_n: Option<usize>,

    /// Least confidence a published prediction has, in [0, 1].
    #[arg(long, env = "PREFETCH_MIN_CONFIDENCE")]
    pub min_confidence: Option<f64>,

    /// The fetch budget warming may spend: a ratio of all upstream calls over the calls of no
    /// warming (1.3: warms add up to 0.3x those), a rate such as 120/min (the deployment's: this
    /// instance spends its share of the events partitions), or off (only top_n and
    /// min_confidence limit). A start-up value, like the others: the live config's applies.
    #[arg(long, env = "PREFETCH_BUDGET", value_name = "RATIO|N/min|off", default_value = "1.3", value_parser = parse_budget)]
    pub budget: prefetch_common::budget::Budget,

    /// Publish predictions (`false` keeps learning but publishes nothing).
    #[arg(long, env = "PREFETCH_ENABLED")]
    pub enabled: Option<bool>,

    /// Hour weights in market time, e.g. `9-11=1.5,11-15=1.2,21-9=0.3` (ranges are [a, b) and
    /// may wrap past midnight).
    #[arg(long, env = "PREFETCH_HOUR_WEIGHTS")]
    pub hour_weights: Option<String>,

    /// The market's IANA time zone (hours and weekdays are read in it, DST included).
    #[arg(long, env = "PREFETCH_MARKET_TZ")]
    pub market_tz: Option<String>,

    /// Prediction horizon in seconds: a confidence is the probability of a query within it.
    #[arg(long, env = "PREFETCH_HORIZON_S")]
    pub horizon_s: Option<u64>,

    /// How long history is kept per key, in seconds (also how far back a restart re-reads).
    #[arg(long, env = "PREFETCH_RETENTION_S")]
    pub retention_s: Option<u64>,

    /// How long to wait for Kafka at start-up before giving up with an error.
    #[arg(long, env = "PREFETCH_ANALYZER_STARTUP_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub startup_timeout: Duration,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub topics: TopicArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,
}

impl Config {
    /// Defaults for everything but the brokers; what tests and embedding callers start from.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self::parse_from(["analyzer", "--brokers", &brokers.into()])
    }

    /// The model configuration: defaults, then the file, then the flags.
    pub fn model_config(&self) -> anyhow::Result<ModelConfig> {
        let mut m = match &self.model_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
                serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => ModelConfig::default(),
        };
        if let Some(v) = self.top_n {
            m.top_n = v;
        }
        if let Some(v) = self.min_confidence {
            m.min_confidence = v;
        }
        if let Some(v) = self.enabled {
            m.enabled = v;
        }
        if let Some(v) = &self.hour_weights {
            m.hour_weights = crate::parse_hour_weights(v)?;
        }
        if let Some(v) = &self.market_tz {
            m.market_tz = v.clone();
        }
        if let Some(v) = self.horizon_s {
            m.horizon_s = v;
        }
        if let Some(v) = self.retention_s {
            m.retention_s = v;
        }
        Ok(m)
    }

    /// The cache TTLs refresh-ahead starts with: the live config's defaults with
    /// `--cache-ttl` and `--cache-default-ttl` applied, validated like a config change.
    pub fn start_ttls(&self) -> anyhow::Result<prefetch_common::config::LiveConfig> {
        let mut ttls = serde_json::Map::new();
        for t in &self.cache_ttls {
            let (m, s) = prefetch_common::config::parse_ttl_spec(t)
                .map_err(|e| anyhow::anyhow!("--cache-ttl {e}"))?;
            ttls.insert(m, s.into());
        }
        let mut patch = serde_json::json!({ "ttl_s": ttls });
        if let Some(d) = self.cache_default_ttl {
            patch["default_ttl_s"] = d.into();
        }
        Ok(prefetch_common::config::LiveConfig::default().patched(&patch)?)
    }

    /// The checkpoint topic's name.
    pub fn state_topic(&self) -> String {
        self.state_topic.clone().unwrap_or_else(|| format!("{}.state", self.group_id))
    }

    /// This instance's id in the stats topic.
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "analyzer".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

fn parse_budget(s: &str) -> Result<prefetch_common::budget::Budget, String> {
    s.parse().map_err(|e: prefetch_common::budget::BudgetError| e.0)
}
