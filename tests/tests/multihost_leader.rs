//! The scheduler's leadership under chaos: during a rollout across two worker hosts, the etcd leader
//! is SIGKILLed and the agent leading the scheduler stops. The rollout completes, leadership moves to
//! a worker, and the store's history shows that every binding was written by the term leading at that
//! revision: no write of a stale leader ever landed. A write fenced on the old term is refused.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kedge_controller::store::{keys, objects, EtcdOptions, EtcdStore, SharedStore};
use kedge_crds::Placement;
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{
    assert_stale_term_refused, check_scheduler_history, docker, eventually, test_spec, wait_ready,
    InProcessAgent, TestScope,
};
use serde_json::json;

const READY: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn leadership_moves_during_a_rollout_and_no_stale_leader_writes() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
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

    // The old term is fenced off: its writes are refused by the store. And the whole history: every
    // binding write carries the term of the leader key at its revision, bound to a worker, and no
    // leader key was ever created over another. Both retry calls that meet the killed member.
    let stale_key = keys::binding_key(&namespace, &names[0]).unwrap();
    assert_stale_term_refused(store.as_ref(), first_term, leader.mod_revision, &stale_key).await;
    let history = check_scheduler_history(store.as_ref(), |host| host.starts_with('w')).await;
    assert!(history.bindings >= names.len(), "{history:?}");
    assert!(history.terms.len() >= 2 && history.terms[0] == first_term, "{history:?}");
    for worker in workers {
        worker.stop().await.expect("stops");
    }
}
