//! The upgrade helper: a short-lived container that replaces an agent's container by one on the new
//! image (`kedge upgrade-helper --container NAME --image IMAGE --timeout SECONDS`).
//!
//! An agent cannot replace its own container: stopping it stops the agent midway. So the agent
//! starts this helper ([`helper_config`]) with the Docker socket it uses itself, and the helper runs
//! the executor's one-call recreate of any container ([`Executor::recreate_any_on`]): the agent's
//! declared configuration on the new image, stop-first, the old container renamed aside, then the
//! wait for the new one to prove itself, and rollback to the very same old container otherwise.
//!
//! Proof is the new container turning **healthy**: kedge's image has a HEALTHCHECK
//! (`kedge healthcheck`) that passes once the agent's heartbeat has reached the store, i.e. once
//! the new agent reported in. A new agent that exits, turns unhealthy, or is not healthy within the
//! timeout is rolled back. (A container without a healthcheck must merely still run after the
//! timeout: a weaker proof, see docs/upgrades.md.)
//!
//! The helper runs the image the agent runs **now** (by image ID), not the new one: the code that
//! replaces and, above all, restores the agent is code known to run on this host, so a broken new
//! image cannot break its own rollback.
//!
//! The helper needs no store: it prints one [`HelperResult`] line on stdout and exits 0. The agent
//! then running (the new one, or the old one restored) reads that line from the helper's logs,
//! reports it, and removes the helper. Only a crash exits non-zero, and then Docker's restart policy
//! (`on-failure`) starts the helper again, which finishes or rolls back the interrupted recreate
//! from names and labels (`recover_name`) and reports that, without trying a second time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::docker::{
    ContainerConfig, DockerClient, Healthcheck, MountSource, NetworkAttachment, ObservedContainer,
    RestartPolicy, RestartPolicyKind,
};
use crate::executor::{
    Executor, ExecutorError, RecoveryOutcome, RecreateFailure, RecreateOrder, RecreateStrategy,
};

/// Marks a helper container; the value is the host whose agent it replaces.
pub const HELPER_LABEL: &str = "io.kedge.upgrade-helper";
/// The campaign a helper works for.
pub const CAMPAIGN_LABEL: &str = "io.kedge.upgrade-campaign";
/// The `kind` of the result line.
pub const RESULT_KIND: &str = "UpgradeHelperResult";

/// How a helper's work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelperOutcome {
    /// The new agent's container runs and proved itself; the old one is removed.
    Succeeded,
    /// The new agent failed; the old container runs again with its original ID.
    RolledBack,
    /// Neither: e.g. no such container, or the rollback itself failed (see the message).
    Failed,
}

/// The one line a helper prints on stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelperResult {
    pub kind: String,
    pub outcome: HelperOutcome,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_id: Option<String>,
    pub duration_seconds: f64,
}

/// The last result line in a helper's output, if it printed one.
pub fn parse_result(output: &str) -> Option<HelperResult> {
    output
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<HelperResult>(line.trim()).ok())
        .find(|result| result.kind == RESULT_KIND)
}

