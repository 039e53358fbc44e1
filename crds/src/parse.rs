//! Spec files to `Container`s (and, through the `*_objects` functions, `ContainerSet`s too): YAML or
//! JSON, several `---` documents per file, files and directories. Every error names the file, line,
//! column and field path.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::compose::ComposeOptions;
use crate::container::{Container, API_VERSION, KIND_CONTAINER};
use crate::container_set::{ContainerSet, KIND_CONTAINER_SET};
use crate::gitsource::{GitSource, KIND_GIT_SOURCE};
use crate::located::{self, Located};
pub use crate::located::{FieldError, ParsedContainer, ParsedContainerSet, SpecError};
use crate::meta::DEFAULT_NAMESPACE;
use crate::repair;
use crate::secret::{Secret, KIND_SECRET};
use crate::validate::{validate_container, validate_container_set};
use crate::yaml;

/// The documents of spec files that may hold both kinds, in file order per kind.
#[derive(Clone, Debug, Default)]
pub struct ParsedObjects {
    pub containers: Vec<ParsedContainer>,
    pub sets: Vec<ParsedContainerSet>,
    /// Containers that did not read as written, as they read once their errors were set aside: their
    /// errors are reported already and they are never applied, but another document's `dependsOn` may
    /// still name them without a second, misleading error.
    pub unreadable_containers: Vec<Container>,
    pub secrets: Vec<ParsedSecret>,
    pub gitsources: Vec<ParsedGitSource>,
    /// What converting a Compose file found that changes nothing at run time (`build` beside
    /// `image`, an unset variable): shown, never a reason to refuse the file.
    pub warnings: Vec<SpecError>,
}

/// A `GitSource` read from a file (already checked: its rules need no other document).
#[derive(Clone, Debug)]
pub struct ParsedGitSource {
    pub source: GitSource,
    pub file: String,
}

/// A `Secret` read from a file (already checked: its rules need no other document).
#[derive(Clone, Debug)]
pub struct ParsedSecret {
    pub secret: Secret,
    pub file: String,
}

/// Valid `Container`s and `ContainerSet`s, what [`load_objects_paths`] answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Objects {
    pub containers: Vec<Container>,
    pub sets: Vec<ContainerSet>,
    pub secrets: Vec<Secret>,
    pub gitsources: Vec<GitSource>,
}

/// Every problem found in a set of spec files, in file and line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            error.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

/// Parses the `Container` documents of one file's text. `file` names the file in errors. Each document is
/// parsed on its own, so one bad document does not hide the errors of the next; a YAML syntax error ends the
/// file. Only the shape of the documents is checked here; [`crate::validate`] checks their values.
pub fn parse_str(file: &str, text: &str) -> (Vec<ParsedContainer>, Vec<SpecError>) {
    let (objects, errors) = read_text(file, text, &[KIND_CONTAINER], &Compose::default());
    (objects.containers, errors)
}

/// [`parse_str`] for files that may also hold `ContainerSet` and `Secret` documents.
pub fn parse_objects_str(file: &str, text: &str) -> (ParsedObjects, Vec<SpecError>) {
    read_text(file, text, &ALL_KINDS, &Compose::default())
}

/// [`parse_paths`] for files that may also hold `ContainerSet` and `Secret` documents.
pub fn parse_objects_paths<P: AsRef<Path>>(paths: &[P]) -> (ParsedObjects, Vec<SpecError>) {
    read_paths(paths, &ALL_KINDS, &ComposeOptions::default())
}

/// [`parse_objects_str`] that also reads Compose files (see [`crate::compose`]), as found in
/// `directory` (where `.env`, `env_file`s and relative binds are).
pub fn parse_objects_str_with(
    file: &str,
    text: &str,
    directory: &Path,
    compose: &ComposeOptions,
) -> (ParsedObjects, Vec<SpecError>) {
    read_text(
        file,
        text,
        &ALL_KINDS,
        &Compose { directory: directory.to_path_buf(), options: compose.clone() },
    )
}

/// [`parse_objects_paths`] that also reads Compose files, with these options.
pub fn parse_objects_paths_with<P: AsRef<Path>>(
    paths: &[P],
    compose: &ComposeOptions,
) -> (ParsedObjects, Vec<SpecError>) {
    read_paths(paths, &ALL_KINDS, compose)
}

const ALL_KINDS: [&str; 4] = [KIND_CONTAINER, KIND_CONTAINER_SET, KIND_SECRET, KIND_GIT_SOURCE];

