//! Whether an applied object has come to be what was applied: `kedge apply --wait` and
//! `kedge rollout status` ask this of each object's answer from the API until it is done, has failed
//! for good, or the time is up.
//!
//! Read from the JSON the API answers (the same for every kind): a status counts only once it
//! describes the applied generation (`status.observedGeneration`), so an old Ready never passes for
//! a new spec.

use std::time::Duration;

use serde_json::Value;

use crate::client::Client;
use crate::error::{CliError, CliResult, Exit};

/// How often the objects are read again while waiting.
const POLL: Duration = Duration::from_millis(500);

/// Where an object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    Done,
    /// Still moving; what it is waiting for.
    Waiting(String),
    /// Will not get there without a change (a rolled-back update, a failed revision, a stalled source).
    Failed(String),
}

/// One applied object to wait for.
#[derive(Debug, Clone)]
pub(crate) struct Awaited {
    /// `container`, `containerset` or `gitsource`.
    pub word: &'static str,
    /// The API path of the object.
    pub path: String,
    pub namespace: String,
    pub name: String,
    /// The generation the apply produced.
    pub generation: i64,
}

/// The progress of `object` (as the API answers it) of kind `word` towards `generation`.
pub(crate) fn progress(word: &str, object: &Value, generation: i64) -> Progress {
    let status = &object["status"];
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        let who = match word {
            "containerset" => "the scheduler",
            "gitsource" => "the leader",
            _ => "its agent",
        };
        return Progress::Waiting(format!("generation {generation} not yet seen by {who}"));
    }
    match word {
        "containerset" => set_progress(object),
        "gitsource" => source_progress(status),
        _ => container_progress(object),
    }
}

fn container_progress(object: &Value) -> Progress {
    let status = &object["status"];
    let synced = condition(status, "Synced");
    if let Some(("False", reason, message)) = synced {
        if reason == "RolledBack" {
            return Progress::Failed(format!("the update was rolled back: {message}"));
        }
    }
    // A spec that asks for a stopped container is done once it is in sync; Ready stays False.
    let stopped = object["spec"]["runState"].as_str() == Some("stopped");
    let ready = condition(status, "Ready");
    match (ready, synced) {
        (_, Some(("True", _, _))) if stopped => Progress::Done,
        (Some(("True", _, _)), Some(("True", _, _))) => Progress::Done,
        _ => Progress::Waiting(format!("{}, {}", describe("Ready", ready), describe("Synced", synced))),
    }
}

fn set_progress(object: &Value) -> Progress {
    let status = &object["status"];
    let want = object["spec"]["replicas"].as_u64().unwrap_or(1);
    let failed = status["failedRevision"].as_str();
    if failed.is_some() && failed == status["updateRevision"].as_str() {
        let message = status["failureMessage"].as_str().unwrap_or("the new revision failed");
        return Progress::Failed(format!("revision {} failed: {message}", failed.unwrap_or_default()));
    }
    let count = |field: &str| status[field].as_u64().unwrap_or(0);
    let (replicas, ready, updated) = (count("replicas"), count("readyReplicas"), count("updatedReplicas"));
    if replicas == want && ready == want && updated == want {
        Progress::Done
    } else {
        Progress::Waiting(format!("{ready}/{want} ready, {updated}/{want} up to date, {replicas} in all"))
    }
}

fn source_progress(status: &Value) -> Progress {
    let ready = condition(status, "Ready");
    match (ready, condition(status, "Stalled")) {
        (_, Some(("True", _, message))) => Progress::Failed(format!("stalled: {message}")),
        (Some(("True", _, _)), _) => Progress::Done,
        _ => Progress::Waiting(describe("Ready", ready)),
    }
}

/// A condition's (status, reason, message).
fn condition<'a>(status: &'a Value, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let found = status["conditions"].as_array()?.iter().find(|c| c["type"].as_str() == Some(kind))?;
    let text = |field: &str| found[field].as_str().unwrap_or_default();
    Some((text("status"), text("reason"), text("message")))
}

fn describe(kind: &str, condition: Option<(&str, &str, &str)>) -> String {
    match condition {
        Some((status, "", _)) => format!("{kind}={status}"),
        Some((status, reason, _)) => format!("{kind}={status} ({reason})"),
        None => format!("no {kind} condition yet"),
    }
}

