//! `kedge agent`: runs the reconciler and the API server for one Docker host.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kedge_controller::agent::{self, AgentConfig};
use kedge_controller::api::{self, ApiListener, ApiState};
use kedge_controller::docker::DockerClient;
use kedge_controller::store::etcd::EtcdTls;
use kedge_controller::store::{EmbeddedOptions, EmbeddedStore, EtcdOptions, EtcdStore, SharedStore};
use tokio_util::sync::CancellationToken;

/// Arguments of `kedge agent`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  \
    kedge agent --state-dir /var/lib/kedge\n  \
    kedge agent --store etcd://10.0.0.1:2379,10.0.0.2:2379 --host-name web-1 --host-label zone=a\n  \
    kedge agent --tls-cert /etc/kedge/tls.crt --tls-key /etc/kedge/tls.key --listen 0.0.0.0:7443\n  \
    kedge agent --registry-config /etc/kedge/registries.json\n  \
    kedge agent --store etcd://10.0.0.1:2379 --etcd-ca ca.pem --etcd-cert client.pem --etcd-key client.key \\\n      \
    --etcd-user kedge --etcd-password-file /etc/kedge/etcd-password\n\n\
    The --etcd-* flags may also be given as KEDGE_ETCD_USER, KEDGE_ETCD_PASSWORD_FILE (or the password\n\
    itself in KEDGE_ETCD_PASSWORD), KEDGE_ETCD_CA, KEDGE_ETCD_CERT and KEDGE_ETCD_KEY; flags win.")]
