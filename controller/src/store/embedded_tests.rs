//! The conformance suite and the embedded store's own guarantees (file, lock, torn tail, snapshots).

use std::time::Duration;

use super::conformance;
use super::embedded::{EmbeddedOptions, EmbeddedStore};
use super::{PutCondition, Store, StoreError};

async fn open(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_shared_cases() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    conformance::run_shared(&store, "/conf/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_conformance_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    super::api_conformance::run_every_kind(&store, "api").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    conformance::compaction_reported(&store, "/compact/").await;
}

#[tokio::test]
async fn revisions_start_like_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    assert_eq!(store.list("/").await.unwrap().revision, 1);
    assert_eq!(store.put("/a", b"1".to_vec(), PutCondition::Always, 0).await.unwrap(), 2);
}

#[tokio::test]
async fn reopen_keeps_state_revisions_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let (lease, r_b) = {
        let store = open(&dir).await;
        store.put("/a", b"1".to_vec(), PutCondition::Always, 0).await.unwrap();
        store.put("/a", b"2".to_vec(), PutCondition::Always, 0).await.unwrap();
        let lease = store.lease_grant(60).await.unwrap();
        let r_b = store.put("/b", b"leased".to_vec(), PutCondition::Always, lease).await.unwrap();
        store.delete("/gone", super::DeleteCondition::Always).await.unwrap();
        (lease, r_b)
    };
    let store = open(&dir).await;
    let a = store.get("/a").await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.create_revision, a.mod_revision, a.version), (&b"2"[..], 2, 3, 2));
    let b = store.get("/b").await.unwrap().unwrap();
    assert_eq!((b.mod_revision, b.lease), (r_b, lease));
    assert_eq!(store.list("/").await.unwrap().revision, r_b);
    assert!(store.lease_keep_alive(lease).await.unwrap() == 60);
    let next = store.put("/c", b"c".to_vec(), PutCondition::Always, 0).await.unwrap();
    assert_eq!(next, r_b + 1, "revisions continue after reopen");
    // History survives a reopen too (no snapshot was written yet).
    let mut w = store.watch("/a", 2).await.unwrap();
    let got = conformance::take_events(&mut w, 2).await;
    assert_eq!(got.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![2, 3]);
}

#[tokio::test]
async fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kedge.db");
    let first = EmbeddedStore::open(&path, EmbeddedOptions::default()).await.unwrap();
    match EmbeddedStore::open(&path, EmbeddedOptions::default()).await {
        Err(StoreError::Locked { path: p }) => assert_eq!(p, path),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second open of a locked store succeeded"),
    }
    drop(first);
    EmbeddedStore::open(&path, EmbeddedOptions::default()).await.expect("the lock goes with the store");
}

#[tokio::test]
async fn torn_tail_is_cut_and_mid_file_corruption_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kedge.db");
    {
        let store = open(&dir).await;
        for i in 0..10 {
            store.put(&format!("/k{i}"), vec![b'x'; 100], PutCondition::Always, 0).await.unwrap();
        }
    }
    let good_len = std::fs::metadata(&path).unwrap().len();
    // A torn append: half a frame at the end.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"']).unwrap();
    }
    {
        let store = open(&dir).await;
        assert_eq!(store.list("/").await.unwrap().kvs.len(), 10);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len, "the torn tail is cut");
        assert_eq!(store.put("/after", b"1".to_vec(), PutCondition::Always, 0).await.unwrap(), 12);
    }
    // A bad CRC at the end (the last record's payload damaged): cut as torn.
    let len = std::fs::metadata(&path).unwrap().len();
    flip_byte(&path, len - 2);
    {
        let store = open(&dir).await;
        assert_eq!(store.get("/after").await.unwrap(), None, "the damaged last record is dropped");
        assert_eq!(store.list("/").await.unwrap().kvs.len(), 10);
    }
}

#[tokio::test]
async fn corruption_far_from_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kedge.db");
    {
        let store = open(&dir).await;
        // More than one batch's worth of records after the damaged one.
        let big = vec![b'y'; 64 * 1024];
        for i in 0..80 {
            store.put(&format!("/k{i}"), big.clone(), PutCondition::Always, 0).await.unwrap();
        }
    }
    flip_byte(&path, 40);
    match EmbeddedStore::open(&path, EmbeddedOptions::default()).await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("not a torn tail"), "{msg}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a store with a corrupt record far from the end"),
    }
}

