//! The `kedge` binary: argument parsing and output formatting only; the work happens in `kedge-controller`
//! (the agent) and behind the HTTP API (every other command).
//!
//! Modules, in layers (each imports only those below): `client` (HTTP and error mapping), `types`
//! (answers that are no crds kind), `output` (every table, YAML and describe page), `config` (server,
//! token and contexts), `error` (exit codes), `base` (connecting, input files, decoding); `sets` (a
//! ContainerSet's row and page), `kinds` (the per-kind table of `get`: a crds kind's row, `Table`),
//! `secrets` (a Secret's row and page, `create secret`), `objects` (apply/prune/diff/delete/describe of declared kinds); then the verbs: `get`, `commands` (one function per command), `upgrade`, `token`, `dashboard` (the local proxy of the web dashboard), `lifecycle`, `run`, `check`, `recreate`.

mod agent;
mod base;
mod check;
mod client;
mod commands;
mod config;
mod dashboard;
mod error;
mod get;
mod gitsources;
mod handoff;
mod kinds;
mod lifecycle;
mod memory;
mod objects;
mod output;
mod policy;
mod readiness;
mod recreate;
mod rollout;
mod run;
mod secrets;
mod sets;
mod template;
#[cfg(test)]
mod tests;
mod token;
mod top;
mod types;
mod upgrade;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{CliError, Exit};

/// kedge keeps Docker hosts in the state their owners declared.
#[derive(Debug, Parser)]
#[command(name = "kedge", version, propagate_version = true)]
#[command(after_help = "Examples:\n  kedge apply -f specs/ --prune\n  kedge get containers -o wide\n\n\
Exit codes: 0 ok, 1 changes found, 2 usage or invalid input, 3 not found, 4 conflict,\n\
5 server unreachable, unauthorized or failed, 6 timed out (see docs/cli.md).")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Commands,
}

/// How to reach the API (see `kedge config --help` for the precedence).
#[derive(Clone, Args)]
pub struct GlobalArgs {
    /// The agent's API, e.g. `http://127.0.0.1:7443`.
    #[arg(long, global = true, env = "KEDGE_SERVER")]
    pub server: Option<String>,
    /// The API's bearer token (the agent writes it to STATE_DIR/api-token). A token on the command
    /// line shows in `ps` and shell history: prefer --token-file or a context.
    #[arg(long, global = true, env = "KEDGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the API's bearer token, read at each call (e.g. a copy of STATE_DIR/api-token).
    #[arg(long, global = true, env = "KEDGE_TOKEN_FILE", value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// A context of the config file to use instead of its current one.
    #[arg(long, global = true, env = "KEDGE_CONTEXT")]
    pub context: Option<String>,
    /// The config file (default `~/.config/kedge/config.json`).
    #[arg(long, global = true, env = "KEDGE_CONFIG")]
    pub kedgeconfig: Option<PathBuf>,
    /// The namespace to work in (default: the context's, else `default`).
    #[arg(short = 'n', long, global = true, env = "KEDGE_NAMESPACE")]
    pub namespace: Option<String>,
    /// The CA certificate (PEM) that signed an `https://` server's certificate.
    #[arg(long, global = true, env = "KEDGE_CA_CERT")]
    pub certificate_authority: Option<PathBuf>,
    /// A client certificate (PEM) for an agent that requires one (`kedge agent --tls-client-ca`).
    #[arg(long, global = true, env = "KEDGE_CLIENT_CERT", value_name = "FILE", requires = "client_key")]
    pub client_certificate: Option<PathBuf>,
    /// The PEM private key of --client-certificate.
    #[arg(
        long,
        global = true,
        env = "KEDGE_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_certificate"
    )]
    pub client_key: Option<PathBuf>,
    /// Which of `server`, `token` and `namespace` were given on the command line rather than by the
    /// environment (`config set-context` saves only those).
    #[arg(skip)]
    pub from_command_line: Vec<&'static str>,
}

