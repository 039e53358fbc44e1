//! Agent upgrades move an agent only within the image repository it runs, or to one the fleet allows
//! (`kedge agent --upgrade-repository`): the API refuses a campaign to any other repository (403,
//! `RepositoryNotAllowed`, nothing stored), and an agent refuses a request written straight to the
//! store (it reports `Failed` and an `UpgradeRefused` event, pulls nothing and leaves its container
//! as it is). Against the real `kedge agent` binary on an etcd of the test's own and the test engine.

use std::time::Duration;

use crate::api_support::http_unix;
use crate::store_scale::{store_url, AgentProcess};
use crate::upgrade_cancel::fake_host_running;
use kedge_controller::store::{keys, PutCondition};
use kedge_controller::upgrade::{HostUpgrade, HostUpgradeState};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup, TEST_LABEL};

const WAIT: Duration = Duration::from_secs(30);
const ALLOWED: &str = "registry.example:5000/kedge";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_and_requests_to_a_foreign_repository_are_refused_by_the_api_and_the_agent() {
    let run = run_id();
    let cleanup = EngineCleanup::new(&run);
    let cluster = EtcdCluster::start(1).await;
    let store = cluster.store().await;
    // The container the agent takes for its own (`KEDGE_CONTAINER`), as if it ran in it.
    let own = format!("kedge-own-{run}");
    let label = format!("{TEST_LABEL}={}", cleanup.run_id);
    let started = docker_cli(&["run", "-d", "--name", &own, "--label", &label, "kedge-test/app:v1"]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let own_id = String::from_utf8_lossy(&started.stdout).trim().to_owned();

    let work = tempfile::tempdir().unwrap();
    let host = format!("repo-{run}");
    let agent = AgentProcess::start_with_env(
        &store_url(&cluster),
        &host,
        &work.path().join("state"),
        &[("KEDGE_CONTAINER", own.as_str()), ("KEDGE_UPGRADE_REPOSITORIES", ALLOWED)],
    );
    agent.wait_serving().await;
    let socket = agent.state_dir.join("kedge.sock");

    // The API: a campaign to a repository neither the hosts run nor the fleet allows is refused, and
    // nothing is stored.
    let lease = store.lease_grant(120).await.unwrap();
    let fake = format!("fake-{run}");
    fake_host_running(&store, &fake, &fake, "v1", "ghcr.io/kedge/kedge:v1", lease).await;
    let ask = |image: &str| {
        serde_json::to_vec(&serde_json::json!({
            "version": "v2", "image": image, "selector": format!("fleet={fake}"), "timeoutSeconds": 60,
        }))
        .unwrap()
    };
    let refused = http_unix(&socket, "POST", "/api/v1/upgrades", Some(&ask("evil.example/kedge"))).await;
    assert_eq!(refused.status, 403, "{}", String::from_utf8_lossy(&refused.body));
    let body = refused.json();
    assert_eq!(body["reason"], "RepositoryNotAllowed", "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains(&fake) && message.contains("evil.example/kedge"), "{message}");
    assert!(message.contains("--upgrade-repository"), "says how to allow one: {message}");
    let campaigns = store.list(keys::UPGRADE_CAMPAIGNS).await.unwrap();
    assert!(campaigns.kvs.is_empty(), "a refused campaign was stored");
    // The CLI says so too, with the server's message.
    let selector = format!("fleet={fake}");
    let cli = agent.kedge(&[
        "upgrade",
        "agents",
        "--version",
        "v2",
        "--image",
        "evil.example/kedge",
        "-l",
        &selector,
    ]);
    assert_eq!(
        cli.status.code(),
        Some(5),
        "a refusal is the server's answer: {}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains("not allowed"),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    // The allowed repository is accepted.
    let accepted = http_unix(&socket, "POST", "/api/v1/upgrades", Some(&ask(ALLOWED))).await;
    assert_eq!(accepted.status, 201, "{}", String::from_utf8_lossy(&accepted.body));

    // The agent: a request written straight to the store, to a foreign repository, is refused before
    // anything is pulled (a pull of this name would fail with another message) or changed.
    let request_key = keys::host_upgrade_key(&host).unwrap();
    let request = HostUpgrade {
        campaign: format!("direct-{run}"),
        version: "v2".to_owned(),
        image: "evil.example/kedge:v2".to_owned(),
        timeout_seconds: 60,
        state: HostUpgradeState::Requested,
        message: String::new(),
        requested_at: "2026-12-05T00:00:00Z".to_owned(),
        finished_at: None,
        helper: None,
        old_container_id: None,
        new_container_id: None,
        duration_seconds: None,
    };
    store.put(&request_key, serde_json::to_vec(&request).unwrap(), PutCondition::Always, 0).await.unwrap();
    let answered = eventually("the agent answers the request", WAIT, || async {
        let kv = store.get(&request_key).await.ok()??;
        let upgrade: HostUpgrade = serde_json::from_slice(&kv.value).ok()?;
        (upgrade.state != HostUpgradeState::Requested).then_some(upgrade)
    })
    .await;
    assert_eq!(answered.state, HostUpgradeState::Failed, "{answered:?}");
    assert!(answered.message.contains("is not allowed for agent upgrades"), "{}", answered.message);
    assert!(answered.helper.is_none(), "a helper was named: {answered:?}");
    let events = store.list(keys::EVENTS).await.unwrap();
    assert!(
        events.kvs.iter().any(|kv| {
            let text = String::from_utf8_lossy(&kv.value);
            text.contains("UpgradeRefused") && text.contains(&host)
        }),
        "no UpgradeRefused event for {host}"
    );
    let inspect = docker_cli(&["inspect", "-f", "{{.Id}} {{.State.Running}}", &own]);
    assert_eq!(
        String::from_utf8_lossy(&inspect.stdout).trim(),
        format!("{own_id} true"),
        "the container was touched"
    );
    let helpers = docker_cli(&["ps", "-aq", "--filter", &format!("label=io.kedge.upgrade-helper={host}")]);
    assert!(String::from_utf8_lossy(&helpers.stdout).trim().is_empty(), "a helper was started");
    let _ = store.lease_revoke(lease).await;
}
