//! The embedded Kafka: rdkafka's in-process `MockCluster`, for a machine with nothing installed.
//!
//! Two of its limits shape this file. It does not answer CreateTopics, so every topic the
//! services use is created here, through the mock's own API, before they start (the services'
//! `ensure_topics` then finds them). And its handle is not `Send`, so it lives on a thread of
//! its own that holds it until [`Embedded`] is dropped; nothing ever waits for that thread,
//! because tearing down a cluster that still has clients must not hold up the exit (the
//! services already detach their consumers for the same reason: rust-rdkafka #453, #509, #611).

use rdkafka::mocking::MockCluster;
use std::sync::mpsc;

/// Partitions of each embedded topic (the services create 6 on a real cluster; three are plenty
/// in one process and keep the mock's work small).
const PARTITIONS: i32 = 3;

/// A running embedded cluster; dropping it shuts the cluster down in the background (`up`
/// keeps it for the life of the process instead, see `run`).
pub struct Embedded {
    bootstrap: String,
    _stop: mpsc::Sender<()>,
}

impl Embedded {
    /// Starts a one-broker cluster holding `topics` (compacted ones get one partition, as a
    /// config topic should).
    pub fn start(topics: &[(&str, bool)]) -> anyhow::Result<Self> {
        let topics: Vec<(String, bool)> =
            topics.iter().map(|(t, c)| ((*t).to_owned(), *c)).collect();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        std::thread::Builder::new().name("embedded-kafka".into()).spawn(move || {
            let started = MockCluster::new(1)
                .map_err(|e| format!("cannot start the embedded Kafka: {e}"))
                .and_then(|mock| {
                    for (topic, compacted) in &topics {
                        let partitions = if *compacted { 1 } else { PARTITIONS };
                        mock.create_topic(topic, partitions, 1)
                            .map_err(|e| format!("embedded Kafka: cannot create {topic}: {e}"))?;
                    }
                    Ok(mock)
                });
            match started {
                Ok(mock) => {
                    let _ = ready_tx.send(Ok(mock.bootstrap_servers()));
                    // Blocks until the `Embedded` is dropped (the sender goes away).
                    let _ = stop_rx.recv();
                    drop(mock);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the embedded Kafka thread died"))?
            .map_err(anyhow::Error::msg)?;
        Ok(Self { bootstrap, _stop: stop_tx })
    }

    /// Bootstrap servers for the clients.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}
