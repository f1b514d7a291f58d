//! `prefetch up`: the whole pipeline in one process, so one command shows it working.
//!
//! It runs each service's own entry point (`ingest::serve`, `analyzer::service::serve`,
//! `warmer::serve`) on listeners it binds, against a Kafka of the user's (`--brokers`) or an
//! embedded one. `--demo` adds the demo upstream the warmer fetches from and an app that asks
//! the warmer's read-through cache for every query of the demo traffic, so the hit rate shown
//! is what an app would get.
//!
//! # Layout
//! - `args.rs`: [`UpArgs`], the flags.
//! - `kafka.rs`: the embedded Kafka (rdkafka's `MockCluster` on a thread of its own).
//! - `progress.rs`: the once-a-second progress line, read off the services' `/metrics`.
//! - `settings.rs`: each service's settings under `up`, and the demo traffic.
//! - `mod.rs` (this file): [`run`] — bind, start, wait until ready, run until stopped, stop.
//!
//! # Time in the demo
//! The warmer stamps each read-through query event with its own wall clock, and the model runs
//! on event time, so the model sees the demo app's queries at the moments they are asked. The
//! traffic is a trace of a weekday in market hours (10:00 New York on, whatever the real hour),
//! asked on the wall clock `--speed` times as fast as it was generated; the analyzer then uses
//! uniform hour weights (the real hour says nothing about this traffic). `--speed N` compresses
//! the whole world, not just the traffic: the cache TTLs, the prediction horizon, the
//! analyzer's tick and the warm spread are divided by N and the warmer's upstream rate limit is
//! multiplied by N, so a price still expires after one dashboard refresh, a prediction still
//! looks one horizon ahead, and warming gets the same budget per query.
//!
//! The demo also sets `--top-n` 100 and `--horizon` 60 s (the services' defaults are 10 and
//! 300 s): with ten predictions per tick the warmer can refresh only the keys that demand
//! caching already keeps warm, and a horizon five times a price's TTL makes it re-fetch every
//! price on every tick. Measured against `--no-warming`, the services' defaults gave almost no
//! lift; the demo's cut the misses by about a fifth.

mod args;
mod kafka;
mod progress;
mod settings;

pub use args::UpArgs;
pub use progress::{metric_sum, Totals};

use crate::demo::{self, AppCounters, CacheAnswers, Clock, UpstreamBehaviour, UpstreamCounters};
use anyhow::Context;
use prefetch_common::kafka::{KafkaArgs, TopicArgs};
use settings::{analyzer_config, demo_events, demo_start, warmer_config};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long the services may take to answer `/readyz` at start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the services may take to stop (drain, commit, flush) before `up` gives up on them.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the parts of a running `up` answer.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Ingest's HTTP API.
    pub ingest: SocketAddr,
    /// The analyzer's admin API.
    pub analyzer: SocketAddr,
    /// The warmer's API (read-through cache, status, warm-up).
    pub warmer: SocketAddr,
    /// The demo upstream, with `--demo`.
    pub upstream: Option<SocketAddr>,
    /// The Kafka bootstrap servers in use.
    pub brokers: String,
    /// Whether Kafka is the embedded one.
    pub embedded: bool,
    /// The warmer's cache location.
    pub cache: String,
    /// The URL template the warmer fetches.
    pub upstream_url: String,
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "prefetch up: ingest, analyzer and warmer are running")?;
        writeln!(f, "  ingest     http://{}   (POST /v1/events, GET /metrics)", self.ingest)?;
        writeln!(
            f,
            "  analyzer   http://{}   (GET /v1/predictions, GET /v1/stats)",
            self.analyzer
        )?;
        writeln!(
            f,
            "  warmer     http://{}   (GET /v1/cache/{{module}}/{{ticker}}, GET /v1/status)",
            self.warmer
        )?;
        if let Some(u) = self.upstream {
            writeln!(f, "  demo data  http://{u}   (GET /{{module}}/{{ticker}})")?;
        }
        let kafka =
            if self.embedded { "embedded (in memory)".to_owned() } else { self.brokers.clone() };
        writeln!(
            f,
            "  Kafka {kafka}; cache {}; upstream {}",
            warmer::credentials::redact_url(&self.cache),
            warmer::credentials::redact_url(&self.upstream_url)
        )?;
        write!(f, "  try: curl -s http://{}/v1/status   (ctrl-c stops everything)", self.warmer)
    }
}

