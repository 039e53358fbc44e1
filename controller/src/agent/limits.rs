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
use crate::planner::limits::{both, merge, not_applied};

/// The limits the engine ignored, per key, for the generation they were seen at.
#[derive(Default)]
pub(crate) struct IgnoredLimits {
    by_key: Mutex<HashMap<String, (Option<i64>, Resources)>>,
    /// Limits that did not take once: ignored if they do not take the next time either.
    suspects: Mutex<HashMap<String, (Option<i64>, Resources)>>,
}

impl IgnoredLimits {
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

    #[test]
    fn an_ignored_limit_is_learned_on_the_second_miss() {
        let limits = IgnoredLimits::default();
        let requested = Resources { memory: Some(64 << 20), blkio_weight: Some(300), ..Default::default() };
        let observed = Resources { memory: Some(64 << 20), ..Default::default() };
        assert_eq!(limits.learn("ns/w", Some(1), &requested, &observed), None, "once may be a race");
        let ignored = limits.learn("ns/w", Some(1), &requested, &observed).expect("twice: blkio is ignored");
        assert_eq!(ignored, Resources { blkio_weight: Some(300), ..Default::default() });
        assert_eq!(describe(&ignored), "blkioWeight=300");
        assert_eq!(limits.current("ns/w", Some(1)), Some(ignored));
        // A new generation starts over.
        assert_eq!(limits.current("ns/w", Some(2)), None);
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
