//! docker-map's actions along dependency paths: `stop`, `start`, `restart`, `startup`, `shutdown`.
//!
//! Each is a change of desired state written through the API (`spec.runState`, the
//! `kedge.io/restartedAt` annotation, a delete), which the agent carries out in dependency order
//! and keeps across agent restarts and reboots. Only a plain `restart` is a one-off (the agent of the
//! container's host restarts it and records an event), since "restart now" is not a state to keep
//! (docs/migrating-from-docker-map.md).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::{Args, Subcommand};
use kedge_controller::mapping::RESTARTED_AT_ANNOTATION;
use kedge_crds::{ConditionStatus, Container, DeletionPolicy, RunState};
use reqwest::Method;

use crate::base::{bad_answer, connect, list_items, load_specs, object_path};
use crate::client::{encode, Client};
use crate::error::{CliError, CliResult, Exit};
use crate::types::RestartReport;
use crate::{ContainerKind, GlobalArgs};

#[derive(Debug, Subcommand)]
pub enum LifecycleCommand {
    /// Stop a container and everything that depends on it, dependents first; it stays stopped.
    #[command(after_help = "Examples:\n  kedge stop container app\n  kedge stop container db --wait 2m\n\n\
Sets spec.runState: stopped on NAME and, transitively, on every spec whose dependsOn names it.\n\
The agent stops each one once everything depending on it has stopped, and keeps it stopped\n\
across agent restarts and reboots. `kedge apply` of a file without runState starts it again.")]
    Stop(TargetArgs),
    /// Start a container after its dependencies, in order, each waiting for its dependsOn condition.
    #[command(
        after_help = "Examples:\n  kedge start container web\n  kedge start container web --wait 2m\n\n\
Sets spec.runState: running on NAME and, transitively, on everything NAME depends on."
    )]
    Start(TargetArgs),
    /// Restart one container now (not its dependencies); `--recreate` replaces it instead.
    #[command(
        after_help = "Examples:\n  kedge restart container app\n  kedge restart container app --recreate\n\n\
Without --recreate: a one-off restart by the agent of the container's host, recorded as a\n\
Restarted event: same container ID; ensureRunning post-start commands come back when the agent\n\
next finds them missing, once commands are not run again. With --recreate: sets the\n\
kedge.io/restartedAt annotation, and the agent replaces the container (new ID), as\n\
`kubectl rollout restart` does."
    )]
    Restart(RestartArgs),
    /// Start a set of specs in dependency order: create what is missing, replace what ended badly.
    #[command(
        after_help = "Examples:\n  kedge startup -f stack/ --wait 2m\n  kedge startup -l app=shop\n\n\
Specs of -f missing from the server are created; existing ones are not updated (that is\n\
`kedge apply`). Every spec of the set and what it depends on gets runState: running; the agent\n\
starts them in dependency order and replaces a container that exited with one of its\n\
nonRecoverableExitCodes (default -127, -1) rather than restarting it."
    )]
    Startup(SetArgs),
    /// Stop a set of specs, dependents first, then delete them (persistent ones are only stopped).
    #[command(
        after_help = "Examples:\n  kedge shutdown -f stack/\n  kedge shutdown -l app=shop --remove-persistent\n\n\
Stops the set and what depends on it (runState: stopped), waits until all are stopped, then\n\
deletes the specs, so the agent removes their containers. Specs with deletionPolicy: orphan\n\
(docker-map's persistent containers) stay, stopped, unless --remove-persistent."
    )]
    Shutdown(ShutdownArgs),
    /// Run a script in a one-off container made from a spec, its dependencies started first.
    #[command(
        after_help = "Examples:\n  kedge run app --script ./migrate.sh --entrypoint /bin/sh -- {script_path}\n  \
kedge run db --script ./dump/ --entrypoint pg_dump -- -f {script_path}/db.sql\n\n\
The script's directory is mounted at /tmp/script_run; {script_path} in ARGS names the script\n\
(or the directory) inside. Prints the logs; exits with the container's exit code. The container\n\
is removed after the run unless --keep, and left (its ID printed) when the wait times out."
    )]
    Run(RunArgs),
}

