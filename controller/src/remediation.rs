//! Unhealthy remediation (docs/health.md): whether kedge restarts or recreates a running container
//! whose healthcheck reports it unhealthy, when, and when it gives up. Pure: the caller passes the
//! spec's policy, the record kept in status, what inspect showed and the time, so every rule is a
//! unit test below.
//!
//! - Docker never acts on `unhealthy` (moby#28400). `spec.onUnhealthy: restart` (the default)
//!   restarts the container; `recreate` restarts it once and, when it is still unhealthy after
//!   that, replaces it; `none` only reports it.
//! - Remediations of one key back off exponentially with the crash-loop delays
//!   ([`restarts::delay`]: the first at once, then 1 s, 2 s, 4 s, ... counted from the last one), and
//!   a container seen healthy again starts the count over.
//! - The flap limit: after `remediations` (default 5) within `period` (default 5 min) kedge gives up
//!   and leaves the container alone (the caller says `Degraded`, reason `UnhealthyFlapping`) until
//!   the spec's generation changes or the container turns healthy by itself.
//!
//! The record ([`UnhealthyRemediation`]) lives in the status, so an agent restart neither resets the
//! flap limit nor the backoff.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kedge_crds::{ContainerSpec, OnUnhealthy, UnhealthyRemediation};

use crate::docker::{HealthStatus, ObservedContainer};
use crate::restarts;

/// Remediations allowed within [`DEFAULT_PERIOD`] when the spec sets no `unhealthyLimit`.
pub const DEFAULT_REMEDIATIONS: u32 = 5;
/// The flap limit's window when the spec sets none.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(300);

/// The flap limit of one spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub remediations: u32,
    pub period: Duration,
}

impl Limit {
    /// The spec's `unhealthyLimit`, defaults filled in.
    pub fn of(spec: &ContainerSpec) -> Limit {
        let limit = spec.unhealthy_limit.as_ref();
        Limit {
            remediations: limit.and_then(|limit| limit.remediations).unwrap_or(DEFAULT_REMEDIATIONS).max(1),
            period: limit.and_then(|limit| limit.period).map_or(DEFAULT_PERIOD, |period| period.duration()),
        }
    }
}

/// What to do with the container now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing: it is not unhealthy, or the spec says `none`.
    Nothing,
    /// Unhealthy, but the backoff says not before `at`.
    Wait { at: DateTime<Utc> },
    /// Restart it now; `number` counts the remediations within the period, this one included.
    Restart { number: u32 },
    /// Replace it by a new container now (a restart did not help).
    Recreate { number: u32 },
    /// The flap limit is reached: leave it alone. `newly`: it was reached just now (tell it once).
    GaveUp { newly: bool },
}

/// The step for `container` (of spec generation `generation`) and the record to keep in status
/// (`None`: nothing to remember).
pub fn decide(
    policy: OnUnhealthy,
    limit: Limit,
    previous: Option<&UnhealthyRemediation>,
    generation: Option<i64>,
    container: &ObservedContainer,
    now: DateTime<Utc>,
) -> (Step, Option<UnhealthyRemediation>) {
    if policy == OnUnhealthy::None {
        return (Step::Nothing, None);
    }
    // Another generation starts over; remediations older than the period no longer count.
    let mut record = previous
        .filter(|record| record.generation == generation)
        .cloned()
        .unwrap_or_else(|| UnhealthyRemediation { generation, ..UnhealthyRemediation::default() });
    let period = chrono::Duration::from_std(limit.period).unwrap_or(chrono::Duration::MAX);
    record.at.retain(|at| parse(at).is_some_and(|at| now.signed_duration_since(at) < period));
    let health = container.state.health.unwrap_or(HealthStatus::None);
    let unhealthy =
        container.state.running && !container.state.restarting && health == HealthStatus::Unhealthy;
    if !unhealthy {
        if container.state.running && health == HealthStatus::Healthy {
            if record.gave_up_at.is_some() {
                // Healthy by itself after kedge gave up: a clean slate.
                return (Step::Nothing, None);
            }
            // The last remediation helped: the next one starts from no delay.
            record.consecutive = 0;
        }
        return (Step::Nothing, kept(record));
    }
    if record.gave_up_at.is_some() {
        return (Step::GaveUp { newly: false }, Some(record));
    }
    let made = u32::try_from(record.at.len()).unwrap_or(u32::MAX);
    if made >= limit.remediations {
        record.gave_up_at = Some(stamp(now));
        return (Step::GaveUp { newly: true }, Some(record));
    }
    let last = record.at.last().and_then(|at| parse(at));
    if let Some(last) = last {
        let due = last + chrono::Duration::from_std(restarts::delay(record.consecutive)).unwrap_or_default();
        if due > now {
            return (Step::Wait { at: due }, Some(record));
        }
    }
    let recreate = policy == OnUnhealthy::Recreate && record.consecutive >= 1;
    record.at.push(stamp(now));
    record.consecutive = record.consecutive.saturating_add(1);
    let number = made + 1;
    let step = if recreate { Step::Recreate { number } } else { Step::Restart { number } };
    (step, Some(record))
}

/// The record, unless it remembers nothing.
fn kept(record: UnhealthyRemediation) -> Option<UnhealthyRemediation> {
    let empty = record.at.is_empty() && record.consecutive == 0 && record.gave_up_at.is_none();
    (!empty).then_some(record)
}

