//! The safe recreate (DESIGN.md section 4): replace a container by a new one made from a config,
//! with rollback to the very same old container on any failure.
//!
//! Order is stop-first unless the strategy asks for start-first and [`start_first_conflict`] finds
//! nothing the two containers could not share: a host port, a static address, a network namespace
//! not of their own, a host device, or data (a volume, or a writable bind: two writers on one
//! database are never safe). Stop-first is correct for every container; start-first only removes
//! the gap in service.
//!
//! Stop-first steps, each observable from names and labels so `recover` can finish or undo it after
//! a crash:
//!
//! 1. pull (optional);
//! 2. create `<name>-kedge-new-<id>` labeled `recreate-role=new`, `recreate-id=<id>`,
//!    `recreate-old-id=<old ID>`, `recreate-old-running=<bool>` (first network at create, the rest
//!    connected before start);
//! 3. stop the old container (its own stop signal, its own grace period unless overridden), and
//!    rename it aside to `<name>-kedge-old-<id>`;
//! 4. rename the new container to `<name>` and start it;
//! 5. wait until it is healthy (Docker healthcheck) or still running after a grace period;
//! 6. remove the old container (its volumes kept), and its image when asked and unused.
//!
//! The new container gets the old one's anonymous volumes at the same targets (`volumes`), so
//! neither a success nor a rollback loses or orphans a `VOLUME`'s data.
//!
//! Start-first runs the same steps in another order: 1, 2, start the new container under its
//! temporary name (4), wait for it (5), then rename the old one, still running, to
//! `<name>-kedge-retired-<id>` (the record that the new one is proven), give the new one the name
//! (4), and return: the old one is stopped and removed (6) in the background (`retire.rs`). Each
//! state it passes through is one of recover.rs's table: the new container beside the old one
//! holding the name (rolled back), the old one retired and the new one under its temporary or its
//! own name (finished forward: the new one gets the name, the old one is retired again).
//!
//! A failure in 2-5 rolls back: the new container is stopped and renamed back to its temporary
//! name, the old one started (when it was running) and renamed back, then the new one removed.

use tokio::time::Instant;
use tracing::{info, info_span, warn, Instrument};

use super::failpoint::fail_point;
use super::health::{wait_until_proven, WaitError};
use super::progress::{RecreateFailure, RecreateProgress, RecreateReport, RecreateStep};
use super::retire::Retirement;
use super::{declared_config, Executor, ExecutorError, ExecutorResult};
use crate::docker::labels;
use crate::docker::{ContainerConfig, DockerError, MountSource, RemoveOptions};
use crate::planner::{RecreateOrder, RecreateStrategy};

/// A failed engine call of recreate step `step`, as the failure the rollback reports.
fn step_failed(step: RecreateStep) -> impl FnOnce(DockerError) -> RecreateFailure {
    move |e: DockerError| RecreateFailure::Step { step, message: crate::error_chain(&e) }
}

/// Tells `progress` that `step` begins, runs it in a span named after it, and names the step in its
/// failure: one step of a switch-over.
async fn run_step(
    step: RecreateStep,
    progress: &mut (dyn FnMut(RecreateProgress) + Send),
    action: impl std::future::Future<Output = Result<(), DockerError>>,
) -> Result<(), RecreateFailure> {
    progress(RecreateProgress::Step(step));
    action.instrument(info_span!("recreate_step", ?step)).await.map_err(step_failed(step))
}

/// Why the new container of a recreate must not run beside the old one, or `None` when it may.
/// `config` is the new container's, its carried volumes included (the old one's anonymous
/// volumes, such as a `VOLUME` its image declares, mounted by name).
pub fn start_first_conflict(config: &ContainerConfig) -> Option<&'static str> {
    if config.port_bindings.iter().any(|binding| binding.host_port.is_some()) {
        return Some("a published host port");
    }
    if config.networks.iter().any(|network| network.ipv4_address.is_some()) {
        return Some("a static IP address");
    }
    // `host` and `container:NAME` share a network namespace with others: the ports would collide.
    if !matches!(config.network_mode.as_deref(), None | Some("bridge") | Some("default")) {
        return Some("a shared network namespace");
    }
    let carries_data = |source: &MountSource, read_only: bool| match source {
        MountSource::Volume { .. } => true,
        MountSource::Bind { .. } => !read_only,
        MountSource::Tmpfs { .. } => false,
    };
    if config.mounts.iter().any(|mount| carries_data(&mount.source, mount.read_only)) {
        return Some("a volume or writable bind mount");
    }
    if !config.isolation.devices.is_empty() {
        return Some("a host device");
    }
    None
}

