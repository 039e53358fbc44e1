//! `kedge run NAME --script PATH`: docker-map's `run_script`. A one-off container made from a spec's
//! configuration, on the engine of DOCKER_HOST, after the spec's dependencies run.
//!
//! The container is not managed: it carries none of kedge's ownership labels, so no agent ever
//! adopts, repairs or removes it, and it publishes no ports and takes no network alias or static
//! address (those belong to the spec's own container). Its name is fixed (`NAME-script` unless
//! `--container-name`), so a run left behind by a timeout is found again; it is never clobbered
//! unless `--replace` says so, and a kedge-managed container never is.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use kedge_controller::docker::{
    labels, DockerClient, DockerError, LogStream, Mount, MountSource, RemoveOptions,
};
use kedge_controller::mapping::{container_config, RESTARTED_AT_LABEL};
use kedge_crds::{Container, RunState};

use crate::base::{connect, object_path};
use crate::error::{CliError, CliResult, Exit};
use crate::lifecycle::{self, Direction, Goal, RunArgs};
use crate::GlobalArgs;

/// The placeholder in ARGS for the script's path inside the container.
const SCRIPT_PATH_PLACEHOLDER: &str = "{script_path}";
/// A label on one-off containers naming the spec they were made from (not an ownership label).
pub const RUN_OF_LABEL: &str = "io.kedge.run-of";

pub async fn run(args: RunArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let timeout = duration("--timeout", &args.timeout)?;
    let dependency_timeout = duration("--dependency-timeout", &args.dependency_timeout)?;
    let (resolved, client) = connect(global)?;
    let ns = resolved.namespace.clone();
    let spec: Container = crate::error::from_server(client.get(&object_path(&ns, &args.name)).await?)?;
    refuse_secret_env(&spec)?;

    // Dependencies first, each in its dependsOn condition (their agents start them in order).
    let all = lifecycle::list(&client, &ns).await?;
    let dependencies: Vec<String> = spec.spec.dependencies().into_iter().map(|d| d.name).collect();
    let dependencies = lifecycle::along(&all, dependencies, Direction::Dependencies);
    for name in &dependencies {
        // Progress on stderr: stdout is the script's.
        eprintln!("{}", lifecycle::set_run_state(&client, &ns, name, RunState::Running).await?);
    }
    lifecycle::wait_for(&client, &ns, &dependencies, Goal::Ready, dependency_timeout).await?;

    let mount =
        args.script.as_deref().map(|path| script_mount(path, &args.container_script_dir)).transpose()?;
    let level = namespace_level(&client, &ns, args.policy_level).await;
    check_policy(&spec, mount.as_ref().map(|(mount, _)| mount), level)?;
    let name = args.container_name.clone().unwrap_or_else(|| format!("{}-script", args.name));
    let mut config = container_config(&spec);
    config.name = name.clone();
    for key in labels::ownership("", 0, "").keys() {
        config.labels.remove(key);
    }
    config.labels.remove(RESTARTED_AT_LABEL);
    config.labels.insert(RUN_OF_LABEL.to_owned(), spec.key());
    config.restart_policy = None;
    config.port_bindings.clear();
    config.healthcheck = None;
    for network in &mut config.networks {
        network.aliases.clear();
        network.ipv4_address = None;
    }
    let more_networks = config.networks.split_off(config.networks.len().min(1));
    if let Some(entrypoint) = &args.entrypoint {
        config.entrypoint = Some(vec![entrypoint.clone()]);
        // A new entrypoint with no ARGS runs alone, not with the spec's command as arguments.
        config.cmd = Some(Vec::new());
    }
    if !args.args.is_empty() {
        let inside = mount.as_ref().map_or(String::new(), |(_, inside)| inside.clone());
        config.cmd =
            Some(args.args.iter().map(|arg| arg.replace(SCRIPT_PATH_PLACEHOLDER, &inside)).collect());
    }
    if let Some((mount, _)) = mount {
        config.mounts.push(mount);
    }

    let docker = DockerClient::connect().await.map_err(|error| {
        CliError::new(Exit::Server, format!("cannot reach the Docker Engine: {error}"))
            .hint("run on a host of the spec's, or set DOCKER_HOST to its engine")
    })?;
    let label = name.as_str();
    let engine = |step: &'static str| {
        move |error: DockerError| CliError::new(Exit::Server, format!("{step} of {label:?} failed: {error}"))
    };
    if let Some(existing) = docker.inspect_container(&config.name).await.map_err(engine("inspect"))? {
        if labels::is_managed(&existing.labels) || !args.replace {
            return Err(CliError::new(
                Exit::Conflict,
                format!("a container named {} exists ({})", config.name, short(&existing.id)),
            )
            .hint("--replace removes it first (never a kedge-managed one), or pick --container-name"));
        }
        let options = RemoveOptions { force: true, anonymous_volumes: true };
        docker.remove_container(&existing.id, options).await.map_err(engine("remove"))?;
    }
    let id = docker.create_container(&config).await.map_err(engine("create"))?;
    for network in &more_networks {
        docker.connect_network(&id, network).await.map_err(engine("connect"))?;
    }
    docker.start_container(&id).await.map_err(engine("start"))?;
    let code = match docker.wait_for_exit(&id, timeout).await {
        Ok(code) => code,
        Err(DockerError::Timeout { .. }) => {
            println!("{id}");
            return Err(CliError::new(
                Exit::Timeout,
                format!("{name} did not end within {}; container {} left running", args.timeout, short(&id)),
            )
            .hint(format!("docker logs -f {id}; remove it with docker rm -f {id}")));
        }
        Err(error) => return Err(engine("wait")(error)),
    };
    let lines = docker.logs(&id, usize::MAX).await.map_err(engine("logs"))?;
    {
        let mut stdout = std::io::stdout().lock();
        let mut stderr = std::io::stderr().lock();
        for line in lines {
            let _ = match line.stream {
                LogStream::Stdout => stdout.write_all(line.text.as_bytes()),
                LogStream::Stderr => stderr.write_all(line.text.as_bytes()),
            };
        }
        let _ = stdout.flush();
    }
    if args.keep {
        eprintln!("container {name} ({}) kept; exit code {code}", short(&id));
    } else {
        let options = RemoveOptions { force: true, anonymous_volumes: true };
        docker.remove_container(&id, options).await.map_err(engine("remove"))?;
    }
    if code != 0 {
        eprintln!("exit code {code}");
        let _ = std::io::stderr().flush();
        // As `docker run`: the script's own exit code.
        std::process::exit(i32::try_from(code).unwrap_or(255).clamp(1, 255));
    }
    Ok(Exit::Ok)
}

