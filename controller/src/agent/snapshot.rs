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
//!
//! The same stamps tell the periodic resync which keys it may pass over ([`EngineSnapshot::resync`]):
//! a key is *settled* when a reconcile that began after its last stamp (and after the last resync
//! that enqueued it) ended converged. Such a key whose containers the resync's list shows exactly as
//! that reconcile's own list saw them (same IDs, names, states, health and images) has had nothing
//! happen to it that the engine showed or a list can tell, and is not reconciled again. What the
//! list cannot show and no event told (none is known: limits changed in place send `update`,
//! network changes send network events) waits for the next event, a reconnect's resync (which
//! passes over nothing) or the agent's restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::docker::{labels, ContainerFilter, ContainerSummary, DockerResult, Engine};

/// How long after its list a snapshot may stand in for the engine. A cold start over hundreds of
/// containers reconciles well within it; a key reconciled later reads the engine.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(30);

/// This host's managed containers as one list showed them, by key.
pub(crate) type ByKey = HashMap<String, Vec<ContainerSummary>>;

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
    /// Per key: what the periodic resync needs to know to pass over it. Kept for the keys of specs
    /// and listed containers only (pruned at every resync).
    settled: HashMap<String, Settled>,
}

/// One key, for the periodic resync ([`EngineSnapshot::resync`]).
#[derive(Debug, Default)]
struct Settled {
    /// The sequence of the last thing that may have changed the key: a stamp, or a resync that
    /// enqueued it.
    changed: u64,
    /// A reconcile that began after `changed` ended converged.
    converged: bool,
    /// The key's containers as the last converged reconcile's list saw them, or as a resync's list
    /// showed them since ([`print`]).
    print: Option<u64>,
    /// The key's containers as the read pass of the reconcile under way listed them
    /// ([`EngineSnapshot::saw`]).
    seen: Option<u64>,
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
    by_key: Arc<ByKey>,
}

impl EngineSnapshot {
    /// Lists this host's managed containers once and keeps them as the current snapshot. Returns
    /// them by key.
    pub(crate) async fn list(&self, engine: &dyn Engine, host: &str) -> DockerResult<Arc<ByKey>> {
        let (asked, at) = (self.ask(), Instant::now());
        let mut by_key = ByKey::new();
        group(host, &mut by_key, engine.list_containers(&owned_filter(host)).await?);
        Ok(self.keep(asked, at, by_key))
    }

