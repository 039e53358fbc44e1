//! The planner: a pure function from (desired spec, observed container, image facts) to the actions that
//! bring the container to the spec, and the drift it found.
//!
//! No IO, no clock, no tokio: everything the decision needs is passed in, so every drift rule is a
//! unit test below. The least disruptive repair wins: a container is recreated only when something
//! it cannot change while running differs; limits are updated and networks reconnected in place,
//! a paused one resumed, and a stopped container is started when its restart policy and kedge's
//! crash-loop backoff say so (see [`crate::restarts`]; unless the spec's `runState` is `stopped`: then a running
//! one is stopped, a missing one created unstarted, a stopped one left). A container without
//! kedge's ownership label is a conflict, never a target.
//!
//! The spec-hash label is a hint, not the decision. Docker cannot relabel a container, so after an
//! in-place repair (a limit changed in the spec, applied with the update API) the label keeps the
//! old hash for the life of the container; deciding by hash would recreate it on the next pass. The
//! decision is made field by field from inspect instead, which also catches edits made with the
//! docker CLI. Every spec field that shapes the container can be read back from inspect; the ones
//! that cannot (`postStart`, `updatePolicy`, `dependsOn`, ...) do not need a new container.
//!
//! - `actions`: what the planner can decide ([`Action`], [`RecreateStrategy`]); the executor carries it out.
//! - `limits`: limits the engine accepts but ignores, left out of in-place updates.
//! - `drift`: the field-by-field comparison and the engine's normalizations it undoes.
//! - `providers`: containers that follow another spec's container (its network namespace, a link),
//!   and what Docker does to them when that container restarts or is replaced.

mod actions;
mod drift;
pub(crate) mod limits;
mod providers;

use std::collections::BTreeMap;
use std::time::Duration;

use kedge_crds::secret::ResolvedEnv;
use kedge_crds::{
    CommandMatch, Container, ExecPolicy, FieldDiff, ImageCheck, PullPolicy, RunState, UpdateOrder,
};

use crate::docker::labels;
use crate::docker::{ContainerStatus, ExecSpec, ImageInfo, ObservedContainer, Resources};
use crate::mapping::{container_config_with_secrets, RESTARTED_AT_ANNOTATION, RESTARTED_AT_LABEL};
use crate::restarts;

pub use actions::{Action, RecreateOrder, RecreateStrategy};
use drift::Repair;

/// What the caller learned about images (and processes) before planning; the planner reads no engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageFacts {
    /// The image ID (`sha256:...`) the spec's image reference names in the local store now; `None`
    /// when the reference is not in the store. With `updatePolicy.imageCheck: local`, a container
    /// running another ID is recreated (the ctr-updater rule).
    pub local_image_id: Option<String>,
    /// The registry's digest for the spec's reference now (`sha256:...`), for `imageCheck: registry`;
    /// `None` when not asked or unknown, which never triggers a recreate.
    pub registry_digest: Option<String>,
    /// `RepoDigests` of the image the container runs (`repo@sha256:...`).
    pub running_repo_digests: Vec<String>,
    /// The config of the image the container runs: its defaults are what inspect merged into the
    /// container. Without it, only declared fields can be compared.
    pub running_image: Option<ImageInfo>,
    /// `kedge recreate` was asked for this container.
    pub force_recreate: bool,
    /// Command lines of the processes running in the container (`docker top`), for the
    /// `ensureRunning` post-start commands; `None` when not looked at.
    pub running_processes: Option<Vec<String>>,
    /// The container was stopped because the spec said `runState: stopped`, and now says running:
    /// start it whatever its exit code and restart policy (a clean exit is not a finished job here).
    pub start_requested: bool,
    /// Restarts of the container so far (by kedge or the engine), for `on-failure:N`.
    pub restarts: u64,
    /// kedge's crash-loop backoff holds the next start of this stopped container back (the
    /// agent's [`crate::restarts::gate`]); the message says until when.
    pub start_backoff: Option<String>,
    /// The spec's generation (and the image its tag names) failed to update and was rolled back:
    /// the running container is kept, nothing is recreated or changed in place until the spec, the
    /// image or a recreate request changes. A stopped or paused container is still started.
    pub update_held: bool,
    /// The engine speaks an API older than 1.44, which has no `Healthcheck.StartInterval`: it
    /// would take the field and drop it, so it is neither sent nor compared (the agent reports it).
    pub engine_lacks_start_interval: bool,
    /// The current container of each spec this one follows (`networkMode: container:NAME`,
    /// `links`), by spec name; a spec without a container is absent.
    pub providers: BTreeMap<String, ProviderContainer>,
    /// Labels every container this plan creates carries besides the spec's own (the agent's host,
    /// its store, the deletion policy): the agent only ever considers containers of its own host,
    /// and must know the policy once the spec is gone.
    pub owner_labels: BTreeMap<String, String>,
    /// Limits the engine accepted but did not apply at this spec's generation (learned by the
    /// agent): left out of in-place updates, see [`limits`].
    pub ignored_limits: Option<Resources>,
    /// The values of the spec's `secretEnv`, read by the agent before planning (its `Debug` shows
    /// names and fingerprints only). They go into the created container's env; every difference
    /// found in a secret-sourced variable is rendered `<redacted>`.
    pub secret_env: ResolvedEnv,
}