/// Which containers a recreate may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ownership {
    ManagedOnly,
    /// `kedge recreate NAME`: any container, on explicit request.
    Any,
}

/// What a rollback undoes: the containers of one recreate, by ID.
#[derive(Debug, Clone)]
pub(crate) struct RollbackPlan {
    pub(crate) base: String,
    pub(crate) recreate_id: String,
    pub(crate) old_id: Option<String>,
    pub(crate) old_running: bool,
    pub(crate) new_id: Option<String>,
}

impl Executor {
    /// Safely replaces the kedge container named `config.name` with one made from `config`.
    /// When there is no such container, it is simply created and started. A foreign container
    /// holding the name is an [`ExecutorError::Foreign`] error and is left untouched.
    pub async fn recreate(
        &self,
        config: &ContainerConfig,
        strategy: &RecreateStrategy,
        progress: &mut (dyn FnMut(RecreateProgress) + Send),
    ) -> ExecutorResult<RecreateReport> {
        if !labels::is_managed(&config.labels) {
            return Err(ExecutorError::Unlabeled { name: config.name.clone() });
        }
        self.recreate_with(config, strategy, progress, Ownership::ManagedOnly).await
    }

    /// `kedge recreate NAME`: safely recreates ANY container, managed or not, with the
    /// configuration it was declared with (its image's defaults removed, so a newer image's CMD,
    /// ENV, ... take effect) from the same image reference (pulled first with `strategy.pull`).
    pub async fn recreate_any(
        &self,
        name: &str,
        strategy: &RecreateStrategy,
        progress: &mut (dyn FnMut(RecreateProgress) + Send),
    ) -> ExecutorResult<RecreateReport> {
        self.recreate_any_on(name, None, strategy, progress).await
    }

    /// [`Executor::recreate_any`] onto another image: the same declared configuration, with
    /// `image` (`Some`) instead of the reference the container was created from. The agent upgrade
    /// helper moves an agent's container to a new kedge image this way.
    pub async fn recreate_any_on(
        &self,
        name: &str,
        image: Option<&str>,
        strategy: &RecreateStrategy,
        progress: &mut (dyn FnMut(RecreateProgress) + Send),
    ) -> ExecutorResult<RecreateReport> {
        // An interrupted recreate may have left the container under its aside name: finish or undo
        // it first, so the container is found under its own name.
        self.recover_name(name, strategy).await?;
        let old = self
            .inspect(name)
            .await?
            .ok_or_else(|| ExecutorError::NotFound { container: name.to_string() })?;
        let old_image = self.docker.inspect_image(&old.image_id).await.map_err(|source| {
            ExecutorError::Docker { step: "inspect image", container: name.to_string(), source }
        })?;
        let mut config = declared_config(&old, old_image.as_ref());
        if let Some(image) = image {
            config.image = image.to_string();
        }
        self.recreate_with(&config, strategy, progress, Ownership::Any).await
    }

