//! The placement projection: the scheduler's leader keeps each host's placements
//! (`/kedge/v1/placements/<host>/<ns>/<name>`, [`keys::PLACEMENTS`]) equal to the specs and bindings,
//! so that an agent watches only its own host's prefix (`agent/placements.rs`).
//!
//! On every leader pass, from the leader's caches (specs, bindings, placements; all in sync or
//! nothing is decided), [`plan`] decides:
//! - a spec's host is the host it names, else the host its binding names; a spec with neither has
//!   no placement (it waits for the scheduler);
//! - a placement whose spec is gone, or runs on another host now, is deleted; one whose spec
//!   changed is rewritten (compare-and-swap on the placement); a missing one is created;
//! - a spec that cannot be read keeps its placements and their last readable version: an
//!   unreadable spec is neither a deletion nor a move, and its container is left alone. Each of
//!   its placements is rewritten once per unreadable revision to say so ([`Placement::invalid`]),
//!   so that its agent reports why (reason `InvalidSpec`).
//!
//! The deletes of a pass are written before its creates, one at a time: when a spec moves, the
//! store never holds two placements of it at one revision, so no agent is told to run it while
//! another still is (the old agent removes its container when its placement goes; the new one
//! creates its own when its placement comes, at a later revision).
//!
//! Every write is fenced on the leader's term, like the bindings. After its first complete pass
//! (every write it decided made, none refused: the placements then match the caches it read), each
//! leader writes the marker [`keys::PLACEMENTS_READY`] with its term: agents follow their
//! placements instead of every spec and binding only while the marker names the current leader's
//! term. A leader of an older kedge, which does not keep the placements, does not rewrite the
//! marker, so the agents go back to following specs and bindings (`agent/placements.rs`). A full
//! pass runs at each new leadership (the caches are listed anew), and writes nothing when nothing
//! changed.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;

use crate::agent::placements::{InvalidSpec, Placement, ReadyMarker, LAYOUT_VERSION};
use crate::store::{keys, DeleteCondition, Fence, PutCondition, SharedStore, StoreError};

use super::caches::{Changed, LeaderCaches, Reader, Written};

/// Where one readable spec runs: its host and the revision of its spec key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub host: String,
    pub spec_revision: i64,
}

/// One placement as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Existing {
    pub host: String,
    /// The placement key's own revision (for compare-and-swap).
    pub mod_revision: i64,
    /// The spec revision it carries.
    pub spec_revision: i64,
    /// The unreadable spec revision it reports, if any ([`Placement::invalid`]).
    pub invalid_revision: Option<i64>,
}

/// One write of the projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    /// Delete `key`'s placement on `host`, at `mod_revision`.
    Delete { key: String, host: String, mod_revision: i64 },
    /// Write `key`'s placement on `host`; `previous`: the placement's revision (None: create).
    Put { key: String, host: String, previous: Option<i64> },
    /// Rewrite `key`'s placement on `host` (at `mod_revision`) to say that its spec, at
    /// `spec_revision`, cannot be read, keeping the last readable version it carries.
    Invalid { key: String, host: String, mod_revision: i64, spec_revision: i64 },
}

/// Decides the writes that make the placements (`existing`, by `namespace/name`) match the specs
/// (`wanted`, by `namespace/name`); `unreadable`: specs that cannot be read, with their spec
/// key's revision, whose placements are kept, only told once that the spec cannot be read.
/// Deletes come first. Pure: the unit tests' surface.
pub(crate) fn plan(
    wanted: &BTreeMap<String, Wanted>,
    existing: &BTreeMap<String, Vec<Existing>>,
    unreadable: &BTreeMap<String, i64>,
) -> Vec<Write> {
    let mut deletes = Vec::new();
    let mut told = Vec::new();
    for (key, placements) in existing {
        if let Some(spec_revision) = unreadable.get(key) {
            for placement in
                placements.iter().filter(|placement| placement.invalid_revision != Some(*spec_revision))
            {
                told.push(Write::Invalid {
                    key: key.clone(),
                    host: placement.host.clone(),
                    mod_revision: placement.mod_revision,
                    spec_revision: *spec_revision,
                });
            }
            continue;
        }
        for placement in placements {
            if wanted.get(key).is_none_or(|want| want.host != placement.host) {
                let (host, mod_revision) = (placement.host.clone(), placement.mod_revision);
                deletes.push(Write::Delete { key: key.clone(), host, mod_revision });
            }
        }
    }
    let mut puts = Vec::new();
    for (key, want) in wanted {
        let current =
            existing.get(key).and_then(|all| all.iter().find(|placement| placement.host == want.host));
        match current {
            Some(placement) if placement.spec_revision == want.spec_revision => {}
            current => puts.push(Write::Put {
                key: key.clone(),
                host: want.host.clone(),
                previous: current.map(|placement| placement.mod_revision),
            }),
        }
    }
    deletes.extend(puts);
    deletes.extend(told);
    deletes
}

