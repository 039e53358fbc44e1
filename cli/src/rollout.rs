//! `kedge rollout status|history|undo`: a ContainerSet's rollouts, as kubectl's for a Deployment,
//! and a single Container's images.
//!
//! The scheduler's leader keeps what these read in the set's status: the current revision and its
//! template, the revision being rolled out, a failed one, and the revisions replaced before
//! (`status.history`, the latest first). `undo` writes an earlier template back into the spec, and
//! the set controller rolls it out batch by batch like any other change.
//!
//! A Container's agent keeps the images it ran in `status.imageHistory` (one record per generation
//! or image ID synced, the latest first); its revisions are those generations. `undo` writes the
//! chosen record's image back into the spec, compare-and-swap on the spec's resourceVersion, and
//! the agent recreates the container like after any apply.

use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};
use kedge_crds::{template_revision, Container, ContainerSet, ContainerTemplate, ImageReference};

use crate::base::{connect, resource_path};
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
    /// replaced before, each with its image. For a container: the images it ran, by generation.
    #[command(after_help = "Examples:\n  kedge rollout history containerset web\n  \
kedge rollout history container db")]
    History(Named),
    /// Put an earlier revision's template back: the one before the current by default, or the current
    /// one when a rollout is under way or failed. Rolled out batch by batch like any change. For a
    /// container: its previous image (or the image of generation --to-revision N) back into its spec.
    #[command(after_help = "Examples:\n  kedge rollout undo containerset web\n  \
kedge rollout undo containerset web --to-revision 5d41402abc4b\n  \
kedge rollout undo container db\n  \
kedge rollout undo container db --to-revision 3\n\n\
A spec changed by someone else since it was read is not overwritten (exit 4): run it again.\n\
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
pub struct Named {
    #[arg(value_enum)]
    kind: RolloutKind,
    name: String,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    #[command(flatten)]
    target: Named,
    /// The revision to go back to (as `rollout history` lists it; for a set a unique prefix is
    /// enough, for a container it is a generation).
    #[arg(long, value_name = "REVISION")]
    to_revision: Option<String>,
}

