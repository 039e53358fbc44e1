//! Events: what the agent did and why, stored under `/kedge/v1/events/<ns>/<id>` on a lease, so
//! they expire on their own. The same event repeated is one record with a count, first and last seen
//! (Kubernetes' event series), not a flood of keys, and its repeats are batched: a series is written
//! at most once per [`FLUSH_INTERVAL`], so store writes follow change, not the rate of a crash loop.
//! The record's type is `kedge_crds::event`'s (one definition shared with the CLI).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use crate::store::{keys, LeaseId, PutCondition, SharedStore, StoreError};

pub use kedge_crds::event::{Event, EventType, HOST_EVENTS_NAMESPACE};

/// How long an event stays: events are written on a lease of this TTL, renewed every
/// [`LEASE_ROTATION`], so an event lives between `EVENT_TTL - LEASE_ROTATION` and `EVENT_TTL`.
pub const EVENT_TTL: Duration = Duration::from_secs(3600);
const LEASE_ROTATION: Duration = Duration::from_secs(600);

/// An event series is written at most once per this interval: its first occurrence at once, the
/// repeats that follow within the interval together, by a flush when it ends. A crash-looping
/// container costs one store write per series per interval, not one per crash.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// At most this many series are remembered (beyond it, the written ones are forgotten: a forgotten
/// series only restarts its count).
const MAX_SERIES: usize = 4096;

/// Records events for one agent, and hands each occurrence to the notifier ([`crate::notify`]),
/// which decides what is sent. Failures to record are logged, never fatal: an event is a report,
/// and a store outage must not stop repairs.
///
/// Guarantees: a new event (a series' first occurrence, or one whose last write is older than the
/// flush interval) is in the store when `record` returns; a repeat within the interval is in the
/// store at most one interval later, or when [`EventRecorder::flush`] is called (the agent calls it
/// when it stops). A different reason or message is a different series.
pub struct EventRecorder {
    inner: Arc<Inner>,
}

struct Inner {
    store: SharedStore,
    host: String,
    flush_interval: Duration,
    state: Mutex<RecorderState>,
}

#[derive(Default)]
struct RecorderState {
    lease: Option<(LeaseId, std::time::Instant)>,
    /// Recent series by id, to count repeats without reading the store.
    recent: HashMap<String, Series>,
    /// A flush task is sleeping until the pending repeats are due.
    flush_scheduled: bool,
}

/// One event series as the recorder knows it.
struct Series {
    event: Event,
    /// When the series was last handed to the store.
    last_written: Instant,
    /// Repeats counted since then, not yet in the store.
    pending: bool,
}

/// What to do with one occurrence of an event (see [`on_occurrence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Write the series now.
    Now,
    /// Count it; the next flush writes it.
    Coalesce,
}

/// The batching rule: a series unknown, or not written for an interval, is written at once; a
/// repeat within the interval waits for the flush.
fn on_occurrence(last_written: Option<Instant>, now: Instant, interval: Duration) -> Write {
    match last_written {
        Some(at) if now.saturating_duration_since(at) < interval => Write::Coalesce,
        _ => Write::Now,
    }
}

impl EventRecorder {
    pub fn new(store: SharedStore, host: impl Into<String>) -> EventRecorder {
        EventRecorder::with_flush_interval(store, host, FLUSH_INTERVAL)
    }

    /// A recorder that writes each series at most once per `flush_interval`.
    pub fn with_flush_interval(
        store: SharedStore,
        host: impl Into<String>,
        flush_interval: Duration,
    ) -> EventRecorder {
        let inner = Inner { store, host: host.into(), flush_interval, state: Mutex::default() };
        EventRecorder { inner: Arc::new(inner) }
    }

    /// Records an event about the container spec `key` (`namespace/name`).
    pub async fn record(&self, key: &str, kind: EventType, reason: &str, message: &str) {
        self.record_about("Container", key, kind, reason, message).await
    }

    /// Records an event about the object of kind `object_kind` (`ContainerSet`) at `key`.
    pub async fn record_about(
        &self,
        object_kind: &str,
        key: &str,
        kind: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(error) = self.try_record((object_kind, key), kind, reason, message, Utc::now()).await {
            tracing::debug!(%error, key, reason, "could not record an event");
        }
    }

    /// Records an event about a host (`Host/<host>`, in namespace [`HOST_EVENTS_NAMESPACE`]): the
    /// agent upgrade campaign's steps.
    pub async fn record_host(&self, host: &str, kind: EventType, reason: &str, message: &str) {
        self.record_about("Host", &format!("{HOST_EVENTS_NAMESPACE}/{host}"), kind, reason, message).await
    }

