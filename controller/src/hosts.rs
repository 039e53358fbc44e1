//! The host record: what each agent stores about its host (`/kedge/v1/hosts/<name>`), and what the
//! scheduler's leader, the upgrade campaign and the API read. Plain data, below both the agent that
//! writes it and the controllers that read it.

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
