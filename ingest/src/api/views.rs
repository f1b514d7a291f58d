//! What the front door knows without calling the analyzers: the live config, the analyzers'
//! patterns snapshots and the latest predictions, each kept current by following its topic.
//!
//! Every ingest instance reads every partition (no consumer group), so any instance answers
//! the same. Stats snapshots are keyed by analyzer instance in a compacted topic; each covers
//! the tickers that instance owns, so the answer merges the fresh ones (counts summed, lists
//! re-ranked) and ignores snapshots older than `max_age` (instances that left or restarted
//! under a new id).

use chrono::{DateTime, Utc};
use prefetch_common::config::LiveConfig;
use prefetch_common::feed::{follow, ConfigFeed, Start};
use prefetch_common::kafka::{KafkaArgs, KafkaSetupError};
use prefetch_common::prediction::Prediction;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How many of the latest messages per partition of the predictions topic are read at start-up
/// (predictions older than their horizon are dropped anyway).
const PREDICTIONS_TAIL: i64 = 5_000;
/// Most keys kept in the predictions view.
const MAX_PREDICTION_KEYS: usize = 50_000;
/// Longest the list fields of a merged stats answer are.
const MERGED_LIST_LEN: usize = 20;

/// The topic-fed views, shared by the API handlers.
pub struct Views {
    config: watch::Receiver<Option<LiveConfig>>,
    stats: Mutex<HashMap<String, (DateTime<Utc>, Value)>>,
    predictions: Mutex<HashMap<(String, String), Prediction>>,
    max_age: chrono::Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is one map operation: a poisoned map is consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The topics the views follow.
pub struct ViewTopics<'a> {
    /// The live config topic.
    pub config: &'a str,
    /// The analyzers' stats snapshots.
    pub stats: &'a str,
    /// The predictions topic.
    pub predictions: &'a str,
}

impl Views {
    /// Starts following the three topics until `stop`, and waits (at most `timeout`) until the
    /// config topic has been read to its end, so the first answers carry the current config.
    pub async fn start(
        kafka: &KafkaArgs,
        topics: ViewTopics<'_>,
        max_age: Duration,
        timeout: Duration,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, KafkaSetupError> {
        let mut feed = ConfigFeed::start(kafka, topics.config, stop.clone())?;
        if !feed.wait_caught_up(timeout).await {
            tracing::warn!(
                topic = topics.config,
                "Config topic not read to its end in time; answering with defaults until it is."
            );
        }
        let views = Arc::new(Views {
            config: feed.config,
            stats: Mutex::default(),
            predictions: Mutex::default(),
            max_age: chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX),
        });
        let v = views.clone();
        follow(kafka, topics.stats, Start::Beginning, stop.clone(), move |key, payload| {
            v.on_stats(key, payload)
        })?;
        let v = views.clone();
        follow(
            kafka,
            topics.predictions,
            Start::Tail(PREDICTIONS_TAIL),
            stop,
            move |_, payload| v.on_prediction(payload),
        )?;
        Ok(views)
    }

    /// The live config: the topic's latest valid value, or the defaults while it has none.
    pub fn config(&self) -> LiveConfig {
        self.config.borrow().clone().unwrap_or_default()
    }

    /// A receiver of the live config, to wait for a change.
    pub fn config_receiver(&self) -> watch::Receiver<Option<LiveConfig>> {
        self.config.clone()
    }

    /// Whether the config topic holds a config (else [`Views::config`] is the defaults).
    pub fn config_is_set(&self) -> bool {
        self.config.borrow().is_some()
    }

    fn on_stats(&self, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let Some(instance) = key.map(|k| String::from_utf8_lossy(k).into_owned()) else { return };
        let Some(snapshot) = payload.and_then(|p| serde_json::from_slice::<Value>(p).ok()) else {
            // A tombstone or garbage: forget the instance.
            lock(&self.stats).remove(&instance);
            return;
        };
        lock(&self.stats).insert(instance, (Utc::now(), snapshot));
    }

