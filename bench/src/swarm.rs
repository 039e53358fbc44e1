//! Docker Swarm as the peer measured against, driven through the `docker` CLI on DOCKER_HOST.
//!
//! The bench initialises Swarm mode only on an engine that is not already in a swarm, and leaves
//! it again (`docker swarm leave --force`) when [`SwarmMode`] is dropped, also on failure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;

pub fn docker_cli(args: &[&str]) -> anyhow::Result<String> {
    let output = std::process::Command::new("docker").args(args).output().context("run the docker CLI")?;
    anyhow::ensure!(
        output.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Swarm mode on the bench engine for as long as this lives.
pub struct SwarmMode;

impl SwarmMode {
    pub fn init() -> anyhow::Result<SwarmMode> {
        let state = docker_cli(&["info", "-f", "{{.Swarm.LocalNodeState}}"])?;
        anyhow::ensure!(
            state == "inactive",
            "the engine is already in a swarm ({state}); the bench leaves swarms it did not make alone"
        );
        docker_cli(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        Ok(SwarmMode)
    }
}

impl Drop for SwarmMode {
    fn drop(&mut self) {
        if let Err(error) = docker_cli(&["swarm", "leave", "--force"]) {
            eprintln!("bench: docker swarm leave --force failed: {error:#}");
        }
    }
}

/// Creates a service of `replicas` tasks on `image`, restarted at once, tasks labelled for cleanup,
/// updated `parallelism` at a time in `update_order` (`stop-first`, Swarm's default, or
/// `start-first`), each old task stopped with the 10 s grace Docker gives kedge's containers.
pub fn create_service(
    name: &str,
    replicas: usize,
    image: &str,
    label: &str,
    parallelism: usize,
    update_order: &str,
) -> anyhow::Result<()> {
    docker_cli(&[
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--name",
        name,
        "--replicas",
        &replicas.to_string(),
        "--restart-condition",
        "any",
        "--restart-delay",
        "0s",
        "--update-parallelism",
        &parallelism.to_string(),
        "--update-delay",
        "0s",
        "--update-order",
        update_order,
        "--stop-grace-period",
        "10s",
        "--container-label",
        label,
        image,
    ])?;
    Ok(())
}

/// Running containers of a service, as (name, image).
pub async fn running_tasks(docker: &Docker, service: &str) -> anyhow::Result<Vec<(String, String)>> {
    let filters = HashMap::from([
        ("label", vec![format!("com.docker.swarm.service.name={service}")]),
        ("status", vec!["running".to_owned()]),
    ]);
    let list =
        docker.list_containers(Some(ListContainersOptionsBuilder::new().filters(&filters).build())).await?;
    Ok(list
        .into_iter()
        .map(|c| {
            let name = c.names.unwrap_or_default().first().cloned().unwrap_or_default();
            (name.trim_start_matches('/').to_owned(), c.image.unwrap_or_default())
        })
        .collect())
}

/// Waits until `replicas` tasks run `image` (old tasks of a start-first update may still be
/// stopping, as kedge's retired containers may when its specs are Ready); returns the time it took.
pub async fn wait_converged(
    docker: &Docker,
    service: &str,
    replicas: usize,
    image: &str,
    deadline: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let tasks = running_tasks(docker, service).await?;
        if tasks.iter().filter(|(_, i)| i == image).count() == replicas {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "service {service} not converged on {image} after {deadline:?}: {} running",
            tasks.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The task slot part of a task container's name (`svc.3.taskid` -> `svc.3.`).
pub fn slot_prefix(container_name: &str) -> String {
    let mut parts = container_name.splitn(3, '.');
    format!("{}.{}.", parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
}