impl std::fmt::Debug for GlobalArgs {
    /// As derived, with `token` redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let GlobalArgs {
            server,
            token,
            token_file,
            context,
            kedgeconfig,
            namespace,
            certificate_authority,
            client_certificate,
            client_key,
            from_command_line,
        } = self;
        f.debug_struct("GlobalArgs")
            .field("server", server)
            .field("token", &token.as_ref().map(|_| kedge_crds::REDACTED))
            .field("token_file", token_file)
            .field("context", context)
            .field("kedgeconfig", kedgeconfig)
            .field("namespace", namespace)
            .field("certificate_authority", certificate_authority)
            .field("client_certificate", client_certificate)
            .field("client_key", client_key)
            .field("from_command_line", from_command_line)
            .finish()
    }
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the agent: the reconciler and the API server for this Docker host.
    #[command(after_help = "Example:\n  kedge agent --state-dir /var/lib/kedge --listen 127.0.0.1:7443")]
    Agent(Box<agent::AgentArgs>),
    /// Create or update specs from files, directories (recursively) or `-` (stdin).
    #[command(after_help = "Examples:\n  kedge apply -f web.yaml\n  kedge apply -f specs/ --prune\n  \
cat web.yaml | kedge apply -f - --dry-run=server\n  kedge apply -f specs/ --wait --timeout 2m")]
    Apply(ApplyArgs),
    /// List or show containers, ContainerSets, hosts or events.
    #[command(
        after_help = "Examples:\n  kedge get containers\n  kedge get containers -l app=web -o wide\n  \
kedge get container web -o yaml\n  kedge get containers web db\n  kedge get containers -A -w\n  \
kedge get container web -o jsonpath='{.status.containerId}'\n  \
kedge get containers -o custom-columns=NAME:.metadata.name,IMAGE:.spec.image --sort-by .spec.image\n  \
kedge get sets\n  kedge get all -A"
    )]
    Get(GetArgs),
    /// Show a container's (or a ContainerSet's) summary, status, conditions and recent events.
    #[command(after_help = "Examples:\n  kedge describe container web\n  kedge describe containerset web")]
    Describe {
        #[arg(value_enum)]
        kind: ObjectKind,
        name: String,
    },
    /// Create an object from the command line: `kedge create secret NAME --from-literal K=V`.
    #[command(after_help = "Examples:\n  kedge create secret db --from-literal password=s3cret\n  \
kedge create secret app --from-env-file app.env\n  kedge create secret tls --from-file key=server.key --update\n\n\
Values are never shown back: `get`, `describe` and `diff` print `<redacted>` and a fingerprint.")]
    Create {
        #[command(subcommand)]
        command: CreateCommand,
    },
    /// Show how the live specs differ from local files (exit 0: no change, 1: changes, >1: error).
    #[command(after_help = "Example:\n  kedge diff -f specs/ && echo in sync")]
    Diff {
        /// Files, directories or `-`.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        compose: ComposeArgs,
    },
    /// Convert Compose files to kedge specs: print them, or write one file per object to `-o DIR`.
    /// `apply`, `diff`, `validate` and `delete` also take Compose files directly (docs/compose.md).
    #[command(
        after_help = "Examples:\n  kedge convert -f compose.yml\n  kedge convert -f compose.yml -o specs/ -p shop\n  \
kedge convert -f compose.yml --env-file prod.env --profile debug"
    )]
    Convert(ConvertArgs),
    /// Delete containers or ContainerSets by name, by the files that declare them, or by label
    /// selector. Deleting a ContainerSet deletes its children.
    #[command(after_help = "Examples:\n  kedge delete container web\n  kedge delete -f specs/\n  \
kedge delete container -l app=web\n  kedge delete containerset web")]
    Delete(DeleteArgs),
    /// Wait until a container meets a condition or is deleted.
    #[command(after_help = "Examples:\n  kedge wait container web --for condition=Ready --timeout 60s\n  \
