//! The `Container` resource: envelope, metadata, spec and status types, as users write them.
//!
//! Spec fields are `Option`s (or empty collections) when not declared, so that "not declared" (use the
//! image's default) stays distinct from "declared as the default value". Defaults kedge applies itself are
//! in the `*_or_default` helpers, not baked into the data.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize};

use crate::forms::{self, ShortForm};
pub use crate::meta::{condition_type, Condition, ConditionStatus, ObjectMeta, DEFAULT_NAMESPACE};
use crate::quantity::{ByteSize, HumanDuration, MemorySwap, NanoCpus};
use crate::reference::ImageReference;

/// The only `apiVersion` this crate reads and writes.
pub const API_VERSION: &str = "kedge.io/v1";
/// The `kind` of a [`Container`].
pub const KIND_CONTAINER: &str = "Container";
/// Exit codes that mean "recreate, do not restart" when a spec names none (as docker-map has it).
pub const DEFAULT_NON_RECOVERABLE_EXIT_CODES: [i64; 2] = [-127, -1];

/// A desired container on a Docker host: what the user applies, plus the status the agent reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "Container", description = "A kedge Container: a desired container on a Docker host.")]
pub struct Container {
    /// Always `kedge.io/v1`.
    #[schemars(extend("const" = "kedge.io/v1"))]
    pub api_version: String,
    /// Always `Container`.
    #[schemars(extend("const" = "Container"))]
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ContainerSpec,
    /// Written by the agent, never by the user; ignored by `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ContainerStatus>,
}

/// What the user wants the container to be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSpec {
    /// The image, as `docker pull` takes it.
    pub image: ImageReference,
    /// Overrides the image's ENTRYPOINT (exec form).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "forms::lenient_opt_vec")]
    #[schemars(schema_with = "forms::lenient_vec_schema")]
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's CMD (exec form).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "forms::lenient_opt_vec")]
    #[schemars(schema_with = "forms::lenient_vec_schema")]
    pub command: Option<Vec<String>>,
    /// Environment variables added to the image's. A map, or a list of `KEY=VALUE` strings or of
    /// `{name, value}` maps (the Kubernetes form).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "forms::env_map")]
    #[schemars(schema_with = "forms::env_map_schema")]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values come from a key of a Secret of the same namespace:
    /// `DB_PASSWORD: {secret: db, key: password}`. The agent reads the value just before it plans; the
    /// value is never shown back (status, drift, events and logs say `<redacted>`), and a changed
    /// value recreates the container as any env change does.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, SecretKeyRef>,
    /// Overrides the image's WORKDIR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Overrides the image's USER: `name`, `uid`, `uid:gid`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "forms::lenient_opt_string"
    )]
    #[schemars(schema_with = "forms::lenient_string_schema")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Labels put on the Docker container, beside the `kedge.io/*` labels kedge adds itself.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "forms::lenient_map")]
    #[schemars(schema_with = "forms::lenient_map_schema")]
    pub labels: BTreeMap<String, String>,
    /// Published ports: `8080:80/tcp` or a map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// Bind mounts, named volumes and tmpfs mounts: `/src:/dst:ro` or a map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Networks to join. The first is joined at create; the others are connected after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<NetworkAttachment>,
    /// Docker's restart policy: `no`, `always`, `unless-stopped`, `on-failure[:N]`, or a map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Limits applied in place by Docker's update API, without a recreate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Overrides the image's HEALTHCHECK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Signal sent to stop the container: `SIGTERM`, `TERM`, `15`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "forms::lenient_opt_string"
    )]
    #[schemars(schema_with = "forms::lenient_string_schema")]
    pub stop_signal: Option<String>,
    /// How long to wait after the stop signal before killing (Docker's default: 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<HumanDuration>,
    /// How many seconds a container started by a recreate must stay running (and not unhealthy)
    /// before the recreate counts it ready and removes the old one (0 to 3600). Default: 0 when
    /// the image or the spec has a healthcheck, which then decides; 1 otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i64>,
    /// What kedge does when the container's healthcheck reports it unhealthy (Docker itself never
    /// restarts an unhealthy container, moby#28400): `restart` (default: a healthcheck declares
    /// what "working" means, and a declared state is kept), `recreate` (a restart first, then a new
    /// container when the restart did not help), or `none` (only report it). See docs/health.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_unhealthy: Option<OnUnhealthy>,
    /// The flap limit of `onUnhealthy`: after this many remediations within `period` (default 5 in
    /// 5m) kedge gives up, says `Degraded` (reason `UnhealthyFlapping`) and leaves the container
    /// alone until the spec changes or the container turns healthy by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_limit: Option<UnhealthyLimit>,
    /// Linux capabilities to add, as Docker names them (`NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Linux capabilities to drop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    /// Mount the container's root filesystem read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_rootfs: Option<bool>,
    /// Docker's PID namespace mode: `host` shares the host's processes (`docker run --pid host`).
    /// Default: a namespace of the container's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<String>,
    /// Docker's IPC mode: `private`, `shareable`, `none`, or `host` (the host's shared memory and
    /// semaphores). Default: the engine's (`private` on Docker 20.10 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<String>,
    /// Host devices, as `docker run --device`: `HOST_PATH[:CONTAINER_PATH][:PERMISSIONS]`, the
    /// permissions a combination of `r`, `w` and `m` (default `rwm`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Docker's security options, as `docker run --security-opt`: `no-new-privileges`,
    /// `seccomp=unconfined`, `apparmor=PROFILE`, `label=...`, `writable-cgroups=BOOL` (the
    /// engine's options; `systempaths=unconfined` belongs to the docker command line and is refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Namespaced kernel parameters, as `docker run --sysctl`: `net.ipv4.ip_unprivileged_port_start: 80`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "forms::lenient_map")]
    #[schemars(schema_with = "forms::lenient_map_schema")]
    pub sysctls: BTreeMap<String, String>,
    /// Run an init process as PID 1 (Docker's `--init`): it reaps zombie processes and forwards
    /// signals to the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// The size of `/dev/shm` (`128Mi`); Docker's default is 64Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<ByteSize>,
    /// Extra `/etc/hosts` entries, as `docker run --add-host`: `HOST:IP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Process resource limits, as `docker run --ulimit`: `nofile: {soft: 1024, hard: 4096}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// DNS servers the container's resolver asks, as `docker run --dns` (IP addresses). Default: the
    /// engine's (its embedded DNS on a user-defined network, else the host's resolvers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS search domains, as `docker run --dns-search`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// Resolver options written into the container's `/etc/resolv.conf`, as `docker run
    /// --dns-option` (Compose's `dns_opt`): `ndots:2`, `use-vc`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// Give the container a terminal (`docker run -t`, Compose's `tty`): some programs only run, or
    /// only keep running, with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    /// Keep the container's standard input open (`docker run -i`, Compose's `stdin_open`): a shell
    /// or a REPL as the command then waits instead of exiting at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_open: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<Logging>,
    /// Specs (same namespace) that must be started, or healthy, before this one starts: `db` or a map.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
    /// Docker's network mode: `bridge` (the default bridge, as without this field), `host`, `none`,
    /// or `container:NAME` to share the network namespace of another spec of the namespace (Compose's
    /// `network_mode: service:NAME`). Excludes `networks`; `container:` also excludes `ports`,
    /// `hostname` and `links`. `container:NAME` implies `dependsOn: NAME` (started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    /// Legacy Docker links on the default bridge: `NAME` or `NAME:ALIAS`, another spec of the
    /// namespace, written into this container's `/etc/hosts`. Each implies `dependsOn: NAME` (started).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<Link>,
    /// Commands run in the container after it starts (docker-map's exec commands).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_start: Vec<PostStartExec>,
    /// How kedge notices a newer image for the same reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_policy: Option<UpdatePolicy>,
    /// How kedge replaces the container when it must recreate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
    /// Which host runs the container. Without it, every agent that reads the spec may run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Exit codes after which the container is recreated rather than restarted (default `[-127, -1]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_recoverable_exit_codes: Option<Vec<i64>>,
    /// What happens to the container when the spec is deleted (default `remove`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Whether the container should run (default `running`). `stopped` keeps it stopped across agent
    /// restarts and host reboots: what `kedge stop` sets. Not part of the spec hash: stopping is not
    /// a new container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_state: Option<RunState>,
}

