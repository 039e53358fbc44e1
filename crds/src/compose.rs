//! Compose files as input: a file shaped like Compose's (top-level `services:`, no `apiVersion`) is
//! turned into kedge documents (a `Container` per service, a `ContainerSet` per service with
//! `deploy.replicas`), which then go through the same parsing and validation as any spec file.
//!
//! Compose's own rules are applied first: interpolation from the environment and the `.env` file
//! beside the compose file (`interpolate.rs`), `env_file`, relative bind paths against the file's
//! directory, profiles, and the project's naming (volumes `<project>_<vol>`, networks
//! `<project>_<net>`, as Compose names them, so that data is found by either tool). The support matrix
//! is `service.rs`'s one `match` over the keys of a service: every key is converted, warned about (no
//! runtime effect) or refused with its file:line:column; nothing is dropped silently. docs/compose.md
//! is the user's side of it.
//!
//! The generated documents carry a position index from kedge's field paths to the Compose keys they
//! came from, so a rule kedge's validation finds later (`spec.resources.memory`) still points at the
//! line of the Compose file that set it.

mod interpolate;
mod service;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::located::SpecError;
use crate::yaml::{child_key_path, PositionIndex, PositionedDocument};

/// What a Compose file is read with, besides the file: what `kedge convert`'s `-p`, `--env-file`
/// and `--profile` give, and the environment variables interpolation reads (the CLI passes its
/// process's; crds reads none itself).
#[derive(Clone, Debug, Default)]
pub struct ComposeOptions {
    /// The project name (`-p`); else the file's `name:`, else its directory's name.
    pub project: Option<String>,
    /// The environment: it wins over the `.env` file, as in Compose.
    pub environment: BTreeMap<String, String>,
    /// Files read instead of the `.env` beside the compose file (`--env-file`).
    pub env_files: Vec<PathBuf>,
    /// Active profiles (`--profile`; also `COMPOSE_PROFILES` in the environment, comma-separated).
    pub profiles: Vec<String>,
    /// The namespace the documents go into; the project's name when not given (a GitSource gives
    /// its own, since it applies only there).
    pub namespace: Option<String>,
    /// The files of a Git commit, by their path from the repository's root, when the Compose file
    /// was read from one (a GitSource) rather than from the disk: `.env` and `env_file`s are read
    /// from here, never from the disk, and a relative bind path is refused (the commit is nowhere on
    /// the host the container runs on).
    pub commit_files: Option<BTreeMap<String, String>>,
}

/// Whether a document is a Compose file: a map with `services` and no `apiVersion`.
pub fn is_compose(value: &Value) -> bool {
    value.as_object().is_some_and(|map| map.contains_key("services") && !map.contains_key("apiVersion"))
}

/// The kedge documents of one Compose file, with every error and warning found converting it.
pub(crate) struct Converted {
    pub documents: Vec<PositionedDocument>,
    pub errors: Vec<SpecError>,
    pub warnings: Vec<SpecError>,
}

/// Converts one Compose document read from `file`, whose directory is `directory`.
pub(crate) fn convert(
    file: &str,
    directory: &Path,
    document: PositionedDocument,
    options: &ComposeOptions,
) -> Converted {
    let directory = match options.commit_files {
        Some(_) => normalize(&Path::new("/").join(directory)),
        None => absolute(directory),
    };
    let mut report =
        Report { file, positions: &document.positions, errors: Vec::new(), warnings: Vec::new() };
    let environment = environment(&directory, options, &mut report);
    let mut value = document.value.clone();
    interpolate_tree(&mut value, "", &environment, &mut report, &mut BTreeSet::new());
    let Value::Object(top) = &value else {
        return report.finish(Vec::new());
    };
    for key in top.keys() {
        match key.as_str() {
            "version" | "name" | "services" | "volumes" | "networks" | "secrets" | "configs" => {}
            key if key.starts_with("x-") => {}
            _ => report.unsupported(key, key),
        }
    }
    let Some(project) = project_name(options, top, &directory, &mut report) else {
        return report.finish(Vec::new());
    };
    let volumes = top_level(top, "volumes", &project, &mut report);
    let mut networks = top_level(top, "networks", &project, &mut report);
    let secrets = file_sources(top, "secrets", &mut report);
    let configs = file_sources(top, "configs", &mut report);
    networks.entry("default".to_owned()).or_insert_with(|| format!("{project}_default"));
    let mut profiles = options.profiles.clone();
    if let Some(listed) = environment.get("COMPOSE_PROFILES") {
        profiles.extend(listed.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned));
    }
    let project = Project {
        name: project,
        directory,
        environment,
        volumes,
        networks,
        profiles,
        namespace: options.namespace.clone(),
        commit_files: options.commit_files.clone(),
        secrets,
        configs,
    };
    let services = match top.get("services") {
        Some(Value::Object(services)) => services.clone(),
        _ => {
            report.error("services", "`services` must be a map of service names to services");
            Map::new()
        }
    };
    let documents = service::convert_services(&project, &services, &mut report);
    report.finish(documents)
}

