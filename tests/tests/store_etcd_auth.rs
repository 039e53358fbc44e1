//! etcd security for real: an etcd of each test's own that serves clients only over TLS, only to
//! clients holding a certificate of the test's CA (`--client-cert-auth`), with `auth enable`d and
//! simple tokens that etcd forgets after [`TOKEN_TTL_SECONDS`] of disuse (`--auth-token-ttl`).
//!
//! - The store works with a user, a password and TLS; a wrong password is refused as an
//!   authentication failure, and a client without a certificate is refused.
//! - After the token expired, and after etcd restarted (which forgets every simple token), reads,
//!   writes, leases and watches go on: the store authenticates again, and a watch opened before
//!   re-authenticates when it reconnects.
//! - A real `kedge agent` given the `--etcd-*` flags keeps reconciling across an etcd restart: a spec
//!   applied after the restart has its container started on the real engine.

use crate::api_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api_support::{kedge_bin, kedge_command, stderr, AgentGuard};
use etcd_client::{Certificate, ConnectOptions, Identity, Permission, TlsOptions};
use futures::StreamExt;
use kedge_controller::store::{
    EtcdOptions, EtcdStore, EtcdTls, EventKind, PutCondition, Store, StoreError, WatchStream,
};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::pki::{make_ca, make_leaf};
use kedge_tests::{docker_cli, eventually, run_id, test_spec, EngineCleanup, TestEnv};

/// etcd forgets a simple token unused for this long (etcd's default is 300 s).
const TOKEN_TTL_SECONDS: u64 = 3;
/// The user kedge authenticates as: read and write under `/kedge/`, nothing else.
const USER: &str = "kedge";
const PASSWORD: &str = "kedge-test-password";

/// A secured single-member etcd and the files a client needs to reach it.
struct SecuredEtcd {
    cluster: EtcdCluster,
    endpoint: String,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl SecuredEtcd {
    /// Starts the member with client TLS and short-lived simple tokens, creates `root` and [`USER`]
    /// (whose role may read and write `/kedge/`), and enables authentication.
    async fn start() -> SecuredEtcd {
        let dir = std::env::temp_dir().join(format!("kedge-etcd-auth-{}", run_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_pem, ca) = make_ca("kedge etcd test CA");
        let (server_pem, server_key) = make_leaf(&ca, &["localhost", "127.0.0.1"], false);
        // The client certificate's common name is no etcd user: it admits the connection and nothing
        // more (etcd would take a user's name from it when a request carries no token).
        let (client_pem, client_key) = make_leaf(&ca, &["kedge-test-client"], true);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca_file = write("ca.pem", &ca_pem);
        let server_file = write("server.pem", &server_pem);
        let server_key_file = write("server.key", &server_key);
        let client_cert = write("client.pem", &client_pem);
        let client_key = write("client.key", &client_key);
        let flags = [
            "--cert-file",
            server_file.to_str().unwrap(),
            "--key-file",
            server_key_file.to_str().unwrap(),
            "--trusted-ca-file",
            ca_file.to_str().unwrap(),
            "--client-cert-auth",
            "--auth-token",
            "simple",
            "--auth-token-ttl",
            &TOKEN_TTL_SECONDS.to_string(),
        ];
        let cluster = EtcdCluster::start_https_in(dir, flags.iter().map(|f| f.to_string()).collect());
        let endpoint = cluster.endpoints().remove(0);
        let secured = SecuredEtcd { cluster, endpoint, ca: ca_file, client_cert, client_key };

        let mut admin = secured.wait_answering(None).await;
        admin.user_add("root", "root-test-password", None).await.unwrap();
        admin.user_grant_role("root", "root").await.unwrap();
        admin.role_add("kedge").await.unwrap();
        admin.role_grant_permission("kedge", Permission::read_write("/kedge/").with_prefix()).await.unwrap();
        admin.user_add(USER, PASSWORD, None).await.unwrap();
        admin.user_grant_role(USER, "kedge").await.unwrap();
        admin.auth_enable().await.unwrap();
        secured
    }

    fn tls(&self, with_client_certificate: bool) -> EtcdTls {
        let read = |path: &Path| Some(std::fs::read(path).unwrap());
        EtcdTls {
            ca_pem: read(&self.ca),
            client_cert_pem: if with_client_certificate { read(&self.client_cert) } else { None },
            client_key_pem: if with_client_certificate { read(&self.client_key) } else { None },
            domain: None,
        }
    }

    fn options(&self, password: &str, with_client_certificate: bool) -> EtcdOptions {
        let mut options = EtcdOptions::new([self.endpoint.clone()]);
        options.user = Some((USER.to_owned(), password.to_owned()));
        options.tls = Some(self.tls(with_client_certificate));
        options.request_timeout = Duration::from_secs(3);
        options
    }

    async fn store(&self) -> EtcdStore {
        EtcdStore::connect(self.options(PASSWORD, true))
            .await
            .expect("the store connects with TLS and a password")
    }

    /// A raw etcd client over TLS with a client certificate, as `user` when given, without etcd-client's
    /// token refresh; polled until the member has a leader.
    async fn wait_answering(&self, user: Option<(&str, &str)>) -> etcd_client::Client {
        let read = |path: &Path| std::fs::read(path).unwrap();
        let tls = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)))
            .identity(Identity::from_pem(read(&self.client_cert), read(&self.client_key)));
        let mut options = ConnectOptions::new().with_tls(tls).with_timeout(Duration::from_secs(2));
        if let Some((name, password)) = user {
            options = options.with_user(name, password);
        }
        let endpoint = self.endpoint.clone();
        eventually("the secured etcd answers", Duration::from_secs(30), || {
            let (endpoint, options) = (endpoint.clone(), options.clone());
            async move {
                let mut client = etcd_client::Client::connect([endpoint], Some(options)).await.ok()?;
                let status = client.status().await.ok()?;
                (status.leader() != 0).then_some(client)
            }
        })
        .await
    }

    /// SIGKILLs the member and starts it again on the same data directory (which forgets every
    /// simple token), waiting until it answers.
    async fn restart(&mut self) {
        self.cluster.kill(0);
        self.cluster.spawn(0, "existing");
        self.wait_answering(Some((USER, PASSWORD))).await;
    }
}

