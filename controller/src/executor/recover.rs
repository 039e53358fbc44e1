//! Finishing or rolling back a recreate that a crash interrupted, from names and labels alone.
//!
//! For a base name `N`, a recreate with ID `r` in progress leaves `N-kedge-new-r` (the new
//! container before it takes the name) and/or `N-kedge-old-r` (the old one, set aside). With
//! `F` the container named `N`, `New` the one named `N-kedge-new-r`, `Old` the one named
//! `N-kedge-old-r`, the decision is:
//!
//! | Old | New | F                          | crashed                          | recovery                          |
//! |-----|-----|----------------------------|----------------------------------|-----------------------------------|
//! | -   | yes | the old (`recreate-old-id`)| after create / stop old          | roll back: start F if it ran, remove New |
//! | -   | yes | none                       | old vanished meanwhile           | finish forward: New takes the name, started |
//! | yes | yes | none                       | after rename aside / in rollback | roll back: start Old if it ran, rename to N, remove New |
//! | yes | -   | the new (`recreate-id=r`)  | after rename new / start / wait  | F running and proven (healthy, or running after the grace) → remove Old; else roll back |
//! | yes | -   | none                       | inside a rollback                | roll back: start Old, rename to N |
//! | yes | any | another container          | someone else took the name       | `Ambiguous`: touch nothing        |
//!
//! "It ran" comes from the new container's `recreate-old-running` label; when the new container
//! is gone, the old one is started (a recreated container is one that should run).

use std::collections::{BTreeMap, BTreeSet};

use tracing::{info, info_span, Instrument};

use super::health::wait_until_proven;
use super::recreate::{RecreateStrategy, RollbackPlan};
use super::{Executor, ExecutorError, ExecutorResult};
use crate::docker::labels::{self, RecreateName};
use crate::docker::{ContainerFilter, ContainerSummary, RemoveOptions};

/// What recovery did for each interrupted recreate of a name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    pub name: String,
    /// `(recreate ID, outcome)`, in the order handled.
    pub outcomes: Vec<(String, RecoveryOutcome)>,
}

impl RecoveryReport {
    /// True when there was nothing to recover.
    pub fn is_clean(&self) -> bool {
        self.outcomes.is_empty()
    }
}

/// How one interrupted recreate ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// The new container was in place and proven: the old one was removed.
    Completed { new_id: String, removed_old_id: String },
    /// The old container holds the name again (and runs, if it ran); the new one is gone.
    RolledBack { old_id: String },
    /// The old container had vanished: the new one took the name and was started.
    FinishedForward { new_id: String },
}

/// At most this many interrupted recreates are handled for one name (each leaves two containers at most).
const MAX_ROUNDS: usize = 16;

impl Executor {
    /// Finds the containers an interrupted recreate of `name` left and finishes or rolls it back
    /// (see the module's table). Idempotent; a clean name costs one container listing.
    pub async fn recover_name(
        &self,
        name: &str,
        strategy: &RecreateStrategy,
    ) -> ExecutorResult<RecoveryReport> {
        let mut report = RecoveryReport { name: name.to_string(), outcomes: Vec::new() };
        for _ in 0..MAX_ROUNDS {
            let found = self.recreate_leftovers(name).await?;
            let Some(recreate_id) = found.recreate_ids().into_iter().next() else { return Ok(report) };
            let span = info_span!("recover", name, recreate_id = %recreate_id);
            let outcome = self.recover_one(name, &recreate_id, &found, strategy).instrument(span).await?;
            info!(name, recreate_id = %recreate_id, ?outcome, "recovered an interrupted recreate");
            report.outcomes.push((recreate_id, outcome));
        }
        Err(ExecutorError::Ambiguous {
            name: name.to_string(),
            message: format!("still finding recreate leftovers after {MAX_ROUNDS} rounds"),
        })
    }

    /// `recover_name` for every base name among the containers labeled with spec key `key`.
    pub async fn recover_key(
        &self,
        key: &str,
        strategy: &RecreateStrategy,
    ) -> ExecutorResult<Vec<RecoveryReport>> {
        self.recover_all(&[labels::key_filter(key)], strategy).await
    }

    /// `recover_name` for every base name with recreate leftovers on this engine that carry all of
    /// `label_filters` (Docker filter values, e.g. the agent's host label). For agent start-up.
    ///
    /// Scope it: a recreate another process is running right now (another agent on the same
    /// engine, a `kedge recreate`) looks exactly like an interrupted one. With no filters it also
    /// takes in the leftovers of `kedge recreate NAME` of foreign containers.
    pub async fn recover_all(
        &self,
        label_filters: &[String],
        strategy: &RecreateStrategy,
    ) -> ExecutorResult<Vec<RecoveryReport>> {
        let filter =
            ContainerFilter { labels: label_filters.to_vec(), name: Some("-kedge-(new|old)-".to_string()) };
        let containers = self.docker.list_containers(&filter).await.map_err(|source| {
            ExecutorError::Docker { step: "list containers", container: "*".to_string(), source }
        })?;
        let bases: BTreeSet<String> = containers
            .iter()
            .filter_map(|c| match labels::parse_recreate_name(&c.name) {
                RecreateName::New { base, .. } | RecreateName::Old { base, .. } => Some(base.to_string()),
                RecreateName::Plain(_) => None,
            })
            .collect();
        let mut reports = Vec::new();
        for base in bases {
            reports.push(self.recover_name(&base, strategy).await?);
        }
        Ok(reports)
    }