/// Where an environment variable's value comes from: a key of a secret of the container's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The secret's name (same namespace as the container).
    pub secret: String,
    /// The key in the secret's `data`.
    pub key: String,
}

/// A published port. Short form: `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`, where an IPv6 host IP
/// is bracketed: `[::1]:8080:80`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: u16,
    /// The host port; Docker picks one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// The host address to bind; all addresses when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    #[serde(default)]
    pub protocol: Protocol,
}

/// A published port, as a map.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "PortMappingObject")]
pub(crate) struct PortMappingLong {
    container_port: u16,
    #[serde(default)]
    host_port: Option<u16>,
    #[serde(default)]
    host_ip: Option<IpAddr>,
    #[serde(default)]
    protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// A mount. Short form: `SOURCE:TARGET[:ro|rw]` (a bind when SOURCE is an absolute path, else a named
/// volume) or `TARGET` (an anonymous volume).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// Host path for `bind`, volume name for `volume` (absent: an anonymous volume), none for `tmpfs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Absolute path in the container.
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Size limit of a `tmpfs` mount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_size: Option<ByteSize>,
    /// The permission bits of a `tmpfs` mount's root, in octal (`1777`, `0700`); Docker's default
    /// is `1777`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_mode: Option<String>,
}

/// A mount, as a map.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "MountObject")]
pub(crate) struct MountLong {
    #[serde(rename = "type")]
    kind: MountKind,
    #[serde(default)]
    source: Option<String>,
    target: String,
    #[serde(default)]
    read_only: Option<bool>,
    #[serde(default)]
    tmpfs_size: Option<ByteSize>,
    #[serde(default)]
    tmpfs_mode: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

/// A network the container joins.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkAttachment {
    /// The Docker network's name. kedge does not create networks; the network must exist on the host.
    pub name: String,
    /// Extra DNS names for the container on this network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// A static address on a user-defined network with a configured subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
}

/// Docker's restart policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartPolicy {
    pub name: RestartPolicyName,
    /// How many restarts Docker tries; only with `on-failure`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_retry_count: Option<u32>,
}

