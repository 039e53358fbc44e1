//! One reconcile of one key: read the latest spec (from the cache) and the containers the engine
//! shows for it, plan, execute, and write status if it changed. Level-triggered: nothing here
//! depends on which event enqueued the key.
//!
//! The engine is read in one pass first, [`observe`], which returns an [`EngineView`] (the key's
//! own containers, the container holding the spec's name, each dependency's and network or link
//! provider's container, each inspected once); deciding works on that value, and only the executor
//! acts. Every engine call goes through the [`Engine`] trait, so `reconcile/tests.rs` runs whole
//! reconciles against `reconcile/fake.rs`'s `FakeEngine` with paused time.

use std::time::Duration;

use super::updates::{self, DEFAULT_CHECK_INTERVAL};

use chrono::Utc;
use kedge_crds::secret::ResolvedEnv;
use kedge_crds::{
    Container, ContainerStatus, DeletionPolicy, DependencyCondition, ExecPolicy, ImageCheck, PullPolicy,
    RolledBackUpdate, RunState, UnhealthyRemediation,
};

use crate::docker::{
    labels, ContainerFilter, ContainerStatus as EngineStatus, ContainerSummary, Engine, HealthStatus,
    ObservedContainer,
};
use crate::events::EventType;
use crate::executor::{
    base_name_of_key, is_recreate_name_of, is_retired_name_of, ActionOutcome, ExecutorError, RecreateProgress,
};
use crate::mapping::RESTARTED_AT_ANNOTATION;
use crate::planner::{self, Action, ImageFacts, ProviderContainer};
use crate::queue::Retry;
use crate::remediation;
use crate::restarts;
use crate::runtime::Sighting;
use crate::store::{keys, objects, PutCondition};

use super::bindings::Binding;
use super::limits;
use super::pulls;
use super::report;
use super::soak;
use super::status::{next_status, Observation, SyncState};
use super::Agent;

/// What the worker does with the key after a successful reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Converged; wait for the next event.
    Done,
    /// Look again after this long (waiting on a dependency, a periodic image check).
    After(Duration),
}

/// How long a reconcile waits for the stored policy levels to be read at the agent's start.
const POLICY_WAIT: Duration = Duration::from_millis(200);

/// A failed reconcile: retried with the key's backoff.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// One CamelCase word for conditions and events.
    pub reason: String,
    pub message: String,
}

impl Failure {
    fn new(reason: impl Into<String>, message: impl std::fmt::Display) -> Failure {
        Failure { reason: reason.into(), message: message.to_string() }
    }
}

impl From<ExecutorError> for Failure {
    fn from(error: ExecutorError) -> Failure {
        Failure::new(error.reason(), crate::error_chain(&error))
    }
}

/// The reason of a spec whose `secretEnv` names a secret or key that does not exist.
const SECRET_NOT_FOUND: &str = "SecretNotFound";

/// When a store write fails, the status is written again this soon.
const STATUS_RETRY: Duration = Duration::from_secs(5);

/// What one reconcile reads from the engine about one key, read once before anything is decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EngineView {
    /// This host's containers of the key (kedge's labels, this host, this key): the only containers
    /// a deletion or a move to another host may remove.
    pub(crate) owned: Vec<ContainerSummary>,
    /// The container holding the spec's name, whoever owns it (a foreign one is a conflict).
    /// `None` without a spec to run here.
    pub(crate) container: Option<ObservedContainer>,
    /// By spec name: this host's container of each spec this one depends on (`dependsOn`, and the
    /// network provider and link targets, which are also the planner's providers); `None` when
    /// there is none. A stopped spec reads only its providers. Each is inspected once.
    pub(crate) dependencies: std::collections::BTreeMap<String, Option<ObservedContainer>>,
}

/// The read pass of one reconcile: `spec` is the spec to run on this host (`None`: it is deleted,
/// unreadable or placed elsewhere, and only the key's own containers matter). `listed`: the key's
/// own containers as the engine snapshot lists them, when it still answers for the key
/// ([`super::snapshot`]); `None` lists them from the engine.
pub(crate) async fn observe(
    engine: &dyn Engine,
    host: &str,
    key: &str,
    spec: Option<&Container>,
    listed: Option<Vec<ContainerSummary>>,
) -> Result<EngineView, Failure> {
    let listed = match listed {
        Some(listed) => listed,
        None => {
            let filter = ContainerFilter {
                labels: vec![labels::key_filter(key), labels::host_filter(host)],
                name: None,
            };
            engine.list_containers(&filter).await.map_err(engine_unavailable)?
        }
    };
    // The filters match the labels; ownership needs managed-by as well. Another host's agent may
    // share this engine (or have left containers on it): its containers are never this agent's.
    let owned =
        listed.into_iter().filter(|container| labels::is_managed_by_host(&container.labels, host)).collect();
    let Some(spec) = spec else {
        return Ok(EngineView { owned, ..EngineView::default() });
    };
    let container = engine.inspect_container(&spec.metadata.name).await.map_err(engine_unavailable)?;
    let names: Vec<String> = if spec.spec.run_state_or_default() == RunState::Stopped {
        let providers = spec.spec.network_provider().into_iter();
        providers.chain(spec.spec.links.iter().map(|link| link.name.as_str())).map(str::to_owned).collect()
    } else {
        // `dependencies` adds the network provider and link targets to `dependsOn`.
        spec.spec.dependencies().into_iter().map(|dependency| dependency.name).collect()
    };
    let mut dependencies = std::collections::BTreeMap::new();
    for name in names {
        if dependencies.contains_key(&name) {
            continue;
        }
        let dependency_key = format!("{}/{name}", spec.metadata.namespace);
        let found = engine.inspect_container(&name).await.map_err(engine_unavailable)?;
        dependencies.insert(name, found.filter(|found| is_hosts_container_of(found, host, &dependency_key)));
    }
    Ok(EngineView { owned, container, dependencies })
}

/// The read pass's second part, once the spec's dependencies are met: what the planner needs to
/// know about the spec's image (the local image the tag names, the one the container runs, the
/// processes when an `ensureRunning` command is to be kept). The registry's digest is not asked
/// here: the update check ([`updates::find`]) asks the registry itself, with a HEAD, once for
/// every spec of a reference, and hands it in as `registry_digest`. Whether to pull is the
/// planner's decision.
pub(crate) async fn observe_image(
    engine: &dyn Engine,
    spec: &Container,
    observed: Option<&ObservedContainer>,
    registry_digest: Option<String>,
) -> Result<ImageFacts, Failure> {
    let reference = spec.spec.image.to_string();
    let pull_policy =
        spec.spec.update_policy.as_ref().and_then(|policy| policy.pull_policy).unwrap_or_default();
    // Whether to pull is the planner's decision (it knows when a container is to be made); this
    // only says what the host has.
    let local = engine.inspect_image(&reference).await.map_err(engine_unavailable)?;
    if local.is_none() && observed.is_none() && pull_policy == PullPolicy::Never {
        return Err(Failure::new(
            "ImageNotPresent",
            format!("image {reference} is not on this host and the pull policy is Never"),
        ));
    }
    let registry_digest = registry_digest.filter(|_| image_check(spec) == ImageCheck::Registry);
    // What inspect merged into the container came from the image it runs, which is not
    // necessarily the one the tag names now.
    let running_image = match observed {
        Some(container) if local.as_ref().is_some_and(|local| local.id == container.image_id) => {
            local.clone()
        }
        Some(container) => engine.inspect_image(&container.image_id).await.map_err(engine_unavailable)?,
        None => None,
    };
    let wants_processes = spec.spec.post_start.iter().any(|exec| exec.policy == ExecPolicy::EnsureRunning);
    let running_processes = match observed {
        Some(container) if wants_processes && container.state.running => Some(
            engine
                .top(&container.id)
                .await
                .map_err(engine_unavailable)?
                .into_iter()
                .map(|process| process.command)
                .collect(),
        ),
        _ => None,
    };
    Ok(ImageFacts {
        local_image_id: local.map(|image| image.id),
        registry_digest,
        running_repo_digests: running_image
            .as_ref()
            .map(|image| image.repo_digests.clone())
            .unwrap_or_default(),
        running_image,
        force_recreate: false,
        running_processes,
        start_requested: false,
        engine_lacks_start_interval: api_older_than(&engine.api_version(), (1, 44)),
        providers: Default::default(),
        restarts: 0,
        start_backoff: None,
        update_held: false,
        owner_labels: Default::default(),
        ignored_limits: None,
        secret_env: Default::default(),
    })
}

