//! A store that counts the range reads (gets and lists) passing through it: how tests and benchmarks
//! prove that store traffic is proportional to change (an idle fleet reads nothing but its watches).

use std::sync::atomic::{AtomicU64, Ordering};

use super::layer::{Request, StoreLayer};
use super::{SharedStore, Store, StoreError};

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

impl StoreLayer for CountingStore {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }

    fn admit(&self, request: Request<'_>) -> Result<(), StoreError> {
        match request {
            Request::Get(key) => {
                self.gets.fetch_add(1, Ordering::SeqCst);
                tracing::trace!(key, "store range read: get");
            }
            Request::List(prefix) => {
                self.lists.fetch_add(1, Ordering::SeqCst);
                tracing::trace!(prefix, "store range read: list");
            }
            _ => {}
        }
        Ok(())
    }
}
