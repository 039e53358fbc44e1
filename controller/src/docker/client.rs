//! `DockerClient`: every Docker Engine call kedge makes, in kedge's types.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models as b;
use bollard::query_parameters as q;
use bollard::Docker;
use futures::{Stream, StreamExt, TryStreamExt};
use tracing::{debug, instrument};

use super::auth::RegistryAuth;
use super::convert;
use super::error::{DockerError, DockerResult};
use super::types::*;

/// The request timeout of the client. Long enough for a stop with a generous grace period;
/// kedge's own deadlines (health waits, exit waits) are set per call.
const REQUEST_TIMEOUT_SECS: u64 = 300;

/// A connection to one Docker Engine, with the API version negotiated. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DockerClient {
    docker: Docker,
    host: String,
    /// `Some(version)` when the engine is Podman's Docker-compatible API service, not Docker.
    podman: Option<String>,
    /// Registry credentials sent with every pull and registry digest lookup (`--registry-config`).
    registry_auth: Option<std::sync::Arc<RegistryAuth>>,
}

/// Which containers to list. Labels are Docker filter values: `key` or `key=value`, all must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    pub labels: Vec<String>,
    /// Docker's name filter: an unanchored regular expression on the name.
    pub name: Option<String>,
}

/// How to remove a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoveOptions {
    /// Kill it first if it runs.
    pub force: bool,
    /// Remove its anonymous volumes too (named volumes are never removed by Docker).
    pub anonymous_volumes: bool,
}

