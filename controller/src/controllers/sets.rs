//! The ContainerSet controller: run by the scheduler's leader, it turns each set into child Container
//! specs and rolls template changes out batch by batch, behind health gates, with automatic rollback.
//!
//! Children are ordinary specs named `<set>-<ordinal>` in the set's namespace, labelled
//! `kedge.io/set=<set>` and `kedge.io/set-revision=<revision>`, so agents, bindings, status, events and
//! `kedge get containers` treat them like any other spec. Only the scheduler's leader writes them, and
//! every write is fenced on its term ([`Fence`]) and a compare-and-swap on the child, like bindings.
//!
//! Each pass, for each set, [`decide`] (pure: the unit tests' surface) takes the set, its stored status
//! and its children with their statuses, and answers the status to store, the children to write and
//! delete, and an event. The rollout's whole state lives in the set's status
//! (`/kedge/v1/set-status/<ns>/<name>`): the template of the current revision (what a rollback puts
//! back), the revision being rolled out, the ordinals updated so far and the batch being gated. The
//! status is written before the children, so a leader that dies between the two leaves a state the
//! next leader finishes: children are always made to match what the status says.
//!
//! The rules:
//! - A child whose ordinal is below `replicas` runs the new template if the rollout has updated its
//!   ordinal, else the current template. Any other content (a hand edit, a deleted child) is put back.
//!   Children at or above `replicas` are deleted, so scaling down removes the highest ordinals.
//! - A template change starts a rollout. Batches of `batchSize` ordinals, lowest first, get the new
//!   template; a batch passes its gate when every child's status has `observedGeneration` equal to the
//!   child's generation with Ready and Synced True. A status at that generation with Degraded True (what
//!   an agent reports when a recreate failed and was rolled back, or a create failed) fails the batch at
//!   once; so does a gate not passed within `healthTimeout`.
//! - A failed batch with `failureAction: rollback` puts the current template back on every child the
//!   rollout updated and records the revision as failed: it is not tried again until the template
//!   changes. With `pause`, the children stay as they are and the rollout waits for a new template.
//! - A template changed again mid-rollout starts over: children of the abandoned revision go back to the
//!   current template, then the new revision rolls out from the first batch.
//! - Children of a deleted set, and its status, are deleted.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use kedge_crds::container_set::{
    set_condition, RevisionRecord, HISTORY_LIMIT, MAX_PER_HOST_ANNOTATION, SET_LABEL, SET_REVISION_LABEL,
};
use kedge_crds::meta::{rfc3339, transition_time};
use kedge_crds::{
    condition_type, template_revision, Condition, ConditionStatus, Container, ContainerSet,
    ContainerSetStatus, ContainerStatus, ContainerTemplate, FailureAction, Placement, RolloutState,
};

use crate::events::{EventRecorder, EventType};
use crate::store::{keys, objects, DeleteCondition, Fence, PutCondition, SharedStore, StoreError};

use super::caches::{LeaderCaches, Written};

/// One child as the controller sees it: its stored spec and the status its agent reported.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub spec: Container,
    pub status: Option<ContainerStatus>,
    /// The spec holds the child's name but was not written by the set (it lacks the set's labels): a
    /// user's own Container. It is left alone, and the set reports the ordinal as blocked.
    pub foreign: bool,
}

/// What one pass does to one set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// The status to store (the caller skips the write when it equals the stored one).
    pub status: ContainerSetStatus,
    /// Children to write, complete (the store's bookkeeping fields are filled in on write).
    pub writes: Vec<Container>,
    /// Ordinals whose children are deleted.
    pub deletes: Vec<u32>,
    /// An event to record about the set: (type, reason, message).
    pub event: Option<(EventType, String, String)>,
}

