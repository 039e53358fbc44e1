//! One writer per container (issue #15): `kedge check --autoupdate` and `kedge recreate` of a
//! container a running `kedge agent` manages hand the recreate to the agent and wait for it: exit 0,
//! a new container on the new image, and no second replacement or rollback in the 10 s after (they
//! used to race the agent's crash recovery and roll back with `RenameNew failed: not found`). With
//! the agent gone they refuse with exit 5, and `--direct` recreates without it.

use crate::updater_support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use kedge_tests::TEST_LABEL;
use updater_support::*;

/// A `kedge agent` child process, stopped with SIGTERM (then killed) when dropped.
struct AgentProcess {
    child: Child,
    state_dir: std::path::PathBuf,
}

impl AgentProcess {
    fn start(t: &Updater, host: &str) -> AgentProcess {
        let state_dir = t.dir.path().join("agent");
        let child = std::process::Command::new(kedge_bin())
            .args(["agent", "--state-dir", path_str(&state_dir), "--listen", "127.0.0.1:0"])
            .args(["--host-name", host])
            .env("DOCKER_HOST", &t.env.docker_host)
            .env_remove("KEDGE_STORE")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kedge agent starts");
        AgentProcess { child, state_dir }
    }

    fn socket(&self) -> String {
        format!("unix://{}", self.state_dir.join("kedge.sock").display())
    }