/// Whether `container` is this host's container of spec `key`. A container of that name which is
/// not (a foreign one, another namespace's, another host's on a shared engine) is not joined,
/// linked to or waited for: nothing follows a container kedge does not own.
fn is_hosts_container_of(container: &ObservedContainer, host: &str, key: &str) -> bool {
    labels::is_managed_by_host(&container.labels, host) && labels::key(&container.labels) == Some(key)
}

fn engine_unavailable(error: crate::docker::DockerError) -> Failure {
    Failure::new("EngineUnavailable", error)
}

/// What the agent's caches said about one key, read once before the engine is: the spec, where it
/// is placed, and whether each cache matched the store at that read. A removal rests on the
/// authority of this read, never on the caches' authority a moment later: a cache that was still
/// listing when the spec was looked up (an agent just started) may be in sync by the time the
/// engine has answered, and the spec it did not hold then is not deleted.
struct Desired {
    specs: Sighting<Container>,
    binding: Sighting<Binding>,
    /// The spec runs on this host: it names this host, or the scheduler bound it here.
    here: bool,
}

impl Desired {
    /// The spec to run on this host, if there is one.
    fn spec_here(&self) -> Option<&Container> {
        self.specs.object().filter(|_| self.here)
    }
}

/// The Warning event of a spec that is not run ([`Agent::report_refusal`]).
struct Refusal<'a> {
    /// The event's reason, also the Synced condition's: a refusal with this reason already in the
    /// status of this generation was told before.
    reason: &'a str,
    message: &'a str,
    /// A new message in the same generation is told again: a missing secret that is created while
    /// another one the spec names is still missing.
    again_on_new_message: bool,
}

impl Agent {
    pub(crate) async fn reconcile(&self, key: &str) -> Result<Next, Failure> {
        let mut desired = self.desired(key);
        let host = &self.config.host_name;
        let listed = self.snapshot.owned(key);
        let mut seen = observe(self.engine(), host, key, desired.spec_here(), listed).await?;
        if seen.owned.iter().any(|container| is_recreate_name_of(&container.name, base_name_of_key(key))) {
            // A recreate of this key was interrupted (a crash): finish or roll it back first. That
            // may wait for a health check, long enough for the spec to change, go, or move to
            // another host: read it again (from the engine: recovery stamps the key) before
            // deciding on it.
            self.recover_key(key).await?;
            desired = self.desired(key);
            seen = observe(self.engine(), host, key, desired.spec_here(), None).await?;
        }
        // What the periodic resync's list is compared with, should this reconcile settle the key.
        self.snapshot.saw(key, super::snapshot::print(&seen.owned));
        if let Some(stored) = desired.specs.stored.as_ref().filter(|_| desired.here) {
            return self.reconcile_spec(key, &stored.object, seen).await;
        }
        // No spec to run here, no repair to time: a removal's `destroy` must not wait for one.
        self.config.metrics.no_drift(key);
        match desired.specs.stored {
            None if self.cache.invalid(key).is_some() => self.reconcile_invalid(key).await,
            None if self.follows_placements() => {
                self.reconcile_not_placed_here(key, &desired, &seen.owned).await
            }
            None => self.reconcile_deleted(key, &desired, &seen.owned).await,
            Some(_) => self.reconcile_placed_elsewhere(key, &desired, &seen.owned).await,
        }
    }

    /// The engine every reconcile reads and (through the executor) acts on.
    pub(crate) fn engine(&self) -> &dyn Engine {
        self.executor.docker()
    }

    /// Reads the key's spec and binding, each with its cache's authority at that instant.
    fn desired(&self, key: &str) -> Desired {
        let specs = self.cache.sight(key);
        let binding = self.bindings.sight(key);
        let bound_to = binding.object().map(|bound| bound.host.as_str());
        let here = specs.object().is_some_and(|spec| self.runs_here(spec, bound_to));
        Desired { here, specs, binding }
    }

    /// Whether `spec` runs on this host, reading its binding from the cache now.
    fn placed_here(&self, key: &str, spec: &Container) -> bool {
        self.runs_here(spec, self.bindings.host_of(key).as_deref())
    }

    /// The placement rule: a spec that names a host runs there; any other runs where the scheduler
    /// bound it (`bound_to`, [`super::bindings`]), and nowhere while unbound.
    fn runs_here(&self, spec: &Container, bound_to: Option<&str>) -> bool {
        let named = spec.spec.placement.as_ref().and_then(|placement| placement.host.as_deref());
        named.or(bound_to) == Some(self.config.host_name.as_str())
    }

    /// The stored spec cannot be read: neither a spec to act on nor a deletion. Its container (if
    /// any) is left exactly as it is, and the problem is reported once as a Warning event.
    async fn reconcile_invalid(&self, key: &str) -> Result<Next, Failure> {
        if let Some(invalid) = self.cache.take_unreported_invalid(key) {
            let message = format!(
                "the stored spec (resourceVersion {}) cannot be read, so it is not acted on: {}",
                invalid.resource_version, invalid.error
            );
            tracing::warn!(key, error = %invalid.error, "an unreadable spec is set aside");
            self.events.record(key, EventType::Warning, "InvalidSpec", &message).await;
        }
        Ok(Next::Done)
    }

    /// The spec is gone: remove its containers, unless it asked for them to be orphaned. Only when
    /// the spec cache matched the store when the spec was looked up: an outage, or a cache still
    /// listing, is not a deletion.
    async fn reconcile_deleted(
        &self,
        key: &str,
        desired: &Desired,
        owned: &[ContainerSummary],
    ) -> Result<Next, Failure> {
        if !desired.specs.known_absent() {
            tracing::debug!(key, "no spec in a cache not in sync; waiting for the cache");
            return Ok(Next::After(STATUS_RETRY));
        }
        // A binding is written only for a spec that exists, so a binding newer than everything the
        // spec cache had seen means the cache is behind (its watch may be reconnecting on its own
        // while the bindings' watch already caught up), not that the spec was deleted.
        if desired.binding.stored.as_ref().is_some_and(|bound| bound.mod_revision > desired.specs.revision) {
            tracing::debug!(key, "bound to a spec the cache has not seen yet; waiting for the cache");
            return Ok(Next::After(STATUS_RETRY));
        }
        for container in owned {
            match removal(container, &self.store_id, Gone::Deleted) {
                Removal::Orphan => {
                    tracing::info!(container = %container.name, "spec deleted; orphaning its container as it asked");
                }
                Removal::OtherStore => other_store(key, container),
                Removal::Remove => self.remove(key, container, "its spec was deleted").await?,
            }
        }
        self.forget_status(key).await;
        Ok(Next::Done)
    }

    /// Following this host's placements only ([`super::placements`]), a key without one is either
    /// deleted or placed on another host. Which one is read from its spec key, and only when this
    /// host has something of it (a container, or a status it wrote): the other hosts' keys, dropped
    /// from the caches at the switch to placements, cost no store read.
    async fn reconcile_not_placed_here(
        &self,
        key: &str,
        desired: &Desired,
        owned: &[ContainerSummary],
    ) -> Result<Next, Failure> {
        if !desired.specs.known_absent() {
            tracing::debug!(key, "no placement in a cache not in sync; waiting for the cache");
            return Ok(Next::After(STATUS_RETRY));
        }
        if owned.is_empty() && !self.statuses_lock().contains_key(key) {
            return Ok(Next::Done);
        }
        let spec_key = keys::spec_key_of(key);
        match self.store.get(&spec_key).await {
            Ok(None) => self.reconcile_deleted(key, desired, owned).await,
            Ok(Some(_)) => {
                for container in owned {
                    match removal(container, &self.store_id, Gone::PlacedElsewhere) {
                        Removal::Orphan | Removal::OtherStore => other_store(key, container),
                        Removal::Remove => {
                            self.remove(key, container, "its spec is placed on another host").await?
                        }
                    }
                }
                self.statuses_lock().remove(key);
                Ok(Next::Done)
            }
            Err(error) => Err(Failure::new("StoreUnavailable", format!("reading {spec_key}: {error}"))),
        }
    }

    /// The spec belongs to another host now: remove what this host still runs of it.
    async fn reconcile_placed_elsewhere(
        &self,
        key: &str,
        desired: &Desired,
        owned: &[ContainerSummary],
    ) -> Result<Next, Failure> {
        // Neither a store outage nor a binding not read yet is an instruction to remove.
        if !desired.specs.in_sync || !desired.binding.in_sync {
            tracing::debug!(key, "placed elsewhere by caches not in sync; waiting for them");
            return Ok(Next::After(STATUS_RETRY));
        }
        for container in owned {
            match removal(container, &self.store_id, Gone::PlacedElsewhere) {
                Removal::Orphan | Removal::OtherStore => other_store(key, container),
                Removal::Remove => self.remove(key, container, "its spec is placed on another host").await?,
            }
        }
        self.statuses_lock().remove(key);
        Ok(Next::Done)
    }

