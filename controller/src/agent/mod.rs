//! The agent: keeps every spec placed on one Docker host reconciled.
//!
//! Sources ([`sources`]) feed keys into one [`WorkQueue`]; a fixed number of workers take keys and
//! [`reconcile`] each from the latest state; [`status`] turns the outcome into conditions, written
//! only when they change; [`crate::events`] records what was done.
//!
//! Promises:
//! - One key is never reconciled by two workers at once; a failing key backs off on its own.
//! - Losing the store is not an instruction: the agent keeps repairing from the last specs it read
//!   and removes nothing until it has read the store successfully again ([`cache`]).
//! - Only one agent acts for a Docker host: it holds the host's lock (a leased key) while it runs.
//! - Shutdown finishes the reconcile in flight (a recreate completes or rolls back) before it returns.
//! - On start, recreates interrupted by a crash are finished or rolled back before anything else.
//! - Every long-lived task runs under [`supervisor`]: a panic or an early return is logged and the
//!   task restarted with backoff; one that keeps dying makes `/healthz` answer 503. A panic inside one
//!   reconcile is that key's failure (`ReconcilePanicked`), retried with its backoff.

pub mod bindings;
pub mod cache;
pub mod host;
mod identity;
mod limits;
mod lock;
pub mod placements;
pub mod policies;
mod pulls;
mod reconcile;
mod report;
pub mod requests;
pub mod secrets;
mod snapshot;
mod soak;
mod sources;
pub mod status;
pub mod supervisor;
mod updates;
pub mod upgrade;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kedge_crds::ContainerStatus;
use tokio_util::sync::CancellationToken;

use crate::docker::{DockerClient, DockerError};
use crate::events::EventRecorder;
use crate::executor::{base_name_of_key, is_recreate_name_of, Executor, RecoveryScope, RecreateStrategy};
use crate::queue::{BackoffConfig, WorkQueue};
use crate::store::{SharedStore, StoreError};

pub use cache::DesiredState;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The host this agent reconciles for: specs placed elsewhere are left to other agents.
    pub host_name: String,
    /// This host's labels, matched against specs' host selectors.
    pub host_labels: BTreeMap<String, String>,
    /// How many keys are reconciled at once.
    pub workers: usize,
    /// How often every key is reconciled even without an event (watches and event streams can drop).
    pub resync_interval: Duration,
    /// Backoff of failing keys.
    pub backoff: BackoffConfig,
    /// How often a spec waiting for its dependencies looks again.
    pub dependency_poll: Duration,
    /// How often a container whose name a foreign container holds is looked at again.
    pub conflict_poll: Duration,
    /// How long a host must be NotReady before the scheduler moves its specs to other hosts.
    pub scheduler_grace: Duration,
    /// Counters the agent keeps while it runs, for tests, benchmarks and health reporting.
    pub stats: Arc<AgentStats>,
    /// The container this agent runs in (ID or name), when finding it by itself would not work
    /// (see [`host::find_own_container`]).
    pub container: Option<String>,
    /// Work handed to this agent from outside (the API's recreate of a managed container), run in
    /// the key's worker. Shared: clone the `Arc` for the API before `run`.
    pub requests: Arc<requests::AgentRequests>,
    /// Image repositories an upgrade campaign may move this agent to besides the one it runs
    /// (`kedge agent --upgrade-repository`; see [`crate::upgrade::check_repository`]).
    pub upgrade_repositories: Vec<String>,
    /// Rewritten after every heartbeat that reached the store; the container image's healthcheck
    /// reads its age (docs/upgrades.md).
    pub ready_file: Option<std::path::PathBuf>,
    /// The deaths of the agent's long-lived tasks, which `/healthz` reports. Shared: clone the `Arc`
    /// for the API before `run`.
    pub health: Arc<supervisor::Health>,
    /// The host-escape policy (docs/policy.md): a spec that breaks it is not run, whoever wrote it
    /// to the store. The API enforces the same settings on writes. The default level and the state
    /// directory; the levels stored per namespace are followed from the store.
    pub policy: kedge_crds::PolicySettings,
    /// The Prometheus metrics this agent counts (docs/metrics.md). Shared: clone the `Arc` for the
    /// API before `run`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether this agent's scheduler, when it leads, keeps every host's placements
    /// (`controllers/projection.rs`). Always on in kedge; tests of the migration turn it off to lead
    /// as an agent from before placements did.
    pub project_placements: bool,
    /// How long the placements marker may go without naming the current leader's term (an older
    /// kedge leads and does not keep the placements, nobody leads, or the marker is gone) before
    /// this agent follows every spec and binding again ([`placements`]). A new leader marks them
    /// within its first complete pass, so an ordinary change of leader stays well within it.
    pub placements_grace: Duration,
}

