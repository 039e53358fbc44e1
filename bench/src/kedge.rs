//! Running kedge for a benchmark: an agent in this process (for its counters), or the real
//! `kedge agent` binary as its own process (for its CPU and memory), and reading readiness.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kedge_controller::agent::{AgentConfig, AgentStats};
use kedge_controller::store::{objects, EmbeddedOptions, EmbeddedStore, SharedStore};
use kedge_crds::ConditionStatus;
use tokio_util::sync::CancellationToken;

/// An agent running inside the bench process.
pub struct InProcessAgent {
    pub stats: Arc<AgentStats>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), kedge_controller::agent::AgentError>>>,
}

pub async fn open_embedded(path: &Path) -> anyhow::Result<SharedStore> {
    Ok(Arc::new(EmbeddedStore::open(path, EmbeddedOptions::default()).await?))
}

impl InProcessAgent {
    /// Starts an agent for `host` on `store`, with the agent's default configuration but `workers`.
    pub async fn start(store: SharedStore, host: &str, workers: usize) -> anyhow::Result<InProcessAgent> {
        let docker = kedge_controller::docker::DockerClient::connect().await?;
        let mut config = AgentConfig::new(host);
        config.workers = workers;
        let stats = config.stats.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(kedge_controller::agent::run(store, docker, config, shutdown.clone()));
        Ok(InProcessAgent { stats, shutdown, task: Some(task) })
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().context("agent already stopped")?;
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .context("agent did not stop in 120 s")???;
        Ok(())
    }
}

impl Drop for InProcessAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Whether spec `namespace/name` reports Ready=True for generation `generation` (any, if `None`).
pub async fn is_ready(
    store: &dyn kedge_controller::store::Store,
    namespace: &str,
    name: &str,
    generation: Option<i64>,
) -> bool {
    let Ok(Some((status, _))) = objects::get_status(store, namespace, name).await else { return false };
    let current = generation.is_none() || status.observed_generation == generation;
    current && status.condition("Ready").is_some_and(|c| c.status == ConditionStatus::True)
}

/// Waits until every name is Ready at its generation; returns the time it took.
pub async fn wait_all_ready(
    store: &dyn kedge_controller::store::Store,
    namespace: &str,
    names: &[(String, Option<i64>)],
    deadline: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut pending: Vec<&(String, Option<i64>)> = names.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for entry in pending {
            if !is_ready(store, namespace, &entry.0, entry.1).await {
                still.push(entry);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "{} of {} specs not Ready after {deadline:?} (first: {})",
            pending.len(),
            names.len(),
            pending[0].0
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(started.elapsed())
}

/// The real `kedge agent` binary, run as its own process; killed when dropped.
pub struct AgentProcess {
    pub child: std::process::Child,
    pub base: String,
    pub token: String,
}

impl AgentProcess {
    pub async fn start(
        bin: &Path,
        state_dir: &Path,
        store: &str,
        host: &str,
    ) -> anyhow::Result<AgentProcess> {
        std::fs::create_dir_all(state_dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(state_dir.join("agent.log"))?;
        let child = std::process::Command::new(bin)
            .args(["agent", "--store", store, "--host-name", host, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state_dir)
            .env("RUST_LOG", "warn")
            .env("KEDGE_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let mut agent =
            AgentProcess { child, base: format!("http://127.0.0.1:{port}"), token: String::new() };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Some(status) = agent.child.try_wait()? {
                anyhow::bail!(
                    "kedge agent exited with {status}; see {}",
                    state_dir.join("agent.log").display()
                );
            }
            let healthy = client
                .get(format!("{}/healthz", agent.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                if let Ok(token) = std::fs::read_to_string(state_dir.join("api-token")) {
                    agent.token = token.trim().to_owned();
                    return Ok(agent);
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "kedge agent did not answer in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Puts a spec through the API (create or replace).
    pub async fn put(&self, client: &reqwest::Client, spec: serde_json::Value) -> anyhow::Result<()> {
        let ns = spec["metadata"]["namespace"].as_str().context("namespace")?;
        let name = spec["metadata"]["name"].as_str().context("name")?;
        let response = client
            .put(format!("{}/api/v1/namespaces/{ns}/containers/{name}", self.base))
            .bearer_auth(&self.token)
            .json(&spec)
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "PUT {ns}/{name}: {status}: {}",
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }

    pub async fn delete(&self, client: &reqwest::Client, ns: &str, name: &str) -> anyhow::Result<()> {
        let response = client
            .delete(format!("{}/api/v1/namespaces/{ns}/containers/{name}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success() || response.status() == 404,
            "DELETE {ns}/{name}: {}",
            response.status()
        );
        Ok(())
    }

    /// How many specs of `ns` report Ready=True at their current generation, through the API.
    pub async fn ready_count(&self, client: &reqwest::Client, ns: &str) -> anyhow::Result<usize> {
        let list: serde_json::Value = client
            .get(format!("{}/api/v1/namespaces/{ns}/containers", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let items = list["items"].as_array().context("items")?;
        Ok(items
            .iter()
            .filter(|item| {
                let status = &item["status"];
                status["observedGeneration"] == item["metadata"]["generation"]
                    && status["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count())
    }

    /// Stops the agent with SIGTERM and waits for it to exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.pid();
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        let started = Instant::now();
        while self.child.try_wait()?.is_none() {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(120),
                "kedge agent did not stop in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