/// Where a text came from, for a Compose file in it.
#[derive(Default)]
struct Compose {
    directory: PathBuf,
    options: ComposeOptions,
}

/// The documents of the `kinds` in one file's text, and every error of the others. A Compose file
/// (recognised by its shape) becomes the documents it converts to, then read like any other.
fn read_text(file: &str, text: &str, kinds: &[&str], compose: &Compose) -> (ParsedObjects, Vec<SpecError>) {
    let (mut documents, syntax_error) = yaml::read_documents(text);
    let mut objects = ParsedObjects::default();
    let mut errors = Vec::new();
    if kinds.contains(&KIND_CONTAINER_SET) && documents.iter().any(|d| crate::compose::is_compose(&d.value)) {
        let mut converted_documents = Vec::new();
        for document in documents {
            if crate::compose::is_compose(&document.value) {
                let converted = crate::compose::convert(file, &compose.directory, document, &compose.options);
                errors.extend(converted.errors);
                objects.warnings.extend(converted.warnings);
                converted_documents.extend(converted.documents);
            } else {
                converted_documents.push(document);
            }
        }
        documents = converted_documents;
    }
    for document in documents {
        match parse_document(file, document, kinds) {
            Ok(Parsed::Container(container)) => objects.containers.push(*container),
            Ok(Parsed::ContainerSet(set)) => objects.sets.push(*set),
            Ok(Parsed::Secret(secret)) => objects.secrets.push(*secret),
            Ok(Parsed::GitSource(source)) => objects.gitsources.push(*source),
            Err(unreadable) => {
                errors.extend(unreadable.errors);
                objects.unreadable_containers.extend(unreadable.container.map(|container| *container));
            }
        }
    }
    if let Some(error) = syntax_error {
        errors.push(SpecError {
            file: file.to_owned(),
            line: error.position.line,
            column: error.position.column,
            path: error.path,
            message: error.message,
        });
    }
    sort_errors(&mut errors);
    (objects, errors)
}

/// [`read_text`] for files and directories.
fn read_paths<P: AsRef<Path>>(
    paths: &[P],
    kinds: &[&str],
    options: &ComposeOptions,
) -> (ParsedObjects, Vec<SpecError>) {
    let mut objects = ParsedObjects::default();
    let mut errors = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let files = match spec_files(path) {
            Ok(files) => files,
            Err(error) => {
                errors.push(file_error(path, error));
                continue;
            }
        };
        for file in files {
            let name = file.display().to_string();
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let directory = file.parent().map(Path::to_path_buf).unwrap_or_default();
                    let compose = Compose { directory, options: options.clone() };
                    let (parsed, file_errors) = read_text(&name, &text, kinds, &compose);
                    objects.extend(parsed);
                    errors.extend(file_errors);
                }
                Err(error) => errors.push(file_error(&file, error.to_string())),
            }
        }
    }
    (objects, errors)
}

impl ParsedObjects {
    /// Adds the documents of `more` (another file's) after these.
    pub fn extend(&mut self, more: ParsedObjects) {
        self.containers.extend(more.containers);
        self.sets.extend(more.sets);
        self.unreadable_containers.extend(more.unreadable_containers);
        self.secrets.extend(more.secrets);
        self.gitsources.extend(more.gitsources);
        self.warnings.extend(more.warnings);
    }
}

/// Validates parsed objects of both kinds: each container and the containers as a set
/// ([`crate::validate()`]), each `ContainerSet` ([`crate::validate_container_set`]), no two sets of
/// one key, and no Container named like a set's child. Errors are sorted by file and position.
pub fn validate_objects(objects: &ParsedObjects) -> Vec<SpecError> {
    validate_objects_with(objects, &[])
}