pub async fn run(command: RolloutCommand, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let namespace = resolved.namespace.as_str();
    match command {
        RolloutCommand::Status(args) => status(&client, namespace, &args).await,
        RolloutCommand::History(Named { kind: RolloutKind::Containerset, name }) => {
            history(&client, namespace, &name).await
        }
        RolloutCommand::History(Named { kind: RolloutKind::Container, name }) => {
            container_history(&client, namespace, &name).await
        }
        RolloutCommand::Undo(UndoArgs {
            target: Named { kind: RolloutKind::Containerset, name },
            to_revision,
        }) => undo(&client, namespace, &name, to_revision.as_deref()).await,
        RolloutCommand::Undo(UndoArgs {
            target: Named { kind: RolloutKind::Container, name },
            to_revision,
        }) => {
            let to = match to_revision.as_deref().map(str::parse::<i64>).transpose() {
                Ok(to) => to,
                Err(_) => {
                    return Err(CliError::usage(format!(
                        "--to-revision {}: a container's revisions are generations (numbers), as `kedge rollout history container {name}` lists them",
                        to_revision.unwrap_or_default()
                    )))
                }
            };
            undo_container(&client, namespace, &name, to).await
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
    crate::error::from_server(answer)
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

async fn read_container(client: &Client, namespace: &str, name: &str) -> CliResult<Container> {
    let answer = client.get(&resource_path::<Container>(namespace, name)).await?;
    crate::error::from_server(answer)
}

/// `rollout history container NAME`: GENERATION IMAGE IMAGE-ID STATE APPLIED, the latest first; a
/// generation applied but not (yet) running comes first, as `rolling out` or `rolled back`.
async fn container_history(client: &Client, namespace: &str, name: &str) -> CliResult<Exit> {
    let container = read_container(client, namespace, name).await?;
    let status = container.status.clone().unwrap_or_default();
    let generation = container.metadata.generation.unwrap_or_default();
    let mut rows = Vec::new();
    if status.image_history.first().is_none_or(|head| head.generation != generation) {
        let held = status.rolled_back.as_ref().is_some_and(|held| held.generation == Some(generation));
        let state = if held { "rolled back" } else { "rolling out" };
        rows.push(vec![
            generation.to_string(),
            container.spec.image.to_string(),
            "-".to_owned(),
            state.to_owned(),
            "-".to_owned(),
        ]);
    }
    for (at, record) in status.image_history.iter().enumerate() {
        let state = if at == 0 { "current" } else { "replaced" };
        rows.push(vec![
            record.generation.to_string(),
            record.image.clone(),
            short_id(&record.image_id).to_owned(),
            state.to_owned(),
            output::age(Some(&record.applied_at), Utc::now()),
        ]);
    }
    print!("{}", output::table(&["REVISION", "IMAGE", "IMAGE ID", "STATE", "APPLIED"], &rows));
    Ok(Exit::Ok)
}

fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// What `rollout undo container` puts back: the record chosen and the image to write into the spec.
#[derive(Debug, PartialEq)]
pub(crate) enum Undo {
    /// Write `image` (generation `revision` ran it).
    To { revision: i64, image: ImageReference },
    /// The spec already names the record's image, and it runs.
    Already { revision: i64 },
}

/// Chooses what to go back to, from the container's image history: generation `to`'s record, or by
/// default the image that ran before the current one (when the spec's generation was not applied,
/// a rollout under way or rolled back, the image that ran last). A record whose tag is the spec's
/// own but whose image differs (the tag moved) is named by its registry digest when known.
pub(crate) fn choose_undo(container: &Container, to: Option<i64>) -> CliResult<Undo> {
    let (namespace, name) = (&container.metadata.namespace, &container.metadata.name);
    if let Some(set) = container.metadata.labels.get(kedge_crds::container_set::SET_LABEL) {
        // The set's leader writes its children: an undo here would be put back at its next pass.
        return Err(CliError::usage(format!("container {namespace}/{name} belongs to containerset {set}"))
            .hint(format!("roll the set back: `kedge rollout undo containerset {set}`")));
    }
    let status = container.status.clone().unwrap_or_default();
    let history = &status.image_history;
    let hint = || format!("list them with `kedge rollout history container {name}`");
    let record = match to {
        Some(revision) => history.iter().find(|record| record.generation == revision).ok_or_else(|| {
            CliError::new(Exit::NotFound, format!("container {namespace}/{name} has no revision {revision}"))
                .hint(hint())
        })?,
        None => {
            let generation = container.metadata.generation.unwrap_or_default();
            let found = match history.first() {
                Some(head) if head.generation == generation => {
                    history.iter().skip(1).find(|record| record.image_id != head.image_id)
                }
                head => head,
            };
            found.ok_or_else(|| {
                CliError::usage(format!("container {namespace}/{name} has no earlier image to go back to"))
                    .hint(hint())
            })?
        }
    };
    let revision = record.generation;
    let spec_image = container.spec.image.to_string();
    if record.image != spec_image {
        let image = record.image.parse::<ImageReference>().map_err(|why| {
            CliError::usage(format!("revision {revision}'s image {:?} does not read: {why}", record.image))
        })?;
        return Ok(Undo::To { revision, image });
    }
    if status.image_id.as_deref() == Some(record.image_id.as_str()) {
        return Ok(Undo::Already { revision });
    }
    // The same tag, another image: only a digest names the old one.
    match &record.image_digest {
        Some(digest) => {
            let by_digest = format!("{}@{digest}", container.spec.image.name());
            let image = by_digest.parse::<ImageReference>().map_err(|why| {
                CliError::usage(format!("revision {revision}'s image {by_digest:?} does not read: {why}"))
            })?;
            Ok(Undo::To { revision, image })
        }
        None => Err(CliError::usage(format!(
            "revision {revision} ran {} as image {}, which that tag no longer names, and no registry digest of it is known",
            record.image,
            short_id(&record.image_id)
        ))
        .hint("tag the old image again (docker tag) and apply the spec with that tag")),
    }
}

/// Writes `image` into `container`'s spec as read: the read's resourceVersion goes with it, so a
/// spec changed since is a conflict (exit 4), never overwritten.
pub(crate) async fn write_image(
    client: &Client,
    mut container: Container,
    image: ImageReference,
) -> CliResult<()> {
    container.spec.image = image;
    container.status = None;
    objects::apply_one(client, &container, DryRun::None).await?;
    Ok(())
}

async fn undo_container(client: &Client, namespace: &str, name: &str, to: Option<i64>) -> CliResult<Exit> {
    let container = read_container(client, namespace, name).await?;
    match choose_undo(&container, to)? {
        Undo::Already { revision } => {
            println!("container/{name} already runs revision {revision}'s image (skipped)");
        }
        Undo::To { revision, image } => {
            let shown = image.to_string();
            write_image(client, container, image).await?;
            println!("container/{name} rolled back to revision {revision}'s image {shown}");
        }
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kedge_crds::{AppliedImage, ContainerStatus};

    fn container(image: &str, generation: i64, runs: &str, history: &[(i64, &str, &str)]) -> Container {
        let mut container: Container = serde_json::from_value(serde_json::json!({
            "apiVersion": "kedge.io/v1",
            "kind": "Container",
            "metadata": {"name": "db", "namespace": "default", "generation": generation},
            "spec": {"image": image},
        }))
        .unwrap();
        container.status = Some(ContainerStatus {
            image_id: Some(runs.to_owned()),
            image_history: history
                .iter()
                .map(|(generation, image, id)| AppliedImage {
                    generation: *generation,
                    image: (*image).to_owned(),
                    image_id: (*id).to_owned(),
                    image_digest: None,
                    applied_at: "2026-12-07T06:00:00Z".to_owned(),
                })
                .collect(),
            ..ContainerStatus::default()
        });
        container
    }

    fn to(revision: i64, image: &str) -> Undo {
        Undo::To { revision, image: image.parse().unwrap() }
    }

    fn exit_of(result: CliResult<Undo>) -> Exit {
        result.expect_err("an error").exit
    }

    #[test]
    fn undo_goes_back_to_the_image_before_the_current_one() {
        let history = [(3, "app:v2", "sha256:2"), (2, "app:v1", "sha256:1"), (1, "app:v1", "sha256:1")];
        let running_v2 = container("app:v2", 3, "sha256:2", &history);
        assert_eq!(choose_undo(&running_v2, None).unwrap(), to(2, "app:v1"));
        assert_eq!(choose_undo(&running_v2, Some(1)).unwrap(), to(1, "app:v1"));
        assert_eq!(choose_undo(&running_v2, Some(3)).unwrap(), Undo::Already { revision: 3 });
        assert_eq!(exit_of(choose_undo(&running_v2, Some(9))), Exit::NotFound);

        // Generation 4 (app:v3) was applied but never ran (rolled back or still rolling out): back
        // to what ran last.
        let pending = container("app:v3", 4, "sha256:2", &history);
        assert_eq!(choose_undo(&pending, None).unwrap(), to(3, "app:v2"));

        // A set's child is the set's to roll back.
        let mut child = running_v2.clone();
        child.metadata.labels.insert(kedge_crds::container_set::SET_LABEL.to_owned(), "web".to_owned());
        let refused = choose_undo(&child, None).expect_err("refused");
        assert_eq!(refused.exit, Exit::Usage);
        assert!(refused.hint.is_some_and(|hint| hint.contains("rollout undo containerset web")));

        // Only one image ever ran: nothing to go back to.
        let only = container("app:v1", 2, "sha256:1", &history[1..]);
        assert_eq!(exit_of(choose_undo(&only, None)), Exit::Usage);
        assert_eq!(exit_of(choose_undo(&container("app:v1", 1, "", &[]), None)), Exit::Usage);
    }

    #[test]
    fn a_moved_tag_is_named_by_its_digest_or_refused() {
        let history = [(2, "app:latest", "sha256:new"), (1, "app:latest", "sha256:old")];
        let mut moved = container("app:latest", 2, "sha256:new", &history);
        assert_eq!(exit_of(choose_undo(&moved, None)), Exit::Usage, "no digest: nothing names it");
        let digest = format!("sha256:{}", "a".repeat(64));
        moved.status.as_mut().unwrap().image_history[1].image_digest = Some(digest.clone());
        assert_eq!(choose_undo(&moved, None).unwrap(), to(1, &format!("app@{digest}")));
    }

    /// The write carries the read's resourceVersion: a spec changed in between is a conflict (exit
    /// 4) and stays as the other writer left it. Against a real API server over an embedded store.
    #[tokio::test]
    async fn undo_over_a_concurrent_change_is_a_conflict_and_overwrites_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (resolved, _stop) = crate::tests::server(dir.path()).await;
        let client = Client::new(&resolved).unwrap();
        let declared = |image: &str| -> Container {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "kedge.io/v1",
                "kind": "Container",
                "metadata": {"name": "db", "namespace": "toys"},
                "spec": {"image": image},
            }))
            .unwrap()
        };
        objects::apply_one(&client, &declared("app:v1"), DryRun::None).await.unwrap();
        let read = read_container(&client, "toys", "db").await.unwrap();
        // Someone else applies meanwhile.
        objects::apply_one(&client, &declared("app:v3"), DryRun::None).await.unwrap();
        let error = write_image(&client, read, "app:v0".parse().unwrap()).await.expect_err("a conflict");
        assert_eq!(error.exit, Exit::Conflict, "{error:?}");
        let now = read_container(&client, "toys", "db").await.unwrap();
        assert_eq!(now.spec.image.to_string(), "app:v3", "the other writer's spec stays");

        // Read again, it goes through.
        write_image(&client, now, "app:v0".parse().unwrap()).await.unwrap();
        let after = read_container(&client, "toys", "db").await.unwrap();
        assert_eq!(after.spec.image.to_string(), "app:v0");
        assert_eq!(after.metadata.generation, Some(3));
    }
}
