//! The executor: carries the planner's actions out against Docker; the only code that mutates containers.
//!
//! Every mutation first checks ownership: a container without `io.kedge.managed-by=kedge` is never
//! stopped, renamed, updated or removed; it is reported as [`ExecutorError::Foreign`] with its ID.
//! The one exception is [`Executor::recreate_any`], the explicit `kedge recreate NAME` entry point.
//!
//! Every action is idempotent: starting a running container, stopping a stopped one, removing a
//! gone one and connecting an already connected network all succeed without change, so a
//! reconcile that is retried after a partial failure converges.
//!
//! - [`failpoint`]: crash hooks for the crash-safety tests (feature `failpoints`).
//! - `recreate`: the safe recreate with rollback (DESIGN.md section 4).
//! - `recover`: finishing or rolling back a recreate interrupted by a crash.
//! - `retire`: the old container of a proven start-first recreate, stopped and removed in the background.
//! - `declared`: the config a container was declared with, image defaults removed (`kedge recreate`).
//! - `volumes`: the old container's anonymous volumes carried to the new one (Compose's rule).
//! - `progress`: a recreate's steps, progress reports, outcome and failures.
//! - `health`: waiting until a started container is healthy, or still running after a grace period.

pub mod failpoint;

mod declared;
mod health;
mod progress;
mod recover;
mod recreate;
mod retire;
pub(crate) use progress::{health_words, step_words};
mod volumes;

use tracing::{info, info_span, Instrument};

use crate::docker::labels;
use crate::docker::{
    ContainerConfig, DockerClient, DockerError, Engine, ExecOutcome, ObservedContainer, RemoveOptions,
};

pub use crate::planner::{Action, RecreateOrder, RecreateStrategy};
pub use declared::declared_config;
pub use progress::{RecreateFailure, RecreateProgress, RecreateReport, RecreateStep};
pub use recover::{
    base_name_of_key, decide, find_leftovers, is_recreate_name_of, is_retired_name_of, Decision, Leftovers,
    RecoveryOutcome, RecoveryReport, RecoveryScope,
};
pub use recreate::start_first_conflict;

/// What carrying an action out produced.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    /// Done, nothing to report.
    Done,
    /// A container was created; its ID.
    Created {
        id: String,
    },
    Recreated(RecreateReport),
    /// The exec ran (`None`: skipped because the process already runs).
    Exec(Option<ExecOutcome>),
    /// An image was removed (`false`: a container uses it, or it was gone already).
    ImageRemoved(bool),
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// A container kedge does not own holds the name (or is the target): reported, never touched.
    #[error("container {name:?} ({id}) is not managed by kedge and was left untouched")]
    Foreign { name: String, id: String },
    /// Another kedge container holds the name (e.g. one of another spec key).
    #[error("the name {name:?} is taken by container {id}")]
    NameTaken { name: String, id: String },
    /// The config lacks the ownership labels, so kedge could never manage what it would create.
    #[error("the config for {name:?} lacks the {} label", labels::MANAGED_BY)]
    Unlabeled { name: String },
    #[error("no container {container:?}")]
    NotFound { container: String },
    /// A Docker call failed.
    #[error("{step} of {container:?} failed")]
    Docker {
        step: &'static str,
        container: String,
        #[source]
        source: DockerError,
    },
    /// The recreate failed and was rolled back: the old container runs again with its original ID.
    #[error("recreate of {name:?} failed and was rolled back to container {old_id}: {failure}")]
    RolledBack { name: String, old_id: String, failure: RecreateFailure },
    /// The recreate failed and so did its rollback; `recover` on the name finishes the rollback.
    #[error("recreate of {name:?} failed ({failure}) and its rollback failed too")]
    RollbackFailed {
        name: String,
        failure: RecreateFailure,
        #[source]
        rollback: Box<ExecutorError>,
    },
    /// Recovery found containers it cannot account for; it touched nothing.
    #[error("cannot recover {name:?}: {message}; nothing was touched")]
    Ambiguous { name: String, message: String },
}

impl ExecutorError {
    /// A CamelCase reason for status conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            ExecutorError::Foreign { .. } => "ForeignContainer",
            ExecutorError::NameTaken { .. } => "NameTaken",
            ExecutorError::Unlabeled { .. } => "Unlabeled",
            ExecutorError::NotFound { .. } => "NotFound",
            ExecutorError::Docker { .. } => "DockerError",
            ExecutorError::RolledBack { failure, .. } => failure.reason(),
            ExecutorError::RollbackFailed { .. } => "RollbackFailed",
            ExecutorError::Ambiguous { .. } => "RecoveryAmbiguous",
        }
    }
}

