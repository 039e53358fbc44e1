//! Placement across hosts: three agents on one etcd. A spec naming a host runs there; a spec with a
//! host selector runs on the one matching host; unplaced specs are spread by the scheduler, fewest
//! specs first. Every spec runs exactly once, on the host its status reports.

use std::collections::BTreeMap;
use std::time::Duration;

use kedge_controller::docker::labels;
use kedge_controller::store::{keys, objects};
use kedge_crds::Placement;
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker, eventually, test_spec, wait_ready, InProcessAgent, TestScope};
use serde_json::json;

const READY: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn specs_land_by_name_by_selector_and_spread_when_unplaced() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let etcd = EtcdCluster::start(1).await;
    let store = etcd.store().await;
    let host = |n: usize| format!("h{n}-{id}");
    let zone = |n: usize| if n == 1 { "a" } else { "b" };
    let mut agents = Vec::new();
    for n in 1..=3 {
        let labels = BTreeMap::from([("zone".to_owned(), zone(n).to_owned())]);
        agents.push(
            InProcessAgent::start_with(store.clone(), &host(n), None, None, |config| {
                config.host_labels = labels
            })
            .await,
        );
    }
    // Spreading is judged against the hosts that are ready: wait for all three.
    for n in 1..=3 {
        kedge_tests::wait_host_ready(store.as_ref(), &host(n), READY).await;
    }

    let spec = |name: &str, placement: Option<Placement>| {
        let mut container =
            test_spec(name, &namespace, "unused", &cleanup, json!({"image": "kedge-test/app:v1"}));
        container.spec.placement = placement;
        container
    };
    let by_selector = Placement { host: None, host_selector: BTreeMap::from([("zone".into(), "a".into())]) };
    let named = Placement { host: Some(host(2)), host_selector: BTreeMap::new() };
    let mut expected: Vec<(String, Option<String>)> =
        vec![(format!("named-{id}"), Some(host(2))), (format!("sel-{id}"), Some(host(1)))];
    objects::apply_container(store.as_ref(), &spec(&expected[0].0, Some(named)), None).await.unwrap();
    objects::apply_container(store.as_ref(), &spec(&expected[1].0, Some(by_selector)), None).await.unwrap();
    for i in 0..4 {
        let name = format!("free{i}-{id}");
        objects::apply_container(store.as_ref(), &spec(&name, None), None).await.unwrap();
        expected.push((name, None));
    }

    let docker = docker().await;
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for (name, want) in &expected {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
        let (status, _) = objects::get_status(store.as_ref(), &namespace, name).await.unwrap().unwrap();
        let on = status.host.clone().expect("status names the host");
        if let Some(want) = want {
            assert_eq!(&on, want, "{name} runs where its placement says");
        }
        let inspect = docker.inspect_container(name, None).await.expect("the container exists");
        let container_labels = inspect.config.unwrap().labels.unwrap();
        assert_eq!(container_labels.get(labels::HOST), Some(&on), "{name}: the container's host label");
        if want.is_none() || name.starts_with("sel") {
            let binding = store.get(&keys::binding_key(&namespace, name).unwrap()).await.unwrap();
            let binding: serde_json::Value = serde_json::from_slice(&binding.expect("bound").value).unwrap();
            assert_eq!(binding["host"], json!(on), "{name}: bound where it runs");
        } else {
            let binding = store.get(&keys::binding_key(&namespace, name).unwrap()).await.unwrap();
            assert!(binding.is_none(), "{name} names its host and needs no binding");
        }
        *per_host.entry(on).or_default() += 1;
    }
    // Six specs on three hosts, the scheduler picking the least loaded host each time: two each.
    assert_eq!(per_host.values().copied().collect::<Vec<_>>(), vec![2, 2, 2], "{per_host:?}");

    // Deleting an unplaced spec deletes its binding too.
    let gone = &expected[2].0;
    objects::delete_container(store.as_ref(), &namespace, gone, None).await.unwrap();
    let binding_key = keys::binding_key(&namespace, gone).unwrap();
    eventually("the deleted spec's binding to go", READY, || async {
        store.get(&binding_key).await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("the deleted spec's container to go", READY, || async {
        docker.inspect_container(gone, None).await.is_err().then_some(())
    })
    .await;
    for agent in agents {
        agent.stop().await.expect("stops");
    }
}
