//! The host-escape policy: which spec fields let a container reach past its own isolation into the
//! host, and the level at which each is refused. The meaning of Kubernetes' Pod Security Standards
//! (`privileged`, `baseline`, `restricted`), mapped to Docker's settings. Pure: the API checks a spec
//! before storing it and the agent checks it again before running it, both with [`check`].
//!
//! `baseline` refuses what lets a container take the host: `privileged`, capabilities beyond Docker's
//! default set, the host's network namespace, and bind mounts of sensitive host paths (the root, the
//! container engines' sockets and state, `/proc`, `/sys`, `/dev`, `/etc`, ...), the host's PID and IPC
//! namespaces, devices, security options that switch a confinement off (`seccomp=unconfined`, ...)
//! and sysctls outside Kubernetes' safe set. `restricted` also requires a non-root user, read-only
//! bind mounts, `no-new-privileges`, and no added capability but `NET_BIND_SERVICE`.
//! `privileged` refuses nothing. docs/policy.md explains each rule and why.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::container::{Container, ContainerSpec, MountKind, NetworkMode};
use crate::located::FieldError;

/// How much of the host a spec may reach, as Kubernetes' Pod Security Standards name the levels.
/// Ordered: each level refuses everything the one before it refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyLevel {
    /// Nothing is refused: for trusted specs that manage the host (a monitoring agent, kedge itself).
    Privileged,
    /// The default: refuses the settings that hand the host to the container.
    #[default]
    Baseline,
    /// Baseline, and also a non-root user, read-only bind mounts, `no-new-privileges` and no added
    /// capabilities but `NET_BIND_SERVICE`.
    Restricted,
}

/// One field of a spec that the policy refuses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// The field path, as the validator names fields: `spec.mounts[1].source`.
    pub path: String,
    /// The lowest level that refuses the field (a spec refused at `baseline` is refused at
    /// `restricted` too).
    pub level: PolicyLevel,
    /// Why the field is refused, as a sentence fragment: "a privileged container can do anything
    /// root on the host can".
    pub reason: String,
}

/// The policy a host enforces, and the one place that answers which level a namespace gets: the
/// level stored for it (`kedge policy set NAMESPACE LEVEL`), else the agent's `--policy-level`
/// (default `baseline`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySettings {
    /// The level of every namespace that has none stored.
    pub default_level: PolicyLevel,
    /// The levels stored per namespace (`/kedge/v1/policies/<ns>`), as the caller last read them.
    pub namespaces: std::collections::BTreeMap<String, PolicyLevel>,
    /// The agent's own state directory (`--state-dir`: its API token, the embedded store). Below
    /// `privileged` no bind mount may expose it, wherever it is; the default one is also among
    /// [`SENSITIVE_HOST_PATHS`].
    pub state_dir: Option<String>,
    /// The socket of the engine the agent manages (`DOCKER_HOST`'s `unix://` path). Below
    /// `privileged` no bind mount may expose it, wherever it is: whoever reaches it runs any
    /// container on the host. The usual paths are also among [`SENSITIVE_HOST_PATHS`].
    pub engine_socket: Option<String>,
}

/// Where a namespace's effective level comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LevelSource {
    /// Stored for the namespace (`kedge policy set`).
    Namespace,
    /// None is stored: the agent's `--policy-level`.
    Default,
}

/// The level stored for one namespace: the value at `/kedge/v1/policies/<ns>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub level: PolicyLevel,
}

/// Linux capabilities a Docker container has unless it drops them (moby's `DefaultCapabilities`).
/// Adding one of them back after a `capDrop` is allowed at `baseline`.
pub const DOCKER_DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The one capability `restricted` lets a spec add (as Kubernetes' restricted level does).
pub const RESTRICTED_CAPABILITIES: &[&str] = &["NET_BIND_SERVICE"];

/// The sysctls `baseline` allows: Kubernetes' safe set (Pod Security Standards, v1.29). Each is
/// namespaced (it changes the container's own network or IPC namespace, never the host's, as long as
/// the container does not share the host's, which `baseline` refuses too) and cannot starve other
/// containers. A name may be written with `/` for `.`.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_fin_timeout",
];

