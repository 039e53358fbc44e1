//! The move to per-host placements (issue #19): a fleet that ran on the old layout (every agent
//! following every spec and binding) is upgraded to agents that follow their own host's
//! placements. No container is recreated or removed on the way (IDs unchanged); afterwards a spec
//! moved from one host to the other runs on exactly one of them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kedge_controller::agent::AgentConfig;
use kedge_controller::docker::labels;
use kedge_controller::store::{keys, objects};
use kedge_crds::Placement;
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker, eventually, test_spec, wait_host_ready, wait_ready, InProcessAgent, TestScope};
use serde_json::json;

const READY: Duration = Duration::from_secs(90);

/// `(id, host label, running)` of every container of spec `namespace/name` on the test engine.
async fn containers_of(namespace: &str, name: &str) -> Vec<(String, String, bool)> {
    let key = format!("{}={namespace}/{name}", labels::KEY);
    let filters = HashMap::from([("label".to_owned(), vec![key])]);
    let options =
        bollard::query_parameters::ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    docker()
        .await
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .map(|c| {
            let host = c.labels.unwrap_or_default().get(labels::HOST).cloned().unwrap_or_default();
            let running = c.state.map(|state| state.to_string()) == Some("running".to_owned());
            (c.id.unwrap_or_default(), host, running)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_moves_to_placements_without_touching_a_container_and_a_moved_spec_runs_once() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let etcd = EtcdCluster::start(1).await;
    let store = etcd.store().await;
    let host = |n: usize| format!("mig{n}-{id}");
    let old_layout = |config: &mut AgentConfig| config.project_placements = false;

    // The old layout: no leader projects placements, so every agent follows specs and bindings.
    let mut agents = Vec::new();
    for n in 1..=2 {
        agents.push(InProcessAgent::start_with(store.clone(), &host(n), None, None, old_layout).await);
    }
    for n in 1..=2 {
        wait_host_ready(store.as_ref(), &host(n), READY).await;
    }
    let spec = |name: &str, on: Option<String>| {
        let mut container =
            test_spec(name, &namespace, "unused", &cleanup, json!({"image": "kedge-test/app:v1"}));
        container.spec.placement =
            on.map(|host| Placement { host: Some(host), host_selector: BTreeMap::new() });
        container
    };
    let (pinned, other) = (format!("pin1-{id}"), format!("pin2-{id}"));
    let free: Vec<String> = (0..2).map(|i| format!("free{i}-{id}")).collect();
    objects::apply_container(store.as_ref(), &spec(&pinned, Some(host(1))), None).await.unwrap();
    objects::apply_container(store.as_ref(), &spec(&other, Some(host(2))), None).await.unwrap();
    for name in &free {
        objects::apply_container(store.as_ref(), &spec(name, None), None).await.unwrap();
    }
    let names: Vec<String> = [pinned.clone(), other.clone()].into_iter().chain(free.clone()).collect();
    let mut before = BTreeMap::new();
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
        let found = containers_of(&namespace, name).await;
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        before.insert(name.clone(), found[0].clone());
    }
    assert!(store.list(keys::PLACEMENTS).await.unwrap().kvs.is_empty(), "the old layout has no placements");
    assert!(store.get(keys::PLACEMENTS_READY).await.unwrap().is_none());

    // The upgrade: both agents replaced by ones whose leader projects. Whichever starts first
    // follows specs and bindings until the leader marks the placements complete, then switches.
    for agent in agents.drain(..) {
        agent.stop().await.expect("stops");
    }
    for n in 1..=2 {
        agents.push(InProcessAgent::start(store.clone(), &host(n), None).await);
    }
    eventually("both agents to follow their placements", READY, || async {
        agents.iter().all(|agent| agent.stats.follows_placements()).then_some(())
    })
    .await;
    let placed = store.list(keys::PLACEMENTS).await.unwrap().kvs;
    assert_eq!(placed.len(), names.len(), "every spec has its placement once marked complete");
    for name in &names {
        let (_, on, running) = &before[name];
        let key = keys::placement_key(on, &namespace, name).unwrap();
        assert!(placed.iter().any(|kv| kv.key == key), "{name} is placed where it runs ({on})");
        let found = containers_of(&namespace, name).await;
        assert_eq!(found, vec![before[name].clone()], "{name}: the same container, untouched");
        assert!(running);
    }
    for agent in &agents {
        let actions = agent.stats.snapshot();
        for kind in ["Create", "Recreate", "Remove"] {
            assert_eq!(actions.actions_of(kind), 0, "{}: no {kind} on the way: {actions:?}", agent.host);
        }
    }

    // A spec moved from host 1 to host 2 runs on host 2 only.
    objects::apply_container(store.as_ref(), &spec(&pinned, Some(host(2))), None).await.unwrap();
    eventually("the moved spec to run on host 2 only", READY, || async {
        let found = containers_of(&namespace, &pinned).await;
        (found.len() == 1 && found[0].1 == host(2) && found[0].2).then_some(())
    })
    .await;
    wait_ready(store.as_ref(), &namespace, &pinned, READY).await;
    let (status, _) = objects::get_status(store.as_ref(), &namespace, &pinned).await.unwrap().unwrap();
    assert_eq!(status.host, Some(host(2)));
    let placements: Vec<String> = store
        .list(keys::PLACEMENTS)
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .filter(|key| key.ends_with(&format!("/{pinned}")))
        .collect();
    assert_eq!(placements, vec![keys::placement_key(&host(2), &namespace, &pinned).unwrap()]);
    // The others were not touched by the move.
    for name in names.iter().filter(|name| **name != pinned) {
        assert_eq!(containers_of(&namespace, name).await, vec![before[name].clone()], "{name}");
    }
    for agent in agents {
        agent.stop().await.expect("stops");
    }
}
