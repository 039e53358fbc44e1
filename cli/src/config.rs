//! Where the API is and how to authenticate: flags, environment, and a config file with named contexts.
//!
//! Precedence, highest first: `--server`/`--token`, `KEDGE_SERVER`/`KEDGE_TOKEN`, the context chosen by
//! `--context` or the file's `currentContext`, then `http://127.0.0.1:7443` and the local agent's token file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};

/// The server used when nothing names one: the agent's default `--listen`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7443";

/// The config file (`~/.config/kedge/config.json`, or `$KEDGE_CONFIG`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One named way to reach an agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token (e.g. a copy of the agent's `api-token`); read at each call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// A PEM file of the CA that signed an `https://` server's certificate (else the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
}

/// What the flags and environment say, before the file is consulted.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub server: Option<String>,
    pub token: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub config_path: Option<PathBuf>,
    pub certificate_authority: Option<PathBuf>,
}

/// The resolved connection settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub server: String,
    pub token: Option<String>,
    pub namespace: String,
    pub certificate_authority: Option<PathBuf>,
}

pub fn config_path(overrides: &Overrides) -> PathBuf {
    if let Some(path) = &overrides.config_path {
        return path.clone();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("kedge").join("config.json")
}

pub fn load(path: &Path) -> CliResult<ConfigFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            CliError::usage(format!("config file {}: {e}", path.display()))
                .hint("the file is JSON: {\"currentContext\": \"NAME\", \"contexts\": {\"NAME\": {\"server\": \"URL\"}}}")
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(error) => Err(CliError::usage(format!("cannot read config file {}: {error}", path.display()))),
    }
}

pub fn save(path: &Path, config: &ConfigFile) -> CliResult<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let text = serde_json::to_string_pretty(config).expect("config serializes") + "\n";
    // The file may hold tokens: owner-only, written under a temporary name and renamed into place.
    let temporary = path.with_extension("json.tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(text.as_bytes())?;
    }
    std::fs::rename(&temporary, path)?;
    Ok(())
}

/// Applies the precedence rules. `local_token` is the token file of an agent on this machine, tried last.
pub fn resolve(overrides: &Overrides, file: &ConfigFile, local_token: Option<String>) -> CliResult<Resolved> {
    let context_name = overrides.context.clone().or_else(|| file.current_context.clone());
    let context = match &context_name {
        Some(name) => match file.contexts.get(name) {
            Some(context) => context.clone(),
            None if overrides.context.is_some() => {
                return Err(CliError::usage(format!("no context named `{name}`"))
                    .hint("list them with `kedge config get-contexts`"))
            }
            None => Context::default(),
        },
        None => Context::default(),
    };
    let context_token = match (&context.token, &context.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("cannot read token file {}: {e}", path.display())))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    Ok(Resolved {
        server: overrides.server.clone().or(context.server).unwrap_or_else(|| DEFAULT_SERVER.to_owned()),
        token: overrides.token.clone().or(context_token).or(local_token),
        namespace: overrides
            .namespace
            .clone()
            .or(context.namespace)
            .unwrap_or_else(|| kedge_crds::DEFAULT_NAMESPACE.to_owned()),
        certificate_authority: overrides.certificate_authority.clone().or(context.certificate_authority),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_context_beats_defaults() {
        let mut file = ConfigFile::default();
        file.contexts.insert(
            "prod".into(),
            Context {
                server: Some("http://prod:7443".into()),
                token: Some("t".into()),
                ..Context::default()
            },
        );
        file.current_context = Some("prod".into());
        let resolved = resolve(&Overrides::default(), &file, Some("local".into())).unwrap();
        assert_eq!(resolved.server, "http://prod:7443");
        assert_eq!(resolved.token.as_deref(), Some("t"));
        assert_eq!(resolved.namespace, "default");
        let overrides = Overrides {
            server: Some("http://x".into()),
            namespace: Some("ns".into()),
            ..Overrides::default()
        };
        let resolved = resolve(&overrides, &file, None).unwrap();
        assert_eq!((resolved.server.as_str(), resolved.namespace.as_str()), ("http://x", "ns"));
        let resolved = resolve(&Overrides::default(), &ConfigFile::default(), Some("local".into())).unwrap();
        assert_eq!(resolved.server, DEFAULT_SERVER);
        assert_eq!(resolved.token.as_deref(), Some("local"));
        let missing = Overrides { context: Some("nope".into()), ..Overrides::default() };
        assert!(resolve(&missing, &file, None).is_err());
    }
}
