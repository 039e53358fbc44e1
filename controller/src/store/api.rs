//! The typed store API: `Api<K>` reads and writes objects of any [`Resource`] kind, with the generation
//! rule and the bookkeeping fields written once for every kind (kube's `Api<K>`, over our store).
//!
//! Rules, kept here and nowhere else:
//! - An object lives at [`keys::object_key`] (`/kedge/v1/<K::STORE_SEGMENT>/<ns>/<name>`), its status
//!   apart at [`keys::object_status_key`]; the writer of the status never rewrites what the user applied,
//!   and `status` is never stored in the object's key.
//! - `metadata.generation` is 1 on create and increases by one on a write that changes the spec, and
//!   only then (a label or annotation change is written without a new generation). Specs are compared
//!   in their serialized (normalized) form.
//! - `metadata.uid` and `metadata.creationTimestamp` are set on create and kept on every later write,
//!   whatever the caller sends; a namespace left empty is [`DEFAULT_NAMESPACE`].
//! - `metadata.resourceVersion` is never stored: it is the key's `mod_revision`, filled in on every read.
//! - An apply that changes nothing writes nothing (the revision does not move).
//! - An unreadable stored object is replaced by an apply as if it were absent (a new uid, generation 1):
//!   applying a good object over it is how a user repairs it. Lists carry such objects apart
//!   ([`InvalidObject`]), never leave them out silently (that would read as "deleted").
//! - A dry run answers what the apply would answer, by the same comparison, and writes nothing.
//!
//! `Api<K>` works over a [`SharedStore`] (`Api::<Container>::new(store.clone())`) or over a borrowed
//! `&dyn Store` (`Api::<Container, _>::new(store)`); [`super::objects`] keeps the per-kind functions
//! of earlier code as thin wrappers.

use std::marker::PhantomData;

use kedge_crds::meta::rfc3339;
use kedge_crds::{Lenient, ObjectMeta, Resource, DEFAULT_NAMESPACE};

use super::keys;
use super::{DeleteCondition, Fence, KeyValue, PutCondition, PutRequest, SharedStore, Store, StoreError};

/// What an apply did (or, for a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    /// Written; `spec_changed` tells whether the generation moved.
    Updated {
        spec_changed: bool,
    },
    Unchanged,
}

/// The object as stored after an apply (with `resourceVersion` set), and what the apply did. For a dry
/// run, the object as it would be stored, with the current `resourceVersion` (none when it would be
/// created).
#[derive(Debug, Clone)]
pub struct Applied<K> {
    pub object: K,
    pub outcome: ApplyOutcome,
}

/// What [`Api::list`] read.
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    /// The readable objects, by key order, with `resourceVersion` set and no status.
    pub items: Vec<K>,
    /// Objects that could not be read, by key order.
    pub invalid: Vec<InvalidObject>,
    /// Per readable object (`namespace/name`), the fields a newer writer added that were dropped.
    pub ignored_fields: Vec<(String, Vec<String>)>,
    /// The revision of the read: watch from `revision + 1` to miss nothing.
    pub revision: i64,
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

/// A handle on a store, owned or borrowed: what an [`Api`] reads and writes through.
pub trait AsStore {
    fn as_store(&self) -> &dyn Store;
}

impl AsStore for SharedStore {
    fn as_store(&self) -> &dyn Store {
        self.as_ref()
    }
}

impl AsStore for &dyn Store {
    fn as_store(&self) -> &dyn Store {
        *self
    }
}

/// The objects of kind `K` in a store. Cheap to make: build one where it is needed.
pub struct Api<K, S = SharedStore> {
    store: S,
    kind: PhantomData<fn() -> K>,
}

/// How often an apply without a precondition re-reads and retries after losing a race.
const APPLY_ATTEMPTS: usize = 8;

/// The uid a dry run shows for an object it would create (the real one is made at the write).
const DRY_RUN_UID: &str = "00000000-0000-0000-0000-000000000000";

impl<K: Resource, S: AsStore> Api<K, S> {
    pub fn new(store: S) -> Self {
        Api { store, kind: PhantomData }
    }

