//! `kedge check [--pull] [--autoupdate] [NAME]`: the container updater, straight against the Docker
//! Engine (no agent, no store), for any container. Without NAME, a report of every running
//! container (`--registry` also asks the registries, `-o json`), exit 1 when any has an update.
//!
//! A container is current when the image ID it runs is the one its tag names now in the local image
//! store. Only the same tag counts: `mariadb:10` is compared with `mariadb:10`, never with a newer tag.
//! Build time and pull time do not matter, only the ID: a rebuilt or re-pulled tag that names another
//! image is an update, even an older one.

use std::time::Duration;

use clap::{Args, ValueEnum};
use kedge_controller::docker::{labels, ContainerFilter, DockerClient};
use kedge_controller::executor::RecreateStrategy;
use kedge_controller::registry::RegistryClient;
use kedge_crds::{ImageReference, TagPolicy, TagSelector};
use serde::Serialize;

use crate::error::{CliError, CliResult, Exit};
use crate::handoff::{self, HandoffOptions};
use crate::recreate::{connect, recreate_any, report_line, short_id, ProgressPrinter};
use crate::GlobalArgs;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Pull the container's tag first (progress on stderr), then decide.
    #[arg(long)]
    pub pull: bool,
    /// When an update is available, recreate the container on the new image with the same options
    /// (safe recreate, rolled back on failure); exit 0 when that succeeded.
    #[arg(long)]
    pub autoupdate: bool,
    /// With --autoupdate: recreate straight against the engine even when kedge manages the
    /// container. Safe only while no agent runs for it: by default its agent does the recreate.
    #[arg(long)]
    pub direct: bool,
    /// Without NAME: also ask each image's registry (a HEAD on the manifest, nothing pulled) whether
    /// its tag moved, and list its tags for the newer tag a kedge container's `updatePolicy.tags`
    /// allows. Credentials: the Docker config.json that KEDGE_REGISTRY_CONFIG names.
    #[arg(long)]
    pub registry: bool,
    /// Without NAME: `table` (default), `json`, or `name` (one container name a line, nothing else).
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: CheckOutput,
    /// The container to check. Without it: a report of every running container (its image, whether
    /// an update is available, the newer tag under its tag policy); exit 1 when any has an update.
    pub name: Option<String>,
}

/// How the report without NAME is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckOutput {
    Table,
    Json,
    Name,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    name: String,
    image: String,
    image_id: String,
    /// `namespace/name` of the spec, for a container kedge manages.
    #[serde(skip_serializing_if = "Option::is_none")]
    spec: Option<String>,
    /// The tag names another local image than the container runs.
    local_update: bool,
    /// The registry's digest for the tag is not the one the container runs (with --registry).
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_update: Option<bool>,
    /// A newer tag the spec's tag policy allows (with --registry).
    #[serde(skip_serializing_if = "Option::is_none")]
    newer_tag: Option<String>,
    /// What could not be asked (registry unreachable, no such tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    update_available: bool,
}

/// Lists the running containers, or checks (and updates) one. The exit code is the answer.
pub async fn run(args: CheckArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let Some(name) = args.name else {
        if args.pull || args.autoupdate {
            return Err(CliError::usage("--pull and --autoupdate need a container NAME")
                .hint("`kedge check` reports on the running containers"));
        }
        // Only the registry report reads the credentials file (KEDGE_REGISTRY_CONFIG).
        let docker = connect(args.registry && args.output != CheckOutput::Name).await?;
        let names = running_containers(&docker, own_container_id_prefix().as_deref()).await?;
        if args.output == CheckOutput::Name {
            for name in names {
                println!("{name}");
            }
            return Ok(Exit::Ok);
        }
        return report(&docker, names, args.registry, args.output, global).await;
    };
    let docker = connect(args.pull || args.autoupdate).await?;
    let container = docker
        .inspect_container(&name)
        .await
        .map_err(|e| engine_error(&format!("cannot inspect container {name}"), &e))?
        .ok_or_else(|| {
            CliError::new(Exit::NotFound, format!("no container {name:?}"))
                .hint("`kedge check` lists the running containers")
        })?;
    let reference = container.image.clone();
    if is_image_id(&reference, &container.image_id) {
        return Err(CliError::usage(format!(
            "container {name} was created from the image ID {reference}, not from a tag: there is no tag to follow"
        ))
        .hint("run it from a tag (`docker run IMAGE:TAG`) to have updates detected"));
    }
    if args.pull {
        eprintln!("pulling {reference}");
        let mut printer = ProgressPrinter::default();
        docker
            .pull(&reference, |line| printer.print_pull(line))
            .await
            .map_err(|e| engine_error(&format!("cannot pull {reference}"), &e))?;
    }
    let image = docker
        .inspect_image(&reference)
        .await
        .map_err(|e| engine_error(&format!("cannot inspect image {reference}"), &e))?
        .ok_or_else(|| {
            CliError::new(
                Exit::NotFound,
                format!("the tag {reference} of container {name} names no local image"),
            )
            .hint(format!("`kedge check --pull {name}` fetches it from its registry"))
        })?;
    if image.id == container.image_id {
        eprintln!("{name} is up to date: it runs {reference} ({})", short_id(&image.id));
        return Ok(Exit::Ok);
    }
    eprintln!(
        "update available for {name}: {reference} is now {}, the container runs {}",
        short_id(&image.id),
        short_id(&container.image_id)
    );
    if !args.autoupdate {
        return Ok(Exit::Changes);
    }
    if own_container_id_prefix().is_some_and(|prefix| container.id.starts_with(&prefix)) {
        return Err(CliError::usage(format!(
            "{name} is the container kedge runs in: it cannot replace itself"
        ))
        .hint("run `kedge check --autoupdate` for it from another container or from the host"));
    }
    if let Some(key) = labels::key(&container.labels).filter(|_| !args.direct) {
        // One writer per container: the agent recreates (its tag was pulled above when asked).
        let line = handoff::recreate(global, key, &name, &HandoffOptions::default()).await?;
        eprintln!("{line}");
        return Ok(Exit::Ok);
    }
    // The image was pulled above when asked; the recreate only has to use what the tag names now.
    let strategy = RecreateStrategy { pull: false, ..RecreateStrategy::default() };
    let report = recreate_any(docker, &name, &strategy).await?;
    eprintln!("{}", report_line(&report));
    Ok(Exit::Ok)
}

