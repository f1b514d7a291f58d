//! Checkpoints written and read back through one reader, against a real broker (or the
//! MockCluster).

use super::*;
use prefetch_testkit::{unique_topics, TestKafka};
use std::sync::Arc;

const TIMEOUT: Duration = Duration::from_secs(30);

/// A snapshot that says whose it is (and, past one chunk, which chunk each byte came from).
fn snapshot(partition: i32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (partition as usize * 31 + i / CHUNK_BYTES * 7 + i) as u8).collect()
}

/// One reader restores partitions one after another, as a rebalance does: a full checkpoint of
/// two chunks, an empty partition, one with a newer checkpoint over an older one, one whose
/// newest record is a stray chunk (a writer that died before its head), and back again. Each
/// read returns that partition's own newest checkpoint (or none, or its error) — the reader's
/// assignment moves with it and an error leaves it usable — and so do reads from several
/// threads through one shared reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reader_reads_each_partitions_own_checkpoint_in_turn() {
    let kafka = TestKafka::start();
    let args = kafka.kafka_args();
    let topic = format!("{}-state", unique_topics("an-checkpoint-reader").query_events_topic);
    kafka.prepare_topic(&topic, 4);
    assert!(ensure_state_topic(&args, &topic, 4).await, "state topic ready");
    let producer: FutureProducer =
        args.producer_config(Duration::from_secs(30)).unwrap().create().unwrap();

    let full = snapshot(0, CHUNK_BYTES + 1000);
    let head0 = write(&producer, &topic, 0, 120, None, &full).await.unwrap();
    assert_eq!(head0.chunks, 2);
    write(&producer, &topic, 2, 50, None, &snapshot(2, 300)).await.unwrap();
    let newer = snapshot(2, 500);
    write(&producer, &topic, 2, 80, None, &newer).await.unwrap();
    write(&producer, &topic, 3, 10, None, &snapshot(3, 100)).await.unwrap();
    producer
        .send(
            FutureRecord::to(&topic).partition(3).key("3/0").payload(&[0u8; 20][..]),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let t = topic.clone();
    let a = args.clone();
    tokio::task::spawn_blocking(move || {
        let reader = CheckpointReader::new(&a, &t).unwrap();
        for _ in 0..2 {
            let cp = reader.read(0, TIMEOUT).unwrap().expect("partition 0 has a checkpoint");
            assert_eq!((cp.head.partition, cp.head.covered_offset), (0, 120));
            assert!(cp.snapshot == full, "partition 0's two chunks, in order");
            assert!(reader.read(1, TIMEOUT).unwrap().is_none(), "partition 1 has none");
            let cp = reader.read(2, TIMEOUT).unwrap().expect("partition 2 has a checkpoint");
            assert_eq!((cp.head.partition, cp.head.covered_offset), (2, 80), "the newest one");
            assert!(cp.snapshot == newer);
            let err = reader.read(3, TIMEOUT).unwrap_err();
            assert!(matches!(err, CheckpointError::NoHead(3)), "{err}");
        }
    })
    .await
    .unwrap();

    // Restore tasks of one rebalance share one reader from threads of their own.
    let shared = Arc::new(SharedReader::new(&args, &topic));
    let reads: Vec<_> = [2, 1, 0, 3]
        .into_iter()
        .map(|p| {
            let shared = shared.clone();
            std::thread::spawn(move || (p, shared.read(p, TIMEOUT)))
        })
        .collect();
    for r in reads {
        let (p, got) = r.join().unwrap();
        match (p, got) {
            (0 | 2, Ok(Some(cp))) => {
                assert_eq!(cp.head.partition, p);
                assert_eq!(cp.snapshot.len(), if p == 0 { CHUNK_BYTES + 1000 } else { 500 });
            }
            (1, Ok(None)) | (3, Err(CheckpointError::NoHead(3))) => {}
            (p, other) => panic!("partition {p}: {other:?}"),
        }
    }
}
