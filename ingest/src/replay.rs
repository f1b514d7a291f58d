//! `ingest --from FILE|-`: replays a JSON-lines log of query events into the topic.
//!
//! Lines are validated like HTTP events (a line without `ts` is stamped with the replay clock).
//! Invalid lines are reported by number and skipped; everything else is produced with a bounded
//! number of deliveries in flight and is acknowledged before the summary is printed.

use crate::sink::EventSink;
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use prefetch_common::contract::QueryEvent;
use rdkafka::producer::DeliveryFuture;
use serde::Serialize;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

/// Deliveries awaited at most at once; bounds memory on logs of any size.
const MAX_IN_FLIGHT: usize = 50_000;
/// Invalid lines logged individually before only counting them.
const MAX_LOGGED_INVALID: usize = 20;

/// What a replay did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Non-blank lines read.
    pub lines: u64,
    /// Events acknowledged by Kafka.
    pub produced: u64,
    /// Lines skipped because they broke the contract.
    pub invalid: u64,
    /// Events Kafka did not acknowledge.
    pub failed: u64,
}

impl ReplaySummary {
    /// Whether every line became an acknowledged event.
    pub fn is_clean(&self) -> bool {
        self.invalid == 0 && self.failed == 0
    }
}

/// Replays `path` (`-` for standard input) through `sink`.
pub async fn replay_path(path: &Path, sink: &EventSink) -> anyhow::Result<ReplaySummary> {
    let progress = std::io::stderr().is_terminal();
    if path == Path::new("-") {
        let bar = progress.then(ProgressBar::new_spinner);
        replay(BufReader::new(tokio::io::stdin()), sink, bar).await
    } else {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let len = file.metadata().await?.len();
        let bar = progress.then(|| {
            ProgressBar::new(len).with_style(
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
                    .expect("static template"),
            )
        });
        replay(BufReader::with_capacity(1 << 20, file), sink, bar).await
    }
}

/// Replays JSON lines from `reader`; `bar` shows bytes read when given.
pub async fn replay<R: AsyncBufRead + Unpin>(
    mut reader: R,
    sink: &EventSink,
    bar: Option<ProgressBar>,
) -> anyhow::Result<ReplaySummary> {
    let started = Instant::now();
    let mut summary = ReplaySummary::default();
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::new();
    let mut line = String::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).await?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if let Some(b) = &bar {
            b.inc(n as u64);
            if line_no.is_multiple_of(10_000) {
                b.set_message(format!("{} events", summary.lines));
            }
        }
        if line.trim().is_empty() {
            continue;
        }
        summary.lines += 1;
        let event = match QueryEvent::from_json(line.as_bytes(), Utc::now()) {
            Ok(e) => e,
            Err(e) => {
                summary.invalid += 1;
                if summary.invalid as usize <= MAX_LOGGED_INVALID {
                    tracing::warn!(line = line_no, problems = %e, "Skipping invalid line.");
                }
                continue;
            }
        };
        while in_flight.len() >= MAX_IN_FLIGHT {
            settle(in_flight.pop_front().expect("non-empty"), &mut summary).await;
        }
        // Replays are bulk loads: wait for queue room as long as it takes.
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        match sink.enqueue(&event, far).await {
            Ok(f) => in_flight.push_back(f),
            Err(e) => {
                summary.failed += 1;
                tracing::warn!(line = line_no, error = %e, "Could not enqueue event.");
            }
        }
    }
    for f in in_flight {
        settle(f, &mut summary).await;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if summary.invalid as usize > MAX_LOGGED_INVALID {
        tracing::warn!(
            more = summary.invalid as usize - MAX_LOGGED_INVALID,
            "More invalid lines were skipped."
        );
    }
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        lines = summary.lines,
        produced = summary.produced,
        invalid = summary.invalid,
        failed = summary.failed,
        seconds = secs,
        events_per_second = (summary.produced as f64 / secs.max(1e-9)).round(),
        "Replay finished."
    );
    Ok(summary)
}

async fn settle(f: DeliveryFuture, summary: &mut ReplaySummary) {
    match f.await {
        Ok(Ok(_)) => summary.produced += 1,
        Ok(Err((e, _))) => {
            summary.failed += 1;
            if summary.failed == 1 {
                tracing::warn!(error = %e, "Kafka did not acknowledge an event.");
            }
        }
        Err(_) => summary.failed += 1,
    }
}