/// A restart policy, as a map.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "RestartPolicyObject")]
pub(crate) struct RestartPolicyLong {
    name: RestartPolicyName,
    #[serde(default)]
    maximum_retry_count: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RestartPolicyName {
    #[serde(rename = "no")]
    No,
    #[serde(rename = "always")]
    Always,
    #[serde(rename = "unless-stopped")]
    UnlessStopped,
    #[serde(rename = "on-failure")]
    OnFailure,
}

/// Resource limits, in Docker's terms. All can be changed on a running container.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// CPUs the container may use (`1.5`); Docker's NanoCpus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<NanoCpus>,
    /// Relative CPU weight (Docker's default is 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// CFS period in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period: Option<u64>,
    /// CFS quota in microseconds per period; -1 for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<i64>,
    /// CPUs the container may run on: `0-3`, `0,2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use: `0-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset_mems: Option<String>,
    /// Hard memory limit (`512Mi`); at least 6Mi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Soft memory limit; at most `memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<ByteSize>,
    /// Memory plus swap; at least `memory`, or -1 for unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<MemorySwap>,
    /// Block IO weight: 10 to 1000, or 0 to leave Docker's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blkio_weight: Option<u16>,
    /// Maximum number of processes; -1 or 0 for unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
}

/// A health check, as in a Dockerfile's HEALTHCHECK.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Healthcheck {
    /// `[CMD, arg...]`, `[CMD-SHELL, command]` or `[NONE]`; a plain string means `CMD-SHELL`.
    #[serde(deserialize_with = "healthcheck_test")]
    #[schemars(schema_with = "healthcheck_test_schema")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Consecutive failures before the container is unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Grace time after start during which failures do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<HumanDuration>,
    /// Interval between checks during the start period. Needs Docker Engine API 1.44 (Docker 25):
    /// on an older engine the container is made without it, and the agent says so in a
    /// `FieldNotSupported` Warning event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<HumanDuration>,
}

/// One process resource limit (`setrlimit`): the soft limit a process may raise up to the hard one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

/// A logging driver and its options, as `docker run --log-driver --log-opt`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Logging {
    /// `json-file`, `local`, `syslog`, `none`...
    pub driver: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "forms::lenient_map")]
    #[schemars(schema_with = "forms::lenient_map_schema")]
    pub options: BTreeMap<String, String>,
}

/// A spec this one waits for. Short form: the spec's name (condition `started`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// The name of a Container spec in the same namespace.
    pub name: String,
    pub condition: DependencyCondition,
}

/// A dependency, as a map.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "DependencyObject")]
pub(crate) struct DependencyLong {
    name: String,
    #[serde(default)]
    condition: DependencyCondition,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DependencyCondition {
    /// The dependency's container is running.
    #[default]
    Started,
    /// The dependency's container reports healthy (it needs a health check).
    Healthy,
    /// The dependency's container ran and exited with code 0: a one-off job, such as a database
    /// migration (Compose's `service_completed_successfully`). Give the job no restart policy (or
    /// `no`/`on-failure`), so that it is left exited rather than started again.
    Completed,
}

/// Docker's network mode. Written as a string: `bridge`, `host`, `none` or `container:NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum NetworkMode {
    /// Docker's default bridge: what a spec without `networkMode` and `networks` gets.
    Bridge,
    /// The host's network stack.
    Host,
    /// A loopback interface only.
    None,
    /// The network namespace of the container of another spec (its `metadata.name`), same namespace.
    Container(String),
}

/// A legacy link to another spec's container. Short form: `NAME` or `NAME:ALIAS`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// The name of a Container spec in the same namespace.
    pub name: String,
    /// The extra host name it gets in `/etc/hosts`; its name is always there too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// A link, as a map.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "LinkObject")]
pub(crate) struct LinkLong {
    name: String,
    #[serde(default)]
    alias: Option<String>,
}

/// A command run inside the container after it starts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostStartExec {
    /// Exec form: `[sh, -c, "..."]`.
    #[serde(deserialize_with = "forms::lenient_vec")]
    #[schemars(schema_with = "forms::lenient_vec_schema")]
    pub command: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "forms::lenient_opt_string"
    )]
    #[schemars(schema_with = "forms::lenient_string_schema")]
    pub user: Option<String>,
    /// `once` (default): after each container start. `ensureRunning`: a long-running process that kedge
    /// restarts when it is found not running.
    #[serde(default)]
    pub policy: ExecPolicy,
    /// How an `ensureRunning` command is found among the container's processes: `full` (default)
    /// the whole command line, `partial` any process whose command line contains it (for programs
    /// that rewrite their own; docker-map's `check_exec_commands`).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub command_match: Option<CommandMatch>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CommandMatch {
    #[default]
    Full,
    Partial,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ExecPolicy {
    #[default]
    Once,
    EnsureRunning,
}

/// What kedge does with a container whose healthcheck reports it unhealthy (`spec.onUnhealthy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnUnhealthy {
    /// Restart it (the same container, its stop signal and grace period), with per-key backoff.
    #[default]
    Restart,
    /// Restart it once; when it is still unhealthy after that, replace it by a new container.
    Recreate,
    /// Leave it as it is: only `Ready=False` (reason `Unhealthy`) says so.
    None,
}

/// The flap limit of unhealthy remediation (`spec.unhealthyLimit`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnhealthyLimit {
    /// Remediations allowed within `period` (default 5, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediations: Option<u32>,
    /// The sliding window the remediations are counted in (default 5m, at least 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<HumanDuration>,
}

