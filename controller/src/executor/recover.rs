//! Finishing or rolling back a recreate that a crash interrupted, identified by kedge's labels.
//!
//! For a base name `N`, a recreate with ID `r` in progress leaves `N-kedge-new-r` (the new
//! container before it takes the name) and/or `N-kedge-old-r` (the old one, set aside). A name
//! is only a candidate: [`find_leftovers`] keeps a container as a leftover only when its labels
//! say so, for the [`RecoveryScope`] asked about.
//!
//! - A new container is one named `N-kedge-new-r` that carries `io.kedge.recreate-id=r` (kedge
//!   labels it at create, and labels never change).
//! - An old container is one named `N-kedge-old-r` that a new container of `r` (named
//!   `N-kedge-new-r`, or holding `N`) names in `io.kedge.recreate-old-id` ("linked"), or, with no
//!   such new container, whose own labels make it a leftover of `N`: in the agent's scope
//!   (`Key`), kedge's labels for that very key (and host); for `kedge recreate N`
//!   (`AnyContainer`, which also recreates containers kedge does not manage, whose old container
//!   carries no kedge label), kedge's labels for a key named `N`, or no kedge label at all while
//!   nothing holds `N` (what a crash after "rename aside" leaves).
//! - In the `Key` scope every leftover must carry kedge's labels for that key (and host); in both,
//!   a container labelled for another key (one whose name is not `N`) is another spec's.
//!
//! Anything else with the right name shape (a spec named `web-kedge-old-abc`, a hand-made
//! container, another key's or another host's container) is a look-alike: never renamed,
//! started or removed. With `F` the container named `N`, `New` and `Old` the leftovers of `r`,
//! [`decide`] says:
//!
//! | Old | New | F                                       | crashed                          | recovery                          |
//! |-----|-----|-----------------------------------------|----------------------------------|-----------------------------------|
//! | -   | yes | the old (New's `recreate-old-id`)       | after create / stop old          | roll back: start F if it ran, remove New |
//! | -   | yes | none                                    | old vanished meanwhile           | finish forward: New takes the name, started |
//! | yes | yes | none                                    | after rename aside / in rollback | roll back: start Old if it ran, rename to N, remove New |
//! | yes | -   | the new (`recreate-id=r`, `recreate-old-id`=Old) | after rename new / start / wait | F running and proven (healthy, or running after the grace) → remove Old; else roll back |
//! | yes | -   | none                                    | inside a rollback                | roll back: start Old, rename to N |
//! | yes | any | another container                       | someone else took the name       | `Ambiguous`: touch nothing        |
//! | -   | yes | another container                       | someone else took the name       | `Ambiguous`: touch nothing        |
//!
//! A start-first recreate (recreate.rs) passes through row 1 (the new container running under its
//! temporary name beside the old one holding the name) until the new one is proven; then the old
//! one, still running, is renamed `N-kedge-retired-r`, which no row above handles: a retired
//! container means the new one was proven, so recovery never rolls back. With New under its
//! temporary name and nothing holding `N`, New takes the name; with New holding `N` (or gone),
//! nothing more; either way the old one is stopped and removed in the background (retire.rs) and
//! never started again. A retired container while another container holds `N` and New waits is
//! `Ambiguous`.
//!
//! "It ran" comes from the new container's `recreate-old-running` label; when the new container
//! is gone, the old one is started (a recreated container is one that should run). The decision
//! is pure ([`find_leftovers`], [`decide`]); `Executor::recover` lists the containers and acts.

use std::collections::{BTreeMap, BTreeSet};

use tracing::{debug, info, info_span, Instrument};

use super::health::wait_until_proven;
use super::recreate::RollbackPlan;
use super::retire::Retirement;
use super::{Executor, ExecutorError, ExecutorResult};
use crate::docker::labels::{self, RecreateName};
use crate::docker::{ContainerFilter, ContainerSummary, RemoveOptions};
use crate::planner::RecreateStrategy;

/// Whose interrupted recreates a recovery may finish or undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryScope {
    /// The agent's: the containers of spec `key` (`<namespace>/<name>`, base name `<name>`) that
    /// carry kedge's labels for it, and `host`'s label when given.
    Key { key: String, host: Option<String> },
    /// `kedge recreate NAME` and the upgrade helper: the recreate of any container by its name,
    /// managed or not (see the module's rules for an old container without labels).
    AnyContainer,
}