/// The container a spec's network provider or link target has now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderContainer {
    pub id: String,
    /// RFC 3339, as inspect prints it.
    pub created: Option<String>,
    /// RFC 3339, as inspect prints it: the last start.
    pub started_at: Option<String>,
    pub running: bool,
}

/// What to do, and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// In order. Empty when the container is as declared.
    pub actions: Vec<Action>,
    /// Every difference found between the spec and the container, for status.
    pub drift: Vec<FieldDiff>,
    /// Why the actions are needed, for events and status messages.
    pub reason: Option<String>,
    /// A container kedge must not touch holds the spec's name; `actions` is then empty.
    pub conflict: Option<Conflict>,
}

/// A container holds the spec's name but is not this spec's to manage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub container_id: String,
    pub reason: String,
}

impl Plan {
    /// True when nothing needs doing and nothing differs.
    pub fn is_nothing(&self) -> bool {
        self.actions.is_empty() && self.drift.is_empty() && self.conflict.is_none()
    }
}

/// Plans the repair of `observed` (`None`: no container holds the spec's name) towards `desired`.
/// The spec's networks are ensured first when the plan attaches the container to networks.
pub fn plan(desired: &Container, observed: Option<&ObservedContainer>, facts: &ImageFacts) -> Plan {
    let mut plan = repair(desired, observed, facts);
    let attaches = plan.actions.iter().any(|action| {
        matches!(action, Action::Create { .. } | Action::Recreate { .. } | Action::ConnectNetwork { .. })
    });
    if attaches {
        // A network with a static address needs a subnet only its owner can choose, so it is not
        // made: the create then fails with the engine's message, which status reports.
        let networks = desired.spec.networks.iter().filter(|network| network.ipv4_address.is_none());
        let ensure = networks.map(|network| Action::EnsureNetwork { network: network.name.clone() });
        plan.actions.splice(0..0, ensure);
    }
    plan
}

