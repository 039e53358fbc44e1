//! Status: turns what one reconcile saw and did into a `ContainerStatus` with Kubernetes-style
//! conditions. Pure: the caller passes the previous status and the time.
//!
//! Conditions kedge reports:
//! - `Ready`: the container runs and, if it has a health check, is healthy.
//! - `Synced`: the container matches the spec's current generation.
//! - `Degraded`: reconciling fails and backs off (reason `Stalled`), a conflict blocks it, the
//!   container crash loops (reason `CrashLoopBackOff`, with the next start when kedge makes it), or
//!   an update failed and was rolled back (reason `RolledBack`, held until something changes), or
//!   the spec breaks the host-escape policy (reason `PolicyDenied`, also on `Synced`), or the
//!   container stays unhealthy and kedge gave up remediating it (reason `UnhealthyFlapping`).
//!
//! A condition's `lastTransitionTime` moves only when its status changes (the one rule of every kind,
//! [`kedge_crds::meta::transition_time`]), so a status that says the same thing again compares equal
//! and is not written (the agent writes only changes).

use std::time::Duration;

use chrono::{DateTime, Utc};
use kedge_crds::meta::{rfc3339, transition_time};
use kedge_crds::{condition_type, Condition, ConditionStatus, ContainerStatus, FieldDiff, RolledBackUpdate};

use crate::docker::{ContainerStatus as EngineStatus, HealthStatus, ObservedContainer};

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
    /// Restarts counted so far ([`crate::restarts::count`]) and the last start seen.
    pub restarts: u64,
    pub last_started_at: Option<String>,
    /// The container crash loops: why, and when it starts again.
    pub crash_loop: Option<String>,
    /// The container stopped and is left so (its restart policy): why, for `Ready`'s message.
    pub left_stopped: Option<String>,
    /// The failed update the agent holds back, if any.
    pub rolled_back: Option<RolledBackUpdate>,
    /// kedge's crash-loop backoff of the container, to outlive the agent.
    pub backoff: Option<kedge_crds::StartBackoff>,
    /// What the update policy found; with it the status has an `UpdateAvailable` condition.
    pub update: Option<kedge_crds::ImageUpdateStatus>,
    /// kedge's remediations of the container while unhealthy (`spec.onUnhealthy`), to outlive the agent.
    pub remediation: Option<kedge_crds::UnhealthyRemediation>,
    /// The container stays unhealthy and kedge gave up remediating it (the flap limit): why.
    pub unhealthy_gave_up: Option<String>,
    /// The last update: its order and why, and its soak.
    pub last_update: Option<kedge_crds::LastUpdate>,
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
    /// The spec's update failed and was rolled back; the old container runs and the update is held.
    RolledBack { message: String, error: String },
    /// The spec breaks the host-escape policy (docs/policy.md): nothing is created or started for
    /// it, and a container it already has is left as it is.
    PolicyDenied { message: String },
    /// The stored spec cannot be read (its placement says so): its last readable version is not
    /// acted on, and a container it already has is left as it is.
    InvalidSpec { message: String },
}

