//! One list of this host's managed containers, taken at the agent's start and at every full
//! resync, that the reconciles of the keys it enqueues read their own containers from instead of
//! each listing the engine again (at 500 containers that was 500 lists, each a scan of every
//! container by the engine).
//!
//! A snapshot is evidence of what existed when its list was asked for, no more. The rules that
//! keep it from being taken for more:
//! - Every key is stamped when something may change its containers: an engine event about it (the
//!   event follower replays events from before the list, so none falls between), and every action
//!   of the agent on it (a create, start, removal, recovery or requested recreate), before and after
//!   the action. A key stamped after the list was asked for reads the engine itself.
//! - A snapshot serves only its age limit ([`MAX_AGE`]); after that every key reads the engine.
//! - Only the key's own containers ([`super::reconcile::EngineView::owned`]) come from it: the
//!   container holding the spec's name, whose state every decision to create, start or recreate
//!   rests on, is always inspected live, once per reconcile.
//! - What the snapshot can still miss is a container created after the list (never one of the
//!   agent's: those stamp the key): a stale view can then fail to remove it, never duplicate it,
//!   since the creating event enqueues the key again and that reconcile reads the engine. A container
//!   listed but gone since is removed by ID, which finds nothing; one listed under another name but
//!   now holding the spec's name is never removed as a duplicate (the reconcile checks the ID).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::docker::{labels, ContainerFilter, ContainerSummary, DockerResult, Engine};

/// How long after its list a snapshot may stand in for the engine. A cold start over hundreds of
/// containers reconciles well within it; a key reconciled later reads the engine.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(30);

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct EngineSnapshot {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped at every stamp and every list: orders stamps against lists.
    sequence: u64,
    /// Per key: the sequence of its last stamp.
    stamped: HashMap<String, u64>,
    current: Option<Listed>,
}

impl Inner {
    fn expire(&mut self) {
        let Some(current) = self.current.as_ref().filter(|current| current.at.elapsed() > MAX_AGE) else {
            return;
        };
        // A stamp made while a newer list is in flight must outlive this one: keep the newer stamps.
        let sequence = current.sequence;
        self.stamped.retain(|_, stamp| *stamp > sequence);
        self.current = None;
    }
}

/// Stamps its key when dropped (see [`EngineSnapshot::stamp_now_and_on_drop`]).
pub(crate) struct StampOnDrop<'a> {
    snapshot: &'a EngineSnapshot,
    key: &'a str,
}

impl Drop for StampOnDrop<'_> {
    fn drop(&mut self) {
        self.snapshot.stamp(self.key);
    }
}

#[derive(Debug)]
struct Listed {
    /// The sequence when the list was asked for: a key stamped later is not served.
    sequence: u64,
    at: Instant,
    /// This host's managed containers, by key.
    by_key: HashMap<String, Vec<ContainerSummary>>,
}

impl EngineSnapshot {
    /// Lists this host's managed containers once and keeps them as the current snapshot. Returns
    /// the listed containers.
    pub(crate) async fn list(&self, engine: &dyn Engine, host: &str) -> DockerResult<Vec<ContainerSummary>> {
        let asked = {
            let mut inner = self.lock();
            inner.sequence += 1;
            inner.sequence
        };
        let at = Instant::now();
        let filter =
            ContainerFilter { labels: vec![labels::managed_filter(), labels::host_filter(host)], name: None };
        let listed = engine.list_containers(&filter).await?;
        let mut by_key: HashMap<String, Vec<ContainerSummary>> = HashMap::new();
        for container in &listed {
            // The filters match the labels; ownership needs managed-by as well.
            if !labels::is_managed_by_host(&container.labels, host) {
                continue;
            }
            if let Some(key) = labels::key(&container.labels) {
                by_key.entry(key.to_owned()).or_default().push(container.clone());
            }
        }
        let mut inner = self.lock();
        // A later list already answered: keep it.
        if inner.current.as_ref().is_none_or(|current| current.sequence < asked) {
            inner.current = Some(Listed { sequence: asked, at, by_key });
        }
        Ok(listed)
    }

    /// Says that `key`'s containers may change from now on (an engine event, an action of the
    /// agent): the current snapshot no longer answers for it.
    pub(crate) fn stamp(&self, key: &str) {
        let mut inner = self.lock();
        inner.sequence += 1;
        let sequence = inner.sequence;
        inner.stamped.insert(key.to_owned(), sequence);
    }

    /// [`EngineSnapshot::stamp`] now and again when the answer is dropped: around actions on `key`.
    pub(crate) fn stamp_now_and_on_drop<'a>(&'a self, key: &'a str) -> StampOnDrop<'a> {
        self.stamp(key);
        StampOnDrop { snapshot: self, key }
    }

    /// `key`'s containers as the current snapshot lists them, when it still answers for the key
    /// (see the module documentation); `None`: read the engine.
    pub(crate) fn owned(&self, key: &str) -> Option<Vec<ContainerSummary>> {
        let mut inner = self.lock();
        inner.expire();
        let current = inner.current.as_ref()?;
        if inner.stamped.get(key).is_some_and(|stamp| *stamp > current.sequence) {
            return None;
        }
        Some(current.by_key.get(key).cloned().unwrap_or_default())
    }

    /// Drops what is no longer needed: a snapshot past its age, and the stamps it was compared with.
    pub(crate) fn expire(&self) {
        self.lock().expire();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