    fn on_prediction(&self, payload: Option<&[u8]>) {
        let Some(p) = payload.and_then(|p| serde_json::from_slice::<Prediction>(p).ok()) else {
            return;
        };
        let mut preds = lock(&self.predictions);
        let key = (p.ticker.as_str().to_owned(), p.module.as_str().to_owned());
        if preds.get(&key).is_none_or(|q| q.generated_at <= p.generated_at) {
            preds.insert(key, p);
        }
        if preds.len() > MAX_PREDICTION_KEYS {
            let now = Utc::now();
            preds.retain(|_, p| !p.is_stale(now));
        }
    }

    /// The predictions whose horizon has not passed at `now`, most confident first, at most `n`.
    pub fn predictions(&self, now: DateTime<Utc>, n: usize) -> Vec<Prediction> {
        let mut preds = lock(&self.predictions);
        preds.retain(|_, p| !p.is_stale(now));
        let mut out: Vec<Prediction> = preds.values().cloned().collect();
        out.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then_with(|| (&a.ticker, &a.module).cmp(&(&b.ticker, &b.module)))
        });
        out.truncate(n);
        out
    }

    /// The fresh analyzer snapshots merged into one, or `None` when no analyzer has reported
    /// within `max_age`.
    pub fn stats(&self, now: DateTime<Utc>) -> Option<Value> {
        let stats = lock(&self.stats);
        let fresh: Vec<&Value> = stats
            .values()
            .filter(|(seen, _)| now - *seen <= self.max_age)
            .map(|(_, v)| v)
            .collect();
        (!fresh.is_empty()).then(|| merge_stats(&fresh))
    }
}

/// Merges analyzer snapshots (each over the tickers its instance owns): totals and profiles
/// summed, ranked lists summed by entry and re-ranked, the clock fields from the newest.
pub fn merge_stats(snapshots: &[&Value]) -> Value {
    let newest = snapshots
        .iter()
        .max_by_key(|s| s["generated_at"].as_str().unwrap_or("").to_owned())
        .copied()
        .unwrap_or(&Value::Null);
    let mut out = Map::new();
    for field in ["generated_at", "market_hour", "market_weekday", "current_hour_weight"] {
        out.insert(field.into(), newest[field].clone());
    }
    for field in ["live_keys", "events_in_window"] {
        out.insert(
            field.into(),
            json!(snapshots.iter().map(|s| s[field].as_u64().unwrap_or(0)).sum::<u64>()),
        );
    }
    for field in ["hourly_profile", "weekday_profile"] {
        let mut sum: Vec<u64> = Vec::new();
        for s in snapshots {
            for (i, v) in s[field].as_array().into_iter().flatten().enumerate() {
                if sum.len() <= i {
                    sum.resize(i + 1, 0);
                }
                sum[i] += v.as_u64().unwrap_or(0);
            }
        }
        out.insert(field.into(), json!(sum));
    }
    let by = |fields: &'static [&'static str]| {
        move |v: &Value| fields.iter().map(|f| v[*f].to_string()).collect::<Vec<_>>().join("\u{1}")
    };
    out.insert(
        "top_tickers".into(),
        merge_ranked(snapshots, "top_tickers", by(&["name"]), "count"),
    );
    out.insert(
        "top_modules".into(),
        merge_ranked(snapshots, "top_modules", by(&["name"]), "count"),
    );
    for field in ["top_pairs", "popular_this_hour", "popular_this_weekday"] {
        out.insert(
            field.into(),
            merge_ranked(snapshots, field, by(&["ticker", "module"]), "count"),
        );
    }
    out.insert(
        "top_sequences".into(),
        merge_ranked(snapshots, "top_sequences", by(&["kind", "from", "to"]), "count"),
    );
    out.insert("analyzers".into(), json!(snapshots.len()));
    out.insert("budget".into(), merge_budget(snapshots));
    Value::Object(out)
}

