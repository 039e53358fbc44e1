//! Crash recovery by label in the real agent: a `kedge agent` process aborted in the middle of a
//! recreate (a failpoint, as a SIGKILL or an OOM would) is restarted, finishes the rollout from the
//! labelled leftovers, and leaves alone a foreign container named like a leftover of the same spec
//! (`<name>-kedge-old-abc`, no kedge label), which a recovery by name alone would take for one.
//!
//! The agent binary must be built with failpoints (`--features kedge-controller/failpoints`, as
//! scripts/test builds it); the test fails, saying so, when the agent does not abort.

use std::time::Duration;

use kedge_controller::store::objects;
use kedge_tests::{
    docker, docker_cli, eventually, test_spec, wait_ready, AgentProcess, TestEnv, TestScope, TEST_LABEL,
};
use serde_json::json;

/// `(id, name, image, running)` of every container whose name starts with `prefix`, by name.
async fn containers_named(prefix: &str) -> Vec<(String, String, String, bool)> {
    let filters = std::collections::HashMap::from([("name".to_owned(), vec![prefix.to_owned()])]);
    let options =
        bollard::query_parameters::ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    let mut found: Vec<_> = docker()
        .await
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .map(|c| {
            let name = c.names.unwrap_or_default().first().cloned().unwrap_or_default();
            (
                c.id.unwrap_or_default(),
                name.trim_start_matches('/').to_owned(),
                c.image.unwrap_or_default(),
                c.state.map(|state| state.to_string()) == Some("running".to_owned()),
            )
        })
        .filter(|(_, name, _, _)| name.starts_with(prefix))
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_mid_recreate_recovers_by_label_and_leaves_a_look_alike_alone() {
    // Killed once the new container was proven and the old one took its retired name: the new one
    // runs under its temporary name, the old one under its retired name, nothing holds the name.
    killed_at("recreate.start_first.after_retire_old", false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_while_the_old_container_stops_in_the_background_removes_it_and_keeps_the_new() {
    // Killed once the proven new container holds the name, while the old one (retired) stops.
    killed_at("recreate.start_first.after_rename_new", true).await;
}

/// The rollout to v2 with an agent aborted at `failpoint`, then restarted: the proven new container
/// holds the name (the very one made before the crash: never rolled back), the old one is gone,
/// and the look-alike is untouched. `name_held`: whether the new one held the name at the crash.
async fn killed_at(failpoint: &str, name_held: bool) {
    let env = TestEnv::get();
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let host = format!("recover-{id}");
    let name = format!("web-{id}");
    let state_dir = tempfile::tempdir().expect("a state directory");
    let store = kedge_tests::etcd_store(env.etcd_endpoints.clone()).await;
    let spec = |image: &str| test_spec(&name, &namespace, &host, &cleanup, json!({"image": image}));

    objects::apply_container(store.as_ref(), &spec("kedge-test/app:v1"), None).await.expect("apply v1");
    let agent = AgentProcess::start(state_dir.path(), &host, &env, None);
    wait_ready(store.as_ref(), &namespace, &name, Duration::from_secs(120)).await;
    drop(agent);

    // Someone's container named exactly like a leftover of this spec's recreate, with no kedge label.
    let look_alike = format!("{name}-kedge-old-abc");
    let label = format!("{TEST_LABEL}={id}");
    let run = docker_cli(&["run", "-d", "--name", &look_alike, "--label", &label, "kedge-test/app:v1"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let look_alike_before = docker().await.inspect_container(&look_alike, None).await.expect("inspect");

    // The update, and an agent that aborts at `failpoint`. The spec shares nothing exclusive, so
    // the agent's recreate is start-first.
    objects::apply_container(store.as_ref(), &spec("kedge-test/app:v2"), None).await.expect("apply v2");
    let mut crashing = AgentProcess::start(state_dir.path(), &host, &env, Some(failpoint));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = crashing.child.try_wait().expect("wait for the agent") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let log = std::fs::read_to_string(state_dir.path().join("agent.log")).unwrap_or_default();
            let left = containers_named(&name).await;
            panic!("the agent did not abort at {failpoint} within 120 s; containers {left:?}\nlog:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(state_dir.path().join("agent.log")).unwrap_or_default();
    assert!(
        log.contains(&format!("failpoint {failpoint} reached")),
        "the agent must abort at the failpoint (is it built with --features kedge-controller/failpoints?); \
         exit {status:?}, log:\n{log}"
    );
    let left = containers_named(&name).await;
    let names: Vec<&str> = left.iter().map(|(_, name, _, _)| name.as_str()).collect();
    assert_eq!(names.len(), 3, "the retired old, the new and the look-alike: {names:?}");
    assert_eq!(names.contains(&name.as_str()), name_held, "{names:?}");
    let retired = left
        .iter()
        .find(|(_, n, _, _)| n.contains("-kedge-retired-"))
        .unwrap_or_else(|| panic!("a retired old container: {left:?}\nlog:\n{log}"));
    assert!(retired.3, "the old one still runs at the crash: {left:?}");
    let proven =
        left.iter().find(|(_, _, image, _)| image == "kedge-test/app:v2").expect("the new one").0.clone();

    let agent = AgentProcess::start(state_dir.path(), &host, &env, None);
    wait_ready(store.as_ref(), &namespace, &name, Duration::from_secs(180)).await;
    let settled = eventually(
        "one v2 container holding the name, the look-alike beside it",
        Duration::from_secs(120),
        || async {
            let left = containers_named(&name).await;
            let shape: Vec<(&str, &str, bool)> = left
                .iter()
                .map(|(_, name, image, running)| (name.as_str(), image.as_str(), *running))
                .collect();
            (shape
                == vec![
                    (name.as_str(), "kedge-test/app:v2", true),
                    (look_alike.as_str(), "kedge-test/app:v1", true),
                ])
            .then_some(left)
        },
    )
    .await;
    drop(agent);
    assert_eq!(
        settled[0].0, proven,
        "the new container proven before the crash, not rolled back nor made again"
    );

    let look_alike_after = docker().await.inspect_container(&look_alike, None).await.expect("inspect");
    assert_eq!(look_alike_after.id, look_alike_before.id, "the look-alike is the same container");
    assert_eq!(look_alike_after.name, look_alike_before.name, "never renamed");
    assert_eq!(
        look_alike_after.state.and_then(|s| s.started_at),
        look_alike_before.state.and_then(|s| s.started_at),
        "never stopped or started"
    );
    let log = std::fs::read_to_string(state_dir.path().join("agent.log")).unwrap_or_default();
    assert!(log.contains("recovered an interrupted recreate"), "{settled:?}\n{log}");
    objects::delete_container(store.as_ref(), &namespace, &name, None).await.ok();
}
