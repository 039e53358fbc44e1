//! The store at fleet size and over time, end to end: the real `kedge` binary (agent and CLI) on an etcd
//! of each test's own (revisions and sizes are global to an etcd, so no test may share one).
//!
//! - 1,200 specs of 4 KiB (about 5 MB, more than gRPC's default 4 MiB message): `kedge get containers
//!   -A` lists them all, and the agent, which has to list them at start, runs a new spec within 10 s.
//! - A 3 MiB spec is refused with a message naming the 256 KiB limit.
//! - An idle agent with a few specs writes at most 4 store revisions a minute.

use crate::api_support;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use api_support::{kedge_bin, kedge_command, stderr, stdout};
use futures::StreamExt;
use kedge_controller::store::{objects, SharedStore};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker_cli, eventually, run_id, test_spec, EngineCleanup, TestEnv, TEST_LABEL};

/// See [`AgentProcess::start_child`].
const IN_PID_NAMESPACE: &str = "KEDGE_TEST_IN_PID_NAMESPACE";

/// A `kedge agent` child process, stopped with SIGTERM (then killed) when dropped.
pub(crate) struct AgentProcess {
    pub child: Child,
    pub state_dir: std::path::PathBuf,
}

impl AgentProcess {
    /// Starts `kedge agent` for `host` on `store` (an `--store` value) against the test engine.
    pub fn start(store: &str, host: &str, state_dir: &std::path::Path) -> AgentProcess {
        Self::start_with_env(store, host, state_dir, &[])
    }

    /// [`AgentProcess::start`] with extra environment variables.
    pub fn start_with_env(
        store: &str,
        host: &str,
        state_dir: &std::path::Path,
        vars: &[(&str, &str)],
    ) -> AgentProcess {
        let child = Self::start_child(store, host, state_dir, vars);
        AgentProcess { child, state_dir: state_dir.to_owned() }
    }

    /// Spawns the agent process (its log goes to `<state_dir>.log`, appended).
    pub fn start_child(store: &str, host: &str, state_dir: &std::path::Path, vars: &[(&str, &str)]) -> Child {
        let env = TestEnv::get();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state_dir.with_extension("log"))
            .unwrap();
        // `(IN_PID_NAMESPACE, _)` among `vars`: the agent runs in a PID namespace of its own, as in a
        // container (and the variable reaches it harmlessly).
        let mut command = if vars.iter().any(|(k, _)| *k == IN_PID_NAMESPACE) {
            let mut c = std::process::Command::new("unshare");
            c.args(["--pid", "--fork", "--mount-proc", "--kill-child"]).arg(kedge_bin());
            c
        } else {
            std::process::Command::new(kedge_bin())
        };
        command
            .args(["agent", "--store", store, "--state-dir", state_dir.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--host-name", host])
            .env("DOCKER_HOST", &env.docker_host)
            .env("RUST_LOG", "info")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kedge agent starts")
    }

    /// Runs the `kedge` CLI against this agent's Unix socket.
    pub fn kedge(&self, args: &[&str]) -> std::process::Output {
        let socket = format!("unix://{}", self.state_dir.join("kedge.sock").display());
        kedge_command(&std::env::temp_dir())
            .env("KEDGE_SERVER", &socket)
            .args(args)
            .output()
            .expect("kedge runs")
    }

    /// Waits until the agent's API answers.
    pub async fn wait_serving(&self) {
        eventually("the agent's API answers on its socket", Duration::from_secs(30), || async {
            self.kedge(&["version"]).status.success().then_some(())
        })
        .await;
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state_dir);
        let _ = std::fs::remove_file(self.state_dir.with_extension("log"));
    }
}

async fn connect(cluster: &EtcdCluster) -> SharedStore {
    cluster.store().await
}

/// The `--store` value of an agent on `cluster`.
pub(crate) fn store_url(cluster: &EtcdCluster) -> String {
    let endpoints: Vec<String> =
        cluster.endpoints().iter().map(|e| e.trim_start_matches("http://").to_owned()).collect();
    format!("etcd://{}", endpoints.join(","))
}

/// A spec with no placement, so the scheduler's leader must place it; labelled for `run`'s cleanup.
pub(crate) fn unplaced_spec(name: &str, run: &str) -> serde_json::Value {
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

/// `kedge apply` of `document` (written as a file in `dir`) through `agent`'s socket; it must succeed.
pub(crate) fn apply_json(agent: &AgentProcess, dir: &std::path::Path, document: &serde_json::Value) {
    let name = document["metadata"]["name"].as_str().unwrap();
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec(document).unwrap()).unwrap();
    let applied = agent.kedge(&["apply", "-f", file.to_str().unwrap()]);
    assert!(applied.status.success(), "kedge apply {name}: {}", stderr(&applied));
}

