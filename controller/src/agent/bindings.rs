//! Bindings: which host runs each spec that names no host. The scheduler writes them
//! (`/kedge/v1/bindings/<ns>/<name>`); an agent follows them, as it follows specs, into a cache
//! that keeps the last known bindings through a store outage (a [`Reflector`]), until it follows
//! its host's placements instead (each one then stands for a binding to this host, see
//! [`super::placements`]).

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::queue::WorkQueue;
use crate::runtime::{reflector, Event, Reflector, Sighting, Watcher};
use crate::store::{keys, KeyValue, SharedStore};

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

/// The last bindings read from the store: a [`Reflector`] of [`keys::BINDINGS`], read by
/// `namespace/name`; the binding follower is the only writer. An unreadable binding is no binding.
pub struct BindingCache {
    reflector: Reflector<Binding>,
}

impl Default for BindingCache {
    fn default() -> BindingCache {
        BindingCache {
            reflector: Reflector::new(|kv| serde_json::from_slice(&kv.value).map_err(|e| e.to_string())),
        }
    }
}

impl BindingCache {
    /// The host the spec `key` is bound to, if any.
    pub fn host_of(&self, key: &str) -> Option<String> {
        self.reflector.get(&keys::binding_key_of(key)).map(|binding| binding.host)
    }

    /// The spec `key`'s binding with the cache's authority at the same instant (see [`Sighting`]).
    pub fn sight(&self, key: &str) -> Sighting<Binding> {
        self.reflector.sight(&keys::binding_key_of(key))
    }

    /// Whether the cache is known to match the store now, so that a missing binding means "unbound".
    pub fn authoritative(&self) -> bool {
        self.reflector.in_sync()
    }

    /// The cache itself (store keys), for readers that wait on it.
    pub fn reflector(&self) -> &Reflector<Binding> {
        &self.reflector
    }
}

/// Decodes one binding key-value into (`namespace/name`, binding); `None` for a malformed one.
pub fn decode(kv: &KeyValue) -> Option<(String, StoredBinding)> {
    let (namespace, name) = keys::parse_binding_key(&kv.key)?;
    let binding: Binding = serde_json::from_slice(&kv.value).ok()?;
    Some((format!("{namespace}/{name}"), StoredBinding { binding, mod_revision: kv.mod_revision }))
}

/// Keeps `cache` equal to the store's bindings (list, then watch from the list's revision; on any
/// error keep the last known bindings and retry: see [`crate::runtime`]), enqueuing every spec whose
/// binding changed.
pub(crate) async fn follow_bindings(
    store: SharedStore,
    cache: std::sync::Arc<BindingCache>,
    queue: WorkQueue<String>,
    shutdown: CancellationToken,
) {
    let watcher = Watcher::new(store, keys::BINDINGS, shutdown);
    reflector::run(&cache.reflector, watcher, |event, applied| {
        reflector::log_sync("bindings", keys::BINDINGS, event, applied);
        if let Event::Put { kv, .. } = event {
            if let Some(unreadable) = cache.reflector.unreadable(&kv.key) {
                tracing::error!(key = %kv.key, error = %unreadable.error, "ignoring an unreadable binding");
            }
        }
        for key in &applied.keys {
            if let Some((namespace, name)) = keys::parse_binding_key(key) {
                queue.add(format!("{namespace}/{name}"));
            }
        }
    })
    .await;
}
