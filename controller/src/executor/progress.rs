//! What a recreate reports: its steps, its progress while it runs, its outcome and why it was
//! rolled back. Shared by the recreate itself and the health wait it runs.

use std::time::Duration;

use crate::docker::{HealthStatus, PullProgress};
use crate::planner::RecreateOrder;

/// The steps of a recreate, as reported to a progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecreateStep {
    Pull,
    CreateNew,
    StopOld,
    RenameOldAside,
    RenameNew,
    StartNew,
    WaitHealthy,
    RemoveOld,
    RemoveOldImage,
    RollBack,
    Done,
}

/// What a recreate reports while it runs (for the CLI's progress display).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecreateProgress {
    /// A step begins.
    Step(RecreateStep),
    /// A pull progress line.
    Pull(PullProgress),
    /// The new container's health changed while waiting.
    Health(HealthStatus),
}

/// What a successful recreate did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecreateReport {
    pub name: String,
    pub recreate_id: String,
    /// The replaced container (`None`: there was none, the container was just created).
    pub old_id: Option<String>,
    pub new_id: String,
    pub old_image_removed: bool,
    pub duration: Duration,
    /// The image ID the replaced container ran (what a later rollback goes back to).
    pub old_image_id: Option<String>,
    /// The order the recreate took (`None`: there was no container to replace) and why, in words
    /// for status and `kedge describe`.
    pub order: Option<RecreateOrder>,
    pub order_reason: String,
    /// How long after the recreate began the new container was proven.
    pub ready_after: Duration,
}

/// Why a recreate was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecreateFailure {
    /// A Docker call of a step failed.
    #[error("{} failed: {message}", step_words(*step))]
    Step { step: RecreateStep, message: String },
    /// The new container stopped (or never ran).
    #[error("the new container exited{}: {logs}", exit_code.map_or(String::new(), |code| format!(" with code {code}")))]
    Exited { exit_code: Option<i64>, logs: String },
    /// The new container turned unhealthy, or was not healthy in time.
    #[error("the new container was {} after {}s: {logs}", health_words(*health), after.as_secs())]
    Unhealthy { health: HealthStatus, after: Duration, logs: String },
}

/// A recreate step in words, for messages people read.
pub(crate) fn step_words(step: RecreateStep) -> &'static str {
    match step {
        RecreateStep::Pull => "pulling the image",
        RecreateStep::CreateNew => "creating the new container",
        RecreateStep::StopOld => "stopping the old container",
        RecreateStep::RenameOldAside => "renaming the old container aside",
        RecreateStep::RenameNew => "renaming the new container",
        RecreateStep::StartNew => "starting the new container",
        RecreateStep::WaitHealthy => "waiting for the new container",
        RecreateStep::RemoveOld => "removing the old container",
        RecreateStep::RemoveOldImage => "removing the old image",
        RecreateStep::RollBack => "rolling back",
        RecreateStep::Done => "finishing",
    }
}

/// A health state in words, for messages people read.
pub(crate) fn health_words(health: HealthStatus) -> &'static str {
    match health {
        HealthStatus::None => "without a health check",
        HealthStatus::Starting => "still starting",
        HealthStatus::Healthy => "healthy",
        HealthStatus::Unhealthy => "unhealthy",
    }
}

impl RecreateFailure {
    /// A CamelCase reason for status conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            RecreateFailure::Step { .. } => "RecreateStepFailed",
            RecreateFailure::Exited { .. } => "NewContainerExited",
            RecreateFailure::Unhealthy { .. } => "NewContainerUnhealthy",
        }
    }
}
