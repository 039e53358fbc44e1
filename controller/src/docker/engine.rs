//! The driver trait: every engine call the executor and a reconcile's read pass make, so that the
//! agent's decisions can run against an in-memory engine in unit tests
//! (`docker::fake`).
//! [`DockerClient`] is the one real implementation; it delegates to its own methods.
//!
//! Methods return boxed futures (the trait is used as `dyn Engine`); the semantics are the
//! client's: a missing container or image is `Ok(None)`, a name conflict is
//! [`super::DockerError::Conflict`].

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;

use super::client::{ContainerFilter, DockerClient, RemoveOptions};
use super::error::DockerResult;
use super::types::{
    ContainerConfig, ContainerSummary, ExecOutcome, ExecSpec, ImageInfo, LogLine, NetworkAttachment,
    ObservedContainer, ProcessInfo, PullProgress, RegistryDigest, Resources,
};

/// A Docker Engine as the executor and the agent's reconcile see it.
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// The negotiated API version (`1.44`).
    fn api_version(&self) -> String;
    /// Now, on the clock the engine's timestamps (`startedAt`, `finishedAt`) are compared with:
    /// the machine's for a real engine; paused tokio time for the in-memory one.
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
    }
    fn list_containers<'a>(
        &'a self,
        filter: &'a ContainerFilter,
    ) -> BoxFuture<'a, DockerResult<Vec<ContainerSummary>>>;
    /// One page of [`Engine::list_containers`]: at most `limit` of the containers `filter`
    /// matches, newest first, and only those created before the container `before` when it is
    /// given (the last of the page before). A `before` container that is gone is `NotFound`.
    fn list_containers_page<'a>(
        &'a self,
        filter: &'a ContainerFilter,
        limit: usize,
        before: Option<&'a str>,
    ) -> BoxFuture<'a, DockerResult<Vec<ContainerSummary>>>;
    fn inspect_container<'a>(
        &'a self,
        id_or_name: &'a str,
    ) -> BoxFuture<'a, DockerResult<Option<ObservedContainer>>>;
    fn inspect_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, DockerResult<Option<ImageInfo>>>;
    fn registry_digest<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, DockerResult<RegistryDigest>>;
    fn pull<'a>(
        &'a self,
        reference: &'a str,
        on_progress: &'a mut (dyn FnMut(PullProgress) + Send),
    ) -> BoxFuture<'a, DockerResult<()>>;
    fn create_container<'a>(&'a self, config: &'a ContainerConfig) -> BoxFuture<'a, DockerResult<String>>;
    fn start_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<()>>;
    fn stop_container<'a>(
        &'a self,
        id: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, DockerResult<()>>;
    fn restart_container<'a>(
        &'a self,
        id: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, DockerResult<()>>;
    fn unpause_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<()>>;
    fn rename_container<'a>(&'a self, id: &'a str, new_name: &'a str) -> BoxFuture<'a, DockerResult<()>>;
    fn remove_container<'a>(&'a self, id: &'a str, options: RemoveOptions)
        -> BoxFuture<'a, DockerResult<()>>;
    fn update_resources<'a>(
        &'a self,
        id: &'a str,
        resources: &'a Resources,
    ) -> BoxFuture<'a, DockerResult<()>>;
    fn connect_network<'a>(
        &'a self,
        id: &'a str,
        network: &'a NetworkAttachment,
    ) -> BoxFuture<'a, DockerResult<()>>;
    fn disconnect_network<'a>(
        &'a self,
        id: &'a str,
        network: &'a str,
        force: bool,
    ) -> BoxFuture<'a, DockerResult<()>>;
    /// Creates a bridge network unless one of this name exists; returns its ID.
    fn ensure_network<'a>(
        &'a self,
        name: &'a str,
        subnet: Option<&'a str>,
        labels: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, DockerResult<String>>;
    fn exec<'a>(&'a self, id: &'a str, spec: &'a ExecSpec) -> BoxFuture<'a, DockerResult<ExecOutcome>>;
    fn exec_detached<'a>(&'a self, id: &'a str, spec: &'a ExecSpec) -> BoxFuture<'a, DockerResult<String>>;
    fn top<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<Vec<ProcessInfo>>>;
    fn is_process_running<'a>(&'a self, id: &'a str, cmd: &'a [String]) -> BoxFuture<'a, DockerResult<bool>>;
    fn remove_image_if_unused<'a>(&'a self, image_id: &'a str) -> BoxFuture<'a, DockerResult<bool>>;
    fn logs<'a>(&'a self, id: &'a str, tail: usize) -> BoxFuture<'a, DockerResult<Vec<LogLine>>>;
    fn wait_for_exit<'a>(&'a self, id: &'a str, timeout: Duration) -> BoxFuture<'a, DockerResult<i64>>;
}

