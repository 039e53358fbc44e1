//! The `Resource` trait: what the store and the API need to know of a kind, in the spirit of
//! kube-core's `Resource`. A kind is an envelope (`apiVersion`, `kind`, [`ObjectMeta`], a spec and an
//! optional status); implementing this trait for it is all the store's typed `Api<K>` needs to get,
//! list, apply (with the generation rule), delete, dry-run and write status for it.
//!
//! Implemented by [`Container`], [`ContainerSet`] and [`Secret`] (the one `SENSITIVE` kind), the
//! kinds users declare. Hosts, events and
//! upgrade campaigns ([`crate::host`], [`crate::event`], [`crate::campaign`]) and the scheduler's
//! bindings are flat records without `metadata` whose JSON older agents read: they are not resources
//! in this sense (ARCHITECTURE.md, "Kinds", says why for each).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::container::{Container, ContainerSpec, ContainerStatus, API_VERSION, KIND_CONTAINER};
use crate::container_set::{ContainerSet, ContainerSetSpec, ContainerSetStatus, KIND_CONTAINER_SET};
use crate::gitsource::{GitSource, GitSourceSpec, GitSourceStatus, KIND_GIT_SOURCE};
use crate::meta::ObjectMeta;
use crate::secret::{Secret, SecretStatus, KIND_SECRET};

/// A kind of object kedge stores: its names, where it lives in the store, and its parts.
///
/// The store keeps an object's spec (with its metadata) at `<root><STORE_SEGMENT>/<ns>/<name>` and its
/// status apart, at `<root><STATUS_SEGMENT>/<ns>/<name>`, so that the writer of the status never
/// rewrites what the user applied. The generation moves only when [`Resource::spec`] serializes
/// differently.
pub trait Resource: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What the user declares. Compared in its serialized (normalized) form for the generation rule.
    type Spec: Serialize;
    /// What the kind's controller reports, stored under its own key.
    type Status: Clone + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The `kind` field: `Container`.
    const KIND: &'static str;
    /// The `apiVersion` field.
    const API_VERSION: &'static str = API_VERSION;
    /// The lowercase plural of the API's paths and the CLI's words: `containers`.
    const PLURAL: &'static str;
    /// The store's key segment of the spec (`specs` for Containers, `sets` for ContainerSets).
    const STORE_SEGMENT: &'static str;
    /// The store's key segment of the status (`status`, `set-status`).
    const STATUS_SEGMENT: &'static str;
    /// Whether the spec holds values the API must never show back (a Secret's data). The generic
    /// routes redact such a kind on every read, and the access table lets only roles that may use
    /// it write it. Every kind that carries credentials sets this; nothing else reads the flag.
    const SENSITIVE: bool = false;

    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    fn spec(&self) -> &Self::Spec;
    fn status(&self) -> Option<&Self::Status>;
    /// The status slot: `None` when the status is not merged in (the store never keeps it with the spec).
    fn status_mut(&mut self) -> &mut Option<Self::Status>;

    /// Hides the fields of a kind that is not [`Resource::SENSITIVE`] as a whole but holds one
    /// credential (a GitSource's webhook secret): every API answer goes through it.
    fn hide_credentials(&mut self) {}

    /// `namespace/name`: the object's key in the work queue and in messages.
    fn key(&self) -> String {
        format!("{}/{}", self.metadata().namespace, self.metadata().name)
    }
}

impl Resource for Container {
    type Spec = ContainerSpec;
    type Status = ContainerStatus;
    const KIND: &'static str = KIND_CONTAINER;
    const PLURAL: &'static str = "containers";
    const STORE_SEGMENT: &'static str = "specs";
    const STATUS_SEGMENT: &'static str = "status";

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn spec(&self) -> &ContainerSpec {
        &self.spec
    }
    fn status(&self) -> Option<&ContainerStatus> {
        self.status.as_ref()
    }
    fn status_mut(&mut self) -> &mut Option<ContainerStatus> {
        &mut self.status
    }
}

impl Resource for ContainerSet {
    type Spec = ContainerSetSpec;
    type Status = ContainerSetStatus;
    const KIND: &'static str = KIND_CONTAINER_SET;
    const PLURAL: &'static str = "containersets";
    /// Not under `specs/`: agents list and decode every key there as a Container.
    const STORE_SEGMENT: &'static str = "sets";
    const STATUS_SEGMENT: &'static str = "set-status";

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn spec(&self) -> &ContainerSetSpec {
        &self.spec
    }
    fn status(&self) -> Option<&ContainerSetStatus> {
        self.status.as_ref()
    }
    fn status_mut(&mut self) -> &mut Option<ContainerSetStatus> {
        &mut self.status
    }
}

impl Resource for Secret {
    /// The data is what the user declares: a changed value is a new generation.
    type Spec = std::collections::BTreeMap<String, String>;
    type Status = SecretStatus;
    const KIND: &'static str = KIND_SECRET;
    const PLURAL: &'static str = "secrets";
    const STORE_SEGMENT: &'static str = "secrets";
    const STATUS_SEGMENT: &'static str = "secret-status";
    const SENSITIVE: bool = true;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn spec(&self) -> &Self::Spec {
        &self.data
    }
    fn status(&self) -> Option<&SecretStatus> {
        self.status.as_ref()
    }
    fn status_mut(&mut self) -> &mut Option<SecretStatus> {
        &mut self.status
    }
}

impl Resource for GitSource {
    type Spec = GitSourceSpec;
    type Status = GitSourceStatus;
    const KIND: &'static str = KIND_GIT_SOURCE;
    const PLURAL: &'static str = "gitsources";
    const STORE_SEGMENT: &'static str = "gitsources";
    const STATUS_SEGMENT: &'static str = "gitsource-status";

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn spec(&self) -> &GitSourceSpec {
        &self.spec
    }
    fn status(&self) -> Option<&GitSourceStatus> {
        self.status.as_ref()
    }
    fn status_mut(&mut self) -> &mut Option<GitSourceStatus> {
        &mut self.status
    }
    fn hide_credentials(&mut self) {
        crate::gitsource::redact_git_source(self);
    }
}