/// Waits until the container `name` runs on the test engine.
pub(crate) async fn wait_running(name: &str) {
    eventually(&format!("{name} to be placed and run"), Duration::from_secs(30), || async {
        let running = docker_cli(&["inspect", "-f", "{{.State.Running}}", name]);
        (String::from_utf8_lossy(&running.stdout).trim() == "true").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_1200_specs_lists_and_runs() {
    const SPECS: usize = 1200;
    let run = run_id();
    let cleanup = EngineCleanup::new(&run);
    let cluster = EtcdCluster::start(1).await;
    let store = connect(&cluster).await;
    let host = format!("scale-{run}");

    // 1,200 specs of 4 KiB, placed on a host that does not exist (nothing to run here for them).
    let padding = "x".repeat(4096);
    let elsewhere = format!("elsewhere-{run}");
    let started = Instant::now();
    futures::stream::iter(0..SPECS)
        .map(|i| {
            let spec = test_spec(
                &format!("fleet-{i:04}"),
                &format!("ns-{}", i % 7),
                &elsewhere,
                &cleanup,
                serde_json::json!({"image": "kedge-test/app:v1", "env": {"PADDING": padding}}),
            );
            let store = store.clone();
            async move { objects::apply_container(store.as_ref(), &spec, None).await.expect("a spec is written") }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let stored = store.list("/kedge/v1/specs/").await.expect("the store lists its specs");
    let bytes: usize = stored.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
    assert_eq!(stored.kvs.len(), SPECS);
    assert!(bytes > 4 << 20, "the specs are more than gRPC's default 4 MiB message: {bytes} bytes");
    eprintln!("wrote {SPECS} specs ({bytes} bytes) in {:?}", started.elapsed());

    let state_dir = std::env::temp_dir().join(format!("kedge-scale-{run}"));
    let agent = AgentProcess::start(&store_url(&cluster), &host, &state_dir);
    agent.wait_serving().await;

    let started = Instant::now();
    let listed = agent.kedge(&["get", "containers", "-A"]);
    let list_time = started.elapsed();
    assert!(listed.status.success(), "kedge get containers -A: {}", stderr(&listed));
    let rows = stdout(&listed).lines().filter(|l| l.contains("fleet-")).count();
    assert_eq!(rows, SPECS, "every spec is listed");
    eprintln!("kedge get containers -A listed {rows} specs in {list_time:?}");

    // A new spec for this agent's host runs within 10 s of its apply: the agent listed the fleet.
    let name = format!("fresh-{run}");
    let spec_dir = state_dir.with_extension("specs");
    std::fs::create_dir_all(&spec_dir).unwrap();
    let fresh = test_spec(
        &name,
        "default",
        &host,
        &cleanup,
        serde_json::json!({"image": "kedge-test/app:v1", "command": ["/bin/sh", "-c", "exec sleep 3600"]}),
    );
    let file = spec_dir.join("fresh.json");
    std::fs::write(&file, serde_json::to_vec(&fresh).unwrap()).unwrap();
    let started = Instant::now();
    let applied = agent.kedge(&["apply", "-f", file.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    eventually("the new spec's container runs", Duration::from_secs(10), || async {
        let running = docker_cli(&["inspect", "-f", "{{.State.Running}}", &name]);
        (String::from_utf8_lossy(&running.stdout).trim() == "true").then_some(())
    })
    .await;
    eprintln!("a new spec ran {:?} after its apply", started.elapsed());

    // A 3 MiB spec is refused, naming the limit, and nothing is written.
    let before = store.list("/kedge/v1/specs/").await.unwrap().kvs.len();
    let huge = test_spec(
        &format!("huge-{run}"),
        "default",
        &host,
        &cleanup,
        serde_json::json!({"image": "kedge-test/app:v1", "env": {"PADDING": "y".repeat(3 << 20)}}),
    );
    let file = spec_dir.join("huge.json");
    std::fs::write(&file, serde_json::to_vec(&huge).unwrap()).unwrap();
    let refused = agent.kedge(&["apply", "-f", file.to_str().unwrap()]);
    assert!(!refused.status.success(), "a 3 MiB spec is refused");
    assert!(stderr(&refused).contains("256 KiB"), "the error names the limit: {}", stderr(&refused));
    assert_eq!(store.list("/kedge/v1/specs/").await.unwrap().kvs.len(), before, "nothing was written");
    let _ = std::fs::remove_dir_all(&spec_dir);
    drop(agent);
}

/// An idle agent's writes: lease keep-alives are not revisions, and nothing else changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_writes_at_most_4_revisions_a_minute() {
    let run = run_id();
    let cleanup = EngineCleanup::new(&run);
    let cluster = EtcdCluster::start(1).await;
    let store = connect(&cluster).await;
    let host = format!("idle-{run}");
    let state_dir = std::env::temp_dir().join(format!("kedge-idle-{run}"));
    let agent = AgentProcess::start(&store_url(&cluster), &host, &state_dir);
    agent.wait_serving().await;
    let names: Vec<String> = (0..3).map(|i| format!("idle-{i}-{run}")).collect();
    for name in &names {
        let spec = test_spec(
            name,
            "default",
            &host,
            &cleanup,
            serde_json::json!({"image": "kedge-test/app:v1", "command": ["/bin/sh", "-c", "exec sleep 3600"]}),
        );
        objects::apply_container(store.as_ref(), &spec, None).await.expect("a spec is written");
    }
    for name in &names {
        kedge_tests::wait_ready(store.as_ref(), "default", name, Duration::from_secs(60)).await;
    }
    // Past the start's own writes (status, events, the first host record), measured from here.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let start = store.list("/kedge/v1/").await.unwrap().revision;
    let mut watch = store.watch("/kedge/v1/", start + 1).await.expect("a watch");
    // The measurement itself: a minute of an idle agent, noting what it wrote.
    let mut written: Vec<String> = Vec::new();
    let window = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(window);
    loop {
        tokio::select! {
            _ = &mut window => break,
            event = watch.next() => match event {
                Some(Ok(event)) => written.push(event.kv.key),
                other => panic!("the watch ended: {}", other.map(|e| e.err().map(|e| e.to_string())).is_some()),
            },
        }
    }
    let end = store.list("/kedge/v1/").await.unwrap().revision;
    eprintln!(
        "an idle agent with {} specs wrote {} revisions in 60 s: {written:?}",
        names.len(),
        end - start
    );
    assert!(end - start <= 4, "{} revisions in a minute of idling: {written:?}", end - start);
    assert!(agent.kedge(&["get", "hosts"]).status.success());
    drop(agent);
}

/// The scheduler's leader compacts history older than its window (4 s here, an hour by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_compacts_old_history() {
    let run = run_id();
    let cluster = EtcdCluster::start(1).await;
    let store = connect(&cluster).await;
    let key = format!("/kedge-test/compaction/{run}");
    for i in 0..50 {
        store
            .put(&key, format!("v{i}").into_bytes(), kedge_controller::store::PutCondition::Always, 0)
            .await
            .unwrap();
    }
    let written = store.list(&key).await.unwrap().revision;
    let state_dir = std::env::temp_dir().join(format!("kedge-compaction-{run}"));
    let agent = AgentProcess::start_with_env(
        &store_url(&cluster),
        &format!("compaction-{run}"),
        &state_dir,
        &[("KEDGE_HISTORY_KEEP_SECONDS", "4")],
    );
    let started = Instant::now();
    let compacted = eventually("the leader compacts", Duration::from_secs(60), || async {
        let mut watch = store.watch(&key, 1).await.ok()?;
        match watch.next().await {
            Some(Err(kedge_controller::store::StoreError::Compacted { compact_revision })) => {
                Some(compact_revision)
            }
            _ => None,
        }
    })
    .await;
    eprintln!("compacted up to revision {compacted} {:?} after the agent started", started.elapsed());
    assert!(compacted > written, "history older than the window is gone (compacted at {compacted})");
    drop(agent);
}

/// A tmpfs mounted for one test, unmounted (and its mount point removed) when dropped.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(dir: std::path::PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs", dir.to_str().unwrap()])
            .status()
            .expect("mount runs");
        assert!(mounted.success(), "mounting a tmpfs needs root");
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions()) & 0o777
}

/// The embedded store on a disk that fills up: the agent exits with status 5 (so systemd or Docker
/// restarts it), and once there is room again a restarted agent serves, with every acknowledged spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_on_a_full_disk_exits_then_serves_again() {
    let run = run_id();
    let cleanup = EngineCleanup::new(&run);
    let disk = Tmpfs::mount(std::env::temp_dir().join(format!("kedge-tmpfs-{run}")), "4m");
    let state_dir = disk.dir.join("state");
    let host = format!("full-{run}");
    let elsewhere = format!("elsewhere-{run}");
    let spec_dir = std::env::temp_dir().join(format!("kedge-full-specs-{run}"));
    std::fs::create_dir_all(&spec_dir).unwrap();
    let write_spec = |i: usize| {
        let spec = test_spec(
            &format!("full-{i}"),
            "default",
            &elsewhere,
            &cleanup,
            serde_json::json!({"image": "kedge-test/app:v1", "env": {"PADDING": "z".repeat(2000)}}),
        );
        let file = spec_dir.join(format!("{i}.json"));
        std::fs::write(&file, serde_json::to_vec(&spec).unwrap()).unwrap();
        file
    };

    let mut agent = AgentProcess::start("embedded", &host, &state_dir);
    agent.wait_serving().await;
    assert_eq!(mode(&state_dir), 0o700, "a state directory kedge created is private");
    assert_eq!(mode(&disk.dir), 0o755, "a directory kedge did not create keeps its mode");
    assert_eq!(mode(&state_dir.join("kedge.db")), 0o600, "the store's file is the owner's only");
    assert_eq!(mode(&state_dir.join("kedge.db.lock")), 0o600);
    let applied = agent.kedge(&["apply", "-f", write_spec(0).to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));

    // Fill the disk, then write until a write fails: the agent exits non-zero.
    let filler = disk.dir.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&[0u8; 512]);
        while file.write_all(&[0u8; 1]).is_ok() {}
        let _ = file.sync_all();
    }
    let mut acknowledged = vec![0];
    let mut attempts = 0;
    let started = Instant::now();
    let status = eventually("the agent exits on a full disk", Duration::from_secs(30), || {
        attempts += 1;
        let i = attempts;
        let file = write_spec(i);
        let applied = agent.kedge(&["apply", "-f", file.to_str().unwrap()]);
        if applied.status.success() {
            acknowledged.push(i);
        }
        let exited = agent.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    eprintln!("the agent exited {:?} after the disk filled, with {status}", started.elapsed());
    assert_eq!(status.code(), Some(5), "a failed store is exit status 5: {status}");

    // Room again: the restarted agent (what a supervisor does) serves, with every acknowledged spec.
    std::fs::remove_file(&filler).unwrap();
    let started = Instant::now();
    agent.child = AgentProcess::start_child("embedded", &host, &state_dir, &[]);
    agent.wait_serving().await;
    let applied = agent.kedge(&["apply", "-f", write_spec(999_999).to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    eprintln!("serving and writing again {:?} after the disk was freed", started.elapsed());
    let listed = stdout(&agent.kedge(&["get", "containers", "-A"]));
    for i in &acknowledged {
        assert!(listed.contains(&format!("full-{i} ")), "acknowledged spec full-{i} survived: {listed}");
    }
    let _ = std::fs::remove_dir_all(&spec_dir);
    drop(agent);
}

/// Two agents for one host, the second in a PID namespace of its own (as in a container): it cannot
/// see the holder's process, so it waits instead of taking the lock; and a holder whose lock is taken
/// from it stops at once, with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_lock_holds_across_pid_namespaces() {
    let run = run_id();
    let cluster = EtcdCluster::start(1).await;
    let store = connect(&cluster).await;
    let host = format!("lock-{run}");
    let key = format!("/kedge/v1/locks/agents/{host}");
    let first_dir = std::env::temp_dir().join(format!("kedge-lock-a-{run}"));
    let mut first = AgentProcess::start(&store_url(&cluster), &host, &first_dir);
    let holder = eventually("the first agent holds the lock", Duration::from_secs(30), || async {
        store.get(&key).await.ok()?.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    })
    .await;
    assert!(holder.contains(" pidns "), "the holder names its PID namespace: {holder}");

    let second_dir = std::env::temp_dir().join(format!("kedge-lock-b-{run}"));
    let mut second =
        AgentProcess::start_with_env(&store_url(&cluster), &host, &second_dir, &[(IN_PID_NAMESPACE, "1")]);
    second.wait_serving().await;
    // For longer than the lock's TTL, the live holder keeps it.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let current =
            store.get(&key).await.unwrap().map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        assert_eq!(current.as_deref(), Some(holder.as_str()), "the lock moved from a live holder");
        assert!(first.child.try_wait().unwrap().is_none(), "the holder keeps running");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The lock taken from the holder (here: its key deleted, as a wrong takeover would): it stops.
    let started = Instant::now();
    store.delete(&key, kedge_controller::store::DeleteCondition::Always).await.unwrap();
    let status = eventually("the holder stops", Duration::from_secs(15), || {
        let exited = first.child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    eprintln!("the holder stopped {:?} after losing its lock, with {status}", started.elapsed());
    assert!(!status.success(), "losing the lock is an error exit: {status}");
    let taken = eventually("the waiting agent takes the lock", Duration::from_secs(30), || async {
        let kv = store.get(&key).await.ok()??;
        let text = String::from_utf8_lossy(&kv.value).into_owned();
        (text != holder).then_some(text)
    })
    .await;
    assert!(second.child.try_wait().unwrap().is_none(), "the second agent runs: {taken}");
    drop(second);
    drop(first);
}