/// Decides one pass for one set. Pure; `now` is the pass's time.
pub(crate) fn decide(
    set: &ContainerSet,
    previous: Option<&ContainerSetStatus>,
    children: &BTreeMap<u32, Child>,
    now: DateTime<Utc>,
) -> Decision {
    let target_revision = template_revision(&set.spec.template);
    let mut status = previous.cloned().unwrap_or_default();
    let mut event = None;
    if status.current_revision.is_none() || status.current_template.is_none() {
        status.current_revision = Some(target_revision.clone());
        status.current_template = Some(set.spec.template.clone());
    }
    let current_revision = status.current_revision.clone().unwrap_or_default();
    if status.failed_revision.as_deref().is_some_and(|failed| failed != target_revision) {
        // A new template (or the current one again): the failure is history.
        status.failed_revision = None;
        status.failure_message = None;
    }
    let wanted_rollout = target_revision != current_revision
        && status.failed_revision.as_deref() != Some(target_revision.as_str());
    match (&status.rollout, wanted_rollout) {
        (Some(rollout), true) if rollout.revision == target_revision => {}
        (_, true) => {
            status.rollout =
                Some(RolloutState { revision: target_revision.clone(), ..RolloutState::default() })
        }
        (_, false) => status.rollout = None,
    }

    let replicas = set.spec.replicas;
    if let Some(mut rollout) = status.rollout.take() {
        rollout.updated.retain(|ordinal| *ordinal < replicas);
        rollout.batch.retain(|ordinal| *ordinal < replicas);
        let mut finished = false;
        if rollout.paused.is_none() && !rollout.batch.is_empty() {
            match gate(set, &rollout, children, now) {
                Gate::Passed => {
                    rollout.batch.clear();
                    rollout.batch_started = None;
                }
                Gate::Waiting => {}
                Gate::Failed(why) => {
                    let message = format!("revision {} failed: {why}", rollout.revision);
                    match set.spec.failure_action_or_default() {
                        FailureAction::Rollback => {
                            status.failed_revision = Some(rollout.revision.clone());
                            status.failure_message = Some(why);
                            let message = format!("{message}; rolled back to revision {current_revision}");
                            event = Some((
                                EventType::Warning,
                                set_condition::REASON_ROLLED_BACK.to_owned(),
                                message,
                            ));
                            finished = true;
                        }
                        FailureAction::Pause => {
                            status.failure_message = Some(why.clone());
                            rollout.paused = Some(why);
                            event = Some((
                                EventType::Warning,
                                set_condition::REASON_ROLLOUT_PAUSED.to_owned(),
                                format!("{message}; paused"),
                            ));
                        }
                    }
                }
            }
        }
        if !finished && rollout.paused.is_none() && rollout.batch.is_empty() {
            let batch = next_batch(replicas, &rollout.updated, set.spec.batch_size_or_default());
            if batch.is_empty() {
                // The revision being replaced joins the history (`kedge rollout undo` goes back to it).
                if let (Some(revision), Some(template)) =
                    (status.current_revision.take(), status.current_template.take())
                {
                    status
                        .history
                        .retain(|record| record.revision != revision && record.revision != rollout.revision);
                    status
                        .history
                        .insert(0, RevisionRecord { revision, template, replaced_at: rfc3339(now) });
                    status.history.truncate(HISTORY_LIMIT);
                }
                status.current_revision = Some(rollout.revision.clone());
                status.current_template = Some(set.spec.template.clone());
                event = Some((
                    EventType::Normal,
                    set_condition::REASON_ROLLOUT_COMPLETE.to_owned(),
                    format!("every child runs revision {}", rollout.revision),
                ));
                finished = true;
            } else {
                let names: Vec<String> = batch.iter().map(|ordinal| set.child_name(*ordinal)).collect();
                event = Some((
                    EventType::Normal,
                    "BatchStarted".to_owned(),
                    format!("updating {} to revision {}", names.join(", "), rollout.revision),
                ));
                rollout.updated.extend(&batch);
                rollout.updated.sort_unstable();
                rollout.batch = batch;
                rollout.batch_started = Some(rfc3339(now));
            }
        }
        if !finished {
            status.rollout = Some(rollout);
        }
    }

    let current_revision = status.current_revision.clone().unwrap_or_default();
    let current_template = status.current_template.clone().unwrap_or_else(|| set.spec.template.clone());
    let mut writes = Vec::new();
    for ordinal in 0..replicas {
        let updated = status.rollout.as_ref().is_some_and(|rollout| rollout.updated.contains(&ordinal));
        let (revision, template) = if updated {
            (target_revision.as_str(), &set.spec.template)
        } else {
            (current_revision.as_str(), &current_template)
        };
        let wanted = child_spec(set, ordinal, revision, template);
        let existing = children.get(&ordinal);
        let same = existing.is_some_and(|child| child.foreign || declared_equal(&child.spec, &wanted));
        if !same {
            writes.push(wanted);
        }
    }
    let deletes: Vec<u32> = children
        .iter()
        .rev()
        .filter(|(ordinal, child)| **ordinal >= replicas && !child.foreign)
        .map(|(ordinal, _)| *ordinal)
        .collect();
    let blocked: Vec<String> = children
        .iter()
        .filter(|(ordinal, child)| **ordinal < replicas && child.foreign)
        .map(|(ordinal, _)| set.child_name(*ordinal))
        .collect();

    let update_revision = status.rollout.as_ref().map_or(current_revision.clone(), |r| r.revision.clone());
    let live: Vec<&Child> =
        children.iter().filter(|(o, c)| **o < replicas && !c.foreign).map(|(_, c)| c).collect();
    status.observed_generation = set.metadata.generation;
    status.replicas = live.len() as u32;
    status.ready_replicas = live.iter().filter(|child| child_ready(child)).count() as u32;
    status.updated_replicas = live
        .iter()
        .filter(|child| {
            child.spec.metadata.labels.get(SET_REVISION_LABEL) == Some(&update_revision)
                && child_synced(child)
        })
        .count() as u32;
    status.update_revision = Some(update_revision);
    let available = if !blocked.is_empty() {
        (
            ConditionStatus::False,
            "NameTaken",
            format!(
                "{} of {replicas} ready; {} held by Containers that are not this set's (delete or rename them)",
                status.ready_replicas,
                blocked.join(", ")
            ),
        )
    } else if status.ready_replicas >= replicas {
        (
            ConditionStatus::True,
            "MinimumReplicasReady",
            format!("{} of {replicas} ready", status.ready_replicas),
        )
    } else {
        (ConditionStatus::False, "ReplicasNotReady", format!("{} of {replicas} ready", status.ready_replicas))
    };
    let progressing = match (&status.rollout, &status.failed_revision) {
        (Some(rollout), _) if rollout.paused.is_some() => (
            ConditionStatus::False,
            set_condition::REASON_ROLLOUT_PAUSED,
            format!(
                "rollout of revision {} paused: {}",
                rollout.revision,
                rollout.paused.as_deref().unwrap_or_default()
            ),
        ),
        (Some(rollout), _) => (
            ConditionStatus::True,
            set_condition::REASON_ROLLING_UPDATE,
            format!(
                "revision {}: {} of {replicas} children updated; gating {}",
                rollout.revision,
                rollout.updated.len(),
                rollout.batch.iter().map(|o| set.child_name(*o)).collect::<Vec<_>>().join(", ")
            ),
        ),
        (None, Some(failed)) => (
            ConditionStatus::False,
            set_condition::REASON_ROLLED_BACK,
            format!(
                "revision {failed} failed and was rolled back to {current_revision}: {}",
                status.failure_message.as_deref().unwrap_or_default()
            ),
        ),
        (None, None) => (
            ConditionStatus::False,
            set_condition::REASON_ROLLOUT_COMPLETE,
            format!("every child runs revision {current_revision}"),
        ),
    };
    let generation = set.metadata.generation;
    status.conditions = [
        (set_condition::AVAILABLE, available.0, available.1, available.2),
        (set_condition::PROGRESSING, progressing.0, progressing.1, progressing.2),
    ]
    .into_iter()
    .map(|(kind, condition_status, reason, message)| {
        let before = previous.and_then(|previous| previous.condition(kind));
        let last_transition_time = transition_time(before, condition_status, now);
        Condition {
            kind: kind.to_owned(),
            status: condition_status,
            reason: reason.to_owned(),
            message,
            last_transition_time,
            observed_generation: generation,
        }
    })
    .collect();
    Decision { status, writes, deletes, event }
}

