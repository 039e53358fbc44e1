//! An in-memory [`Engine`]: containers, networks and images in a map, every call counted, failures
//! scripted per method, and a clock on paused tokio time (unit tests) or the machine's
//! ([`SimEngine`], the scale simulation of `kedge-bench scale`). A create becomes what inspect would
//! report through [`created_with_id`], so a container the agent made shows no drift.
//!
//! Compiled for unit tests and with the `sim` feature (the bench's), never in a default build.
//!
//! What it models: names are unique (a create of a taken name is a conflict); list filters match
//! `label=KEY=VALUE` and names; a create or connect to a network the engine lacks is not found
//! (only `ensure_network` makes one); a start sets `startedAt` on its clock, and with
//! [`FakeEngine::crash_on_start`] the container exits at once with that code; stop, remove and
//! network calls change the state as Docker's would; a container with a healthcheck is `healthy`
//! from its start (its check passes at once). Not modelled: pulls (they succeed), execs (exit 0),
//! logs (none), any other health (as set by the test).
//!
//! Its clock moves only with [`FakeEngine::advance`], which advances paused tokio time by as much:
//! the embedded store's writes wait on a thread, and paused tokio time auto-advances to the next
//! timer meanwhile, so tokio's clock alone would not give exact delays.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::docker::{
    ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, ContainerSummary, DockerError,
    DockerResult, Engine, ExecOutcome, ExecSpec, HealthStatus, ImageInfo, LogLine, NetworkAttachment,
    ObservedContainer, ObservedNetwork, ProcessInfo, PullProgress, RegistryDigest, RemoveOptions, Resources,
    RestartPolicy, RestartPolicyKind,
};

#[derive(Debug, Default)]
struct State {
    /// By ID.
    containers: BTreeMap<String, ObservedContainer>,
    /// Network name to its labels.
    networks: BTreeMap<String, BTreeMap<String, String>>,
    /// By reference and by ID.
    images: BTreeMap<String, ImageInfo>,
    /// `method` or `method:argument` to the number of calls.
    calls: BTreeMap<String, usize>,
    /// Method to the error its next call returns (each scripted failure is used once).
    failures: BTreeMap<&'static str, Vec<DockerError>>,
    crash_on_start: Option<i64>,
    /// Set: containers ignore SIGTERM (a `sleep` as PID 1), so stopping a running one takes its
    /// stop timeout, this long when the call names none.
    ignores_sigterm: Option<Duration>,
    next_id: u64,
}