/// A project's settings every service reads.
pub(crate) struct Project {
    /// As Compose normalizes it: lowercase letters, digits, `-` and `_`.
    pub name: String,
    pub directory: PathBuf,
    /// The environment, the `.env` file's variables under it.
    pub environment: BTreeMap<String, String>,
    /// Top-level volume name to the Docker volume's name.
    pub volumes: BTreeMap<String, String>,
    /// Top-level network name (and `default`) to the Docker network's name.
    pub networks: BTreeMap<String, String>,
    pub profiles: Vec<String>,
    /// [`ComposeOptions::namespace`].
    pub namespace: Option<String>,
    /// [`ComposeOptions::commit_files`].
    pub commit_files: Option<BTreeMap<String, String>>,
    /// Top-level `secrets` and `configs`: the name to its `file`, as written.
    pub secrets: BTreeMap<String, String>,
    pub configs: BTreeMap<String, String>,
}

impl Project {
    /// The given namespace, else the project's name (kedge's names are DNS labels: the project's
    /// `_` become `-`).
    pub fn namespace(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| dns_label(&self.name))
    }

    /// A file the Compose file names (an `env_file`): from the commit, or from the disk.
    pub fn read(&self, path: &Path) -> Result<String, String> {
        read_file(self.commit_files.as_ref(), path)
    }

    /// The spec name of a service: `<project>-<service>` (Docker's names are global on a host, so
    /// the project is part of it, as in Compose's `<project>-<service>-1`).
    pub fn spec_name(&self, service: &str) -> String {
        format!("{}-{}", dns_label(&self.name), dns_label(service))
    }
}

/// Collects errors and warnings, each placed at a path of the Compose document.
pub(crate) struct Report<'a> {
    file: &'a str,
    positions: &'a PositionIndex,
    errors: Vec<SpecError>,
    warnings: Vec<SpecError>,
}

impl Report<'_> {
    fn placed(&self, path: &str, key: bool, message: String) -> SpecError {
        let position =
            if key { self.positions.key_position(path) } else { self.positions.value_position(path) };
        let position = position.unwrap_or_default();
        SpecError {
            file: self.file.to_owned(),
            line: position.line,
            column: position.column,
            path: path.to_owned(),
            message,
        }
    }

    /// An error about the value at `path`.
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        let error = self.placed(path, false, message.into());
        self.errors.push(error);
    }

    /// A key kedge does not support, at the key itself.
    pub fn unsupported(&mut self, path: &str, key: &str) {
        let error =
            self.placed(path, true, format!("`{key}` is not supported by kedge (see docs/compose.md)"));
        self.errors.push(error);
    }

    /// An error about the key at `path` itself.
    pub fn error_at_key(&mut self, path: &str, message: impl Into<String>) {
        let error = self.placed(path, true, message.into());
        self.errors.push(error);
    }

    /// A key kedge reads but that changes nothing at run time.
    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        let warning = self.placed(path, true, message.into());
        self.warnings.push(warning);
    }

    /// Where the value at `path` is, for the generated document's index.
    pub fn position(&self, path: &str) -> crate::yaml::Position {
        self.positions.key_position(path).unwrap_or_default()
    }

    fn finish(self, documents: Vec<PositionedDocument>) -> Converted {
        Converted { documents, errors: self.errors, warnings: self.warnings }
    }
}