    async fn recreate_with(
        &self,
        config: &ContainerConfig,
        strategy: &RecreateStrategy,
        progress: &mut (dyn FnMut(RecreateProgress) + Send),
        ownership: Ownership,
    ) -> ExecutorResult<RecreateReport> {
        let started = Instant::now();
        let name = config.name.clone();
        // Start from one container: finish or undo a recreate of this name that a crash interrupted.
        self.recover_name(&name, strategy).await?;
        let recreate_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let span = info_span!("recreate", name = %name, recreate_id = %recreate_id);
        async move {
            let old = self.inspect(&name).await?;
            if let Some(old) = &old {
                if ownership == Ownership::ManagedOnly && !labels::is_managed(&old.labels) {
                    return Err(ExecutorError::Foreign { name: name.clone(), id: old.id.clone() });
                }
            }
            if strategy.pull {
                progress(RecreateProgress::Step(RecreateStep::Pull));
                let span = info_span!("pull", image = %config.image);
                self.docker
                    .pull(&config.image, &mut |line| progress(RecreateProgress::Pull(line)))
                    .instrument(span)
                    .await
                    .map_err(|source| ExecutorError::Docker {
                        step: "pull",
                        container: name.clone(),
                        source,
                    })?;
            }
            let Some(old) = old else {
                // Nothing to replace: create and start.
                progress(RecreateProgress::Step(RecreateStep::CreateNew));
                let new_id = self.create_unchecked(config).await?;
                progress(RecreateProgress::Step(RecreateStep::StartNew));
                self.docker.start_container(&new_id).await.map_err(|source| ExecutorError::Docker {
                    step: "start",
                    container: name.clone(),
                    source,
                })?;
                progress(RecreateProgress::Step(RecreateStep::Done));
                return Ok(RecreateReport {
                    name: name.clone(),
                    recreate_id,
                    old_id: None,
                    new_id,
                    old_image_removed: false,
                    duration: started.elapsed(),
                    old_image_id: None,
                    order: None,
                    order_reason: "no container to replace".to_owned(),
                    ready_after: started.elapsed(),
                });
            };

            // The old container's anonymous volumes, mounted by name, so their data stays.
            let mut new_config = super::volumes::with_carried_volumes(&old, config);
            new_config.name = labels::recreate_new_name(&name, &recreate_id);
            for (key, value) in [
                (labels::RECREATE_ROLE, labels::ROLE_NEW.to_string()),
                (labels::RECREATE_ID, recreate_id.clone()),
                (labels::RECREATE_OLD_ID, old.id.clone()),
                (labels::RECREATE_OLD_RUNNING, old.state.running.to_string()),
            ] {
                new_config.labels.insert(key.to_string(), value);
            }
            progress(RecreateProgress::Step(RecreateStep::CreateNew));
            let new_id = match self.create_unchecked(&new_config).instrument(info_span!("create_new")).await {
                Ok(id) => id,
                // Nothing was changed yet: the old container is as it was.
                Err(e) => {
                    return Err(ExecutorError::RolledBack {
                        name: name.clone(),
                        old_id: old.id.clone(),
                        failure: RecreateFailure::Step {
                            step: RecreateStep::CreateNew,
                            message: crate::error_chain(&e),
                        },
                    })
                }
            };
            fail_point!("recreate.after_create");

            let conflict = start_first_conflict(&new_config);
            let start_first = strategy.order == RecreateOrder::StartFirst && {
                if let Some(conflict) = conflict {
                    info!(conflict, "stop-first: the new container cannot run beside the old one");
                }
                conflict.is_none()
            };
            let order = if start_first { RecreateOrder::StartFirst } else { RecreateOrder::StopFirst };
            let order_reason = match (strategy.order, conflict) {
                (RecreateOrder::StartFirst, None) => {
                    "start-first: the two containers share nothing exclusive".to_owned()
                }
                (RecreateOrder::StartFirst, Some(conflict)) => {
                    format!(
                        "stop-first: the new container has {conflict}, which two containers must not share"
                    )
                }
                (RecreateOrder::StopFirst, _) => "stop-first: the update strategy asks for it".to_owned(),
            };
            let mut ready_after = std::time::Duration::ZERO;
            let switched = self
                .switch(order, &name, &recreate_id, &old, &new_id, strategy, progress, &mut || {
                    ready_after = started.elapsed()
                })
                .await;
            if let Err(failure) = switched {
                warn!(%failure, "recreate failed, rolling back");
                progress(RecreateProgress::Step(RecreateStep::RollBack));
                let plan = RollbackPlan {
                    base: name.clone(),
                    recreate_id: recreate_id.clone(),
                    old_id: Some(old.id.clone()),
                    old_running: old.state.running,
                    new_id: Some(new_id.clone()),
                };
                return match self.roll_back(&plan).instrument(info_span!("roll_back")).await {
                    Ok(()) => {
                        Err(ExecutorError::RolledBack { name: name.clone(), old_id: old.id.clone(), failure })
                    }
                    Err(rollback) => Err(ExecutorError::RollbackFailed {
                        name: name.clone(),
                        failure,
                        rollback: Box::new(rollback),
                    }),
                };
            }

            let mut old_image_removed = false;
            if start_first {
                // The new container holds the name and is proven: the old one (already under its
                // retired name) is stopped, removed and its image cleaned up in the background.
                progress(RecreateProgress::Step(RecreateStep::RemoveOld));
                self.retire(Retirement {
                    old_id: old.id.clone(),
                    stop_timeout: strategy.stop_timeout,
                    remove_image: strategy.remove_old_image.then(|| (old.image_id.clone(), new_id.clone())),
                });
            } else {
                progress(RecreateProgress::Step(RecreateStep::RemoveOld));
                self.docker
                    .remove_container(&old.id, RemoveOptions { force: true, anonymous_volumes: false })
                    .instrument(info_span!("remove_old"))
                    .await
                    .map_err(|source| ExecutorError::Docker {
                        step: "remove old container",
                        container: old.id.clone(),
                        source,
                    })?;
                fail_point!("recreate.after_remove_old");

                if strategy.remove_old_image {
                    progress(RecreateProgress::Step(RecreateStep::RemoveOldImage));
                    let new_image =
                        self.docker.inspect_container(&new_id).await.ok().flatten().map(|c| c.image_id);
                    if new_image.as_deref() != Some(old.image_id.as_str()) {
                        match self.docker.remove_image_if_unused(&old.image_id).await {
                            Ok(removed) => old_image_removed = removed,
                            // The recreate itself succeeded; a leftover image is not worth failing it.
                            Err(e) => {
                                warn!(image = %old.image_id, error = %e, "could not remove the old image")
                            }
                        }
                    }
                }
            }
            progress(RecreateProgress::Step(RecreateStep::Done));
            let report = RecreateReport {
                name: name.clone(),
                recreate_id: recreate_id.clone(),
                old_id: Some(old.id.clone()),
                new_id,
                old_image_removed,
                duration: started.elapsed(),
                old_image_id: Some(old.image_id.clone()),
                order: Some(order),
                order_reason,
                ready_after,
            };
            if start_first {
                info!(duration = ?report.duration, "recreated; the old container stops in the background");
            } else {
                info!(duration = ?report.duration, "recreated");
            }
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// Steps 3-5 in `order`. Stop-first: stop the old container and set it aside, give the new one
    /// the name, start and prove it. Start-first: start and prove the new container beside the old
    /// one under its temporary name, then stop the old one, set it aside and give the new one the
    /// name. Each step has its failpoint, for the crash tests of every state (`recover.rs`).
    #[allow(clippy::too_many_arguments)]
    async fn switch(
        &self,
        order: RecreateOrder,
        name: &str,
        recreate_id: &str,
        old: &crate::docker::ObservedContainer,
        new_id: &str,
        strategy: &RecreateStrategy,
        progress: &mut (dyn FnMut(RecreateProgress) + Send),
        proven: &mut (dyn FnMut() + Send),
    ) -> Result<(), RecreateFailure> {
        use RecreateStep::{RenameNew, RenameOldAside, StartNew, StopOld};
        match order {
            RecreateOrder::StopFirst => {
                let aside = labels::recreate_old_name(name, recreate_id);
                run_step(StopOld, progress, self.docker.stop_container(&old.id, strategy.stop_timeout))
                    .await?;
                fail_point!("recreate.after_stop_old");
                run_step(RenameOldAside, progress, self.docker.rename_container(&old.id, &aside)).await?;
                fail_point!("recreate.after_rename_old");
                run_step(RenameNew, progress, self.docker.rename_container(new_id, name)).await?;
                fail_point!("recreate.after_rename_new");
                run_step(StartNew, progress, self.docker.start_container(new_id)).await?;
                fail_point!("recreate.after_start_new");
                self.prove_new(new_id, strategy, progress).await?;
                proven();
                fail_point!("recreate.after_healthy");
            }
            RecreateOrder::StartFirst => {
                run_step(StartNew, progress, self.docker.start_container(new_id)).await?;
                fail_point!("recreate.start_first.after_start_new");
                self.prove_new(new_id, strategy, progress).await?;
                proven();
                fail_point!("recreate.start_first.after_healthy");
                // The old container, still running, takes the retired name: the record that the new
                // one is proven. From here on recovery finishes forward, never rolls back (retire.rs);
                // the caller stops and removes it in the background.
                let retired = labels::recreate_retired_name(name, recreate_id);
                run_step(RenameOldAside, progress, self.docker.rename_container(&old.id, &retired)).await?;
                fail_point!("recreate.start_first.after_retire_old");
                run_step(RenameNew, progress, self.docker.rename_container(new_id, name)).await?;
                fail_point!("recreate.start_first.after_rename_new");
            }
        }
        Ok(())
    }

    /// Waits until the new container is healthy or has run long enough (`health.rs`).
    async fn prove_new(
        &self,
        new_id: &str,
        strategy: &RecreateStrategy,
        progress: &mut (dyn FnMut(RecreateProgress) + Send),
    ) -> Result<(), RecreateFailure> {
        progress(RecreateProgress::Step(RecreateStep::WaitHealthy));
        match wait_until_proven(&*self.docker, new_id, strategy, progress)
            .instrument(info_span!("wait_healthy"))
            .await
        {
            Ok(()) => Ok(()),
            Err(WaitError::Failed(failure)) => Err(failure),
            Err(WaitError::Docker(e)) => Err(step_failed(RecreateStep::WaitHealthy)(e)),
        }
    }

    /// Undoes a recreate, each step idempotent so a crash inside is undone by running it again:
    /// stop the new container and give it back its temporary name, start the old one (when it was
    /// running) and give it back the name, then remove the new one.
    pub(crate) async fn roll_back(&self, plan: &RollbackPlan) -> ExecutorResult<()> {
        let fail = |step: &'static str, id: &str| {
            let container = id.to_string();
            move |source| ExecutorError::Docker { step, container, source }
        };
        if let Some(new_id) = &plan.new_id {
            if let Some(new) = self.inspect(new_id).await? {
                if new.state.running || new.state.restarting {
                    self.docker
                        .stop_container(new_id, None)
                        .await
                        .map_err(fail("stop new container", new_id))?;
                }
                if new.name == plan.base {
                    let temporary = labels::recreate_new_name(&plan.base, &plan.recreate_id);
                    self.docker
                        .rename_container(new_id, &temporary)
                        .await
                        .map_err(fail("rename new aside", new_id))?;
                }
            }
        }
        fail_point!("rollback.after_new_aside");
        if let Some(old_id) = &plan.old_id {
            if let Some(old) = self.inspect(old_id).await? {
                if plan.old_running && !old.state.running {
                    self.docker.start_container(old_id).await.map_err(fail("start old container", old_id))?;
                }
                fail_point!("rollback.after_start_old");
                // A start-first recreate fails before the old container is set aside: it still
                // holds the name, and Docker refuses a rename to the name a container has.
                if old.name != plan.base {
                    self.docker
                        .rename_container(old_id, &plan.base)
                        .await
                        .map_err(fail("rename old back", old_id))?;
                }
                fail_point!("rollback.after_rename_old");
            }
        }
        if let Some(new_id) = &plan.new_id {
            let options = RemoveOptions { force: true, anonymous_volumes: true };
            self.docker
                .remove_container(new_id, options)
                .await
                .map_err(fail("remove new container", new_id))?;
        }
        fail_point!("rollback.after_remove_new");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{DeviceMapping, Mount, NetworkAttachment, PortBinding, Protocol};

    /// `edit` applied to a plain container's config, and the conflict expected.
    fn check(edit: impl FnOnce(&mut ContainerConfig), expected: Option<&str>) {
        let mut config =
            ContainerConfig { name: "web".into(), image: "app:v2".into(), ..ContainerConfig::default() };
        edit(&mut config);
        assert_eq!(start_first_conflict(&config), expected, "{config:?}");
    }

    fn mount(source: MountSource, read_only: bool) -> Mount {
        Mount { source, target: "/data".into(), read_only }
    }

    #[test]
    fn start_first_only_when_the_two_containers_share_nothing_exclusive() {
        check(|_| {}, None);
        let port =
            |host_port| PortBinding { container_port: 80, protocol: Protocol::Tcp, host_ip: None, host_port };
        check(|c| c.port_bindings = vec![port(None)], None);
        check(|c| c.port_bindings = vec![port(Some(8080))], Some("a published host port"));
        let network = |ipv4_address: Option<&str>| NetworkAttachment {
            network: "front".into(),
            aliases: vec!["api".into()],
            ipv4_address: ipv4_address.map(str::to_string),
        };
        check(|c| c.networks = vec![network(None)], None);
        check(|c| c.networks = vec![network(Some("10.1.0.20"))], Some("a static IP address"));
        check(|c| c.network_mode = Some("bridge".into()), None);
        check(|c| c.network_mode = Some("host".into()), Some("a shared network namespace"));
        check(|c| c.network_mode = Some("container:db".into()), Some("a shared network namespace"));
        let data = Some("a volume or writable bind mount");
        check(|c| c.mounts = vec![mount(MountSource::Volume { name: Some("db".into()) }, false)], data);
        check(|c| c.mounts = vec![mount(MountSource::Volume { name: Some("db".into()) }, true)], data);
        check(|c| c.mounts = vec![mount(MountSource::Volume { name: None }, false)], data);
        check(|c| c.mounts = vec![mount(MountSource::Bind { host_path: "/srv".into() }, false)], data);
        check(|c| c.mounts = vec![mount(MountSource::Bind { host_path: "/etc/app".into() }, true)], None);
        check(|c| c.mounts = vec![mount(MountSource::Tmpfs { size_bytes: None, mode: None }, false)], None);
        check(
            |c| {
                c.isolation.devices = vec![DeviceMapping {
                    host_path: "/dev/ttyUSB0".into(),
                    container_path: "/dev/ttyUSB0".into(),
                    ..DeviceMapping::default()
                }]
            },
            Some("a host device"),
        );
    }
}