/// Something that happens elsewhere while a reconcile waits on the engine.
struct Hook(Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Hook")
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct FakeEngine {
    state: Mutex<State>,
    /// Run inside the next `list_containers`, before it answers (see [`FakeEngine::during_next_list`]).
    list_hook: Mutex<Option<Hook>>,
    /// The engine's clock.
    clock: Mutex<DateTime<Utc>>,
    /// Whether [`Engine::now`] is the machine's clock rather than `clock` ([`SimEngine`]).
    real_clock: bool,
}

impl FakeEngine {
    /// An engine holding the planner tests' image (`kedge-test/app:v1`), at 2026-12-01T00:00:00Z.
    #[cfg(test)]
    pub(crate) fn new() -> FakeEngine {
        let engine = FakeEngine::empty(false);
        engine.add_image("kedge-test/app:v1", crate::planner::tests::image());
        engine
    }

    /// An engine without images, on the machine's clock when `real_clock`, else at
    /// 2026-12-01T00:00:00Z until [`FakeEngine::advance`].
    pub fn empty(real_clock: bool) -> FakeEngine {
        FakeEngine {
            state: Mutex::default(),
            list_hook: Mutex::default(),
            clock: Mutex::new(
                DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z").expect("a time").with_timezone(&Utc),
            ),
            real_clock,
        }
    }

    /// Moves the engine's clock and paused tokio time forward by `by`.
    #[cfg(test)]
    pub async fn advance(&self, by: Duration) {
        {
            let mut clock = self.clock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            *clock += chrono::Duration::from_std(by).expect("a test's duration");
        }
        tokio::time::advance(by).await;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn add_image(&self, reference: &str, image: ImageInfo) {
        let mut state = self.state();
        state.images.insert(image.id.clone(), image.clone());
        state.images.insert(reference.to_owned(), image);
    }

    /// How many containers are running.
    pub fn running(&self) -> usize {
        self.state().containers.values().filter(|c| c.state.running).count()
    }

    /// Puts a container on the engine as it is (any labels: a foreign one too).
    pub fn add_container(&self, container: ObservedContainer) {
        self.state().containers.insert(container.id.clone(), container);
    }

    /// The container of this ID or name, as inspect shows it.
    pub fn container(&self, id_or_name: &str) -> Option<ObservedContainer> {
        find(&self.state(), id_or_name).cloned()
    }

    /// Every container's name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.state().containers.values().map(|c| c.name.clone()).collect();
        names.sort();
        names
    }

    /// The labels of the network of this name, if the engine has one.
    pub fn network(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.state().networks.get(name).cloned()
    }

    /// How many calls of `method` (`"inspect_container"`) or of `method:argument`
    /// (`"inspect_container:db"`) were made.
    pub fn calls(&self, what: &str) -> usize {
        self.state().calls.get(what).copied().unwrap_or(0)
    }

    /// Runs `hook` inside the next `list_containers` call, before it answers: a cache catching up
    /// while a reconcile reads the engine.
    pub fn during_next_list(&self, hook: impl FnOnce() + Send + 'static) {
        *self.list_hook.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Hook(Box::new(hook)));
    }

    /// The next call of `method` fails with `error`.
    pub fn fail_next(&self, method: &'static str, error: DockerError) {
        self.state().failures.entry(method).or_default().push(error);
    }

    /// From now on, a stop waits `default_stop_timeout` (or the call's own) before the container
    /// exits: a PID 1 that ignores SIGTERM.
    pub fn containers_ignore_sigterm(&self, default_stop_timeout: Duration) {
        self.state().ignores_sigterm = Some(default_stop_timeout);
    }

    /// From now on, a started container exits at once with `exit_code` (a crash loop).
    pub fn crash_on_start(&self, exit_code: i64) {
        self.state().crash_on_start = Some(exit_code);
    }

    fn now_text(&self) -> String {
        Engine::now(self).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// Counts the call and returns its scripted failure, if any.
    fn call(&self, method: &'static str, argument: &str) -> DockerResult<std::sync::MutexGuard<'_, State>> {
        let mut state = self.state();
        *state.calls.entry(method.to_owned()).or_default() += 1;
        *state.calls.entry(format!("{method}:{argument}")).or_default() += 1;
        if let Some(error) = state.failures.get_mut(method).and_then(|queued| queued.pop()) {
            return Err(error);
        }
        Ok(state)
    }

    fn with_container<T>(
        &self,
        method: &'static str,
        id: &str,
        change: impl FnOnce(&mut ObservedContainer, &str) -> T,
    ) -> DockerResult<T> {
        let now = self.now_text();
        let mut state = self.call(method, id)?;
        let crash = state.crash_on_start;
        let container = find_mut(&mut state, id).ok_or_else(|| not_found(id))?;
        let result = change(container, &now);
        if method == "start_container" || method == "restart_container" {
            if let Some(code) = crash {
                set_exited(container, code, &now);
            }
        }
        Ok(result)
    }
}

fn find<'a>(state: &'a State, id_or_name: &str) -> Option<&'a ObservedContainer> {
    state.containers.get(id_or_name).or_else(|| state.containers.values().find(|c| c.name == id_or_name))
}

fn find_mut<'a>(state: &'a mut State, id_or_name: &str) -> Option<&'a mut ObservedContainer> {
    let id = find(state, id_or_name)?.id.clone();
    state.containers.get_mut(&id)
}

fn not_found(what: &str) -> DockerError {
    DockerError::NotFound { message: format!("no such container: {what}") }
}

