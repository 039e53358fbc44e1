//! What the agent tells people about its repairs: event reasons and messages, and the drift a
//! repair of the container's state counts. Pure, so the wording is tested here, including that no
//! message ever shows Rust's debug formatting (`Some(`, `None`, `Struct { field: ... }`).
//!
//! Every repair event says what drifted and what was done: `container was killed (exit 137);
//! started again`, `spec.resources.memory is 100663296, the spec says 67108864; updated in place`.

use kedge_crds::FieldDiff;

use crate::docker::{ContainerStatus, ObservedContainer};
use crate::executor::ActionOutcome;
use crate::planner::Action;
use crate::restarts;

/// The event (reason, message) for one action carried out. `observed` is the container as it was
/// before the reconcile acted; `drift` what the plan found; `why` the plan's reason.
pub fn action_event(
    action: &Action,
    outcome: &ActionOutcome,
    observed: Option<&ObservedContainer>,
    drift: &[FieldDiff],
    why: Option<&str>,
) -> (&'static str, String) {
    let why = why.unwrap_or("the spec asks for it");
    match (action, outcome) {
        (Action::Create { config }, ActionOutcome::Created { id }) => (
            "Created",
            format!("{why}; created container {} ({}) from {}", config.name, short(id), config.image),
        ),
        (Action::Create { config }, _) => ("Created", format!("{why}; created container {}", config.name)),
        (Action::Recreate { reason, .. }, ActionOutcome::Recreated(report)) => {
            let replaced = match &report.old_id {
                Some(old) => format!("container {} replaced {}", short(&report.new_id), short(old)),
                None => format!("container {} created", short(&report.new_id)),
            };
            ("Recreated", format!("{reason}; recreated: {replaced} in {:.1}s", report.duration.as_secs_f64()))
        }
        (Action::Recreate { reason, .. }, _) => ("Recreated", format!("{reason}; recreated")),
        (Action::Start { .. }, _) => ("Started", start_message(observed, why)),
        (Action::Unpause { .. }, _) => ("Unpaused", "container was paused; resumed".to_owned()),
        (Action::Stop { .. }, _) => {
            ("Stopped", "the spec asks for the container to be stopped; stopped".to_owned())
        }
        (Action::Restart { reason, .. }, _) => ("Restarted", format!("{reason}; restarted")),
        (Action::Remove { container }, _) => ("Removed", format!("removed container {}", short(container))),
        (Action::UpdateInPlace { .. }, _) => {
            let fields = describe_drift(drift.iter().filter(|diff| diff.field.starts_with("spec.resources")));
            let fields = if fields.is_empty() { "resource limits differ".to_owned() } else { fields };
            ("UpdatedInPlace", format!("{fields}; updated in place"))
        }
        (Action::ConnectNetwork { network, .. }, _) => {
            ("NetworkConnected", format!("network {} was not connected; connected", network.network))
        }
        (Action::DisconnectNetwork { network, .. }, _) => {
            ("NetworkDisconnected", format!("network {network} is not in the spec; disconnected"))
        }
        (Action::RunExec { exec, .. }, _) => ("ExecRan", format!("ran `{}`", exec.cmd.join(" "))),
        (Action::Pull { image }, _) => ("Pulled", format!("pulled {image}")),
        (Action::RemoveImage { image }, ActionOutcome::ImageRemoved(false)) => {
            ("ImageKept", format!("{why}; image {} is still used by a container, kept", short_image(image)))
        }
        (Action::RemoveImage { image }, _) => {
            ("ImageRemoved", format!("{why}; removed image {}", short_image(image)))
        }
        (Action::EnsureNetwork { network }, _) => ("NetworkEnsured", format!("network {network} exists")),
        (Action::Nothing, _) => ("Nothing", "nothing to do".to_owned()),
    }
}

