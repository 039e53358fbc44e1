//! One function per command: call the API, print with `output`, answer the exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kedge_crds::campaign::Campaign;
use kedge_crds::compose::ComposeOptions;
use kedge_crds::event::Event;
use kedge_crds::{Container, ContainerSet, GitSource, Secret};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::base::{
    connect, load_objects, load_objects_live, object_path, overrides, print_objects, resource_path,
};
use crate::client::{encode, Client};
use crate::config;
use crate::error::{CliError, CliResult, Exit};
use crate::get;
use crate::kinds::Query;
use crate::objects::{self, Declared};
use crate::output::{self};
use crate::readiness;
use crate::types::{HostView, List, LogLine, VersionInfo};
use crate::{
    ApplyArgs, Commands, ConfigCommand, ConvertArgs, CreateCommand, DeleteArgs, DryRun, EventTypeArg,
    GetArgs, GlobalArgs, ObjectKind, OutputFormat, Resource, WaitArgs,
};

pub async fn run(command: Commands, global: &GlobalArgs) -> CliResult<Exit> {
    match command {
        Commands::Agent(_)
        | Commands::Check(_)
        | Commands::Recreate(_)
        | Commands::Lifecycle(_)
        | Commands::Upgrade { .. }
        | Commands::UpgradeHelper(_)
        | Commands::Policy { .. }
        | Commands::Dashboard(_)
        | Commands::Token { .. }
        | Commands::Reconcile { .. }
        | Commands::Suspend { .. }
        | Commands::Resume { .. }
        | Commands::Healthcheck(_) => {
            unreachable!("dispatched in main")
        }
        Commands::Apply(args) => apply(args, global).await,
        Commands::Get(mut args) => {
            args.names = args.names.iter().map(|n| bare_name(n)).collect();
            get(args, global).await
        }
        Commands::Describe { kind, name } => {
            let (resolved, client) = connect(global)?;
            let (ns, name) = (&resolved.namespace, bare_name(&name));
            match kind {
                ObjectKind::Container => objects::describe::<Container>(&client, ns, &name).await?,
                ObjectKind::Containerset => objects::describe::<ContainerSet>(&client, ns, &name).await?,
                ObjectKind::Secret => objects::describe::<Secret>(&client, ns, &name).await?,
                ObjectKind::Gitsource => objects::describe::<GitSource>(&client, ns, &name).await?,
            }
            Ok(Exit::Ok)
        }
        Commands::Create { command: CreateCommand::Secret(args) } => {
            crate::secrets::create(args, global).await
        }
        Commands::Diff { files, compose } => diff(&files, &compose.options(), global).await,
        Commands::Rollout { command } => crate::rollout::run(command, global).await,
        Commands::Top { names } => {
            let names: Vec<String> = names.iter().map(|n| bare_name(n)).collect();
            crate::top::top(&names, global).await
        }
        Commands::Delete(mut args) => {
            args.names = args.names.iter().map(|n| bare_name(n)).collect();
            delete(args, global).await
        }
        Commands::Wait(mut args) => {
            args.name = bare_name(&args.name);
            wait(args, global).await
        }
        Commands::Logs { name, follow, tail, since, timestamps } => {
            let since = since.map(|d| d.duration().as_secs());
            logs(&bare_name(&name), follow, tail, since, timestamps, global).await
        }
        Commands::Exec { name, stdin, tty, user, workdir, command } => {
            if tty {
                return Err(CliError::usage("kedge exec has no terminal (-t) yet")
                    .hint("run without -t; a shell reads its commands from -i: `echo 'ls /' | kedge exec -i NAME -- sh`"));
            }
            exec(&bare_name(&name), stdin, user, workdir, command, global).await
        }
        Commands::Events { for_name, types, watch, all_namespaces, output } => {
            let (kind, name) = match for_name.as_deref().map(event_object) {
                Some(found) => {
                    let (kind, name) = found?;
                    (kind, Some(name))
                }
                None => (None, None),
            };
            let mut filter = Vec::new();
            if let Some(kind) = kind {
                filter.push(format!("objectKind={kind}"));
            }
            if !types.is_empty() {
                let types: Vec<&str> = types
                    .iter()
                    .map(|t| if *t == EventTypeArg::Warning { "Warning" } else { "Normal" })
                    .collect();
                filter.push(format!("type={}", types.join(",")));
            }
            // A host's events are in no namespace of the user's (kedge-system): look everywhere.
            let all_namespaces = all_namespaces || kind == Some("Host");
            let args = GetArgs {
                resource: Resource::Events,
                names: name.into_iter().collect(),
                filter: filter.join("&"),
                output,
                sort_by: None,
                no_headers: false,
                selector: None,
                all_namespaces,
                watch,
            };
            get(args, global).await
        }
        Commands::Convert(args) => convert(&args),
        Commands::Validate { files, compose } => {
            let objects = load_objects(&files, &compose.options())?;
            let mut counts = vec![format!("{} container spec(s)", objects.containers.len())];
            if !objects.sets.is_empty() {
                counts.push(format!("{} container set(s)", objects.sets.len()));
            }
            if !objects.secrets.is_empty() {
                counts.push(format!("{} secret(s)", objects.secrets.len()));
            }
            if !objects.gitsources.is_empty() {
                counts.push(format!("{} gitsource(s)", objects.gitsources.len()));
            }
            println!("{} valid", counts.join(" and "));
            Ok(Exit::Ok)
        }
        Commands::Schema { kind } => {
            match kind {
                // The texts end with their own line break (they are the checked-in files).
                ObjectKind::Container => print!("{}", kedge_crds::schema_json()),
                ObjectKind::Containerset => print!("{}", kedge_crds::set_schema_json()),
                ObjectKind::Secret => {
                    return Err(CliError::usage(
                        "a Secret has no schema of its own: `data` maps keys to strings",
                    ))
                }
                ObjectKind::Gitsource => print!("{}", kedge_crds::schema::gitsource_schema_json()),
            }
            Ok(Exit::Ok)
        }
        Commands::Explain { path, recursive } => {
            let text = kedge_crds::explain::explain(&path, recursive)
                .map_err(|error| CliError::usage(error.to_string()))?;
            print!("{text}");
            Ok(Exit::Ok)
        }
        Commands::Completion { shell } => {
            clap_complete::generate(shell, &mut crate::command(), "kedge", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
        Commands::Config { command } => config_command(command, global),
        Commands::Version => {
            println!("Client: kedge {}", env!("CARGO_PKG_VERSION"));
            let (_, client) = connect(global)?;
            let version: VersionInfo =
                serde_json::from_value(client.get("/version").await?).unwrap_or_default();
            println!(
                "Server: kedge {} on host {}",
                version.version.as_deref().unwrap_or("?"),
                version.host.as_deref().unwrap_or("?")
            );
            Ok(Exit::Ok)
        }
    }
}

/// `container/web` (what `-o name` prints) names `web`, as in kubectl.
/// `--for [KIND/]NAME` of `kedge events`: the involved object's kind as events name it (none: any
/// kind), and the name.
fn event_object(written: &str) -> CliResult<(Option<&'static str>, String)> {
    let Some((kind, name)) = written.split_once('/') else { return Ok((None, written.to_owned())) };
    let kind = match kind.to_ascii_lowercase().as_str() {
        "container" | "containers" => "Container",
        "containerset" | "containersets" | "set" | "sets" | "cs" => "ContainerSet",
        "secret" | "secrets" => "Secret",
        "gitsource" | "gitsources" | "gs" => "GitSource",
        "host" | "hosts" => "Host",
        other => {
            return Err(CliError::usage(format!("`{other}` is not a kind with events"))
                .hint("use container/, containerset/, secret/, gitsource/ or host/"))
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(CliError::usage(format!("`{written}` is not KIND/NAME")));
    }
    Ok((Some(kind), name.to_owned()))
}

fn bare_name(name: &str) -> String {
    [
        "container/",
        "containers/",
        "containerset/",
        "containersets/",
        "secret/",
        "secrets/",
        "gitsource/",
        "gitsources/",
    ]
    .iter()
    .find_map(|prefix| name.strip_prefix(prefix))
    .unwrap_or(name)
    .to_owned()
}

/// The apply set id: the `--applyset` name, or a hash of the canonical input paths.
fn applyset_id(name: Option<&str>, files: &[PathBuf]) -> CliResult<String> {
    if let Some(name) = name {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && name.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !valid {
            return Err(CliError::usage(format!("--applyset `{name}` is not a label value"))
                .hint("use letters, digits, `-`, `_` and `.`, at most 63"));
        }
        return Ok(name.to_owned());
    }
    if files.iter().any(|f| f.as_os_str() == "-") {
        return Err(CliError::usage("reading from stdin, --prune needs the apply set's name")
            .hint("add --applyset NAME"));
    }
    let mut paths: Vec<String> = files
        .iter()
        .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()).display().to_string())
        .collect();
    paths.sort();
    let digest = Sha256::digest(paths.join("\n").as_bytes());
    Ok(format!("path-{}", &hex::encode(digest)[..16]))
}

async fn apply(args: ApplyArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let (loaded, origins) =
        load_objects_live(&args.files, &args.compose.options(), &client, &resolved.namespace).await?;
    // Only a pruning apply (or one naming its set) puts objects in an apply set: as in kubectl, the
    // set matters only to what --prune deletes.
    let applyset = match args.prune || args.applyset.is_some() {
        true => Some(applyset_id(args.applyset.as_deref(), &args.files)?),
        false => None,
    };
    let mut secrets = objects::prepare(loaded.secrets, &resolved.namespace, applyset.as_deref());
    let mut containers = objects::prepare(loaded.containers, &resolved.namespace, applyset.as_deref());
    let mut container_sets = objects::prepare(loaded.sets, &resolved.namespace, applyset.as_deref());
    let mut gitsources = objects::prepare(loaded.gitsources, &resolved.namespace, applyset.as_deref());
    let (set, take) = (applyset.as_deref(), args.take_ownership);
    let mut moves = objects::settle_membership(&client, &mut secrets, set, take).await?;
    moves.extend(objects::settle_membership(&client, &mut containers, set, take).await?);
    moves.extend(objects::settle_membership(&client, &mut container_sets, set, take).await?);
    moves.extend(objects::settle_membership(&client, &mut gitsources, set, take).await?);
    if !moves.is_empty() {
        for line in &moves {
            eprintln!("{line}");
        }
        return Err(CliError::usage(format!(
            "{} object(s) belong to another apply set; nothing was changed",
            moves.len()
        ))
        .hint("apply with that set's --applyset NAME, or add --take-ownership to move them into this one"));
    }
    let mut too_large = objects::too_large(&secrets, &origins.secrets);
    too_large.extend(objects::too_large(&containers, &origins.containers));
    too_large.extend(objects::too_large(&container_sets, &origins.sets));
    if !too_large.is_empty() {
        for message in &too_large {
            eprintln!("{message}");
        }
        return Err(CliError::usage(format!("{} object(s) too large; nothing was changed", too_large.len()))
            .hint("keep large data out of specs: mount it from a file or a volume"));
    }
    let suffix = match args.dry_run {
        DryRun::None => "",
        DryRun::Client => " (dry run)",
        DryRun::Server => " (server dry run)",
    };
    if args.wait && args.dry_run != DryRun::None {
        return Err(CliError::usage("--wait waits for what was applied: a dry run applies nothing"));
    }
    let mut applied = Applied::default();
    let in_containers =
        |index: usize, field: &str, message: &str| origins.place(false, index, field, message);
    let in_sets = |index: usize, field: &str, message: &str| origins.place(true, index, field, message);
    let in_secrets = |index: usize, field: &str, message: &str| {
        let file = origins.secrets.get(index).map_or("", String::as_str);
        format!("{file}: {field}: {message}")
    };
    // Secrets first: the containers applied next may name them in `secretEnv`.
    apply_all(&client, &secrets, &args, suffix, &in_secrets, &mut applied).await;
    apply_all(&client, &containers, &args, suffix, &in_containers, &mut applied).await;
    apply_all(&client, &container_sets, &args, suffix, &in_sets, &mut applied).await;
    let in_gitsources = |index: usize, field: &str, message: &str| {
        let file = origins.gitsources.get(index).map_or("", String::as_str);
        format!("{file}: {field}: {message}")
    };
    apply_all(&client, &gitsources, &args, suffix, &in_gitsources, &mut applied).await;
    print_objects(args.output, applied.objects, true);
    if let Some(error) = applied.failed {
        let message = "some specs were not applied (see above); nothing was pruned";
        return Err(CliError { message: message.to_owned(), ..error });
    }
    if let (true, Some(applyset)) = (args.prune, applyset.as_deref()) {
        objects::prune(&client, &containers, applyset, args.dry_run, suffix).await?;
        objects::prune(&client, &container_sets, applyset, args.dry_run, suffix).await?;
        objects::prune(&client, &secrets, applyset, args.dry_run, suffix).await?;
        objects::prune(&client, &gitsources, applyset, args.dry_run, suffix).await?;
    }
    if args.wait {
        // Secrets have nothing to become; a set's children are waited for through the set.
        let awaited: Vec<_> = applied.awaited.into_iter().filter(|one| one.word != "secret").collect();
        return readiness::wait_all(&client, &awaited, args.timeout.duration()).await;
    }
    Ok(Exit::Ok)
}

/// What an apply has done so far: the objects as the server answered them (for `-o json|yaml`),
/// those `--wait` waits for, and the first failure.
#[derive(Default)]
struct Applied {
    objects: Vec<Value>,
    awaited: Vec<readiness::Awaited>,
    failed: Option<CliError>,
}

/// Applies each object of one kind, printing each outcome (or collecting the objects for `-o
/// json|yaml`); the first failure is kept and the rest still applied. A field the server refuses
/// (invalid, or denied by the policy) is printed where it is in the input: `place(index of the
/// object, field, message)` says `FILE:LINE:COL: FIELD: MESSAGE`.
async fn apply_all<K: Declared>(
    client: &Client,
    objects: &[K],
    args: &ApplyArgs,
    suffix: &str,
    place: &dyn Fn(usize, &str, &str) -> String,
    applied: &mut Applied,
) {
    for (index, object) in objects.iter().enumerate() {
        let name = &object.metadata().name;
        match objects::apply_one(client, object, args.dry_run).await {
            Ok((outcome, object)) => {
                let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
                applied.awaited.push(readiness::Awaited {
                    word: K::WORD,
                    path: resource_path::<K>(&namespace, name),
                    generation: object["metadata"]["generation"].as_i64().unwrap_or(0),
                    namespace,
                    name: name.clone(),
                });
                match args.output {
                    Some(OutputFormat::Name) => println!("{}/{name}", K::WORD),
                    Some(OutputFormat::Json | OutputFormat::Yaml) => applied.objects.push(object),
                    _ => println!("{}/{name} {outcome}{suffix}", K::WORD),
                }
            }
            Err(error) => {
                eprintln!("error: {}/{name}: {}", K::WORD, error.message);
                for (field, message) in &error.fields {
                    eprintln!("{}", place(index, field, message));
                }
                applied.failed.get_or_insert(error);
            }
        }
    }
}

async fn get(args: GetArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let query = Query {
        client: &client,
        namespace: &resolved.namespace,
        name: None,
        filter: args.filter.clone(),
        selector: get::selector_query(args.selector.as_deref()),
        all_namespaces: args.all_namespaces,
        watch: args.watch,
        options: get::table_options(args.output.as_ref(), args.all_namespaces),
    };
    let view = get::View { output: args.output, sort_by: args.sort_by, no_headers: args.no_headers };
    let names = &args.names;
    match args.resource {
        Resource::All => get::all(&query, names, &view).await,
        Resource::Containers => get::get::<Container>(&query, names, &view).await,
        Resource::Containersets => get::get::<ContainerSet>(&query, names, &view).await,
        Resource::Secrets => get::get::<Secret>(&query, names, &view).await,
        Resource::Gitsources => get::get::<GitSource>(&query, names, &view).await,
        Resource::Hosts => get::get::<HostView>(&query, names, &view).await,
        Resource::Events => get::get::<Event>(&query, names, &view).await,
        Resource::Upgrades => get::get::<Campaign>(&query, names, &view).await,
    }
}

/// `kedge logs NAME [-f] [--tail N] [--since D] [--timestamps]`: the container's output, from the
/// agent of its host.
pub(crate) async fn logs(
    name: &str,
    follow: bool,
    tail: usize,
    since: Option<u64>,
    timestamps: bool,
    global: &GlobalArgs,
) -> CliResult<Exit> {
    use std::io::Write;
    let (resolved, client) = connect(global)?;
    let mut path = format!("{}/logs?tail={tail}&follow={follow}", object_path(&resolved.namespace, name));
    if let Some(seconds) = since {
        path.push_str(&format!("&sinceSeconds={seconds}"));
    }
    if timestamps {
        path.push_str("&timestamps=true");
    }
    client
        .lines(&path, |line| {
            let line: LogLine = serde_json::from_value(line).unwrap_or_default();
            let written = if line.stream == "stderr" {
                std::io::stderr().write_all(line.text.as_bytes())
            } else {
                std::io::stdout().write_all(line.text.as_bytes()).and_then(|()| std::io::stdout().flush())
            };
            written.map_err(|e| CliError::new(Exit::Usage, format!("cannot write the logs: {e}")))
        })
        .await?;
    Ok(Exit::Ok)
}

/// `kedge exec NAME [-i] [-u USER] [-w DIR] -- COMMAND...`: runs the command in the container on
/// its host's engine, passing its output through, and exits with the command's exit code.
async fn exec(
    name: &str,
    stdin: bool,
    user: Option<String>,
    workdir: Option<String>,
    command: Vec<String>,
    global: &GlobalArgs,
) -> CliResult<Exit> {
    use std::io::{Read, Write};
    let (resolved, client) = connect(global)?;
    let mut body = json!({ "command": command });
    // One request carries the input: read no more than the API takes, and say so before sending.
    let limit = kedge_controller::api::MAX_BODY_BYTES;
    let too_large = || {
        CliError::usage(format!(
            "exec -i takes at most {} KiB of standard input (the API's limit for one request)",
            limit >> 10
        ))
        .hint("copy large data into the container through a volume or a bind mount")
    };
    if stdin {
        let mut bytes = Vec::new();
        std::io::stdin().take(limit as u64 + 1).read_to_end(&mut bytes)?;
        if bytes.len() > limit {
            return Err(too_large());
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| CliError::usage("exec -i passes text: the standard input is not UTF-8"))?;
        body["stdin"] = json!(text);
    }
    if let Some(user) = user {
        body["user"] = json!(user);
    }
    if let Some(workdir) = workdir {
        body["workingDir"] = json!(workdir);
    }
    if serde_json::to_vec(&body).map_or(0, |json| json.len()) > limit {
        return Err(too_large());
    }
    let path = format!("{}/exec", object_path(&resolved.namespace, name));
    let mut exit_code: Option<i64> = None;
    client
        .lines_of(Method::POST, &path, Some(&body), |line| {
            if line["type"] == "EXIT" {
                exit_code = line["exitCode"].as_i64();
                return Ok(());
            }
            let text = line["text"].as_str().unwrap_or_default();
            let written = if line["stream"] == "stderr" {
                std::io::stderr().write_all(text.as_bytes())
            } else {
                std::io::stdout().write_all(text.as_bytes()).and_then(|()| std::io::stdout().flush())
            };
            written.map_err(|e| CliError::new(Exit::Usage, format!("cannot write the output: {e}")))
        })
        .await?;
    let Some(code) = exit_code else {
        return Err(CliError::new(Exit::Server, "the command's exit code never came: the stream was cut"));
    };
    let _ = std::io::stdout().flush();
    // The command's own code, as `docker exec` and `kubectl exec` answer (a signal's 128+N included).
    std::process::exit(i32::try_from(code).unwrap_or(1));
}

async fn diff(files: &[PathBuf], compose: &ComposeOptions, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let (loaded, _) = load_objects_live(files, compose, &client, &resolved.namespace).await?;
    // The apply set label is not compared.
    let applyset = None;
    let colour = output::use_colour(std::io::stdout().is_terminal());
    let mut changed = false;
    for container in objects::prepare(loaded.containers, &resolved.namespace, applyset) {
        changed |= diff_one(&client, &container, colour).await?;
    }
    for set in objects::prepare(loaded.sets, &resolved.namespace, applyset) {
        changed |= diff_one(&client, &set, colour).await?;
    }
    for secret in objects::prepare(loaded.secrets, &resolved.namespace, applyset) {
        changed |= diff_one(&client, &secret, colour).await?;
    }
    for source in objects::prepare(loaded.gitsources, &resolved.namespace, applyset) {
        changed |= diff_one(&client, &source, colour).await?;
    }
    Ok(if changed { Exit::Changes } else { Exit::Ok })
}

/// Prints the diff of one object against its live version; answers whether there was one.
async fn diff_one<K: Declared>(client: &Client, object: &K, colour: bool) -> CliResult<bool> {
    let (live, local) = objects::diff_texts(client, object).await?;
    let key = format!("{}/{}", object.metadata().namespace, object.metadata().name);
    Ok(print_diff(&unified_diff(&live, &local, K::WORD, &key), colour))
}

/// Prints a unified diff, coloured when asked; answers whether there was one.
fn print_diff(text: &str, colour: bool) -> bool {
    if text.is_empty() {
        return false;
    }
    for line in text.lines() {
        let painted = match line.chars().next() {
            Some('+') if !line.starts_with("+++") => output::paint(line, "32", colour),
            Some('-') if !line.starts_with("---") => output::paint(line, "31", colour),
            Some('@') => output::paint(line, "36", colour),
            _ => line.to_owned(),
        };
        println!("{painted}");
    }
    true
}

/// A unified diff of live against local; empty when they are the same.
pub fn unified_diff(live: &str, local: &str, word: &str, key: &str) -> String {
    if live == local {
        return String::new();
    }
    similar::TextDiff::from_lines(live, local)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live/{word}/{key}"), &format!("local/{word}/{key}"))
        .to_string()
}

/// One object to delete: namespace, name, and the version it must still have (selected ones).
type Target = (String, String, Option<String>);

async fn delete(args: DeleteArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let ns = resolved.namespace.clone();
    let mut targets: Vec<Target> = Vec::new();
    let ways = usize::from(!args.names.is_empty())
        + usize::from(!args.files.is_empty())
        + usize::from(args.selector.is_some());
    if ways != 1 {
        return Err(CliError::usage("name the containers one way: NAME..., -f FILE or -l SELECTOR")
            .hint("e.g. `kedge delete container web`"));
    }
    if !args.names.is_empty() && args.kind.is_none() {
        return Err(CliError::usage("say what to delete: `kedge delete container NAME`"));
    }
    let mut set_targets: Vec<Target> = Vec::new();
    let mut secret_targets: Vec<Target> = Vec::new();
    let mut gitsource_targets: Vec<Target> = Vec::new();
    let named = args.names.iter().map(|name| (ns.clone(), name.clone(), None));
    match args.kind {
        Some(ObjectKind::Containerset) => set_targets.extend(named),
        Some(ObjectKind::Secret) => secret_targets.extend(named),
        Some(ObjectKind::Gitsource) => gitsource_targets.extend(named),
        _ => targets.extend(named),
    }
    if !args.files.is_empty() {
        let loaded = load_objects(&args.files, &args.compose.options())?;
        for source in objects::prepare(loaded.gitsources, &ns, None) {
            gitsource_targets.push((source.metadata.namespace, source.metadata.name, None));
        }
        for secret in objects::prepare(loaded.secrets, &ns, None) {
            secret_targets.push((secret.metadata.namespace, secret.metadata.name, None));
        }
        for set in objects::prepare(loaded.sets, &ns, None) {
            set_targets.push((set.metadata.namespace, set.metadata.name, None));
        }
        for container in objects::prepare(loaded.containers, &ns, None) {
            targets.push((container.metadata.namespace, container.metadata.name, None));
        }
    }
    if let Some(selector) = &args.selector {
        let (found, plural) = match args.kind {
            Some(ObjectKind::Containerset) => (
                selected::<ContainerSet>(&client, &ns, selector, args.all_namespaces, &mut set_targets)
                    .await?,
                "containersets",
            ),
            Some(ObjectKind::Secret) => (
                selected::<Secret>(&client, &ns, selector, args.all_namespaces, &mut secret_targets).await?,
                "secrets",
            ),
            Some(ObjectKind::Gitsource) => (
                selected::<GitSource>(&client, &ns, selector, args.all_namespaces, &mut gitsource_targets)
                    .await?,
                "gitsources",
            ),
            _ => (
                selected::<Container>(&client, &ns, selector, args.all_namespaces, &mut targets).await?,
                "containers",
            ),
        };
        if !found {
            eprintln!("No {plural} match `{selector}`.");
        }
    }
    let mut failed = None;
    // First: a source deleted keeps what it applied, but no longer puts anything back.
    delete_all::<GitSource>(&client, gitsource_targets, &args, &mut failed).await;
    delete_all::<ContainerSet>(&client, set_targets, &args, &mut failed).await;
    delete_all::<Container>(&client, targets, &args, &mut failed).await;
    // Last: a container deleted above no longer needs its secrets.
    delete_all::<Secret>(&client, secret_targets, &args, &mut failed).await;
    match failed {
        Some(error) => {
            Err(CliError { message: "some containers were not deleted (see above)".to_owned(), ..error })
        }
        None => Ok(Exit::Ok),
    }
}

/// Adds the objects of kind `K` that `selector` picks to `targets`, each only at the version listed;
/// answers whether there were any.
async fn selected<K: Declared>(
    client: &Client,
    namespace: &str,
    selector: &str,
    all_namespaces: bool,
    targets: &mut Vec<Target>,
) -> CliResult<bool> {
    let found = objects::list_selected::<K>(client, namespace, selector, all_namespaces).await?;
    for object in &found {
        let metadata = object.metadata();
        targets.push((metadata.namespace.clone(), metadata.name.clone(), metadata.resource_version.clone()));
    }
    Ok(!found.is_empty())
}

/// Deletes each target of one kind, printing each; the first failure is kept and the rest still
/// deleted.
async fn delete_all<K: Declared>(
    client: &Client,
    targets: Vec<Target>,
    args: &DeleteArgs,
    failed: &mut Option<CliError>,
) {
    let suffix = if args.dry_run == DryRun::None { "" } else { " (dry run)" };
    for (namespace, name, resource_version) in targets {
        match objects::delete_one::<K>(client, &namespace, &name, resource_version.as_deref(), args.dry_run)
            .await
        {
            Ok(()) => println!("{}/{name} deleted{suffix}", K::WORD),
            Err(error) if error.exit == Exit::NotFound && args.ignore_not_found => {}
            Err(error) => {
                eprintln!("error: {}/{name}: {}", K::WORD, error.message);
                failed.get_or_insert(error);
            }
        }
    }
}

/// What `wait --for` waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    Delete,
    Condition { kind: String, status: String },
}

