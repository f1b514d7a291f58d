//! The real `ingest` binary: replaying a log (`--from FILE` and `--from -`), and a SIGTERM
//! that drains and flushes.

use prefetch_e2e::*;
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ingest_cmd(kafka: &TestKafka, topics: &prefetch_common::kafka::TopicArgs) -> Command {
    let mut c = Command::new(bin_path("ingest"));
    c.args(["--brokers", &kafka.bootstrap(), "--topic-partitions", "3"])
        .args([
            "--query-events-topic",
            &topics.query_events_topic,
            "--predictions-topic",
            &topics.predictions_topic,
        ])
        .args(["--config-topic", &topics.config_topic, "--stats-topic", &topics.stats_topic])
        .env("PREFETCH_LOG_FORMAT", "text")
        .env_remove("RUST_LOG");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_file_skips_bad_lines_by_number_and_lands_the_rest() {
    let kafka = TestKafka::start();
    let topics = unique_topics("replay-file");
    kafka.prepare(&topics);
    let dir = std::env::temp_dir().join(format!("sp-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut good = 0;
    for i in 0..300 {
        match i {
            4 => writeln!(f, r#"{{"ticker":"BAD TICKER","module":"price"}}"#).unwrap(),
            16 => writeln!(f, "{{truncated").unwrap(),
            20 => writeln!(f).unwrap(),
            _ => {
                let t = ["AAPL", "MSFT", "^GSPC"][i % 3];
                writeln!(f, "{}", json!({"ticker": t, "module": "price", "ts": 1773066600000i64 + i as i64, "client": "c"})).unwrap();
                good += 1;
            }
        }
    }
    drop(f);

    let out = ingest_cmd(&kafka, &topics).arg("--from").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "skipped lines make the exit code non-zero; stderr:\n{stderr}"
    );
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(summary, json!({"lines": 299, "produced": good, "invalid": 2, "failed": 0}));
    assert!(
        stderr.contains("line=5") && stderr.contains("line=17"),
        "bad lines named by number:\n{stderr}"
    );
    assert!(stderr.contains("2 invalid line(s) skipped"), "{stderr}");

    assert_eq!(topic_count(&kafka.bootstrap(), &topics.query_events_topic).await, good as i64);
    let got =
        read_topic(&kafka.bootstrap(), &topics.query_events_topic, good, Duration::from_secs(20))
            .await;
    let aapl: Vec<String> = got
        .iter()
        .filter(|r| r.key == "AAPL")
        .map(|r| r.value["ts"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = aapl.clone();
    sorted.sort();
    assert_eq!(aapl, sorted, "a ticker's events keep log order");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_stdin() {
    let kafka = TestKafka::start();
    let topics = unique_topics("replay-stdin");
    kafka.prepare(&topics);
    let mut child = ingest_cmd(&kafka, &topics)
        .args(["--from", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..25 {
        writeln!(stdin, "{}", json!({"ticker": format!("T{i}"), "module": "news"})).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary, json!({"lines": 25, "produced": 25, "invalid": 0, "failed": 0}));
    assert_eq!(topic_count(&kafka.bootstrap(), &topics.query_events_topic).await, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_cleanly_with_every_acknowledged_event_on_the_topic() {
    let kafka = TestKafka::start();
    let topics = unique_topics("sigterm");
    kafka.prepare(&topics);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = ingest_cmd(&kafka, &topics)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(30), "binary ready", || async {
        http()
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    })
    .await;
    let body: String = (0..500)
        .map(|i| format!("{}\n", json!({"ticker": format!("K{}", i % 7), "module": "price"})))
        .collect();
    let r = http()
        .post(format!("{base}/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let started = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "ingest did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status:?}:\n{stderr}");
    assert!(stderr.contains("SIGTERM") && stderr.contains("flushing the producer"), "{stderr}");
    assert_eq!(topic_count(&kafka.bootstrap(), &topics.query_events_topic).await, 500);
}