/// [`validate_objects`], with specs the store holds already: a `dependsOn`, `networkMode` or `links`
/// entry may name one of them (`kedge apply -f one.yaml` of a spec whose dependency is live).
pub fn validate_objects_with(objects: &ParsedObjects, live: &[Container]) -> Vec<SpecError> {
    let mut existing = objects.unreadable_containers.clone();
    existing.extend(live.iter().cloned());
    let mut errors = crate::validate::validate(&objects.containers, &existing);
    for parsed in &objects.sets {
        errors.extend(
            crate::validate::validate_container_set(&parsed.set).into_iter().map(|e| parsed.field_error(e)),
        );
    }
    located::first_of_each_key(&objects.sets, "ContainerSet", |parsed| parsed.set.key(), &mut errors);
    for parsed in &objects.containers {
        let container = &parsed.container;
        let claimed = objects.sets.iter().find(|set| {
            set.set.metadata.namespace == container.metadata.namespace
                && crate::container_set::child_ordinal(&set.set.metadata.name, &container.metadata.name)
                    .is_some()
        });
        if let Some(set) = claimed {
            errors.push(parsed.error_at(
                "metadata.name",
                format!(
                    "`{}` is the name of a child of ContainerSet `{}` ({}:{}); the set writes that spec",
                    container.metadata.name, set.set.metadata.name, set.file, set.position.line
                ),
            ));
        }
    }
    sort_errors(&mut errors);
    errors
}

/// The errors of a source's objects that name a namespace other than the source's own (or
/// `default`, which reads as the source's): a source writes only into its own namespace. A GitSource
/// document in a source's repository is refused too.
pub fn git_source_scope_errors(objects: &ParsedObjects, namespace: &str) -> Vec<SpecError> {
    let foreign = |ns: &str| ns != namespace && ns != DEFAULT_NAMESPACE;
    let message = |ns: &str| {
        format!("namespace `{ns}` is not this GitSource's (`{namespace}`); a source applies only into its own namespace")
    };
    let mut errors = Vec::new();
    for parsed in objects.containers.iter().filter(|p| foreign(&p.container.metadata.namespace)) {
        errors.push(parsed.error_at("metadata.namespace", message(&parsed.container.metadata.namespace)));
    }
    for parsed in objects.sets.iter().filter(|p| foreign(&p.set.metadata.namespace)) {
        errors.push(parsed.error_at("metadata.namespace", message(&parsed.set.metadata.namespace)));
    }
    for parsed in &objects.gitsources {
        errors.push(SpecError {
            file: parsed.file.clone(),
            line: 0,
            column: 0,
            path: "kind".to_owned(),
            message: format!(
                "GitSource `{}`: a GitSource is not applied from another one's repository",
                parsed.source.metadata.name
            ),
        });
    }
    for parsed in objects.secrets.iter().filter(|p| foreign(&p.secret.metadata.namespace)) {
        errors.push(SpecError {
            file: parsed.file.clone(),
            line: 0,
            column: 0,
            path: "metadata.namespace".to_owned(),
            message: message(&parsed.secret.metadata.namespace),
        });
    }
    errors
}

/// Puts errors in the order a reader fixes them, file by file and then by position (errors at one
/// place keep the order they were found in), and drops repeats: one mistake can be found twice, by
/// parsing and by a later rule, or once per alias that copied it.
pub fn sort_errors(errors: &mut Vec<SpecError>) {
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    let mut seen = std::collections::HashSet::new();
    errors.retain(|error| seen.insert(error.clone()));
}

/// Parses and validates files and directories holding Containers and ContainerSets.
pub fn load_objects_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Objects, SpecErrors> {
    let (objects, mut errors) = parse_objects_paths(paths);
    errors.extend(validate_objects(&objects));
    if !errors.is_empty() {
        sort_errors(&mut errors);
        return Err(SpecErrors(errors));
    }
    Ok(Objects {
        containers: objects.containers.into_iter().map(|parsed| parsed.container).collect(),
        sets: objects.sets.into_iter().map(|parsed| parsed.set).collect(),
        secrets: objects.secrets.into_iter().map(|parsed| parsed.secret).collect(),
        gitsources: objects.gitsources.into_iter().map(|parsed| parsed.source).collect(),
    })
}

/// Reads and parses files and directories. A directory is read recursively, taking files ending in `.yaml`,
/// `.yml` or `.json` in name order and skipping hidden entries; a file named directly is read whatever its
/// name. Errors of all files are collected.
pub fn parse_paths<P: AsRef<Path>>(paths: &[P]) -> (Vec<ParsedContainer>, Vec<SpecError>) {
    let (objects, errors) = read_paths(paths, &[KIND_CONTAINER], &ComposeOptions::default());
    (objects.containers, errors)
}

/// Parses and validates files and directories (what `kedge validate -f` and `apply -f` need): every
/// `Container` in them, or every error in them.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Container>, SpecErrors> {
    let (objects, errors) = read_paths(paths, &[KIND_CONTAINER], &ComposeOptions::default());
    finish_loading(objects, errors)
}

