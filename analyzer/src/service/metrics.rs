//! The analyzer's Prometheus collectors: one method per thing that happens.

use crate::model::{Budget, SpendStatus};
use prefetch_common::prediction::Reason;
use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::time::Duration;

/// The analyzer's collectors, in a registry of their own.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `events_total` by admission, resolved once: `event` runs for every message.
    events: [IntCounter; 3],
    dlq: IntCounter,
    predictions: IntCounterVec,
    tick_seconds: Histogram,
    live_keys: IntGauge,
    lag: IntGaugeVec,
    rebuilt: IntCounter,
    confidence: Histogram,
    restoring: IntGauge,
    restore_seconds: Histogram,
    fallbacks: IntCounterVec,
    checkpoints: IntCounter,
    checkpoint_bytes: IntCounter,
    budget: BudgetMetrics,
}

/// The fetch budget's collectors (`model/src/budget.rs`): the counters follow the model's own
/// totals, so `(demand + warms) / (demand + useful)` in PromQL is the spend ratio it holds
/// below `smart_prefetch_analyzer_budget_ratio`.
#[derive(Clone)]
struct BudgetMetrics {
    demand: IntCounter,
    warms: IntCounter,
    useful: IntCounter,
    no_warming: IntCounter,
    refused: IntCounter,
    ratio: Gauge,
    rate: Gauge,
    tokens: Gauge,
    price: Gauge,
}

impl BudgetMetrics {
    fn new(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap();
            registry.register(Box::new(c.clone())).unwrap();
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help).unwrap();
            registry.register(Box::new(g.clone())).unwrap();
            g
        };
        Self {
            demand: counter("smart_prefetch_analyzer_budget_demand_fetches_total", "Queries that fetched on demand (misses), as the model's cache view saw them."),
            no_warming: counter("smart_prefetch_analyzer_budget_no_warming_fetches_total", "Queries that would have fetched in a cache never warmed (same TTLs): the calls of no warming a ratio budget is a multiple of."),
            warms: counter("smart_prefetch_analyzer_budget_warms_total", "Warms the fetch budget paid for (published predictions, ticks and event-driven)."),
            useful: counter("smart_prefetch_analyzer_budget_useful_warms_total", "Warms whose copy served a hit no warming would have fetched for, as the model's cache view saw them."),
            refused: counter("smart_prefetch_analyzer_budget_refused_total", "Candidates at or above min_confidence the fetch budget did not pay for."),
            ratio: gauge("smart_prefetch_analyzer_budget_ratio", "The ratio budget: all upstream calls at most this many times the calls of no warming (0: a rate budget or none)."),
            rate: gauge("smart_prefetch_analyzer_budget_warms_per_second", "The rate budget in warms per second (0: a ratio budget or none)."),
            tokens: gauge("smart_prefetch_analyzer_budget_tokens", "Warms the fetch budget can still pay for now."),
            price: gauge("smart_prefetch_analyzer_budget_price_ratio", "The confidence (0-1) a candidate needs now: min_confidence, higher while the budget runs low."),
        }
    }
}

fn reason_label(r: Reason) -> &'static str {
    match r {
        Reason::Popularity => "popularity",
        Reason::TimeOfDay => "time_of_day",
        Reason::Burst => "burst",
        Reason::Sequence => "sequence",
        Reason::Periodic => "periodic",
    }
}

