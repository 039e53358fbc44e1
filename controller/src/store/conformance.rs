//! The store conformance suite: the semantics both implementations must share, written once.
//!
//! Each case takes a store and a key prefix that no other test uses, and panics on a violation (this is
//! test code compiled into the library so that the integration tests of both implementations can call
//! it). [`run_shared`] runs every case that is safe on a store shared with concurrently running tests;
//! [`compaction_reported`] compacts the store's whole history, so it needs a store of its own.

use std::time::Duration;

use futures::StreamExt;
use kedge_crds::{Container, ContainerSpec, ContainerStatus};

use super::objects::{self, ApplyOutcome};
use super::{DeleteCondition, EventKind, Fence, PutCondition, Store, StoreError, WatchEvent, WatchStream};

/// How long a case waits for an event that must come.
const EVENT_DEADLINE: Duration = Duration::from_secs(20);

/// Every case that tolerates other tests writing to the same store at the same time.
pub async fn run_shared(store: &dyn Store, prefix: &str) {
    basic_reads_and_writes(store, &format!("{prefix}basic/")).await;
    compare_and_swap(store, &format!("{prefix}cas/")).await;
    watch_replays_missed_events(store, &format!("{prefix}replay/")).await;
    lease_revoke_deletes_keys(store, &format!("{prefix}revoke/")).await;
    lease_expiry_deletes_keys(store, &format!("{prefix}expiry/")).await;
    generation_rules(store, &format!("{prefix}gen")).await;
    fenced_writes(store, &format!("{prefix}fence/")).await;
    errors_are_not_empty_results(store).await;
}

/// Takes exactly `n` events from a watch, failing on an error or after the deadline.
pub async fn take_events(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => panic!("watch: got {} of {n} events before the deadline: {out:#?}", out.len()),
            Ok(None) => panic!("watch ended after {} of {n} events", out.len()),
            Ok(Some(Err(e))) => panic!("watch failed after {} of {n} events: {e}", out.len()),
            Ok(Some(Ok(ev))) => out.push(ev),
        }
    }
    out
}

/// Asserts that no event arrives within `quiet` (used after the expected ones, to catch duplicates).
pub async fn assert_no_event(stream: &mut WatchStream, quiet: Duration) {
    if let Ok(Some(item)) = tokio::time::timeout(quiet, stream.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

pub async fn basic_reads_and_writes(store: &dyn Store, prefix: &str) {
    let a = format!("{prefix}a");
    let b = format!("{prefix}b");
    // A key that shares the prefix's text but not its "directory": must not be listed under `{prefix}a/`.
    let ab = format!("{prefix}ab");
    let a_child = format!("{prefix}a/x");

    assert_eq!(store.get(&a).await.unwrap(), None);
    let empty = store.list(prefix).await.unwrap();
    assert!(empty.kvs.is_empty());
    assert!(empty.revision >= 1);

    let r1 = store.put(&a, b"1".to_vec(), PutCondition::Always, 0).await.unwrap();
    assert!(r1 > empty.revision);
    let kv = store.get(&a).await.unwrap().expect("just written");
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision, kv.version),
        (&b"1"[..], r1, r1, 1)
    );

    let r2 = store.put(&a, b"2".to_vec(), PutCondition::Always, 0).await.unwrap();
    assert!(r2 > r1);
    let kv = store.get(&a).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (r1, r2, 2));

    for k in [&b, &ab, &a_child] {
        store.put(k, k.as_bytes().to_vec(), PutCondition::Always, 0).await.unwrap();
    }
    let list = store.list(prefix).await.unwrap();
    let keys: Vec<&str> = list.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, vec![a.as_str(), a_child.as_str(), ab.as_str(), b.as_str()], "sorted by key");
    let last = list.kvs.iter().map(|kv| kv.mod_revision).max().unwrap();
    assert!(list.revision >= last, "a list reflects at least its newest key");
    let dir = store.list(&format!("{a}/")).await.unwrap();
    assert_eq!(dir.kvs.len(), 1);
    assert_eq!(dir.kvs[0].key, a_child);

    let rd = store.delete(&a, DeleteCondition::Always).await.unwrap().expect("existed");
    assert!(rd > last);
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert_eq!(store.delete(&a, DeleteCondition::Always).await.unwrap(), None, "deleting a missing key");

    // Re-creating starts a new incarnation.
    let r3 = store.put(&a, b"3".to_vec(), PutCondition::Absent, 0).await.unwrap();
    let kv = store.get(&a).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (r3, 1));

    let big = vec![0xABu8; 256 * 1024];
    store.put(&b, big.clone(), PutCondition::Always, 0).await.unwrap();
    assert_eq!(store.get(&b).await.unwrap().unwrap().value, big, "binary values round-trip");
}