/// What an agent has done so far. Shared: clone the `Arc` from the config before `run`.
#[derive(Debug, Default)]
pub struct AgentStats {
    reconciles: AtomicU64,
    in_flight: AtomicU64,
    failures: AtomicU64,
    actions: Mutex<BTreeMap<&'static str, u64>>,
    /// The agent follows its host's placements, not every spec and binding ([`placements`]).
    placements: std::sync::atomic::AtomicBool,
}

/// A point-in-time copy of [`AgentStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Reconciles finished (successful or not).
    pub reconciles: u64,
    /// Reconciles running now.
    pub in_flight: u64,
    pub failures: u64,
    /// Actions carried out, by kind (`Create`, `Recreate`, `Start`, `UpdateInPlace`, ...).
    pub actions: BTreeMap<&'static str, u64>,
}

impl StatsSnapshot {
    pub fn actions_of(&self, kind: &str) -> u64 {
        self.actions.get(kind).copied().unwrap_or(0)
    }
}

impl AgentStats {
    /// Whether the agent follows its host's placements only (once the leader marked them complete).
    pub fn follows_placements(&self) -> bool {
        self.placements.load(Ordering::SeqCst)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            reconciles: self.reconciles.load(Ordering::SeqCst),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            failures: self.failures.load(Ordering::SeqCst),
            actions: self.actions.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone(),
        }
    }

    pub(crate) fn action(&self, kind: &'static str) {
        *self.actions.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).entry(kind).or_default() += 1;
    }
}