impl RecoveryScope {
    /// The agent's scope for `key` on `host`.
    pub fn key_on_host(key: &str, host: &str) -> RecoveryScope {
        RecoveryScope::Key { key: key.to_string(), host: Some(host.to_string()) }
    }
}

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
    /// The new container had been proven (the old one bore its retired name): the new one holds
    /// the name, and the old one is being stopped and removed in the background (retire.rs).
    Retiring { old_id: String },
}

/// The containers that matter for recovering base name `N`: the holder of the name and the
/// leftovers of each recreate, look-alikes already left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leftovers {
    /// The container named `N`, whoever's it is.
    pub holder: Option<ContainerSummary>,
    /// By recreate ID: the new container named `N-kedge-new-<id>`.
    pub new: BTreeMap<String, ContainerSummary>,
    /// By recreate ID: the old container named `N-kedge-old-<id>`.
    pub old: BTreeMap<String, ContainerSummary>,
    /// By recreate ID: the old container of a start-first recreate whose new container was proven,
    /// named `N-kedge-retired-<id>` (linked and owned as an old container is).
    pub retired: BTreeMap<String, ContainerSummary>,
    /// Names of containers that look like leftovers of `N` but are not (left alone).
    pub look_alikes: Vec<String>,
}

impl Leftovers {
    /// The IDs of the recreates that left something, in order.
    pub fn recreate_ids(&self) -> BTreeSet<String> {
        self.new.keys().chain(self.old.keys()).chain(self.retired.keys()).cloned().collect()
    }
}

/// What to do about one interrupted recreate (see the module's table). IDs are container IDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Undo it: the old container (when there is one) gets the name back, started when
    /// `old_running`; the new one is removed.
    RollBack { old_id: Option<String>, new_id: Option<String>, old_running: bool },
    /// The old container is gone: the new one takes the name and is started.
    FinishForward { new_id: String },
    /// The new container holds the name: when it is running and proves itself the old one is
    /// removed, otherwise the recreate is rolled back.
    ProveNew { new_id: String, new_running: bool, new_old_running: bool, old_id: String },
    /// The new container was proven before the old one took its retired name: the new one takes
    /// the name when `rename_new` (it is still under its temporary name), and the old one is
    /// stopped and removed in the background. Never a rollback.
    Retire { old_id: String, rename_new: Option<String> },
    /// Something else holds the name: touch nothing.
    Ambiguous(String),
}

/// Sorts `containers` (any superset of the names starting with `base`) into the holder of `base`
/// and the leftovers of its recreates that `scope` owns; everything else is a look-alike.
pub fn find_leftovers(containers: &[ContainerSummary], base: &str, scope: &RecoveryScope) -> Leftovers {
    let mut found = Leftovers::default();
    let mut old_candidates = Vec::new();
    for container in containers {
        match marker_of(&container.name, base) {
            None => {}
            Some(Marker::Holder) => found.holder = Some(container.clone()),
            Some(Marker::New(recreate_id)) => {
                let labelled =
                    container.labels.get(labels::RECREATE_ID).map(String::as_str) == Some(recreate_id);
                if labelled && in_scope(container, base, scope) {
                    found.new.insert(recreate_id.to_string(), container.clone());
                } else {
                    found.look_alikes.push(container.name.clone());
                }
            }
            Some(Marker::Old(recreate_id)) => old_candidates.push((recreate_id, container, false)),
            Some(Marker::Retired(recreate_id)) => old_candidates.push((recreate_id, container, true)),
        }
    }
    for (recreate_id, container, retired) in old_candidates {
        // The new container of the same recreate, under its temporary name or holding the name.
        let new = found.new.get(recreate_id).or(found.holder.as_ref().filter(|holder| {
            holder.labels.get(labels::RECREATE_ID).map(String::as_str) == Some(recreate_id)
        }));
        let leftover = match new {
            Some(new) => {
                new.labels.get(labels::RECREATE_OLD_ID) == Some(&container.id)
                    && in_scope(container, base, scope)
            }
            None => match scope {
                RecoveryScope::Key { .. } => in_scope(container, base, scope),
                RecoveryScope::AnyContainer if labels::is_managed(&container.labels) => {
                    in_scope(container, base, scope)
                }
                // Only the name says so: trusted while the name is free, as a crash leaves it.
                RecoveryScope::AnyContainer => {
                    found.holder.is_none() && !container.labels.contains_key(labels::KEY)
                }
            },
        };
        if leftover && retired {
            found.retired.insert(recreate_id.to_string(), container.clone());
        } else if leftover {
            found.old.insert(recreate_id.to_string(), container.clone());
        } else {
            found.look_alikes.push(container.name.clone());
        }
    }
    found
}