/// Where docker-map mounts the script's directory (its `container_script_dir`).
const DEFAULT_SCRIPT_DIR: &str = "/tmp/script_run";

/// `kedge run` (carried out by `run.rs`, which builds on this module's dependency paths).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The spec whose configuration the one-off container is made from.
    pub name: String,
    /// A script file (its directory is mounted) or a directory (mounted as it is).
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// The entrypoint of the script's runtime, e.g. `/bin/sh`.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Where the script's directory is mounted inside the container.
    #[arg(long, default_value = DEFAULT_SCRIPT_DIR)]
    pub container_script_dir: String,
    /// The one-off container's name (default `NAME-script`).
    #[arg(long)]
    pub container_name: Option<String>,
    /// Remove an unmanaged container of that name first (docker-map's remove_existing_before).
    #[arg(long)]
    pub replace: bool,
    /// Keep the container after the run (docker-map's remove_created_after=False).
    #[arg(long)]
    pub keep: bool,
    /// How long to wait for the script to end; the container is left running after that.
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    /// How long to wait for the dependencies to be Ready.
    #[arg(long, default_value = "2m")]
    pub dependency_timeout: String,
    /// The command (after the entrypoint); `{script_path}` is replaced by the script's path inside.
    /// The host-escape policy level the one-off container is checked at, spec and script mount
    /// together (docs/policy.md), when the namespace has none stored (`kedge policy set`, read
    /// from the agent, wins); give the level of the spec's agent. A refusal is exit 2.
    #[arg(long, env = "KEDGE_POLICY_LEVEL", value_name = "LEVEL", default_value = "baseline",
          value_parser = |text: &str| text.parse::<kedge_crds::PolicyLevel>())]
    pub policy_level: kedge_crds::PolicyLevel,
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    #[arg(value_enum)]
    pub kind: ContainerKind,
    pub name: String,
    /// Wait this long (`2m`) for every changed container to be stopped (stop) or Ready (start).
    #[arg(long)]
    pub wait: Option<String>,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[arg(value_enum)]
    pub kind: ContainerKind,
    pub name: String,
    /// Replace the container (a new one from the spec) instead of restarting it.
    #[arg(long, conflicts_with = "exec")]
    pub recreate: bool,
    /// Run the spec's post-start commands again after the restart (docker-map's restart_exec_commands).
    #[arg(long)]
    pub exec: bool,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Files or directories of specs (`kedge apply -f` takes the same).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Label selector over the specs on the server.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Wait this long (`2m`) for every container of the set to be Ready (startup) or stopped.
    #[arg(long)]
    pub wait: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShutdownArgs {
    #[command(flatten)]
    pub set: SetArgs,
    /// Delete specs with deletionPolicy: orphan too, and remove their containers.
    #[arg(long)]
    pub remove_persistent: bool,
}

/// How long shutdown waits for the set to stop before deleting it, when `--wait` is not given.
const SHUTDOWN_STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// Attempts of a read-modify-write against concurrent writers.
const CAS_ATTEMPTS: usize = 5;

pub async fn run(command: LifecycleCommand, global: &GlobalArgs) -> CliResult<Exit> {
    match command {
        LifecycleCommand::Stop(args) => stop(args, global).await,
        LifecycleCommand::Start(args) => start(args, global).await,
        LifecycleCommand::Restart(args) => restart(args, global).await,
        LifecycleCommand::Startup(args) => startup(args, global).await,
        LifecycleCommand::Shutdown(args) => shutdown(args, global).await,
        LifecycleCommand::Run(_) => unreachable!("dispatched in main"),
    }
}

async fn stop(args: TargetArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let wait = parse_wait(args.wait.as_deref())?;
    let (resolved, client) = connect(global)?;
    let ns = resolved.namespace.clone();
    let all = list(&client, &ns).await?;
    require(&all, &ns, &args.name)?;
    let names = along(&all, [args.name.clone()], Direction::Dependents);
    refuse_set_children(&all, &names)?;
    for name in &names {
        println!("{}", set_run_state(&client, &ns, name, RunState::Stopped).await?);
    }
    if let Some(timeout) = wait {
        wait_for(&client, &ns, &names, Goal::Stopped, timeout).await?;
    }
    Ok(Exit::Ok)
}

