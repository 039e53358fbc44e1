//! kedge's mirror of the Docker fields it uses: what to create, what inspect saw, image facts, events.
//!
//! These types are plain data with no bollard in sight. `ContainerConfig` says only what the user
//! declared: `None` and empty mean "not declared, let the image decide", which is what keeps image
//! defaults (Env, Cmd, Entrypoint, ...) out of re-created containers.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A container to create: only what was declared. Its `Debug` redacts the env values ([`ContainerEnv`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerConfig {
    /// The container name, without Docker's leading slash.
    pub name: String,
    /// The image reference as the user wrote it (`repo:tag` or `repo@digest`).
    pub image: String,
    /// `KEY=value` entries added to (and overriding) the image's own environment.
    pub env: ContainerEnv,
    /// `None`: the image's CMD. `Some(vec![])`: an explicitly empty CMD.
    pub cmd: Option<Vec<String>>,
    /// `None`: the image's ENTRYPOINT. `Some(vec![])`: reset the entrypoint.
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Ports exposed without being published (published ones are exposed implicitly).
    pub exposed_ports: Vec<ExposedPort>,
    pub port_bindings: Vec<PortBinding>,
    pub mounts: Vec<Mount>,
    pub restart_policy: Option<RestartPolicy>,
    pub resources: Resources,
    pub healthcheck: Option<Healthcheck>,
    pub stop_signal: Option<String>,
    /// The grace period between the stop signal and SIGKILL (whole seconds for Docker).
    pub stop_timeout: Option<Duration>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub read_only_rootfs: bool,
    /// PID and IPC namespaces, devices, security options and sysctls.
    pub isolation: Isolation,
    /// Init, `/dev/shm` size, extra hosts and ulimits.
    pub process: ProcessSettings,
    pub log_config: Option<LogConfig>,
    /// Ordered: the first network is attached at create (Docker allows one), the rest are connected
    /// before the container starts. Empty: Docker's default bridge.
    pub networks: Vec<NetworkAttachment>,
    /// `HostConfig.NetworkMode` when it is not a network to attach: `bridge`, `host`, `none` or
    /// `container:NAME` (the engine resolves NAME to the container's ID at create). `None`: the first
    /// network's name, or Docker's default.
    pub network_mode: Option<String>,
    /// Legacy links, `NAME:ALIAS` (`HostConfig.Links`), resolved by the engine at create.
    pub links: Vec<String>,
}

/// The settings that loosen a container's isolation from the host (`docker run --pid --ipc --device
/// --security-opt --sysctl`), as declared at create and as inspect reports them (`HostConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Isolation {
    /// `HostConfig.PidMode`; `None`: Docker's default, a namespace of the container's own.
    pub pid_mode: Option<String>,
    /// `HostConfig.IpcMode`; `None`: the engine's default (inspect then reports `private` or
    /// `shareable`).
    pub ipc_mode: Option<String>,
    pub devices: Vec<DeviceMapping>,
    /// `HostConfig.SecurityOpt`, as sent.
    pub security_opt: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
}

/// How the container's processes run (`docker run --init --shm-size --add-host --ulimit`), as
/// declared at create and as inspect reports them (`HostConfig`). Each only a new container changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessSettings {
    /// `HostConfig.Init`; false: none (inspect reports no init as `null`).
    pub init: bool,
    /// `HostConfig.ShmSize` in bytes; `None` at create: the engine's default (64 MiB), which
    /// inspect then reports.
    pub shm_size: Option<i64>,
    /// `HostConfig.ExtraHosts`, `HOST:IP`.
    pub extra_hosts: Vec<String>,
    /// `HostConfig.Ulimits`: name, soft, hard; sorted by name.
    pub ulimits: Vec<(String, i64, i64)>,
    /// `HostConfig.Dns`, `DnsSearch`, `DnsOptions`, as sent.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `Config.Tty` and `Config.OpenStdin`.
    pub tty: bool,
    pub open_stdin: bool,
}

