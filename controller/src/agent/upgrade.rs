//! The agent's side of the upgrade campaign (docs/upgrades.md): acts on its host's request key
//! (`/kedge/v1/upgrades/hosts/<host>`) and reports how the upgrade went.
//!
//! - `Requested`: an agent that runs in a container makes sure it has the target image (pulls it
//!   otherwise), moves the request to `Upgrading` (compare-and-swap, naming the helper), records
//!   `UpgradeStarted` and starts the helper container ([`crate::upgrade::helper`]). An agent that
//!   does not run in a container answers `Failed` at once.
//! - `Upgrading`: whichever agent runs on the host then (the new one after a success, the old one
//!   restored after a rollback, or the old one still waiting) looks at the helper. While it runs,
//!   nothing. Once it exited, its result line is the outcome: the agent writes it
//!   (`Succeeded`/`RolledBack`/`Failed`), records the event, and removes the helper. A helper that
//!   exited without a result crashed: the agent first finishes or undoes the recreate it left
//!   behind (`recover_name` of its own container), then reports `Failed`.
//!
//! Every step is a compare-and-swap on the request key and is repeated on the next tick when it
//! did not happen, so an agent killed at any point picks up where the last one stopped.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::host::AgentIdentity;
use super::Agent;
use crate::docker::{ContainerStatus, LogStream, RemoveOptions};
use crate::events::EventType;
use crate::executor::RecreateStrategy;
use crate::store::{keys, PutCondition, StoreError};
use crate::upgrade::helper::{self, HelperOutcome};
use crate::upgrade::{format_time, parse_time, HostUpgrade, HostUpgradeState};

/// How often the agent looks at its host's request key.
const TICK: Duration = Duration::from_secs(1);
/// How many lines of a crashed helper's output its report carries.
const HELPER_LOG_TAIL: usize = 30;

