//! The agent's side of the one-call recreate: `POST /api/v1/namespaces/{ns}/containers/{name}/recreate`
//! carried out by the executor's [`Executor::recreate_any`] on this agent's Docker host.
//!
//! The container recreated is the one named `name` (a spec's container is named `metadata.name`),
//! managed by kedge or not. A kedge container of another spec holding that name is refused, so a
//! namespace can never recreate another namespace's container. The call blocks until the recreate
//! is proven or rolled back; the answer lists the steps it went through.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::RecreateHandler;
use crate::docker::{labels, DockerClient};
use crate::executor::{Executor, RecreateProgress, RecreateStrategy};
use crate::store::BoxFuture;

/// Installs as `ApiState.recreate`: `Some(updater::recreate_handler(docker.clone()))`.
pub fn recreate_handler(docker: DockerClient) -> Arc<dyn RecreateHandler> {
    Arc::new(ExecutorRecreateHandler { executor: Executor::new(docker) })
}

/// Recreates with the executor's safe recreate (rollback included).
struct ExecutorRecreateHandler {
    executor: Executor,
}

impl RecreateHandler for ExecutorRecreateHandler {
    fn recreate<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        pull: bool,
    ) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let container = self
                .executor
                .docker()
                .inspect_container(name)
                .await
                .map_err(|e| format!("cannot inspect container {name}: {e}"))?
                .ok_or_else(|| format!("no container {name:?} on this host"))?;
            let expected_key = format!("{namespace}/{name}");
            if let Some(key) = labels::key(&container.labels) {
                if key != expected_key {
                    return Err(format!("container {name:?} belongs to spec {key}, not {expected_key}"));
                }
            }
            let strategy = RecreateStrategy { pull, ..RecreateStrategy::default() };
            // The steps taken, for the answer: a script sees what happened without a second call.
            let mut steps = Vec::<String>::new();
            let mut on_progress = |event: RecreateProgress| {
                if let RecreateProgress::Step(step) = event {
                    steps.push(format!("{step:?}"));
                }
            };
            let outcome = self.executor.recreate_any(name, &strategy, &mut on_progress).await;
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
                Err(error) => Err(format!(
                    "{} ({}; steps: {})",
                    crate::error_chain(&error),
                    error.reason(),
                    steps.join(", ")
                )),
            }
        })
    }
}