    /// [`EngineSnapshot::list`] in pages of `page` containers, newest first, `pause` apart: the
    /// periodic resync's list, which no one waits for, so that no second of an idle agent holds the
    /// decoding of every container (about 11 ms of CPU at 500 containers in one list). Each page is
    /// sorted by key as it comes (moved, not copied: copying 500 containers after the last page
    /// was 3 ms of CPU in one second). The snapshot is as old as its first page: a container
    /// created after that may be missing from it, as from one list, and none is listed twice (each
    /// page holds only containers created before the last one of the page before). When a page
    /// after the first fails (that last one was removed meanwhile, and the engine cannot page on
    /// from it), everything is listed again at once.
    pub(crate) async fn list_in_pages(
        &self,
        engine: &dyn Engine,
        host: &str,
        page: usize,
        pause: Duration,
    ) -> DockerResult<Arc<ByKey>> {
        let (asked, at) = (self.ask(), Instant::now());
        let filter = owned_filter(host);
        let page = page.max(1);
        let mut by_key = ByKey::new();
        // The last container of the page before (which `group` may have left out as not ours).
        let mut before: Option<String> = None;
        loop {
            let next = match engine.list_containers_page(&filter, page, before.as_deref()).await {
                Ok(next) => next,
                Err(error) if before.is_some() => {
                    tracing::debug!(%error, "the list's next page failed; listing the rest at once");
                    by_key = ByKey::new();
                    group(host, &mut by_key, engine.list_containers(&filter).await?);
                    break;
                }
                Err(error) => return Err(error),
            };
            let last_page = next.len() < page;
            before = next.last().map(|last| last.id.clone());
            group(host, &mut by_key, next);
            if last_page {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        Ok(self.keep(asked, at, by_key))
    }

    /// The sequence a list is asked at.
    fn ask(&self) -> u64 {
        let mut inner = self.lock();
        inner.sequence += 1;
        inner.sequence
    }

    /// Keeps `by_key`, asked for at sequence `asked` and instant `at`, as the current snapshot,
    /// unless a later list already answered.
    fn keep(&self, asked: u64, at: Instant, by_key: ByKey) -> Arc<ByKey> {
        let by_key = Arc::new(by_key);
        let mut inner = self.lock();
        if inner.current.as_ref().is_none_or(|current| current.sequence < asked) {
            inner.current = Some(Listed { sequence: asked, at, by_key: by_key.clone() });
        }
        by_key
    }

    /// Says that `key`'s containers may change from now on (an engine event, an action of the
    /// agent): the current snapshot no longer answers for it.
    pub(crate) fn stamp(&self, key: &str) {
        let mut inner = self.lock();
        inner.sequence += 1;
        let sequence = inner.sequence;
        inner.stamped.insert(key.to_owned(), sequence);
        let settled = inner.settled.entry(key.to_owned()).or_default();
        settled.changed = sequence;
        settled.converged = false;
    }

    /// Marks the start of a reconcile: hand the answer to [`EngineSnapshot::ended`].
    pub(crate) fn began(&self) -> u64 {
        self.lock().sequence
    }

    /// The read pass of the reconcile of `key` under way listed its containers as `print`.
    pub(crate) fn saw(&self, key: &str, print: u64) {
        self.lock().settled.entry(key.to_owned()).or_default().seen = Some(print);
    }

    /// A reconcile of `key` that began at `began` ended, `converged` (`Next::Done`) or not. The key
    /// is settled when it converged and nothing was stamped on it since it began (its own actions
    /// are), and what its read pass listed ([`EngineSnapshot::saw`]) is what the next resync's list
    /// is compared with.
    pub(crate) fn ended(&self, key: &str, began: u64, converged: bool) {
        let mut inner = self.lock();
        let Some(settled) = inner.settled.get_mut(key) else { return };
        let seen = settled.seen.take();
        settled.converged = converged && settled.changed <= began && seen.is_some();
        if settled.converged {
            settled.print = seen;
        }
    }

    /// For a resync whose list shows `key`'s containers as `print` ([`print`]): whether to
    /// reconcile the key. Not when `may_pass` and the key is settled and shows what its settling
    /// reconcile's list saw (see the module documentation). A key to reconcile counts as changed:
    /// a reconcile already under way when the list was taken does not settle it.
    pub(crate) fn resync(&self, key: &str, print: u64, may_pass: bool) -> bool {
        let mut inner = self.lock();
        inner.sequence += 1;
        let sequence = inner.sequence;
        let settled = inner.settled.entry(key.to_owned()).or_default();
        let unchanged = settled.print.replace(print) == Some(print);
        if may_pass && unchanged && settled.converged {
            return false;
        }
        settled.changed = sequence;
        settled.converged = false;
        true
    }

    /// Forgets the keys for which `keep` is false (specs gone and containers gone).
    pub(crate) fn retain_settled(&self, keep: impl Fn(&str) -> bool) {
        self.lock().settled.retain(|key, _| keep(key));
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

/// Adds `listed` to `by_key`, each container under its key: those this host's agent owns (the
/// engine's filters match the labels; ownership needs managed-by as well).
fn group(host: &str, by_key: &mut ByKey, listed: Vec<ContainerSummary>) {
    for container in listed {
        if !labels::is_managed_by_host(&container.labels, host) {
            continue;
        }
        if let Some(key) = labels::key(&container.labels) {
            match by_key.get_mut(key) {
                Some(containers) => containers.push(container),
                None => {
                    let key = key.to_owned();
                    by_key.insert(key, vec![container]);
                }
            }
        }
    }
}

/// This host's managed containers (by their labels; ownership needs managed-by as well).
fn owned_filter(host: &str) -> ContainerFilter {
    ContainerFilter { labels: vec![labels::managed_filter(), labels::host_filter(host)], name: None }
}

/// A fingerprint of one key's containers as a list shows them: their IDs, names, states, health,
/// images (the engine lists a container whose tag was moved to another image by its image's ID)
/// and image IDs, in any order. Only compared within one agent's life.
pub(crate) fn print<'a>(containers: impl IntoIterator<Item = &'a ContainerSummary>) -> u64 {
    use std::hash::{Hash, Hasher};
    type Seen<'a> = (&'a str, &'a str, &'a str, Option<crate::docker::HealthStatus>, &'a str, &'a str);
    let mut seen: Vec<Seen> = containers
        .into_iter()
        .map(|c| {
            (
                c.id.as_str(),
                c.name.as_str(),
                c.state.as_str(),
                c.health,
                c.image.as_str(),
                c.image_id.as_str(),
            )
        })
        .collect();
    seen.sort_unstable();
    let mut hasher = std::hash::DefaultHasher::new();
    seen.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, state: &str) -> ContainerSummary {
        ContainerSummary {
            id: id.to_owned(),
            name: "web".to_owned(),
            image: "nginx:1".to_owned(),
            image_id: "sha256:aa".to_owned(),
            state: state.to_owned(),
            labels: Default::default(),
            health: None,
        }
    }

    /// A reconcile of `key` that begins now, lists its containers as `seen` and ends converged (or
    /// not).
    fn reconcile(snapshot: &EngineSnapshot, key: &str, seen: u64, converged: bool) {
        let began = snapshot.began();
        snapshot.saw(key, seen);
        snapshot.ended(key, began, converged);
    }

    #[test]
    fn a_print_tells_ids_names_states_and_images_apart_in_any_order() {
        let (a, b) = (container("a", "running"), container("b", "running"));
        assert_eq!(print([&a, &b]), print([&b, &a]));
        assert_ne!(print([&a]), print([&a, &b]));
        assert_ne!(print([&a]), print([&container("a", "exited")]));
        assert_ne!(print([&a]), print([&b]));
        let retagged = ContainerSummary { image: "sha256:aa".to_owned(), ..a.clone() };
        assert_ne!(print([&a]), print([&retagged]), "the engine lists a moved tag's container by image ID");
        let renamed = ContainerSummary { name: "web-old".to_owned(), ..a.clone() };
        assert_ne!(print([&a]), print([&renamed]));
        let unhealthy =
            ContainerSummary { health: Some(crate::docker::HealthStatus::Unhealthy), ..a.clone() };
        assert_ne!(
            print([&a]),
            print([&unhealthy]),
            "a missed health_status shows in the list's status line"
        );
        assert_eq!(print([]), print(Vec::<&ContainerSummary>::new()));
    }

    #[test]
    fn the_resync_passes_over_a_settled_key_listed_as_its_reconcile_saw_it_and_nothing_else() {
        let snapshot = EngineSnapshot::default();
        let running = print([&container("a", "running")]);
        let exited = print([&container("a", "exited")]);
        // Settled by the reconcile its container's creation enqueued: passed over at the first resync.
        reconcile(&snapshot, "ns/web", running, true);
        assert!(!snapshot.resync("ns/web", running, true), "settled and listed as its reconcile saw it");
        assert!(!snapshot.resync("ns/web", running, true), "and again");
        // Listed otherwise (an event missed): reconciled, and until a reconcile settles it again.
        assert!(snapshot.resync("ns/web", exited, true));
        assert!(snapshot.resync("ns/web", exited, true), "not settled since");
        reconcile(&snapshot, "ns/web", running, true);
        assert!(!snapshot.resync("ns/web", running, true));
        // Listed as an earlier list showed it but not as the settling reconcile saw it: reconciled.
        reconcile(&snapshot, "ns/web", exited, true);
        assert!(snapshot.resync("ns/web", running, true));
        // A reconnect's resync passes over nothing.
        reconcile(&snapshot, "ns/web", running, true);
        assert!(snapshot.resync("ns/web", running, false));
    }

    #[test]
    fn a_key_is_settled_only_by_a_converged_reconcile_that_began_after_everything_on_it() {
        let snapshot = EngineSnapshot::default();
        let listed = print([&container("a", "running")]);
        assert!(snapshot.resync("ns/web", listed, true), "never reconciled");
        // A failed or requeued reconcile does not settle it.
        reconcile(&snapshot, "ns/web", listed, false);
        assert!(snapshot.resync("ns/web", listed, true));
        // An event or an action during the reconcile: not settled.
        let began = snapshot.began();
        snapshot.saw("ns/web", listed);
        snapshot.stamp("ns/web");
        snapshot.ended("ns/web", began, true);
        assert!(snapshot.resync("ns/web", listed, true));
        // A reconcile under way when the resync enqueued the key does not settle it either.
        let began = snapshot.began();
        snapshot.saw("ns/web", listed);
        assert!(snapshot.resync("ns/web", listed, true));
        snapshot.ended("ns/web", began, true);
        assert!(snapshot.resync("ns/web", listed, true));
        // An event after a settling reconcile: reconciled at the next resync.
        reconcile(&snapshot, "ns/web", listed, true);
        snapshot.stamp("ns/web");
        assert!(snapshot.resync("ns/web", listed, true));
        // A reconcile that converged without reading the engine (none does) does not settle it.
        let began = snapshot.began();
        snapshot.ended("ns/web", began, true);
        assert!(snapshot.resync("ns/web", listed, true));
    }

    #[test]
    fn the_resync_forgets_keys_it_no_longer_needs() {
        let snapshot = EngineSnapshot::default();
        let listed = print([&container("a", "running")]);
        for key in ["ns/kept", "ns/gone"] {
            reconcile(&snapshot, key, listed, true);
        }
        snapshot.retain_settled(|key| key == "ns/kept");
        assert!(!snapshot.resync("ns/kept", listed, true));
        assert!(snapshot.resync("ns/gone", listed, true), "forgotten, so seen anew");
    }
}
