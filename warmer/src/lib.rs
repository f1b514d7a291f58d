//! Smart Prefetch `warmer`: reads predictions and fetches the predicted keys from the upstream
//! data API into the cache before apps ask; serves the cache read-through to apps; measures the
//! hit rate it achieves against a holdback group that is never warmed.
//!
//! # Layout
//! - `config.rs`: flags and environment ([`Config`]), turned into the policy and TTL table.
//! - `policy` (in the pure `prefetch-model` crate, re-exported): the pure decisions (enabled,
//!   schedule in market time, staleness, holdback by a stable hash, confidence, freshness,
//!   and `top_n` for an operator's warm-up only: the analyzer budgets what it publishes), driven
//!   by an explicit `now`.
//! - `pacing.rs`: token bucket, jitter and backoff.
//! - `upstream.rs`: the upstream client (URL template, TLS, timeout, retries, concurrency,
//!   rate, `Retry-After`, `Cache-Control`).
//! - `headers.rs`: `Retry-After` and `Cache-Control` read as a cache proxy reads them.
//! - `credentials.rs`: upstream headers and query parameters from flags, env and a secrets
//!   file; URL redaction for everything printed.
//! - `cluster.rs`: warmers as one cluster over the shared Redis: the global rate limit (GCRA),
//!   demand-fetch leases and the useful-warm ledger.
//! - `flight.rs`: single-flight demand fetches (per instance and, with a cluster, across).
//! - `auth.rs`: the API token on `POST /v1/warmup`, the read token on the read routes.
//! - `cache/`: entries, TTLs, and the filesystem and Redis backends with sweeps and eviction.
//! - `warm.rs`: the predictions consume loop and the warm executor.
//! - `queries.rs`: the query-events consume loop (hit-rate metrics, useful warms).
//! - `consume.rs`: consumer construction, the lag gauge, commit-and-leak on shutdown.
//! - `live.rs`: applying the live config topic (policy and TTLs) without a restart.
//! - `state.rs`: what loops and handlers share (live policy behind a watch channel, ledger).
//! - `http.rs`: `/v1/cache/{module}/{ticker}`, `/v1/status`, `/v1/warmup`, health, metrics.
//! - `metrics.rs`: the Prometheus collectors.
//!
//! One prediction's path: `warm::run` reads it in a batch from the predictions topic,
//! `warm::warm_batch` asks the cache when its key expires and `policy::plan` decides; a chosen
//! key waits a random moment within the spread window, then a rate-limit token and a
//! concurrency slot, and `Upstream::fetch` GETs it (retrying 5xx and timeouts with backoff);
//! the body is written to the cache as a `warm` entry and the ledger remembers it. Once every
//! warm of the batch has ended, the batch's offsets are stored (committed by the client).
//! (With a Redis cache the rate-limit token comes from the cluster's GCRA and the ledger is in
//! Redis.) When an app later asks `GET /v1/cache/price/AAPL`, the hit is answered from the
//! cache and
//! published as a query event; `queries::run` reads it back, counts it by group, and, as the
//! warmed entry's first hit, as a useful warm.

pub mod auth;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod consume;
pub mod credentials;
pub mod flight;
pub mod headers;
pub mod http;
pub mod live;
pub mod metrics;
pub mod pacing;
pub use prefetch_model::policy;
pub mod queries;
pub mod state;
pub mod upstream;
pub mod warm;

pub use config::Config;

use anyhow::Context;
use cache::{Cache, Limits};
use chrono::Utc;
use prefetch_common::feed::ConfigFeed;
use prefetch_common::kafka::{ensure_topics, TopicSpec};
use state::{Options, Shared};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use upstream::{Upstream, UpstreamConfig};

/// How long Kafka may take to acknowledge a read-through query event.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the producer to deliver what it still holds.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `--listen` and serves until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    serve(cfg, listener, shutdown).await
}