/// A host device in the container (`HostConfig.Devices`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct DeviceMapping {
    pub host_path: String,
    pub container_path: String,
    /// `r`, `w` and `m` combined.
    pub permissions: String,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parses Docker's protocol suffix; unknown suffixes are `None`.
    pub fn parse(text: &str) -> Option<Protocol> {
        match text {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// A container port, as in Docker's `80/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExposedPort {
    pub port: u16,
    pub protocol: Protocol,
}

impl ExposedPort {
    /// Docker's `port/proto` key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.port, self.protocol.as_str())
    }

    /// Parses `80/tcp` (or a bare `80`, meaning tcp).
    pub fn parse(key: &str) -> Option<ExposedPort> {
        let (port, protocol) = match key.split_once('/') {
            Some((port, proto)) => (port, Protocol::parse(proto)?),
            None => (key, Protocol::Tcp),
        };
        Some(ExposedPort { port: port.parse().ok()?, protocol })
    }
}

/// A published port: `host_ip:host_port -> container_port/protocol`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortBinding {
    pub container_port: u16,
    pub protocol: Protocol,
    /// `None`: all interfaces (Docker's empty HostIp).
    pub host_ip: Option<String>,
    /// `None`: an ephemeral port chosen by Docker.
    pub host_port: Option<u16>,
}

/// What a mount's source is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MountSource {
    /// A host path.
    Bind { host_path: String },
    /// A named volume (`None`: an anonymous volume).
    Volume { name: Option<String> },
    /// A tmpfs, optionally size-limited.
    /// `mode`: the root's permission bits (`TmpfsOptions.Mode`); `None`: Docker's 1777.
    Tmpfs { size_bytes: Option<i64>, mode: Option<i64> },
}

/// A mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mount {
    pub source: MountSource,
    pub target: String,
    pub read_only: bool,
}

/// A volume mounted in a container, as inspect's `Mounts` reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttachedVolume {
    /// The volume's name (64 hex digits for an anonymous volume).
    pub name: String,
    /// Where it is mounted in the container.
    pub target: String,
    pub read_only: bool,
}

/// Docker's restart policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartPolicyKind {
    No,
    Always,
    UnlessStopped,
    OnFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RestartPolicy {
    pub kind: RestartPolicyKind,
    /// Only meaningful for `OnFailure`; 0 means unlimited.
    pub max_retries: i64,
}

/// Resource limits: the part of a container Docker can change in place (`docker update`).
///
/// `None` means "not declared": on create Docker's default applies, on update the field is left
/// as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub memory_swap: Option<i64>,
    pub blkio_weight: Option<u16>,
    pub pids_limit: Option<i64>,
}

impl Resources {
    /// True when nothing is declared.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// A Docker healthcheck. `test` is Docker's form: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub retries: Option<i64>,
    pub start_period: Option<Duration>,
    /// Engine API 1.44 (Docker 25) and later; an older engine drops it without a word, which is
    /// why the agent leaves it out there and says so (see `planner::ImageFacts`).
    pub start_interval: Option<Duration>,
}

