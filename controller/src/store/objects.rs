//! Container specs and statuses on top of the raw store: the generation rule and the bookkeeping fields.
//!
//! Rules, kept here and nowhere else:
//! - A spec lives at [`keys::spec_key`], its status at [`keys::status_key`]; the agent writes only status.
//! - `metadata.generation` is 1 on create and increases by one on a write that changes `spec`, and only
//!   then (a label or annotation change is written without a new generation). Specs are compared in
//!   their serialized (normalized) form.
//! - `metadata.uid` and `metadata.creationTimestamp` are set on create and kept on every later write,
//!   whatever the caller sends.
//! - `metadata.resourceVersion` is never stored: it is the key's `mod_revision`, filled in on every read.
//! - An apply that changes nothing writes nothing (the revision does not move).
//! - `status` is never stored in the spec key.
//!
//! ContainerSets follow the same rules at [`keys::set_key`] / [`keys::set_status_key`]; their status is
//! written only by the scheduler's leader, fenced on its term.

use kedge_crds::{
    Container, ContainerSet, ContainerSetStatus, ContainerStatus, Lenient, ObjectMeta, DEFAULT_NAMESPACE,
};

use super::keys;
use super::{DeleteCondition, Fence, KeyValue, PutCondition, Store, StoreError};

/// What [`apply_container`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    /// Written; `spec_changed` tells whether the generation moved.
    Updated {
        spec_changed: bool,
    },
    Unchanged,
}

#[derive(Debug, Clone)]
pub struct Applied {
    /// The spec as stored, with `resourceVersion` set.
    pub container: Container,
    pub outcome: ApplyOutcome,
}

/// How often an apply without a precondition re-reads and retries after losing a race.
const APPLY_ATTEMPTS: usize = 8;

