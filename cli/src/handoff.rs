//! One writer per container: `kedge recreate` and `kedge check --autoupdate` of a container kedge
//! manages hand the recreate to the owning agent (`POST .../recreate`), whose key's worker carries it
//! out, and wait for the outcome. Done straight against the engine, the recreate would race the
//! agent's own reconcile, which takes the half-done recreate for a crash and undoes it.
//!
//! Exit codes are those of the direct recreate: 0 done, 3 no such container, 4 a conflict (another
//! spec's or host's container, a stray temporary container), 5 rolled back or failed, and 5 when
//! the agent cannot be reached (`--direct` recreates without it).

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::base::connect;
use crate::client::encode;
use crate::error::{CliError, CliResult, Exit};
use crate::output::short_id;
use crate::types::{RecreateReport, RecreateRequest, Refusal};
use crate::GlobalArgs;

/// What the recreate may do, as the direct recreate's flags say.
#[derive(Debug, Clone, Default)]
pub(crate) struct HandoffOptions {
    pub(crate) pull: bool,
    pub(crate) cleanup: bool,
    pub(crate) health_timeout_seconds: Option<u64>,
    pub(crate) running_grace_seconds: Option<u64>,
}

/// Asks the agent to recreate container `name` of spec `key` (`namespace/name`); answers the report
/// line printed on success.
pub(crate) async fn recreate(
    global: &GlobalArgs,
    key: &str,
    name: &str,
    options: &HandoffOptions,
) -> CliResult<String> {
    let (namespace, _) = key.split_once('/').unwrap_or(("default", key));
    let (resolved, client) = connect(global)?;
    let body = serde_json::to_value(RecreateRequest {
        pull: options.pull,
        cleanup: options.cleanup,
        health_timeout_seconds: options.health_timeout_seconds,
        running_grace_seconds: options.running_grace_seconds,
    })
    .unwrap_or_default();
    let path = format!("/api/v1/namespaces/{}/containers/{}/recreate", encode(namespace), encode(name));
    eprintln!("recreate: {name} is managed by kedge (spec {key}): handing the recreate to its agent");
    let (status, answer) = client
        .answer(Method::POST, &path, Some(&body))
        .await
        .map_err(|error| not_reachable(name, key, &format!("{} ({})", error.message, resolved.server)))?;
    if status.is_success() {
        return Ok(report_line(&answer, name));
    }
    Err(rejection(status, &answer, name, key))
}

/// `container NAME recreated by its agent: OLD -> NEW in 2.3s`.
fn report_line(answer: &Value, name: &str) -> String {
    let report: RecreateReport = serde_json::from_value(answer.clone()).unwrap_or_default();
    let old = report.old_id.as_deref().map_or_else(|| "none".to_owned(), short_id);
    let new = report.new_id.as_deref().map_or_else(|| "?".to_owned(), short_id);
    let seconds = report.duration_seconds.unwrap_or(0.0);
    let cleanup = if report.old_image_removed == Some(true) { " (old image removed)" } else { "" };
    format!("container {name} recreated by its agent: {old} -> {new} in {seconds:.1}s{cleanup}")
}

fn not_reachable(name: &str, key: &str, cause: &str) -> CliError {
    CliError::new(
        Exit::Server,
        format!("container {name} is managed by kedge (spec {key}) and its agent is not reachable: {cause}"),
    )
    .hint(format!(
        "start the agent or point --server/KEDGE_SERVER at it; `--direct` recreates without it, \
         which is safe only while no agent runs for {name}"
    ))
}

/// The agent's refusal or failure, with the direct recreate's exit code for the same reason.
fn rejection(status: StatusCode, answer: &Value, name: &str, key: &str) -> CliError {
    let refusal: Refusal = serde_json::from_value(answer.clone()).unwrap_or_default();
    let message = refusal.error.unwrap_or_else(|| format!("the agent answered {status}"));
    match (status, refusal.reason.as_deref().unwrap_or("")) {
        (StatusCode::SERVICE_UNAVAILABLE, _) => not_reachable(name, key, &message),
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => CliError::new(Exit::Server, message)
            .hint("set KEDGE_TOKEN or a context's token; the agent keeps it in STATE_DIR/api-token"),
        (StatusCode::NOT_IMPLEMENTED, _) => CliError::new(Exit::Server, message)
            .hint(format!("this agent cannot recreate; `--direct` recreates {name} without it")),
        (_, "NotFound") => CliError::new(Exit::NotFound, message)
            .hint(format!("`docker ps -a` lists the containers; was {name} renamed or removed?")),
        (_, "OtherHost") => {
            CliError::new(Exit::Conflict, message).hint("point --server at the agent of the container's host")
        }
        (_, "ForeignContainer" | "NameTaken" | "RecoveryAmbiguous") => CliError::new(Exit::Conflict, message)
            .hint("`docker ps -a` shows the containers holding the name; remove the stray one"),
        (_, "RolledBack" | "NewContainerExited" | "NewContainerUnhealthy" | "RecreateStepFailed") => {
            CliError::new(Exit::Server, message)
                .hint("the old container runs again unchanged; fix the image or config and retry")
        }
        _ => CliError::new(Exit::Server, message).hint("see the agent's log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refusals_get_the_direct_recreates_exit_codes() {
        let check = |status: StatusCode, reason: &str, exit: Exit| {
            let answer = json!({"error": "nope", "reason": reason});
            let error = rejection(status, &answer, "web", "default/web");
            assert_eq!(error.exit as u8, exit as u8, "{status} {reason}");
        };
        check(StatusCode::CONFLICT, "NotFound", Exit::NotFound);
        check(StatusCode::CONFLICT, "RolledBack", Exit::Server);
        check(StatusCode::CONFLICT, "ForeignContainer", Exit::Conflict);
        check(StatusCode::CONFLICT, "OtherHost", Exit::Conflict);
        check(StatusCode::SERVICE_UNAVAILABLE, "AgentNotRunning", Exit::Server);
        check(StatusCode::CONFLICT, "DockerError", Exit::Server);
    }

    #[test]
    fn the_report_line_names_both_containers() {
        let answer =
            json!({"oldId": "0123456789abcdef", "newId": "fedcba9876543210", "durationSeconds": 6.3});
        assert_eq!(
            report_line(&answer, "web"),
            "container web recreated by its agent: 0123456789ab -> fedcba987654 in 6.3s"
        );
    }
}