pub type ExecutorResult<T> = Result<T, ExecutorError>;

/// Serializes [`Action::EnsureNetwork`] across the process's workers (see its use).
static ENSURE_NETWORK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Carries actions out against one Docker Engine (the real one, or in unit tests an in-memory one).
#[derive(Debug, Clone)]
pub struct Executor {
    docker: std::sync::Arc<dyn Engine>,
    /// The old containers being stopped and removed in the background (`retire`), shared by clones.
    retirements: std::sync::Arc<retire::Retirements>,
}

impl Executor {
    pub fn new(docker: DockerClient) -> Executor {
        Executor::with_engine(std::sync::Arc::new(docker))
    }

    /// An executor over any [`Engine`] (the agent's unit tests give it `docker::fake::FakeEngine`).
    pub fn with_engine(engine: std::sync::Arc<dyn Engine>) -> Executor {
        Executor { docker: engine, retirements: Default::default() }
    }

    pub fn docker(&self) -> &dyn Engine {
        self.docker.as_ref()
    }

    /// Carries one action out. `progress` hears the steps of a recreate (and pull progress).
    pub async fn execute(
        &self,
        action: &Action,
        progress: &mut (dyn FnMut(RecreateProgress) + Send),
    ) -> ExecutorResult<ActionOutcome> {
        let span = info_span!("action", kind = action.kind());
        async move {
            match action {
                Action::Nothing => Ok(ActionOutcome::Done),
                Action::EnsureNetwork { network } => {
                    let owned = std::collections::BTreeMap::from([(
                        labels::MANAGED_BY.to_owned(),
                        labels::MANAGED_BY_VALUE.to_owned(),
                    )]);
                    // One at a time in the process: Docker allows two networks of one name, so two
                    // workers that both found it missing would make two, and every later attach by
                    // name fails as ambiguous (seen with five Compose services on one new network).
                    let _one_at_a_time = ENSURE_NETWORK.lock().await;
                    self.docker
                        .ensure_network(network, None, &owned)
                        .await
                        .map_err(docker_error("ensure network", network))?;
                    Ok(ActionOutcome::Done)
                }
                Action::Pull { image } => {
                    self.docker
                        .pull(image, &mut |line| progress(RecreateProgress::Pull(line)))
                        .await
                        .map_err(docker_error("pull", image))?;
                    Ok(ActionOutcome::Done)
                }
                Action::Create { config } => Ok(ActionOutcome::Created { id: self.create(config).await? }),
                Action::Start { container } => {
                    let id = self.owned(container).await?.id;
                    self.docker.start_container(&id).await.map_err(docker_error("start", container))?;
                    Ok(ActionOutcome::Done)
                }
                Action::Unpause { container } => {
                    let observed = self.owned(container).await?;
                    if observed.state.status != crate::docker::ContainerStatus::Paused {
                        return Ok(ActionOutcome::Done);
                    }
                    self.docker
                        .unpause_container(&observed.id)
                        .await
                        .map_err(docker_error("unpause", container))?;
                    Ok(ActionOutcome::Done)
                }
                Action::Stop { container, timeout } => {
                    let id = self.owned(container).await?.id;
                    self.docker
                        .stop_container(&id, *timeout)
                        .await
                        .map_err(docker_error("stop", container))?;
                    Ok(ActionOutcome::Done)
                }
                Action::Restart { container, reason, timeout } => {
                    let id = self.owned(container).await?.id;
                    info!(container, reason, "restarting");
                    self.docker
                        .restart_container(&id, *timeout)
                        .await
                        .map_err(docker_error("restart", container))?;
                    Ok(ActionOutcome::Done)
                }
                Action::Remove { container } => {
                    let Some(observed) = self.inspect(container).await? else {
                        return Ok(ActionOutcome::Done);
                    };
                    ensure_managed(&observed)?;
                    let options = RemoveOptions { force: true, anonymous_volumes: false };
                    self.docker
                        .remove_container(&observed.id, options)
                        .await
                        .map_err(docker_error("remove", container))?;
                    Ok(ActionOutcome::Done)
                }
                Action::UpdateInPlace { container, resources } => {
                    let id = self.owned(container).await?.id;
                    self.docker
                        .update_resources(&id, resources)
                        .await
                        .map_err(docker_error("update resources", container))?;
                    Ok(ActionOutcome::Done)
                }
                Action::ConnectNetwork { container, network } => {
                    let observed = self.owned(container).await?;
                    if observed.networks.iter().any(|n| n.network == network.network) {
                        return Ok(ActionOutcome::Done);
                    }
                    self.docker
                        .connect_network(&observed.id, network)
                        .await
                        .map_err(docker_error("connect network", container))?;
                    Ok(ActionOutcome::Done)
                }
                Action::DisconnectNetwork { container, network } => {
                    let observed = self.owned(container).await?;
                    if !observed.networks.iter().any(|n| &n.network == network) {
                        return Ok(ActionOutcome::Done);
                    }
                    self.docker
                        .disconnect_network(&observed.id, network, false)
                        .await
                        .map_err(docker_error("disconnect network", container))?;
                    Ok(ActionOutcome::Done)
                }
                Action::Recreate { config, reason, strategy } => {
                    info!(name = %config.name, reason, "recreating");
                    Ok(ActionOutcome::Recreated(self.recreate(config, strategy, progress).await?))
                }
                Action::RemoveImage { image } => {
                    // Never forced: an image some container uses, kedge's or not, stays.
                    let removed = self
                        .docker
                        .remove_image_if_unused(image)
                        .await
                        .map_err(docker_error("remove image", image))?;
                    Ok(ActionOutcome::ImageRemoved(removed))
                }
                Action::RunExec { container, exec, unless_running } => {
                    let id = self.owned(container).await?.id;
                    if *unless_running
                        && self
                            .docker
                            .is_process_running(&id, &exec.cmd)
                            .await
                            .map_err(docker_error("top", container))?
                    {
                        return Ok(ActionOutcome::Exec(None));
                    }
                    if *unless_running {
                        // A process to keep running does not end: start it detached, or the
                        // reconcile would wait on it for ever.
                        self.docker
                            .exec_detached(&id, exec)
                            .await
                            .map_err(docker_error("exec", container))?;
                        return Ok(ActionOutcome::Exec(Some(ExecOutcome {
                            exit_code: None,
                            output: String::new(),
                        })));
                    }
                    let outcome =
                        self.docker.exec(&id, exec).await.map_err(docker_error("exec", container))?;
                    Ok(ActionOutcome::Exec(Some(outcome)))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Creates the container `config` describes (all networks attached, not started) and returns
    /// its ID. The config must carry the ownership labels. A container already holding the name is
    /// a [`ExecutorError::Foreign`] (unlabeled) or [`ExecutorError::NameTaken`] error.
    pub async fn create(&self, config: &ContainerConfig) -> ExecutorResult<String> {
        if !labels::is_managed(&config.labels) {
            return Err(ExecutorError::Unlabeled { name: config.name.clone() });
        }
        self.create_unchecked(config).await
    }

    /// `create` without the label requirement (the new container of `recreate_any`).
    async fn create_unchecked(&self, config: &ContainerConfig) -> ExecutorResult<String> {
        match self.docker.create_container(config).await {
            Ok(id) => Ok(id),
            Err(DockerError::Conflict { .. }) => match self.inspect(&config.name).await? {
                Some(holder) if !labels::is_managed(&holder.labels) => {
                    Err(ExecutorError::Foreign { name: config.name.clone(), id: holder.id })
                }
                Some(holder) => Err(ExecutorError::NameTaken { name: config.name.clone(), id: holder.id }),
                None => Err(ExecutorError::Docker {
                    step: "create",
                    container: config.name.clone(),
                    source: DockerError::Conflict { message: "name conflict that vanished".to_string() },
                }),
            },
            Err(source) => {
                Err(ExecutorError::Docker { step: "create", container: config.name.clone(), source })
            }
        }
    }

    async fn inspect(&self, container: &str) -> ExecutorResult<Option<ObservedContainer>> {
        self.docker.inspect_container(container).await.map_err(docker_error("inspect", container))
    }

    /// The container, if it exists and is kedge's.
    async fn owned(&self, container: &str) -> ExecutorResult<ObservedContainer> {
        let observed = self
            .inspect(container)
            .await?
            .ok_or_else(|| ExecutorError::NotFound { container: container.to_string() })?;
        ensure_managed(&observed)?;
        Ok(observed)
    }
}

fn ensure_managed(observed: &ObservedContainer) -> ExecutorResult<()> {
    if labels::is_managed(&observed.labels) {
        Ok(())
    } else {
        Err(ExecutorError::Foreign { name: observed.name.clone(), id: observed.id.clone() })
    }
}

fn docker_error(step: &'static str, container: &str) -> impl FnOnce(DockerError) -> ExecutorError {
    let container = container.to_string();
    move |source| ExecutorError::Docker { step, container, source }
}