impl Healthcheck {
    /// True for `["NONE"]`: the image's healthcheck is disabled.
    pub fn is_disabled(&self) -> bool {
        self.test.first().map(String::as_str) == Some("NONE")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogConfig {
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

/// A network to attach a container to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NetworkAttachment {
    /// The network's name (or ID).
    pub network: String,
    pub aliases: Vec<String>,
    /// A static address from the network's subnet (`IPAMConfig.IPv4Address`).
    pub ipv4_address: Option<String>,
}

/// A container as inspect reports it: raw values, image defaults merged in. Its `Debug` redacts the
/// env values, as [`ContainerEnv`] does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObservedContainer {
    pub id: String,
    /// Without Docker's leading slash.
    pub name: String,
    /// The image reference the container was created from (`Config.Image`).
    pub image: String,
    /// The image ID the container runs (`Image`, `sha256:...`).
    pub image_id: String,
    /// RFC 3339 creation time as the engine printed it.
    pub created: Option<String>,
    pub state: ContainerState,
    pub labels: BTreeMap<String, String>,
    pub env: ContainerEnv,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub exposed_ports: Vec<ExposedPort>,
    pub port_bindings: Vec<PortBinding>,
    /// The mounts as declared at create time (HostConfig.Mounts and HostConfig.Binds), with the
    /// volumes a recreate carried over told back to what they stand for (see `executor::volumes`).
    pub mounts: Vec<Mount>,
    /// The volumes mounted in the container as the engine reports them (`Mounts`), with their
    /// names: anonymous ones too, whether from a declaration or from the image's `VOLUME`.
    pub volumes: Vec<AttachedVolume>,
    /// `Config.Volumes`: the anonymous volume paths of the image and of `docker run -v /path`.
    pub config_volumes: Vec<String>,
    pub restart_policy: Option<RestartPolicy>,
    /// Zero values are reported as `None`: for Docker, 0 means "no limit".
    pub resources: Resources,
    pub healthcheck: Option<Healthcheck>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<Duration>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub read_only_rootfs: bool,
    /// PID and IPC namespaces, devices, security options and sysctls.
    pub isolation: Isolation,
    /// Init, `/dev/shm` size, extra hosts and ulimits, as `HostConfig` reports them.
    pub process: ProcessSettings,
    pub log_config: Option<LogConfig>,
    /// `HostConfig.NetworkMode` (`default`, `bridge`, `host`, `none`, a network name, `container:...`).
    pub network_mode: Option<String>,
    /// Sorted by network name (Docker reports a map).
    pub networks: Vec<ObservedNetwork>,
    /// `HostConfig.Links` as the engine reports them: `/TARGET:/THIS/ALIAS`, TARGET being the
    /// linked container's name now (a rename of the target shows here).
    pub links: Vec<String>,
}

/// A network attachment as inspect reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedNetwork {
    pub network: String,
    pub network_id: Option<String>,
    /// Raw: Docker 20.10 adds the container's short ID to the aliases on user-defined networks.
    pub aliases: Vec<String>,
    /// The static address requested (`IPAMConfig.IPv4Address`).
    pub ipv4_address: Option<String>,
    /// The address the container actually has (empty while stopped).
    pub ip_address: Option<String>,
}

/// Docker's container status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ContainerStatus {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    #[default]
    Unknown,
}

/// A container's health as Docker's healthcheck reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HealthStatus {
    /// The container has no healthcheck.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerState {
    pub status: ContainerStatus,
    pub running: bool,
    pub restarting: bool,
    pub oom_killed: bool,
    pub exit_code: Option<i64>,
    /// The engine's error message (e.g. "executable file not found").
    pub error: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub restart_count: i64,
    /// `None`: no healthcheck configured.
    pub health: Option<HealthStatus>,
}

/// One row of a container listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerSummary {
    pub id: String,
    /// The first name, without the leading slash.
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// Docker's state word (`running`, `exited`, ...).
    pub state: String,
    pub labels: BTreeMap<String, String>,
    /// The health the list's status line ends with (`Up 2 minutes (unhealthy)`); `None` without a
    /// healthcheck.
    pub health: Option<HealthStatus>,
}

/// An image and its own config defaults (what inspect of a container merges in).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageInfo {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub healthcheck: Option<Healthcheck>,
    pub exposed_ports: Vec<ExposedPort>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

/// The registry's view of a tag, without pulling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryDigest {
    /// `sha256:...` of the manifest (list) the tag names.
    pub digest: String,
    pub media_type: Option<String>,
}

/// One line of pull progress.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullProgress {
    /// The layer ID, when the line is about a layer.
    pub layer: Option<String>,
    pub status: String,
    pub current: Option<i64>,
    pub total: Option<i64>,
}

/// A command to run inside a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
}

/// What an exec reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutcome {
    pub exit_code: Option<i64>,
    pub output: String,
}

/// A process as `docker top` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessInfo {
    pub pid: Option<String>,
    /// The full command line (`ps -ef`'s CMD column).
    pub command: String,
}