/// How a run ended: the pipeline's totals, and with `--demo` what the app and upstream saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// How long it ran.
    pub elapsed: Duration,
    /// The services' counters at the end.
    pub totals: Totals,
    /// How the read-through answered the demo app.
    pub app: Option<CacheAnswers>,
    /// Upstream answers: (ok, failed on purpose).
    pub upstream: Option<(u64, u64)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        let rate = t.hit_rate().map_or("–".to_owned(), |r| format!("{:.1}%", 100.0 * r));
        write!(
            f,
            "prefetch up: stopped after {:.0} s: {} query events, hit rate {rate}, {} warms ({} useful), {} predictions",
            self.elapsed.as_secs_f64(),
            t.events as u64,
            t.warms as u64,
            t.useful_warms as u64,
            t.predictions as u64
        )?;
        if let Some(a) = self.app {
            let n = (a.hits + a.misses).max(1) as f64;
            write!(
                f,
                "\n  the demo app asked {} queries: {} hits ({:.1}%), {} misses, {} errors",
                a.hits + a.misses + a.errors,
                a.hits,
                100.0 * a.hits as f64 / n,
                a.misses,
                a.errors
            )?;
        }
        if let Some((ok, failed)) = self.upstream {
            write!(
                f,
                "\n  the demo upstream answered {ok} requests and failed {failed} on purpose"
            )?;
        }
        Ok(())
    }
}