/// The status to write after a reconcile, given the one written before.
pub fn next_status(
    previous: Option<&ContainerStatus>,
    seen: &Observation<'_>,
    now: DateTime<Utc>,
) -> ContainerStatus {
    let container = seen.container;
    let (ready, ready_reason, ready_message) = readiness(container, &seen.sync, seen.left_stopped.as_deref());
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
        SyncState::RolledBack { message, .. } => {
            (ConditionStatus::False, "RolledBack".to_owned(), message.clone())
        }
        SyncState::PolicyDenied { message } => {
            (ConditionStatus::False, "PolicyDenied".to_owned(), message.clone())
        }
        SyncState::InvalidSpec { message } => {
            (ConditionStatus::False, "InvalidSpec".to_owned(), message.clone())
        }
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
        SyncState::RolledBack { message, .. } => {
            (ConditionStatus::True, "RolledBack".to_owned(), message.clone())
        }
        SyncState::PolicyDenied { message } => {
            (ConditionStatus::True, "PolicyDenied".to_owned(), message.clone())
        }
        SyncState::InvalidSpec { message } => {
            (ConditionStatus::True, "InvalidSpec".to_owned(), message.clone())
        }
        _ => match (&seen.crash_loop, &seen.unhealthy_gave_up) {
            (Some(message), _) => (ConditionStatus::True, "CrashLoopBackOff".to_owned(), message.clone()),
            (None, Some(message)) => (ConditionStatus::True, "UnhealthyFlapping".to_owned(), message.clone()),
            (None, None) => (ConditionStatus::False, "AsExpected".to_owned(), String::new()),
        },
    };
    let update_available = seen.update.as_ref().map(|update| match &update.available {
        Some(available) => (
            condition_type::UPDATE_AVAILABLE,
            ConditionStatus::True,
            update.held_reason.clone().unwrap_or_else(|| "Available".to_owned()),
            format!("{available} is available"),
        ),
        None => (
            condition_type::UPDATE_AVAILABLE,
            ConditionStatus::False,
            "UpToDate".to_owned(),
            match &update.resolved_image {
                Some(resolved) => format!("runs {resolved} (newer than the spec's {})", update.spec_image),
                None => String::new(),
            },
        ),
    });
    let conditions = [
        (condition_type::READY, ready, ready_reason, ready_message),
        (condition_type::SYNCED, synced, synced_reason, synced_message),
        (condition_type::DEGRADED, degraded, degraded_reason, degraded_message),
    ]
    .into_iter()
    .chain(update_available)
    .map(|(kind, status, reason, message)| {
        let last_transition_time =
            transition_time(previous.and_then(|previous| previous.condition(kind)), status, now);
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
        restart_count: seen.restarts,
        last_started_at: seen.last_started_at.clone(),
        drift: seen.drift.clone(),
        last_error: match &seen.sync {
            SyncState::Failed { error, .. } | SyncState::RolledBack { error, .. } => Some(error.clone()),
            _ => None,
        },
        conditions,
        rolled_back: seen.rolled_back.clone(),
        // Only the backoff of the container the status describes.
        backoff: seen
            .backoff
            .clone()
            .filter(|backoff| container.is_some_and(|container| container.id == backoff.container_id)),
        update: seen.update.clone(),
        remediation: seen.remediation.clone(),
        last_update: seen.last_update.clone(),
        // Written only while a pull runs (`agent/pulls.rs`); any status written after it ends drops it.
        pull: None,
        image_history: image_history(previous, seen, now),
    }
}

/// `previous`'s image history, with the container `seen` left synced put first when its generation
/// or image ID is new: a generation rolled back, failed or still progressing is not an applied one.
fn image_history(
    previous: Option<&ContainerStatus>,
    seen: &Observation<'_>,
    now: DateTime<Utc>,
) -> Vec<kedge_crds::AppliedImage> {
    let mut history = previous.map(|previous| previous.image_history.clone()).unwrap_or_default();
    let (Some(generation), Some(container), SyncState::Synced) =
        (seen.generation, seen.container, &seen.sync)
    else {
        return history;
    };
    let head = history.first();
    if head.is_some_and(|head| head.generation == generation && head.image_id == container.image_id) {
        return history;
    }
    history.insert(
        0,
        kedge_crds::AppliedImage {
            generation,
            image: container.image.clone(),
            image_id: container.image_id.clone(),
            image_digest: seen.image_digest.clone(),
            applied_at: rfc3339(now),
        },
    );
    history.truncate(kedge_crds::IMAGE_HISTORY_LIMIT);
    history
}

