//! The desired-state store: one trait, an etcd and an embedded implementation with the same semantics.
//!
//! The model is etcd's: one global revision, incremented by every write transaction; every key carries
//! `create_revision`, `mod_revision` and `version`; writes can be conditioned on a key's `mod_revision`
//! (compare-and-swap); a watch replays every event from a start revision on, in revision order, or reports
//! that the start revision was compacted away; leases attach keys that are deleted when the lease expires.
//!
//! Contracts every implementation keeps, and the controller relies on:
//!
//! - An error or a timeout is an `Err`, never an empty list or a missing key. A caller that got `Ok` from
//!   [`Store::list`] has read the whole prefix at [`ListResult::revision`].
//! - A write that returned `Ok` is durable (etcd: committed by a quorum; embedded: fsync'd).
//! - A watch started at `start_revision` yields every event with `revision >= start_revision` exactly once,
//!   in order; events of one write transaction share a revision. When the start revision is older than the
//!   compaction point, the stream yields [`StoreError::Compacted`] and ends: the caller re-lists and watches
//!   from the list's revision + 1. Any other stream error also ends the stream; resuming from the last seen
//!   revision + 1 is always correct.
//! - A write that returned an error other than [`StoreError::Conflict`] may or may not have been applied
//!   (the request may have reached the server before the connection broke); re-read before retrying a CAS.
//!
//! Modules: [`keys`] (the key layout), [`embedded`], [`etcd`], [`api`] (the typed `Api<K>` of every
//! [`kedge_crds::Resource`] kind, with the generation rule, on top of the raw key-value interface),
//! [`objects`] (the per-kind functions of earlier code, thin wrappers over `Api<K>`), [`CountingStore`] (counts range reads), [`layer`] (wrappers that watch or break part of the traffic).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

pub mod api;
mod counting;
mod crc;
pub mod embedded;
pub mod etcd;
pub mod keys;
pub mod layer;
pub mod metered;
pub mod objects;

#[doc(hidden)]
pub mod api_conformance;
#[doc(hidden)]
pub mod conformance;

pub use counting::CountingStore;
pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use etcd::{EtcdOptions, EtcdStore, EtcdTls};
pub use metered::MeteredStore;

/// A boxed, `Send` future: what the [`Store`] trait's methods return, so `Arc<dyn Store>` works.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a [`Store`] request returns.
pub type StoreFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// A watch: events in revision order. Ends after the first `Err`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// A shared handle to any store; cheap to clone, usable from many tasks.
pub type SharedStore = Arc<dyn Store>;

/// A lease identifier, as etcd numbers them (never 0: 0 means "no lease").
pub type LeaseId = i64;

/// One key and its value at some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the write that created this incarnation of the key.
    pub create_revision: i64,
    /// The revision of the last write to the key: what compare-and-swap compares, and a resourceVersion.
    pub mod_revision: i64,
    /// How many times the key was written since it was created (1 after the create).
    pub version: i64,
    /// The lease the key is attached to, 0 when none.
    pub lease: LeaseId,
}

/// The result of a prefix list: the keys, sorted, and the store revision they reflect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub kvs: Vec<KeyValue>,
    /// The store's revision at the time of the read: watch from `revision + 1` to miss nothing.
    pub revision: i64,
}

/// What a put requires of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition {
    /// No condition.
    Always,
    /// The key must not exist (create-only).
    Absent,
    /// The key must exist with exactly this `mod_revision` (compare-and-swap).
    ModRevision(i64),
}

/// What a delete requires of the key's current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteCondition {
    /// No condition; deleting a missing key is not an error.
    Always,
    /// The key must exist with exactly this `mod_revision`.
    ModRevision(i64),
}

/// A condition on a second key: a fenced write happens only while `key`'s `mod_revision` is exactly
/// `mod_revision`, checked atomically with the write. A leader that created its leader key at revision R
/// fences every write on (leader key, R): once its lease lapses or another leader creates the key, the
/// key's `mod_revision` differs (0 or a newer revision) and the stale leader's writes are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence<'a> {
    pub key: &'a str,
    pub mod_revision: i64,
}

/// A put as [`Store::put_request`] takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRequest<'a> {
    pub key: &'a str,
    pub value: Vec<u8>,
    pub condition: PutCondition,
    /// The lease the key is attached to; 0: none.
    pub lease: LeaseId,
    pub fence: Option<Fence<'a>>,
}

/// A delete as [`Store::delete_request`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteRequest<'a> {
    pub key: &'a str,
    pub condition: DeleteCondition,
    pub fence: Option<Fence<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// For a put, the key as written; for a delete, the key with an empty value and
    /// `mod_revision == revision` (etcd's convention).
    pub kv: KeyValue,
    /// The revision of the write transaction that produced the event.
    pub revision: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached (no endpoint answers, no leader, connection dropped).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request did not complete in time; it may or may not have been applied.
    #[error("store request timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A condition failed. `current_mod_revision` is the key's mod_revision, 0 when it does not exist.
    #[error("conflict on {key}: current mod_revision is {current_mod_revision}")]
    Conflict { key: String, current_mod_revision: i64 },
    /// The requested revision is older than the compaction point: re-list.
    #[error("revision compacted; oldest available revision is {compact_revision}")]
    Compacted { compact_revision: i64 },
    /// The thing (a lease, usually) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    #[error("store I/O error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The stored data cannot be decoded.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// Another process holds the embedded store's file open for writing.
    #[error("store file {path} is locked by another process")]
    Locked { path: std::path::PathBuf },
    /// Authentication or authorization failed.
    #[error("store authentication failed: {0}")]
    Auth(String),
    /// The request was rejected as malformed (a bad key, a TTL out of range, a bad endpoint).
    #[error("invalid store request: {0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether retrying the same request later may succeed (as opposed to a conflict or a bad request).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

