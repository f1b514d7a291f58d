//! The pieces of multi-instance scenarios: services run as real child processes (so a test can
//! `kill -9` one and start it again on the same port), a Redis server, an upstream data API that
//! records when each request arrived, and the arithmetic of rate limits and expositions.

use crate::http;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; a restarted process listens on it again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A service binary running as a child process with `--listen 127.0.0.1:<port>`; killed (and
/// reaped) when dropped. Its stderr goes to a log file named after it, kept for post-mortems.
pub struct ChildService {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl ChildService {
    /// Starts `bin` with `args` (which must include `--listen 127.0.0.1:<port>` for `port`),
    /// text logs at info level into `<tmp>/<name>.log` (appended: a restart keeps the log of
    /// the run before it).
    pub fn spawn(bin: &Path, args: &[String], name: &str, port: u16) -> Self {
        let log = std::env::temp_dir().join(format!("{name}.log"));
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = Command::new(bin)
            .args(args)
            .env("PREFETCH_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Self { child, base: format!("http://127.0.0.1:{port}"), log }
    }

    /// `kill -9`: no shutdown hook runs, nothing is flushed or committed.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Panics (with the tail of its log) if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            panic!("{} exited ({status}); its log ends (newest first):\n{tail}", self.base);
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&mut self, deadline: Duration) {
        let url = format!("{}/readyz", self.base);
        let end = Instant::now() + deadline;
        loop {
            self.assert_running();
            let ok = http().get(&url).send().await.is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(Instant::now() < end, "{} not ready after {deadline:?}", self.base);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its `/metrics` exposition (empty while it does not answer).
    pub async fn metrics(&self) -> String {
        match http().get(format!("{}/metrics", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of every sample of `name` (all label sets) in an exposition.
pub fn metric_total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// Most of `times` that fall within any one second (a window starting at each of them).
pub fn busiest_second(mut times: Vec<Instant>) -> usize {
    times.sort();
    busiest_window(&times).1
}

/// In sorted `times`, the first window of one second holding the most of them, starting at one
/// of them: `(start index, how many)`; `(0, 0)` for none.
fn busiest_window(times: &[Instant]) -> (usize, usize) {
    let within = |i: usize| {
        times[i..].iter().take_while(|&&t| t < times[i] + Duration::from_secs(1)).count()
    };
    (0..times.len())
        .map(|i| (i, within(i)))
        .fold((0, 0), |best, (i, n)| if n > best.1 { (i, n) } else { best })
}

/// A Redis server: the one `REDIS_URL` names (CI), or a private `redis-server` started here.
pub struct TestRedis {
    /// Its URL.
    pub url: String,
    child: Option<Child>,
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn redis_answers(url: &str) -> bool {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        .is_ok_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
}

impl TestRedis {
    /// `REDIS_URL` when set (it must answer); otherwise a `redis-server` on a free port. `None`
    /// (the test is then skipped with a note) only outside CI with no redis-server installed.
    pub fn start() -> Option<Self> {
        let ci = std::env::var_os("CI").is_some();
        if let Ok(url) = std::env::var("REDIS_URL") {
            if !url.trim().is_empty() {
                assert!(redis_answers(&url), "REDIS_URL={url} does not answer PING; start redis-server there (CI's .ci/run does)");
                return Some(Self { url, child: None });
            }
        }
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if !ci => {
                eprintln!("NOTE: redis-server not found ({e}) and REDIS_URL unset; Redis test not run (CI runs it)");
                return None;
            }
            Err(e) => panic!("CI must provide Redis: set REDIS_URL or install redis-server ({e})"),
        };
        let me = Self { url: format!("redis://127.0.0.1:{port}/"), child: Some(child) };
        let end = Instant::now() + Duration::from_secs(10);
        while !redis_answers(&me.url) {
            assert!(Instant::now() < end, "redis-server on port {port} did not answer within 10s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(me)
    }
}

/// A local upstream data API that answers `GET /data/{module}/{ticker}` with
/// `{"path", "n"}` (`n`: how many requests of that path it has seen) after `delay`, and records
/// when each request arrived — the ground truth for "never more than the limit per second".
pub struct RecordingUpstream {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    arrivals: Arc<Mutex<Vec<(String, Instant)>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl RecordingUpstream {
    /// Starts it on 127.0.0.1:0, answering each request after `delay`. It runs on a thread and
    /// runtime of its own, so an arrival is timed when it arrives even while the test's own
    /// runtime is busy (a storm of 60 requests once held it up long enough to record the
    /// requests of the busiest second up to 0.7 s late, all at once, and fail the limit).
    pub async fn start(delay: Duration) -> Self {
        use axum::extract::State;
        type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;
        async fn answer(
            State((a, delay)): State<(Arrivals, Duration)>,
            uri: axum::http::Uri,
        ) -> axum::Json<serde_json::Value> {
            let path = uri.path().to_owned();
            let n = {
                let mut a = a.lock().unwrap();
                a.push((path.clone(), Instant::now()));
                a.iter().filter(|(p, _)| *p == path).count()
            };
            tokio::time::sleep(delay).await;
            axum::Json(serde_json::json!({"path": path, "n": n}))
        }
        let arrivals: Arrivals = Arc::default();
        let app = axum::Router::new().fallback(answer).with_state((arrivals.clone(), delay));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let s = stop.clone();
        std::thread::Builder::new()
            .name("recording-upstream".into())
            .spawn(move || {
                let rt =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    axum::serve(listener, app).with_graceful_shutdown(s.cancelled_owned()).await
                })
            })
            .unwrap();
        Self { addr, arrivals, stop }
    }

    /// The URL template for a warmer (`--upstream-url`).
    pub fn template(&self) -> String {
        format!("http://{}/data/{{module}}/{{ticker}}", self.addr)
    }

    /// When each request arrived, in order.
    pub fn times(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }

    /// The requests of the busiest second ([`busiest_second`]), each as "+ms path", for a
    /// failure message: evenly spaced arrivals point at the limiter, a clump at a delay
    /// between a grant and its arrival.
    pub fn busiest_timeline(&self) -> String {
        let mut a = self.arrivals.lock().unwrap().clone();
        a.sort_by_key(|(_, t)| *t);
        let times: Vec<Instant> = a.iter().map(|(_, t)| *t).collect();
        let (start, n) = busiest_window(&times);
        let Some(&t0) = times.get(start) else { return String::new() };
        a[start..start + n]
            .iter()
            .map(|(p, t)| format!("+{}ms {p}", (*t - t0).as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// How many requests of `path` (e.g. `/data/price/AAPL`) arrived.
    pub fn count(&self, path: &str) -> usize {
        self.arrivals.lock().unwrap().iter().filter(|(p, _)| p == path).count()
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