/// A spec whose env takes values from secrets is refused before anything starts: the values never
/// leave the agents (no API answer carries one, by design: docs/secrets.md), so this command, which
/// talks straight to the engine, cannot give them to the script, and running without them would run
/// it in another environment than the spec's container has. Each field is named.
fn refuse_secret_env(spec: &Container) -> CliResult<()> {
    if spec.spec.secret_env.is_empty() {
        return Ok(());
    }
    let fields: Vec<String> =
        spec.spec.secret_env.keys().map(|variable| format!("spec.secretEnv.{variable}")).collect();
    Err(CliError::new(
        Exit::Usage,
        format!(
            "kedge run {}: {} take(s) a value from a secret, which kedge run cannot read (the API never answers a secret's value); nothing was run",
            spec.metadata.name,
            fields.join(", ")
        ),
    )
    .hint("run a spec without secretEnv, or let the script read what it needs from a file (docs/secrets.md)"))
}

/// The read-only bind mount of the script (a file: only that file; a directory: that directory), and
/// the script's path inside (`{script_path}`). Nothing else of the host is shown to the container, and
/// the script cannot change what it was given.
fn script_mount(path: &Path, inside_dir: &str) -> CliResult<(Mount, String)> {
    let path = path
        .canonicalize()
        .map_err(|error| CliError::usage(format!("--script {}: {error}", path.display())))?;
    let inside_dir = inside_dir.trim_end_matches('/').to_owned();
    let (target, inside) = if path.is_dir() {
        (inside_dir.clone(), inside_dir)
    } else {
        let file = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let inside = format!("{inside_dir}/{file}");
        (inside.clone(), inside)
    };
    let mount = Mount {
        source: MountSource::Bind { host_path: path.to_string_lossy().into_owned() },
        target,
        read_only: true,
    };
    Ok((mount, inside))
}

/// The level the one-off container is checked at: the one stored for the namespace (`kedge policy
/// set`), as the agent answers it; else `flag` (`--policy-level`), when none is stored or the
/// agent does not answer it (an older agent, a token not allowed to read it).
async fn namespace_level(
    client: &crate::client::Client,
    namespace: &str,
    flag: kedge_crds::PolicyLevel,
) -> kedge_crds::PolicyLevel {
    match crate::policy::read_level(client, namespace).await {
        Ok(answer) if answer["source"] == "namespace" => {
            answer["level"].as_str().and_then(|level| level.parse().ok()).unwrap_or(flag)
        }
        Ok(_) => flag,
        Err(error) => {
            tracing::debug!(namespace, error = %error.message, "cannot read the namespace's policy level; using --policy-level");
            flag
        }
    }
}