pub fn parse_wait_for(text: &str) -> CliResult<WaitFor> {
    if text == "delete" {
        return Ok(WaitFor::Delete);
    }
    let Some(rest) = text.strip_prefix("condition=") else {
        return Err(CliError::usage(format!("--for {text}: expected `condition=TYPE[=STATUS]` or `delete`")));
    };
    let (kind, status) = rest.split_once('=').unwrap_or((rest, "True"));
    let status = match status.to_ascii_lowercase().as_str() {
        "true" => "True",
        "false" => "False",
        "unknown" => "Unknown",
        _ => return Err(CliError::usage(format!("--for {text}: status must be True, False or Unknown"))),
    };
    if kind.is_empty() {
        return Err(CliError::usage(format!("--for {text}: no condition type")));
    }
    // A type no container has would be waited for until the timeout: refuse it now. Any case, as
    // kubectl takes it (`condition=ready`).
    use kedge_crds::condition_type::{DEGRADED, READY, SYNCED};
    let Some(kind) = [READY, SYNCED, DEGRADED].into_iter().find(|known| known.eq_ignore_ascii_case(kind))
    else {
        return Err(CliError::usage(format!(
            "--for {text}: a container has no condition `{kind}`; its conditions are {READY}, {SYNCED} and {DEGRADED}"
        )));
    };
    Ok(WaitFor::Condition { kind: kind.to_owned(), status: status.to_owned() })
}