impl DockerClient {
    /// Connects to `DOCKER_HOST` (`unix://...` or `tcp://...`), or `/var/run/docker.sock` when
    /// unset, and negotiates the API version (Debian's 20.10 engine speaks 1.41).
    pub async fn connect() -> DockerResult<DockerClient> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        DockerClient::connect_to(&host).await
    }

    /// Connects to `host` (`unix://PATH`, `tcp://HOST:PORT` or `http://HOST:PORT`).
    /// A client that has never talked to an engine (nothing listens at its address), for unit tests
    /// whose code reaches the engine only through the [`super::Engine`] trait, and for the scale
    /// simulation's agents.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn unconnected() -> DockerClient {
        let host = "http://127.0.0.1:9";
        let docker = Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            .expect("a client needs no connection to be made");
        DockerClient { docker, host: host.to_string(), podman: None, registry_auth: None }
    }

    pub async fn connect_to(host: &str) -> DockerResult<DockerClient> {
        let connect_error = |source: bollard::errors::Error| DockerError::Connect {
            host: host.to_string(),
            source: Box::new(source),
        };
        let docker = if host.starts_with("unix://") {
            Docker::connect_with_unix(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(host, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(DockerError::Connect {
                host: host.to_string(),
                source: "only unix:// and tcp:// docker hosts are supported".into(),
            });
        }
        .map_err(connect_error)?;
        let docker = docker.negotiate_version().await?;
        // Podman's service names itself among the version's components ("Podman Engine").
        let version = docker.version().await?;
        let podman = version.components.unwrap_or_default().into_iter().find_map(|component| {
            component.name.to_ascii_lowercase().contains("podman").then_some(component.version)
        });
        debug!(host, api = %docker.client_version(), podman = podman.is_some(), "connected to docker");
        Ok(DockerClient { docker, host: host.to_string(), podman, registry_auth: None })
    }

    /// This client, sending `auth`'s credentials for an image's registry with every pull and
    /// registry digest lookup of that image. Clones share them.
    pub fn with_registry_auth(mut self, auth: RegistryAuth) -> DockerClient {
        self.registry_auth = Some(std::sync::Arc::new(auth));
        self
    }

    /// The credentials for `reference`'s registry, in bollard's form, made per request.
    /// The registry credentials this client was given, for the registry checks that do not go
    /// through the engine (registry.rs).
    pub fn registry_auth(&self) -> Option<std::sync::Arc<RegistryAuth>> {
        self.registry_auth.clone()
    }

    fn credentials_for(&self, reference: &str) -> Option<bollard::auth::DockerCredentials> {
        self.registry_auth.as_ref()?.for_image(reference).map(|credentials| credentials.to_engine())
    }

    /// The Podman version when the engine is Podman's Docker-compatible API service, not Docker.
    pub fn podman_version(&self) -> Option<&str> {
        self.podman.as_deref()
    }

    /// Refuses `operation` on Podman, whose Docker-compatible API differs from Docker's where kedge
    /// compares what it declared with what it observes (docs/compatibility.md): its inspect adds
    /// environment of its own (`container=podman`, `HOME`, `HOSTNAME`, `TERM`), names images
    /// `docker.io/...` where Docker keeps the name given, and applies limits and restart policies
    /// differently, so every container would look drifted and be recreated again and again.
    /// Reading (listing, inspect, `kedge check`) works and is not refused.
    pub fn refuse_on_podman(&self, operation: &str) -> DockerResult<()> {
        match &self.podman {
            None => Ok(()),
            Some(version) => Err(DockerError::Unsupported {
                message: format!(
                    "the engine at {} is Podman {version}, not Docker: {operation} needs Docker's inspect, and Podman's Docker-compatible API reports containers differently (environment Podman adds itself such as container=podman, image names prefixed with docker.io/, limits and restart policies), so kedge would take every container for drifted; `kedge check` works on Podman (docs/compatibility.md)",
                    self.host
                ),
            }),
        }
    }

    /// The address this client talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The negotiated API version, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// The engine's version and capacity, for the host record.
    pub async fn info(&self) -> DockerResult<EngineInfo> {
        let info = self.docker.info().await?;
        Ok(EngineInfo {
            server_version: info.server_version.unwrap_or_default(),
            cpus: info.ncpu.unwrap_or(0).max(0) as u64,
            memory_bytes: info.mem_total.unwrap_or(0).max(0) as u64,
            containers_running: info.containers_running.unwrap_or(0).max(0) as u64,
        })
    }

    /// Answers when the engine is reachable.
    pub async fn ping(&self) -> DockerResult<()> {
        self.docker.ping().await?;
        Ok(())
    }

    /// Lists containers in every state (running, stopped, created) matching `filter`.
    pub async fn list_containers(&self, filter: &ContainerFilter) -> DockerResult<Vec<ContainerSummary>> {
        self.list(filter, None, None).await
    }

    /// One page of [`DockerClient::list_containers`]: at most `limit` containers, newest first,
    /// created before the container `before` when given (the engine's `limit` and `before`
    /// filter). A `before` container that is gone is `NotFound` (Engine 20.10 answers it with a 500
    /// saying "no such container").
    pub async fn list_containers_page(
        &self,
        filter: &ContainerFilter,
        limit: usize,
        before: Option<&str>,
    ) -> DockerResult<Vec<ContainerSummary>> {
        match self.list(filter, Some(limit), before).await {
            Err(DockerError::Engine { message, .. })
                if before.is_some() && message.to_ascii_lowercase().contains("no such container") =>
            {
                Err(DockerError::NotFound { message })
            }
            other => other,
        }
    }

    async fn list(
        &self,
        filter: &ContainerFilter,
        limit: Option<usize>,
        before: Option<&str>,
    ) -> DockerResult<Vec<ContainerSummary>> {
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        if !filter.labels.is_empty() {
            filters.insert("label".to_string(), filter.labels.clone());
        }
        if let Some(name) = &filter.name {
            filters.insert("name".to_string(), vec![name.clone()]);
        }
        if let Some(before) = before {
            filters.insert("before".to_string(), vec![before.to_owned()]);
        }
        // The engine takes a 32-bit limit; no page is asked for that many.
        let limit = limit.map(|limit| i32::try_from(limit).unwrap_or(i32::MAX));
        let options =
            q::ListContainersOptions { all: true, limit, filters: Some(filters), ..Default::default() };
        let list = self.docker.list_containers(Some(options)).await?;
        Ok(list.into_iter().filter_map(convert::summary_from).collect())
    }

    /// Inspects a container by ID or name; `Ok(None)` when there is none.
    ///
    /// Only the container with exactly this name or ID, or whose ID starts with it when it is as
    /// long as a short ID (12 characters) or longer. The engine also answers a shorter ID prefix
    /// when no container has the name: asked for `db` (or `c19`), it returned whichever container's
    /// ID began with those letters, and a spec so named was stuck on a "foreign container holds
    /// the name" for as long as that container lived.
    pub async fn inspect_container(&self, id_or_name: &str) -> DockerResult<Option<ObservedContainer>> {
        match self.docker.inspect_container(id_or_name, None::<q::InspectContainerOptions>).await {
            Ok(inspect) => match convert::observed_from_inspect(inspect) {
                Some(observed) if answers_to(&observed, id_or_name) => Ok(Some(observed)),
                Some(_) => Ok(None),
                None => {
                    Err(DockerError::Unexpected { message: format!("inspect of {id_or_name} has no ID") })
                }
            },
            Err(e) => match none_on_not_found(e.into()) {
                // Several containers' IDs begin with the name and none is so named: the engine
                // says the prefix is ambiguous (Docker answers 500 for it), which is no reason to
                // think it unavailable. Asked by exact name, it answers plainly.
                Err(error) if id_or_name.len() < FULL_ID => match self.named(id_or_name).await {
                    Ok(Some(id)) => {
                        match self.docker.inspect_container(&id, None::<q::InspectContainerOptions>).await {
                            Ok(inspect) => Ok(convert::observed_from_inspect(inspect)),
                            Err(e) => none_on_not_found(e.into()),
                        }
                    }
                    Ok(None) => Ok(None),
                    Err(_) => Err(error),
                },
                other => other,
            },
        }
    }

    /// The ID of the container with exactly this name, found by listing (Docker's name filter is a
    /// regular expression over `/name`).
    async fn named(&self, name: &str) -> DockerResult<Option<String>> {
        let name = name.strip_prefix('/').unwrap_or(name);
        let escaped: String = name
            .chars()
            .flat_map(|c| if c.is_ascii_alphanumeric() { vec![c] } else { vec!['\\', c] })
            .collect();
        let filters = HashMap::from([("name".to_owned(), vec![format!("^/{escaped}$")])]);
        let options = q::ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let list = self.docker.list_containers(Some(options)).await?;
        let exact = list.into_iter().find(|container| {
            container.names.iter().flatten().any(|listed| listed.strip_prefix('/').unwrap_or(listed) == name)
        });
        Ok(exact.and_then(|container| container.id))
    }

    /// Inspects a local image by reference or ID; `Ok(None)` when it is not present.
    pub async fn inspect_image(&self, reference: &str) -> DockerResult<Option<ImageInfo>> {
        match self.docker.inspect_image(reference).await {
            Ok(inspect) => convert::image_from_inspect(inspect)
                .map(Some)
                .ok_or_else(|| DockerError::Unexpected { message: format!("image {reference} has no ID") }),
            Err(e) => none_on_not_found(e.into()),
        }
    }

    /// The digest the registry currently serves for `reference`, without pulling (the engine's
    /// distribution inspect, with the registry's credentials when this client has them).
    pub async fn registry_digest(&self, reference: &str) -> DockerResult<RegistryDigest> {
        let inspect = self.docker.inspect_registry_image(reference, self.credentials_for(reference)).await?;
        let digest = inspect.descriptor.digest.ok_or_else(|| DockerError::Unexpected {
            message: format!("distribution inspect of {reference} has no digest"),
        })?;
        Ok(RegistryDigest { digest, media_type: inspect.descriptor.media_type })
    }

    /// Pulls `reference`, calling `on_progress` with every progress line the engine sends. The
    /// registry's credentials go with it when this client has them ([`Self::with_registry_auth`]).
    #[instrument(skip(self, on_progress))]
    pub async fn pull(&self, reference: &str, mut on_progress: impl FnMut(PullProgress)) -> DockerResult<()> {
        let (from_image, tag) = split_reference(reference);
        let options = q::CreateImageOptions {
            from_image: Some(from_image.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let mut stream = self.docker.create_image(Some(options), None, self.credentials_for(reference));
        while let Some(line) = stream.next().await {
            let line = line?;
            if let Some(detail) = line.error_detail {
                return Err(DockerError::Stream { message: detail.message.unwrap_or_default() });
            }
            let detail = line.progress_detail.unwrap_or_default();
            on_progress(PullProgress {
                layer: line.id,
                status: line.status.unwrap_or_default(),
                current: detail.current,
                total: detail.total,
            });
        }
        Ok(())
    }

    /// Creates the container `config` describes (not started): attached at create to its first
    /// network, then connected to the others. On a failed connect the half-made container is
    /// removed again. Returns the new container's ID.
    #[instrument(skip(self, config), fields(name = %config.name, image = %config.image))]
    pub async fn create_container(&self, config: &ContainerConfig) -> DockerResult<String> {
        let options = q::CreateContainerOptions { name: Some(config.name.clone()), ..Default::default() };
        let created = self.docker.create_container(Some(options), convert::create_body(config)).await?;
        for warning in &created.warnings {
            // E.g. "Your kernel does not support Block I/O weight": the engine dropped a setting.
            tracing::warn!(name = %config.name, warning, "docker warned on create");
        }
        for network in config.networks.iter().skip(1) {
            if let Err(error) = self.connect_network(&created.id, network).await {
                let _ = self
                    .remove_container(&created.id, RemoveOptions { force: true, anonymous_volumes: true })
                    .await;
                return Err(error);
            }
        }
        Ok(created.id)
    }

    /// Starts a container; starting a running one is a no-op (Docker answers 304).
    pub async fn start_container(&self, id: &str) -> DockerResult<()> {
        self.docker.start_container(id, None::<q::StartContainerOptions>).await?;
        Ok(())
    }

    /// Stops a container with the stop signal it was created with, SIGKILL after `timeout`
    /// (`None`: the container's own stop timeout, else Docker's 10 s). Stopping a stopped container
    /// is a no-op.
    pub async fn stop_container(&self, id: &str, timeout: Option<Duration>) -> DockerResult<()> {
        let options = q::StopContainerOptions { t: timeout.map(secs_i32), signal: None };
        self.docker.stop_container(id, Some(options)).await?;
        Ok(())
    }

    /// Sends `signal` (e.g. `SIGKILL`, `SIGHUP`) to a running container.
    pub async fn kill_container(&self, id: &str, signal: &str) -> DockerResult<()> {
        let options = q::KillContainerOptions { signal: signal.to_string() };
        self.docker.kill_container(id, Some(options)).await?;
        Ok(())
    }

    /// Restarts a container (stop with its stop signal and `timeout`, then start).
    pub async fn restart_container(&self, id: &str, timeout: Option<Duration>) -> DockerResult<()> {
        let options = q::RestartContainerOptions { t: timeout.map(secs_i32), signal: None };
        self.docker.restart_container(id, Some(options)).await?;
        Ok(())
    }

    /// Resumes a paused container. Docker refuses a container that is not paused (409).
    pub async fn unpause_container(&self, id: &str) -> DockerResult<()> {
        self.docker.unpause_container(id).await?;
        Ok(())
    }

    /// Renames a container. Renaming to the name it already has is a no-op here (Docker refuses it).
    pub async fn rename_container(&self, id: &str, new_name: &str) -> DockerResult<()> {
        if let Some(current) = self.inspect_container(id).await? {
            if current.name == new_name {
                return Ok(());
            }
        }
        let options = q::RenameContainerOptions { name: new_name.to_string() };
        self.docker.rename_container(id, options).await?;
        Ok(())
    }

    /// Removes a container; removing one that is already gone succeeds.
    pub async fn remove_container(&self, id: &str, options: RemoveOptions) -> DockerResult<()> {
        let options =
            q::RemoveContainerOptions { force: options.force, v: options.anonymous_volumes, link: false };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) => none_on_not_found(e.into()).map(|_: Option<()>| ()),
        }
    }

    /// Changes the declared resource limits of a container in place (no restart, same ID).
    pub async fn update_resources(&self, id: &str, resources: &Resources) -> DockerResult<()> {
        self.docker.update_container(id, convert::update_body(resources)).await?;
        Ok(())
    }

    /// Connects a container to a network with aliases and an optional static IPv4, without a restart.
    pub async fn connect_network(&self, id: &str, network: &NetworkAttachment) -> DockerResult<()> {
        let request = b::NetworkConnectRequest {
            container: id.to_string(),
            endpoint_config: Some(convert::endpoint_settings(network)),
        };
        self.docker.connect_network(&network.network, request).await?;
        Ok(())
    }

    /// Disconnects a container from a network, without a restart.
    pub async fn disconnect_network(&self, id: &str, network: &str, force: bool) -> DockerResult<()> {
        let request = b::NetworkDisconnectRequest { container: id.to_string(), force: Some(force) };
        self.docker.disconnect_network(network, request).await?;
        Ok(())
    }

    /// Creates a bridge network named `name` with `labels` unless one exists; returns its ID.
    /// `subnet`, when given, is the IPAM subnet (needed for static addresses).
    pub async fn ensure_network(
        &self,
        name: &str,
        subnet: Option<&str>,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> DockerResult<String> {
        match self.docker.inspect_network(name, None::<q::InspectNetworkOptions>).await {
            Ok(network) => return Ok(network.id.unwrap_or_default()),
            Err(e) => none_on_not_found::<()>(e.into()).map(|_| ())?,
        }
        let request = b::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".to_string()),
            ipam: subnet.map(|subnet| b::Ipam {
                config: Some(vec![b::IpamConfig { subnet: Some(subnet.to_string()), ..Default::default() }]),
                ..Default::default()
            }),
            labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(created) => Ok(created.id),
            // Lost a race with another creator: the network exists now.
            Err(e) => match DockerError::from(e) {
                DockerError::Conflict { .. } => {
                    let network = self.docker.inspect_network(name, None::<q::InspectNetworkOptions>).await?;
                    Ok(network.id.unwrap_or_default())
                }
                other => Err(other),
            },
        }
    }

    /// Removes a network; a missing one is fine.
    pub async fn remove_network(&self, name: &str) -> DockerResult<()> {
        match self.docker.remove_network(name).await {
            Ok(()) => Ok(()),
            Err(e) => none_on_not_found(e.into()).map(|_: Option<()>| ()),
        }
    }

    /// Creates an exec in a running container; returns the exec ID.
    pub async fn exec_create(&self, id: &str, spec: &ExecSpec) -> DockerResult<String> {
        self.exec_create_attached(id, spec, false).await
    }

    async fn exec_create_attached(&self, id: &str, spec: &ExecSpec, stdin: bool) -> DockerResult<String> {
        let config = b::ExecConfig {
            attach_stdin: stdin.then_some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(spec.cmd.clone()),
            env: (!spec.env.is_empty()).then(|| spec.env.clone()),
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            ..Default::default()
        };
        Ok(self.docker.create_exec(id, config).await?.id)
    }

    /// Starts an exec and collects its output until it ends.
    pub async fn exec_start(&self, exec_id: &str) -> DockerResult<String> {
        use bollard::exec::StartExecResults;
        let mut text = String::new();
        match self.docker.start_exec(exec_id, None).await? {
            StartExecResults::Attached { mut output, .. } => {
                while let Some(chunk) = output.next().await {
                    text.push_str(&chunk?.to_string());
                }
            }
            StartExecResults::Detached => {}
        }
        Ok(text)
    }

    /// The exit code of an exec (`None` while it runs).
    pub async fn exec_exit_code(&self, exec_id: &str) -> DockerResult<Option<i64>> {
        let inspect = self.docker.inspect_exec(exec_id).await?;
        Ok(if inspect.running == Some(true) { None } else { inspect.exit_code })
    }

    /// Runs a command in a running container to its end: output and exit code.
    #[instrument(skip(self, spec), fields(cmd = ?spec.cmd))]
    pub async fn exec(&self, id: &str, spec: &ExecSpec) -> DockerResult<ExecOutcome> {
        let exec_id = self.exec_create(id, spec).await?;
        let output = self.exec_start(&exec_id).await?;
        Ok(ExecOutcome { exit_code: self.exec_exit_code(&exec_id).await?, output })
    }

    /// Runs a command in a running container for `kedge exec`: `stdin`, when given, is written to it
    /// and then closed; the output streams as it comes. Answers the exec's ID (for
    /// [`Self::exec_exit_code`] once the stream ends) and the stream.
    pub async fn exec_streaming(
        &self,
        id: &str,
        spec: &ExecSpec,
        stdin: Option<Vec<u8>>,
    ) -> DockerResult<(String, impl Stream<Item = DockerResult<LogLine>> + Send + 'static)> {
        use bollard::exec::StartExecResults;
        use tokio::io::AsyncWriteExt;
        let exec_id = self.exec_create_attached(id, spec, stdin.is_some()).await?;
        let output = match self.docker.start_exec(&exec_id, None).await? {
            StartExecResults::Attached { output, mut input } => {
                if let Some(bytes) = stdin {
                    // Written beside the output, so that a command that writes before it has read
                    // all its input cannot deadlock against us.
                    tokio::spawn(async move {
                        let _ = input.write_all(&bytes).await;
                        let _ = input.shutdown().await;
                    });
                }
                output.boxed()
            }
            StartExecResults::Detached => futures::stream::empty().boxed(),
        };
        Ok((exec_id, output.filter_map(|chunk| futures::future::ready(log_line(chunk)))))
    }

    /// Starts a command in the container and returns at once, without waiting for it to end: for
    /// long-running processes (post-start commands kept running), which an attached exec would wait
    /// on for ever. Returns the exec's ID.
    pub async fn exec_detached(&self, id: &str, spec: &ExecSpec) -> DockerResult<String> {
        let exec_id = self.exec_create(id, spec).await?;
        let options = bollard::exec::StartExecOptions { detach: true, ..Default::default() };
        self.docker.start_exec(&exec_id, Some(options)).await?;
        Ok(exec_id)
    }

    /// The processes running in a container (`docker top`, `ps -ef` columns).
    pub async fn top(&self, id: &str) -> DockerResult<Vec<ProcessInfo>> {
        let top = self.docker.top_processes(id, Some(q::TopOptions { ps_args: "-ef".to_string() })).await?;
        let titles = top.titles.unwrap_or_default();
        let column = |name: &str| titles.iter().position(|t| t == name);
        let (pid_at, cmd_at) = (column("PID"), column("CMD").or_else(|| column("COMMAND")));
        Ok(top
            .processes
            .unwrap_or_default()
            .into_iter()
            .map(|row| ProcessInfo {
                pid: pid_at.and_then(|i| row.get(i).cloned()),
                command: cmd_at.and_then(|i| row.get(i).cloned()).unwrap_or_default(),
            })
            .collect())
    }

    /// True when a process whose command line is `cmd` (joined with spaces) runs in the container.
    pub async fn is_process_running(&self, id: &str, cmd: &[String]) -> DockerResult<bool> {
        let wanted = cmd.join(" ");
        Ok(self.top(id).await?.iter().any(|p| p.command == wanted))
    }

    /// The IDs of the containers (any state) created from image `image_id`.
    pub async fn containers_using_image(&self, image_id: &str) -> DockerResult<Vec<String>> {
        let all = self.list_containers(&ContainerFilter::default()).await?;
        Ok(all.into_iter().filter(|c| c.image_id == image_id).map(|c| c.id).collect())
    }

    /// Removes an image only when no container (in any state) uses it. Returns whether it was
    /// removed: `false` when it was in use or already gone. Tags are untagged and layers freed as
    /// by `docker rmi` without force.
    pub async fn remove_image_if_unused(&self, image_id: &str) -> DockerResult<bool> {
        if !self.containers_using_image(image_id).await?.is_empty() {
            return Ok(false);
        }
        let options = q::RemoveImageOptions { force: false, noprune: false, platforms: None };
        match self.docker.remove_image(image_id, Some(options), None).await {
            Ok(_) => Ok(true),
            // Gone already, or a container was created from it since we looked.
            Err(e) => match DockerError::from(e) {
                DockerError::NotFound { .. } | DockerError::Conflict { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// The last `tail` lines of a container's log (stdout and stderr).
    pub async fn logs(&self, id: &str, tail: usize) -> DockerResult<Vec<LogLine>> {
        use bollard::container::LogOutput;
        let options =
            q::LogsOptions { stdout: true, stderr: true, tail: tail.to_string(), ..Default::default() };
        let chunks: Vec<LogOutput> = self.docker.logs(id, Some(options)).try_collect().await?;
        Ok(chunks
            .into_iter()
            .filter_map(|chunk| match chunk {
                LogOutput::StdOut { message } | LogOutput::Console { message } => Some(LogLine {
                    stream: LogStream::Stdout,
                    text: String::from_utf8_lossy(&message).into_owned(),
                }),
                LogOutput::StdErr { message } => Some(LogLine {
                    stream: LogStream::Stderr,
                    text: String::from_utf8_lossy(&message).into_owned(),
                }),
                LogOutput::StdIn { .. } => None,
            })
            .collect())
    }

    /// The last `tail` log lines of a container, then (with `follow`) new lines as they come, until
    /// the container stops or the stream is dropped.
    pub fn logs_stream(
        &self,
        id: &str,
        tail: usize,
        follow: bool,
        window: LogWindow,
    ) -> impl Stream<Item = DockerResult<LogLine>> + Send + 'static {
        let options = q::LogsOptions {
            stdout: true,
            stderr: true,
            follow,
            tail: tail.to_string(),
            since: window.since,
            timestamps: window.timestamps,
            ..Default::default()
        };
        self.docker.logs(id, Some(options)).filter_map(|chunk| futures::future::ready(log_line(chunk)))
    }

    /// One sample of the container's resource use. The engine takes two readings about a second
    /// apart (`stream=false` without `one-shot`) so that the CPU share can be computed.
    pub async fn stats(&self, id: &str) -> DockerResult<ContainerStats> {
        let options = q::StatsOptions { stream: false, one_shot: false };
        let mut answers = self.docker.stats(id, Some(options));
        match answers.next().await {
            Some(answer) => Ok(convert::stats_from(&answer?)),
            None => {
                Err(DockerError::Unexpected { message: format!("stats of {id} ended without an answer") })
            }
        }
    }

    /// Waits until the container is not running and returns its exit code, or `Timeout`.
    pub async fn wait_for_exit(&self, id: &str, timeout: Duration) -> DockerResult<i64> {
        let options = q::WaitContainerOptions { condition: "not-running".to_string() };
        let mut stream = self.docker.wait_container(id, Some(options));
        let waited = tokio::time::timeout(timeout, stream.next()).await;
        match waited {
            Err(_) => Err(DockerError::Timeout { what: format!("container {id} to exit"), after: timeout }),
            Ok(Some(Ok(response))) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error; it is an answer for us.
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => Ok(code),
            Ok(Some(Err(e))) => Err(e.into()),
            Ok(None) => {
                Err(DockerError::Unexpected { message: format!("wait on {id} ended without an answer") })
            }
        }
    }

    /// The engine's container events (optionally only those matching label filters), from `since`
    /// (the engine replays what it still remembers) or else from the moment the stream is first
    /// polled: the request is only sent then. The stream ends or yields an error when the
    /// connection drops; reconnecting (from the last event's time) and resyncing is the caller's job.
    pub fn events(
        &self,
        label_filters: &[String],
        since: Option<std::time::SystemTime>,
    ) -> impl Stream<Item = DockerResult<EngineEvent>> + Send + 'static {
        let mut filters = HashMap::from([("type".to_string(), vec!["container".to_string()])]);
        if !label_filters.is_empty() {
            filters.insert("label".to_string(), label_filters.to_vec());
        }
        self.event_stream(filters, since)
    }

    /// Every container event and every network connect and disconnect, with no label filter (the
    /// engine's network events carry no container labels, and one filter applies to both kinds), from
    /// `since`. Network events are reported as [`EventAction::NetworkConnect`] and
    /// [`EventAction::NetworkDisconnect`] events of the container, with empty labels.
    pub fn events_with_networks(
        &self,
        since: Option<std::time::SystemTime>,
    ) -> impl Stream<Item = DockerResult<EngineEvent>> + Send + 'static {
        let filters =
            HashMap::from([("type".to_string(), vec!["container".to_string(), "network".to_string()])]);
        self.event_stream(filters, since)
    }

    fn event_stream(
        &self,
        filters: HashMap<String, Vec<String>>,
        since: Option<std::time::SystemTime>,
    ) -> impl Stream<Item = DockerResult<EngineEvent>> + Send + 'static {
        let since = since.map(|at| {
            let at = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            format!("{}.{:09}", at.as_secs(), at.subsec_nanos())
        });
        let options = q::EventsOptions { filters: Some(filters), since, ..Default::default() };
        self.docker.events(Some(options)).filter_map(|event| async move {
            match event {
                Ok(event) => convert::event_from(event).map(Ok),
                Err(e) => Some(Err(e.into())),
            }
        })
    }
}

/// Splits `repo[:tag]` / `repo@digest` into what the pull API wants (`latest` when no tag).
fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(colon) => (&reference[..last_slash + colon], &reference[last_slash + colon + 1..]),
        None => (reference, "latest"),
    }
}