/// The next batch: the lowest `batch_size` ordinals below `replicas` not updated yet.
pub(crate) fn next_batch(replicas: u32, updated: &[u32], batch_size: u32) -> Vec<u32> {
    (0..replicas).filter(|ordinal| !updated.contains(ordinal)).take(batch_size.max(1) as usize).collect()
}

/// The child spec of `ordinal` from `template` at `revision`.
pub(crate) fn child_spec(
    set: &ContainerSet,
    ordinal: u32,
    revision: &str,
    template: &ContainerTemplate,
) -> Container {
    let mut child = Container::new(set.child_name(ordinal), template.spec.clone());
    child.metadata.namespace = set.metadata.namespace.clone();
    child.metadata.labels = template.metadata.labels.clone();
    child.metadata.labels.insert(SET_LABEL.to_owned(), set.metadata.name.clone());
    child.metadata.labels.insert(SET_REVISION_LABEL.to_owned(), revision.to_owned());
    let placement = set.spec.placement.clone().unwrap_or_default();
    if let Some(max) = placement.max_per_host {
        child.metadata.annotations.insert(MAX_PER_HOST_ANNOTATION.to_owned(), max.to_string());
    }
    child.spec.placement = if placement.host_selector.is_empty() {
        None
    } else {
        Some(Placement { host: None, host_selector: placement.host_selector })
    };
    child
}