/// The next event of `watch` (within 20 s), as (kind, key).
async fn next_event(watch: &mut WatchStream, what: &str) -> (EventKind, String) {
    match tokio::time::timeout(Duration::from_secs(20), watch.next()).await {
        Ok(Some(Ok(event))) => (event.kind, event.kv.key),
        Ok(Some(Err(error))) => panic!("{what}: the watch failed: {error}"),
        Ok(None) => panic!("{what}: the watch ended"),
        Err(_) => panic!("{what}: no event within 20 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_over_tls_with_a_password_across_token_expiry_and_an_etcd_restart() {
    let mut etcd = SecuredEtcd::start().await;
    let prefix = format!("/kedge/auth-{}/", run_id());
    let key = |name: &str| format!("{prefix}{name}");
    let store = etcd.store().await;
    // A second client with its own token writes what the first one's watches must see, so that the
    // watches re-authenticate by themselves, not because their store made some other request.
    let writer = etcd.store().await;

    let rev = store.put(&key("a"), b"1".to_vec(), PutCondition::Absent, 0).await.unwrap();
    assert_eq!(store.get(&key("a")).await.unwrap().expect("written").mod_revision, rev);
    let mut watch_before = store.watch(&prefix, rev + 1).await.unwrap();
    let rev = writer.put(&key("b"), b"1".to_vec(), PutCondition::Always, 0).await.unwrap();
    assert_eq!(next_event(&mut watch_before, "before expiry").await, (EventKind::Put, key("b")));

    // The role covers `/kedge/` only: outside it, a permission error, not an empty answer.
    match store.get("/elsewhere").await {
        Err(StoreError::Auth(message)) => assert!(message.contains("permission denied"), "{message}"),
        other => panic!("a key outside the user's role should be refused, got {other:?}"),
    }
    // A wrong password is refused as what it is, and says so.
    match EtcdStore::connect(etcd.options("not-the-password", true)).await {
        Err(error @ StoreError::Auth(_)) => {
            let message = error.to_string();
            assert!(message.contains("authentication failed"), "{message}");
        }
        Err(other) => panic!("a wrong password should be an authentication error, got {other}"),
        Ok(_) => panic!("a wrong password was accepted"),
    }
    // Without a client certificate the TLS handshake fails: nothing is served.
    let mut no_certificate = etcd.options(PASSWORD, false);
    no_certificate.request_timeout = Duration::from_secs(2);
    no_certificate.connect_timeout = Duration::from_secs(1);
    match EtcdStore::connect(no_certificate).await {
        Err(error) => assert!(!matches!(error, StoreError::Auth(_)), "not a password problem: {error}"),
        Ok(refused) => {
            let answer = refused.get(&key("a")).await;
            assert!(answer.is_err(), "a client without a certificate read {answer:?}");
        }
    }

    // Let every token go unused for longer than its TTL. The wait is the condition under test (etcd
    // checks tokens once a second), and a probe proves it: a token last used after the store's is
    // refused once the wait is over.
    let mut probe = etcd.wait_answering(Some((USER, PASSWORD))).await;
    probe.get(key("a"), None).await.expect("the probe's fresh token works");
    tokio::time::sleep(Duration::from_secs(TOKEN_TTL_SECONDS + 2)).await;
    match probe.get(key("a"), None).await {
        Err(etcd_client::Error::GRpcStatus(status)) => {
            assert!(status.message().contains("invalid auth token"), "{status:?}")
        }
        other => panic!("the probe's token should have expired, got {other:?}"),
    }
    // The store's first request after the expiry is a watch (etcd refuses it as a canceled watch, not
    // an error), then reads, writes and leases.
    let mut watch_after = store.watch(&prefix, rev + 1).await.expect("a watch after the token expired");
    writer.put(&key("c"), b"1".to_vec(), PutCondition::Always, 0).await.expect("a write after expiry");
    assert_eq!(next_event(&mut watch_after, "opened after expiry").await, (EventKind::Put, key("c")));
    assert_eq!(next_event(&mut watch_before, "opened before expiry").await, (EventKind::Put, key("c")));
    assert!(store.get(&key("c")).await.unwrap().is_some());
    let lease = store.lease_grant(10).await.expect("a lease after expiry");
    store.lease_keep_alive(lease).await.expect("a keep-alive after expiry");
    store.put(&key("leased"), b"1".to_vec(), PutCondition::Always, lease).await.unwrap();
    for watch in [&mut watch_before, &mut watch_after] {
        assert_eq!(next_event(watch, "a leased key").await, (EventKind::Put, key("leased")));
    }

    // etcd restarts and forgets every token. The watches reconnect and authenticate again by
    // themselves: the store makes no other request before their next event.
    let restarted = Instant::now();
    etcd.restart().await;
    eprintln!("etcd answered again {:?} after its restart began", restarted.elapsed());
    writer.put(&key("d"), b"1".to_vec(), PutCondition::Always, 0).await.expect("a write after the restart");
    assert_eq!(next_event(&mut watch_before, "across the restart").await, (EventKind::Put, key("d")));
    assert_eq!(next_event(&mut watch_after, "across the restart").await, (EventKind::Put, key("d")));
    let listed = store.list(&prefix).await.expect("a list after the restart");
    assert_eq!(listed.kvs.len(), 5, "a, b, c, leased, d");
    store.lease_keep_alive(lease).await.expect("a keep-alive after the restart");
    store.delete(&key("a"), kedge_controller::store::DeleteCondition::Always).await.unwrap();
    assert_eq!(next_event(&mut watch_after, "a delete").await, (EventKind::Delete, key("a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_the_etcd_flags_keeps_reconciling_across_an_etcd_restart() {
    let env = TestEnv::get();
    let run = run_id();
    let cleanup = EngineCleanup::new(&run);
    let mut etcd = SecuredEtcd::start().await;
    let host = format!("etcdauth-{run}");
    let work = tempfile::tempdir().unwrap();
    let password_file = work.path().join("etcd-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let state_dir = work.path().join("state");
    let log_file = work.path().join("agent.log");
    let store_url = format!("etcd://{}", etcd.endpoint.trim_start_matches("https://"));
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let child = Command::new(kedge_bin())
        .args(["agent", "--store", &store_url, "--state-dir", &path(&state_dir)])
        .args(["--listen", "127.0.0.1:0", "--host-name", &host])
        .args(["--etcd-ca", &path(&etcd.ca), "--etcd-cert", &path(&etcd.client_cert)])
        .args(["--etcd-key", &path(&etcd.client_key)])
        .args(["--etcd-user", USER, "--etcd-password-file", &path(&password_file)])
        .env("DOCKER_HOST", &env.docker_host)
        .env("KEDGE_LOG", "info,kedge_controller::store=debug")
        .env_remove("KEDGE_ETCD_PASSWORD")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .expect("kedge agent starts");
    let _agent = AgentGuard { child, state_dir: state_dir.clone(), keep_state: false };
    let socket = format!("unix://{}", state_dir.join("kedge.sock").display());
    let kedge = |args: &[&str]| {
        kedge_command(work.path()).env("KEDGE_SERVER", &socket).args(args).output().expect("kedge runs")
    };
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    eventually("the agent's API answers", Duration::from_secs(30), || async {
        kedge(&["version"]).status.success().then_some(())
    })
    .await;

    let apply_and_wait_running = |name: String| {
        let spec = test_spec(
            &name,
            "default",
            &host,
            &cleanup,
            serde_json::json!({"image": "kedge-test/app:v1", "command": ["/bin/sh", "-c", "exec sleep 3600"]}),
        );
        let file = work.path().join(format!("{name}.json"));
        std::fs::write(&file, serde_json::to_vec(&spec).unwrap()).unwrap();
        let applied = kedge(&["apply", "-f", file.to_str().unwrap()]);
        assert!(applied.status.success(), "apply {name}: {}\nagent log:\n{}", stderr(&applied), log());
        let started = Instant::now();
        async move {
            eventually(&format!("{name}'s container runs"), Duration::from_secs(20), || async {
                let running = docker_cli(&["inspect", "-f", "{{.State.Running}}", &name]);
                (String::from_utf8_lossy(&running.stdout).trim() == "true").then_some(())
            })
            .await;
            started.elapsed()
        }
    };
    let before = apply_and_wait_running(format!("etcdauth-before-{run}")).await;
    eprintln!("before the restart: the container ran {before:?} after its apply");

    // The agent's heartbeat (every 5 s) is rarer than the token's TTL (3 s): by now its token has
    // expired at least once. Then etcd restarts and forgets every token.
    etcd.restart().await;
    let after = apply_and_wait_running(format!("etcdauth-after-{run}")).await;
    eprintln!("after the restart: the container ran {after:?} after its apply");
    eventually("the host is ready after the restart", Duration::from_secs(15), || async {
        let hosts = kedge(&["get", "hosts"]);
        let table = String::from_utf8_lossy(&hosts.stdout).into_owned();
        table.lines().any(|line| line.split_whitespace().take(2).eq([host.as_str(), "True"])).then_some(())
    })
    .await;
    let log = log();
    assert!(!log.contains(PASSWORD), "the agent's log shows the etcd password");
}

/// A password file that cannot be read stops the agent before it starts, naming the file.
#[test]
fn an_unreadable_etcd_password_file_stops_the_agent_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-password");
    let output = Command::new(kedge_bin())
        .args(["agent", "--store", "etcd://127.0.0.1:1", "--listen", "127.0.0.1:0"])
        .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
        .args(["--etcd-user", USER, "--etcd-password-file", missing.to_str().unwrap()])
        .output()
        .expect("kedge agent runs");
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("no-such-password") && message.contains("--etcd-password-file"), "{message}");
}