pub struct AgentArgs {
    /// Where desired state lives: `etcd://HOST:PORT[,HOST:PORT...]`, `embedded` (a file in the state
    /// directory) or `embedded:PATH`.
    #[arg(long, env = "KEDGE_STORE", default_value = "embedded")]
    pub store: String,
    /// State directory: the embedded store's file, the API token, the API's Unix socket.
    #[arg(long, env = "KEDGE_STATE_DIR", default_value = "/var/lib/kedge")]
    pub state_dir: PathBuf,
    /// The name this agent reconciles for (default: the machine's hostname).
    #[arg(long, env = "KEDGE_HOST_NAME")]
    pub host_name: Option<String>,
    /// A label of this host, `key=value`, matched by specs' host selectors. Repeatable.
    #[arg(long = "host-label", value_name = "KEY=VALUE")]
    pub host_labels: Vec<String>,
    /// Address the HTTP API listens on (bearer-token authenticated).
    #[arg(long, env = "KEDGE_LISTEN", default_value = "127.0.0.1:7443")]
    pub listen: String,
    /// Also serve `GET /metrics` (Prometheus text) without a token on this address, for a
    /// Prometheus that holds none (docs/metrics.md). The API serves it to any valid token anyway.
    #[arg(long, env = "KEDGE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// How many specs are reconciled at once.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// How often the agent lists its containers and reconciles each spec even without an event,
    /// in seconds (spread evenly over the interval). A spec whose last reconcile converged and whose
    /// containers are listed as that reconcile saw them is passed over (`kedge_resync_keys_total`).
    #[arg(long, env = "KEDGE_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
    /// How long a host must be NotReady before the scheduler moves its specs to other hosts, in
    /// seconds. Only the agent leading the scheduler uses it; give every agent the same value.
    #[arg(long, default_value_t = 30)]
    pub scheduler_grace_seconds: u64,
    /// Logs as JSON lines instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,
    /// The container this agent runs in (ID or name), when it cannot find it by itself
    /// (docs/upgrades.md): an upgrade campaign can then replace it.
    #[arg(long, env = "KEDGE_CONTAINER")]
    pub container: Option<String>,
    /// A file rewritten after every heartbeat that reached the store, for `kedge healthcheck`
    /// (kedge's container image sets it).
    #[arg(long, env = "KEDGE_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Serve the TCP API over HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    /// Plain HTTP to that port is then refused.
    #[arg(long, env = "KEDGE_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "KEDGE_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require clients to present a certificate signed by a CA in this PEM file (mutual TLS), in
    /// addition to the bearer token. Needs --tls-cert.
    #[arg(long, env = "KEDGE_TLS_CLIENT_CA", value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// How many connections each API listener serves at once; more wait in the kernel's backlog
    /// until one closes (idle ones are closed after 10 s without a request).
    #[arg(long, env = "KEDGE_API_MAX_CONNECTIONS", default_value_t = api::connections::MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub api_max_connections: u32,
    /// An image repository (`registry/name`, no tag) that upgrade campaigns may move this agent to,
    /// besides the one it runs. Repeatable; give every agent of a fleet the same list. Campaigns to
    /// any other repository are refused by the API and by the agent.
    #[arg(
        long = "upgrade-repository",
        env = "KEDGE_UPGRADE_REPOSITORIES",
        value_delimiter = ',',
        value_name = "REPOSITORY"
    )]
    pub upgrade_repositories: Vec<String>,
    /// Send Warning events, rollbacks, updates and upgrade results to this URL (repeatable): a JSON
    /// webhook; Slack for hooks.slack.com or `slack+https://…`; ntfy for ntfy.sh or
    /// `ntfy+https://…` (docs/notifications.md). Batched and rate-limited.
    #[arg(long = "notify", env = "KEDGE_NOTIFY", value_delimiter = ',', value_name = "URL")]
    pub notify: Vec<String>,
    /// The host-escape policy level of every namespace without one stored (`kedge policy set`;
    /// docs/policy.md): `baseline` refuses
    /// privileged containers, added capabilities, the host network and bind mounts of sensitive
    /// host paths; `restricted` also requires a non-root user and read-only bind mounts;
    /// `privileged` refuses nothing. Enforced on API writes and again before a spec is run.
    #[arg(long, env = "KEDGE_POLICY_LEVEL", value_name = "LEVEL", default_value = "baseline",
          value_parser = parse_policy_level)]
    pub policy_level: kedge_crds::PolicyLevel,
    /// A Docker `config.json` whose `auths` map holds registry credentials (docs/registry-credentials.md):
    /// every pull and registry digest lookup of an image sends its registry's entry to the engine.
    /// Read once at start; a file kedge cannot use stops the start (exit 2). Default: none.
    #[arg(long, env = "KEDGE_REGISTRY_CONFIG", value_name = "FILE")]
    pub registry_config: Option<PathBuf>,
    #[command(flatten)]
    pub etcd: EtcdArgs,
}