/// The variables interpolation reads: the `.env` file (or `--env-file`s) under the environment.
fn environment(directory: &Path, options: &ComposeOptions, report: &mut Report) -> BTreeMap<String, String> {
    let mut environment = BTreeMap::new();
    let files: Vec<(PathBuf, bool)> = if options.env_files.is_empty() {
        vec![(directory.join(".env"), false)]
    } else {
        options.env_files.iter().map(|file| (file.clone(), true)).collect()
    };
    for (file, required) in files {
        let exists = match &options.commit_files {
            Some(files) => files.contains_key(commit_path(&file).as_str()),
            None => file.exists(),
        };
        if !exists && !required {
            continue;
        }
        match read_file(options.commit_files.as_ref(), &file) {
            Ok(text) => environment.extend(read_env_file(&text, &BTreeMap::new())),
            Err(error) => report.error("", format!("cannot read the env file {}: {error}", file.display())),
        }
    }
    environment.extend(options.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
    environment
}

/// The top-level `secrets` or `configs`: each a `file:` (bind-mounted read-only, as Compose does
/// without Swarm). `environment:`, `external:` and `content:` sources are errors naming the key.
fn file_sources(top: &Map<String, Value>, section: &str, report: &mut Report) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let Some(entries) = top.get(section) else {
        return files;
    };
    let Value::Object(entries) = entries else {
        report.error(section, format!("`{section}` must be a map"));
        return files;
    };
    for (name, settings) in entries {
        let path = format!("{section}.{name}");
        let Value::Object(settings) = settings else {
            report.error(&path, "must be a map with a `file`");
            continue;
        };
        for (key, setting) in settings {
            let key_path = format!("{path}.{key}");
            match (key.as_str(), setting) {
                ("file", Value::String(file)) => drop(files.insert(name.clone(), file.clone())),
                ("file", _) => report.error(&key_path, "`file` must be a path"),
                ("name", _) => {}
                (key, _) if key.starts_with("x-") => {}
                _ => {
                    let message = format!(
                        "`{key}` is not supported by kedge (see docs/compose.md): only a `file` source; for a value kept out of files use a kedge Secret"
                    );
                    report.error_at_key(&key_path, message);
                }
            }
        }
        if !settings.contains_key("file") && settings.keys().all(|k| k == "name" || k.starts_with("x-")) {
            report.error(&path, "needs a `file`");
        }
    }
    files
}

/// A file's text: from the commit's files when given (by its path from the repository's root), else
/// from the disk.
fn read_file(commit_files: Option<&BTreeMap<String, String>>, path: &Path) -> Result<String, String> {
    match commit_files {
        Some(files) => files
            .get(commit_path(path).as_str())
            .cloned()
            .ok_or_else(|| "no such file in the commit (under the GitSource's path)".to_owned()),
        None => std::fs::read_to_string(path).map_err(|error| error.to_string()),
    }
}

/// A path under the commit's root (`/`) as the commit's files are keyed: `deploy/.env`.
fn commit_path(path: &Path) -> String {
    normalize(path).display().to_string().trim_start_matches('/').to_owned()
}

/// A `.env` or `env_file` file's variables: `KEY=VALUE` lines, `#` comments, blank lines, an optional
/// `export `, and values in matching single or double quotes taken inside them. A line with a bare
/// `KEY` takes the variable from `environment`, or is left out when it is unset (as Compose does).
pub(crate) fn read_env_file(text: &str, environment: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut variables = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        match line.split_once('=') {
            Some((key, value)) => {
                let value = value.trim();
                let unquoted = ['"', '\'']
                    .iter()
                    .find_map(|quote| value.strip_prefix(*quote).and_then(|v| v.strip_suffix(*quote)))
                    .filter(|_| value.len() >= 2)
                    .unwrap_or(value);
                variables.push((key.trim().to_owned(), unquoted.to_owned()));
            }
            None => {
                if let Some(value) = environment.get(line) {
                    variables.push((line.to_owned(), value.clone()));
                }
            }
        }
    }
    variables
}

/// Interpolates every string value of the tree in place (keys are left as written). An unset
/// variable without a default is warned about once per variable.
fn interpolate_tree(
    value: &mut Value,
    path: &str,
    environment: &BTreeMap<String, String>,
    report: &mut Report,
    warned: &mut BTreeSet<String>,
) {
    match value {
        Value::String(text) if text.contains('$') => match interpolate::interpolate(text, environment) {
            Ok(out) => {
                for name in out.unset {
                    if warned.insert(name.clone()) {
                        report.warn(
                            path,
                            format!("the variable `{name}` is not set: it is taken as the empty string"),
                        );
                    }
                }
                *text = out.value;
            }
            Err(message) => report.error(path, message),
        },
        Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{index}]"), environment, report, warned);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                interpolate_tree(item, &child_key_path(path, key), environment, report, warned);
            }
        }
        _ => {}
    }
}