fn readiness(
    container: Option<&ObservedContainer>,
    sync: &SyncState,
    left_stopped: Option<&str>,
) -> (ConditionStatus, String, String) {
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
        if let Some(why) = left_stopped {
            return (ConditionStatus::False, "Exited".into(), format!("the container is not running: {why}"));
        }
        let exit = container.state.exit_code.map_or(String::new(), |code| format!(" (exit code {code})"));
        return (ConditionStatus::False, "NotRunning".into(), format!("the container is not running{exit}"));
    }
    if container.state.status == EngineStatus::Paused {
        return (ConditionStatus::False, "Paused".into(), "the container is paused".into());
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
    use crate::docker::ContainerState;

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

    #[test]
    fn the_image_history_records_each_synced_generation_and_image_once_latest_first_bounded() {
        let v1 = ObservedContainer { image: "app:v1".into(), ..running(None) };
        let first = next_status(None, &seen(Some(&v1), SyncState::Synced), at(0));
        let history = |status: &ContainerStatus| -> Vec<(i64, String, String)> {
            status.image_history.iter().map(|r| (r.generation, r.image.clone(), r.image_id.clone())).collect()
        };
        assert_eq!(history(&first), vec![(3, "app:v1".into(), "sha256:1".into())]);
        assert_eq!(first.image_history[0].applied_at, rfc3339(at(0)));
        // The same again is no new record, and the status compares equal (nothing written).
        assert_eq!(next_status(Some(&first), &seen(Some(&v1), SyncState::Synced), at(9)), first);

        // A new generation still progressing, or rolled back, is not applied.
        let v2 = ObservedContainer { image: "app:v2".into(), image_id: "sha256:2".into(), ..running(None) };
        let mut next =
            seen(Some(&v2), SyncState::Progressing { reason: "Updating".into(), message: "".into() });
        next.generation = Some(4);
        assert_eq!(history(&next_status(Some(&first), &next, at(10))), history(&first));
        let mut held = seen(Some(&v1), SyncState::RolledBack { message: "m".into(), error: "e".into() });
        held.generation = Some(4);
        assert_eq!(history(&next_status(Some(&first), &held, at(10))), history(&first));

        // Synced at generation 4: first. The same tag moved to a new image ID: first again.
        next.sync = SyncState::Synced;
        let second = next_status(Some(&first), &next, at(20));
        assert_eq!(history(&second)[0], (4, "app:v2".into(), "sha256:2".into()));
        let moved = ObservedContainer { image_id: "sha256:3".into(), ..v2.clone() };
        let mut again = seen(Some(&moved), SyncState::Synced);
        again.generation = Some(4);
        let third = next_status(Some(&second), &again, at(30));
        assert_eq!(history(&third).len(), 3);
        assert_eq!(history(&third)[0].2, "sha256:3");

        let mut status = third;
        for generation in 5..30 {
            let mut later = seen(Some(&v1), SyncState::Synced);
            later.generation = Some(generation);
            status = next_status(Some(&status), &later, at(generation));
        }
        assert_eq!(status.image_history.len(), kedge_crds::IMAGE_HISTORY_LIMIT);
        assert_eq!(status.image_history[0].generation, 29);
    }

    fn seen(container: Option<&ObservedContainer>, sync: SyncState) -> Observation<'_> {
        Observation {
            generation: Some(3),
            host: "h1",
            container,
            image_digest: None,
            drift: vec![],
            sync,
            restarts: 0,
            last_started_at: None,
            crash_loop: None,
            left_stopped: None,
            rolled_back: None,
            backoff: None,
            update: None,
            remediation: None,
            unhealthy_gave_up: None,
            last_update: None,
        }
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
        // A refused spec: its existing container is reported as it is, nothing else happens.
        let denied = || SyncState::PolicyDenied { message: "spec.privileged: refused".into() };
        check(
            Some(&plain),
            denied(),
            [
                ("Ready", True, "Running"),
                ("Synced", False, "PolicyDenied"),
                ("Degraded", True, "PolicyDenied"),
            ],
        );
        check(
            None,
            denied(),
            [
                ("Ready", False, "ContainerMissing"),
                ("Synced", False, "PolicyDenied"),
                ("Degraded", True, "PolicyDenied"),
            ],
        );
    }

    #[test]
    fn crash_loops_rollbacks_and_pauses_are_told() {
        let plain = running(None);
        let mut looping = seen(Some(&plain), SyncState::Synced);
        looping.crash_loop = Some("container exited with code 3; back-off 4s".into());
        looping.restarts = 5;
        let status = next_status(None, &looping, at(0));
        let degraded = status.condition("Degraded").unwrap();
        assert_eq!((degraded.status, degraded.reason.as_str()), (True, "CrashLoopBackOff"));
        assert_eq!(degraded.message, "container exited with code 3; back-off 4s");
        assert_eq!(status.restart_count, 5);

        let held =
            RolledBackUpdate { generation: Some(3), image: "app:v2".into(), ..RolledBackUpdate::default() };
        let mut rolled_back = seen(
            Some(&plain),
            SyncState::RolledBack {
                message: "generation 3 failed".into(),
                error: "NewContainerExited: boom".into(),
            },
        );
        rolled_back.rolled_back = Some(held.clone());
        let status = next_status(None, &rolled_back, at(0));
        assert_eq!(
            summary(&status),
            [
                ("Ready".to_owned(), True, "Running".to_owned()),
                ("Synced".to_owned(), False, "RolledBack".to_owned()),
                ("Degraded".to_owned(), True, "RolledBack".to_owned())
            ]
        );
        assert_eq!(status.rolled_back, Some(held));
        assert_eq!(status.last_error.as_deref(), Some("NewContainerExited: boom"));

        let mut paused = running(None);
        paused.state.status = EngineStatus::Paused;
        check(
            Some(&paused),
            SyncState::Synced,
            [("Ready", False, "Paused"), ("Synced", True, "UpToDate"), ("Degraded", False, "AsExpected")],
        );
        let mut exited = running(None);
        exited.state.running = false;
        exited.state.status = EngineStatus::Exited;
        let mut left = seen(Some(&exited), SyncState::Synced);
        left.left_stopped = Some("it exited with code 3 and the restart policy is \"no\"".into());
        let ready = next_status(None, &left, at(0)).condition("Ready").cloned().unwrap();
        assert_eq!((ready.status, ready.reason.as_str()), (False, "Exited"));
        assert!(ready.message.contains("exited with code 3"), "{}", ready.message);
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
