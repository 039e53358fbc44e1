//! Drift repair: containers killed one at a time, latency from the engine's `die` event to the
//! replacement's `start` event, as the engine stamps both.
//!
//! Three systems restore the same kill: the floor (a bare API client that starts the container the
//! moment it sees its `die` event: the least any controller can do), kedge, and Docker Swarm.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, KillContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;

use crate::common::{EventLog, BENCH_LABEL};

/// Pause between one restore and the next kill, so each kill meets a settled system.
const PACE: Duration = Duration::from_millis(100);

/// Kills each named container in turn and returns the die-to-start latencies in milliseconds.
/// `replacement` maps a killed container's name to a predicate on the replacement's name.
pub async fn kill_each(
    docker: &Docker,
    log: &EventLog,
    names: &[String],
    replacement: impl Fn(&str) -> Box<dyn Fn(&str) -> bool + Send>,
) -> anyhow::Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(names.len());
    for name in names {
        let from = log.len();
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        docker.kill_container(name, Some(options)).await?;
        let died = log.wait(from, "die", Duration::from_secs(30), |n| n == name).await?;
        let is_replacement = replacement(name);
        let started = log
            .wait(from, "start", Duration::from_secs(60), |n| is_replacement(n))
            .await
            .map_err(|e| anyhow::anyhow!("{name} was not restored: {e}"))?;
        latencies.push((started.time_nano - died.time_nano) as f64 / 1e6);
        tokio::time::sleep(PACE).await;
    }
    Ok(latencies)
}

/// The floor: `n` plain containers, and a reactor that starts each one again on its `die` event.
pub struct Floor {
    pub names: Vec<String>,
    reactor: tokio::task::JoinHandle<()>,
}

impl Floor {
    pub async fn start(docker: &Docker, run: &str, n: usize, image: &str) -> anyhow::Result<Floor> {
        let names: Vec<String> = (0..n).map(|i| format!("bf{i}-{run}")).collect();
        crate::common::bounded(
            8,
            names.iter().map(|name| {
                let docker = docker.clone();
                let body = bollard::models::ContainerCreateBody {
                    image: Some(image.to_owned()),
                    labels: Some(HashMap::from([(BENCH_LABEL.to_owned(), run.to_owned())])),
                    ..Default::default()
                };
                async move {
                    docker
                        .create_container(Some(CreateContainerOptionsBuilder::new().name(name).build()), body)
                        .await?;
                    docker.start_container(name, None).await?;
                    anyhow::Ok(())
                }
            }),
        )
        .await?;
        let filters = HashMap::from([
            ("type", vec!["container".to_owned()]),
            ("event", vec!["die".to_owned()]),
            ("label", vec![format!("{BENCH_LABEL}={run}")]),
        ]);
        let mut stream = docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build())).boxed();
        let reactor_docker = docker.clone();
        let prefix = "bf".to_owned();
        let reactor = tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let name = event
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|a| a.get("name").cloned())
                    .unwrap_or_default();
                if name.starts_with(&prefix) {
                    if let Err(error) = reactor_docker.start_container(&name, None).await {
                        eprintln!("bench floor: start {name}: {error}");
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(Floor { names, reactor })
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.reactor.abort();
    }
}
