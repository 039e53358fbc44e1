//! Secrets: the values specs name in `secretEnv`, followed into a cache (a [`Reflector`] of the
//! Secrets' prefix) that a reconcile reads just before it plans. A secret that changes, appears or
//! goes enqueues every spec of its namespace that names it, so a new value recreates the container
//! and a missing secret, once created, lets it run.
//!
//! Values live only in this cache and in the engine's create call: nothing here logs, reports or
//! formats one (a [`Secret`]'s `Debug` is redacted), and an unreadable secret is reported by key
//! alone, because the decoder's message could quote what it failed to read.

use std::sync::Arc;

use kedge_crds::Secret;
use tokio_util::sync::CancellationToken;

use crate::queue::WorkQueue;
use crate::runtime::{reflector, Event, Reflector, Watcher};
use crate::store::{keys, SharedStore};

use super::cache::DesiredState;

/// The last secrets read from the store; the secret follower is the only writer.
pub struct SecretCache {
    reflector: Reflector<Secret>,
    /// The prefix followed: every namespace's secrets.
    prefix: String,
}

impl Default for SecretCache {
    fn default() -> SecretCache {
        SecretCache {
            reflector: Reflector::new(|kv| {
                serde_json::from_slice::<Secret>(&kv.value).map_err(|_| "not a readable Secret".to_owned())
            }),
            prefix: keys::objects_prefix::<Secret>(None).unwrap_or_default(),
        }
    }
}

impl SecretCache {
    /// The secret `name` of `namespace`, as last read.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.reflector.get(&keys::object_key::<Secret>(namespace, name).ok()?)
    }

    /// Whether the cache is known to match the store now, so that a missing secret is missing.
    pub fn authoritative(&self) -> bool {
        self.reflector.in_sync()
    }

    /// The cache itself, for readers that wait on it.
    pub fn reflector(&self) -> &Reflector<Secret> {
        &self.reflector
    }
}

/// The keys (`namespace/name`) of the specs in `specs` that name the secret `namespace/secret`.
pub(crate) fn specs_naming(specs: &DesiredState, namespace: &str, secret: &str) -> Vec<String> {
    specs
        .keys()
        .into_iter()
        .filter(|key| {
            specs.get(key).is_some_and(|spec| {
                spec.metadata.namespace == namespace
                    && spec.spec.secret_env.values().any(|source| source.secret == secret)
            })
        })
        .collect()
}

/// Keeps `cache` equal to the store's secrets (list, then watch; on any error keep the last known
/// secrets and retry: see [`crate::runtime`]), enqueuing every spec that names a secret that changed.
pub(crate) async fn follow_secrets(
    store: SharedStore,
    cache: Arc<SecretCache>,
    specs: Arc<DesiredState>,
    queue: WorkQueue<String>,
    shutdown: CancellationToken,
) {
    let prefix = cache.prefix.clone();
    let watcher = Watcher::new(store, &prefix, shutdown);
    reflector::run(&cache.reflector, watcher, |event, applied| {
        reflector::log_sync("secrets", &prefix, event, applied);
        if let Event::Put { kv, .. } = event {
            if cache.reflector.unreadable(&kv.key).is_some() {
                tracing::error!(key = %kv.key, "ignoring a secret that cannot be read");
            }
        }
        for key in &applied.keys {
            if let Some((namespace, name)) = keys::parse_object_key::<Secret>(key) {
                for spec in specs_naming(&specs, namespace, name) {
                    queue.add(spec);
                }
            }
        }
    })
    .await;
}
