//! Stores that wrap another store and watch or break part of its traffic: counting range reads,
//! failing requests during a simulated outage. A wrapper implements [`StoreLayer`] (which store it
//! wraps, which requests it admits) and gets [`Store`] from the blanket impl below, so a new wrapper
//! states only what it changes instead of passing every method through by hand.

use super::{
    DeleteRequest, KeyValue, LeaseId, ListResult, PutRequest, Store, StoreError, StoreFuture, WatchStream,
};

/// One request, as a layer sees it before it reaches the inner store. Fenced writes are the
/// [`Request::Put`] and [`Request::Delete`] of their key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Get(&'a str),
    List(&'a str),
    Put(&'a str),
    Delete(&'a str),
    Watch { prefix: &'a str, start_revision: i64 },
    LeaseGrant,
    LeaseKeepAlive(LeaseId),
    LeaseRevoke(LeaseId),
    Compact(i64),
}

/// A store in front of [`StoreLayer::inner`]: every request is offered to [`StoreLayer::admit`] first
/// and then passed through unchanged; a refusal is the request's answer.
pub trait StoreLayer: Send + Sync + 'static {
    /// The store requests pass through to.
    fn inner(&self) -> &dyn Store;

    /// Sees each request before it is passed through; an `Err` answers it instead.
    fn admit(&self, request: Request<'_>) -> Result<(), StoreError> {
        let _ = request;
        Ok(())
    }

    /// Opens a watch once [`StoreLayer::admit`] let it through; by default the inner store's. A layer
    /// that changes the stream (to end it on a simulated outage, say) overrides this.
    fn open_watch<'a>(&'a self, prefix: &'a str, start_revision: i64) -> StoreFuture<'a, WatchStream> {
        self.inner().watch(prefix, start_revision)
    }

    /// Passes a watcher's [`Store::watch_restarted`] on to the inner store (a metered store behind
    /// this layer counts it). A layer whose inner store is never reached overrides it.
    fn pass_watch_restarted(&self, prefix: &str) {
        self.inner().watch_restarted(prefix);
    }
}

fn refused<'a, T: Send + 'a>(error: StoreError) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Err(error)))
}

impl<L: StoreLayer> Store for L {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        match self.admit(Request::Get(key)) {
            Ok(()) => self.inner().get(key),
            Err(error) => refused(error),
        }
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ListResult> {
        match self.admit(Request::List(prefix)) {
            Ok(()) => self.inner().list(prefix),
            Err(error) => refused(error),
        }
    }

    fn put_request<'a>(&'a self, request: PutRequest<'a>) -> StoreFuture<'a, i64> {
        match self.admit(Request::Put(request.key)) {
            Ok(()) => self.inner().put_request(request),
            Err(error) => refused(error),
        }
    }

    fn delete_request<'a>(&'a self, request: DeleteRequest<'a>) -> StoreFuture<'a, Option<i64>> {
        match self.admit(Request::Delete(request.key)) {
            Ok(()) => self.inner().delete_request(request),
            Err(error) => refused(error),
        }
    }

    fn watch<'a>(&'a self, prefix: &'a str, start_revision: i64) -> StoreFuture<'a, WatchStream> {
        match self.admit(Request::Watch { prefix, start_revision }) {
            Ok(()) => self.open_watch(prefix, start_revision),
            Err(error) => refused(error),
        }
    }

    fn watch_restarted(&self, prefix: &str) {
        self.pass_watch_restarted(prefix);
    }

    fn lease_grant(&self, ttl_seconds: i64) -> StoreFuture<'_, LeaseId> {
        match self.admit(Request::LeaseGrant) {
            Ok(()) => self.inner().lease_grant(ttl_seconds),
            Err(error) => refused(error),
        }
    }

    fn lease_keep_alive(&self, lease: LeaseId) -> StoreFuture<'_, i64> {
        match self.admit(Request::LeaseKeepAlive(lease)) {
            Ok(()) => self.inner().lease_keep_alive(lease),
            Err(error) => refused(error),
        }
    }

    fn lease_revoke(&self, lease: LeaseId) -> StoreFuture<'_, ()> {
        match self.admit(Request::LeaseRevoke(lease)) {
            Ok(()) => self.inner().lease_revoke(lease),
            Err(error) => refused(error),
        }
    }

    fn compact(&self, revision: i64) -> StoreFuture<'_, ()> {
        match self.admit(Request::Compact(revision)) {
            Ok(()) => self.inner().compact(revision),
            Err(error) => refused(error),
        }
    }
}