/// The analyzers' fetch-budget spend (each over its own partitions): counts summed, the budget
/// and the span from the newest report.
fn merge_budget(snapshots: &[&Value]) -> Value {
    let spends: Vec<&Value> =
        snapshots.iter().map(|s| &s["budget"]).filter(|b| b.is_object()).collect();
    let Some(newest) = spends.last() else { return Value::Null };
    let mut out = Map::new();
    out.insert("budget".into(), newest["budget"].clone());
    for field in ["demand_fetches", "warms", "useful_warms", "no_warming_fetches", "refused"] {
        out.insert(
            field.into(),
            json!(spends.iter().map(|b| b[field].as_u64().unwrap_or(0)).sum::<u64>()),
        );
    }
    out.insert(
        "span_s".into(),
        json!(spends.iter().filter_map(|b| b["span_s"].as_u64()).max().unwrap_or(0)),
    );
    Value::Object(out)
}

/// Entries of list `field` across snapshots, the same entry (by `id`) once with its `count`
/// summed, highest count first.
fn merge_ranked(
    snapshots: &[&Value],
    field: &str,
    id: impl Fn(&Value) -> String,
    count: &str,
) -> Value {
    let mut merged: Vec<(String, Value)> = Vec::new();
    for s in snapshots {
        for item in s[field].as_array().into_iter().flatten() {
            let key = id(item);
            match merged.iter_mut().find(|(k, _)| *k == key) {
                Some((_, existing)) => {
                    let total = existing[count].as_f64().unwrap_or(0.0)
                        + item[count].as_f64().unwrap_or(0.0);
                    existing[count] =
                        if item[count].is_u64() { json!(total as u64) } else { json!(total) };
                }
                None => merged.push((key, item.clone())),
            }
        }
    }
    let mut items: Vec<Value> = merged.into_iter().map(|(_, v)| v).collect();
    items.sort_by(|a, b| {
        b[count].as_f64().unwrap_or(0.0).total_cmp(&a[count].as_f64().unwrap_or(0.0))
    });
    items.truncate(MERGED_LIST_LEN);
    Value::Array(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_of_two_analyzers_merge_into_one_ranking() {
        let a = json!({
            "generated_at": "2026-01-06T15:00:00Z", "market_hour": 10, "market_weekday": "Tue", "current_hour_weight": 1.5,
            "live_keys": 2, "events_in_window": 30, "hourly_profile": [1, 2], "weekday_profile": [5],
            "top_tickers": [{"name": "AAPL", "count": 20}, {"name": "MSFT", "count": 10}],
            "top_modules": [{"name": "price", "count": 30}],
            "top_pairs": [{"ticker": "AAPL", "module": "price", "count": 20}],
            "popular_this_hour": [], "popular_this_weekday": [],
            "top_sequences": [{"kind": "module", "from": "price", "to": "chart", "count": 2.5, "probability": 0.5}],
        });
        let b = json!({
            "generated_at": "2026-01-06T15:00:05Z", "market_hour": 10, "market_weekday": "Tue", "current_hour_weight": 1.5,
            "live_keys": 1, "events_in_window": 25, "hourly_profile": [0, 1, 4], "weekday_profile": [2],
            "top_tickers": [{"name": "TSLA", "count": 25}],
            "top_modules": [{"name": "price", "count": 5}, {"name": "news", "count": 20}],
            "top_pairs": [{"ticker": "TSLA", "module": "news", "count": 20}],
            "popular_this_hour": [], "popular_this_weekday": [],
            "top_sequences": [{"kind": "module", "from": "price", "to": "chart", "count": 1.0, "probability": 0.4}],
        });
        let m = merge_stats(&[&a, &b]);
        assert_eq!(m["generated_at"], "2026-01-06T15:00:05Z");
        assert_eq!((m["live_keys"].as_u64(), m["events_in_window"].as_u64()), (Some(3), Some(55)));
        assert_eq!(m["hourly_profile"], json!([1, 3, 4]));
        let tickers: Vec<&str> = m["top_tickers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(tickers, ["TSLA", "AAPL", "MSFT"]);
        assert_eq!(m["top_modules"][0], json!({"name": "price", "count": 35}));
        assert_eq!(m["top_sequences"].as_array().unwrap().len(), 1);
        assert_eq!(m["top_sequences"][0]["count"], json!(3.5));
        assert_eq!(m["analyzers"], 2);
    }
}
