//! Bindings: which host runs each spec that names no host. The scheduler writes them
//! (`/kedge/v1/bindings/<ns>/<name>`); every agent follows them, as it follows specs, into a cache
//! that keeps the last known bindings through a store outage.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::queue::WorkQueue;
use crate::store::{keys, next_event, EventKind, KeyValue, SharedStore, StoreError};

/// A binding as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The host that runs the spec.
    pub host: String,
    /// The scheduler term that wrote it: the leader key's `mod_revision` (informational; the store
    /// refuses a stale term's writes, see [`crate::store::Fence`]).
    pub term: i64,
}

/// A binding read from the store, with the revision a compare-and-swap needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBinding {
    pub binding: Binding,
    pub mod_revision: i64,
}

/// The last bindings read from the store, keyed `namespace/name`; the binding follower is the only writer.
#[derive(Default)]
pub struct BindingCache {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    bindings: BTreeMap<String, StoredBinding>,
    in_sync: bool,
}

impl BindingCache {
    /// The host the spec `key` is bound to, if any.
    pub fn host_of(&self, key: &str) -> Option<String> {
        self.read().bindings.get(key).map(|stored| stored.binding.host.clone())
    }

    /// The store revision at which the spec `key`'s binding was last written, if it is bound.
    pub fn revision_of(&self, key: &str) -> Option<i64> {
        self.read().bindings.get(key).map(|stored| stored.mod_revision)
    }

    /// Whether the cache is known to match the store now, so that a missing binding means "unbound".
    pub fn authoritative(&self) -> bool {
        self.read().in_sync
    }

    /// Replaces everything with a complete list; returns the keys whose binding changed.
    fn replace_all(&self, next: BTreeMap<String, StoredBinding>) -> Vec<String> {
        let mut inner = self.write();
        let mut changed: Vec<String> = next
            .iter()
            .filter(|(key, stored)| {
                inner.bindings.get(*key).map(|b| b.mod_revision) != Some(stored.mod_revision)
            })
            .map(|(key, _)| key.clone())
            .collect();
        changed.extend(inner.bindings.keys().filter(|key| !next.contains_key(*key)).cloned());
        inner.bindings = next;
        inner.in_sync = true;
        changed
    }

    fn upsert(&self, key: String, stored: StoredBinding) {
        self.write().bindings.insert(key, stored);
    }

    fn remove(&self, key: &str) {
        self.write().bindings.remove(key);
    }

    fn mark_out_of_sync(&self) {
        self.write().in_sync = false;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Decodes one binding key-value into (`namespace/name`, binding); `None` for a malformed one.
pub fn decode(kv: &KeyValue) -> Option<(String, StoredBinding)> {
    let (namespace, name) = keys::parse_binding_key(&kv.key)?;
    let binding: Binding = serde_json::from_slice(&kv.value).ok()?;
    Some((format!("{namespace}/{name}"), StoredBinding { binding, mod_revision: kv.mod_revision }))
}

/// Keeps `cache` equal to the store's bindings (list, then watch from the list's revision; on any
/// error keep the last known bindings and retry), enqueuing every spec whose binding changed.
pub(crate) async fn follow_bindings(
    store: SharedStore,
    cache: std::sync::Arc<BindingCache>,
    queue: WorkQueue<String>,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = list_and_watch(&store, &cache, &queue, &mut delay) => outcome,
        };
        if let Err(error) = outcome {
            tracing::debug!(%error, "lost the bindings watch; keeping the last known bindings");
        }
        cache.mark_out_of_sync();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

async fn list_and_watch(
    store: &SharedStore,
    cache: &BindingCache,
    queue: &WorkQueue<String>,
    delay: &mut Duration,
) -> Result<(), StoreError> {
    let listed = store.list(keys::BINDINGS).await?;
    let mut watch = store.watch(keys::BINDINGS, listed.revision + 1).await?;
    let next = listed.kvs.iter().filter_map(decode).collect();
    for key in cache.replace_all(next) {
        queue.add(key);
    }
    *delay = Duration::from_millis(200);
    while let Some(event) = next_event(&mut watch).await {
        let event = event?;
        match event.kind {
            EventKind::Put => match decode(&event.kv) {
                Some((key, stored)) => {
                    cache.upsert(key.clone(), stored);
                    queue.add(key);
                }
                None => tracing::error!(key = %event.kv.key, "ignoring an unreadable binding"),
            },
            EventKind::Delete => {
                if let Some((namespace, name)) = keys::parse_binding_key(&event.kv.key) {
                    let key = format!("{namespace}/{name}");
                    cache.remove(&key);
                    queue.add(key);
                }
            }
        }
    }
    Ok(())
}
