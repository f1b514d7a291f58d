//! The warmer's Prometheus collectors: one method per thing that happens, so call sites are one
//! line. Labels are of low cardinality (module, result, group, outcome, source, status class,
//! consumer, partition) and never a ticker. A `module` label is one of the configured modules
//! (the TTL table) or `other`, so a GET of `/v1/cache/<random>/A` mints no series
//! (`Shared::module_label`). Ratios (hit rate, lift, useful share) are left to
//! PromQL, e.g. `sum by (group) (rate(smart_prefetch_warmer_queries_total{result="hit"}[5m]))
//! / sum by (group) (rate(smart_prefetch_warmer_queries_total[5m]))`.

use crate::cache::{CacheStats, Removed, Source};
use crate::policy::{Group, Outcome};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::time::Duration;

/// The warmer's collectors, in their own registry (several instances can share a process).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    queries: IntCounterVec,
    warms: IntCounterVec,
    useful_warms: IntCounterVec,
    upstream_requests: IntCounterVec,
    upstream_seconds: HistogramVec,
    cache_entries: IntGauge,
    cache_bytes: IntGauge,
    deferred: IntGauge,
    cache_removed: IntCounterVec,
    cache_errors: IntCounterVec,
    consumer_lag: IntGaugeVec,
    prediction_to_cache: Histogram,
    cache_write: Histogram,
    batches_warming: IntGauge,
    warm_to_first_hit: Histogram,
    invalid_messages: IntCounterVec,
    published: IntCounterVec,
    read_through: HistogramVec,
    throttled: IntCounterVec,
    negative: IntCounterVec,
    ttl_capped: IntCounterVec,
    coalesced: IntCounterVec,
    limiter_fallbacks: IntCounter,
    unauthorized: IntCounterVec,
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn plain_histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    /// Creates and registers the collectors.
    pub fn new() -> Self {
        let r = Registry::new();
        let queries = counter(&r, "smart_prefetch_warmer_queries_total",
            "Queries seen on the query-events topic, by module, result (hit, miss) and group (warmed, holdback).",
            &["module", "result", "group"]);
        let warms = counter(
            &r,
            "smart_prefetch_warmer_warms_total",
            "Predictions handled, by module and outcome.",
            &["module", "outcome"],
        );
        let useful_warms = counter(
            &r,
            "smart_prefetch_warmer_useful_warms_total",
            "Warmed entries that served at least one hit before expiring, by module.",
            &["module"],
        );
        let upstream_requests = counter(&r, "smart_prefetch_warmer_upstream_requests_total",
            "Requests to the upstream data API, by source (warm, demand) and status class (2xx, 4xx, 5xx, timeout, error).",
            &["source", "status"]);
        let upstream_seconds = histogram(
            &r,
            "smart_prefetch_warmer_upstream_request_duration_seconds",
            "Duration of one upstream request (one attempt), by source.",
            &["source"],
            vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        );
        let cache_entries =
            IntGauge::new("smart_prefetch_warmer_cache_entries", "Entries in the cache.")
                .expect("valid metric");
        let cache_bytes = IntGauge::new(
            "smart_prefetch_warmer_cache_size_bytes",
            "Bytes of entries in the cache.",
        )
        .expect("valid metric");
        let deferred = IntGauge::new(
            "smart_prefetch_warmer_deferred_refreshes",
            "Refreshes of live entries waiting to fetch until just before the entry expires.",
        )
        .expect("valid metric");
        r.register(Box::new(deferred.clone())).expect("unique metric");
        r.register(Box::new(cache_entries.clone())).expect("unique metric");
        r.register(Box::new(cache_bytes.clone())).expect("unique metric");
        let cache_removed = counter(
            &r,
            "smart_prefetch_warmer_cache_removed_entries_total",
            "Entries removed from the cache, by reason (expired, evicted).",
            &["reason"],
        );
        let cache_errors = counter(
            &r,
            "smart_prefetch_warmer_cache_errors_total",
            "Cache operations that failed, by operation (get, put, sweep).",
            &["op"],
        );
        let consumer_lag = IntGaugeVec::new(
            Opts::new("smart_prefetch_warmer_consumer_lag_messages",
                "Messages between the committed offset and the end of each assigned partition, by consumer (predictions, queries)."),
            &["consumer", "partition"],
        )
        .expect("valid metric");
        r.register(Box::new(consumer_lag.clone())).expect("unique metric");
        let prediction_to_cache = plain_histogram(
            &r,
            "smart_prefetch_warmer_prediction_to_cache_seconds",
            "Time from a prediction's generated_at to its entry being stored.",
            // Fine below a second, where a healthy warmer lives (BENCHMARKS.md: p50 66 ms, p99
            // 125 ms at 20 predictions/s); coarse above, where backlogs are.
            vec![
                0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
                30.0, 60.0, 300.0,
            ],
        );
        let cache_write = plain_histogram(
            &r,
            "smart_prefetch_warmer_cache_write_duration_seconds",
            "Time one warmed entry took to be written to the cache (with the file cache: write \
             aside and rename, plus two fsyncs with --cache-fsync).",
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        );
        let batches_warming = IntGauge::new(
            "smart_prefetch_warmer_batches_warming",
            format!(
                "Batches of predictions warming now; at the most ({}), reading waits for the oldest.",
                crate::warm::BATCHES_IN_FLIGHT
            ),
        )
        .expect("valid metric");
        r.register(Box::new(batches_warming.clone())).expect("unique metric");
        let warm_to_first_hit = plain_histogram(
            &r,
            "smart_prefetch_warmer_warm_to_first_hit_seconds",
            "Time from storing a warmed entry to the first hit it served.",
            vec![0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 86_400.0],
        );
        let invalid_messages = counter(
            &r,
            "smart_prefetch_warmer_messages_invalid_total",
            "Messages skipped because they broke the contract, by consumer (predictions, queries).",
            &["consumer"],
        );
        let published = counter(
            &r,
            "smart_prefetch_warmer_query_events_published_total",
            "Read-through queries published to the query-events topic, by outcome (ok, failed).",
            &["outcome"],
        );
        let read_through = histogram(
            &r,
            "smart_prefetch_read_through_seconds",
            "Time to answer GET /v1/cache/{module}/{ticker}, by module and result (hit, miss, negative_hit, not_found, error): the cache's main SLI.",
            &["module", "result"],
            vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        );
        let throttled = counter(
            &r,
            "smart_prefetch_warmer_upstream_throttled_total",
            "Upstream answers 429 and 503, by status and whether they carried a Retry-After (yes, no); a Retry-After pauses warming.",
            &["status", "retry_after"],
        );
        let negative = counter(
            &r,
            "smart_prefetch_warmer_negative_entries_total",
            "404 answers cached negatively (event=stored) and 404s answered from them (event=served).",
            &["event"],
        );
        let ttl_capped = counter(
            &r,
            "smart_prefetch_warmer_ttl_capped_total",
            "Entries whose TTL the upstream's Cache-Control shortened (--honor-cache-control), by source; stored=false when it forbade storing.",
            &["source", "stored"],
        );
        let coalesced = counter(
            &r,
            "smart_prefetch_warmer_demand_coalesced_total",
            "Read-through misses answered by another request's upstream fetch instead of their own, by scope (instance: the same warmer; cluster: another warmer's lease).",
            &["scope"],
        );
        let limiter_fallbacks = IntCounter::new(
            "smart_prefetch_warmer_rate_limiter_fallbacks_total",
            "Rate-limit decisions made by this instance's own bucket because the cluster's (Redis) did not answer.",
        )
        .expect("valid metric");
        r.register(Box::new(limiter_fallbacks.clone())).expect("unique metric");
        let unauthorized = counter(
            &r,
            "smart_prefetch_warmer_unauthorized_requests_total",
            "Requests refused with 401 for a missing or wrong token, by route (warmup, cache, status).",
            &["route"],
        );
        for o in ["ok", "failed"] {
            published.with_label_values(&[o]);
        }
        for e in ["stored", "served"] {
            negative.with_label_values(&[e]);
        }
        for c in ["predictions", "queries"] {
            invalid_messages.with_label_values(&[c]);
        }
        for reason in ["expired", "evicted"] {
            cache_removed.with_label_values(&[reason]);
        }
        // Zero from the start, so a dashboard or alert sees "no errors" rather than no data.
        for op in ["get", "put", "sweep", "stats"] {
            cache_errors.with_label_values(&[op]);
        }
        Self {
            registry: r,
            queries,
            warms,
            useful_warms,
            upstream_requests,
            upstream_seconds,
            cache_entries,
            cache_bytes,
            deferred,
            cache_removed,
            cache_errors,
            consumer_lag,
            prediction_to_cache,
            cache_write,
            batches_warming,
            warm_to_first_hit,
            invalid_messages,
            published,
            read_through,
            throttled,
            negative,
            ttl_capped,
            coalesced,
            limiter_fallbacks,
            unauthorized,
        }
    }

    /// The registry to expose on `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A query of `module` was seen, hit or miss, for a key in `group`.
    pub fn query(&self, module: &str, hit: bool, group: Group) {
        self.queries
            .with_label_values(&[module, if hit { "hit" } else { "miss" }, group.label()])
            .inc();
    }

    /// A prediction of `module` ended with `outcome`.
    pub fn warm(&self, module: &str, outcome: Outcome) {
        self.warms.with_label_values(&[module, outcome.label()]).inc();
    }

    /// A warmed entry served its first hit `after` being stored.
    pub fn useful_warm(&self, module: &str, after: Duration) {
        self.useful_warms.with_label_values(&[module]).inc();
        self.warm_to_first_hit.observe(after.as_secs_f64());
    }

    /// One upstream attempt ended with `status` (a class: `2xx`, `5xx`, `timeout`, `error`).
    pub fn upstream(&self, source: Source, status: &str, took: Duration) {
        self.upstream_requests.with_label_values(&[source.label(), status]).inc();
        self.upstream_seconds.with_label_values(&[source.label()]).observe(took.as_secs_f64());
    }

    /// A warmed entry was stored `since_prediction` after its prediction was made.
    pub fn stored(&self, since_prediction: Duration) {
        self.prediction_to_cache.observe(since_prediction.as_secs_f64());
    }

    /// A warmed entry's cache write took `took`.
    pub fn cache_write(&self, took: Duration) {
        self.cache_write.observe(took.as_secs_f64());
    }

    /// Batches warming now.
    pub fn batches_warming(&self, n: usize) {
        self.batches_warming.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Refreshes deferred to their entry's expiry now waiting.
    pub fn deferred(&self, waiting: usize) {
        self.deferred.set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// The cache's size now.
    pub fn cache_size(&self, s: CacheStats) {
        self.cache_entries.set(i64::try_from(s.entries).unwrap_or(i64::MAX));
        self.cache_bytes.set(i64::try_from(s.bytes).unwrap_or(i64::MAX));
    }

    /// Entries removed by a sweep or an eviction.
    pub fn removed(&self, r: Removed) {
        self.cache_removed.with_label_values(&["expired"]).inc_by(r.expired);
        self.cache_removed.with_label_values(&["evicted"]).inc_by(r.evicted);
    }

    /// A cache operation (`get`, `put`, `sweep`) failed.
    pub fn cache_error(&self, op: &str) {
        self.cache_errors.with_label_values(&[op]).inc();
    }

    /// The lag of one assigned partition.
    pub fn lag(&self, consumer: &str, partition: i32, lag: i64) {
        self.consumer_lag.with_label_values(&[consumer, &partition.to_string()]).set(lag);
    }

    /// A message on `consumer`'s topic broke the contract and was skipped.
    pub fn invalid(&self, consumer: &str) {
        self.invalid_messages.with_label_values(&[consumer]).inc();
    }

    /// A read-through answer of `module` (a bounded label) with `result` took `took`.
    pub fn read_through(&self, module: &str, result: &str, took: Duration) {
        self.read_through.with_label_values(&[module, result]).observe(took.as_secs_f64());
    }

    /// The upstream answered `status` (429 or 503), with or without a `Retry-After`.
    pub fn throttled(&self, status: u16, retry_after: bool) {
        let s = if status == 429 { "429" } else { "503" };
        self.throttled.with_label_values(&[s, if retry_after { "yes" } else { "no" }]).inc();
    }

    /// A 404 was cached negatively.
    pub fn negative_stored(&self) {
        self.negative.with_label_values(&["stored"]).inc();
    }

    /// A 404 was answered from a negative entry.
    pub fn negative_served(&self) {
        self.negative.with_label_values(&["served"]).inc();
    }

    /// The upstream's `Cache-Control` shortened an entry's TTL (to zero: `stored` false).
    pub fn ttl_capped(&self, source: Source, stored: bool) {
        self.ttl_capped
            .with_label_values(&[source.label(), if stored { "true" } else { "false" }])
            .inc();
    }

    /// A read-through miss shared another request's fetch (`instance` or `cluster`).
    pub fn coalesced(&self, scope: &'static str) {
        self.coalesced.with_label_values(&[scope]).inc();
    }

    /// The cluster's rate limit did not answer; the instance's bucket decided.
    pub fn rate_limiter_fallback(&self) {
        self.limiter_fallbacks.inc();
    }

    /// A request to `route` was refused for its token.
    pub fn unauthorized(&self, route: &'static str) {
        self.unauthorized.with_label_values(&[route]).inc();
    }

    /// A read-through query event was (or was not) accepted by Kafka.
    pub fn published(&self, ok: bool) {
        self.published.with_label_values(&[if ok { "ok" } else { "failed" }]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