    async fn recreate_leftovers(&self, name: &str) -> ExecutorResult<Leftovers> {
        // Docker's name filter is an unanchored regular expression: a superset, narrowed below.
        let filter = ContainerFilter { labels: Vec::new(), name: Some(name.to_string()) };
        let containers = self.docker.list_containers(&filter).await.map_err(|source| {
            ExecutorError::Docker { step: "list containers", container: name.to_string(), source }
        })?;
        let mut found = Leftovers::default();
        for container in containers {
            match labels::parse_recreate_name(&container.name) {
                RecreateName::Plain(plain) if plain == name => found.holder = Some(container),
                RecreateName::New { base, recreate_id } if base == name => {
                    found.new.insert(recreate_id.to_string(), container);
                }
                RecreateName::Old { base, recreate_id } if base == name => {
                    found.old.insert(recreate_id.to_string(), container);
                }
                _ => {}
            }
        }
        Ok(found)
    }

    async fn recover_one(
        &self,
        name: &str,
        recreate_id: &str,
        found: &Leftovers,
        strategy: &RecreateStrategy,
    ) -> ExecutorResult<RecoveryOutcome> {
        let old = found.old.get(recreate_id);
        let new = found.new.get(recreate_id);
        let holder = found.holder.as_ref();
        let ambiguous = |message: String| ExecutorError::Ambiguous { name: name.to_string(), message };
        let plan = |old: Option<&ContainerSummary>, new: Option<&ContainerSummary>, old_running: bool| {
            RollbackPlan {
                base: name.to_string(),
                recreate_id: recreate_id.to_string(),
                old_id: old.map(|c| c.id.clone()),
                old_running,
                new_id: new.map(|c| c.id.clone()),
            }
        };
        match (old, new, holder) {
            (None, Some(new), Some(holder)) => {
                if new.labels.get(labels::RECREATE_OLD_ID) != Some(&holder.id) {
                    return Err(ambiguous(format!(
                        "{} holds the name but {} was created to replace another container",
                        holder.id, new.name
                    )));
                }
                self.roll_back(&plan(Some(holder), Some(new), old_was_running(new))).await?;
                Ok(RecoveryOutcome::RolledBack { old_id: holder.id.clone() })
            }
            (None, Some(new), None) => {
                self.docker.rename_container(&new.id, name).await.map_err(docker("rename new", &new.id))?;
                self.docker.start_container(&new.id).await.map_err(docker("start new", &new.id))?;
                Ok(RecoveryOutcome::FinishedForward { new_id: new.id.clone() })
            }
            (Some(old), Some(new), None) => {
                self.roll_back(&plan(Some(old), Some(new), old_was_running(new))).await?;
                Ok(RecoveryOutcome::RolledBack { old_id: old.id.clone() })
            }
            (Some(old), None, Some(holder))
                if holder.labels.get(labels::RECREATE_ID).map(String::as_str) == Some(recreate_id) =>
            {
                let proven = holder.state == "running"
                    && wait_until_proven(&self.docker, &holder.id, strategy, &mut |_| {}).await.is_ok();
                if proven {
                    let options = RemoveOptions { force: true, anonymous_volumes: false };
                    self.docker
                        .remove_container(&old.id, options)
                        .await
                        .map_err(docker("remove old", &old.id))?;
                    Ok(RecoveryOutcome::Completed {
                        new_id: holder.id.clone(),
                        removed_old_id: old.id.clone(),
                    })
                } else {
                    self.roll_back(&plan(Some(old), Some(holder), old_was_running(holder))).await?;
                    Ok(RecoveryOutcome::RolledBack { old_id: old.id.clone() })
                }
            }
            (Some(old), None, None) => {
                self.roll_back(&plan(Some(old), None, true)).await?;
                Ok(RecoveryOutcome::RolledBack { old_id: old.id.clone() })
            }
            (Some(_), _, Some(holder)) => Err(ambiguous(format!(
                "container {} ({}) holds the name while a recreate's old container is set aside",
                holder.id, holder.name
            ))),
            (None, None, _) => Err(ambiguous("no leftovers for this recreate ID".to_string())),
        }
    }
}

/// The containers named after `name`: the holder of the name and each recreate's leftovers.
#[derive(Debug, Default)]
struct Leftovers {
    holder: Option<ContainerSummary>,
    new: BTreeMap<String, ContainerSummary>,
    old: BTreeMap<String, ContainerSummary>,
}

impl Leftovers {
    fn recreate_ids(&self) -> BTreeSet<String> {
        self.new.keys().chain(self.old.keys()).cloned().collect()
    }
}

fn old_was_running(new: &ContainerSummary) -> bool {
    new.labels.get(labels::RECREATE_OLD_RUNNING).is_none_or(|v| v == "true")
}

fn docker(step: &'static str, id: &str) -> impl FnOnce(crate::docker::DockerError) -> ExecutorError {
    let container = id.to_string();
    move |source| ExecutorError::Docker { step, container, source }
}