fn set_running(container: &mut ObservedContainer, now: &str) {
    container.state.status = ContainerStatus::Running;
    container.state.running = true;
    container.state.restarting = false;
    container.state.started_at = Some(now.to_owned());
    if container.healthcheck.as_ref().is_some_and(|check| !check.is_disabled()) {
        container.state.health = Some(HealthStatus::Healthy);
    }
}

fn set_exited(container: &mut ObservedContainer, code: i64, now: &str) {
    container.state.status = ContainerStatus::Exited;
    container.state.running = false;
    container.state.exit_code = Some(code);
    container.state.finished_at = Some(now.to_owned());
}

fn matches(container: &ObservedContainer, filter: &ContainerFilter) -> bool {
    let labels_match = filter.labels.iter().all(|wanted| match wanted.split_once('=') {
        Some((key, value)) => container.labels.get(key).map(String::as_str) == Some(value),
        None => container.labels.contains_key(wanted),
    });
    labels_match && filter.name.as_ref().is_none_or(|name| container.name.contains(name.as_str()))
}

fn summary(container: &ObservedContainer) -> ContainerSummary {
    ContainerSummary {
        id: container.id.clone(),
        name: container.name.clone(),
        image: container.image.clone(),
        image_id: container.image_id.clone(),
        state: if container.state.running { "running" } else { "exited" }.to_owned(),
        labels: container.labels.clone(),
        health: container.state.health.filter(|_| container.state.running),
    }
}

fn ready<'a, T: Send + 'a>(value: DockerResult<T>) -> BoxFuture<'a, DockerResult<T>> {
    Box::pin(std::future::ready(value))
}

impl Engine for FakeEngine {
    fn api_version(&self) -> String {
        "1.47".to_owned()
    }

