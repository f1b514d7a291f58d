//! The dead-letter envelope every stage writes, and the acknowledged write itself.
//!
//! A message that cannot be processed is wrapped with where it came from and why it failed,
//! and written to the DLQ topic; only once Kafka has acknowledged that write may the source
//! offset be stored (at-least-once: a lost dead letter is a lost message). The original payload
//! is carried as a prefix of at most [`PAYLOAD_PREFIX_BYTES`] plus its length and SHA-256, so
//! the envelope always fits under the broker's `message.max.bytes` (a 1 MB poison event used
//! to make an envelope the producer refused, and its offset was stored anyway: issue #12).

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Most bytes of the original payload an envelope carries.
pub const PAYLOAD_PREFIX_BYTES: usize = 4096;

/// Where a dead letter came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The stage that gave up on it (`analyzer`, `warmer`).
    pub stage: &'a str,
    /// The topic it was read from.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// The JSON envelope of a dead letter: `stage`, `reason`, `topic`, `partition`, `offset`,
/// `payload` (the payload as lossy UTF-8, cut to [`PAYLOAD_PREFIX_BYTES`]), `payload_bytes`
/// (its full length), `payload_sha256` (hex), `truncated`.
pub fn envelope(origin: Origin<'_>, reason: &str, payload: &[u8]) -> Vec<u8> {
    let truncated = payload.len() > PAYLOAD_PREFIX_BYTES;
    let prefix = &payload[..payload.len().min(PAYLOAD_PREFIX_BYTES)];
    let sha: String = Sha256::digest(payload).iter().map(|b| format!("{b:02x}")).collect();
    // Reasons quote the input: bound them too (serde_json's messages are short, ours quote
    // single fields, but a reason must never be what makes the envelope too large).
    let reason: String = reason.chars().take(1024).collect();
    json!({
        "stage": origin.stage,
        "reason": reason,
        "topic": origin.topic,
        "partition": origin.partition,
        "offset": origin.offset,
        "payload": String::from_utf8_lossy(prefix),
        "payload_bytes": payload.len(),
        "payload_sha256": sha,
        "truncated": truncated,
    })
    .to_string()
    .into_bytes()
}

/// Writes a dead letter for `payload` to `dlq_topic` (keyed like the original) and waits for
/// Kafka's acknowledgement; the caller stores the source offset only on `Ok`.
pub async fn send(
    producer: &FutureProducer,
    dlq_topic: &str,
    key: Option<&[u8]>,
    origin: Origin<'_>,
    reason: &str,
    payload: &[u8],
) -> Result<(), KafkaError> {
    let body = envelope(origin, reason, payload);
    let mut record = FutureRecord::<[u8], [u8]>::to(dlq_topic).payload(&body);
    if let Some(key) = key {
        record = record.key(key);
    }
    producer.send(record, Timeout::Never).await.map(|_| ()).map_err(|(e, _)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Property (seeded; a failure names its case): the envelope of any payload and any reason
    /// is JSON that fits well under a broker's 1 MB `message.max.bytes`, carries the payload's
    /// true length and SHA-256, and a prefix of its lossy text.
    #[test]
    fn any_payload_makes_a_bounded_envelope_that_fingerprints_it() {
        use prefetch_contract::testgen::Gen;
        let origin =
            Origin { stage: "analyzer", topic: "prefetch.query-events", partition: 0, offset: 1 };
        for case in 0..2_000u64 {
            let mut g = Gen::new(case);
            let mut payload = g.bytes(64);
            if g.one_in(4) {
                // Past the prefix bound, with control characters (6 bytes each once escaped).
                payload.extend((0..g.below(20_000)).map(|_| g.next_u64() as u8 & 0x9f));
            }
            let reason: String =
                (0..g.below(3_000)).map(|_| ['\u{1}', 'é', '"', 'r'][g.below(4)]).collect();
            let env = envelope(origin, &reason, &payload);
            assert!(env.len() <= 32 * 1024, "case {case}: {} bytes", env.len());
            let v: serde_json::Value = serde_json::from_slice(&env).unwrap();
            assert_eq!(v["payload_bytes"], payload.len(), "case {case}");
            assert_eq!(v["truncated"], payload.len() > PAYLOAD_PREFIX_BYTES, "case {case}");
            let sha: String = Sha256::digest(&payload).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(v["payload_sha256"], sha, "case {case}");
            let text = v["payload"].as_str().unwrap();
            let cut = &payload[..payload.len().min(PAYLOAD_PREFIX_BYTES)];
            assert_eq!(text, String::from_utf8_lossy(cut), "case {case}");
            assert!(reason.starts_with(v["reason"].as_str().unwrap()), "case {case}");
        }
    }

    #[test]
    fn a_large_payload_is_cut_and_fingerprinted() {
        let origin = Origin { stage: "analyzer", topic: "t", partition: 2, offset: 7 };
        let big = vec![b'x'; 1 << 20];
        let env = envelope(origin, &"r".repeat(5000), &big);
        assert!(env.len() < 2 * PAYLOAD_PREFIX_BYTES, "{}", env.len());
        let v: serde_json::Value = serde_json::from_slice(&env).unwrap();
        assert_eq!(v["payload_bytes"], 1 << 20);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["payload"].as_str().unwrap().len(), PAYLOAD_PREFIX_BYTES);
        assert_eq!(v["reason"].as_str().unwrap().len(), 1024);
        assert_eq!((v["partition"].as_i64(), v["offset"].as_i64()), (Some(2), Some(7)));
        // SHA-256 of "abc" (FIPS 180-2 test vector).
        let small: serde_json::Value =
            serde_json::from_slice(&envelope(origin, "bad", b"abc")).unwrap();
        assert_eq!(
            small["payload_sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            (small["payload"].as_str(), small["truncated"].as_bool()),
            (Some("abc"), Some(false))
        );
    }
}
