//! Where the consume loop's offsets and chunks stand: the open and sealed batches
//! ([`Progress`]) and the fold stage's two ends ([`Stage`]).

use super::fold::{Chunk, Folded};
use super::restore::Outcome;
use prefetch_common::kafka::Acks;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

/// The open batch: offsets folded since the last seal, and the deliveries they caused (one
/// counter per chunk).
#[derive(Default)]
pub(super) struct Batch {
    pub(super) acks: Vec<Arc<Acks>>,
    pub(super) offsets: HashMap<i32, i64>,
    pub(super) messages: usize,
    /// A message the batch caused that Kafka would not take: its offsets must never be stored.
    pub(super) failed: Option<String>,
}

impl Batch {
    /// Takes a folded chunk's deliveries and offsets; returns the emptied chunk.
    pub(super) fn absorb(&mut self, f: Folded) -> Chunk {
        self.acks.extend(f.acks);
        self.offsets.extend(f.offsets);
        self.messages += f.messages;
        if self.failed.is_none() {
            self.failed = f.failed;
        }
        f.spare
    }
}

/// A sealed batch: its deliveries are awaited on their own task while consumption goes on.
pub(super) struct Sealed {
    pub(super) done: Option<JoinHandle<Result<(), String>>>,
    pub(super) offsets: HashMap<i32, i64>,
}

/// Offsets on their way to being stored: the open batch, then sealed ones in consume order.
/// An offset is stored only once its batch and every earlier one are durable.
pub(super) struct Progress {
    pub(super) open: Batch,
    pub(super) sealed: VecDeque<Sealed>,
    pub(super) committed_at: Option<Instant>,
    /// Partitions assigned to this instance (restored or restoring).
    pub(super) owned: HashSet<i32>,
    /// Per partition, the next offset to fold: what a checkpoint taken now covers.
    pub(super) next: HashMap<i32, i64>,
    /// Per partition, the offset the last checkpoint written covered.
    pub(super) checkpointed: HashMap<i32, i64>,
    /// Restores report back here.
    pub(super) restores:
        (UnboundedSender<anyhow::Result<Outcome>>, UnboundedReceiver<anyhow::Result<Outcome>>),
    pub(super) restoring: usize,
    /// The checkpoint being written, if any.
    pub(super) writing: Option<JoinHandle<()>>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            open: Batch::default(),
            sealed: VecDeque::new(),
            committed_at: None,
            owned: HashSet::new(),
            next: HashMap::new(),
            checkpointed: HashMap::new(),
            restores: tokio::sync::mpsc::unbounded_channel(),
            restoring: 0,
            writing: None,
        }
    }
}

impl Progress {
    /// Adds a folded chunk to the open batch; returns the emptied chunk.
    pub(super) fn absorb(&mut self, f: Folded) -> Chunk {
        for &(p, o) in &f.offsets {
            self.next.insert(p, o + 1);
        }
        self.open.absorb(f)
    }
}

/// The fold stage's two ends: chunks out to the parse thread, folded chunks back from the fold
/// thread (in the order sent).
pub(super) struct Stage {
    pub(super) chunks: Option<mpsc::Sender<Chunk>>,
    pub(super) folded: UnboundedReceiver<Folded>,
    pub(super) in_flight: usize,
    /// The parse and fold threads (each stops when the one before it does).
    pub(super) threads: Vec<std::thread::JoinHandle<()>>,
    /// Emptied chunks back from the fold thread, to fill again (the consume loop's own).
    pub(super) spare: Vec<Chunk>,
    /// Where emptied chunks go instead: the receive thread, which fills most of them.
    pub(super) recycle: Option<mpsc::Sender<Chunk>>,
    /// Bumped by every rebalance acted on; chunks carry it to the fold thread.
    pub(super) epoch: u64,
}

impl Stage {
    /// Keeps an emptied chunk to fill again.
    pub(super) fn recycle(&mut self, chunk: Chunk) {
        let chunk = match &self.recycle {
            Some(tx) => match tx.send(chunk) {
                Ok(()) => return,
                Err(mpsc::SendError(chunk)) => chunk,
            },
            None => chunk,
        };
        self.spare.push(chunk);
    }

    pub(super) fn send(&mut self, mut chunk: Chunk) -> anyhow::Result<()> {
        chunk.epoch = self.epoch;
        let tx =
            self.chunks.as_ref().ok_or_else(|| anyhow::anyhow!("the fold thread is stopped"))?;
        tx.send(chunk).map_err(|_| anyhow::anyhow!("the fold thread stopped"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// The next folded chunk (cancel-safe: a chunk not taken stays in the channel).
    pub(super) async fn next(&mut self) -> anyhow::Result<Folded> {
        let f =
            self.folded.recv().await.ok_or_else(|| anyhow::anyhow!("the fold thread stopped"))?;
        self.in_flight -= 1;
        Ok(f)
    }

    /// Waits until every chunk handed over is folded, adding each to the open batch.
    pub(super) async fn drain(&mut self, progress: &mut Progress) -> anyhow::Result<()> {
        while self.in_flight > 0 {
            let spare = progress.absorb(self.next().await?);
            self.recycle(spare);
        }
        Ok(())
    }

    /// Drains, then stops the thread.
    pub(super) async fn stop(&mut self, progress: &mut Progress) -> anyhow::Result<()> {
        self.drain(progress).await?;
        self.chunks = None;
        for t in std::mem::take(&mut self.threads) {
            tokio::task::spawn_blocking(move || t.join())
                .await?
                .map_err(|_| anyhow::anyhow!("a fold stage thread panicked"))?;
        }
        Ok(())
    }
}
