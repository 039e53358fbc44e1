//! The CLI's lowest layer: reaching the API, reading the input files, and decoding list and watch
//! answers into kedge's types. Every command builds on it; it builds on no command.

use std::io::Read;
use std::path::{Path, PathBuf};

use kedge_crds::compose::ComposeOptions;
use kedge_crds::event::Event;
use kedge_crds::{Container, Objects, ParsedObjects, Resource, SpecError};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::client::{encode, Client};
use crate::config::{self, Overrides, Resolved};
use crate::error::{CliError, CliResult, Exit};
use crate::output;
use crate::types::List;
use crate::{GlobalArgs, OutputFormat};

/// The label that ties a container to the apply set it was applied with (`apply --prune`).
pub const APPLYSET_LABEL: &str = "kedge.io/applyset";

pub(crate) fn overrides(global: &GlobalArgs) -> Overrides {
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
pub(crate) fn load_specs(files: &[PathBuf], compose: &ComposeOptions) -> CliResult<Vec<Container>> {
    Ok(load_objects(files, compose)?.containers)
}

/// Parses and validates every Container and ContainerSet in `files` (`-` is stdin); prints every error
/// and fails when any.
pub(crate) fn load_objects(files: &[PathBuf], compose: &ComposeOptions) -> CliResult<Objects> {
    Ok(load_objects_from(files, compose)?.0)
}

/// The file each loaded object came from, in the order of [`Objects`]' lists.
pub(crate) struct Origins {
    pub containers: Vec<String>,
    pub sets: Vec<String>,
    pub secrets: Vec<String>,
    pub gitsources: Vec<String>,
    /// The documents themselves, to place a field the server refuses at its line.
    pub container_documents: Vec<kedge_crds::ParsedContainer>,
    pub set_documents: Vec<kedge_crds::ParsedContainerSet>,
}

impl Origins {
    /// `FILE:LINE:COL: FIELD: MESSAGE` for a field the server refused in the `index`th Container
    /// (or ContainerSet, with `set`) of the input; the bare field when the index is unknown.
    pub(crate) fn place(&self, set: bool, index: usize, field: &str, message: &str) -> String {
        let error = kedge_crds::validate::FieldError {
            path: field.to_owned(),
            message: message.to_owned(),
            on_key: false,
        };
        let placed = if set {
            self.set_documents.get(index).map(|document| document.place(error))
        } else {
            self.container_documents.get(index).map(|document| document.place(error))
        };
        placed.map_or_else(|| format!("{field}: {message}"), |placed| placed.to_string())
    }
}

/// [`load_objects`], also answering where each object came from.
pub(crate) fn load_objects_from(
    files: &[PathBuf],
    compose: &ComposeOptions,
) -> CliResult<(Objects, Origins)> {
    let (parsed, errors) = parse_files(files, compose)?;
    validated(parsed, errors, &[])
}

/// [`load_objects_from`] for a command that talks to a server (`apply`, `diff`): a `dependsOn`,
/// `networkMode: container:NAME` or `links` entry may name a spec the server holds already. A
/// document without a namespace (or with `default`) goes to `namespace` (the `-n`/context one), so
/// that is where its targets are looked up.
pub(crate) async fn load_objects_live(
    files: &[PathBuf],
    compose: &ComposeOptions,
    client: &Client,
    namespace: &str,
) -> CliResult<(Objects, Origins)> {
    let (mut parsed, errors) = parse_files(files, compose)?;
    // Resolved first (as `objects::prepare` would), so that errors name the namespace written to.
    let resolve = |written: &mut String| {
        if written == kedge_crds::DEFAULT_NAMESPACE {
            *written = namespace.to_owned();
        }
    };
    parsed.containers.iter_mut().for_each(|p| resolve(&mut p.container.metadata.namespace));
    parsed.unreadable_containers.iter_mut().for_each(|c| resolve(&mut c.metadata.namespace));
    let mut live = Vec::new();
    for (namespace, name) in
        kedge_crds::validate::outside_targets(&parsed.containers, &parsed.unreadable_containers)
    {
        match client.get(&resource_path::<Container>(&namespace, &name)).await {
            Ok(answer) => {
                let Ok(found) = crate::error::from_server::<Container>(answer) else { continue };
                live.push(found);
            }
            Err(error) if error.exit == Exit::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    validated(parsed, errors, &live)
}

/// Reads every file; a Compose file among them (recognised by its shape) is converted with
/// `compose`'s options, its warnings printed here.
fn parse_files(files: &[PathBuf], compose: &ComposeOptions) -> CliResult<(ParsedObjects, Vec<SpecError>)> {
    let mut parsed = ParsedObjects::default();
    let mut errors: Vec<SpecError> = Vec::new();
    for file in files {
        let (more, more_errors) = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            kedge_crds::parse_objects_str_with("<stdin>", &text, Path::new("."), compose)
        } else {
            kedge_crds::parse_objects_paths_with(std::slice::from_ref(file), compose)
        };
        for warning in &more.warnings {
            eprintln!("warning: {warning}");
        }
        parsed.extend(more);
        errors.extend(more_errors);
    }
    Ok((parsed, errors))
}

fn validated(
    parsed: ParsedObjects,
    mut errors: Vec<SpecError>,
    live: &[Container],
) -> CliResult<(Objects, Origins)> {
    errors.extend(kedge_crds::validate_objects_with(&parsed, live));
    kedge_crds::sort_errors(&mut errors);
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("{error}");
        }
        return Err(CliError::usage(format!("{} error(s) in the input; nothing was changed", errors.len()))
            .hint("fix the fields named above; `kedge validate -f FILE` checks without a server"));
    }
    if parsed.containers.is_empty()
        && parsed.sets.is_empty()
        && parsed.secrets.is_empty()
        && parsed.gitsources.is_empty()
    {
        return Err(CliError::usage(
            "the input holds no Container, ContainerSet, Secret or GitSource documents",
        ));
    }
    let origins = Origins {
        containers: parsed.containers.iter().map(|p| p.file.clone()).collect(),
        sets: parsed.sets.iter().map(|p| p.file.clone()).collect(),
        secrets: parsed.secrets.iter().map(|p| p.file.clone()).collect(),
        gitsources: parsed.gitsources.iter().map(|p| p.file.clone()).collect(),
        container_documents: parsed.containers.clone(),
        set_documents: parsed.sets.clone(),
    };
    let objects = Objects {
        containers: parsed.containers.into_iter().map(|p| p.container).collect(),
        sets: parsed.sets.into_iter().map(|p| p.set).collect(),
        secrets: parsed.secrets.into_iter().map(|p| p.secret).collect(),
        gitsources: parsed.gitsources.into_iter().map(|p| p.source).collect(),
    };
    Ok((objects, origins))
}

