//! The desired-state cache: the last specs read from the store, kept by one writer (the store
//! follower) and read by every worker.
//!
//! It is what lets the agent keep repairing through a store outage: the cache is never emptied by a
//! failure, only changed by a successful list or a watch event. [`DesiredState::authoritative`] tells
//! whether the cache is known to match the store right now; a worker may conclude that a spec was
//! deleted (and remove its container) only then.
//!
//! A spec that cannot be read is kept apart ([`DesiredState::invalid`]): it is neither a spec to act on
//! nor a deletion, so its container is left as it is until the spec is repaired or deleted.

use std::collections::BTreeMap;
use std::sync::RwLock;

use kedge_crds::Container;

use crate::store::objects::InvalidObject;

/// Shared read access to the desired state; the store follower is its only writer.
#[derive(Default)]
pub struct DesiredState {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    specs: BTreeMap<String, Container>,
    /// Specs that cannot be read, and whether the agent has reported each yet.
    invalid: BTreeMap<String, (InvalidObject, bool)>,
    /// The store revision the cache reflects.
    revision: i64,
    /// A list succeeded and the watch that followed it is still healthy.
    in_sync: bool,
    /// The store's last failure, while it lasts.
    last_error: Option<String>,
}

/// What a change to the cache touched.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    pub keys: Vec<String>,
}