/// How kedge notices that the image reference now names another image.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePolicy {
    /// `none` (default), `local` (the tag names another local image ID) or `registry` (the registry's digest
    /// for the tag moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_check: Option<ImageCheck>,
    /// How often to check (default 5m). The older spelling of `interval`, still read; a spec gives
    /// one or the other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_interval: Option<HumanDuration>,
    /// How often to check (default 5m). Registry checks are spread with up to 10% of jitter so that
    /// many agents started together do not all ask the registry in the same second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// Follow newer tags instead of only the spec's own (default: the same tag only). A semver
    /// range (`"^1.0"`, `"~1.2"`, `">=1.2, <2"`) or a map of rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<TagPolicy>,
    /// Do not take an image younger than this (`1h`): its age counts from when this host's agent
    /// first saw its digest, kept in `status.update.firstSeen` across agent restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age: Option<HumanDuration>,
    /// A daily time window in which updates may run: `"02:00-04:00"` (UTC), `"22:00-02:00"`
    /// (across midnight), `"02:00-04:00 +02:00"` (a fixed UTC offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// `auto` (default): apply an update and record UpdateApplied. `notify`: only record
    /// UpdateAvailable (a condition and an event); the container is left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<UpdateMode>,
    /// After a successful update, remove the old image when no container (kedge's or not, running
    /// or stopped) uses it any more (default false; the same as `updateStrategy.removeOldImage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup: Option<bool>,
}

impl UpdatePolicy {
    /// The check interval, by either spelling.
    pub fn interval(&self) -> Option<HumanDuration> {
        self.interval.or(self.check_interval)
    }
}

/// What an update does once it is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpdateMode {
    #[default]
    Auto,
    Notify,
}

/// Which newer tags a spec follows: a semver range, or rules. Read by hand rather than as an
/// untagged enum, so that a mistake inside the map is reported at its field (`tags.level`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum TagPolicy {
    /// A semver range: `"^1.0"`, `"~1.2"`, `">=1.2, <2"` (also `">=1.2 <2"`).
    Range(String),
    Rules(TagRules),
}