async fn start(args: TargetArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let wait = parse_wait(args.wait.as_deref())?;
    let (resolved, client) = connect(global)?;
    let ns = resolved.namespace.clone();
    let all = list(&client, &ns).await?;
    require(&all, &ns, &args.name)?;
    let names = along(&all, [args.name.clone()], Direction::Dependencies);
    for name in &names {
        println!("{}", set_run_state(&client, &ns, name, RunState::Running).await?);
    }
    if let Some(timeout) = wait {
        wait_for(&client, &ns, &names, Goal::Ready, timeout).await?;
    }
    Ok(Exit::Ok)
}

async fn restart(args: RestartArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let ns = resolved.namespace.clone();
    let name = args.name;
    if args.recreate {
        let stamp = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        modify(&client, &ns, &name, |container| {
            container.metadata.annotations.insert(RESTARTED_AT_ANNOTATION.to_owned(), stamp.clone());
            true
        })
        .await?;
        println!("container/{name} recreate requested ({RESTARTED_AT_ANNOTATION}={stamp})");
        return Ok(Exit::Ok);
    }
    // Served by the agent of the container's host, which restarts it and records an event.
    let query = if args.exec { "?exec=true" } else { "" };
    let path = format!("{}/restart{query}", object_path(&ns, &name));
    let report: RestartReport =
        serde_json::from_value(client.send(Method::POST, &path, None).await?.body).unwrap_or_default();
    println!("container/{name} restarted ({})", short(&report.id));
    Ok(Exit::Ok)
}

async fn startup(args: SetArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let wait = parse_wait(args.wait.as_deref())?;
    let (resolved, client) = connect(global)?;
    let ns = resolved.namespace.clone();
    let mut all = list(&client, &ns).await?;
    let mut set = Vec::new();
    for mut container in set_from_files(&args.files, &ns)? {
        let name = container.metadata.name.clone();
        if !all.contains_key(&name) {
            container.spec.run_state = None;
            let path = format!("/api/v1/namespaces/{}/containers", encode(&ns));
            let body = serde_json::to_value(&container).map_err(bad_answer)?;
            client.send(Method::POST, &path, Some(&body)).await?;
            println!("container/{name} created");
            all.insert(name.clone(), container);
        }
        set.push(name);
    }
    set.extend(set_from_selector(&client, &ns, args.selector.as_deref()).await?);
    if set.is_empty() {
        return Err(CliError::usage("name the set: -f FILE or -l SELECTOR"));
    }
    let names = along(&all, set, Direction::Dependencies);
    for name in &names {
        println!("{}", set_run_state(&client, &ns, name, RunState::Running).await?);
    }
    if let Some(timeout) = wait {
        wait_for(&client, &ns, &names, Goal::Ready, timeout).await?;
    }
    Ok(Exit::Ok)
}

