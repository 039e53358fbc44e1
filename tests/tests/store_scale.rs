//! The store at fleet size and over time, end to end: the real `kedge` binary (agent and CLI) on an etcd
//! of each test's own (revisions and sizes are global to an etcd, so no test may share one).
//!
//! - 1,200 specs of 4 KiB (about 5 MB, more than gRPC's default 4 MiB message): `kedge get containers
//!   -A` lists them all, and the agent, which has to list them at start, runs a new spec within 10 s.
//! - A 3 MiB spec is refused with a message naming the 256 KiB limit.
//! - An idle agent with a few specs writes at most 4 store revisions a minute.

use crate::api_support;

use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_support::{kedge_bin, kedge_command, stderr, stdout};
use futures::StreamExt;
use kedge_controller::store::{objects, EtcdOptions, EtcdStore, SharedStore};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker_cli, eventually, run_id, test_spec, EngineCleanup, TestEnv};

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
        let env = TestEnv::get();
        std::fs::create_dir_all(state_dir).unwrap();
        let log = std::fs::File::create(state_dir.with_extension("log")).unwrap();
        let child = std::process::Command::new(kedge_bin())
            .args(["agent", "--store", store, "--state-dir", state_dir.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--host-name", host])
            .env("DOCKER_HOST", &env.docker_host)
            .env("RUST_LOG", "info")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kedge agent starts");
        AgentProcess { child, state_dir: state_dir.to_owned() }
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
    Arc::new(EtcdStore::connect(EtcdOptions::new(cluster.endpoints())).await.expect("connect to etcd"))
}

fn store_url(cluster: &EtcdCluster) -> String {
    let endpoints: Vec<String> =
        cluster.endpoints().iter().map(|e| e.trim_start_matches("http://").to_owned()).collect();
    format!("etcd://{}", endpoints.join(","))
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
