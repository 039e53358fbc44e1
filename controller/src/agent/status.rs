//! Status: turns what one reconcile saw and did into a `ContainerStatus` with Kubernetes-style
//! conditions. Pure: the caller passes the previous status and the time.
//!
//! Conditions kedge reports:
//! - `Ready`: the container runs and, if it has a health check, is healthy.
//! - `Synced`: the container matches the spec's current generation.
//! - `Degraded`: reconciling fails and backs off (reason `Stalled`), or a conflict blocks it.
//!
//! A condition's `lastTransitionTime` moves only when its status changes, so a status that says the
//! same thing again compares equal and is not written (the agent writes only changes).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kedge_crds::{condition_type, Condition, ConditionStatus, ContainerStatus, FieldDiff};

use crate::docker::{HealthStatus, ObservedContainer};

/// What one reconcile of a spec saw and did.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    pub generation: Option<i64>,
    pub host: &'a str,
    /// The container after the reconcile's actions, as last inspected.
    pub container: Option<&'a ObservedContainer>,
    pub image_digest: Option<String>,
    pub drift: Vec<FieldDiff>,
    pub sync: SyncState,
}

/// Where the reconcile left the spec.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncState {
    /// The container matches the spec.
    Synced,
    /// The spec asks for the container to be stopped, and it is.
    StoppedAsDesired,
    /// Work is under way or waits on something (a dependency, a health check).
    Progressing { reason: String, message: String },
    /// A container kedge does not own holds the wanted name.
    Conflict { container_id: String },
    /// The reconcile failed and will be retried.
    Failed { reason: String, error: String, attempt: u32, retry_in: Duration },
}

/// The status to write after a reconcile, given the one written before.
pub fn next_status(
    previous: Option<&ContainerStatus>,
    seen: &Observation<'_>,
    now: DateTime<Utc>,
) -> ContainerStatus {
    let container = seen.container;
    let (ready, ready_reason, ready_message) = readiness(container, &seen.sync);
    let (synced, synced_reason, synced_message) = match &seen.sync {
        SyncState::Synced | SyncState::StoppedAsDesired => {
            (ConditionStatus::True, "UpToDate".to_owned(), "the container matches the spec".to_owned())
        }
        SyncState::Progressing { reason, message } => {
            (ConditionStatus::False, reason.clone(), message.clone())
        }
        SyncState::Conflict { container_id } => (
            ConditionStatus::False,
            "NameConflict".to_owned(),
            format!("container {container_id} holds the name and is not managed by kedge; it is left alone"),
        ),
        SyncState::Failed { reason, error, .. } => (ConditionStatus::False, reason.clone(), error.clone()),
    };
    let (degraded, degraded_reason, degraded_message) = match &seen.sync {
        SyncState::Failed { error, attempt, retry_in, .. } => (
            ConditionStatus::True,
            "Stalled".to_owned(),
            format!(
                "attempt {attempt} failed: {error}; next retry in {} at {}",
                format_delay(*retry_in),
                rfc3339(now + chrono::Duration::from_std(*retry_in).unwrap_or_default())
            ),
        ),
        SyncState::Conflict { .. } => (
            ConditionStatus::True,
            "NameConflict".to_owned(),
            "a foreign container holds the name".to_owned(),
        ),
        _ => (ConditionStatus::False, "AsExpected".to_owned(), String::new()),
    };
    let conditions = [
        (condition_type::READY, ready, ready_reason, ready_message),
        (condition_type::SYNCED, synced, synced_reason, synced_message),
        (condition_type::DEGRADED, degraded, degraded_reason, degraded_message),
    ]
    .into_iter()
    .map(|(kind, status, reason, message)| {
        let last_transition_time = previous
            .and_then(|previous| previous.condition(kind))
            .filter(|before| before.status == status)
            .map_or_else(|| rfc3339(now), |before| before.last_transition_time.clone());
        Condition {
            kind: kind.to_owned(),
            status,
            reason,
            message,
            last_transition_time,
            observed_generation: seen.generation,
        }
    })
    .collect();

    ContainerStatus {
        observed_generation: seen.generation,
        host: Some(seen.host.to_owned()),
        container_id: container.map(|container| container.id.clone()),
        image_id: container.map(|container| container.image_id.clone()),
        image_digest: seen.image_digest.clone(),
        volumes: container.map_or_else(Vec::new, |container| {
            let volume = |v: &crate::docker::AttachedVolume| kedge_crds::MountedVolume {
                target: v.target.clone(),
                name: v.name.clone(),
            };
            container.volumes.iter().map(volume).collect()
        }),
        restart_count: container.map_or(0, |container| container.state.restart_count.max(0) as u64),
        drift: seen.drift.clone(),
        last_error: match &seen.sync {
            SyncState::Failed { error, .. } => Some(error.clone()),
            _ => None,
        },
        conditions,
    }
}

