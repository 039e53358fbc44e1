//! The reflector: a cache of one prefix of the store, fed by a [`Watcher`], read by many tasks.
//!
//! Promises:
//! - Contents change only by what the store said: a [`Event::Restarted`] replaces them whole, a put or
//!   a delete changes one key. A failure never empties the cache: it only clears [`Reflector::in_sync`],
//!   from the error until the next successful list (whose watch is open by then). While `in_sync` is
//!   false a key's absence proves nothing.
//! - Objects are decoded once, as they arrive, and kept by store key with their `mod_revision`. An
//!   entry that cannot be decoded is neither an object nor a deletion: it is kept apart
//!   ([`Reflector::unreadable`]) until it is rewritten or deleted.
//! - [`Reflector::revision`] is the store revision the cache reflects: the last list's, moved forward
//!   by every event. A writer that wrote at revision R under the prefix waits with
//!   [`Reflector::wait_for_revision`] until the cache has seen its own write.
//! - Every applied event (and every failure) wakes the [`Reflector::subscribe`]rs.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::watcher::{Event, Watcher};
use crate::store::KeyValue;

/// Turns a stored value into the cache's object; an `Err` names why it cannot be read.
pub type Decoder<K> = Box<dyn Fn(&KeyValue) -> Result<K, String> + Send + Sync>;

/// One decoded object and the revision of its last write (what a compare-and-swap needs).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<K> {
    pub object: K,
    pub mod_revision: i64,
}

/// An entry that cannot be decoded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub mod_revision: i64,
    pub error: String,
}

/// One key as the cache held it at one instant, with whether the cache was in sync then and the
/// revision it reflected. A reader that decides on an absence ("deleted", "unbound") must use the
/// authority of the same read: asked a moment later, the cache may have caught up in between, with
/// the key it did not hold yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting<K> {
    pub stored: Option<Stored<K>>,
    pub in_sync: bool,
    pub revision: i64,
}

impl<K> Sighting<K> {
    /// The object, if the cache held one.
    pub fn object(&self) -> Option<&K> {
        self.stored.as_ref().map(|stored| &stored.object)
    }

    /// Whether the key was known to be absent from the store: the cache was in sync without it.
    pub fn known_absent(&self) -> bool {
        self.in_sync && self.stored.is_none()
    }
}

/// See [`Reflector::following`].
pub struct Following<'a, K: Clone + Send + Sync + 'static>(&'a Reflector<K>);

impl<K: Clone + Send + Sync + 'static> Drop for Following<'_, K> {
    fn drop(&mut self) {
        let message = "the task that follows the store for this cache ended".to_owned();
        self.0.apply(&Event::Error { message, transient: false });
    }
}

/// A cache of one prefix; see the module docs.
pub struct Reflector<K> {
    decode: Decoder<K>,
    state: RwLock<State<K>>,
    /// Counts applied events: what subscribers wait on.
    changes: watch::Sender<u64>,
}

struct State<K> {
    objects: BTreeMap<String, Stored<K>>,
    unreadable: BTreeMap<String, Unreadable>,
    revision: i64,
    in_sync: bool,
    last_error: Option<String>,
}

/// What applying one event did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The store keys whose object (or unreadable entry) was added, changed or removed.
    pub keys: Vec<String>,
    /// Whether the cache was in sync before the event.
    pub was_in_sync: bool,
}