    fn now(&self) -> DateTime<Utc> {
        if self.real_clock {
            return Utc::now();
        }
        *self.clock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn list_containers<'a>(
        &'a self,
        filter: &'a ContainerFilter,
    ) -> BoxFuture<'a, DockerResult<Vec<ContainerSummary>>> {
        let hook = self.list_hook.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(Hook(hook)) = hook {
            hook();
        }
        ready(
            self.call("list_containers", "")
                .map(|state| state.containers.values().filter(|c| matches(c, filter)).map(summary).collect()),
        )
    }

    /// Newest first by ID: the fake hands its IDs out in order.
    fn list_containers_page<'a>(
        &'a self,
        filter: &'a ContainerFilter,
        limit: usize,
        before: Option<&'a str>,
    ) -> BoxFuture<'a, DockerResult<Vec<ContainerSummary>>> {
        ready(self.call("list_containers_page", before.unwrap_or("")).and_then(|state| {
            let before = match before {
                Some(before) => Some(find(&state, before).ok_or_else(|| not_found(before))?.id.clone()),
                None => None,
            };
            Ok(state
                .containers
                .values()
                .rev()
                .filter(|c| before.as_ref().is_none_or(|before| c.id < *before) && matches(c, filter))
                .take(limit)
                .map(summary)
                .collect())
        }))
    }

    fn inspect_container<'a>(
        &'a self,
        id_or_name: &'a str,
    ) -> BoxFuture<'a, DockerResult<Option<ObservedContainer>>> {
        ready(self.call("inspect_container", id_or_name).map(|state| find(&state, id_or_name).cloned()))
    }

    fn inspect_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, DockerResult<Option<ImageInfo>>> {
        ready(self.call("inspect_image", reference).map(|state| state.images.get(reference).cloned()))
    }

    fn registry_digest<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, DockerResult<RegistryDigest>> {
        ready(self.call("registry_digest", reference).and_then(|state| {
            let image = state.images.get(reference).ok_or_else(|| not_found(reference))?;
            Ok(RegistryDigest { digest: image.id.clone(), media_type: None })
        }))
    }

    fn pull<'a>(
        &'a self,
        reference: &'a str,
        _on_progress: &'a mut (dyn FnMut(PullProgress) + Send),
    ) -> BoxFuture<'a, DockerResult<()>> {
        ready(self.call("pull", reference).map(|_| ()))
    }

    fn create_container<'a>(&'a self, config: &'a ContainerConfig) -> BoxFuture<'a, DockerResult<String>> {
        ready(self.call("create_container", &config.name).and_then(|mut state| {
            if find(&state, &config.name).is_some() {
                return Err(DockerError::Conflict { message: format!("the name {} is in use", config.name) });
            }
            if let Some(missing) = config.networks.iter().find(|n| !state.networks.contains_key(&n.network)) {
                return Err(DockerError::NotFound {
                    message: format!("network {} not found", missing.network),
                });
            }
            let image = state.images.get(&config.image).cloned().ok_or_else(|| DockerError::NotFound {
                message: format!("no such image: {}", config.image),
            })?;
            state.next_id += 1;
            let id = format!("{:064x}", state.next_id);
            let mut container = created_with_id(config, &image, &id);
            container.state = ContainerState { status: ContainerStatus::Created, ..Default::default() };
            state.containers.insert(id.clone(), container);
            Ok(id)
        }))
    }

    fn start_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<()>> {
        ready(self.with_container("start_container", id, |container, now| {
            if !container.state.running {
                set_running(container, now);
            }
        }))
    }

    fn stop_container<'a>(
        &'a self,
        id: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, DockerResult<()>> {
        let running = self.container(id).is_some_and(|container| container.state.running);
        let grace =
            self.state().ignores_sigterm.filter(|_| running).map(|default| timeout.unwrap_or(default));
        Box::pin(async move {
            if let Some(grace) = grace {
                tokio::time::sleep(grace).await;
            }
            self.with_container("stop_container", id, |container, now| {
                if container.state.running {
                    set_exited(container, 0, now);
                }
            })
        })
    }

    fn restart_container<'a>(
        &'a self,
        id: &'a str,
        _timeout: Option<Duration>,
    ) -> BoxFuture<'a, DockerResult<()>> {
        ready(self.with_container("restart_container", id, set_running))
    }

    fn unpause_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<()>> {
        ready(self.with_container("unpause_container", id, |container, _| {
            container.state.status = ContainerStatus::Running;
        }))
    }

    fn rename_container<'a>(&'a self, id: &'a str, new_name: &'a str) -> BoxFuture<'a, DockerResult<()>> {
        ready(
            self.with_container("rename_container", id, |container, _| container.name = new_name.to_owned()),
        )
    }

    fn remove_container<'a>(
        &'a self,
        id: &'a str,
        options: RemoveOptions,
    ) -> BoxFuture<'a, DockerResult<()>> {
        ready(self.call("remove_container", id).and_then(|mut state| {
            let found = find(&state, id).cloned().ok_or_else(|| not_found(id))?;
            if found.state.running && !options.force {
                return Err(DockerError::Conflict { message: format!("container {id} is running") });
            }
            state.containers.remove(&found.id);
            Ok(())
        }))
    }

    fn update_resources<'a>(
        &'a self,
        id: &'a str,
        resources: &'a Resources,
    ) -> BoxFuture<'a, DockerResult<()>> {
        ready(
            self.with_container("update_resources", id, |container, _| {
                container.resources = resources.clone()
            }),
        )
    }

    fn connect_network<'a>(
        &'a self,
        id: &'a str,
        network: &'a NetworkAttachment,
    ) -> BoxFuture<'a, DockerResult<()>> {
        if !self.state().networks.contains_key(&network.network) {
            return ready(Err(DockerError::NotFound {
                message: format!("network {} not found", network.network),
            }));
        }
        ready(self.with_container("connect_network", id, |container, _| {
            container
                .networks
                .push(ObservedNetwork { network: network.network.clone(), ..Default::default() });
        }))
    }

    fn disconnect_network<'a>(
        &'a self,
        id: &'a str,
        network: &'a str,
        _force: bool,
    ) -> BoxFuture<'a, DockerResult<()>> {
        ready(self.with_container("disconnect_network", id, |container, _| {
            container.networks.retain(|attached| attached.network != network);
        }))
    }

    fn ensure_network<'a>(
        &'a self,
        name: &'a str,
        _subnet: Option<&'a str>,
        labels: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, DockerResult<String>> {
        ready(self.call("ensure_network", name).map(|mut state| {
            state.networks.entry(name.to_owned()).or_insert_with(|| labels.clone());
            format!("id-{name}")
        }))
    }

    fn exec<'a>(&'a self, id: &'a str, _spec: &'a ExecSpec) -> BoxFuture<'a, DockerResult<ExecOutcome>> {
        ready(self.call("exec", id).map(|_| ExecOutcome { exit_code: Some(0), output: String::new() }))
    }

    fn exec_detached<'a>(&'a self, id: &'a str, _spec: &'a ExecSpec) -> BoxFuture<'a, DockerResult<String>> {
        ready(self.call("exec_detached", id).map(|_| "exec-id".to_owned()))
    }

    fn top<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<Vec<ProcessInfo>>> {
        ready(self.call("top", id).map(|_| Vec::new()))
    }

    fn is_process_running<'a>(
        &'a self,
        id: &'a str,
        _cmd: &'a [String],
    ) -> BoxFuture<'a, DockerResult<bool>> {
        ready(self.call("is_process_running", id).map(|_| false))
    }

    fn remove_image_if_unused<'a>(&'a self, image_id: &'a str) -> BoxFuture<'a, DockerResult<bool>> {
        ready(self.call("remove_image_if_unused", image_id).map(|_| false))
    }

    fn logs<'a>(&'a self, id: &'a str, _tail: usize) -> BoxFuture<'a, DockerResult<Vec<LogLine>>> {
        ready(self.call("logs", id).map(|_| Vec::new()))
    }

    fn wait_for_exit<'a>(&'a self, id: &'a str, timeout: Duration) -> BoxFuture<'a, DockerResult<i64>> {
        ready(self.call("wait_for_exit", id).and_then(|state| match find(&state, id) {
            Some(container) if !container.state.running => Ok(container.state.exit_code.unwrap_or(0)),
            Some(_) => Err(DockerError::Timeout { what: format!("{id} to exit"), after: timeout }),
            None => Err(not_found(id)),
        }))
    }
}