enum Gate {
    Passed,
    Waiting,
    Failed(String),
}

/// Whether the rollout's batch is through its health gate.
fn gate(
    set: &ContainerSet,
    rollout: &RolloutState,
    children: &BTreeMap<u32, Child>,
    now: DateTime<Utc>,
) -> Gate {
    let mut all_passed = true;
    for ordinal in &rollout.batch {
        let name = set.child_name(*ordinal);
        let Some(child) = children.get(ordinal) else {
            all_passed = false;
            continue;
        };
        // Until the child carries the new revision, its status speaks of the old template.
        if child.spec.metadata.labels.get(SET_REVISION_LABEL) != Some(&rollout.revision) {
            all_passed = false;
            continue;
        }
        let generation = child.spec.metadata.generation;
        let Some(status) =
            child.status.as_ref().filter(|s| generation.is_some() && s.observed_generation == generation)
        else {
            all_passed = false;
            continue;
        };
        let holds = |kind: &str| status.condition(kind).is_some_and(|c| c.status == ConditionStatus::True);
        if holds(condition_type::DEGRADED) {
            let synced = status.condition(condition_type::SYNCED);
            let reason = synced.map_or("Failed", |c| c.reason.as_str());
            let message =
                status.last_error.clone().or_else(|| synced.map(|c| c.message.clone())).unwrap_or_default();
            // One line: the agent's message may end with the container's log lines.
            let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
            return Gate::Failed(format!("{name}: {reason}: {message}"));
        }
        if !(holds(condition_type::READY) && holds(condition_type::SYNCED)) {
            all_passed = false;
        }
    }
    if all_passed {
        return Gate::Passed;
    }
    let started = rollout.batch_started.as_deref().and_then(|at| DateTime::parse_from_rfc3339(at).ok());
    let timeout = set.spec.health_timeout_or_default();
    if let Some(started) = started {
        let elapsed = now.signed_duration_since(started.with_timezone(&Utc));
        if elapsed.to_std().is_ok_and(|elapsed| elapsed >= timeout) {
            let names: Vec<String> = rollout.batch.iter().map(|o| set.child_name(*o)).collect();
            return Gate::Failed(format!(
                "{}: not Ready and Synced within the health timeout of {}s",
                names.join(", "),
                timeout.as_secs()
            ));
        }
    }
    Gate::Waiting
}