/// Runs the warmer on a bound `listener` until `shutdown` is cancelled: both consume loops, the
/// sweeper and the HTTP API. On shutdown, HTTP drains, each loop stores what it finished and
/// commits, and the producer is flushed. Tests bind port 0 and pass the listener.
pub async fn serve(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Credentials and the CA first: a missing variable fails start-up before Kafka is asked.
    let upstream_cfg = upstream_config(&cfg)?;
    let topics = [
        TopicSpec { name: cfg.topics.predictions_topic.clone(), compacted: false },
        TopicSpec { name: cfg.topics.query_events_topic.clone(), compacted: false },
        TopicSpec { name: cfg.topics.config_topic.clone(), compacted: true },
        TopicSpec { name: cfg.topics.dlq_topic.clone(), compacted: false },
    ];
    ensure_topics(&cfg.kafka, &topics, cfg.startup_timeout).await?;
    let limits = Limits { max_entries: cfg.max_entries, max_bytes: cfg.max_bytes };
    let mut cache = tokio::time::timeout(
        cfg.startup_timeout,
        Cache::open(&cfg.cache, &cfg.redis_prefix, limits),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "cache {} did not open within {:?}",
            credentials::redact_url(&cfg.cache),
            cfg.startup_timeout
        )
    })?
    .with_context(|| format!("opening the cache {}", credentials::redact_url(&cfg.cache)))?;
    cache.set_fsync(cfg.cache_fsync);
    let metrics = metrics::Metrics::new();
    let cluster = match &cache {
        Cache::Redis(r) => Some(cluster::Cluster::new(r.connection(), &cfg.redis_prefix)),
        Cache::Fs(_) => None,
    };
    let upstream = Upstream::new(
        upstream_cfg,
        metrics.clone(),
        cluster.clone().filter(|_| cfg.rate_limit_scope == "cluster"),
    )?;
    let producer = cfg.kafka.producer(PRODUCE_TIMEOUT)?;
    let shared = Arc::new(Shared::new(
        cache,
        upstream,
        metrics.clone(),
        cfg.policy(),
        cfg.ttls(),
        cfg.spread,
        producer,
        cfg.topics.query_events_topic.clone(),
        cfg.topics.predictions_topic.clone(),
        cluster,
        Options {
            negative_ttl: cfg.negative_ttl,
            api_token: cfg.api_token.clone().map(|t| t.0),
            read_token: cfg.read_token.clone().map(|t| t.0),
            dlq_topic: cfg.topics.dlq_topic.clone(),
            batch_linger: cfg.batch_linger,
        },
    ));
    // The live config applies before the first prediction is read, then on every change.
    let mut feed = ConfigFeed::start(&cfg.kafka, &cfg.topics.config_topic, shutdown.clone())?;
    if !feed.wait_caught_up(cfg.startup_timeout).await {
        tracing::warn!(topic = %cfg.topics.config_topic, "Config topic not read to its end in time; starting with the flags' config.");
    }
    let current = feed.config.borrow_and_update().clone();
    if let Some(live) = current {
        live::apply(&shared, &live);
    }
    let predictions = consume::subscribe(
        &cfg.kafka,
        &cfg.group,
        &cfg.topics.predictions_topic,
        "predictions",
        metrics.clone(),
    )?;
    let queries = consume::subscribe(
        &cfg.kafka,
        &format!("{}.queries", cfg.group),
        &cfg.topics.query_events_topic,
        "queries",
        metrics.clone(),
    )?;

    // The loops stop with the service, or when HTTP fails on its own; a loop that ends on its
    // own (or panics) stops the service too (see consume::guard).
    let stop = shutdown.child_token();
    let failed = Arc::new(std::sync::OnceLock::new());
    let guard = |name, task| tokio::spawn(consume::guard(name, task, stop.clone(), failed.clone()));
    let loops = [
        guard(
            "predictions",
            Box::pin(warm::run(shared.clone(), predictions, stop.clone()))
                as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        ),
        guard("queries", Box::pin(queries::run(shared.clone(), queries, stop.clone()))),
        guard("sweep", Box::pin(sweep_loop(shared.clone(), cfg.sweep_interval, stop.clone()))),
        guard("config", Box::pin(live::follow(shared.clone(), feed.config, stop.clone()))),
    ];
    let addr = listener.local_addr()?;
    tracing::info!(%addr, cache = shared.cache.kind(), rate_limit = shared.upstream.limit_scope(), upstream = %credentials::redact_url(&cfg.upstream_url), predictions = %cfg.topics.predictions_topic, "Warmer listening.");
    let served = axum::serve(listener, http::router(shared.clone()))
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .await;
    stop.cancel();
    shared.stopping.cancel();
    for l in loops {
        if let Err(e) = l.await {
            tracing::error!(error = %e, "A warmer task failed.");
        }
    }
    let producer = shared.producer.clone();
    tokio::task::spawn_blocking(move || {
        rdkafka::producer::Producer::flush(&producer, FLUSH_TIMEOUT)
    })
    .await?
    .context("flushing the producer")?;
    served.context("HTTP server")?;
    if let Some(task) = failed.get() {
        anyhow::bail!("the warmer's {task} task ended unexpectedly (see the log above)");
    }
    Ok(())
}

/// The upstream client's settings from the flags: credentials expanded from the environment
/// and the secrets file, the CA file read. Errors name the flag, the file or the variable,
/// never a secret.
fn upstream_config(cfg: &Config) -> anyhow::Result<UpstreamConfig> {
    let ca_pem = match &cfg.upstream_ca {
        Some(p) => Some(
            std::fs::read(p)
                .with_context(|| format!("--upstream-ca: cannot read {}", p.display()))?,
        ),
        None => None,
    };
    Ok(UpstreamConfig {
        url_template: cfg.upstream_url.clone(),
        concurrency: cfg.upstream_concurrency,
        timeout: cfg.upstream_timeout,
        retries: cfg.upstream_retries,
        backoff: cfg.retry_backoff,
        rate: cfg.rate_limit,
        burst: cfg.rate_burst,
        rate_max_wait: cfg.rate_max_wait,
        headers: credentials::headers(&cfg.upstream_headers, cfg.upstream_header_file.as_deref())?,
        query: credentials::query_pairs(&cfg.upstream_query)?,
        ca_pem,
        honor_cache_control: cfg.honor_cache_control,
    })
}

/// Removes expired entries, evicts beyond the limits and refreshes the size gauges, every
/// `interval` until `stop`.
async fn sweep_loop(shared: Arc<Shared>, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Utc::now();
        match shared.cache.sweep(now).await {
            Ok(removed) => shared.metrics.removed(removed),
            Err(e) => {
                shared.metrics.cache_error("sweep");
                tracing::warn!(error = %e, "Cache sweep failed.");
            }
        }
        if let Ok(stats) = shared.cache.stats().await {
            shared.metrics.cache_size(stats);
        }
        shared.ledger.prune(now);
    }
}