/// The report of every running container: its image, whether an update is available, the newer
/// tag under its tag policy. Exit 1 when any update is available (the CI mode).
async fn report(
    docker: &DockerClient,
    names: Vec<String>,
    ask_registry: bool,
    output: CheckOutput,
    global: &GlobalArgs,
) -> CliResult<Exit> {
    let registry = ask_registry.then(|| RegistryClient::new(docker.registry_auth()));
    let mut specs = SpecLookup::new(global);
    let mut rows = Vec::new();
    for name in names {
        let Some(container) = docker
            .inspect_container(&name)
            .await
            .map_err(|e| engine_error(&format!("cannot inspect container {name}"), &e))?
        else {
            continue; // gone since it was listed
        };
        let reference = container.image.clone();
        let mut row = Row {
            name: name.clone(),
            image: reference.clone(),
            image_id: container.image_id.clone(),
            spec: labels::key(&container.labels).map(str::to_owned),
            local_update: false,
            registry_update: None,
            newer_tag: None,
            error: None,
            update_available: false,
        };
        if is_image_id(&reference, &container.image_id) {
            row.error = Some("created from an image ID: no tag to follow".to_owned());
            rows.push(row);
            continue;
        }
        let local = docker.inspect_image(&reference).await.ok().flatten();
        row.local_update = local.as_ref().is_some_and(|image| image.id != container.image_id);
        if let Some(registry) = &registry {
            let running_digests = match &local {
                Some(image) if image.id == container.image_id => image.repo_digests.clone(),
                _ => docker
                    .inspect_image(&container.image_id)
                    .await
                    .ok()
                    .flatten()
                    .map(|image| image.repo_digests)
                    .unwrap_or_default(),
            };
            match reference.parse::<ImageReference>() {
                Err(error) => row.error = Some(error),
                Ok(parsed) => {
                    match registry.digest(&parsed, Duration::from_secs(60)).await {
                        Ok(digest) => {
                            let runs = running_digests
                                .iter()
                                .any(|running| running.rsplit_once('@').is_some_and(|(_, d)| d == digest));
                            row.registry_update = Some(!runs);
                        }
                        Err(error) => row.error = Some(error.to_string()),
                    }
                    let policy = match &row.spec {
                        Some(key) => specs.tag_policy(key).await,
                        None => None,
                    };
                    if let Some(policy) = policy {
                        match TagSelector::compile(&policy) {
                            Ok(selector) => match registry.tags(&parsed, Duration::from_secs(60)).await {
                                Ok(tags) => {
                                    row.newer_tag = selector
                                        .select(parsed.tag_or_default(), tags.iter().map(String::as_str));
                                }
                                Err(error) => row.error = Some(error.to_string()),
                            },
                            Err(error) => {
                                row.error = Some(format!("updatePolicy.{}: {}", error.field, error.problem))
                            }
                        }
                    }
                }
            }
        }
        row.update_available =
            row.local_update || row.registry_update == Some(true) || row.newer_tag.is_some();
        rows.push(row);
    }
    match output {
        CheckOutput::Json => {
            println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default());
        }
        CheckOutput::Table | CheckOutput::Name => print_table(&rows, ask_registry),
    }
    Ok(if rows.iter().any(|row| row.update_available) { Exit::Changes } else { Exit::Ok })
}

