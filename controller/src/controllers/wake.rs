//! When the leader decides: when one of its caches changed, at the nearest deadline it knows (a host's
//! grace expiry, a rollout's health timeout, a campaign's report deadline, the lease renewal), and at
//! least every [`SAFETY_TICK`] whatever happens. Never more than one pass every [`DEBOUNCE`]: changes
//! that arrive meanwhile are folded into the next pass, which reads the caches as they are then.
//!
//! Guarantees: a change seen while a pass runs wakes the next pass (a pass never misses a change that
//! happened after it started); an idle leader wakes only at its deadlines and its safety tick.

use std::time::Duration;

use futures::future::select_all;
use tokio::sync::watch;
use tokio::time::Instant;

/// The shortest time between the starts of two passes.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest time between two passes: a backstop, should a change ever fail to wake the leader.
pub(crate) const SAFETY_TICK: Duration = Duration::from_secs(10);

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The first pass of a leadership.
    First,
    /// A cache changed.
    Changed,
    /// A deadline the leader asked for came.
    Deadline,
    /// Nothing happened for [`SAFETY_TICK`].
    SafetyTick,
}

/// Waits for the leader's next pass; see the module docs.
pub(crate) struct Wake {
    changes: Vec<watch::Receiver<u64>>,
    last_pass: Option<Instant>,
}

impl Wake {
    /// Wakes on a change of any of `changes` (one receiver per cache).
    pub(crate) fn new(changes: Vec<watch::Receiver<u64>>) -> Wake {
        Wake { changes, last_pass: None }
    }

    /// Waits until the next pass is due and marks every change so far as seen; `deadline` is the
    /// nearest moment something is due without any change.
    pub(crate) async fn next(&mut self, deadline: Option<Instant>) -> Reason {
        let reason = match self.last_pass {
            None => Reason::First,
            Some(last) => {
                let safety = last + SAFETY_TICK;
                let (until, timer) = match deadline {
                    Some(deadline) if deadline < safety => (deadline, Reason::Deadline),
                    _ => (safety, Reason::SafetyTick),
                };
                let changed = self.changes.iter().any(|changes| changes.has_changed().unwrap_or(false));
                if changed {
                    Reason::Changed
                } else {
                    tokio::select! {
                        _ = any_change(&mut self.changes) => Reason::Changed,
                        _ = tokio::time::sleep_until(until) => timer,
                    }
                }
            }
        };
        if let Some(last) = self.last_pass {
            tokio::time::sleep_until(last + DEBOUNCE).await;
        }
        for changes in &mut self.changes {
            changes.borrow_and_update();
        }
        self.last_pass = Some(Instant::now());
        reason
    }
}

/// Resolves once any receiver changed; a receiver whose sender is gone never resolves.
async fn any_change(changes: &mut [watch::Receiver<u64>]) {
    if changes.is_empty() {
        return std::future::pending().await;
    }
    let waits = changes.iter_mut().map(|changes| {
        Box::pin(async move {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    });
    select_all(waits).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paused time: `next` returns the pass's reason and how long after `start` it returned.
    async fn next_at(wake: &mut Wake, start: Instant, deadline: Option<Instant>) -> (Reason, Duration) {
        let reason = wake.next(deadline).await;
        (reason, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_wakes_at_once_after_a_quiet_spell() {
        let (sender, receiver) = watch::channel(0u64);
        let mut wake = Wake::new(vec![receiver]);
        let start = Instant::now();
        assert_eq!(next_at(&mut wake, start, None).await, (Reason::First, Duration::ZERO));
        tokio::time::advance(Duration::from_secs(3)).await;
        sender.send_modify(|n| *n += 1);
        assert_eq!(next_at(&mut wake, start, None).await, (Reason::Changed, Duration::from_secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_is_one_pass_per_debounce() {
        let (sender, receiver) = watch::channel(0u64);
        let mut wake = Wake::new(vec![receiver]);
        let start = Instant::now();
        wake.next(None).await;
        // Ten changes within 50 ms of the first pass: one more pass, 100 ms after the first.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_millis(5)).await;
            sender.send_modify(|n| *n += 1);
        }
        assert_eq!(next_at(&mut wake, start, None).await, (Reason::Changed, DEBOUNCE));
        // Nothing changed since: the next wake is the safety tick.
        assert_eq!(next_at(&mut wake, start, None).await, (Reason::SafetyTick, DEBOUNCE + SAFETY_TICK));
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_a_pass_wakes_the_next_one() {
        let (sender, receiver) = watch::channel(0u64);
        let mut wake = Wake::new(vec![receiver]);
        let start = Instant::now();
        wake.next(None).await;
        // The pass takes 300 ms, and the cache changes while it runs.
        tokio::time::advance(Duration::from_millis(150)).await;
        sender.send_modify(|n| *n += 1);
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(next_at(&mut wake, start, None).await, (Reason::Changed, Duration::from_millis(300)));
    }

    #[tokio::test(start_paused = true)]
    async fn any_of_several_caches_wakes_it() {
        let (_quiet, first) = watch::channel(0u64);
        let (busy, second) = watch::channel(0u64);
        let mut wake = Wake::new(vec![first, second]);
        let start = Instant::now();
        wake.next(None).await;
        tokio::time::advance(Duration::from_secs(1)).await;
        busy.send_modify(|n| *n += 1);
        assert_eq!(next_at(&mut wake, start, None).await, (Reason::Changed, Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_nearest_deadline_wakes_it_unless_the_safety_tick_comes_first() {
        let (_sender, receiver) = watch::channel(0u64);
        let mut wake = Wake::new(vec![receiver]);
        let start = Instant::now();
        wake.next(None).await;
        let soon = start + Duration::from_millis(2500);
        assert_eq!(
            next_at(&mut wake, start, Some(soon)).await,
            (Reason::Deadline, Duration::from_millis(2500))
        );
        // A deadline already past: the pass still waits out the debounce.
        let past = start;
        assert_eq!(
            next_at(&mut wake, start, Some(past)).await,
            (Reason::Deadline, Duration::from_millis(2600))
        );
        // A deadline beyond the safety tick: the tick comes first.
        let late = start + Duration::from_secs(60);
        assert_eq!(
            next_at(&mut wake, start, Some(late)).await,
            (Reason::SafetyTick, Duration::from_millis(2600) + SAFETY_TICK)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cache_that_went_away_does_not_spin() {
        let (sender, receiver) = watch::channel(0u64);
        drop(sender);
        let mut wake = Wake::new(vec![receiver]);
        let start = Instant::now();
        wake.next(None).await;
        assert_eq!(next_at(&mut wake, start, None).await, (Reason::SafetyTick, SAFETY_TICK));
    }
}