fn flip_byte(path: &std::path::Path, at: u64) {
    let mut data = std::fs::read(path).unwrap();
    data[at as usize] ^= 0xFF;
    std::fs::write(path, data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_rewrite_the_file_and_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kedge.db");
    let options = EmbeddedOptions {
        snapshot_threshold_bytes: 64 * 1024,
        history_events: 100_000,
        ..EmbeddedOptions::default()
    };
    let last;
    {
        let store = EmbeddedStore::open(&path, options.clone()).await.unwrap();
        let lease = store.lease_grant(100).await.unwrap();
        store.put("/leased", b"l".to_vec(), PutCondition::Always, lease).await.unwrap();
        let mut r = 0;
        for i in 0..1000 {
            r = store.put(&format!("/k{}", i % 50), vec![b'v'; 200], PutCondition::Always, 0).await.unwrap();
        }
        last = r;
        assert!(std::fs::metadata(&path).unwrap().len() < 1000 * 200, "the log was rewritten");
        // Watch history in memory is not affected by a snapshot.
        let mut w = store.watch("/k", last - 100).await.unwrap();
        assert_eq!(conformance::take_events(&mut w, 101).await.last().unwrap().revision, last);
    }
    let store = EmbeddedStore::open(&path, options).await.unwrap();
    let list = store.list("/").await.unwrap();
    assert_eq!(list.revision, last);
    assert_eq!(list.kvs.len(), 51);
    assert!(list.kvs.iter().any(|kv| kv.key == "/leased" && kv.lease != 0));
    assert!(!dir.path().join("kedge.db.tmp").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limit_compacts_and_slow_watchers_are_told() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        snapshot_threshold_bytes: 16 << 20,
        history_events: 100,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path().join("kedge.db"), options).await.unwrap();
    let mut w = store.watch("/", 2).await.unwrap();
    for i in 0..300 {
        store.put(&format!("/k{i}"), b"v".to_vec(), PutCondition::Always, 0).await.unwrap();
    }
    // The watcher never read: its start revision is gone, and it is told so instead of blocking writers.
    let mut seen = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut w)).await.unwrap() {
            Some(Ok(_)) => seen += 1,
            Some(Err(StoreError::Compacted { compact_revision })) => {
                assert!(compact_revision > 2);
                break;
            }
            other => panic!("{other:?} after {seen} events"),
        }
    }
}

/// History is bounded by the bytes it holds, not only by its count: 300 writes of 10 KiB against a
/// 256 KiB bound keep the newest half of it (about 12 writes), a watch from before that is told it
/// was compacted, and one from within it gets every event. A value over the bound keeps its own revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions { history_bytes: 256 << 10, ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open(dir.path().join("kedge.db"), options).await.unwrap();
    let mut last = 0;
    for i in 0..300 {
        last =
            store.put(&format!("/k{}", i % 7), vec![b'v'; 10 << 10], PutCondition::Always, 0).await.unwrap();
    }
    let mut old = store.watch("/", last - 40).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut old)).await.unwrap() {
        Some(Err(StoreError::Compacted { compact_revision })) => {
            assert!(
                compact_revision > last - 40 && compact_revision <= last - 5,
                "{compact_revision} of {last}"
            )
        }
        other => panic!("a watch from 40 writes back (400 KiB) should be compacted, got {other:?}"),
    }
    let mut recent = store.watch("/", last - 5).await.unwrap();
    let events = conformance::take_events(&mut recent, 6).await;
    assert_eq!(events.first().unwrap().revision, last - 5);
    assert_eq!(events.last().unwrap().revision, last);

    let big = store.put("/big", vec![b'b'; 1 << 20], PutCondition::Always, 0).await.unwrap();
    let mut w = store.watch("/big", big).await.unwrap();
    let events = conformance::take_events(&mut w, 1).await;
    assert_eq!((events[0].revision, events[0].kv.value.len()), (big, 1 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_get_a_fresh_ttl_on_reopen_and_then_expire() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(&dir).await;
        let lease = store.lease_grant(1).await.unwrap();
        store.put("/hb", b"1".to_vec(), PutCondition::Always, lease).await.unwrap();
    }
    let store = open(&dir).await;
    assert!(store.get("/hb").await.unwrap().is_some(), "a lease restarts its TTL on reopen");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.get("/hb").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the lease never expired after reopen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
