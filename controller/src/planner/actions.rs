//! The planner's vocabulary: the actions it decides and the executor carries out, and how a
//! recreate proceeds. Plain data; the planner owns it so that what can be decided is defined where
//! it is decided.

use std::time::Duration;

use crate::docker::{ContainerConfig, ExecSpec, NetworkAttachment, Resources};

/// One change to a container, as the planner decides it. `container` is an ID or a name.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing to do: the container is as declared.
    Nothing,
    /// Create the network if the engine has none of this name, labelled as kedge's (as Compose
    /// does). Placed before the actions that attach the container to the spec's networks.
    EnsureNetwork {
        network: String,
    },
    /// Pull an image (before a create or recreate that needs it).
    Pull {
        image: String,
    },
    /// Create the container (attached to all its networks), without starting it.
    Create {
        config: ContainerConfig,
    },
    Start {
        container: String,
    },
    /// Resume a paused container.
    Unpause {
        container: String,
    },
    /// Stop with the container's stop signal; SIGKILL after `timeout` (`None`: its own stop timeout).
    Stop {
        container: String,
        timeout: Option<Duration>,
    },
    /// Restart (stop with the container's stop signal, SIGKILL after `timeout`, start): the same
    /// container joins its network provider's current namespace and rereads its links' addresses.
    Restart {
        container: String,
        reason: String,
        timeout: Option<Duration>,
    },
    /// Remove (forcefully, so a running container goes too). Named volumes are kept.
    Remove {
        container: String,
    },
    /// Change resource limits in place: same container ID, no restart.
    UpdateInPlace {
        container: String,
        resources: Resources,
    },
    /// Connect to a network without a restart.
    ConnectNetwork {
        container: String,
        network: NetworkAttachment,
    },
    /// Disconnect from a network without a restart.
    DisconnectNetwork {
        container: String,
        network: String,
    },
    /// Replace the container named `config.name` with a new one made from `config` (safe recreate).
    Recreate {
        config: ContainerConfig,
        reason: String,
        strategy: RecreateStrategy,
    },
    /// Remove an image when no container (kedge's or not, running or stopped) uses it: the old
    /// image of an update once its soak is over (`updatePolicy.cleanup`).
    RemoveImage {
        image: String,
    },
    /// Run a command in the running container (post-start commands). With `unless_running`, the
    /// command is skipped when a process with exactly this command line already runs.
    RunExec {
        container: String,
        exec: ExecSpec,
        unless_running: bool,
    },
}

impl Action {
    /// A short name for logs and events.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Nothing => "Nothing",
            Action::EnsureNetwork { .. } => "EnsureNetwork",
            Action::Pull { .. } => "Pull",
            Action::Create { .. } => "Create",
            Action::Start { .. } => "Start",
            Action::Unpause { .. } => "Unpause",
            Action::Stop { .. } => "Stop",
            Action::Restart { .. } => "Restart",
            Action::Remove { .. } => "Remove",
            Action::UpdateInPlace { .. } => "UpdateInPlace",
            Action::ConnectNetwork { .. } => "ConnectNetwork",
            Action::DisconnectNetwork { .. } => "DisconnectNetwork",
            Action::Recreate { .. } => "Recreate",
            Action::RunExec { .. } => "RunExec",
            Action::RemoveImage { .. } => "RemoveImage",
        }
    }
}

/// How a recreate proceeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecreateStrategy {
    /// Pull the image first.
    pub pull: bool,
    /// With a Docker healthcheck: how long the new container may take to become healthy.
    pub health_timeout: Duration,
    /// Without a healthcheck: the new container must still run after this long.
    pub running_grace: Duration,
    /// With a healthcheck: once healthy, the new container must also have run this long since its
    /// start (the spec's `minReadySeconds`; zero lets the healthcheck alone decide).
    pub min_ready_healthy: Duration,
    /// The old container's stop grace period; `None`: its own stop timeout (Docker's 10 s default).
    pub stop_timeout: Option<Duration>,
    /// Remove the old container's image afterwards when no container uses it any more.
    pub remove_old_image: bool,
    /// Which container runs first. `StartFirst` is a wish: the executor stops the old container
    /// first anyway when the two could not run side by side (see `executor::start_first_conflict`).
    pub order: RecreateOrder,
}

/// Which container of a recreate runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecreateOrder {
    /// Stop the old container, then start the new one: never two at once.
    #[default]
    StopFirst,
    /// Start and prove the new container under its temporary name while the old one still runs,
    /// then stop the old one and give the new one the name: no gap in service.
    StartFirst,
}

impl Default for RecreateStrategy {
    fn default() -> Self {
        RecreateStrategy {
            pull: false,
            health_timeout: Duration::from_secs(60),
            running_grace: Duration::from_secs(5),
            min_ready_healthy: Duration::ZERO,
            order: RecreateOrder::StopFirst,
            stop_timeout: None,
            remove_old_image: false,
        }
    }
}
