//! Scoped API tokens end to end (docs/access.md): two real `kedge agent` processes on one real etcd, and
//! the real `kedge` CLI. A token created through one agent works on the other (tokens live in the store,
//! hashed); a viewer reads and is refused a write (403, nothing stored); a deployer writes only in its
//! namespace; non-admins create no token and no upgrade; a revoked token and an expired one get 401, and
//! the expired one leaves `kedge token list` (its record was on a lease); no token's secret is in any
//! etcd key or value, nor in either agent's log.

use crate::api_support;

use std::path::Path;
use std::time::Duration;

use api_support::{http, kedge_command, stderr, stdout, AgentGuard, Reply};
use kedge_controller::store::keys;
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{eventually, run_id, EngineCleanup, TEST_LABEL};

const WAIT: Duration = Duration::from_secs(30);

/// A spec placed on a host that does not exist, so that no agent runs it.
fn spec(namespace: &str, name: &str, run: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "kedge.io/v1",
        "kind": "Container",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "image": "kedge-test/app:v1",
            "labels": {TEST_LABEL: run},
            "placement": {"host": format!("nowhere-{run}")},
        },
    }))
    .unwrap()
}

/// `kedge ARGS` against the agent at `address` with `token`.
fn kedge(dir: &Path, address: &str, token: &str, args: &[&str]) -> std::process::Output {
    kedge_command(dir)
        .env("KEDGE_SERVER", format!("http://{address}"))
        .env("KEDGE_TOKEN", token)
        .args(args)
        .output()
        .expect("kedge runs")
}

fn create_token(dir: &Path, address: &str, admin: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let created = kedge(dir, address, admin, &all);
    assert!(created.status.success(), "token create {args:?}: {}", stderr(&created));
    let token = stdout(&created).trim().to_owned();
    assert!(token.starts_with("kedge_") && !token.contains('\n'), "one token on stdout: {token}");
    token
}

fn id_of(token: &str) -> &str {
    token.trim_start_matches("kedge_").split('_').next().unwrap()
}