/// What to do about recreate `recreate_id` among `found` (see the module's table).
pub fn decide(found: &Leftovers, recreate_id: &str) -> Decision {
    let old = found.old.get(recreate_id);
    let new = found.new.get(recreate_id);
    let holder = found.holder.as_ref();
    let id = |c: &ContainerSummary| c.id.clone();
    if let Some(retired) = found.retired.get(recreate_id) {
        return match (new, holder) {
            (Some(new), None) => Decision::Retire { old_id: id(retired), rename_new: Some(id(new)) },
            (Some(new), Some(holder)) => Decision::Ambiguous(format!(
                "container {} ({}) holds the name while the proven {} waits for it",
                holder.id, holder.name, new.name
            )),
            // The new container holds the name, or is gone (removed by hand): either way the
            // retired one is never started again; a reconcile makes a new container if need be.
            (None, _) => Decision::Retire { old_id: id(retired), rename_new: None },
        };
    }
    match (old, new, holder) {
        (None, Some(new), Some(holder)) => {
            if new.labels.get(labels::RECREATE_OLD_ID) == Some(&holder.id) {
                Decision::RollBack {
                    old_id: Some(id(holder)),
                    new_id: Some(id(new)),
                    old_running: old_was_running(new),
                }
            } else {
                Decision::Ambiguous(format!(
                    "{} holds the name but {} was created to replace another container",
                    holder.id, new.name
                ))
            }
        }
        (None, Some(new), None) => Decision::FinishForward { new_id: id(new) },
        (Some(old), Some(new), None) => Decision::RollBack {
            old_id: Some(id(old)),
            new_id: Some(id(new)),
            old_running: old_was_running(new),
        },
        (Some(old), None, Some(holder))
            if holder.labels.get(labels::RECREATE_ID).map(String::as_str) == Some(recreate_id)
                && holder.labels.get(labels::RECREATE_OLD_ID) == Some(&old.id) =>
        {
            Decision::ProveNew {
                new_id: id(holder),
                new_running: holder.state == "running",
                new_old_running: old_was_running(holder),
                old_id: id(old),
            }
        }
        (Some(old), None, None) => {
            Decision::RollBack { old_id: Some(id(old)), new_id: None, old_running: true }
        }
        (Some(_), _, Some(holder)) => Decision::Ambiguous(format!(
            "container {} ({}) holds the name while a recreate's old container is set aside",
            holder.id, holder.name
        )),
        (None, None, _) => Decision::Ambiguous("no leftovers for this recreate ID".to_string()),
    }
}

/// Whether `name` names the base `base` or one of its recreate leftovers (by name only).
pub fn is_recreate_name_of(name: &str, base: &str) -> bool {
    matches!(marker_of(name, base), Some(Marker::New(_) | Marker::Old(_) | Marker::Retired(_)))
}

/// Whether `name` is the retired name of an old container of base `base`: it is being stopped
/// and removed in the background (retire.rs), never a second container to remove by force.
pub fn is_retired_name_of(name: &str, base: &str) -> bool {
    matches!(marker_of(name, base), Some(Marker::Retired(_)))
}

/// The name of spec `key`'s container: the part after the namespace.
pub fn base_name_of_key(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(_, name)| name)
}

/// At most this many interrupted recreates are handled for one name (each leaves two containers at most).
const MAX_ROUNDS: usize = 16;

