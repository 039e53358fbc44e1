//! Hostile and careless input, end to end: the real `kedge` binary (agent and CLI) on an etcd of the
//! test's own. Nothing that enters through the API or sits in the store may stop the agent or the
//! scheduler's leader:
//!
//! - an undecodable spec put straight into etcd is listed as Invalid (`kedge get` exits 0) and blocks
//!   nothing: a new spec is placed and runs, also after the agent restarts;
//! - an upgrade with an absurd `timeoutSeconds` and a watch from an overflowing `resourceVersion` are
//!   refused naming the field, and the leader goes on placing specs afterwards;
//! - names and labels that collide with kedge's own are refused by `kedge validate` (exit 2), both
//!   errors of the file reported.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::api_support::{http_unix, kedge_command, stderr, stdout};
use crate::store_scale::AgentProcess;
use kedge_controller::store::{keys, EtcdOptions, EtcdStore, PutCondition, SharedStore};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup, TEST_LABEL};

fn store_url(cluster: &EtcdCluster) -> String {
    let endpoints: Vec<String> =
        cluster.endpoints().iter().map(|e| e.trim_start_matches("http://").to_owned()).collect();
    format!("etcd://{}", endpoints.join(","))
}

/// A spec with no placement: the scheduler's leader must place it (there is one host).
fn unplaced_spec(name: &str, run: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kedge.io/v1",
        "kind": "Container",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "image": "kedge-test/app:v1",
            "command": ["/bin/sh", "-c", "exec sleep 3600"],
            "labels": {TEST_LABEL: run},
        },
    })
}

fn apply(agent: &AgentProcess, dir: &Path, document: &serde_json::Value) {
    let name = document["metadata"]["name"].as_str().unwrap();
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec(document).unwrap()).unwrap();
    let applied = agent.kedge(&["apply", "-f", file.to_str().unwrap()]);
    assert!(applied.status.success(), "kedge apply {name}: {}", stderr(&applied));
}

async fn wait_running(name: &str) {
    eventually(&format!("{name} to be placed and run"), Duration::from_secs(30), || async {
        let running = docker_cli(&["inspect", "-f", "{{.State.Running}}", name]);
        (String::from_utf8_lossy(&running.stdout).trim() == "true").then_some(())
    })
    .await;
}

fn assert_listed_invalid(agent: &AgentProcess, poison: &str) {
    let listed = agent.kedge(&["get", "containers"]);
    assert!(
        listed.status.success(),
        "kedge get containers exits 0 beside a poison entry: {}",
        stderr(&listed)
    );
    let row = stdout(&listed).lines().find(|line| line.contains(poison)).map(str::to_owned);
    let row = row.unwrap_or_else(|| panic!("the poison entry is listed:\n{}", stdout(&listed)));
    assert!(row.contains("Invalid"), "the poison entry's row says Invalid: {row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_and_absurd_numbers_block_nothing() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let cluster = EtcdCluster::start(1).await;
    let store: SharedStore =
        Arc::new(EtcdStore::connect(EtcdOptions::new(cluster.endpoints())).await.expect("connect to etcd"));
    let host = format!("hostile-{run}");
    let work = std::env::temp_dir().join(format!("kedge-hostile-{run}"));
    std::fs::create_dir_all(&work).unwrap();

    // A spec a careless hand (or a newer kedge) wrote: `image` is a number.
    let poison = format!("poison-{run}");
    let undecodable = serde_json::json!({
        "apiVersion": "kedge.io/v1",
        "kind": "Container",
        "metadata": {"name": poison, "namespace": "default", "generation": 1},
        "spec": {"image": 42},
    });
    let key = keys::spec_key("default", &poison).unwrap();
    store
        .put(&key, serde_json::to_vec(&undecodable).unwrap(), PutCondition::Absent, 0)
        .await
        .expect("put poison");

    let agent = AgentProcess::start(&store_url(&cluster), &host, &work.join("state-1"));
    agent.wait_serving().await;
    assert_listed_invalid(&agent, &poison);

    let first = format!("first-{run}");
    apply(&agent, &work, &unplaced_spec(&first, &run));
    wait_running(&first).await;

    // Absurd numbers are refused naming the field.
    let socket = agent.state_dir.join("kedge.sock");
    let absurd = br#"{"version": "9.9.9", "timeoutSeconds": 18446744073709551615}"#;
    let reply = http_unix(&socket, "POST", "/api/v1/upgrades", Some(absurd)).await;
    assert!(
        matches!(reply.status, 400 | 422),
        "absurd timeout: {} {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    assert!(String::from_utf8_lossy(&reply.body).contains("timeoutSeconds"), "the error names the field");
    let reply =
        http_unix(&socket, "GET", "/api/v1/watch/containers?resourceVersion=9223372036854775807", None).await;
    assert_eq!(reply.status, 400, "overflowing resourceVersion: {}", String::from_utf8_lossy(&reply.body));
    assert!(String::from_utf8_lossy(&reply.body).contains("resourceVersion"), "the error names the field");

    // The leader still places, and the agent still runs, new specs.
    let second = format!("second-{run}");
    apply(&agent, &work, &unplaced_spec(&second, &run));
    wait_running(&second).await;

    // After a restart the agent reads the poison entry again and still blocks on nothing.
    drop(agent);
    let agent = AgentProcess::start(&store_url(&cluster), &host, &work.join("state-2"));
    agent.wait_serving().await;
    assert_listed_invalid(&agent, &poison);
    let third = format!("third-{run}");
    apply(&agent, &work, &unplaced_spec(&third, &run));
    wait_running(&third).await;
    let first_state = docker_cli(&["inspect", "-f", "{{.State.Running}}", &first]);
    assert_eq!(
        String::from_utf8_lossy(&first_state.stdout).trim(),
        "true",
        "the first spec's container still runs"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn names_and_labels_that_collide_with_kedges_own_are_refused_by_validate() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collide.yaml");
    std::fs::write(
        &file,
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: probe-kedge-old-abc\nspec:\n  image: kedge-test/app:v1\n  labels:\n    io.kedge.managed-by: me\n",
    )
    .unwrap();
    let output = kedge_command(dir.path()).args(["validate", "-f", file.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "validate refuses: {}", stderr(&output));
    let errors = format!("{}{}", stdout(&output), stderr(&output));
    assert!(errors.contains("-kedge-old-"), "the name's error is reported: {errors}");
    assert!(errors.contains("io.kedge.managed-by"), "the label's error is reported: {errors}");
}