async fn shutdown(args: ShutdownArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let timeout = parse_wait(args.set.wait.as_deref())?.unwrap_or(SHUTDOWN_STOP_TIMEOUT);
    let (resolved, client) = connect(global)?;
    let ns = resolved.namespace.clone();
    let all = list(&client, &ns).await?;
    let mut set: Vec<String> = set_from_files(&args.set.files, &ns)?
        .into_iter()
        .map(|container| container.metadata.name)
        .filter(|name| all.contains_key(name))
        .collect();
    set.extend(set_from_selector(&client, &ns, args.set.selector.as_deref()).await?);
    if set.is_empty() {
        eprintln!("Nothing to shut down: no spec of the set is on the server.");
        return Ok(Exit::Ok);
    }
    // Dependents first: stopping (by the agent) and deleting go in this order.
    let names = along(&all, set, Direction::Dependents);
    refuse_set_children(&all, &names)?;
    for name in &names {
        println!("{}", set_run_state(&client, &ns, name, RunState::Stopped).await?);
    }
    // Deleting before everything stopped would let the agent remove them in any order.
    wait_for(&client, &ns, &names, Goal::Stopped, timeout).await?;
    for name in &names {
        let persistent =
            all.get(name).is_some_and(|c| c.spec.deletion_policy_or_default() == DeletionPolicy::Orphan);
        if persistent && !args.remove_persistent {
            println!("container/{name} kept stopped (deletionPolicy: orphan)");
            continue;
        }
        if persistent {
            modify(&client, &ns, name, |container| {
                container.spec.deletion_policy = Some(DeletionPolicy::Remove);
                true
            })
            .await?;
        }
        match client.send(Method::DELETE, &object_path(&ns, name), None).await {
            Ok(_) => println!("container/{name} deleted"),
            Err(error) if error.exit == Exit::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(Exit::Ok)
}

/// Which way to follow `dependsOn` from the named specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// What they depend on, transitively.
    Dependencies,
    /// What depends on them, transitively.
    Dependents,
}

/// Refuses, before anything is changed, to stop replicas of a ContainerSet along a dependency path:
/// the set's controller would write their `runState` back at once.
fn refuse_set_children(all: &BTreeMap<String, Container>, names: &[String]) -> CliResult<()> {
    let children: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let labels = &all.get(name)?.metadata.labels;
            let set = labels.get(kedge_crds::container_set::SET_LABEL)?;
            labels
                .contains_key(kedge_crds::container_set::SET_REVISION_LABEL)
                .then(|| format!("{name} (ContainerSet {set})"))
        })
        .collect();
    if children.is_empty() {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "cannot stop replicas of a ContainerSet one by one: {}; nothing was changed",
        children.join(", ")
    ))
    .hint("scale the set down or delete it (kedge delete containerset NAME), then try again"))
}

/// The named specs and those reached from them, in the order to act on them: dependencies
/// before what needs them (`Dependencies`), dependents before what they need (`Dependents`).
/// Names without a spec on the server are skipped; a cycle cannot be declared (validation).
pub(crate) fn along(
    all: &BTreeMap<String, Container>,
    start: impl IntoIterator<Item = String>,
    direction: Direction,
) -> Vec<String> {
    let neighbours = |name: &str| -> Vec<String> {
        match direction {
            Direction::Dependencies => all
                .get(name)
                .map(|c| c.spec.dependencies().into_iter().map(|d| d.name).collect())
                .unwrap_or_default(),
            Direction::Dependents => all
                .values()
                .filter(|c| c.spec.dependencies().iter().any(|d| d.name == name))
                .map(|c| c.metadata.name.clone())
                .collect(),
        }
    };
    let mut reached = BTreeSet::new();
    let mut queue: VecDeque<String> = start.into_iter().collect();
    while let Some(name) = queue.pop_front() {
        if all.contains_key(&name) && reached.insert(name.clone()) {
            queue.extend(neighbours(&name));
        }
    }
    // Depth-first post-order: a spec comes after every spec it reaches.
    let mut ordered = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        name: &str,
        reached: &BTreeSet<String>,
        neighbours: &dyn Fn(&str) -> Vec<String>,
        done: &mut BTreeSet<String>,
        ordered: &mut Vec<String>,
    ) {
        if !reached.contains(name) || !done.insert(name.to_owned()) {
            return;
        }
        for next in neighbours(name) {
            visit(&next, reached, neighbours, done, ordered);
        }
        ordered.push(name.to_owned());
    }
    for name in &reached {
        visit(name, &reached, &neighbours, &mut done, &mut ordered);
    }
    ordered
}

pub(crate) async fn list(client: &Client, ns: &str) -> CliResult<BTreeMap<String, Container>> {
    let list = client.get(&format!("/api/v1/namespaces/{}/containers", encode(ns))).await?;
    Ok(list_items(&list)?.into_iter().map(|c| (c.metadata.name.clone(), c)).collect())
}