/// How a command that opens the store itself reaches an etcd with TLS and authentication
/// (docs/multi-host.md). Only files are named here: no secret is ever a flag's value, where `ps` and
/// shell history would show it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EtcdArgs {
    /// The etcd user to authenticate as (etcd with `auth enable`); needs --etcd-password-file.
    #[arg(long, env = "KEDGE_ETCD_USER", value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password (a trailing newline is not part of it). Without it,
    /// the password is read from KEDGE_ETCD_PASSWORD.
    #[arg(long, env = "KEDGE_ETCD_PASSWORD_FILE", value_name = "FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// The PEM CA certificate(s) that signed the etcd members' server certificates; turns TLS on
    /// (endpoints without a scheme are reached over https).
    #[arg(long, env = "KEDGE_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// A PEM client certificate for etcd members started with `--client-cert-auth`; needs --etcd-key.
    #[arg(long, env = "KEDGE_ETCD_CERT", value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The PEM private key of --etcd-cert.
    #[arg(long, env = "KEDGE_ETCD_KEY", value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdArgs {
    fn is_set(&self) -> bool {
        self.etcd_user.is_some()
            || self.etcd_password_file.is_some()
            || self.etcd_ca.is_some()
            || self.etcd_cert.is_some()
            || self.etcd_key.is_some()
    }

    /// The store options for `url` (`etcd://HOST:PORT[,...]`) with these credentials and TLS files,
    /// every file read now so that a wrong path stops the start, naming the file. `env_password` is
    /// KEDGE_ETCD_PASSWORD's value, used when no password file is named.
    pub fn options(&self, url: &str, env_password: Option<String>) -> anyhow::Result<EtcdOptions> {
        let mut options = EtcdOptions::from_url(url)?;
        let password = match &self.etcd_password_file {
            Some(file) => Some(read_password_file(file)?),
            None => env_password,
        };
        options.user = match (&self.etcd_user, password) {
            (Some(user), Some(password)) => Some((user.clone(), password)),
            (None, None) => None,
            (Some(user), None) => anyhow::bail!(
                "--etcd-user {user:?} needs a password: --etcd-password-file FILE (or KEDGE_ETCD_PASSWORD)"
            ),
            (None, Some(_)) => anyhow::bail!(
                "an etcd password was given without a user: add --etcd-user NAME (or KEDGE_ETCD_USER)"
            ),
        };
        let read = |flag: &str, file: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            file.as_ref()
                .map(|file| {
                    std::fs::read(file).with_context(|| format!("cannot read {flag} {}", file.display()))
                })
                .transpose()
        };
        let ca_pem = read("--etcd-ca", &self.etcd_ca)?;
        let client_cert_pem = read("--etcd-cert", &self.etcd_cert)?;
        let client_key_pem = read("--etcd-key", &self.etcd_key)?;
        if ca_pem.is_some() || client_cert_pem.is_some() {
            options.tls = Some(EtcdTls { ca_pem, client_cert_pem, client_key_pem, domain: None });
        }
        Ok(options)
    }
}

/// The password in `file`, without the line ending an editor or `echo` leaves at its end.
fn read_password_file(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| {
        format!("cannot read the etcd password file {} (--etcd-password-file)", file.display())
    })?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    anyhow::ensure!(!password.is_empty(), "the etcd password file {} is empty", file.display());
    Ok(password.to_owned())
}

