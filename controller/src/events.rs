//! Events: what the agent did and why, stored under `/kedge/v1/events/<ns>/<id>` on a lease, so
//! they expire on their own. The same event repeated is one record with a count, first and last seen
//! (Kubernetes' event series), not a flood of keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{keys, LeaseId, PutCondition, SharedStore, StoreError};

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The object it is about: `Container/<namespace>/<name>`.
    pub involved_object: String,
    pub namespace: String,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// One CamelCase word: `Created`, `Recreated`, `UpdatedInPlace`, `BackOff`.
    pub reason: String,
    pub message: String,
    /// The host whose agent recorded it.
    pub host: String,
    pub count: u32,
    pub first_timestamp: String,
    pub last_timestamp: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// The namespace of events about hosts (`Host/<host>`), which belong to no namespace of specs.
pub const HOST_EVENTS_NAMESPACE: &str = "kedge-system";

/// How long an event stays: events are written on a lease of this TTL, renewed every
/// [`LEASE_ROTATION`], so an event lives between `EVENT_TTL - LEASE_ROTATION` and `EVENT_TTL`.
pub const EVENT_TTL: Duration = Duration::from_secs(3600);
const LEASE_ROTATION: Duration = Duration::from_secs(600);

/// Records events for one agent. Failures to record are logged, never fatal: an event is a report,
/// and a store outage must not stop repairs.
pub struct EventRecorder {
    store: SharedStore,
    host: String,
    state: Mutex<RecorderState>,
}

#[derive(Default)]
struct RecorderState {
    lease: Option<(LeaseId, Instant)>,
    /// Recent events by id, to count repeats without reading the store.
    recent: HashMap<String, Event>,
}

impl EventRecorder {
    pub fn new(store: SharedStore, host: impl Into<String>) -> EventRecorder {
        EventRecorder { store, host: host.into(), state: Mutex::default() }
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
        if let Err(error) = self.try_record(object_kind, key, kind, reason, message, Utc::now()).await {
            tracing::debug!(%error, key, reason, "could not record an event");
        }
    }

    /// Records an event about a host (`Host/<host>`, in namespace [`HOST_EVENTS_NAMESPACE`]): the
    /// agent upgrade campaign's steps.
    pub async fn record_host(&self, host: &str, kind: EventType, reason: &str, message: &str) {
        self.record_about("Host", &format!("{HOST_EVENTS_NAMESPACE}/{host}"), kind, reason, message).await
    }

    async fn try_record(
        &self,
        object_kind: &str,
        key: &str,
        kind: EventType,
        reason: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
        let id = event_id(key, reason, message, &self.host);
        let timestamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
        let event = {
            let mut state = self.lock();
            let event = match state.recent.get(&id) {
                Some(previous) => {
                    Event { count: previous.count + 1, last_timestamp: timestamp.clone(), ..previous.clone() }
                }
                None => Event {
                    involved_object: if object_kind == "Host" {
                        format!("Host/{name}")
                    } else {
                        format!("{object_kind}/{namespace}/{name}")
                    },
                    namespace: namespace.to_owned(),
                    kind,
                    reason: reason.to_owned(),
                    message: message.to_owned(),
                    host: self.host.clone(),
                    count: 1,
                    first_timestamp: timestamp.clone(),
                    last_timestamp: timestamp,
                },
            };
            state.recent.insert(id.clone(), event.clone());
            if state.recent.len() > 4096 {
                // Bounded memory: forgetting a series only restarts its count.
                state.recent.clear();
            }
            event
        };
        let lease = self.lease().await?;
        let key = keys::event_key(namespace, &id).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let value = serde_json::to_vec(&event).map_err(|e| StoreError::Invalid(e.to_string()))?;
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
        self.lock().lease = Some((lease, Instant::now()));
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
    use std::sync::Arc;

    #[tokio::test]
    async fn repeats_are_counted_in_one_record() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(
            EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap(),
        );
        let recorder = EventRecorder::new(store.clone(), "h1");
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        for offset in 0..3 {
            recorder
                .try_record(
                    "Container",
                    "default/web",
                    EventType::Warning,
                    "BackOff",
                    "image missing",
                    t0 + chrono::Duration::seconds(offset),
                )
                .await
                .unwrap();
        }
        recorder
            .try_record("Container", "default/web", EventType::Normal, "Created", "created abc", t0)
            .await
            .unwrap();
        let events = list_events(store.as_ref(), Some("default")).await.unwrap();
        assert_eq!(events.len(), 2);
        let backoff = events.iter().find(|event| event.reason == "BackOff").unwrap();
        assert_eq!(backoff.count, 3);
        assert_eq!(backoff.first_timestamp, "2027-01-15T08:00:00Z");
        assert_eq!(backoff.last_timestamp, "2027-01-15T08:00:02Z");
        assert_eq!(backoff.involved_object, "Container/default/web");
        let kv = store.list("/kedge/v1/events/default/").await.unwrap().kvs;
        assert!(kv.iter().all(|kv| kv.lease != 0), "every event is on a lease, so it expires");
    }
}