impl Executor {
    /// Finds the containers an interrupted recreate of `name` left and finishes or rolls it back,
    /// in the `AnyContainer` scope (`kedge recreate NAME`, the upgrade helper). Idempotent; a
    /// clean name costs one container listing.
    pub async fn recover_name(
        &self,
        name: &str,
        strategy: &RecreateStrategy,
    ) -> ExecutorResult<RecoveryReport> {
        self.recover(name, &RecoveryScope::AnyContainer, strategy).await
    }

    /// Finishes or rolls back the interrupted recreates of spec `key`, by its labels, on any host.
    pub async fn recover_key(
        &self,
        key: &str,
        strategy: &RecreateStrategy,
    ) -> ExecutorResult<RecoveryReport> {
        let scope = RecoveryScope::Key { key: key.to_string(), host: None };
        self.recover(base_name_of_key(key), &scope, strategy).await
    }

    /// Finishes or rolls back the interrupted recreates of base name `name` that `scope` owns
    /// (see the module's table); look-alikes are left alone. Idempotent.
    pub async fn recover(
        &self,
        name: &str,
        scope: &RecoveryScope,
        strategy: &RecreateStrategy,
    ) -> ExecutorResult<RecoveryReport> {
        let mut report = RecoveryReport { name: name.to_string(), outcomes: Vec::new() };
        // A retired container stays listed while it stops in the background: handled once per call.
        let mut handled = BTreeSet::new();
        for _ in 0..MAX_ROUNDS {
            let found = self.leftovers(name, scope).await?;
            if !found.look_alikes.is_empty() {
                debug!(name, look_alikes = ?found.look_alikes, "left alone: not this name's recreate leftovers");
            }
            let Some(recreate_id) = found.recreate_ids().into_iter().find(|id| !handled.contains(id)) else {
                return Ok(report);
            };
            handled.insert(recreate_id.clone());
            let decision = decide(&found, &recreate_id);
            let span = info_span!("recover", name, recreate_id = %recreate_id);
            let outcome = self.carry_out(name, &recreate_id, decision, strategy).instrument(span).await?;
            info!(name, recreate_id = %recreate_id, ?outcome, "recovered an interrupted recreate");
            report.outcomes.push((recreate_id, outcome));
        }
        Err(ExecutorError::Ambiguous {
            name: name.to_string(),
            message: format!("still finding recreate leftovers after {MAX_ROUNDS} rounds"),
        })
    }

    /// `recover_name` for every base name with recreate leftovers on this engine that carry all of
    /// `label_filters` (Docker filter values, e.g. a test's label).
    ///
    /// Scope it: a recreate another process is running right now (another agent on the same
    /// engine, a `kedge recreate`) looks exactly like an interrupted one. The agent recovers by
    /// key instead ([`RecoveryScope::Key`]).
    pub async fn recover_all(
        &self,
        label_filters: &[String],
        strategy: &RecreateStrategy,
    ) -> ExecutorResult<Vec<RecoveryReport>> {
        let filter = ContainerFilter {
            labels: label_filters.to_vec(),
            name: Some("-kedge-(new|old|retired)-".to_string()),
        };
        let containers = self.docker.list_containers(&filter).await.map_err(|source| {
            ExecutorError::Docker { step: "list containers", container: "*".to_string(), source }
        })?;
        let bases: BTreeSet<String> = containers
            .iter()
            .filter_map(|c| match labels::parse_recreate_name(&c.name) {
                RecreateName::New { base, .. }
                | RecreateName::Old { base, .. }
                | RecreateName::Retired { base, .. } => Some(base.to_string()),
                RecreateName::Plain(_) => None,
            })
            .collect();
        let mut reports = Vec::new();
        for base in bases {
            reports.push(self.recover_name(&base, strategy).await?);
        }
        Ok(reports)
    }

    async fn leftovers(&self, name: &str, scope: &RecoveryScope) -> ExecutorResult<Leftovers> {
        // Docker's name filter is an unanchored regular expression: a superset, narrowed by
        // `find_leftovers`. Labels are checked there too, so that a look-alike is seen (and logged).
        let filter = ContainerFilter { labels: Vec::new(), name: Some(name.to_string()) };
        let containers = self.docker.list_containers(&filter).await.map_err(|source| {
            ExecutorError::Docker { step: "list containers", container: name.to_string(), source }
        })?;
        Ok(find_leftovers(&containers, name, scope))
    }

