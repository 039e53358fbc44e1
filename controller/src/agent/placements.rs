//! Placements: the specs one host runs, under that host's own prefix
//! (`/kedge/v1/placements/<host>/<ns>/<name>`, see [`keys::PLACEMENTS`]), so that an agent's watch
//! wakes only for its own work. The scheduler's leader writes them, projecting specs and bindings
//! (`controllers/projection.rs`); each carries the spec as stored and the spec key's revisions.
//!
//! An agent follows `specs/` and `bindings/` (every host's: the old layout) until the leader's
//! marker [`keys::PLACEMENTS_READY`] says the placements are complete and names the current
//! leader's term, then only its own placements. A new leader of this kedge says in the marker, as
//! it takes over, that it keeps the placements ([`ReadyMarker::keeper`]), and marks them complete
//! after its first pass; meanwhile the agents go on following them. When the current leader has
//! neither marked nor kept them for [`super::AgentConfig::placements_grace`] (a leader of an older
//! kedge, which keeps no placements; no leader; no marker), an agent follows the old layout again,
//! until a leader marks the placements anew. An agent that starts follows its placements when they
//! are marked under the current leader; when there is a marker but not of the current leader, it
//! follows nothing until they are (for at most the grace unless the leader keeps them), and only
//! without any marker does it start on the old layout. Both feed the same two caches
//! ([`DesiredState`] and [`BindingCache`]): a placement is translated into the spec key it
//! projects (at the spec's own revisions, so a spec is the same object whichever way it was read)
//! and a binding to this host. The switch therefore changes nothing for the specs this host runs
//! (same keys, same revisions: nothing is enqueued, nothing recreated), and drops the other hosts'
//! specs from the caches. Between the old followers'
//! end and the first list of the placements the caches are not in sync, and nothing is removed
//! while they are not; the same holds for a switch back. A placement whose spec the leader found
//! unreadable keeps the last readable version and says why ([`Placement::invalid`]): its key is
//! noted beside the spec cache ([`DesiredState::placed_invalid`]) and its reconcile reports
//! `InvalidSpec` instead of acting.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::queue::WorkQueue;
use crate::runtime::{reflector, Event, Reflector, Watcher};
use crate::store::{keys, KeyValue, SharedStore};

use super::bindings::{Binding, BindingCache};
pub use super::cache::InvalidSpec;
use super::cache::{DesiredState, InvalidNotes};

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
    /// The spec's envelope as the leader read it: its last readable version.
    pub spec: serde_json::Value,
    /// Set when the stored spec cannot be read any more: the placement keeps its last readable
    /// version (so nothing is removed or moved), and the agent reports why it acts on none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<InvalidSpec>,
}

/// What the leader reads of a placement to compare it with its spec (the spec itself is skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementHeader {
    pub spec_revision: i64,
    /// The revision of the unreadable spec the placement reports, if it reports one.
    #[serde(default)]
    pub invalid: Option<InvalidHeader>,
}

/// The part of [`InvalidSpec`] the leader compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidHeader {
    pub resource_version: i64,
}

/// The marker's value ([`keys::PLACEMENTS_READY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyMarker {
    /// The placements' layout version ([`LAYOUT_VERSION`]).
    pub version: u32,
    /// The term of the leader that found the placements complete and wrote it.
    pub term: i64,
    /// The term of a leader that took over from `term`'s and keeps the placements, but has not
    /// found them complete yet (its first pass needs every spec, binding and placement listed,
    /// which can take minutes on a loaded store with tens of thousands of specs). While it leads,
    /// agents that follow their placements go on doing so, and a starting agent waits for its
    /// mark, instead of every agent listing every spec and binding at once (see the module
    /// documentation). Older kedges neither write nor read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeper: Option<i64>,
}

/// One placement key-value of this host, as the caches take it.
struct Translated {
    spec: KeyValue,
    binding: KeyValue,
    /// The placement says its stored spec cannot be read ([`Placement::invalid`]).
    invalid: Option<InvalidSpec>,
}