fn secs_i32(d: Duration) -> i32 {
    d.as_secs().min(i32::MAX as u64) as i32
}

/// A short container ID's length, and a full one's.
const SHORT_ID: usize = 12;
const FULL_ID: usize = 64;

/// Whether an inspected container is the one `id_or_name` names: its name (with or without
/// Docker's leading slash), its ID, or an ID prefix at least as long as a short ID.
fn answers_to(container: &ObservedContainer, id_or_name: &str) -> bool {
    let asked = id_or_name.strip_prefix('/').unwrap_or(id_or_name);
    container.name == asked
        || container.id == asked
        || (asked.len() >= SHORT_ID && container.id.starts_with(asked))
}

fn none_on_not_found<T>(error: DockerError) -> DockerResult<Option<T>> {
    match error {
        DockerError::NotFound { .. } => Ok(None),
        other => Err(other),
    }
}

/// One chunk of a container's (or an exec's) multiplexed output as a line kedge passes on.
fn log_line(
    chunk: Result<bollard::container::LogOutput, bollard::errors::Error>,
) -> Option<DockerResult<LogLine>> {
    use bollard::container::LogOutput;
    let (stream, message) = match chunk {
        Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => (LogStream::Stdout, message),
        Ok(LogOutput::StdErr { message }) => (LogStream::Stderr, message),
        Ok(LogOutput::StdIn { .. }) => return None,
        Err(error) => return Some(Err(error.into())),
    };
    Some(Ok(LogLine { stream, text: String::from_utf8_lossy(&message).into_owned() }))
}

