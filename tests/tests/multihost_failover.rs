//! Failover: host A (its own Docker engine) runs three unplaced specs; A's agent stops. Once A has
//! been NotReady for the grace period, the scheduler rebinds the specs to B, whose agent runs them.
//! A's containers stay on A's engine while A is away; when A's agent returns it removes exactly its
//! own, now unbound, containers and leaves foreign ones alone.

use std::time::{Duration, Instant};

use kedge_controller::docker::labels;
use kedge_controller::store::{keys, objects};
use kedge_tests::engine::PrivateEngine;
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker, eventually, test_spec, wait_ready, InProcessAgent, TestScope};
use serde_json::json;

const READY: Duration = Duration::from_secs(120);
const GRACE: Duration = Duration::from_secs(3);

/// `name host-label` of every container on the engine at `docker_host`.
fn containers_on(docker_host: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}} {{.Label \"io.kedge.host\"}}"])
        .env("DOCKER_HOST", docker_host)
        .output()
        .expect("the docker CLI");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_hosts_specs_move_after_the_grace_period_and_it_cleans_up_on_return() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let engine_a = PrivateEngine::start(&["kedge-test/app:v1"]).await;
    let etcd = EtcdCluster::start(1).await;
    let store = etcd.store().await;
    let (host_a, host_b) = (format!("a-{id}"), format!("b-{id}"));
    let configure = |config: &mut kedge_controller::agent::AgentConfig| {
        config.scheduler_grace = GRACE;
        config.conflict_poll = Duration::from_secs(1);
    };
    let agent_a =
        InProcessAgent::start_with(store.clone(), &host_a, None, Some(&engine_a.host), configure).await;
    let alive_a = keys::host_lease_key(&host_a).unwrap();
    eventually("host A ready", READY, || async { store.get(&alive_a).await.ok()? }).await;

    // A is the only host: everything unplaced is bound to it.
    let names: Vec<String> = (0..3).map(|i| format!("fo{i}-{id}")).collect();
    for name in &names {
        let mut spec = test_spec(name, &namespace, "unused", &cleanup, json!({"image": "kedge-test/app:v1"}));
        spec.spec.placement = None;
        objects::apply_container(store.as_ref(), &spec, None).await.unwrap();
    }
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
        let (status, _) = objects::get_status(store.as_ref(), &namespace, name).await.unwrap().unwrap();
        assert_eq!(status.host.as_deref(), Some(host_a.as_str()));
    }
    let ours: Vec<String> = names.iter().map(|name| format!("{name} {host_a}")).collect();
    // Two foreign containers on A's engine: an unmanaged one, and one of another host.
    let foreign = [
        std::process::Command::new("docker")
            .args(["create", "--name", &format!("plain-{id}"), "kedge-test/app:v1"])
            .env("DOCKER_HOST", &engine_a.host)
            .output()
            .unwrap(),
        std::process::Command::new("docker")
            .args(["create", "--name", &format!("other-{id}")])
            .args(["--label", &format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE)])
            .args(["--label", &format!("{}=elsewhere-{id}", labels::HOST)])
            .args(["--label", &format!("{}={namespace}/{}", labels::KEY, names[0])])
            .arg("kedge-test/app:v1")
            .env("DOCKER_HOST", &engine_a.host)
            .output()
            .unwrap(),
    ];
    for out in &foreign {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    let agent_b = InProcessAgent::start_with(store.clone(), &host_b, None, None, configure).await;
    let alive_b = keys::host_lease_key(&host_b).unwrap();
    eventually("host B ready", READY, || async { store.get(&alive_b).await.ok()? }).await;

    // A goes away (its liveness key with it); its containers stay on its engine.
    agent_a.stop().await.expect("A stops");
    let stopped = Instant::now();
    let shared = docker().await;
    for name in &names {
        let (store, namespace, host_b, shared) = (&store, &namespace, &host_b, &shared);
        eventually(&format!("{name} to run on B"), READY, || async move {
            let (status, _) = objects::get_status(store.as_ref(), namespace, name).await.ok()??;
            let inspect = shared.inspect_container(name, None).await.ok()?;
            let on_b = inspect.config?.labels?.get(labels::HOST) == Some(host_b);
            (status.host.as_deref() == Some(host_b.as_str()) && on_b && inspect.state?.running?).then_some(())
        })
        .await;
    }
    let failover = stopped.elapsed();
    eprintln!("failover: all specs running on B {failover:?} after A stopped (grace {GRACE:?})");
    assert!(failover >= GRACE, "nothing moved before the grace period ended ({failover:?})");
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
    }
    let on_a = containers_on(&engine_a.host);
    for container in &ours {
        assert!(on_a.contains(container), "A's containers stay while A is away: {on_a:?}");
    }

    // A returns: it removes its own containers, whose specs are bound to B now, and nothing else.
    let agent_a =
        InProcessAgent::start_with(store.clone(), &host_a, None, Some(&engine_a.host), configure).await;
    let expected = vec![format!("other-{id} elsewhere-{id}"), format!("plain-{id} ")];
    eventually("A to remove its unbound containers", READY, || async {
        (containers_on(&engine_a.host) == expected).then_some(())
    })
    .await;
    for name in &names {
        let (status, _) = objects::get_status(store.as_ref(), &namespace, name).await.unwrap().unwrap();
        assert_eq!(status.host.as_deref(), Some(host_b.as_str()), "{name} stays on B");
    }
    agent_a.stop().await.expect("A stops");
    agent_b.stop().await.expect("B stops");
}
