//! One function per command: call the API, print with `output`, answer the exit code.

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use kedge_crds::{Container, Objects, ParsedObjects, SpecError};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::client::{encode, Client};
use crate::config::{self, Overrides, Resolved};
use crate::error::{CliError, CliResult, Exit};
use crate::output::{self, TableOptions};
use crate::sets;
use crate::{
    ApplyArgs, Commands, ConfigCommand, DeleteArgs, DryRun, GetArgs, GlobalArgs, ObjectKind, OutputFormat,
    Resource, WaitArgs,
};

/// The label that ties a container to the apply set it was applied with (`apply --prune`).
pub const APPLYSET_LABEL: &str = "kedge.io/applyset";

pub async fn run(command: Commands, global: &GlobalArgs) -> CliResult<Exit> {
    match command {
        Commands::Agent(_)
        | Commands::Check(_)
        | Commands::Recreate(_)
        | Commands::Lifecycle(_)
        | Commands::Upgrade { .. }
        | Commands::UpgradeHelper(_)
        | Commands::Healthcheck(_) => {
            unreachable!("dispatched in main")
        }
        Commands::Apply(args) => apply(args, global).await,
        Commands::Get(mut args) => {
            args.name = args.name.map(|n| bare_name(&n));
            get(args, global).await
        }
        Commands::Describe { kind: ObjectKind::Container, name } => describe(&bare_name(&name), global).await,
        Commands::Describe { kind: ObjectKind::Containerset, name } => {
            let (resolved, client) = connect(global)?;
            sets::describe(&client, &resolved.namespace, &bare_name(&name)).await
        }
        Commands::Diff { files } => diff(&files, global).await,
        Commands::Delete(mut args) => {
            args.names = args.names.iter().map(|n| bare_name(n)).collect();
            delete(args, global).await
        }
        Commands::Wait(mut args) => {
            args.name = bare_name(&args.name);
            wait(args, global).await
        }
        Commands::Logs { name, follow, tail } => logs(&bare_name(&name), follow, tail, global).await,
        Commands::Events { for_name, watch, all_namespaces, output } => {
            let args = GetArgs {
                resource: Resource::Events,
                name: for_name.map(|n| bare_name(&n)),
                output,
                selector: None,
                all_namespaces,
                watch,
            };
            get(args, global).await
        }
        Commands::Validate { files } => {
            let objects = load_objects(&files)?;
            if objects.sets.is_empty() {
                println!("{} container spec(s) valid", objects.containers.len());
            } else {
                println!(
                    "{} container spec(s) and {} container set(s) valid",
                    objects.containers.len(),
                    objects.sets.len()
                );
            }
            Ok(Exit::Ok)
        }
        Commands::Schema { kind } => {
            match kind {
                ObjectKind::Container => println!("{}", kedge_crds::schema_json()),
                ObjectKind::Containerset => println!("{}", kedge_crds::set_schema_json()),
            }
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
            let version = client.get("/version").await?;
            println!(
                "Server: kedge {} on host {}",
                version["version"].as_str().unwrap_or("?"),
                version["host"].as_str().unwrap_or("?")
            );
            Ok(Exit::Ok)
        }
    }
}

/// `container/web` (what `-o name` prints) names `web`, as in kubectl.
fn bare_name(name: &str) -> String {
    ["container/", "containers/", "containerset/", "containersets/"]
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .unwrap_or(name)
        .to_owned()
}

fn overrides(global: &GlobalArgs) -> Overrides {
    Overrides {
        server: global.server.clone(),
        token: global.token.clone(),
        context: global.context.clone(),
        namespace: global.namespace.clone(),
        config_path: global.kedgeconfig.clone(),
        certificate_authority: global.certificate_authority.clone(),
        token_file: global.token_file.clone(),
        client_certificate: global.client_certificate.clone(),
        client_key: global.client_key.clone(),
    }
}

fn resolve(global: &GlobalArgs) -> CliResult<Resolved> {
    let overrides = overrides(global);
    let file = config::load(&config::config_path(&overrides))?;
    config::resolve(&overrides, &file, local_token())
}

