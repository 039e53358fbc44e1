//! `kedge check [--pull] [--autoupdate] [NAME]`: the container updater, straight against the Docker
//! Engine (no agent, no store), for any container.
//!
//! A container is current when the image ID it runs is the one its tag names now in the local image
//! store. Only the same tag counts: `mariadb:10` is compared with `mariadb:10`, never with a newer tag.
//! Build time and pull time do not matter, only the ID: a rebuilt or re-pulled tag that names another
//! image is an update, even an older one.

use clap::Args;
use kedge_controller::docker::{labels, ContainerFilter, DockerClient};
use kedge_controller::executor::RecreateStrategy;

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
    /// The container to check; without it, the running containers are listed, one name a line.
    pub name: Option<String>,
}

/// Lists the running containers, or checks (and updates) one. The exit code is the answer.
pub async fn run(args: CheckArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let Some(name) = args.name else {
        if args.pull || args.autoupdate {
            return Err(CliError::usage("--pull and --autoupdate need a container NAME")
                .hint("`kedge check` lists the running containers"));
        }
        let docker = connect(false).await?;
        for name in running_containers(&docker, own_container_id_prefix().as_deref()).await? {
            println!("{name}");
        }
        return Ok(Exit::Ok);
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