kedge wait container web --for delete")]
    Wait(WaitArgs),
    /// Print a container's logs, served by the agent of the container's host.
    #[command(after_help = "Examples:\n  kedge logs web\n  kedge logs web -f --tail 20")]
    Logs {
        name: String,
        /// Keep printing new lines until the container stops (or Ctrl-C).
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many lines of history to print first.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Only lines newer than this (`30s`, `5m`, `2h`).
        #[arg(long, value_name = "DURATION")]
        since: Option<kedge_crds::HumanDuration>,
        /// Start each line with the engine's RFC 3339 timestamp.
        #[arg(long)]
        timestamps: bool,
    },
    /// Run a command in a container, on its host's engine; exits with the command's exit code.
    #[command(
        after_help = "Examples:\n  kedge exec web -- nginx -t\n  kedge exec db -u postgres -- psql -c 'select 1'\n  \
kedge exec -i db -- psql < dump.sql"
    )]
    Exec {
        name: String,
        /// Pass this command's standard input to the command (read to its end first).
        #[arg(short = 'i', long)]
        stdin: bool,
        /// A terminal (not supported: see docs/cli.md).
        #[arg(short = 't', long)]
        tty: bool,
        /// The user to run as (`name`, `uid`, `uid:gid`); default the container's.
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// The working directory; default the container's.
        #[arg(short = 'w', long)]
        workdir: Option<String>,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// CPU, memory, network and block I/O and processes of containers, from their host's agent.
    #[command(after_help = "Examples:\n  kedge top\n  kedge top web db -n shop\n\n\
Without names: the namespace's containers on the host of the agent --server names (the others are\n\
counted; ask their agents). One sample each, taken by the engine over about a second.")]
    Top {
        /// Containers to sample (default: the namespace's containers on this agent's host).
        names: Vec<String>,
    },
    /// List events, or stream them with `-w`.
    #[command(
        after_help = "Examples:\n  kedge events\n  kedge events --for web -w\n  kedge events --for containerset/web --types Warning"
    )]
    Events {
        /// Only the events of this object: NAME (a container, or any kind's object of that name) or
        /// KIND/NAME (`container/web`, `containerset/web`, `gitsource/site`, `host/h1`).
        #[arg(long = "for", value_name = "[KIND/]NAME")]
        for_name: Option<String>,
        /// Only events of these types (comma-separated).
        #[arg(long, value_enum, ignore_case = true, value_delimiter = ',', value_name = "TYPE")]
        types: Vec<EventTypeArg>,
        #[arg(short = 'w', long)]
        watch: bool,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// wide, yaml, json, name, jsonpath=TEMPLATE or custom-columns=SPEC (as `get`).
        #[arg(short = 'o', long, value_parser = parse_get_output, value_name = "FORMAT")]
        output: Option<GetOutput>,
    },
    /// Check spec files without a server: shape and every rule, with file:line:column and field path.
    #[command(after_help = "Example:\n  kedge validate -f specs/")]
    Validate {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        compose: ComposeArgs,
    },
    /// Print the JSON Schema of the Container (or ContainerSet) resource (for editors and CI).
    #[command(
        after_help = "Examples:\n  kedge schema > container.schema.json\n  kedge schema containerset > containerset.schema.json"
    )]
    Schema {
        #[arg(value_enum, default_value = "container")]
        kind: ObjectKind,
    },
    /// Describe a field of a kind from its schema: type, documentation and the fields below it.
    #[command(
        after_help = "Examples:\n  kedge explain container.spec\n  kedge explain container.spec.resources.memory\n  \
kedge explain containerset.spec.template --recursive\n  kedge explain gitsource.spec.webhook\n\n\
A path goes through lists (`container.spec.ports.hostPort`) and into the map form of fields that also\n\
take a string (ports, mounts, restartPolicy)."
    )]
    Explain {
        /// KIND[.FIELD...]: container, containerset or gitsource, then field names as written in a spec.
        #[arg(value_name = "KIND.FIELD")]
        path: String,
        /// Every field below, names and types only.
        #[arg(long)]
        recursive: bool,
    },
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  kedge completion bash > /etc/bash_completion.d/kedge")]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show or edit the config file's contexts.
    #[command(after_help = "Examples:\n  kedge config set-context prod --server http://10.0.0.5:7443 \