/// What inspect reports for a container the engine created from `config` on `image`, running, with
/// the container ID `id` (its short form is the default hostname): image defaults merged, swap twice
/// the memory, hostname alias, default bridge, restart policy `no`. The planner's unit tests use it
/// as their engine too; the end-to-end tests in tests/tests/drift_*.rs check the real engine agrees.
pub fn created_with_id(config: &ContainerConfig, image: &ImageInfo, id: &str) -> ObservedContainer {
    let mut env = image.env.clone();
    for entry in &config.env {
        let key = entry.split('=').next().unwrap_or_default();
        env.retain(|existing| existing.split('=').next() != Some(key));
        env.push(entry.clone());
    }
    let entrypoint = config.entrypoint.clone().or_else(|| image.entrypoint.clone());
    let cmd = match (&config.cmd, &config.entrypoint) {
        (Some(cmd), _) if !cmd.is_empty() => Some(cmd.clone()),
        (_, Some(entrypoint)) if !entrypoint.is_empty() => None,
        _ => image.cmd.clone(),
    };
    let mut labels = image.labels.clone();
    labels.extend(config.labels.clone());
    let short = &id[..id.len().min(12)];
    let hostname = config.hostname.clone().unwrap_or_else(|| short.to_owned());
    let networks = if config.networks.is_empty() {
        vec![ObservedNetwork { network: "bridge".to_owned(), ..ObservedNetwork::default() }]
    } else {
        let mut networks: Vec<ObservedNetwork> = config
            .networks
            .iter()
            .map(|attachment| ObservedNetwork {
                network: attachment.network.clone(),
                network_id: Some(format!("id-{}", attachment.network)),
                aliases: attachment.aliases.iter().cloned().chain([hostname.clone()]).collect(),
                ipv4_address: attachment.ipv4_address.clone(),
                ip_address: Some("10.0.0.2".to_owned()),
            })
            .collect();
        networks.sort_by(|a, b| a.network.cmp(&b.network));
        networks
    };
    let mut resources = config.resources.clone();
    if let (Some(memory), None) = (resources.memory, resources.memory_swap) {
        resources.memory_swap = Some(memory * 2);
    }
    let mut mounts = config.mounts.clone();
    mounts.sort();
    let mut port_bindings = config.port_bindings.clone();
    port_bindings.sort();
    ObservedContainer {
        id: id.to_owned(),
        name: config.name.clone(),
        image: config.image.clone(),
        image_id: image.id.clone(),
        created: Some("2026-11-21T22:00:00Z".to_owned()),
        state: ContainerState {
            status: ContainerStatus::Running,
            running: true,
            exit_code: Some(0),
            ..ContainerState::default()
        },
        labels,
        env: env.into(),
        cmd,
        entrypoint,
        working_dir: config.working_dir.clone().or_else(|| image.working_dir.clone()),
        user: config.user.clone().or_else(|| image.user.clone()),
        hostname: Some(hostname.clone()),
        exposed_ports: image.exposed_ports.clone(),
        port_bindings,
        mounts,
        volumes: Vec::new(),
        config_volumes: Vec::new(),
        restart_policy: Some(
            config.restart_policy.unwrap_or(RestartPolicy { kind: RestartPolicyKind::No, max_retries: 0 }),
        ),
        resources,
        healthcheck: config.healthcheck.clone().or_else(|| image.healthcheck.clone()),
        stop_signal: config.stop_signal.clone().or_else(|| image.stop_signal.clone()),
        stop_timeout: config.stop_timeout,
        cap_add: config.cap_add.clone(),
        cap_drop: config.cap_drop.clone(),
        privileged: config.privileged,
        read_only_rootfs: config.read_only_rootfs,
        // The engine reports its default IPC mode as if declared.
        isolation: crate::docker::Isolation {
            ipc_mode: config.isolation.ipc_mode.clone().or_else(|| Some("private".to_owned())),
            ..config.isolation.clone()
        },
        // The engine reports its default `/dev/shm` size as if declared.
        process: crate::docker::ProcessSettings {
            shm_size: config.process.shm_size.or(Some(64 << 20)),
            ..config.process.clone()
        },
        log_config: Some(config.log_config.clone().unwrap_or(crate::docker::LogConfig {
            driver: "json-file".to_owned(),
            options: BTreeMap::new(),
        })),
        network_mode: Some(
            config.network_mode.clone().unwrap_or_else(|| {
                config.networks.first().map_or("default".to_owned(), |n| n.network.clone())
            }),
        ),
        networks: match config.network_mode.as_deref() {
            Some(mode) if mode.starts_with("container:") => Vec::new(),
            Some(mode) => vec![ObservedNetwork { network: mode.to_owned(), ..ObservedNetwork::default() }],
            None => networks,
        },
        links: config
            .links
            .iter()
            .map(|link| {
                let (target, alias) = link.split_once(':').expect("NAME:ALIAS");
                format!("/{target}:/{}/{alias}", config.name)
            })
            .collect(),
    }
}