/// Parses and validates one file's text, as [`load_paths`] does for files: for standard input or an API
/// request body. `file` names the text in errors.
pub fn load_str(file: &str, text: &str) -> Result<Vec<Container>, SpecErrors> {
    let (objects, errors) = read_text(file, text, &[KIND_CONTAINER], &Compose::default());
    finish_loading(objects, errors)
}

fn finish_loading(objects: ParsedObjects, mut errors: Vec<SpecError>) -> Result<Vec<Container>, SpecErrors> {
    errors.extend(crate::validate::validate(&objects.containers, &objects.unreadable_containers));
    if errors.is_empty() {
        return Ok(objects.containers.into_iter().map(|parsed| parsed.container).collect());
    }
    sort_errors(&mut errors);
    Err(SpecErrors(errors))
}

fn file_error(path: &Path, message: String) -> SpecError {
    SpecError { file: path.display().to_string(), line: 0, column: 0, path: String::new(), message }
}

fn spec_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let metadata = std::fs::metadata(path).map_err(|error| error.to_string())?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    collect_spec_files(path, &mut files).map_err(|error| error.to_string())?;
    if files.is_empty() {
        return Err("the directory holds no .yaml, .yml or .json files".to_owned());
    }
    Ok(files)
}

fn collect_spec_files(directory: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(directory)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() || std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            collect_spec_files(&path, files)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
            files.push(path);
        }
    }
    Ok(())
}

/// A document that did not read as written: its errors and, for a Container, what it read as once
/// they were set aside.
struct Unreadable {
    errors: Vec<SpecError>,
    container: Option<Box<Container>>,
}

impl From<SpecError> for Unreadable {
    fn from(error: SpecError) -> Unreadable {
        Unreadable { errors: vec![error], container: None }
    }
}

/// One parsed document of either kind.
enum Parsed {
    Container(Box<ParsedContainer>),
    ContainerSet(Box<ParsedContainerSet>),
    Secret(Box<ParsedSecret>),
    GitSource(Box<ParsedGitSource>),
}

/// One document to a value of its kind, or every error of its shape (see [`crate::repair`]) and, for
/// what could be read around them, of its values.
fn parse_document(
    file: &str,
    document: yaml::PositionedDocument,
    kinds: &[&str],
) -> Result<Parsed, Unreadable> {
    let positions = document.positions;
    let error = |path: &str, key: bool, message: String| {
        let position = if key { positions.key_position(path) } else { positions.value_position(path) };
        let position = position.unwrap_or(document.start);
        SpecError {
            file: file.to_owned(),
            line: position.line,
            column: position.column,
            path: path.to_owned(),
            message,
        }
    };
    let Value::Object(fields) = &document.value else {
        return Err(Unreadable::from(error(
            "",
            false,
            "a document must be a map with apiVersion, kind, metadata and spec".to_owned(),
        )));
    };
    // The envelope is checked first: a document of another kind would otherwise fail with confusing
    // messages about fields that kind does not have.
    match fields.get("apiVersion") {
        Some(Value::String(version)) if version == API_VERSION => {}
        Some(other) => {
            return Err(Unreadable::from(error(
                "apiVersion",
                false,
                format!("unsupported apiVersion {}, expected `{API_VERSION}`", describe(other)),
            )))
        }
        None => {
            return Err(Unreadable::from(error(
                "apiVersion",
                false,
                "missing required field `apiVersion`".to_owned(),
            )))
        }
    }
    let kind = match fields.get("kind") {
        Some(Value::String(kind)) if kinds.contains(&kind.as_str()) => kind.clone(),
        Some(other) => {
            let expected: Vec<String> = kinds.iter().map(|kind| format!("`{kind}`")).collect();
            return Err(Unreadable::from(error(
                "kind",
                false,
                format!("unsupported kind {}, expected {}", describe(other), expected.join(" or ")),
            )));
        }
        None => {
            return Err(Unreadable::from(error("kind", false, "missing required field `kind`".to_owned())))
        }
    };
    let start = document.start;
    if kind == KIND_SECRET {
        return read_secret(file, &document.value, &error).map(|secret| Parsed::Secret(Box::new(secret)));
    }
    if kind == KIND_GIT_SOURCE {
        return read_git_source(file, &document.value, &error)
            .map(|source| Parsed::GitSource(Box::new(source)));
    }
    if kind == KIND_CONTAINER_SET {
        let set = match serde_path_to_error::deserialize::<_, ContainerSet>(&document.value) {
            Ok(set) => set,
            Err(first) => {
                let repaired = repair::read_all::<ContainerSet>(&document.value, first);
                let rules = repaired.value.as_ref().map(validate_container_set).unwrap_or_default();
                return Err(Unreadable {
                    errors: repaired_errors(&repaired, rules, &error),
                    container: None,
                });
            }
        };
        return Ok(Parsed::ContainerSet(Box::new(ParsedContainerSet {
            set,
            file: file.to_owned(),
            position: start,
            positions,
        })));
    }
    let container = match serde_path_to_error::deserialize::<_, Container>(&document.value) {
        Ok(container) => container,
        Err(first) => {
            let repaired = repair::read_all::<Container>(&document.value, first);
            let rules = repaired.value.as_ref().map(validate_container).unwrap_or_default();
            let errors = repaired_errors(&repaired, rules, &error);
            return Err(Unreadable { errors, container: repaired.value.map(Box::new) });
        }
    };
    Ok(Parsed::Container(Box::new(ParsedContainer {
        container,
        file: file.to_owned(),
        position: start,
        positions,
    })))
}