fn condition_met(container: &Container, kind: &str, status: &str) -> bool {
    container
        .status
        .as_ref()
        .and_then(|s| s.condition(kind))
        .is_some_and(|c| format!("{:?}", c.status) == status)
}

async fn wait(args: WaitArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let for_what = parse_wait_for(&args.for_what)?;
    let timeout: Duration = args
        .timeout
        .parse::<kedge_crds::HumanDuration>()
        .map_err(|e| CliError::usage(format!("--timeout {}: {e}", args.timeout)))?
        .duration();
    let (resolved, client) = connect(global)?;
    let ns = resolved.namespace.clone();
    let name = args.name.clone();
    let mut last_seen: Option<Container> = None;
    let waiting = async {
        // The list gives a revision to watch from, so that no change between the read and the watch is missed.
        let list = List::<Container>::from_answer(
            client.get(&format!("/api/v1/namespaces/{}/containers", encode(&ns))).await?,
        )?;
        let revision = list.revision();
        let current = list.items.into_iter().find(|c| c.metadata.name == name);
        match (&for_what, &current) {
            (WaitFor::Delete, None) => return Ok(()),
            (WaitFor::Condition { .. }, None) => {
                return Err(CliError::new(Exit::NotFound, format!("container {ns}/{name} not found"))
                    .hint("list them with `kedge get containers`"))
            }
            (WaitFor::Condition { kind, status }, Some(c)) if condition_met(c, kind, status) => return Ok(()),
            _ => {}
        }
        last_seen = current;
        let path = format!(
            "/api/v1/watch/containers?resourceVersion={}&namespace={}&name={}",
            revision,
            encode(&ns),
            encode(&name)
        );
        let mut outcome = Ok(());
        client
            .stream(&path, |event| {
                let container: Container = event.object()?;
                match (&for_what, event.kind.as_str()) {
                    (WaitFor::Delete, "DELETED") => Ok(false),
                    (WaitFor::Condition { .. }, "DELETED") => {
                        outcome =
                            Err(CliError::new(Exit::NotFound, format!("container {ns}/{name} was deleted")));
                        Ok(false)
                    }
                    (WaitFor::Condition { kind, status }, _) if condition_met(&container, kind, status) => {
                        Ok(false)
                    }
                    _ => {
                        last_seen = Some(container);
                        Ok(true)
                    }
                }
            })
            .await?;
        outcome
    };
    match tokio::time::timeout(timeout, waiting).await {
        Ok(Ok(())) => {
            match for_what {
                WaitFor::Delete => println!("container/{} deleted", args.name),
                WaitFor::Condition { kind, .. } => println!("container/{} condition {kind} met", args.name),
            }
            Ok(Exit::Ok)
        }
        Ok(Err(error)) => Err(error),
        Err(_) => {
            let now = match (&for_what, &last_seen) {
                (WaitFor::Condition { kind, .. }, Some(c)) => {
                    match c.status.as_ref().and_then(|s| s.condition(kind)) {
                        Some(condition) => {
                            format!(" (now {kind}={:?}, reason {})", condition.status, condition.reason)
                        }
                        None => format!(" (no {kind} condition reported yet)"),
                    }
                }
                _ => String::new(),
            };
            Err(CliError::new(
                Exit::Timeout,
                format!(
                    "timed out after {} waiting for container/{} {}{now}",
                    args.timeout, args.name, args.for_what
                ),
            )
            .hint("see why with `kedge describe container NAME`"))
        }
    }
}