    /// Removes one of this host's containers of `key`, counted and recorded as an event.
    async fn remove(&self, key: &str, container: &ContainerSummary, why: &str) -> Result<(), Failure> {
        tracing::info!(key, container = %container.name, id = %short(&container.id), why, "removing a container");
        self.snapshot.stamp(key);
        let removed =
            self.executor.execute(&Action::Remove { container: container.id.clone() }, &mut |_| {}).await;
        self.snapshot.stamp(key);
        removed?;
        self.config.stats.action("Remove");
        let message = format!("removed container {} ({}): {why}", container.name, short(&container.id));
        self.events.record(key, EventType::Normal, "Removed", &message).await;
        Ok(())
    }

    /// A spec that breaks the host-escape policy of its namespace (written straight to the store,
    /// or stored before the level was stricter) is not acted on: nothing is created, started,
    /// updated or removed for it. A container it already has is left as it is; status says
    /// `PolicyDenied` and a Warning event names the fields, once per generation. `None`: the spec
    /// passes. Until the stored levels were read once, nothing is decided: look again shortly.
    async fn refuse_by_policy(
        &self,
        key: &str,
        spec: &Container,
        observed: Option<&ObservedContainer>,
    ) -> Result<Option<Next>, Failure> {
        if !self.policies.ever_listed() {
            return Ok(Some(Next::After(POLICY_WAIT)));
        }
        let settings = self.policies.settings(&self.config.policy);
        let (level, violations) = settings.check(&spec.metadata.namespace, &spec.spec);
        if violations.is_empty() {
            return Ok(None);
        }
        let fields: Vec<String> = violations.iter().map(ToString::to_string).collect();
        let message = format!(
            "the spec breaks the `{level}` policy of namespace `{}`, so it is not run: {}",
            spec.metadata.namespace,
            fields.join("; ")
        );
        let sync = SyncState::PolicyDenied { message: message.clone() };
        let event = Refusal { reason: "PolicyDenied", message: &message, again_on_new_message: false };
        self.report_refusal(key, spec, observed, sync, event).await;
        Ok(Some(Next::Done))
    }

    /// Reads the values of the spec's `secretEnv` from the secret cache, just before planning. A
    /// secret or key that does not exist stops the reconcile before anything is created or
    /// changed: status says Synced=False, reason `SecretNotFound`, naming the secret and key (never
    /// a value), with one Warning event per generation and message; the secret follower enqueues
    /// the key again when the secret is written. While the cache has not read the store yet, a
    /// missing secret proves nothing: the key is looked at again shortly, nothing reported.
    async fn resolve_secret_env(
        &self,
        key: &str,
        spec: &Container,
        observed: Option<&ObservedContainer>,
    ) -> Result<ResolvedEnv, Next> {
        let namespace = &spec.metadata.namespace;
        let lookup = |name: &str| self.secrets.get(namespace, name);
        let missing = match kedge_crds::secret::resolve_env(namespace, &spec.spec.secret_env, lookup) {
            Ok(resolved) => return Ok(resolved),
            Err(missing) => missing,
        };
        if !self.secrets.authoritative() {
            tracing::debug!(key, "the secret cache is not in sync yet; looking again shortly");
            return Err(Next::After(STATUS_RETRY));
        }
        let message = format!("{missing}; the container is not created or changed until it exists");
        let sync = SyncState::Progressing { reason: SECRET_NOT_FOUND.into(), message: message.clone() };
        let event = Refusal { reason: SECRET_NOT_FOUND, message: &message, again_on_new_message: true };
        let written = self.report_refusal(key, spec, observed, sync, event).await;
        Err(if written { Next::Done } else { Next::After(STATUS_RETRY) })
    }

    /// Reports a spec that is not run: its status gets `sync` (no drift, its container as it is),
    /// and the first refusal of the generation also a Warning event, so that a refusal looked at
    /// again on every resync is told once. Answers whether the status was written.
    async fn report_refusal(
        &self,
        key: &str,
        spec: &Container,
        observed: Option<&ObservedContainer>,
        sync: SyncState,
        event: Refusal<'_>,
    ) -> bool {
        let ours = observed.filter(|container| is_hosts_container_of(container, &self.config.host_name, key));
        let previous = self.previous_status(key, spec).await;
        let reported = previous.as_ref().is_some_and(|status| {
            status.observed_generation == spec.metadata.generation
                && status.condition(kedge_crds::condition_type::SYNCED).is_some_and(|c| {
                    c.reason == event.reason && (!event.again_on_new_message || c.message == event.message)
                })
        });
        let written = self.write_status(key, spec, ours, vec![], sync, Extra::default()).await;
        if !reported {
            tracing::warn!(
                key,
                reason = event.reason,
                message = event.message,
                "the spec is refused; not running it"
            );
            self.events.record(key, EventType::Warning, event.reason, event.message).await;
        }
        written
    }

    /// Following placements, the placement of a spec whose stored version cannot be read any more
    /// keeps its last readable version (`controllers/projection.rs`): that is not acted on. A
    /// container it already has is left exactly as it is, as under the old layout, and its status
    /// says why (Synced False, reason `InvalidSpec`) with a Warning event, once per unreadable
    /// revision. `None`: the placement reports no unreadable spec.
    async fn refuse_invalid(
        &self,
        key: &str,
        spec: &Container,
        observed: Option<&ObservedContainer>,
    ) -> Option<Next> {
        let invalid = self.cache.placed_invalid(key)?;
        let message = format!(
            "the stored spec (resourceVersion {}) cannot be read, so it is not acted on; its container is left as it is: {}",
            invalid.resource_version, invalid.error
        );
        let sync = SyncState::InvalidSpec { message: message.clone() };
        let event = Refusal { reason: "InvalidSpec", message: &message, again_on_new_message: true };
        self.report_refusal(key, spec, observed, sync, event).await;
        Some(Next::Done)
    }