/// The one-off container goes through the host-escape policy as a spec would: the spec's own fields
/// and the script's bind mount, so `--script /var/run/docker.sock` or `--script /` is refused like
/// the same mount in a spec. Every refused field is named, with the level (exit 2).
fn check_policy(spec: &Container, script: Option<&Mount>, level: kedge_crds::PolicyLevel) -> CliResult<()> {
    let mut checked = spec.spec.clone();
    if let Some(Mount { source: MountSource::Bind { host_path }, target, read_only }) = script {
        checked.mounts.push(kedge_crds::Mount {
            kind: kedge_crds::MountKind::Bind,
            source: Some(host_path.clone()),
            target: target.clone(),
            read_only: Some(*read_only),
            tmpfs_size: None,
            tmpfs_mode: None,
        });
    }
    let script_index = spec.spec.mounts.len();
    let violations = kedge_crds::policy::check(&checked, level);
    if violations.is_empty() {
        return Ok(());
    }
    let script_field = format!("spec.mounts[{script_index}]");
    for violation in &violations {
        let field = match script {
            Some(Mount { source: MountSource::Bind { host_path }, .. })
                if violation.path.starts_with(&script_field) =>
            {
                format!("--script {host_path}")
            }
            _ => violation.path.clone(),
        };
        eprintln!("{field}: {}", violation.message());
    }
    Err(CliError::usage(format!(
        "kedge run {}: {} field(s) refused by the `{level}` policy; nothing was run",
        spec.metadata.name,
        violations.len()
    ))
    .hint("the namespace's stored level (`kedge policy get NAMESPACE`) applies; without one, pass the agent's --policy-level (docs/policy.md)"))
}

fn duration(flag: &str, text: &str) -> CliResult<Duration> {
    text.parse::<kedge_crds::HumanDuration>()
        .map(|duration| duration.duration())
        .map_err(|e| CliError::usage(format!("{flag} {text}: {e}")))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_is_mounted_alone_and_read_only() {
        let dir = std::env::temp_dir().join(format!("kedge-run-mount-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("job.sh");
        std::fs::write(&script, "true\n").unwrap();
        let (mount, inside) = script_mount(&script, "/tmp/script_run/").unwrap();
        let (directory, directory_inside) = script_mount(&dir, "/tmp/script_run").unwrap();
        let missing = script_mount(&dir.join("missing.sh"), "/tmp/script_run");
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(inside, "/tmp/script_run/job.sh");
        assert_eq!(mount.target, "/tmp/script_run/job.sh", "only the file, not its directory");
        assert!(mount.read_only);
        let MountSource::Bind { host_path } = &mount.source else { panic!("{mount:?}") };
        assert!(host_path.ends_with("/job.sh"), "{host_path}");
        assert_eq!(
            (directory.target.as_str(), directory_inside.as_str()),
            ("/tmp/script_run", "/tmp/script_run")
        );
        assert!(directory.read_only);
        assert!(missing.is_err());
    }

    #[test]
    fn the_spec_and_the_script_go_through_the_policy() {
        use kedge_crds::PolicyLevel::{Baseline, Privileged};
        let spec = |extra: &str| -> Container {
            let text = format!(
                "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: job\nspec:\n  image: busybox\n{extra}"
            );
            let (mut parsed, errors) = kedge_crds::parse_str("run.yaml", &text);
            assert!(errors.is_empty(), "{errors:?}");
            parsed.remove(0).container
        };
        let script = |host_path: &str| Mount {
            source: MountSource::Bind { host_path: host_path.to_owned() },
            target: "/tmp/script_run/x".to_owned(),
            read_only: true,
        };
        assert!(check_policy(&spec(""), Some(&script("/srv/jobs/x.sh")), Baseline).is_ok());
        for sensitive in ["/var/run/docker.sock", "/", "/etc"] {
            let refused = check_policy(&spec(""), Some(&script(sensitive)), Baseline).unwrap_err();
            assert_eq!(refused.exit, Exit::Usage, "{sensitive}");
            assert!(refused.message.contains("`baseline` policy"), "{}", refused.message);
            assert!(check_policy(&spec(""), Some(&script(sensitive)), Privileged).is_ok());
        }
        assert!(check_policy(&spec("  pidMode: host\n"), None, Baseline).is_err());
        assert!(refuse_secret_env(&spec("")).is_ok());
        let refused =
            refuse_secret_env(&spec("  secretEnv:\n    PIN: {secret: card, key: pin}\n")).unwrap_err();
        assert_eq!(refused.exit, Exit::Usage);
        assert!(
            refused.message.contains("spec.secretEnv.PIN") && refused.message.contains("nothing was run")
        );
    }
}