pub(crate) fn connect(global: &GlobalArgs) -> CliResult<(Resolved, Client)> {
    let resolved = resolve(global)?;
    let client = Client::new(&resolved)?;
    Ok((resolved, client))
}

/// The token of an agent on this machine, when this user may read it.
fn local_token() -> Option<String> {
    let state_dir =
        std::env::var_os("KEDGE_STATE_DIR").map_or_else(|| PathBuf::from("/var/lib/kedge"), PathBuf::from);
    let token = std::fs::read_to_string(kedge_controller::api::token_path(&state_dir)).ok()?;
    Some(token.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Parses and validates every Container spec in `files` (`-` is stdin); prints every error and fails
/// when any. ContainerSets in the files are validated too, and left out of the answer.
pub(crate) fn load_specs(files: &[PathBuf]) -> CliResult<Vec<Container>> {
    Ok(load_objects(files)?.containers)
}

/// Parses and validates every Container and ContainerSet in `files` (`-` is stdin); prints every error
/// and fails when any.
pub(crate) fn load_objects(files: &[PathBuf]) -> CliResult<Objects> {
    let mut parsed = ParsedObjects::default();
    let mut errors: Vec<SpecError> = Vec::new();
    for file in files {
        let (more, more_errors) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            kedge_crds::parse_objects_str("<stdin>", &text)
        } else {
            kedge_crds::parse_objects_paths(std::slice::from_ref(file))
        };
        parsed.extend(more);
        errors.extend(more_errors);
    }
    errors.extend(kedge_crds::validate_objects(&parsed));
    kedge_crds::sort_errors(&mut errors);
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("{error}");
        }
        return Err(CliError::usage(format!("{} error(s) in the input; nothing was changed", errors.len()))
            .hint("fix the fields named above; `kedge validate -f FILE` checks without a server"));
    }
    if parsed.containers.is_empty() && parsed.sets.is_empty() {
        return Err(CliError::usage("the input holds no Container or ContainerSet documents"));
    }
    Ok(Objects {
        containers: parsed.containers.into_iter().map(|p| p.container).collect(),
        sets: parsed.sets.into_iter().map(|p| p.set).collect(),
    })
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
        return Err(
            CliError::usage("reading from stdin, the apply set needs a name").hint("add --applyset NAME")
        );
    }
    let mut paths: Vec<String> = files
        .iter()
        .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()).display().to_string())
        .collect();
    paths.sort();
    let digest = Sha256::digest(paths.join("\n").as_bytes());
    Ok(format!("path-{}", &hex::encode(digest)[..16]))
}

/// What apply sends: the namespace filled in from `-n` and the apply set label added.
fn prepare(mut containers: Vec<Container>, namespace: &str, applyset: &str) -> Vec<Container> {
    for container in &mut containers {
        if container.metadata.namespace == kedge_crds::DEFAULT_NAMESPACE {
            container.metadata.namespace = namespace.to_owned();
        }
        container.metadata.labels.insert(APPLYSET_LABEL.to_owned(), applyset.to_owned());
    }
    containers
}

pub(crate) fn object_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{}/containers/{}", encode(namespace), encode(name))
}

/// The parts of a container a user declares: no status and no store-managed metadata.
fn declared(container: &Container) -> Value {
    let mut value = serde_json::to_value(container).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
    }
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in ["uid", "generation", "resourceVersion", "creationTimestamp"] {
            metadata.remove(key);
        }
    }
    value
}