/// The desired-state store. Implementations: [`EtcdStore`], [`EmbeddedStore`].
///
/// Every method is cancel-safe in the sense that dropping the future never corrupts the store, but a
/// dropped write may or may not have been applied.
pub trait Store: Send + Sync + 'static {
    /// Reads one key. `Ok(None)` means the store answered and the key does not exist.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>>;

    /// Reads every key that starts with `prefix`, sorted by key, with the revision of the read.
    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ListResult>;

    /// The one write entry point of puts, fenced or not: writes `request.value` under `request.key`
    /// if its condition (and fence, if any) holds, attached to its lease (0: none), in one
    /// transaction. Returns the revision of the write (the key's new `mod_revision`). A failed fence
    /// is a [`StoreError::Conflict`] naming the fence's key; a failed condition one naming the key.
    /// Callers use [`Store::put`] and [`Store::put_fenced`].
    fn put_request<'a>(&'a self, request: PutRequest<'a>) -> StoreFuture<'a, i64>;

    /// The one write entry point of deletes, fenced or not (conflicts as in [`Store::put_request`]).
    /// Returns the revision of the delete, or `None` when the key did not exist (the revision does
    /// not move then). Callers use [`Store::delete`] and [`Store::delete_fenced`].
    fn delete_request<'a>(&'a self, request: DeleteRequest<'a>) -> StoreFuture<'a, Option<i64>>;

    /// Writes `value` under `key` if `condition` holds; attaches the key to `lease` (0: none).
    /// Returns the revision of the write (the key's new `mod_revision`).
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        condition: PutCondition,
        lease: LeaseId,
    ) -> StoreFuture<'a, i64> {
        self.put_request(PutRequest { key, value, condition, lease, fence: None })
    }

    /// Deletes `key` if `condition` holds. Returns the revision of the delete, or `None` when the key did
    /// not exist (only possible with [`DeleteCondition::Always`]; the revision does not move then).
    fn delete<'a>(&'a self, key: &'a str, condition: DeleteCondition) -> StoreFuture<'a, Option<i64>> {
        self.delete_request(DeleteRequest { key, condition, fence: None })
    }

    /// [`Store::put`] without a lease, applied only if `fence` holds as well, in one transaction.
    fn put_fenced<'a>(
        &'a self,
        fence: Fence<'a>,
        key: &'a str,
        value: Vec<u8>,
        condition: PutCondition,
    ) -> StoreFuture<'a, i64> {
        self.put_request(PutRequest { key, value, condition, lease: 0, fence: Some(fence) })
    }

    /// [`Store::delete`], applied only if `fence` holds as well, in one transaction. Returns `None`
    /// when the key did not exist.
    fn delete_fenced<'a>(
        &'a self,
        fence: Fence<'a>,
        key: &'a str,
        condition: DeleteCondition,
    ) -> StoreFuture<'a, Option<i64>> {
        self.delete_request(DeleteRequest { key, condition, fence: Some(fence) })
    }

    /// Watches every key under `prefix` from `start_revision` (inclusive) on. See the module docs.
    fn watch<'a>(&'a self, prefix: &'a str, start_revision: i64) -> StoreFuture<'a, WatchStream>;

    /// Told by a watcher (`runtime::watcher`) that its watch of `prefix` ended and is listed again:
    /// a store that measures itself ([`MeteredStore`]) counts it. Nothing by default.
    fn watch_restarted(&self, prefix: &str) {
        let _ = prefix;
    }

    /// Grants a lease of `ttl_seconds` (the server may round it up to its minimum).
    fn lease_grant(&self, ttl_seconds: i64) -> StoreFuture<'_, LeaseId>;

    /// Renews a lease once; returns its TTL in seconds. [`StoreError::NotFound`] when it expired.
    fn lease_keep_alive(&self, lease: LeaseId) -> StoreFuture<'_, i64>;

    /// Revokes a lease, deleting its keys in one revision. Revoking an unknown lease is `NotFound`.
    fn lease_revoke(&self, lease: LeaseId) -> StoreFuture<'_, ()>;

    /// Discards history before `revision`: watches starting below it report [`StoreError::Compacted`].
    fn compact(&self, revision: i64) -> StoreFuture<'_, ()>;
}

#[cfg(test)]
mod embedded_tests;

/// The next item of a watch, for callers that do not use `futures::StreamExt`.
pub async fn next_event(stream: &mut WatchStream) -> Option<Result<WatchEvent, StoreError>> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}
