//! Cancelling an agent upgrade campaign (docs/upgrades.md), against the real `kedge agent` binary
//! leading the scheduler on an etcd of the test's own. The three hosts being upgraded are records
//! the test writes itself (a host record that says its agent runs in a container, and a liveness
//! key on a lease), and the test answers for them as their agents would: so the campaign's driver,
//! the API and the CLI are the real ones, while no agent image needs building.
//!
//! `kedge upgrade cancel ID --wait` while the first host is in flight: that host finishes, no other
//! host is asked, and the campaign ends `Cancelled` (exit 0). Cancelling it again gives 409 and exit
//! code 4; an unknown campaign 404 and exit code 3.

use std::process::Stdio;
use std::time::Duration;

use crate::api_support::{http_unix, kedge_command, stderr};
use crate::store_scale::store_url;
use crate::store_scale::AgentProcess;
use kedge_controller::agent::host::{AgentContainer, HostRecord};
use kedge_controller::store::{keys, PutCondition, SharedStore};
use kedge_controller::upgrade::{HostUpgrade, HostUpgradeState};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{eventually, run_id};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Writes `host`'s record (its agent in a container, at `version`) and, on `lease`, its liveness key.
async fn fake_host(store: &SharedStore, host: &str, fleet: &str, version: &str, lease: i64) {
    fake_host_running(store, host, fleet, version, &format!("kedge-test/kedge:{version}"), lease).await
}

/// [`fake_host`] with the agent's container on `image`; its label `fleet` is `fleet`.
pub(crate) async fn fake_host_running(
    store: &SharedStore,
    host: &str,
    fleet: &str,
    version: &str,
    image: &str,
    lease: i64,
) {
    let record = HostRecord {
        name: host.to_owned(),
        labels: [("fleet".to_owned(), fleet.to_owned())].into(),
        version: version.to_owned(),
        docker_version: "27.0".to_owned(),
        cpus: 1,
        memory_bytes: 1 << 30,
        started_at: "2026-12-05T00:00:00Z".to_owned(),
        last_heartbeat: "2026-12-05T00:00:00Z".to_owned(),
        container: Some(AgentContainer {
            id: format!("{host}-id"),
            name: format!("kedge-{host}"),
            image: image.to_owned(),
            image_id: "sha256:0".to_owned(),
        }),
    };
    let key = keys::host_key(host).unwrap();
    store.put(&key, serde_json::to_vec(&record).unwrap(), PutCondition::Always, 0).await.unwrap();
    let alive = keys::host_lease_key(host).unwrap();
    store.put(&alive, b"alive".to_vec(), PutCondition::Always, lease).await.unwrap();
}

async fn campaign(agent: &AgentProcess, id: &str) -> Value {
    let reply =
        http_unix(&agent.state_dir.join("kedge.sock"), "GET", &format!("/api/v1/upgrades/{id}"), None).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

fn host_states(campaign: &Value) -> Vec<String> {
    campaign["hosts"].as_array().unwrap().iter().map(|h| h["state"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_campaign_asks_no_further_host_and_ends_cancelled() {
    let run = run_id();
    let cluster = EtcdCluster::start(1).await;
    let store = cluster.store().await;
    let work = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(&store_url(&cluster), &format!("lead-{run}"), &work.path().join("state"));
    agent.wait_serving().await;
    eventually("the agent leads the scheduler", WAIT, || async {
        store.get(keys::SCHEDULER_LEADER).await.ok()?
    })
    .await;

    let fleet = format!("f{run}");
    let hosts: Vec<String> = (1..=3).map(|n| format!("h{n}-{run}")).collect();
    let lease = store.lease_grant(120).await.unwrap();
    for host in &hosts {
        fake_host(&store, host, &fleet, "v1", lease).await;
    }
    let socket = agent.state_dir.join("kedge.sock");
    let request =
        serde_json::json!({"version": "v2", "selector": format!("fleet={fleet}"), "timeoutSeconds": 60});
    let reply =
        http_unix(&socket, "POST", "/api/v1/upgrades", Some(&serde_json::to_vec(&request).unwrap())).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let id = reply.json()["id"].as_str().unwrap().to_owned();

    // The leader asks the first host.
    let first_request = keys::host_upgrade_key(&hosts[0]).unwrap();
    eventually("the first host is asked", WAIT, || async { store.get(&first_request).await.ok()? }).await;
    assert_eq!(host_states(&campaign(&agent, &id).await), ["Upgrading", "Pending", "Pending"]);

    // Cancel while it is in flight, and wait for the end.
    let socket_url = format!("unix://{}", socket.display());
    let cancel = kedge_command(work.path())
        .env("KEDGE_SERVER", &socket_url)
        .args(["upgrade", "cancel", &id, "--wait", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kedge runs");
    eventually("the cancel is recorded", WAIT, || async {
        let campaign = campaign(&agent, &id).await;
        campaign["cancelRequestedAt"].is_string().then_some(())
    })
    .await;
    let standing = campaign(&agent, &id).await;
    assert_eq!(standing["state"], "Running", "the host in flight is waited for: {standing}");
    let listed = agent.kedge(&["get", "upgrades"]);
    let row = crate::api_support::stdout(&listed);
    assert!(row.lines().any(|line| line.contains(&id) && line.contains("Cancelling")), "{row}");

    // The first host's agent reports success, as the new agent would.
    let kv = store.get(&first_request).await.unwrap().unwrap();
    let mut upgrade: HostUpgrade = serde_json::from_slice(&kv.value).unwrap();
    upgrade.state = HostUpgradeState::Succeeded;
    upgrade.message = "upgraded".to_owned();
    store
        .put(
            &first_request,
            serde_json::to_vec(&upgrade).unwrap(),
            PutCondition::ModRevision(kv.mod_revision),
            0,
        )
        .await
        .unwrap();
    fake_host(&store, &hosts[0], &fleet, "v2", lease).await;

    let ended = eventually("the campaign ends", WAIT, || async {
        let campaign = campaign(&agent, &id).await;
        (campaign["state"] != "Running").then_some(campaign)
    })
    .await;
    assert_eq!(ended["state"], "Cancelled", "{ended}");
    assert_eq!(host_states(&ended), ["Succeeded", "Skipped", "Skipped"]);
    assert_eq!(ended["message"], "cancelled: 1 of 3 hosts upgraded to v2");
    for host in &hosts[1..] {
        let request = store.get(&keys::host_upgrade_key(host).unwrap()).await.unwrap();
        assert!(request.is_none(), "{host} was never asked");
    }
    let output = tokio::task::spawn_blocking(move || cancel.wait_with_output()).await.unwrap().unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "cancel --wait: {printed}{}", stderr(&output));
    assert!(printed.contains(&hosts[0]), "names the host in flight: {printed}");
    assert!(printed.contains("Cancelled"), "{printed}");

    // A finished campaign cannot be cancelled; an unknown one is not found.
    let again = http_unix(&socket, "POST", &format!("/api/v1/upgrades/{id}/cancel"), None).await;
    assert_eq!(again.status, 409, "{}", String::from_utf8_lossy(&again.body));
    let again = agent.kedge(&["upgrade", "cancel", &id]);
    assert_eq!(again.status.code(), Some(4), "{}", stderr(&again));
    assert!(stderr(&again).contains("already finished"), "{}", stderr(&again));
    let unknown = agent.kedge(&["upgrade", "cancel", "20260101-000000-zzzz"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));
    let _ = store.lease_revoke(lease).await;
}
