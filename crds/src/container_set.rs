//! The `ContainerSet` resource: N replicas of one container template, spread across hosts and updated
//! as a rolling update with health gates and automatic rollback.
//!
//! A set is not run by agents directly: the scheduler's leader materializes it as ordinary `Container`
//! specs named `<set>-<ordinal>` (its "children"), so everything that works for a Container (placement,
//! status, events, `kedge get containers`) works for each replica. Defaults are in the `*_or_default`
//! helpers, not baked into the data, as for `Container`.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::container::{ContainerSpec, API_VERSION};
use crate::meta::{Condition, ObjectMeta, DEFAULT_NAMESPACE};
use crate::quantity::HumanDuration;

/// The `kind` of a [`ContainerSet`].
pub const KIND_CONTAINER_SET: &str = "ContainerSet";
/// The label on every child naming its set (in the set's namespace).
pub const SET_LABEL: &str = "kedge.io/set";
/// The label on every child naming the template revision it was written from.
pub const SET_REVISION_LABEL: &str = "kedge.io/set-revision";
/// The annotation on every child carrying the set's `maxPerHost`, for the scheduler's spread rule.
pub const MAX_PER_HOST_ANNOTATION: &str = "kedge.io/max-per-host";
/// A set may not ask for more replicas than this (ordinals are at most four digits, so a child's
/// name stays a DNS label).
pub const MAX_REPLICAS: u32 = 1000;
/// The longest set name: `<name>-<ordinal>` must still be a DNS label (63 characters).
pub const MAX_SET_NAME_LEN: usize = 58;
/// How long a batch may take to become Ready and Synced when the set names no `healthTimeout`.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

/// N copies of one container spec across hosts: what the user applies, plus the status the scheduler's
/// leader reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(
    title = "ContainerSet",
    description = "A kedge ContainerSet: N replicas of one container spec, spread across hosts, updated as a rolling update."
)]
pub struct ContainerSet {
    /// Always `kedge.io/v1`.
    #[schemars(extend("const" = "kedge.io/v1"))]
    pub api_version: String,
    /// Always `ContainerSet`.
    #[schemars(extend("const" = "ContainerSet"))]
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ContainerSetSpec,
    /// Written by the scheduler's leader, never by the user; ignored by `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ContainerSetStatus>,
}

/// What the user wants: how many, of what, where, and how to roll a change out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSetSpec {
    /// How many children run (0 to 1000).
    pub replicas: u32,
    /// What every child is.
    pub template: ContainerTemplate,
    /// Which hosts may run the children, and how many of them one host may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<SetPlacement>,
    /// How a template change is rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// A child's template: labels for the child specs, and a full Container spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerTemplate {
    #[serde(default, skip_serializing_if = "TemplateMeta::is_empty")]
    pub metadata: TemplateMeta,
    /// Everything a Container's spec has, except `placement` (the set's `placement` decides).
    pub spec: ContainerSpec,
}

/// Labels put on every child spec (beside `kedge.io/set` and `kedge.io/set-revision`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateMeta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl TemplateMeta {
    fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Where a set's children run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetPlacement {
    /// Every label must be present on the host with this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_selector: BTreeMap<String, String>,
    /// At most this many children on one host; children beyond what the hosts allow wait unbound.
    /// Without it, children spread one per host while hosts suffice, then as evenly as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_host: Option<u32>,
}

/// How a changed template reaches the children.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdate {
    /// How many children are updated at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// How long a batch may take to be Ready and Synced before it counts as failed (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout: Option<HumanDuration>,
    /// What a failed batch does: `rollback` (default) or `pause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<FailureAction>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    /// Put the previous template back on every child this rollout updated (default).
    #[default]
    Rollback,
    /// Leave the children as they are and stop until the template changes again.
    Pause,
}

/// What the scheduler's leader reports about a set. It also holds the rollout's state, so that a new
/// leader continues a rollout where the old one left it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSetStatus {
    /// The set's generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Children that exist.
    #[serde(default)]
    pub replicas: u32,
    /// Children whose container is Ready at their current generation.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Children on `updateRevision` whose container matches it.
    #[serde(default)]
    pub updated_replicas: u32,
    /// The revision every child runs when no rollout is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The revision being rolled out, or `currentRevision` when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// The template of `currentRevision`: what a rollback puts back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_template: Option<ContainerTemplate>,
    /// A revision whose rollout failed; not tried again until the template changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
    /// Why the last rollout failed (the child and its reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// The rollout under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutState>,
    /// `Available` and `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The revisions that were current before `currentRevision`, the latest first (at most 10):
    /// what `kedge rollout history` lists and `kedge rollout undo` goes back to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RevisionRecord>,
}

/// How many earlier revisions a set's status keeps.
pub const HISTORY_LIMIT: usize = 10;

/// A revision that was current once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionRecord {
    pub revision: String,
    pub template: ContainerTemplate,
    /// When another revision replaced it (RFC 3339).
    pub replaced_at: String,
}

