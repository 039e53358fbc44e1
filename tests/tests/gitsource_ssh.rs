//! GitSource over ssh:// against a real OpenSSH server: `/usr/sbin/sshd` started by the test in the
//! foreground on a free loopback port, with a host key made for the run, an `authorized_keys` of a
//! client key made for the run, and a bare repository. A source whose `knownHosts` lists another
//! key for the server applies nothing and says `HostKeyRejected` (and sshd never sees a login); one
//! with a client key the server does not know says `AuthenticationFailed`; the right pair applies
//! the specs, and a push after them. The private key is never shown back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::api_support::{stdout, unique, TestServer};
use crate::gitsource::{assert_exit, container, env_of, read_status, ready, wait_applied, Repo};
use kedge_controller::store::api::Api;
use kedge_controller::store::objects;
use kedge_crds::{ConditionStatus, Container};
use kedge_tests::{eventually, run_id, EngineCleanup, InProcessAgent};

/// An sshd in the foreground, killed (and reaped) on drop.
struct Sshd {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Sshd {
    /// Starts sshd with `host_key` and `authorized_keys` on a free loopback port, and waits for its
    /// banner.
    async fn start(dir: &Path, host_key: &Path, authorized_keys: &Path) -> Sshd {
        // sshd refuses to start without its privilege separation directory, which only the
        // openssh-server package's service would otherwise make.
        if !Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd").expect("/run/sshd for sshd's privilege separation");
        }
        let mut last_error = String::new();
        // A port found free may be taken before sshd binds it: try another.
        for attempt in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let config = dir.join(format!("sshd_config.{attempt}"));
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                     StrictModes no\nUsePAM no\nPidFile none\nLogLevel VERBOSE\n",
                    host_key.display(),
                    authorized_keys.display()
                ),
            )
            .unwrap();
            let log = dir.join(format!("sshd.{attempt}.log"));
            let child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("/usr/sbin/sshd runs (scripts/test-env installs openssh-server)");
            let mut sshd = Sshd { child, port, log };
            let banner = eventually_banner(&mut sshd).await;
            match banner {
                Ok(()) => return sshd,
                Err(why) => last_error = why,
            }
        }
        panic!("sshd did not start: {last_error}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Waits (10 s at most) for sshd's `SSH-2.0` banner, or for it to exit.
async fn eventually_banner(sshd: &mut Sshd) -> Result<(), String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = sshd.child.try_wait() {
            return Err(format!("sshd exited with {status}: {}", sshd.log()));
        }
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", sshd.port)).await {
            use tokio::io::AsyncReadExt;
            let mut banner = [0u8; 7];
            let read = tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut banner)).await;
            if matches!(read, Ok(Ok(_))) && &banner == b"SSH-2.0" {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("no banner on port {} within 10 s: {}", sshd.port, sshd.log()))
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh-keygen -t ed25519` without a passphrase: answers the private key's path.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen runs (scripts/test-env installs openssh-client)");
    assert!(status.success(), "ssh-keygen {name}");
    path
}

/// `KEYTYPE BASE64` of a `.pub` file.
fn public_key(private: &Path) -> String {
    let text = std::fs::read_to_string(private.with_extension("pub")).unwrap();
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn indented(text: &str) -> String {
    text.lines().map(|line| format!("      {line}\n")).collect()
}

fn ssh_source(ns: &str, url: &str, known_hosts: &str, private_key: &str) -> String {
    format!(
        "apiVersion: kedge.io/v1\nkind: GitSource\nmetadata:\n  name: apps\n  namespace: {ns}\nspec:\n  url: {url}\n  \
branch: main\n  path: deploy\n  interval: 1h\n  ssh:\n    knownHosts: |\n{}    privateKey: |\n{}",
        indented(known_hosts),
        indented(private_key)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_over_ssh_checks_the_host_key_and_logs_in_with_the_given_key() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let server = TestServer::start().await;
    let host = unique("gs-ssh");
    let agent = InProcessAgent::start(server.store.clone(), &host, None).await;
    let ns = unique("gitops-ssh");
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    // Placed nowhere: this test is about what reaches the store, not about containers.
    repo.write("deploy/web.yaml", &container("web", "nowhere", &run, "1"));
    let first = repo.commit_and_push("first", false);

    let host_key = keygen(dir.path(), "host_key");
    let other_host_key = keygen(dir.path(), "other_host_key");
    let client_key = keygen(dir.path(), "client_key");
    let stranger_key = keygen(dir.path(), "stranger_key");
    let authorized_keys = dir.path().join("authorized_keys");
    std::fs::write(&authorized_keys, format!("{}\n", public_key(&client_key))).unwrap();
    let sshd = Sshd::start(dir.path(), &host_key, &authorized_keys).await;
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let url = format!("ssh://{}@127.0.0.1:{}{}", user.trim(), sshd.port, repo.bare.display());
    let known = format!("[127.0.0.1]:{} {}\n", sshd.port, public_key(&host_key));
    let impostor = format!("[127.0.0.1]:{} {}\n", sshd.port, public_key(&other_host_key));
    let client = std::fs::read_to_string(&client_key).unwrap();
    let stranger = std::fs::read_to_string(&stranger_key).unwrap();
    let file = dir.path().join("source.yaml");
    let apply = |known_hosts: &str, key: &str| {
        std::fs::write(&file, ssh_source(&ns, &url, known_hosts, key)).unwrap();
        assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    };
    // Waits for Ready=False with `reason` and a message holding `words` (answers the message).
    let wait_reason = |reason: &'static str, words: &'static str| {
        let (server, ns) = (&server, &ns);
        async move {
            eventually(&format!("Ready=False {reason}"), Duration::from_secs(20), || async move {
                let status = read_status(server, ns).await?;
                let found = status.conditions.iter().find(|c| c.kind == "Ready")?.clone();
                let wanted = found.status == ConditionStatus::False && found.reason == reason;
                (wanted && found.message.contains(words)).then_some(found.message)
            })
            .await
        }
    };

    // Known hosts listing another key for this server: refused before any login, nothing applied.
    apply(&impostor, &client);
    let message = wait_reason("HostKeyRejected", "host key mismatch").await;
    assert!(
        message.contains("host key mismatch") && message.contains(&format!("[127.0.0.1]:{}", sshd.port)),
        "{message}"
    );
    // Known hosts with no line for this host (another port): refused too, naming the problem.
    apply(&format!("[127.0.0.1]:{} {}\n", sshd.port + 1, public_key(&host_key)), &client);
    let message = wait_reason("HostKeyRejected", "host key not verified").await;
    assert!(message.contains("host key not verified"), "{message}");
    assert!(objects::get_container(server.store.as_ref(), &ns, "web").await.unwrap().is_none());
    assert!(!sshd.log().contains("Accepted publickey"), "a refused server got a login:\n{}", sshd.log());

    // The right host key, a client key the server does not know: an authentication error.
    apply(&known, &stranger);
    let message = wait_reason("AuthenticationFailed", "").await;
    assert!(message.contains("spec.ssh.privateKey"), "{message}");
    assert!(objects::get_container(server.store.as_ref(), &ns, "web").await.unwrap().is_none());

    // Both right: applied; a push, then `kedge reconcile`, applied too.
    apply(&known, &client);
    wait_applied(&server, &ns, &first, Duration::from_secs(20)).await;
    assert!(sshd.log().contains("Accepted publickey"), "{}", sshd.log());
    repo.write("deploy/web.yaml", &container("web", "nowhere", &run, "2"));
    let second = repo.commit_and_push("second", false);
    assert_exit(&server.kedge(&["reconcile", "gitsource", "apps", "-n", &ns]), 0);
    wait_applied(&server, &ns, &second, Duration::from_secs(15)).await;
    assert_eq!(env_of(&server, &ns, "web").await.as_deref(), Some("2"));

    // The private key is never shown back; the host keys are.
    let secret_line = client.lines().nth(1).unwrap();
    for args in [
        &["get", "gitsource", "apps", "-n", &ns, "-o", "yaml"][..],
        &["get", "gitsource", "apps", "-n", &ns, "-o", "json"][..],
        &["describe", "gitsource", "apps", "-n", &ns],
    ] {
        let shown = server.kedge(args);
        assert_exit(&shown, 0);
        let text = stdout(&shown);
        assert!(!text.contains(secret_line) && !text.contains("PRIVATE KEY"), "{text}");
    }
    // Nor by `kedge diff` of a file with another key (neither the stored nor the new one).
    let other_file = dir.path().join("other-key.yaml");
    std::fs::write(&other_file, ssh_source(&ns, &url, &known, &stranger)).unwrap();
    let diff = server.kedge(&["diff", "-f", other_file.to_str().unwrap()]);
    let stranger_line = stranger.lines().nth(1).unwrap();
    let shown = format!("{}{}", stdout(&diff), crate::api_support::stderr(&diff));
    assert!(!shown.contains(secret_line) && !shown.contains(stranger_line), "{shown}");
    let yaml = stdout(&server.kedge(&["get", "gitsource", "apps", "-n", &ns, "-o", "yaml"]));
    assert!(yaml.contains("<redacted>") && yaml.contains(&public_key(&host_key)[12..]), "{yaml}");
    let ready_row = stdout(&server.kedge(&["get", "gitsources", "-n", &ns]));
    assert!(ready_row.contains(&format!("main@{}", &second[..7])), "{ready_row}");
    assert_eq!(ready(&read_status(&server, &ns).await.unwrap()).unwrap().0, ConditionStatus::True);

    // sshd is gone once dropped: nothing left listening.
    let port = sshd.port;
    drop(sshd);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "sshd still answers on {port}");

    assert_exit(&server.kedge(&["delete", "gitsource", "apps", "-n", &ns]), 0);
    Api::<Container>::new(server.store.clone()).delete(&ns, "web", None).await.unwrap();
    agent.stop().await.unwrap();
}