/// How long each call of a [`SimEngine`] takes before it answers. [`Latencies::realistic`] is
/// what `kedge-bench scale` uses: a local Docker Engine's typical figures on an idle host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// Lists and inspects (containers, images), and the other reads.
    pub read: Duration,
    pub create: Duration,
    pub start: Duration,
    /// Stop once the process has exited on its signal (not the stop grace of a process that ignores it).
    pub stop: Duration,
    pub remove: Duration,
    /// Renames, updates, network (dis)connects, restarts.
    pub other: Duration,
}

impl Latencies {
    /// Reads 5 ms, create 50 ms, start 150 ms, stop 100 ms, remove 30 ms, anything else 20 ms.
    pub fn realistic() -> Latencies {
        Latencies {
            read: Duration::from_millis(5),
            create: Duration::from_millis(50),
            start: Duration::from_millis(150),
            stop: Duration::from_millis(100),
            remove: Duration::from_millis(30),
            other: Duration::from_millis(20),
        }
    }
}

/// A [`FakeEngine`] on the machine's clock whose calls take [`Latencies`], and which notes when each
/// change to a container began: the host of the scale simulation (`kedge-bench scale`).
#[derive(Debug)]
pub struct SimEngine {
    inner: FakeEngine,
    latencies: Latencies,
    /// Container name and when a call that changes it (create, start, stop, remove, rename, ...)
    /// was made, in order.
    changes: Mutex<Vec<(String, std::time::Instant)>>,
}

