//! Placements: the specs one host runs, under that host's own prefix
//! (`/kedge/v1/placements/<host>/<ns>/<name>`, see [`keys::PLACEMENTS`]), so that an agent's watch
//! wakes only for its own work. The scheduler's leader writes them, projecting specs and bindings
//! (`controllers/projection.rs`); each carries the spec as stored and the spec key's revisions.
//!
//! An agent follows `specs/` and `bindings/` (every host's: the old layout) until the leader's
//! marker [`keys::PLACEMENTS_READY`] says the placements are complete, then only its own
//! placements, for good. Both feed the same two caches ([`DesiredState`] and [`BindingCache`]): a
//! placement is translated into the spec key it projects (at the spec's own revisions, so a spec
//! is the same object whichever way it was read) and a binding to this host. The switch therefore
//! changes nothing for the specs this host runs (same keys, same revisions: nothing is enqueued,
//! nothing recreated), and drops the other hosts' specs from the caches. Between the old followers'
//! end and the first list of the placements the caches are not in sync, and nothing is removed
//! while they are not.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::queue::WorkQueue;
use crate::runtime::{reflector, Event, Reflector, Watcher};
use crate::store::{keys, KeyValue, SharedStore};

use super::bindings::{Binding, BindingCache};
use super::cache::DesiredState;

/// How long an agent waits at start to read the marker before it follows the old layout meanwhile.
const MARKER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The layout version the marker names; an agent switches to placements only for a version it knows.
pub const LAYOUT_VERSION: u32 = 1;

/// A placement as stored: the spec and the revisions of its spec key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The scheduler term that wrote it (informational; the writes are fenced on it).
    pub term: i64,
    /// The spec key's `mod_revision`: the spec's resourceVersion, and what tells the leader that
    /// the placement is behind its spec.
    pub spec_revision: i64,
    /// The spec's envelope as the leader read it.
    pub spec: serde_json::Value,
}

/// What the leader reads of a placement to compare it with its spec (the spec itself is skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementHeader {
    pub spec_revision: i64,
}

/// The marker's value ([`keys::PLACEMENTS_READY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyMarker {
    /// The placements' layout version ([`LAYOUT_VERSION`]).
    pub version: u32,
    /// The term of the leader that wrote it.
    pub term: i64,
}

/// The spec key-value and the binding key-value one placement key-value of `host` stands for;
/// `None` for a key that is not one of `host`'s placements. A placement that cannot be decoded
/// gives a spec that cannot either: set aside, neither run nor taken for a deletion.
fn translate_kv(kv: &KeyValue, host: &str) -> Option<(KeyValue, KeyValue)> {
    let (placed_on, namespace, name) = keys::parse_placement_key(&kv.key)?;
    if placed_on != host {
        return None;
    }
    let spec_key = keys::spec_key(namespace, name).ok()?;
    let binding_key = keys::binding_key(namespace, name).ok()?;
    let (spec_value, mod_revision, term) = match serde_json::from_slice::<Placement>(&kv.value) {
        Ok(placement) => {
            (serde_json::to_vec(&placement.spec).unwrap_or_default(), placement.spec_revision, placement.term)
        }
        Err(_) => (kv.value.clone(), kv.mod_revision, 0),
    };
    let binding = serde_json::to_vec(&Binding { host: host.to_owned(), term }).unwrap_or_default();
    let spec = KeyValue { key: spec_key, value: spec_value, mod_revision, lease: 0, ..kv.clone() };
    let binding = KeyValue { key: binding_key, value: binding, ..kv.clone() };
    Some((spec, binding))
}

