//! The soak of an update (`updateStrategy.soak`, docs/health.md): after a recreate returned with
//! the new container proven, the container must go on running for the soak without a restart and
//! without turning unhealthy; a failure inside it rolls back to the image ID the replaced container
//! ran. Pure: the reconcile passes the record kept in status ([`LastUpdate`]), what inspect shows
//! and the time, and carries the answer out.
//!
//! The old container may be gone by then (a stop-first recreate removes it at once, a start-first
//! one retires it in the background), so a rollback is a new recreate from the previous image ID
//! with the spec's configuration, carrying the volumes over as every recreate does. Its record
//! lives in status, so an agent restarted inside a soak goes on with it, and a failure it finds
//! then is rolled back all the same.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kedge_crds::{Container, ContainerStatus, LastUpdate};

use crate::docker::{HealthStatus, ObservedContainer};
use crate::executor::{RecreateOrder, RecreateReport};
use crate::planner::{self, Action, ImageFacts};

/// `LastUpdate::phase` values.
pub(crate) const SOAKING: &str = "Soaking";
pub(crate) const COMPLETE: &str = "Complete";
pub(crate) const ROLLED_BACK: &str = "RolledBack";

/// Where a soak stands at one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// No soak runs for the spec's generation.
    None,
    /// Inside the soak, all well; look again after `wait` (an engine event may come first).
    Soaking { wait: Duration },
    /// The soak is over without a failure.
    Passed,
    /// The container failed inside the soak: why, in words.
    Failed { why: String },
}

/// The soak record of the spec's current generation, if one runs.
pub(crate) fn running<'a>(spec: &Container, previous: Option<&'a ContainerStatus>) -> Option<&'a LastUpdate> {
    previous
        .and_then(|status| status.last_update.as_ref())
        .filter(|update| update.phase == SOAKING && update.generation == spec.metadata.generation)
}

/// Where the soak `record` stands with `container` (the one holding the spec's name) at `now`.
pub(crate) fn check(record: &LastUpdate, container: Option<&ObservedContainer>, now: DateTime<Utc>) -> Check {
    let Some(container) = container else {
        return Check::Failed { why: "the new container is gone".to_owned() };
    };
    if container.id != record.container_id {
        return Check::Failed { why: "the new container was replaced".to_owned() };
    }
    if !container.state.running || container.state.restarting {
        let code = container.state.exit_code.map_or(String::new(), |code| format!(" with code {code}"));
        return Check::Failed { why: format!("the new container exited{code}") };
    }
    if container.state.started_at != record.container_started_at {
        return Check::Failed { why: "the new container restarted".to_owned() };
    }
    if container.state.health == Some(HealthStatus::Unhealthy) {
        return Check::Failed { why: "the new container turned unhealthy".to_owned() };
    }
    match record.soak_until.as_deref().and_then(parse) {
        Some(until) if until > now => Check::Soaking { wait: (until - now).to_std().unwrap_or_default() },
        _ => Check::Passed,
    }
}

/// The record of a recreate that replaced a container: the new container as inspected right after
/// (`after`), the order and why, when it began and was ready, and the soak it starts (`soak` zero:
/// none, the update is complete).
pub(crate) fn record(
    spec: &Container,
    report: &RecreateReport,
    after: Option<&ObservedContainer>,
    began: DateTime<Utc>,
    soak: Duration,
) -> LastUpdate {
    let ready = began + chrono::Duration::from_std(report.ready_after).unwrap_or_default();
    let soaking = !soak.is_zero() && report.old_image_id.is_some();
    LastUpdate {
        generation: spec.metadata.generation,
        container_id: report.new_id.clone(),
        container_started_at: after.and_then(|container| container.state.started_at.clone()),
        image_id: after.map(|container| container.image_id.clone()).unwrap_or_default(),
        previous_image_id: report.old_image_id.clone(),
        order: match report.order {
            Some(RecreateOrder::StartFirst) => "start-first",
            Some(RecreateOrder::StopFirst) => "stop-first",
            None => "none",
        }
        .to_owned(),
        order_reason: report.order_reason.clone(),
        started_at: stamp(began),
        ready_at: stamp(ready),
        phase: if soaking { SOAKING } else { COMPLETE }.to_owned(),
        soak_until: soaking.then(|| stamp(ready + chrono::Duration::from_std(soak).unwrap_or_default())),
        cleanup: soaking && spec.spec.cleanup_or_default(),
    }
}

