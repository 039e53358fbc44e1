//! Limits the engine does not apply. Docker's update API answers OK for a limit the kernel cannot
//! enforce (`blkioWeight` without blkio/io.weight support, for one) and inspect then shows it unset.
//! Re-applying it on every pass would loop for ever, each update's own event waking the next. So
//! after an in-place update the agent checks which limits took; those that did not, twice in a row
//! with the same value, are remembered for the spec's generation, left out of later updates, and
//! reported instead. Twice, because a hand edit landing between the update and the check would
//! otherwise pass for an engine that ignores the limit, and the limit would never be repaired again.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::docker::Resources;
use crate::executor::Action;

/// The limits the engine ignored, per key, for the generation they were seen at.
#[derive(Default)]
pub(crate) struct IgnoredLimits {
    by_key: Mutex<HashMap<String, (Option<i64>, Resources)>>,
    /// Limits that did not take once: ignored if they do not take the next time either.
    suspects: Mutex<HashMap<String, (Option<i64>, Resources)>>,
}

impl IgnoredLimits {
    /// Removes from the plan's in-place updates the limits known to be ignored and, once that was
    /// needed, those the container already has, dropping an update left with nothing to change (a
    /// no-op update still emits an event, which would wake the next pass). A new generation starts over.
    pub(crate) fn filter(
        &self,
        key: &str,
        generation: Option<i64>,
        observed: Option<&Resources>,
        actions: &mut Vec<Action>,
    ) {
        let Some(ignored) = self.current(key, generation) else { return };
        for action in actions.iter_mut() {
            if let Action::UpdateInPlace { resources, .. } = action {
                let wanted = without(resources, &ignored);
                *resources = match observed {
                    Some(observed) => not_applied(&wanted, observed),
                    None => wanted,
                };
            }
        }
        actions.retain(
            |action| !matches!(action, Action::UpdateInPlace { resources, .. } if resources.is_empty()),
        );
    }

    /// Notes the limits of `requested` that `observed` does not show. Returns the limits now known to
    /// be ignored: those that did not take this time and the time before, with the same value.
    pub(crate) fn learn(
        &self,
        key: &str,
        generation: Option<i64>,
        requested: &Resources,
        observed: &Resources,
    ) -> Option<Resources> {
        let missing = not_applied(requested, observed);
        let confirmed = {
            let mut suspects = self.suspects.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let before =
                suspects.remove(key).filter(|(seen, _)| *seen == generation).map(|(_, limits)| limits);
            if !missing.is_empty() {
                suspects.insert(key.to_owned(), (generation, missing.clone()));
            }
            before.map(|before| both(&before, &missing)).unwrap_or_default()
        };
        if confirmed.is_empty() {
            return None;
        }
        let mut by_key = self.by_key.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = by_key.entry(key.to_owned()).or_insert_with(|| (generation, Resources::default()));
        if entry.0 != generation {
            *entry = (generation, Resources::default());
        }
        entry.1 = merge(&entry.1, &confirmed);
        Some(confirmed)
    }

    /// The ignored limits of `key` at `generation`, if any.
    pub(crate) fn current(&self, key: &str, generation: Option<i64>) -> Option<Resources> {
        let by_key = self.by_key.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        by_key.get(key).filter(|(seen, _)| *seen == generation).map(|(_, ignored)| ignored.clone())
    }

    pub(crate) fn forget(&self, key: &str) {
        self.by_key.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
        self.suspects.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
    }
}

/// Applies `$op` to every field of [`Resources`]; one list, so a new limit cannot be forgotten here.
macro_rules! each_limit {
    ($op:ident) => {
        Resources {
            nano_cpus: $op!(nano_cpus),
            cpu_shares: $op!(cpu_shares),
            cpu_period: $op!(cpu_period),
            cpu_quota: $op!(cpu_quota),
            cpuset_cpus: $op!(cpuset_cpus),
            cpuset_mems: $op!(cpuset_mems),
            memory: $op!(memory),
            memory_reservation: $op!(memory_reservation),
            memory_swap: $op!(memory_swap),
            blkio_weight: $op!(blkio_weight),
            pids_limit: $op!(pids_limit),
        }
    };
}

/// The requested limits the observed container does not have.
fn not_applied(requested: &Resources, observed: &Resources) -> Resources {
    macro_rules! missing {
        ($field:ident) => {
            requested.$field.clone().filter(|_| requested.$field != observed.$field)
        };
    }
    each_limit!(missing)
}

/// `requested` without the limits `ignored` holds at the same value.
fn without(requested: &Resources, ignored: &Resources) -> Resources {
    macro_rules! keep {
        ($field:ident) => {
            requested
                .$field
                .clone()
                .filter(|_| ignored.$field.is_none() || requested.$field != ignored.$field)
        };
    }
    each_limit!(keep)
}

