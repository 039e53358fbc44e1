//! The host record: what each agent stores about its host (`/kedge/v1/hosts/<name>`, cluster-wide:
//! a host belongs to no namespace), and what the scheduler's leader, the upgrade campaign, the API and
//! the CLI read. One definition for the writer and every reader.
//!
//! Not a [`crate::Resource`]: a host is a flat record without `metadata` (no namespace, labels at the
//! top level, no generation), written by its own agent with a heartbeat; giving it an envelope would
//! change the JSON older agents write and read. Its serialized form is a compatibility contract:
//! the tests below decode a record as earlier versions wrote it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A host as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRecord {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// kedge's version on this host.
    pub version: String,
    pub docker_version: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    /// RFC 3339.
    pub started_at: String,
    pub last_heartbeat: String,
    /// The container this agent runs in; `None`: it runs on the host itself (a campaign skips it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<AgentContainer>,
}

/// The container an agent runs in, as its engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentContainer {
    pub id: String,
    pub name: String,
    /// The image reference it was created from (`kedge:0.2.0`).
    pub image: String,
    /// The image ID it runs (`sha256:...`).
    pub image_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record exactly as earlier agents wrote it (`serde_json::to_vec`, field order included):
    /// it still reads, and writing it back gives the same bytes.
    #[test]
    fn a_record_written_by_an_earlier_agent_reads_and_writes_back_byte_for_byte() {
        let stored = r#"{"name":"h1","labels":{"zone":"a"},"version":"0.2.0","dockerVersion":"27.3.1","cpus":4,"memoryBytes":8589934592,"startedAt":"2026-11-01T10:00:00Z","lastHeartbeat":"2026-11-01T10:05:00Z","container":{"id":"abc","name":"kedge-agent","image":"kedge:0.2.0","imageId":"sha256:0123"}}"#;
        let record: HostRecord = serde_json::from_str(stored).unwrap();
        assert_eq!(record.container.as_ref().map(|c| c.image.as_str()), Some("kedge:0.2.0"));
        assert_eq!(serde_json::to_string(&record).unwrap(), stored);
        // An agent on the host itself: no `container`, and no labels written by older agents.
        let bare = r#"{"name":"h2","version":"0.1.0","dockerVersion":"26.1.0","cpus":2,"memoryBytes":1024,"startedAt":"t0","lastHeartbeat":"t1"}"#;
        let record: HostRecord = serde_json::from_str(bare).unwrap();
        assert!(record.labels.is_empty() && record.container.is_none());
    }
}
