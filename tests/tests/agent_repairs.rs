//! A running agent repairs drift made by hand with the docker CLI, without being restarted:
//! a kill, a stop, a removal, a network disconnect and a memory change. In-place repairs keep the
//! container ID.

use std::time::Duration;

use kedge_controller::store::objects;
use kedge_tests::{
    docker, docker_cli, eventually, test_spec, wait_ready, EngineCleanup, InProcessAgent, TestScope,
};
use serde_json::json;

const READY: Duration = Duration::from_secs(60);

async fn container_id(name: &str) -> String {
    docker().await.inspect_container(name, None).await.expect("inspect").id.expect("an ID")
}

fn cli_ok(args: &[&str]) {
    let output = docker_cli(args);
    assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A test's own agent on the embedded store, with the spec `<prefix>-<run id>` made of `spec`
/// applied to it. Answers the scope (keep it: its cleanup removes the container), the agent and the
/// spec's name.
async fn applied_on_own_agent(prefix: &str, spec: serde_json::Value) -> (TestScope, InProcessAgent, String) {
    let scope = TestScope::new();
    let agent = InProcessAgent::embedded(&format!("host-{}", scope.id)).await;
    let name = format!("{prefix}-{}", scope.id);
    let spec = test_spec(&name, &scope.namespace, &agent.host, &scope.cleanup, spec);
    objects::apply_container(agent.store.as_ref(), &spec, None).await.expect("apply");
    (scope, agent, name)
}

/// Waits until the agent is idle: nothing in flight, and no reconcile for half a second. Answers its
/// counts then.
async fn wait_quiet(agent: &InProcessAgent) -> kedge_controller::agent::StatsSnapshot {
    eventually("the agent to go quiet", READY, || async {
        let before = agent.stats.snapshot();
        tokio::time::sleep(Duration::from_millis(500)).await; // The window the count must hold still in.
        let after = agent.stats.snapshot();
        (before == after && after.in_flight == 0).then_some(after)
    })
    .await
}

async fn wait_running_with(
    name: &str,
    what: &str,
    check: impl Fn(&bollard::models::ContainerInspectResponse) -> bool,
) {
    let docker = docker().await;
    eventually(what, READY, || async {
        let inspect = docker.inspect_container(name, None).await.ok()?;
        let running = inspect.state.as_ref()?.running?;
        (running && check(&inspect)).then_some(())
    })
    .await
}

async fn repairs_drift(agent: InProcessAgent, id: &str, cleanup: &EngineCleanup) {
    let namespace = format!("t{id}");
    let network = format!("net-{id}");
    cli_ok(&["network", "create", "--label", &format!("io.kedge.test={id}"), &network]);

    let limited = format!("limited-{id}");
    let web = format!("web-{id}");
    let plain = format!("plain-{id}");
    let specs = [
        test_spec(
            &limited,
            &namespace,
            &agent.host,
            cleanup,
            json!({
                "image": "kedge-test/app:v1",
                "resources": {"memory": "64Mi"},
                "networks": [{"name": network, "aliases": ["limited"]}],
            }),
        ),
        test_spec(&web, &namespace, &agent.host, cleanup, json!({"image": "kedge-test/web:latest"})),
        test_spec(&plain, &namespace, &agent.host, cleanup, json!({"image": "kedge-test/app:v1"})),
    ];
    for spec in &specs {
        objects::apply_container(agent.store.as_ref(), spec, None).await.expect("apply");
    }
    for spec in &specs {
        wait_ready(agent.store.as_ref(), &namespace, &spec.metadata.name, READY).await;
    }

    // Killed: started again, same container.
    let before = container_id(&limited).await;
    cli_ok(&["kill", &limited]);
    wait_running_with(&limited, "the killed container to run again", |_| true).await;
    assert_eq!(container_id(&limited).await, before, "a killed container is restarted, not replaced");

    // Stopped by hand: started again, same container.
    let before = container_id(&plain).await;
    cli_ok(&["stop", "-t", "1", &plain]);
    wait_running_with(&plain, "the stopped container to run again", |_| true).await;
    assert_eq!(container_id(&plain).await, before);

    // Removed: a new container takes its place.
    let before = container_id(&web).await;
    cli_ok(&["rm", "-f", &web]);
    wait_running_with(&web, "the removed container to be created again", |_| true).await;
    assert_ne!(container_id(&web).await, before);

    // Network disconnected: reconnected in place, with its alias.
    let before = container_id(&limited).await;
    cli_ok(&["network", "disconnect", &network, &limited]);
    wait_running_with(&limited, "the network to be reconnected", |inspect| {
        let networks = inspect.network_settings.as_ref().and_then(|s| s.networks.as_ref());
        networks
            .and_then(|n| n.get(&network))
            .and_then(|n| n.aliases.as_ref())
            .is_some_and(|a| a.contains(&"limited".to_owned()))
    })
    .await;
    assert_eq!(container_id(&limited).await, before, "reconnecting a network keeps the container");

    // Memory changed by hand: set back in place.
    cli_ok(&["update", "--memory", "128m", "--memory-swap", "256m", &limited]);
    wait_running_with(&limited, "the memory limit to be set back to 64Mi", |inspect| {
        inspect.host_config.as_ref().and_then(|h| h.memory) == Some(64 * 1024 * 1024)
    })
    .await;
    assert_eq!(container_id(&limited).await, before, "a limit is repaired in place");

    agent.stop().await.expect("the agent stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn repairs_drift_made_by_hand_on_the_embedded_store() {
    let TestScope { id, cleanup, .. } = TestScope::new();
    let agent = InProcessAgent::embedded(&format!("host-{id}")).await;
    repairs_drift(agent, &id, &cleanup).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn repairs_drift_made_by_hand_on_etcd() {
    let TestScope { id, cleanup, .. } = TestScope::new();
    let agent = InProcessAgent::etcd(&format!("host-{id}")).await;
    repairs_drift(agent, &id, &cleanup).await;
}

/// A limit the engine accepts but does not apply (blkioWeight without kernel support, as on this
/// machine's engine) must not start an update loop: it is either applied, or reported once as
/// LimitNotApplied and left alone, while other limits are still repaired in place.
#[tokio::test(flavor = "multi_thread")]
async fn a_limit_the_engine_ignores_is_reported_not_retried_for_ever() {
    let spec = json!({"image": "kedge-test/app:v1", "resources": {"memory": "64Mi", "blkioWeight": 300}});
    let (scope, agent, name) = applied_on_own_agent("blkio", spec).await;
    let namespace = &scope.namespace;
    let applied = eventually("the blkio weight to be applied or reported", READY, || async {
        let inspect = docker().await.inspect_container(&name, None).await.ok()?;
        if inspect.host_config.as_ref()?.blkio_weight == Some(300) {
            return Some(true);
        }
        let synced = kedge_tests::condition(agent.store.as_ref(), namespace, &name, "Synced").await?;
        (synced.reason == "LimitNotApplied").then_some(false)
    })
    .await;
    if !applied {
        let synced = kedge_tests::condition(agent.store.as_ref(), namespace, &name, "Synced").await.unwrap();
        assert!(synced.message.contains("blkioWeight=300"), "{synced:?}");
    }

    // A hand edit of another limit is still repaired in place.
    cli_ok(&["update", "--memory", "96m", "--memory-swap", "192m", &name]);
    wait_running_with(&name, "the memory limit to be set back", |inspect| {
        inspect.host_config.as_ref().and_then(|h| h.memory) == Some(64 * 1024 * 1024)
    })
    .await;

    // And then the agent goes quiet: no reconcile keeps waking the next.
    let quiet = wait_quiet(&agent).await;
    assert!(quiet.actions_of("UpdateInPlace") <= 3, "no update loop: {quiet:?}");
    agent.stop().await.expect("stops");
}

/// `healthcheck.startInterval` needs Engine API 1.44: on such an engine (the compatibility pass's
/// Engine 26) it is sent and the container keeps it; on an older one (20.10) the container is made
/// without it and a FieldNotSupported Warning names the field and the engine's API version. Either
/// way the spec converges and stays put (no recreate loop over the field the engine lacks).
#[tokio::test(flavor = "multi_thread")]
async fn a_health_start_interval_is_sent_where_the_engine_has_it_and_reported_where_not() {
    let spec = json!({
        "image": "kedge-test/app:v1",
        "healthcheck": {"test": "true", "interval": "2s", "startPeriod": "5s", "startInterval": "300ms"},
    });
    let (scope, agent, name) = applied_on_own_agent("startint", spec).await;
    let namespace = &scope.namespace;
    wait_ready(agent.store.as_ref(), namespace, &name, READY).await;

    let engine = docker().await;
    let api = engine.client_version().to_string();
    let has_it = api.strip_prefix("1.").and_then(|minor| minor.parse::<u32>().ok()).is_some_and(|m| m >= 44);
    let inspect = engine.inspect_container(&name, None).await.expect("inspect");
    let first_id = inspect.id.clone().expect("an ID");
    let start_interval =
        inspect.config.and_then(|config| config.healthcheck).and_then(|check| check.start_interval);
    let events =
        kedge_controller::events::list_events(agent.store.as_ref(), Some(namespace)).await.expect("events");
    let warned: Vec<_> = events.iter().filter(|event| event.reason == "FieldNotSupported").collect();
    if has_it {
        assert_eq!(start_interval, Some(300_000_000), "API {api} keeps startInterval");
        assert!(warned.is_empty(), "no warning on API {api}: {warned:?}");
    } else {
        assert!(start_interval.unwrap_or(0) == 0, "API {api} has no startInterval: {start_interval:?}");
        let warning = warned.first().unwrap_or_else(|| panic!("a FieldNotSupported warning on API {api}"));
        assert!(
            warning.message.contains("spec.healthcheck.startInterval") && warning.message.contains(&api),
            "{}",
            warning.message
        );
    }

    // Converged for good: the container is not replaced over the field.
    wait_quiet(&agent).await;
    let after = engine.inspect_container(&name, None).await.expect("inspect").id;
    assert_eq!(after.as_deref(), Some(first_id.as_str()), "the same container");
    agent.stop().await.expect("stops");
}