fn parse_policy_level(text: &str) -> Result<kedge_crds::PolicyLevel, String> {
    text.parse()
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    let host_name = match args.host_name.clone() {
        Some(name) => name,
        None => hostname().context("cannot read the machine's hostname; pass --host-name")?,
    };
    let mut config = AgentConfig::new(host_name.clone());
    config.workers = args.workers;
    config.resync_interval = Duration::from_secs(args.resync_seconds.max(1));
    config.scheduler_grace = Duration::from_secs(args.scheduler_grace_seconds);
    config.container = args.container.clone();
    config.ready_file = args.ready_file.clone();
    config.upgrade_repositories = args.upgrade_repositories.clone();
    // The state directory as an absolute path, so that no bind mount of it passes the policy
    // however it is written (it holds the API token and the embedded store).
    let state_dir = std::path::absolute(&args.state_dir).unwrap_or_else(|_| args.state_dir.clone());
    config.policy = kedge_crds::PolicySettings {
        default_level: args.policy_level,
        namespaces: Default::default(),
        state_dir: Some(state_dir.to_string_lossy().into_owned()),
        // The engine's socket wherever DOCKER_HOST puts it (the default one is listed already).
        engine_socket: std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|host| host.strip_prefix("unix://").map(str::to_owned))
            .filter(|path| path.starts_with('/')),
    };
    for label in &args.host_labels {
        let (key, value) =
            label.split_once('=').with_context(|| format!("--host-label {label:?} is not KEY=VALUE"))?;
        config.host_labels.insert(key.to_owned(), value.to_owned());
    }

    for repository in &args.upgrade_repositories {
        anyhow::ensure!(
            !repository.is_empty()
                && kedge_controller::upgrade::repository_of(repository) == repository.as_str(),
            "--upgrade-repository {repository:?} must be a repository without a tag or digest"
        );
    }
    // Read before anything starts: a file kedge cannot use is the user's input to fix (exit 2).
    let registry_auth =
        args.registry_config.as_deref().map(kedge_controller::docker::RegistryAuth::from_file).transpose()?;
    raise_open_file_limit();
    // Read before anything starts: a wrong path or key fails the start, not the first request.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            api::TlsConfig::from_files(cert, key, args.tls_client_ca.as_deref())
                .with_context(|| format!("--tls-cert {} / --tls-key {}", cert.display(), key.display()))?,
        ),
        _ => None,
    };
    // Read before anything starts, like the files above; logged without paths (they hold tokens).
    let notify_targets = args
        .notify
        .iter()
        .map(|url| kedge_controller::notify::Target::parse(url))
        .collect::<Result<Vec<_>, _>>()?;
    create_private_dir(&args.state_dir)?;
    let store = open_store(&args.store, &args.state_dir, &args.etcd).await?;
    // Every request of the agent and its API is timed, whichever store it is (docs/metrics.md).
    let store_kind = if args.store.starts_with("etcd://") { "etcd" } else { "embedded" };
    let store: SharedStore =
        Arc::new(kedge_controller::store::MeteredStore::new(store, store_kind, config.metrics.clone()));
    let mut docker = DockerClient::connect().await.context("cannot reach the Docker Engine (DOCKER_HOST)")?;
    if let Some(auth) = registry_auth {
        if auth.names_credential_helpers() {
            tracing::warn!(file = %auth.source().display(), "the registry config names credential helpers (credsStore, credHelpers), which kedge does not run; only its `auths` entries are used");
        }
        let registries: Vec<&str> = auth.registries().collect();
        tracing::info!(file = %auth.source().display(), ?registries, "registry credentials loaded");
        docker = docker.with_registry_auth(auth);
    }

    if !notify_targets.is_empty() {
        let targets: Vec<String> =
            notify_targets.iter().map(|t| format!("{:?} {}", t.format, t.redacted())).collect();
        tracing::info!(?targets, "notifications enabled");
        let notifier = kedge_controller::notify::Notifier::start(
            notify_targets,
            host_name.clone(),
            kedge_controller::notify::Settings::default(),
        );
        kedge_controller::notify::install(notifier);
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    crate::memory::hand_back_freed_memory();

    let token = api::token::load_or_create_token(&args.state_dir)
        .with_context(|| format!("cannot create the API token in {}", args.state_dir.display()))?;
    let state = ApiState {
        // A managed container's recreate runs in its key's worker: one writer per container.
        recreate: Some(kedge_controller::updater::agent_recreate_handler(
            docker.clone(),
            host_name.clone(),
            config.requests.clone(),
        )),
        docker: Some(docker.clone()),
        health: Some(config.health.clone()),
        metrics: Some(config.metrics.clone()),
        limits: api::ConnectionLimits {
            max_connections: args.api_max_connections as usize,
            ..Default::default()
        },
        upgrade_repositories: args.upgrade_repositories.clone(),
        policy: config.policy.clone(),
        ..ApiState::new(store.clone(), host_name.clone(), Some(token))
    };
    let tcp = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let scheme = match &tls {
        None => "http",
        Some(tls) if tls.requires_client_certificate() => "https, client certificates required",
        Some(_) => "https",
    };
    tracing::info!(address = %tcp.local_addr()?, scheme, "API listening (bearer token in {})", api::token::token_path(&args.state_dir).display());
    let metrics_listener = match &args.metrics_listen {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("--metrics-listen: cannot listen on {address}"))?;
            tracing::info!(address = %listener.local_addr()?, "metrics listening (GET /metrics, no token)");
            Some(listener)
        }
        None => None,
    };
    let socket_path = args.state_dir.join("kedge.sock");
    let _ = std::fs::remove_file(&socket_path);
    let unix = tokio::net::UnixListener::bind(&socket_path)
        .with_context(|| format!("cannot listen on {}", socket_path.display()))?;
    set_mode(&socket_path, 0o600)?;
    let mut servers = tokio::task::JoinSet::new();
    let tcp = match tls {
        Some(tls) => ApiListener::Tls(tcp, tls),
        None => ApiListener::Tcp(tcp),
    };
    servers.spawn(api::serve(state.clone(), tcp, shutdown.clone().cancelled_owned()));
    servers.spawn(api::serve(state, ApiListener::Unix(unix), shutdown.clone().cancelled_owned()));
    if let Some(listener) = metrics_listener {
        servers.spawn(api::serve_metrics(
            config.metrics.clone(),
            listener,
            shutdown.clone().cancelled_owned(),
        ));
    }

    let outcome = agent::run(store, docker, config, shutdown.clone()).await;
    // What the last moments recorded (a rollback, say) is sent before the process exits.
    kedge_controller::notify::flush(Duration::from_secs(3)).await;
    shutdown.cancel();
    while let Some(result) = servers.join_next().await {
        if let Ok(Err(error)) = result {
            tracing::warn!(%error, "API server ended with an error");
        }
    }
    let _ = std::fs::remove_file(&socket_path);
    outcome.context("agent failed")
}