/// The spec key-value and the binding key-value one placement key-value of `host` stands for;
/// `None` for a key that is not one of `host`'s placements. A placement that cannot be decoded
/// gives a spec that cannot either: set aside, neither run nor taken for a deletion.
fn translate_kv(kv: &KeyValue, host: &str) -> Option<Translated> {
    let (placed_on, namespace, name) = keys::parse_placement_key(&kv.key)?;
    if placed_on != host {
        return None;
    }
    let spec_key = keys::spec_key(namespace, name).ok()?;
    let binding_key = keys::binding_key(namespace, name).ok()?;
    let (spec_value, mod_revision, term, invalid) = match serde_json::from_slice::<Placement>(&kv.value) {
        Ok(placement) => (
            serde_json::to_vec(&placement.spec).unwrap_or_default(),
            placement.spec_revision,
            placement.term,
            placement.invalid,
        ),
        Err(_) => (kv.value.clone(), kv.mod_revision, 0, None),
    };
    let binding = serde_json::to_vec(&Binding { host: host.to_owned(), term }).unwrap_or_default();
    let spec = KeyValue { key: spec_key, value: spec_value, mod_revision, lease: 0, ..kv.clone() };
    let binding = KeyValue { key: binding_key, value: binding, ..kv.clone() };
    Some(Translated { spec, binding, invalid })
}

/// The work keys (`namespace/name`) whose placements in `event` say that their stored spec cannot
/// be read, and why; a listing gives every one (the rest are readable), a put or a delete its own.
fn invalid_notes(event: &Event, host: &str) -> Option<(bool, InvalidNotes)> {
    let work_key = |store_key: &str| {
        keys::parse_placement_key(store_key).map(|(_, namespace, name)| format!("{namespace}/{name}"))
    };
    match event {
        Event::Restarted { kvs, .. } => Some((
            true,
            kvs.iter()
                .filter_map(|kv| Some((work_key(&kv.key)?, translate_kv(kv, host)?.invalid)))
                .filter(|(_, invalid)| invalid.is_some())
                .collect(),
        )),
        Event::Put { kv, .. } => Some((false, vec![(work_key(&kv.key)?, translate_kv(kv, host)?.invalid)])),
        Event::Delete { key, .. } => Some((false, vec![(work_key(key)?, None)])),
        Event::Error { .. } => None,
    }
}

