//! The move to per-host placements (issue #19): a fleet that ran on the old layout (every agent
//! following every spec and binding) is upgraded to agents that follow their own host's
//! placements. No container is recreated or removed on the way (IDs unchanged); afterwards a spec
//! moved from one host to the other runs on exactly one of them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kedge_controller::agent::AgentConfig;
use kedge_controller::docker::labels;
use kedge_controller::store::{keys, objects, PutCondition};
use kedge_crds::Placement;
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker, eventually, test_spec, wait_host_ready, wait_ready, InProcessAgent, TestScope};
use serde_json::json;

const READY: Duration = Duration::from_secs(90);
/// How long the agents of this test trust placements the current leader has not vouched for.
const GRACE: Duration = Duration::from_secs(3);

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
    let short_grace = |config: &mut AgentConfig| config.placements_grace = GRACE;
    for n in 1..=2 {
        agents.push(InProcessAgent::start_with(store.clone(), &host(n), None, None, short_grace).await);
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

    // A mixed fleet: the leadership goes to a kedge from before placements, which keeps no
    // placements (here the test itself holds the leader key and writes nothing). The marker names
    // an earlier term, so the agents follow specs and bindings again, and a spec change reaches
    // its agent although its placement never changes.
    let old_leader = take_leadership(store.as_ref()).await;
    eventually("both agents to follow specs and bindings again", READY, || async {
        agents.iter().all(|agent| !agent.stats.follows_placements()).then_some(())
    })
    .await;
    let other_placement = keys::placement_key(&host(2), &namespace, &other).unwrap();
    let placed_before = store.get(&other_placement).await.unwrap().expect("placed").mod_revision;
    let mut changed = spec(&other, Some(host(2)));
    changed.spec.image = "kedge-test/app:v2".parse().expect("an image reference");
    objects::apply_container(store.as_ref(), &changed, None).await.unwrap();
    eventually("the changed spec to run its new image on host 2", READY, || async {
        let found = containers_of(&namespace, &other).await;
        (found.len() == 1 && found[0].0 != before[&other].0 && found[0].1 == host(2) && found[0].2)
            .then_some(found[0].clone())
    })
    .await;
    wait_ready(store.as_ref(), &namespace, &other, READY).await;
    let after_change = containers_of(&namespace, &other).await;
    let placed_now = store.get(&other_placement).await.unwrap().expect("still placed").mod_revision;
    assert_eq!(placed_now, placed_before, "no leader projected the change: the agent followed the spec");

    // A leader of this kedge again: it marks the placements with its term after its first
    // complete pass (the changed spec's placement rewritten), and the agents follow them again,
    // without touching a container.
    store.lease_revoke(old_leader).await.expect("give the leadership up");
    eventually("both agents to follow their placements again", READY, || async {
        agents.iter().all(|agent| agent.stats.follows_placements()).then_some(())
    })
    .await;
    let placed_again = store.get(&other_placement).await.unwrap().expect("placed").mod_revision;
    assert!(placed_again > placed_before, "the new leader projected the changed spec");
    assert_eq!(containers_of(&namespace, &other).await, after_change, "not recreated on the way back");

    // A spec that turns unreadable in the store (written by hand, or by a newer kedge): its
    // placement keeps the last readable version, its container is left as it is, and its status
    // says why.
    let spec_key = keys::spec_key(&namespace, &other).unwrap();
    let garbled =
        store.put(&spec_key, b"{\"kind\": \"Container\", not json".to_vec(), PutCondition::Always, 0).await;
    let garbled = garbled.expect("write an unreadable spec");
    eventually("the unreadable spec to be reported in its status", READY, || async {
        let (status, _) = objects::get_status(store.as_ref(), &namespace, &other).await.ok()??;
        let synced = status.condition(kedge_crds::condition_type::SYNCED)?;
        (synced.reason == "InvalidSpec" && synced.message.contains(&format!("resourceVersion {garbled}")))
            .then_some(())
    })
    .await;
    assert_eq!(containers_of(&namespace, &other).await, after_change, "its container is left as it is");
    let placement = store.get(&other_placement).await.unwrap().expect("still placed");
    let placement: kedge_controller::agent::placements::Placement =
        serde_json::from_slice(&placement.value).unwrap();
    assert_eq!(placement.spec["spec"]["image"], "kedge-test/app:v2", "the last readable version");
    assert_eq!(placement.invalid.map(|invalid| invalid.resource_version), Some(garbled));
    let events = kedge_controller::events::list_events(store.as_ref(), Some(&namespace)).await.unwrap();
    let about = format!("Container/{namespace}/{other}");
    assert!(
        events.iter().any(|event| event.reason == "InvalidSpec" && event.involved_object == about),
        "a Warning event says so: {events:?}"
    );
    for agent in agents {
        agent.stop().await.expect("stops");
    }
}

/// Takes the scheduler's leadership away from the agents, as a leader of an older kedge would
/// hold it: the current leader's lease is revoked and the test writes the leader key with a lease
/// of its own, again until it wins the race with the agents' campaigns. Answers that lease.
async fn take_leadership(store: &dyn kedge_controller::store::Store) -> i64 {
    let deadline = std::time::Instant::now() + READY;
    loop {
        assert!(std::time::Instant::now() < deadline, "could not take the scheduler's leadership");
        if let Some(held) = store.get(keys::SCHEDULER_LEADER).await.unwrap() {
            if held.lease != 0 {
                let _ = store.lease_revoke(held.lease).await;
            }
        }
        let lease = store.lease_grant(300).await.unwrap();
        match store
            .put(keys::SCHEDULER_LEADER, b"kedge-before-placements".to_vec(), PutCondition::Absent, lease)
            .await
        {
            Ok(_) => return lease,
            Err(_) => {
                let _ = store.lease_revoke(lease).await;
            }
        }
    }
}