pub async fn compare_and_swap(store: &dyn Store, prefix: &str) {
    let k = format!("{prefix}k");
    let r1 = store.put(&k, b"v1".to_vec(), PutCondition::Absent, 0).await.unwrap();

    match store.put(&k, b"x".to_vec(), PutCondition::Absent, 0).await {
        Err(StoreError::Conflict { current_mod_revision, .. }) => assert_eq!(current_mod_revision, r1),
        other => panic!("create-only on an existing key: {other:?}"),
    }
    let r2 = store.put(&k, b"v2".to_vec(), PutCondition::ModRevision(r1), 0).await.unwrap();
    match store.put(&k, b"x".to_vec(), PutCondition::ModRevision(r1), 0).await {
        Err(StoreError::Conflict { current_mod_revision, .. }) => assert_eq!(current_mod_revision, r2),
        other => panic!("stale CAS put: {other:?}"),
    }
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"v2", "a failed CAS writes nothing");

    match store.delete(&k, DeleteCondition::ModRevision(r1)).await {
        Err(StoreError::Conflict { current_mod_revision, .. }) => assert_eq!(current_mod_revision, r2),
        other => panic!("stale CAS delete: {other:?}"),
    }
    let rd = store.delete(&k, DeleteCondition::ModRevision(r2)).await.unwrap();
    assert!(rd.unwrap() > r2);

    let missing = format!("{prefix}missing");
    match store.put(&missing, b"x".to_vec(), PutCondition::ModRevision(r2), 0).await {
        Err(StoreError::Conflict { current_mod_revision, .. }) => assert_eq!(current_mod_revision, 0),
        other => panic!("CAS put on a missing key: {other:?}"),
    }
    match store.delete(&missing, DeleteCondition::ModRevision(r2)).await {
        Err(StoreError::Conflict { current_mod_revision, .. }) => assert_eq!(current_mod_revision, 0),
        other => panic!("CAS delete on a missing key: {other:?}"),
    }

    // Many concurrent CAS increments: every success is exclusive, so the counter equals the successes.
    let counter = format!("{prefix}counter");
    store.put(&counter, b"0".to_vec(), PutCondition::Absent, 0).await.unwrap();
    let tasks = (0..4).map(|_| async {
        let mut wins = 0;
        for _ in 0..10 {
            loop {
                let kv = store.get(&counter).await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                let next = (n + 1).to_string().into_bytes();
                match store.put(&counter, next, PutCondition::ModRevision(kv.mod_revision), 0).await {
                    Ok(_) => {
                        wins += 1;
                        break;
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => panic!("CAS increment: {e}"),
                }
            }
        }
        wins
    });
    let wins: u64 = futures::future::join_all(tasks).await.into_iter().sum();
    let kv = store.get(&counter).await.unwrap().unwrap();
    assert_eq!(std::str::from_utf8(&kv.value).unwrap(), wins.to_string());
    assert_eq!(wins, 40);
}