    /// Writes every repeat counted but not yet in the store, now. For shutdown: what is pending
    /// when the process exits would be lost.
    pub async fn flush(&self) {
        self.inner.flush().await
    }

    /// Writes the event about `(object_kind, key)` at `now`, or counts a repeat of it.
    async fn try_record(
        &self,
        (object_kind, key): (&str, &str),
        kind: EventType,
        reason: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
        let id = event_id(key, reason, message, &self.inner.host);
        let timestamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        // Every occurrence, repeats included: the notifier does its own batching (notify.rs).
        crate::notify::submit(crate::notify::Notification {
            kind,
            reason: reason.to_owned(),
            object: match object_kind {
                "Container" => key.to_owned(),
                "Host" => format!("Host/{name}"),
                _ => format!("{object_kind}/{key}"),
            },
            host: self.inner.host.clone(),
            message: message.to_owned(),
            time: timestamp.clone(),
            count: 1,
        });
        let interval = self.inner.flush_interval;
        let event = {
            let mut state = self.inner.lock();
            let clock = Instant::now();
            let series = state.recent.get_mut(&id);
            let write = on_occurrence(series.as_ref().map(|series| series.last_written), clock, interval);
            match (series, write) {
                (Some(series), Write::Coalesce) => {
                    series.event.count = series.event.count.saturating_add(1);
                    series.event.last_timestamp = timestamp;
                    series.pending = true;
                    if !state.flush_scheduled {
                        state.flush_scheduled = true;
                        let inner = self.inner.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(interval).await;
                            inner.flush().await;
                        });
                    }
                    return Ok(());
                }
                (Some(series), Write::Now) => {
                    series.event.count = series.event.count.saturating_add(1);
                    series.event.last_timestamp = timestamp;
                    series.pending = false;
                    series.last_written = clock;
                    series.event.clone()
                }
                (None, _) => {
                    let event = Event {
                        involved_object: if object_kind == "Host" {
                            format!("Host/{name}")
                        } else {
                            format!("{object_kind}/{namespace}/{name}")
                        },
                        namespace: namespace.to_owned(),
                        kind,
                        reason: reason.to_owned(),
                        message: message.to_owned(),
                        host: self.inner.host.clone(),
                        count: 1,
                        first_timestamp: timestamp.clone(),
                        last_timestamp: timestamp,
                    };
                    if state.recent.len() >= MAX_SERIES {
                        // Bounded memory: keep only what is still to be written.
                        state.recent.retain(|_, series| series.pending);
                    }
                    let series = Series { event: event.clone(), last_written: clock, pending: false };
                    state.recent.insert(id.clone(), series);
                    event
                }
            }
        };
        self.inner.write(&id, &event).await
    }
}

impl Inner {
    async fn flush(&self) {
        let due: Vec<(String, Event)> = {
            let mut state = self.lock();
            state.flush_scheduled = false;
            let now = Instant::now();
            state
                .recent
                .iter_mut()
                .filter(|(_, series)| series.pending)
                .map(|(id, series)| {
                    series.pending = false;
                    series.last_written = now;
                    (id.clone(), series.event.clone())
                })
                .collect()
        };
        for (id, event) in due {
            if let Err(error) = self.write(&id, &event).await {
                tracing::debug!(%error, reason = %event.reason, "could not flush an event");
            }
        }
    }

    async fn write(&self, id: &str, event: &Event) -> Result<(), StoreError> {
        let lease = self.lease().await?;
        let key = keys::event_key(&event.namespace, id).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let value = serde_json::to_vec(event).map_err(|e| StoreError::Invalid(e.to_string()))?;
        match self.store.put(&key, value.clone(), PutCondition::Always, lease).await {
            Err(StoreError::NotFound(_)) => {
                // The lease expired under us (a long store outage): take a new one.
                self.lock().lease = None;
                let lease = self.lease().await?;
                self.store.put(&key, value, PutCondition::Always, lease).await.map(drop)
            }
            other => other.map(drop),
        }
    }