/// `-p`, else `name:`, else the directory's name; normalized as Compose does (lowercase, only
/// letters, digits, `-` and `_`).
fn project_name(
    options: &ComposeOptions,
    top: &Map<String, Value>,
    directory: &Path,
    report: &mut Report,
) -> Option<String> {
    let written = match (&options.project, top.get("name")) {
        (Some(project), _) => project.clone(),
        (None, Some(Value::String(name))) => name.clone(),
        (None, Some(_)) => {
            report.error("name", "`name` must be a string");
            return None;
        }
        (None, None) => {
            directory.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
        }
    };
    let name: String = written
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_')
        .collect();
    if dns_label(&name).is_empty() {
        report
            .error("name", format!("the project name `{written}` has no letter or digit: name it with `-p`"));
        return None;
    }
    Some(name)
}

/// The top-level `volumes` or `networks`: each name to the Docker object's name. A declared object
/// is named `<project>_<name>` (or its `name:`); an `external` one is used as it is.
fn top_level(
    top: &Map<String, Value>,
    section: &str,
    project: &str,
    report: &mut Report,
) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let Some(entries) = top.get(section) else {
        return names;
    };
    let Value::Object(entries) = entries else {
        report.error(section, format!("`{section}` must be a map"));
        return names;
    };
    for (name, settings) in entries {
        let path = format!("{section}.{name}");
        let mut docker_name = format!("{project}_{name}");
        let mut external = false;
        match settings {
            Value::Null => {}
            Value::Object(settings) => {
                for (key, setting) in settings {
                    let key_path = format!("{path}.{key}");
                    match (key.as_str(), setting) {
                        ("name", Value::String(given)) => docker_name = given.clone(),
                        ("external", Value::Bool(flag)) => external = *flag,
                        ("external", Value::Object(map)) => {
                            external = true;
                            if let Some(Value::String(given)) = map.get("name") {
                                docker_name = given.clone();
                            }
                        }
                        ("driver", Value::String(driver))
                            if (section == "volumes" && driver == "local")
                                || (section == "networks" && driver == "bridge") => {}
                        ("driver", _) => report.error(
                            &key_path,
                            format!(
                                "kedge makes {section} with Docker's default driver only; create this one and mark it `external: true`"
                            ),
                        ),
                        ("attachable", _) => report.warn(&key_path, "`attachable` has no effect outside Swarm"),
                        (key, _) if key.starts_with("x-") => {}
                        (key @ ("name" | "external"), _) => report.error(&key_path, format!("`{key}` has the wrong type")),
                        (key, _) => report.error(
                            &key_path,
                            format!(
                                "`{key}` is not supported by kedge, which makes {section} with Docker's defaults; create it beforehand and mark it `external: true` (see docs/compose.md)"
                            ),
                        ),
                    }
                }
                if external
                    && !settings.contains_key("name")
                    && !matches!(settings.get("external"), Some(Value::Object(_)))
                {
                    docker_name = name.clone();
                }
            }
            _ => report.error(&path, format!("a {section} entry must be a map or empty")),
        }
        names.insert(name.clone(), docker_name);
    }
    names
}

/// `name` as a DNS label: lowercase, `_` as `-`, no leading or trailing `-`.
pub(crate) fn dns_label(name: &str) -> String {
    name.to_lowercase().replace('_', "-").trim_matches('-').to_owned()
}

/// The directory made absolute and lexically normalized (no `.` or `..`).
fn absolute(directory: &Path) -> PathBuf {
    let joined = if directory.is_absolute() {
        directory.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(directory)
    };
    normalize(&joined)
}

/// `a/./b/../c` as `a/c`, without reading the file system (Compose resolves bind paths the same way).
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A generated kedge document: `kind`, `metadata` and `spec`, with its index.
pub(crate) fn document(
    kind: &str,
    metadata: Value,
    spec: Value,
    positions: PositionIndex,
    start: crate::yaml::Position,
) -> PositionedDocument {
    PositionedDocument {
        value: json!({
            "apiVersion": crate::container::API_VERSION,
            "kind": kind,
            "metadata": metadata,
            "spec": spec,
        }),
        start,
        positions,
    }
}
