//! Object metadata and conditions, shared by every kind: [`ObjectMeta`], [`Condition`], and the one
//! rule for a condition's `lastTransitionTime` ([`transition_time`]).
//!
//! Every kind's status reports conditions in the Kubernetes convention, and every writer of a status
//! (the agent for a Container, the scheduler's leader for a ContainerSet) builds them with the same
//! rule, so that a status that says the same thing again compares equal and is not written.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The namespace of an object that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Identity and bookkeeping, as in Kubernetes' ObjectMeta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// A DNS label (lowercase letters, digits and `-`, at most 63), unique in its namespace. It is also the
    /// Docker container's name.
    pub name: String,
    /// A DNS label; `default` when not given.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Labels on the spec itself, for selecting specs (`kedge get -l`); not put on the Docker container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form notes for tools and people.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Set by the store on create; never changes for the life of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Set by the store; increases on every spec change. Status reports which generation it has seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Set by the store: the revision of the last write, for compare-and-swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Set by the store on create, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// A condition in the Kubernetes convention.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// One of [`condition_type`]'s constants.
    #[serde(rename = "type")]
    pub kind: String,
    pub status: ConditionStatus,
    /// One CamelCase word: `Running`, `ImagePullFailed`, `Stalled`.
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339; changes only when `status` changes.
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Condition types a Container reports (a ContainerSet's are in
/// [`crate::container_set::set_condition`]).
pub mod condition_type {
    /// The container runs and, if it has a health check, is healthy.
    pub const READY: &str = "Ready";
    /// The container matches the spec's current generation.
    pub const SYNCED: &str = "Synced";
    /// Reconciling fails and is backing off (reason `Stalled`), or the container keeps failing.
    pub const DEGRADED: &str = "Degraded";
    /// The update policy (`spec.updatePolicy`) found an update it did not take (mode notify,
    /// outside the window, younger than minAge); only on specs with an image check.
    pub const UPDATE_AVAILABLE: &str = "UpdateAvailable";
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// The one `lastTransitionTime` rule, for every kind's conditions (Kubernetes' `SetStatusCondition`):
/// the time moves to `now` only when the condition's status changes (or it is new); a new reason or
/// message under the same status keeps the time of the last transition.
pub fn transition_time(before: Option<&Condition>, status: ConditionStatus, now: DateTime<Utc>) -> String {
    match before {
        Some(before) if before.status == status => before.last_transition_time.clone(),
        _ => rfc3339(now),
    }
}

/// The condition of this type in `conditions`, if reported.
pub fn find_condition<'c>(conditions: &'c [Condition], kind: &str) -> Option<&'c Condition> {
    conditions.iter().find(|condition| condition.kind == kind)
}

/// Adds or updates the condition of `condition.kind` in `conditions` with the rule of
/// [`transition_time`]: when the status is unchanged, the old `lastTransitionTime` is kept. Returns
/// whether anything changed, so that callers can skip writing an unchanged status.
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) -> bool {
    match conditions.iter_mut().find(|existing| existing.kind == condition.kind) {
        Some(existing) => {
            if existing.status == condition.status {
                condition.last_transition_time = existing.last_transition_time.clone();
            }
            let changed = *existing != condition;
            *existing = condition;
            changed
        }
        None => {
            conditions.push(condition);
            true
        }
    }
}

/// How kedge writes a point in time: RFC 3339 in UTC, whole seconds (`2027-01-15T08:00:00Z`).
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// [`rfc3339`] with milliseconds, for records whose sub-second order matters (an update's `readyAt`,
/// the remediations of a flap limit).
pub fn rfc3339_millis(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a time kedge (or the engine) wrote as RFC 3339, in UTC; `None` when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|time| time.with_timezone(&Utc))
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A Ready condition of generation 1, the one every condition test in this crate starts from.
    pub(crate) fn condition(status: ConditionStatus, reason: &str, time: &str) -> Condition {
        Condition {
            kind: condition_type::READY.to_owned(),
            status,
            reason: reason.to_owned(),
            message: String::new(),
            last_transition_time: time.to_owned(),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let before = condition(ConditionStatus::False, "Starting", "t1");
        let check = |before: Option<&Condition>, status, expected: &str| {
            assert_eq!(transition_time(before, status, now), expected, "{before:?} -> {status:?}");
        };
        check(None, ConditionStatus::False, "2027-01-15T08:00:00Z");
        check(Some(&before), ConditionStatus::False, "t1");
        check(Some(&before), ConditionStatus::True, "2027-01-15T08:00:00Z");
        check(Some(&before), ConditionStatus::Unknown, "2027-01-15T08:00:00Z");
    }

    #[test]
    fn set_condition_follows_the_same_rule() {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, condition(ConditionStatus::False, "Starting", "t1")));
        assert!(!set_condition(&mut conditions, condition(ConditionStatus::False, "Starting", "t2")));
        assert!(set_condition(&mut conditions, condition(ConditionStatus::False, "Unhealthy", "t3")));
        assert_eq!(find_condition(&conditions, "Ready").unwrap().last_transition_time, "t1");
        assert!(set_condition(&mut conditions, condition(ConditionStatus::True, "Running", "t4")));
        assert_eq!(find_condition(&conditions, "Ready").unwrap().last_transition_time, "t4");
        assert_eq!(conditions.len(), 1);
    }
}