impl DesiredState {
    pub fn get(&self, key: &str) -> Option<Container> {
        self.read().specs.get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        self.read().specs.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.read().specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the cache is known to match the store now, so that a missing key means "deleted".
    pub fn authoritative(&self) -> bool {
        self.read().in_sync
    }

    pub fn revision(&self) -> i64 {
        self.read().revision
    }

    pub fn last_error(&self) -> Option<String> {
        self.read().last_error.clone()
    }

    /// Replaces everything with a complete list read at `revision`; returns every key that was
    /// added, changed or removed.
    pub fn replace_all(
        &self,
        containers: Vec<Container>,
        invalid: Vec<InvalidObject>,
        revision: i64,
    ) -> Changed {
        let mut inner = self.write();
        let mut next = BTreeMap::new();
        for container in containers {
            next.insert(container.key(), container);
        }
        let mut keys: Vec<String> = Vec::new();
        for (key, container) in &next {
            if inner.specs.get(key).map(resource_version) != Some(resource_version(container)) {
                keys.push(key.clone());
            }
        }
        keys.extend(inner.specs.keys().filter(|key| !next.contains_key(*key)).cloned());
        let mut next_invalid = BTreeMap::new();
        for object in invalid {
            let key = object.key();
            let reported = inner.invalid.get(&key).is_some_and(|(known, reported)| {
                *reported && known.resource_version == object.resource_version
            });
            if !reported && !keys.contains(&key) {
                keys.push(key.clone());
            }
            next_invalid.insert(key, (object, reported));
        }
        inner.invalid = next_invalid;
        inner.specs = next;
        inner.revision = revision;
        inner.in_sync = true;
        inner.last_error = None;
        Changed { keys }
    }

    /// Applies a watched put.
    pub fn upsert(&self, container: Container, revision: i64) -> String {
        let key = container.key();
        let mut inner = self.write();
        inner.invalid.remove(&key);
        inner.specs.insert(key.clone(), container);
        inner.revision = inner.revision.max(revision);
        key
    }

    /// Applies a watched put that cannot be read: the key's spec is set aside, not acted on.
    pub fn mark_invalid(&self, object: InvalidObject, revision: i64) -> String {
        let key = object.key();
        let mut inner = self.write();
        inner.specs.remove(&key);
        inner.invalid.insert(key.clone(), (object, false));
        inner.revision = inner.revision.max(revision);
        key
    }

    /// Applies a watched delete.
    pub fn remove(&self, key: &str, revision: i64) {
        let mut inner = self.write();
        inner.specs.remove(key);
        inner.invalid.remove(key);
        inner.revision = inner.revision.max(revision);
    }

    /// Why the key's stored spec cannot be read, if it cannot.
    pub fn invalid(&self, key: &str) -> Option<InvalidObject> {
        self.read().invalid.get(key).map(|(object, _)| object.clone())
    }

    /// The key's unreadable spec, the first time it is asked for (per stored revision): so that it is
    /// reported once, not on every pass.
    pub fn take_unreported_invalid(&self, key: &str) -> Option<InvalidObject> {
        let mut inner = self.write();
        let (object, reported) = inner.invalid.get_mut(key)?;
        if *reported {
            return None;
        }
        *reported = true;
        Some(object.clone())
    }

    /// The store failed: keep every spec, but stop treating absence as deletion.
    pub fn mark_out_of_sync(&self, error: String) {
        let mut inner = self.write();
        inner.in_sync = false;
        inner.last_error = Some(error);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn resource_version(container: &Container) -> Option<&str> {
    container.metadata.resource_version.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, revision: i64) -> Container {
        let mut container: Container = serde_json::from_value(serde_json::json!({
            "apiVersion": "kedge.io/v1",
            "kind": "Container",
            "metadata": {"name": name},
            "spec": {"image": "kedge-test/app:v1"}
        }))
        .unwrap();
        container.metadata.resource_version = Some(revision.to_string());
        container
    }

    #[test]
    fn a_list_reports_exactly_what_changed() {
        let cache = DesiredState::default();
        assert!(!cache.authoritative(), "nothing read yet");
        let changed = cache.replace_all(vec![spec("a", 1), spec("b", 2)], Vec::new(), 2);
        assert_eq!(changed.keys, vec!["default/a", "default/b"]);
        assert!(cache.authoritative());
        let changed = cache.replace_all(vec![spec("a", 1), spec("c", 3)], Vec::new(), 3);
        assert_eq!(changed.keys, vec!["default/c", "default/b"]);
        assert_eq!(cache.keys(), vec!["default/a", "default/c"]);
    }

    #[test]
    fn an_outage_keeps_the_specs_but_not_the_authority() {
        let cache = DesiredState::default();
        cache.replace_all(vec![spec("a", 1)], Vec::new(), 1);
        cache.mark_out_of_sync("connection refused".into());
        assert!(!cache.authoritative());
        assert!(cache.get("default/a").is_some(), "the last known spec is kept through an outage");
        assert_eq!(cache.last_error().as_deref(), Some("connection refused"));
        cache.replace_all(vec![], Vec::new(), 2);
        assert!(cache.authoritative());
        assert!(cache.get("default/a").is_none(), "a successful list is what deletes");
    }

    #[test]
    fn watch_events_move_the_revision_forward_only() {
        let cache = DesiredState::default();
        cache.replace_all(vec![], Vec::new(), 5);
        cache.upsert(spec("a", 7), 7);
        cache.remove("default/zzz", 6);
        assert_eq!(cache.revision(), 7);
        cache.remove("default/a", 8);
        assert!(cache.is_empty());
    }

    fn unreadable(name: &str, revision: i64) -> InvalidObject {
        InvalidObject {
            namespace: "default".into(),
            name: name.into(),
            resource_version: revision.to_string(),
            error: "spec.image: invalid type".into(),
        }
    }

    #[test]
    fn an_unreadable_spec_is_set_aside_reported_once_per_revision_and_not_a_deletion() {
        let cache = DesiredState::default();
        let changed = cache.replace_all(vec![spec("a", 1)], vec![unreadable("bad", 2)], 2);
        assert_eq!(changed.keys, vec!["default/a", "default/bad"]);
        assert_eq!(cache.keys(), vec!["default/a"], "not a spec to act on");
        assert!(cache.invalid("default/bad").is_some(), "nor a deletion");
        assert!(cache.take_unreported_invalid("default/bad").is_some());
        assert!(cache.take_unreported_invalid("default/bad").is_none(), "reported once");
        // Listed again unchanged: not reported again, not enqueued again.
        let changed = cache.replace_all(vec![spec("a", 1)], vec![unreadable("bad", 2)], 3);
        assert!(changed.keys.is_empty(), "{changed:?}");
        assert!(cache.take_unreported_invalid("default/bad").is_none());
        // Rewritten, still unreadable: reported again. Repaired: a spec again.
        cache.mark_invalid(unreadable("bad", 4), 4);
        assert!(cache.take_unreported_invalid("default/bad").is_some());
        cache.upsert(spec("bad", 5), 5);
        assert!(cache.invalid("default/bad").is_none());
        assert!(cache.get("default/bad").is_some());
        // A spec that turns unreadable stops being one.
        cache.mark_invalid(unreadable("a", 6), 6);
        assert!(cache.get("default/a").is_none() && cache.invalid("default/a").is_some());
    }
}