impl<'de> Deserialize<'de> for TagPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TagPolicy;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a semver range (\"^1.2\") or a map of tag rules (semver, level, include, exclude, transform, prerelease)")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<TagPolicy, E> {
                Ok(TagPolicy::Range(text.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TagPolicy, A::Error> {
                TagRules::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(TagPolicy::Rules)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The rules form of [`TagPolicy`]. A tag is a candidate when it matches `include` (if given),
/// does not match `exclude`, parses as a version after `transform`, satisfies `semver` and
/// `level`, and is no pre-release unless `prerelease` is true.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TagRules {
    /// A semver range, as in the string form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// How far from the running tag to move: `patch` (same major.minor), `minor` (same major),
    /// `major` (any newer version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<TagLevel>,
    /// Only tags this regex matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<String>,
    /// Never tags this regex matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<String>,
    /// `REGEX => REPLACEMENT`: the version a tag stands for, e.g. `^v?(\d+\.\d+\.\d+)-alpine$ => $1`.
    /// Without it a leading `v` is dropped and `1.2` reads as `1.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    /// Take pre-releases (`1.3.0-rc.1`) too (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prerelease: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TagLevel {
    Major,
    Minor,
    Patch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageCheck {
    #[default]
    None,
    Local,
    Registry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PullPolicy {
    /// Pull before every create.
    Always,
    /// Pull only when the image is missing (default).
    #[default]
    IfNotPresent,
    /// Never pull; fail when the image is missing.
    Never,
}

/// How a recreate replaces the old container.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateStrategy {
    /// `start-first` (default): the new container starts and proves itself beside the old one,
    /// which is then stopped; the agent stops the old one first anyway when the two would share a
    /// host port, a static IP, a network namespace, a device or data (a volume or a writable bind).
    /// `stop-first`: always stop the old container first.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<UpdateOrder>,
    /// How long the new container has to become healthy by its healthcheck (default 60s); past
    /// it, the update is rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout: Option<HumanDuration>,
    /// Once the new container is proven (healthy, or running `minReadySeconds`) and holds the name,
    /// how long it must go on running without a restart and without turning unhealthy (default: no
    /// soak). A failure inside the window rolls back to the image ID the old container ran (not its
    /// tag, which may have moved), and the failed image ID is held back (`status.rolledBack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<HumanDuration>,
    /// Put the old container back when the new one fails (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_on_failure: Option<bool>,
    /// Remove the old image when no container uses it any more (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_old_image: Option<bool>,
    /// A resource limit removed from the spec cannot be removed from a running container: keep the
    /// container (and its old limit) instead of recreating it (default false; docker-map's
    /// `skip_limit_reset`). The difference stays in the status' drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_limit_reset: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

/// Where the container runs: one named host, or any host whose labels match. Both: the named host, if it matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Every label must be present on the host with this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_selector: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeletionPolicy {
    /// Stop and remove the container (default).
    #[default]
    Remove,
    /// Leave the container as it is and stop managing it (docker-map's persistent containers).
    Orphan,
}

/// The desired run state of the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Created and started, in dependency order, and started again when it stops (per restart policy).
    #[default]
    Running,
    /// Stopped once every running dependent is stopped; created but not started when missing.
    Stopped,
}

/// What the agent last saw and did. Written only by the agent.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The host whose agent runs the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The local image ID (`sha256:...`) the container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The registry digest of that image, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The volumes mounted in the container, anonymous ones (the image's `VOLUME`, `mounts:
    /// ["/data"]`) included, each with the name Docker knows it by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<MountedVolume>,
    /// Starts of this container after its first, by kedge or by the engine's restart policy.
    #[serde(default)]
    pub restart_count: u64,
    /// When the container last started (RFC 3339, as the engine reports it): a later start seen
    /// by the agent is a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started_at: Option<String>,
    /// The fields that differed at the last repair (kept until the next one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<FieldDiff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// An update that failed and was rolled back: the old container keeps running, and this
    /// generation is not tried again until the spec or the image its tag names changes, or a
    /// recreate is asked for (`kedge restart container NAME --recreate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBackUpdate>,
    /// kedge's own starts of the container in its current crash loop, which set how long it waits
    /// before the next one: kept here so that an agent restarted in the middle of a crash loop
    /// goes on with the backoff it had reached instead of starting over at no delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<StartBackoff>,
    /// What the update policy found (`spec.updatePolicy`): the newer tag the agent runs instead of
    /// the spec's, an update waiting, and when digests were first seen (for `minAge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<ImageUpdateStatus>,
    /// The last update (recreate) of the container: which order it took and why, when the new
    /// container was ready, and its soak (`updateStrategy.soak`), kept here so that an agent
    /// restart goes on with the soak, and rolls back a failure inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<LastUpdate>,
    /// kedge's remediations of an unhealthy container (`spec.onUnhealthy`): kept here so that the
    /// flap limit and its backoff outlive an agent restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<UnhealthyRemediation>,
    /// A pull for this spec that has been running for a few seconds: how far it got, rewritten as
    /// it goes (at most once a second). Gone once the pull ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullStatus>,
    /// The images the container ran, the latest first: one record each time a generation or an
    /// image ID was applied and synced, at most [`IMAGE_HISTORY_LIMIT`]. What `kedge rollout
    /// history|undo container` read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_history: Vec<AppliedImage>,
}

/// How many records [`ContainerStatus::image_history`] keeps.
pub const IMAGE_HISTORY_LIMIT: usize = 10;

/// One image a container ran (see [`ContainerStatus::image_history`]).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppliedImage {
    /// The spec's generation the container was synced to.
    pub generation: i64,
    /// The image reference the container was created from (a newer tag the update policy took
    /// included).
    pub image: String,
    /// The local image ID (`sha256:...`) it ran.
    pub image_id: String,
    /// The registry digest of that image, when known: how `rollout undo` names an image whose tag
    /// has moved since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// When the agent first saw it synced (RFC 3339).
    pub applied_at: String,
}

/// How far a long pull got (see [`ContainerStatus::pull`]), summed over the image's layers as the
/// engine reports them.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PullStatus {
    /// The image being pulled.
    pub image: String,
    /// When the pull began (RFC 3339).
    pub started_at: String,
    /// Layers the engine named so far, and those done (downloaded and extracted, or already there).
    pub layers: u32,
    pub layers_done: u32,
    /// Bytes downloaded, and the sum of the sizes of the layers whose size is known so far.
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Where a spec's image updates stand (see [`ContainerStatus::update`]). The spec in the store is
/// never rewritten: a newer tag taken under `updatePolicy.tags` lives here, and the agent runs it.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageUpdateStatus {
    /// `spec.image` when this was found; another spec image drops `resolvedImage`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spec_image: String,
    /// The image reference the agent runs instead of `spec.image` (a newer tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_image: Option<String>,
    /// An update found but not taken (mode notify, outside the window, younger than minAge):
    /// the reference (with a newer tag) or `REFERENCE@DIGEST` (the same tag moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<String>,
    /// Why `available` was not taken: `Notify`, `OutsideWindow`, `TooYoung`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_reason: Option<String>,
    /// When this agent first saw each registry digest (RFC 3339), for `minAge`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub first_seen: BTreeMap<String, String>,
    /// When the registry was last checked (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<String>,
}

/// The last update of a container (see [`ContainerStatus::last_update`]).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LastUpdate {
    /// The spec generation the update was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The new container.
    pub container_id: String,
    /// When the new container last started, as the engine said right after the update: a later
    /// start inside the soak is a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_started_at: Option<String>,
    /// The image ID the new container runs.
    pub image_id: String,
    /// The image ID the replaced container ran: what a failed soak rolls back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image_id: Option<String>,
    /// `start-first` or `stop-first`.
    pub order: String,
    /// Why that order: `start-first: nothing the two containers must not share`,
    /// `stop-first: a published host port`, `stop-first: updateStrategy.type says so`.
    pub order_reason: String,
    /// When the update began and when the new container was ready (proven), RFC 3339.
    pub started_at: String,
    pub ready_at: String,
    /// Where the soak stands: `Soaking` (until `soakUntil`), `Complete`, or `RolledBack`.
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<String>,
    /// Remove the previous image once the soak is over (`updatePolicy.cleanup`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleanup: bool,
}

/// Where the remediation of an unhealthy container stands (see [`ContainerStatus::remediation`]).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnhealthyRemediation {
    /// The spec generation these remediations were made for; a new generation starts over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When each remediation within the flap limit's period was made (RFC 3339), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at: Vec<String>,
    /// Remediations since the container was last seen healthy: the backoff's step, and for
    /// `onUnhealthy: recreate` whether a restart was already tried.
    #[serde(default)]
    pub consecutive: u32,
    /// When kedge gave up (the flap limit was reached): the container is left alone until the spec
    /// changes or it turns healthy by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gave_up_at: Option<String>,
}

