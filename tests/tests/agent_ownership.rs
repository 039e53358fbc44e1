//! Ownership: an agent never touches a container it does not own. Foreign containers, including
//! ones holding names that specs want, are left exactly as they are and reported as conflicts; two
//! agents on one engine (two installations, or parallel tests) leave each other's containers alone.

use std::time::Duration;

use kedge_controller::store::objects;
use kedge_crds::ConditionStatus;
use kedge_tests::{
    condition, docker, docker_cli, eventually, test_spec, wait_ready, InProcessAgent, TestScope,
};
use serde_json::json;

const READY: Duration = Duration::from_secs(60);

/// (ID, StartedAt) of a container: both stay the same when nothing touched it.
async fn identity(name: &str) -> (String, String) {
    let inspect = docker().await.inspect_container(name, None).await.expect("the container exists");
    (inspect.id.unwrap(), inspect.state.and_then(|s| s.started_at).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_containers_are_never_touched() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let foreign: Vec<String> = (0..20).map(|i| format!("foreign{i}-{id}")).collect();
    for name in &foreign {
        let output = docker_cli(&[
            "run",
            "-d",
            "--name",
            name,
            "--label",
            &format!("io.kedge.test={id}"),
            "kedge-test/app:v1",
        ]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }
    let before: Vec<_> = futures::future::join_all(foreign.iter().map(|name| identity(name))).await;

    let agent = InProcessAgent::embedded(&format!("host-{id}")).await;
    // Two specs want names foreign containers hold; one has a free name.
    let wanted = [foreign[0].clone(), foreign[7].clone()];
    let free = format!("free-{id}");
    for name in wanted.iter().chain([&free]) {
        let spec = test_spec(name, &namespace, &agent.host, &cleanup, json!({"image": "kedge-test/app:v2"}));
        objects::apply_container(agent.store.as_ref(), &spec, None).await.expect("apply");
    }
    wait_ready(agent.store.as_ref(), &namespace, &free, READY).await;
    for name in &wanted {
        let synced = eventually(&format!("{name} to report the conflict"), READY, || async {
            condition(agent.store.as_ref(), &namespace, name, "Synced")
                .await
                .filter(|c| c.reason == "NameConflict")
        })
        .await;
        assert_eq!(synced.status, ConditionStatus::False);
        assert!(
            synced.message.contains(&before[foreign.iter().position(|f| f == name).unwrap()].0),
            "names the foreign ID: {}",
            synced.message
        );
        let degraded = condition(agent.store.as_ref(), &namespace, name, "Degraded").await.unwrap();
        assert_eq!(degraded.status, ConditionStatus::True);
    }

    agent.stop().await.expect("the agent stops cleanly");
    let after: Vec<_> = futures::future::join_all(foreign.iter().map(|name| identity(name))).await;
    assert_eq!(before, after, "every foreign container has its ID and start time");
    let images = futures::future::join_all(foreign.iter().map(|name| async move {
        docker().await.inspect_container(name, None).await.unwrap().config.unwrap().image.unwrap()
    }))
    .await;
    assert!(images.iter().all(|image| image == "kedge-test/app:v1"), "none was moved to the spec's image");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_agents_on_one_engine_leave_each_other_alone() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let first = InProcessAgent::embedded(&format!("first-{id}")).await;
    let a = format!("a-{id}");
    let spec = test_spec(&a, &namespace, &first.host, &cleanup, json!({"image": "kedge-test/app:v1"}));
    objects::apply_container(first.store.as_ref(), &spec, None).await.expect("apply");
    wait_ready(first.store.as_ref(), &namespace, &a, READY).await;
    let a_before = identity(&a).await;

    // The second agent's store has never heard of `a`: to it, `a` is not a spec whose container
    // should go, because `a` is not its container.
    let second = InProcessAgent::embedded(&format!("second-{id}")).await;
    let b = format!("b-{id}");
    let spec = test_spec(&b, &namespace, &second.host, &cleanup, json!({"image": "kedge-test/app:v1"}));
    objects::apply_container(second.store.as_ref(), &spec, None).await.expect("apply");
    wait_ready(second.store.as_ref(), &namespace, &b, READY).await;

    // Events of `a` reach both agents; only the first acts on them.
    let output = docker_cli(&["restart", "-t", "1", &a]);
    assert!(output.status.success());
    wait_ready(first.store.as_ref(), &namespace, &a, READY).await;
    assert_eq!(identity(&a).await.0, a_before.0, "the second agent did not replace or remove a");
    second.stop().await.expect("stops");
    first.stop().await.expect("stops");
    assert_eq!(identity(&a).await.0, a_before.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_on_a_new_store_prunes_nothing_it_did_not_make() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let host = format!("host-{id}");
    let first = InProcessAgent::embedded(&host).await;
    let kept = format!("kept-{id}");
    let spec = test_spec(&kept, &namespace, &host, &cleanup, json!({"image": "kedge-test/app:v1"}));
    objects::apply_container(first.store.as_ref(), &spec, None).await.expect("apply");
    wait_ready(first.store.as_ref(), &namespace, &kept, READY).await;
    first.stop().await.expect("stops");
    let before = identity(&kept).await;

    // Same host name, a new empty store (a misconfigured --store): to this agent the container's spec
    // does not exist, but neither did it make the container, so it leaves it.
    let second = InProcessAgent::embedded(&host).await;
    let stats = second.stats.clone();
    eventually("the new agent to look at the container", READY, || async {
        let now = stats.snapshot();
        (now.reconciles >= 1 && now.in_flight == 0).then_some(())
    })
    .await;
    second.stop().await.expect("stops");
    assert_eq!(stats.snapshot().actions_of("Remove"), 0);
    assert_eq!(identity(&kept).await, before, "the container is still there, untouched");
}

/// The engine resolves a name it does not know as an ID prefix: asked for `3f`, it answers with the
/// container whose ID begins `3f`, or with an error when several do. A spec whose name is such a
/// prefix (`db`, `cafe`, `c19` are all hex) still gets its own container, and the containers whose
/// IDs it matched are left exactly as they were.
#[tokio::test(flavor = "multi_thread")]
async fn a_spec_named_like_the_start_of_foreign_ids_gets_its_own_container() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let label = format!("io.kedge.test={id}");
    // Foreign containers (created, not started) until two IDs share their first two characters.
    let mut foreign: Vec<String> = Vec::new();
    let ambiguous = loop {
        assert!(foreign.len() < 200, "no two of {} IDs share a two-character prefix", foreign.len());
        let output = docker_cli(&["create", "--label", &label, "kedge-test/app:v1"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let new = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if let Some(twin) = foreign.iter().find(|other| other[..2] == new[..2]) {
            let prefix = new[..2].to_owned();
            assert_ne!(twin, &new);
            foreign.push(new);
            break prefix;
        }
        foreign.push(new);
    };
    // One foreign ID's unique prefix, four characters long.
    let unique = foreign
        .iter()
        .map(|f| f[..4].to_owned())
        .find(|p| {
            !p.starts_with(&ambiguous) && foreign.iter().filter(|f| f.starts_with(p.as_str())).count() == 1
        })
        .expect("a four-character prefix only one ID has");
    let before: Vec<_> = futures::future::join_all(foreign.iter().map(|f| async move {
        let inspect = docker().await.inspect_container(f, None).await.expect("exists");
        (inspect.id.unwrap(), inspect.state.and_then(|s| s.status).map(|s| s.to_string()))
    }))
    .await;

    let agent = InProcessAgent::embedded(&format!("host-{id}")).await;
    for name in [&ambiguous, &unique] {
        let spec = test_spec(name, &namespace, &agent.host, &cleanup, json!({"image": "kedge-test/app:v1"}));
        objects::apply_container(agent.store.as_ref(), &spec, None).await.expect("apply");
    }
    for name in [&ambiguous, &unique] {
        wait_ready(agent.store.as_ref(), &namespace, name, READY).await;
        // An exact name comes before any ID prefix in the engine's lookup.
        let own = docker().await.inspect_container(name, None).await.expect("named");
        assert_eq!(own.name.as_deref(), Some(format!("/{name}").as_str()));
        assert!(!foreign.contains(own.id.as_ref().unwrap()), "{name} is a container of its own");
    }
    agent.stop().await.expect("the agent stops cleanly");
    let after: Vec<_> = futures::future::join_all(foreign.iter().map(|f| async move {
        let inspect = docker().await.inspect_container(f, None).await.expect("still exists");
        (inspect.id.unwrap(), inspect.state.and_then(|s| s.status).map(|s| s.to_string()))
    }))
    .await;
    assert_eq!(before, after, "every foreign container is still there, never started");
}