fn repair(desired: &Container, observed: Option<&ObservedContainer>, facts: &ImageFacts) -> Plan {
    let mut config = container_config_with_secrets(desired, &facts.secret_env);
    config.labels.extend(facts.owner_labels.iter().map(|(key, value)| (key.clone(), value.clone())));
    if facts.engine_lacks_start_interval {
        if let Some(healthcheck) = &mut config.healthcheck {
            healthcheck.start_interval = None;
        }
    }
    let name = config.name.clone();
    let stopped = desired.spec.run_state_or_default() == RunState::Stopped;

    let Some(observed) = observed else {
        let mut actions = Vec::new();
        if needs_pull_before_create(desired, facts) {
            actions.push(Action::Pull { image: config.image.clone() });
        }
        actions.push(Action::Create { config });
        if stopped {
            // Created, not started: `kedge start` (runState running) then only has to start it.
            return Plan {
                actions,
                reason: Some("container missing (created stopped, as the spec asks)".to_owned()),
                ..Plan::default()
            };
        }
        actions.push(Action::Start { container: name.clone() });
        actions.extend(post_start_execs(desired, &name));
        return Plan { actions, reason: Some("container missing".to_owned()), ..Plan::default() };
    };

    if !labels::is_managed(&observed.labels) {
        return conflict(observed, format!("container {:?} is not managed by kedge", observed.name));
    }
    let key = desired.key();
    if let Some(owner) = labels::key(&observed.labels).filter(|owner| *owner != key) {
        return conflict(
            observed,
            format!("container {:?} belongs to spec {owner}, not {key}", observed.name),
        );
    }

    let mut drift = drift::compare(&config, observed, facts.running_image.as_ref());
    redact_secret_env(&mut drift, &facts.secret_env, observed);
    let followed = providers::compare(desired, observed, &facts.providers);
    let mut diffs: Vec<FieldDiff> = drift.findings.iter().map(|finding| finding.diff.clone()).collect();
    diffs.extend(followed.iter().map(|finding| finding.diff.clone()));
    let mut reasons = recreate_reasons(desired, observed, facts, &drift);
    reasons.extend(
        followed
            .iter()
            .filter(|finding| finding.repair == providers::Repair::Recreate)
            .map(|finding| finding.reason.clone()),
    );
    let container = observed.id.clone();
    let held = facts.update_held && !reasons.is_empty();
    if held {
        // The last try of exactly this update failed and was rolled back: keep what runs.
        reasons.clear();
    }

    if !reasons.is_empty() && stopped {
        // A container meant to stay stopped has nothing to keep serving: replace it plainly, unstarted.
        let reason = reasons.join("; ");
        let actions = vec![Action::Remove { container }, Action::Create { config }];
        return Plan { actions, drift: diffs, reason: Some(reason), conflict: None };
    }
    if !reasons.is_empty() {
        let strategy = recreate_strategy(desired, facts);
        let reason = reasons.join("; ");
        let mut actions = vec![Action::Recreate { config, reason: reason.clone(), strategy }];
        actions.extend(post_start_execs(desired, &name));
        return Plan { actions, drift: diffs, reason: Some(reason), conflict: None };
    }

    let mut actions = Vec::new();
    if !held && drift.needs(Repair::UpdateResources) {
        reasons.push("resource limits differ".to_owned());
        let wanted = drift::update_resources(&config.resources);
        if let Some(resources) =
            limits::update_to_send(wanted, facts.ignored_limits.as_ref(), &observed.resources)
        {
            actions.push(Action::UpdateInPlace { container: container.clone(), resources });
        }
    }
    if !held && drift.needs(Repair::Network) {
        reasons.push("networks differ".to_owned());
        for network in &drift.disconnect {
            actions
                .push(Action::DisconnectNetwork { container: container.clone(), network: network.clone() });
        }
        for network in &drift.connect {
            actions.push(Action::ConnectNetwork { container: container.clone(), network: network.clone() });
        }
    }
    let decision = match (stopped, start_decision(desired, observed, facts)) {
        (true, _) => stop_decision(observed),
        (false, StartDecision::Leave)
            if facts.start_requested && observed.state.status == ContainerStatus::Exited =>
        {
            StartDecision::Start("the spec asks for it to run again".to_owned())
        }
        (false, decision) => decision,
    };
    match decision {
        StartDecision::Start(why) => {
            reasons.push(why);
            actions.push(Action::Start { container: container.clone() });
            actions.extend(post_start_execs(desired, &container));
        }
        StartDecision::Leave => {}
        StartDecision::Unpause(why) => {
            reasons.push(why);
            actions.push(Action::Unpause { container: container.clone() });
        }
        StartDecision::Stop(why) => {
            reasons.push(why);
            let timeout = desired.spec.stop_grace_period.map(|period| period.duration());
            actions.push(Action::Stop { container: container.clone(), timeout });
        }
        StartDecision::Running
            if followed.iter().any(|finding| finding.repair == providers::Repair::Restart) =>
        {
            // What it follows started again: a restart picks its new namespace or address up.
            let reason = followed
                .iter()
                .filter(|finding| finding.repair == providers::Repair::Restart)
                .map(|finding| finding.reason.clone())
                .collect::<Vec<_>>()
                .join("; ");
            reasons.push(reason.clone());
            let timeout = desired.spec.stop_grace_period.map(|period| period.duration());
            actions.push(Action::Restart { container: container.clone(), reason, timeout });
            actions.extend(post_start_execs(desired, &container));
        }
        StartDecision::Running => {
            for (index, exec) in missing_ensured_execs(desired, facts) {
                reasons.push(format!("post-start command {index} is not running"));
                diffs.push(FieldDiff {
                    field: format!("spec.postStart[{index}]"),
                    desired: Some(exec.cmd.join(" ")),
                    actual: None,
                });
                actions.push(Action::RunExec { container: container.clone(), exec, unless_running: true });
            }
        }
    }
    Plan { actions, drift: diffs, reason: (!reasons.is_empty()).then(|| reasons.join("; ")), conflict: None }
}