/// `/api/v1/namespaces/NS/PLURAL/NAME`: where the API keeps one object of a crds kind.
pub(crate) fn resource_path<K: Resource>(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{}/{}/{}", encode(namespace), K::PLURAL, encode(name))
}

/// A Container's path (the routes of its logs, restart and recreate are below it).
pub(crate) fn object_path(namespace: &str, name: &str) -> String {
    resource_path::<Container>(namespace, name)
}

pub(crate) fn bad_answer(error: impl std::fmt::Display) -> CliError {
    crate::error::bad_answer(error)
}

/// Items of a list that the API passes through from the store as they are (hosts, events): each is
/// read on its own, the raw JSON kept for `-o json|yaml`; one that is not of its type is left out.
pub(crate) fn typed_items<T: DeserializeOwned>(items: Vec<Value>) -> Vec<(Value, T)> {
    items
        .into_iter()
        .filter_map(|raw| crate::error::from_server::<T>(raw.clone()).ok().map(|typed| (raw, typed)))
        .collect()
}

pub(crate) fn list_items(list: &Value) -> CliResult<Vec<Container>> {
    Ok(List::<Container>::from_answer(list.clone())?.items)
}

/// Prints objects as JSON or YAML: one as itself, several as a `List`.
pub(crate) fn print_objects(output: Option<OutputFormat>, mut objects: Vec<Value>, as_list: bool) {
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

/// The last ten events about the object `name` of `namespace` that `keep` keeps, oldest first (a
/// describe page's `Events:`).
pub(crate) async fn recent_events(
    client: &Client,
    namespace: &str,
    name: &str,
    keep: impl Fn(&Event) -> bool,
) -> CliResult<Vec<Event>> {
    let path = format!("/api/v1/events?namespace={}&object={}", encode(namespace), encode(name));
    let list = List::<Value>::from_answer(client.get(&path).await?)?;
    let mut events: Vec<Event> =
        typed_items::<Event>(list.items).into_iter().map(|(_, event)| event).filter(|e| keep(e)).collect();
    output::sort_events(&mut events);
    Ok(events.split_off(events.len().saturating_sub(10)))
}

#[cfg(test)]
mod tests {
    use super::{typed_items, Origins};
    use crate::error::from_server;
    use kedge_crds::Container;
    use serde_json::json;

    /// A newer agent reports a status field this CLI does not know: `get` still shows the
    /// container (it used to drop it from lists and fail a single `get`), and a wrong type is
    /// still an error.
    #[test]
    fn objects_from_a_newer_server_are_read_without_the_fields_this_cli_does_not_know() {
        let newer = json!({
            "apiVersion": "kedge.io/v1", "kind": "Container",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"image": "nginx:1.27", "futureKnob": true},
            "status": {"observedGeneration": 1, "somethingNew": {"a": 1}},
        });
        let read: Container = from_server(newer.clone()).expect("read without the new fields");
        assert_eq!(read.metadata.name, "web");
        assert_eq!(read.spec.image.to_string(), "nginx:1.27");
        let listed: Vec<(serde_json::Value, Container)> = typed_items(vec![newer.clone(), newer]);
        assert_eq!(listed.len(), 2, "a list keeps both");
        let wrong = json!({"apiVersion": "kedge.io/v1", "kind": "Container", "metadata": {"name": 3}, "spec": {"image": "x"}});
        let error = from_server::<Container>(wrong).expect_err("a wrong type is an error");
        assert!(error.message.contains("metadata.name"), "{}", error.message);
    }

    #[test]
    fn a_field_the_server_refused_is_placed_at_its_line() {
        let text = "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: a\nspec:\n  image: busybox\n  pidMode: host\n\
                    ---\napiVersion: kedge.io/v1\nkind: ContainerSet\nmetadata:\n  name: s\nspec:\n  replicas: 1\n  template:\n    spec:\n      image: busybox\n      devices: [/dev/fuse]\n";
        let (parsed, errors) = kedge_crds::parse_objects_str("in.yaml", text);
        assert!(errors.is_empty(), "{errors:?}");
        let origins = Origins {
            containers: vec!["in.yaml".into()],
            sets: vec!["in.yaml".into()],
            secrets: Vec::new(),
            gitsources: Vec::new(),
            container_documents: parsed.containers,
            set_documents: parsed.sets,
        };
        assert_eq!(origins.place(false, 0, "spec.pidMode", "refused"), "in.yaml:7:12: spec.pidMode: refused");
        assert_eq!(
            origins.place(true, 0, "spec.template.spec.devices[0]", "refused"),
            "in.yaml:18:17: spec.template.spec.devices[0]: refused"
        );
        assert_eq!(origins.place(false, 5, "spec.pidMode", "refused"), "spec.pidMode: refused");
    }
}