fn child_at_generation(child: &Child) -> Option<&ContainerStatus> {
    let generation = child.spec.metadata.generation;
    child.status.as_ref().filter(|status| generation.is_some() && status.observed_generation == generation)
}

fn child_ready(child: &Child) -> bool {
    child_at_generation(child)
        .and_then(|status| status.condition(condition_type::READY))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

fn child_synced(child: &Child) -> bool {
    child_at_generation(child)
        .and_then(|status| status.condition(condition_type::SYNCED))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

/// Whether a stored child says what `wanted` says (labels, annotations, spec).
fn declared_equal(stored: &Container, wanted: &Container) -> bool {
    stored.metadata.labels == wanted.metadata.labels
        && stored.metadata.annotations == wanted.metadata.annotations
        && serde_json::to_value(&stored.spec).ok() == serde_json::to_value(&wanted.spec).ok()
}

/// One pass over every set, fenced on the leader's term, from the leader's caches; answers the
/// nearest health-gate deadline of a rollout. Does nothing while a cache it reads is not in sync (a
/// child missing from a stale cache is not a deleted child). Every write's revision goes into
/// `written`, so that the next pass waits until the caches have seen it.
pub(crate) async fn pass(
    store: &SharedStore,
    fence: Fence<'_>,
    caches: &LeaderCaches,
    events: &EventRecorder,
    written: &mut Written,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let specs = &caches.specs;
    let in_sync = specs.authoritative()
        && caches.sets.in_sync()
        && caches.set_statuses.in_sync()
        && caches.statuses.in_sync();
    if !in_sync {
        return Ok(None);
    }
    // A set that cannot be read is skipped, but still counts as live: its children and status stay
    // until it is repaired or deleted. The other sets go on.
    let sets: Vec<ContainerSet> = caches.sets.with(|all| all.values().map(|s| s.object.clone()).collect());
    let invalid_sets: Vec<(String, String)> = caches
        .sets
        .unreadable_entries()
        .into_iter()
        .filter_map(|(key, unreadable)| {
            let (namespace, name) = keys::parse_set_key(&key)?;
            tracing::warn!(set = %format!("{namespace}/{name}"), error = %unreadable.error, "an unreadable ContainerSet is skipped");
            Some((namespace.to_owned(), name.to_owned()))
        })
        .collect();
    // Children by set, from the cache: a write from a stale cache fails its compare-and-swap.
    let mut children: HashMap<(String, String), BTreeMap<u32, Container>> = HashMap::new();
    // Only the labelled specs are copied: a pass over 30,000 specs of no set copies none.
    let labelled: Vec<Container> = specs.reflector().with(|all| {
        all.values()
            .filter(|stored| stored.object.metadata.labels.contains_key(SET_LABEL))
            .map(|stored| stored.object.clone())
            .collect()
    });
    for spec in labelled {
        // Only what the controller wrote (both labels) counts as a child: a spec a user labelled
        // `kedge.io/set` by hand is not deleted with a set it never belonged to.
        let Some(set_name) = spec.metadata.labels.get(SET_LABEL).cloned() else { continue };
        if !spec.metadata.labels.contains_key(SET_REVISION_LABEL) {
            continue;
        }
        let Some(ordinal) = kedge_crds::container_set::child_ordinal(&set_name, &spec.metadata.name) else {
            continue;
        };
        children.entry((spec.metadata.namespace.clone(), set_name)).or_default().insert(ordinal, spec);
    }
    // Specs a user named like a child (`<set>-<n>`) without the set's labels: left alone, reported.
    let mut foreign: HashMap<(String, String), BTreeMap<u32, Container>> = HashMap::new();
    let mut stored_statuses: HashMap<(String, String), (ContainerSetStatus, i64)> = HashMap::new();
    // Every stored status key with its revision, readable or not.
    let mut status_keys: Vec<(String, i64)> = Vec::new();
    caches.set_statuses.with(|all| {
        for (key, stored) in all {
            status_keys.push((key.clone(), stored.mod_revision));
            let Some((ns, name)) = keys::parse_set_status_key(key) else { continue };
            stored_statuses
                .insert((ns.to_owned(), name.to_owned()), (stored.object.clone(), stored.mod_revision));
        }
    });
    // Statuses that do not decode (written by another version, say): their revision, so that the
    // rewrite replaces them with a compare-and-swap rather than failing as a create forever.
    let mut undecodable: HashMap<(String, String), i64> = HashMap::new();
    for (key, unreadable) in caches.set_statuses.unreadable_entries() {
        status_keys.push((key.clone(), unreadable.mod_revision));
        let Some((ns, name)) = keys::parse_set_status_key(&key) else { continue };
        tracing::warn!(%key, error = %unreadable.error, "undecodable set status; it is rewritten");
        undecodable.insert((ns.to_owned(), name.to_owned()), unreadable.mod_revision);
    }
    let live: std::collections::HashSet<(String, String)> = sets
        .iter()
        .map(|set| (set.metadata.namespace.clone(), set.metadata.name.clone()))
        .chain(invalid_sets)
        .collect();

    // Children and statuses of deleted sets go.
    for ((ns, set_name), orphans) in &children {
        if live.contains(&(ns.clone(), set_name.clone())) {
            continue;
        }
        for child in orphans.values() {
            written.specs = written.specs.max(delete_child(store, fence, child).await?);
        }
    }
    for (key, mod_revision) in &status_keys {
        let Some((ns, name)) = keys::parse_set_status_key(key) else { continue };
        if !live.contains(&(ns.to_owned(), name.to_owned())) {
            let outcome = store.delete_fenced(fence, key, DeleteCondition::ModRevision(*mod_revision)).await;
            if let Ok(Some(revision)) = &outcome {
                written.set_statuses = written.set_statuses.max(*revision);
            }
            ignore_stale(outcome)?;
        }
    }
    if sets.is_empty() {
        return Ok(None);
    }

    for set in &sets {
        for ordinal in 0..set.spec.replicas {
            let key = format!("{}/{}", set.metadata.namespace, set.child_name(ordinal));
            let Some(spec) = specs.get(&key) else { continue };
            let labels = &spec.metadata.labels;
            let ours =
                labels.get(SET_LABEL) == Some(&set.metadata.name) && labels.contains_key(SET_REVISION_LABEL);
            if !ours {
                let id = (set.metadata.namespace.clone(), set.metadata.name.clone());
                foreign.entry(id).or_default().insert(ordinal, spec);
            }
        }
    }
    let now = Utc::now();
    let mut next_deadline: Option<DateTime<Utc>> = None;
    for set in &sets {
        let id = (set.metadata.namespace.clone(), set.metadata.name.clone());
        let stored = children.remove(&id).unwrap_or_default();
        let mut view: BTreeMap<u32, Child> = stored
            .iter()
            .map(|(ordinal, spec)| {
                let status = keys::status_key(&spec.metadata.namespace, &spec.metadata.name)
                    .ok()
                    .and_then(|key| caches.statuses.get(&key));
                (*ordinal, Child { spec: spec.clone(), status, foreign: false })
            })
            .collect();
        for (ordinal, spec) in foreign.remove(&id).unwrap_or_default() {
            view.insert(ordinal, Child { spec, status: None, foreign: true });
        }
        let previous = stored_statuses.get(&id);
        let decision = decide(set, previous.map(|(status, _)| status), &view, now);
        if let Some(deadline) = gate_deadline(set, &decision.status) {
            next_deadline = Some(next_deadline.map_or(deadline, |nearest| nearest.min(deadline)));
        }
        let status_key =
            keys::set_status_key(&id.0, &id.1).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if previous.map(|(status, _)| status) != Some(&decision.status) {
            let value =
                serde_json::to_vec(&decision.status).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let condition = match (previous, undecodable.get(&id)) {
                (Some((_, revision)), _) | (None, Some(revision)) => PutCondition::ModRevision(*revision),
                (None, None) => PutCondition::Absent,
            };
            match store.put_fenced(fence, &status_key, value, condition).await {
                Ok(revision) => written.set_statuses = written.set_statuses.max(revision),
                Err(StoreError::Conflict { key, .. }) if key != fence.key => {
                    tracing::debug!(set = %set.key(), "set status changed meanwhile; deciding again next pass");
                    continue;
                }
                Err(error) => return Err(error),
            }
        }
        if let Some((kind, reason, message)) = &decision.event {
            tracing::info!(set = %set.key(), %reason, %message, "container set");
            events.record_about("ContainerSet", &set.key(), *kind, reason, message).await;
        }
        for wanted in &decision.writes {
            let current = stored.get(
                &kedge_crds::container_set::child_ordinal(&set.metadata.name, &wanted.metadata.name)
                    .unwrap_or(u32::MAX),
            );
            let outcome = objects::apply_container_fenced(store.as_ref(), fence, wanted, current).await;
            match outcome {
                Ok(Some((applied, _))) => {
                    let revision = applied.metadata.resource_version.as_deref().and_then(|r| r.parse().ok());
                    written.specs = written.specs.max(revision.unwrap_or(0));
                    tracing::info!(child = %wanted.key(), term = fence.mod_revision, "wrote a set's child")
                }
                Ok(None) => {}
                Err(error) => ignore_stale::<()>(Err(error))?,
            }
        }
        for ordinal in &decision.deletes {
            if let Some(child) = stored.get(ordinal) {
                written.specs = written.specs.max(delete_child(store, fence, child).await?);
            }
        }
    }
    Ok(next_deadline)
}

/// When the batch a rollout is gating fails its health gate for want of time (the leader wakes then).
fn gate_deadline(set: &ContainerSet, status: &ContainerSetStatus) -> Option<DateTime<Utc>> {
    let rollout = status.rollout.as_ref().filter(|r| r.paused.is_none() && !r.batch.is_empty())?;
    let started = DateTime::parse_from_rfc3339(rollout.batch_started.as_deref()?).ok()?.with_timezone(&Utc);
    let timeout = chrono::Duration::from_std(set.spec.health_timeout_or_default()).ok()?;
    started.checked_add_signed(timeout)
}

/// Deletes a child by compare-and-swap; answers the revision of the delete (0: nothing deleted).
async fn delete_child(store: &SharedStore, fence: Fence<'_>, child: &Container) -> Result<i64, StoreError> {
    let key = keys::spec_key(&child.metadata.namespace, &child.metadata.name)
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let revision = child.metadata.resource_version.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
    let outcome = store.delete_fenced(fence, &key, DeleteCondition::ModRevision(revision)).await;
    let deleted = match &outcome {
        Ok(Some(revision)) => *revision,
        _ => 0,
    };
    if outcome.is_ok() {
        tracing::info!(child = %child.key(), "deleted a set's child");
    }
    ignore_stale(outcome.map(drop))?;
    Ok(deleted)
}

/// A conflict on the written key itself means the cache was stale: decided again next pass. A conflict
/// on the fence (the leadership is gone) or any other error is the caller's.
fn ignore_stale<T>(outcome: Result<T, StoreError>) -> Result<(), StoreError> {
    match outcome {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { key, .. }) if key != keys::SCHEDULER_LEADER => {
            tracing::debug!(%key, "changed meanwhile; deciding again next pass");
            Ok(())
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests;
