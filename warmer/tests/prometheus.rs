//! A real Prometheus server scrapes the warmer and answers the hit-ratio query dashboards use.

mod common;

use common::*;

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the server when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const HIT_RATIO: &str =
    "sum(rate(smart_prefetch_warmer_queries_total{result=\"hit\"}[1m])) / sum(rate(smart_prefetch_warmer_queries_total[1m]))";

async fn query(base: &str, promql: &str) -> Option<f64> {
    let r =
        http().get(format!("{base}/api/v1/query")).query(&[("query", promql)]).send().await.ok()?;
    let v: Value = r.json().await.ok()?;
    let s = v["data"]["result"].get(0)?["value"][1].as_str()?.to_owned();
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_scrapes_the_warmer_and_computes_the_hit_ratio() {
    let bin = ["/usr/bin/prometheus", "prometheus"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(bin) = bin else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide prometheus (Debian package `prometheus`)"
        );
        eprintln!("NOTE: prometheus not installed; scrape test not run (CI runs it)");
        return;
    };
    let kafka = TestKafka::start();
    let up = TestUpstream::start().await;
    let dir = ScratchDir::new("warmer-prom-cache");
    let w = spawn_warmer(config(&kafka, "prom", &up, dir.path().to_str().unwrap())).await;

    let prom_dir = ScratchDir::new("warmer-prom");
    let cfg_file = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg_file,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: warmer\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{}']\n",
            w.addr
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _prom = KillOnDrop(
        Command::new(bin)
            .arg(format!("--config.file={}", cfg_file.display()))
            .arg(format!("--storage.tsdb.path={}", prom_dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(60), "prometheus scraping the warmer (up == 1)", || async {
        (query(&base, "up{job=\"warmer\"}").await == Some(1.0)).then_some(())
    })
    .await;

    // Steady traffic while Prometheus scrapes: each round one new key (a miss) asked three
    // times (then two hits), so the hit ratio tends to 2/3.
    let mut round = 0;
    let ratio = eventually(Duration::from_secs(90), "a hit ratio from PromQL", || {
        round += 1;
        let (w, base) = (&w, &base);
        let r = round;
        async move {
            for _ in 0..3 {
                let resp =
                    http().get(w.url(&format!("/v1/cache/price/P{r}"))).send().await.unwrap();
                assert_eq!(resp.status(), 200);
            }
            let ratio = query(base, HIT_RATIO).await?;
            // Wait for enough samples that the rates settle.
            (r >= 30).then_some(ratio)
        }
    })
    .await;
    assert!((0.45..=0.85).contains(&ratio), "hit ratio {ratio} far from the 2/3 generated");
    let by_group =
        query(&base, "sum by (group) (rate(smart_prefetch_warmer_queries_total[1m]))").await;
    assert!(by_group.is_some(), "the group label is queryable");
    // The per-partition lag gauge comes from librdkafka's statistics (every 5 s).
    let lag = eventually(Duration::from_secs(30), "consumer lag in Prometheus", || async {
        query(&base, "max(smart_prefetch_warmer_consumer_lag_messages{consumer=\"queries\"})").await
    })
    .await;
    assert!((0.0..1000.0).contains(&lag), "lag {lag}");
    w.stop().await;
}
