//! The `prefetch` CLI against an ingest with a read token (issue #12.7): its read commands are
//! refused without `--read-token` (the message says which token), served with it, and the API
//! token (`--token`) serves reads too. (Ingest's own side: `ingest/tests/front_door.rs`.)

use clap::Parser;
use prefetch::api::{ApiCommand, ApiError};
use prefetch_e2e::*;
use serde_json::Value;

const READ: &str = "r3ad-only";
const ADMIN: &str = "adm1n";

/// The `prefetch` command line, parsed as the binary parses it.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: ApiCommand,
}

async fn prefetch(args: &[&str]) -> Result<String, ApiError> {
    let cli = Cli::try_parse_from(std::iter::once("prefetch").chain(args.iter().copied()))
        .expect("valid flags");
    prefetch::api::run(&cli.cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_its_read_token_to_an_ingest_that_wants_one() {
    let kafka = TestKafka::start();
    let mut cfg = ingest::Config::new(kafka.bootstrap());
    cfg.kafka = kafka.kafka_args();
    cfg.topics = unique_topics("cli-read-token");
    kafka.prepare(&cfg.topics);
    cfg.api_token = Some(ADMIN.into());
    cfg.read_token = Some(READ.into());
    let ingest = spawn_ingest(cfg).await;
    let base = ingest.url("");
    // The CLI: refused without the token (the message says which flag), served with it.
    match prefetch(&["predictions", "--json", "--api", &base]).await {
        Err(ApiError::Refused { status: 401, message }) => {
            assert!(message.contains("read token"), "{message}")
        }
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    let out = prefetch(&["predictions", "--json", "--api", &base, "--read-token", READ])
        .await
        .expect("predictions with --read-token");
    let v: Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert!(v["predictions"].is_array(), "{out}");
    let out = prefetch(&["prefetch-config", "--json", "--api", &base, "--read-token", READ])
        .await
        .expect("showing the config with --read-token");
    assert!(out.contains("top_n"), "{out}");
    // The API token alone serves reads too.
    prefetch(&["predictions", "--api", &base, "--token", ADMIN]).await.expect("--token reads");
    ingest.stop().await;
}
