//! The etcd store against real etcd 3.4: the conformance suite on the test environment's etcd, and the
//! failure cases on etcd processes these tests own (compaction is global; a leader kill needs a cluster).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kedge_controller::store::{
    api_conformance, conformance, EtcdOptions, EtcdStore, EtcdTls, EventKind, PutCondition, Store, StoreError,
};
use kedge_tests::etcd::{free_port, EtcdCluster};

/// The test environment's etcd; a loud failure when it is not set up, never a skip.
fn env_endpoints() -> Vec<String> {
    match std::env::var("KEDGE_ETCD_ENDPOINTS") {
        Ok(v) if !v.is_empty() => v.split(',').map(str::to_owned).collect(),
        _ => panic!(
            "KEDGE_ETCD_ENDPOINTS is not set: the etcd store tests need a real etcd. \
             Run `scripts/test-env up && eval \"$(scripts/test-env env)\"` (scripts/test does both)."
        ),
    }
}

fn unique_prefix(test: &str) -> String {
    format!("/kedge-test/{test}/{}/", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_conformance_shared_cases() {
    let store = EtcdStore::connect(EtcdOptions::new(env_endpoints())).await.unwrap();
    conformance::run_shared(&store, &unique_prefix("conformance")).await;
}

/// The typed `Api<K>` of every kind, on the test environment's etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_api_conformance_every_kind() {
    let store = EtcdStore::connect(EtcdOptions::new(env_endpoints())).await.unwrap();
    api_conformance::run_every_kind(&store, &format!("api-{}", uuid::Uuid::new_v4().simple())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_compaction_is_reported() {
    // Compaction drops history for every key, so it runs on an etcd of its own.
    let cluster = EtcdCluster::start(1).await;
    let store = EtcdStore::connect(EtcdOptions::new(cluster.endpoints())).await.unwrap();
    conformance::compaction_reported(&store, "/compact/").await;
}

#[tokio::test]
async fn etcd_unreachable_is_an_error_not_an_empty_list() {
    let port = free_port();
    let mut options = EtcdOptions::new([format!("http://127.0.0.1:{port}")]);
    options.request_timeout = Duration::from_secs(1);
    options.connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = match EtcdStore::connect(options).await {
        Err(e) => Err(e),
        Ok(store) => store.list("/kedge/v1/specs/").await.map(|l| l.kvs.len()),
    };
    match result {
        Err(e) => assert!(e.is_transient(), "an unreachable store is a transient error, got {e}"),
        Ok(n) => panic!("listing an unreachable etcd returned {n} keys instead of an error"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "the request timeout bounds the call");
}

#[tokio::test]
async fn etcd_watch_of_unreachable_store_fails() {
    let port = free_port();
    let mut options = EtcdOptions::new([format!("http://127.0.0.1:{port}")]);
    options.request_timeout = Duration::from_secs(1);
    options.connect_timeout = Duration::from_millis(300);
    let store = match EtcdStore::connect(options).await {
        Ok(s) => s,
        Err(e) => {
            assert!(e.is_transient(), "{e}");
            return;
        }
    };
    assert!(store.watch("/x/", 0).await.is_err(), "a watch that cannot start is an error");
}

/// The acceptance test of the etcd store: a watcher and a writer across a leader kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_leader_kill_loses_nothing() {
    const WRITES: usize = 1000;
    const KILL_AT: usize = 300;
    let mut cluster = EtcdCluster::start(3).await;
    let mut options = EtcdOptions::new(cluster.endpoints());
    options.request_timeout = Duration::from_secs(10);
    let store = EtcdStore::connect(options).await.unwrap();
    let prefix = "/leader-kill/";
    let base = store.list(prefix).await.unwrap().revision;
    let done_key = format!("{prefix}zz-done");

    let watcher = {
        let store = store.clone();
        let done_key = done_key.clone();
        tokio::spawn(async move {
            let mut events = Vec::new();
            let mut w = store.watch(prefix, base + 1).await.expect("watch starts");
            loop {
                match tokio::time::timeout(Duration::from_secs(60), w.next()).await {
                    Err(_) => panic!("watcher stalled after {} events", events.len()),
                    Ok(None) => panic!("watch ended after {} events", events.len()),
                    Ok(Some(Err(e))) => panic!("watch failed after {} events: {e}", events.len()),
                    Ok(Some(Ok(ev))) => {
                        let done = ev.kv.key == done_key;
                        events.push(ev);
                        if done {
                            return events;
                        }
                    }
                }
            }
        })
    };

    let mut acked: Vec<(i64, String, String)> = Vec::new();
    let mut errors = 0;
    let mut killed = None;
    for i in 0..WRITES {
        if i == KILL_AT {
            killed = Some(cluster.kill_leader().await);
        }
        let key = format!("{prefix}k{:02}", i % 50);
        let value = format!("v{i}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match store.put(&key, value.clone().into_bytes(), PutCondition::Always, 0).await {
                Ok(rev) => {
                    acked.push((rev, key.clone(), value.clone()));
                    break;
                }
                Err(e) => {
                    errors += 1;
                    assert!(
                        Instant::now() < deadline,
                        "no write succeeded for 60 s after the leader kill: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let done_rev = store.put(&done_key, b"done".to_vec(), PutCondition::Always, 0).await.unwrap();
    let events = watcher.await.unwrap();
    eprintln!(
        "leader kill: killed {killed:?}, {errors} failed write attempts retried, {} events",
        events.len()
    );

    // Every revision exactly once, in order: this writer is the only writer of the whole cluster.
    let revisions: Vec<i64> = events.iter().map(|e| e.revision).collect();
    let expected: Vec<i64> = (base + 1..=done_rev).collect();
    assert_eq!(revisions.len(), expected.len(), "number of events");
    assert_eq!(revisions, expected, "each revision once, in order");
    assert!(events.iter().all(|e| e.kind == EventKind::Put));

    // Every acknowledged write is in the stream at its revision with its value.
    let by_rev: BTreeMap<i64, (&str, &[u8])> =
        events.iter().map(|e| (e.revision, (e.kv.key.as_str(), e.kv.value.as_slice()))).collect();
    for (rev, key, value) in &acked {
        assert_eq!(by_rev.get(rev), Some(&(key.as_str(), value.as_bytes())), "acknowledged write at {rev}");
    }
    // And the final state holds the last acknowledged value of every key.
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for (_, key, value) in &acked {
        last.insert(key, value);
    }
    let list = store.list(prefix).await.unwrap();
    for kv in list.kvs.iter().filter(|kv| kv.key != done_key) {
        assert_eq!(Some(&std::str::from_utf8(&kv.value).unwrap()), last.get(kv.key.as_str()), "{}", kv.key);
    }
    assert_eq!(list.kvs.len(), last.len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_resumes_after_its_member_restarts() {
    // One member: the watch's connection breaks for sure; it must resume without a gap or a repeat.
    let mut cluster = EtcdCluster::start(1).await;
    let mut options = EtcdOptions::new(cluster.endpoints());
    options.request_timeout = Duration::from_secs(5);
    let store = EtcdStore::connect(options).await.unwrap();
    let base = store.list("/r/").await.unwrap().revision;
    let mut w = store.watch("/r/", base + 1).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..10 {
        revs.push(store.put(&format!("/r/{i}"), b"x".to_vec(), PutCondition::Always, 0).await.unwrap());
    }
    let first = conformance::take_events(&mut w, 5).await;
    cluster.kill(0);
    cluster.restart(0).await;
    for i in 10..20 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match store.put(&format!("/r/{i}"), b"x".to_vec(), PutCondition::Always, 0).await {
                Ok(r) => {
                    revs.push(r);
                    break;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("etcd did not come back: {e}"),
            }
        }
    }
    let rest = conformance::take_events(&mut w, 15).await;
    let seen: Vec<i64> = first.iter().chain(rest.iter()).map(|e| e.revision).collect();
    assert_eq!(seen, revs);
    conformance::assert_no_event(&mut w, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn etcd_auth_failure_is_reported() {
    let cluster = EtcdCluster::start(1).await;
    let endpoints = cluster.endpoints();
    // Enable authentication with a root user, then connect with a wrong password.
    let mut admin = etcd_client::Client::connect(&endpoints, None).await.unwrap();
    admin.user_add("root", "rootpw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let mut good = EtcdOptions::new(endpoints.clone());
    good.user = Some(("root".into(), "rootpw".into()));
    let store = EtcdStore::connect(good).await.unwrap();
    let rev = store.put("/auth/k", b"v".to_vec(), PutCondition::Always, 0).await.unwrap();
    assert_eq!(store.get("/auth/k").await.unwrap().unwrap().mod_revision, rev);

    let mut bad = EtcdOptions::new(endpoints.clone());
    bad.user = Some(("root".into(), "wrong".into()));
    match EtcdStore::connect(bad).await {
        Err(StoreError::Auth(_)) => {}
        Err(e) => panic!("a wrong password should be an Auth error, got {e}"),
        Ok(store) => match store.get("/auth/k").await {
            Err(StoreError::Auth(_)) => {}
            other => panic!("a wrong password should be an Auth error, got {other:?}"),
        },
    }
    let anonymous = EtcdStore::connect(EtcdOptions::new(endpoints)).await.unwrap();
    match anonymous.get("/auth/k").await {
        Err(StoreError::Auth(_)) => {}
        other => panic!("no credentials on an auth-enabled cluster should be an Auth error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_tls_with_client_certificate() {
    let (cluster, pki) = EtcdCluster::start_tls().await;
    let read = |f: &str| std::fs::read(pki.join(f)).unwrap();
    let tls = EtcdTls {
        ca_pem: Some(read("ca.crt")),
        client_cert_pem: Some(read("client.crt")),
        client_key_pem: Some(read("client.key")),
        domain: None,
    };
    let mut options = EtcdOptions::new(cluster.endpoints());
    options.tls = Some(tls.clone());
    options.request_timeout = Duration::from_secs(3);
    let store = EtcdStore::connect(options.clone()).await.unwrap();
    // The member may still be starting: poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let rev = loop {
        match store.put("/tls/k", b"v".to_vec(), PutCondition::Always, 0).await {
            Ok(rev) => break rev,
            Err(e) => {
                assert!(Instant::now() < deadline, "TLS etcd never answered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(store.get("/tls/k").await.unwrap().unwrap().mod_revision, rev);
    conformance::basic_reads_and_writes(&store, "/tls/basic/").await;

    // Without a client certificate the server refuses the connection: an error, not an empty answer.
    let mut no_cert = options.clone();
    no_cert.tls = Some(EtcdTls { client_cert_pem: None, client_key_pem: None, ..tls.clone() });
    no_cert.request_timeout = Duration::from_secs(2);
    if let Ok(store) = EtcdStore::connect(no_cert).await {
        let result = store.list("/tls/").await;
        assert!(result.is_err(), "a client without a certificate listed {:?}", result.map(|l| l.kvs.len()));
    }
    // A CA that did not sign the server's certificate: refused too.
    let mut wrong_ca = options;
    wrong_ca.tls = Some(EtcdTls { ca_pem: Some(read("other-ca.crt")), ..tls });
    wrong_ca.request_timeout = Duration::from_secs(2);
    if let Ok(store) = EtcdStore::connect(wrong_ca).await {
        let result = store.list("/tls/").await;
        assert!(result.is_err(), "an untrusted server answered {:?}", result.map(|l| l.kvs.len()));
    }
}