/// Host paths a bind mount may not expose at `baseline`: the path itself, anything under it, and any
/// directory above it (binding `/var` exposes `/var/run/docker.sock`; binding `/` exposes all).
/// Paths are compared as written, after `.`, `..` and repeated `/` are resolved: a symbolic link on
/// the host is not followed, which is why both `/var/run/...` and `/run/...` are listed.
pub const SENSITIVE_HOST_PATHS: &[&str] = &[
    // The kernel's and the devices' views of the host.
    "/proc",
    "/sys",
    "/dev",
    // The host's configuration, boot files, root's home and kernel modules.
    "/etc",
    "/boot",
    "/root",
    "/lib/modules",
    "/usr/lib/modules",
    // Container engines' sockets: whoever reaches one runs any container on the host.
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/run/docker",
    "/run/docker",
    "/var/run/containerd",
    "/run/containerd",
    "/var/run/podman",
    "/run/podman",
    "/var/run/crio",
    "/run/crio",
    "/run/user",
    // Container engines' state: every container's files, and their secrets.
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/containers",
    "/var/lib/kubelet",
    // kedge's own state (the default `--state-dir`): the API token and the embedded store.
    "/var/lib/kedge",
    // The init system's and the system bus's sockets: root on them controls the host's services.
    "/run/systemd",
    "/var/run/systemd",
    "/run/dbus",
    "/var/run/dbus",
];

/// Checks one container spec against `level`: every field the level refuses. Paths
/// start at `spec.`.
pub fn check(spec: &ContainerSpec, level: PolicyLevel) -> Vec<Violation> {
    let mut found = Found { level, violations: Vec::new() };
    if spec.privileged == Some(true) {
        found.add(
            "spec.privileged",
            PolicyLevel::Baseline,
            "a privileged container has every capability and every host device: it can do anything root on the host can",
        );
    }
    for (index, capability) in spec.cap_add.iter().enumerate() {
        let name = capability_name(capability);
        let path = format!("spec.capAdd[{index}]");
        if name == "ALL" {
            found.add(path, PolicyLevel::Baseline, "`ALL` adds every capability, among them SYS_ADMIN and SYS_MODULE, which reach the host kernel");
        } else if !DOCKER_DEFAULT_CAPABILITIES.contains(&name.as_str()) {
            found.add(
                path,
                PolicyLevel::Baseline,
                format!("`{capability}` is not among Docker's default capabilities (adding it back after a `capDrop` is allowed)"),
            );
        } else if !RESTRICTED_CAPABILITIES.contains(&name.as_str()) {
            found.add(
                path,
                PolicyLevel::Restricted,
                format!("`{capability}` may not be added; only NET_BIND_SERVICE may"),
            );
        }
    }
    if spec.network_mode == Some(NetworkMode::Host) {
        found.add(
            "spec.networkMode",
            PolicyLevel::Baseline,
            "`host` shares the host's network namespace: every host interface and port, and services bound to the host's loopback",
        );
    }
    check_isolation(spec, &mut found);
    check_user(spec, &mut found);
    for (index, mount) in spec.mounts.iter().enumerate() {
        if mount.kind != MountKind::Bind {
            continue;
        }
        let Some(source) = &mount.source else { continue };
        if let Some(sensitive) = sensitive_path_exposed(source) {
            let why = if normalize(source) == "/" {
                "a bind mount of the host's root exposes every host file".to_owned()
            } else {
                format!("a bind mount of `{source}` exposes the sensitive host path `{sensitive}`")
            };
            found.add(format!("spec.mounts[{index}].source"), PolicyLevel::Baseline, why);
        } else if mount.read_only != Some(true) {
            found.add(
                format!("spec.mounts[{index}].readOnly"),
                PolicyLevel::Restricted,
                format!("the bind mount of `{source}` must be read-only (`readOnly: true` or `:ro`)"),
            );
        }
    }
    found.violations
}

/// [`check`] for a Container.
pub fn check_container(container: &Container, level: PolicyLevel) -> Vec<Violation> {
    check(&container.spec, level)
}

impl PolicySettings {
    /// The level enforced in `namespace`: the one place the API and the agent ask.
    pub fn level_for(&self, namespace: &str) -> PolicyLevel {
        self.effective(namespace).0
    }

    /// The level enforced in `namespace` and where it comes from.
    pub fn effective(&self, namespace: &str) -> (PolicyLevel, LevelSource) {
        match self.namespaces.get(namespace) {
            Some(level) => (*level, LevelSource::Namespace),
            None => (self.default_level, LevelSource::Default),
        }
    }

