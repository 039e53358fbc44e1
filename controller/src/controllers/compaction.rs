//! History compaction, done by the scheduler's leader: etcd keeps every old revision of every key until
//! someone compacts, and a store that only grows fills etcd's quota (2 GiB by default), after which
//! etcd refuses every write. Every [`EVERY`] the leader samples the store's revision, and compacts at
//! the newest sample that is at least [`KEEP`] old: history younger than that stays, so a watch that
//! lags by less than an hour resumes without a re-list, and an older one re-lists (as after any
//! compaction). A new leader starts sampling afresh, so it first compacts [`KEEP`] after taking over.
//!
//! etcd's compaction is global: this keeps [`KEEP`] of history for every key of the cluster, kedge's or
//! not. Defragmentation (giving the freed space back to the file system) stays an operator's job
//! (`etcdctl defrag`), see docs/multi-host.md.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::{SharedStore, StoreError};

/// How much history is kept.
pub const KEEP: Duration = Duration::from_secs(3600);
/// How often the leader samples the revision and may compact.
pub const EVERY: Duration = Duration::from_secs(300);

/// The leader's samples of the store's revision, oldest first.
pub(crate) struct Compactor {
    keep: Duration,
    every: Duration,
    samples: VecDeque<(Instant, i64)>,
    /// The revision compacted last, to never ask twice.
    compacted: i64,
}

/// Overrides [`KEEP`], in seconds (for tests, and for operators who want more or less history); 0
/// turns kedge's compaction off (for an etcd that compacts itself with `--auto-compaction-*`).
pub const KEEP_ENV: &str = "KEDGE_HISTORY_KEEP_SECONDS";

impl Compactor {
    /// [`KEEP`] and [`EVERY`], or what [`KEEP_ENV`] says (sampling at least four times a window).
    /// `None`: compaction is turned off.
    pub(crate) fn from_env() -> Option<Compactor> {
        let keep = match std::env::var(KEEP_ENV).ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(0) => return None,
            Some(seconds) => Duration::from_secs(seconds.min(365 * 24 * 3600)),
            None => KEEP,
        };
        let every = EVERY.min(keep / 4).max(Duration::from_secs(1));
        Some(Compactor::new(keep, every))
    }
}

impl Compactor {
    pub(crate) fn new(keep: Duration, every: Duration) -> Compactor {
        Compactor { keep, every, samples: VecDeque::new(), compacted: 0 }
    }

    /// Called on every leader pass with `revision`, a revision the store has reached (the newest its
    /// caches reflect: a lower bound of the current one, so a compaction keeps at least [`KEEP`]):
    /// samples when due, and compacts when a sample is old enough. Returns the revision compacted,
    /// if it did.
    pub(crate) async fn tick(
        &mut self,
        store: &SharedStore,
        revision: i64,
    ) -> Result<Option<i64>, StoreError> {
        let now = Instant::now();
        if self.samples.back().is_some_and(|(at, _)| now.duration_since(*at) < self.every) {
            return Ok(None);
        }
        self.samples.push_back((now, revision));
        let Some(target) = self.due(now) else { return Ok(None) };
        match store.compact(target).await {
            Ok(()) => {}
            // Someone (etcd's own --auto-compaction, another tool) compacted further already.
            Err(StoreError::Compacted { .. }) => {}
            Err(error) => return Err(error),
        }
        self.compacted = target;
        tracing::info!(
            revision = target,
            keep_seconds = self.keep.as_secs(),
            "compacted the store's history"
        );
        Ok(Some(target))
    }

    /// When the next sample is due (the leader wakes for it).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.samples.back().map(|(at, _)| *at + self.every)
    }

    /// The newest sampled revision at least `keep` old, not compacted yet; drops the older samples.
    fn due(&mut self, now: Instant) -> Option<i64> {
        let mut target = None;
        while let Some(&(at, revision)) = self.samples.front() {
            if now.duration_since(at) < self.keep {
                break;
            }
            target = Some(revision);
            self.samples.pop_front();
        }
        target.filter(|&revision| revision > self.compacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_at_the_newest_sample_older_than_the_window() {
        let start = Instant::now();
        let mut compactor = Compactor::new(Duration::from_secs(60), Duration::from_secs(10));
        for (seconds, revision) in [(0, 5), (10, 9), (20, 14), (70, 30)] {
            compactor.samples.push_back((start + Duration::from_secs(seconds), revision));
        }
        assert_eq!(compactor.due(start + Duration::from_secs(59)), None, "nothing is an hour old yet");
        assert_eq!(compactor.due(start + Duration::from_secs(75)), Some(9));
        compactor.compacted = 9;
        assert_eq!(compactor.samples.len(), 2, "used samples are dropped");
        assert_eq!(compactor.due(start + Duration::from_secs(81)), Some(14));
        assert_eq!(compactor.due(start + Duration::from_secs(131)), Some(30));
        compactor.compacted = 30;
        compactor.samples.push_back((start + Duration::from_secs(140), 30));
        assert_eq!(compactor.due(start + Duration::from_secs(201)), None, "idle: nothing new to compact");
    }
}