fn body(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_are_shared_by_a_fleet_checked_per_route_and_stored_hashed() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let cluster = EtcdCluster::start(1).await;
    let store = cluster.store().await;
    let url = crate::store_scale::store_url(&cluster);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut agent_a = AgentGuard::spawn(&dir.join("a"), &format!("access-a-{run}"), &["--store", &url]);
    let mut agent_b = AgentGuard::spawn(&dir.join("b"), &format!("access-b-{run}"), &["--store", &url]);
    let (a, b) = (agent_a.listening_address().await, agent_b.listening_address().await);
    let read_token = |agent: &AgentGuard| std::fs::read_to_string(agent.state_dir.join("api-token")).unwrap();
    let boot_a = read_token(&agent_a).trim().to_owned();
    let boot_b = read_token(&agent_b).trim().to_owned();
    let (ns_a, ns_b) = (format!("a-{run}"), format!("b-{run}"));

    // Bad input is refused before anything is sent (exit 2), naming the flag.
    let refused = kedge(dir, &a, &boot_a, &["token", "create", "--role", "deployer"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("--role deployer needs at least one --namespace"),
        "{}",
        stderr(&refused)
    );
    let refused = kedge(dir, &a, &boot_a, &["token", "create", "--role", "root"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));

    // Tokens created through agent A with A's bootstrap token.
    let viewer = create_token(dir, &a, &boot_a, &["--role", "viewer", "--description", "dashboards"]);
    let deployer = create_token(dir, &a, &boot_a, &["--role", "deployer", "--namespace", &ns_a]);
    let two = create_token(dir, &a, &boot_a, &["--role", "deployer", "-n", &format!("{ns_b},x-{run}")]);
    let admin = create_token(dir, &a, &boot_a, &["--role", "admin"]);
    let short = create_token(dir, &a, &boot_a, &["--role", "viewer", "--ttl", "3s"]);
    let secrets: Vec<String> = [&viewer, &deployer, &admin, &short, &two]
        .iter()
        .map(|token| token.rsplit('_').next().unwrap().to_owned())
        .collect();

    // A viewer reads through agent B, and is refused a write there: 403 naming its role, nothing stored.
    let list_a = format!("/api/v1/namespaces/{ns_a}/containers");
    let read = http(&b, "GET", &list_a, Some(&viewer), None).await;
    assert_eq!(read.status, 200, "{}", body(&read));
    let put_a = format!("/api/v1/namespaces/{ns_a}/containers/web");
    let write = http(&b, "PUT", &put_a, Some(&viewer), Some(&spec(&ns_a, "web", &run))).await;
    assert_eq!(write.status, 403, "{}", body(&write));
    let message = write.json()["error"].as_str().unwrap().to_owned();
    assert!(
        message.contains("role `viewer`") && message.contains(&format!("write in namespace `{ns_a}`")),
        "{message}"
    );
    let dry = format!("{put_a}?dryRun=All");
    assert_eq!(http(&b, "PUT", &dry, Some(&viewer), Some(&spec(&ns_a, "web", &run))).await.status, 403);
    assert!(store.list(keys::SPECS).await.unwrap().kvs.is_empty(), "a refused write was stored");

    // A deployer of `a` writes in `a` and is refused in `b`, through either agent.
    let written = http(&b, "PUT", &put_a, Some(&deployer), Some(&spec(&ns_a, "web", &run))).await;
    assert_eq!(written.status, 201, "{}", body(&written));
    let put_b = format!("/api/v1/namespaces/{ns_b}/containers/web");
    let refused = http(&a, "PUT", &put_b, Some(&deployer), Some(&spec(&ns_b, "web", &run))).await;
    assert_eq!(refused.status, 403, "{}", body(&refused));
    assert!(
        body(&refused).contains("role `deployer`") && body(&refused).contains(&ns_b),
        "{}",
        body(&refused)
    );
    let specs = store.list(keys::SPECS).await.unwrap();
    let stored: Vec<&str> = specs.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(stored, vec![keys::spec_key(&ns_a, "web").unwrap()], "only the allowed write is stored");
    // The CLI says who lacks what.
    let cli = kedge(dir, &b, &viewer, &["delete", "container", "web", "-n", &ns_a]);
    assert_eq!(cli.status.code(), Some(5), "{}", stderr(&cli));
    assert!(stderr(&cli).contains("role `viewer`"), "{}", stderr(&cli));
    let restart = format!("/api/v1/namespaces/{ns_b}/containers/web/restart");
    assert_eq!(http(&a, "POST", &restart, Some(&deployer), None).await.status, 403);
    // A shell in a container is a write: no viewer, no deployer outside its namespaces.
    let command = br#"{"command": ["id"]}"#;
    for (token, ns) in [(&viewer, &ns_a), (&deployer, &ns_b)] {
        let exec = format!("/api/v1/namespaces/{ns}/containers/web/exec");
        assert_eq!(http(&a, "POST", &exec, Some(token), Some(command)).await.status, 403, "{exec}");
    }

    // Neither a viewer nor a deployer creates tokens or upgrades, or lists tokens; an admin token does.
    let upgrade = br#"{"version": "v2", "selector": "nothing=here"}"#;
    for token in [&viewer, &deployer] {
        let asked = http(&b, "POST", "/api/v1/tokens", Some(token), Some(br#"{"role": "admin"}"#)).await;
        assert_eq!(asked.status, 403, "{}", body(&asked));
        assert!(body(&asked).contains("lacks admin"), "{}", body(&asked));
        assert_eq!(http(&b, "GET", "/api/v1/tokens", Some(token), None).await.status, 403);
        let asked = http(&a, "POST", "/api/v1/upgrades", Some(token), Some(upgrade)).await;
        assert_eq!(asked.status, 403, "{}", body(&asked));
    }
    assert!(
        store.list(keys::UPGRADE_CAMPAIGNS).await.unwrap().kvs.is_empty(),
        "a refused campaign was stored"
    );
    assert_eq!(store.list(keys::TOKENS).await.unwrap().kvs.len(), 5, "no token was added by a non-admin");
    let listed = kedge(dir, &b, &admin, &["token", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let table = stdout(&listed);
    assert!(table.starts_with("ID ") && table.contains("NAMESPACES") && table.contains("EXPIRES"), "{table}");
    let row =
        table.lines().find(|line| line.starts_with(id_of(&deployer))).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("deployer") && row.contains(&ns_a), "{table}");
    let row = table.lines().find(|line| line.starts_with(id_of(&two))).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(&format!("{ns_b},x-{run}")), "{table}");

    // Unknown and malformed tokens: 401.
    for token in ["kedge_0123456789abcdef_00", "not-a-token", &format!("{viewer}0")] {
        assert_eq!(http(&a, "GET", "/api/v1/hosts", Some(token), None).await.status, 401, "{token}");
    }

    // Revoked through agent B (with B's bootstrap token): agent A refuses it at once.
    let revoked = kedge(dir, &b, &boot_b, &["token", "revoke", id_of(&viewer)]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert_eq!(http(&a, "GET", "/api/v1/hosts", Some(&viewer), None).await.status, 401);
    let again = kedge(dir, &b, &boot_b, &["token", "revoke", id_of(&viewer)]);
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));

    // The short-lived token works, then gets 401, and its record leaves the store (its lease) and the list.
    let key = keys::token_key(id_of(&short)).unwrap();
    let kv = store.get(&key).await.unwrap().expect("the short token's record");
    assert_ne!(kv.lease, 0, "a token with a TTL is on a lease");
    eventually("the short-lived token expires", WAIT, || async {
        (http(&a, "GET", "/api/v1/hosts", Some(&short), None).await.status == 401).then_some(())
    })
    .await;
    eventually("the expired token's record disappears", WAIT, || async {
        store.get(&key).await.ok()?.is_none().then_some(())
    })
    .await;
    let listed = stdout(&kedge(dir, &a, &admin, &["token", "list", "-o", "json"]));
    let items: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let ids: Vec<&str> = items.iter().filter_map(|item| item["id"].as_str()).collect();
    assert_eq!(ids.len(), 3, "the deployers and the admin remain: {listed}");
    assert!(!ids.contains(&id_of(&short)) && !ids.contains(&id_of(&viewer)), "{listed}");
    assert!(!listed.contains("secret") && !listed.contains("Sha256"), "{listed}");

    // The bootstrap tokens still do everything.
    assert_eq!(http(&b, "GET", "/api/v1/tokens", Some(&boot_b), None).await.status, 200);

    // No secret in any etcd key or value (read with etcd-client, every key), nor in either agent's log.
    let mut etcd = etcd_client::Client::connect(cluster.endpoints(), None).await.unwrap();
    let all = etcd.get("", Some(etcd_client::GetOptions::new().with_all_keys())).await.unwrap();
    assert!(all.kvs().iter().any(|kv| kv.key_str().unwrap_or_default().starts_with(keys::TOKENS)));
    for kv in all.kvs() {
        let (key, value) = (String::from_utf8_lossy(kv.key()), String::from_utf8_lossy(kv.value()));
        for secret in &secrets {
            assert!(
                !key.contains(secret.as_str()) && !value.contains(secret.as_str()),
                "a secret in etcd at {key}"
            );
        }
    }
    for agent in [&agent_a, &agent_b] {
        let log = std::fs::read_to_string(agent.state_dir.join("agent.log")).unwrap();
        assert!(log.contains("API token created") || agent.state_dir.ends_with("b"), "the log is read");
        for secret in &secrets {
            assert!(!log.contains(secret.as_str()), "a secret in {}", agent.state_dir.display());
        }
    }
}