    async fn lease(&self) -> Result<LeaseId, StoreError> {
        if let Some((lease, granted)) = self.lock().lease {
            if granted.elapsed() < LEASE_ROTATION {
                return Ok(lease);
            }
        }
        let lease = self.store.lease_grant(EVENT_TTL.as_secs() as i64).await?;
        self.lock().lease = Some((lease, std::time::Instant::now()));
        Ok(lease)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn event_id(key: &str, reason: &str, message: &str, host: &str) -> String {
    let digest = Sha256::digest(format!("{key}\0{reason}\0{message}\0{host}").as_bytes());
    let name = key.split_once('/').map_or(key, |(_, name)| name);
    format!("{name}.{}", &hex::encode(digest)[..16])
}

/// Reads every event in `namespace` (or all), oldest first by last timestamp.
pub async fn list_events(
    store: &dyn crate::store::Store,
    namespace: Option<&str>,
) -> Result<Vec<Event>, StoreError> {
    let prefix = keys::events_prefix(namespace).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let list = store.list(&prefix).await?;
    let mut events = Vec::with_capacity(list.kvs.len());
    for kv in list.kvs {
        match serde_json::from_slice::<Event>(&kv.value) {
            Ok(event) => events.push(event),
            Err(error) => tracing::warn!(key = %kv.key, %error, "skipping an unreadable event"),
        }
    }
    events.sort_by(|a, b| a.last_timestamp.cmp(&b.last_timestamp));
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EmbeddedOptions, EmbeddedStore};

    async fn embedded() -> (tempfile::TempDir, SharedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(
            EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap(),
        );
        (dir, store)
    }

    /// The store's revision: one more for every write.
    async fn revision(store: &SharedStore) -> i64 {
        store.list(crate::store::keys::EVENTS).await.unwrap().revision
    }

    #[test]
    fn a_series_is_written_at_once_then_at_most_once_per_interval() {
        let interval = Duration::from_secs(10);
        let t0 = Instant::now();
        let check = |last: Option<u64>, now: u64, expected: Write| {
            let last = last.map(|s| t0 + Duration::from_secs(s));
            assert_eq!(
                on_occurrence(last, t0 + Duration::from_secs(now), interval),
                expected,
                "{last:?} {now}"
            );
        };
        check(None, 0, Write::Now);
        check(Some(0), 0, Write::Coalesce);
        check(Some(0), 9, Write::Coalesce);
        check(Some(0), 10, Write::Now);
        check(Some(5), 100, Write::Now);
        // A clock that went backwards is not a reason to write.
        check(Some(50), 10, Write::Coalesce);
    }

    #[tokio::test]
    async fn repeats_are_counted_in_one_record_and_written_by_the_flush() {
        let (_dir, store) = embedded().await;
        let recorder = EventRecorder::with_flush_interval(store.clone(), "h1", Duration::from_millis(300));
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let before = revision(&store).await;
        for offset in 0..5 {
            let at = t0 + chrono::Duration::seconds(offset);
            recorder
                .try_record(("Container", "default/web"), EventType::Warning, "BackOff", "image missing", at)
                .await
                .unwrap();
        }
        // The first occurrence is written at once (a lease and a put); the repeats wait.
        let after_first = revision(&store).await;
        assert!(after_first - before <= 2, "{before} -> {after_first}");
        let events = list_events(store.as_ref(), Some("default")).await.unwrap();
        assert_eq!(events.iter().map(|e| e.count).collect::<Vec<_>>(), vec![1]);
        // A different message is a different series: written at once.
        recorder
            .try_record(("Container", "default/web"), EventType::Normal, "Created", "created abc", t0)
            .await
            .unwrap();
        assert_eq!(list_events(store.as_ref(), Some("default")).await.unwrap().len(), 2);
        // The flush writes the repeats, once.
        let deadline = Instant::now() + Duration::from_secs(10);
        let backoff = loop {
            let events = list_events(store.as_ref(), Some("default")).await.unwrap();
            let backoff = events.into_iter().find(|event| event.reason == "BackOff").unwrap();
            if backoff.count == 5 || Instant::now() > deadline {
                break backoff;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(backoff.count, 5);
        assert_eq!(backoff.first_timestamp, "2027-01-15T08:00:00Z");
        assert_eq!(backoff.last_timestamp, "2027-01-15T08:00:04Z");
        assert_eq!(backoff.involved_object, "Container/default/web");
        assert_eq!(revision(&store).await - after_first, 2, "one put for Created, one flush of BackOff");
        let kv = store.list(&crate::store::keys::events_prefix(Some("default")).unwrap()).await.unwrap().kvs;
        assert!(kv.iter().all(|kv| kv.lease != 0), "every event is on a lease, so it expires");
    }

    #[tokio::test]
    async fn flush_writes_pending_repeats_at_once() {
        let (_dir, store) = embedded().await;
        let recorder = EventRecorder::with_flush_interval(store.clone(), "h1", Duration::from_secs(3600));
        for _ in 0..3 {
            recorder.record("default/web", EventType::Warning, "BackOff", "crashed").await;
        }
        assert_eq!(list_events(store.as_ref(), None).await.unwrap()[0].count, 1);
        recorder.flush().await;
        assert_eq!(list_events(store.as_ref(), None).await.unwrap()[0].count, 3);
        // Nothing pending: a second flush writes nothing.
        let before = revision(&store).await;
        recorder.flush().await;
        assert_eq!(revision(&store).await, before);
    }
}