    /// Checks a spec of `namespace` at the namespace's level: [`check`], and below `privileged` a bind
    /// mount exposing [`PolicySettings::state_dir`] or [`PolicySettings::engine_socket`] too. Returns
    /// the level with what it refuses.
    pub fn check(&self, namespace: &str, spec: &ContainerSpec) -> (PolicyLevel, Vec<Violation>) {
        let level = self.level_for(namespace);
        let mut violations = check(spec, level);
        if level == PolicyLevel::Privileged {
            return (level, violations);
        }
        let agent_paths = [
            (self.state_dir.as_deref(), "the agent's state directory", "its API token and store"),
            (
                self.engine_socket.as_deref(),
                "the agent's engine socket",
                "whoever reaches it runs any container on the host",
            ),
        ];
        for (index, mount) in spec.mounts.iter().enumerate() {
            let Some(source) = mount.source.as_deref().filter(|_| mount.kind == MountKind::Bind) else {
                continue;
            };
            let path = format!("spec.mounts[{index}].source");
            let source_normalized = normalize(source);
            for (agent_path, what, why) in agent_paths {
                let Some(agent_path) = agent_path.map(normalize) else { continue };
                let exposes =
                    is_within(&source_normalized, &agent_path) || is_within(&agent_path, &source_normalized);
                if exposes && !violations.iter().any(|v| v.path == path) {
                    violations.push(Violation {
                        path: path.clone(),
                        level: PolicyLevel::Baseline,
                        reason: format!("a bind mount of `{source}` exposes {what} `{agent_path}` ({why})"),
                    });
                }
            }
        }
        (level, violations)
    }
}

impl LevelSource {
    pub fn as_str(self) -> &'static str {
        match self {
            LevelSource::Namespace => "namespace",
            LevelSource::Default => "default",
        }
    }
}

impl fmt::Display for LevelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Violation {
    /// The violation as a validation error of its field, so that it is reported (and placed in a
    /// file) as every other invalid field is.
    pub fn to_field_error(&self) -> FieldError {
        FieldError { path: self.path.clone(), message: self.message(), on_key: false }
    }

    /// "refused by the `baseline` policy: ...": the reason, naming the level.
    pub fn message(&self) -> String {
        format!("refused by the `{}` policy: {}", self.level, self.reason)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message())
    }
}

impl PolicyLevel {
    pub const ALL: [PolicyLevel; 3] =
        [PolicyLevel::Privileged, PolicyLevel::Baseline, PolicyLevel::Restricted];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyLevel::Privileged => "privileged",
            PolicyLevel::Baseline => "baseline",
            PolicyLevel::Restricted => "restricted",
        }
    }
}

impl fmt::Display for PolicyLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<PolicyLevel, String> {
        PolicyLevel::ALL.into_iter().find(|level| level.as_str() == text).ok_or_else(|| {
            format!("`{text}` is not a policy level: expected `privileged`, `baseline` or `restricted`")
        })
    }
}

/// Violations found so far, keeping only those `level` refuses.
struct Found {
    level: PolicyLevel,
    violations: Vec<Violation>,
}

impl Found {
    fn add(&mut self, path: impl Into<String>, refused_from: PolicyLevel, reason: impl Into<String>) {
        if self.level >= refused_from && refused_from != PolicyLevel::Privileged {
            self.violations.push(Violation { path: path.into(), level: refused_from, reason: reason.into() });
        }
    }
}

/// `pidMode`, `ipcMode`, `devices`, `securityOpt` and `sysctls` (isolation.rs). `baseline` refuses the
/// host's PID and IPC namespaces, every device, the options that switch a confinement off, and
/// sysctls outside [`SAFE_SYSCTLS`]; `restricted` also requires `no-new-privileges`.
fn check_isolation(spec: &ContainerSpec, found: &mut Found) {
    if spec.pid_mode.as_deref() == Some("host") {
        found.add(
            "spec.pidMode",
            PolicyLevel::Baseline,
            "`host` shares the host's process namespace: every host process can be seen and signalled, and its files reached through /proc",
        );
    }
    if spec.ipc_mode.as_deref() == Some("host") {
        found.add(
            "spec.ipcMode",
            PolicyLevel::Baseline,
            "`host` shares the host's shared memory and semaphores with the container",
        );
    }
    for (index, device) in spec.devices.iter().enumerate() {
        found.add(
            format!("spec.devices[{index}]"),
            PolicyLevel::Baseline,
            format!("the host device `{device}` gives the container direct access to host hardware or kernel interfaces"),
        );
    }
    for (index, text) in spec.security_opt.iter().enumerate() {
        // An option kedge cannot read (a spec written straight to the store skips validation) is
        // refused too: the engine may understand it, as a seccomp profile file, and loosen something.
        let why = match crate::isolation::parse_security_option(text) {
            Ok(option) => unconfining(&option),
            Err(unreadable) => Some(format!("`{text}` cannot be checked: {unreadable}")),
        };
        if let Some(why) = why {
            found.add(format!("spec.securityOpt[{index}]"), PolicyLevel::Baseline, why);
        }
    }
    for name in spec.sysctls.keys() {
        if !SAFE_SYSCTLS.contains(&name.replace('/', ".").as_str()) {
            found.add(
                format!("spec.sysctls.{name}"),
                PolicyLevel::Baseline,
                format!("`{name}` is not among the namespaced sysctls known to be safe (docs/policy.md lists them)"),
            );
        }
    }
    if !crate::isolation::has_no_new_privileges(&spec.security_opt) {
        found.add(
            "spec.securityOpt",
            PolicyLevel::Restricted,
            "`no-new-privileges` must be set, so that no process can gain privileges through setuid binaries or file capabilities",
        );
    }
}