--token-file ~/prod.token\n  kedge config use-context prod\n  kedge config get-contexts\n\n\
Precedence: --server/--token, KEDGE_SERVER/KEDGE_TOKEN, --context or currentContext, then\n\
http://127.0.0.1:7443 and the local agent's token file ($KEDGE_STATE_DIR or /var/lib/kedge, api-token).")]
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the client's and the server's versions.
    #[command(after_help = "Example:\n  kedge version")]
    Version,
    /// Sync a GitSource now: fetch its repository and apply the commit (docs/gitops.md).
    #[command(after_help = "Example:\n  kedge reconcile gitsource apps")]
    Reconcile {
        #[arg(value_enum)]
        kind: ReconcileKind,
        name: String,
    },
    /// Stop syncing a GitSource: nothing is fetched or applied, what runs keeps running (sets its
    /// spec.suspend, the rest of the spec kept; docs/gitops.md).
    #[command(
        after_help = "Example:\n  kedge suspend gitsource apps\n  kedge get gitsources    # READY shows Suspended"
    )]
    Suspend {
        #[arg(value_enum)]
        kind: ReconcileKind,
        name: String,
    },
    /// Sync a suspended GitSource again, at once (clears its spec.suspend; docs/gitops.md).
    #[command(after_help = "Example:\n  kedge resume gitsource apps")]
    Resume {
        #[arg(value_enum)]
        kind: ReconcileKind,
        name: String,
    },
    /// Is a container's image current? Straight to the Docker Engine, for any container (no agent).
    #[command(after_help = "Examples:\n  kedge check\n  kedge check web; echo $?\n  \
