//! `kedge recreate NAME`: the one-call recreate of any container, managed by kedge or started by hand,
//! straight against the Docker Engine (no agent, no store). Also the progress display and error
//! mapping that `kedge check --autoupdate` shares.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use kedge_controller::docker::{labels, DockerClient, HealthStatus, PullProgress};
use kedge_controller::executor::{
    Executor, ExecutorError, RecreateOrder, RecreateProgress, RecreateReport, RecreateStep, RecreateStrategy,
};

use crate::error::{CliError, CliResult, Exit};
use crate::handoff::{self, HandoffOptions};
use crate::GlobalArgs;

#[derive(Debug, Args)]
pub struct RecreateArgs {
    /// The container to recreate (any container on the engine, managed by kedge or not).
    pub name: String,
    /// Pull the container's image reference first (progress on stderr).
    #[arg(long)]
    pub pull: bool,
    /// Remove the old image afterwards when no container uses it any more.
    #[arg(long)]
    pub cleanup: bool,
    /// With a Docker healthcheck: how long the new container may take to become healthy (`60s`, `5m`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub health_timeout: Duration,
    /// Without a healthcheck: the new container must still run after this long (`5s`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub running_grace: Duration,
    /// Recreate straight against the engine even when kedge manages the container. Safe only while
    /// no agent runs for it: by default its agent does the recreate, so the two never race.
    #[arg(long)]
    pub direct: bool,
}

/// Recreates `args.name` with the configuration it was declared with; prints one line on stdout when
/// done. A container kedge manages is recreated by its agent (see [`crate::handoff`]) unless `--direct`.
pub async fn run(args: RecreateArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let docker = connect(args.pull).await?;
    if !args.direct {
        if let Some(key) = managed_key(&docker, &args.name).await? {
            let options = HandoffOptions {
                pull: args.pull,
                cleanup: args.cleanup,
                health_timeout_seconds: Some(args.health_timeout.as_secs()),
                running_grace_seconds: Some(args.running_grace.as_secs()),
            };
            println!("{}", handoff::recreate(global, &key, &args.name, &options).await?);
            return Ok(Exit::Ok);
        }
    }
    let strategy = RecreateStrategy {
        pull: args.pull,
        health_timeout: args.health_timeout,
        running_grace: args.running_grace,
        min_ready_healthy: Duration::ZERO,
        stop_timeout: None,
        remove_old_image: args.cleanup,
        order: RecreateOrder::StopFirst,
    };
    let report = recreate_any(docker, &args.name, &strategy).await?;
    println!("{}", report_line(&report));
    Ok(Exit::Ok)
}

/// The spec key of container `name` when kedge manages it; `None` for any other container or none.
pub(crate) async fn managed_key(docker: &DockerClient, name: &str) -> CliResult<Option<String>> {
    let container = docker.inspect_container(name).await.map_err(|error| {
        CliError::new(
            Exit::Server,
            format!("cannot inspect container {name}: {}", kedge_controller::error_chain(&error)),
        )
    })?;
    Ok(container.and_then(|container| labels::key(&container.labels).map(str::to_string)))
}

/// Connects to the engine `DOCKER_HOST` names (default `/var/run/docker.sock`). A command that
/// `pulls` gets the registry credentials of the Docker `config.json` that `KEDGE_REGISTRY_CONFIG`
/// names, as the agent's `--registry-config` (docs/registry-credentials.md); a file kedge cannot use
/// is exit 2 then. One that does not pull never reads it, so an unreadable file does not stop it.
pub(crate) async fn connect(pulls: bool) -> CliResult<DockerClient> {
    let file = std::env::var_os("KEDGE_REGISTRY_CONFIG").filter(|file| pulls && !file.is_empty());
    let auth = match file {
        Some(file) => Some(
            kedge_controller::docker::RegistryAuth::from_file(std::path::Path::new(&file))
                .map_err(|error| CliError::usage(error.to_string()))?,
        ),
        None => None,
    };
    let docker = DockerClient::connect().await.map_err(|error| {
        CliError::new(Exit::Server, format!("cannot reach the Docker Engine: {}", kedge_controller::error_chain(&error))).hint(
            "set DOCKER_HOST, or in a container mount the socket: -v /var/run/docker.sock:/var/run/docker.sock",
        )
    })?;
    Ok(match auth {
        Some(auth) => docker.with_registry_auth(auth),
        None => docker,
    })
}

