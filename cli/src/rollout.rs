//! `kedge rollout status|history|undo`: a ContainerSet's rollouts, as kubectl's for a Deployment.
//!
//! The scheduler's leader keeps what these read in the set's status: the current revision and its
//! template, the revision being rolled out, a failed one, and the revisions replaced before
//! (`status.history`, the latest first). `undo` writes an earlier template back into the spec, and
//! the set controller rolls it out batch by batch like any other change.

use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};
use kedge_crds::{template_revision, ContainerSet, ContainerTemplate};

use crate::base::{bad_answer, connect, resource_path};
use crate::client::Client;
use crate::error::{CliError, CliResult, Exit};
use crate::readiness::{self, Awaited};
use crate::{objects, output, DryRun, GlobalArgs};

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until the rollout is done: every replica ready and up to date (a container: Ready and
    /// Synced). Exit 1 when the rollout failed, 6 at --timeout.
    #[command(after_help = "Examples:\n  kedge rollout status containerset web\n  \
kedge rollout status container db --timeout 2m")]
    Status(StatusArgs),
    /// List a set's revisions: the one being rolled out, the current one, a failed one, and up to ten
    /// replaced before, each with its image.
    #[command(after_help = "Example:\n  kedge rollout history containerset web")]
    History(NamedSet),
    /// Put an earlier revision's template back: the one before the current by default, or the current
    /// one when a rollout is under way or failed. Rolled out batch by batch like any change.
    #[command(after_help = "Examples:\n  kedge rollout undo containerset web\n  \
kedge rollout undo containerset web --to-revision 5d41402abc4b\n\n\
A set applied from Git (a GitSource) gets the repository's template back at the next sync:\n\
revert the commit instead.")]
    Undo(UndoArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RolloutKind {
    #[value(alias = "containersets", alias = "set", alias = "sets", alias = "cs")]
    Containerset,
    #[value(alias = "containers", alias = "c")]
    Container,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SetKind {
    #[value(alias = "containersets", alias = "set", alias = "sets", alias = "cs")]
    Containerset,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(value_enum)]
    kind: RolloutKind,
    name: String,
    /// How long to wait: `30s`, `5m`.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    timeout: kedge_crds::HumanDuration,
}

#[derive(Debug, Args)]
pub struct NamedSet {
    #[arg(value_enum)]
    kind: SetKind,
    name: String,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    #[command(flatten)]
    set: NamedSet,
    /// The revision to go back to (as `rollout history` lists it; a unique prefix is enough).
    #[arg(long, value_name = "REVISION")]
    to_revision: Option<String>,
}

pub async fn run(command: RolloutCommand, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let namespace = resolved.namespace.as_str();
    match command {
        RolloutCommand::Status(args) => status(&client, namespace, &args).await,
        RolloutCommand::History(args) => history(&client, namespace, &args.name).await,
        RolloutCommand::Undo(args) => {
            undo(&client, namespace, &args.set.name, args.to_revision.as_deref()).await
        }
    }
}

async fn status(client: &Client, namespace: &str, args: &StatusArgs) -> CliResult<Exit> {
    let (word, path) = match args.kind {
        RolloutKind::Containerset => ("containerset", resource_path::<ContainerSet>(namespace, &args.name)),
        RolloutKind::Container => {
            ("container", resource_path::<kedge_crds::Container>(namespace, &args.name))
        }
    };
    let object = client.get(&path).await?;
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
    let awaited =
        Awaited { word, path, namespace: namespace.to_owned(), name: args.name.clone(), generation };
    readiness::wait_all(client, &[awaited], args.timeout.duration()).await
}

async fn read_set(client: &Client, namespace: &str, name: &str) -> CliResult<ContainerSet> {
    let answer = client.get(&resource_path::<ContainerSet>(namespace, name)).await?;
    serde_json::from_value(answer).map_err(bad_answer)
}

/// One row of `rollout history`: REVISION IMAGE STATE SINCE.
fn row(revision: &str, template: &ContainerTemplate, state: &str, since: Option<&str>) -> Vec<String> {
    let since = since.map(|at| output::age(Some(at), Utc::now())).unwrap_or_else(|| "-".to_owned());
    vec![revision.to_owned(), template.spec.image.to_string(), state.to_owned(), since]
}

async fn history(client: &Client, namespace: &str, name: &str) -> CliResult<Exit> {
    let set = read_set(client, namespace, name).await?;
    let status = set.status.clone().unwrap_or_default();
    let wanted = template_revision(&set.spec.template);
    let mut rows = Vec::new();
    let current = status.current_revision.as_deref();
    if current != Some(wanted.as_str()) {
        let state = if status.failed_revision.as_deref() == Some(wanted.as_str()) {
            "failed"
        } else if status.rollout.as_ref().is_some_and(|rollout| rollout.paused.is_some()) {
            "paused"
        } else {
            "rolling out"
        };
        rows.push(row(&wanted, &set.spec.template, state, None));
    }
    if let (Some(revision), Some(template)) = (current, status.current_template.as_ref()) {
        rows.push(row(revision, template, "current", None));
    }
    for record in &status.history {
        rows.push(row(&record.revision, &record.template, "replaced", Some(&record.replaced_at)));
    }
    print!("{}", output::table(&["REVISION", "IMAGE", "STATE", "REPLACED"], &rows));
    Ok(Exit::Ok)
}

async fn undo(client: &Client, namespace: &str, name: &str, to: Option<&str>) -> CliResult<Exit> {
    let mut set = read_set(client, namespace, name).await?;
    let status = set.status.clone().unwrap_or_default();
    let wanted = template_revision(&set.spec.template);
    let current = status.current_revision.clone().zip(status.current_template.clone());
    let target: (String, ContainerTemplate) = match to {
        Some(prefix) => {
            let known = current
                .iter()
                .cloned()
                .chain(status.history.iter().map(|r| (r.revision.clone(), r.template.clone())));
            let matching: Vec<_> = known.filter(|(revision, _)| revision.starts_with(prefix)).collect();
            match matching.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(CliError::new(
                        Exit::NotFound,
                        format!("containerset {namespace}/{name} has no revision {prefix}"),
                    )
                    .hint(format!("list them with `kedge rollout history containerset {name}`")))
                }
                _ => return Err(CliError::usage(format!("revision {prefix} is ambiguous: give more of it"))),
            }
        }
        // A rollout under way, paused or failed: back to what ran before it.
        None => match current {
            Some((revision, template)) if revision != wanted => (revision, template),
            _ => match status.history.first() {
                Some(record) => (record.revision.clone(), record.template.clone()),
                None => {
                    return Err(CliError::usage(format!(
                        "containerset {namespace}/{name} has no earlier revision to go back to"
                    )))
                }
            },
        },
    };
    let (revision, template) = target;
    if revision == wanted {
        println!("containerset/{name} already at revision {revision} (skipped)");
        return Ok(Exit::Ok);
    }
    set.spec.template = template;
    // The read's resourceVersion stays: a set changed since is a conflict (exit 4), not overwritten.
    set.status = None;
    objects::apply_one(client, &set, DryRun::None).await?;
    println!("containerset/{name} rolled back to revision {revision}");
    Ok(Exit::Ok)
}
