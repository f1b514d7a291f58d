//! The live progress line: what the pipeline is doing, read off the services' own `/metrics`
//! once a second (the same numbers a Prometheus would scrape, so the demo shows nothing the
//! deployment could not).
//!
//! On a terminal one status line is rewritten every second and kept every [`KEEP_EVERY`], so
//! the rise of the hit rate stays on screen; otherwise (a pipe, a log) a plain line per second.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the numbers are read and shown.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// The window of the rates (events/s, recent hit rate).
const WINDOW: Duration = Duration::from_secs(10);
/// On a terminal, how often the status line is kept rather than overwritten.
const KEEP_EVERY: u64 = 10;

/// Counters read from the services at one moment (cumulative since they started).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Query events the analyzer folded in (`smart_prefetch_analyzer_events_total`).
    pub events: f64,
    /// Queries the warmer saw answered from the cache.
    pub hits: f64,
    /// Queries the warmer saw go to the upstream.
    pub misses: f64,
    /// Warms stored (`smart_prefetch_warmer_warms_total{outcome="stored"}`).
    pub warms: f64,
    /// Warmed entries that served a hit.
    pub useful_warms: f64,
    /// Predictions the analyzer published.
    pub predictions: f64,
    /// Entries in the cache now.
    pub cache_entries: f64,
}

impl Totals {
    /// Hit rate of all queries so far, if any.
    pub fn hit_rate(&self) -> Option<f64> {
        let n = self.hits + self.misses;
        (n > 0.0).then(|| self.hits / n)
    }
}

/// The sum of every sample of metric `name` in a Prometheus exposition whose labels contain
/// `label` (e.g. `outcome="stored"`; empty matches all).
pub fn metric_sum(exposition: &str, name: &str, label: &str) -> f64 {
    // Summed from +0.0: an empty f64 sum is -0.0, which would print as "-0".
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            labels
                .contains(label)
                .then(|| value.split_whitespace().next()?.parse::<f64>().ok())
                .flatten()
        })
        .fold(0.0, |a, b| a + b)
}

/// Reads the analyzer's and warmer's metrics.
pub struct Scraper {
    client: reqwest::Client,
    analyzer: String,
    warmer: String,
}

impl Scraper {
    /// For the services' HTTP base URLs (`http://host:port`).
    pub fn new(analyzer: &str, warmer: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("a plain HTTP client");
        Self {
            client,
            analyzer: format!("{analyzer}/metrics"),
            warmer: format!("{warmer}/metrics"),
        }
    }

    async fn text(&self, url: &str) -> String {
        match self.client.get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The totals now; a service that does not answer contributes nothing to this sample.
    pub async fn totals(&self) -> Totals {
        let (a, w) = tokio::join!(self.text(&self.analyzer), self.text(&self.warmer));
        Totals {
            events: metric_sum(&a, "smart_prefetch_analyzer_events_total", ""),
            predictions: metric_sum(&a, "smart_prefetch_analyzer_predictions_total", ""),
            hits: metric_sum(&w, "smart_prefetch_warmer_queries_total", "result=\"hit\""),
            misses: metric_sum(&w, "smart_prefetch_warmer_queries_total", "result=\"miss\""),
            warms: metric_sum(&w, "smart_prefetch_warmer_warms_total", "outcome=\"stored\""),
            useful_warms: metric_sum(&w, "smart_prefetch_warmer_useful_warms_total", ""),
            cache_entries: metric_sum(&w, "smart_prefetch_warmer_cache_entries", ""),
        }
    }
}

/// The last samples, for rates over [`WINDOW`].
#[derive(Default)]
pub struct History {
    samples: VecDeque<(Instant, Totals)>,
}

impl History {
    /// Adds a sample and forgets those older than the window needs.
    pub fn push(&mut self, at: Instant, t: Totals) {
        self.samples.push_back((at, t));
        while self.samples.len() > 2
            && self.samples.get(1).is_some_and(|(a, _)| at.duration_since(*a) >= WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// One status line: elapsed time, events/s and hit rate over the window, the hit rate so
    /// far, warms, useful warms, predictions and cache size.
    pub fn line(&self, elapsed: Duration) -> String {
        let Some((now_at, now)) = self.samples.back() else { return String::new() };
        let (then_at, then) = self.samples.front().expect("not empty");
        let secs = now_at.duration_since(*then_at).as_secs_f64();
        let rate = if secs > 0.0 { (now.events - then.events) / secs } else { 0.0 };
        let (dh, dm) = (now.hits - then.hits, now.misses - then.misses);
        let pct =
            |x: Option<f64>| x.map_or("   –  ".to_owned(), |x| format!("{:5.1}%", 100.0 * x));
        let recent = (dh + dm > 0.0).then(|| dh / (dh + dm));
        let s = elapsed.as_secs();
        let mut line = format!("[{:>2}:{:02}] {:6.1} events/s", s / 60, s % 60, rate);
        let _ = write!(
            line,
            "  hit rate {} (last {} s), {} overall  warms {}  useful warms {}  predictions {}  cached {}",
            pct(recent),
            WINDOW.as_secs(),
            pct(now.hit_rate()),
            now.warms as u64,
            now.useful_warms as u64,
            now.predictions as u64,
            now.cache_entries as u64
        );
        line
    }
}

/// Shows the progress once a second until `stop`; returns the last totals.
pub async fn show(scraper: Scraper, stop: CancellationToken) -> Totals {
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut history = History::default();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Totals::default();
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        last = scraper.totals().await;
        history.push(Instant::now(), last);
        let line = history.line(started.elapsed());
        let mut out = std::io::stdout().lock();
        n += 1;
        let _ = if !tty {
            writeln!(out, "{line}")
        } else if n == KEEP_EVERY {
            n = 0;
            write!(out, "\r\x1b[2K{line}\n")
        } else {
            write!(out, "\r\x1b[2K{line}")
        };
        let _ = out.flush();
    }
    if tty {
        println!();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_samples_by_name_and_label() {
        let text = "# HELP smart_prefetch_warmer_queries_total x\n\
            smart_prefetch_warmer_queries_total{group=\"warmed\",module=\"price\",result=\"hit\"} 7\n\
            smart_prefetch_warmer_queries_total{group=\"holdback\",module=\"news\",result=\"hit\"} 2\n\
            smart_prefetch_warmer_queries_total{group=\"warmed\",module=\"price\",result=\"miss\"} 5\n\
            smart_prefetch_warmer_queries_total_other 100\n\
            smart_prefetch_warmer_cache_entries 42\n";
        assert_eq!(metric_sum(text, "smart_prefetch_warmer_queries_total", "result=\"hit\""), 9.0);
        assert_eq!(metric_sum(text, "smart_prefetch_warmer_queries_total", ""), 14.0);
        assert_eq!(metric_sum(text, "smart_prefetch_warmer_cache_entries", ""), 42.0);
        assert_eq!(metric_sum(text, "absent", ""), 0.0);
    }

    #[test]
    fn the_line_shows_the_recent_and_overall_hit_rate() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.push(t0, Totals { events: 100.0, hits: 0.0, misses: 100.0, ..Totals::default() });
        let later =
            Totals { events: 200.0, hits: 75.0, misses: 125.0, warms: 3.0, ..Totals::default() };
        h.push(t0 + Duration::from_secs(5), later);
        let line = h.line(Duration::from_secs(65));
        assert!(line.starts_with("[ 1:05]   20.0 events/s"), "{line}");
        assert!(line.contains("hit rate  75.0% (last 10 s),  37.5% overall"), "{line}");
        assert!(line.contains("warms 3"), "{line}");
    }
}