/// Why the container must be replaced, if it must. Empty: it can be repaired in place.
fn recreate_reasons(
    desired: &Container,
    observed: &ObservedContainer,
    facts: &ImageFacts,
    drift: &drift::Drift,
) -> Vec<String> {
    let spec = &desired.spec;
    let mut reasons = Vec::new();
    if facts.force_recreate {
        reasons.push("recreate requested".to_owned());
    }
    if let Some(requested) = desired.metadata.annotations.get(RESTARTED_AT_ANNOTATION) {
        if observed.labels.get(RESTARTED_AT_LABEL) != Some(requested) {
            reasons.push(format!("{RESTARTED_AT_ANNOTATION} set to {requested}"));
        }
    }

    let image_check = spec.update_policy.as_ref().and_then(|policy| policy.image_check).unwrap_or_default();
    match image_check {
        ImageCheck::None => {}
        ImageCheck::Local => {
            if let Some(local) = &facts.local_image_id {
                if *local != observed.image_id {
                    reasons.push(format!(
                        "{} now names image {}, the container runs {}",
                        spec.image,
                        short_image_id(local),
                        short_image_id(&observed.image_id)
                    ));
                }
            }
        }
        ImageCheck::Registry => {
            if let Some(digest) = &facts.registry_digest {
                let running = facts.running_repo_digests.iter().any(|repo_digest| {
                    repo_digest.rsplit_once('@').is_some_and(|(_, running)| running == digest)
                });
                if !running {
                    reasons.push(format!("the registry's {} moved to {digest}", spec.image));
                }
            }
        }
    }

    // How a container meant to stay stopped ended does not matter until it is to run again: then
    // (`kedge start`, `kedge startup`) a non-recoverable end takes a new container, as docker-map's
    // startup does.
    let stopped = spec.run_state_or_default() == RunState::Stopped;
    let settled = !observed.state.running && !observed.state.restarting && !stopped;
    if settled && observed.state.status == ContainerStatus::Dead {
        reasons.push("container is dead".to_owned());
    } else if settled && observed.state.status == ContainerStatus::Exited {
        if let Some(code) = observed.state.exit_code {
            if spec.non_recoverable_exit_codes_or_default().contains(&code) {
                reasons.push(format!("exit code {code} is non-recoverable"));
            }
        }
    }

    let skip_limit_reset =
        spec.update_strategy.as_ref().and_then(|strategy| strategy.skip_limit_reset).unwrap_or(false);
    let fields: Vec<&str> = drift
        .findings
        .iter()
        .filter(|finding| finding.repair == Repair::Recreate)
        .filter(|finding| !(skip_limit_reset && finding.diff.field.starts_with("spec.resources.")))
        .map(|finding| finding.diff.field.as_str())
        .collect();
    if !fields.is_empty() {
        reasons.push(format!("{} cannot change in place", fields.join(", ")));
    }

    let hash = kedge_crds::spec_hash_with_secrets(spec, &facts.secret_env.fingerprints);
    let hash_changed = labels::spec_hash(&observed.labels) != Some(hash.as_str());
    if hash_changed && drift.findings.is_empty() && facts.running_image.is_none() {
        // Without the image's defaults, an undeclared field that was removed from the spec cannot
        // be seen; the hash says something changed, so replace rather than guess.
        reasons.push("spec changed and the running image is unknown".to_owned());
    }
    reasons
}