/// Why a container was started, from how it stood before, and that it was.
fn start_message(observed: Option<&ObservedContainer>, why: &str) -> String {
    match observed {
        Some(container) if container.state.status == ContainerStatus::Created => {
            "container was never started; started".to_owned()
        }
        Some(container)
            if matches!(container.state.status, ContainerStatus::Exited | ContainerStatus::Dead) =>
        {
            format!("{}; started again", restarts::describe_exit(container))
        }
        _ => format!("{why}; started"),
    }
}

/// Field differences in words: `spec.image is app:v1, the spec says app:v2`.
pub fn describe_drift<'a>(drift: impl IntoIterator<Item = &'a FieldDiff>) -> String {
    drift
        .into_iter()
        .map(|diff| match (&diff.actual, &diff.desired) {
            (Some(actual), Some(desired)) => format!("{} is {actual}, the spec says {desired}", diff.field),
            (Some(actual), None) => format!("{} is {actual}, the spec sets none", diff.field),
            (None, Some(desired)) => format!("{} is missing, the spec says {desired}", diff.field),
            (None, None) => format!("{} differs", diff.field),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The drift of a container's run state that a start or a resume repairs (`spec.runState`:
/// wanted `running`, found `exited (code 137)` or `paused`), for the DRIFT count.
pub fn state_drift(observed: &ObservedContainer) -> Option<FieldDiff> {
    let actual = match observed.state.status {
        ContainerStatus::Paused => "paused".to_owned(),
        ContainerStatus::Exited | ContainerStatus::Dead if !observed.state.running => {
            match observed.state.exit_code {
                Some(code) => format!("exited (code {code})"),
                None => "exited".to_owned(),
            }
        }
        _ => return None,
    };
    Some(FieldDiff { field: "spec.runState".into(), desired: Some("running".into()), actual: Some(actual) })
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn short_image(id: &str) -> &str {
    short(id.strip_prefix("sha256:").unwrap_or(id))
}

/// Rust's debug formatting, which no message people read may show.
#[cfg(test)]
pub(crate) fn shows_debug_formatting(text: &str) -> bool {
    let struct_like = text.split_whitespace().collect::<Vec<_>>().windows(3).any(|words| {
        words[0].chars().next().is_some_and(char::is_uppercase) && words[1] == "{" && words[2].ends_with(':')
    });
    text.contains("Some(") || text.contains("None") || struct_like || text.contains("\\\"")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::docker::{ContainerConfig, ContainerState, ExecSpec, NetworkAttachment, Resources};
    use crate::executor::{RecreateFailure, RecreateReport, RecreateStep, RecreateStrategy};

    fn exited(code: i64) -> ObservedContainer {
        ObservedContainer {
            id: "0123456789abcdef".into(),
            state: ContainerState {
                status: ContainerStatus::Exited,
                exit_code: Some(code),
                ..ContainerState::default()
            },
            ..ObservedContainer::default()
        }
    }

    fn memory_drift() -> Vec<FieldDiff> {
        vec![FieldDiff {
            field: "spec.resources.memory".into(),
            desired: Some("67108864".into()),
            actual: Some("100663296".into()),
        }]
    }

    /// Every action's message, for the debug-formatting scan.
    fn every_message() -> Vec<String> {
        let killed = exited(137);
        let config = ContainerConfig {
            name: "web".into(),
            image: "kedge-test/web:latest".into(),
            ..Default::default()
        };
        let report = RecreateReport {
            name: "web".into(),
            recreate_id: "r1".into(),
            old_id: Some("aaaaaaaaaaaaaaaa".into()),
            new_id: "bbbbbbbbbbbbbbbb".into(),
            old_image_removed: false,
            duration: Duration::from_millis(3200),
            old_image_id: Some("sha256:aaaa".into()),
            order: Some(crate::executor::RecreateOrder::StartFirst),
            order_reason: "start-first: the two containers share nothing exclusive".into(),
            ready_after: Duration::from_millis(2100),
        };
        let cases: Vec<(Action, ActionOutcome)> = vec![
            (
                Action::Create { config: config.clone() },
                ActionOutcome::Created { id: "cccccccccccccccc".into() },
            ),
            (
                Action::Recreate {
                    config,
                    reason: "spec.image cannot change in place".into(),
                    strategy: RecreateStrategy::default(),
                },
                ActionOutcome::Recreated(report),
            ),
            (Action::Start { container: killed.id.clone() }, ActionOutcome::Done),
            (Action::Unpause { container: killed.id.clone() }, ActionOutcome::Done),
            (Action::Stop { container: killed.id.clone(), timeout: None }, ActionOutcome::Done),
            (
                Action::UpdateInPlace {
                    container: killed.id.clone(),
                    resources: Resources { memory: Some(64 << 20), ..Default::default() },
                },
                ActionOutcome::Done,
            ),
            (
                Action::ConnectNetwork {
                    container: killed.id.clone(),
                    network: NetworkAttachment { network: "backend".into(), ..Default::default() },
                },
                ActionOutcome::Done,
            ),
            (
                Action::DisconnectNetwork { container: killed.id.clone(), network: "old".into() },
                ActionOutcome::Done,
            ),
            (
                Action::RunExec {
                    container: killed.id.clone(),
                    exec: ExecSpec { cmd: vec!["touch".into(), "/tmp/x".into()], ..Default::default() },
                    unless_running: false,
                },
                ActionOutcome::Exec(None),
            ),
            (Action::Pull { image: "kedge-test/web:latest".into() }, ActionOutcome::Done),
            (Action::Remove { container: killed.id.clone() }, ActionOutcome::Done),
        ];
        let mut messages: Vec<String> = cases
            .iter()
            .map(|(action, outcome)| action_event(action, outcome, Some(&killed), &memory_drift(), None).1)
            .collect();
        let failures = [
            RecreateFailure::Step { step: RecreateStep::RenameNew, message: "not found".into() },
            RecreateFailure::Exited { exit_code: Some(3), logs: "boom".into() },
            RecreateFailure::Exited { exit_code: None, logs: String::new() },
            RecreateFailure::Unhealthy {
                health: crate::docker::HealthStatus::Unhealthy,
                after: Duration::from_secs(60),
                logs: String::new(),
            },
        ];
        messages.extend(failures.iter().map(ToString::to_string));
        messages.push(describe_drift(&memory_drift()));
        messages
    }

    #[test]
    fn no_message_shows_debug_formatting() {
        for message in every_message() {
            assert!(!shows_debug_formatting(&message), "debug formatting in {message:?}");
        }
        assert!(shows_debug_formatting("updated: Resources { nano_cpus: Some(5) }"));
        assert!(shows_debug_formatting("exited (code None)"));
    }

    #[test]
    fn repairs_say_what_drifted_and_what_was_done() {
        let killed = exited(137);
        let start = Action::Start { container: killed.id.clone() };
        let (reason, message) = action_event(&start, &ActionOutcome::Done, Some(&killed), &[], None);
        assert_eq!((reason, message.as_str()), ("Started", "container was killed (exit 137); started again"));
        let update = Action::UpdateInPlace { container: "x".into(), resources: Resources::default() };
        let (_, message) = action_event(&update, &ActionOutcome::Done, Some(&killed), &memory_drift(), None);
        assert_eq!(message, "spec.resources.memory is 100663296, the spec says 67108864; updated in place");
        let unpause = Action::Unpause { container: "x".into() };
        assert_eq!(
            action_event(&unpause, &ActionOutcome::Done, None, &[], None).1,
            "container was paused; resumed"
        );
    }

    #[test]
    fn a_start_or_resume_counts_the_run_state_as_drift() {
        let diff = state_drift(&exited(137)).unwrap();
        assert_eq!(
            (diff.field.as_str(), diff.actual.as_deref()),
            ("spec.runState", Some("exited (code 137)"))
        );
        let mut paused = exited(0);
        paused.state.status = ContainerStatus::Paused;
        paused.state.running = true;
        assert_eq!(state_drift(&paused).unwrap().actual.as_deref(), Some("paused"));
        let mut running = exited(0);
        running.state.status = ContainerStatus::Running;
        running.state.running = true;
        assert_eq!(state_drift(&running), None);
    }
}
