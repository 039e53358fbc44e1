//! Restart semantics (docs/restarts.md): whether kedge starts a container that stopped on its own,
//! when, and how restarts are counted. Pure: the caller passes what inspect showed, the key's
//! history and the time, so every rule is a unit test below.
//!
//! - The spec's restart policy decides whether a stopped container is started at all
//!   ([`policy_allows`]): explicit `no` never, `on-failure[:N]` after a failure (at most N
//!   restarts), `always`/`unless-stopped` always; an unset policy restarts failures only.
//! - Docker's own restart policy runs first: while the engine is restarting a container, kedge only
//!   counts. kedge starts a container only when the engine does not (a `docker kill` or `docker
//!   stop`, an engine that gave up), and then with its own per-key exponential backoff
//!   ([`BackoffState`]): the first start at once, then 1 s doubling to 5 min; a container that ran
//!   10 min before it stopped starts the count again. Docker's own backoff starts at 100 ms and
//!   stops at 1 min, so kedge is never faster than the engine's policy would be.
//! - RESTARTS counts every start after the first, by kedge or by the engine ([`count`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use kedge_crds::{RestartPolicy, RestartPolicyName};

use crate::docker::ObservedContainer;

/// The delay before kedge's second start of a crash loop; it doubles with each start after.
pub const BASE_DELAY: Duration = Duration::from_secs(1);
/// kedge's backoff stops growing here.
pub const MAX_DELAY: Duration = Duration::from_secs(300);
/// A container that ran this long before it stopped is not crash looping: the backoff starts over.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// Whether the spec's restart policy wants a container that stopped with `exit_code`, after
/// `restarts` restarts, started again. `Err` says why not, for status.
pub fn policy_allows(policy: Option<&RestartPolicy>, exit_code: i64, restarts: u64) -> Result<(), String> {
    let Some(policy) = policy else {
        return if exit_code == 0 {
            Err("it exited with code 0 and the spec declares no restart policy: a finished job is left"
                .into())
        } else {
            Ok(())
        };
    };
    match policy.name {
        RestartPolicyName::No => Err(format!("it exited with code {exit_code} and the restart policy is \"no\"")),
        RestartPolicyName::OnFailure if exit_code == 0 => {
            Err("it exited with code 0 and the restart policy is on-failure".into())
        }
        RestartPolicyName::OnFailure => match policy.maximum_retry_count {
            Some(limit) if restarts >= u64::from(limit) => Err(format!(
                "it exited with code {exit_code} after {restarts} restarts; the restart policy on-failure:{limit} allows {limit}"
            )),
            _ => Ok(()),
        },
        RestartPolicyName::Always | RestartPolicyName::UnlessStopped => Ok(()),
    }
}

/// The restart policy as the spec writes it, for messages.
pub fn policy_words(policy: Option<&RestartPolicy>) -> String {
    match policy {
        None => "none declared".to_owned(),
        Some(policy) => {
            let name = match policy.name {
                RestartPolicyName::No => "no",
                RestartPolicyName::Always => "always",
                RestartPolicyName::UnlessStopped => "unless-stopped",
                RestartPolicyName::OnFailure => "on-failure",
            };
            match policy.maximum_retry_count {
                Some(limit) if policy.name == RestartPolicyName::OnFailure => format!("{name}:{limit}"),
                _ => name.to_owned(),
            }
        }
    }
}

/// kedge's own starts of one key's container in the current crash loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackoffState {
    /// The container these starts were of; another container starts from nothing.
    pub container_id: String,
    /// Starts kedge made since the container last ran [`RESET_AFTER`].
    pub starts: u32,
}

/// The delay before kedge's start number `step` (0-based) of a crash loop: 0, 1 s, 2 s, 4 s, ... 5 min.
pub fn delay(step: u32) -> Duration {
    if step == 0 {
        return Duration::ZERO;
    }
    let doubled = BASE_DELAY.saturating_mul(1u32.checked_shl(step - 1).unwrap_or(u32::MAX));
    doubled.min(MAX_DELAY)
}

/// Where a stopped container stands with kedge's backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Start it now; `step` is the start's number in the loop (0: the first).
    Now { step: u32 },
    /// Not before `at` (`delay` after it stopped).
    At { at: DateTime<Utc>, delay: Duration, step: u32 },
}

/// When kedge may start `container` (stopped) again, given its backoff so far.
pub fn gate(backoff: Option<&BackoffState>, container: &ObservedContainer, now: DateTime<Utc>) -> Gate {
    let started = parse_time(container.state.started_at.as_deref());
    let finished = parse_time(container.state.finished_at.as_deref());
    let ran_long = match (started, finished) {
        (Some(started), Some(finished)) => {
            finished.signed_duration_since(started).to_std().is_ok_and(|ran| ran >= RESET_AFTER)
        }
        _ => false,
    };
    let step = match backoff {
        Some(backoff) if backoff.container_id == container.id && !ran_long => backoff.starts,
        _ => 0,
    };
    let wait = delay(step);
    let at = finished.unwrap_or(now) + chrono::Duration::from_std(wait).unwrap_or_default();
    if wait.is_zero() || at <= now {
        Gate::Now { step }
    } else {
        Gate::At { at, delay: wait, step }
    }
}