fn config_command(command: ConfigCommand, global: &GlobalArgs) -> CliResult<Exit> {
    let overrides = overrides(global);
    let path = config::config_path(&overrides);
    let mut file = config::load(&path)?;
    match command {
        ConfigCommand::View => {
            let mut shown = file.clone();
            // Tokens are secrets: show that one is set, not what it is.
            for context in shown.contexts.values_mut() {
                if context.token.is_some() {
                    context.token = Some("REDACTED".to_owned());
                }
            }
            print!("{}", output::to_yaml(&serde_json::to_value(&shown).unwrap_or_default()));
        }
        ConfigCommand::GetContexts => {
            let rows: Vec<Vec<String>> = file
                .contexts
                .iter()
                .map(|(name, context)| {
                    let current = if file.current_context.as_deref() == Some(name) { "*" } else { "" };
                    vec![
                        current.to_owned(),
                        name.clone(),
                        context.server.clone().unwrap_or_else(|| output::NONE.to_owned()),
                        context.namespace.clone().unwrap_or_else(|| output::NONE.to_owned()),
                    ]
                })
                .collect();
            print!("{}", output::table(&["CURRENT", "NAME", "SERVER", "NAMESPACE"], &rows));
        }
        ConfigCommand::CurrentContext => match &file.current_context {
            Some(name) => println!("{name}"),
            None => {
                return Err(CliError::new(Exit::NotFound, "no current context is set")
                    .hint("set one with `kedge config use-context NAME`"))
            }
        },
        ConfigCommand::UseContext { name } => {
            if !file.contexts.contains_key(&name) {
                return Err(CliError::new(Exit::NotFound, format!("no context named `{name}`"))
                    .hint("create it with `kedge config set-context NAME --server URL`"));
            }
            file.current_context = Some(name.clone());
            config::save(&path, &file)?;
            println!("Switched to context \"{name}\".");
        }
        ConfigCommand::SetContext { name } => {
            let token_file =
                global.token_file.clone().filter(|_| global.from_command_line.contains(&"token_file"));
            let given = |id: &str, value: &Option<String>| {
                value.clone().filter(|_| global.from_command_line.contains(&id))
            };
            let (server, token) = (given("server", &global.server), given("token", &global.token));
            let namespace = given("namespace", &global.namespace);
            let context = file.contexts.entry(name.clone()).or_default();
            if server.is_some() {
                context.server = server;
            }
            if token.is_some() {
                context.token = token;
            }
            if let Some(token_file) = token_file {
                context.token_file = Some(absolute(&token_file));
            }
            if namespace.is_some() {
                context.namespace = namespace;
            }
            if global.from_command_line.contains(&"certificate_authority") {
                context.certificate_authority = global.certificate_authority.as_deref().map(absolute);
            }
            if global.from_command_line.contains(&"client_certificate") {
                context.client_certificate = global.client_certificate.as_deref().map(absolute);
                context.client_key = global.client_key.as_deref().map(absolute);
            }
            if file.current_context.is_none() {
                file.current_context = Some(name.clone());
            }
            config::save(&path, &file)?;
            println!("Context \"{name}\" set in {}.", path.display());
        }
        ConfigCommand::DeleteContext { name } => {
            if file.contexts.remove(&name).is_none() {
                return Err(CliError::new(Exit::NotFound, format!("no context named `{name}`")));
            }
            if file.current_context.as_deref() == Some(name.as_str()) {
                file.current_context = None;
            }
            config::save(&path, &file)?;
            println!("Deleted context \"{name}\".");
        }
    }
    Ok(Exit::Ok)
}