kedge check --pull --autoupdate web\n  \
kedge check --registry -o json\n  \
docker run --rm -v /var/run/docker.sock:/var/run/docker.sock kedge check web\n\n\
Without NAME: a report of the running containers (not kedge's own): image, update available\n\
(local; with --registry also the registry's digest and the newer tag under a kedge spec's\n\
updatePolicy.tags); exit 1 when any has an update. `-o name` lists the names only, exit 0.\n\
Exit codes: 0 current (or updated by --autoupdate), 1 update available, 2 usage,\n\
3 no such container or local image, 5 engine unreachable or failed, recreate rolled back.")]
    Check(check::CheckArgs),
    /// Recreate any container (managed or not) as declared, safely: rollback on failure.
    #[command(after_help = "Examples:\n  kedge recreate web --pull --cleanup\n  \
docker run --rm -v /var/run/docker.sock:/var/run/docker.sock kedge recreate web --pull\n\n\
Keeps the declared config (not the old image's defaults), every network with its aliases and\n\
static addresses, volumes and ports. Progress on stderr; one line on stdout when done.\n\
Exit codes: 0 recreated, 2 usage, 3 not found, 4 name conflict, 5 engine failed or rolled back.")]
    Recreate(recreate::RecreateArgs),
    /// docker-map's actions: stop, start, restart, startup, shutdown, run (lifecycle.rs).
    #[command(flatten)]
    Lifecycle(lifecycle::LifecycleCommand),
    /// Upgrade kedge itself: `kedge upgrade agents --version V` (docs/upgrades.md).
    Upgrade {
        #[command(subcommand)]
        command: upgrade::UpgradeCommand,
    },
    /// A ContainerSet's rollouts and a Container's images: `kedge rollout status|history|undo
    /// containerset|container NAME`.
    Rollout {
        #[command(subcommand)]
        command: rollout::RolloutCommand,
    },
    /// The host-escape policy level of each namespace (docs/policy.md): `kedge policy set NAMESPACE
    /// privileged|baseline|restricted|default`, `kedge policy get [NAMESPACE]`. Admin only.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// The web dashboard on a local port, through a proxy that adds this CLI's credentials
    /// (docs/dashboard.md).
    #[command(after_help = "Examples:\n  kedge dashboard\n  kedge dashboard --port 0 --no-browser\n  \
kedge --context lab dashboard --port 9000\n\n\
Prints `Dashboard at http://127.0.0.1:PORT/ui/` and opens it with xdg-open unless --no-browser.\n\
The browser never sees the token: the proxy adds it to each request it forwards to the server.\n\
It listens only on loopback, answers only requests addressed to its own host and port (DNS\n\
rebinding), and forwards changes (POST, PUT, DELETE) only from its own page's origin (CSRF).\n\
What the page may do is what the CLI's token may do: the upgrade button shows for admins only.")]
    Dashboard(dashboard::DashboardArgs),
    /// The API's scoped tokens: `kedge token create|list|revoke` (docs/access.md).
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Run by the upgrade helper container: replace an agent's container (docs/upgrades.md).
    #[command(hide = true)]
    UpgradeHelper(upgrade::HelperArgs),
    /// The container image's HEALTHCHECK: healthy while the agent's heartbeats reach the store.
    #[command(hide = true)]
    Healthcheck(upgrade::HealthcheckArgs),
}

#[derive(Debug, Subcommand)]
pub enum CreateCommand {
    /// A Secret: values containers take as environment variables (`spec.secretEnv`).
    Secret(secrets::CreateSecretArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ContainerKind {
    #[value(alias = "containers", alias = "c")]
    Container,
}

/// What `describe` and `delete` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectKind {
    #[value(alias = "containers", alias = "c")]
    Container,
    #[value(alias = "containersets", alias = "set", alias = "sets", alias = "cs")]
    Containerset,
    #[value(alias = "secrets")]
    Secret,
    #[value(alias = "gitsources", alias = "gs")]
    Gitsource,
}

/// What `reconcile`, `suspend` and `resume` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReconcileKind {
    #[value(alias = "gitsources", alias = "gs")]
    Gitsource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resource {
    /// Containers, ContainerSets and GitSources: what runs and what makes it run.
    All,
    #[value(alias = "container", alias = "c")]
    Containers,
    /// ContainerSets (replicas of one container template).
    #[value(alias = "containerset", alias = "sets", alias = "set", alias = "cs")]
    Containersets,
    /// Secrets (values shown as `<redacted>` and a fingerprint).
    #[value(alias = "secret")]
    Secrets,
    /// GitSources (Git repositories of specs kept applied; the webhook secret is never shown).
    #[value(alias = "gitsource", alias = "gs")]
    Gitsources,
    #[value(alias = "host")]
    Hosts,
    #[value(alias = "event", alias = "ev")]
    Events,
    /// Agent upgrade campaigns.
    #[value(alias = "upgrade")]
    Upgrades,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Wide,
    Yaml,
    Json,
    Name,
}

/// `-o` of `get` and `events`: one of the fixed formats, or a kubectl template.
#[derive(Debug, Clone)]
pub enum GetOutput {
    Format(OutputFormat),
    JsonPath(template::Template),
    Columns(template::Columns),
}

fn parse_get_output(text: &str) -> Result<GetOutput, String> {
    if let Some(template) = text.strip_prefix("jsonpath=") {
        return template::Template::parse(template).map(GetOutput::JsonPath);
    }
    if let Some(spec) = text.strip_prefix("custom-columns=") {
        return template::Columns::parse(spec).map(GetOutput::Columns);
    }
    OutputFormat::from_str(text, true).map(GetOutput::Format).map_err(|_| {
        format!("`{text}` is not an output format: use wide, yaml, json, name, jsonpath=TEMPLATE or custom-columns=SPEC")
    })
}

fn parse_sort_by(text: &str) -> Result<template::Path, String> {
    let path = text.trim();
    template::Path::parse(path.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(path))
}

/// `kedge events --types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventTypeArg {
    Normal,
    Warning,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    None,
    /// Validate locally and compare with the live object; write nothing.
    Client,
    /// Send to the server, which validates and answers as if written.
    Server,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Files, directories (read recursively: .yaml, .yml, .json) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
    /// Delete the containers applied earlier with the same apply set that are no longer in the input.
    #[arg(long)]
    pub prune: bool,
    /// The apply set's name (with `--prune`, default: derived from the input paths; required with `-f -`).
    /// Without `--prune` or `--applyset` an apply keeps each object in the set it is in.
    #[arg(long)]
    pub applyset: Option<String>,
    /// Move objects that are in another apply set into this apply's set (refused otherwise).
    #[arg(long)]
    pub take_ownership: bool,
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<OutputFormat>,
    /// After applying, wait until each container is Ready and Synced at its new generation, each
    /// ContainerSet has every replica ready and up to date, and each GitSource is Ready (exit 1 at
    /// once when an update is rolled back or a revision fails, 6 at --timeout).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits: `30s`, `5m`.
    #[arg(long, default_value = "5m", requires = "wait", value_name = "DURATION")]
    pub timeout: kedge_crds::HumanDuration,
    #[command(flatten)]
    pub compose: ComposeArgs,
}

/// How a Compose file in the input is read (docs/compose.md); kedge's own files ignore these.
#[derive(Debug, Default, Args)]
pub struct ComposeArgs {
    /// The Compose project's name (default: the file's `name:`, else its directory's name).
    #[arg(short = 'p', long = "project-name", value_name = "PROJECT")]
    pub project: Option<String>,
    /// Read variables from these files instead of the `.env` beside the Compose file.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Also run the services of these Compose profiles.
    #[arg(long = "profile", value_name = "PROFILE")]
    pub profiles: Vec<String>,
}

impl ComposeArgs {
    /// The options, with this process's environment for interpolation.
    pub fn options(&self) -> kedge_crds::compose::ComposeOptions {
        kedge_crds::compose::ComposeOptions {
            project: self.project.clone(),
            environment: std::env::vars().collect(),
            env_files: self.env_files.clone(),
            profiles: self.profiles.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// Compose files (or kedge files), directories or `-`.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Write one file per object (`container-NAME.yaml`, `containerset-NAME.yaml`) into this directory.
    #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    #[command(flatten)]
    pub compose: ComposeArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(value_enum)]
    pub resource: Resource,
    /// One name, several, or none for all.
    pub names: Vec<String>,
    /// wide, yaml, json, name, jsonpath=TEMPLATE (`{.status.containerId}`), or
    /// custom-columns=HEADER:PATH,... (`NAME:.metadata.name,IMAGE:.spec.image`).
    #[arg(short = 'o', long, value_parser = parse_get_output, value_name = "FORMAT")]
    pub output: Option<GetOutput>,
    /// Sort the objects by the value a path finds in each (`.metadata.name`, `{.status.restarts}`).
    #[arg(long, value_parser = parse_sort_by, value_name = "PATH")]
    pub sort_by: Option<template::Path>,
    /// Tables without their header row.
    #[arg(long)]
    pub no_headers: bool,
    /// Label selector: `k=v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, comma-separated.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// After listing, stream changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// More query parameters of the list and watch (set by `kedge events`, not a flag).
    #[arg(skip)]
    pub filter: String,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[arg(value_enum)]
    pub kind: Option<ObjectKind>,
    pub names: Vec<String>,
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub compose: ComposeArgs,
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Not an error when the container does not exist.
    #[arg(long)]
    pub ignore_not_found: bool,
    #[arg(long, value_enum, default_value = "none", num_args = 0..=1, default_missing_value = "client")]
    pub dry_run: DryRun,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(value_enum)]
    pub kind: ContainerKind,
    pub name: String,
    /// `condition=TYPE[=STATUS]` (STATUS defaults to True), or `delete`.
    #[arg(long = "for", required = true)]
    pub for_what: String,
    /// How long to wait: `30s`, `5m`, `1h`.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the config file (tokens redacted).
    #[command(after_help = "Example:\n  kedge config view")]
    View,
    /// List the contexts; `*` marks the current one.
    #[command(after_help = "Example:\n  kedge config get-contexts")]
    GetContexts,
    /// Print the current context's name.
    #[command(after_help = "Example:\n  kedge config current-context")]
    CurrentContext,
    /// Make a context the current one.
    #[command(after_help = "Example:\n  kedge config use-context prod")]
    UseContext { name: String },
    /// Create or change a context from --server, --token, --token-file, --namespace,
    /// --certificate-authority and --client-certificate/--client-key.
    #[command(after_help = "Example:\n  kedge config set-context prod --server https://10.0.0.5:7443 \
--token-file ~/prod.token --certificate-authority ~/prod-ca.pem --namespace web")]
    SetContext { name: String },
    /// Remove a context.
    #[command(after_help = "Example:\n  kedge config delete-context lab")]
    DeleteContext { name: String },
}

/// jemalloc rather than glibc's allocator: see memory.rs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let matches = command().get_matches();
    let mut cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let mut deepest = &matches;
    while let Some((_, sub)) = deepest.subcommand() {
        deepest = sub;
    }
    for id in [
        "server",
        "token",
        "token_file",
        "namespace",
        "certificate_authority",
        "client_certificate",
        "client_key",
    ] {
        if deepest.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            cli.global.from_command_line.push(id);
        }
    }
    if !matches!(cli.command, Commands::Agent(_)) {
        quiet_on_closed_stdout();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            return report(CliError::new(Exit::Server, format!("cannot start the runtime: {error}")))
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Commands::Agent(args) => agent::run(*args).await.map(|()| Exit::Ok).map_err(|error| {
                // A registry config kedge cannot use is input to fix, not a failure of a service;
                // so is a --notify URL that is not one.
                let input = error.is::<kedge_controller::docker::RegistryConfigError>()
                    || error.is::<kedge_controller::notify::TargetError>();
                CliError::new(if input { Exit::Usage } else { Exit::Server }, format!("{error:#}"))
            }),
            Commands::Check(args) => check::run(args, &cli.global).await,
            Commands::Recreate(args) => recreate::run(args, &cli.global).await,
            Commands::Lifecycle(lifecycle::LifecycleCommand::Run(args)) => run::run(args, &cli.global).await,
            Commands::Lifecycle(command) => lifecycle::run(command, &cli.global).await,
            Commands::Upgrade { command } => upgrade::run(command, &cli.global).await,
            Commands::UpgradeHelper(args) => upgrade::helper(args).await,
            Commands::Policy { command } => policy::run(command, &cli.global).await,
            Commands::Token { command } => token::run(command, &cli.global).await,
            Commands::Dashboard(args) => dashboard::run(args, &cli.global).await,
            Commands::Healthcheck(args) => upgrade::healthcheck(args),
            Commands::Reconcile { kind: ReconcileKind::Gitsource, name } => {
                gitsources::reconcile(&name, &cli.global).await
            }
            Commands::Suspend { kind: ReconcileKind::Gitsource, name } => {
                gitsources::suspend(&name, true, &cli.global).await
            }
            Commands::Resume { kind: ReconcileKind::Gitsource, name } => {
                gitsources::suspend(&name, false, &cli.global).await
            }
            command => commands::run(command, &cli.global).await,
        }
    });
    // Watches hold tasks open; do not wait for them on the way out.
    runtime.shutdown_background();
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(error) => report(error),
    }
}

