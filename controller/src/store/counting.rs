//! A store that counts the range reads (gets and lists) passing through it: how tests and benchmarks
//! prove that store traffic is proportional to change (an idle fleet reads nothing but its watches).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    BoxFuture, DeleteCondition, Fence, KeyValue, LeaseId, ListResult, PutCondition, SharedStore, Store,
    StoreError, WatchStream,
};

/// Wraps any store; every call is passed through, and [`Store::get`] and [`Store::list`] counted.
pub struct CountingStore {
    inner: SharedStore,
    gets: AtomicU64,
    lists: AtomicU64,
}

impl CountingStore {
    pub fn new(inner: SharedStore) -> CountingStore {
        CountingStore { inner, gets: AtomicU64::new(0), lists: AtomicU64::new(0) }
    }

    /// Range requests so far: gets plus lists (a list of many pages counts once).
    pub fn range_requests(&self) -> u64 {
        self.gets() + self.lists()
    }

    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::SeqCst)
    }
}

impl Store for CountingStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        tracing::trace!(key, "store range read: get");
        self.inner.get(key)
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<ListResult, StoreError>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        tracing::trace!(prefix, "store range read: list");
        self.inner.list(prefix)
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        condition: PutCondition,
        lease: LeaseId,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        self.inner.put(key, value, condition, lease)
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        condition: DeleteCondition,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        self.inner.delete(key, condition)
    }

    fn put_fenced<'a>(
        &'a self,
        fence: Fence<'a>,
        key: &'a str,
        value: Vec<u8>,
        condition: PutCondition,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        self.inner.put_fenced(fence, key, value, condition)
    }

    fn delete_fenced<'a>(
        &'a self,
        fence: Fence<'a>,
        key: &'a str,
        condition: DeleteCondition,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        self.inner.delete_fenced(fence, key, condition)
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start_revision: i64,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        self.inner.watch(prefix, start_revision)
    }

    fn lease_grant(&self, ttl_seconds: i64) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        self.inner.lease_grant(ttl_seconds)
    }

    fn lease_keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<i64, StoreError>> {
        self.inner.lease_keep_alive(lease)
    }

    fn lease_revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.lease_revoke(lease)
    }

    fn compact(&self, revision: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.compact(revision)
    }
}