    async fn carry_out(
        &self,
        name: &str,
        recreate_id: &str,
        decision: Decision,
        strategy: &RecreateStrategy,
    ) -> ExecutorResult<RecoveryOutcome> {
        let plan = |old_id: Option<String>, new_id: Option<String>, old_running: bool| RollbackPlan {
            base: name.to_string(),
            recreate_id: recreate_id.to_string(),
            old_id,
            old_running,
            new_id,
        };
        match decision {
            Decision::RollBack { old_id, new_id, old_running } => {
                let Some(old_id) = old_id else {
                    return Err(ExecutorError::Ambiguous {
                        name: name.to_string(),
                        message: "a rollback without the old container".to_string(),
                    });
                };
                self.roll_back(&plan(Some(old_id.clone()), new_id, old_running)).await?;
                Ok(RecoveryOutcome::RolledBack { old_id })
            }
            Decision::FinishForward { new_id } => {
                self.docker.rename_container(&new_id, name).await.map_err(docker("rename new", &new_id))?;
                self.docker.start_container(&new_id).await.map_err(docker("start new", &new_id))?;
                Ok(RecoveryOutcome::FinishedForward { new_id })
            }
            Decision::ProveNew { new_id, new_running, new_old_running, old_id } => {
                let proven = new_running
                    && wait_until_proven(&*self.docker, &new_id, strategy, &mut |_| {}).await.is_ok();
                if proven {
                    let options = RemoveOptions { force: true, anonymous_volumes: false };
                    self.docker
                        .remove_container(&old_id, options)
                        .await
                        .map_err(docker("remove old", &old_id))?;
                    Ok(RecoveryOutcome::Completed { new_id, removed_old_id: old_id })
                } else {
                    self.roll_back(&plan(Some(old_id.clone()), Some(new_id), new_old_running)).await?;
                    Ok(RecoveryOutcome::RolledBack { old_id })
                }
            }
            Decision::Retire { old_id, rename_new } => {
                if let Some(new_id) = &rename_new {
                    self.docker.rename_container(new_id, name).await.map_err(docker("rename new", new_id))?;
                }
                self.retire(Retirement {
                    old_id: old_id.clone(),
                    stop_timeout: strategy.stop_timeout,
                    remove_image: None,
                });
                Ok(RecoveryOutcome::Retiring { old_id })
            }
            Decision::Ambiguous(message) => Err(ExecutorError::Ambiguous { name: name.to_string(), message }),
        }
    }
}

/// Where a container's name puts it relative to base name `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker<'a> {
    Holder,
    New(&'a str),
    Old(&'a str),
    Retired(&'a str),
}

fn marker_of<'a>(name: &'a str, base: &str) -> Option<Marker<'a>> {
    if name == base {
        return Some(Marker::Holder);
    }
    let rest = name.strip_prefix(base)?;
    let valid = |id: &str| !id.is_empty() && !id.contains('-');
    if let Some(id) = rest.strip_prefix("-kedge-new-").filter(|id| valid(id)) {
        return Some(Marker::New(id));
    }
    if let Some(id) = rest.strip_prefix("-kedge-retired-").filter(|id| valid(id)) {
        return Some(Marker::Retired(id));
    }
    rest.strip_prefix("-kedge-old-").filter(|id| valid(id)).map(Marker::Old)
}

/// Whether a candidate leftover's labels let `scope` act on it as a leftover of `base`.
fn in_scope(container: &ContainerSummary, base: &str, scope: &RecoveryScope) -> bool {
    let key = labels::key(&container.labels);
    match scope {
        RecoveryScope::Key { key: wanted, host } => {
            key == Some(wanted.as_str())
                && base_name_of_key(wanted) == base
                && host.as_ref().is_none_or(|host| labels::is_managed_by_host(&container.labels, host))
        }
        // A container kedge labelled for a spec belongs to that spec's name; any other is judged
        // by the recreate labels alone.
        RecoveryScope::AnyContainer => key.is_none_or(|key| base_name_of_key(key) == base),
    }
}

fn old_was_running(new: &ContainerSummary) -> bool {
    new.labels.get(labels::RECREATE_OLD_RUNNING).is_none_or(|v| v == "true")
}