async fn get(client: &Client, ns: &str, name: &str) -> CliResult<Container> {
    crate::error::from_server(client.get(&object_path(ns, name)).await?)
}

fn require(all: &BTreeMap<String, Container>, ns: &str, name: &str) -> CliResult<()> {
    if all.contains_key(name) {
        return Ok(());
    }
    Err(CliError::new(Exit::NotFound, format!("container {ns}/{name} not found"))
        .hint("list them with `kedge get containers`"))
}

fn set_from_files(files: &[PathBuf], ns: &str) -> CliResult<Vec<Container>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let mut containers = load_specs(files, &crate::ComposeArgs::default().options())?;
    for container in &mut containers {
        if container.metadata.namespace == kedge_crds::DEFAULT_NAMESPACE {
            container.metadata.namespace = ns.to_owned();
        }
    }
    Ok(containers)
}

async fn set_from_selector(client: &Client, ns: &str, selector: Option<&str>) -> CliResult<Vec<String>> {
    let Some(selector) = selector else { return Ok(Vec::new()) };
    let path = format!("/api/v1/namespaces/{}/containers?labelSelector={}", encode(ns), encode(selector));
    Ok(list_items(&client.get(&path).await?)?.into_iter().map(|c| c.metadata.name).collect())
}

/// Sets `spec.runState`; answers the line to print (`container/NAME runState: stopped`).
pub(crate) async fn set_run_state(
    client: &Client,
    ns: &str,
    name: &str,
    state: RunState,
) -> CliResult<String> {
    let changed = modify(client, ns, name, |container| {
        if container.spec.run_state_or_default() == state {
            return false;
        }
        // `running` is the default: leave the field out, as a spec file would.
        container.spec.run_state = (state == RunState::Stopped).then_some(RunState::Stopped);
        true
    })
    .await?;
    let word = match state {
        RunState::Running => "running",
        RunState::Stopped => "stopped",
    };
    let suffix = if changed { "" } else { " (unchanged)" };
    Ok(format!("container/{name} runState: {word}{suffix}"))
}

/// Read, change, write with the read's resourceVersion; again on a concurrent write. `change`
/// answers whether it changed anything (nothing is written otherwise).
async fn modify(
    client: &Client,
    ns: &str,
    name: &str,
    mut change: impl FnMut(&mut Container) -> bool,
) -> CliResult<bool> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut container = get(client, ns, name).await?;
        if !change(&mut container) {
            return Ok(false);
        }
        container.status = None;
        let body = serde_json::to_value(&container).map_err(bad_answer)?;
        match client.send(Method::PUT, &object_path(ns, name), Some(&body)).await {
            Ok(_) => return Ok(true),
            Err(error) if error.exit == Exit::Conflict && attempt < CAS_ATTEMPTS => continue,
            Err(error) => return Err(error),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    Ready,
    Stopped,
}

