//! The per-kind functions of earlier code (Container specs and statuses, ContainerSets), kept as thin
//! wrappers over the typed [`Api`] so that their callers keep compiling. New code uses `Api<K>`; the
//! rules (the generation rule, the bookkeeping fields, unreadable objects) are stated and kept in
//! [`super::api`], once for every kind.
//!
//! A spec lives at [`super::keys::spec_key`], its status at [`super::keys::status_key`]; a ContainerSet at
//! [`super::keys::set_key`] / [`super::keys::set_status_key`], its status written only by the scheduler's leader,
//! fenced on its term.

use kedge_crds::{Container, ContainerSet, ContainerSetStatus, ContainerStatus, Lenient};

use super::api::Api;
use super::{Fence, KeyValue, PutCondition, Store, StoreError};

pub use super::api::{ApplyOutcome, InvalidObject};

/// What [`apply_container`] did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The spec as stored, with `resourceVersion` set.
    pub container: Container,
    pub outcome: ApplyOutcome,
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

fn containers(store: &dyn Store) -> Api<Container, &dyn Store> {
    Api::new(store)
}

fn sets(store: &dyn Store) -> Api<ContainerSet, &dyn Store> {
    Api::new(store)
}

/// [`Api::apply`] for a Container spec.
pub async fn apply_container(
    store: &dyn Store,
    desired: &Container,
    expected_resource_version: Option<i64>,
) -> Result<Applied, StoreError> {
    let applied = containers(store).apply(desired, expected_resource_version).await?;
    Ok(Applied { container: applied.object, outcome: applied.outcome })
}

/// [`super::api::next_stored`] for a Container spec.
pub fn next_stored(
    current: Option<&Container>,
    desired: &Container,
    new_uid: &str,
    now_rfc3339: &str,
) -> Option<(Container, ApplyOutcome)> {
    super::api::next_stored(current, desired, new_uid, now_rfc3339)
}

/// Decodes a spec key's value, filling in `resourceVersion` from the key's `mod_revision`. Fields this
/// version does not know (a newer kedge wrote them) are dropped; [`decode_container_lenient`] names them.
pub fn decode_container(kv: &KeyValue) -> Result<Container, StoreError> {
    decode_container_lenient(kv).map(|read| read.value)
}

/// [`decode_container`], also naming the fields that were dropped.
pub fn decode_container_lenient(kv: &KeyValue) -> Result<Lenient<Container>, StoreError> {
    super::api::decode::<Container>(kv)
}

pub async fn get_container(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<Container>, StoreError> {
    containers(store).get(namespace, name).await
}

/// Every spec in `namespace` (or in all namespaces), sorted by key, and the revision of the read.
/// An undecodable spec is not left out silently (that would read as "deleted"): it is listed in
/// [`ContainerList::invalid`], so that readers can report it and leave its container alone.
pub async fn list_containers(
    store: &dyn Store,
    namespace: Option<&str>,
) -> Result<ContainerList, StoreError> {
    let list = containers(store).list(namespace).await?;
    Ok(ContainerList {
        containers: list.items,
        invalid: list.invalid,
        ignored_fields: list.ignored_fields,
        revision: list.revision,
    })
}

/// Reads a spec that may be unreadable: `Ok(Err(..))` names why, with the key's revision, so that an
/// apply or a delete can still replace or remove it.
pub async fn get_container_or_invalid(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<Result<Container, InvalidObject>>, StoreError> {
    containers(store).get_or_invalid(namespace, name).await
}

/// Deletes a spec (not its status: the agent removes that once the container is gone).
pub async fn delete_container(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    expected_resource_version: Option<i64>,
) -> Result<Option<i64>, StoreError> {
    containers(store).delete(namespace, name, expected_resource_version).await
}

/// Writes a status; returns the new revision of the status key.
pub async fn put_status(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    status: &ContainerStatus,
    condition: PutCondition,
) -> Result<i64, StoreError> {
    containers(store).put_status(namespace, name, status, condition).await
}

/// Reads a status and the revision of its key.
pub async fn get_status(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<(ContainerStatus, i64)>, StoreError> {
    containers(store).get_status(namespace, name).await
}

/// Decodes a status as stored, tolerating fields a newer agent added (see [`kedge_crds::lenient`]):
/// during a rolling upgrade an older reader must not fail on a newer writer's status.
pub fn decode_status(value: &[u8]) -> Result<ContainerStatus, String> {
    kedge_crds::from_json_lenient::<ContainerStatus>(value).map(|read| read.value)
}

/// [`Api::apply_fenced`] for a Container spec: how the scheduler's leader writes the children of a
/// ContainerSet. Answers `None` when nothing would change.
pub async fn apply_container_fenced(
    store: &dyn Store,
    fence: Fence<'_>,
    desired: &Container,
    current: Option<&Container>,
) -> Result<Option<(Container, ApplyOutcome)>, StoreError> {
    let applied = containers(store).apply_fenced(fence, desired, current).await?;
    Ok(applied.map(|applied| (applied.object, applied.outcome)))
}

/// [`Api::apply`] for a ContainerSet.
pub async fn apply_set(
    store: &dyn Store,
    desired: &ContainerSet,
    expected_resource_version: Option<i64>,
) -> Result<(ContainerSet, ApplyOutcome), StoreError> {
    let applied = sets(store).apply(desired, expected_resource_version).await?;
    Ok((applied.object, applied.outcome))
}

/// Decodes a set key's value, filling in `resourceVersion` from the key's `mod_revision`.
pub fn decode_set(kv: &KeyValue) -> Result<ContainerSet, StoreError> {
    super::api::decode::<ContainerSet>(kv).map(|read| read.value)
}

pub async fn get_set(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<ContainerSet>, StoreError> {
    sets(store).get(namespace, name).await
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
    let list = sets(store).list(namespace).await?;
    Ok((list.items, list.invalid, list.revision))
}

/// Deletes a set; the scheduler's leader then deletes its children and its status.
pub async fn delete_set(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    expected_resource_version: Option<i64>,
) -> Result<Option<i64>, StoreError> {
    sets(store).delete(namespace, name, expected_resource_version).await
}

/// Reads a set's status and the revision of its key.
pub async fn get_set_status(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Result<Option<(ContainerSetStatus, i64)>, StoreError> {
    sets(store).get_status(namespace, name).await
}