/// The events of the spec cache and of the binding cache that one event of `host`'s placements
/// stands for (see the module docs); `None` for a key that is not one of `host`'s placements (its
/// watch never sends one).
pub(crate) fn translate(event: &Event, host: &str) -> Option<(Event, Event)> {
    Some(match event {
        Event::Restarted { kvs, revision } => {
            let (specs, bindings) = kvs.iter().filter_map(|kv| translate_kv(kv, host)).unzip();
            (
                Event::Restarted { kvs: specs, revision: *revision },
                Event::Restarted { kvs: bindings, revision: *revision },
            )
        }
        Event::Put { kv, revision } => {
            let (spec, binding) = translate_kv(kv, host)?;
            (Event::Put { kv: spec, revision: *revision }, Event::Put { kv: binding, revision: *revision })
        }
        Event::Delete { key, revision } => {
            let (placed_on, namespace, name) = keys::parse_placement_key(key)?;
            if placed_on != host {
                return None;
            }
            let work_key = format!("{namespace}/{name}");
            (
                Event::Delete { key: keys::spec_key_of(&work_key), revision: *revision },
                Event::Delete { key: keys::binding_key_of(&work_key), revision: *revision },
            )
        }
        Event::Error { .. } => (event.clone(), event.clone()),
    })
}

/// Keeps the spec and binding caches equal to `host`'s placements, enqueuing every key that
/// changed, until `shutdown`.
pub(crate) async fn follow_placements(
    store: SharedStore,
    host: String,
    specs: Arc<DesiredState>,
    bindings: Arc<BindingCache>,
    queue: WorkQueue<String>,
    shutdown: CancellationToken,
) {
    let prefix = match keys::placements_prefix(&host) {
        Ok(prefix) => prefix,
        Err(error) => {
            tracing::error!(%error, "this host's name cannot be a key segment; not following placements");
            shutdown.cancelled().await;
            return;
        }
    };
    let mut watcher = Watcher::new(store, prefix.clone(), shutdown);
    let _specs_followed = specs.reflector().following();
    let _bindings_followed = bindings.reflector().following();
    while let Some(event) = watcher.next().await {
        let Some((spec_event, binding_event)) = translate(&event, &host) else { continue };
        // The binding first: a reconcile in between sees its spec here, at worst its old version.
        let bound = bindings.reflector().apply(&binding_event);
        let (changed, applied) = specs.apply(&spec_event);
        reflector::log_sync("placements", &prefix, &event, &applied);
        for key in bound.keys.iter().filter_map(|key| keys::parse_binding_key(key)) {
            queue.add(format!("{}/{}", key.0, key.1));
        }
        for key in changed {
            queue.add(key);
        }
    }
}

/// Whether the marker says the placements are complete, in a layout this agent knows.
fn ready(marker: &Reflector<ReadyMarker>) -> bool {
    marker.in_sync()
        && marker
            .get(keys::PLACEMENTS_READY)
            .is_some_and(|ready| ready.version >= 1 && ready.version <= LAYOUT_VERSION)
}