impl<K: Clone + Send + Sync + 'static> Reflector<K> {
    pub fn new(decode: impl Fn(&KeyValue) -> Result<K, String> + Send + Sync + 'static) -> Reflector<K> {
        Reflector {
            decode: Box::new(decode),
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                unreadable: BTreeMap::new(),
                revision: 0,
                in_sync: false,
                last_error: None,
            }),
            changes: watch::channel(0).0,
        }
    }

    /// The object at store key `key`.
    pub fn get(&self, key: &str) -> Option<K> {
        self.read().objects.get(key).map(|stored| stored.object.clone())
    }

    /// The object at `key` with its `mod_revision`.
    pub fn stored(&self, key: &str) -> Option<Stored<K>> {
        self.read().objects.get(key).cloned()
    }

    /// The object at `key`, whether the cache was in sync and its revision, read at one instant.
    pub fn sight(&self, key: &str) -> Sighting<K> {
        let state = self.read();
        Sighting { stored: state.objects.get(key).cloned(), in_sync: state.in_sync, revision: state.revision }
    }

    /// Every object's store key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.read().objects.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the objects in place (no copy), under the cache's read lock: keep `f` short.
    pub fn with<R>(&self, f: impl FnOnce(&BTreeMap<String, Stored<K>>) -> R) -> R {
        f(&self.read().objects)
    }

    /// Every object, copied.
    pub fn snapshot(&self) -> BTreeMap<String, Stored<K>> {
        self.read().objects.clone()
    }

    /// Why the entry at `key` cannot be read, if it cannot.
    pub fn unreadable(&self, key: &str) -> Option<Unreadable> {
        self.read().unreadable.get(key).cloned()
    }

    /// Every unreadable entry.
    pub fn unreadable_entries(&self) -> BTreeMap<String, Unreadable> {
        self.read().unreadable.clone()
    }

    /// Held by the task that feeds this cache: when that task ends (shut down, or unwound by a
    /// panic), the cache stops saying it is in sync, so that nobody decides on contents no watch
    /// keeps current any more. The next list makes it in sync again.
    pub fn following(&self) -> Following<'_, K> {
        Following(self)
    }

    /// Whether a list succeeded and the watch behind it is still healthy: a missing key is absent.
    pub fn in_sync(&self) -> bool {
        self.read().in_sync
    }

    /// The store revision the cache reflects.
    pub fn revision(&self) -> i64 {
        self.read().revision
    }

    /// The store's last failure, until the next successful list.
    pub fn last_error(&self) -> Option<String> {
        self.read().last_error.clone()
    }

    /// How many events the cache applied so far: while it stays the same, neither its contents nor
    /// whether it is in sync changed (a reader that found nothing to do may skip the same reading).
    pub fn changes(&self) -> u64 {
        *self.changes.borrow()
    }

    /// A receiver that changes whenever an event was applied.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits until the cache is in sync and reflects `revision` or later (a writer's own write at
    /// `revision`, say); false if that did not happen within `timeout`.
    pub async fn wait_for_revision(&self, revision: i64, timeout: Duration) -> bool {
        self.wait_until(timeout, |state| state.in_sync && state.revision >= revision).await
    }

    /// Waits until the cache is in sync; false if it was not within `timeout`.
    pub async fn wait_in_sync(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |state| state.in_sync).await
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&State<K>) -> bool) -> bool {
        let mut changes = self.subscribe();
        let wait = async {
            loop {
                if done(&self.read()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    // The sender lives as long as `self`: unreachable, but never spin.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Applies one event of the watcher; returns what it changed.
    pub fn apply(&self, event: &Event) -> Applied {
        let mut state = self.write();
        let was_in_sync = state.in_sync;
        let mut keys = Vec::new();
        match event {
            Event::Restarted { kvs, revision } => {
                let mut objects = BTreeMap::new();
                let mut unreadable = BTreeMap::new();
                for kv in kvs {
                    match (self.decode)(kv) {
                        Ok(object) => {
                            objects.insert(kv.key.clone(), Stored { object, mod_revision: kv.mod_revision });
                        }
                        Err(error) => {
                            unreadable
                                .insert(kv.key.clone(), Unreadable { mod_revision: kv.mod_revision, error });
                        }
                    }
                }
                let revision_of = |state: &State<K>, key: &str| {
                    state
                        .objects
                        .get(key)
                        .map(|s| s.mod_revision)
                        .or_else(|| state.unreadable.get(key).map(|u| u.mod_revision))
                };
                let mut changed = std::collections::BTreeSet::new();
                for (key, stored) in &objects {
                    if revision_of(&state, key) != Some(stored.mod_revision)
                        || !state.objects.contains_key(key)
                    {
                        changed.insert(key.clone());
                    }
                }
                for (key, entry) in &unreadable {
                    if revision_of(&state, key) != Some(entry.mod_revision)
                        || !state.unreadable.contains_key(key)
                    {
                        changed.insert(key.clone());
                    }
                }
                for key in state.objects.keys().chain(state.unreadable.keys()) {
                    if !objects.contains_key(key) && !unreadable.contains_key(key) {
                        changed.insert(key.clone());
                    }
                }
                keys.extend(changed);
                state.objects = objects;
                state.unreadable = unreadable;
                state.revision = *revision;
                state.in_sync = true;
                state.last_error = None;
            }
            Event::Put { kv, revision } => {
                match (self.decode)(kv) {
                    Ok(object) => {
                        state.unreadable.remove(&kv.key);
                        state
                            .objects
                            .insert(kv.key.clone(), Stored { object, mod_revision: kv.mod_revision });
                    }
                    Err(error) => {
                        state.objects.remove(&kv.key);
                        state
                            .unreadable
                            .insert(kv.key.clone(), Unreadable { mod_revision: kv.mod_revision, error });
                    }
                }
                state.revision = state.revision.max(*revision);
                keys.push(kv.key.clone());
            }
            Event::Delete { key, revision } => {
                state.objects.remove(key);
                state.unreadable.remove(key);
                state.revision = state.revision.max(*revision);
                keys.push(key.clone());
            }
            Event::Error { message, .. } => {
                state.in_sync = false;
                state.last_error = Some(message.clone());
            }
        }
        drop(state);
        self.changes.send_modify(|count| *count = count.wrapping_add(1));
        Applied { keys, was_in_sync }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State<K>> {
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State<K>> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Feeds `reflector` from `watcher` until the watcher ends (its token cancelled), calling
/// `on_applied` after each event with the event and what it changed.
pub async fn run<K: Clone + Send + Sync + 'static>(
    reflector: &Reflector<K>,
    mut watcher: Watcher,
    mut on_applied: impl FnMut(&Event, &Applied),
) {
    let _following = reflector.following();
    while let Some(event) = watcher.next().await {
        let applied = reflector.apply(&event);
        on_applied(&event, &applied);
    }
}

/// The usual log lines of a follower: the first failure after being in sync is a warning (an
/// outage: the cache keeps its contents), a refusal an error, and the first list after an outage is
/// news. `what` names the cache ("specs", "bindings").
pub fn log_sync(what: &str, prefix: &str, event: &Event, applied: &Applied) {
    match event {
        Event::Error { message, transient: false } => {
            tracing::error!(what, prefix, error = %message, "the store refused the list or watch; retrying, keeping the last known contents")
        }
        Event::Error { message, transient: true } if applied.was_in_sync => {
            tracing::warn!(what, prefix, error = %message, "lost the store's watch; keeping the last known contents")
        }
        Event::Error { message, .. } => {
            tracing::debug!(what, prefix, error = %message, "the store is still unreachable")
        }
        Event::Restarted { kvs, revision } if !applied.was_in_sync => {
            tracing::info!(what, prefix, entries = kvs.len(), revision, "in sync with the store")
        }
        _ => {}
    }
}

/// Starts a reflector of `prefix` on a task of its own, until `shutdown`. Its contents are only
/// read (no callback); for the leader's and followers' caches.
pub fn spawn<K: Clone + Send + Sync + 'static>(
    store: crate::store::SharedStore,
    prefix: &str,
    what: &'static str,
    decode: impl Fn(&KeyValue) -> Result<K, String> + Send + Sync + 'static,
    shutdown: tokio_util::sync::CancellationToken,
) -> Arc<Reflector<K>> {
    let reflector = Arc::new(Reflector::new(decode));
    let watcher = Watcher::new(store, prefix, shutdown);
    let cache = reflector.clone();
    let prefix = prefix.to_owned();
    tokio::spawn(async move {
        run(&cache, watcher, |event, applied| log_sync(what, &prefix, event, applied)).await;
    });
    reflector
}