/// A rollout in progress: which children have been moved to the new revision, and the batch that is
/// being gated now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// The revision being rolled out.
    pub revision: String,
    /// Ordinals written with the new template so far (the current batch included).
    #[serde(default)]
    pub updated: Vec<u32>,
    /// The batch waiting on its health gate.
    #[serde(default)]
    pub batch: Vec<u32>,
    /// When the batch was written (RFC 3339): its health timeout counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_started: Option<String>,
    /// Set when a failed batch paused the rollout (`failureAction: pause`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
}

/// Condition types and reasons a set reports.
pub mod set_condition {
    /// At least `replicas` children are Ready (`False` while fewer are).
    pub const AVAILABLE: &str = "Available";
    /// A rollout is under way (`True`, reason `RollingUpdate`), or how the last one ended (`False`:
    /// `RolloutComplete`, `RolledBack`, `RolloutPaused`).
    pub const PROGRESSING: &str = "Progressing";
    pub const REASON_ROLLING_UPDATE: &str = "RollingUpdate";
    pub const REASON_ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const REASON_ROLLED_BACK: &str = "RolledBack";
    pub const REASON_ROLLOUT_PAUSED: &str = "RolloutPaused";
}

impl ContainerSet {
    /// A set of this crate's apiVersion and kind with the given name in the default namespace.
    pub fn new(name: impl Into<String>, spec: ContainerSetSpec) -> Self {
        ContainerSet {
            api_version: API_VERSION.to_owned(),
            kind: KIND_CONTAINER_SET.to_owned(),
            metadata: ObjectMeta {
                name: name.into(),
                namespace: DEFAULT_NAMESPACE.to_owned(),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }

    /// The name of the child with this ordinal.
    pub fn child_name(&self, ordinal: u32) -> String {
        child_name(&self.metadata.name, ordinal)
    }
}

/// `<set>-<ordinal>`.
pub fn child_name(set: &str, ordinal: u32) -> String {
    format!("{set}-{ordinal}")
}

/// The ordinal of a child named `name` of set `set`, if it is one.
pub fn child_ordinal(set: &str, name: &str) -> Option<u32> {
    let digits = name.strip_prefix(set)?.strip_prefix('-')?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

impl ContainerSetSpec {
    pub fn batch_size_or_default(&self) -> u32 {
        self.rolling_update.as_ref().and_then(|r| r.batch_size).unwrap_or(1).max(1)
    }

    pub fn health_timeout_or_default(&self) -> Duration {
        self.rolling_update.as_ref().and_then(|r| r.health_timeout).map_or(DEFAULT_HEALTH_TIMEOUT, |d| d.0)
    }

    pub fn failure_action_or_default(&self) -> FailureAction {
        self.rolling_update.as_ref().and_then(|r| r.failure_action).unwrap_or_default()
    }
}

/// The template's revision: the first 10 hex digits of the SHA-256 of its canonical JSON (the child
/// spec hash of [`crate::spec_hash`] plus the labels). Two templates that parse to the same value have
/// the same revision however their files were written; `runState` is left out as in the spec hash.
pub fn template_revision(template: &ContainerTemplate) -> String {
    let mut digest = Sha256::new();
    digest.update(crate::spec_hash(&template.spec).as_bytes());
    for (key, value) in &template.metadata.labels {
        digest.update(b"\0");
        digest.update(key.as_bytes());
        digest.update(b"=");
        digest.update(value.as_bytes());
    }
    hex::encode(digest.finalize())[..10].to_owned()
}

impl ContainerSetStatus {
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        crate::meta::find_condition(&self.conditions, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(image: &str) -> ContainerTemplate {
        ContainerTemplate {
            metadata: TemplateMeta::default(),
            spec: ContainerSpec { image: image.parse().unwrap(), ..ContainerSpec::default() },
        }
    }

    #[test]
    fn revision_is_stable_short_and_sensitive_to_spec_and_labels() {
        let a = template("kedge-test/app:v1");
        assert_eq!(template_revision(&a), template_revision(&a.clone()));
        assert_eq!(template_revision(&a).len(), 10);
        assert_ne!(template_revision(&a), template_revision(&template("kedge-test/app:v2")));
        let mut labelled = a.clone();
        labelled.metadata.labels.insert("tier".into(), "web".into());
        assert_ne!(template_revision(&a), template_revision(&labelled));
        let mut stopped = a.clone();
        stopped.spec.run_state = Some(crate::RunState::Stopped);
        assert_eq!(template_revision(&a), template_revision(&stopped), "runState is not a new revision");
    }

    #[test]
    fn child_ordinals_parse_only_canonical_numbers() {
        assert_eq!(child_ordinal("web", "web-0"), Some(0));
        assert_eq!(child_ordinal("web", "web-12"), Some(12));
        for name in ["web", "web-", "web-01", "web-a", "webx-1", "web-1-2"] {
            assert_eq!(child_ordinal("web", name), None, "{name}");
        }
        assert_eq!(child_name("web", 3), "web-3");
    }
}
