//! The per-namespace policy levels the agent follows: a cache of `/kedge/v1/policies/`, kept by a
//! [`Watcher`], and the keys it enqueues when a namespace's level changes (so that a spec refused
//! before runs when its level is loosened, without being applied again).

use std::collections::BTreeSet;

use kedge_crds::{PolicyLevel, PolicySettings};
use tokio_util::sync::CancellationToken;

use crate::queue::WorkQueue;
use crate::runtime::{reflector, Reflector, Watcher};
use crate::store::{keys, SharedStore};

use super::cache::DesiredState;

/// The levels stored per namespace, as this agent last read them.
pub struct PolicyCache {
    reflector: Reflector<PolicyLevel>,
}

impl Default for PolicyCache {
    fn default() -> PolicyCache {
        PolicyCache { reflector: Reflector::new(|kv| crate::api::policies::decode_stored(&kv.value)) }
    }
}

impl PolicyCache {
    /// `base` (the agent's `--policy-level` and state directory) with every level stored per
    /// namespace. An entry that cannot be read counts as none stored (logged as it arrives).
    pub fn settings(&self, base: &PolicySettings) -> PolicySettings {
        let namespaces = self.reflector.with(|objects| {
            objects
                .iter()
                .filter_map(|(key, stored)| Some((keys::parse_policy_key(key)?.to_owned(), stored.object)))
                .collect()
        });
        PolicySettings { namespaces, ..base.clone() }
    }

    /// The cache itself (store keys), for tests that feed it.
    pub fn reflector(&self) -> &Reflector<PolicyLevel> {
        &self.reflector
    }

    /// Whether the levels were ever read: before, a namespace's missing level proves nothing. After
    /// a store outage the last known levels are kept and used.
    pub fn ever_listed(&self) -> bool {
        self.reflector.in_sync() || self.reflector.revision() > 0
    }
}

/// The namespaces whose stored level a batch of changed store keys touched.
pub fn changed_namespaces<'k>(changed: impl IntoIterator<Item = &'k String>) -> BTreeSet<&'k str> {
    changed.into_iter().filter_map(|key| keys::parse_policy_key(key)).collect()
}

/// Keeps `policies` equal to the store's levels, enqueuing every spec of a namespace whose level
/// changed. Ends when `shutdown` is cancelled.
pub(crate) async fn follow_policies(
    store: SharedStore,
    policies: std::sync::Arc<PolicyCache>,
    specs: std::sync::Arc<DesiredState>,
    queue: WorkQueue<String>,
    shutdown: CancellationToken,
) {
    let watcher = Watcher::new(store, keys::POLICIES, shutdown);
    reflector::run(&policies.reflector, watcher, |event, applied| {
        reflector::log_sync("policies", keys::POLICIES, event, applied);
        for key in &applied.keys {
            if let Some(unreadable) = policies.reflector.unreadable(key) {
                tracing::error!(%key, error = %unreadable.error, "ignoring an unreadable policy level: the namespace gets the default");
            }
        }
        let namespaces = changed_namespaces(&applied.keys);
        if namespaces.is_empty() {
            return;
        }
        tracing::info!(?namespaces, "policy levels changed: looking again at their specs");
        for key in specs.keys() {
            let namespace = key.split_once('/').map_or(key.as_str(), |(namespace, _)| namespace);
            if namespaces.contains(namespace) {
                queue.add(key);
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(changed: &[&str], expected: &[&str]) {
        let changed: Vec<String> = changed.iter().map(|key| (*key).to_owned()).collect();
        let found: Vec<&str> = changed_namespaces(&changed).into_iter().collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn only_policy_keys_name_changed_namespaces() {
        check(&[], &[]);
        check(&["/kedge/v1/policies/ops"], &["ops"]);
        check(
            &["/kedge/v1/policies/web", "/kedge/v1/policies/ops", "/kedge/v1/policies/ops"],
            &["ops", "web"],
        );
        check(&["/kedge/v1/policies/a/b", "/kedge/v1/specs/ops/web", "/kedge/v1/policies/"], &[]);
    }
}
