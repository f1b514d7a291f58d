//! CPU per event, the throughput benchmarks' primary figure (issue #15).
//!
//! Throughput ratios on a shared 2-core machine swing with whatever else runs; the CPU an event
//! costs does not. Each side of a throughput benchmark runs in a process of its own (the raw
//! client in the bench process, the service in a child started from this same binary with a
//! hidden subcommand, see `serve.rs`), so the CPU of a side is its process's CPU time over the
//! timed span: `utime + stime` from `/proc/<pid>/stat`, every thread included (librdkafka's,
//! tokio's, the service's own), in USER_HZ ticks of 10 ms — about 1% of a round of 400,000
//! events at ~2 µs each.
//!
//! Each side's CPU is also split by kind of thread ([`threads_of`]: each thread's
//! `/proc/<pid>/task/<tid>/schedstat`, in nanoseconds, and its voluntary context switches), so
//! a gap between the sides can be placed: the consume loop, librdkafka's broker threads, the
//! analyzer's parse and fold threads.
//!
//! Where the machine has hardware counters and `perf` is installed (`--perf`), a `perf stat -e
//! instructions:u -p <pid>` runs over the same span and gives user-space instructions per
//! event as well; virtual machines without a PMU (this project's machines among them) answer
//! "not supported", and the column says `n/a`.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// CPU seconds process `pid` has used so far (all threads), or `None` when it is gone.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`; utime and stime are the 14th and 15th of the line.
    let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
    let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks as f64 / 100.0)
}

/// CPU seconds the calling thread has used so far: the first field of
/// `/proc/thread-self/schedstat`, nanoseconds on a CPU. A single-threaded measurement read off
/// it holds on a loaded machine, where the wall time also counts the time others ran.
pub fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<u64>().ok()? as f64 / 1e9)
}

/// Times a span of the calling thread: its CPU time where `/proc` gives it, else wall time.
pub struct Stopwatch {
    cpu0: Option<f64>,
    wall0: std::time::Instant,
}

impl Stopwatch {
    /// Starts the span.
    pub fn start() -> Self {
        Self { cpu0: thread_cpu_seconds(), wall0: std::time::Instant::now() }
    }

    /// Seconds since the start: the thread's CPU time, or wall time without `/proc`.
    pub fn seconds(&self) -> f64 {
        match (self.cpu0, thread_cpu_seconds()) {
            (Some(a), Some(b)) => b - a,
            _ => self.wall0.elapsed().as_secs_f64(),
        }
    }
}

/// One kind of thread of a process (threads named alike, e.g. `tokio-rt-worker` or
/// `rdk:broker1`, added up): CPU seconds and context switches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Threads {
    /// The threads' name, digits of a numbered name dropped after the first (`rdk:broker1`
    /// and `rdk:broker2` are one kind; `rdk:broker-1`, librdkafka's bootstrap, another).
    pub name: String,
    /// CPU seconds (`/proc/<pid>/task/<tid>/schedstat`, nanoseconds).
    pub cpu_seconds: f64,
    /// Voluntary context switches: each time one of them blocked and was woken again.
    pub switches: u64,
}

/// The threads of `pid` by kind, as they are now (threads that ended are not counted).
pub fn threads_of(pid: u32) -> Vec<Threads> {
    let mut by_name: Vec<Threads> = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for t in tasks.flatten() {
        let dir = t.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let name = kind(read("comm").trim());
        let cpu = read("schedstat")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(0.0, |ns| ns as f64 / 1e9);
        let switches = read("status")
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        match by_name.iter_mut().find(|k| k.name == name) {
            Some(k) => {
                k.cpu_seconds += cpu;
                k.switches += switches;
            }
            None => by_name.push(Threads { name, cpu_seconds: cpu, switches }),
        }
    }
    by_name
}

/// A thread's kind from its name: a numbered name (`rdk:broker1`) without its number.
fn kind(comm: &str) -> String {
    let mut s = comm.trim_end_matches(|c: char| c.is_ascii_digit()).to_owned();
    if s.is_empty() {
        s = comm.to_owned();
    }
    s
}

