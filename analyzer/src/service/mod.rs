//! The analyzer service around the pure model: Kafka in and out, admin HTTP, metrics.
//!
//! # Layout
//! - `config.rs`: flags and environment ([`Config`]).
//! - `pipeline.rs`: the consume loop (receive, settle offsets, tick, stats); it declares:
//!   - `fold.rs`: the parse and fold threads the loop hands chunks of messages to (fold into
//!     the model, publish event-driven predictions and dead letters);
//!   - `parse`: the contract's `canonical` scanner (the canonical event form without serde).
//! - `consumer.rs`: the group consumer's context (cooperative rebalances: new partitions are
//!   paused until restored; lag).
//! - `checkpoint.rs`: each partition's state on the compacted state topic (write, read back).
//! - `restore.rs`: a newly assigned partition's state: its checkpoint, then a replay of the
//!   events after it (`rebuild.rs` re-reads a range of the topic; without a checkpoint, the
//!   whole retained window).
//! - `watermark.rs`: the model's clock, the minimum of the partitions' event-time watermarks.
//! - `live.rs`: applying the live config topic to the running model.
//! - `http.rs`: `/v1/stats`, `/v1/predictions`, `/v1/window`, `/healthz`, `/readyz`, `/metrics`.
//! - `metrics.rs`: the Prometheus collectors.

pub mod checkpoint;
pub mod config;
pub mod consumer;
pub mod http;
pub mod live;
pub mod metrics;
pub mod pipeline;
pub mod rebuild;
pub mod restore;
pub mod watermark;

pub use config::Config;

use crate::Model;
use anyhow::Context;
use chrono::{DateTime, Utc};
use prefetch_common::contract::Ticker;
use prefetch_common::feed::ConfigFeed;
use prefetch_common::kafka::{ensure_topics, TopicSpec};
use prefetch_common::prediction::Prediction;
use rdkafka::consumer::{Consumer, StreamConsumer};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// State shared by the consume loop and the admin HTTP.
pub struct Shared {
    model: Mutex<Model>,
    predictions: Mutex<Vec<Prediction>>,
    watermarks: Mutex<watermark::Watermarks>,
    /// Assigned partitions whose state is not restored yet (`/readyz` is 503 while any is),
    /// and whether the group was joined at all.
    restoring: Mutex<(bool, HashSet<i32>)>,
    /// Which partition each ticker's events come from, so a revoked partition's keys can be
    /// forgotten (the topic is keyed by ticker, so a ticker lives on one partition).
    partitions: Mutex<HashMap<Ticker, i32>>,
    /// The collectors.
    pub metrics: metrics::Metrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the service down with a poisoned lock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Shared state around a fresh model; a partition without events for `idle` no longer
    /// holds back the clock.
    pub fn new(model: Model, metrics: metrics::Metrics, idle: Duration) -> Self {
        Self {
            model: Mutex::new(model),
            predictions: Mutex::default(),
            watermarks: Mutex::new(watermark::Watermarks::new(idle)),
            restoring: Mutex::default(),
            partitions: Mutex::default(),
            metrics,
        }
    }