/// Where a container's crash-loop backoff stands (see [`ContainerStatus::backoff`]).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartBackoff {
    /// The container these starts were of; another container starts from no delay.
    pub container_id: String,
    /// Starts kedge made since the container last ran long enough to count as healthy again.
    pub starts: u32,
}

/// A failed update the agent holds back (see [`ContainerStatus::rolled_back`]).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolledBackUpdate {
    /// The spec generation whose update failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The spec's image reference then.
    pub image: String,
    /// The image ID that reference named then; another ID is a new attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The `kedge.io/restartedAt` annotation then; a new value is a new attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<String>,
    /// Why the new container failed: one CamelCase word (`NewContainerExited`).
    pub reason: String,
    pub message: String,
    /// When the update was rolled back (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<String>,
}

/// A volume mounted in the container, by target.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountedVolume {
    /// The path in the container.
    pub target: String,
    /// The volume's name (64 hex digits for an anonymous volume).
    pub name: String,
}

/// One field that differs between spec and container.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldDiff {
    /// The spec field path: `spec.resources.memory`, `spec.networks[backend]`.
    pub field: String,
    /// The declared value, rendered; absent when the field is not declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<String>,
    /// The observed value, rendered; absent when the container lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}

impl Container {
    /// A container of this crate's apiVersion and kind with the given name in the default namespace.
    pub fn new(name: impl Into<String>, spec: ContainerSpec) -> Self {
        Container {
            api_version: API_VERSION.to_owned(),
            kind: KIND_CONTAINER.to_owned(),
            metadata: ObjectMeta {
                name: name.into(),
                namespace: DEFAULT_NAMESPACE.to_owned(),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// `namespace/name`: the key of the spec in the store and in the work queue.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

impl ContainerSpec {
    /// The declared exit codes that force a recreate, or `[-127, -1]`.
    pub fn non_recoverable_exit_codes_or_default(&self) -> Vec<i64> {
        self.non_recoverable_exit_codes.clone().unwrap_or_else(|| DEFAULT_NON_RECOVERABLE_EXIT_CODES.to_vec())
    }

    /// Whether an update removes the old image once no container uses it: `updatePolicy.cleanup`,
    /// or its older spelling `updateStrategy.removeOldImage`.
    pub fn cleanup_or_default(&self) -> bool {
        self.update_policy.as_ref().and_then(|policy| policy.cleanup).unwrap_or(false)
            || self.update_strategy.as_ref().and_then(|strategy| strategy.remove_old_image).unwrap_or(false)
    }

    /// `updateStrategy.soak`, zero when unset.
    pub fn soak_or_default(&self) -> std::time::Duration {
        self.update_strategy
            .as_ref()
            .and_then(|strategy| strategy.soak)
            .map_or(std::time::Duration::ZERO, |soak| soak.duration())
    }

    pub fn deletion_policy_or_default(&self) -> DeletionPolicy {
        self.deletion_policy.unwrap_or_default()
    }

    pub fn run_state_or_default(&self) -> RunState {
        self.run_state.unwrap_or_default()
    }

    /// The spec whose container's network namespace this one joins (`networkMode: container:NAME`).
    pub fn network_provider(&self) -> Option<&str> {
        match &self.network_mode {
            Some(NetworkMode::Container(name)) => Some(name),
            _ => None,
        }
    }

    /// Every spec this one waits for: `dependsOn`, then the network provider and the link targets
    /// it does not list, as `started` (a container cannot join or link to one that does not run).
    pub fn dependencies(&self) -> Vec<Dependency> {
        let mut dependencies = self.depends_on.clone();
        let implied =
            self.network_provider().into_iter().chain(self.links.iter().map(|link| link.name.as_str()));
        for name in implied {
            if !dependencies.iter().any(|dependency| dependency.name == name) {
                dependencies
                    .push(Dependency { name: name.to_owned(), condition: DependencyCondition::Started });
            }
        }
        dependencies
    }

    /// Whether this spec's container must follow `name`'s container: it joins its network namespace
    /// or links to it, so a new container (or a restart) of `name` needs one of this one too.
    pub fn follows_container_of(&self, name: &str) -> bool {
        self.network_provider() == Some(name) || self.links.iter().any(|link| link.name == name)
    }
}

impl NetworkMode {
    pub const EXPECTING: &'static str = "`bridge`, `host`, `none` or `container:NAME`";
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkMode::Bridge => f.write_str("bridge"),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Container(name) => write!(f, "container:{name}"),
        }
    }
}

impl std::str::FromStr for NetworkMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "bridge" => Ok(NetworkMode::Bridge),
            "host" => Ok(NetworkMode::Host),
            "none" => Ok(NetworkMode::None),
            _ => match text.strip_prefix("container:").or_else(|| text.strip_prefix("service:")) {
                Some(name) if !name.is_empty() => Ok(NetworkMode::Container(name.to_owned())),
                _ => Err(format!(
                    "invalid network mode `{text}`: expected {} (for another network, use `networks`)",
                    NetworkMode::EXPECTING
                )),
            },
        }
    }
}