/// Raises the soft limit on open files to the hard one (systemd's default soft limit is 1,024): every
/// API connection, engine stream and store file is a descriptor.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// Opens the store an `--store` value names.
async fn open_store(spec: &str, state_dir: &Path, etcd: &EtcdArgs) -> anyhow::Result<SharedStore> {
    if spec.starts_with("etcd://") {
        let options = etcd.options(spec, std::env::var("KEDGE_ETCD_PASSWORD").ok())?;
        let store = EtcdStore::connect(options).await.with_context(|| format!("cannot connect to {spec}"))?;
        return Ok(Arc::new(store));
    }
    if etcd.is_set() {
        tracing::warn!(store = spec, "the --etcd-* settings are ignored: the store is not etcd");
    }
    let path = match spec {
        "embedded" => state_dir.join("kedge.db"),
        other => match other.strip_prefix("embedded:") {
            Some(path) => PathBuf::from(path),
            None => {
                anyhow::bail!("--store {other:?}: expected etcd://HOST:PORT[,...], embedded or embedded:PATH")
            }
        },
    };
    let store = EmbeddedStore::open(&path, EmbeddedOptions::default())
        .await
        .with_context(|| format!("cannot open the embedded store {}", path.display()))?;
    tokio::spawn(exit_when_failed(store.clone()));
    Ok(Arc::new(store))
}

/// The exit status of an agent whose embedded store failed (a full disk, an I/O error).
pub const EXIT_STORE_FAILED: i32 = 5;