/// The backoff after kedge started `container` as start number `step` of its loop.
pub fn after_start(container_id: &str, step: u32) -> BackoffState {
    BackoffState { container_id: container_id.to_owned(), starts: step.saturating_add(1) }
}

/// What the agent saw of a key's container when it last counted its restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub container_id: String,
    /// The last start (RFC 3339); `None` before the first.
    pub started_at: Option<String>,
    /// Starts after the first, by kedge or the engine.
    pub restarts: u64,
    /// The engine's own `RestartCount` then (it counts only its policy's restarts, and a manual
    /// start sets it back to 0).
    pub engine_restarts: i64,
}

/// Counts the restarts of `container` since `previous`. A new container starts from the engine's count.
pub fn count(previous: Option<&Seen>, container: &ObservedContainer) -> Seen {
    let started_at = started(container);
    let engine = container.state.restart_count.max(0);
    let restarts = match previous {
        Some(previous) if previous.container_id == container.id => {
            let restarted =
                previous.started_at.is_some() && started_at.is_some() && started_at != previous.started_at;
            if restarted {
                let by_engine = u64::try_from(engine - previous.engine_restarts).unwrap_or(0);
                previous.restarts.saturating_add(by_engine.max(1))
            } else {
                previous.restarts
            }
        }
        _ => 0,
    };
    Seen {
        container_id: container.id.clone(),
        started_at,
        restarts: restarts.max(u64::try_from(engine).unwrap_or(0)),
        engine_restarts: engine,
    }
}

/// How a stopped container ended, in words: `container was killed (exit 137)`.
pub fn describe_exit(container: &ObservedContainer) -> String {
    let state = &container.state;
    match state.exit_code {
        _ if state.oom_killed => {
            format!("container was killed for lack of memory (exit {})", state.exit_code.unwrap_or(137))
        }
        Some(137) => "container was killed (exit 137)".to_owned(),
        Some(143) => "container was terminated (exit 143)".to_owned(),
        Some(code) => format!("container exited with code {code}"),
        None => "container stopped".to_owned(),
    }
}

/// The container's last start, `None` when it never started (the engine's zero time).
pub fn started(container: &ObservedContainer) -> Option<String> {
    container.state.started_at.clone().filter(|at| parse_time(Some(at)).is_some_and(|at| at.timestamp() > 0))
}