/// Polls until every named container reports `goal` for its current generation.
pub(crate) async fn wait_for(
    client: &Client,
    ns: &str,
    names: &[String],
    goal: Goal,
    timeout: Duration,
) -> CliResult<()> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<String> = names.to_vec();
    loop {
        let mut still = Vec::new();
        for name in pending {
            let container = get(client, ns, &name).await?;
            if !reached(&container, goal) {
                still.push(name);
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let what = match goal {
                Goal::Ready => "Ready",
                Goal::Stopped => "stopped",
            };
            return Err(CliError::new(
                Exit::Timeout,
                format!("timed out waiting for {} to be {what}", still.join(", ")),
            )
            .hint("`kedge describe container NAME` says what it waits for"));
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn reached(container: &Container, goal: Goal) -> bool {
    let Some(status) = &container.status else { return false };
    if status.observed_generation < container.metadata.generation {
        return false;
    }
    let Some(ready) = status.condition("Ready") else { return false };
    match goal {
        Goal::Ready => ready.status == ConditionStatus::True,
        Goal::Stopped => ready.status == ConditionStatus::False && ready.reason == "Stopped",
    }
}

fn parse_wait(text: Option<&str>) -> CliResult<Option<Duration>> {
    text.map(|text| {
        text.parse::<kedge_crds::HumanDuration>()
            .map(|duration| duration.duration())
            .map_err(|e| CliError::usage(format!("--wait {text}: {e}")))
    })
    .transpose()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(edges: &[(&str, &[&str])]) -> BTreeMap<String, Container> {
        edges
            .iter()
            .map(|(name, deps)| {
                let mut spec: kedge_crds::ContainerSpec = serde_json::from_value(
                    serde_json::json!({"image": "kedge-test/app:v1", "dependsOn": deps}),
                )
                .expect("a valid spec");
                spec.depends_on.sort_by(|a, b| a.name.cmp(&b.name));
                ((*name).to_owned(), Container::new(*name, spec))
            })
            .collect()
    }

    #[track_caller]
    fn check(all: &BTreeMap<String, Container>, start: &[&str], direction: Direction, expected: &[&str]) {
        let start = start.iter().map(|name| (*name).to_owned());
        assert_eq!(along(all, start, direction), expected);
    }

    #[test]
    fn actions_follow_the_dependency_path() {
        // db <- app <- web, cache <- app; other stands alone.
        let all = specs(&[
            ("db", &[]),
            ("cache", &[]),
            ("app", &["cache", "db"]),
            ("web", &["app"]),
            ("other", &[]),
        ]);
        check(&all, &["web"], Direction::Dependencies, &["cache", "db", "app", "web"]);
        check(&all, &["app"], Direction::Dependencies, &["cache", "db", "app"]);
        check(&all, &["db"], Direction::Dependencies, &["db"]);
        check(&all, &["db"], Direction::Dependents, &["web", "app", "db"]);
        check(&all, &["app"], Direction::Dependents, &["web", "app"]);
        check(&all, &["web", "other"], Direction::Dependents, &["other", "web"]);
        check(&all, &["missing"], Direction::Dependents, &[]);
    }

    #[test]
    fn replicas_of_a_set_are_not_stopped_one_by_one() {
        let mut all = specs(&[("db", &[]), ("web-0", &["db"]), ("web", &["db"])]);
        let labels = &mut all.get_mut("web-0").unwrap().metadata.labels;
        labels.insert(kedge_crds::container_set::SET_LABEL.into(), "web".into());
        labels.insert(kedge_crds::container_set::SET_REVISION_LABEL.into(), "abc".into());
        let path = along(&all, ["db".to_owned()], Direction::Dependents);
        let error = refuse_set_children(&all, &path).unwrap_err();
        assert!(error.message.contains("web-0 (ContainerSet web)"), "{}", error.message);
        // A spec merely named like a child, or labelled by hand with one label only, is no replica.
        all.get_mut("web-0").unwrap().metadata.labels.remove(kedge_crds::container_set::SET_REVISION_LABEL);
        assert!(refuse_set_children(&all, &path).is_ok());
    }

    #[test]
    fn a_network_namespace_or_a_link_is_a_dependency_too() {
        // probe joins web's network namespace and client links to web: stopping web must stop
        // both first, and starting either must start web first.
        let spec = |value: serde_json::Value| -> kedge_crds::ContainerSpec {
            serde_json::from_value(value).expect("a valid spec")
        };
        let all: BTreeMap<String, Container> = [
            ("web", spec(serde_json::json!({"image": "kedge-test/web:latest"}))),
            (
                "probe",
                spec(serde_json::json!({"image": "kedge-test/app:v1", "networkMode": "container:web"})),
            ),
            ("client", spec(serde_json::json!({"image": "kedge-test/app:v1", "links": ["web:www"]}))),
        ]
        .into_iter()
        .map(|(name, spec)| (name.to_owned(), Container::new(name, spec)))
        .collect();
        check(&all, &["web"], Direction::Dependents, &["client", "probe", "web"]);
        check(&all, &["probe"], Direction::Dependencies, &["web", "probe"]);
        check(&all, &["client"], Direction::Dependencies, &["web", "client"]);
    }
}
