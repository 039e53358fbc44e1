//! Where the API is and how to authenticate: flags, environment, and a config file with named contexts.
//!
//! Precedence, highest first: `--server`/`--token`, `KEDGE_SERVER`/`KEDGE_TOKEN`, the context chosen by
//! `--context` or the file's `currentContext`, then `http://127.0.0.1:7443` and the local agent's token file.
//! The local agent's token is sent only to a server on this machine (a loopback address or a Unix
//! socket): a `--server` elsewhere never receives it.

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
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// A client certificate and its key (PEM) for an agent that requires one (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

impl std::fmt::Debug for Context {
    /// As derived, with `token` redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Context {
            server,
            token,
            token_file,
            namespace,
            certificate_authority,
            client_certificate,
            client_key,
        } = self;
        f.debug_struct("Context")
            .field("server", server)
            .field("token", &token.as_ref().map(|_| kedge_crds::REDACTED))
            .field("token_file", token_file)
            .field("namespace", namespace)
            .field("certificate_authority", certificate_authority)
            .field("client_certificate", client_certificate)
            .field("client_key", client_key)
            .finish()
    }
}

/// What the flags and environment say, before the file is consulted.
#[derive(Clone, Default)]
pub struct Overrides {
    pub server: Option<String>,
    pub token: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub config_path: Option<PathBuf>,
    pub certificate_authority: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl std::fmt::Debug for Overrides {
    /// As derived, with `token` redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Overrides {
            server,
            token,
            context,
            namespace,
            config_path,
            certificate_authority,
            token_file,
            client_certificate,
            client_key,
        } = self;
        f.debug_struct("Overrides")
            .field("server", server)
            .field("token", &token.as_ref().map(|_| kedge_crds::REDACTED))
            .field("context", context)
            .field("namespace", namespace)
            .field("config_path", config_path)
            .field("certificate_authority", certificate_authority)
            .field("token_file", token_file)
            .field("client_certificate", client_certificate)
            .field("client_key", client_key)
            .finish()
    }
}

/// The resolved connection settings.
#[derive(Clone, PartialEq)]
pub struct Resolved {
    pub server: String,
    pub token: Option<String>,
    pub namespace: String,
    pub certificate_authority: Option<PathBuf>,
    /// A client certificate and its key, for mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for Resolved {
    /// As derived, with `token` redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Resolved { server, token, namespace, certificate_authority, client_identity } = self;
        f.debug_struct("Resolved")
            .field("server", server)
            .field("token", &token.as_ref().map(|_| kedge_crds::REDACTED))
            .field("namespace", namespace)
            .field("certificate_authority", certificate_authority)
            .field("client_identity", client_identity)
            .finish()
    }
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
        (None, Some(path)) => Some(read_token_file(path)?),
        (None, None) => None,
    };
    let flag_token = match (&overrides.token, &overrides.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(read_token_file(path)?),
        (None, None) => None,
    };
    let server = overrides.server.clone().or(context.server).unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    // The token of an agent on this machine belongs to that agent: never send it elsewhere.
    let local_token = local_token.filter(|_| is_this_machine(&server));
    let client_identity = match (
        overrides.client_certificate.clone().or(context.client_certificate),
        overrides.client_key.clone().or(context.client_key),
    ) {
        (Some(certificate), Some(key)) => Some((certificate, key)),
        (None, None) => None,
        _ => {
            return Err(CliError::usage("a client certificate needs its key, and a key its certificate")
                .hint("give both --client-certificate and --client-key (or a context's clientCertificate and clientKey)"))
        }
    };
    Ok(Resolved {
        server,
        token: flag_token.or(context_token).or(local_token),
        namespace: overrides
            .namespace
            .clone()
            .or(context.namespace)
            .unwrap_or_else(|| kedge_crds::DEFAULT_NAMESPACE.to_owned()),
        certificate_authority: overrides.certificate_authority.clone().or(context.certificate_authority),
        client_identity,
    })
}

fn read_token_file(path: &Path) -> CliResult<String> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read token file {}: {e}", path.display())))?;
    Ok(token.trim().to_owned())
}

/// Whether `server` is reached on this machine: a Unix socket or a loopback address.
pub fn is_this_machine(server: &str) -> bool {
    if server.starts_with("unix:") {
        return true;
    }
    let Some(rest) = server.strip_prefix("http://").or_else(|| server.strip_prefix("https://")) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Userinfo (`user@host`) would let `http://127.0.0.1@evil.example` pass a naive prefix check.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => host_port.rsplit_once(':').map_or(host_port, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
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

    #[test]
    fn the_local_agents_token_goes_only_to_this_machine() {
        let remote = Overrides { server: Some("https://agents.example:7443".into()), ..Overrides::default() };
        let resolved = resolve(&remote, &ConfigFile::default(), Some("local".into())).unwrap();
        assert_eq!(resolved.token, None, "the local token must not reach another server");
        for server in [
            "http://127.0.0.1:7443",
            "https://127.0.0.2:9000/",
            "http://localhost:7443",
            "http://[::1]:7443",
            "unix:///var/lib/kedge/kedge.sock",
        ] {
            let here = Overrides { server: Some(server.into()), ..Overrides::default() };
            let resolved = resolve(&here, &ConfigFile::default(), Some("local".into())).unwrap();
            assert_eq!(resolved.token.as_deref(), Some("local"), "{server}");
        }
        for server in [
            "http://127.0.0.1@evil.example:7443",
            "http://127.0.0.1.evil.example",
            "http://localhost.evil.example:7443",
            "http://10.0.0.1:7443",
            "ftp://127.0.0.1",
        ] {
            assert!(!is_this_machine(server), "{server}");
        }
        // A token the user gave explicitly goes where the user said.
        let given = Overrides { token: Some("mine".into()), ..remote };
        let resolved = resolve(&given, &ConfigFile::default(), Some("local".into())).unwrap();
        assert_eq!(resolved.token.as_deref(), Some("mine"));
    }

    #[test]
    fn a_token_file_and_a_client_certificate_resolve_from_flags_or_context() {
        let token_file = std::env::temp_dir().join(format!("kedge-token-{}", std::process::id()));
        std::fs::write(&token_file, "from-file\n").unwrap();
        let overrides = Overrides { token_file: Some(token_file), ..Overrides::default() };
        let resolved = resolve(&overrides, &ConfigFile::default(), Some("local".into())).unwrap();
        let _ = std::fs::remove_file(overrides.token_file.as_ref().unwrap());
        assert_eq!(resolved.token.as_deref(), Some("from-file"));

        let mut file = ConfigFile::default();
        file.contexts.insert(
            "mtls".into(),
            Context {
                client_certificate: Some("/c.pem".into()),
                client_key: Some("/k.pem".into()),
                ..Context::default()
            },
        );
        file.current_context = Some("mtls".into());
        let resolved = resolve(&Overrides::default(), &file, None).unwrap();
        assert_eq!(resolved.client_identity, Some(("/c.pem".into(), "/k.pem".into())));
        let half = Overrides { client_certificate: Some("/c.pem".into()), ..Overrides::default() };
        assert!(resolve(&half, &ConfigFile::default(), None).is_err());
    }
}