    async fn reconcile_spec(&self, key: &str, spec: &Container, seen: EngineView) -> Result<Next, Failure> {
        let name = spec.metadata.name.as_str();
        if let Some(next) = self.refuse_invalid(key, spec, seen.container.as_ref()).await {
            return Ok(next);
        }
        if let Some(next) = self.refuse_by_policy(key, spec, seen.container.as_ref()).await? {
            return Ok(next);
        }
        let secret_env = match self.resolve_secret_env(key, spec, seen.container.as_ref()).await {
            Ok(resolved) => resolved,
            Err(next) => return Ok(next),
        };
        // Never two containers for one spec: a managed container of this key under another name
        // (a spec renamed by hand, a leftover) goes. A retired one (the old container of a proven
        // start-first recreate) is already going, with its stop grace period, in the background.
        // A container listed under another name by a snapshot may hold the spec's name by now: the
        // live inspect says which container is the spec's, and that one never goes.
        let current_id = seen.container.as_ref().map(|container| container.id.as_str());
        let extras = seen.owned.iter().filter(|container| {
            container.name != name
                && Some(container.id.as_str()) != current_id
                && !is_retired_name_of(&container.name, name)
        });
        for extra in extras {
            match removal(extra, &self.store_id, Gone::Duplicate) {
                Removal::Orphan | Removal::OtherStore => other_store(key, extra),
                Removal::Remove => self.remove(key, extra, "a second container for one spec").await?,
            }
        }

        let EngineView { container: observed, dependencies, .. } = seen;
        if let Some(container) = &observed {
            let ours = labels::is_managed_by_host(&container.labels, &self.config.host_name)
                && labels::key(&container.labels) == Some(key);
            if !ours {
                let sync = SyncState::Conflict { container_id: container.id.clone() };
                self.write_status(key, spec, None, vec![], sync, Extra::default()).await;
                self.events
                    .record(
                        key,
                        EventType::Warning,
                        "NameConflict",
                        &format!(
                            "container {} ({}) holds the name and is not this spec's; left alone",
                            name,
                            short(&container.id)
                        ),
                    )
                    .await;
                return Ok(Next::After(self.config.conflict_poll));
            }
        }

        let stopped = spec.spec.run_state_or_default() == RunState::Stopped;
        let running = observed.as_ref().is_some_and(|container| container.state.running);
        // Dependency order both ways: start after what this depends on, stop after what depends on this.
        let waiting = match (stopped, running) {
            (false, _) => {
                unmet_dependency(spec, &dependencies).map(|waiting| ("WaitingForDependency", waiting))
            }
            (true, true) => {
                self.running_dependent(spec).await?.map(|waiting| ("WaitingForDependents", waiting))
            }
            (true, false) => None,
        };
        if let Some((reason, waiting)) = waiting {
            let sync = SyncState::Progressing { reason: reason.into(), message: waiting };
            self.write_status(key, spec, observed.as_ref(), vec![], sync, Extra::default()).await;
            return Ok(Next::After(self.config.dependency_poll));
        }

        let previous = self.previous_status(key, spec).await;
        let now = self.engine().now();
        // The update policy: which reference to run (the spec's, or a newer tag taken), what the
        // registry says it names, and whether an update found may be taken now.
        let mut update = self.check_updates(key, spec, previous.as_ref(), now).await;
        let effective = update.spec_to_run(spec);
        let spec_to_run: &Container = effective.as_ref().unwrap_or(spec);
        let mut facts =
            observe_image(self.engine(), spec_to_run, observed.as_ref(), update.registry_digest()).await?;
        update.hold_same_tag(spec, observed.as_ref(), &mut facts, now);
        facts.providers = provider_containers(spec, &dependencies);
        facts.start_requested = !stopped && self.stopped_as_desired_before(key, spec).await;
        let mut gate = None;
        if let Some(container) = &observed {
            facts.restarts =
                restarts::count(self.seen_before(key, previous.as_ref(), container).as_ref(), container)
                    .restarts;
            if has_stopped(container) {
                let backoff = self.backoff_of(key, previous.as_ref());
                let step = restarts::gate(backoff.as_ref(), container, now);
                if let restarts::Gate::At { at, delay, .. } = &step {
                    facts.start_backoff = Some(backoff_message(container, *delay, *at));
                }
                gate = Some(step);
            }
        }
        let held = previous
            .as_ref()
            .and_then(|status| status.rolled_back.clone())
            .filter(|held| !facts.force_recreate && hold_applies(held, spec_to_run, &update_image(&facts)));
        facts.update_held = held.is_some();
        facts.owner_labels = owner_labels(spec, &self.config.host_name, &self.store_id);
        facts.ignored_limits = self.ignored_limits.current(key, spec.metadata.generation);
        facts.secret_env = secret_env;
        let observed_id = observed.as_ref().map(|container| container.id.clone());
        let plan = planner::plan(spec_to_run, observed.as_ref(), &facts);
        if let Some(conflict) = &plan.conflict {
            let sync = SyncState::Conflict { container_id: conflict.container_id.clone() };
            self.write_status(key, spec, None, plan.drift.clone(), sync, Extra::default()).await;
            return Ok(Next::After(self.config.conflict_poll));
        }
        // A soak that failed rolls back before anything else; one that passed may clean up.
        let soaking = soak::running(spec, previous.as_ref()).cloned();
        let soak_check =
            soaking.as_ref().map_or(soak::Check::None, |record| soak::check(record, observed.as_ref(), now));
        let mut last_update: Option<Option<kedge_crds::LastUpdate>> = None;
        let mut soak_failed = None;
        let mut soak_wait = None;
        let plan = match (&soak_check, &soaking) {
            (soak::Check::Failed { why }, Some(record)) => {
                let previous_image = record.previous_image_id.clone().unwrap_or_default();
                let reason = format!(
                    "{why} inside its soak (until {}); rolling back to image {}",
                    record.soak_until.as_deref().unwrap_or("its end"),
                    short_image(&previous_image)
                );
                match soak::rollback_plan(spec, observed.as_ref(), &facts, &previous_image, &reason) {
                    Some(rollback) => {
                        soak_failed = Some((why.clone(), record.clone()));
                        rollback
                    }
                    None => plan,
                }
            }
            (soak::Check::Passed, Some(record)) => {
                let mut plan = plan;
                let previous_image = record.previous_image_id.as_deref().filter(|previous| {
                    record.cleanup
                        && observed.as_ref().is_some_and(|container| container.image_id != *previous)
                });
                if let Some(image) = previous_image {
                    plan.actions.retain(|action| !matches!(action, Action::Nothing));
                    plan.actions.push(Action::RemoveImage { image: image.to_owned() });
                    plan.reason
                        .get_or_insert_with(|| "the update's soak is over (updatePolicy.cleanup)".to_owned());
                }
                let complete = kedge_crds::LastUpdate { phase: soak::COMPLETE.to_owned(), ..record.clone() };
                last_update = Some(Some(complete));
                plan
            }
            (soak::Check::Soaking { wait }, _) => {
                soak_wait = Some(*wait);
                plan
            }
            _ => plan,
        };
        let remedied =
            remediate(spec, observed.as_ref(), &facts, previous.as_ref(), plan, held.is_some(), now);
        let plan = remedied.plan;
        if let Some(message) = remedied.gave_up.as_ref().filter(|_| remedied.newly_gave_up) {
            tracing::warn!(key, "{message}");
            self.events.record(key, EventType::Warning, "UnhealthyFlapping", message).await;
        }
        let acted = !plan.actions.iter().all(|action| matches!(action, Action::Nothing));
        self.report_start_interval_dropped(key, spec, &facts, &plan.actions).await;
        let mut drift = plan.drift.clone();
        // From now on this key's containers are not what a snapshot listed, and again once the
        // actions are done, whichever way this reconcile returns.
        let _stamped_after = acted.then(|| self.snapshot.stamp_now_and_on_drop(key));
        let mut recreated = None;
        for action in &plan.actions {
            if matches!(action, Action::Nothing) {
                continue;
            }
            let began = Utc::now();
            let image = match action {
                Action::Pull { image } => image.clone(),
                _ => spec_to_run.spec.image.to_string(),
            };
            let outcome = match self.execute_reporting_pulls(key, spec, action, &image).await {
                Ok(outcome) => outcome,
                Err(ExecutorError::RolledBack { old_id, failure, .. }) => {
                    // The old container runs again: keep it, and hold this update until something changes.
                    return self
                        .hold_rolled_back(key, spec_to_run, &facts, &old_id, &failure, plan.drift)
                        .await;
                }
                Err(error) => {
                    return Err(match (action, error) {
                        (Action::Pull { .. }, error) => {
                            Failure::new("ImagePullFailed", crate::error_chain(&error))
                        }
                        (Action::EnsureNetwork { network }, ExecutorError::Docker { source, .. }) => {
                            Failure::new("NetworkUnavailable", format!("network {network}: {source}"))
                        }
                        (_, error) => Failure::from(error),
                    })
                }
            };
            if matches!(action, Action::EnsureNetwork { .. }) {
                // Preparation for the actions after it, not a repair: neither counted nor an event.
                continue;
            }
            if let (Action::Start { .. } | Action::Unpause { .. }, Some(container)) = (action, &observed) {
                drift.extend(report::state_drift(container));
                if let Some(restarts::Gate::Now { step }) = gate {
                    self.restart_memory().entry(key.to_owned()).or_default().backoff =
                        Some(restarts::after_start(&container.id, step));
                }
            }
            self.record_action(key, action, &outcome, observed.as_ref(), &plan).await;
            if let ActionOutcome::Recreated(report) = &outcome {
                recreated = Some((report.clone(), began));
            }
        }

        let after = if acted { self.inspect(name).await? } else { observed };
        if let Some((report, began)) = recreated.filter(|(report, _)| report.old_id.is_some()) {
            let soak = if soak_failed.is_some() { Duration::ZERO } else { spec.spec.soak_or_default() };
            let mut record = soak::record(spec, &report, after.as_ref(), began, soak);
            if let Some((_, failed)) = &soak_failed {
                // The rollback's own record keeps the failed update's order, for `describe`.
                record = kedge_crds::LastUpdate { phase: soak::ROLLED_BACK.to_owned(), ..failed.clone() };
            } else if let Some(until) = record.soak_until.as_deref() {
                let message = format!(
                    "the new container is ready ({}); it soaks until {until}, and a restart or an unhealthy check before then rolls back to image {}",
                    record.order_reason,
                    short_image(record.previous_image_id.as_deref().unwrap_or_default())
                );
                self.events.record(key, EventType::Normal, "Soaking", &message).await;
                soak_wait =
                    spec.spec.update_strategy.as_ref().and_then(|s| s.soak).map(|soak| soak.duration());
            }
            last_update = Some(Some(record));
        }
        let soak_hold = match &soak_failed {
            Some((why, record)) => {
                let hold = self.hold_soak_failure(key, spec, &facts, record, why).await;
                Some(hold)
            }
            None => None,
        };
        self.time_repair(key, stopped, &plan.actions, after.as_ref());
        self.wake_followers(key, spec, after.as_ref());
        self.check_limits_took(key, spec, &plan.actions, after.as_ref()).await;
        let digest = facts.registry_digest.clone();
        let stopped_as_desired = stopped && after.as_ref().is_some_and(|container| !container.state.running);
        let held = soak_hold.clone().or(held);
        let sync = match self.ignored_limits.current(key, spec.metadata.generation) {
            _ if stopped_as_desired => SyncState::StoppedAsDesired,
            _ if held.is_some() => {
                let held = held.as_ref().map(|held| (held_message(held, name), held_error(held)));
                let (message, error) = held.unwrap_or_default();
                SyncState::RolledBack { message, error }
            }
            Some(ignored) => SyncState::Progressing {
                reason: "LimitNotApplied".into(),
                message: format!(
                    "the engine does not apply {}; not retried until the spec changes",
                    limits::describe(&ignored)
                ),
            },
            None => SyncState::Synced,
        };
        let recreated = acted
            && plan
                .actions
                .iter()
                .any(|action| matches!(action, Action::Recreate { .. } | Action::Create { .. }));
        self.report_updates(key, &update, recreated, observed_id.as_deref(), after.as_ref()).await;
        let mut extra = Extra {
            rolled_back: Some(held),
            update: update.status(),
            last_update,
            remediation: remedied.record,
            unhealthy_gave_up: remedied.gave_up,
            ..Extra::default()
        };
        let mut next_start = None;
        if let Some(container) = after.as_ref().filter(|_| !stopped) {
            let counted =
                restarts::count(self.seen_before(key, previous.as_ref(), container).as_ref(), container);
            let policy = spec.spec.restart_policy.as_ref();
            if container.state.restarting {
                extra.crash_loop = Some(format!(
                    "{}; the engine restarts it under its restart policy ({}); {} restarts so far",
                    restarts::describe_exit(container),
                    restarts::policy_words(policy),
                    counted.restarts
                ));
            } else if has_stopped(container) {
                let exit_code = container.state.exit_code.unwrap_or(0);
                match restarts::policy_allows(policy, exit_code, counted.restarts) {
                    Err(why) => extra.left_stopped = Some(why),
                    Ok(()) => {
                        let backoff = self.backoff_of(key, previous.as_ref());
                        if let restarts::Gate::At { at, delay, .. } =
                            restarts::gate(backoff.as_ref(), container, self.engine().now())
                        {
                            extra.crash_loop = Some(format!(
                                "{}; {} restarts so far",
                                backoff_message(container, delay, at),
                                counted.restarts
                            ));
                            next_start = Some((at - self.engine().now()).to_std().unwrap_or_default());
                        }
                    }
                }
            }
        }
        if extra.crash_loop.is_some() && next_start.is_some() && gate.is_some() && !acted {
            self.events
                .record(
                    key,
                    EventType::Warning,
                    "BackOff",
                    &format!(
                        "{}; back-off restarting it (restart policy: {})",
                        after.as_ref().map(restarts::describe_exit).unwrap_or_default(),
                        restarts::policy_words(spec.spec.restart_policy.as_ref())
                    ),
                )
                .await;
        }
        let drift = if acted { drift } else { Vec::new() };
        let written = self
            .write_status(key, spec, after.as_ref(), drift, sync, Extra { image_digest: digest, ..extra })
            .await;
        if !written {
            return Ok(Next::After(STATUS_RETRY));
        }
        let periodic = match image_check(spec) {
            ImageCheck::None => None,
            ImageCheck::Local => Some(check_interval(spec)),
            ImageCheck::Registry => Some(updates::jittered(check_interval(spec))),
        };
        let periodic = match (periodic, update.recheck_after(spec, now)) {
            (Some(check), Some(recheck)) => Some(check.min(recheck.max(Duration::from_secs(1)))),
            (periodic, _) => periodic,
        };
        let next_start = [next_start, remedied.wait, soak_wait].into_iter().flatten().min();
        Ok(match (next_start, periodic) {
            (Some(start), Some(check)) => Next::After(start.min(check)),
            (Some(delay), None) | (None, Some(delay)) => Next::After(delay),
            (None, None) => Next::Done,
        })
    }

