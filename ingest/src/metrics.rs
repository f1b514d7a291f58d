//! Ingest's Prometheus collectors: one method per thing that happens, so call sites are one line.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use std::time::Duration;

/// Why a request or its events were refused; the `reason` label.
#[derive(Debug, Clone, Copy)]
pub enum Rejection {
    /// An event broke the contract (400).
    Invalid,
    /// The body was over the size limit (413).
    TooLarge,
    /// The content type is not one we read (415).
    UnsupportedMediaType,
    /// Kafka did not acknowledge in time (503).
    KafkaUnavailable,
    /// The original API's `action` is missing or unknown (400).
    UnknownAction,
    /// The query string does not parse (400).
    InvalidQuery,
    /// The body could not be read (400: a broken chunked encoding, a client gone mid-body).
    BadBody,
    /// The action does not take this method (405).
    MethodNotAllowed,
}

impl Rejection {
    /// Every reason, so each series exists from the start.
    pub const ALL: [Rejection; 8] = [
        Self::Invalid,
        Self::TooLarge,
        Self::UnsupportedMediaType,
        Self::KafkaUnavailable,
        Self::UnknownAction,
        Self::InvalidQuery,
        Self::BadBody,
        Self::MethodNotAllowed,
    ];
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::KafkaUnavailable => "kafka_unavailable",
            Self::UnknownAction => "unknown_action",
            Self::InvalidQuery => "invalid_query",
            Self::BadBody => "bad_body",
            Self::MethodNotAllowed => "method_not_allowed",
        }
    }
}

/// Ingest's collectors, registered in their own registry (so several instances can share a
/// process, as in `prefetch up` and the tests).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    events_accepted: IntCounter,
    events_rejected: IntCounterVec,
    requests_rejected: IntCounterVec,
    produce_seconds: Histogram,
    events_clamped: IntCounter,
}

impl Metrics {
    /// Creates and registers the collectors.
    pub fn new() -> Self {
        let registry = Registry::new();
        let events_accepted = IntCounter::new(
            "smart_prefetch_ingest_events_accepted_total",
            "Query events acknowledged by Kafka and answered with 2xx.",
        )
        .unwrap();
        let events_rejected = IntCounterVec::new(
            Opts::new(
                "smart_prefetch_ingest_events_rejected_total",
                "Query events refused, by reason (invalid, kafka_unavailable).",
            ),
            &["reason"],
        )
        .unwrap();
        let requests_rejected = IntCounterVec::new(
            Opts::new(
                "smart_prefetch_ingest_requests_rejected_total",
                "HTTP requests refused, by reason.",
            ),
            &["reason"],
        )
        .unwrap();
        let produce_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "smart_prefetch_ingest_produce_duration_seconds",
                "Time from enqueueing a request's events to Kafka acknowledging all of them.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .unwrap();
        let events_clamped = IntCounter::new(
            "smart_prefetch_ingest_events_clamped_total",
            "Accepted query events whose ts lay more than --max-clock-skew ahead of ingest's clock and were written with ingest's clock instead.",
        )
        .unwrap();
        for r in Rejection::ALL {
            requests_rejected.with_label_values(&[r.label()]);
        }
        for r in [Rejection::Invalid, Rejection::KafkaUnavailable] {
            events_rejected.with_label_values(&[r.label()]);
        }
        registry.register(Box::new(events_accepted.clone())).unwrap();
        registry.register(Box::new(events_rejected.clone())).unwrap();
        registry.register(Box::new(requests_rejected.clone())).unwrap();
        registry.register(Box::new(produce_seconds.clone())).unwrap();
        registry.register(Box::new(events_clamped.clone())).unwrap();
        Self {
            registry,
            events_accepted,
            events_rejected,
            requests_rejected,
            produce_seconds,
            events_clamped,
        }
    }

    /// The registry to expose on `/metrics`.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// `n` events were acknowledged after `took`.
    pub fn accepted(&self, n: usize, took: Duration) {
        self.events_accepted.inc_by(n as u64);
        self.produce_seconds.observe(took.as_secs_f64());
    }

    /// `n` accepted events had their `ts` clamped to ingest's clock.
    pub fn clamped(&self, n: usize) {
        self.events_clamped.inc_by(n as u64);
    }

    /// A request was refused for `reason`, carrying `events` events (0 when none were parsed).
    pub fn rejected(&self, reason: Rejection, events: usize) {
        self.requests_rejected.with_label_values(&[reason.label()]).inc();
        if events > 0 {
            self.events_rejected.with_label_values(&[reason.label()]).inc_by(events as u64);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
