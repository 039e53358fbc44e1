//! Crash safety of the whole agent: the real `kedge agent` process is killed with SIGKILL 20 times
//! at random moments during a rollout of 30 specs, and restarted each time. Afterwards there is
//! exactly one container per spec, running the new image, no recreate leftovers, and no foreign
//! container was touched.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kedge_controller::store::objects;
use kedge_tests::{
    docker, docker_cli, eventually, test_spec, wait_ready, AgentProcess, TestEnv, TestScope, TEST_LABEL,
};
use rand::Rng;
use serde_json::json;

const SPECS: usize = 30;
const KILLS: usize = 20;

/// Every container carrying the key label of a spec, by key: (name, image, running).
async fn containers_by_key(namespace: &str) -> BTreeMap<String, Vec<(String, String, bool)>> {
    let docker = docker().await;
    let filters = std::collections::HashMap::from([("label".to_owned(), vec!["io.kedge.key".to_owned()])]);
    let options =
        bollard::query_parameters::ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    let mut by_key: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    for container in docker.list_containers(Some(options)).await.unwrap() {
        let labels = container.labels.unwrap_or_default();
        let Some(key) = labels.get("io.kedge.key").filter(|key| key.starts_with(&format!("{namespace}/")))
        else {
            continue;
        };
        let name = container.names.unwrap_or_default().first().cloned().unwrap_or_default();
        let running = container.state.map(|state| state.to_string()) == Some("running".to_owned());
        by_key.entry(key.clone()).or_default().push((
            name.trim_start_matches('/').to_owned(),
            container.image.unwrap_or_default(),
            running,
        ));
    }
    by_key
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_twenty_times_during_a_rollout_leaves_exactly_one_container_per_spec() {
    let env = TestEnv::get();
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let host = format!("chaos-{id}");
    let state_dir: PathBuf = std::env::temp_dir().join(format!("kedge-chaos-{id}"));
    std::fs::create_dir_all(&state_dir).unwrap();
    let store = kedge_tests::etcd_store(env.etcd_endpoints.clone()).await;

    let foreign: Vec<String> = (0..5).map(|i| format!("bystander{i}-{id}")).collect();
    for name in &foreign {
        let label = format!("{TEST_LABEL}={id}");
        assert!(docker_cli(&["run", "-d", "--name", name, "--label", &label, "kedge-test/app:v1"])
            .status
            .success());
    }
    let foreign_before: Vec<_> = futures::future::join_all(foreign.iter().map(|name| async move {
        let inspect = docker().await.inspect_container(name, None).await.unwrap();
        (inspect.id.unwrap(), inspect.state.unwrap().started_at.unwrap())
    }))
    .await;

    let names: Vec<String> = (0..SPECS).map(|i| format!("chaos{i}-{id}")).collect();
    let spec =
        |name: &str, image: &str| test_spec(name, &namespace, &host, &cleanup, json!({"image": image}));
    for name in &names {
        objects::apply_container(store.as_ref(), &spec(name, "kedge-test/app:v1"), None)
            .await
            .expect("apply");
    }
    let mut agent = AgentProcess::start(&state_dir, &host, &env, None);
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, Duration::from_secs(180)).await;
    }

    // The rollout, and the kills: each at a random moment 0.2-1.5 s after the agent (re)started.
    for name in &names {
        objects::apply_container(store.as_ref(), &spec(name, "kedge-test/app:v2"), None)
            .await
            .expect("apply");
    }
    for _ in 0..KILLS {
        let pause = Duration::from_millis(rand::rng().random_range(200..1500));
        tokio::time::sleep(pause).await; // The chaos schedule, not a wait for a condition.
        agent.kill();
        agent = AgentProcess::start(&state_dir, &host, &env, None);
    }

    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, Duration::from_secs(240)).await;
    }
    let by_key =
        eventually("exactly one running v2 container per spec", Duration::from_secs(120), || async {
            let by_key = containers_by_key(&namespace).await;
            let done = names.iter().all(|name| {
                let key = format!("{namespace}/{name}");
                by_key.get(&key).is_some_and(|found| {
                    found.len() == 1 && found[0] == (name.clone(), "kedge-test/app:v2".to_owned(), true)
                })
            });
            done.then_some(by_key)
        })
        .await;
    assert_eq!(by_key.len(), SPECS, "no container of any other key: {by_key:?}");
    agent.kill();

    let foreign_after: Vec<_> = futures::future::join_all(foreign.iter().map(|name| async move {
        let inspect = docker().await.inspect_container(name, None).await.unwrap();
        (inspect.id.unwrap(), inspect.state.unwrap().started_at.unwrap())
    }))
    .await;
    assert_eq!(foreign_before, foreign_after, "bystanders untouched");
    for name in &names {
        objects::delete_container(store.as_ref(), &namespace, name, None).await.ok();
    }
    let _ = std::fs::remove_dir_all(&state_dir);
}