    /// A recreate failed and was rolled back to the old container: that container keeps running,
    /// and this generation (with the image its tag names now) is not tried again until the spec,
    /// the image or a recreate request changes. Status says so; an event says what failed.
    async fn hold_rolled_back(
        &self,
        key: &str,
        spec: &Container,
        facts: &ImageFacts,
        old_id: &str,
        failure: &crate::executor::RecreateFailure,
        drift: Vec<kedge_crds::FieldDiff>,
    ) -> Result<Next, Failure> {
        let name = spec.metadata.name.as_str();
        let held = RolledBackUpdate {
            generation: spec.metadata.generation,
            image: spec.spec.image.to_string(),
            image_id: update_image(facts),
            restarted_at: spec.metadata.annotations.get(RESTARTED_AT_ANNOTATION).cloned(),
            reason: failure.reason().to_owned(),
            message: failure.to_string(),
            failed_at: Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        };
        let message = format!("{}; rolled back to container {}", held_message(&held, name), short(old_id));
        tracing::warn!(key, "{message}");
        self.config.metrics.update_rolled_back(crate::metrics::RollbackPhase::Recreate);
        self.events.record(key, EventType::Warning, "RolledBack", &message).await;
        let after = self.inspect(name).await?;
        let sync = SyncState::RolledBack { message: held_message(&held, name), error: held_error(&held) };
        let extra = Extra { rolled_back: Some(Some(held)), ..Extra::default() };
        if !self.write_status(key, spec, after.as_ref(), drift, sync, extra).await {
            return Ok(Next::After(STATUS_RETRY));
        }
        Ok(Next::Done)
    }

    /// A soak failed and the previous image ID runs again: the failed image is held back like a
    /// failed recreate's (not tried again until the spec or the image its tag names changes), and
    /// a `RolledBack` Warning event says why.
    async fn hold_soak_failure(
        &self,
        key: &str,
        spec: &Container,
        facts: &ImageFacts,
        record: &kedge_crds::LastUpdate,
        why: &str,
    ) -> RolledBackUpdate {
        let name = spec.metadata.name.as_str();
        let held = RolledBackUpdate {
            generation: spec.metadata.generation,
            image: spec.spec.image.to_string(),
            image_id: update_image(facts).or_else(|| Some(record.image_id.clone())),
            restarted_at: spec.metadata.annotations.get(RESTARTED_AT_ANNOTATION).cloned(),
            reason: "SoakFailed".to_owned(),
            message: format!(
                "{why} inside its soak (ready at {}, soaking until {})",
                record.ready_at,
                record.soak_until.as_deref().unwrap_or_default()
            ),
            failed_at: Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        };
        let message = format!(
            "{}; rolled back to image {}",
            held_message(&held, name),
            short_image(record.previous_image_id.as_deref().unwrap_or_default())
        );
        tracing::warn!(key, "{message}");
        self.config.metrics.update_rolled_back(crate::metrics::RollbackPhase::Soak);
        self.events.record(key, EventType::Warning, "RolledBack", &message).await;
        held
    }

    /// What the restart count of `key` was at its last status, for [`restarts::count`].
    fn seen_before(
        &self,
        key: &str,
        previous: Option<&ContainerStatus>,
        container: &ObservedContainer,
    ) -> Option<restarts::Seen> {
        let previous = previous?;
        let container_id = previous.container_id.clone()?;
        let engine_restarts = self
            .restart_memory()
            .get(key)
            .and_then(|memory| memory.engine_restarts.clone())
            .filter(|(id, _)| *id == container_id)
            .map_or(container.state.restart_count.max(0), |(_, count)| count);
        Some(restarts::Seen {
            container_id,
            started_at: previous.last_started_at.clone(),
            restarts: previous.restart_count,
            engine_restarts,
        })
    }

    /// kedge's crash-loop backoff of `key`: what this agent remembers, else what the last status
    /// says (written by this agent before it restarted, or by the agent this host had before).
    fn backoff_of(&self, key: &str, previous: Option<&ContainerStatus>) -> Option<restarts::BackoffState> {
        let remembered = self.restart_memory().get(key).and_then(|memory| memory.backoff.clone());
        remembered.or_else(|| {
            let stored = previous?.backoff.as_ref()?;
            Some(restarts::BackoffState { container_id: stored.container_id.clone(), starts: stored.starts })
        })
    }

