//! The desired-state cache: the last specs read from the store, kept by one writer (the store
//! follower) and read by every worker. It is a [`Reflector`] of [`keys::SPECS`], read by
//! `namespace/name`: every spec under the old layout, or only this host's once the agent follows
//! its placements (translated into the spec keys they project, see [`super::placements`]).
//!
//! It is what lets the agent keep repairing through a store outage: the cache is never emptied by a
//! failure, only changed by a successful list or a watch event. [`DesiredState::authoritative`] tells
//! whether the cache is known to match the store right now (a list succeeded and its watch is
//! healthy); a worker may conclude that a spec was deleted (and remove its container) only then.
//!
//! A spec that cannot be read is kept apart ([`DesiredState::invalid`]): it is neither a spec to act on
//! nor a deletion, so its container is left as it is until the spec is repaired or deleted.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kedge_crds::Container;

use crate::runtime::{Applied, Event, Reflector, Sighting};
use crate::store::objects::{self, InvalidObject};
use crate::store::{keys, KeyValue};

/// Why a placed spec is not acted on: its stored version cannot be read. The leader writes it into
/// the placement ([`super::placements::Placement::invalid`]); the spec cache keeps it beside the
/// last readable spec.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidSpec {
    /// The unreadable spec key's `mod_revision`.
    pub resource_version: i64,
    /// Why it cannot be read (file-less: the store key, the field and the reason).
    pub error: String,
}

/// Work keys (`namespace/name`), each with what its placement says of an unreadable spec.
pub(crate) type InvalidNotes = Vec<(String, Option<InvalidSpec>)>;

/// Shared read access to the desired state; the store follower is its only writer.
pub struct DesiredState {
    reflector: Reflector<Container>,
    /// Unreadable specs already reported, with the revision reported (`namespace/name`).
    reported: Mutex<BTreeMap<String, i64>>,
    /// Following placements: the specs whose placement says the stored spec cannot be read any
    /// more, by `namespace/name`. The cache holds their last readable version, which is not acted
    /// on ([`InvalidSpec`]).
    placed_invalid: Mutex<BTreeMap<String, InvalidSpec>>,
}

impl Default for DesiredState {
    fn default() -> DesiredState {
        DesiredState {
            reflector: Reflector::new(decode_spec),
            reported: Mutex::default(),
            placed_invalid: Mutex::default(),
        }
    }
}

/// A stored spec, tolerating (and reporting) fields a newer kedge wrote; an `Err` says why it
/// cannot be read.
fn decode_spec(kv: &KeyValue) -> Result<Container, String> {
    match objects::decode_container_lenient(kv) {
        Ok(read) => {
            if !read.ignored.is_empty() {
                tracing::warn!(key = %kv.key, fields = %read.ignored.join(", "), "a spec has fields this kedge does not know (written by a newer one?); they are ignored");
            }
            Ok(read.value)
        }
        Err(error) => {
            let (namespace, name) = keys::parse_spec_key(&kv.key).unwrap_or_default();
            Err(InvalidObject::unreadable(kv, namespace, name, &error).error)
        }
    }
}

/// The store key of a spec to `namespace/name`.
fn work_key(store_key: &str) -> Option<String> {
    keys::parse_spec_key(store_key).map(|(namespace, name)| format!("{namespace}/{name}"))
}

impl DesiredState {
    pub fn get(&self, key: &str) -> Option<Container> {
        self.reflector.get(&keys::spec_key_of(key))
    }

    /// The spec `key` with the cache's authority at the same instant (see [`Sighting`]): what a
    /// decision to remove a container must rest on.
    pub fn sight(&self, key: &str) -> Sighting<Container> {
        self.reflector.sight(&keys::spec_key_of(key))
    }

    /// The keys and copies of the specs `wanted` picks, read in place under the cache's lock: only
    /// the picked specs are copied (a scan for the few specs that follow one is cheap at 500 specs).
    pub fn select(&self, wanted: impl Fn(&Container) -> bool) -> Vec<(String, Container)> {
        self.reflector.with(|specs| {
            specs
                .iter()
                .filter(|(_, stored)| wanted(&stored.object))
                .filter_map(|(store_key, stored)| Some((work_key(store_key)?, stored.object.clone())))
                .collect()
        })
    }