impl Metrics {
    /// Creates and registers the collectors.
    pub fn new() -> Self {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new("smart_prefetch_analyzer_events_total", "Query events consumed, by admission (on_time, late = folded in; dropped = beyond the late bound)."),
            &["admission"],
        )
        .unwrap();
        let dlq = IntCounter::new(
            "smart_prefetch_analyzer_dead_letters_total",
            "Messages sent to the dead-letter topic (not JSON, or against the contract).",
        )
        .unwrap();
        let predictions = IntCounterVec::new(
            Opts::new(
                "smart_prefetch_analyzer_predictions_total",
                "Predictions published, by reason.",
            ),
            &["reason"],
        )
        .unwrap();
        let tick_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "smart_prefetch_analyzer_tick_duration_seconds",
                "Time one model tick takes (walk every key, rank).",
            )
            .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )
        .unwrap();
        let live_keys = IntGauge::new(
            "smart_prefetch_analyzer_live_keys",
            "(ticker, module) keys with history in the retention window.",
        )
        .unwrap();
        let lag = IntGaugeVec::new(
            Opts::new(
                "smart_prefetch_analyzer_consumer_lag_messages",
                "Messages behind the end of each assigned query-events partition.",
            ),
            &["partition"],
        )
        .unwrap();
        let rebuilt = IntCounter::new(
            "smart_prefetch_analyzer_rebuild_events_total",
            "Events re-read from the topic to rebuild state after a restart or a rebalance.",
        )
        .unwrap();
        let confidence = Histogram::with_opts(
            HistogramOpts::new(
                "smart_prefetch_analyzer_prediction_confidence_ratio",
                "Confidence (0-1) of the predictions of each tick (event-driven sequence predictions are not included).",
            )
            .buckets(vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]),
        )
        .unwrap();
        let restoring = IntGauge::new(
            "smart_prefetch_analyzer_partitions_restoring",
            "Assigned partitions whose state is being restored (paused; /readyz is 503 meanwhile).",
        )
        .unwrap();
        let restore_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "smart_prefetch_analyzer_restore_duration_seconds",
                "Time to restore one assigned partition (checkpoint read and applied, then the replay after it).",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
        )
        .unwrap();
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "smart_prefetch_analyzer_checkpoint_fallbacks_total",
                "Partition restores that replayed the retained window for want of a usable checkpoint, by reason (missing, unreadable, unusable).",
            ),
            &["reason"],
        )
        .unwrap();
        let checkpoints = IntCounter::new(
            "smart_prefetch_analyzer_checkpoints_total",
            "Partition checkpoints written to the state topic.",
        )
        .unwrap();
        let checkpoint_bytes = IntCounter::new(
            "smart_prefetch_analyzer_checkpoint_bytes_total",
            "Bytes of model state written in partition checkpoints.",
        )
        .unwrap();
        for r in ["missing", "unreadable", "unusable"] {
            fallbacks.with_label_values(&[r]);
        }
        let event_counters = ["on_time", "late", "dropped"].map(|a| events.with_label_values(&[a]));
        for r in [
            Reason::Popularity,
            Reason::TimeOfDay,
            Reason::Burst,
            Reason::Sequence,
            Reason::Periodic,
        ] {
            predictions.with_label_values(&[reason_label(r)]);
        }
        for c in [
            Box::new(events.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dlq.clone()),
            Box::new(predictions.clone()),
            Box::new(tick_seconds.clone()),
            Box::new(live_keys.clone()),
            Box::new(lag.clone()),
            Box::new(rebuilt.clone()),
            Box::new(confidence.clone()),
            Box::new(restoring.clone()),
            Box::new(restore_seconds.clone()),
            Box::new(fallbacks.clone()),
            Box::new(checkpoints.clone()),
            Box::new(checkpoint_bytes.clone()),
        ] {
            registry.register(c).unwrap();
        }
        let budget = BudgetMetrics::new(&registry);
        Self {
            budget,
            registry,
            events: event_counters,
            dlq,
            predictions,
            tick_seconds,
            live_keys,
            lag,
            rebuilt,
            confidence,
            restoring,
            restore_seconds,
            fallbacks,
            checkpoints,
            checkpoint_bytes,
        }
    }

    /// The registry to expose on `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// An event was taken in with `admission`.
    pub fn event(&self, admission: crate::Admission) {
        let i = match admission {
            crate::Admission::OnTime => 0,
            crate::Admission::Late => 1,
            crate::Admission::Dropped => 2,
        };
        self.events[i].inc();
    }

    /// A message went to the dead-letter topic.
    pub fn dead_letter(&self) {
        self.dlq.inc();
    }

    /// A prediction was published.
    pub fn published(&self, reason: Reason) {
        self.predictions.with_label_values(&[reason_label(reason)]).inc();
    }

    /// A tick took `took` and left `keys` live keys.
    pub fn ticked(&self, took: Duration, keys: usize) {
        self.tick_seconds.observe(took.as_secs_f64());
        self.live_keys.set(keys as i64);
    }

    /// Partition `partition` is `lag` messages behind its end.
    pub fn lag(&self, partition: i32, lag: i64) {
        self.lag.with_label_values(&[&partition.to_string()]).set(lag);
    }

    /// A tick made predictions of these confidences.
    pub fn confidences(&self, confidences: impl IntoIterator<Item = f64>) {
        for c in confidences {
            self.confidence.observe(c);
        }
    }

    /// `n` events were re-read to rebuild state.
    pub fn rebuilt(&self, n: u64) {
        self.rebuilt.inc_by(n);
    }
}

impl Metrics {
    /// `n` partitions are being restored.
    pub fn restoring(&self, n: usize) {
        self.restoring.set(n as i64);
    }

    /// A partition was restored in `seconds`; `fallback` says why without a checkpoint.
    pub fn restored(&self, seconds: f64, fallback: Option<&'static str>) {
        self.restore_seconds.observe(seconds);
        if let Some(reason) = fallback {
            self.fallbacks.with_label_values(&[reason]).inc();
        }
    }

    /// The fetch budget's totals and state now (after a tick).
    pub fn spend(&self, s: &SpendStatus) {
        let b = &self.budget;
        for (c, total) in [
            (&b.demand, s.demand_fetches),
            (&b.warms, s.warms),
            (&b.useful, s.useful_warms),
            (&b.no_warming, s.no_warming_fetches),
            (&b.refused, s.refused),
        ] {
            c.inc_by(total.saturating_sub(c.get()));
        }
        let (ratio, rate) = match s.budget {
            Budget::Ratio(r) => (r, 0.0),
            Budget::PerMinute(m) => (0.0, m / 60.0),
            Budget::Off => (0.0, 0.0),
        };
        b.ratio.set(ratio);
        b.rate.set(rate);
        b.tokens.set(s.tokens.max(0.0));
        b.price.set(s.price);
    }

    /// A partition checkpoint of `bytes` was written.
    pub fn checkpointed(&self, bytes: u64) {
        self.checkpoints.inc();
        self.checkpoint_bytes.inc_by(bytes);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