/// Exit status of a client whose reader went away (`kedge get ... | head`): what a shell reports for
/// a process ended by SIGPIPE, the way `yes | head` ends.
const CLOSED_STDOUT_EXIT: i32 = 128 + 13;

/// A client whose standard output is closed by its reader stops quietly with
/// [`CLOSED_STDOUT_EXIT`], as a command killed by SIGPIPE does, instead of printing a panic: Rust
/// ignores SIGPIPE, so the write fails and `print!` (or a library writing to stdout) panics; that
/// panic is recognised here. (Restoring SIGPIPE's default action would need `unsafe`, which the
/// workspace forbids.) Any other panic is reported as before.
fn quiet_on_closed_stdout() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_broken_pipe(info.payload()) {
            std::process::exit(CLOSED_STDOUT_EXIT);
        }
        previous(info);
    }));
}

/// Whether a panic's payload is a failed write to a closed pipe: std's `print!` says "Broken pipe
/// (os error 32)", libraries that `expect` an `io::Error` show its `BrokenPipe` kind.
fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    message.contains("Broken pipe (os error 32)") || message.contains("kind: BrokenPipe")
}

fn report(error: CliError) -> ExitCode {
    let colour = output::use_colour(std::io::stderr().is_terminal());
    eprintln!("{} {}", output::paint("error:", "31;1", colour), error.message);
    if let Some(hint) = &error.hint {
        eprintln!("{} {hint}", output::paint("hint:", "33", colour));
    }
    ExitCode::from(error.exit as u8)
}