    pub fn keys(&self) -> Vec<String> {
        self.reflector.keys().iter().filter_map(|key| work_key(key)).collect()
    }

    pub fn len(&self) -> usize {
        self.reflector.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the cache is known to match the store now, so that a missing key means "deleted".
    pub fn authoritative(&self) -> bool {
        self.reflector.in_sync()
    }

    pub fn revision(&self) -> i64 {
        self.reflector.revision()
    }

    pub fn last_error(&self) -> Option<String> {
        self.reflector.last_error()
    }

    /// The cache itself (store keys), for readers that wait on it.
    pub fn reflector(&self) -> &Reflector<Container> {
        &self.reflector
    }

    /// Applies one event of the store follower's watcher; returns the keys (`namespace/name`) to
    /// reconcile: every spec added, changed or removed, and every unreadable spec not reported yet.
    pub fn apply(&self, event: &Event) -> (Vec<String>, Applied) {
        let applied = self.reflector.apply(event);
        let mut keys: Vec<String> = applied.keys.iter().filter_map(|key| work_key(key)).collect();
        if let Event::Restarted { .. } = event {
            let reported = self.reported();
            for (key, unreadable) in self.reflector.unreadable_entries() {
                let Some(key) = work_key(&key) else { continue };
                if reported.get(&key) != Some(&unreadable.mod_revision) && !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        (keys, applied)
    }

    /// Why the key's stored spec cannot be read, if it cannot.
    pub fn invalid(&self, key: &str) -> Option<InvalidObject> {
        let unreadable = self.reflector.unreadable(&keys::spec_key_of(key))?;
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        Some(InvalidObject {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            resource_version: unreadable.mod_revision.to_string(),
            error: unreadable.error,
        })
    }

    /// The key's unreadable spec, the first time it is asked for (per stored revision): so that it is
    /// reported once, not on every pass.
    pub fn take_unreported_invalid(&self, key: &str) -> Option<InvalidObject> {
        let object = self.invalid(key)?;
        let revision = self.reflector.unreadable(&keys::spec_key_of(key))?.mod_revision;
        let mut reported = self.reported();
        if reported.get(key) == Some(&revision) {
            return None;
        }
        reported.insert(key.to_owned(), revision);
        Some(object)
    }

    /// Why the key's placement says its stored spec cannot be read, if it says so.
    pub fn placed_invalid(&self, key: &str) -> Option<InvalidSpec> {
        self.placed_invalid_lock().get(key).cloned()
    }

    /// Takes the placements' word on unreadable specs (`all`: `notes` are all there are); answers
    /// the keys whose word changed, to reconcile.
    pub(crate) fn note_invalid(&self, all: bool, notes: InvalidNotes) -> Vec<String> {
        let mut placed_invalid = self.placed_invalid_lock();
        let mut changed = Vec::new();
        if all {
            let fresh: BTreeMap<String, InvalidSpec> =
                notes.into_iter().filter_map(|(key, invalid)| Some((key, invalid?))).collect();
            for key in placed_invalid.keys().chain(fresh.keys()) {
                if placed_invalid.get(key) != fresh.get(key) && !changed.contains(key) {
                    changed.push(key.clone());
                }
            }
            *placed_invalid = fresh;
            return changed;
        }
        for (key, invalid) in notes {
            let same = placed_invalid.get(&key) == invalid.as_ref();
            match invalid {
                Some(invalid) => placed_invalid.insert(key.clone(), invalid),
                None => placed_invalid.remove(&key),
            };
            if !same {
                changed.push(key);
            }
        }
        changed
    }

    fn placed_invalid_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, InvalidSpec>> {
        self.placed_invalid.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reported(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        self.reported.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, revision: i64) -> KeyValue {
        let container: Container = serde_json::from_value(serde_json::json!({
            "apiVersion": "kedge.io/v1",
            "kind": "Container",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"image": "kedge-test/app:v1"}
        }))
        .unwrap();
        kv(name, revision, serde_json::to_vec(&container).unwrap())
    }

    fn unreadable(name: &str, revision: i64) -> KeyValue {
        kv(
            name,
            revision,
            br#"{"apiVersion":"kedge.io/v1","kind":"Container","metadata":{"name":"x"},"spec":{"image":7}}"#
                .to_vec(),
        )
    }

    fn kv(name: &str, revision: i64, value: Vec<u8>) -> KeyValue {
        KeyValue {
            key: keys::spec_key("default", name).unwrap(),
            value,
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        }
    }

    fn listed(kvs: Vec<KeyValue>, revision: i64) -> Event {
        Event::Restarted { kvs, revision }
    }

    fn put(kv: KeyValue) -> Event {
        let revision = kv.mod_revision;
        Event::Put { kv, revision }
    }

    fn changed(cache: &DesiredState, event: Event) -> Vec<String> {
        cache.apply(&event).0
    }

    #[test]
    fn a_list_reports_exactly_what_changed() {
        let cache = DesiredState::default();
        assert!(!cache.authoritative(), "nothing read yet");
        let keys = changed(&cache, listed(vec![spec("a", 1), spec("b", 2)], 2));
        assert_eq!(keys, vec!["default/a", "default/b"]);
        assert!(cache.authoritative());
        assert_eq!(cache.get("default/a").unwrap().metadata.resource_version.as_deref(), Some("1"));
        let keys = changed(&cache, listed(vec![spec("a", 1), spec("c", 3)], 3));
        assert_eq!(keys, vec!["default/b", "default/c"]);
        assert_eq!(cache.keys(), vec!["default/a", "default/c"]);
    }

    #[test]
    fn an_outage_keeps_the_specs_but_not_the_authority() {
        let cache = DesiredState::default();
        changed(&cache, listed(vec![spec("a", 1)], 1));
        let error = Event::Error { message: "connection refused".into(), transient: true };
        assert!(changed(&cache, error).is_empty());
        assert!(!cache.authoritative());
        assert!(cache.get("default/a").is_some(), "the last known spec is kept through an outage");
        assert_eq!(cache.last_error().as_deref(), Some("connection refused"));
        changed(&cache, listed(vec![], 2));
        assert!(cache.authoritative());
        assert!(cache.get("default/a").is_none(), "a successful list is what deletes");
    }

    #[test]
    fn watch_events_move_the_revision_forward_only() {
        let cache = DesiredState::default();
        changed(&cache, listed(vec![], 5));
        changed(&cache, put(spec("a", 7)));
        let gone = Event::Delete { key: keys::spec_key("default", "zzz").unwrap(), revision: 6 };
        assert_eq!(changed(&cache, gone), vec!["default/zzz"]);
        assert_eq!(cache.revision(), 7);
        changed(&cache, Event::Delete { key: keys::spec_key("default", "a").unwrap(), revision: 8 });
        assert!(cache.is_empty());
    }

    #[test]
    fn an_unreadable_spec_is_set_aside_reported_once_per_revision_and_not_a_deletion() {
        let cache = DesiredState::default();
        let keys = changed(&cache, listed(vec![spec("a", 1), unreadable("bad", 2)], 2));
        assert_eq!(keys, vec!["default/a", "default/bad"]);
        assert_eq!(cache.keys(), vec!["default/a"], "not a spec to act on");
        let invalid = cache.invalid("default/bad").expect("nor a deletion");
        assert_eq!((invalid.name.as_str(), invalid.resource_version.as_str()), ("bad", "2"));
        assert!(invalid.error.contains("spec.image"), "{invalid:?}");
        assert!(cache.take_unreported_invalid("default/bad").is_some());
        assert!(cache.take_unreported_invalid("default/bad").is_none(), "reported once");
        // Listed again unchanged: not reported again, not enqueued again.
        let keys = changed(&cache, listed(vec![spec("a", 1), unreadable("bad", 2)], 3));
        assert!(keys.is_empty(), "{keys:?}");
        assert!(cache.take_unreported_invalid("default/bad").is_none());
        // Rewritten, still unreadable: reported again. Repaired: a spec again.
        changed(&cache, put(unreadable("bad", 4)));
        assert!(cache.take_unreported_invalid("default/bad").is_some());
        changed(&cache, put(spec("bad", 5)));
        assert!(cache.invalid("default/bad").is_none());
        assert!(cache.get("default/bad").is_some());
        // A spec that turns unreadable stops being one.
        changed(&cache, put(unreadable("a", 6)));
        assert!(cache.get("default/a").is_none() && cache.invalid("default/a").is_some());
    }
}