/// The events of the spec cache and of the binding cache that one event of `host`'s placements
/// stands for (see the module docs); `None` for a key that is not one of `host`'s placements (its
/// watch never sends one).
pub(crate) fn translate(event: &Event, host: &str) -> Option<(Event, Event)> {
    Some(match event {
        Event::Restarted { kvs, revision } => {
            let (specs, bindings) = kvs
                .iter()
                .filter_map(|kv| translate_kv(kv, host))
                .map(|translated| (translated.spec, translated.binding))
                .unzip();
            (
                Event::Restarted { kvs: specs, revision: *revision },
                Event::Restarted { kvs: bindings, revision: *revision },
            )
        }
        Event::Put { kv, revision } => {
            let Translated { spec, binding, .. } = translate_kv(kv, host)?;
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
        // A placement that reports its spec unreadable keeps the spec's revision: the key is
        // enqueued for the report, since the spec cache saw no change.
        if let Some((all, notes)) = invalid_notes(&event, &host) {
            for key in specs.note_invalid(all, notes) {
                queue.add(key);
            }
        }
        for key in bound.keys.iter().filter_map(|key| keys::parse_binding_key(key)) {
            queue.add(format!("{}/{}", key.0, key.1));
        }
        for key in changed {
            queue.add(key);
        }
    }
}

/// Whether the marker says the placements are complete, in a layout this agent knows, and was
/// written by the scheduler's current leader: a leader of an older kedge does not keep the
/// placements, so a marker of an earlier term does not vouch for them.
fn ready(marker: &Reflector<ReadyMarker>, leader: &Reflector<()>) -> bool {
    current_marker(marker, leader).is_some_and(|(ready, term)| ready.term == term)
}

/// Whether the scheduler's current leader keeps the placements: it found them complete
/// ([`ready`]), or it took over from a leader that did and said it keeps them
/// ([`ReadyMarker::keeper`]) while its first pass runs.
fn kept(marker: &Reflector<ReadyMarker>, leader: &Reflector<()>) -> bool {
    current_marker(marker, leader)
        .is_some_and(|(ready, term)| ready.term == term || ready.keeper == Some(term))
}

/// The marker, when it is in a layout this agent knows, and the current leader's term; `None`
/// while either is not known (not in sync) or missing.
fn current_marker(marker: &Reflector<ReadyMarker>, leader: &Reflector<()>) -> Option<(ReadyMarker, i64)> {
    if !marker.in_sync() || !leader.in_sync() {
        return None;
    }
    let ready =
        marker.get(keys::PLACEMENTS_READY).filter(|ready| (1..=LAYOUT_VERSION).contains(&ready.version))?;
    let term = leader.stored(keys::SCHEDULER_LEADER)?.mod_revision;
    Some((ready, term))
}

/// What a starting agent does before it follows anything, once the marker and the leader key are
/// read ([`follow_desired`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtStart {
    /// The placements are complete under the current leader: follow them.
    Placements,
    /// There is a marker but the current leader has not found the placements complete (a change
    /// of leader is under way, an older kedge leads, or nobody does): wait for it, following
    /// nothing, for at most the grace if the current leader does not keep them, however long it
    /// takes if it does ([`kept`]). Following placements not vouched for could remove a container
    /// bound here since; following every spec and binding is a list of the whole store by every
    /// agent that starts, which is what a fleet's store can least afford while its leadership
    /// changes.
    Wait,
    /// No marker: a fleet whose leaders never kept placements. Follow every spec and binding.
    OldLayout,
}

fn at_start(marker: &Reflector<ReadyMarker>, leader: &Reflector<()>) -> AtStart {
    if ready(marker, leader) {
        AtStart::Placements
    } else if marker.get(keys::PLACEMENTS_READY).is_some() {
        AtStart::Wait
    } else {
        AtStart::OldLayout
    }
}

/// A starting agent's wait ([`AtStart::Wait`]): true once the placements are complete under the
/// current leader, false once the current leader has not kept them for `grace` on end.
async fn wait_for_mark(
    marker: &Reflector<ReadyMarker>,
    leader: &Reflector<()>,
    grace: std::time::Duration,
) -> bool {
    watch_marker(marker, leader, grace, ready).await
}

/// Waits until the current leader has not kept the placements ([`kept`]) for `grace` on end: the
/// leadership went to a leader that does not keep them, or nobody leads, or the marker is gone. A
/// new leader of this kedge says it keeps them as it takes over and marks them after its first
/// complete pass, so a change of leader changes nothing for the agents, however long that pass
/// takes.
async fn until_unvouched(
    marker: &Reflector<ReadyMarker>,
    leader: &Reflector<()>,
    grace: std::time::Duration,
) {
    watch_marker(marker, leader, grace, |_, _| false).await;
}

/// Follows the marker and the leader key: true as soon as `done` holds, false once the current
/// leader has not kept the placements ([`kept`]) for `grace` on end (the count starts again
/// whenever it keeps them).
async fn watch_marker(
    marker: &Reflector<ReadyMarker>,
    leader: &Reflector<()>,
    grace: std::time::Duration,
    done: fn(&Reflector<ReadyMarker>, &Reflector<()>) -> bool,
) -> bool {
    let mut since: Option<tokio::time::Instant> = None;
    loop {
        let (mut marker_changes, mut leader_changes) = (marker.subscribe(), leader.subscribe());
        if done(marker, leader) {
            return true;
        }
        if kept(marker, leader) {
            since = None;
        } else if since.get_or_insert_with(tokio::time::Instant::now).elapsed() >= grace {
            return false;
        }
        let deadline = since.map(|began| began + grace);
        tokio::select! {
            _ = marker_changes.changed() => {}
            _ = leader_changes.changed() => {}
            _ = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// How an agent follows what it should run: the old layout (every spec and binding) until the
/// marker says the placements are complete under the current leader, then its own placements
/// until `stopping`, or until the marker has not vouched for them for
/// [`super::AgentConfig::placements_grace`]: then the old layout again, until a leader marks them
/// anew (see the module docs). The agent's stats say which it follows.
pub(crate) async fn follow_desired(agent: Arc<super::Agent>, stopping: CancellationToken) {
    let watching = stopping.child_token();
    let _stop_watching = watching.clone().drop_guard();
    let marker = reflector::spawn(
        agent.store.clone(),
        keys::PLACEMENTS_READY,
        "placements marker",
        |kv| serde_json::from_slice::<ReadyMarker>(&kv.value).map_err(|e| e.to_string()),
        watching.clone(),
    );
    // The leader key's revision is the leader's term: what the marker must name.
    let leader = reflector::spawn(
        agent.store.clone(),
        keys::SCHEDULER_LEADER,
        "scheduler leader",
        |_| Ok(()),
        watching,
    );
    // A restarted agent of a fleet that switched long ago goes straight to its placements, instead
    // of listing every spec and binding first. It reads the marker and the leader key first,
    // however long a loaded store takes: the old layout would be a list of the whole store, which
    // a slow store can least afford (a thousand agents that lost their host locks to a slow store
    // and started again, each listing 30,000 specs, kept it from ever answering again).
    let known = async {
        while !marker.wait_in_sync(std::time::Duration::from_secs(60)).await {}
        while !leader.wait_in_sync(std::time::Duration::from_secs(60)).await {}
    };
    tokio::select! {
        _ = known => {}
        _ = stopping.cancelled() => return,
    }
    let grace = agent.config.placements_grace;
    let mut placements_now = agent.follows_placements();
    if !placements_now {
        match at_start(&marker, &leader) {
            AtStart::Placements => placements_now = true,
            AtStart::Wait => {
                tracing::info!(host = %agent.config.host_name, "waiting for the scheduler's leader to find the placements complete");
                tokio::select! {
                    found = wait_for_mark(&marker, &leader, grace) => placements_now = found,
                    _ = stopping.cancelled() => return,
                }
            }
            AtStart::OldLayout => {}
        }
    }
    loop {
        if !placements_now && !ready(&marker, &leader) {
            agent.config.stats.placements.store(false, std::sync::atomic::Ordering::SeqCst);
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
                let (mut marker_changes, mut leader_changes) = (marker.subscribe(), leader.subscribe());
                if ready(&marker, &leader) {
                    break;
                }
                tokio::select! {
                    _ = &mut followers => return,
                    _ = marker_changes.changed() => {}
                    _ = leader_changes.changed() => {}
                }
            }
            old.cancel();
            followers.await;
            tracing::info!(host = %agent.config.host_name, "the placements are complete: following this host's placements only");
        }
        agent.config.stats.placements.store(true, std::sync::atomic::Ordering::SeqCst);
        let following = stopping.child_token();
        let placements = follow_placements(
            agent.store.clone(),
            agent.config.host_name.clone(),
            agent.cache.clone(),
            agent.bindings.clone(),
            agent.queue.clone(),
            following.clone(),
        );
        tokio::select! {
            _ = placements => return,
            _ = until_unvouched(&marker, &leader, grace) => {}
        }
        following.cancel();
        // The old layout's cache holds unreadable specs apart by itself.
        agent.cache.note_invalid(true, Vec::new());
        if stopping.is_cancelled() {
            return;
        }
        // The old layout's followers list everything again; nothing is removed while they do.
        tracing::warn!(
            host = %agent.config.host_name,
            grace_seconds = grace.as_secs(),
            "the current leader has not vouched for the placements (an older kedge leads, nobody does, or the marker is gone): following every spec and binding again"
        );
        agent.config.stats.placements.store(false, std::sync::atomic::Ordering::SeqCst);
        placements_now = false;
    }
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
            invalid: None,
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

    fn kv(key: &str, value: Vec<u8>, revision: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value,
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        }
    }

    fn marker_of(term: i64, revision: i64) -> KeyValue {
        let value = serde_json::to_vec(&ReadyMarker { version: LAYOUT_VERSION, term, keeper: None }).unwrap();
        kv(keys::PLACEMENTS_READY, value, revision)
    }

    /// The marker and leader-key caches of a store where h1 leads in term 10 and has marked the
    /// placements complete.
    fn marked_by_the_leader_of_term_10() -> (Reflector<ReadyMarker>, Reflector<()>) {
        let marker: Reflector<ReadyMarker> =
            Reflector::new(|kv| serde_json::from_slice(&kv.value).map_err(|e| e.to_string()));
        let leader: Reflector<()> = Reflector::new(|_| Ok(()));
        leader.apply(&Event::Restarted {
            kvs: vec![kv(keys::SCHEDULER_LEADER, b"h1".to_vec(), 10)],
            revision: 12,
        });
        marker.apply(&Event::Restarted { kvs: vec![marker_of(10, 12)], revision: 12 });
        (marker, leader)
    }

    fn marker_kept(term: i64, keeper: i64, revision: i64) -> KeyValue {
        let marker = ReadyMarker { version: LAYOUT_VERSION, term, keeper: Some(keeper) };
        kv(keys::PLACEMENTS_READY, serde_json::to_vec(&marker).unwrap(), revision)
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_leader_that_keeps_the_placements_vouches_for_them_until_its_pass_marks_them() {
        let grace = std::time::Duration::from_secs(30);
        let (marker, leader) = marked_by_the_leader_of_term_10();
        assert_eq!(at_start(&marker, &leader), AtStart::Placements);

        // The leadership moves; the new leader says it keeps the placements before its first pass
        // has listed everything. Agents on them stay, however long that pass takes.
        leader.apply(&Event::Put { kv: kv(keys::SCHEDULER_LEADER, b"h2".to_vec(), 20), revision: 20 });
        marker.apply(&Event::Put { kv: marker_kept(10, 20, 21), revision: 21 });
        assert!(!ready(&marker, &leader) && kept(&marker, &leader));
        assert!(still_vouched(&marker, &leader, grace, grace * 10).await, "kept by the leader of term 20");
        // An agent that starts now neither trusts them yet nor lists the old layout: it waits for
        // the mark, past the grace.
        assert_eq!(at_start(&marker, &leader), AtStart::Wait);
        let waiting = wait_for_mark(&marker, &leader, grace);
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(grace * 10, &mut waiting).await.is_err(), "still waiting");
        marker.apply(&Event::Put { kv: marker_of(20, 30), revision: 30 });
        let marked = tokio::time::timeout(std::time::Duration::from_secs(1), &mut waiting).await;
        assert_eq!(marked, Ok(true), "the mark ends the wait: follow the placements");

        // A marker the current leader neither wrote nor keeps (an older kedge leads): a starting
        // agent waits the grace for a mark, then follows the old layout.
        leader.apply(&Event::Put { kv: kv(keys::SCHEDULER_LEADER, b"old".to_vec(), 40), revision: 40 });
        assert!(!kept(&marker, &leader));
        assert_eq!(at_start(&marker, &leader), AtStart::Wait);
        let started = tokio::time::Instant::now();
        assert!(!wait_for_mark(&marker, &leader, grace).await);
        assert_eq!(started.elapsed(), grace);
        // A keeper that lost the leadership keeps nothing.
        marker.apply(&Event::Put { kv: marker_kept(20, 30, 41), revision: 41 });
        assert!(!kept(&marker, &leader));

        // No marker at all: a fleet that never had placements starts on the old layout at once.
        marker.apply(&Event::Delete { key: keys::PLACEMENTS_READY.into(), revision: 50 });
        assert_eq!(at_start(&marker, &leader), AtStart::OldLayout);
    }

    /// Whether `until_unvouched` is still waiting after `after`.
    async fn still_vouched(
        marker: &Reflector<ReadyMarker>,
        leader: &Reflector<()>,
        grace: std::time::Duration,
        after: std::time::Duration,
    ) -> bool {
        tokio::time::timeout(after, until_unvouched(marker, leader, grace)).await.is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn placements_are_trusted_while_the_marker_names_the_current_leader() {
        let grace = std::time::Duration::from_secs(30);
        let (marker, leader) = marked_by_the_leader_of_term_10();
        assert!(ready(&marker, &leader));
        assert!(still_vouched(&marker, &leader, grace, grace * 4).await, "the leader of term 10 vouches");

        // A leader that does not mark (an older kedge) takes over: trusted for the grace, no longer.
        leader.apply(&Event::Put { kv: kv(keys::SCHEDULER_LEADER, b"old".to_vec(), 20), revision: 20 });
        assert!(!ready(&marker, &leader));
        assert!(still_vouched(&marker, &leader, grace, grace - std::time::Duration::from_secs(1)).await);
        let started = tokio::time::Instant::now();
        until_unvouched(&marker, &leader, grace).await;
        assert_eq!(started.elapsed(), grace, "a fresh wait counts the whole grace again");

        // A new leader of this kedge marks within the grace: the placements stay trusted.
        leader.apply(&Event::Put { kv: kv(keys::SCHEDULER_LEADER, b"h2".to_vec(), 30), revision: 30 });
        let waiting = until_unvouched(&marker, &leader, grace);
        tokio::pin!(waiting);
        assert!(tokio::time::timeout(std::time::Duration::from_secs(5), &mut waiting).await.is_err());
        marker.apply(&Event::Put { kv: marker_of(30, 31), revision: 31 });
        assert!(tokio::time::timeout(grace * 4, &mut waiting).await.is_err(), "vouched for again");

        // The marker deleted, or nobody leading: not vouched for.
        marker.apply(&Event::Delete { key: keys::PLACEMENTS_READY.into(), revision: 40 });
        assert!(!ready(&marker, &leader));
        marker.apply(&Event::Put { kv: marker_of(30, 41), revision: 41 });
        leader.apply(&Event::Delete { key: keys::SCHEDULER_LEADER.into(), revision: 42 });
        assert!(!ready(&marker, &leader));
    }
}