    /// The model, locked.
    pub fn model(&self) -> MutexGuard<'_, Model> {
        lock(&self.model)
    }

    /// Notes that `ticker`'s events come from `partition`.
    pub fn note_ticker(&self, ticker: &Ticker, partition: i32) {
        let mut parts = lock(&self.partitions);
        if parts.get(ticker) != Some(&partition) {
            parts.insert(ticker.clone(), partition);
        }
    }

    /// Advances `partition`'s event-time watermark to `ts` (if later).
    pub fn advance(&self, partition: i32, ts: DateTime<Utc>) {
        lock(&self.watermarks).advance(partition, ts, std::time::Instant::now());
    }

    /// The model's clock: the minimum watermark over partitions that are not idle (the tick's
    /// time), if any event was folded.
    pub fn event_time(&self) -> Option<DateTime<Utc>> {
        lock(&self.watermarks).clock(std::time::Instant::now())
    }

    /// `partition`'s backlog (events not read yet) as librdkafka's statistics report it.
    pub fn note_backlog(&self, partition: i32, backlog: i64) {
        lock(&self.watermarks).backlog(partition, backlog);
    }

    /// `partition`'s own watermark (for its checkpoint).
    pub fn watermark_of(&self, partition: i32) -> Option<DateTime<Utc>> {
        lock(&self.watermarks).of(partition)
    }

    /// The tickers whose events come from `partition`.
    pub fn tickers_of(&self, partition: i32) -> HashSet<Ticker> {
        lock(&self.partitions)
            .iter()
            .filter(|(_, p)| **p == partition)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Partitions were assigned: not ready until each is restored.
    pub fn restoring(&self, partitions: &[i32]) {
        let now = std::time::Instant::now();
        let mut w = lock(&self.watermarks);
        for &p in partitions {
            w.restoring(p, now);
        }
        drop(w);
        let mut r = lock(&self.restoring);
        r.0 = true;
        r.1.extend(partitions);
        self.metrics.restoring(r.1.len());
    }

    /// `partition` is restored (or no longer ours); `backlog` events of it wait in Kafka
    /// (`None`: unknown, or revoked). A partition with a backlog holds the model's clock until
    /// it has been read (`watermark.rs`).
    pub fn restored(&self, partition: i32, backlog: Option<i64>) {
        lock(&self.watermarks).restored(partition, backlog, std::time::Instant::now());
        let mut r = lock(&self.restoring);
        r.1.remove(&partition);
        self.metrics.restoring(r.1.len());
    }

    /// The tickers of partitions still being restored (their predictions wait for the end).
    pub fn restoring_tickers(&self) -> HashSet<Ticker> {
        let restoring = lock(&self.restoring).1.clone();
        if restoring.is_empty() {
            return HashSet::new();
        }
        lock(&self.partitions)
            .iter()
            .filter(|(_, p)| restoring.contains(p))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Whether `partition` is still being restored.
    pub fn is_restoring(&self, partition: i32) -> bool {
        lock(&self.restoring).1.contains(&partition)
    }

    /// Why the analyzer is not ready to predict for its partitions, if it is not.
    pub fn not_ready(&self) -> Option<String> {
        let r = lock(&self.restoring);
        if !r.0 {
            return Some("not yet assigned partitions by the consumer group".into());
        }
        (!r.1.is_empty()).then(|| {
            let mut p: Vec<_> = r.1.iter().copied().collect();
            p.sort_unstable();
            format!("restoring the state of partitions {p:?}")
        })
    }

    /// Forgets every key whose ticker came from one of `partitions`; returns how many tickers.
    pub fn forget_partitions(&self, partitions: &[i32]) -> usize {
        let tickers: HashSet<Ticker> = {
            let mut parts = lock(&self.partitions);
            let gone: HashSet<Ticker> = parts
                .iter()
                .filter(|(_, p)| partitions.contains(p))
                .map(|(t, _)| t.clone())
                .collect();
            parts.retain(|t, _| !gone.contains(t));
            gone
        };
        lock(&self.watermarks).forget(partitions);
        self.model().forget_tickers(&tickers);
        tickers.len()
    }

    /// The last tick's predictions.
    pub fn predictions(&self) -> Vec<Prediction> {
        lock(&self.predictions).clone()
    }

    /// Replaces the last tick's predictions.
    pub fn set_predictions(&self, ps: Vec<Prediction>) {
        self.metrics.confidences(ps.iter().map(|p| p.confidence));
        *lock(&self.predictions) = ps;
    }

    /// The patterns snapshot at `now`, as JSON. Runs polars: call from a blocking thread. The
    /// model is locked only for the copy; the aggregation runs after, so folding goes on.
    pub fn stats_json(&self, now: DateTime<Utc>) -> anyhow::Result<Vec<u8>> {
        let (input, spend) = {
            let model = self.model();
            (model.patterns_input(now)?, model.spend_status())
        };
        let stats = crate::stats::aggregate(input)?;
        // The fetch budget's spend rides along, for the front door's status.
        let mut v = serde_json::to_value(&stats)?;
        v["budget"] = serde_json::to_value(spend)?;
        Ok(serde_json::to_vec(&v)?)
    }
}

/// Runs the analyzer: the admin HTTP on `--listen` and the pipeline, until `shutdown`.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    serve(cfg, listener, shutdown).await
}

/// The model the service starts with under `cfg`, from its model config `mc` (read once, by
/// [`Config::model_config`]): the fetch budget and, with refresh-ahead, the TTLs the warmer
/// starts with until the config topic says otherwise.
pub fn model_for(cfg: &Config, mc: crate::ModelConfig) -> anyhow::Result<Model> {
    let mut model = Model::new(mc).context("invalid model configuration")?;
    model.set_budget(cfg.budget);
    if cfg.refresh_ahead {
        model.set_cache_ttls(crate::CacheTtls::of_live(&cfg.start_ttls()?));
    }
    Ok(model)
}