fn readiness(container: Option<&ObservedContainer>, sync: &SyncState) -> (ConditionStatus, String, String) {
    let Some(container) = container else {
        return (ConditionStatus::False, "ContainerMissing".into(), "no container runs for this spec".into());
    };
    if !container.state.running {
        if *sync == SyncState::StoppedAsDesired {
            return (
                ConditionStatus::False,
                "Stopped".into(),
                "the spec asks for the container to be stopped".into(),
            );
        }
        let exit = container.state.exit_code.map_or(String::new(), |code| format!(" (exit code {code})"));
        return (ConditionStatus::False, "NotRunning".into(), format!("the container is not running{exit}"));
    }
    match container.state.health {
        Some(HealthStatus::Healthy) => {
            (ConditionStatus::True, "Healthy".into(), "running and healthy".into())
        }
        Some(HealthStatus::Starting) => (
            ConditionStatus::False,
            "HealthCheckStarting".into(),
            "waiting for the first health check".into(),
        ),
        Some(HealthStatus::Unhealthy) => {
            (ConditionStatus::False, "Unhealthy".into(), "the health check fails".into())
        }
        Some(HealthStatus::None) | None => (ConditionStatus::True, "Running".into(), "running".into()),
    }
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn format_delay(delay: Duration) -> String {
    if delay < Duration::from_secs(1) {
        format!("{}ms", delay.as_millis())
    } else if delay < Duration::from_secs(60) {
        format!("{:.1}s", delay.as_secs_f64())
    } else {
        format!("{}s", delay.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{ContainerState, ContainerStatus as EngineStatus};

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn running(health: Option<HealthStatus>) -> ObservedContainer {
        ObservedContainer {
            id: "abc".into(),
            image_id: "sha256:1".into(),
            state: ContainerState {
                status: EngineStatus::Running,
                running: true,
                health,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn seen(container: Option<&ObservedContainer>, sync: SyncState) -> Observation<'_> {
        Observation { generation: Some(3), host: "h1", container, image_digest: None, drift: vec![], sync }
    }

    fn summary(status: &ContainerStatus) -> Vec<(String, ConditionStatus, String)> {
        status.conditions.iter().map(|c| (c.kind.clone(), c.status, c.reason.clone())).collect()
    }

    fn check(
        container: Option<&ObservedContainer>,
        sync: SyncState,
        expected: [(&str, ConditionStatus, &str); 3],
    ) {
        let status = next_status(None, &seen(container, sync), at(0));
        let expected: Vec<_> = expected.iter().map(|(k, s, r)| (k.to_string(), *s, r.to_string())).collect();
        assert_eq!(summary(&status), expected);
        assert_eq!(status.observed_generation, Some(3));
    }

    use ConditionStatus::{False, True};

    #[test]
    fn conditions_for_each_situation() {
        let plain = running(None);
        check(
            Some(&plain),
            SyncState::Synced,
            [("Ready", True, "Running"), ("Synced", True, "UpToDate"), ("Degraded", False, "AsExpected")],
        );
        let healthy = running(Some(HealthStatus::Healthy));
        check(
            Some(&healthy),
            SyncState::Synced,
            [("Ready", True, "Healthy"), ("Synced", True, "UpToDate"), ("Degraded", False, "AsExpected")],
        );
        let unhealthy = running(Some(HealthStatus::Unhealthy));
        check(
            Some(&unhealthy),
            SyncState::Synced,
            [("Ready", False, "Unhealthy"), ("Synced", True, "UpToDate"), ("Degraded", False, "AsExpected")],
        );
        check(
            None,
            SyncState::Failed {
                reason: "ImagePullFailed".into(),
                error: "no such image".into(),
                attempt: 2,
                retry_in: Duration::from_secs(4),
            },
            [
                ("Ready", False, "ContainerMissing"),
                ("Synced", False, "ImagePullFailed"),
                ("Degraded", True, "Stalled"),
            ],
        );
        let mut stopped = running(None);
        stopped.state.running = false;
        stopped.state.exit_code = Some(0);
        check(
            Some(&stopped),
            SyncState::StoppedAsDesired,
            [("Ready", False, "Stopped"), ("Synced", True, "UpToDate"), ("Degraded", False, "AsExpected")],
        );
        check(
            Some(&stopped),
            SyncState::Progressing {
                reason: "WaitingForDependency".into(),
                message: "db is not healthy".into(),
            },
            [
                ("Ready", False, "NotRunning"),
                ("Synced", False, "WaitingForDependency"),
                ("Degraded", False, "AsExpected"),
            ],
        );
        check(
            Some(&plain),
            SyncState::Conflict { container_id: "f00".into() },
            [
                ("Ready", True, "Running"),
                ("Synced", False, "NameConflict"),
                ("Degraded", True, "NameConflict"),
            ],
        );
    }

    #[test]
    fn backoff_is_visible_in_the_degraded_message() {
        let status = next_status(
            None,
            &seen(
                None,
                SyncState::Failed {
                    reason: "CreateFailed".into(),
                    error: "boom".into(),
                    attempt: 3,
                    retry_in: Duration::from_secs(8),
                },
            ),
            at(0),
        );
        let degraded = status.condition("Degraded").unwrap();
        assert_eq!(degraded.message, "attempt 3 failed: boom; next retry in 8.0s at 2027-01-15T08:00:08Z");
        assert_eq!(status.last_error.as_deref(), Some("boom"));
    }

    #[test]
    fn transition_times_move_only_when_status_changes() {
        let plain = running(None);
        let first = next_status(None, &seen(Some(&plain), SyncState::Synced), at(0));
        let again = next_status(Some(&first), &seen(Some(&plain), SyncState::Synced), at(60));
        assert_eq!(first, again, "the same observation later is the same status: nothing to write");

        let mut stopped = plain.clone();
        stopped.state.running = false;
        let later = next_status(Some(&again), &seen(Some(&stopped), SyncState::Synced), at(120));
        let ready = later.condition("Ready").unwrap();
        assert_eq!(ready.status, False);
        assert_eq!(ready.last_transition_time, "2027-01-15T08:02:00Z");
        assert_eq!(later.condition("Synced").unwrap().last_transition_time, "2027-01-15T08:00:00Z");
    }
}