impl AgentConfig {
    pub fn new(host_name: impl Into<String>) -> AgentConfig {
        AgentConfig {
            host_name: host_name.into(),
            host_labels: BTreeMap::new(),
            workers: 8,
            resync_interval: Duration::from_secs(300),
            backoff: BackoffConfig::default(),
            dependency_poll: Duration::from_secs(1),
            conflict_poll: Duration::from_secs(15),
            scheduler_grace: Duration::from_secs(30),
            stats: Arc::default(),
            requests: Arc::default(),
            container: None,
            ready_file: None,
            health: Arc::default(),
            upgrade_repositories: Vec::new(),
            policy: kedge_crds::PolicySettings::default(),
            metrics: Arc::default(),
            project_placements: true,
            placements_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("docker engine: {0}")]
    Docker(#[from] DockerError),
    #[error("another agent holds the lock of host {host:?}")]
    LockLost { host: String },
}

/// Everything the workers share.
pub(crate) struct Agent {
    pub(crate) store: SharedStore,
    /// The store's identity, stamped on every container this agent makes.
    pub(crate) store_id: String,
    pub(crate) docker: DockerClient,
    pub(crate) executor: Executor,
    pub(crate) cache: Arc<DesiredState>,
    /// Where the scheduler put the specs that name no host.
    pub(crate) bindings: Arc<bindings::BindingCache>,
    /// The policy levels stored per namespace (`kedge policy set`).
    pub(crate) policies: Arc<policies::PolicyCache>,
    /// The secrets specs name in `secretEnv`, read just before planning.
    pub(crate) secrets: Arc<secrets::SecretCache>,
    pub(crate) queue: WorkQueue<String>,
    pub(crate) events: EventRecorder,
    pub(crate) config: AgentConfig,
    /// The last status written per key, so an unchanged status is not written again.
    pub(crate) statuses: Mutex<HashMap<String, ContainerStatus>>,
    /// Limits the engine accepted but does not apply, per key (see [`limits`]).
    pub(crate) ignored_limits: limits::IgnoredLimits,
    /// The container (ID, last start) each key had at its last reconcile: when it changes, the
    /// keys that follow it (network namespace, links) are enqueued to catch up.
    pub(crate) instances: Mutex<HashMap<String, (String, Option<String>)>>,
    /// Per key: kedge's crash-loop backoff and the engine's restart count last seen.
    pub(crate) restart_memory: Mutex<HashMap<String, KeyRestarts>>,
    /// The last full list of this host's containers, which reconciles read their own containers
    /// from while it answers for them ([`snapshot`]).
    pub(crate) snapshot: Arc<snapshot::EngineSnapshot>,
    /// Registry checks of the update policy (updates.rs), shared by every key so that all the
    /// containers of one image reference cost one request per interval.
    pub(crate) registry: crate::registry::RegistryClient,
}

impl Agent {
    /// Whether the caches follow this host's placements only (see [`placements`]): then a spec
    /// missing from them may run on another host rather than be deleted.
    pub(crate) fn follows_placements(&self) -> bool {
        self.config.stats.follows_placements()
    }

    /// An agent with empty caches; `executor` carries its actions out (over `docker`'s engine, or
    /// in unit tests an in-memory one).
    pub(crate) fn new(
        store: SharedStore,
        store_id: String,
        docker: DockerClient,
        executor: Executor,
        config: AgentConfig,
    ) -> Agent {
        Agent {
            executor,
            events: EventRecorder::new(store.clone(), config.host_name.clone()),
            cache: Arc::new(DesiredState::default()),
            bindings: Arc::new(bindings::BindingCache::default()),
            policies: Arc::new(policies::PolicyCache::default()),
            secrets: Arc::new(secrets::SecretCache::default()),
            queue: WorkQueue::new(config.backoff),
            statuses: Mutex::new(HashMap::new()),
            ignored_limits: limits::IgnoredLimits::default(),
            instances: Mutex::new(HashMap::new()),
            restart_memory: Mutex::new(HashMap::new()),
            snapshot: Arc::default(),
            registry: crate::registry::RegistryClient::new(docker.registry_auth()),
            store_id,
            store,
            docker,
            config,
        }
    }
}

/// What the agent remembers of one key's restarts between reconciles (see [`crate::restarts`]).
#[derive(Debug, Default)]
pub(crate) struct KeyRestarts {
    pub(crate) backoff: Option<crate::restarts::BackoffState>,
    /// The container and its engine `RestartCount` at the last status.
    pub(crate) engine_restarts: Option<(String, i64)>,
}

/// How long the workers wait at start for the first lists of specs, bindings and policy levels.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// How long a stopping agent waits for the old containers that start-first recreates are
/// stopping in the background (executor/retire.rs).
const RETIREMENTS_ON_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs an agent until `shutdown` is cancelled, then finishes the reconciles in flight and returns.
pub async fn run(
    store: SharedStore,
    docker: DockerClient,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    // Before anything is locked or written: on Podman the agent would recreate without end.
    docker.refuse_on_podman("the agent")?;
    let host_lock = tokio::select! {
        lock = lock::HostLock::acquire(store.clone(), &config.host_name) => lock?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let store_id = identity::store_identity(store.as_ref()).await?;
    tracing::info!(host = %config.host_name, store = %store_id, engine_api = %docker.api_version(), "agent starting");

    let executor = Executor::new(docker.clone());
    let agent = Arc::new(Agent::new(store, store_id, docker, executor, config));
    agent.config.metrics.attach(Arc::downgrade(&agent) as std::sync::Weak<dyn crate::metrics::Sampler>);

    // A little before the list, for an engine whose clock is a little behind this one's.
    let listed_since = std::time::SystemTime::now() - Duration::from_secs(2);
    agent.start_from_snapshot().await?;
    let identity = host::identify(&agent.docker, agent.config.container.as_deref()).await;
    tracing::info!(version = %identity.version, container = identity.container.as_ref().map_or("none", |c| c.name.as_str()), "agent identity");

    // Sources stop on `stopping`; the lock's loss stops everything too.
    let stopping = shutdown.child_token();
    let tasks = spawn_tasks(&agent, identity, listed_since, &stopping);
    agent.config.requests.attach(agent.queue.clone());
    // Reconciles that run before the specs, bindings and policy levels were first read decide
    // nothing and look again later: at a cold start over hundreds of containers that doubled the
    // work. Wait for the first lists, but not for long: a store that does not answer is no reason
    // to leave the host unrepaired (nothing is removed before a cache is in sync anyway).
    tokio::select! {
        _ = agent.caches_listed(FIRST_LIST_WAIT) => {}
        _ = shutdown.cancelled() => {}
    }
    let workers = spawn_workers(&agent, &stopping);
    serve_until_stopped(&agent, host_lock, &shutdown, &stopping, workers, tasks).await
}

/// The agent's workers, each under [`supervisor::supervise`]. A reconcile's panic is caught in
/// `work`; the supervisor restarts a worker that died outside one. Workers end when the queue shuts
/// down, after `stopping` is cancelled: not a death.
fn spawn_workers(agent: &Arc<Agent>, stopping: &CancellationToken) -> tokio::task::JoinSet<()> {
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..agent.config.workers.max(1) {
        let agent = agent.clone();
        let (health, token) = (agent.config.health.clone(), stopping.clone());
        workers.spawn(supervisor::supervise("worker", health, token, move || agent.clone().work()));
    }
    workers
}

/// Waits until `shutdown` or the loss of the host's lock, then winds the agent down: the
/// reconciles in flight finished, the old containers of start-first recreates given a while to
/// stop, the tasks ended, repeated events written, the lock released.
async fn serve_until_stopped(
    agent: &Arc<Agent>,
    host_lock: lock::HostLock,
    shutdown: &CancellationToken,
    stopping: &CancellationToken,
    mut workers: tokio::task::JoinSet<()>,
    mut tasks: tokio::task::JoinSet<()>,
) -> Result<(), AgentError> {
    let lock_lost = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = host_lock.lost() => true,
    };
    tracing::info!("agent stopping: finishing the reconciles in flight");
    stopping.cancel();
    agent.queue.shutdown();
    while workers.join_next().await.is_some() {}
    // Old containers of start-first recreates still stopping in the background: let them go, for
    // a while. One cut short keeps its retired name, which the next start's recovery finishes.
    if tokio::time::timeout(RETIREMENTS_ON_SHUTDOWN, agent.executor.wait_retired()).await.is_err() {
        tracing::warn!(
            in_flight = agent.executor.retirements_in_flight(),
            "agent stopping before old containers finished stopping; the next start removes them"
        );
    }
    agent.config.requests.detach();
    while tasks.join_next().await.is_some() {}
    // Repeats of an event wait for the next flush: write them before the process exits.
    agent.events.flush().await;
    host_lock.release().await;
    if lock_lost {
        return Err(AgentError::LockLost { host: agent.config.host_name.clone() });
    }
    tracing::info!("agent stopped");
    Ok(())
}

/// Runs an agent over an in-memory engine ([`crate::docker::fake::SimEngine`]) until `shutdown`, as
/// [`run`] does over Docker, for the scale simulation (`kedge-bench scale`): the host lock, the
/// store's identity, the host's registration, the store's specs, bindings, policies and secrets
/// followed, the scheduler, the workers. Left out, because they need a real engine: the engine's
/// event stream and the periodic resync over it (nothing drifts in memory), the recovery of
/// interrupted recreates (a simulated host starts empty), the agent's own upgrades.
#[cfg(feature = "sim")]
pub async fn run_simulated(
    store: SharedStore,
    engine: Arc<dyn crate::docker::Engine>,
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let host_lock = tokio::select! {
        lock = lock::HostLock::acquire(store.clone(), &config.host_name) => lock?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let store_id = identity::store_identity(store.as_ref()).await?;
    let executor = Executor::with_engine(engine);
    let agent = Arc::new(Agent::new(store, store_id, DockerClient::unconnected(), executor, config));
    agent.config.metrics.attach(Arc::downgrade(&agent) as std::sync::Weak<dyn crate::metrics::Sampler>);
    let identity = host::AgentIdentity { container: None, version: env!("CARGO_PKG_VERSION").to_owned() };
    let stopping = shutdown.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    {
        let mut spawn = Supervised { tasks: &mut tasks, agent: &agent, stopping: &stopping };
        spawn_store_followers(&mut spawn);
        spawn.task("host-registration", move |agent, stopping| {
            host::keep_registered(
                agent.store.clone(),
                agent.docker.clone(),
                agent.config.host_name.clone(),
                agent.config.host_labels.clone(),
                identity.clone(),
                None,
                stopping.clone(),
            )
        });
    }
    let workers = spawn_workers(&agent, &stopping);
    serve_until_stopped(&agent, host_lock, &shutdown, &stopping, workers, tasks).await
}

/// Starts the agent's long-lived tasks, each under [`supervisor::supervise`] with its name. Each
/// closure makes its task anew at every (re)start, from clones of what it needs.
fn spawn_tasks(
    agent: &Arc<Agent>,
    identity: host::AgentIdentity,
    listed_since: std::time::SystemTime,
    stopping: &CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut spawn = Supervised { tasks: &mut tasks, agent, stopping };
    spawn_store_followers(&mut spawn);
    spawn_engine_followers(&mut spawn, identity, listed_since);
    tasks
}

/// The tasks that follow the store (this host's placements, or specs and bindings until they are
/// complete; policies, secrets) and the scheduler: what an agent runs whatever its engine.
fn spawn_store_followers(spawn: &mut Supervised<'_>) {
    spawn.task("follow-store", |agent, stopping| placements::follow_desired(agent.clone(), stopping.clone()));
    spawn.task("follow-policies", |agent, stopping| {
        policies::follow_policies(
            agent.store.clone(),
            agent.policies.clone(),
            agent.cache.clone(),
            agent.queue.clone(),
            stopping.clone(),
        )
    });
    spawn.task("follow-secrets", |agent, stopping| {
        secrets::follow_secrets(
            agent.store.clone(),
            agent.secrets.clone(),
            agent.cache.clone(),
            agent.queue.clone(),
            stopping.clone(),
        )
    });
    let mut restarted = false;
    spawn.task("scheduler", move |agent, stopping| {
        // After a death another agent gets the first chance at the leadership.
        let standby = if restarted { crate::controllers::scheduler::RESTART_STANDBY } else { Duration::ZERO };
        restarted = true;
        crate::controllers::scheduler::run(
            agent.store.clone(),
            agent.config.host_name.clone(),
            agent.config.scheduler_grace,
            standby,
            agent.config.project_placements,
            agent.config.metrics.clone(),
            stopping.clone(),
        )
    });
}

/// The tasks that need a real engine: its event stream (the first subscription replays the engine's
/// events from before the agent's first list, `listed_since`), the resync over it, the host's
/// registration with the engine's facts, the agent's own upgrades.
fn spawn_engine_followers(
    spawn: &mut Supervised<'_>,
    identity: host::AgentIdentity,
    listed_since: std::time::SystemTime,
) {
    let mut since = Some(listed_since);
    spawn.task("follow-engine", move |agent, stopping| {
        sources::follow_engine(agent.clone(), since.take(), stopping.clone())
    });
    spawn.task("resync", |agent, stopping| sources::resync_every(agent.clone(), stopping.clone()));
    let registered = identity.clone();
    spawn.task("host-registration", move |agent, stopping| {
        host::keep_registered(
            agent.store.clone(),
            agent.docker.clone(),
            agent.config.host_name.clone(),
            agent.config.host_labels.clone(),
            registered.clone(),
            agent.config.ready_file.clone(),
            stopping.clone(),
        )
    });
    spawn.task("upgrade-follower", move |agent, stopping| {
        upgrade::follow(agent.clone(), identity.clone(), stopping.clone())
    });
}

/// What `/metrics` samples when scraped: read from the queue and the statuses, never on a timer.
impl crate::metrics::Sampler for Agent {
    fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    fn backoff_keys(&self) -> usize {
        self.queue.backing_off()
    }

    fn conditions(&self, each: &mut dyn FnMut(&str, &str)) {
        let statuses = self.statuses.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for condition in statuses.values().flat_map(|status| &status.conditions) {
            let status = match condition.status {
                kedge_crds::ConditionStatus::True => "True",
                kedge_crds::ConditionStatus::False => "False",
                kedge_crds::ConditionStatus::Unknown => "Unknown",
            };
            each(&condition.kind, status);
        }
    }
}

/// What [`spawn_tasks`] starts every task with: the set that owns them, the agent and its stop token.
struct Supervised<'a> {
    tasks: &'a mut tokio::task::JoinSet<()>,
    agent: &'a Arc<Agent>,
    stopping: &'a CancellationToken,
}

impl Supervised<'_> {
    /// Spawns `name` under [`supervisor::supervise`]: `start` makes the task from the agent and the
    /// stop token at each (re)start, so that a restarted task begins from the agent's state, not
    /// from what a dead run left behind.
    fn task<F, Fut>(&mut self, name: &'static str, mut start: F)
    where
        F: FnMut(&Arc<Agent>, &CancellationToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (agent, stopping) = (self.agent.clone(), self.stopping.clone());
        let health = agent.config.health.clone();
        let run =
            supervisor::supervise(name, health, self.stopping.clone(), move || start(&agent, &stopping));
        self.tasks.spawn(run);
    }
}

impl Agent {
    /// A worker: takes keys until the queue shuts down. A reconcile in flight always completes.
    async fn work(self: Arc<Self>) {
        while let Some(key) = self.queue.next().await {
            let span = tracing::info_span!("reconcile", %key);
            let stats = &self.config.stats;
            stats.in_flight.fetch_add(1, Ordering::SeqCst);
            let started = std::time::Instant::now();
            let began = self.snapshot.began();
            let attempt = tracing::Instrument::instrument(
                async {
                    #[cfg(feature = "failpoints")]
                    crate::executor::failpoint::panic_task("reconcile");
                    self.serve_requests(&key).await;
                    self.reconcile(&key).await
                },
                span,
            );
            // A panic is this key's failure, retried with its backoff; the worker goes on.
            let outcome = match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(attempt)).await
            {
                Ok(outcome) => outcome,
                Err(payload) => {
                    let message = supervisor::panic_message(payload.as_ref());
                    tracing::error!(%key, panic = %message, "a reconcile panicked");
                    Err(reconcile::Failure {
                        reason: "ReconcilePanicked".to_owned(),
                        message: format!("the reconcile panicked: {message}"),
                    })
                }
            };
            if outcome.is_err() {
                stats.failures.fetch_add(1, Ordering::SeqCst);
            }
            stats.reconciles.fetch_add(1, Ordering::SeqCst);
            stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            tracing::debug!(%key, ?outcome, "reconciled");
            let result = match &outcome {
                Ok(reconcile::Next::Done) => crate::metrics::ReconcileResult::Done,
                Ok(reconcile::Next::After(_)) => crate::metrics::ReconcileResult::Requeue,
                Err(_) => crate::metrics::ReconcileResult::Error,
            };
            self.config.metrics.reconciled(result, started.elapsed());
            self.snapshot.ended(&key, began, matches!(outcome, Ok(reconcile::Next::Done)));
            match outcome {
                Ok(reconcile::Next::Done) => self.queue.succeeded(&key),
                Ok(reconcile::Next::After(delay)) => self.queue.done_requeue_after(&key, delay),
                Err(failure) => {
                    let retry = self.queue.failed(&key);
                    tracing::warn!(%key, attempt = retry.attempt, retry_in = ?retry.delay, error = %failure.message, "reconcile failed");
                    self.report_failure(&key, &failure, retry).await;
                }
            }
        }
    }

    /// Carries out the requests handed to `key` from outside (see [`requests`]), in this worker so
    /// nothing else touches the container meanwhile. The reconcile that follows sees the result.
    async fn serve_requests(&self, key: &str) {
        for request in self.config.requests.take(key) {
            let _stamped_after = self.snapshot.stamp_now_and_on_drop(key);
            let mut steps = Vec::new();
            let mut on_progress = |event: crate::executor::RecreateProgress| {
                if let crate::executor::RecreateProgress::Step(step) = event {
                    steps.push(step);
                }
            };
            let outcome =
                self.executor.recreate_any(&request.name, &request.strategy, &mut on_progress).await;
            match &outcome {
                Ok(report) => {
                    self.config.stats.action("Recreate");
                    tracing::info!(%key, new_id = %report.new_id, "recreated on request");
                }
                Err(error) => tracing::warn!(%key, %error, "a requested recreate failed"),
            }
            request.answer((outcome, steps));
        }
    }

    /// Waits until the specs, the bindings and the policy levels were each listed, or `timeout`.
    async fn caches_listed(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let listed = self.cache.reflector().wait_in_sync(left()).await
            && self.bindings.reflector().wait_in_sync(left()).await
            && self.policies.reflector().wait_in_sync(left()).await;
        if !listed {
            tracing::warn!(
                ?timeout,
                "the store's specs, bindings or policy levels are not read yet; starting the workers anyway"
            );
        }
    }

    /// Finishes or rolls back the interrupted recreates of `key` made by this host's agent, identified
    /// by their labels (another agent's, on a shared engine, may be running right now and only looks
    /// interrupted; a look-alike container is left alone).
    pub(crate) async fn recover_key(
        &self,
        key: &str,
    ) -> crate::executor::ExecutorResult<crate::executor::RecoveryReport> {
        let scope = RecoveryScope::key_on_host(key, &self.config.host_name);
        let _stamped_after = self.snapshot.stamp_now_and_on_drop(key);
        self.executor.recover(base_name_of_key(key), &scope, &RecreateStrategy::default()).await
    }

    /// The agent's first look at the engine, before the workers start: one list of this host's
    /// containers, kept as the snapshot the first reconciles read ([`snapshot`]); every recreate a
    /// crash interrupted (found by its labels in that list) finished or rolled back; every listed
    /// key enqueued. Keys of specs are enqueued by the store follower as it reads them.
    async fn start_from_snapshot(&self) -> Result<(), AgentError> {
        let listed = self.snapshot.list(self.engine(), &self.config.host_name).await?;
        let mut interrupted = std::collections::BTreeSet::new();
        for (key, containers) in listed.iter() {
            if containers.iter().any(|container| is_recreate_name_of(&container.name, base_name_of_key(key)))
            {
                interrupted.insert(key.clone());
            }
            self.queue.add(key.clone());
        }
        for key in interrupted {
            match self.recover_key(&key).await {
                Ok(report) => tracing::info!(%key, ?report, "recovered an interrupted recreate"),
                // Left to the reconcile of its key, which retries with backoff and reports.
                Err(error) => tracing::error!(%key, %error, "could not recover an interrupted recreate"),
            }
        }
        Ok(())
    }
}
