//! Many hosts for real: Docker engines each in its own network namespace, real `kedge agent`
//! processes inside them reaching a three-member etcd over a hub bridge (kedge_tests::netns). Taking
//! a host's link down is a real partition.
//!
//! - `an_agent_in_a_namespace_reaches_etcd_and_runs_a_container`: the harness's smoke test.

use std::time::{Duration, Instant};

use kedge_controller::store::{keys, objects, SharedStore};
use kedge_tests::netns::{AgentOptions, Cluster};
use kedge_tests::{eventually, run_id, test_spec, wait_ready, EngineCleanup};
use serde_json::json;

const READY: Duration = Duration::from_secs(90);
const IMAGES: &[&str] = &["kedge-test/app:v1", "kedge-test/app:v2"];

/// The names of the running containers on a host's engine, from its own `docker ps`.
fn running_on(host: &kedge_tests::netns::NetnsHost) -> Vec<String> {
    let out = host.docker(&["ps", "--format", "{{.Names}}"]);
    assert!(out.status.success(), "docker ps on {}: {}", host.name, String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    names.sort();
    names
}

async fn wait_host_ready(store: &SharedStore, host: &str) {
    let alive = keys::host_lease_key(host).unwrap();
    eventually(&format!("host {host} ready"), READY, || async { store.get(&alive).await.ok()? }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_in_a_namespace_reaches_etcd_and_runs_a_container() {
    let started = Instant::now();
    let id = run_id();
    let cleanup = EngineCleanup::new(&id);
    let namespace = format!("t{id}");
    let mut cluster = Cluster::start(1, 1, &IMAGES[..1]).await;
    let store = cluster.store().await;
    let host = &mut cluster.hosts[0];
    host.start_agent(AgentOptions::default());
    wait_host_ready(&store, &host.name).await;

    let name = format!("smoke-{id}");
    let spec = test_spec(&name, &namespace, &host.name, &cleanup, json!({"image": "kedge-test/app:v1"}));
    objects::apply_container(store.as_ref(), &spec, None).await.unwrap();
    wait_ready(store.as_ref(), &namespace, &name, READY).await;
    assert_eq!(running_on(host), vec![name.clone()], "the container runs on the namespace's engine");
    let table = host.kedge(&["get", "containers", "-n", &namespace, "-o", "wide"]);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    let table = String::from_utf8_lossy(&table.stdout);
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(&host.name), "the row names the host: {table}");

    eprintln!("netns smoke test: {:?}", started.elapsed());
}
