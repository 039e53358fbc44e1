//! Limits the engine accepts but does not apply (see `agent/limits.rs`, which learns them): an
//! in-place update leaves them out, and those the container already has, so that a limit the
//! kernel cannot enforce is not sent again on every pass. Pure: the ignored limits are an input.

use crate::docker::Resources;

/// The in-place update to send for `wanted` limits when the engine is known to ignore `ignored`:
/// without the ignored ones and, once that was needed, without those `observed` already shows
/// (`None`: nothing left to change; a no-op update still emits an event, which would wake the
/// next pass). Without ignored limits, `wanted` unchanged.
pub(crate) fn update_to_send(
    wanted: Resources,
    ignored: Option<&Resources>,
    observed: &Resources,
) -> Option<Resources> {
    let Some(ignored) = ignored else { return Some(wanted) };
    Some(not_applied(&without(&wanted, ignored), observed)).filter(|resources| !resources.is_empty())
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
pub(crate) fn not_applied(requested: &Resources, observed: &Resources) -> Resources {
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
pub(crate) fn both(a: &Resources, b: &Resources) -> Resources {
    macro_rules! same {
        ($field:ident) => {
            a.$field.clone().filter(|_| a.$field == b.$field)
        };
    }
    each_limit!(same)
}

pub(crate) fn merge(known: &Resources, new: &Resources) -> Resources {
    macro_rules! either {
        ($field:ident) => {
            new.$field.clone().or_else(|| known.$field.clone())
        };
    }
    each_limit!(either)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_limits_are_left_out_of_updates() {
        let ignored = Resources { blkio_weight: Some(300), ..Default::default() };
        let requested = Resources { memory: Some(64 << 20), blkio_weight: Some(300), ..Default::default() };
        let observed = Resources { memory: Some(64 << 20), ..Default::default() };
        let only_ignored = Resources { blkio_weight: Some(300), ..Default::default() };
        let cases = [
            // Nothing known to be ignored: the update goes as planned.
            (requested.clone(), None, &observed, Some(requested.clone())),
            // Only the ignored limit left to change: the update goes.
            (only_ignored.clone(), Some(&ignored), &observed, None),
            // Every declared limit is sent: those the container already has go too.
            (requested.clone(), Some(&ignored), &observed, None),
            // Another limit drifted too: it is still repaired, without the ignored one.
            (
                requested.clone(),
                Some(&ignored),
                &Resources { memory: Some(96 << 20), ..Default::default() },
                Some(Resources { memory: Some(64 << 20), ..Default::default() }),
            ),
            // A changed value is tried again.
            (
                Resources { blkio_weight: Some(500), ..Default::default() },
                Some(&ignored),
                &observed,
                Some(Resources { blkio_weight: Some(500), ..Default::default() }),
            ),
        ];
        for (wanted, ignored, observed, expected) in cases {
            assert_eq!(update_to_send(wanted.clone(), ignored, observed), expected, "{wanted:?}");
        }
    }
}