/// The limits both hold, at the same value.
fn both(a: &Resources, b: &Resources) -> Resources {
    macro_rules! same {
        ($field:ident) => {
            a.$field.clone().filter(|_| a.$field == b.$field)
        };
    }
    each_limit!(same)
}

fn merge(known: &Resources, new: &Resources) -> Resources {
    macro_rules! either {
        ($field:ident) => {
            new.$field.clone().or_else(|| known.$field.clone())
        };
    }
    each_limit!(either)
}

/// `blkioWeight=300, pidsLimit=100`, for status and events.
pub(crate) fn describe(resources: &Resources) -> String {
    let mut parts = Vec::new();
    macro_rules! show {
        ($field:ident, $name:literal) => {
            if let Some(value) = &resources.$field {
                parts.push(format!("{}={value:?}", $name).replace('"', ""));
            }
        };
    }
    show!(nano_cpus, "nanoCpus");
    show!(cpu_shares, "cpuShares");
    show!(cpu_period, "cpuPeriod");
    show!(cpu_quota, "cpuQuota");
    show!(cpuset_cpus, "cpusetCpus");
    show!(cpuset_mems, "cpusetMems");
    show!(memory, "memory");
    show!(memory_reservation, "memoryReservation");
    show!(memory_swap, "memorySwap");
    show!(blkio_weight, "blkioWeight");
    show!(pids_limit, "pidsLimit");
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(resources: Resources) -> Action {
        Action::UpdateInPlace { container: "c".into(), resources }
    }

    #[test]
    fn an_ignored_limit_is_learned_then_left_out() {
        let limits = IgnoredLimits::default();
        let requested = Resources { memory: Some(64 << 20), blkio_weight: Some(300), ..Default::default() };
        let observed = Resources { memory: Some(64 << 20), ..Default::default() };
        assert_eq!(limits.learn("ns/w", Some(1), &requested, &observed), None, "once may be a race");
        let ignored = limits.learn("ns/w", Some(1), &requested, &observed).expect("twice: blkio is ignored");
        assert_eq!(ignored, Resources { blkio_weight: Some(300), ..Default::default() });
        assert_eq!(describe(&ignored), "blkioWeight=300");

        // Only the ignored limit left to change: the update goes.
        let mut actions = vec![update(Resources { blkio_weight: Some(300), ..Default::default() })];
        limits.filter("ns/w", Some(1), Some(&observed), &mut actions);
        assert!(actions.is_empty());

        // The planner sends every declared limit: those the container has already go too.
        let mut actions = vec![update(requested.clone())];
        limits.filter("ns/w", Some(1), Some(&observed), &mut actions);
        assert!(actions.is_empty(), "a no-op update would wake the next pass: {actions:?}");

        // Another limit drifted too: it is still repaired, without the ignored one.
        let edited = Resources { memory: Some(96 << 20), ..Default::default() };
        let mut actions = vec![update(requested.clone())];
        limits.filter("ns/w", Some(1), Some(&edited), &mut actions);
        assert_eq!(actions, vec![update(Resources { memory: Some(64 << 20), ..Default::default() })]);

        // A changed value is tried again, and so is everything at a new generation.
        let mut actions = vec![update(Resources { blkio_weight: Some(500), ..Default::default() })];
        limits.filter("ns/w", Some(1), Some(&observed), &mut actions);
        assert_eq!(actions.len(), 1);
        let mut actions = vec![update(Resources { blkio_weight: Some(300), ..Default::default() })];
        limits.filter("ns/w", Some(2), Some(&observed), &mut actions);
        assert_eq!(actions.len(), 1);
    }

    #[test]
    fn a_hand_edit_racing_the_check_is_not_taken_for_an_ignored_limit() {
        let limits = IgnoredLimits::default();
        let requested = Resources { memory: Some(64 << 20), ..Default::default() };
        let edited = Resources { memory: Some(96 << 20), ..Default::default() };
        assert_eq!(limits.learn("ns/w", Some(1), &requested, &edited), None);
        // The next repair takes: nothing is learned, and the suspicion is dropped.
        assert_eq!(limits.learn("ns/w", Some(1), &requested, &requested), None);
        assert_eq!(limits.learn("ns/w", Some(1), &requested, &edited), None);
        assert_eq!(limits.current("ns/w", Some(1)), None);
    }

    #[test]
    fn applied_limits_teach_nothing() {
        let limits = IgnoredLimits::default();
        let both = Resources { memory: Some(1 << 26), pids_limit: Some(100), ..Default::default() };
        assert_eq!(limits.learn("ns/w", Some(1), &both, &both), None);
        assert_eq!(limits.current("ns/w", Some(1)), None);
    }
}
