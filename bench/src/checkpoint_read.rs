//! `checkpoint-read`: the checkpoint reads of one restore pass (a rebalance or a start that
//! assigns N partitions), the analyzer's old way against its new way, side by side in one run.
//!
//! A fresh state topic of `--partitions` partitions gets a checkpoint of `--bytes` in
//! `--with-checkpoint` of them (spread out; the others have none, as on a group's first start).
//! Each round then times one pass per variant, in rotating order: a thread per partition (the
//! analyzer's `spawn_blocking` task per assigned partition) reads that partition's checkpoint,
//! and the pass ends when the last read returns. Variants:
//! - `client per partition, wait 500 ms` — before: a client created per read, librdkafka's
//!   default `fetch.wait.max.ms`;
//! - `client per partition, wait 1 ms`;
//! - `one client per pass, wait 500 ms`;
//! - `one client per pass, wait 1 ms` — after: [`checkpoint::SharedReader`] with
//!   [`READER_FETCH_WAIT_MS`], as the analyzer now reads.
//!
//! Every read is checked (the partition's own checkpoint, or none). The topic is deleted at the
//! end.

use analyzer::service::checkpoint::{self, CheckpointReader, SharedReader, READER_FETCH_WAIT_MS};
use prefetch_common::kafka::KafkaArgs;
use rdkafka::admin::AdminOptions;
use rdkafka::producer::FutureProducer;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Flags of `checkpoint-read`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Kafka bootstrap servers (a real broker).
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Partitions restored in each pass (the state topic's partitions).
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    /// Partitions that have a checkpoint (the others have none).
    #[arg(long, default_value_t = 8)]
    with_checkpoint: i32,
    /// Snapshot bytes of each checkpoint (chunks of 900 KiB).
    #[arg(long, default_value_t = 200_000)]
    bytes: usize,
    /// Rounds; each times one pass of every variant.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
}

const TIMEOUT: Duration = Duration::from_secs(60);

/// How a pass reads: a client per partition or one for the pass, and `fetch.wait.max.ms`.
#[derive(Clone, Copy)]
struct Variant {
    shared: bool,
    wait_ms: u32,
}

impl Variant {
    fn name(self) -> String {
        let how = if self.shared { "one client per pass" } else { "client per partition" };
        format!("{how}, wait {} ms", self.wait_ms)
    }
}

/// Whether partition `p` of `n` gets one of the `k` checkpoints (spread evenly).
fn has_checkpoint(p: i32, n: i32, k: i32) -> bool {
    (p * k) / n != ((p + 1) * k) / n
}

/// One pass: a thread per partition; seconds until the last read returned.
fn pass(kafka: &KafkaArgs, topic: &str, v: Variant, a: &Args) -> anyhow::Result<f64> {
    let mut config = kafka.reader_config()?;
    config.set("fetch.wait.max.ms", v.wait_ms.to_string());
    // The analyzer's own reader when it is the variant it runs.
    let analyzers =
        (v.shared && v.wait_ms == READER_FETCH_WAIT_MS).then(|| SharedReader::new(kafka, topic));
    let lazy: Mutex<Option<CheckpointReader>> = Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<f64> {
        let reads: Vec<_> = (0..a.partitions)
            .map(|p| {
                let (config, analyzers, lazy) = (&config, &analyzers, &lazy);
                s.spawn(move || {
                    let got = match (analyzers, v.shared) {
                        (Some(r), _) => r.read(p, TIMEOUT),
                        (None, true) => {
                            let mut r = lazy.lock().unwrap_or_else(|e| e.into_inner());
                            if r.is_none() {
                                *r = Some(CheckpointReader::from_config(config, topic)?);
                            }
                            r.as_ref().expect("set").read(p, TIMEOUT)
                        }
                        (None, false) => {
                            CheckpointReader::from_config(config, topic)?.read(p, TIMEOUT)
                        }
                    };
                    Ok::<_, checkpoint::CheckpointError>((p, got?, started.elapsed()))
                })
            })
            .collect();
        let mut last = Duration::ZERO;
        for r in reads {
            let (p, got, at) = r.join().expect("reader thread")?;
            let want = has_checkpoint(p, a.partitions, a.with_checkpoint);
            match got {
                Some(cp) if want && cp.head.partition == p && cp.snapshot.len() == a.bytes => {}
                None if !want => {}
                other => anyhow::bail!("partition {p}: unexpected {:?}", other.map(|c| c.head)),
            }
            last = last.max(at);
        }
        Ok(last.as_secs_f64())
    })
}

/// Runs the bench and prints a Markdown table.
pub async fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.with_checkpoint <= a.partitions && a.partitions > 0, "bad partition counts");
    let kafka = KafkaArgs::new(&a.brokers);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let topic = format!("bench-checkpoint-read-{nanos}");
    anyhow::ensure!(
        checkpoint::ensure_state_topic(&kafka, &topic, a.partitions as usize).await,
        "could not create {topic}"
    );
    let producer: FutureProducer = kafka.producer_config(Duration::from_secs(30))?.create()?;
    for p in (0..a.partitions).filter(|p| has_checkpoint(*p, a.partitions, a.with_checkpoint)) {
        let snapshot: Vec<u8> = (0..a.bytes).map(|i| (i + p as usize) as u8).collect();
        checkpoint::write(&producer, &topic, p, 1_000, None, &snapshot).await?;
    }
    let load_before = crate::cpu::load_average();
    let variants =
        [(false, 500), (false, READER_FETCH_WAIT_MS), (true, 500), (true, READER_FETCH_WAIT_MS)]
            .map(|(shared, wait_ms)| Variant { shared, wait_ms });
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..a.rounds {
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let (kafka, topic, v) = (kafka.clone(), topic.clone(), variants[i]);
            let a2 = a.clone();
            let s = tokio::task::spawn_blocking(move || pass(&kafka, &topic, v, &a2)).await??;
            secs[i].push(s);
        }
    }
    let admin = kafka.admin()?;
    if let Err(e) = admin.delete_topics(&[topic.as_str()], &AdminOptions::new()).await {
        eprintln!("could not delete {topic}: {e}");
    }
    println!(
        "{} partitions per pass, {} with a checkpoint of {} bytes; {} rounds; load average {} before, {} after",
        a.partitions,
        a.with_checkpoint,
        a.bytes,
        a.rounds,
        load_before,
        crate::cpu::load_average()
    );
    println!("| variant | clients per pass | pass p50 | pass max | pass min |");
    println!("|---|---|---|---|---|");
    for (v, mut s) in variants.into_iter().zip(secs) {
        s.sort_by(f64::total_cmp);
        let clients = if v.shared { 1 } else { a.partitions };
        println!(
            "| {} | {clients} | {:.3} s | {:.3} s | {:.3} s |",
            v.name(),
            s[s.len() / 2],
            s[s.len() - 1],
            s[0]
        );
    }
    Ok(())
}