/// A container event from the engine's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    pub id: String,
    /// The container's name at the time of the event (without slash).
    pub name: Option<String>,
    pub action: EventAction,
    /// On `die`: the exit code.
    pub exit_code: Option<i64>,
    /// The container's labels (Docker copies them into every event's attributes).
    pub labels: BTreeMap<String, String>,
    pub time_nano: i64,
}

/// What happened to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    Create,
    Start,
    Restart,
    Die,
    Stop,
    Kill,
    Destroy,
    Oom,
    Pause,
    Unpause,
    /// On rename: the old name (without slash), when the engine reported it.
    Rename {
        old_name: Option<String>,
    },
    Update,
    HealthStatus(HealthStatus),
    /// The container was connected to a network (from the engine's network events).
    NetworkConnect {
        network: String,
    },
    /// The container was disconnected from a network (from the engine's network events).
    NetworkDisconnect {
        network: String,
    },
    /// Any other action, verbatim (`exec_start: sh`, `attach`, `commit`, ...).
    Other(String),
}

/// Which end of a log stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Which part of a container's log to read, beyond `tail`: `since` (Unix seconds; 0 for all) and
/// whether each line starts with the engine's RFC 3339 timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogWindow {
    pub since: i32,
    pub timestamps: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: LogStream,
    pub text: String,
}

/// What the engine says of itself: its version and the machine's capacity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EngineInfo {
    pub server_version: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    pub containers_running: u64,
}

/// A container's `KEY=value` env entries, as sent at create or as inspect reports them. Its `Debug`
/// shows each name with a `<redacted>` value: a value may have come from a secret, and whether it
/// did is not known where a config or an inspect is logged. Everything else reads it as the
/// `Vec<String>` it wraps.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv(pub Vec<String>);

impl fmt::Debug for ContainerEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        RedactedEntries(&self.0).fmt(f)
    }
}

/// `KEY=value` entries shown as `KEY=<redacted>`.
struct RedactedEntries<'a>(&'a [String]);

impl fmt::Debug for RedactedEntries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = self.0.iter().map(|entry| {
            let name = entry.split_once('=').map_or(entry.as_str(), |(name, _)| name);
            format!("{name}={}", kedge_crds::REDACTED)
        });
        f.debug_list().entries(redacted).finish()
    }
}

impl std::ops::Deref for ContainerEnv {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.0
    }
}

impl std::ops::DerefMut for ContainerEnv {
    fn deref_mut(&mut self) -> &mut Vec<String> {
        &mut self.0
    }
}

impl From<Vec<String>> for ContainerEnv {
    fn from(entries: Vec<String>) -> Self {
        ContainerEnv(entries)
    }
}

impl FromIterator<String> for ContainerEnv {
    fn from_iter<I: IntoIterator<Item = String>>(entries: I) -> Self {
        ContainerEnv(entries.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a ContainerEnv {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl PartialEq<Vec<String>> for ContainerEnv {
    fn eq(&self, other: &Vec<String>) -> bool {
        &self.0 == other
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn env_values_are_redacted_in_debug() {
        let env = ContainerEnv::from(vec!["MODE=prod".to_owned(), "DB_PASSWORD=hunter2".to_owned()]);
        let config = ContainerConfig { env: env.clone(), ..ContainerConfig::default() };
        let observed = ObservedContainer { env, ..ObservedContainer::default() };
        for shown in [format!("{config:?}"), format!("{observed:?}"), format!("{:#?}", config.env)] {
            assert!(!shown.contains("hunter2") && !shown.contains("prod"), "{shown}");
            assert!(shown.contains("DB_PASSWORD=<redacted>") && shown.contains("MODE=<redacted>"), "{shown}");
        }
    }
}

/// One sample of a container's resource use, as `docker stats` shows it (`kedge top`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// Percent of one CPU over the engine's sampling interval (200 = two CPUs busy).
    pub cpu_percent: f64,
    /// Memory in use, page cache that can be reclaimed left out (as `docker stats`).
    pub memory_bytes: u64,
    /// The container's memory limit, or the host's memory when it has none.
    pub memory_limit_bytes: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub block_read_bytes: u64,
    pub block_write_bytes: u64,
    pub pids: u64,
}