/// Decides the writes for the specs `keys` (`namespace/name`) alone, when the placements matched
/// every spec at a settled pass with no unreadable spec, and since then only these specs changed
/// (no binding, no placement did). `wanted(key)`: where the spec runs now (None: gone, unreadable or
/// unplaced); `existing(key, host)`: its placement on `host`. Answers the same writes [`plan`] would
/// over every spec (the property test `changed_keys_decide_what_a_full_plan_decides`), or `None`
/// when a key may have moved or gone, which only [`plan`] decides. Pure.
pub(crate) fn plan_changed(
    keys: &BTreeSet<String>,
    wanted: impl Fn(&str) -> Option<Wanted>,
    existing: impl Fn(&str, &str) -> Option<Existing>,
) -> Option<Vec<Write>> {
    let mut writes = Vec::new();
    for key in keys {
        let want = wanted(key)?;
        // Settled, the spec's one placement was where it ran; one where it runs now is that one.
        let current = existing(key, &want.host)?;
        if current.invalid_revision.is_some() {
            return None;
        }
        if current.spec_revision != want.spec_revision {
            writes.push(Write::Put {
                key: key.clone(),
                host: want.host,
                previous: Some(current.mod_revision),
            });
        }
    }
    Some(writes)
}

/// Where the spec `key` (`namespace/name`) runs now, read from the caches for it alone.
fn wanted_of(caches: &LeaderCaches, key: &str) -> Option<Wanted> {
    let stored = caches.specs.reflector().stored(&keys::spec_key_of(key))?;
    let named = stored.object.spec.placement.as_ref().and_then(|placement| placement.host.clone());
    let host = match named {
        Some(host) => host,
        None => {
            let (namespace, name) = key.split_once('/')?;
            caches.bindings.get(&keys::binding_key(namespace, name).ok()?)?.host
        }
    };
    Some(Wanted { host, spec_revision: stored.mod_revision })
}

/// The placement of the spec `key` (`namespace/name`) on `host`, if readable.
fn existing_at(caches: &LeaderCaches, key: &str, host: &str) -> Option<Existing> {
    let (namespace, name) = key.split_once('/')?;
    let stored = caches.placements.stored(&keys::placement_key(host, namespace, name).ok()?)?;
    Some(Existing {
        host: host.to_owned(),
        mod_revision: stored.mod_revision,
        spec_revision: stored.object.spec_revision,
        invalid_revision: stored.object.invalid.map(|invalid| invalid.resource_version),
    })
}

/// What the caches say the placements should be, and are; `None` while one of them is not in sync.
pub(crate) type Views = (BTreeMap<String, Wanted>, BTreeMap<String, Vec<Existing>>, BTreeMap<String, i64>);

pub(crate) fn views(caches: &LeaderCaches) -> Option<Views> {
    if !(caches.specs.authoritative() && caches.bindings.in_sync() && caches.placements.in_sync()) {
        return None;
    }
    let bound: BTreeMap<String, String> = caches.bindings.with(|all| {
        all.iter()
            .filter_map(|(key, stored)| {
                let (namespace, name) = keys::parse_binding_key(key)?;
                Some((format!("{namespace}/{name}"), stored.object.host.clone()))
            })
            .collect()
    });
    let wanted = caches.specs.reflector().with(|all| {
        all.iter()
            .filter_map(|(key, stored)| {
                let (namespace, name) = keys::parse_spec_key(key)?;
                let key = format!("{namespace}/{name}");
                let named =
                    stored.object.spec.placement.as_ref().and_then(|placement| placement.host.clone());
                let host = named.or_else(|| bound.get(&key).cloned())?;
                Some((key, Wanted { host, spec_revision: stored.mod_revision }))
            })
            .collect()
    });
    let mut existing: BTreeMap<String, Vec<Existing>> = BTreeMap::new();
    caches.placements.with(|all| {
        for (key, stored) in all {
            let Some((host, namespace, name)) = keys::parse_placement_key(key) else { continue };
            existing.entry(format!("{namespace}/{name}")).or_default().push(Existing {
                host: host.to_owned(),
                mod_revision: stored.mod_revision,
                spec_revision: stored.object.spec_revision,
                invalid_revision: stored.object.invalid.map(|invalid| invalid.resource_version),
            });
        }
    });
    // An unreadable placement (written by hand, or by a newer kedge) counts as one of no spec
    // revision: rewritten by compare-and-swap when its host is right, deleted when not.
    for (key, unreadable) in caches.placements.unreadable_entries() {
        let Some((host, namespace, name)) = keys::parse_placement_key(&key) else { continue };
        let existing = existing.entry(format!("{namespace}/{name}")).or_default();
        existing.push(Existing {
            host: host.to_owned(),
            mod_revision: unreadable.mod_revision,
            spec_revision: 0,
            invalid_revision: None,
        });
    }
    let unreadable = caches
        .specs
        .reflector()
        .unreadable_entries()
        .into_iter()
        .filter_map(|(key, unreadable)| {
            let (namespace, name) = keys::parse_spec_key(&key)?;
            Some((format!("{namespace}/{name}"), unreadable.mod_revision))
        })
        .collect();
    Some((wanted, existing, unreadable))
}

/// The most writes one pass makes: the leader renews its lease between passes, so a pass must stay
/// well within the lease's TTL even when a migration projects 30,000 specs at once.
const MAX_WRITES_PER_PASS: usize = 1024;
/// How many of a pass's writes are in flight at once.
const CONCURRENT_WRITES: usize = 32;