fn absolute(path: &Path) -> PathBuf {
    std::env::current_dir().map(|dir| dir.join(path)).unwrap_or_else(|_| path.to_owned())
}

/// `kedge convert`: the kedge specs of the input (Compose files, or kedge files as they are),
/// validated, printed as YAML documents or written one file per object to `-o DIR`.
fn convert(args: &ConvertArgs) -> CliResult<Exit> {
    let objects = load_objects(&args.files, &args.compose.options())?;
    let mut documents: Vec<(String, Value)> = Vec::new();
    let mut add = |kind: &str, name: &str, value: Result<Value, serde_json::Error>| {
        documents.push((format!("{kind}-{name}.yaml"), value.unwrap_or_default()));
    };
    for set in &objects.sets {
        add("containerset", &set.metadata.name, serde_json::to_value(set));
    }
    for container in &objects.containers {
        add("container", &container.metadata.name, serde_json::to_value(container));
    }
    for secret in &objects.secrets {
        add("secret", &secret.metadata.name, serde_json::to_value(secret));
    }
    for source in &objects.gitsources {
        add("gitsource", &source.metadata.name, serde_json::to_value(source));
    }
    match &args.output_dir {
        None => {
            let texts: Vec<String> = documents.iter().map(|(_, value)| output::to_yaml(value)).collect();
            print!("{}", texts.join("---\n"));
        }
        Some(directory) => {
            std::fs::create_dir_all(directory)?;
            for (file, value) in &documents {
                let path = directory.join(file);
                std::fs::write(&path, output::to_yaml(value))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_parses() {
        assert_eq!(parse_wait_for("delete").unwrap(), WaitFor::Delete);
        assert_eq!(
            parse_wait_for("condition=Ready").unwrap(),
            WaitFor::Condition { kind: "Ready".into(), status: "True".into() }
        );
        assert_eq!(
            parse_wait_for("condition=Synced=false").unwrap(),
            WaitFor::Condition { kind: "Synced".into(), status: "False".into() }
        );
        assert_eq!(
            parse_wait_for("condition=degraded").unwrap(),
            WaitFor::Condition { kind: "Degraded".into(), status: "True".into() }
        );
        for bad in
            ["ready", "condition=", "condition=Ready=maybe", "condition=Unknown", "condition=Healthy=True"]
        {
            assert_eq!(parse_wait_for(bad).unwrap_err().exit, Exit::Usage, "{bad}");
        }
        let message = parse_wait_for("condition=Unknown").unwrap_err().message;
        assert!(
            message.contains("no condition `Unknown`") && message.contains("Ready, Synced and Degraded"),
            "{message}"
        );
    }

    #[test]
    fn applyset_ids() {
        assert_eq!(applyset_id(Some("prod-web"), &[]).unwrap(), "prod-web");
        assert!(applyset_id(Some("no spaces"), &[]).is_err());
        assert!(applyset_id(None, &[PathBuf::from("-")]).is_err());
        let a = applyset_id(None, &[PathBuf::from("/nonexistent/a")]).unwrap();
        assert!(a.starts_with("path-") && a.len() == 21, "{a}");
        assert_eq!(a, applyset_id(None, &[PathBuf::from("/nonexistent/a")]).unwrap());
        assert_ne!(a, applyset_id(None, &[PathBuf::from("/nonexistent/b")]).unwrap());
    }

    #[test]
    fn diff_is_empty_when_equal_and_unified_otherwise() {
        assert_eq!(unified_diff("a: 1\n", "a: 1\n", "container", "ns/x"), "");
        let text = unified_diff("a: 1\nb: 2\n", "a: 1\nb: 3\n", "container", "ns/x");
        assert_eq!(
            text,
            "--- live/container/ns/x\n+++ local/container/ns/x\n@@ -1,2 +1,2 @@\n a: 1\n-b: 2\n+b: 3\n"
        );
    }
}
