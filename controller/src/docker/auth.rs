//! Registry credentials for pulls: the `auths` map of a Docker `config.json`, one entry per
//! registry, handed to the engine with every pull and registry digest lookup of an image of that
//! registry (docs/registry-credentials.md).
//!
//! A credential is never shown: [`RegistryCredentials`] has a redacted `Debug` and no `Display`,
//! errors about the file name the field, never its value, and nothing here logs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The credentials of every registry a config file names, by registry host (`docker.io` for
/// Docker Hub, whatever name the file gives it).
#[derive(Clone, Default)]
pub struct RegistryAuth {
    by_registry: BTreeMap<String, RegistryCredentials>,
    /// The file they were read from, to name it in messages.
    source: PathBuf,
    /// The file names credential helpers (`credsStore`, `credHelpers`), which kedge does not run.
    names_helpers: bool,
}

/// One registry's credentials. `Debug` shows the user name only.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// The `auths` key as the file spells it (`https://index.docker.io/v1/`, `127.0.0.1:5000`):
    /// the engine's `serveraddress`.
    pub server_address: String,
    pub username: Option<String>,
    password: Secret,
    identity_token: Option<Secret>,
}

/// A secret string whose `Debug` is `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("server_address", &self.server_address)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("identity_token", &self.identity_token.as_ref().map(|_| Secret::default()))
            .finish()
    }
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("source", &self.source)
            .field("registries", &self.by_registry.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A config file kedge cannot use: its path, the field (`auths."HOST".auth`) and what is wrong,
/// never the field's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registry config {}: {field}: {problem}", file.display())]
pub struct RegistryConfigError {
    pub file: PathBuf,
    pub field: String,
    pub problem: String,
}

impl RegistryAuth {
    /// Reads a Docker `config.json` (only its `auths` map is used; `credsStore` and
    /// `credHelpers` name programs kedge does not run, see [`RegistryAuth::names_credential_helpers`]).
    pub fn from_file(file: &Path) -> Result<RegistryAuth, RegistryConfigError> {
        let text = std::fs::read_to_string(file).map_err(|error| RegistryConfigError {
            file: file.to_owned(),
            field: "(file)".to_owned(),
            problem: format!("cannot be read: {error}"),
        })?;
        RegistryAuth::parse(&text, file)
    }

    /// Parses the text of a config file; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<RegistryAuth, RegistryConfigError> {
        let error = |field: &str, problem: String| RegistryConfigError {
            file: file.to_owned(),
            field: field.to_owned(),
            problem,
        };
        // serde_json's syntax errors carry a line and column, never the text around them.
        let document: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| error("(document)", format!("not JSON: {}", describe_json_error(&e))))?;
        let root = document
            .as_object()
            .ok_or_else(|| error("(document)", "must be a JSON object with an `auths` map".to_owned()))?;
        let mut by_registry = BTreeMap::new();
        let names_helpers = root.contains_key("credsStore") || root.contains_key("credHelpers");
        let Some(auths) = root.get("auths") else {
            return Ok(RegistryAuth { by_registry, source: file.to_owned(), names_helpers });
        };
        let auths =
            auths.as_object().ok_or_else(|| error("auths", "must be a map of registries".to_owned()))?;
        for (server, entry) in auths {
            let field = |name: &str| format!("auths.{server:?}{name}");
            let entry = entry.as_object().ok_or_else(|| error(&field(""), "must be a map".to_owned()))?;
            let text = |name: &str| -> Result<Option<String>, RegistryConfigError> {
                match entry.get(name) {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(serde_json::Value::String(value)) if value.is_empty() => Ok(None),
                    Some(serde_json::Value::String(value)) => Ok(Some(value.clone())),
                    Some(_) => Err(error(&field(&format!(".{name}")), "must be a string".to_owned())),
                }
            };
            let (mut username, mut password) = (text("username")?, text("password")?);
            if let Some(auth) = text("auth")? {
                let (user, pass) = decode_auth(&auth).map_err(|problem| error(&field(".auth"), problem))?;
                username = Some(user);
                password = Some(pass);
            }
            let identity_token = text("identitytoken")?;
            if username.is_some() != password.is_some() && identity_token.is_none() {
                let (missing, given) =
                    if username.is_none() { ("username", "password") } else { ("password", "username") };
                return Err(error(
                    &field(&format!(".{missing}")),
                    format!("missing: a {given} needs a {missing}"),
                ));
            }
            if username.is_none() && password.is_none() && identity_token.is_none() {
                // An empty entry is what `docker login` leaves when a credential helper keeps the secret.
                continue;
            }
            let registry = registry_host(server)
                .ok_or_else(|| error(&field(""), "the key must name a registry host".to_owned()))?;
            by_registry.insert(
                registry,
                RegistryCredentials {
                    server_address: server.clone(),
                    username,
                    password: Secret(password.unwrap_or_default()),
                    identity_token: identity_token.map(Secret),
                },
            );
        }
        Ok(RegistryAuth { by_registry, source: file.to_owned(), names_helpers })
    }

    /// The file these credentials were read from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The registries that have credentials (hosts, `docker.io` for Docker Hub).
    pub fn registries(&self) -> impl Iterator<Item = &str> {
        self.by_registry.keys().map(String::as_str)
    }

    /// The credentials for the registry of image `reference`, if the file has them.
    pub fn for_image(&self, reference: &str) -> Option<&RegistryCredentials> {
        self.by_registry.get(&registry_of_image(reference))
    }

    /// Whether the file names credential helpers (`credsStore`, `credHelpers`), which kedge does
    /// not run: their registries need an `auths` entry with the credentials themselves.
    pub fn names_credential_helpers(&self) -> bool {
        self.names_helpers
    }
}