/// Runs the pipeline until `shutdown` is cancelled or `--duration` passes; `on_ready` is called
/// once every service answers `/readyz` (tests learn the ports from it). Fails if a port cannot
/// be bound, Kafka cannot be reached, or a service stops on its own.
pub async fn run(
    args: UpArgs,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&Endpoints),
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let [ingest_addr, analyzer_addr, warmer_addr, upstream_addr] = args.addrs();
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr).await.with_context(|| {
            format!("{what}: cannot listen on {addr} (is it in use? see --port-base)")
        })
    };
    let ingest_l = bind(ingest_addr, "ingest").await?;
    let analyzer_l = bind(analyzer_addr, "analyzer").await?;
    let warmer_l = bind(warmer_addr, "warmer").await?;
    let upstream_l =
        if args.demo { Some(bind(upstream_addr, "demo upstream").await?) } else { None };

    let topics = TopicArgs::default();
    let embedded = match &args.brokers {
        Some(_) => None,
        None => Some(kafka::Embedded::start(&[
            (topics.query_events_topic.as_str(), false),
            (topics.predictions_topic.as_str(), false),
            (topics.dlq_topic.as_str(), false),
            (topics.config_topic.as_str(), true),
            (topics.stats_topic.as_str(), true),
        ])?),
    };
    let brokers = match (&args.brokers, &embedded) {
        (Some(b), _) => b.clone(),
        (None, Some(e)) => e.bootstrap().to_owned(),
        (None, None) => unreachable!("embedded when no --brokers"),
    };
    let mut kafka = KafkaArgs::new(brokers.clone());
    kafka.config_file = args.kafka_config.clone();
    kafka.options = args.kafka_options.clone();
    if embedded.is_some() {
        kafka.topic_partitions = 3;
    }

    let endpoints = Endpoints {
        ingest: ingest_l.local_addr()?,
        analyzer: analyzer_l.local_addr()?,
        warmer: warmer_l.local_addr()?,
        upstream: upstream_l.as_ref().map(TcpListener::local_addr).transpose()?,
        brokers: brokers.clone(),
        embedded: embedded.is_some(),
        cache: args.cache.clone(),
        upstream_url: String::new(),
    };
    let upstream_url = match (&args.upstream_url, endpoints.upstream) {
        (Some(u), _) => u.clone(),
        (None, Some(addr)) => format!("http://{addr}/{{module}}/{{ticker}}"),
        (None, None) => warmer::Config::new(&brokers).upstream_url,
    };
    let endpoints = Endpoints { upstream_url: upstream_url.clone(), ..endpoints };

    let services_stop = CancellationToken::new();
    let mut services: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    let upstream_counters = Arc::new(UpstreamCounters::default());
    if let Some(l) = upstream_l {
        let (counters, stop) = (upstream_counters.clone(), services_stop.clone());
        services.spawn(async move {
            (
                "demo upstream",
                demo::serve_upstream(l, UpstreamBehaviour::default(), counters, stop)
                    .await
                    .map_err(Into::into),
            )
        });
    }
    let mut ingest_cfg = ingest::Config::new(&brokers);
    ingest_cfg.kafka = kafka.clone();
    ingest_cfg.listen = endpoints.ingest;
    // The original API's status and warmup go to the warmer's admin API, wherever it listens.
    ingest_cfg.warmer_url = format!("http://{}", endpoints.warmer);
    services.spawn(named("ingest", ingest::serve(ingest_cfg, ingest_l, services_stop.clone())));
    let analyzer_cfg = analyzer_config(&args, &brokers, &kafka, endpoints.analyzer);
    services.spawn(named(
        "analyzer",
        analyzer::service::serve(analyzer_cfg, analyzer_l, services_stop.clone()),
    ));
    let warmer_cfg = warmer_config(&args, &brokers, &kafka, endpoints.warmer, upstream_url);
    services.spawn(named("warmer", warmer::serve(warmer_cfg, warmer_l, services_stop.clone())));

    let stopped_early = tokio::select! {
        ready = wait_ready(&endpoints) => { ready?; None }
        ended = services.join_next() => Some(ended),
        _ = shutdown.cancelled() => Some(None),
    };
    if let Some(ended) = stopped_early {
        services_stop.cancel();
        stop_all(&mut services).await;
        return match ended {
            Some(Ok((name, Err(e)))) => Err(e.context(format!("{name} could not start"))),
            Some(Ok((name, Ok(())))) => Err(anyhow::anyhow!("{name} stopped during start-up")),
            Some(Err(e)) => Err(anyhow::anyhow!("a service panicked during start-up: {e}")),
            None => Ok(Report { elapsed: started.elapsed(), ..Report::default() }),
        };
    }
    on_ready(&endpoints);
    println!("{endpoints}");

    let traffic_stop = CancellationToken::new();
    let progress_stop = CancellationToken::new();
    let app = Arc::new(AppCounters::default());
    let traffic = if args.demo {
        let events = demo_events(&args)?;
        let clock =
            Clock { origin: demo_start(), at: tokio::time::Instant::now(), speed: args.speed };
        let (base, app, stop) =
            (format!("http://{}", endpoints.warmer), app.clone(), traffic_stop.clone());
        println!(
            "  demo: an app asks the warmer for about {} queries/s (a weekday from 10:00 New York, {}× real time); watch the hit rate rise",
            args.rate * args.speed,
            args.speed
        );
        Some(tokio::spawn(async move {
            let mut summary = demo::Summary::default();
            demo::ask_cache(events, &base, clock, app, &mut summary, stop).await
        }))
    } else {
        None
    };
    let progress = args.demo.then(|| {
        let scraper = progress::Scraper::new(
            &format!("http://{}", endpoints.analyzer),
            &format!("http://{}", endpoints.warmer),
        );
        tokio::spawn(progress::show(scraper, progress_stop.clone()))
    });

    let deadline = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let failed = tokio::select! {
        _ = shutdown.cancelled() => None,
        _ = deadline => None,
        ended = services.join_next() => ended,
    };

    traffic_stop.cancel();
    let traffic_result = match traffic {
        Some(t) => tokio::time::timeout(STOP_TIMEOUT, t).await.ok().and_then(Result::ok),
        None => None,
    };
    progress_stop.cancel();
    let shown = match progress {
        Some(p) => p.await.unwrap_or_default(),
        None => progress::Totals::default(),
    };
    // A last scrape while the services still run; the progress line's last figures stand in
    // when it fails (a scrape that times out reads as zeros).
    let last = progress::Scraper::new(
        &format!("http://{}", endpoints.analyzer),
        &format!("http://{}", endpoints.warmer),
    )
    .totals()
    .await;
    let totals = if last.events >= shown.events { last } else { shown };
    services_stop.cancel();
    let stop_errors = stop_all(&mut services).await;
    // The services' consumers are detached, not waited for (rust-rdkafka #453, #509, #611), so
    // clients may outlive this function; tearing the cluster down under them would only make
    // them log connection errors until the process ends. It lives as long as the process.
    std::mem::forget(embedded);

    if let Some(ended) = failed {
        return Err(match ended {
            Ok((name, Err(e))) => e.context(format!("{name} failed")),
            Ok((name, Ok(()))) => anyhow::anyhow!("{name} stopped on its own"),
            Err(e) => anyhow::anyhow!("a service panicked: {e}"),
        });
    }
    if let Some(e) = stop_errors.into_iter().next() {
        return Err(e);
    }
    if let Some(Err(e)) = traffic_result {
        return Err(anyhow::Error::new(e).context("the demo app"));
    }
    let (hits, misses, errors) = app.snapshot();
    Ok(Report {
        elapsed: started.elapsed(),
        totals,
        app: args.demo.then_some(CacheAnswers { hits, misses, errors }),
        upstream: args.demo.then(|| {
            (
                upstream_counters.ok.load(Ordering::Relaxed),
                upstream_counters.failed.load(Ordering::Relaxed),
            )
        }),
    })
}

