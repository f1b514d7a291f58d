//! Prometheus tooling for tests: the `promtool` lint of an exposition, finding a tool CI
//! installs ([`ci_tool`]), and a real Prometheus server ([`TestPrometheus`]).

use crate::{eventually, http};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// `promtool check metrics` on an exposition. CI installs promtool (Debian's `prometheus`) and
/// sets `CI`, so there it must be present; on a bare machine the check is reported as not run.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("NOTE: promtool not found ({e}); exposition lint not run (CI runs it)");
            return;
        }
        Err(e) => panic!("promtool is required in CI: {e}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The path of `tool`, a program CI installs (from the Debian package `package`). Outside CI a
/// missing tool gives `None` and a note (the check is reported as not run); in CI it panics.
pub fn ci_tool(tool: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file());
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_none() => {
            eprintln!("NOTE: {tool} not found (Debian package `{package}`); this check is not run here (CI runs it)");
            None
        }
        None => panic!("CI must provide {tool} (Debian package `{package}`; .ci/run installs it)"),
    }
}

/// A real Prometheus server (Debian's `prometheus`) on a free port with a private storage
/// directory; killed and cleaned up when dropped.
pub struct TestPrometheus {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: std::process::Child,
    dir: PathBuf,
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestPrometheus {
    /// Starts `prometheus` with `config` (a prometheus.yml) and waits until it is ready; `None`
    /// outside CI when it is not installed (see [`ci_tool`]).
    pub async fn start(config: &str) -> Option<Self> {
        let bin = ci_tool("prometheus", "prometheus")?;
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "smart-prefetch-prom-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cfg_file = dir.join("prometheus.yml");
        std::fs::write(&cfg_file, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = std::process::Command::new(bin)
            .arg(format!("--config.file={}", cfg_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let me = Self { base: format!("http://127.0.0.1:{port}"), child, dir };
        let ready = format!("{}/-/ready", me.base);
        eventually(Duration::from_secs(60), "prometheus ready", || async {
            http().get(&ready).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        Some(me)
    }

    /// Its own log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The result vector of an instant query (`data.result`); `Err` carries Prometheus's error
    /// (a bad expression), so a test can tell "no data yet" from "never will".
    pub async fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let r = http()
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The first finite sample value an instant query returns, if any.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        finite_values(&self.query(promql).await.ok()?).into_iter().next()
    }
}

/// The finite sample values of a query's result vector (NaN and ±Inf left out).
pub fn finite_values(result: &[serde_json::Value]) -> Vec<f64> {
    result
        .iter()
        .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .filter(|x| x.is_finite())
        .collect()
}