/// The command tree, for completions.
pub fn command() -> clap::Command {
    let command = <Cli as clap::CommandFactory>::command();
    // The client's global flags (which server, which token, which namespace) mean nothing to the agent,
    // and listed among its own they hid them: `kedge agent --help` shows only the agent's. They are
    // hidden, not removed, so that a shell exporting KEDGE_SERVER or KEDGE_NAMESPACE still starts it.
    // clap copies a global flag into a subcommand only when the subcommand has none of that id, so
    // the agent gets hidden copies of them first. (Changing the flags after clap has built the
    // command breaks its lookup of them.)
    let hidden: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|flag| flag.is_global_set())
        .map(|flag| flag.clone().hide(true))
        .collect();
    command.mut_subcommand("agent", |agent| agent.args(hidden))
}

#[cfg(test)]
mod help_tests {
    /// The long help of `kedge SUBCOMMAND`.
    fn help_of(subcommand: &str) -> String {
        let mut command = crate::command();
        command.build();
        let sub = command.find_subcommand_mut(subcommand).expect("the subcommand exists");
        sub.render_long_help().to_string()
    }

    #[test]
    fn the_agent_help_lists_only_the_agents_flags() {
        let agent = help_of("agent");
        assert!(agent.contains("--store"), "{agent}");
        assert!(agent.contains("--state-dir"), "{agent}");
        for client in ["--server", "--token ", "--token-file", "--kedgeconfig", "--namespace", "--client-key"]
        {
            assert!(!agent.contains(client), "`kedge agent --help` lists the client's {client}:\n{agent}");
        }
    }