async fn named(
    name: &'static str,
    f: impl std::future::Future<Output = anyhow::Result<()>>,
) -> (&'static str, anyhow::Result<()>) {
    (name, f.await)
}

/// Waits for every service in `services` to end (after its stop token was cancelled); returns
/// the errors they ended with, or that they did not end within [`STOP_TIMEOUT`].
async fn stop_all(
    services: &mut JoinSet<(&'static str, anyhow::Result<()>)>,
) -> Vec<anyhow::Error> {
    let mut errors = Vec::new();
    let end = tokio::time::Instant::now() + STOP_TIMEOUT;
    loop {
        match tokio::time::timeout_at(end, services.join_next()).await {
            Ok(None) => break,
            Ok(Some(Ok((_, Ok(()))))) => {}
            Ok(Some(Ok((name, Err(e))))) => {
                errors.push(e.context(format!("{name} did not stop cleanly")))
            }
            Ok(Some(Err(e))) => {
                errors.push(anyhow::anyhow!("a service panicked while stopping: {e}"))
            }
            Err(_) => {
                errors.push(anyhow::anyhow!(
                    "services still running {} s after the stop",
                    STOP_TIMEOUT.as_secs()
                ));
                services.abort_all();
                break;
            }
        }
    }
    errors
}

/// Polls every service's `/readyz` until all answer 200.
async fn wait_ready(e: &Endpoints) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let mut urls: Vec<String> =
        [e.ingest, e.analyzer, e.warmer].iter().map(|a| format!("http://{a}/readyz")).collect();
    if let Some(u) = e.upstream {
        urls.push(format!("http://{u}/healthz"));
    }
    let end = Instant::now() + READY_TIMEOUT;
    for url in urls {
        loop {
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < end,
                "{url} did not answer 200 within {} s",
                READY_TIMEOUT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