    fn restart_memory(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, super::KeyRestarts>> {
        self.restart_memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// When this key's container is new or started again (by kedge or by Docker), enqueues the keys
    /// that join its network namespace or link to it, so they catch up now rather than at the next
    /// resync. They decide for themselves, from what they observe (level-triggered).
    fn wake_followers(&self, key: &str, spec: &Container, container: Option<&ObservedContainer>) {
        let Some(container) = container.filter(|container| container.state.running) else { return };
        let instance = (container.id.clone(), container.state.started_at.clone());
        let changed = {
            let mut instances = self.instances.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            // Unknown before (the agent just started) counts as changed: followers collapse in the queue.
            instances.insert(key.to_owned(), instance.clone()) != Some(instance)
        };
        if !changed {
            return;
        }
        for follower in self.followers(spec) {
            tracing::debug!(key, follower, "its container changed; reconciling what follows it");
            self.queue.add(follower);
        }
    }

    /// The keys of this host whose specs join `spec`'s network namespace or link to it.
    fn followers(&self, spec: &Container) -> Vec<String> {
        // Every key's first reconcile after a start asks this: copying every spec each time made a
        // cold start over 500 specs quadratic.
        let following = self.cache.select(|other| {
            other.metadata.namespace == spec.metadata.namespace
                && other.spec.follows_container_of(&spec.metadata.name)
        });
        following
            .into_iter()
            .filter(|(key, other)| self.placed_here(key, other))
            .map(|(key, _)| key)
            .collect()
    }

    /// A container about to be made without the spec's `healthcheck.startInterval`, because the
    /// engine's API predates it: said in a Warning event and the log, rather than dropped silently.
    async fn report_start_interval_dropped(
        &self,
        key: &str,
        spec: &Container,
        facts: &ImageFacts,
        actions: &[Action],
    ) {
        let declared = spec.spec.healthcheck.as_ref().and_then(|check| check.start_interval);
        let creates =
            actions.iter().any(|action| matches!(action, Action::Create { .. } | Action::Recreate { .. }));
        let Some(interval) = declared.filter(|_| facts.engine_lacks_start_interval && creates) else {
            return;
        };
        let message = format!(
            "spec.healthcheck.startInterval ({interval}) needs Docker Engine API 1.44 (Docker 25); this engine speaks {}: the container is made without it, and checks run at `interval` during the start period too",
            self.engine().api_version()
        );
        tracing::warn!(key, %message);
        self.events.record(key, EventType::Warning, "FieldNotSupported", &message).await;
    }

    /// After in-place updates: notes the limits the engine did not apply (see [`limits`]).
    async fn check_limits_took(
        &self,
        key: &str,
        spec: &Container,
        actions: &[Action],
        after: Option<&ObservedContainer>,
    ) {
        let Some(after) = after else { return };
        for action in actions {
            if let Action::UpdateInPlace { resources, .. } = action {
                let generation = spec.metadata.generation;
                if let Some(ignored) = self.ignored_limits.learn(key, generation, resources, &after.resources)
                {
                    let message = format!(
                        "the engine accepted but does not apply {} (no kernel support?); not retried until the spec changes",
                        limits::describe(&ignored)
                    );
                    tracing::warn!(key, %message);
                    self.events.record(key, EventType::Warning, "LimitNotApplied", &message).await;
                }
            }
        }
    }

    async fn inspect(&self, name: &str) -> Result<Option<ObservedContainer>, Failure> {
        self.engine().inspect_container(name).await.map_err(engine_unavailable)
    }

    /// Whether the last status said the container was stopped because the spec asked for it.
    async fn stopped_as_desired_before(&self, key: &str, spec: &Container) -> bool {
        let previous = self.previous_status(key, spec).await;
        previous
            .and_then(|status| status.condition("Ready").map(|ready| ready.reason == "Stopped"))
            .unwrap_or(false)
    }

    /// The first spec of this host that depends on `spec` and whose container still runs, as a
    /// message; `None` when none does. A spec to be stopped waits for these to stop first.
    async fn running_dependent(&self, spec: &Container) -> Result<Option<String>, Failure> {
        let name = spec.metadata.name.as_str();
        for key in self.cache.keys() {
            let Some(other) = self.cache.get(&key) else { continue };
            let depends = other.metadata.namespace == spec.metadata.namespace
                && other.spec.dependencies().iter().any(|dependency| dependency.name == name);
            if !depends || !self.placed_here(&key, &other) {
                continue;
            }
            let observed = self.inspect(&other.metadata.name).await?;
            if observed.is_some_and(|container| container.state.running) {
                return Ok(Some(format!(
                    "waiting for {} (which depends on {name}) to stop",
                    other.metadata.name
                )));
            }
        }
        Ok(None)
    }

    /// Ends the timing of `key`'s drift ([`crate::metrics`]): a start or create that left the
    /// container running is its repair; any other outcome with the container running means the
    /// drift events seen were the agent's own (a recreate's) or were mended already.
    /// A spec stopped on purpose has no repair to wait for.
    fn time_repair(&self, key: &str, stopped: bool, actions: &[Action], after: Option<&ObservedContainer>) {
        if stopped {
            return self.config.metrics.no_drift(key);
        }
        if !after.is_some_and(|container| container.state.running) {
            return;
        }
        let repair = actions.iter().any(|action| {
            matches!(action, Action::Start { .. } | Action::Unpause { .. } | Action::Create { .. })
        });
        match repair {
            true => self.config.metrics.repaired(key),
            false => self.config.metrics.no_drift(key),
        }
    }

    /// Records one action carried out as an event, and logs it at INFO: what drifted, what was done.
    async fn record_action(
        &self,
        key: &str,
        action: &Action,
        outcome: &ActionOutcome,
        observed: Option<&ObservedContainer>,
        plan: &planner::Plan,
    ) {
        self.config.stats.action(action.kind());
        let (reason, message) =
            report::action_event(action, outcome, observed, &plan.drift, plan.reason.as_deref());
        tracing::info!(key, reason, "{message}");
        self.events.record(key, EventType::Normal, reason, &message).await;
    }

    /// Carries `action` out. A pull in it (a pull action, or a recreate's) that runs longer than
    /// [`pulls::REPORT_AFTER`] is shown in the spec's status as it goes (`agent/pulls.rs`).
    async fn execute_reporting_pulls(
        &self,
        key: &str,
        spec: &Container,
        action: &Action,
        image: &str,
    ) -> Result<ActionOutcome, ExecutorError> {
        let began = kedge_crds::meta::rfc3339(Utc::now());
        let tally = std::sync::Mutex::new(pulls::PullTally::default());
        let mut on_progress = |progress: RecreateProgress| {
            if let (RecreateProgress::Pull(line), Ok(mut tally)) = (progress, tally.lock()) {
                tally.record(&line);
            }
        };
        let execute = self.executor.execute(action, &mut on_progress);
        tokio::pin!(execute);
        let first = tokio::time::Instant::now() + pulls::REPORT_AFTER;
        let mut ticker = tokio::time::interval_at(first, pulls::REPORT_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut written: Option<kedge_crds::PullStatus> = None;
        loop {
            tokio::select! {
                outcome = &mut execute => return outcome,
                _ = ticker.tick() => {
                    let now = match tally.lock() {
                        Ok(tally) if !tally.is_empty() => tally.status(image, &began),
                        _ => continue,
                    };
                    if written.as_ref() != Some(&now) {
                        self.write_pull_status(key, spec, now.clone()).await;
                        written = Some(now);
                    }
                }
            }
        }
    }

    /// Writes the last status with `pull` in it (a status of its own for a spec that has none yet).
    /// A failed write is only logged: the next tick or the status after the pull writes again.
    async fn write_pull_status(&self, key: &str, spec: &Container, pull: kedge_crds::PullStatus) {
        let mut status = self.previous_status(key, spec).await.unwrap_or_else(|| ContainerStatus {
            host: Some(self.config.host_name.clone()),
            ..ContainerStatus::default()
        });
        status.pull = Some(pull);
        let (namespace, name) = (spec.metadata.namespace.as_str(), spec.metadata.name.as_str());
        match objects::put_status(self.store.as_ref(), namespace, name, &status, PutCondition::Always).await {
            Ok(_) => {
                self.statuses_lock().insert(key.to_owned(), status);
            }
            Err(error) => tracing::debug!(key, %error, "could not write the pull's progress"),
        }
    }

    /// Writes the status for `spec` if it differs from the last one written. Returns false when the
    /// store refused the write (it is then retried soon).
    async fn write_status(
        &self,
        key: &str,
        spec: &Container,
        container: Option<&ObservedContainer>,
        drift: Vec<kedge_crds::FieldDiff>,
        sync: SyncState,
        extra: Extra,
    ) -> bool {
        let image_digest = extra.image_digest;
        let previous = self.previous_status(key, spec).await;
        let counted = container.map(|container| {
            restarts::count(self.seen_before(key, previous.as_ref(), container).as_ref(), container)
        });
        if let Some(counted) = &counted {
            self.restart_memory().entry(key.to_owned()).or_default().engine_restarts =
                Some((counted.container_id.clone(), counted.engine_restarts));
        }
        // DRIFT is the last repair's: a reconcile that repaired nothing keeps it.
        let drift = match (drift.is_empty(), &previous) {
            (true, Some(previous)) => previous.drift.clone(),
            _ => drift,
        };
        // A held update outlives other writes until the spec's generation moves on.
        let rolled_back = extra.rolled_back.unwrap_or_else(|| {
            previous
                .as_ref()
                .and_then(|status| status.rolled_back.clone())
                .filter(|held| held.generation == spec.metadata.generation)
        });
        let last_update = extra
            .last_update
            .unwrap_or_else(|| previous.as_ref().and_then(|status| status.last_update.clone()));
        let remediation = extra.remediation.unwrap_or_else(|| {
            previous
                .as_ref()
                .and_then(|status| status.remediation.clone())
                .filter(|record| record.generation == spec.metadata.generation)
        });
        let seen = Observation {
            generation: spec.metadata.generation,
            host: &self.config.host_name,
            container,
            image_digest: image_digest
                .or_else(|| previous.as_ref().and_then(|status| status.image_digest.clone())),
            drift,
            sync,
            restarts: counted.as_ref().map_or(0, |counted| counted.restarts),
            last_started_at: counted.and_then(|counted| counted.started_at),
            crash_loop: extra.crash_loop,
            left_stopped: extra.left_stopped,
            rolled_back,
            // The update policy's findings outlive writes that did not look (a dependency wait),
            // but not a spec whose image changed.
            update: extra.update.or_else(|| {
                previous
                    .as_ref()
                    .and_then(|status| status.update.clone())
                    .filter(|update| update.spec_image == spec.spec.image.to_string())
            }),
            backoff: self.backoff_of(key, previous.as_ref()).map(|backoff| kedge_crds::StartBackoff {
                container_id: backoff.container_id,
                starts: backoff.starts,
            }),
            remediation,
            unhealthy_gave_up: extra.unhealthy_gave_up,
            last_update,
        };
        let status = next_status(previous.as_ref(), &seen, Utc::now());
        if previous.as_ref() == Some(&status) {
            return true;
        }
        let namespace = spec.metadata.namespace.as_str();
        match objects::put_status(
            self.store.as_ref(),
            namespace,
            &spec.metadata.name,
            &status,
            PutCondition::Always,
        )
        .await
        {
            Ok(_) => {
                self.statuses_lock().insert(key.to_owned(), status);
                true
            }
            Err(error) => {
                tracing::warn!(key, %error, "could not write status; will retry");
                false
            }
        }
    }

    async fn previous_status(&self, key: &str, spec: &Container) -> Option<ContainerStatus> {
        if let Some(status) = self.statuses_lock().get(key) {
            return Some(status.clone());
        }
        // After a restart: compare with what the store has, so an agent restart writes nothing new.
        match objects::get_status(self.store.as_ref(), &spec.metadata.namespace, &spec.metadata.name).await {
            Ok(Some((status, _))) => {
                self.statuses_lock().insert(key.to_owned(), status.clone());
                Some(status)
            }
            _ => None,
        }
    }

    async fn forget_status(&self, key: &str) {
        self.statuses_lock().remove(key);
        self.instances.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(key);
        self.ignored_limits.forget(key);
        self.restart_memory().remove(key);
        let Some((namespace, name)) = key.split_once('/') else { return };
        let Ok(status_key) = keys::status_key(namespace, name) else { return };
        // Only a status this host wrote (or one naming no host) is this agent's to delete: another
        // host may run the spec, and an agent whose view lags the store must not erase its status.
        let stored = match objects::get_status(self.store.as_ref(), namespace, name).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(key, %error, "could not read the status of a deleted spec");
                return;
            }
        };
        let (status, mod_revision) = stored;
        if status.host.as_deref().is_some_and(|host| host != self.config.host_name) {
            tracing::debug!(key, host = ?status.host, "leaving another host's status alone");
            return;
        }
        let condition = crate::store::DeleteCondition::ModRevision(mod_revision);
        if let Err(error) = self.store.delete(&status_key, condition).await {
            tracing::debug!(key, %error, "could not delete the status of a deleted spec");
        }
    }

    /// A failed reconcile: status says Degraded (Stalled) with the attempt and the next retry.
    pub(crate) async fn report_failure(&self, key: &str, failure: &Failure, retry: Retry) {
        self.events.record(key, EventType::Warning, &failure.reason, &failure.message).await;
        let Some(spec) = self.cache.get(key) else { return };
        if !self.placed_here(key, &spec) {
            return;
        }
        let observed = self.inspect(&spec.metadata.name).await.ok().flatten();
        let observed = observed.filter(|container| {
            labels::is_managed_by_host(&container.labels, &self.config.host_name)
                && labels::key(&container.labels) == Some(key)
        });
        let sync = SyncState::Failed {
            reason: failure.reason.clone(),
            error: failure.message.clone(),
            attempt: retry.attempt,
            retry_in: retry.delay,
        };
        self.write_status(key, &spec, observed.as_ref(), vec![], sync, Extra::default()).await;
    }

    fn statuses_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, ContainerStatus>> {
        self.statuses.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a key's containers are to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gone {
    /// The spec was deleted (its `deletionPolicy` may keep the container).
    Deleted,
    /// The spec runs on another host now.
    PlacedElsewhere,
    /// A second container of a spec that runs here, under another name.
    Duplicate,
}

/// What a reconcile does with one of its key's own containers (see [`EngineView::owned`]) whose
/// spec is gone from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    Remove,
    /// Kept: the deleted spec asked for `deletionPolicy: Orphan`.
    Orphan,
    /// Kept: made from another store (this agent was started on a new or another store), so
    /// this agent cannot know whether its spec still exists.
    OtherStore,
}

/// The deletion guard, pure: only a container made from this agent's store goes, and a deleted
/// spec's orphaned container stays.
pub(crate) fn removal(container: &ContainerSummary, store_id: &str, gone: Gone) -> Removal {
    if container.labels.get(labels::STORE).map(String::as_str) != Some(store_id) {
        return Removal::OtherStore;
    }
    let orphan = container.labels.get(labels::DELETION_POLICY).map(String::as_str) == Some("orphan");
    match gone {
        Gone::Deleted if orphan => Removal::Orphan,
        Gone::Deleted | Gone::PlacedElsewhere | Gone::Duplicate => Removal::Remove,
    }
}

fn other_store(key: &str, container: &ContainerSummary) {
    tracing::warn!(key, container = %container.name, "not removing a container made from another store");
}

/// The first dependency that is not in its condition yet, as a message; `None` when all are.
/// `dependencies` is [`EngineView::dependencies`].
fn unmet_dependency(
    spec: &Container,
    dependencies: &std::collections::BTreeMap<String, Option<ObservedContainer>>,
) -> Option<String> {
    // `dependencies` adds the network provider and link targets: Docker cannot start a
    // container that joins or links to one that does not run.
    for dependency in &spec.spec.dependencies() {
        let Some(container) = dependencies.get(&dependency.name).and_then(Option::as_ref) else {
            return Some(format!("waiting for {} to exist", dependency.name));
        };
        if dependency.condition == DependencyCondition::Completed {
            if !completed(container) {
                return Some(format!("waiting for {} to complete (exit with code 0)", dependency.name));
            }
            continue;
        }
        if !container.state.running {
            return Some(format!("waiting for {} to run", dependency.name));
        }
        if dependency.condition == DependencyCondition::Healthy
            && !matches!(
                container.state.health,
                Some(HealthStatus::Healthy) | Some(HealthStatus::None) | None
            )
        {
            return Some(format!("waiting for {} to be healthy", dependency.name));
        }
    }
    None
}

/// Whether a dependency's container ran and exited with code 0 (a `completed` dependency): not
/// running, not restarting, code 0, and a finish time (a container never started has none, or
/// Docker's zero time).
fn completed(container: &ObservedContainer) -> bool {
    let state = &container.state;
    let finished = state.finished_at.as_deref().is_some_and(|at| !at.starts_with("0001-01-01"));
    !state.running && !state.restarting && state.exit_code == Some(0) && finished
}

/// The current containers of the specs `spec` follows, for the planner's provider rules, from
/// what [`observe`] read.
fn provider_containers(
    spec: &Container,
    dependencies: &std::collections::BTreeMap<String, Option<ObservedContainer>>,
) -> std::collections::BTreeMap<String, ProviderContainer> {
    let names =
        spec.spec.network_provider().into_iter().chain(spec.spec.links.iter().map(|l| l.name.as_str()));
    let mut providers = std::collections::BTreeMap::new();
    for name in names {
        if let Some(Some(container)) = dependencies.get(name) {
            providers.insert(
                name.to_owned(),
                ProviderContainer {
                    id: container.id.clone(),
                    created: container.created.clone(),
                    started_at: container.state.started_at.clone(),
                    running: container.state.running,
                },
            );
        }
    }
    providers
}

/// What a status says beyond the reconcile's outcome (see [`Observation`]).
#[derive(Debug, Default)]
pub(crate) struct Extra {
    crash_loop: Option<String>,
    left_stopped: Option<String>,
    /// The registry's digest of the image, when just asked.
    image_digest: Option<String>,
    /// `Some`: the held update to write (`Some(None)`: none); `None`: keep the last one while the
    /// spec's generation is the same.
    rolled_back: Option<Option<RolledBackUpdate>>,
    /// The update policy's findings to write; `None`: keep the last ones.
    update: Option<kedge_crds::ImageUpdateStatus>,
    /// `Some`: the unhealthy remediation record to write (`Some(None)`: none); `None`: keep the
    /// last one while the spec's generation is the same.
    remediation: Option<Option<UnhealthyRemediation>>,
    /// kedge gave up remediating the unhealthy container: why, for `Degraded`.
    unhealthy_gave_up: Option<String>,
    /// `Some`: the last update's record to write; `None`: keep the last one.
    last_update: Option<Option<kedge_crds::LastUpdate>>,
}

/// What unhealthy remediation ([`crate::remediation`]) made of one reconcile's plan.
struct Remedied {
    /// The planner's plan, or the remediation's when the planner had nothing to do.
    plan: planner::Plan,
    /// The record to write (`None`: keep the last one).
    record: Option<Option<UnhealthyRemediation>>,
    /// kedge gave up (the flap limit): why; `newly_gave_up` when that happened in this reconcile.
    gave_up: Option<String>,
    newly_gave_up: bool,
    /// The next remediation is due after this long (its backoff).
    wait: Option<Duration>,
}

/// Remediation of a running container whose healthcheck reports it unhealthy: a restart, or for
/// `onUnhealthy: recreate` a recreate once a restart did not help, when the planner has nothing
/// else to do (a spec change or a drift repair comes first and makes a new container anyway). A
/// held update (rolled back) is never retried this way: its recreate becomes a restart.
fn remediate(
    spec: &Container,
    observed: Option<&ObservedContainer>,
    facts: &ImageFacts,
    previous: Option<&ContainerStatus>,
    plan: planner::Plan,
    held: bool,
    now: chrono::DateTime<Utc>,
) -> Remedied {
    let unchanged = |plan| Remedied { plan, record: None, gave_up: None, newly_gave_up: false, wait: None };
    let busy = !plan.actions.iter().all(|action| matches!(action, Action::Nothing));
    let Some(container) = observed.filter(|_| !busy && spec.spec.run_state_or_default() == RunState::Running)
    else {
        return unchanged(plan);
    };
    let policy = spec.spec.on_unhealthy.unwrap_or_default();
    let limit = remediation::Limit::of(&spec.spec);
    let recorded = previous.and_then(|status| status.remediation.as_ref());
    let (step, record) =
        remediation::decide(policy, limit, recorded, spec.metadata.generation, container, now);
    let mut remedied = Remedied { record: Some(record), ..unchanged(plan) };
    let within = |number: u32| {
        format!(
            "the health check reports the container unhealthy (remediation {number} of at most {} within {}, spec.onUnhealthy: {})",
            limit.remediations,
            humantime_words(limit.period),
            match policy {
                kedge_crds::OnUnhealthy::Restart => "restart",
                kedge_crds::OnUnhealthy::Recreate => "recreate",
                kedge_crds::OnUnhealthy::None => "none",
            }
        )
    };
    let restart = |reason: String| Action::Restart {
        container: container.id.clone(),
        reason,
        timeout: spec.spec.stop_grace_period.map(|period| period.duration()),
    };
    match step {
        remediation::Step::Nothing => {}
        remediation::Step::Wait { at } => remedied.wait = Some((at - now).to_std().unwrap_or_default()),
        remediation::Step::Restart { number } => {
            remedied.plan.reason = Some(within(number));
            remedied.plan.actions = vec![restart(within(number))];
        }
        remediation::Step::Recreate { number } => {
            let reason = format!("{}; a restart did not help", within(number));
            let forced = ImageFacts { force_recreate: true, update_held: false, ..facts.clone() };
            let mut replanned = planner::plan(spec, Some(container), &forced);
            let recreates = replanned.actions.iter().any(|action| matches!(action, Action::Recreate { .. }));
            if held || !recreates {
                remedied.plan.actions = vec![restart(within(number))];
                remedied.plan.reason = Some(within(number));
            } else {
                for action in &mut replanned.actions {
                    if let Action::Recreate { reason: why, .. } = action {
                        why.clone_from(&reason);
                    }
                }
                replanned.reason = Some(reason);
                remedied.plan = replanned;
            }
        }
        remediation::Step::GaveUp { newly } => {
            remedied.newly_gave_up = newly;
            remedied.gave_up = Some(format!(
                "the container stays unhealthy after {} remediations within {}; kedge leaves it alone until the spec changes or it turns healthy by itself (spec.unhealthyLimit)",
                limit.remediations,
                humantime_words(limit.period)
            ));
        }
    }
    remedied
}

/// `5m`, `90s`, `2h`: a period as specs write it.
fn humantime_words(period: Duration) -> String {
    let seconds = period.as_secs();
    match seconds {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Stopped on its own: exited or dead, and not being restarted by the engine.
fn has_stopped(container: &ObservedContainer) -> bool {
    !container.state.running
        && !container.state.restarting
        && matches!(container.state.status, EngineStatus::Exited | EngineStatus::Dead)
}

fn backoff_message(container: &ObservedContainer, delay: Duration, at: chrono::DateTime<Utc>) -> String {
    format!(
        "{}; back-off {}s: kedge starts it again at {}",
        restarts::describe_exit(container),
        delay.as_secs(),
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

/// The image identity an update was tried with: the registry's digest when the spec checks the
/// registry, else the local image ID the tag names.
fn update_image(facts: &ImageFacts) -> Option<String> {
    facts.registry_digest.clone().or_else(|| facts.local_image_id.clone())
}

/// Whether a held (rolled-back) update is still the one the spec asks for.
fn hold_applies(held: &RolledBackUpdate, spec: &Container, image: &Option<String>) -> bool {
    held.generation == spec.metadata.generation
        && held.image == spec.spec.image.to_string()
        && held.image_id == *image
        && held.restarted_at.as_ref() == spec.metadata.annotations.get(RESTARTED_AT_ANNOTATION)
}

fn held_message(held: &RolledBackUpdate, name: &str) -> String {
    let generation = held.generation.map_or(String::new(), |generation| format!("generation {generation} "));
    let image_id = held.image_id.as_deref().map_or(String::new(), |id| format!(", {}", short_image(id)));
    format!(
        "the update to {generation}(image {}{image_id}) failed and was rolled back: {}: {}; the old container keeps running, and the update is not tried again until the spec or the image changes, or `kedge restart container {name} --recreate`",
        held.image,
        held.reason,
        first_line(&held.message)
    )
}

fn held_error(held: &RolledBackUpdate) -> String {
    format!("{}: {}", held.reason, held.message)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim_end_matches(':')
}

fn short_image(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// This agent's host and store and the spec's deletion policy, for every container the plan
/// creates: the agent only ever considers containers of its own host, and must know the policy
/// once the spec is gone.
fn owner_labels(spec: &Container, host: &str, store_id: &str) -> std::collections::BTreeMap<String, String> {
    let policy = match spec.spec.deletion_policy_or_default() {
        DeletionPolicy::Remove => "remove",
        DeletionPolicy::Orphan => "orphan",
    };
    std::collections::BTreeMap::from([
        (labels::HOST.to_owned(), host.to_owned()),
        (labels::STORE.to_owned(), store_id.to_owned()),
        (labels::DELETION_POLICY.to_owned(), policy.to_owned()),
    ])
}

fn image_check(spec: &Container) -> ImageCheck {
    spec.spec.update_policy.as_ref().and_then(|policy| policy.image_check).unwrap_or_default()
}

fn check_interval(spec: &Container) -> Duration {
    spec.spec
        .update_policy
        .as_ref()
        .and_then(|policy| policy.interval())
        .map_or(DEFAULT_CHECK_INTERVAL, |interval| interval.duration())
}

/// Whether the API version `version` (`1.41`) is older than `major.minor`; an unreadable one is
/// taken for old, the safe side.
fn api_older_than(version: &str, (major, minor): (u64, u64)) -> bool {
    let mut parts = version.split('.').map(|part| part.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(have_major), Some(have_minor)) => (have_major, have_minor) < (major, minor),
        _ => true,
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests;