/// What each kind of thread spent between two [`threads_of`] readings, busiest first.
fn threads_delta(before: &[Threads], after: Vec<Threads>) -> Vec<Threads> {
    let mut out: Vec<Threads> = after
        .into_iter()
        .map(|mut a| {
            if let Some(b) = before.iter().find(|b| b.name == a.name) {
                a.cpu_seconds = (a.cpu_seconds - b.cpu_seconds).max(0.0);
                a.switches = a.switches.saturating_sub(b.switches);
            }
            a
        })
        .filter(|t| t.cpu_seconds > 0.0 || t.switches > 0)
        .collect();
    out.sort_by(|a, b| b.cpu_seconds.total_cmp(&a.cpu_seconds));
    out
}

/// `name µs/event (switches per 1,000 events)` for each kind of thread.
pub fn fmt_threads(threads: &[Threads], events: usize) -> String {
    let n = events.max(1) as f64;
    threads
        .iter()
        .map(|t| {
            format!(
                "{} {:.3} ({:.1})",
                t.name,
                t.cpu_seconds * 1e6 / n,
                t.switches as f64 * 1e3 / n
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A measurement of one process over one span.
pub struct Meter {
    pid: u32,
    cpu0: f64,
    threads0: Vec<Threads>,
    perf: Option<Child>,
}

/// What a [`Meter`] saw.
#[derive(Debug, Clone)]
pub struct Sample {
    /// CPU seconds (all threads) over the span.
    pub cpu_seconds: f64,
    /// User-space instructions over the span, where `perf stat` could count them.
    pub instructions: Option<u64>,
    /// CPU and context switches by kind of thread over the span (threads alive at its end).
    pub threads: Vec<Threads>,
}

impl Sample {
    /// CPU µs per event.
    pub fn cpu_us_per(&self, events: usize) -> f64 {
        self.cpu_seconds * 1e6 / events as f64
    }

    /// Instructions per event, if counted.
    pub fn instructions_per(&self, events: usize) -> Option<f64> {
        self.instructions.map(|i| i as f64 / events as f64)
    }
}

impl Meter {
    /// Starts measuring `pid`; with `perf`, also counts its instructions with `perf stat`.
    pub fn start(pid: u32, perf: bool) -> Self {
        let perf = perf
            .then(|| {
                Command::new("perf")
                    .args(["stat", "-x", ",", "-e", "instructions:u", "-p", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .ok()
            })
            .flatten();
        if perf.is_some() {
            // Let perf attach before the span starts.
            std::thread::sleep(Duration::from_millis(100));
        }
        let threads0 = threads_of(pid);
        Self { pid, cpu0: process_cpu_seconds(pid).unwrap_or(0.0), threads0, perf }
    }

    /// Ends the span.
    pub fn stop(self) -> Sample {
        let cpu_seconds = process_cpu_seconds(self.pid).unwrap_or(self.cpu0) - self.cpu0;
        let threads = threads_delta(&self.threads0, threads_of(self.pid));
        let instructions = self.perf.and_then(|mut child| {
            // perf stat prints its counts when interrupted.
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
            let mut err = String::new();
            child.stderr.take()?.read_to_string(&mut err).ok()?;
            err.lines()
                .find(|l| l.contains("instructions"))
                .and_then(|l| l.split(',').next()?.trim().parse::<u64>().ok())
        });
        Sample { cpu_seconds, instructions, threads }
    }
}

/// Median, minimum and maximum of `v` (not empty).
pub fn spread(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

/// `median (min–max)` with `digits` decimals.
pub fn fmt_spread(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "n/a".to_owned();
    }
    let (m, lo, hi) = spread(v);
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

/// An optional figure, `n/a` when absent.
pub fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.digits$}"))
}

/// The machine's load average over the last minute, for the record of a run's conditions.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_moves_with_work() {
        let pid = std::process::id();
        let m = Meter::start(pid, false);
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let s = m.stop();
        assert!(s.cpu_seconds >= 0.1, "300 ms of spinning shows as CPU time: {s:?}");
        assert!(s.instructions.is_none());
        let main = s.threads.first().expect("this process's threads are read");
        assert!(main.cpu_seconds >= 0.1, "the spinning thread is the busiest: {:?}", s.threads);
        assert_eq!(kind("rdk:broker12"), "rdk:broker");
        assert_eq!(kind("rdk:broker-1"), "rdk:broker-");
        assert_eq!(kind("42"), "42");
        assert_eq!(spread(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(fmt_spread(&[1.0, 2.0, 3.0], 1), "2.0 (1.0–3.0)");
    }
}
