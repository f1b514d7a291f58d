//! Both cache backends: round trip, TTL expiry and sweeps, eviction by entries and by bytes
//! (soonest-expiring first), and no torn entry under concurrent reads and writes.

mod common;

use chrono::{Duration as Td, Utc};
use common::eventually;
use common::{ScratchDir, TestRedis};
use prefetch_common::contract::{Module, Ticker};
use std::time::Duration;
use warmer::cache::{Cache, Entry, Limits, Source};
use warmer::policy::Key;

const NO_LIMITS: Limits = Limits { max_entries: 0, max_bytes: 0 };

fn key(t: &str, m: &str) -> Key {
    Key { module: Module::parse(m).unwrap(), ticker: Ticker::parse(t).unwrap() }
}

fn entry(t: &str, m: &str, ttl: Td, body: serde_json::Value) -> Entry {
    let now = Utc::now();
    Entry {
        module: Module::parse(m).unwrap(),
        ticker: Ticker::parse(t).unwrap(),
        fetched_at: now,
        expires_at: now + ttl,
        source: Source::Warm,
        confidence: Some(0.8),
        body,
        negative: false,
    }
}

async fn redis_cache(r: &TestRedis, test: &str, limits: Limits) -> Cache {
    let prefix = format!(
        "test-{test}-{}-{}:",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    Cache::open(&r.url, &prefix, limits).await.expect("redis cache")
}

/// Round trip, replacement, expiry by TTL, and the sweep that removes it from the index.
async fn round_trip_and_expiry(cache: Cache) {
    let e = entry("^GSPC", "price", Td::seconds(60), serde_json::json!({"last": 1.5}));
    let k = e.key();
    assert_eq!(cache.get(&k, Utc::now()).await.unwrap(), None);
    cache.put(&e).await.unwrap();
    let got = cache.get(&k, Utc::now()).await.unwrap().expect("stored");
    assert_eq!(got, e, "every field survives the round trip");
    assert_eq!(
        cache.expires_at(&k).await.unwrap().map(|t| t.timestamp_millis()),
        Some(e.expires_at.timestamp_millis())
    );
    let newer = Entry {
        body: serde_json::json!({"last": 2.5}),
        source: Source::Demand,
        confidence: None,
        ..e.clone()
    };
    cache.put(&newer).await.unwrap();
    assert_eq!(cache.get(&k, Utc::now()).await.unwrap().unwrap().body["last"], 2.5);
    assert_eq!(cache.stats().await.unwrap().entries, 1, "replaced, not added");

    let short = entry("MSFT", "price", Td::milliseconds(1200), serde_json::json!(1));
    cache.put(&short).await.unwrap();
    assert!(cache.get(&short.key(), Utc::now()).await.unwrap().is_some());
    assert_eq!(
        cache.get(&short.key(), short.expires_at).await.unwrap(),
        None,
        "not served at its expiry"
    );
    // Real time passes: gone from the backend, and the sweep removes it from the index.
    eventually(Duration::from_secs(10), "entry expired", || async {
        cache.get(&short.key(), Utc::now()).await.unwrap().is_none().then_some(())
    })
    .await;
    let removed = cache.sweep(Utc::now()).await.unwrap();
    assert_eq!(removed.expired, 1);
    assert_eq!(cache.stats().await.unwrap().entries, 1);
    assert_eq!(cache.expires_at(&short.key()).await.unwrap(), None);
}

/// Beyond the entry limit the soonest-expiring entries go first.
async fn eviction_by_entries(cache: Cache) {
    for (i, t) in ["A", "B", "C", "D"].iter().enumerate() {
        // A expires last, D first.
        cache
            .put(&entry(t, "news", Td::seconds(600 - 100 * i as i64), serde_json::json!(i)))
            .await
            .unwrap();
    }
    let s = cache.stats().await.unwrap();
    assert_eq!(s.entries, 3);
    assert!(
        cache.get(&key("D", "news"), Utc::now()).await.unwrap().is_none(),
        "soonest-expiring evicted"
    );
    assert!(cache.get(&key("A", "news"), Utc::now()).await.unwrap().is_some());
    let r = cache.put(&entry("E", "news", Td::seconds(1000), serde_json::json!(9))).await.unwrap();
    assert_eq!(r.evicted, 1);
    assert!(cache.get(&key("C", "news"), Utc::now()).await.unwrap().is_none());
}

/// Beyond the byte limit too.
async fn eviction_by_bytes(cache: Cache, limit: u64) {
    let big = serde_json::json!("x".repeat(400));
    for (i, t) in ["A", "B", "C", "D", "E"].iter().enumerate() {
        cache.put(&entry(t, "news", Td::seconds(100 + i as i64), big.clone())).await.unwrap();
    }
    let s = cache.stats().await.unwrap();
    assert!(s.bytes <= limit && s.bytes > 0, "{s:?} within {limit}");
    assert!(s.entries < 5 && s.entries >= 1, "{s:?}");
    assert!(
        cache.get(&key("A", "news"), Utc::now()).await.unwrap().is_none(),
        "the soonest-expiring went first"
    );
    assert!(cache.get(&key("E", "news"), Utc::now()).await.unwrap().is_some());
}

/// Readers racing a writer of one key see a whole entry every time, old or new.
async fn no_torn_entries(cache: Cache) {
    let k = key("RACE", "price");
    cache
        .put(&entry(
            "RACE",
            "price",
            Td::seconds(60),
            serde_json::json!({"v": 0, "pad": "p".repeat(20_000)}),
        ))
        .await
        .unwrap();
    let writer = {
        let cache = cache.clone();
        tokio::spawn(async move {
            for v in 1..=60 {
                let pad =
                    char::from(b'a' + (v % 26) as u8).to_string().repeat(20_000 + v as usize * 7);
                cache
                    .put(&entry(
                        "RACE",
                        "price",
                        Td::seconds(60),
                        serde_json::json!({"v": v, "pad": pad}),
                    ))
                    .await
                    .unwrap();
            }
        })
    };
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (cache, k) = (cache.clone(), k.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = 0;
            for _ in 0..150 {
                let e = cache
                    .get(&k, Utc::now())
                    .await
                    .expect("a read never fails on a half-written entry")
                    .expect("always present");
                let v = e.body["v"].as_u64().unwrap();
                let pad = e.body["pad"].as_str().unwrap();
                let want = if v == 0 {
                    "p".repeat(20_000)
                } else {
                    char::from(b'a' + (v % 26) as u8).to_string().repeat(20_000 + v as usize * 7)
                };
                assert_eq!(pad, want, "body of version {v} is whole");
                seen += 1;
            }
            seen
        }));
    }
    writer.await.unwrap();
    for r in readers {
        assert_eq!(r.await.unwrap(), 150);
    }
    assert_eq!(cache.get(&k, Utc::now()).await.unwrap().unwrap().body["v"], 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_round_trip_expiry_and_layout() {
    let dir = ScratchDir::new("warmer-fs-rt");
    let cache = Cache::open(dir.path().to_str().unwrap(), "", NO_LIMITS).await.unwrap();
    round_trip_and_expiry(cache.clone()).await;
    // The documented layout, readable by anyone: <root>/<module>/<ticker>.json.
    let file = dir.path().join("price").join("^GSPC.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    for field in ["fetched_at", "expires_at", "source", "body"] {
        assert!(v.get(field).is_some(), "{field} missing in {v}");
    }
    assert_eq!(v["source"], "demand");
    // No temporary file is left behind, and a restart indexes what is on disk.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("price"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    std::fs::write(dir.path().join("price").join(".tmp-X.json.1.1"), b"{half").unwrap();
    std::fs::write(dir.path().join("price").join("BROKEN.json"), b"{half").unwrap();
    // What a power loss can leave without --cache-fsync: an error to the reader, which the
    // warmer answers as a miss, until the start-up scan removes it.
    assert!(cache.get(&key("BROKEN", "price"), Utc::now()).await.is_err());
    let reopened = Cache::open(dir.path().to_str().unwrap(), "", NO_LIMITS).await.unwrap();
    assert_eq!(reopened.stats().await.unwrap().entries, 1);
    assert!(reopened.expires_at(&key("^GSPC", "price")).await.unwrap().is_some());
    assert!(
        !dir.path().join("price").join("BROKEN.json").exists(),
        "unreadable files are removed at start-up"
    );
    assert!(!dir.path().join("price").join(".tmp-X.json.1.1").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_evicts_soonest_expiring_by_entries_and_bytes() {
    let dir = ScratchDir::new("warmer-fs-ev");
    eviction_by_entries(
        Cache::open(dir.path().to_str().unwrap(), "", Limits { max_entries: 3, max_bytes: 0 })
            .await
            .unwrap(),
    )
    .await;
    let dir = ScratchDir::new("warmer-fs-evb");
    eviction_by_bytes(
        Cache::open(dir.path().to_str().unwrap(), "", Limits { max_entries: 0, max_bytes: 1500 })
            .await
            .unwrap(),
        1500,
    )
    .await;
    assert_eq!(
        std::fs::read_dir(dir.path().join("news")).unwrap().count() as u64,
        {
            let c = Cache::open(dir.path().to_str().unwrap(), "", NO_LIMITS).await.unwrap();
            c.stats().await.unwrap().entries
        },
        "evicted entries are gone from disk too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_no_torn_entry_under_concurrent_reads_and_writes() {
    for fsync in [false, true] {
        let dir = ScratchDir::new("warmer-fs-race");
        let mut cache = Cache::open(dir.path().to_str().unwrap(), "", NO_LIMITS).await.unwrap();
        cache.set_fsync(fsync);
        no_torn_entries(cache).await;
    }
}

/// Writes run in parallel (one lock per key stripe, not one for the cache): many concurrent
/// writes of the same and of different keys, racing evictions, leave the limit kept and the
/// index describing exactly the files on disk, each with the expiry of its last write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_concurrent_writes_and_evictions_keep_index_and_disk_in_step() {
    let dir = ScratchDir::new("warmer-fs-conc");
    let limits = Limits { max_entries: 30, max_bytes: 0 };
    let cache = Cache::open(dir.path().to_str().unwrap(), "", limits).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..6 {
                let t = format!("K{}", (w * 7 + i * 13) % 50);
                let ttl = Td::seconds(100 + ((w * 31 + i * 17) % 500) as i64);
                cache
                    .put(&entry(&t, "price", ttl, serde_json::json!({"w": w, "i": i})))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = cache.stats().await.unwrap();
    assert!(stats.entries <= 30 && stats.entries > 0, "limit kept: {stats:?}");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("price"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.len() as u64,
        stats.entries,
        "no file outside the index, no tmp left: {files:?}"
    );
    for name in files {
        let t = name.strip_suffix(".json").expect("an entry file");
        let on_disk = cache.get(&key(t, "price"), Utc::now()).await.unwrap().expect("live");
        assert_eq!(
            cache.expires_at(&key(t, "price")).await.unwrap(),
            Some(on_disk.expires_at),
            "the index holds the expiry of the write the last rename left for {t}"
        );
    }
    let reopened = Cache::open(dir.path().to_str().unwrap(), "", NO_LIMITS).await.unwrap();
    assert_eq!(reopened.stats().await.unwrap(), stats, "a restart indexes the same entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_round_trip_expiry_with_ex() {
    let Some(r) = TestRedis::start() else { return };
    let cache = redis_cache(&r, "rt", NO_LIMITS).await;
    let Cache::Redis(rc) = &cache else { panic!("a redis:// location opens Redis") };
    let probe = entry("TTL", "news", Td::seconds(300), serde_json::json!(1));
    cache.put(&probe).await.unwrap();
    let mut conn = redis::Client::open(r.url.as_str()).unwrap().get_connection().unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(rc.entry_key(&probe.key())).query(&mut conn).unwrap();
    assert!((295..=300).contains(&ttl), "SET with EX from the entry's lifetime, got TTL {ttl}");
    round_trip_and_expiry(redis_cache(&r, "rt2", NO_LIMITS).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_evicts_soonest_expiring_by_entries_and_bytes() {
    let Some(r) = TestRedis::start() else { return };
    eviction_by_entries(redis_cache(&r, "ev", Limits { max_entries: 3, max_bytes: 0 }).await).await;
    eviction_by_bytes(
        redis_cache(&r, "evb", Limits { max_entries: 0, max_bytes: 1500 }).await,
        1500,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_no_torn_entry_under_concurrent_reads_and_writes() {
    let Some(r) = TestRedis::start() else { return };
    no_torn_entries(redis_cache(&r, "race", NO_LIMITS).await).await;
}