impl RegistryCredentials {
    /// User name and password for HTTP basic authentication against the registry itself or its
    /// token service (registry.rs), when the entry has them.
    pub(crate) fn basic(&self) -> Option<(&str, &str)> {
        let user = self.username.as_deref()?;
        Some((user, self.password.0.as_str()))
    }

    /// The credentials in bollard's form, made only when a request is sent.
    pub(crate) fn to_engine(&self) -> bollard::auth::DockerCredentials {
        bollard::auth::DockerCredentials {
            username: self.username.clone(),
            password: (!self.password.0.is_empty()).then(|| self.password.0.clone()),
            serveraddress: Some(self.server_address.clone()),
            identitytoken: self.identity_token.as_ref().map(|token| token.0.clone()),
            ..Default::default()
        }
    }
}

/// The registry host of an image reference, as Docker reads it: the first path component when it
/// looks like a host (has a `.` or a `:`, or is `localhost`), else Docker Hub (`docker.io`).
pub fn registry_of_image(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            normalise_host(first)
        }
        _ => "docker.io".to_owned(),
    }
}

/// The registry host an `auths` key names: `https://index.docker.io/v1/` is `docker.io`,
/// `http://127.0.0.1:5000/v2/` is `127.0.0.1:5000`.
fn registry_host(key: &str) -> Option<String> {
    let without_scheme = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = without_scheme.split('/').next().unwrap_or_default();
    (!host.is_empty()).then(|| normalise_host(host))
}

fn normalise_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_owned(),
        _ => host,
    }
}

/// `auth` is base64 of `user:password`. The problem never quotes the value.
fn decode_auth(auth: &str) -> Result<(String, String), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| "is not base64 (it must be base64 of USER:PASSWORD)".to_owned())?;
    let text = String::from_utf8(bytes).map_err(|_| "does not decode to UTF-8 text".to_owned())?;
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_owned(), password.to_owned())),
        _ => Err("does not decode to USER:PASSWORD".to_owned()),
    }
}

/// serde_json's syntax message with its line and column. Parsing into a `Value` reports only
/// syntax, so the message never quotes the document's text.
fn describe_json_error(error: &serde_json::Error) -> String {
    error.to_string()
}

#[cfg(test)]
mod tests;