/// The plan that puts the previous image ID back: the spec's container, recreated (or created,
/// when none is left) from `previous_image_id` instead of the tag, without a pull and without
/// removing any image. `None` when the planner cannot make the spec's container at all.
pub(crate) fn rollback_plan(
    spec: &Container,
    container: Option<&ObservedContainer>,
    facts: &ImageFacts,
    previous_image_id: &str,
    reason: &str,
) -> Option<planner::Plan> {
    let forced = ImageFacts { force_recreate: true, update_held: false, ..facts.clone() };
    let mut plan = planner::plan(spec, container, &forced);
    plan.actions.retain(|action| !matches!(action, Action::Pull { .. } | Action::RemoveImage { .. }));
    let mut replaced = false;
    for action in &mut plan.actions {
        match action {
            Action::Recreate { config, reason: why, strategy } => {
                config.image = previous_image_id.to_owned();
                reason.clone_into(why);
                strategy.pull = false;
                strategy.remove_old_image = false;
                replaced = true;
            }
            Action::Create { config } => {
                config.image = previous_image_id.to_owned();
                replaced = true;
            }
            _ => {}
        }
    }
    plan.reason = Some(reason.to_owned());
    replaced.then_some(plan)
}

use kedge_crds::meta::{parse_rfc3339 as parse, rfc3339_millis as stamp};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::ContainerState;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn soaking() -> LastUpdate {
        LastUpdate {
            generation: Some(2),
            container_id: "new".into(),
            container_started_at: Some("2027-01-15T08:00:00Z".into()),
            image_id: "sha256:bbb".into(),
            previous_image_id: Some("sha256:aaa".into()),
            order: "start-first".into(),
            order_reason: "start-first: the two containers share nothing exclusive".into(),
            started_at: stamp(at(0)),
            ready_at: stamp(at(2)),
            phase: SOAKING.into(),
            soak_until: Some(stamp(at(32))),
            cleanup: false,
        }
    }

    fn running(edit: impl FnOnce(&mut ObservedContainer)) -> ObservedContainer {
        let mut container = ObservedContainer {
            id: "new".into(),
            state: ContainerState {
                running: true,
                started_at: Some("2027-01-15T08:00:00Z".into()),
                health: Some(HealthStatus::Healthy),
                ..ContainerState::default()
            },
            ..ObservedContainer::default()
        };
        edit(&mut container);
        container
    }

    fn check_at(container: Option<ObservedContainer>, second: i64, expected: Check) {
        assert_eq!(check(&soaking(), container.as_ref(), at(second)), expected, "{container:?}");
    }

    fn failed(why: &str) -> Check {
        Check::Failed { why: why.into() }
    }

    #[test]
    fn a_soak_passes_only_when_the_container_ran_through_it_unchanged() {
        check_at(Some(running(|_| {})), 12, Check::Soaking { wait: Duration::from_secs(20) });
        check_at(Some(running(|_| {})), 32, Check::Passed);
        check_at(Some(running(|c| c.state.health = Some(HealthStatus::Starting))), 40, Check::Passed);
        check_at(None, 12, failed("the new container is gone"));
        check_at(Some(running(|c| c.id = "other".into())), 12, failed("the new container was replaced"));
        check_at(
            Some(running(|c| {
                c.state.running = false;
                c.state.exit_code = Some(3);
            })),
            12,
            failed("the new container exited with code 3"),
        );
        check_at(Some(running(|c| c.state.restarting = true)), 12, failed("the new container exited"));
        check_at(
            Some(running(|c| c.state.started_at = Some("2027-01-15T08:00:09Z".into()))),
            12,
            failed("the new container restarted"),
        );
        check_at(
            Some(running(|c| c.state.health = Some(HealthStatus::Unhealthy))),
            12,
            failed("the new container turned unhealthy"),
        );
    }
}