impl SimEngine {
    /// An engine holding `images` (reference and what inspect reports of it).
    pub fn new(latencies: Latencies, images: &[(&str, ImageInfo)]) -> SimEngine {
        let inner = FakeEngine::empty(true);
        for (reference, image) in images {
            inner.add_image(reference, image.clone());
        }
        SimEngine { inner, latencies, changes: Mutex::default() }
    }

    /// The engine underneath (its containers, its call counts).
    pub fn engine(&self) -> &FakeEngine {
        &self.inner
    }

    /// When the first change at or after `since` to a container whose name begins with `name` (a
    /// recreate's temporary names do) began, if one did.
    pub fn first_change_since(&self, name: &str, since: std::time::Instant) -> Option<std::time::Instant> {
        let changes = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        changes.iter().find(|(changed, at)| changed.starts_with(name) && *at >= since).map(|(_, at)| *at)
    }

    /// Notes a change to the container `id_or_name` (its name, when the engine knows it).
    fn changing(&self, id_or_name: &str) {
        let name = self.inner.container(id_or_name).map_or_else(|| id_or_name.to_owned(), |c| c.name);
        let mut changes = self.changes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        changes.push((name, std::time::Instant::now()));
    }

    /// `call` on the inner engine after `delay`.
    fn after<'a, T: Send + 'a>(
        &'a self,
        delay: Duration,
        call: impl FnOnce(&'a FakeEngine) -> BoxFuture<'a, DockerResult<T>> + Send + 'a,
    ) -> BoxFuture<'a, DockerResult<T>> {
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            call(&self.inner).await
        })
    }

    /// Notes the change to `id` now, then `call` after `delay`.
    fn change<'a, T: Send + 'a>(
        &'a self,
        id: &str,
        delay: Duration,
        call: impl FnOnce(&'a FakeEngine) -> BoxFuture<'a, DockerResult<T>> + Send + 'a,
    ) -> BoxFuture<'a, DockerResult<T>> {
        self.changing(id);
        self.after(delay, call)
    }
}

