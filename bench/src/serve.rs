//! The service side of a throughput benchmark in a process of its own, so its CPU time is its
//! own (`cpu.rs`): the bench starts this same binary with a hidden subcommand, which serves on
//! 127.0.0.1:0, prints `PORT <n>` and runs until its stdin closes (the bench ending, or
//! dropping the [`Child`], ends it cleanly: drain, flush, commit).

use anyhow::Context;
use prefetch_common::kafka::{KafkaArgs, TopicArgs};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Flags of the hidden `serve-ingest` / `serve-analyzer` subcommands.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Topic name prefix of the run.
    #[arg(long)]
    prefix: String,
    /// Partitions of topics the service creates.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Consumer group (analyzer).
    #[arg(long, default_value = "bench")]
    group: String,
    /// The analyzer's `--refresh-ahead`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    refresh_ahead: bool,
    /// The analyzer's periodic checkpoints (`false`: `--checkpoint-interval 0s`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    checkpoints: bool,
    /// librdkafka option (key=value, repeatable).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    kafka_option: Vec<String>,
}

impl ServeArgs {
    fn kafka(&self) -> KafkaArgs {
        let mut kafka = KafkaArgs::new(&self.brokers);
        kafka.topic_partitions = self.partitions;
        kafka.options = self.kafka_option.clone();
        kafka
    }
}

/// Which service a child runs.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    /// `ingest::serve`.
    Ingest,
    /// `analyzer::service::serve`.
    Analyzer,
}

/// Runs in the child: serves until stdin closes.
pub async fn serve(service: Service, args: ServeArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        stop.cancel();
    });
    let topics = TopicArgs::prefixed(&args.prefix);
    let task = match service {
        Service::Ingest => {
            let mut cfg = ingest::Config::new(args.brokers.clone());
            cfg.kafka = args.kafka();
            cfg.topics = topics;
            tokio::spawn(ingest::serve(cfg, listener, shutdown.clone()))
        }
        Service::Analyzer => {
            let mut cfg = analyzer::service::Config::new(args.brokers.clone());
            cfg.refresh_ahead = args.refresh_ahead;
            cfg.kafka = args.kafka();
            cfg.topics = topics;
            cfg.group_id = args.group.clone();
            cfg.tick_interval = Duration::from_secs(3600);
            cfg.stats_interval = Duration::from_secs(3600);
            if !args.checkpoints {
                cfg.checkpoint_interval = Duration::ZERO;
            }
            tokio::spawn(analyzer::service::serve(cfg, listener, shutdown.clone()))
        }
    };
    println!("PORT {port}");
    task.await?
}

/// A service child: its pid (for the CPU meter) and base URL.
pub struct ServiceProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl ServiceProcess {
    /// Starts `service` in a child process and waits for its port.
    pub async fn start(service: Service, args: &[String]) -> anyhow::Result<Self> {
        let sub = match service {
            Service::Ingest => "serve-ingest",
            Service::Analyzer => "serve-analyzer",
        };
        let mut child = Command::new(std::env::current_exe()?)
            .arg(sub)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the service child")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child stdout")?;
        let port = tokio::task::spawn_blocking(move || -> anyhow::Result<u16> {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                if let Some(p) = line?.strip_prefix("PORT ") {
                    let port = p.trim().parse()?;
                    // Keep draining so the child never blocks on a full pipe.
                    std::thread::spawn(move || lines.for_each(drop));
                    return Ok(port);
                }
            }
            anyhow::bail!("the service child ended before it listened")
        })
        .await??;
        Ok(Self { child, stdin, base: format!("http://127.0.0.1:{port}") })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes its stdin (clean shutdown) and waits for it to end.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = tokio::task::spawn_blocking(move || self.child.wait()).await??;
        anyhow::ensure!(status.success(), "the service child ended with {status}");
        Ok(())
    }
}