/// Renders every difference of a secret-sourced variable (the spec's `secretEnv` now, or the
/// container's when it was created: a variable the spec no longer names still holds a secret) as
/// `spec.secretEnv.NAME`, `<redacted>` on both sides: drift goes to status, events and logs.
fn redact_secret_env(drift: &mut drift::Drift, secrets: &ResolvedEnv, observed: &ObservedContainer) {
    let mut names: std::collections::BTreeSet<String> = secrets.values.keys().cloned().collect();
    names.extend(labels::secret_env_names(&observed.labels));
    for finding in &mut drift.findings {
        let Some(name) = finding.diff.field.strip_prefix("spec.env.") else { continue };
        if names.contains(name) {
            let redacted = |value: &Option<String>| value.as_ref().map(|_| kedge_crds::REDACTED.to_owned());
            finding.diff = FieldDiff {
                field: format!("spec.secretEnv.{name}"),
                desired: redacted(&finding.diff.desired),
                actual: redacted(&finding.diff.actual),
            };
        }
    }
}

enum StartDecision {
    /// Running (or Docker is restarting it itself).
    Running,
    /// Stopped, and meant to stay so.
    Leave,
    Start(String),
    /// Paused (by hand): resumed.
    Unpause(String),
    /// Running, and the spec asks for it to be stopped.
    Stop(String),
}

/// `runState: stopped`: a running (or restarting) container is stopped with the spec's signal and
/// grace period; a stopped one is left, whatever its restart policy. Paused is left as it is.
fn stop_decision(observed: &ObservedContainer) -> StartDecision {
    let state = &observed.state;
    if (state.running || state.restarting) && state.status != ContainerStatus::Paused {
        return StartDecision::Stop("the spec asks for the container to be stopped".to_owned());
    }
    StartDecision::Leave
}

/// A stopped container is started when its restart policy wants it (see [`crate::restarts`]) and
/// kedge's crash-loop backoff lets it; a paused one is resumed. Docker's own restarts are left to Docker.
fn start_decision(desired: &Container, observed: &ObservedContainer, facts: &ImageFacts) -> StartDecision {
    let state = &observed.state;
    if state.status == ContainerStatus::Paused {
        return StartDecision::Unpause("container was paused".to_owned());
    }
    if state.running || state.restarting {
        return StartDecision::Running;
    }
    match state.status {
        ContainerStatus::Created => return StartDecision::Start("container was never started".to_owned()),
        ContainerStatus::Removing => return StartDecision::Leave,
        _ => {}
    }
    let exit_code = state.exit_code.unwrap_or(0);
    if restarts::policy_allows(desired.spec.restart_policy.as_ref(), exit_code, facts.restarts).is_err()
        || facts.start_backoff.is_some()
    {
        return StartDecision::Leave;
    }
    StartDecision::Start(restarts::describe_exit(observed))
}

/// `ensureRunning` post-start commands with no process of exactly their command line.
fn missing_ensured_execs(desired: &Container, facts: &ImageFacts) -> Vec<(usize, ExecSpec)> {
    let Some(processes) = &facts.running_processes else { return Vec::new() };
    desired
        .spec
        .post_start
        .iter()
        .enumerate()
        .filter(|(_, exec)| exec.policy == ExecPolicy::EnsureRunning)
        .filter(|(_, exec)| {
            let command = exec.command.join(" ");
            !processes.iter().any(|process| match exec.command_match.unwrap_or_default() {
                CommandMatch::Full => *process == command,
                CommandMatch::Partial => process.contains(&command),
            })
        })
        .map(|(index, exec)| (index, exec_spec(exec)))
        .collect()
}

