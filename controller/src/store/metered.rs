//! A store that times every request and counts its failures and its watches' restarts into the
//! agent's [`Metrics`] (docs/metrics.md): one wrapper, so etcd and the embedded store report alike.

use std::sync::Arc;
use std::time::Instant;

use super::{
    keys, DeleteRequest, KeyValue, LeaseId, ListResult, PutRequest, SharedStore, Store, StoreError,
    StoreFuture, WatchStream,
};
use crate::metrics::Metrics;

/// Wraps `inner`; every request is passed through unchanged and measured on the way back.
pub struct MeteredStore {
    inner: SharedStore,
    /// The implementation's name, the `store` label: `etcd` or `embedded`.
    kind: &'static str,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: SharedStore, kind: &'static str, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, kind, metrics }
    }

    fn timed<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        request: StoreFuture<'a, T>,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move {
            let started = Instant::now();
            let answer = request.await;
            let error = answer.as_ref().err().map(error_kind);
            self.metrics.store_request(self.kind, operation, started.elapsed(), error);
            answer
        })
    }
}

/// The `error` label of a failed request: the variant, in a word.
pub fn error_kind(error: &StoreError) -> &'static str {
    match error {
        StoreError::Unavailable(_) => "unavailable",
        StoreError::Timeout(_) => "timeout",
        StoreError::Conflict { .. } => "conflict",
        StoreError::Compacted { .. } => "compacted",
        StoreError::NotFound(_) => "not_found",
        StoreError::Io { .. } => "io",
        StoreError::Corrupt(_) => "corrupt",
        StoreError::Locked { .. } => "locked",
        StoreError::Auth(_) => "auth",
        StoreError::Invalid(_) => "invalid",
    }
}

/// What a watch of `prefix` follows, in a word for the `watch` label: the key space's first segment
/// (`specs`, `placements`, `bindings`, `scheduler`, ...), so that hosts and names add no series.
pub fn watched(prefix: &str) -> &str {
    let rest = prefix.strip_prefix(keys::ROOT).unwrap_or(prefix).trim_start_matches('/');
    let word = rest.split('/').next().unwrap_or_default();
    if word.is_empty() {
        "root"
    } else {
        word
    }
}

impl Store for MeteredStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        self.timed("get", self.inner.get(key))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ListResult> {
        self.timed("list", self.inner.list(prefix))
    }

    fn put_request<'a>(&'a self, request: PutRequest<'a>) -> StoreFuture<'a, i64> {
        self.timed("put", self.inner.put_request(request))
    }

    fn delete_request<'a>(&'a self, request: DeleteRequest<'a>) -> StoreFuture<'a, Option<i64>> {
        self.timed("delete", self.inner.delete_request(request))
    }

    fn watch<'a>(&'a self, prefix: &'a str, start_revision: i64) -> StoreFuture<'a, WatchStream> {
        self.timed("watch", self.inner.watch(prefix, start_revision))
    }

    fn watch_restarted(&self, prefix: &str) {
        self.metrics.watch_restarted(watched(prefix));
        self.inner.watch_restarted(prefix);
    }

    fn lease_grant(&self, ttl_seconds: i64) -> StoreFuture<'_, LeaseId> {
        self.timed("lease_grant", self.inner.lease_grant(ttl_seconds))
    }

    fn lease_keep_alive(&self, lease: LeaseId) -> StoreFuture<'_, i64> {
        self.timed("lease_keep_alive", self.inner.lease_keep_alive(lease))
    }

    fn lease_revoke(&self, lease: LeaseId) -> StoreFuture<'_, ()> {
        self.timed("lease_revoke", self.inner.lease_revoke(lease))
    }

    fn compact(&self, revision: i64) -> StoreFuture<'_, ()> {
        self.timed("compact", self.inner.compact(revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeleteCondition, EmbeddedOptions, EmbeddedStore, PutCondition};

    fn value_of(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test]
    async fn requests_are_timed_and_failures_counted_by_operation() {
        let dir = tempfile::tempdir().unwrap();
        let embedded =
            EmbeddedStore::open(&dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = MeteredStore::new(Arc::new(embedded), "embedded", metrics.clone());
        let key = "/kedge/v1/specs/default/web";
        let written = store.put(key, b"1".to_vec(), PutCondition::Absent, 0).await.unwrap();
        store.get(key).await.unwrap();
        store.get(key).await.unwrap();
        store.list(keys::SPECS).await.unwrap();
        let conflict = store.put(key, b"2".to_vec(), PutCondition::ModRevision(written + 5), 0).await;
        assert!(matches!(conflict, Err(StoreError::Conflict { .. })), "{conflict:?}");
        store.delete(key, DeleteCondition::Always).await.unwrap();
        store.watch_restarted(keys::SPECS);
        store.watch_restarted("/kedge/v1/placements/host-1/");

        let text = metrics.render();
        let count = |operation: &str| {
            value_of(
                &text,
                &format!(
                    "kedge_store_request_duration_seconds_count{{store=\"embedded\",operation=\"{operation}\"}}"
                ),
            )
        };
        assert_eq!(count("put"), Some(2.0), "{text}");
        assert_eq!(count("get"), Some(2.0), "{text}");
        assert_eq!(count("list"), Some(1.0), "{text}");
        assert_eq!(count("delete"), Some(1.0), "{text}");
        assert_eq!(
            value_of(
                &text,
                "kedge_store_errors_total{store=\"embedded\",operation=\"put\",error=\"conflict\"}"
            ),
            Some(1.0),
            "{text}"
        );
        assert!(!text.contains("operation=\"get\",error="), "no get failed: {text}");
        assert_eq!(value_of(&text, "kedge_watch_restarts_total{watch=\"specs\"}"), Some(1.0), "{text}");
        assert_eq!(value_of(&text, "kedge_watch_restarts_total{watch=\"placements\"}"), Some(1.0), "{text}");
    }

    #[test]
    fn a_watch_is_named_by_its_key_space() {
        assert_eq!(watched("/kedge/v1/specs/"), "specs");
        assert_eq!(watched("/kedge/v1/placements/h1/"), "placements");
        assert_eq!(watched("/kedge/v1/scheduler/leader"), "scheduler");
        assert_eq!(watched("/kedge/v1/"), "root");
        assert_eq!(watched("/elsewhere/x/"), "elsewhere");
    }
}