/// What `diff` compares: what users declare, without the apply set label, which is bookkeeping (the same
/// file applied as part of a directory and on its own differs only in it).
fn compared_by_diff(container: &Container) -> Value {
    let mut value = declared(container);
    if let Some(labels) = value.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(APPLYSET_LABEL);
        if labels.is_empty() {
            value["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    value
}

async fn apply(args: ApplyArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let objects = load_objects(&args.files)?;
    let applyset = applyset_id(args.applyset.as_deref(), &args.files)?;
    let (resolved, client) = connect(global)?;
    let containers = prepare(objects.containers, &resolved.namespace, &applyset);
    let container_sets = sets::prepare(objects.sets, &resolved.namespace, &applyset);
    let suffix = match args.dry_run {
        DryRun::None => "",
        DryRun::Client => " (dry run)",
        DryRun::Server => " (server dry run)",
    };
    let mut failed: Option<CliError> = None;
    let mut applied_objects = Vec::new();
    for container in &containers {
        let (ns, name) = (&container.metadata.namespace, &container.metadata.name);
        let path = object_path(ns, name);
        let result = match args.dry_run {
            DryRun::Client => match client.get(&path).await {
                Ok(live) => {
                    let live: Container = serde_json::from_value(live).map_err(bad_answer)?;
                    let same = declared(&live) == declared(container);
                    Ok((
                        if same { "unchanged" } else { "configured" }.to_owned(),
                        serde_json::to_value(container),
                    ))
                }
                Err(error) if error.exit == Exit::NotFound => {
                    Ok(("created".to_owned(), serde_json::to_value(container)))
                }
                Err(error) => Err(error),
            },
            DryRun::None | DryRun::Server => {
                let path = if args.dry_run == DryRun::Server { format!("{path}?dryRun=All") } else { path };
                let body = serde_json::to_value(container).map_err(bad_answer)?;
                client.send(Method::PUT, &path, Some(&body)).await.map(|answer| {
                    (answer.outcome.unwrap_or_else(|| "configured".to_owned()), Ok(answer.body))
                })
            }
        };
        match result {
            Ok((outcome, object)) => {
                let object = object.unwrap_or_default();
                match args.output {
                    Some(OutputFormat::Name) => println!("container/{name}"),
                    Some(OutputFormat::Json | OutputFormat::Yaml) => applied_objects.push(object),
                    _ => println!("container/{name} {outcome}{suffix}"),
                }
            }
            Err(error) => {
                eprintln!("error: container/{name}: {}", error.message);
                failed.get_or_insert(error);
            }
        }
    }
    for set in &container_sets {
        let name = &set.metadata.name;
        match sets::apply_one(&client, set, args.dry_run).await {
            Ok((outcome, object)) => match args.output {
                Some(OutputFormat::Name) => println!("containerset/{name}"),
                Some(OutputFormat::Json | OutputFormat::Yaml) => applied_objects.push(object),
                _ => println!("containerset/{name} {outcome}{suffix}"),
            },
            Err(error) => {
                eprintln!("error: containerset/{name}: {}", error.message);
                failed.get_or_insert(error);
            }
        }
    }
    print_objects(args.output, applied_objects, true);
    if let Some(error) = failed {
        let message = "some specs were not applied (see above); nothing was pruned";
        return Err(CliError { message: message.to_owned(), ..error });
    }
    if args.prune {
        let wanted: BTreeSet<(String, String)> =
            containers.iter().map(|c| (c.metadata.namespace.clone(), c.metadata.name.clone())).collect();
        let selector = encode(&format!("{APPLYSET_LABEL}={applyset}"));
        let list = client.get(&format!("/api/v1/containers?labelSelector={selector}")).await?;
        for item in list_items(&list)? {
            let key = (item.metadata.namespace.clone(), item.metadata.name.clone());
            // A set's children (both labels: what the controller writes) belong to the set, which
            // writes them back: never pruned on their own.
            let labels = &item.metadata.labels;
            let child = labels.contains_key(kedge_crds::container_set::SET_LABEL)
                && labels.contains_key(kedge_crds::container_set::SET_REVISION_LABEL);
            if wanted.contains(&key) || child {
                continue;
            }
            if args.dry_run == DryRun::None || args.dry_run == DryRun::Server {
                let mut path = object_path(&key.0, &key.1);
                path.push_str(&format!(
                    "?resourceVersion={}",
                    item.metadata.resource_version.unwrap_or_default()
                ));
                if args.dry_run == DryRun::Server {
                    path.push_str("&dryRun=All");
                }
                client.send(Method::DELETE, &path, None).await?;
            }
            println!("container/{} pruned{suffix}", key.1);
        }
        let wanted_sets: BTreeSet<(String, String)> =
            container_sets.iter().map(|s| (s.metadata.namespace.clone(), s.metadata.name.clone())).collect();
        sets::prune(&client, &wanted_sets, &applyset, args.dry_run, suffix).await?;
    }
    Ok(Exit::Ok)
}

pub(crate) fn bad_answer(error: impl std::fmt::Display) -> CliError {
    CliError::new(Exit::Server, format!("unexpected answer from the server: {error}"))
}

pub(crate) fn list_items(list: &Value) -> CliResult<Vec<Container>> {
    let items = list.get("items").cloned().unwrap_or(Value::Array(Vec::new()));
    serde_json::from_value(items).map_err(bad_answer)
}

/// Prints objects as JSON or YAML: one as itself, several as a `List`.
fn print_objects(output: Option<OutputFormat>, mut objects: Vec<Value>, as_list: bool) {
    let value = if objects.len() == 1 && !as_list {
        objects.remove(0)
    } else if objects.is_empty() && !matches!(output, Some(OutputFormat::Json | OutputFormat::Yaml)) {
        return;
    } else {
        json!({ "apiVersion": kedge_crds::API_VERSION, "kind": "List", "items": objects })
    };
    match output {
        Some(OutputFormat::Json) => println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default()),
        Some(OutputFormat::Yaml) => print!("{}", output::to_yaml(&value)),
        _ => {}
    }
}

async fn get(args: GetArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let ns = resolved.namespace.clone();
    let selector =
        args.selector.as_deref().map(|s| format!("labelSelector={}", encode(s))).unwrap_or_default();
    let wide = args.output == Some(OutputFormat::Wide);
    let now = Utc::now();
    match args.resource {
        Resource::Containers => {
            let options = TableOptions { wide, namespaces: args.all_namespaces };
            let list_path = if args.all_namespaces {
                format!("/api/v1/containers?{selector}")
            } else {
                format!("/api/v1/namespaces/{}/containers?{selector}", encode(&ns))
            };
            let (containers, invalid, revision) = match &args.name {
                Some(name) => {
                    let one: Container = serde_json::from_value(client.get(&object_path(&ns, name)).await?)
                        .map_err(bad_answer)?;
                    let revision = if args.watch { list_revision(&client.get(&list_path).await?) } else { 0 };
                    (vec![one], Vec::new(), revision)
                }
                None => {
                    let list = client.get(&list_path).await?;
                    let invalid = list["invalid"].as_array().cloned().unwrap_or_default();
                    (list_items(&list)?, invalid, list_revision(&list))
                }
            };
            // Specs the store holds but that cannot be read: shown, never hidden, and why on stderr.
            for entry in &invalid {
                eprintln!(
                    "warning: container {}/{}: the stored spec cannot be read, so no agent acts on it: {}",
                    entry["namespace"].as_str().unwrap_or_default(),
                    entry["name"].as_str().unwrap_or_default(),
                    entry["error"].as_str().unwrap_or_default()
                );
            }
            let mut rows: Vec<Vec<String>> =
                containers.iter().map(|c| output::container_row(c, options, now)).collect();
            rows.extend(invalid.iter().map(|entry| output::invalid_container_row(entry, options)));
            let header = output::container_header(options);
            let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
            match args.output {
                None | Some(OutputFormat::Wide) => {
                    if rows.is_empty() && !args.watch {
                        eprintln!("No containers found in {}.", namespace_words(&ns, args.all_namespaces));
                    } else {
                        for row in &rows {
                            for (index, cell) in row.iter().enumerate() {
                                widths[index] = widths[index].max(cell.len()).max(12);
                            }
                        }
                        print!("{}", output::containers_table(&containers, &invalid, options, now));
                    }
                }
                Some(OutputFormat::Name) => {
                    containers.iter().for_each(|c| println!("container/{}", c.metadata.name))
                }
                format => {
                    let objects =
                        containers.iter().map(|c| serde_json::to_value(c).unwrap_or_default()).collect();
                    print_objects(format, objects, args.name.is_none());
                }
            }
            if !args.watch {
                return Ok(Exit::Ok);
            }
            if rows.is_empty() && matches!(args.output, None | Some(OutputFormat::Wide)) {
                println!(
                    "{}",
                    output::table_row(&widths, &header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                );
            }
            let _ = std::io::stdout().flush();
            let mut path = format!("/api/v1/watch/containers?resourceVersion={revision}&{selector}");
            if !args.all_namespaces {
                path.push_str(&format!("&namespace={}", encode(&ns)));
            }
            if let Some(name) = &args.name {
                path.push_str(&format!("&name={}", encode(name)));
            }
            client
                .stream(&path, |event| {
                    let container: Container =
                        serde_json::from_value(event["object"].clone()).map_err(bad_answer)?;
                    match args.output {
                        None | Some(OutputFormat::Wide) => {
                            println!(
                                "{}",
                                output::table_row(
                                    &widths,
                                    &output::container_row(&container, options, Utc::now())
                                )
                            )
                        }
                        Some(OutputFormat::Name) => println!("container/{}", container.metadata.name),
                        Some(OutputFormat::Json) => {
                            println!("{}", serde_json::to_string(&event["object"]).unwrap_or_default())
                        }
                        Some(OutputFormat::Yaml) => print!("---\n{}", output::to_yaml(&event["object"])),
                    }
                    let _ = std::io::stdout().flush();
                    Ok(true)
                })
                .await?;
            Ok(Exit::Ok)
        }
        Resource::Containersets => sets::get(&args, &client, &ns).await,
        Resource::Upgrades => crate::upgrade::get(args.name.as_deref(), args.output, global).await,
        Resource::Hosts => {
            if args.watch {
                return watch_hosts(&client, args.name.as_deref(), wide).await;
            }
            let (hosts, per_host) = hosts_and_counts(&client, args.name.as_deref()).await?;
            match args.output {
                None | Some(OutputFormat::Wide) => {
                    let rows: Vec<Vec<String>> = hosts
                        .iter()
                        .map(|h| {
                            let count =
                                h["name"].as_str().and_then(|n| per_host.get(n)).copied().unwrap_or(0);
                            output::host_row(h, count, wide, now)
                        })
                        .collect();
                    if rows.is_empty() {
                        eprintln!("No hosts found.");
                    } else {
                        print!("{}", output::table(&output::host_header(wide), &rows));
                    }
                }
                Some(OutputFormat::Name) => {
                    hosts.iter().for_each(|h| println!("host/{}", h["name"].as_str().unwrap_or_default()))
                }
                format => print_objects(format, hosts, args.name.is_none()),
            }
            Ok(Exit::Ok)
        }
        Resource::Events => {
            let mut query = String::new();
            if !args.all_namespaces {
                query.push_str(&format!("namespace={}", encode(&ns)));
            }
            if let Some(name) = &args.name {
                query.push_str(&format!("&object={}", encode(name)));
            }
            let list = client.get(&format!("/api/v1/events?{query}")).await?;
            let mut events: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
            output::sort_events(&mut events);
            let header = output::event_header(wide);
            let rows: Vec<Vec<String>> = events.iter().map(|e| output::event_row(e, wide, now)).collect();
            let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
            for row in &rows {
                for (index, cell) in row.iter().enumerate() {
                    widths[index] = widths[index].max(cell.len());
                }
            }
            match args.output {
                None | Some(OutputFormat::Wide) => {
                    if rows.is_empty() && !args.watch {
                        eprintln!("No events found in {}.", namespace_words(&ns, args.all_namespaces));
                    } else {
                        print!("{}", output::table(&header, &rows));
                    }
                }
                Some(OutputFormat::Name) => {
                    return Err(
                        CliError::usage("events have no names to print").hint("use -o json or -o yaml")
                    )
                }
                format => print_objects(format, events, true),
            }
            if !args.watch {
                return Ok(Exit::Ok);
            }
            let _ = std::io::stdout().flush();
            let path = format!("/api/v1/watch/events?resourceVersion={}&{query}", list_revision(&list));
            client
                .stream(&path, |event| {
                    match args.output {
                        Some(OutputFormat::Json) => {
                            println!("{}", serde_json::to_string(&event["object"]).unwrap_or_default())
                        }
                        Some(OutputFormat::Yaml) => print!("---\n{}", output::to_yaml(&event["object"])),
                        _ => println!(
                            "{}",
                            output::table_row(
                                &widths,
                                &output::event_row(&event["object"], wide, Utc::now())
                            )
                        ),
                    }
                    let _ = std::io::stdout().flush();
                    Ok(true)
                })
                .await?;
            Ok(Exit::Ok)
        }
    }
}

fn namespace_words(ns: &str, all: bool) -> String {
    if all {
        "any namespace".to_owned()
    } else {
        format!("namespace {ns}")
    }
}

fn list_revision(list: &Value) -> i64 {
    list["metadata"]["resourceVersion"].as_str().and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// The hosts (one, when `name` is given) and how many containers each runs.
async fn hosts_and_counts(
    client: &Client,
    name: Option<&str>,
) -> CliResult<(Vec<Value>, HashMap<String, usize>)> {
    let hosts = client.get("/api/v1/hosts").await?;
    let mut hosts: Vec<Value> = hosts["items"].as_array().cloned().unwrap_or_default();
    if let Some(name) = name {
        hosts.retain(|h| h["name"].as_str() == Some(name));
        if hosts.is_empty() {
            return Err(CliError::new(Exit::NotFound, format!("host {name} not found"))
                .hint("list them with `kedge get hosts`"));
        }
    }
    let containers = list_items(&client.get("/api/v1/containers").await?)?;
    let mut per_host: HashMap<String, usize> = HashMap::new();
    for container in &containers {
        if let Some(host) = container.status.as_ref().and_then(|s| s.host.clone()) {
            *per_host.entry(host).or_default() += 1;
        }
    }
    Ok((hosts, per_host))
}

/// How often `get hosts -w` looks again: hosts change by heartbeat, so there is no event to follow.
const HOSTS_WATCH_PERIOD: Duration = Duration::from_secs(2);

/// `get hosts -w`: the table, then a row each time a host appears or its readiness, version,
/// container count or labels change (not its heartbeat age), until interrupted.
async fn watch_hosts(client: &Client, name: Option<&str>, wide: bool) -> CliResult<Exit> {
    let mut shown: HashMap<String, Value> = HashMap::new();
    let mut header = true;
    loop {
        let (hosts, per_host) = hosts_and_counts(client, name).await?;
        let mut rows = Vec::new();
        for host in &hosts {
            let host_name = host["name"].as_str().unwrap_or_default().to_owned();
            let count = per_host.get(&host_name).copied().unwrap_or(0);
            let fingerprint = json!([
                host["ready"],
                host["version"],
                host["labels"],
                host["dockerVersion"],
                count,
                host["upgrade"]["state"]
            ]);
            if shown.get(&host_name) != Some(&fingerprint) {
                rows.push(output::host_row(host, count, wide, Utc::now()));
                shown.insert(host_name, fingerprint);
            }
        }
        if !rows.is_empty() {
            let table = output::table(&output::host_header(wide), &rows);
            let body =
                if header { table.as_str() } else { table.split_once('\n').map_or("", |(_, rest)| rest) };
            print!("{body}");
            header = false;
        }
        tokio::time::sleep(HOSTS_WATCH_PERIOD).await;
    }
}

/// `kedge logs NAME [-f] [--tail N]`: the container's output, from the agent of its host.
pub(crate) async fn logs(name: &str, follow: bool, tail: usize, global: &GlobalArgs) -> CliResult<Exit> {
    use std::io::Write;
    let (resolved, client) = connect(global)?;
    let path = format!("{}/logs?tail={tail}&follow={follow}", object_path(&resolved.namespace, name));
    client
        .lines(&path, |line| {
            let text = line["text"].as_str().unwrap_or_default();
            let written = if line["stream"] == "stderr" {
                std::io::stderr().write_all(text.as_bytes())
            } else {
                std::io::stdout().write_all(text.as_bytes()).and_then(|()| std::io::stdout().flush())
            };
            written.map_err(|e| CliError::new(Exit::Usage, format!("cannot write the logs: {e}")))
        })
        .await?;
    Ok(Exit::Ok)
}

async fn describe(name: &str, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let ns = &resolved.namespace;
    let container: Container =
        serde_json::from_value(client.get(&object_path(ns, name)).await?).map_err(bad_answer)?;
    let events =
        client.get(&format!("/api/v1/events?namespace={}&object={}", encode(ns), encode(name))).await?;
    let mut events: Vec<Value> = events["items"].as_array().cloned().unwrap_or_default();
    output::sort_events(&mut events);
    let recent = events.split_off(events.len().saturating_sub(10));
    print!("{}", output::describe_container(&container, &recent, Utc::now()));
    Ok(Exit::Ok)
}

async fn diff(files: &[PathBuf], global: &GlobalArgs) -> CliResult<Exit> {
    let objects = load_objects(files)?;
    let containers = objects.containers;
    // The apply set label is not compared, so any value does.
    let applyset = "diff";
    let (resolved, client) = connect(global)?;
    let colour = output::use_colour(std::io::stdout().is_terminal());
    let mut changed = false;
    for container in prepare(containers, &resolved.namespace, applyset) {
        let (ns, name) = (&container.metadata.namespace, &container.metadata.name);
        let live = match client.get(&object_path(ns, name)).await {
            Ok(live) => {
                let live: Container = serde_json::from_value(live).map_err(bad_answer)?;
                output::to_yaml(&compared_by_diff(&live))
            }
            Err(error) if error.exit == Exit::NotFound => String::new(),
            Err(error) => return Err(error),
        };
        let local = output::to_yaml(&compared_by_diff(&container));
        let text = unified_diff(&live, &local, &format!("{ns}/{name}"));
        changed |= print_diff(&text, colour);
    }
    for set in sets::prepare(objects.sets, &resolved.namespace, applyset) {
        let (live, local) = sets::diff_texts(&client, &set).await?;
        let key = format!("{}/{}", set.metadata.namespace, set.metadata.name);
        let text = unified_diff(&live, &local, &key).replace("/container/", "/containerset/");
        changed |= print_diff(&text, colour);
    }
    Ok(if changed { Exit::Changes } else { Exit::Ok })
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
pub fn unified_diff(live: &str, local: &str, key: &str) -> String {
    if live == local {
        return String::new();
    }
    similar::TextDiff::from_lines(live, local)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live/container/{key}"), &format!("local/container/{key}"))
        .to_string()
}

async fn delete(args: DeleteArgs, global: &GlobalArgs) -> CliResult<Exit> {
    let (resolved, client) = connect(global)?;
    let ns = resolved.namespace.clone();
    let mut targets: Vec<(String, String, Option<String>)> = Vec::new();
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
    let suffix = if args.dry_run == DryRun::None { "" } else { " (dry run)" };
    let mut failed = None;
    let mut set_targets: Vec<(String, String)> = Vec::new();
    if args.kind == Some(ObjectKind::Containerset) {
        if args.selector.is_some() {
            return Err(CliError::usage("ContainerSets are deleted by name or by file, not by selector"));
        }
        set_targets.extend(args.names.iter().map(|name| (ns.clone(), name.clone())));
    } else {
        for name in &args.names {
            targets.push((ns.clone(), name.clone(), None));
        }
    }
    if !args.files.is_empty() {
        let objects = load_objects(&args.files)?;
        for set in sets::prepare(objects.sets, &ns, "delete") {
            set_targets.push((set.metadata.namespace, set.metadata.name));
        }
        for container in objects.containers {
            let mut target_ns = container.metadata.namespace.clone();
            if target_ns == kedge_crds::DEFAULT_NAMESPACE {
                target_ns = ns.clone();
            }
            targets.push((target_ns, container.metadata.name, None));
        }
    }
    if let Some(selector) = &args.selector {
        let path = if args.all_namespaces {
            format!("/api/v1/containers?labelSelector={}", encode(selector))
        } else {
            format!("/api/v1/namespaces/{}/containers?labelSelector={}", encode(&ns), encode(selector))
        };
        for container in list_items(&client.get(&path).await?)? {
            targets.push((
                container.metadata.namespace,
                container.metadata.name,
                container.metadata.resource_version,
            ));
        }
        if targets.is_empty() {
            eprintln!("No containers match `{selector}`.");
        }
    }
    for (target_ns, name) in set_targets {
        match sets::delete(&client, &target_ns, &name, None, args.dry_run).await {
            Ok(()) => println!("containerset/{name} deleted{suffix}"),
            Err(error) if error.exit == Exit::NotFound && args.ignore_not_found => {}
            Err(error) => {
                eprintln!("error: containerset/{name}: {}", error.message);
                failed.get_or_insert(error);
            }
        }
    }
    for (target_ns, name, resource_version) in targets {
        let mut path = object_path(&target_ns, &name);
        let mut query = Vec::new();
        if let Some(rv) = resource_version {
            query.push(format!("resourceVersion={rv}"));
        }
        if args.dry_run != DryRun::None {
            query.push("dryRun=All".to_owned());
        }
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        match client.send(Method::DELETE, &path, None).await {
            Ok(_) => println!("container/{name} deleted{suffix}"),
            Err(error) if error.exit == Exit::NotFound && args.ignore_not_found => {}
            Err(error) => {
                eprintln!("error: container/{name}: {}", error.message);
                failed.get_or_insert(error);
            }
        }
    }
    match failed {
        Some(error) => {
            Err(CliError { message: "some containers were not deleted (see above)".to_owned(), ..error })
        }
        None => Ok(Exit::Ok),
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
        let list = client.get(&format!("/api/v1/namespaces/{}/containers", encode(&ns))).await?;
        let current = list_items(&list)?.into_iter().find(|c| c.metadata.name == name);
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
            list_revision(&list),
            encode(&ns),
            encode(&name)
        );
        let mut outcome = Ok(());
        client
            .stream(&path, |event| {
                let kind = event["type"].as_str().unwrap_or_default().to_owned();
                let container: Container =
                    serde_json::from_value(event["object"].clone()).map_err(bad_answer)?;
                match (&for_what, kind.as_str()) {
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
            let mut shown = serde_json::to_value(&file).unwrap_or_default();
            // Tokens are secrets: show that one is set, not what it is.
            if let Some(contexts) = shown.get_mut("contexts").and_then(Value::as_object_mut) {
                for context in contexts.values_mut() {
                    if context.get("token").is_some() {
                        context["token"] = json!("REDACTED");
                    }
                }
            }
            print!("{}", output::to_yaml(&shown));
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
        for bad in ["ready", "condition=", "condition=Ready=maybe"] {
            assert_eq!(parse_wait_for(bad).unwrap_err().exit, Exit::Usage, "{bad}");
        }
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
        assert_eq!(unified_diff("a: 1\n", "a: 1\n", "ns/x"), "");
        let text = unified_diff("a: 1\nb: 2\n", "a: 1\nb: 3\n", "ns/x");
        assert_eq!(
            text,
            "--- live/container/ns/x\n+++ local/container/ns/x\n@@ -1,2 +1,2 @@\n a: 1\n-b: 2\n+b: 3\n"
        );
    }
}