fn print_table(rows: &[Row], ask_registry: bool) {
    let mut lines =
        vec![["NAME".to_owned(), "IMAGE".to_owned(), "UPDATE".to_owned(), "NEWER TAG".to_owned()]];
    for row in rows {
        let update = match (row.local_update, row.registry_update, &row.error) {
            (true, _, _) => "yes (local)".to_owned(),
            (_, Some(true), _) => "yes (registry)".to_owned(),
            (_, _, Some(_)) => "unknown".to_owned(),
            _ if row.newer_tag.is_some() => "newer tag".to_owned(),
            _ if ask_registry => "no".to_owned(),
            _ => "no (local)".to_owned(),
        };
        lines.push([
            row.name.clone(),
            row.image.clone(),
            update,
            row.newer_tag.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    let widths: Vec<usize> =
        (0..4).map(|column| lines.iter().map(|line| line[column].len()).max().unwrap_or(0)).collect();
    for line in &lines {
        println!(
            "{:<w0$}   {:<w1$}   {:<w2$}   {}",
            line[0],
            line[1],
            line[2],
            line[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    for row in rows {
        if let Some(error) = &row.error {
            eprintln!("{}: {error}", row.name);
        }
    }
}

/// The tag policies of kedge's specs, read from the server once per spec; a server that cannot be
/// reached is said once, and its containers are checked on their own tag only.
struct SpecLookup<'a> {
    global: &'a GlobalArgs,
    unreachable: bool,
}

impl<'a> SpecLookup<'a> {
    fn new(global: &'a GlobalArgs) -> SpecLookup<'a> {
        SpecLookup { global, unreachable: false }
    }

    async fn tag_policy(&mut self, key: &str) -> Option<TagPolicy> {
        if self.unreachable {
            return None;
        }
        let (namespace, name) = key.split_once('/')?;
        let client = match crate::base::connect(self.global) {
            Ok((_, client)) => client,
            Err(error) => {
                self.unreachable = true;
                eprintln!(
                    "warning: no server for the specs' tag policies ({}); same tag only",
                    error.message
                );
                return None;
            }
        };
        let path = format!(
            "/api/v1/namespaces/{}/containers/{}",
            crate::client::encode(namespace),
            crate::client::encode(name)
        );
        match client.get(&path).await {
            Ok(object) => object
                .pointer("/spec/updatePolicy/tags")
                .and_then(|tags| serde_json::from_value(tags.clone()).ok()),
            Err(error) => {
                self.unreachable = true;
                eprintln!("warning: cannot read spec {key} ({}); same tag only", error.message);
                None
            }
        }
    }
}

/// The names of the running containers, sorted, leaving out the one whose ID starts with
/// `own_id_prefix` (kedge's own container).
async fn running_containers(docker: &DockerClient, own_id_prefix: Option<&str>) -> CliResult<Vec<String>> {
    let containers = docker
        .list_containers(&ContainerFilter::default())
        .await
        .map_err(|e| engine_error("cannot list containers", &e))?;
    let mut names: Vec<String> = containers
        .into_iter()
        .filter(|c| c.state == "running")
        .filter(|c| !own_id_prefix.is_some_and(|prefix| c.id.starts_with(prefix)))
        .map(|c| c.name)
        .collect();
    names.sort();
    Ok(names)
}

/// When kedge runs in a container, Docker makes the container's short ID its hostname (unless
/// `--hostname` says otherwise): that prefix names kedge's own container. `None` when the hostname
/// cannot be a container ID (a host's name, or no hostname to read).
fn own_container_id_prefix() -> Option<String> {
    let hostname = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())?;
    container_id_prefix(hostname.trim())
}

/// A hostname is taken for a container ID prefix only when it looks like one (12 to 64 lowercase
/// hexadecimal digits), so that a host named `cafe` does not hide containers whose ID starts so.
fn container_id_prefix(hostname: &str) -> Option<String> {
    let looks_like_id = (12..=64).contains(&hostname.len())
        && hostname.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    looks_like_id.then(|| hostname.to_string())
}

/// True when the container was created from an image ID (`sha256:...` or a hex prefix of it) rather
/// than a reference with a tag.
fn is_image_id(reference: &str, image_id: &str) -> bool {
    let id = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    let reference = reference.strip_prefix("sha256:").unwrap_or(reference);
    reference.len() >= 12 && id.starts_with(reference)
}

fn engine_error(what: &str, error: &dyn std::error::Error) -> CliError {
    CliError::new(Exit::Server, format!("{what}: {}", kedge_controller::error_chain(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_taken_for_container_ids() {
        for (hostname, expected) in [
            ("3f4e5d6c7b8a", true),
            ("3f4e5d6c7b8a9f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766", true),
            ("cafe", false),
            ("debian", false),
            ("3F4E5D6C7B8A", false),
            ("", false),
        ] {
            assert_eq!(container_id_prefix(hostname).is_some(), expected, "{hostname:?}");
        }
    }

    #[test]
    fn image_ids_told_from_tags() {
        let id = "sha256:3f4e5d6c7b8a9f0e1d2c3b4a5968776655443322";
        for (reference, expected) in [
            ("sha256:3f4e5d6c7b8a9f0e1d2c3b4a5968776655443322", true),
            ("3f4e5d6c7b8a", true),
            ("3f4e5d", false),
            ("nginx:1.25", false),
            ("registry:5000/web", false),
        ] {
            assert_eq!(is_image_id(reference, id), expected, "{reference}");
        }
    }
}
