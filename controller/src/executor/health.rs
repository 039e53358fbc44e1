//! Waiting for a started container to prove itself: healthy by its Docker healthcheck, or still
//! running after a grace period when it has none.
//!
//! The agent's recreates take both waits from the spec's `minReadySeconds`: without a healthcheck
//! the container must run that long (1 s when the spec does not say); with one it must be healthy
//! and, when the spec asks, have run that long since its start. A container that exits or turns
//! unhealthy meanwhile fails the wait at once.

use std::time::Duration;

use tokio::time::Instant;

use super::progress::{RecreateFailure, RecreateProgress};
use crate::docker::{DockerError, Engine, HealthStatus, LogStream};
use crate::planner::RecreateStrategy;

/// How often the health status is read while waiting for `healthy`.
const HEALTH_POLL: Duration = Duration::from_millis(200);
/// How long a container caught running between two crashes is given to exit again, so that the
/// failure can say its exit code.
const RESTARTED_EXIT_WAIT: Duration = Duration::from_secs(5);
/// How many log lines a failure report carries.
const LOG_TAIL: usize = 20;

/// Waits until container `id` is healthy and has run `strategy.min_ready_healthy` (with a
/// healthcheck) or is still running after `strategy.running_grace` (without). Fails fast when it
/// exits or turns unhealthy.
pub(crate) async fn wait_until_proven(
    docker: &dyn Engine,
    id: &str,
    strategy: &RecreateStrategy,
    progress: &mut (dyn FnMut(RecreateProgress) + Send),
) -> Result<(), WaitError> {
    let observed = docker.inspect_container(id).await?.ok_or_else(|| exited(None, String::new()))?;
    let has_healthcheck = observed.healthcheck.as_ref().is_some_and(|h| !h.is_disabled());
    // A restart policy starts a crashed container again at once: caught between two crashes it
    // runs, so a restart since the wait began counts as the exit it was.
    let restarts = observed.state.restart_count;
    if !has_healthcheck {
        if strategy.running_grace.is_zero() {
            return confirm_running(docker, id, restarts).await;
        }
        // No healthcheck: the engine's wait answers as soon as the container stops; a timeout
        // means it is still running after the grace period.
        return match docker.wait_for_exit(id, strategy.running_grace).await {
            Err(DockerError::Timeout { .. }) => confirm_running(docker, id, restarts).await,
            Ok(code) => Err(exited(Some(code), tail(docker, id).await)),
            Err(other) => Err(other.into()),
        };
    }
    let started = Instant::now();
    // A timeout too long for the clock (a spec or flag of centuries) is as good as none.
    let deadline = started.checked_add(strategy.health_timeout).unwrap_or_else(far_future);
    let mut last = None;
    loop {
        let observed = docker.inspect_container(id).await?.ok_or_else(|| exited(None, String::new()))?;
        if !observed.state.running || observed.state.restarting || observed.state.restart_count > restarts {
            return Err(stopped(docker, id, &observed).await);
        }
        let health = observed.state.health.unwrap_or(HealthStatus::None);
        if last != Some(health) {
            progress(RecreateProgress::Health(health));
            last = Some(health);
        }
        match health {
            HealthStatus::Healthy if started.elapsed() >= strategy.min_ready_healthy => return Ok(()),
            // Healthy, but not yet for as long as the spec asks: keep watching it, whatever the
            // health timeout (which bounds only the wait for a first `healthy`).
            HealthStatus::Healthy => {
                let left = strategy.min_ready_healthy.saturating_sub(started.elapsed());
                tokio::time::sleep(HEALTH_POLL.min(left)).await;
                continue;
            }
            HealthStatus::Unhealthy => {
                return Err(WaitError::Failed(RecreateFailure::Unhealthy {
                    health,
                    after: started.elapsed(),
                    logs: tail(docker, id).await,
                }))
            }
            HealthStatus::Starting | HealthStatus::None => {}
        }
        if Instant::now() >= deadline {
            return Err(WaitError::Failed(RecreateFailure::Unhealthy {
                health,
                after: started.elapsed(),
                logs: tail(docker, id).await,
            }));
        }
        tokio::time::sleep(HEALTH_POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// A deadline that will not come: about thirty years from now.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(30 * 365 * 86_400)
}

/// Still running, and not restarted since the wait began (`restarts` then).
async fn confirm_running(docker: &dyn Engine, id: &str, restarts: i64) -> Result<(), WaitError> {
    let observed = docker.inspect_container(id).await?.ok_or_else(|| exited(None, String::new()))?;
    if observed.state.running && !observed.state.restarting && observed.state.restart_count <= restarts {
        Ok(())
    } else {
        Err(stopped(docker, id, &observed).await)
    }
}

/// The failure of a container that stopped (or restarted) during the wait, with its exit code. One
/// its restart policy started again is running, and a running container's `ExitCode` is 0 whatever
/// its last exit was: the code is then taken from its next exit, which a crash loop soon makes
/// (within [`RESTARTED_EXIT_WAIT`], else it is not known).
async fn stopped(docker: &dyn Engine, id: &str, observed: &crate::docker::ObservedContainer) -> WaitError {
    // Restarting (the engine waits to start it again) keeps the last exit's code.
    let exit_code = if observed.state.running && !observed.state.restarting {
        docker.wait_for_exit(id, RESTARTED_EXIT_WAIT).await.ok()
    } else {
        observed.state.exit_code
    };
    exited(exit_code, tail(docker, id).await)
}

fn exited(exit_code: Option<i64>, logs: String) -> WaitError {
    WaitError::Failed(RecreateFailure::Exited { exit_code, logs })
}

/// The last log lines, for the failure report; empty when they cannot be read.
async fn tail(docker: &dyn Engine, id: &str) -> String {
    match docker.logs(id, LOG_TAIL).await {
        Ok(lines) => lines
            .iter()
            .map(|l| match l.stream {
                LogStream::Stdout => l.text.clone(),
                LogStream::Stderr => l.text.clone(),
            })
            .collect::<String>()
            .trim_end()
            .to_string(),
        Err(_) => String::new(),
    }
}

/// Why the wait ended without proof.
#[derive(Debug)]
pub(crate) enum WaitError {
    /// The container failed: exited, or unhealthy.
    Failed(RecreateFailure),
    /// Docker could not be asked.
    Docker(DockerError),
}

impl From<DockerError> for WaitError {
    fn from(e: DockerError) -> Self {
        WaitError::Docker(e)
    }
}