/// Runs the analyzer with its admin HTTP on a bound `listener` (tests bind port 0).
pub async fn serve(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let base = live::Base { model: cfg.model_config()?, refresh_ahead: cfg.refresh_ahead };
    let model = model_for(&cfg, base.model.clone())?;
    let specs = [
        TopicSpec { name: cfg.topics.query_events_topic.clone(), compacted: false },
        TopicSpec { name: cfg.topics.predictions_topic.clone(), compacted: false },
        TopicSpec { name: cfg.topics.dlq_topic.clone(), compacted: false },
        TopicSpec { name: cfg.topics.stats_topic.clone(), compacted: true },
        TopicSpec { name: cfg.topics.config_topic.clone(), compacted: true },
    ];
    ensure_topics(&cfg.kafka, &specs, cfg.startup_timeout).await?;
    let metrics = metrics::Metrics::new();
    let shared = Arc::new(Shared::new(model, metrics.clone(), cfg.partition_idle));
    // The live config applies before the first event is folded, then on every change.
    let mut feed = ConfigFeed::start(&cfg.kafka, &cfg.topics.config_topic, shutdown.clone())?;
    if !feed.wait_caught_up(cfg.startup_timeout).await {
        tracing::warn!(topic = %cfg.topics.config_topic, "Config topic not read to its end in time; starting with the flags' config.");
    }
    let current = feed.config.borrow_and_update().clone();
    if let Some(live) = current {
        live::apply(&shared, &base, &live);
    }
    tokio::spawn(live::follow(shared.clone(), base, feed.config, shutdown.clone()));
    let producer = cfg.kafka.producer(Duration::from_secs(30))?;
    let mut cc = cfg.kafka.consumer_config(&cfg.group_id)?;
    cc.set("statistics.interval.ms", "5000");
    // Incremental rebalances: a partition an instance keeps is neither revoked nor restored.
    cc.set("partition.assignment.strategy", "cooperative-sticky");
    if let Some(id) = &cfg.group_instance_id {
        cc.set("group.instance.id", id);
    }
    // The operator's -X options win, as in every other client of the project.
    for opt in &cfg.kafka.options {
        if let Some((k, v)) = opt.split_once('=') {
            if k.trim() == "partition.assignment.strategy" {
                cc.set(k.trim(), v.trim());
            }
        }
    }
    let state_topic = if cfg.checkpoint_interval.is_zero() {
        tracing::info!(
            "Checkpoints off (--checkpoint-interval 0s): assignments replay the retained window."
        );
        None
    } else {
        let partitions =
            checkpoint::partition_count(&cfg.kafka, &cfg.topics.query_events_topic).await;
        let topic = cfg.state_topic();
        checkpoint::ensure_state_topic(&cfg.kafka, &topic, partitions).await.then_some(topic)
    };
    let context = consumer::GroupContext {
        changes: Mutex::default(),
        metrics,
        topic: cfg.topics.query_events_topic.clone(),
        shared: shared.clone(),
        wake: tokio::sync::Notify::new(),
        fetch: std::sync::OnceLock::new(),
    };
    let consumer: Arc<StreamConsumer<consumer::GroupContext>> =
        Arc::new(cc.create_with_context(context)?);
    consumer.subscribe(&[&cfg.topics.query_events_topic])?;

    let admin = Arc::new(http::AdminState {
        shared: shared.clone(),
        producer: producer.clone(),
        topic: cfg.topics.query_events_topic.clone(),
    });
    let addr = listener.local_addr()?;
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, http::router(admin))
            .with_graceful_shutdown(http_shutdown.cancelled_owned())
            .await
    });
    tracing::info!(%addr, topic = %cfg.topics.query_events_topic, group = %cfg.group_id, "Analyzer running.");

    let pipeline = pipeline::Pipeline {
        shared,
        producer: producer.clone(),
        consumer: consumer.clone(),
        topics: cfg.topics.clone(),
        stats_topic: cfg.topics.stats_topic.clone(),
        instance_id: cfg.instance_id(),
        tick_interval: cfg.tick_interval,
        stats_interval: cfg.stats_interval,
        kafka: cfg.kafka.clone(),
        state_topic,
        checkpoint_interval: cfg.checkpoint_interval,
    };
    let result = pipeline.run(shutdown.clone()).await;
    shutdown.cancel();
    let _ = server.await;
    tokio::task::spawn_blocking(move || {
        rdkafka::producer::Producer::flush(&producer, Duration::from_secs(10))
    })
    .await??;
    // Offsets are committed by now. Dropping the consumer leaves the group (so a successor is
    // assigned at once), but dropping a subscribed StreamConsumer has been seen to hang on the
    // MockCluster (rust-rdkafka #453, #509, #611): drop it on a detached thread and never wait.
    std::thread::spawn(move || drop(consumer));
    result
}
