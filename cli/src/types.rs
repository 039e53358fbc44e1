//! The shapes of API answers that are not crds kinds: list envelopes, a stored spec that cannot be
//! read, a host as `GET /api/v1/hosts` shows it. Plain data; the lowest layer of the CLI.

use kedge_crds::campaign::HostUpgrade;
use kedge_crds::host::HostRecord;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CliResult;

/// A list answer of the API: its items, the store revision to watch from, and (containers only)
/// the stored specs that cannot be read.
#[derive(Debug, Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
pub(crate) struct List<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
    #[serde(default)]
    pub metadata: ListMetadata,
    #[serde(default)]
    pub invalid: Vec<InvalidEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListMetadata {
    #[serde(default)]
    pub resource_version: Option<String>,
}

/// A stored spec the API lists but cannot read (`get containers` shows it, never hides it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct InvalidEntry {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub error: String,
}

impl<T> List<T> {
    pub fn empty() -> List<T> {
        List { items: Vec::new(), metadata: ListMetadata::default(), invalid: Vec::new() }
    }
}

impl<T: DeserializeOwned> List<T> {
    pub fn from_answer(answer: Value) -> CliResult<List<T>> {
        // An answer that is not an object (no list at all) reads as an empty list, as before.
        if !answer.is_object() {
            return Ok(List::empty());
        }
        crate::error::from_server(answer)
    }

    /// The store revision the list was read at: a watch from it misses nothing.
    pub fn revision(&self) -> i64 {
        self.metadata.resource_version.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0)
    }
}

/// A host as the API lists it: the record its agent writes, whether its lease lives, and its last
/// agent upgrade.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HostView {
    #[serde(flatten)]
    pub record: HostRecord,
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub upgrade: Option<HostUpgrade>,
    /// How many containers run on it (joined from the container list, not part of the answer).
    #[serde(skip)]
    pub containers: usize,
}

/// `GET /version`.
#[derive(Debug, Default, Deserialize)]
pub struct VersionInfo {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

/// One line of `GET .../logs`: output of the container's stdout or stderr.
#[derive(Debug, Default, Deserialize)]
pub struct LogLine {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub stream: String,
}

/// The answer of `POST .../restart`: the container restarted.
#[derive(Debug, Default, Deserialize)]
pub struct RestartReport {
    #[serde(default)]
    pub id: String,
}

/// The body of `POST .../recreate`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecreateRequest {
    pub pull: bool,
    pub cleanup: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_timeout_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_grace_seconds: Option<u64>,
}

/// The answer of a successful `POST .../recreate`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecreateReport {
    #[serde(default)]
    pub old_id: Option<String>,
    #[serde(default)]
    pub new_id: Option<String>,
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    #[serde(default)]
    pub old_image_removed: Option<bool>,
}

/// An agent's refusal: its message and, for a recreate, the reason (one CamelCase word).
#[derive(Debug, Default, Deserialize)]
pub struct Refusal {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}
