//! A warmer under test: started on fresh topics and a fresh cache, waited for through its
//! metrics, its cache files read for when each key became visible.

use super::Args;
use anyhow::{ensure, Context};
use chrono::{DateTime, Utc};
use prefetch_common::contract::{Module, Ticker};
use prefetch_common::kafka::{KafkaArgs, TopicArgs};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A running warmer with its cache directory.
pub(super) struct Warmer {
    url: String,
    cache: PathBuf,
    pub(super) topic: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Warmer {
    pub(super) async fn start(args: &Args, upstream: &str, name: &str) -> anyhow::Result<Self> {
        let mut cfg = warmer::Config::new(args.brokers.clone());
        cfg.kafka = KafkaArgs::new(&args.brokers);
        cfg.topics = TopicArgs::prefixed(&format!("bench-wa-{}-{name}.", std::process::id()));
        cfg.group = format!("bench-wa-{}-{name}", std::process::id());
        cfg.upstream_url = format!("{upstream}/{{module}}/{{ticker}}");
        cfg.upstream_concurrency = args.concurrency;
        cfg.cache_fsync = args.cache_fsync;
        let cache =
            args.dir.join(format!("prefetch-bench-warmer-{}", std::process::id())).join(name);
        prefill(&cache, args.prefill)?;
        cfg.cache = cache.display().to_string();
        // Nothing but the upstream and the cache may bind: every key is warmed, at once.
        cfg.spread = Duration::ZERO;
        cfg.holdback = 0.0;
        cfg.min_confidence = 0.0;
        cfg.top_n = usize::MAX;
        cfg.rate_limit = 0.0;
        cfg.active_hours = None;
        cfg.active_days = None;
        let topic = cfg.topics.predictions_topic.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(warmer::serve(cfg, listener, shutdown.clone()));
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            ensure!(!task.is_finished(), "the warmer stopped during start-up");
            ensure!(Instant::now() < deadline, "the warmer was not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { url, cache, topic, shutdown, task })
    }

    async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.url)).await?.text().await?)
    }

    /// Waits until `n` predictions have ended (any outcome); fails unless all were stored.
    pub(super) async fn wait_handled(&self, n: usize, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics().await?;
            let handled = sum(&text, "smart_prefetch_warmer_warms_total{", "");
            if handled >= n as f64 {
                let stored = sum(&text, "smart_prefetch_warmer_warms_total{", "outcome=\"stored\"");
                let outcomes: Vec<&str> = text
                    .lines()
                    .filter(|l| l.starts_with("smart_prefetch_warmer_warms_total{"))
                    .collect();
                ensure!(stored == n as f64, "{stored} of {n} predictions stored: {outcomes:?}");
                return Ok(text);
            }
            ensure!(
                Instant::now() < deadline,
                "only {handled} of {n} predictions handled within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When `ticker`'s entry became visible: max(file ctime, entry fetched_at).
    pub(super) fn stored_at(&self, ticker: &str) -> anyhow::Result<DateTime<Utc>> {
        let path = self.cache.join("price").join(format!("{ticker}.json"));
        let meta =
            std::fs::metadata(&path).with_context(|| format!("{} missing", path.display()))?;
        let ctime =
            DateTime::from_timestamp(meta.ctime(), meta.ctime_nsec() as u32).context("ctime")?;
        let entry: warmer::cache::Entry = serde_json::from_slice(&std::fs::read(&path)?)?;
        Ok(ctime.max(entry.fetched_at))
    }

    pub(super) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("the warmer did not stop within 30 s")???;
        Ok(())
    }
}

/// Writes `k` live entries of another module into a fresh cache directory, as a warmer that has
/// been running would find them (indexed at start-up).
fn prefill(cache: &Path, k: usize) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(cache);
    std::fs::create_dir_all(cache)?;
    if k == 0 {
        return Ok(());
    }
    let dir = cache.join("fundamentals");
    std::fs::create_dir_all(&dir)?;
    let now = Utc::now();
    for i in 0..k {
        let entry = warmer::cache::Entry {
            module: Module::parse("fundamentals")?,
            ticker: Ticker::parse(&format!("PRE{i}"))?,
            fetched_at: now,
            expires_at: now + chrono::Duration::days(1),
            source: warmer::cache::Source::Warm,
            confidence: Some(0.9),
            body: serde_json::json!({"price": 187.42, "currency": "USD"}),
            negative: false,
        };
        std::fs::write(dir.join(format!("PRE{i}.json")), serde_json::to_vec_pretty(&entry)?)?;
    }
    Ok(())
}

/// Sum of the samples starting with `prefix` whose labels contain `label`.
fn sum(text: &str, prefix: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cumulative buckets `(le, count)` of the prediction → cache histogram.
pub(super) fn buckets(text: &str) -> Vec<(f64, f64)> {
    buckets_of(text, "smart_prefetch_warmer_prediction_to_cache_seconds")
}

/// Cumulative buckets `(le, count)` of the unlabelled histogram `name`.
pub(crate) fn buckets_of(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|l| {
            let (le, rest) = l.split_once('"')?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// Quantile `q` (in ms) of the observations between two scrapes, interpolated linearly within
/// the bucket it falls in (`histogram_quantile`).
pub(crate) fn hist_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let cum: Vec<(f64, f64)> = after
        .iter()
        .map(|&(le, c)| (le, c - before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1)))
        .collect();
    let total = cum.last().map_or(0.0, |b| b.1);
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for &(le, c) in &cum {
        if c >= rank {
            if le.is_infinite() {
                return lo * 1000.0;
            }
            return (lo + (le - lo) * (rank - below) / (c - below).max(f64::MIN_POSITIVE)) * 1000.0;
        }
        (lo, below) = (le, c);
    }
    f64::NAN
}