/// Replaces container `name` by one on `image` and waits up to `timeout` for it to prove itself
/// (see the module docs). Never fails: every ending is a [`HelperResult`].
pub async fn run(docker: DockerClient, name: &str, image: &str, timeout: Duration) -> HelperResult {
    let started = tokio::time::Instant::now();
    let executor = Executor::new(docker);
    let strategy = RecreateStrategy {
        pull: false,
        health_timeout: timeout,
        running_grace: timeout,
        min_ready_healthy: Duration::ZERO,
        stop_timeout: None,
        remove_old_image: false,
        order: RecreateOrder::StopFirst,
    };
    let result = |outcome, message: String, old_id, new_id| HelperResult {
        kind: RESULT_KIND.to_owned(),
        outcome,
        message,
        old_id,
        new_id,
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    // A helper restarted after a crash: finish or undo the interrupted recreate, report how that
    // ended, and do not try again (a crash that happens every time would otherwise leave the host
    // without an agent once Docker stops restarting the helper).
    match executor.recover_name(name, &strategy).await {
        Ok(report) => {
            if let Some((_, outcome)) = report.outcomes.last() {
                return match outcome {
                    RecoveryOutcome::RolledBack { old_id } => result(
                        HelperOutcome::RolledBack,
                        "the upgrade helper crashed midway; the old agent was restored".to_owned(),
                        Some(old_id.clone()),
                        None,
                    ),
                    RecoveryOutcome::Completed { new_id, removed_old_id } => result(
                        HelperOutcome::Succeeded,
                        format!("{name} now runs {image} (completed after the upgrade helper crashed)"),
                        Some(removed_old_id.clone()),
                        Some(new_id.clone()),
                    ),
                    // Not made by the helper (always stop-first), but finished the same way; the
                    // helper exits next, so it waits for the old container to go.
                    RecoveryOutcome::Retiring { old_id } => {
                        executor.wait_retired().await;
                        result(
                            HelperOutcome::Succeeded,
                            format!("{name} now runs {image} (completed after the upgrade helper crashed)"),
                            Some(old_id.clone()),
                            None,
                        )
                    }
                    RecoveryOutcome::FinishedForward { new_id } => result(
                        HelperOutcome::Succeeded,
                        format!("{name} now runs {image} (finished after the upgrade helper crashed)"),
                        None,
                        Some(new_id.clone()),
                    ),
                };
            }
        }
        Err(error) => return result(HelperOutcome::Failed, crate::error_chain(&error), None, None),
    }
    // If the container already runs the new image (a helper restarted after its last step, or a
    // campaign run again), the work is done.
    match executor.docker().inspect_container(name).await {
        Ok(Some(current)) if current.image == image && current.state.running => {
            return result(
                HelperOutcome::Succeeded,
                format!("container {name} already runs {image}"),
                None,
                Some(current.id),
            );
        }
        Ok(Some(_)) => {}
        Ok(None) => {
            return result(HelperOutcome::Failed, format!("no container {name:?} on this engine"), None, None)
        }
        Err(error) => return result(HelperOutcome::Failed, crate::error_chain(&error), None, None),
    }
    let mut progress = |event: crate::executor::RecreateProgress| tracing::info!(?event, "upgrade helper");
    match executor.recreate_any_on(name, Some(image), &strategy, &mut progress).await {
        Ok(report) => result(
            HelperOutcome::Succeeded,
            format!("{name} now runs {image}"),
            report.old_id,
            Some(report.new_id),
        ),
        Err(ExecutorError::RolledBack { old_id, failure, .. }) => {
            result(HelperOutcome::RolledBack, failure_message(&failure, timeout), Some(old_id), None)
        }
        Err(error) => result(HelperOutcome::Failed, crate::error_chain(&error), None, None),
    }
}

/// Why a new agent was rolled back, in words for `kedge get hosts`: the exit code or health and
/// the last line it logged.
pub fn failure_message(failure: &RecreateFailure, timeout: Duration) -> String {
    // The last line that names an error (a usage error ends with a hint line), else the last line.
    let last_line = |logs: &str| {
        let lines: Vec<&str> = logs.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
        let error = lines.iter().rev().find(|line| {
            let lower = line.to_ascii_lowercase();
            lower.contains("error") || lower.contains("panicked")
        });
        error.or(lines.last()).map(|line| format!(": {line}"))
    };
    match failure {
        RecreateFailure::Exited { exit_code: Some(code), logs } => {
            format!("new agent exited with code {code}{}", last_line(logs).unwrap_or_default())
        }
        RecreateFailure::Exited { exit_code: None, logs } => {
            format!("new agent stopped{}", last_line(logs).unwrap_or_default())
        }
        RecreateFailure::Unhealthy { health, logs, .. } => format!(
            "new agent did not report in within {}s (it was {}){}",
            timeout.as_secs(),
            crate::executor::health_words(*health),
            last_line(logs).unwrap_or_default()
        ),
        RecreateFailure::Step { step, message } => {
            format!("{} failed: {message}", crate::executor::step_words(*step))
        }
    }
}

/// The helper container an agent starts to replace its own container `own` by one on `target`.
///
/// It runs `helper_image` (the image ID the agent runs now), reaches the engine the way the agent
/// does (its `DOCKER_HOST` and the binds that carry the socket; with a TCP `DOCKER_HOST`, the
/// agent's networks by name), has no healthcheck (the image's would mark it unhealthy), and
/// restarts only after a crash.
pub fn helper_config(
    own: &ObservedContainer,
    host: &str,
    campaign: &str,
    helper_image: &str,
    target: &str,
    timeout: Duration,
) -> ContainerConfig {
    let docker_host = own.env.iter().find_map(|e| e.strip_prefix("DOCKER_HOST=")).map(str::to_owned);
    let socket = docker_host
        .as_deref()
        .unwrap_or("unix:///var/run/docker.sock")
        .strip_prefix("unix://")
        .map(str::to_owned);
    let mounts = match &socket {
        Some(socket) => own
            .mounts
            .iter()
            .filter(|m| matches!(m.source, MountSource::Bind { .. }))
            .filter(|m| {
                socket == &m.target || socket.starts_with(&format!("{}/", m.target.trim_end_matches('/')))
            })
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let networks = if socket.is_some() {
        Vec::new()
    } else {
        own.networks
            .iter()
            .map(|n| NetworkAttachment { network: n.network.clone(), ..NetworkAttachment::default() })
            .collect()
    };
    let labels = BTreeMap::from([
        (HELPER_LABEL.to_owned(), host.to_owned()),
        (CAMPAIGN_LABEL.to_owned(), campaign.to_owned()),
    ]);
    let mut env: Vec<String> = docker_host.map(|h| format!("DOCKER_HOST={h}")).into_iter().collect();
    // The crash tests make the helper crash at a step of its recreate (never in a release build).
    if crate::executor::failpoint::compiled() {
        let prefix = format!("{}=", crate::executor::failpoint::ENV);
        env.extend(own.env.iter().filter(|e| e.starts_with(&prefix)).cloned());
    }
    ContainerConfig {
        name: helper_name(host, campaign),
        image: helper_image.to_owned(),
        env: env.into(),
        cmd: Some(vec![
            "upgrade-helper".to_owned(),
            "--container".to_owned(),
            own.name.clone(),
            "--image".to_owned(),
            target.to_owned(),
            "--timeout".to_owned(),
            timeout.as_secs().to_string(),
        ]),
        entrypoint: Some(vec!["/kedge".to_owned()]),
        user: own.user.clone(),
        labels,
        mounts,
        restart_policy: Some(RestartPolicy { kind: RestartPolicyKind::OnFailure, max_retries: 3 }),
        healthcheck: Some(Healthcheck { test: vec!["NONE".to_owned()], ..Healthcheck::default() }),
        networks,
        ..ContainerConfig::default()
    }
}

/// `kedge-upgrade-<host>-<campaign>`, with characters Docker refuses in names replaced.
pub fn helper_name(host: &str, campaign: &str) -> String {
    let clean = |text: &str| -> String {
        text.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '-' }).collect()
    };
    format!("kedge-upgrade-{}-{}", clean(host), clean(campaign))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{Mount, ObservedNetwork};

    #[test]
    fn the_result_line_is_found_after_the_logs() {
        let line = serde_json::to_string(&HelperResult {
            kind: RESULT_KIND.into(),
            outcome: HelperOutcome::RolledBack,
            message: "new agent exited with code 2".into(),
            old_id: Some("abc".into()),
            new_id: None,
            duration_seconds: 1.5,
        })
        .unwrap();
        let output = format!("2026 INFO upgrade helper\n{line}\n");
        assert_eq!(parse_result(&output).unwrap().outcome, HelperOutcome::RolledBack);
        assert_eq!(parse_result("killed\n"), None);
    }

    #[test]
    fn rollback_reasons_name_the_exit_code_and_last_line() {
        let failure = RecreateFailure::Exited {
            exit_code: Some(2),
            logs: "error: unexpected argument '--no-such-flag' found\n\nUsage: kedge\n\nFor more information, try '--help'.\n".into(),
        };
        assert_eq!(
            failure_message(&failure, Duration::from_secs(60)),
            "new agent exited with code 2: error: unexpected argument '--no-such-flag' found"
        );
        let failure = RecreateFailure::Exited { exit_code: Some(1), logs: "starting\nbye\n".into() };
        assert_eq!(failure_message(&failure, Duration::from_secs(60)), "new agent exited with code 1: bye");
    }

    #[test]
    fn the_helper_reaches_the_engine_as_the_agent_does() {
        let socket = Mount {
            source: MountSource::Bind { host_path: "/run/docker.sock".into() },
            target: "/var/run/docker.sock".into(),
            read_only: false,
        };
        let state = Mount {
            source: MountSource::Bind { host_path: "/var/lib/kedge".into() },
            target: "/var/lib/kedge".into(),
            read_only: false,
        };
        let own = ObservedContainer {
            id: "0123".into(),
            name: "kedge-agent".into(),
            env: vec!["DOCKER_HOST=unix:///var/run/docker.sock".into(), "KEDGE_STORE=etcd://x".into()].into(),
            mounts: vec![socket.clone(), state],
            networks: vec![ObservedNetwork { network: "host".into(), ..Default::default() }],
            ..Default::default()
        };
        let config = helper_config(&own, "h/1", "c1", "sha256:old", "kedge:v2", Duration::from_secs(90));
        assert_eq!(config.name, "kedge-upgrade-h-1-c1");
        assert_eq!(config.image, "sha256:old");
        assert_eq!(config.mounts, vec![socket]);
        assert_eq!(config.env, vec!["DOCKER_HOST=unix:///var/run/docker.sock".to_string()]);
        assert!(config.networks.is_empty());
        assert_eq!(
            config.cmd.unwrap().join(" "),
            "upgrade-helper --container kedge-agent --image kedge:v2 --timeout 90"
        );
        assert_eq!(config.labels.get(HELPER_LABEL).map(String::as_str), Some("h/1"));
    }
}