/// Creates or updates the spec of `desired` (its `status` and store-managed metadata are ignored).
///
/// With `expected_resource_version`, the write happens only if the stored spec is still at that revision
/// (`0`: only if it does not exist); otherwise a concurrent writer makes it re-read and retry.
pub async fn apply_container(
    store: &dyn Store,
    desired: &Container,
    expected_resource_version: Option<i64>,
) -> Result<Applied, StoreError> {
    let ns = namespace_of(desired);
    let key = keys::spec_key(ns, &desired.metadata.name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let stored = store.get(&key).await?;
        // An unreadable stored spec is replaced as if new (a new uid and generation 1): applying a
        // good spec over it is how a user repairs it.
        let current = stored.as_ref().and_then(|kv| decode_container(kv).ok());
        let current_revision = stored.as_ref().map_or(0, |kv| kv.mod_revision);
        if let Some(expected) = expected_resource_version {
            if expected != current_revision {
                return Err(StoreError::Conflict { key, current_mod_revision: current_revision });
            }
        }
        let uid = uuid::Uuid::new_v4().to_string();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let Some((next, outcome)) = next_stored(current.as_ref(), desired, &uid, &now) else {
            let container = current.expect("unchanged implies existing");
            return Ok(Applied { container, outcome: ApplyOutcome::Unchanged });
        };
        let condition = match current_revision {
            0 => PutCondition::Absent,
            r => PutCondition::ModRevision(r),
        };
        let value = serde_json::to_vec(&next).map_err(|e| StoreError::Invalid(e.to_string()))?;
        match store.put(&key, value, condition, 0).await {
            Ok(revision) => {
                let mut container = next;
                container.metadata.resource_version = Some(revision.to_string());
                return Ok(Applied { container, outcome });
            }
            Err(StoreError::Conflict { .. })
                if expected_resource_version.is_none() && attempts < APPLY_ATTEMPTS =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The pure part of apply: what to store given what is stored, or `None` when nothing would change.
pub fn next_stored(
    current: Option<&Container>,
    desired: &Container,
    new_uid: &str,
    now_rfc3339: &str,
) -> Option<(Container, ApplyOutcome)> {
    let mut next = desired.clone();
    next.status = None;
    next.metadata.resource_version = None;
    next.metadata.namespace = namespace_of(desired).to_owned();
    let spec_changed = current.is_some_and(|current| {
        serde_json::to_value(&current.spec).ok() != serde_json::to_value(&next.spec).ok()
    });
    carry_metadata(current.map(|c| &c.metadata), &mut next.metadata, spec_changed, new_uid, now_rfc3339);
    match current {
        None => Some((next, ApplyOutcome::Created)),
        Some(current) => {
            let mut stored = current.clone();
            stored.metadata.resource_version = None;
            stored.status = None;
            if serde_json::to_value(&stored).ok() == serde_json::to_value(&next).ok() {
                return None;
            }
            Some((next, ApplyOutcome::Updated { spec_changed }))
        }
    }
}

/// Decodes a spec key's value, filling in `resourceVersion` from the key's `mod_revision`. Fields this
/// version does not know (a newer kedge wrote them) are dropped; [`decode_container_lenient`] names them.
pub fn decode_container(kv: &KeyValue) -> Result<Container, StoreError> {
    decode_container_lenient(kv).map(|read| read.value)
}

/// [`decode_container`], also naming the fields that were dropped.
pub fn decode_container_lenient(kv: &KeyValue) -> Result<Lenient<Container>, StoreError> {
    let mut read = kedge_crds::from_json_lenient::<Container>(&kv.value)
        .map_err(|e| StoreError::Corrupt(format!("{}: not a Container: {e}", kv.key)))?;
    read.value.metadata.resource_version = Some(kv.mod_revision.to_string());
    Ok(read)
}

/// A stored object that cannot be read (written by hand, or by a kedge whose format this one does not
/// follow): lists skip it and carry it here, so that one bad entry blocks nothing, and the agent leaves
/// its container alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidObject {
    pub namespace: String,
    pub name: String,
    /// The key's `mod_revision`, as a string like every resource version.
    pub resource_version: String,
    /// Why it cannot be read, with the field path.
    pub error: String,
}

impl InvalidObject {
    /// The entry at `kv` (spec or set `namespace/name`), unreadable because of `error`.
    pub fn unreadable(kv: &KeyValue, namespace: &str, name: &str, error: &StoreError) -> InvalidObject {
        let error = match error {
            StoreError::Corrupt(message) => {
                message.strip_prefix(&format!("{}: ", kv.key)).unwrap_or(message).to_owned()
            }
            other => other.to_string(),
        };
        InvalidObject {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            resource_version: kv.mod_revision.to_string(),
            error,
        }
    }

    /// `namespace/name`, the work queue's key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What [`list_containers`] read.
#[derive(Debug, Clone, Default)]
pub struct ContainerList {
    pub containers: Vec<Container>,
    /// Specs that could not be read, by key order.
    pub invalid: Vec<InvalidObject>,
    /// Per readable spec (`namespace/name`), the fields a newer writer added that were dropped.
    pub ignored_fields: Vec<(String, Vec<String>)>,
    /// The revision of the read.
    pub revision: i64,
}

pub async fn get_container(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<Container>, StoreError> {
    let key = keys::spec_key(namespace, name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    store.get(&key).await?.map(|kv| decode_container(&kv)).transpose()
}

/// Every spec in `namespace` (or in all namespaces), sorted by key, and the revision of the read.
/// An undecodable spec is not left out silently (that would read as "deleted"): it is listed in
/// [`ContainerList::invalid`], so that readers can report it and leave its container alone.
pub async fn list_containers(
    store: &dyn Store,
    namespace: Option<&str>,
) -> Result<ContainerList, StoreError> {
    let prefix = keys::specs_prefix(namespace).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let list = store.list(&prefix).await?;
    let mut read = ContainerList { revision: list.revision, ..ContainerList::default() };
    for kv in &list.kvs {
        let Some((ns, name)) = keys::parse_spec_key(&kv.key) else { continue };
        match decode_container_lenient(kv) {
            Ok(lenient) => {
                if !lenient.ignored.is_empty() {
                    read.ignored_fields.push((format!("{ns}/{name}"), lenient.ignored));
                }
                read.containers.push(lenient.value);
            }
            Err(error) => read.invalid.push(InvalidObject::unreadable(kv, ns, name, &error)),
        }
    }
    Ok(read)
}

/// Reads a spec that may be unreadable: `Ok(Err(..))` names why, with the key's revision, so that an
/// apply or a delete can still replace or remove it.
pub async fn get_container_or_invalid(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<Result<Container, InvalidObject>>, StoreError> {
    let key = keys::spec_key(namespace, name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(store.get(&key).await?.map(|kv| {
        decode_container(&kv).map_err(|error| InvalidObject::unreadable(&kv, namespace, name, &error))
    }))
}

/// Deletes a spec (not its status: the agent removes that once the container is gone).
pub async fn delete_container(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    expected_resource_version: Option<i64>,
) -> Result<Option<i64>, StoreError> {
    let key = keys::spec_key(namespace, name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let condition = expected_resource_version.map_or(DeleteCondition::Always, DeleteCondition::ModRevision);
    store.delete(&key, condition).await
}

/// Writes a status; returns the new revision of the status key.
pub async fn put_status(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    status: &ContainerStatus,
    condition: PutCondition,
) -> Result<i64, StoreError> {
    let key = keys::status_key(namespace, name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let value = serde_json::to_vec(status).map_err(|e| StoreError::Invalid(e.to_string()))?;
    store.put(&key, value, condition, 0).await
}

/// Reads a status and the revision of its key.
pub async fn get_status(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<(ContainerStatus, i64)>, StoreError> {
    let key = keys::status_key(namespace, name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    match store.get(&key).await? {
        None => Ok(None),
        Some(kv) => {
            let status = decode_status(&kv.value)
                .map_err(|e| StoreError::Corrupt(format!("{key}: not a ContainerStatus: {e}")))?;
            Ok(Some((status, kv.mod_revision)))
        }
    }
}

/// Decodes a status as stored, tolerating fields a newer agent added (see [`kedge_crds::lenient`]):
/// during a rolling upgrade an older reader must not fail on a newer writer's status.
pub fn decode_status(value: &[u8]) -> Result<ContainerStatus, String> {
    kedge_crds::from_json_lenient::<ContainerStatus>(value).map(|read| read.value)
}

fn namespace_of(c: &Container) -> &str {
    namespace_or_default(&c.metadata)
}

fn resource_version(c: &Container) -> i64 {
    revision_of(&c.metadata)
}

/// The generation rule every kind follows: a new object gets a uid, a creation time and generation 1;
/// an update keeps its uid and creation time, and moves its generation only when its spec changed.
fn carry_metadata(
    current: Option<&ObjectMeta>,
    next: &mut ObjectMeta,
    spec_changed: bool,
    new_uid: &str,
    now_rfc3339: &str,
) {
    match current {
        None => {
            next.uid = Some(new_uid.to_owned());
            next.creation_timestamp = Some(now_rfc3339.to_owned());
            next.generation = Some(1);
        }
        Some(current) => {
            let generation = current.generation.unwrap_or(1);
            next.uid = current.uid.clone();
            next.creation_timestamp = current.creation_timestamp.clone();
            next.generation = Some(if spec_changed { generation + 1 } else { generation });
        }
    }
}

fn namespace_or_default(meta: &ObjectMeta) -> &str {
    if meta.namespace.is_empty() {
        DEFAULT_NAMESPACE
    } else {
        &meta.namespace
    }
}

fn revision_of(meta: &ObjectMeta) -> i64 {
    meta.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Writes the spec of `desired` the way [`apply_container`] does (the generation rule), once, only if
/// the stored spec is still at `expected` (`None`: absent) and `fence` holds: how the scheduler's
/// leader writes the children of a ContainerSet. Answers `None` when nothing would change.
pub async fn apply_container_fenced(
    store: &dyn Store,
    fence: Fence<'_>,
    desired: &Container,
    current: Option<&Container>,
) -> Result<Option<(Container, ApplyOutcome)>, StoreError> {
    let ns = namespace_of(desired);
    let key = keys::spec_key(ns, &desired.metadata.name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let uid = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let Some((mut next, outcome)) = next_stored(current, desired, &uid, &now) else {
        return Ok(None);
    };
    let condition = match current.map_or(0, resource_version) {
        0 => PutCondition::Absent,
        revision => PutCondition::ModRevision(revision),
    };
    let value = serde_json::to_vec(&next).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let revision = store.put_fenced(fence, &key, value, condition).await?;
    next.metadata.resource_version = Some(revision.to_string());
    Ok(Some((next, outcome)))
}

/// Creates or updates a ContainerSet, with the generation rule of [`apply_container`]; with
/// `expected_resource_version`, only if the stored set is still at that revision (`0`: absent).
pub async fn apply_set(
    store: &dyn Store,
    desired: &ContainerSet,
    expected_resource_version: Option<i64>,
) -> Result<(ContainerSet, ApplyOutcome), StoreError> {
    let ns = set_namespace(desired).to_owned();
    let key = keys::set_key(&ns, &desired.metadata.name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let stored = store.get(&key).await?;
        // An unreadable stored set is replaced as if new, as for specs.
        let current = stored.as_ref().and_then(|kv| decode_set(kv).ok());
        let current_revision = stored.as_ref().map_or(0, |kv| kv.mod_revision);
        if let Some(expected) = expected_resource_version {
            if expected != current_revision {
                return Err(StoreError::Conflict { key, current_mod_revision: current_revision });
            }
        }
        let mut next = desired.clone();
        next.status = None;
        next.metadata.resource_version = None;
        next.metadata.namespace = ns.clone();
        let spec_changed = current.as_ref().is_some_and(|current| {
            serde_json::to_value(&current.spec).ok() != serde_json::to_value(&next.spec).ok()
        });
        let uid = uuid::Uuid::new_v4().to_string();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        carry_metadata(current.as_ref().map(|c| &c.metadata), &mut next.metadata, spec_changed, &uid, &now);
        let outcome = match &current {
            None => ApplyOutcome::Created,
            Some(current) => {
                let mut stored = current.clone();
                stored.metadata.resource_version = None;
                stored.status = None;
                if serde_json::to_value(&stored).ok() == serde_json::to_value(&next).ok() {
                    return Ok((current.clone(), ApplyOutcome::Unchanged));
                }
                ApplyOutcome::Updated { spec_changed }
            }
        };
        let condition = match current_revision {
            0 => PutCondition::Absent,
            revision => PutCondition::ModRevision(revision),
        };
        let value = serde_json::to_vec(&next).map_err(|e| StoreError::Invalid(e.to_string()))?;
        match store.put(&key, value, condition, 0).await {
            Ok(revision) => {
                next.metadata.resource_version = Some(revision.to_string());
                return Ok((next, outcome));
            }
            Err(StoreError::Conflict { .. })
                if expected_resource_version.is_none() && attempts < APPLY_ATTEMPTS =>
            {
                continue;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Decodes a set key's value, filling in `resourceVersion` from the key's `mod_revision`.
pub fn decode_set(kv: &KeyValue) -> Result<ContainerSet, StoreError> {
    let mut set = kedge_crds::from_json_lenient::<ContainerSet>(&kv.value)
        .map_err(|e| StoreError::Corrupt(format!("{}: not a ContainerSet: {e}", kv.key)))?
        .value;
    set.metadata.resource_version = Some(kv.mod_revision.to_string());
    Ok(set)
}

pub async fn get_set(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<ContainerSet>, StoreError> {
    let key = keys::set_key(namespace, name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    store.get(&key).await?.map(|kv| decode_set(&kv)).transpose()
}

/// Every readable set in `namespace` (or all), sorted by key, and the revision of the read. Sets that
/// cannot be read are skipped here; [`list_sets_with_invalid`] names them.
pub async fn list_sets(
    store: &dyn Store,
    namespace: Option<&str>,
) -> Result<(Vec<ContainerSet>, i64), StoreError> {
    let (sets, _, revision) = list_sets_with_invalid(store, namespace).await?;
    Ok((sets, revision))
}

/// [`list_sets`], with the sets that could not be read.
pub async fn list_sets_with_invalid(
    store: &dyn Store,
    namespace: Option<&str>,
) -> Result<(Vec<ContainerSet>, Vec<InvalidObject>, i64), StoreError> {
    let prefix = keys::sets_prefix(namespace).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let list = store.list(&prefix).await?;
    let (mut sets, mut invalid) = (Vec::new(), Vec::new());
    for kv in &list.kvs {
        let Some((ns, name)) = keys::parse_set_key(&kv.key) else { continue };
        match decode_set(kv) {
            Ok(set) => sets.push(set),
            Err(error) => invalid.push(InvalidObject::unreadable(kv, ns, name, &error)),
        }
    }
    Ok((sets, invalid, list.revision))
}

/// Deletes a set; the scheduler's leader then deletes its children and its status.
pub async fn delete_set(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    expected_resource_version: Option<i64>,
) -> Result<Option<i64>, StoreError> {
    let key = keys::set_key(namespace, name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let condition = expected_resource_version.map_or(DeleteCondition::Always, DeleteCondition::ModRevision);
    store.delete(&key, condition).await
}

/// Reads a set's status and the revision of its key.
pub async fn get_set_status(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<(ContainerSetStatus, i64)>, StoreError> {
    let key = keys::set_status_key(namespace, name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    match store.get(&key).await? {
        None => Ok(None),
        Some(kv) => {
            let status = kedge_crds::from_json_lenient::<ContainerSetStatus>(&kv.value)
                .map(|read| read.value)
                .map_err(|e| StoreError::Corrupt(format!("{key}: not a ContainerSetStatus: {e}")))?;
            Ok(Some((status, kv.mod_revision)))
        }
    }
}

fn set_namespace(set: &ContainerSet) -> &str {
    namespace_or_default(&set.metadata)
}
