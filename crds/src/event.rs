//! An event: what an agent did and why, as the store keeps it (`/kedge/v1/events/<ns>/<id>`, on a
//! lease) and the API and the CLI show it. One definition for the recorder (the controller's
//! `events` module) and every reader.
//!
//! Not a [`crate::Resource`]: an event is a flat, expiring record without `metadata` (the object it
//! is about, a count, first and last seen), written only by agents and never applied by a user;
//! giving it an envelope would change the JSON stored events and older readers use. The tests below
//! decode an event as earlier versions wrote it.

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

    /// An event exactly as earlier agents wrote it: it still reads, and writes back byte for byte.
    #[test]
    fn an_event_written_by_an_earlier_agent_reads_and_writes_back_byte_for_byte() {
        let stored = r#"{"involvedObject":"Container/default/web","namespace":"default","type":"Warning","reason":"BackOff","message":"image missing","host":"h1","count":5,"firstTimestamp":"2027-01-15T08:00:00Z","lastTimestamp":"2027-01-15T08:00:04Z"}"#;
        let event: Event = serde_json::from_str(stored).unwrap();
        assert_eq!((event.kind, event.count), (EventType::Warning, 5));
        assert_eq!(serde_json::to_string(&event).unwrap(), stored);
    }
}