#[cfg(test)]
mod tests {
    use super::{answers_to, split_reference};
    use crate::docker::ObservedContainer;

    #[test]
    fn an_inspect_answers_only_to_the_exact_name_the_id_or_a_short_id_prefix() {
        let id = format!("db{}", "7".repeat(62));
        let container = ObservedContainer { id: id.clone(), name: "web".to_owned(), ..Default::default() };
        assert!(answers_to(&container, "web"));
        assert!(answers_to(&container, "/web"));
        assert!(answers_to(&container, &id));
        assert!(answers_to(&container, &id[..12]));
        // The engine answers `db` with this container when no container is named `db`.
        assert!(!answers_to(&container, "db"));
        assert!(!answers_to(&container, &id[..11]));
        assert!(!answers_to(&container, "we"));
    }

    #[test]
    fn references_split_into_image_and_tag() {
        let check = |r: &str, expected: (&str, &str)| assert_eq!(split_reference(r), expected, "{r}");
        check("busybox", ("busybox", "latest"));
        check("kedge-test/app:v1", ("kedge-test/app", "v1"));
        check("127.0.0.1:5000/app", ("127.0.0.1:5000/app", "latest"));
        check("127.0.0.1:5000/app:2", ("127.0.0.1:5000/app", "2"));
        check("app@sha256:abc", ("app", "sha256:abc"));
    }
}