impl Engine for SimEngine {
    fn api_version(&self) -> String {
        self.inner.api_version()
    }
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn list_containers<'a>(
        &'a self,
        filter: &'a ContainerFilter,
    ) -> BoxFuture<'a, DockerResult<Vec<ContainerSummary>>> {
        self.after(self.latencies.read, move |e| e.list_containers(filter))
    }
    fn list_containers_page<'a>(
        &'a self,
        filter: &'a ContainerFilter,
        limit: usize,
        before: Option<&'a str>,
    ) -> BoxFuture<'a, DockerResult<Vec<ContainerSummary>>> {
        self.after(self.latencies.read, move |e| e.list_containers_page(filter, limit, before))
    }
    fn inspect_container<'a>(
        &'a self,
        id_or_name: &'a str,
    ) -> BoxFuture<'a, DockerResult<Option<ObservedContainer>>> {
        self.after(self.latencies.read, move |e| e.inspect_container(id_or_name))
    }
    fn inspect_image<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, DockerResult<Option<ImageInfo>>> {
        self.after(self.latencies.read, move |e| e.inspect_image(reference))
    }
    fn registry_digest<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, DockerResult<RegistryDigest>> {
        self.after(self.latencies.read, move |e| e.registry_digest(reference))
    }
    fn pull<'a>(
        &'a self,
        reference: &'a str,
        on_progress: &'a mut (dyn FnMut(PullProgress) + Send),
    ) -> BoxFuture<'a, DockerResult<()>> {
        self.after(self.latencies.other, move |e| e.pull(reference, on_progress))
    }
    fn create_container<'a>(&'a self, config: &'a ContainerConfig) -> BoxFuture<'a, DockerResult<String>> {
        self.change(&config.name, self.latencies.create, move |e| e.create_container(config))
    }
    fn start_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<()>> {
        self.change(id, self.latencies.start, move |e| e.start_container(id))
    }
    fn stop_container<'a>(
        &'a self,
        id: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, DockerResult<()>> {
        self.change(id, self.latencies.stop, move |e| e.stop_container(id, timeout))
    }
    fn restart_container<'a>(
        &'a self,
        id: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, DockerResult<()>> {
        let delay = self.latencies.stop + self.latencies.start;
        self.change(id, delay, move |e| e.restart_container(id, timeout))
    }
    fn unpause_container<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<()>> {
        self.change(id, self.latencies.other, move |e| e.unpause_container(id))
    }
    fn rename_container<'a>(&'a self, id: &'a str, new_name: &'a str) -> BoxFuture<'a, DockerResult<()>> {
        self.change(id, self.latencies.other, move |e| e.rename_container(id, new_name))
    }
    fn remove_container<'a>(
        &'a self,
        id: &'a str,
        options: RemoveOptions,
    ) -> BoxFuture<'a, DockerResult<()>> {
        self.change(id, self.latencies.remove, move |e| e.remove_container(id, options))
    }
    fn update_resources<'a>(
        &'a self,
        id: &'a str,
        resources: &'a Resources,
    ) -> BoxFuture<'a, DockerResult<()>> {
        self.change(id, self.latencies.other, move |e| e.update_resources(id, resources))
    }
    fn connect_network<'a>(
        &'a self,
        id: &'a str,
        network: &'a NetworkAttachment,
    ) -> BoxFuture<'a, DockerResult<()>> {
        self.change(id, self.latencies.other, move |e| e.connect_network(id, network))
    }
    fn disconnect_network<'a>(
        &'a self,
        id: &'a str,
        network: &'a str,
        force: bool,
    ) -> BoxFuture<'a, DockerResult<()>> {
        self.change(id, self.latencies.other, move |e| e.disconnect_network(id, network, force))
    }
    fn ensure_network<'a>(
        &'a self,
        name: &'a str,
        subnet: Option<&'a str>,
        labels: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, DockerResult<String>> {
        self.after(self.latencies.other, move |e| e.ensure_network(name, subnet, labels))
    }
    fn exec<'a>(&'a self, id: &'a str, spec: &'a ExecSpec) -> BoxFuture<'a, DockerResult<ExecOutcome>> {
        self.after(self.latencies.other, move |e| e.exec(id, spec))
    }
    fn exec_detached<'a>(&'a self, id: &'a str, spec: &'a ExecSpec) -> BoxFuture<'a, DockerResult<String>> {
        self.after(self.latencies.other, move |e| e.exec_detached(id, spec))
    }
    fn top<'a>(&'a self, id: &'a str) -> BoxFuture<'a, DockerResult<Vec<ProcessInfo>>> {
        self.after(self.latencies.read, move |e| e.top(id))
    }
    fn is_process_running<'a>(&'a self, id: &'a str, cmd: &'a [String]) -> BoxFuture<'a, DockerResult<bool>> {
        self.after(self.latencies.read, move |e| e.is_process_running(id, cmd))
    }
    fn remove_image_if_unused<'a>(&'a self, image_id: &'a str) -> BoxFuture<'a, DockerResult<bool>> {
        self.after(self.latencies.other, move |e| e.remove_image_if_unused(image_id))
    }
    fn logs<'a>(&'a self, id: &'a str, tail: usize) -> BoxFuture<'a, DockerResult<Vec<LogLine>>> {
        self.after(self.latencies.read, move |e| e.logs(id, tail))
    }
    fn wait_for_exit<'a>(&'a self, id: &'a str, timeout: Duration) -> BoxFuture<'a, DockerResult<i64>> {
        self.after(self.latencies.read, move |e| e.wait_for_exit(id, timeout))
    }
}
