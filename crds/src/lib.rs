//! kedge's API types: the `Container` resource, its JSON Schema, parsing and validation.
//!
//! This crate is the API boundary. It holds plain data with serde and schemars derives and the rules
//! that decide whether a document is valid. It does no IO beyond reading the files it is asked to parse
//! and knows nothing of tokio, Docker or the store.
//!
//! Layout:
//! - [`meta`]: what every kind shares: `ObjectMeta`, `Condition` and the one `lastTransitionTime` rule.
//! - [`resource`]: the [`Resource`] trait every stored kind implements (kind, plural, store segments,
//!   metadata, spec, status), so that the store's typed `Api<K>` serves any kind.
//! - [`host`], [`event`], [`campaign`]: the records that are not [`Resource`]s (a host, an event, an
//!   upgrade campaign and its host requests), shared by the controller that writes them and the CLI.
//! - [`container`]: the resource types (`Container`, `ContainerSpec`, `ContainerStatus`, ...).
//! - [`container_set`]: the `ContainerSet` resource (replicas of one template, rolling updates) and
//!   its template revision.
//! - [`reference`]: image references (`registry/repo:tag@digest`).
//! - [`quantity`]: byte sizes, CPU counts and durations as people write them.
//! - [`parse`]: YAML and JSON files and directories to `Container`s, with file, line, column and field
//!   path on every error ([`load_paths`] parses and validates).
//! - `repair` (private): every shape error of a document, not only serde's first, by repairing and
//!   reading again.
//! - `located` (private): where a parsed document came from, and errors placed in it (shared by
//!   `parse` and `validate`).
//! - [`validate`]: the rules for one container and for a set (duplicates, dependsOn references and cycles).
//! - [`isolation`]: the syntax of the fields that loosen a container's isolation (`pidMode`,
//!   `ipcMode`, `devices`, `securityOpt`, `sysctls`), in Docker's meaning.
//! - [`policy`]: the host-escape policy (levels `privileged`, `baseline`, `restricted`): which
//!   fields let a container reach into the host, checked by the API and again by the agent.
//! - [`secret`]: the `Secret` resource (values the API never shows back), its redaction and
//!   fingerprints, `secretEnv` references and their resolution, and `.env` files.
//! - [`schema`]: the JSON Schema, generated from the types.
//! - `yaml` (private): YAML text to positioned values.
//! - [`spec_hash`]: the fingerprint the controller labels containers with.
//! - `forms` (private): serde plumbing for short and long forms of the same field.

pub mod campaign;
pub mod compose;
pub mod container;
pub mod container_set;
pub mod event;
pub mod explain;
mod forms;
pub mod gitsource;
mod hash;
pub mod host;
pub mod isolation;
pub mod lenient;
mod located;
pub mod meta;
pub mod parse;
pub mod policy;
pub mod quantity;
pub mod reference;
mod repair;
pub mod resource;
pub mod schema;
pub mod secret;
pub mod token;
pub mod update_policy;
pub mod validate;
mod yaml;

pub use container::*;
pub use container_set::{
    template_revision, ContainerSet, ContainerSetSpec, ContainerSetStatus, ContainerTemplate, FailureAction,
    RollingUpdate, RolloutState, SetPlacement, TemplateMeta, KIND_CONTAINER_SET,
};
pub use gitsource::{GitSource, GitSourceSpec, GitSourceStatus, KIND_GIT_SOURCE};
pub use hash::{spec_hash, spec_hash_with_secrets};
pub use lenient::{from_json_lenient, from_value_lenient, Lenient};
pub use meta::{condition_type, Condition, ConditionStatus, ObjectMeta, DEFAULT_NAMESPACE};
pub use parse::{
    load_objects_paths, load_paths, load_str, parse_objects_paths, parse_objects_paths_with,
    parse_objects_str, parse_objects_str_with, parse_paths, parse_str, sort_errors, validate_objects,
    validate_objects_with, Objects, ParsedContainer, ParsedContainerSet, ParsedObjects, ParsedSecret,
    SpecError, SpecErrors,
};
pub use policy::{LevelSource, PolicyLevel, PolicySettings, StoredPolicy, Violation};
pub use quantity::{ByteSize, HumanDuration, MemorySwap, NanoCpus};
pub use reference::ImageReference;
pub use resource::Resource;
pub use schema::{schema, schema_json, set_schema, set_schema_json};
pub use secret::{Secret, SecretKeyRef, SecretValue, KIND_SECRET, REDACTED};
pub use update_policy::{parse_loose_version, DailyWindow, PolicyFieldError, TagSelector};
pub use validate::{validate, validate_container, validate_container_set, FieldError};
pub use yaml::Position;