/// A `Secret` document, checked whole: the shape of `data` before serde reads it (serde's messages
/// would quote a value), then serde, then the secret's rules. No error quotes a value.
fn read_secret(
    file: &str,
    document: &Value,
    error: &impl Fn(&str, bool, String) -> SpecError,
) -> Result<ParsedSecret, Unreadable> {
    let place = |errors: Vec<FieldError>| Unreadable {
        errors: errors.into_iter().map(|e| error(&e.path, e.on_key, e.message)).collect(),
        container: None,
    };
    let shape = crate::secret::data_shape_errors(document);
    if !shape.is_empty() {
        return Err(place(shape));
    }
    let secret = match serde_path_to_error::deserialize::<_, Secret>(document) {
        Ok(secret) => secret,
        Err(failure) => {
            let path = failure.path().to_string();
            let path = if path == "." { String::new() } else { path };
            return Err(Unreadable::from(error(&path, false, failure.into_inner().to_string())));
        }
    };
    let rules = crate::validate::validate_secret(&secret);
    if !rules.is_empty() {
        return Err(place(rules));
    }
    Ok(ParsedSecret { secret, file: file.to_owned() })
}

fn read_git_source(
    file: &str,
    document: &Value,
    error: &impl Fn(&str, bool, String) -> SpecError,
) -> Result<ParsedGitSource, Unreadable> {
    let source = match serde_path_to_error::deserialize::<_, GitSource>(document) {
        Ok(source) => source,
        Err(failure) => {
            let path = failure.path().to_string();
            let path = if path == "." { String::new() } else { path };
            return Err(Unreadable::from(error(&path, false, failure.into_inner().to_string())));
        }
    };
    let rules = crate::gitsource::validate_git_source(&source);
    if !rules.is_empty() {
        return Err(Unreadable {
            errors: rules.into_iter().map(|e| error(&e.path, e.on_key, e.message)).collect(),
            container: None,
        });
    }
    Ok(ParsedGitSource { source, file: file.to_owned() })
}

/// The errors of a document that needed repairs: its shape errors, then the value rules broken by what
/// could be read, except at repaired paths and at the maps holding them (a placeholder or a removed
/// field breaks rules the user did not: `hostSelectr` removed leaves a placement that names nothing).
fn repaired_errors<T>(
    repaired: &repair::Repaired<T>,
    rules: Vec<FieldError>,
    error: &impl Fn(&str, bool, String) -> SpecError,
) -> Vec<SpecError> {
    let mut errors: Vec<SpecError> =
        repaired.errors.iter().map(|shape| error(&shape.path, shape.on_key, shape.message.clone())).collect();
    for rule in rules {
        let follows_from_repair = repaired
            .repaired
            .iter()
            .any(|path| repair::is_within(&rule.path, path) || rule.path == crate::yaml::parent_path(path));
        if !follows_from_repair {
            errors.push(error(&rule.path, rule.on_key, rule.message));
        }
    }
    if repaired.gave_up {
        errors.push(error(
            "",
            false,
            format!("more errors may follow: stopped after {} repairs", repaired.repaired.len()),
        ));
    }
    errors
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => format!("`{text}`"),
        other => other.to_string(),
    }
}