    #[test]
    fn client_commands_keep_the_global_flags() {
        let get = help_of("get");
        for client in ["--server", "--token ", "--namespace", "--context"] {
            assert!(get.contains(client), "`kedge get --help` lacks {client}:\n{get}");
        }
        assert!(!get.contains("--store"), "{get}");
    }

    #[test]
    fn the_hidden_flags_still_parse_for_the_agent() {
        // A shell that exports the client's settings must still be able to start an agent.
        let matches = crate::command()
            .try_get_matches_from([
                "kedge", "agent", "--server", "http://x", "-n", "ns", "--store", "embedded",
            ])
            .expect("the agent accepts the client's global flags");
        assert_eq!(matches.get_one::<String>("server").map(String::as_str), Some("http://x"));
    }

    /// charts/systemd/kedge-agent.service starts the agent with flags it has, and restarts it after
    /// the exits it makes on purpose (status 5 on a failed store write).
    #[test]
    fn the_systemd_unit_starts_an_agent_this_binary_accepts() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/systemd/kedge-agent.service");
        let unit = std::fs::read_to_string(path).expect("the unit is in charts/systemd");
        let value = |key: &str| {
            let prefix = format!("{key}=");
            let found: Vec<&str> =
                unit.lines().filter_map(|line| line.strip_prefix(prefix.as_str())).collect();
            assert_eq!(found.len(), 1, "{key} set {} times in {path}", found.len());
            found[0].to_owned()
        };
        assert_eq!(value("Restart"), "always");
        let exec = value("ExecStart");
        let words: Vec<&str> = exec.split_whitespace().filter(|word| *word != "$KEDGE_AGENT_ARGS").collect();
        assert_eq!(words[..2], ["/usr/local/bin/kedge", "agent"], "{exec}");
        let mut argv = vec!["kedge"];
        argv.extend(&words[1..]);
        // With the arguments an operator would put in /etc/default/kedge-agent, as the unit's comment shows.
        argv.extend(["--store", "etcd://10.0.0.1:2379", "--host-name", "web-1"]);
        crate::command().try_get_matches_from(&argv).unwrap_or_else(|error| panic!("{exec}: {error}"));
        let state_dir = words.iter().position(|word| *word == "--state-dir").map(|at| words[at + 1]);
        assert_eq!(state_dir, Some("/var/lib/kedge"), "the unit's StateDirectory=kedge is /var/lib/kedge");
        assert_eq!(value("StateDirectory"), "kedge");
    }
}
