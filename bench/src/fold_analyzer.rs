//! The analyzer's side of a round of `analyzer-throughput` (`fold.rs`): the service in a
//! child process (`serve.rs`), timed from its first folded event to its last as its `/metrics`
//! count them, with its process's CPU over that span (`cpu.rs`).

use crate::cpu::Meter;
use crate::fold::{Drain, ThroughputArgs};
use crate::serve::{Service, ServiceProcess};
use anyhow::Context;
use std::time::{Duration, Instant};

pub(crate) async fn drain_analyzer(
    brokers: &str,
    topics_prefix: &str,
    group: &str,
    n: usize,
    args: &ThroughputArgs,
) -> anyhow::Result<Drain> {
    let mut child_args = vec![
        "--brokers".to_owned(),
        brokers.to_owned(),
        "--prefix".into(),
        topics_prefix.to_owned(),
        "--group".into(),
        group.to_owned(),
        "--refresh-ahead".into(),
        args.refresh_ahead.to_string(),
        "--checkpoints".into(),
        args.checkpoints.to_string(),
    ];
    for o in &args.kafka_option {
        child_args.extend(["-X".to_owned(), o.clone()]);
    }
    let service = ServiceProcess::start(Service::Analyzer, &child_args).await?;
    let url = format!("{}/metrics", service.base);
    let http = reqwest::Client::new();
    let folded = |text: &str| -> usize {
        text.lines()
            .filter(|l| l.starts_with("smart_prefetch_analyzer_events_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as usize
    };
    let mut started = None;
    // The longest time the folded count stood still while the span ran, and at what count:
    // a round far below the plain consumer's rate is either busy (its CPU per event says so)
    // or stalled waiting (this says where).
    let (mut moved_at, mut last_k, mut pause) = (Instant::now(), 0, (Duration::ZERO, 0));
    loop {
        let text = match http.get(&url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let k = folded(&text);
        if k > 0 && started.is_none() {
            started = Some((Instant::now(), k, Meter::start(service.pid(), args.perf)));
        }
        if k != last_k {
            if started.is_some() && moved_at.elapsed() > pause.0 && last_k > 0 {
                pause = (moved_at.elapsed(), last_k);
            }
            (moved_at, last_k) = (Instant::now(), k);
        }
        if k >= n {
            break;
        }
        tokio::time::sleep(next_poll(
            started.as_ref().map(|(t0, k0, _)| (t0.elapsed(), *k0)),
            k,
            n,
        ))
        .await;
    }
    let (t0, k0, meter) = started.context("no event folded")?;
    let secs = t0.elapsed().as_secs_f64();
    let rate = (n - k0) as f64 / secs;
    let cpu = meter.stop();
    eprintln!(
        "analyzer round: {:.3} s from {k0} folded to {n}; longest pause in folding {:.3} s, at {} folded",
        secs,
        pause.0.as_secs_f64(),
        pause.1
    );
    let text = http.get(&url).send().await?.text().await?;
    let predictions: f64 = text
        .lines()
        .filter(|l| l.starts_with("smart_prefetch_analyzer_predictions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let metric = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    eprintln!(
        "analyzer round: {n} events folded, {predictions} event-driven predictions published; {} partitions restored in {:.3} s together",
        metric("smart_prefetch_analyzer_restore_duration_seconds_count"),
        metric("smart_prefetch_analyzer_restore_duration_seconds_sum"),
    );
    service.stop().await?;
    Ok(Drain { rate, events: n - k0, cpu })
}

/// How long to wait before reading the analyzer's folded count again, given the time since
/// the span started and the count then (`None` before), the count `k` now and the total `n`:
/// 20 ms, but about half the time the rest should take at the rate so far, down to 1 ms, so
/// the span ends within about a millisecond of the last event folded, as the plain
/// consumer's does (a fixed 20 ms added 10 ms on average to spans of about 200 ms: 5% off
/// the analyzer's rate). Each read costs the analyzer about 0.3 ms of CPU (a `/metrics`
/// scrape), so the few more reads near the end cost it well under 0.01 µs an event.
fn next_poll(since: Option<(Duration, usize)>, k: usize, n: usize) -> Duration {
    const EVERY: Duration = Duration::from_millis(20);
    let Some((elapsed, k0)) = since else { return EVERY };
    if k <= k0 || elapsed.is_zero() {
        return EVERY;
    }
    let rate = (k - k0) as f64 / elapsed.as_secs_f64();
    let rest = Duration::from_secs_f64(n.saturating_sub(k) as f64 / rate);
    (rest / 2).clamp(Duration::from_millis(1), EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_read_more_often_as_the_end_nears() {
        let ms = Duration::from_millis;
        assert_eq!(next_poll(None, 0, 300_000), ms(20), "before the first fold");
        // 100,000 folded in 100 ms: 200,000 more take 200 ms, so the next read is in 20 ms.
        assert_eq!(next_poll(Some((ms(100), 0)), 100_000, 300_000), ms(20));
        // 10,000 left at 1,000,000/s: 10 ms left, read again in 5 ms.
        assert_eq!(next_poll(Some((ms(290), 0)), 290_000, 300_000), ms(5));
        // Nearly done: not more often than every millisecond.
        assert_eq!(next_poll(Some((ms(299), 0)), 299_900, 300_000), ms(1));
        assert_eq!(next_poll(Some((ms(50), 5_000)), 5_000, 300_000), ms(20), "nothing new yet");
    }
}