/// The safe recreate (rollback included) of any container, its progress on stderr.
pub(crate) async fn recreate_any(
    docker: DockerClient,
    name: &str,
    strategy: &RecreateStrategy,
) -> CliResult<RecreateReport> {
    docker.refuse_on_podman("a recreate").map_err(|error| {
        CliError::new(Exit::Server, error.to_string())
            .hint("recreate it with Podman's own tools (`podman container clone`, `podman auto-update`)")
    })?;
    let executor = Executor::new(docker);
    let mut progress = ProgressPrinter::default();
    let mut on_progress = |event: RecreateProgress| progress.print(event);
    let report = executor.recreate_any(name, strategy, &mut on_progress).await.map_err(recreate_error);
    // Recovery may have found an agent's proven start-first recreate and retired its old container
    // in the background: this process ends next, so it lets that finish first.
    executor.wait_retired().await;
    report
}

/// `container NAME recreated: OLD -> NEW in 2.3s (old image removed)`.
pub(crate) fn report_line(report: &RecreateReport) -> String {
    let old = report.old_id.as_deref().map_or("none", short_id);
    let cleanup = if report.old_image_removed { " (old image removed)" } else { "" };
    format!(
        "container {} recreated: {old} -> {} in {:.1}s{cleanup}",
        report.name,
        short_id(&report.new_id),
        report.duration.as_secs_f64()
    )
}

/// Prints a recreate's steps on stderr, and pull progress: on a terminal one indicatif bar per
/// layer, otherwise plain lines once per layer and status (never one line per byte count, so logs
/// and CI output stay readable).
pub(crate) struct ProgressPrinter {
    last_pull_line: Option<(Option<String>, String)>,
    /// Set when stderr is a terminal.
    bars: Option<PullBars>,
}

struct PullBars {
    multi: indicatif::MultiProgress,
    by_layer: std::collections::HashMap<String, indicatif::ProgressBar>,
}

impl Default for ProgressPrinter {
    fn default() -> ProgressPrinter {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        ProgressPrinter {
            last_pull_line: None,
            bars: terminal.then(|| PullBars {
                multi: indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr()),
                by_layer: std::collections::HashMap::new(),
            }),
        }
    }
}

impl ProgressPrinter {
    pub(crate) fn print(&mut self, event: RecreateProgress) {
        match event {
            RecreateProgress::Step(step) => self.say(&format!("recreate: {}", step_text(step))),
            RecreateProgress::Pull(line) => self.print_pull(line),
            RecreateProgress::Health(health) => {
                self.say(&format!("recreate: health {}", health_text(health)))
            }
        }
        let _ = std::io::stderr().flush();
    }

    pub(crate) fn print_pull(&mut self, line: PullProgress) {
        if let (Some(bars), Some(layer)) = (self.bars.as_mut(), line.layer.as_ref()) {
            bars.show(layer, &line);
            return;
        }
        let key = (line.layer.clone(), line.status.clone());
        if self.last_pull_line.as_ref() == Some(&key) {
            return;
        }
        match &line.layer {
            Some(layer) => self.say(&format!("pull: {layer}: {}", line.status)),
            None => self.say(&format!("pull: {}", line.status)),
        }
        self.last_pull_line = Some(key);
    }

    /// A line on stderr, above the bars when there are some.
    fn say(&self, text: &str) {
        match &self.bars {
            Some(bars) if !bars.by_layer.is_empty() => {
                let _ = bars.multi.println(text);
            }
            _ => eprintln!("{text}"),
        }
    }
}