impl Engine for DockerClient {
    fn api_version(&self) -> String {
        DockerClient::api_version(self)
    }
    fn list_containers<'a>(
        &'a self,
        filter: &'a ContainerFilter,
    ) -> BoxFuture<'a, DockerResult<Vec<ContainerSummary>>> {
        Box::pin(DockerClient::list_containers(self, filter))
    }
    fn list_containers_page<'a>(
        &'a self,
        filter: &'a ContainerFilter,
        limit: usize,
        before: Option<&'a str>,
    ) -> BoxFuture<'a, DockerResult<Vec<ContainerSummary>>> {
        Box::pin(DockerClient::list_containers_page(self, filter, limit, before))
    }
    fn inspect_container<'a>(
        &'a self,
        id_or_name: &'a str,
    ) -> BoxFuture<'a, DockerResult<Option<ObservedContainer>>> {
        Box::pin(DockerClient::inspect_container(self, id_or_name))
    }
    fn inspect_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, DockerResult<Option<ImageInfo>>> {
        Box::pin(DockerClient::inspect_image(self, reference))
    }
    fn registry_digest<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, DockerResult<RegistryDigest>> {
        Box::pin(DockerClient::registry_digest(self, reference))
    }
    fn pull<'a>(
        &'a self,
        reference: &'a str,
        on_progress: &'a mut (dyn FnMut(PullProgress) + Send),
    ) -> BoxFuture<'a, DockerResult<()>> {
        Box::pin(DockerClient::pull(self, reference, on_progress))
    }
    fn create_container<'a>(&'a self, config: &'a ContainerConfig) -> BoxFuture<'a, DockerResult<String>> {
        Box::pin(DockerClient::create_container(self, config))
    }
    fn start_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<()>> {
        Box::pin(DockerClient::start_container(self, id))
    }
    fn stop_container<'a>(
        &'a self,
        id: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, DockerResult<()>> {
        Box::pin(DockerClient::stop_container(self, id, timeout))
    }
    fn restart_container<'a>(
        &'a self,
        id: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, DockerResult<()>> {
        Box::pin(DockerClient::restart_container(self, id, timeout))
    }
    fn unpause_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<()>> {
        Box::pin(DockerClient::unpause_container(self, id))
    }
    fn rename_container<'a>(&'a self, id: &'a str, new_name: &'a str) -> BoxFuture<'a, DockerResult<()>> {
        Box::pin(DockerClient::rename_container(self, id, new_name))
    }
    fn remove_container<'a>(
        &'a self,
        id: &'a str,
        options: RemoveOptions,
    ) -> BoxFuture<'a, DockerResult<()>> {
        Box::pin(DockerClient::remove_container(self, id, options))
    }
    fn update_resources<'a>(
        &'a self,
        id: &'a str,
        resources: &'a Resources,
    ) -> BoxFuture<'a, DockerResult<()>> {
        Box::pin(DockerClient::update_resources(self, id, resources))
    }
    fn connect_network<'a>(
        &'a self,
        id: &'a str,
        network: &'a NetworkAttachment,
    ) -> BoxFuture<'a, DockerResult<()>> {
        Box::pin(DockerClient::connect_network(self, id, network))
    }
    fn disconnect_network<'a>(
        &'a self,
        id: &'a str,
        network: &'a str,
        force: bool,
    ) -> BoxFuture<'a, DockerResult<()>> {
        Box::pin(DockerClient::disconnect_network(self, id, network, force))
    }
    fn ensure_network<'a>(
        &'a self,
        name: &'a str,
        subnet: Option<&'a str>,
        labels: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, DockerResult<String>> {
        Box::pin(DockerClient::ensure_network(self, name, subnet, labels))
    }
    fn exec<'a>(&'a self, id: &'a str, spec: &'a ExecSpec) -> BoxFuture<'a, DockerResult<ExecOutcome>> {
        Box::pin(DockerClient::exec(self, id, spec))
    }
    fn exec_detached<'a>(&'a self, id: &'a str, spec: &'a ExecSpec) -> BoxFuture<'a, DockerResult<String>> {
        Box::pin(DockerClient::exec_detached(self, id, spec))
    }
    fn top<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<Vec<ProcessInfo>>> {
        Box::pin(DockerClient::top(self, id))
    }
    fn is_process_running<'a>(&'a self, id: &'a str, cmd: &'a [String]) -> BoxFuture<'a, DockerResult<bool>> {
        Box::pin(DockerClient::is_process_running(self, id, cmd))
    }
    fn remove_image_if_unused<'a>(&'a self, image_id: &'a str) -> BoxFuture<'a, DockerResult<bool>> {
        Box::pin(DockerClient::remove_image_if_unused(self, image_id))
    }
    fn logs<'a>(&'a self, id: &'a str, tail: usize) -> BoxFuture<'a, DockerResult<Vec<LogLine>>> {
        Box::pin(DockerClient::logs(self, id, tail))
    }
    fn wait_for_exit<'a>(&'a self, id: &'a str, timeout: Duration) -> BoxFuture<'a, DockerResult<i64>> {
        Box::pin(DockerClient::wait_for_exit(self, id, timeout))
    }
}