pub async fn watch_replays_missed_events(store: &dyn Store, prefix: &str) {
    let outside = format!("{}-outside", prefix.trim_end_matches('/'));
    let base = store.list(prefix).await.unwrap().revision;

    // History made while nobody watches: puts, an overwrite, a delete, and noise outside the prefix.
    let mut expected: Vec<(EventKind, String, i64)> = Vec::new();
    for i in 0..20 {
        let k = format!("{prefix}k{}", i % 7);
        let r = store.put(&k, format!("v{i}").into_bytes(), PutCondition::Always, 0).await.unwrap();
        expected.push((EventKind::Put, k, r));
        if i % 5 == 4 {
            let k = format!("{prefix}k{}", i % 7);
            let r = store.delete(&k, DeleteCondition::Always).await.unwrap().unwrap();
            expected.push((EventKind::Delete, k, r));
        }
        store.put(&outside, b"noise".to_vec(), PutCondition::Always, 0).await.unwrap();
    }

    let mut watch = store.watch(prefix, base + 1).await.unwrap();
    let got = take_events(&mut watch, expected.len()).await;
    let got_triples: Vec<(EventKind, String, i64)> =
        got.iter().map(|e| (e.kind, e.kv.key.clone(), e.revision)).collect();
    assert_eq!(got_triples, expected, "replay from a past revision: exactly the missed events, in order");
    for e in &got {
        match e.kind {
            EventKind::Put => {
                assert_eq!(e.kv.mod_revision, e.revision);
                assert!(!e.kv.value.is_empty());
            }
            EventKind::Delete => assert_eq!(e.kv.mod_revision, e.revision),
        }
    }

    // The same watch goes on live.
    let live = format!("{prefix}live");
    let r = store.put(&live, b"now".to_vec(), PutCondition::Always, 0).await.unwrap();
    let got = take_events(&mut watch, 1).await;
    assert_eq!((got[0].kind, got[0].kv.key.as_str(), got[0].revision), (EventKind::Put, live.as_str(), r));
    assert_no_event(&mut watch, Duration::from_millis(300)).await;

    // Starting in the middle replays from there on.
    let (_, mid_key, mid_rev) = expected[10].clone();
    let mut watch = store.watch(prefix, mid_rev).await.unwrap();
    let got = take_events(&mut watch, expected.len() - 10).await;
    assert_eq!((got[0].kv.key.as_str(), got[0].revision), (mid_key.as_str(), mid_rev));

    // Many watchers of one prefix all see the same sequence.
    let mut watchers = Vec::new();
    for _ in 0..5 {
        watchers.push(store.watch(prefix, base + 1).await.unwrap());
    }
    for w in &mut watchers {
        let got = take_events(w, expected.len()).await;
        assert_eq!(
            got.iter().map(|e| e.revision).collect::<Vec<_>>(),
            expected.iter().map(|e| e.2).collect::<Vec<_>>()
        );
    }
}

/// Compacts the store: run it on a store no other test is using.
pub async fn compaction_reported(store: &dyn Store, prefix: &str) {
    let k = format!("{prefix}k");
    let first = store.put(&k, b"1".to_vec(), PutCondition::Always, 0).await.unwrap();
    let mut revs = vec![first];
    for i in 2..=10 {
        revs.push(store.put(&k, format!("{i}").into_bytes(), PutCondition::Always, 0).await.unwrap());
    }
    let compact_at = revs[5];
    store.compact(compact_at).await.unwrap();

    match store.watch(prefix, first).await {
        Err(StoreError::Compacted { compact_revision }) => assert_eq!(compact_revision, compact_at),
        Err(e) => panic!("watch from a compacted revision failed with the wrong error: {e}"),
        Ok(mut w) => match tokio::time::timeout(EVENT_DEADLINE, w.next()).await {
            Ok(Some(Err(StoreError::Compacted { compact_revision }))) => {
                assert_eq!(compact_revision, compact_at)
            }
            other => panic!("watch from a compacted revision: {other:?}"),
        },
    }

    // From the compaction point on, history is intact.
    let mut w = store.watch(prefix, compact_at).await.unwrap();
    let got = take_events(&mut w, revs.len() - 5).await;
    assert_eq!(got.iter().map(|e| e.revision).collect::<Vec<_>>(), revs[5..].to_vec());

    // The re-list recipe works: list, then watch from the list's revision + 1.
    let list = store.list(prefix).await.unwrap();
    let mut w = store.watch(prefix, list.revision + 1).await.unwrap();
    let r = store.put(&k, b"after".to_vec(), PutCondition::Always, 0).await.unwrap();
    assert_eq!(take_events(&mut w, 1).await[0].revision, r);
}