fn parse_time(text: Option<&str>) -> Option<DateTime<Utc>> {
    kedge_crds::meta::parse_rfc3339(text?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{ContainerState, ContainerStatus};

    fn policy(text: &str) -> Option<RestartPolicy> {
        (!text.is_empty()).then(|| serde_json::from_value(serde_json::json!(text)).expect("a policy"))
    }

    /// The table of docs/restarts.md, row by row.
    #[test]
    fn the_restart_table() {
        let rows: [(&str, i64, u64, bool); 14] = [
            ("", 0, 0, false),
            ("", 3, 0, true),
            ("", 137, 50, true),
            ("no", 0, 0, false),
            ("no", 3, 0, false),
            ("no", 137, 0, false),
            ("on-failure", 0, 0, false),
            ("on-failure", 3, 99, true),
            ("on-failure:2", 3, 1, true),
            ("on-failure:2", 3, 2, false),
            ("always", 0, 0, true),
            ("always", 3, 1000, true),
            ("unless-stopped", 0, 0, true),
            ("unless-stopped", 143, 0, true),
        ];
        for (text, code, restarts, start) in rows {
            let result = policy_allows(policy(text).as_ref(), code, restarts);
            assert_eq!(
                result.is_ok(),
                start,
                "policy {text:?}, exit {code}, {restarts} restarts: {result:?}"
            );
        }
        let why = policy_allows(policy("no").as_ref(), 3, 0).unwrap_err();
        assert_eq!(why, "it exited with code 3 and the restart policy is \"no\"");
        assert_eq!(policy_words(policy("on-failure:2").as_ref()), "on-failure:2");
        assert_eq!(policy_words(None), "none declared");
    }

    #[test]
    fn the_backoff_doubles_from_one_second_to_five_minutes() {
        let delays: Vec<u64> = (0..12).map(|step| delay(step).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(delay(u32::MAX), MAX_DELAY, "no overflow");
        // Never faster than Docker's own policy: 100 ms doubling (to 1 min) for the same restart.
        for step in 1..20u32 {
            let docker = Duration::from_millis(100)
                .saturating_mul(1u32 << (step - 1).min(20))
                .min(Duration::from_secs(60));
            assert!(delay(step) >= docker, "step {step}");
        }
    }

    fn exited(id: &str, started: &str, finished: &str) -> ObservedContainer {
        ObservedContainer {
            id: id.into(),
            state: ContainerState {
                status: ContainerStatus::Exited,
                exit_code: Some(3),
                started_at: Some(started.into()),
                finished_at: Some(finished.into()),
                ..ContainerState::default()
            },
            ..ObservedContainer::default()
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(Some(text)).unwrap()
    }

    #[test]
    fn the_gate_counts_from_when_the_container_stopped() {
        let container = exited("c1", "2026-01-01T10:00:00Z", "2026-01-01T10:00:01Z");
        // First start of a loop: at once.
        assert_eq!(gate(None, &container, at("2026-01-01T10:00:01Z")), Gate::Now { step: 0 });
        // Third: 2 s after it stopped.
        let backoff = BackoffState { container_id: "c1".into(), starts: 2 };
        assert_eq!(
            gate(Some(&backoff), &container, at("2026-01-01T10:00:02Z")),
            Gate::At { at: at("2026-01-01T10:00:03Z"), delay: Duration::from_secs(2), step: 2 }
        );
        assert_eq!(gate(Some(&backoff), &container, at("2026-01-01T10:00:03Z")), Gate::Now { step: 2 });
        assert_eq!(after_start("c1", 2), BackoffState { container_id: "c1".into(), starts: 3 });
        // Another container, or one that ran 10 minutes: from the start again.
        let other = BackoffState { container_id: "c0".into(), starts: 9 };
        assert_eq!(gate(Some(&other), &container, at("2026-01-01T10:00:02Z")), Gate::Now { step: 0 });
        let long = exited("c1", "2026-01-01T10:00:00Z", "2026-01-01T10:10:00Z");
        assert_eq!(gate(Some(&backoff), &long, at("2026-01-01T10:10:00Z")), Gate::Now { step: 0 });
        // Times the engine did not give: counted from now.
        let mut unknown = container.clone();
        unknown.state.finished_at = None;
        assert!(matches!(gate(Some(&backoff), &unknown, at("2026-01-01T10:00:02Z")), Gate::At { .. }));
    }

    fn running(id: &str, started: &str, engine: i64) -> ObservedContainer {
        ObservedContainer {
            id: id.into(),
            state: ContainerState {
                status: ContainerStatus::Running,
                running: true,
                started_at: Some(started.into()),
                restart_count: engine,
                ..ContainerState::default()
            },
            ..ObservedContainer::default()
        }
    }

    #[test]
    fn exits_in_words() {
        let mut container = exited("c1", "2026-01-01T10:00:00Z", "2026-01-01T10:00:01Z");
        assert_eq!(describe_exit(&container), "container exited with code 3");
        container.state.exit_code = Some(137);
        assert_eq!(describe_exit(&container), "container was killed (exit 137)");
        container.state.oom_killed = true;
        assert_eq!(describe_exit(&container), "container was killed for lack of memory (exit 137)");
    }

    #[test]
    fn restarts_count_kedges_starts_and_the_engines() {
        let created = ObservedContainer {
            id: "c1".into(),
            state: ContainerState {
                started_at: Some("0001-01-01T00:00:00Z".into()),
                ..ContainerState::default()
            },
            ..ObservedContainer::default()
        };
        let seen = count(None, &created);
        assert_eq!((seen.started_at.as_deref(), seen.restarts), (None, 0));
        // The first start is not a restart.
        let seen = count(Some(&seen), &running("c1", "2026-01-01T10:00:00Z", 0));
        assert_eq!(seen.restarts, 0);
        // The same start seen again: nothing.
        let seen = count(Some(&seen), &running("c1", "2026-01-01T10:00:00Z", 0));
        assert_eq!(seen.restarts, 0);
        // kedge started it again (the engine's count stays).
        let seen = count(Some(&seen), &running("c1", "2026-01-01T10:01:00Z", 0));
        assert_eq!(seen.restarts, 1);
        // The engine restarted it three times between two looks.
        let seen = count(Some(&seen), &running("c1", "2026-01-01T10:02:00Z", 3));
        assert_eq!(seen.restarts, 4);
        // A manual start sets the engine's count back to 0: still one more.
        let seen = count(Some(&seen), &running("c1", "2026-01-01T10:03:00Z", 0));
        assert_eq!(seen.restarts, 5);
        // A new container starts from the engine's count.
        let seen = count(Some(&seen), &running("c2", "2026-01-01T10:04:00Z", 2));
        assert_eq!(seen.restarts, 2);
        // Never below the engine's own count (an agent that started late).
        let late = count(None, &running("c3", "2026-01-01T10:04:00Z", 7));
        assert_eq!(late.restarts, 7);
    }
}