impl PullBars {
    fn show(&mut self, layer: &str, line: &PullProgress) {
        let multi = &self.multi;
        let bar = self.by_layer.entry(layer.to_owned()).or_insert_with(|| {
            let bar = multi.add(indicatif::ProgressBar::new(0));
            let style = indicatif::ProgressStyle::with_template(
                "{prefix:.bold} {wide_msg} [{bar:30}] {bytes}/{total_bytes}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(layer.chars().take(12).collect::<String>());
            bar
        });
        if let Some(total) = line.total.and_then(|total| u64::try_from(total).ok()).filter(|total| *total > 0)
        {
            bar.set_length(total);
        }
        if let Some(current) = line.current.and_then(|current| u64::try_from(current).ok()) {
            bar.set_position(current);
        }
        bar.set_message(line.status.clone());
        if matches!(line.status.as_str(), "Pull complete" | "Already exists") {
            bar.finish_with_message(line.status.clone());
        }
    }
}

fn step_text(step: RecreateStep) -> &'static str {
    match step {
        RecreateStep::Pull => "pulling the image",
        RecreateStep::CreateNew => "creating the new container",
        RecreateStep::StopOld => "stopping the old container",
        RecreateStep::RenameOldAside => "renaming the old container aside",
        RecreateStep::RenameNew => "giving the new container its name",
        RecreateStep::StartNew => "starting the new container",
        RecreateStep::WaitHealthy => "waiting for the new container to prove itself",
        RecreateStep::RemoveOld => "removing the old container",
        RecreateStep::RemoveOldImage => "removing the old image if unused",
        RecreateStep::RollBack => "failed: rolling back to the old container",
        RecreateStep::Done => "done",
    }
}

fn health_text(health: HealthStatus) -> &'static str {
    match health {
        HealthStatus::None => "none",
        HealthStatus::Starting => "starting",
        HealthStatus::Healthy => "healthy",
        HealthStatus::Unhealthy => "unhealthy",
    }
}

/// Maps the executor's error to one line, a hint and the documented exit code.
fn recreate_error(error: ExecutorError) -> CliError {
    let message = kedge_controller::error_chain(&error);
    match &error {
        ExecutorError::NotFound { container } => CliError::new(Exit::NotFound, message)
            .hint(format!("`docker ps -a` lists the containers; was {container:?} renamed or removed?")),
        ExecutorError::RolledBack { .. } => CliError::new(Exit::Server, message)
            .hint("the old container runs again unchanged; fix the image or config and retry"),
        ExecutorError::RollbackFailed { name, .. } => CliError::new(Exit::Server, message)
            .hint(format!("running `kedge recreate {name}` again first finishes the interrupted rollback")),
        ExecutorError::Ambiguous { .. } | ExecutorError::NameTaken { .. } | ExecutorError::Foreign { .. } => {
            CliError::new(Exit::Conflict, message)
                .hint("`docker ps -a` shows the containers holding the name; remove the stray one")
        }
        ExecutorError::Unlabeled { .. } | ExecutorError::Docker { .. } => {
            CliError::new(Exit::Server, message)
        }
    }
}

/// The 12-character short form of a container or image ID (`sha256:` dropped).
pub(crate) fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    // Twelve characters, not bytes: an ID is the server's text, and a byte cut could split a character.
    id.char_indices().nth(12).map_or(id, |(end, _)| &id[..end])
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 5m or 1h"))?;
    let too_long = || format!("`{text}` is too long a duration");
    match unit {
        "" | "s" => Ok(Duration::from_secs(value)),
        "ms" => Ok(Duration::from_millis(value)),
        "m" => value.checked_mul(60).map(Duration::from_secs).ok_or_else(too_long),
        "h" => value.checked_mul(3600).map(Duration::from_secs).ok_or_else(too_long),
        _ => Err(format!("{text:?} is not a duration like 30s, 5m or 1h")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, expected) in
            [("30s", Some(30)), ("5m", Some(300)), ("1h", Some(3600)), ("7", Some(7)), ("x", None)]
        {
            assert_eq!(parse_duration(text).ok().map(|d| d.as_secs()), expected, "{text}");
        }
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("ééééééééééééé"), "éééééééééééé");
    }
}