impl TryFrom<String> for NetworkMode {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<NetworkMode> for String {
    fn from(mode: NetworkMode) -> String {
        mode.to_string()
    }
}

impl JsonSchema for NetworkMode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("NetworkMode")
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "`bridge`, `host`, `none`, or `container:NAME` (another spec of the namespace; `service:NAME` is read as the same).",
            "pattern": "^(bridge|host|none|(container|service):.+)$"
        })
    }
}

impl ContainerStatus {
    /// The condition of this type, if reported.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        crate::meta::find_condition(&self.conditions, kind)
    }

    /// Adds or updates the condition of `condition.kind`, as Kubernetes' `SetStatusCondition` does: when the
    /// status is unchanged, the old `lastTransitionTime` is kept. Returns whether anything changed, so that
    /// callers can skip writing an unchanged status.
    pub fn set_condition(&mut self, condition: Condition) -> bool {
        crate::meta::set_condition(&mut self.conditions, condition)
    }
}

impl From<PortMappingLong> for PortMapping {
    fn from(long: PortMappingLong) -> Self {
        PortMapping {
            container_port: long.container_port,
            host_port: long.host_port,
            host_ip: long.host_ip,
            protocol: long.protocol,
        }
    }
}

impl ShortForm for PortMapping {
    type Long = PortMappingLong;
    const EXPECTING: &'static str = "a port such as `8080:80/tcp`";

    fn parse_short(text: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid port `{text}`: {why}");
        let (addresses, protocol) = match text.rsplit_once('/') {
            Some((addresses, "tcp")) => (addresses, Protocol::Tcp),
            Some((addresses, "udp")) => (addresses, Protocol::Udp),
            Some((addresses, "sctp")) => (addresses, Protocol::Sctp),
            Some((_, other)) => return Err(invalid(&format!("protocol `{other}` is not tcp, udp or sctp"))),
            None => (text, Protocol::Tcp),
        };
        // An IPv6 host address is bracketed, so its colons do not split.
        let (host_ip, ports) = if let Some(rest) = addresses.strip_prefix('[') {
            let Some((ip, after)) = rest.split_once("]:") else {
                return Err(invalid("a bracketed IPv6 address must be followed by `:PORT`"));
            };
            let ip = ip.parse::<IpAddr>().map_err(|_| invalid(&format!("`{ip}` is not an IP address")))?;
            (Some(ip), after)
        } else {
            let parts: Vec<&str> = addresses.split(':').collect();
            if parts.len() == 3 {
                let ip = parts[0]
                    .parse::<IpAddr>()
                    .map_err(|_| invalid(&format!("`{}` is not an IP address", parts[0])))?;
                (Some(ip), &addresses[parts[0].len() + 1..])
            } else {
                (None, addresses)
            }
        };
        let parse_port = |port: &str| -> Result<u16, String> {
            match port.parse::<u16>() {
                Ok(number) if number > 0 => Ok(number),
                _ => Err(invalid(&format!("`{port}` is not a port number from 1 to 65535"))),
            }
        };
        let (host_port, container_port) = match ports.split(':').collect::<Vec<_>>()[..] {
            [container] => (None, parse_port(container)?),
            ["", container] => (None, parse_port(container)?),
            [host, container] => (Some(parse_port(host)?), parse_port(container)?),
            _ => return Err(invalid("expected `[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`")),
        };
        Ok(PortMapping { container_port, host_port, host_ip, protocol })
    }
}

impl From<MountLong> for Mount {
    fn from(long: MountLong) -> Self {
        Mount {
            kind: long.kind,
            source: long.source,
            target: long.target,
            read_only: long.read_only,
            tmpfs_size: long.tmpfs_size,
            tmpfs_mode: long.tmpfs_mode,
        }
    }
}

impl ShortForm for Mount {
    type Long = MountLong;
    const EXPECTING: &'static str = "a mount such as `/host/path:/path:ro` or `volume:/path`";

    fn parse_short(text: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid mount `{text}`: {why}");
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, read_only) = match parts[..] {
            [target] => (None, target, None),
            [source, target] => (Some(source), target, None),
            [source, target, "ro"] => (Some(source), target, Some(true)),
            [source, target, "rw"] => (Some(source), target, Some(false)),
            [_, _, mode] => return Err(invalid(&format!("mode `{mode}` is not `ro` or `rw`"))),
            _ => return Err(invalid("expected `SOURCE:TARGET[:ro|rw]` or `TARGET`")),
        };
        let kind = match source {
            Some(path) if path.starts_with('/') || path.starts_with('.') || path.starts_with('~') => {
                MountKind::Bind
            }
            _ => MountKind::Volume,
        };
        Ok(Mount {
            kind,
            source: source.map(str::to_owned),
            target: target.to_owned(),
            read_only,
            tmpfs_size: None,
            tmpfs_mode: None,
        })
    }
}

impl From<RestartPolicyLong> for RestartPolicy {
    fn from(long: RestartPolicyLong) -> Self {
        RestartPolicy { name: long.name, maximum_retry_count: long.maximum_retry_count }
    }
}

impl ShortForm for RestartPolicy {
    type Long = RestartPolicyLong;
    const EXPECTING: &'static str = "`no`, `always`, `unless-stopped` or `on-failure[:N]`";