/// Reads every object until all are done (exit 0), one has failed (exit 1, naming it), or `timeout`
/// passes (exit 6, naming each that is not done and why). Prints a line as each one gets there.
pub(crate) async fn wait_all(client: &Client, awaited: &[Awaited], timeout: Duration) -> CliResult<Exit> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pending: Vec<(&Awaited, Progress)> =
        awaited.iter().map(|one| (one, Progress::Waiting("not read yet".to_owned()))).collect();
    loop {
        let mut still = Vec::new();
        for (one, last) in pending {
            let now = match client.get(&one.path).await {
                Ok(object) => progress(one.word, &object, one.generation),
                Err(error) if error.exit == Exit::NotFound => {
                    Progress::Failed("deleted while waiting".to_owned())
                }
                // A failed read is not the object's failure: keep the last progress and read again.
                Err(_) => last,
            };
            match now {
                Progress::Done => println!("{}/{} ready", one.word, one.name),
                Progress::Failed(why) => {
                    return Err(CliError::new(
                        Exit::Changes,
                        format!("{}/{} {}: {why}", one.word, one.name, one.namespace),
                    )
                    .hint(format!(
                        "see why with `kedge describe {} {} -n {}`",
                        one.word, one.name, one.namespace
                    )))
                }
                waiting => still.push((one, waiting)),
            }
        }
        if still.is_empty() {
            return Ok(Exit::Ok);
        }
        if tokio::time::Instant::now() >= deadline {
            for (one, progress) in &still {
                if let Progress::Waiting(why) = progress {
                    eprintln!("{}/{} ({}): {why}", one.word, one.name, one.namespace);
                }
            }
            return Err(CliError::new(
                Exit::Timeout,
                format!(
                    "timed out after {timeout:?}: {} of {} object(s) not ready (above)",
                    still.len(),
                    awaited.len()
                ),
            )
            .hint("the objects were applied; `kedge get all` shows where they are"));
        }
        pending = still;
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(observed: i64, ready: &str, synced: (&str, &str)) -> Value {
        json!({"spec": {"image": "x"}, "status": {"observedGeneration": observed, "conditions": [
            {"type": "Ready", "status": ready, "reason": "Running"},
            {"type": "Synced", "status": synced.0, "reason": synced.1, "message": "health check failed"},
        ]}})
    }

    #[test]
    fn a_container_is_done_when_ready_and_synced_at_the_applied_generation() {
        assert_eq!(progress("container", &container(3, "True", ("True", "")), 3), Progress::Done);
        assert_eq!(progress("container", &container(4, "True", ("True", "")), 3), Progress::Done);
        // An old Ready does not pass for the new spec.
        let old = progress("container", &container(2, "True", ("True", "")), 3);
        assert_eq!(old, Progress::Waiting("generation 3 not yet seen by its agent".to_owned()));
        let waiting = progress("container", &container(3, "False", ("False", "Recreating")), 3);
        assert_eq!(waiting, Progress::Waiting("Ready=False (Running), Synced=False (Recreating)".to_owned()));
        assert_eq!(
            progress("container", &json!({"spec": {}}), 0),
            Progress::Waiting("no Ready condition yet, no Synced condition yet".to_owned())
        );
    }

    #[test]
    fn a_rolled_back_update_fails_at_once() {
        let rolled = progress("container", &container(3, "True", ("False", "RolledBack")), 3);
        assert_eq!(rolled, Progress::Failed("the update was rolled back: health check failed".to_owned()));
    }

    #[test]
    fn a_stopped_container_is_done_when_in_sync() {
        let mut stopped = container(1, "False", ("True", ""));
        stopped["spec"]["runState"] = json!("stopped");
        assert_eq!(progress("container", &stopped, 1), Progress::Done);
    }

    #[test]
    fn a_set_is_done_when_every_replica_is_ready_and_up_to_date() {
        let set = |replicas: u64, ready: u64, updated: u64| {
            json!({"spec": {"replicas": 3}, "status": {"observedGeneration": 2, "replicas": replicas,
                "readyReplicas": ready, "updatedReplicas": updated, "updateRevision": "b"}})
        };
        assert_eq!(progress("containerset", &set(3, 3, 3), 2), Progress::Done);
        assert_eq!(
            progress("containerset", &set(4, 3, 2), 2),
            Progress::Waiting("3/3 ready, 2/3 up to date, 4 in all".to_owned())
        );
        let mut failed = set(3, 3, 1);
        failed["status"]["failedRevision"] = json!("b");
        failed["status"]["failureMessage"] = json!("web-1 did not become ready");
        assert_eq!(
            progress("containerset", &failed, 2),
            Progress::Failed("revision b failed: web-1 did not become ready".to_owned())
        );
    }

    #[test]
    fn a_source_is_done_when_ready_and_failed_when_stalled() {
        let source = |ready: &str, stalled: &str| {
            json!({"status": {"observedGeneration": 1, "conditions": [
                {"type": "Ready", "status": ready, "reason": "Synced"},
                {"type": "Stalled", "status": stalled, "message": "specs/a.yaml:3:1: bad"}]}})
        };
        assert_eq!(progress("gitsource", &source("True", "False"), 1), Progress::Done);
        assert_eq!(
            progress("gitsource", &source("False", "True"), 1),
            Progress::Failed("stalled: specs/a.yaml:3:1: bad".to_owned())
        );
    }
}