/// Every post-start command, for a container that is about to (re)start.
fn post_start_execs(desired: &Container, container: &str) -> Vec<Action> {
    desired
        .spec
        .post_start
        .iter()
        .map(|exec| Action::RunExec {
            container: container.to_owned(),
            exec: exec_spec(exec),
            unless_running: exec.policy == ExecPolicy::EnsureRunning,
        })
        .collect()
}

fn exec_spec(exec: &kedge_crds::PostStartExec) -> ExecSpec {
    ExecSpec { cmd: exec.command.clone(), user: exec.user.clone(), ..ExecSpec::default() }
}

fn pull_policy(desired: &Container) -> PullPolicy {
    desired.spec.update_policy.as_ref().and_then(|policy| policy.pull_policy).unwrap_or_default()
}

fn needs_pull_before_create(desired: &Container, facts: &ImageFacts) -> bool {
    match pull_policy(desired) {
        PullPolicy::Always => true,
        PullPolicy::IfNotPresent => facts.local_image_id.is_none(),
        PullPolicy::Never => false,
    }
}

/// How long a container started by a recreate must stay running before it counts as ready, when
/// neither its spec (`minReadySeconds`) nor a healthcheck says: long enough to catch a container
/// that dies at once (a bad command, a missing file), short enough not to slow a rollout.
pub const DEFAULT_MIN_READY_WITHOUT_HEALTHCHECK: Duration = Duration::from_secs(1);

fn recreate_strategy(desired: &Container, facts: &ImageFacts) -> RecreateStrategy {
    let spec = &desired.spec;
    let registry_moved = spec.update_policy.as_ref().and_then(|policy| policy.image_check)
        == Some(ImageCheck::Registry)
        && facts.registry_digest.is_some();
    let defaults = RecreateStrategy::default();
    let strategy = spec.update_strategy.as_ref();
    // Validation keeps the seconds in 0..=3600; a negative number that slipped past it counts as 0.
    let min_ready = spec.min_ready_seconds.map(|seconds| Duration::from_secs(seconds.max(0).unsigned_abs()));
    RecreateStrategy {
        pull: match pull_policy(desired) {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => registry_moved || facts.local_image_id.is_none(),
            PullPolicy::Never => false,
        },
        health_timeout: strategy
            .and_then(|strategy| strategy.health_timeout)
            .map_or(defaults.health_timeout, |timeout| timeout.duration()),
        stop_timeout: spec.stop_grace_period.map(|period| period.duration()).or(defaults.stop_timeout),
        // With a soak, the old image is what a failure inside it rolls back to: the agent removes
        // it once the soak is over, not the recreate.
        remove_old_image: spec.cleanup_or_default() && spec.soak_or_default().is_zero(),
        running_grace: min_ready.unwrap_or(DEFAULT_MIN_READY_WITHOUT_HEALTHCHECK),
        min_ready_healthy: min_ready.unwrap_or(Duration::ZERO),
        // Start-first unless the spec asks otherwise; the executor falls back to stop-first when
        // the two containers would share a host port, an address, a device or data.
        order: match strategy.and_then(|strategy| strategy.kind) {
            Some(UpdateOrder::StopFirst) => RecreateOrder::StopFirst,
            Some(UpdateOrder::StartFirst) | None => RecreateOrder::StartFirst,
        },
    }
}

fn conflict(observed: &ObservedContainer, reason: String) -> Plan {
    Plan {
        reason: Some(reason.clone()),
        conflict: Some(Conflict { container_id: observed.id.clone(), reason }),
        ..Plan::default()
    }
}

fn short_image_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
pub(crate) mod tests;