/// An embedded store that failed to write stays failed: the agent exits with
/// [`EXIT_STORE_FAILED`] within a second or two, so that its supervisor (systemd's `Restart=`,
/// Docker's `--restart`) starts it again; the new process replays the file and serves again once the
/// disk has room. Its containers keep running meanwhile.
async fn exit_when_failed(store: EmbeddedStore) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        if let Some(why) = store.failure() {
            tracing::error!(error = %why, "the embedded store cannot write; exiting so a supervisor restarts kedge");
            // Not eprintln!: it panics when stderr cannot be written (a full disk under a redirect),
            // which would turn this exit into a panic's 101.
            let _ = writeln!(
                std::io::stderr(),
                "kedge agent: the embedded store cannot write ({why}); exiting with status {EXIT_STORE_FAILED}"
            );
            std::process::exit(EXIT_STORE_FAILED);
        }
    }
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written (a full disk) is dropped, not reported on stderr by the
    // subscriber itself, which would fail the same way.
    // Colour only on a terminal (and without NO_COLOR): a log file or journald gets plain text.
    let colour = crate::output::use_colour(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .log_internal_errors(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn hostname() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_owned();
    anyhow::ensure!(!name.is_empty(), "empty hostname");
    Ok(name)
}

/// Creates the state directory 0700. A directory that already exists is the operator's: its mode is
/// left alone (the files kedge puts there are 0600 themselves).
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    set_mode(dir, 0o700)
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the permissions of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    fn etcd_args(args: &[&str]) -> EtcdArgs {
        Command::try_parse_from(std::iter::once("kedge").chain(args.iter().copied()))
            .expect("the arguments parse")
            .etcd
    }

    fn write(dir: &Path, name: &str, text: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("a temporary file");
        path.display().to_string()
    }

    #[test]
    fn the_password_comes_from_its_file_without_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "password", "s3cret\n");
        let args = etcd_args(&["--etcd-user", "kedge", "--etcd-password-file", &file]);
        let options = args.options("etcd://10.0.0.1:2379", Some("from-the-environment".into())).unwrap();
        assert_eq!(options.user, Some(("kedge".to_owned(), "s3cret".to_owned())), "the file wins");
        assert!(!format!("{options:?}").contains("s3cret"), "Debug shows no password");
        let crlf = write(dir.path(), "crlf", "pass word\r\n");
        let args = etcd_args(&["--etcd-user", "kedge", "--etcd-password-file", &crlf]);
        assert_eq!(args.options("etcd://h:2379", None).unwrap().user.unwrap().1, "pass word");
        // Without a file, KEDGE_ETCD_PASSWORD's value.
        let args = etcd_args(&["--etcd-user", "kedge"]);
        let options = args.options("etcd://h:2379", Some("from-the-environment".into())).unwrap();
        assert_eq!(options.user.unwrap().1, "from-the-environment");
    }

    #[test]
    fn a_missing_or_empty_password_file_and_a_user_without_a_password_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope").display().to_string();
        let args = etcd_args(&["--etcd-user", "kedge", "--etcd-password-file", &missing]);
        let error = format!("{:#}", args.options("etcd://h:2379", None).unwrap_err());
        assert!(error.contains(&missing) && error.contains("--etcd-password-file"), "{error}");
        let empty = write(dir.path(), "empty", "\n");
        let args = etcd_args(&["--etcd-user", "kedge", "--etcd-password-file", &empty]);
        let error = format!("{:#}", args.options("etcd://h:2379", None).unwrap_err());
        assert!(error.contains("empty") && error.contains(&empty), "{error}");
        let error =
            format!("{:#}", etcd_args(&["--etcd-user", "kedge"]).options("etcd://h:2379", None).unwrap_err());
        assert!(error.contains("--etcd-password-file"), "{error}");
        let error = format!("{:#}", etcd_args(&[]).options("etcd://h:2379", Some("pw".into())).unwrap_err());
        assert!(error.contains("--etcd-user"), "{error}");
    }

    #[test]
    fn tls_files_are_read_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = write(dir.path(), "ca.pem", "CA");
        let cert = write(dir.path(), "client.pem", "CERT");
        let key = write(dir.path(), "client.key", "KEY");
        let args = etcd_args(&["--etcd-ca", &ca, "--etcd-cert", &cert, "--etcd-key", &key]);
        let tls = args.options("etcd://h:2379", None).unwrap().tls.expect("TLS is on");
        assert_eq!(tls.ca_pem.as_deref(), Some(&b"CA"[..]));
        assert_eq!(tls.client_cert_pem.as_deref(), Some(&b"CERT"[..]));
        assert_eq!(tls.client_key_pem.as_deref(), Some(&b"KEY"[..]));
        assert!(etcd_args(&[]).options("etcd://h:2379", None).unwrap().tls.is_none());
        let missing = dir.path().join("missing-ca.pem").display().to_string();
        let error =
            format!("{:#}", etcd_args(&["--etcd-ca", &missing]).options("etcd://h:2379", None).unwrap_err());
        assert!(error.contains("--etcd-ca") && error.contains(&missing), "{error}");
        // A certificate goes with its key.
        assert!(Command::try_parse_from(["kedge", "--etcd-cert", &cert]).is_err());
    }
}
