//! Posting the events to an ingest: NDJSON batches to `POST {URL}/v1/events`.
//!
//! Ingest answers 2xx only once Kafka holds the whole batch, so each batch is awaited before the
//! next is sent: the generator runs exactly as fast as the pipeline accepts. A 503 (ingest's
//! "Kafka is slow, retry") is retried after its `Retry-After`; any other non-2xx ends the run.

use super::output::Summary;
use super::Origin;
use prefetch_common::contract::QueryEvent;
use std::time::Duration;
use tokio::time::Instant;

/// Attempts of one batch while ingest answers 503.
const MAX_ATTEMPTS: u32 = 5;
/// Longest wait honoured from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// With --realtime, how long an event may wait for later ones to share its request: a few
/// requests a second instead of one per event, at the cost of events arriving this much late.
const LINGER: Duration = Duration::from_millis(200);

/// Why events could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No answer: connection refused, DNS, timeout.
    #[error("cannot reach ingest at {url}: {reason}")]
    Unreachable {
        /// The URL posted to.
        url: String,
        /// The transport error and its causes.
        reason: String,
    },
    /// Ingest answered, but not 2xx.
    #[error("ingest at {url} refused a batch of {events} events with {status}: {body}")]
    Refused {
        /// The URL posted to.
        url: String,
        /// Events in the refused batch.
        events: usize,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// Ingest's JSON error body, as sent.
        body: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// How to pace the events.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Send as fast as ingest accepts; events keep their generated time.
    AsFastAsAccepted,
    /// Shift every event by `shift` (trace start ↦ now) and send each when the wall clock
    /// reaches it; `origin` is the trace start and `at` the instant it maps to.
    Realtime {
        /// Added to every event's time.
        shift: chrono::Duration,
        /// The (shifted) trace start.
        origin: chrono::DateTime<chrono::Utc>,
        /// The monotonic instant of `origin`.
        at: Instant,
    },
}

/// Posts every event to `{base}/v1/events` in batches of `batch_size`.
pub async fn send(
    events: impl Iterator<Item = (QueryEvent, Origin)>,
    base: &str,
    batch_size: usize,
    pace: Pace,
    summary: &mut Summary,
) -> Result<(), SendError> {
    let url = format!("{base}/v1/events");
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| SendError::Client(chain(&e)))?;
    let mut batch = Batch::default();
    for (mut event, origin) in events {
        if let Pace::Realtime { shift, origin: t0, at } = pace {
            event.ts += shift;
            let due = at + (event.ts - t0).to_std().unwrap_or_default();
            if due > Instant::now() {
                // Nothing else is due before this event: deliver what has waited long enough.
                if batch.first_due.is_some_and(|first| due > first + LINGER) {
                    batch.post(&client, &url, summary).await?;
                }
                tokio::time::sleep_until(due).await;
            }
            batch.first_due.get_or_insert(due);
        }
        batch.push(&event, origin);
        if batch.len() >= batch_size {
            batch.post(&client, &url, summary).await?;
        }
    }
    batch.post(&client, &url, summary).await
}

/// Events waiting to be posted, as an NDJSON body.
#[derive(Default)]
struct Batch {
    body: Vec<u8>,
    events: Vec<(QueryEvent, Origin)>,
    /// With --realtime, when the first event of the batch was due.
    first_due: Option<Instant>,
}

impl Batch {
    fn len(&self) -> usize {
        self.events.len()
    }

    fn push(&mut self, event: &QueryEvent, origin: Origin) {
        self.body.extend_from_slice(&event.to_json());
        self.body.push(b'\n');
        self.events.push((event.clone(), origin));
    }

    /// Posts the batch (if any) and counts its events once ingest accepted them.
    async fn post(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        summary: &mut Summary,
    ) -> Result<(), SendError> {
        if self.events.is_empty() {
            return Ok(());
        }
        let mut attempt = 1;
        loop {
            let answer = client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(self.body.clone())
                .send()
                .await
                .map_err(|e| SendError::Unreachable { url: url.to_owned(), reason: chain(&e) })?;
            let status = answer.status();
            if status.is_success() {
                break;
            }
            let retry_after = answer
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                .map_or(Duration::from_secs(1), |s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
            let body = answer.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && attempt < MAX_ATTEMPTS {
                eprintln!(
                    "demo-traffic: ingest answered 503 ({}); retrying in {} s",
                    body.trim(),
                    retry_after.as_secs()
                );
                tokio::time::sleep(retry_after).await;
                attempt += 1;
                continue;
            }
            return Err(SendError::Refused {
                url: url.to_owned(),
                events: self.events.len(),
                status,
                body: body.trim().to_owned(),
            });
        }
        summary.batches += 1;
        for (event, origin) in self.events.drain(..) {
            summary.record(&event, origin);
        }
        self.body.clear();
        self.first_due = None;
        Ok(())
    }
}

/// An error and its causes, `: `-separated (reqwest's own message omits the OS error).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