/// Follows this host's upgrade requests until `shutdown`.
pub(crate) async fn follow(agent: Arc<Agent>, identity: AgentIdentity, shutdown: CancellationToken) {
    let Ok(key) = keys::host_upgrade_key(&agent.config.host_name) else { return };
    // The request key, watched: each tick reads it from the watch, and from the store only while the
    // watch is not in sync.
    let watching = shutdown.child_token();
    let _stop_watching = watching.clone().drop_guard();
    let cache = crate::runtime::reflector::spawn(
        agent.store.clone(),
        &key,
        "upgrade request",
        |kv| Ok(kv.clone()),
        watching,
    );
    loop {
        let request = if cache.in_sync() { Ok(cache.get(&key)) } else { agent.store.get(&key).await };
        let outcome = match request {
            Ok(Some(kv)) => step(&agent, &identity, &key, kv).await,
            Ok(None) => Ok(()),
            Err(error) => Err(StepError::Store(error)),
        };
        if let Err(error) = outcome {
            tracing::debug!(%error, "agent upgrade: step failed; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Why a step did not complete; it is taken again on the next tick.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("docker engine: {0}")]
    Docker(#[from] crate::docker::DockerError),
}

/// A host's upgrade request as a step reads it: its key, its value and the value's revision.
struct Request<'a> {
    key: &'a str,
    upgrade: HostUpgrade,
    mod_revision: i64,
}

async fn step(
    agent: &Agent,
    identity: &AgentIdentity,
    key: &str,
    kv: crate::store::KeyValue,
) -> Result<(), StepError> {
    let Ok(upgrade) = serde_json::from_slice::<HostUpgrade>(&kv.value) else { return Ok(()) };
    match upgrade.state {
        HostUpgradeState::Requested => {
            start(agent, identity, Request { key, upgrade, mod_revision: kv.mod_revision }).await
        }
        HostUpgradeState::Upgrading => {
            finish(agent, identity, Request { key, upgrade, mod_revision: kv.mod_revision }).await
        }
        _ => Ok(()),
    }
}

/// `Requested`: start the helper.
async fn start(agent: &Agent, identity: &AgentIdentity, request: Request<'_>) -> Result<(), StepError> {
    let Request { key, upgrade, mod_revision } = request;
    let host = agent.config.host_name.clone();
    let Some(own) = &identity.container else {
        let message = "the agent does not run in a container: upgrade it by hand".to_owned();
        return conclude(agent, key, upgrade, mod_revision, HostUpgradeState::Failed, message).await;
    };
    // Only an image this agent may run: checked here as well as by the API, since a request can be
    // written straight to the store. Nothing is pulled or changed for a refused one.
    if let Err(message) =
        crate::upgrade::check_repository(&own.image, &upgrade.image, &agent.config.upgrade_repositories)
    {
        agent.events.record_host(&host, EventType::Warning, "UpgradeRefused", &message).await;
        return conclude(agent, key, upgrade, mod_revision, HostUpgradeState::Failed, message).await;
    }
    // The target image, pulled when the engine lacks it (a pull failure fails the upgrade: nothing
    // was changed yet).
    if agent.docker.inspect_image(&upgrade.image).await?.is_none() {
        tracing::info!(image = %upgrade.image, "agent upgrade: pulling the new image");
        if let Err(error) = agent.docker.pull(&upgrade.image, |_| {}).await {
            let message = format!("cannot pull {}: {}", upgrade.image, crate::error_chain(&error));
            return conclude(agent, key, upgrade, mod_revision, HostUpgradeState::Failed, message).await;
        }
    }
    // Never two helpers on one host: a second one would take the first one's half-done recreate for
    // an interrupted one and finish or undo it underneath it.
    let filter = crate::docker::ContainerFilter {
        labels: vec![format!("{}={host}", helper::HELPER_LABEL)],
        name: None,
    };
    if let Some(busy) =
        agent.docker.list_containers(&filter).await?.into_iter().find(|c| c.state == "running")
    {
        let message = format!("the upgrade helper {} of an earlier request is still running", busy.name);
        return conclude(agent, key, upgrade, mod_revision, HostUpgradeState::Failed, message).await;
    }
    let Some(observed) = agent.docker.inspect_container(&own.id).await? else {
        let message = format!("the agent's container {} is gone from the engine", own.id);
        return conclude(agent, key, upgrade, mod_revision, HostUpgradeState::Failed, message).await;
    };
    let timeout = crate::upgrade::bounded_timeout(upgrade.timeout_seconds);
    let config =
        helper::helper_config(&observed, &host, &upgrade.campaign, &own.image_id, &upgrade.image, timeout);
    let upgrading = HostUpgrade {
        state: HostUpgradeState::Upgrading,
        message: format!("replacing {} ({}) with {}", own.name, own.image, upgrade.image),
        helper: Some(config.name.clone()),
        old_container_id: Some(own.id.clone()),
        ..upgrade.clone()
    };
    let revision =
        agent.store.put(key, to_json(&upgrading)?, PutCondition::ModRevision(mod_revision), 0).await?;
    let message = format!("agent {} -> {} ({})", identity.version, upgrade.version, upgrade.image);
    agent.events.record_host(&host, EventType::Normal, "UpgradeStarted", &message).await;
    tracing::info!(helper = %config.name, image = %upgrade.image, "agent upgrade: starting the helper");
    // A helper of this name left from an earlier attempt is replaced; a container that is not a
    // helper of this host is never touched.
    if let Some(existing) = agent.docker.inspect_container(&config.name).await? {
        if !is_helper_of(&existing.labels, &host) {
            let message =
                format!("container {} is not kedge's upgrade helper and holds its name", config.name);
            return conclude(agent, key, upgrading, revision, HostUpgradeState::Failed, message).await;
        }
        remove_helper(agent, &existing.id).await;
    }
    let started = match agent.docker.create_container(&config).await {
        Ok(id) => agent.docker.start_container(&id).await.map(|()| id),
        Err(error) => Err(error),
    };
    if let Err(error) = started {
        if let Ok(Some(created)) = agent.docker.inspect_container(&config.name).await {
            if is_helper_of(&created.labels, &host) {
                remove_helper(agent, &created.id).await;
            }
        }
        let message = format!("cannot start the upgrade helper: {}", crate::error_chain(&error));
        return conclude(agent, key, upgrading, revision, HostUpgradeState::Failed, message).await;
    }
    Ok(())
}

fn is_helper_of(labels: &std::collections::BTreeMap<String, String>, host: &str) -> bool {
    labels.get(helper::HELPER_LABEL).map(String::as_str) == Some(host)
}

async fn remove_helper(agent: &Agent, id: &str) {
    let options = RemoveOptions { force: true, anonymous_volumes: true };
    if let Err(error) = agent.docker.remove_container(id, options).await {
        tracing::warn!(%error, helper = id, "agent upgrade: cannot remove the helper");
    }
}

/// `Upgrading`: once the helper exited, report its outcome and remove it.
async fn finish(agent: &Agent, identity: &AgentIdentity, request: Request<'_>) -> Result<(), StepError> {
    let Request { key, upgrade, mod_revision } = request;
    let Some(helper_name) = upgrade.helper.clone() else { return Ok(()) };
    let helper = agent
        .docker
        .inspect_container(&helper_name)
        .await?
        .filter(|helper| is_helper_of(&helper.labels, &agent.config.host_name));
    let Some(helper) = helper else {
        // Gone without a report (removed by hand, or by an agent that stopped before writing it).
        let upgraded = identity.container.as_ref().is_some_and(|c| c.image == upgrade.image)
            || identity.version == upgrade.version;
        let (state, message) = if upgraded {
            (HostUpgradeState::Succeeded, format!("the agent runs {}", upgrade.image))
        } else {
            (
                HostUpgradeState::Failed,
                format!("the upgrade helper {helper_name} vanished before it reported"),
            )
        };
        return conclude(agent, key, upgrade, mod_revision, state, message).await;
    };
    if helper.state.status == ContainerStatus::Created {
        // Created but never started: the agent that created it stopped in between.
        agent.docker.start_container(&helper.id).await?;
        return Ok(());
    }
    if helper.state.running || helper.state.restarting {
        return Ok(());
    }
    let output = helper_output(agent, &helper.id).await;
    let (state, message, new_id) = match helper::parse_result(&output) {
        Some(result) => {
            let state = match result.outcome {
                HelperOutcome::Succeeded => HostUpgradeState::Succeeded,
                HelperOutcome::RolledBack => HostUpgradeState::RolledBack,
                HelperOutcome::Failed => HostUpgradeState::Failed,
            };
            (state, result.message, result.new_id)
        }
        None => {
            // The helper crashed (and Docker gave up restarting it): undo or finish what it left.
            if let Some(own) = &identity.container {
                let strategy =
                    RecreateStrategy { running_grace: Duration::from_secs(1), ..RecreateStrategy::default() };
                if let Err(error) = agent.executor.recover_name(&own.name, &strategy).await {
                    tracing::warn!(%error, "agent upgrade: could not recover the helper's recreate");
                }
            }
            let tail: String = output.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            let code = helper.state.exit_code.map_or_else(|| "unknown".to_owned(), |code| code.to_string());
            // The recovery finished it forward when this agent is the new one (it is healthy).
            let current = match &identity.container {
                Some(own) => agent.docker.inspect_container(&own.name).await?,
                None => None,
            };
            match current.filter(|c| identity.container.as_ref().is_some_and(|own| own.id == c.id)) {
                Some(me) if me.image == upgrade.image => {
                    let message = format!(
                        "the upgrade helper stopped early (code {code:?}); the new agent completed the upgrade"
                    );
                    (HostUpgradeState::Succeeded, message, Some(me.id))
                }
                _ => {
                    let message =
                        format!("the upgrade helper exited with code {code:?} before finishing: {tail}");
                    (HostUpgradeState::Failed, message, None)
                }
            }
        }
    };
    let mut upgrade = upgrade;
    upgrade.new_container_id = new_id;
    conclude(agent, key, upgrade, mod_revision, state, message).await?;
    remove_helper(agent, &helper.id).await;
    Ok(())
}

/// Writes the outcome (compare-and-swap) and records its event.
async fn conclude(
    agent: &Agent,
    key: &str,
    upgrade: HostUpgrade,
    mod_revision: i64,
    state: HostUpgradeState,
    message: String,
) -> Result<(), StepError> {
    let now = Utc::now();
    let duration = parse_time(&upgrade.requested_at).map(|t| (now - t).num_milliseconds() as f64 / 1000.0);
    let concluded = HostUpgrade {
        state,
        message: message.clone(),
        finished_at: Some(format_time(now)),
        duration_seconds: duration,
        ..upgrade
    };
    agent.store.put(key, to_json(&concluded)?, PutCondition::ModRevision(mod_revision), 0).await?;
    let (kind, reason) = match state {
        HostUpgradeState::Succeeded => (EventType::Normal, "UpgradeSucceeded"),
        HostUpgradeState::RolledBack => (EventType::Warning, "UpgradeRolledBack"),
        _ => (EventType::Warning, "UpgradeFailed"),
    };
    let message = format!("{} {}: {message}", concluded.image, concluded.version);
    agent.events.record_host(&agent.config.host_name, kind, reason, &message).await;
    tracing::info!(?state, %message, "agent upgrade: concluded");
    Ok(())
}

/// The helper's output, stdout and stderr in order.
async fn helper_output(agent: &Agent, id: &str) -> String {
    match agent.docker.logs(id, HELPER_LOG_TAIL).await {
        Ok(lines) => lines
            .iter()
            .filter(|l| matches!(l.stream, LogStream::Stdout | LogStream::Stderr))
            .map(|l| l.text.clone())
            .collect(),
        Err(_) => String::new(),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Invalid(e.to_string()))
}