pub async fn lease_revoke_deletes_keys(store: &dyn Store, prefix: &str) {
    let lease = store.lease_grant(30).await.unwrap();
    let k1 = format!("{prefix}k1");
    let k2 = format!("{prefix}k2");
    let keep = format!("{prefix}keep");
    store.put(&k1, b"1".to_vec(), PutCondition::Always, lease).await.unwrap();
    store.put(&k2, b"2".to_vec(), PutCondition::Always, lease).await.unwrap();
    store.put(&keep, b"3".to_vec(), PutCondition::Always, 0).await.unwrap();
    assert_eq!(store.get(&k1).await.unwrap().unwrap().lease, lease);
    let ttl = store.lease_keep_alive(lease).await.unwrap();
    assert!((1..=30).contains(&ttl), "ttl {ttl}");

    let base = store.list(prefix).await.unwrap().revision;
    let mut watch = store.watch(prefix, base + 1).await.unwrap();
    store.lease_revoke(lease).await.unwrap();
    assert_eq!(store.get(&k1).await.unwrap(), None, "revoke deletes the leased keys before it returns");
    assert_eq!(store.get(&k2).await.unwrap(), None);
    assert!(store.get(&keep).await.unwrap().is_some());
    let got = take_events(&mut watch, 2).await;
    let mut deleted: Vec<&str> = got.iter().map(|e| e.kv.key.as_str()).collect();
    deleted.sort();
    assert_eq!(deleted, vec![k1.as_str(), k2.as_str()]);
    assert!(got.iter().all(|e| e.kind == EventKind::Delete));
    assert_eq!(got[0].revision, got[1].revision, "a lease's keys go in one revision");
    assert!(matches!(store.lease_keep_alive(lease).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.lease_revoke(lease).await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.put(&k1, b"x".to_vec(), PutCondition::Always, lease).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn lease_expiry_deletes_keys(store: &dyn Store, prefix: &str) {
    // A lease kept alive outlives its TTL; one left alone expires and takes its keys with it.
    let kept = store.lease_grant(2).await.unwrap();
    let dying = store.lease_grant(2).await.unwrap();
    let kept_key = format!("{prefix}kept");
    let k1 = format!("{prefix}k1");
    let k2 = format!("{prefix}k2");
    store.put(&kept_key, b"k".to_vec(), PutCondition::Always, kept).await.unwrap();
    store.put(&k1, b"1".to_vec(), PutCondition::Always, dying).await.unwrap();
    store.put(&k2, b"2".to_vec(), PutCondition::Always, dying).await.unwrap();
    let base = store.list(prefix).await.unwrap().revision;
    let mut watch = store.watch(prefix, base + 1).await.unwrap();

    let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticker.tick().await;
        store.lease_keep_alive(kept).await.expect("the kept lease stays alive");
        if store.get(&k1).await.unwrap().is_none() && store.get(&k2).await.unwrap().is_none() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "leased keys still there long after the TTL");
    }
    let got = take_events(&mut watch, 2).await;
    assert!(got.iter().all(|e| e.kind == EventKind::Delete), "{got:?}");
    let mut deleted: Vec<&str> = got.iter().map(|e| e.kv.key.as_str()).collect();
    deleted.sort();
    assert_eq!(deleted, vec![k1.as_str(), k2.as_str()]);
    assert!(store.get(&kept_key).await.unwrap().is_some(), "a kept-alive lease keeps its key");
    assert!(matches!(store.lease_keep_alive(dying).await, Err(StoreError::NotFound(_))));
    store.lease_revoke(kept).await.unwrap();
}

fn container(ns: &str, name: &str, image: &str) -> Container {
    let mut c =
        Container::new(name, ContainerSpec { image: image.parse().expect("image"), ..Default::default() });
    c.metadata.namespace = ns.to_owned();
    c
}

/// `ns` must be a fresh namespace name (a valid key segment).
pub async fn generation_rules(store: &dyn Store, ns_prefix: &str) {
    // The namespace is one key segment: make the unique prefix into one.
    let ns = ns_prefix.replace('/', "-").trim_matches('-').to_owned();
    let ns = ns.as_str();
    let mut c = container(ns, "web", "busybox:1");
    c.metadata.uid = Some("caller-chosen".into());
    c.metadata.generation = Some(42);
    c.status = Some(ContainerStatus { observed_generation: Some(7), ..Default::default() });

    let a = objects::apply_container(store, &c, None).await.unwrap();
    assert_eq!(a.outcome, ApplyOutcome::Created);
    let m = &a.container.metadata;
    assert_eq!(m.generation, Some(1), "generation starts at 1 whatever the caller sent");
    let uid = m.uid.clone().unwrap();
    assert_ne!(uid, "caller-chosen");
    let created = m.creation_timestamp.clone().expect("creationTimestamp set on create");
    let rv1: i64 = m.resource_version.as_deref().unwrap().parse().unwrap();
    let stored = objects::get_container(store, ns, "web").await.unwrap().unwrap();
    assert_eq!(
        stored.metadata.resource_version,
        Some(rv1.to_string()),
        "resourceVersion is the mod_revision"
    );
    assert_eq!(stored.status, None, "status is never stored with the spec");
    let spec_kv = store.get(&super::keys::spec_key(ns, "web").unwrap()).await.unwrap().unwrap();
    assert_eq!(spec_kv.mod_revision, rv1);

    // The same apply again: nothing written.
    let again = objects::apply_container(store, &c, None).await.unwrap();
    assert_eq!(again.outcome, ApplyOutcome::Unchanged);
    assert_eq!(again.container.metadata.resource_version, Some(rv1.to_string()));

    // Metadata only: written, same generation.
    c.metadata.labels.insert("team".into(), "a".into());
    let labels = objects::apply_container(store, &c, None).await.unwrap();
    assert_eq!(labels.outcome, ApplyOutcome::Updated { spec_changed: false });
    assert_eq!(labels.container.metadata.generation, Some(1));
    let rv2: i64 = labels.container.metadata.resource_version.as_deref().unwrap().parse().unwrap();
    assert!(rv2 > rv1);

    // A status write does not touch the spec.
    let status = ContainerStatus { observed_generation: Some(1), ..Default::default() };
    let srev = objects::put_status(store, ns, "web", &status, PutCondition::Always).await.unwrap();
    let (read_status, read_rev) = objects::get_status(store, ns, "web").await.unwrap().unwrap();
    assert_eq!((read_status.observed_generation, read_rev), (Some(1), srev));
    let spec_now = objects::get_container(store, ns, "web").await.unwrap().unwrap();
    assert_eq!(spec_now.metadata.resource_version, Some(rv2.to_string()));
    assert_eq!(spec_now.metadata.generation, Some(1));

    // A spec change: generation + 1, uid and creationTimestamp kept.
    let mut changed = c.clone();
    changed.spec.image = "busybox:2".parse().unwrap();
    changed.metadata.uid = None;
    let b = objects::apply_container(store, &changed, None).await.unwrap();
    assert_eq!(b.outcome, ApplyOutcome::Updated { spec_changed: true });
    assert_eq!(b.container.metadata.generation, Some(2));
    assert_eq!(b.container.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(b.container.metadata.creation_timestamp.as_deref(), Some(created.as_str()));
    let rv3: i64 = b.container.metadata.resource_version.as_deref().unwrap().parse().unwrap();

    // A stale resourceVersion is a conflict; the current one works.
    changed.spec.image = "busybox:3".parse().unwrap();
    match objects::apply_container(store, &changed, Some(rv2)).await {
        Err(StoreError::Conflict { current_mod_revision, .. }) => assert_eq!(current_mod_revision, rv3),
        other => panic!("apply with a stale resourceVersion: {other:?}"),
    }
    let d = objects::apply_container(store, &changed, Some(rv3)).await.unwrap();
    assert_eq!(d.container.metadata.generation, Some(3));

    let other = container(ns, "db", "busybox:1");
    objects::apply_container(store, &other, None).await.unwrap();
    let list = objects::list_containers(store, Some(ns)).await.unwrap();
    assert!(list.invalid.is_empty());
    let (all, rev) = (list.containers, list.revision);
    let names: Vec<&str> = all.iter().map(|c| c.metadata.name.as_str()).collect();
    assert_eq!(names, vec!["db", "web"]);
    assert!(
        rev >= all
            .iter()
            .map(|c| c.metadata.resource_version.as_deref().unwrap().parse::<i64>().unwrap())
            .max()
            .unwrap()
    );

    let deleted = objects::delete_container(store, ns, "web", None).await.unwrap();
    assert!(deleted.is_some());
    assert!(objects::get_container(store, ns, "web").await.unwrap().is_none());
    let recreated = objects::apply_container(store, &c, None).await.unwrap();
    assert_eq!(recreated.outcome, ApplyOutcome::Created);
    assert_eq!(recreated.container.metadata.generation, Some(1));
    assert_ne!(
        recreated.container.metadata.uid.as_deref(),
        Some(uid.as_str()),
        "a new incarnation, a new uid"
    );
}

/// Invalid requests are errors, not empty answers.
/// A fenced write happens only while the fence key is unchanged: the leader-election pattern in which
/// a stale leader's writes are refused once its key has lapsed or a successor created it again.
pub async fn fenced_writes(store: &dyn Store, prefix: &str) {
    let leader = format!("{prefix}leader");
    let target = format!("{prefix}target");
    let lease = store.lease_grant(30).await.unwrap();
    let first_term = store.put(&leader, b"a".to_vec(), PutCondition::Absent, lease).await.unwrap();
    let fence = Fence { key: &leader, mod_revision: first_term };
    let written = store.put_fenced(fence, &target, b"1".to_vec(), PutCondition::Absent).await.unwrap();
    assert_eq!(store.get(&target).await.unwrap().unwrap().value, b"1");
    // The key's own condition still applies under a holding fence.
    match store.put_fenced(fence, &target, b"x".to_vec(), PutCondition::Absent).await {
        Err(StoreError::Conflict { key, current_mod_revision }) => {
            assert_eq!((key.as_str(), current_mod_revision), (target.as_str(), written))
        }
        other => panic!("create-only over an existing key under a holding fence: {other:?}"),
    }

    // The leader's lease ends and a successor is elected: the old term's writes are refused.
    store.lease_revoke(lease).await.unwrap();
    let stale = |what: &str, outcome: Result<(), StoreError>, current: i64| match outcome {
        Err(StoreError::Conflict { key, current_mod_revision }) => {
            assert_eq!(key, leader, "{what}: the conflict names the fence");
            assert_eq!(current_mod_revision, current, "{what}");
        }
        other => panic!("{what}: a stale fence must be refused, got {other:?}"),
    };
    let outcome = store.put_fenced(fence, &target, b"2".to_vec(), PutCondition::Always).await.map(drop);
    stale("put with the leader key gone", outcome, 0);
    let second_term = store.put(&leader, b"b".to_vec(), PutCondition::Absent, 0).await.unwrap();
    assert!(second_term > first_term);
    let outcome = store.put_fenced(fence, &target, b"2".to_vec(), PutCondition::ModRevision(written)).await;
    stale("put under a successor", outcome.map(drop), second_term);
    let outcome = store.delete_fenced(fence, &target, DeleteCondition::Always).await;
    stale("delete under a successor", outcome.map(drop), second_term);
    assert_eq!(store.get(&target).await.unwrap().unwrap().value, b"1", "no stale write landed");

    // The successor's fence holds.
    let fence = Fence { key: &leader, mod_revision: second_term };
    store.put_fenced(fence, &target, b"3".to_vec(), PutCondition::ModRevision(written)).await.unwrap();
    assert!(store.delete_fenced(fence, &target, DeleteCondition::Always).await.unwrap().is_some());
    assert_eq!(store.delete_fenced(fence, &target, DeleteCondition::Always).await.unwrap(), None);
    store.delete(&leader, DeleteCondition::Always).await.unwrap();
}

pub async fn errors_are_not_empty_results(store: &dyn Store) {
    assert!(matches!(
        store.put("", b"x".to_vec(), PutCondition::Always, 0).await,
        Err(StoreError::Invalid(_))
    ));
}