/// Why a security option switches a confinement off, if it does.
fn unconfining(option: &crate::isolation::SecurityOption<'_>) -> Option<String> {
    let value = option.value.unwrap_or_default();
    match option.key {
        "seccomp" if value == "unconfined" => {
            Some("`seccomp=unconfined` lets the container make every system call, those Docker's default profile blocks among them".to_owned())
        }
        "apparmor" if value == "unconfined" => {
            Some("`apparmor=unconfined` removes the AppArmor profile that confines the container".to_owned())
        }
        "writable-cgroups" if value == "true" => {
            Some("`writable-cgroups=true` lets the container rewrite its own cgroup limits".to_owned())
        }
        "label" => {
            let allowed_type = value
                .strip_prefix("type:")
                .is_some_and(|kind| ["container_t", "container_init_t", "container_kvm_t"].contains(&kind));
            (value == "disable" || value.starts_with("user:") || value.starts_with("role:") || (value.starts_with("type:") && !allowed_type))
                .then(|| format!("`label={value}` disables or widens the container's SELinux confinement (only `type:container_t`, `container_init_t`, `container_kvm_t` and `level:` may be set)"))
        }
        _ => None,
    }
}

/// `restricted`: the container and its post-start commands run as a user other than root. Without
/// `user` the image's user applies, which kedge cannot know before the image is pulled, so it must be
/// declared.
fn check_user(spec: &ContainerSpec, found: &mut Found) {
    match spec.user.as_deref() {
        None => found.add(
            "spec.user",
            PolicyLevel::Restricted,
            "a non-root `user` must be declared (the image's own user may be root)",
        ),
        Some(user) if is_root(user) => {
            found.add("spec.user", PolicyLevel::Restricted, format!("`{user}` runs as root"))
        }
        Some(_) => {}
    }
    for (index, exec) in spec.post_start.iter().enumerate() {
        if let Some(user) = exec.user.as_deref().filter(|user| is_root(user)) {
            found.add(
                format!("spec.postStart[{index}].user"),
                PolicyLevel::Restricted,
                format!("`{user}` runs the command as root"),
            );
        }
    }
}

/// Whether Docker's `user` (`name`, `uid`, `name:group`, `uid:gid`) names root: the user part is
/// `root`, `0` (or `00`...), or empty (Docker then keeps the image's user, which may be root).
fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or_default().trim();
    name.is_empty()
        || name == "root"
        || (name.bytes().all(|b| b.is_ascii_digit()) && name.trim_start_matches('0').is_empty())
}

/// `net_admin`, `CAP_NET_ADMIN` -> `NET_ADMIN`.
fn capability_name(capability: &str) -> String {
    let upper = capability.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").map_or_else(|| upper.clone(), str::to_owned)
}

/// The sensitive host path a bind of `source` exposes: one it is, is under, or is above.
fn sensitive_path_exposed(source: &str) -> Option<&'static str> {
    let source = normalize(source);
    SENSITIVE_HOST_PATHS
        .iter()
        .copied()
        .find(|sensitive| is_within(&source, sensitive) || is_within(sensitive, &source))
}

/// Whether `path` is `ancestor` or under it (both normalized).
fn is_within(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || path.strip_prefix(ancestor).is_some_and(|rest| rest.starts_with('/'))
}

/// An absolute path with `.`, `..`, repeated and trailing `/` resolved lexically (`..` above the root
/// stays at the root, as the kernel has it).
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests;