/// One projection pass of the leader of `fence`'s term: the writes [`plan`] decides (every delete
/// before any create, at most [`MAX_WRITES_PER_PASS`]), then the marker once a pass finds nothing
/// to write (`marked`: this leader saw it written or there). Answers when to pass again: at once
/// when writes were left for the next pass. A placement changed meanwhile is decided again on the
/// next pass; only a lost leadership ends the pass with an error.
pub(crate) async fn pass(
    store: &SharedStore,
    fence: Fence<'_>,
    caches: &LeaderCaches,
    written: &mut Written,
    marked: &mut bool,
    settled: &mut Option<[u64; 2]>,
) -> Result<Option<tokio::time::Instant>, StoreError> {
    // Taken and read before the caches are: a change while the pass runs is decided next pass.
    let changed = caches.changed_specs.take(Reader::Projection);
    let seen = caches.projection_changes();
    // Since a settled pass (no write, no unreadable spec) only these specs changed: they alone are
    // decided, unless one may have moved or gone.
    let incremental = match &changed {
        Changed::Keys(keys) if *settled == Some(seen) && *marked => {
            let keys: BTreeSet<String> = keys
                .iter()
                .filter_map(|key| {
                    keys::parse_spec_key(key).map(|(namespace, name)| format!("{namespace}/{name}"))
                })
                .collect();
            plan_changed(&keys, |key| wanted_of(caches, key), |key, host| existing_at(caches, key, host))
        }
        _ => None,
    };
    *settled = None;
    let (mut writes, clean) = match incremental {
        Some(writes) => (writes, true),
        None => {
            let Some((wanted, existing, unreadable)) = views(caches) else {
                tracing::debug!("not projecting placements: the caches are not in sync");
                return Ok(None);
            };
            (plan(&wanted, &existing, &unreadable), unreadable.is_empty())
        }
    };
    if writes.is_empty() {
        if !*marked {
            mark_ready(store, fence).await?;
            *marked = true;
        }
        if clean {
            *settled = Some(seen);
        }
        return Ok(None);
    }
    let mut complete = writes.len() <= MAX_WRITES_PER_PASS;
    let more = writes.len() > MAX_WRITES_PER_PASS;
    writes.truncate(MAX_WRITES_PER_PASS);
    // The deletes all land before the first create: a moved spec is never placed twice.
    let creates_from =
        writes.iter().position(|write| matches!(write, Write::Put { .. })).unwrap_or(writes.len());
    let creates = writes.split_off(creates_from);
    for batch in [writes, creates] {
        let outcomes: Vec<(Write, Result<Option<i64>, StoreError>)> = futures::stream::iter(batch)
            .map(|write| async move {
                let outcome = apply(store, fence, caches, &write).await;
                (write, outcome)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        for (write, outcome) in outcomes {
            match outcome {
                Ok(Some(revision)) => {
                    written.placements = written.placements.max(revision);
                    tracing::debug!(?write, "placement written");
                }
                Ok(None) => {}
                Err(error @ StoreError::Conflict { .. }) if !lost_leadership(&error) => {
                    tracing::debug!(?write, "placement changed meanwhile; deciding again next pass");
                    complete = false;
                }
                Err(error) => return Err(error),
            }
        }
    }
    // Every write this pass decided was made: the placements match the caches it read, and this
    // leader keeps them so from now on.
    if complete && !*marked {
        mark_ready(store, fence).await?;
        *marked = true;
    }
    Ok(more.then(tokio::time::Instant::now))
}

fn lost_leadership(error: &StoreError) -> bool {
    matches!(error, StoreError::Conflict { key, .. } if key == keys::SCHEDULER_LEADER)
}

/// Writes one change; answers the revision it wrote at (None: nothing written, the spec went).
async fn apply(
    store: &SharedStore,
    fence: Fence<'_>,
    caches: &LeaderCaches,
    write: &Write,
) -> Result<Option<i64>, StoreError> {
    let invalid = |e: keys::InvalidSegment| StoreError::Invalid(e.to_string());
    let placement_key = |host: &str, key: &str| {
        let (namespace, name) = key.split_once('/').unwrap_or(("", key));
        keys::placement_key(host, namespace, name).map_err(invalid)
    };
    match write {
        Write::Delete { key, host, mod_revision } => {
            let condition = DeleteCondition::ModRevision(*mod_revision);
            store.delete_fenced(fence, &placement_key(host, key)?, condition).await
        }
        Write::Put { key, host, previous } => {
            let Some(stored) = caches.specs.reflector().stored(&keys::spec_key_of(key)) else {
                return Ok(None);
            };
            let spec =
                serde_json::to_value(&stored.object).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let placement = Placement {
                term: fence.mod_revision,
                spec_revision: stored.mod_revision,
                spec,
                invalid: None,
            };
            let value = serde_json::to_vec(&placement).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let condition = previous.map_or(PutCondition::Absent, PutCondition::ModRevision);
            store.put_fenced(fence, &placement_key(host, key)?, value, condition).await.map(Some)
        }
        Write::Invalid { key, host, mod_revision, spec_revision } => {
            let Some(unreadable) = caches.specs.reflector().unreadable(&keys::spec_key_of(key)) else {
                return Ok(None);
            };
            // The last readable version is the placement's own: read it back (a rare write).
            let placement_key = placement_key(host, key)?;
            let Some(stored) = store.get(&placement_key).await? else { return Ok(None) };
            if stored.mod_revision != *mod_revision {
                return Ok(None);
            }
            let Ok(mut placement) = serde_json::from_slice::<Placement>(&stored.value) else {
                return Ok(None);
            };
            placement.term = fence.mod_revision;
            placement.invalid =
                Some(InvalidSpec { resource_version: *spec_revision, error: unreadable.error });
            let value = serde_json::to_vec(&placement).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let condition = PutCondition::ModRevision(*mod_revision);
            store.put_fenced(fence, &placement_key, value, condition).await.map(Some)
        }
    }
}

/// Says in the marker of an earlier leader that the leader of `fence`'s term keeps the placements
/// ([`ReadyMarker::keeper`]), as it takes over: the agents that follow them go on doing so while
/// its first pass lists everything (minutes, on a loaded store with tens of thousands of specs),
/// instead of all of them listing every spec and binding once their grace is out, which is the
/// load that kept a loaded store from ever answering that pass. Nothing is written when there is
/// no marker (the agents are on the old layout and stay there until the pass marks), nor over a
/// marker of a layout this kedge does not keep.
pub(crate) async fn announce_keeper(store: &SharedStore, fence: Fence<'_>) -> Result<(), StoreError> {
    let Some(current) = store.get(keys::PLACEMENTS_READY).await? else { return Ok(()) };
    let Ok(marker) = serde_json::from_slice::<ReadyMarker>(&current.value) else { return Ok(()) };
    let term = fence.mod_revision;
    if !(1..=LAYOUT_VERSION).contains(&marker.version) || marker.term == term || marker.keeper == Some(term) {
        return Ok(());
    }
    let announced = ReadyMarker { keeper: Some(term), ..marker };
    let value = serde_json::to_vec(&announced).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let condition = PutCondition::ModRevision(current.mod_revision);
    match store.put_fenced(fence, keys::PLACEMENTS_READY, value, condition).await {
        Ok(_) => {
            tracing::info!(term, complete_under = marker.term, "keeping the placements of the leader before");
            Ok(())
        }
        // Changed meanwhile: the first complete pass marks them anyway.
        Err(error @ StoreError::Conflict { .. }) if !lost_leadership(&error) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Writes the marker that the placements are complete and kept by the leader of `fence`'s term
/// (replacing an earlier leader's).
async fn mark_ready(store: &SharedStore, fence: Fence<'_>) -> Result<(), StoreError> {
    let marker = ReadyMarker { version: LAYOUT_VERSION, term: fence.mod_revision, keeper: None };
    let value = serde_json::to_vec(&marker).map_err(|e| StoreError::Invalid(e.to_string()))?;
    match store.put_fenced(fence, keys::PLACEMENTS_READY, value, PutCondition::Always).await {
        Ok(_) => {
            tracing::info!(
                term = fence.mod_revision,
                "the placements are complete; agents follow them from now on"
            );
            Ok(())
        }
        Err(error @ StoreError::Conflict { .. }) if !lost_leadership(&error) => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod changed_keys {
    use proptest::prelude::*;

    use super::*;

    const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

    /// One spec of the model: the host it names, its revision, whether it can be read.
    #[derive(Debug, Clone)]
    struct Spec {
        named: Option<usize>,
        revision: i64,
        readable: bool,
    }

    /// What a change does to one spec.
    #[derive(Debug, Clone)]
    enum Edit {
        /// A new revision (an env change, say): the same placement, rewritten.
        Revise,
        Name(Option<usize>),
        Delete,
        Create(Option<usize>),
        Unreadable,
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            4 => Just(Edit::Revise),
            1 => prop::option::of(0..3usize).prop_map(Edit::Name),
            1 => Just(Edit::Delete),
            1 => prop::option::of(0..3usize).prop_map(Edit::Create),
            1 => Just(Edit::Unreadable),
        ]
    }

    type Model = (BTreeMap<String, Spec>, BTreeMap<String, usize>);

    fn model() -> impl Strategy<Value = Model> {
        let spec = (prop::option::of(0..3usize), 1..50i64).prop_map(|(named, revision)| Spec {
            named: named.filter(|_| revision % 3 == 0),
            revision,
            readable: true,
        });
        let specs = prop::collection::btree_map("ns/s[0-9]", spec, 0..10);
        let bindings = prop::collection::btree_map("ns/s[0-9]", 0..3usize, 0..10);
        (specs, bindings)
    }

    fn views_of((specs, bindings): &Model) -> (BTreeMap<String, Wanted>, BTreeMap<String, i64>) {
        let mut wanted = BTreeMap::new();
        let mut unreadable = BTreeMap::new();
        for (key, spec) in specs {
            if !spec.readable {
                unreadable.insert(key.clone(), spec.revision);
                continue;
            }
            let host = spec.named.or_else(|| bindings.get(key).copied());
            if let Some(host) = host {
                wanted.insert(
                    key.clone(),
                    Wanted { host: HOSTS[host].to_owned(), spec_revision: spec.revision },
                );
            }
        }
        (wanted, unreadable)
    }

    proptest! {
        /// From a settled state (the placements as a full pass leaves them, no unreadable spec),
        /// changes to some specs and none to bindings or placements: whenever the changed keys alone
        /// decide, they decide what a full plan decides. Sequences of edits include a key edited
        /// twice, as between two passes.
        #[test]
        fn changed_keys_decide_what_a_full_plan_decides(
            before in model(),
            edits in prop::collection::vec(("ns/s[0-9]", edit()), 1..6),
        ) {
            let (wanted, _) = views_of(&before);
            let mut existing: BTreeMap<String, Vec<Existing>> = BTreeMap::new();
            for (n, (key, want)) in wanted.iter().enumerate() {
                existing.entry(key.clone()).or_default().push(Existing {
                    host: want.host.clone(),
                    mod_revision: 100 + n as i64,
                    spec_revision: want.spec_revision,
                    invalid_revision: None,
                });
            }
            prop_assert!(plan(&wanted, &existing, &BTreeMap::new()).is_empty(), "settled");
            let mut after = before.clone();
            let mut keys = BTreeSet::new();
            for (key, edit) in edits {
                keys.insert(key.clone());
                let specs = &mut after.0;
                match edit {
                    Edit::Revise => {
                        if let Some(spec) = specs.get_mut(&key) {
                            spec.revision += 1000;
                        }
                    }
                    Edit::Name(host) => {
                        if let Some(spec) = specs.get_mut(&key) {
                            spec.named = host;
                            spec.revision += 1000;
                        }
                    }
                    Edit::Delete => {
                        specs.remove(&key);
                    }
                    Edit::Create(named) => {
                        specs.entry(key).or_insert(Spec { named, revision: 2000, readable: true });
                    }
                    Edit::Unreadable => {
                        if let Some(spec) = specs.get_mut(&key) {
                            spec.readable = false;
                            spec.revision += 1000;
                        }
                    }
                }
            }
            let (wanted_after, unreadable_after) = views_of(&after);
            let full = plan(&wanted_after, &existing, &unreadable_after);
            let incremental = plan_changed(
                &keys,
                |key| wanted_after.get(key).cloned(),
                |key, host| existing.get(key).and_then(|all| all.iter().find(|e| e.host == host)).cloned(),
            );
            if let Some(writes) = incremental {
                prop_assert_eq!(writes, full);
            }
        }
    }

    #[test]
    fn a_revised_spec_is_decided_alone() {
        let want = |host: &str, revision| Wanted { host: host.into(), spec_revision: revision };
        let placed = |host: &str, revision| Existing {
            host: host.into(),
            mod_revision: 7,
            spec_revision: revision,
            invalid_revision: None,
        };
        let keys: BTreeSet<String> = ["ns/web".to_owned()].into();
        let writes = plan_changed(&keys, |_| Some(want("h1", 9)), |_, host| Some(placed(host, 5)));
        assert_eq!(
            writes,
            Some(vec![Write::Put { key: "ns/web".into(), host: "h1".into(), previous: Some(7) }])
        );
        // Not placed where it runs now: it may have moved, which only a full plan decides.
        assert_eq!(plan_changed(&keys, |_| Some(want("h2", 9)), |_, _| None), None);
        // Gone (or unreadable): a full plan decides.
        assert_eq!(plan_changed(&keys, |_| None, |_, host| Some(placed(host, 5))), None);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::agent::bindings::Binding;
    use crate::agent::cache::DesiredState;
    use crate::runtime::Event;
    use crate::store::{EmbeddedOptions, EmbeddedStore};

    fn wanted(list: &[(&str, &str, i64)]) -> BTreeMap<String, Wanted> {
        list.iter()
            .map(|(key, host, revision)| {
                (key.to_string(), Wanted { host: host.to_string(), spec_revision: *revision })
            })
            .collect()
    }

    fn existing(list: &[(&str, &str, i64, i64)]) -> BTreeMap<String, Vec<Existing>> {
        let mut all: BTreeMap<String, Vec<Existing>> = BTreeMap::new();
        for (key, host, mod_revision, spec_revision) in list {
            all.entry(key.to_string()).or_default().push(Existing {
                host: host.to_string(),
                mod_revision: *mod_revision,
                spec_revision: *spec_revision,
                invalid_revision: None,
            });
        }
        all
    }

    fn put(key: &str, host: &str, previous: Option<i64>) -> Write {
        Write::Put { key: key.into(), host: host.into(), previous }
    }

    fn delete(key: &str, host: &str, mod_revision: i64) -> Write {
        Write::Delete { key: key.into(), host: host.into(), mod_revision }
    }

    #[test]
    fn placements_follow_specs_and_a_move_deletes_before_it_creates() {
        let none = BTreeMap::new();
        // New specs: created where they run.
        let want = wanted(&[("ns/a", "h1", 5), ("ns/b", "h2", 6)]);
        assert_eq!(
            plan(&want, &existing(&[]), &none),
            vec![put("ns/a", "h1", None), put("ns/b", "h2", None)]
        );
        // Up to date: nothing to write.
        let have = existing(&[("ns/a", "h1", 10, 5), ("ns/b", "h2", 11, 6)]);
        assert!(plan(&want, &have, &none).is_empty());
        // A changed spec is rewritten in place, by compare-and-swap.
        let changed = wanted(&[("ns/a", "h1", 12), ("ns/b", "h2", 6)]);
        assert_eq!(plan(&changed, &have, &none), vec![put("ns/a", "h1", Some(10))]);
        // A moved spec (ns/b from h2 to h1): the old placement goes first, then the new one comes.
        let moved = wanted(&[("ns/a", "h1", 5), ("ns/b", "h1", 6)]);
        assert_eq!(plan(&moved, &have, &none), vec![delete("ns/b", "h2", 11), put("ns/b", "h1", None)]);
        // A deleted spec: its placement goes; an unreadable one keeps its placement as it is.
        let gone = wanted(&[("ns/a", "h1", 5)]);
        assert_eq!(plan(&gone, &have, &none), vec![delete("ns/b", "h2", 11)]);
        // An unreadable spec keeps its placement, which is told once per unreadable revision.
        let unreadable = BTreeMap::from([("ns/b".to_owned(), 13)]);
        let told =
            Write::Invalid { key: "ns/b".into(), host: "h2".into(), mod_revision: 11, spec_revision: 13 };
        assert_eq!(plan(&gone, &have, &unreadable), vec![told]);
        let mut reported = have.clone();
        reported.get_mut("ns/b").unwrap()[0].invalid_revision = Some(13);
        assert!(plan(&gone, &reported, &unreadable).is_empty(), "told already");
        // Two placements of one spec (a move cut short): the stray one goes.
        let both = existing(&[("ns/a", "h1", 10, 5), ("ns/a", "h3", 9, 5)]);
        assert_eq!(plan(&gone, &both, &none), vec![delete("ns/a", "h3", 9)]);
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SharedStore,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store: SharedStore = Arc::new(
                EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap(),
            );
            Fixture { _dir: dir, store }
        }

        /// Makes this test the leader (again): answers the new term.
        async fn lead(&self) -> i64 {
            let _ = self.store.delete(keys::SCHEDULER_LEADER, DeleteCondition::Always).await;
            self.store.put(keys::SCHEDULER_LEADER, b"me".to_vec(), PutCondition::Absent, 0).await.unwrap()
        }

        /// Caches as a new leader lists them.
        async fn caches(&self) -> LeaderCaches {
            let caches = LeaderCaches::unfed(Arc::new(DesiredState::default()));
            let specs = self.store.list(keys::SPECS).await.unwrap();
            caches.specs.apply(&Event::Restarted { kvs: specs.kvs, revision: specs.revision });
            let bindings = self.store.list(keys::BINDINGS).await.unwrap();
            caches.bindings.apply(&Event::Restarted { kvs: bindings.kvs, revision: bindings.revision });
            let placements = self.store.list(keys::PLACEMENTS).await.unwrap();
            caches.placements.apply(&Event::Restarted { kvs: placements.kvs, revision: placements.revision });
            caches
        }

        async fn spec(&self, name: &str, host: Option<&str>, image: &str) {
            let mut value = serde_json::json!({
                "apiVersion": "kedge.io/v1",
                "kind": "Container",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"image": image}
            });
            if let Some(host) = host {
                value["spec"]["placement"] = serde_json::json!({"host": host});
            }
            let key = keys::spec_key("ns", name).unwrap();
            self.store.put(&key, value.to_string().into_bytes(), PutCondition::Always, 0).await.unwrap();
        }

        async fn bind(&self, name: &str, host: &str) {
            let value = serde_json::to_vec(&Binding { host: host.into(), term: 1 }).unwrap();
            let key = keys::binding_key("ns", name).unwrap();
            self.store.put(&key, value, PutCondition::Always, 0).await.unwrap();
        }

        /// One projection pass as a leader of `term` with fresh caches; answers whether it wrote.
        async fn pass(&self, term: i64, marked: &mut bool) -> Result<bool, StoreError> {
            let caches = self.caches().await;
            let mut written = Written::default();
            let fence = Fence { key: keys::SCHEDULER_LEADER, mod_revision: term };
            pass(&self.store, fence, &caches, &mut written, marked, &mut None).await?;
            Ok(written.placements > 0)
        }

        /// Every placement: (key, spec revision), and each key's revision.
        async fn placements(&self) -> Vec<(String, i64, i64)> {
            let listed = self.store.list(keys::PLACEMENTS).await.unwrap();
            listed
                .kvs
                .iter()
                .map(|kv| {
                    let placement: Placement = serde_json::from_slice(&kv.value).unwrap();
                    (kv.key.clone(), placement.spec_revision, kv.mod_revision)
                })
                .collect()
        }
    }

    /// Polls `done` until it holds, for 10 s at most.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_new_leader_says_it_keeps_an_earlier_leaders_placements_until_its_pass_marks_them() {
        let f = Fixture::new().await;
        let marker = || async {
            let stored = f.store.get(keys::PLACEMENTS_READY).await.unwrap()?;
            Some((serde_json::from_slice::<ReadyMarker>(&stored.value).unwrap(), stored.mod_revision))
        };
        let fence = |term| Fence { key: keys::SCHEDULER_LEADER, mod_revision: term };
        // No marker: the agents are on the old layout, and nothing is said until a pass marks.
        let first = f.lead().await;
        announce_keeper(&f.store, fence(first)).await.unwrap();
        assert_eq!(marker().await, None);
        f.spec("web", Some("h1"), "app:v1").await;
        let mut marked = false;
        f.pass(first, &mut marked).await.unwrap();
        f.pass(first, &mut marked).await.unwrap();
        let complete = ReadyMarker { version: LAYOUT_VERSION, term: first, keeper: None };
        assert_eq!(marker().await.map(|(marker, _)| marker), Some(complete));

        // A new leader keeps them from the start; once, however often it says so.
        let second = f.lead().await;
        announce_keeper(&f.store, fence(second)).await.unwrap();
        let (kept, revision) = marker().await.unwrap();
        assert_eq!(kept, ReadyMarker { keeper: Some(second), ..complete });
        announce_keeper(&f.store, fence(second)).await.unwrap();
        assert_eq!(marker().await.unwrap().1, revision, "said once");
        // The leader before can say nothing any more: the write is fenced on the current term.
        let stale = ReadyMarker { term: 0, ..kept };
        f.store
            .put(keys::PLACEMENTS_READY, serde_json::to_vec(&stale).unwrap(), PutCondition::Always, 0)
            .await
            .unwrap();
        let refused = announce_keeper(&f.store, fence(first)).await.unwrap_err();
        assert!(lost_leadership(&refused), "{refused:?}");
        f.store
            .put(keys::PLACEMENTS_READY, serde_json::to_vec(&kept).unwrap(), PutCondition::Always, 0)
            .await
            .unwrap();
        // Its first complete pass marks them as its own, keeper gone.
        let mut marked = false;
        f.pass(second, &mut marked).await.unwrap();
        assert!(marked);
        let own = ReadyMarker { version: LAYOUT_VERSION, term: second, keeper: None };
        assert_eq!(marker().await.map(|(marker, _)| marker), Some(own));

        // A marker of a layout this kedge does not keep is left alone.
        let newer =
            serde_json::to_vec(&ReadyMarker { version: LAYOUT_VERSION + 1, term: second, keeper: None });
        f.store.put(keys::PLACEMENTS_READY, newer.unwrap(), PutCondition::Always, 0).await.unwrap();
        let third = f.lead().await;
        announce_keeper(&f.store, fence(third)).await.unwrap();
        assert_eq!(marker().await.unwrap().0.keeper, None);
    }

    #[tokio::test]
    async fn a_settled_leader_projects_a_changed_spec_from_its_key_alone() {
        let f = Fixture::new().await;
        let term = f.lead().await;
        f.spec("web", Some("h1"), "app:v1").await;
        f.spec("api", None, "app:v1").await;
        f.bind("api", "h2").await;
        let token = tokio_util::sync::CancellationToken::new();
        let _stop = token.clone().drop_guard();
        let caches = LeaderCaches::start(&f.store, &token);
        let fence = Fence { key: keys::SCHEDULER_LEADER, mod_revision: term };
        let (mut marked, mut settled, mut written) = (false, None, Written::default());
        let synced =
            |c: &LeaderCaches| c.specs.authoritative() && c.bindings.in_sync() && c.placements.in_sync();
        until("the caches", || synced(&caches)).await;
        pass(&f.store, fence, &caches, &mut written, &mut marked, &mut settled).await.unwrap();
        assert!(written.placements > 0 && settled.is_none(), "the first pass writes: not settled");
        until("the placements", || caches.caught_up(&written)).await;
        written = Written::default();
        pass(&f.store, fence, &caches, &mut written, &mut marked, &mut settled).await.unwrap();
        assert!(marked && settled.is_some() && written == Written::default(), "settled: {settled:?}");
        // web's image changes: a settled leader rewrites its one placement, as a full pass would.
        f.spec("web", Some("h1"), "app:v2").await;
        let revision =
            f.store.get(&keys::spec_key("ns", "web").unwrap()).await.unwrap().unwrap().mod_revision;
        until("the spec", || caches.specs.revision() >= revision).await;
        let placed = |placements: &[(String, i64, i64)]| {
            let key = keys::placement_key("h1", "ns", "web").unwrap();
            placements.iter().any(|(k, spec_revision, _)| *k == key && *spec_revision == revision)
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !placed(&f.placements().await) {
            assert!(tokio::time::Instant::now() < deadline, "web's placement was not rewritten");
            assert!(settled.is_some(), "nothing but web changed: the pass stays incremental");
            pass(&f.store, fence, &caches, &mut written, &mut marked, &mut settled).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(settled.is_none(), "a pass that wrote is not settled");
        assert_eq!(f.placements().await.len(), 2, "api's placement untouched, none added");
    }

    #[tokio::test]
    async fn the_leader_projects_pinned_and_bound_specs_and_marks_them_ready_once_complete() {
        let f = Fixture::new().await;
        let term = f.lead().await;
        f.spec("pinned", Some("h1"), "app:v1").await;
        f.spec("bound", None, "app:v1").await;
        f.spec("waiting", None, "app:v1").await;
        f.bind("bound", "h2").await;
        let mut marked = false;
        assert!(f.pass(term, &mut marked).await.unwrap(), "the first pass writes the placements");
        // Every write it decided was made: the placements are complete, and marked with its term.
        assert!(marked);
        let marker = f.store.get(keys::PLACEMENTS_READY).await.unwrap().unwrap();
        let ready: ReadyMarker = serde_json::from_slice(&marker.value).unwrap();
        assert_eq!(ready, ReadyMarker { version: LAYOUT_VERSION, term, keeper: None });
        assert!(
            marker.mod_revision > f.placements().await.iter().map(|(.., revision)| *revision).max().unwrap(),
            "the marker comes after the placements it vouches for"
        );
        let keys: Vec<String> = f.placements().await.into_iter().map(|(key, ..)| key).collect();
        assert_eq!(
            keys,
            vec![
                keys::placement_key("h1", "ns", "pinned").unwrap(),
                keys::placement_key("h2", "ns", "bound").unwrap()
            ],
            "an unbound spec waits for the scheduler"
        );
        // The placement carries the spec as stored, at the spec key's revision.
        let spec = f.store.get(&keys::spec_key("ns", "pinned").unwrap()).await.unwrap().unwrap();
        let stored = f.store.get(&keys::placement_key("h1", "ns", "pinned").unwrap()).await.unwrap().unwrap();
        let placement: Placement = serde_json::from_slice(&stored.value).unwrap();
        assert_eq!((placement.spec_revision, placement.term), (spec.mod_revision, term));
        assert_eq!(placement.spec["spec"]["image"], "app:v1");

        // Nothing changed: no write at all, the marker not either.
        let before = f.store.list(keys::ROOT).await.unwrap().revision;
        assert!(!f.pass(term, &mut marked).await.unwrap());
        assert_eq!(f.store.list(keys::ROOT).await.unwrap().revision, before);

        // A new leader (the agent restarted, or another took over): its full pass writes no
        // placement, and marks them with its own term (agents trust only the current leader's).
        let next = f.lead().await;
        let mut marked_again = false;
        assert!(!f.pass(next, &mut marked_again).await.unwrap(), "idempotent");
        assert_eq!(
            f.store.list(keys::ROOT).await.unwrap().revision,
            before + 3,
            "only the leader key (deleted, written) and the marker moved"
        );
        let marker = f.store.get(keys::PLACEMENTS_READY).await.unwrap().unwrap();
        let ready: ReadyMarker = serde_json::from_slice(&marker.value).unwrap();
        assert_eq!(ready, ReadyMarker { version: LAYOUT_VERSION, term: next, keeper: None });
        // The old term can write nothing.
        f.spec("pinned", Some("h1"), "app:v2").await;
        let refused = f.pass(term, &mut marked).await.unwrap_err();
        assert!(lost_leadership(&refused), "{refused:?}");
        assert!(f.pass(next, &mut marked_again).await.unwrap(), "the new leader rewrites the changed spec");
        let spec = f.store.get(&keys::spec_key("ns", "pinned").unwrap()).await.unwrap().unwrap();
        assert!(f
            .placements()
            .await
            .iter()
            .any(|(key, revision, _)| key.ends_with("/h1/ns/pinned") && *revision == spec.mod_revision));
    }

    #[tokio::test]
    async fn a_moved_spec_leaves_its_old_host_before_it_reaches_the_new_one_and_a_deleted_one_goes() {
        let f = Fixture::new().await;
        let term = f.lead().await;
        f.spec("web", None, "app:v1").await;
        f.bind("web", "h1").await;
        let mut marked = false;
        f.pass(term, &mut marked).await.unwrap();
        f.bind("web", "h2").await;
        let moved_at = f.store.list(keys::ROOT).await.unwrap().revision;
        assert!(f.pass(term, &mut marked).await.unwrap());
        let placements = f.placements().await;
        assert_eq!(placements.len(), 1, "one placement of a spec: {placements:?}");
        assert_eq!(placements[0].0, keys::placement_key("h2", "ns", "web").unwrap());
        // The delete of h1's was the first write after the move, the create of h2's the second:
        // at no revision did both exist.
        assert_eq!(placements[0].2, moved_at + 2);
        let history = f.store.get(&keys::placement_key("h1", "ns", "web").unwrap()).await.unwrap();
        assert!(history.is_none());

        f.store.delete(&keys::spec_key("ns", "web").unwrap(), DeleteCondition::Always).await.unwrap();
        assert!(f.pass(term, &mut marked).await.unwrap());
        assert!(f.placements().await.is_empty(), "a deleted spec's placement goes");
    }

    #[tokio::test]
    async fn an_unreadable_spec_keeps_its_last_readable_placement_which_says_so_once() {
        let f = Fixture::new().await;
        let term = f.lead().await;
        f.spec("web", Some("h1"), "app:v1").await;
        let mut marked = false;
        f.pass(term, &mut marked).await.unwrap();
        let key = keys::spec_key("ns", "web").unwrap();
        let garbled = f.store.put(&key, b"{not json".to_vec(), PutCondition::Always, 0).await.unwrap();
        assert!(f.pass(term, &mut marked).await.unwrap(), "the placement is told");
        let placement_key = keys::placement_key("h1", "ns", "web").unwrap();
        let read =
            |stored: crate::store::KeyValue| serde_json::from_slice::<Placement>(&stored.value).unwrap();
        let placement = read(f.store.get(&placement_key).await.unwrap().unwrap());
        assert_eq!(placement.spec["spec"]["image"], "app:v1", "the last readable version is kept");
        let invalid = placement.invalid.expect("says the spec cannot be read");
        assert_eq!(invalid.resource_version, garbled);
        assert!(invalid.error.contains("not JSON"), "{}", invalid.error);
        assert!(!f.pass(term, &mut marked).await.unwrap(), "told once per unreadable revision");
        // Repaired: the placement is the spec again.
        f.spec("web", Some("h1"), "app:v2").await;
        assert!(f.pass(term, &mut marked).await.unwrap());
        let placement = read(f.store.get(&placement_key).await.unwrap().unwrap());
        assert_eq!((placement.spec["spec"]["image"].as_str(), placement.invalid), (Some("app:v2"), None));
    }
}
