//! The scheduler's leadership under chaos: during a rollout across two worker hosts, the etcd leader
//! is SIGKILLed and the agent leading the scheduler stops. The rollout completes, leadership moves to
//! a worker, and the store's history shows that every binding was written by the term leading at that
//! revision: no write of a stale leader ever landed. A write fenced on the old term is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kedge_controller::store::{
    keys, next_event, objects, EtcdOptions, EtcdStore, EventKind, Fence, PutCondition, SharedStore,
    StoreError,
};
use kedge_crds::Placement;
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker, eventually, run_id, test_spec, wait_ready, EngineCleanup, InProcessAgent};
use serde_json::json;

const READY: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn leadership_moves_during_a_rollout_and_no_stale_leader_writes() {
    let id = run_id();
    let cleanup = EngineCleanup::new(&id);
    let namespace = format!("t{id}");
    let mut etcd = EtcdCluster::start(3).await;
    let mut options = EtcdOptions::new(etcd.endpoints());
    options.request_timeout = Duration::from_secs(3);
    let store: SharedStore = Arc::new(EtcdStore::connect(options).await.unwrap());
    let role = |value: &str| BTreeMap::from([("role".to_owned(), value.to_owned())]);
    let configure = |labels: BTreeMap<String, String>| {
        move |config: &mut kedge_controller::agent::AgentConfig| {
            config.host_labels = labels;
            config.scheduler_grace = Duration::from_secs(3);
        }
    };
    // The first agent leads the scheduler and, by the specs' selector, runs none of them; so stopping
    // it moves the leadership without leaving containers behind on the shared engine.
    let leader_host = format!("lead-{id}");
    let first =
        InProcessAgent::start_with(store.clone(), &leader_host, None, None, configure(role("lead"))).await;
    let leader =
        eventually("a scheduler leader", READY, || async { store.get(keys::SCHEDULER_LEADER).await.ok()? })
            .await;
    assert_eq!(leader.value, leader_host.as_bytes());
    let first_term = leader.mod_revision;
    let mut workers = Vec::new();
    for n in 0..2 {
        let host = format!("w{n}-{id}");
        workers.push(
            InProcessAgent::start_with(store.clone(), &host, None, None, configure(role("worker"))).await,
        );
        let alive = keys::host_lease_key(&host).unwrap();
        eventually("the worker ready", READY, || async { store.get(&alive).await.ok()? }).await;
    }

    let names: Vec<String> = (0..6).map(|i| format!("ro{i}-{id}")).collect();
    let spec = |name: &str, image: &str| {
        let mut container = test_spec(name, &namespace, "unused", &cleanup, json!({"image": image}));
        container.spec.placement = Some(Placement { host: None, host_selector: role("worker") });
        container
    };
    for name in &names {
        objects::apply_container(store.as_ref(), &spec(name, "kedge-test/app:v1"), None).await.unwrap();
    }
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
    }

    // The rollout starts; the etcd leader dies and so does the scheduler's leader.
    for name in &names {
        objects::apply_container(store.as_ref(), &spec(name, "kedge-test/app:v2"), None).await.unwrap();
    }
    etcd.kill_leader().await;
    let stopped = Instant::now();
    first.stop().await.expect("the leading agent stops");
    let leader = eventually("a new scheduler leader", READY, || async {
        let kv = store.get(keys::SCHEDULER_LEADER).await.ok()??;
        (kv.mod_revision != first_term).then_some(kv)
    })
    .await;
    eprintln!("leadership moved {:?} after the leading agent was stopped", stopped.elapsed());
    let new_holder = String::from_utf8(leader.value.clone()).unwrap();
    assert!(workers.iter().any(|worker| worker.host == new_holder), "a worker leads now: {new_holder}");
    assert!(leader.mod_revision > first_term);

    let shared = docker().await;
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
        let image = shared.inspect_container(name, None).await.unwrap().config.unwrap().image.unwrap();
        assert_eq!(image, "kedge-test/app:v2", "{name}: the rollout completed");
    }

    // The old term is fenced off: its writes are refused by the store.
    let fence = Fence { key: keys::SCHEDULER_LEADER, mod_revision: first_term };
    let stale_key = keys::binding_key(&namespace, &names[0]).unwrap();
    let stale = json!({"host": leader_host, "term": first_term}).to_string().into_bytes();
    // A transient error (etcd still settling) is retried: had such a write landed, the history check
    // below would find a binding of the old term.
    let mut outcome = store.put_fenced(fence, &stale_key, stale.clone(), PutCondition::Always).await;
    for _ in 0..20 {
        match &outcome {
            Err(error) if error.is_transient() => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                outcome = store.put_fenced(fence, &stale_key, stale.clone(), PutCondition::Always).await;
            }
            _ => break,
        }
    }
    match outcome {
        Err(StoreError::Conflict { key, current_mod_revision }) => {
            assert_eq!(key, keys::SCHEDULER_LEADER);
            assert_eq!(current_mod_revision, leader.mod_revision);
        }
        other => panic!("a stale leader's write must be refused: {other:?}"),
    }

    // The whole history: every binding write carries the term of the leader key at its revision.
    let now = store.list(keys::SCHEDULER_LEADER).await.unwrap().revision;
    let mut history = store.watch("/", 1).await.unwrap();
    let mut term: Option<i64> = None;
    let mut bindings_seen = 0;
    let mut terms_seen = Vec::new();
    while let Some(event) =
        tokio::time::timeout(Duration::from_secs(20), next_event(&mut history)).await.unwrap()
    {
        let event = event.unwrap();
        if event.kv.key == keys::SCHEDULER_LEADER {
            term = match event.kind {
                EventKind::Put => {
                    assert!(term.is_none(), "a leader key created over another at {}", event.revision);
                    terms_seen.push(event.kv.mod_revision);
                    Some(event.kv.mod_revision)
                }
                EventKind::Delete => None,
            };
        } else if event.kv.key.starts_with(keys::BINDINGS) && event.kind == EventKind::Put {
            let binding: serde_json::Value = serde_json::from_slice(&event.kv.value).unwrap();
            assert_eq!(binding["term"].as_i64(), term, "binding {} at {}", event.kv.key, event.revision);
            assert!(binding["host"].as_str().unwrap().starts_with('w'), "bound to a worker");
            bindings_seen += 1;
        }
        if event.revision >= now {
            break;
        }
    }
    assert!(bindings_seen >= names.len(), "{bindings_seen} binding writes seen");
    assert!(terms_seen.len() >= 2 && terms_seen[0] == first_term, "{terms_seen:?}");
    for worker in workers {
        worker.stop().await.expect("stops");
    }
}