    fn stop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `kedge ARGS` against the agent's socket.
fn kedge(t: &Updater, agent: &AgentProcess, args: &[&str]) -> std::process::Output {
    api_support::kedge_command(t.dir.path())
        .env("KEDGE_SERVER", agent.socket())
        .args(args)
        .output()
        .expect("kedge")
}

/// Polls until `probe` answers, or panics after `timeout`.
fn poll<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The IDs of every container of spec `key`, whatever its name.
fn containers_of(key: &str) -> Vec<String> {
    let filter = format!("label=io.kedge.key={key}");
    let listed = docker_ok(&["ps", "-a", "-q", "--no-trunc", "--filter", &filter]);
    stdout(&listed).lines().map(str::to_owned).collect()
}

/// For 10 s, the spec has exactly the container `id`, running: no second replacement, no rollback.
fn assert_settled(name: &str, key: &str, id: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        assert_eq!(containers_of(key), vec![id.to_string()], "one container of {key}, the new one");
        assert_eq!(inspect("{{.Id}} {{.State.Running}}", name), format!("{id} true"));
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn check_autoupdate_and_recreate_of_a_managed_container_go_through_its_agent() {
    let cleanup_volumes = crate::recreate_volumes::VolumeCleanup::default();
    let t = Updater::new();
    let repository = format!("kedge-test/handoff-{}", t.run);
    let build = |version: &str| {
        let context = t.dir.path().join(format!("build-{version}"));
        std::fs::create_dir_all(&context).expect("build dir");
        let dockerfile = format!("FROM kedge-test/volume:latest\nLABEL app.version={version}\n");
        std::fs::write(context.join("Dockerfile"), dockerfile).expect("Dockerfile");
        let label = t.label();
        stdout(&docker_ok(&["build", "-q", "--label", &label, "-t", &repository, path_str(&context)]))
            .trim()
            .to_string()
    };
    build("1");
    let host = format!("handoff-{}", t.run);
    let mut agent = AgentProcess::start(&t, &host);
    poll("the agent's API", Duration::from_secs(30), || {
        kedge(&t, &agent, &["version"]).status.success().then_some(())
    });

    let name = t.name("db");
    let namespace = format!("ns-{}", t.run);
    let key = format!("{namespace}/{name}");
    let spec = t.dir.path().join("db.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\n  namespace: {namespace}\n\
             spec:\n  image: {repository}\n  labels:\n    {TEST_LABEL}: {run}\n  placement:\n    host: {host}\n",
            run = t.run
        ),
    )
    .expect("spec");
    let applied = kedge(&t, &agent, &["apply", "-f", path_str(&spec)]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let waited = kedge(
        &t,
        &agent,
        &["wait", "container", &name, "-n", &namespace, "--for", "condition=Ready", "--timeout", "90s"],
    );
    assert!(waited.status.success(), "{}", stderr(&waited));
    docker_ok(&["exec", &name, "sh", "-c", "echo precious >/data/keep.txt"]);
    let first = inspect("{{.Id}}", &name);
    cleanup_volumes.keep([format!("/data={}", inspect("{{range .Mounts}}{{.Name}}{{end}}", &name))].into());

    // check --autoupdate: handed to the agent, which recreates on the new image, once.
    let v2 = build("2");
    let updated = kedge(&t, &agent, &["check", "--autoupdate", &name]);
    assert_eq!(code(&updated), 0, "{}", stderr(&updated));
    let second = inspect("{{.Id}}", &name);
    assert_ne!(second, first, "recreated: {}", stderr(&updated));
    assert_eq!(inspect("{{.Image}}", &name), v2);
    assert!(stderr(&updated).contains("handing the recreate to its agent"), "{}", stderr(&updated));
    assert_settled(&name, &key, &second);
    assert_eq!(stdout(&docker_ok(&["exec", &name, "cat", "/data/keep.txt"])), "precious\n");
    // describe names the image's anonymous volume, so a user can find it.
    let volume = inspect("{{range .Mounts}}{{.Name}}{{end}}", &name);
    let line = format!("/data <- volume {volume}");
    poll("describe to show the volume", Duration::from_secs(30), || {
        let described = stdout(&kedge(&t, &agent, &["describe", "container", &name, "-n", &namespace]));
        described.contains(&line).then_some(())
    });

    // kedge recreate: the same, on the same image.
    let recreated = kedge(&t, &agent, &["recreate", &name]);
    assert_eq!(code(&recreated), 0, "{}", stderr(&recreated));
    assert!(stdout(&recreated).contains("recreated by its agent"), "{}", stdout(&recreated));
    let third = inspect("{{.Id}}", &name);
    assert_ne!(third, second);
    assert_eq!(inspect("{{.Image}}", &name), v2);
    assert_settled(&name, &key, &third);
    assert_eq!(stdout(&docker_ok(&["exec", &name, "cat", "/data/keep.txt"])), "precious\n");

    // A broken update through the agent: rolled back, the same exit code as a direct one.
    let context = t.dir.path().join("build-broken");
    std::fs::create_dir_all(&context).expect("build dir");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM kedge-test/volume:latest\nCMD [\"/bin/sh\", \"-c\", \"exit 3\"]\n",
    )
    .expect("Dockerfile");
    let label = t.label();
    docker_ok(&["build", "-q", "--label", &label, "-t", &repository, path_str(&context)]);
    let failed = kedge(&t, &agent, &["recreate", &name]);
    assert_eq!(code(&failed), 5, "{}", stderr(&failed));
    assert!(stderr(&failed).contains("rolled back"), "{}", stderr(&failed));
    docker_ok(&["tag", &v2, &repository]);

    // No agent: a clear refusal (exit 5), and --direct as the way out.
    agent.stop();
    let refused = kedge(&t, &agent, &["recreate", &name]);
    assert_eq!(code(&refused), 5, "{}", stderr(&refused));
    assert!(stderr(&refused).contains("its agent is not reachable"), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("--direct"), "{}", stderr(&refused));
    let before = inspect("{{.Id}}", &name);
    let direct = kedge(&t, &agent, &["recreate", "--direct", &name]);
    assert_eq!(code(&direct), 0, "{}", stderr(&direct));
    assert_ne!(inspect("{{.Id}}", &name), before);
    assert_eq!(stdout(&docker_ok(&["exec", &name, "cat", "/data/keep.txt"])), "precious\n");
}