/// How an agent follows what it should run: the old layout (every spec and binding) until the
/// marker says the placements are complete, then its own placements until `stopping` (see the
/// module docs). Says so in the agent's stats once it follows placements.
pub(crate) async fn follow_desired(agent: Arc<super::Agent>, stopping: CancellationToken) {
    let watching = stopping.child_token();
    let _stop_watching = watching.clone().drop_guard();
    let marker = reflector::spawn(
        agent.store.clone(),
        keys::PLACEMENTS_READY,
        "placements marker",
        |kv| serde_json::from_slice::<ReadyMarker>(&kv.value).map_err(|e| e.to_string()),
        watching,
    );
    // A restarted agent of a fleet that switched long ago goes straight to its placements, instead
    // of listing every spec and binding first; a store that does not answer is waited for only a
    // little (the old layout is followed meanwhile: it removes nothing while not in sync either).
    tokio::select! {
        _ = marker.wait_in_sync(MARKER_WAIT) => {}
        _ = stopping.cancelled() => return,
    }
    if !agent.follows_placements() && !ready(&marker) {
        let old = stopping.child_token();
        let followers = async {
            tokio::join!(
                super::sources::follow_store(
                    agent.store.clone(),
                    agent.cache.clone(),
                    agent.queue.clone(),
                    old.clone()
                ),
                super::bindings::follow_bindings(
                    agent.store.clone(),
                    agent.bindings.clone(),
                    agent.queue.clone(),
                    old.clone()
                ),
            )
        };
        tokio::pin!(followers);
        loop {
            let mut changes = marker.subscribe();
            if ready(&marker) {
                break;
            }
            tokio::select! {
                _ = &mut followers => return,
                _ = changes.changed() => {}
            }
        }
        old.cancel();
        followers.await;
        tracing::info!(host = %agent.config.host_name, "the placements are complete: following this host's placements only");
    }
    agent.config.stats.placements.store(true, std::sync::atomic::Ordering::SeqCst);
    follow_placements(
        agent.store.clone(),
        agent.config.host_name.clone(),
        agent.cache.clone(),
        agent.bindings.clone(),
        agent.queue.clone(),
        stopping,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement_kv(host: &str, name: &str, spec_revision: i64, revision: i64) -> KeyValue {
        let placement = Placement {
            term: 3,
            spec_revision,
            spec: serde_json::json!({
                "apiVersion": "kedge.io/v1",
                "kind": "Container",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"image": "kedge-test/app:v1"}
            }),
        };
        KeyValue {
            key: keys::placement_key(host, "default", name).unwrap(),
            value: serde_json::to_vec(&placement).unwrap(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn a_placement_is_its_spec_at_the_spec_revision_and_a_binding_here() {
        let (specs, bindings) = (DesiredState::default(), BindingCache::default());
        let listed = Event::Restarted {
            kvs: vec![placement_kv("h1", "web", 7, 9), placement_kv("h2", "db", 8, 10)],
            revision: 10,
        };
        let (spec_event, binding_event) = translate(&listed, "h1").unwrap();
        bindings.reflector().apply(&binding_event);
        let (changed, _) = specs.apply(&spec_event);
        assert_eq!(changed, vec!["default/web"], "another host's placement is none of h1's");
        let web = specs.sight("default/web");
        assert_eq!(web.stored.as_ref().map(|s| s.mod_revision), Some(7), "the spec's own revision");
        assert_eq!(web.object().unwrap().metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(bindings.host_of("default/web").as_deref(), Some("h1"));
        assert!(specs.authoritative() && bindings.authoritative());

        // The same spec read from specs/ (the old layout) is the same object: nothing changed.
        let (changed, _) = specs.apply(&listed_from_specs(7));
        assert!(changed.is_empty(), "{changed:?}");

        let gone = Event::Delete { key: keys::placement_key("h1", "default", "web").unwrap(), revision: 11 };
        let (spec_event, binding_event) = translate(&gone, "h1").unwrap();
        bindings.reflector().apply(&binding_event);
        assert_eq!(specs.apply(&spec_event).0, vec!["default/web"]);
        assert!(specs.sight("default/web").known_absent() && bindings.host_of("default/web").is_none());
        assert_eq!(specs.revision(), 11);
    }

    fn listed_from_specs(revision: i64) -> Event {
        let value = serde_json::json!({
            "apiVersion": "kedge.io/v1",
            "kind": "Container",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"image": "kedge-test/app:v1"}
        });
        let kv = KeyValue {
            key: keys::spec_key("default", "web").unwrap(),
            value: serde_json::to_vec(&value).unwrap(),
            create_revision: 2,
            mod_revision: revision,
            version: 4,
            lease: 0,
        };
        Event::Restarted { kvs: vec![kv], revision: 11 }
    }

    #[test]
    fn an_unreadable_placement_is_an_unreadable_spec_not_a_deletion() {
        let specs = DesiredState::default();
        let mut kv = placement_kv("h1", "web", 7, 9);
        kv.value = b"{not json".to_vec();
        let (spec_event, _) = translate(&Event::Restarted { kvs: vec![kv], revision: 9 }, "h1").unwrap();
        specs.apply(&spec_event);
        assert!(specs.get("default/web").is_none());
        assert!(specs.invalid("default/web").is_some(), "set aside, so its container is left alone");
    }
}
