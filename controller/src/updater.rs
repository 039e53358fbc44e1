//! The agent's side of the one-call recreate: `POST /api/v1/namespaces/{ns}/containers/{name}/recreate`
//! carried out by the executor's [`Executor::recreate_any`] on this agent's Docker host.
//!
//! The container recreated is the one named `name` (a spec's container is named `metadata.name`),
//! managed by kedge or not. A kedge container of another spec holding that name is refused, so a
//! namespace can never recreate another namespace's container. A container this agent manages is
//! recreated in its key's worker (see [`crate::agent::requests`]), never beside the agent's own
//! reconcile or crash recovery; one managed by another host's agent is refused. The call blocks
//! until the recreate is proven or rolled back; the answer lists the steps it went through.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::agent::requests::{AgentRequests, RecreateOutcome};
use crate::api::{RecreateHandler, RecreateOptions, RecreateRejection};
use crate::docker::{labels, DockerClient};
use crate::executor::{Executor, ExecutorError, RecreateProgress, RecreateStrategy};
use crate::store::BoxFuture;

/// A handler without an agent: every container is recreated directly (tests, tools).
pub fn recreate_handler(docker: DockerClient) -> Arc<dyn RecreateHandler> {
    Arc::new(ExecutorRecreateHandler { executor: Executor::new(docker), agent: None })
}

/// The agent's handler: the containers of `host` go through the agent's `requests`.
pub fn agent_recreate_handler(
    docker: DockerClient,
    host: String,
    requests: Arc<AgentRequests>,
) -> Arc<dyn RecreateHandler> {
    Arc::new(ExecutorRecreateHandler { executor: Executor::new(docker), agent: Some((host, requests)) })
}

/// Recreates with the executor's safe recreate (rollback included).
struct ExecutorRecreateHandler {
    executor: Executor,
    /// This agent's host and its work queue's requests.
    agent: Option<(String, Arc<AgentRequests>)>,
}

impl RecreateHandler for ExecutorRecreateHandler {
    fn recreate<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        options: RecreateOptions,
    ) -> BoxFuture<'a, Result<Value, RecreateRejection>> {
        Box::pin(async move {
            let reject = |status: StatusCode, reason: &str, message: String| RecreateRejection {
                status,
                reason: reason.to_string(),
                message,
            };
            let container = self
                .executor
                .docker()
                .inspect_container(name)
                .await
                .map_err(|e| {
                    reject(
                        StatusCode::CONFLICT,
                        "DockerError",
                        format!("cannot inspect container {name}: {e}"),
                    )
                })?
                .ok_or_else(|| {
                    reject(StatusCode::CONFLICT, "NotFound", format!("no container {name} on this host"))
                })?;
            let expected_key = format!("{namespace}/{name}");
            let key = labels::key(&container.labels).map(str::to_string);
            if let Some(key) = &key {
                if *key != expected_key {
                    return Err(reject(
                        StatusCode::CONFLICT,
                        "ForeignContainer",
                        format!("container {name} belongs to spec {key}, not {expected_key}"),
                    ));
                }
            }
            let defaults = RecreateStrategy::default();
            let strategy = RecreateStrategy {
                pull: options.pull,
                remove_old_image: options.cleanup,
                health_timeout: options.health_timeout.unwrap_or(defaults.health_timeout),
                running_grace: options.running_grace.unwrap_or(defaults.running_grace),
                ..defaults
            };
            let (outcome, steps) = match (&self.agent, key) {
                (Some((host, requests)), Some(key)) => {
                    let owner = container.labels.get(labels::HOST).map(String::as_str).unwrap_or("");
                    if owner != host {
                        return Err(reject(
                            StatusCode::CONFLICT,
                            "OtherHost",
                            format!("container {name} is managed by the agent of host {owner}, not {host}"),
                        ));
                    }
                    requests.recreate(&key, name, strategy).await.map_err(|e| {
                        reject(StatusCode::SERVICE_UNAVAILABLE, "AgentNotRunning", e.to_string())
                    })?
                }
                _ => self.recreate_directly(name, &strategy).await,
            };
            let steps: Vec<String> = steps.iter().map(|step| format!("{step:?}")).collect();
            match outcome {
                Ok(report) => Ok(json!({
                    "kind": "RecreateReport",
                    "name": report.name,
                    "namespace": namespace,
                    "recreateId": report.recreate_id,
                    "oldId": report.old_id,
                    "newId": report.new_id,
                    "oldImageRemoved": report.old_image_removed,
                    "durationSeconds": report.duration.as_secs_f64(),
                    "steps": steps,
                })),
                Err(error) => Err(reject(
                    StatusCode::CONFLICT,
                    error.reason(),
                    format!("{} (steps: {})", crate::error_chain(&error), steps.join(", ")),
                )),
            }
        })
    }
}

impl ExecutorRecreateHandler {
    async fn recreate_directly(&self, name: &str, strategy: &RecreateStrategy) -> RecreateOutcome {
        // The steps taken, for the answer: a script sees what happened without a second call.
        let mut steps = Vec::new();
        let mut on_progress = |event: RecreateProgress| {
            if let RecreateProgress::Step(step) = event {
                steps.push(step);
            }
        };
        let outcome: Result<_, ExecutorError> =
            self.executor.recreate_any(name, strategy, &mut on_progress).await;
        (outcome, steps)
    }
}