use kedge_crds::meta::{parse_rfc3339 as parse, rfc3339_millis as stamp};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::ContainerState;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn container(running: bool, health: Option<HealthStatus>) -> ObservedContainer {
        ObservedContainer {
            id: "c1".into(),
            state: ContainerState { running, health, ..ContainerState::default() },
            ..ObservedContainer::default()
        }
    }

    const LIMIT: Limit = Limit { remediations: 3, period: Duration::from_secs(60) };

    /// Runs `decide` for each `(second, health)` in turn, carrying the record, and returns the steps.
    fn check(policy: OnUnhealthy, seen: &[(i64, Option<HealthStatus>)], expected: &[Step]) {
        let mut record = None;
        let mut steps = Vec::new();
        for &(second, health) in seen {
            let (step, next) =
                decide(policy, LIMIT, record.as_ref(), Some(1), &container(true, health), at(second));
            steps.push(step);
            record = next;
        }
        assert_eq!(steps, expected, "{seen:?}");
    }

    use HealthStatus::{Healthy, Starting, Unhealthy};

    #[test]
    fn an_unhealthy_container_is_restarted_at_once_then_with_backoff() {
        let wait = |second| Step::Wait { at: at(second) };
        check(
            OnUnhealthy::Restart,
            &[
                (0, Some(Unhealthy)),
                (0, Some(Unhealthy)),
                (1, Some(Unhealthy)),
                (2, Some(Unhealthy)),
                (3, Some(Unhealthy)),
            ],
            &[
                Step::Restart { number: 1 },
                wait(1),
                Step::Restart { number: 2 },
                wait(3),
                Step::Restart { number: 3 },
            ],
        );
    }

    #[test]
    fn the_flap_limit_gives_up_once_and_stays_given_up() {
        check(
            OnUnhealthy::Restart,
            &[
                (0, Some(Unhealthy)),
                (10, Some(Unhealthy)),
                (20, Some(Unhealthy)),
                (30, Some(Unhealthy)),
                (40, Some(Unhealthy)),
            ],
            &[
                Step::Restart { number: 1 },
                Step::Restart { number: 2 },
                Step::Restart { number: 3 },
                Step::GaveUp { newly: true },
                Step::GaveUp { newly: false },
            ],
        );
    }

    #[test]
    fn a_container_healthy_again_resets_the_backoff_but_not_the_flap_count() {
        check(
            OnUnhealthy::Restart,
            &[
                (0, Some(Unhealthy)),
                (1, Some(Starting)),
                (2, Some(Healthy)),
                (3, Some(Unhealthy)),
                (4, Some(Healthy)),
                (5, Some(Unhealthy)),
                (6, Some(Healthy)),
                (7, Some(Unhealthy)),
            ],
            &[
                Step::Restart { number: 1 },
                Step::Nothing,
                Step::Nothing,
                Step::Restart { number: 2 },
                Step::Nothing,
                Step::Restart { number: 3 },
                Step::Nothing,
                Step::GaveUp { newly: true },
            ],
        );
    }

    #[test]
    fn remediations_older_than_the_period_no_longer_count() {
        check(
            OnUnhealthy::Restart,
            &[
                (0, Some(Unhealthy)),
                (10, Some(Healthy)),
                (20, Some(Unhealthy)),
                (30, Some(Healthy)),
                (70, Some(Unhealthy)),
                (80, Some(Healthy)),
                (90, Some(Unhealthy)),
            ],
            &[
                Step::Restart { number: 1 },
                Step::Nothing,
                Step::Restart { number: 2 },
                Step::Nothing,
                // The first one (at 0 s) is out of the 60 s window, and at 90 s the second too.
                Step::Restart { number: 2 },
                Step::Nothing,
                Step::Restart { number: 2 },
            ],
        );
    }

    #[test]
    fn recreate_restarts_first_then_recreates() {
        check(
            OnUnhealthy::Recreate,
            &[(0, Some(Unhealthy)), (5, Some(Unhealthy)), (20, Some(Healthy)), (30, Some(Unhealthy))],
            &[
                Step::Restart { number: 1 },
                Step::Recreate { number: 2 },
                Step::Nothing,
                Step::Restart { number: 3 },
            ],
        );
    }

    #[test]
    fn none_never_acts_and_remembers_nothing() {
        check(
            OnUnhealthy::None,
            &[(0, Some(Unhealthy)), (100, Some(Unhealthy))],
            &[Step::Nothing, Step::Nothing],
        );
        let (_, record) =
            decide(OnUnhealthy::None, LIMIT, None, Some(1), &container(true, Some(Unhealthy)), at(0));
        assert_eq!(record, None);
    }

    #[test]
    fn healthy_after_giving_up_is_a_clean_slate_and_a_new_generation_starts_over() {
        let unhealthy = container(true, Some(Unhealthy));
        let gave_up = UnhealthyRemediation {
            generation: Some(1),
            at: vec![stamp(at(0)), stamp(at(1)), stamp(at(3))],
            consecutive: 3,
            gave_up_at: Some(stamp(at(7))),
        };
        let (step, record) = decide(
            OnUnhealthy::Restart,
            LIMIT,
            Some(&gave_up),
            Some(1),
            &container(true, Some(Healthy)),
            at(8),
        );
        assert_eq!((step, record), (Step::Nothing, None));
        let (step, record) = decide(OnUnhealthy::Restart, LIMIT, Some(&gave_up), Some(2), &unhealthy, at(8));
        assert_eq!(step, Step::Restart { number: 1 });
        assert_eq!(record.unwrap().generation, Some(2));
        // Not running, or stopped by the engine: not kedge's to remediate, the record is kept.
        let (step, record) = decide(
            OnUnhealthy::Restart,
            LIMIT,
            Some(&gave_up),
            Some(1),
            &container(false, Some(Unhealthy)),
            at(8),
        );
        assert_eq!((step, record), (Step::Nothing, Some(gave_up)));
    }

    #[test]
    fn the_limit_defaults_to_five_in_five_minutes() {
        let spec = ContainerSpec::default();
        assert_eq!(Limit::of(&spec), Limit { remediations: 5, period: Duration::from_secs(300) });
    }
}
