//! An agent restarted over containers that already match their specs adopts them: zero recreates,
//! zero restarts, every spec Ready again.

use std::collections::BTreeMap;
use std::time::Duration;

use kedge_controller::store::objects;
use kedge_tests::{docker, test_spec, wait_ready, InProcessAgent, TestScope};
use serde_json::json;

const SPECS: usize = 100;

async fn ids_and_starts(names: &[String]) -> BTreeMap<String, (String, String)> {
    let docker = docker().await;
    let mut seen = BTreeMap::new();
    for name in names {
        let inspect = docker.inspect_container(name, None).await.expect("the container exists");
        seen.insert(name.clone(), (inspect.id.unwrap(), inspect.state.unwrap().started_at.unwrap()));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_agent_adopts_matching_containers_without_recreating_any() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        let store =
            kedge_controller::store::EmbeddedStore::open(dir.path().join("kedge.db"), Default::default())
                .await
                .expect("open the store");
        std::sync::Arc::new(store) as kedge_controller::store::SharedStore
    };
    let host = format!("host-{id}");
    let names: Vec<String> = (0..SPECS).map(|i| format!("adopt{i}-{id}")).collect();

    let agent = InProcessAgent::start(open().await, &host, None).await;
    for (i, name) in names.iter().enumerate() {
        // A mix of shapes, so adoption is checked against more than the simplest spec.
        let spec = match i % 4 {
            0 => json!({"image": "kedge-test/app:v1"}),
            1 => {
                json!({"image": "kedge-test/app:v1", "env": {"MODE": "worker"}, "command": ["/bin/sleep", "1000"]})
            }
            2 => json!({"image": "kedge-test/web:latest", "resources": {"memory": "32Mi", "cpus": "0.5"}}),
            _ => {
                json!({"image": "kedge-test/app:v2", "restartPolicy": "unless-stopped", "stopSignal": "SIGINT"})
            }
        };
        let spec = test_spec(name, &namespace, &host, &cleanup, spec);
        objects::apply_container(agent.store.as_ref(), &spec, None).await.expect("apply");
    }
    for name in &names {
        wait_ready(agent.store.as_ref(), &namespace, name, Duration::from_secs(180)).await;
    }
    agent.stop().await.expect("the first agent stops cleanly");
    let before = ids_and_starts(&names).await;

    let agent = InProcessAgent::start(open().await, &host, None).await;
    // Ready was already true before the restart, so wait for the new agent's own pass instead: the
    // resync at start enqueues every key; done when each has been reconciled and none is running.
    let stats = agent.stats.clone();
    kedge_tests::eventually(
        "the new agent to reconcile every spec once",
        Duration::from_secs(120),
        || async {
            let now = stats.snapshot();
            (now.reconciles >= SPECS as u64 && now.in_flight == 0).then_some(now)
        },
    )
    .await;
    let done = stats.snapshot();
    assert_eq!(done.failures, 0, "{done:?}");
    assert!(done.actions.is_empty(), "the restarted agent did nothing to matching containers: {done:?}");
    for name in &names {
        wait_ready(agent.store.as_ref(), &namespace, name, Duration::from_secs(60)).await;
    }
    agent.stop().await.expect("the second agent stops cleanly");
    let after = ids_and_starts(&names).await;
    let changed: Vec<_> = names.iter().filter(|name| before[*name] != after[*name]).collect();
    assert!(
        changed.is_empty(),
        "{} of {SPECS} containers were recreated or restarted: {changed:?}",
        changed.len()
    );
}