    fn parse_short(text: &str) -> Result<Self, String> {
        let (name, count) = match text.split_once(':') {
            Some((name, count)) => (name, Some(count)),
            None => (text, None),
        };
        let name = match name {
            "no" => RestartPolicyName::No,
            "always" => RestartPolicyName::Always,
            "unless-stopped" => RestartPolicyName::UnlessStopped,
            "on-failure" => RestartPolicyName::OnFailure,
            _ => {
                return Err(format!(
                    "invalid restart policy `{text}`: expected `no`, `always`, `unless-stopped` or `on-failure[:N]`"
                ))
            }
        };
        let maximum_retry_count =
            match count {
                Some(count) => Some(count.parse::<u32>().map_err(|_| {
                    format!("invalid restart policy `{text}`: `{count}` is not a retry count")
                })?),
                None => None,
            };
        Ok(RestartPolicy { name, maximum_retry_count })
    }
}

impl From<DependencyLong> for Dependency {
    fn from(long: DependencyLong) -> Self {
        Dependency { name: long.name, condition: long.condition }
    }
}

impl ShortForm for Dependency {
    type Long = DependencyLong;
    const EXPECTING: &'static str = "a spec name";

    fn parse_short(text: &str) -> Result<Self, String> {
        Ok(Dependency { name: text.to_owned(), condition: DependencyCondition::Started })
    }
}

impl From<LinkLong> for Link {
    fn from(long: LinkLong) -> Self {
        Link { name: long.name, alias: long.alias }
    }
}

impl ShortForm for Link {
    type Long = LinkLong;
    const EXPECTING: &'static str = "a link such as `db` or `db:database`";

    fn parse_short(text: &str) -> Result<Self, String> {
        match text.split(':').collect::<Vec<_>>()[..] {
            [name] => Ok(Link { name: name.to_owned(), alias: None }),
            [name, alias] => Ok(Link { name: name.to_owned(), alias: Some(alias.to_owned()) }),
            _ => Err(format!("invalid link `{text}`: expected `NAME` or `NAME:ALIAS`")),
        }
    }
}

macro_rules! short_form_impls {
    ($type:ty, $long:ty, $short:literal) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                forms::short_or_long(deserializer)
            }
        }

        impl JsonSchema for $type {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($type))
            }

            fn json_schema(generator: &mut SchemaGenerator) -> Schema {
                forms::short_or_long_schema::<$long>(generator, $short)
            }
        }
    };
}

short_form_impls!(
    PortMapping,
    PortMappingLong,
    "`[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`, e.g. `8080:80/tcp`"
);
short_form_impls!(
    Mount,
    MountLong,
    "`SOURCE:TARGET[:ro|rw]` (bind when SOURCE is a path, else volume) or `TARGET`"
);
short_form_impls!(
    RestartPolicy,
    RestartPolicyLong,
    "`no`, `always`, `unless-stopped`, `on-failure` or `on-failure:N`"
);
short_form_impls!(Dependency, DependencyLong, "the name of a Container spec in the same namespace");
short_form_impls!(Link, LinkLong, "`NAME` or `NAME:ALIAS`: a Container spec in the same namespace");

/// A health check test: a list, or a string meaning `[CMD-SHELL, string]` as in Compose.
fn healthcheck_test<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct TestVisitor;

    impl<'de> serde::de::Visitor<'de> for TestVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a shell command string or a list such as [CMD, arg]")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<String>, E> {
            Ok(vec!["CMD-SHELL".to_owned(), text.to_owned()])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Vec<String>, A::Error> {
            forms::lenient_vec(serde::de::value::SeqAccessDeserializer::new(seq))
        }
    }

    deserializer.deserialize_any(TestVisitor)
}

fn healthcheck_test_schema(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "anyOf": [
            { "type": "string", "description": "A shell command, run as CMD-SHELL." },
            { "type": "array", "items": { "type": ["string", "number", "boolean"] }, "minItems": 1 }
        ]
    })
}

/// The permission bits of a `tmpfsMode` (`1777`, `0700`): octal, at most `7777`.
pub fn tmpfs_mode_bits(mode: &str) -> Option<u32> {
    if mode.is_empty() || mode.len() > 5 {
        return None;
    }
    u32::from_str_radix(mode, 8).ok().filter(|bits| *bits <= 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::tests::condition;

    #[test]
    fn set_condition_keeps_the_transition_time_while_the_status_holds() {
        let mut status = ContainerStatus::default();
        assert!(status.set_condition(condition(ConditionStatus::False, "Starting", "t1")));
        assert!(!status.set_condition(condition(ConditionStatus::False, "Starting", "t2")));
        assert_eq!(status.condition("Ready").unwrap().last_transition_time, "t1");
        assert!(status.set_condition(condition(ConditionStatus::False, "Unhealthy", "t3")));
        assert_eq!(status.condition("Ready").unwrap().last_transition_time, "t1");
        assert!(status.set_condition(condition(ConditionStatus::True, "Running", "t4")));
        assert_eq!(status.condition("Ready").unwrap().last_transition_time, "t4");
        assert_eq!(status.conditions.len(), 1);
    }

    #[test]
    fn key_and_defaults() {
        let container = Container::new("web", ContainerSpec::default());
        assert_eq!(container.key(), "default/web");
        assert_eq!(container.spec.non_recoverable_exit_codes_or_default(), vec![-127, -1]);
        assert_eq!(container.spec.deletion_policy_or_default(), DeletionPolicy::Remove);
    }
}