fn docker(step: &'static str, id: &str) -> impl FnOnce(crate::docker::DockerError) -> ExecutorError {
    let container = id.to_string();
    move |source| ExecutorError::Docker { step, container, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container: `name`, `id`, running or not, and labels as `key=value` strings.
    fn c(name: &str, id: &str, running: bool, with: &[&str]) -> ContainerSummary {
        ContainerSummary {
            id: id.to_string(),
            name: name.to_string(),
            state: if running { "running" } else { "exited" }.to_string(),
            labels: with
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
            ..ContainerSummary::default()
        }
    }

    const MANAGED: &str = "io.kedge.managed-by=kedge";
    const KEY_WEB: &str = "io.kedge.key=shop/web";
    const HOST_A: &str = "io.kedge.host=a";

    fn key_scope() -> RecoveryScope {
        RecoveryScope::key_on_host("shop/web", "a")
    }

    /// Every recreate's decision, and the look-alikes left alone.
    fn check(
        containers: &[ContainerSummary],
        scope: &RecoveryScope,
        decisions: &[(&str, Decision)],
        look_alikes: &[&str],
    ) {
        let found = find_leftovers(containers, "web", scope);
        let got: Vec<(String, Decision)> =
            found.recreate_ids().into_iter().map(|id| (id.clone(), decide(&found, &id))).collect();
        let want: Vec<(String, Decision)> =
            decisions.iter().map(|(id, d)| (id.to_string(), d.clone())).collect();
        assert_eq!(got, want, "{scope:?}");
        let mut left: Vec<&str> = found.look_alikes.iter().map(String::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, look_alikes, "{scope:?}");
    }

    fn rollback(old: &str, new: Option<&str>, old_running: bool) -> Decision {
        Decision::RollBack { old_id: Some(old.to_string()), new_id: new.map(str::to_string), old_running }
    }

    /// The labels of web's container on host A, and of the new container of its recreate `r1` (whose
    /// old one, `o`, was running).
    const OLD_WEB: [&str; 3] = [MANAGED, KEY_WEB, HOST_A];
    const NEW_WEB_R1: [&str; 7] = [
        MANAGED,
        KEY_WEB,
        HOST_A,
        "io.kedge.recreate-role=new",
        "io.kedge.recreate-id=r1",
        "io.kedge.recreate-old-id=o",
        "io.kedge.recreate-old-running=true",
    ];

    #[test]
    fn a_managed_recreate_is_recovered_in_both_scopes() {
        let (old, new) = (OLD_WEB, NEW_WEB_R1);
        for scope in [key_scope(), RecoveryScope::AnyContainer] {
            // Crashed after create: F is the old one.
            check(
                &[c("web", "o", false, &old), c("web-kedge-new-r1", "n", false, &new)],
                &scope,
                &[("r1", rollback("o", Some("n"), true))],
                &[],
            );
            // After rename aside.
            check(
                &[c("web-kedge-old-r1", "o", false, &old), c("web-kedge-new-r1", "n", false, &new)],
                &scope,
                &[("r1", rollback("o", Some("n"), true))],
                &[],
            );
            // After rename new: F is the new one.
            check(
                &[c("web-kedge-old-r1", "o", false, &old), c("web", "n", true, &new)],
                &scope,
                &[(
                    "r1",
                    Decision::ProveNew {
                        new_id: "n".into(),
                        new_running: true,
                        new_old_running: true,
                        old_id: "o".into(),
                    },
                )],
                &[],
            );
            // Inside a rollback, the new one already removed.
            check(
                &[c("web-kedge-old-r1", "o", false, &old)],
                &scope,
                &[("r1", rollback("o", None, true))],
                &[],
            );
            // The old one vanished.
            check(
                &[c("web-kedge-new-r1", "n", false, &new)],
                &scope,
                &[("r1", Decision::FinishForward { new_id: "n".into() })],
                &[],
            );
            // A finished recreate: the new one holds the name, nothing is left.
            check(&[c("web", "n", true, &new)], &scope, &[], &[]);
        }
    }

    #[test]
    fn every_state_of_a_start_first_recreate_is_recovered() {
        // A start-first recreate runs the new container under its temporary name beside the old
        // one: until the new one is proven, recovery undoes it. Once proven, the old one takes its
        // retired name, and from then on recovery finishes forward, never back.
        let (old, new) = (OLD_WEB, NEW_WEB_R1);
        let scope = key_scope();
        let undo = rollback("o", Some("n"), true);
        let give_the_name = Decision::Retire { old_id: "o".into(), rename_new: Some("n".into()) };
        let retire = Decision::Retire { old_id: "o".into(), rename_new: None };
        // (the step last done, the containers then, what recovery decides)
        let cases = [
            (
                "start new, or proven: both run, the old one holds the name",
                vec![c("web", "o", true, &old), c("web-kedge-new-r1", "n", true, &new)],
                &undo,
            ),
            (
                "a rollback's stop: the old one holds the name, the new one stopped",
                vec![c("web", "o", true, &old), c("web-kedge-new-r1", "n", false, &new)],
                &undo,
            ),
            (
                "retire old: the old one runs under its retired name, the new one under its temporary name",
                vec![c("web-kedge-retired-r1", "o", true, &old), c("web-kedge-new-r1", "n", true, &new)],
                &give_the_name,
            ),
            (
                "rename new: the new one holds the name, the old one still stops",
                vec![c("web-kedge-retired-r1", "o", true, &old), c("web", "n", true, &new)],
                &retire,
            ),
            (
                "the retirement's stop: the old one stopped, not removed",
                vec![c("web-kedge-retired-r1", "o", false, &old), c("web", "n", true, &new)],
                &retire,
            ),
            (
                "the new one proven, then removed by hand: the old one is not started again",
                vec![c("web-kedge-retired-r1", "o", false, &old)],
                &retire,
            ),
        ];
        for (after, containers, decision) in cases {
            eprintln!("after {after}");
            check(&containers, &scope, &[("r1", decision.clone())], &[]);
        }
        // A retired container of another key, host or recreate is a look-alike.
        let other_host = [MANAGED, KEY_WEB, "io.kedge.host=b"];
        check(
            &[c("web", "n", true, &new), c("web-kedge-retired-r1", "x", true, &other_host)],
            &scope,
            &[],
            &["web-kedge-retired-r1"],
        );
        let new_of_another_old =
            [MANAGED, KEY_WEB, HOST_A, "io.kedge.recreate-id=r1", "io.kedge.recreate-old-id=zzz"];
        check(
            &[c("web", "n", true, &new_of_another_old), c("web-kedge-retired-r1", "o", true, &old)],
            &scope,
            &[],
            &["web-kedge-retired-r1"],
        );
        // Someone else took the name while the proven new one waited for it: touch nothing.
        let found = find_leftovers(
            &[
                c("web", "f", true, &old),
                c("web-kedge-retired-r1", "o", true, &old),
                c("web-kedge-new-r1", "n", true, &new),
            ],
            "web",
            &scope,
        );
        assert!(matches!(decide(&found, "r1"), Decision::Ambiguous(m) if m.contains("f (web)")));
    }

    #[test]
    fn look_alikes_are_left_alone_by_the_agent() {
        let scope = key_scope();
        let ours = [MANAGED, KEY_WEB, HOST_A];
        // Named like leftovers, but hand-made, another key's, another host's, or kedge-less.
        check(
            &[
                c("web", "f", true, &ours),
                c("web-kedge-old-abc", "x1", true, &[]),
                c("web-kedge-old-def", "x2", true, &[MANAGED, "io.kedge.key=shop/web-kedge-old-def", HOST_A]),
                c("web-kedge-old-ghi", "x3", true, &[MANAGED, KEY_WEB, "io.kedge.host=b"]),
                c("web-kedge-new-jkl", "x4", true, &["io.kedge.recreate-id=jkl"]),
                c("web-kedge-new-mno", "x5", true, &[MANAGED, KEY_WEB, HOST_A]),
                c("webshop-kedge-old-abc", "x6", true, &ours),
            ],
            &scope,
            &[],
            &[
                "web-kedge-new-jkl",
                "web-kedge-new-mno",
                "web-kedge-old-abc",
                "web-kedge-old-def",
                "web-kedge-old-ghi",
            ],
        );
        // A real leftover next to a look-alike: only the real one is recovered.
        check(
            &[c("web-kedge-old-r1", "o", false, &ours), c("web-kedge-old-abc", "x1", true, &[])],
            &scope,
            &[("r1", rollback("o", None, true))],
            &["web-kedge-old-abc"],
        );
        // A spec whose own name has the marker is its key's holder, not a leftover.
        let odd = RecoveryScope::key_on_host("shop/probe-kedge-old-abc", "a");
        let found = find_leftovers(
            &[c(
                "probe-kedge-old-abc",
                "p",
                true,
                &[MANAGED, "io.kedge.key=shop/probe-kedge-old-abc", HOST_A],
            )],
            "probe-kedge-old-abc",
            &odd,
        );
        assert!(found.recreate_ids().is_empty() && found.holder.is_some(), "{found:?}");
    }

    #[test]
    fn kedge_recreate_of_any_container_trusts_a_bare_name_only_while_the_name_is_free() {
        let scope = RecoveryScope::AnyContainer;
        let bare = ["io.kedge.test=run"];
        // What a crash after "rename aside" of a hand-made container leaves.
        check(
            &[c("web-kedge-old-ab12", "o", false, &bare)],
            &scope,
            &[("ab12", rollback("o", None, true))],
            &[],
        );
        // The same while something holds the name: a look-alike, not an ambiguity.
        check(
            &[c("web", "f", true, &bare), c("web-kedge-old-ab12", "o", false, &bare)],
            &scope,
            &[],
            &["web-kedge-old-ab12"],
        );
        // Another spec's container (its key names another container) is never a leftover.
        check(
            &[c("web-kedge-old-ab12", "o", false, &[MANAGED, "io.kedge.key=shop/web-kedge-old-ab12"])],
            &scope,
            &[],
            &["web-kedge-old-ab12"],
        );
        // A managed old container of this name while another container took the name: ambiguous.
        let found = find_leftovers(
            &[c("web", "f", true, &bare), c("web-kedge-old-ab12", "o", false, &[MANAGED, KEY_WEB])],
            "web",
            &scope,
        );
        assert!(matches!(decide(&found, "ab12"), Decision::Ambiguous(m) if m.contains("f (web)")));
        // A new container whose recreate ID label disagrees with its name is not kedge's.
        check(
            &[c("web-kedge-new-ab12", "n", false, &["io.kedge.recreate-id=other"])],
            &scope,
            &[],
            &["web-kedge-new-ab12"],
        );
    }

    #[test]
    fn an_old_container_linked_to_another_is_not_removed() {
        // The holder claims recreate r1 but replaced another container than the one set aside.
        let new = [MANAGED, KEY_WEB, HOST_A, "io.kedge.recreate-id=r1", "io.kedge.recreate-old-id=zzz"];
        let old = [MANAGED, KEY_WEB, HOST_A];
        check(
            &[c("web", "n", true, &new), c("web-kedge-old-r1", "o", false, &old)],
            &key_scope(),
            &[],
            &["web-kedge-old-r1"],
        );
    }

    #[test]
    fn names_are_read_relative_to_the_base() {
        assert_eq!(marker_of("web", "web"), Some(Marker::Holder));
        assert_eq!(marker_of("web-kedge-new-ab", "web"), Some(Marker::New("ab")));
        assert_eq!(marker_of("web-kedge-old-ab", "web"), Some(Marker::Old("ab")));
        assert_eq!(marker_of("web-kedge-retired-ab", "web"), Some(Marker::Retired("ab")));
        assert!(
            is_retired_name_of("web-kedge-retired-ab", "web")
                && !is_retired_name_of("web-kedge-old-ab", "web")
        );
        assert!(is_recreate_name_of("web-kedge-retired-ab", "web"));
        assert_eq!(marker_of("web-kedge-old-ab-kedge-old-cd", "web"), None);
        assert_eq!(marker_of("web-kedge-old-", "web"), None);
        assert_eq!(marker_of("webshop", "web"), None);
        assert_eq!(marker_of("x-web-kedge-old-ab", "web"), None);
        assert_eq!(base_name_of_key("shop/web"), "web");
    }
}