    /// Reads one object (without its status), with `resourceVersion` set. An unreadable stored object
    /// is a [`StoreError::Corrupt`] naming the key and the field.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        let key = object_key::<K>(namespace, name)?;
        self.store.as_store().get(&key).await?.map(|kv| decode::<K>(&kv).map(|read| read.value)).transpose()
    }

    /// Reads an object that may be unreadable: `Ok(Err(..))` names why, with the key's revision, so that
    /// an apply or a delete can still replace or remove it.
    pub async fn get_or_invalid(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Result<K, InvalidObject>>, StoreError> {
        let key = object_key::<K>(namespace, name)?;
        Ok(self.store.as_store().get(&key).await?.map(|kv| {
            decode::<K>(&kv)
                .map(|read| read.value)
                .map_err(|error| InvalidObject::unreadable(&kv, namespace, name, &error))
        }))
    }

    /// Every object in `namespace` (or in all namespaces), sorted by key, and the revision of the read.
    pub async fn list(&self, namespace: Option<&str>) -> Result<ObjectList<K>, StoreError> {
        let prefix = keys::objects_prefix::<K>(namespace).map_err(invalid_key)?;
        let list = self.store.as_store().list(&prefix).await?;
        let mut read = ObjectList {
            items: Vec::new(),
            invalid: Vec::new(),
            ignored_fields: Vec::new(),
            revision: list.revision,
        };
        for kv in &list.kvs {
            let Some((ns, name)) = keys::parse_object_key::<K>(&kv.key) else { continue };
            match decode::<K>(kv) {
                Ok(lenient) => {
                    if !lenient.ignored.is_empty() {
                        read.ignored_fields.push((format!("{ns}/{name}"), lenient.ignored));
                    }
                    read.items.push(lenient.value);
                }
                Err(error) => read.invalid.push(InvalidObject::unreadable(kv, ns, name, &error)),
            }
        }
        Ok(read)
    }

    /// Creates or updates the object `desired` (its `status` and store-managed metadata are ignored),
    /// with the generation rule.
    ///
    /// With `expected_resource_version`, the write happens only if the stored object is still at that
    /// revision (`0`: only if it does not exist), else [`StoreError::Conflict`]; without it, a concurrent
    /// writer makes it re-read and retry.
    pub async fn apply(
        &self,
        desired: &K,
        expected_resource_version: Option<i64>,
    ) -> Result<Applied<K>, StoreError> {
        let store = self.store.as_store();
        let key = object_key::<K>(namespace_or_default(desired.metadata()), &desired.metadata().name)?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (current, current_revision) = self.current(&key, expected_resource_version).await?;
            let uid = uuid::Uuid::new_v4().to_string();
            let now = rfc3339(chrono::Utc::now());
            let Some((mut next, outcome)) = next_stored(current.as_ref(), desired, &uid, &now) else {
                let object = current.expect("unchanged implies existing");
                return Ok(Applied { object, outcome: ApplyOutcome::Unchanged });
            };
            let value = serde_json::to_vec(&next).map_err(|e| StoreError::Invalid(e.to_string()))?;
            match store.put(&key, value, put_condition(current_revision), 0).await {
                Ok(revision) => {
                    next.metadata_mut().resource_version = Some(revision.to_string());
                    return Ok(Applied { object: next, outcome });
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

    /// What [`Api::apply`] would answer, without writing: the same read, the same precondition, the same
    /// comparison. The object shows the current `resourceVersion` (none when it would be created) and a
    /// placeholder uid when it would be created.
    pub async fn dry_run(
        &self,
        desired: &K,
        expected_resource_version: Option<i64>,
    ) -> Result<Applied<K>, StoreError> {
        let key = object_key::<K>(namespace_or_default(desired.metadata()), &desired.metadata().name)?;
        let (current, _) = self.current(&key, expected_resource_version).await?;
        let now = rfc3339(chrono::Utc::now());
        match next_stored(current.as_ref(), desired, DRY_RUN_UID, &now) {
            Some((mut object, outcome)) => {
                object.metadata_mut().resource_version =
                    current.and_then(|current| current.metadata().resource_version.clone());
                Ok(Applied { object, outcome })
            }
            None => {
                let object = current.expect("unchanged implies existing");
                Ok(Applied { object, outcome: ApplyOutcome::Unchanged })
            }
        }
    }

    /// Writes `desired` with the generation rule, once, only if the stored object is still `current`
    /// (`None`: absent) and `fence` holds: how the scheduler's leader writes what it owns. Answers `None`
    /// when nothing would change.
    pub async fn apply_fenced(
        &self,
        fence: Fence<'_>,
        desired: &K,
        current: Option<&K>,
    ) -> Result<Option<Applied<K>>, StoreError> {
        let key = object_key::<K>(namespace_or_default(desired.metadata()), &desired.metadata().name)?;
        let uid = uuid::Uuid::new_v4().to_string();
        let now = rfc3339(chrono::Utc::now());
        let Some((mut next, outcome)) = next_stored(current, desired, &uid, &now) else {
            return Ok(None);
        };
        let current_revision = current.map_or(0, |current| revision_of(current.metadata()));
        let value = serde_json::to_vec(&next).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let revision =
            self.store.as_store().put_fenced(fence, &key, value, put_condition(current_revision)).await?;
        next.metadata_mut().resource_version = Some(revision.to_string());
        Ok(Some(Applied { object: next, outcome }))
    }

    /// Deletes an object (not its status: the kind's controller removes that). With
    /// `expected_resource_version`, only if the object is still at that revision. Answers the revision of
    /// the delete, or `None` when there was nothing to delete.
    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        let key = object_key::<K>(namespace, name)?;
        let condition =
            expected_resource_version.map_or(DeleteCondition::Always, DeleteCondition::ModRevision);
        self.store.as_store().delete(&key, condition).await
    }

    /// What [`Api::delete`] would answer, without deleting: the stored object's revision, `None` when
    /// there is none, or the conflict a stale `expected_resource_version` meets.
    pub async fn delete_dry_run(
        &self,
        namespace: &str,
        name: &str,
        expected_resource_version: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        let key = object_key::<K>(namespace, name)?;
        let current = self.store.as_store().get(&key).await?.map(|kv| kv.mod_revision);
        match expected_resource_version {
            Some(expected) if Some(expected) != current => {
                Err(StoreError::Conflict { key, current_mod_revision: current.unwrap_or(0) })
            }
            _ => Ok(current),
        }
    }

    /// Reads an object's status and the revision of its key. Fields a newer writer added are dropped:
    /// during a rolling upgrade an older reader must not fail on a newer writer's status.
    pub async fn get_status(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<(K::Status, i64)>, StoreError> {
        let key = status_key::<K>(namespace, name)?;
        match self.store.as_store().get(&key).await? {
            None => Ok(None),
            Some(kv) => Ok(Some((decode_status::<K>(&kv)?, kv.mod_revision))),
        }
    }

    /// Writes an object's status if `condition` holds; returns the new revision of the status key.
    pub async fn put_status(
        &self,
        namespace: &str,
        name: &str,
        status: &K::Status,
        condition: PutCondition,
    ) -> Result<i64, StoreError> {
        self.write_status(None, namespace, name, status, condition).await
    }

    /// [`Api::put_status`], only while `fence` holds (the scheduler's leader's writes).
    pub async fn put_status_fenced(
        &self,
        fence: Fence<'_>,
        namespace: &str,
        name: &str,
        status: &K::Status,
        condition: PutCondition,
    ) -> Result<i64, StoreError> {
        self.write_status(Some(fence), namespace, name, status, condition).await
    }

    /// [`Api::list`], each object with its status merged in, as the API shows them (a status that cannot
    /// be read is left out; the revision is the objects' read).
    pub async fn list_with_status(&self, namespace: Option<&str>) -> Result<ObjectList<K>, StoreError> {
        let mut list = self.list(namespace).await?;
        let prefix = keys::object_statuses_prefix::<K>(namespace).map_err(invalid_key)?;
        let statuses = self.store.as_store().list(&prefix).await?;
        let mut by_key = std::collections::HashMap::new();
        for kv in &statuses.kvs {
            let Some((ns, name)) = keys::parse_object_status_key::<K>(&kv.key) else { continue };
            if let Ok(status) = decode_status::<K>(kv) {
                by_key.insert((ns.to_owned(), name.to_owned()), status);
            }
        }
        for object in &mut list.items {
            let key = (object.metadata().namespace.clone(), object.metadata().name.clone());
            *object.status_mut() = by_key.remove(&key);
        }
        Ok(list)
    }

    /// The object and its status merged in, as the API shows it.
    pub async fn get_with_status(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        let Some(mut object) = self.get(namespace, name).await? else { return Ok(None) };
        *object.status_mut() = self.get_status(namespace, name).await?.map(|(status, _)| status);
        Ok(Some(object))
    }

    /// The one status write behind [`Api::put_status`] and [`Api::put_status_fenced`].
    async fn write_status(
        &self,
        fence: Option<Fence<'_>>,
        namespace: &str,
        name: &str,
        status: &K::Status,
        condition: PutCondition,
    ) -> Result<i64, StoreError> {
        let key = status_key::<K>(namespace, name)?;
        let value = serde_json::to_vec(status).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let request = PutRequest { key: &key, value, condition, lease: 0, fence };
        self.store.as_store().put_request(request).await
    }

    /// The stored object at `key` (an unreadable one counts as absent) and the key's revision, after
    /// checking `expected_resource_version` against it.
    async fn current(
        &self,
        key: &str,
        expected_resource_version: Option<i64>,
    ) -> Result<(Option<K>, i64), StoreError> {
        let stored = self.store.as_store().get(key).await?;
        let current = stored.as_ref().and_then(|kv| decode::<K>(kv).ok()).map(|read| read.value);
        let current_revision = stored.as_ref().map_or(0, |kv| kv.mod_revision);
        match expected_resource_version {
            Some(expected) if expected != current_revision => {
                Err(StoreError::Conflict { key: key.to_owned(), current_mod_revision: current_revision })
            }
            _ => Ok((current, current_revision)),
        }
    }
}

/// The pure part of apply: what to store given what is stored, or `None` when nothing would change.
pub fn next_stored<K: Resource>(
    current: Option<&K>,
    desired: &K,
    new_uid: &str,
    now_rfc3339: &str,
) -> Option<(K, ApplyOutcome)> {
    let mut next = desired.clone();
    *next.status_mut() = None;
    let namespace = namespace_or_default(desired.metadata()).to_owned();
    let meta = next.metadata_mut();
    meta.resource_version = None;
    meta.namespace = namespace;
    let spec_changed = current.is_some_and(|current| {
        serde_json::to_value(current.spec()).ok() != serde_json::to_value(next.spec()).ok()
    });
    carry_metadata(current.map(|c| c.metadata()), next.metadata_mut(), spec_changed, new_uid, now_rfc3339);
    match current {
        None => Some((next, ApplyOutcome::Created)),
        Some(current) => {
            let mut stored = current.clone();
            stored.metadata_mut().resource_version = None;
            *stored.status_mut() = None;
            if serde_json::to_value(&stored).ok() == serde_json::to_value(&next).ok() {
                return None;
            }
            Some((next, ApplyOutcome::Updated { spec_changed }))
        }
    }
}

/// Decodes an object key's value, filling in `resourceVersion` from the key's `mod_revision`. Fields
/// this version does not know (a newer kedge wrote them) are dropped and named.
pub fn decode<K: Resource>(kv: &KeyValue) -> Result<Lenient<K>, StoreError> {
    let mut read = kedge_crds::from_json_lenient::<K>(&kv.value)
        .map_err(|e| StoreError::Corrupt(format!("{}: not a {}: {e}", kv.key, K::KIND)))?;
    read.value.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
    Ok(read)
}

/// Decodes a status key's value, tolerating fields a newer writer added (see [`kedge_crds::lenient`]).
pub fn decode_status<K: Resource>(kv: &KeyValue) -> Result<K::Status, StoreError> {
    kedge_crds::from_json_lenient::<K::Status>(&kv.value)
        .map(|read| read.value)
        .map_err(|e| StoreError::Corrupt(format!("{}: not a {}Status: {e}", kv.key, K::KIND)))
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

fn put_condition(current_revision: i64) -> PutCondition {
    match current_revision {
        0 => PutCondition::Absent,
        revision => PutCondition::ModRevision(revision),
    }
}

fn object_key<K: Resource>(namespace: &str, name: &str) -> Result<String, StoreError> {
    keys::object_key::<K>(namespace, name).map_err(invalid_key)
}

fn status_key<K: Resource>(namespace: &str, name: &str) -> Result<String, StoreError> {
    keys::object_status_key::<K>(namespace, name).map_err(invalid_key)
}

fn invalid_key(error: keys::InvalidSegment) -> StoreError {
    StoreError::Invalid(error.to_string())
}
