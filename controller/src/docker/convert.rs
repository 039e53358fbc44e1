//! Translation between kedge's Docker types and bollard's: the only place both meet.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models as b;

use super::labels;
use super::types::*;

/// A bollard struct literal with every limit of [`Resources`] set from `$limits` (one list, so
/// the create and the update bodies cannot disagree), the other fields given, the rest default.
macro_rules! with_limits {
    ($type:path, $limits:expr, { $($field:ident: $value:expr),* $(,)? }) => {{
        let r: &Resources = $limits;
        $type {
            nano_cpus: r.nano_cpus,
            cpu_shares: r.cpu_shares,
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpuset_cpus: r.cpuset_cpus.clone(),
            cpuset_mems: r.cpuset_mems.clone(),
            memory: r.memory,
            memory_reservation: r.memory_reservation,
            memory_swap: r.memory_swap,
            blkio_weight: r.blkio_weight,
            pids_limit: r.pids_limit,
            $($field: $value,)*
            ..Default::default()
        }
    }};
}

/// The create body for `config`, attached to its first network only (Docker takes one at create).
pub(crate) fn create_body(config: &ContainerConfig) -> b::ContainerCreateBody {
    let mut exposed: Vec<String> = config.exposed_ports.iter().map(ExposedPort::key).collect();
    for binding in &config.port_bindings {
        let key = ExposedPort { port: binding.container_port, protocol: binding.protocol }.key();
        if !exposed.contains(&key) {
            exposed.push(key);
        }
    }
    let mut port_map: b::PortMap = HashMap::new();
    for binding in &config.port_bindings {
        let key = ExposedPort { port: binding.container_port, protocol: binding.protocol }.key();
        port_map.entry(key).or_insert_with(|| Some(Vec::new())).get_or_insert_with(Vec::new).push(
            b::PortBinding {
                host_ip: binding.host_ip.clone(),
                host_port: binding.host_port.map(|p| p.to_string()),
            },
        );
    }
    let first_network = config.networks.first();
    let host_config = with_limits!(b::HostConfig, &config.resources, {
        port_bindings: (!port_map.is_empty()).then_some(port_map),
        mounts: (!config.mounts.is_empty()).then(|| config.mounts.iter().map(mount_to_bollard).collect()),
        restart_policy: config.restart_policy.map(restart_policy_to_bollard),
        cap_add: non_empty(&config.cap_add),
        cap_drop: non_empty(&config.cap_drop),
        privileged: config.privileged.then_some(true),
        readonly_rootfs: config.read_only_rootfs.then_some(true),
        pid_mode: config.isolation.pid_mode.clone(),
        ipc_mode: config.isolation.ipc_mode.clone(),
        devices: (!config.isolation.devices.is_empty()).then(|| {
            config.isolation.devices.iter().map(|device| b::DeviceMapping {
                path_on_host: Some(device.host_path.clone()),
                path_in_container: Some(device.container_path.clone()),
                cgroup_permissions: Some(device.permissions.clone()),
            }).collect()
        }),
        security_opt: non_empty(&config.isolation.security_opt),
        init: config.process.init.then_some(true),
        shm_size: config.process.shm_size,
        extra_hosts: non_empty(&config.process.extra_hosts),
        ulimits: (!config.process.ulimits.is_empty()).then(|| {
            config.process.ulimits.iter().map(|(name, soft, hard)| b::ResourcesUlimits {
                name: Some(name.clone()),
                soft: Some(*soft),
                hard: Some(*hard),
            }).collect()
        }),
        dns: non_empty(&config.process.dns),
        dns_search: non_empty(&config.process.dns_search),
        dns_options: non_empty(&config.process.dns_options),
        sysctls: (!config.isolation.sysctls.is_empty())
            .then(|| config.isolation.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        log_config: config.log_config.as_ref().map(|log| b::HostConfigLogConfig {
            typ: Some(log.driver.clone()),
            config: Some(log.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        }),
        network_mode: config.network_mode.clone().or_else(|| first_network.map(|n| n.network.clone())),
        links: non_empty(&config.links),
    });
    b::ContainerCreateBody {
        image: Some(config.image.clone()),
        env: non_empty(&config.env),
        cmd: config.cmd.clone(),
        entrypoint: config.entrypoint.clone(),
        working_dir: config.working_dir.clone(),
        user: config.user.clone(),
        hostname: config.hostname.clone(),
        labels: Some(config.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck: config.healthcheck.as_ref().map(healthcheck_to_bollard),
        stop_signal: config.stop_signal.clone(),
        stop_timeout: config.stop_timeout.map(|d| d.as_secs() as i64),
        tty: config.process.tty.then_some(true),
        open_stdin: config.process.open_stdin.then_some(true),
        host_config: Some(host_config),
        // A network mode other than a network (`host`, `container:NAME`) takes no endpoint.
        networking_config: first_network.filter(|_| config.network_mode.is_none()).map(|n| {
            b::NetworkingConfig {
                endpoints_config: Some(HashMap::from([(n.network.clone(), endpoint_settings(n))])),
            }
        }),
        ..Default::default()
    }
}

/// The endpoint settings for attaching to `network` (at create or with connect).
pub(crate) fn endpoint_settings(network: &NetworkAttachment) -> b::EndpointSettings {
    b::EndpointSettings {
        aliases: non_empty(&network.aliases),
        ipam_config: network
            .ipv4_address
            .as_ref()
            .map(|ip| b::EndpointIpamConfig { ipv4_address: Some(ip.clone()), ..Default::default() }),
        ..Default::default()
    }
}

/// The update body that changes exactly the declared resources.
pub(crate) fn update_body(r: &Resources) -> b::ContainerUpdateBody {
    with_limits!(b::ContainerUpdateBody, r, {})
}

fn non_empty(values: &[String]) -> Option<Vec<String>> {
    (!values.is_empty()).then(|| values.to_vec())
}

fn nanos(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

fn duration_from_nanos(n: Option<i64>) -> Option<Duration> {
    n.filter(|n| *n > 0).map(|n| Duration::from_nanos(n as u64))
}

fn healthcheck_to_bollard(h: &Healthcheck) -> b::HealthConfig {
    b::HealthConfig {
        test: Some(h.test.clone()),
        interval: h.interval.map(nanos),
        timeout: h.timeout.map(nanos),
        retries: h.retries,
        start_period: h.start_period.map(nanos),
        start_interval: h.start_interval.map(nanos),
    }
}

fn healthcheck_from_bollard(h: b::HealthConfig) -> Option<Healthcheck> {
    let test = h.test.unwrap_or_default();
    if test.is_empty() {
        return None;
    }
    Some(Healthcheck {
        test,
        interval: duration_from_nanos(h.interval),
        timeout: duration_from_nanos(h.timeout),
        retries: h.retries.filter(|r| *r > 0),
        start_period: duration_from_nanos(h.start_period),
        start_interval: duration_from_nanos(h.start_interval),
    })
}

fn restart_policy_to_bollard(p: RestartPolicy) -> b::RestartPolicy {
    use b::RestartPolicyNameEnum as N;
    let name = match p.kind {
        RestartPolicyKind::No => N::NO,
        RestartPolicyKind::Always => N::ALWAYS,
        RestartPolicyKind::UnlessStopped => N::UNLESS_STOPPED,
        RestartPolicyKind::OnFailure => N::ON_FAILURE,
    };
    let retries = (p.kind == RestartPolicyKind::OnFailure).then_some(p.max_retries);
    b::RestartPolicy { name: Some(name), maximum_retry_count: retries }
}

fn restart_policy_from_bollard(p: b::RestartPolicy) -> Option<RestartPolicy> {
    use b::RestartPolicyNameEnum as N;
    let kind = match p.name? {
        N::EMPTY => return None,
        N::NO => RestartPolicyKind::No,
        N::ALWAYS => RestartPolicyKind::Always,
        N::UNLESS_STOPPED => RestartPolicyKind::UnlessStopped,
        N::ON_FAILURE => RestartPolicyKind::OnFailure,
    };
    Some(RestartPolicy { kind, max_retries: p.maximum_retry_count.unwrap_or(0) })
}

fn mount_to_bollard(m: &Mount) -> b::Mount {
    let (typ, source, tmpfs_options) = match &m.source {
        MountSource::Bind { host_path } => (b::MountType::BIND, Some(host_path.clone()), None),
        MountSource::Volume { name } => (b::MountType::VOLUME, name.clone(), None),
        MountSource::Tmpfs { size_bytes, mode } => (
            b::MountType::TMPFS,
            None,
            (size_bytes.is_some() || mode.is_some()).then(|| b::MountTmpfsOptions {
                size_bytes: *size_bytes,
                mode: *mode,
                ..Default::default()
            }),
        ),
    };
    b::Mount {
        target: Some(m.target.clone()),
        source,
        typ: Some(typ),
        read_only: m.read_only.then_some(true),
        tmpfs_options,
        ..Default::default()
    }
}

fn mount_from_bollard(m: b::Mount) -> Option<Mount> {
    let source = match m.typ? {
        b::MountType::BIND => MountSource::Bind { host_path: m.source.unwrap_or_default() },
        b::MountType::VOLUME => MountSource::Volume { name: m.source.filter(|s| !s.is_empty()) },
        b::MountType::TMPFS => {
            let options = m.tmpfs_options.unwrap_or_default();
            MountSource::Tmpfs {
                size_bytes: options.size_bytes.filter(|s| *s > 0),
                mode: options.mode.filter(|mode| *mode != 0),
            }
        }
        _ => return None,
    };
    Some(Mount { source, target: m.target.unwrap_or_default(), read_only: m.read_only.unwrap_or(false) })
}

/// The create-time mounts as declared: a volume a recreate carried over by name (listed in the
/// `io.kedge.carried-volumes` label) stands for the anonymous volume declared there, or for none
/// when the declaration was implicit (the image's `VOLUME`).
fn declared_mounts(mounts: Vec<Mount>, carried: &BTreeMap<String, labels::CarriedVolume>) -> Vec<Mount> {
    mounts
        .into_iter()
        .filter_map(|mut mount| {
            let is_volume = matches!(mount.source, MountSource::Volume { name: Some(_) });
            match carried.get(&mount.target) {
                Some(labels::CarriedVolume::Declared) if is_volume => {
                    mount.source = MountSource::Volume { name: None };
                    Some(mount)
                }
                Some(labels::CarriedVolume::Implicit) if is_volume => None,
                _ => Some(mount),
            }
        })
        .collect()
}

/// Parses a `-v` style bind (`src:dst[:opts]`): a source starting with `/` is a host path, else a volume.
fn mount_from_bind_string(bind: &str) -> Option<Mount> {
    let mut parts = bind.split(':');
    let source = parts.next()?;
    let target = parts.next()?;
    let read_only = parts.next().is_some_and(|opts| opts.split(',').any(|o| o == "ro"));
    let source = if source.starts_with('/') {
        MountSource::Bind { host_path: source.to_string() }
    } else {
        MountSource::Volume { name: Some(source.to_string()) }
    };
    Some(Mount { source, target: target.to_string(), read_only })
}

fn labels_from(map: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    map.unwrap_or_default().into_iter().collect()
}

fn string_opt(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn positive(n: Option<i64>) -> Option<i64> {
    n.filter(|n| *n > 0)
}

fn resources_from_host_config(h: &b::HostConfig) -> Resources {
    Resources {
        nano_cpus: positive(h.nano_cpus),
        cpu_shares: positive(h.cpu_shares),
        cpu_period: positive(h.cpu_period),
        cpu_quota: positive(h.cpu_quota),
        cpuset_cpus: string_opt(h.cpuset_cpus.clone()),
        cpuset_mems: string_opt(h.cpuset_mems.clone()),
        memory: positive(h.memory),
        memory_reservation: positive(h.memory_reservation),
        // -1 (unlimited swap) is a real declaration, 0 is "not set".
        memory_swap: h.memory_swap.filter(|n| *n != 0),
        blkio_weight: h.blkio_weight.filter(|w| *w > 0),
        pids_limit: positive(h.pids_limit),
    }
}

fn port_bindings_from(map: Option<b::PortMap>) -> Vec<PortBinding> {
    let mut out = Vec::new();
    for (key, bindings) in map.unwrap_or_default() {
        let Some(port) = ExposedPort::parse(&key) else { continue };
        for binding in bindings.unwrap_or_default() {
            out.push(PortBinding {
                container_port: port.port,
                protocol: port.protocol,
                host_ip: string_opt(binding.host_ip),
                host_port: binding.host_port.and_then(|p| p.parse().ok()),
            });
        }
    }
    out.sort();
    out
}

fn exposed_from(ports: Option<Vec<String>>) -> Vec<ExposedPort> {
    let mut out: Vec<ExposedPort> =
        ports.unwrap_or_default().iter().filter_map(|p| ExposedPort::parse(p)).collect();
    out.sort();
    out
}

fn status_from(s: Option<b::ContainerStateStatusEnum>) -> ContainerStatus {
    use b::ContainerStateStatusEnum as S;
    match s {
        Some(S::CREATED) => ContainerStatus::Created,
        Some(S::RUNNING) => ContainerStatus::Running,
        Some(S::PAUSED) => ContainerStatus::Paused,
        Some(S::RESTARTING) => ContainerStatus::Restarting,
        Some(S::REMOVING) => ContainerStatus::Removing,
        Some(S::EXITED) => ContainerStatus::Exited,
        Some(S::DEAD) => ContainerStatus::Dead,
        _ => ContainerStatus::Unknown,
    }
}

pub(crate) fn health_from_str(s: &str) -> HealthStatus {
    match s {
        "starting" => HealthStatus::Starting,
        "healthy" => HealthStatus::Healthy,
        "unhealthy" => HealthStatus::Unhealthy,
        _ => HealthStatus::None,
    }
}

fn health_from(h: Option<b::Health>) -> Option<HealthStatus> {
    use b::HealthStatusEnum as H;
    match h?.status? {
        H::STARTING => Some(HealthStatus::Starting),
        H::HEALTHY => Some(HealthStatus::Healthy),
        H::UNHEALTHY => Some(HealthStatus::Unhealthy),
        H::NONE | H::EMPTY => None,
    }
}

fn strip_slash(name: &str) -> String {
    name.strip_prefix('/').unwrap_or(name).to_string()
}

/// An image ID in Docker's form, `sha256:<hex>`. Podman's Docker API answers a container's image
/// bare (`<hex>`) while its image inspect has the prefix; compared as they come, every container
/// would look like it runs another image than its tag's, and be recreated again and again.
fn image_id(id: String) -> String {
    if id.is_empty() || id.contains(':') {
        id
    } else {
        format!("sha256:{id}")
    }
}

pub(crate) fn observed_from_inspect(i: b::ContainerInspectResponse) -> Option<ObservedContainer> {
    let id = i.id?;
    let config = i.config.unwrap_or_default();
    let host = i.host_config.unwrap_or_default();
    let state = i.state.unwrap_or_default();
    let mut mounts: Vec<Mount> =
        host.mounts.clone().unwrap_or_default().into_iter().filter_map(mount_from_bollard).collect();
    mounts.extend(host.binds.clone().unwrap_or_default().iter().filter_map(|b| mount_from_bind_string(b)));
    for target in host.tmpfs.clone().unwrap_or_default().into_keys() {
        mounts.push(Mount {
            source: MountSource::Tmpfs { size_bytes: None, mode: None },
            target,
            read_only: false,
        });
    }
    let labels = labels_from(config.labels.clone());
    let mut mounts = declared_mounts(mounts, &labels::carried_volumes(&labels));
    mounts.sort();
    let mut volumes: Vec<AttachedVolume> = i
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("volume"))
        .filter_map(|m| {
            Some(AttachedVolume {
                name: string_opt(m.name)?,
                target: string_opt(m.destination)?,
                read_only: m.rw == Some(false),
            })
        })
        .collect();
    volumes.sort();
    let mut config_volumes = config.volumes.clone().unwrap_or_default();
    config_volumes.sort();
    let mut networks: Vec<ObservedNetwork> = i
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(network, e)| ObservedNetwork {
            network,
            network_id: string_opt(e.network_id),
            aliases: e.aliases.unwrap_or_default(),
            ipv4_address: e.ipam_config.and_then(|c| string_opt(c.ipv4_address)),
            ip_address: string_opt(e.ip_address),
        })
        .collect();
    networks.sort_by(|a, b| a.network.cmp(&b.network));
    Some(ObservedContainer {
        id,
        name: strip_slash(&i.name.unwrap_or_default()),
        image: config.image.clone().unwrap_or_default(),
        image_id: image_id(i.image.unwrap_or_default()),
        created: i.created.map(|c| c.to_string()),
        state: ContainerState {
            status: status_from(state.status),
            running: state.running.unwrap_or(false),
            restarting: state.restarting.unwrap_or(false),
            oom_killed: state.oom_killed.unwrap_or(false),
            exit_code: state.exit_code,
            error: string_opt(state.error),
            started_at: string_opt(state.started_at),
            finished_at: string_opt(state.finished_at),
            restart_count: i.restart_count.unwrap_or(0),
            health: health_from(state.health),
        },
        labels,
        env: config.env.unwrap_or_default().into(),
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        working_dir: string_opt(config.working_dir),
        user: string_opt(config.user),
        hostname: string_opt(config.hostname),
        exposed_ports: exposed_from(config.exposed_ports),
        port_bindings: port_bindings_from(host.port_bindings.clone()),
        mounts,
        volumes,
        config_volumes,
        restart_policy: host.restart_policy.clone().and_then(restart_policy_from_bollard),
        resources: resources_from_host_config(&host),
        healthcheck: config.healthcheck.and_then(healthcheck_from_bollard),
        stop_signal: string_opt(config.stop_signal),
        stop_timeout: config.stop_timeout.filter(|t| *t >= 0).map(|t| Duration::from_secs(t as u64)),
        cap_add: host.cap_add.clone().unwrap_or_default(),
        cap_drop: host.cap_drop.clone().unwrap_or_default(),
        privileged: host.privileged.unwrap_or(false),
        read_only_rootfs: host.readonly_rootfs.unwrap_or(false),
        isolation: isolation_from_host_config(&host),
        process: ProcessSettings {
            tty: config.tty.unwrap_or(false),
            open_stdin: config.open_stdin.unwrap_or(false),
            ..process_from_host_config(&host)
        },
        log_config: host
            .log_config
            .clone()
            .and_then(|l| Some(LogConfig { driver: string_opt(l.typ)?, options: labels_from(l.config) })),
        network_mode: string_opt(host.network_mode),
        networks,
        links: host.links.clone().unwrap_or_default(),
    })
}

/// `HostConfig`'s PID and IPC modes (empty ones as `None`; so is the PID mode `private`, the default
/// Podman names where Docker reports nothing, as the desired side leaves it out), devices, security
/// options and sysctls.
fn isolation_from_host_config(host: &b::HostConfig) -> Isolation {
    Isolation {
        pid_mode: host.pid_mode.clone().filter(|mode| !mode.is_empty() && mode != "private"),
        ipc_mode: host.ipc_mode.clone().filter(|mode| !mode.is_empty()),
        devices: host
            .devices
            .iter()
            .flatten()
            .map(|device| DeviceMapping {
                host_path: device.path_on_host.clone().unwrap_or_default(),
                container_path: device.path_in_container.clone().unwrap_or_default(),
                permissions: device.cgroup_permissions.clone().unwrap_or_default(),
            })
            .collect(),
        security_opt: host.security_opt.clone().unwrap_or_default(),
        sysctls: host.sysctls.clone().unwrap_or_default().into_iter().collect(),
    }
}

/// `HostConfig`'s init, `/dev/shm` size, extra hosts and ulimits (sorted by name).
fn process_from_host_config(host: &b::HostConfig) -> ProcessSettings {
    let mut ulimits: Vec<(String, i64, i64)> = host
        .ulimits
        .iter()
        .flatten()
        .map(|u| (u.name.clone().unwrap_or_default(), u.soft.unwrap_or_default(), u.hard.unwrap_or_default()))
        .collect();
    ulimits.sort();
    ProcessSettings {
        init: host.init.unwrap_or(false),
        shm_size: host.shm_size.filter(|size| *size > 0),
        extra_hosts: host.extra_hosts.clone().unwrap_or_default(),
        ulimits,
        dns: host.dns.clone().unwrap_or_default(),
        dns_search: host.dns_search.clone().unwrap_or_default(),
        dns_options: host.dns_options.clone().unwrap_or_default(),
        // `Config.Tty` and `Config.OpenStdin` are not in `HostConfig`: the caller sets them.
        tty: false,
        open_stdin: false,
    }
}

/// The container's own name among a listing's `Names`. A linked container is also listed under
/// each link to it (`/LINKER/ALIAS`), in no fixed order: taking the first name would call it by a
/// link, and make it look like a second container of its spec.
fn own_name(names: &[String]) -> String {
    let own = names.iter().find(|name| !strip_slash(name).contains('/'));
    own.or(names.first()).map(|name| strip_slash(name)).unwrap_or_default()
}

pub(crate) fn summary_from(s: b::ContainerSummary) -> Option<ContainerSummary> {
    Some(ContainerSummary {
        id: s.id?,
        name: own_name(&s.names.unwrap_or_default()),
        image: s.image.unwrap_or_default(),
        image_id: image_id(s.image_id.unwrap_or_default()),
        state: s.state.map(|st| st.to_string()).unwrap_or_default(),
        labels: labels_from(s.labels),
        health: s.status.as_deref().and_then(health_of_status),
    })
}

/// The health a list's status line ends with (`Up 2 minutes (healthy)`, `(unhealthy)`, `(health:
/// starting)`), which Engine 20.10 to 26 give only there.
fn health_of_status(status: &str) -> Option<HealthStatus> {
    if status.ends_with("(healthy)") {
        Some(HealthStatus::Healthy)
    } else if status.ends_with("(unhealthy)") {
        Some(HealthStatus::Unhealthy)
    } else if status.ends_with("(health: starting)") {
        Some(HealthStatus::Starting)
    } else {
        None
    }
}

pub(crate) fn image_from_inspect(i: b::ImageInspect) -> Option<ImageInfo> {
    let config = i.config.unwrap_or_default();
    Some(ImageInfo {
        id: image_id(i.id?),
        repo_tags: i.repo_tags.unwrap_or_default(),
        repo_digests: i.repo_digests.unwrap_or_default(),
        env: config.env.unwrap_or_default(),
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        working_dir: string_opt(config.working_dir),
        user: string_opt(config.user),
        healthcheck: config.healthcheck.and_then(healthcheck_from_bollard),
        exposed_ports: exposed_from(config.exposed_ports),
        labels: labels_from(config.labels),
        stop_signal: string_opt(config.stop_signal),
    })
}

/// A container event, or `None` for events about other object types.
/// A stats answer (taken with `stream=false`, so `precpu_stats` is the sample before) in the figures
/// `docker stats` prints: CPU as the share of the system's CPU time the container used between the two
/// samples, times the CPUs online; memory without the inactive page cache (`inactive_file` on cgroup
/// v2, `total_inactive_file` on v1).
pub(crate) fn stats_from(s: &b::ContainerStatsResponse) -> ContainerStats {
    let usage = |cpu: &Option<b::ContainerCpuStats>| {
        let cpu = cpu.as_ref();
        let total = cpu.and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage).unwrap_or(0);
        (total, cpu.and_then(|c| c.system_cpu_usage).unwrap_or(0))
    };
    let ((total, system), (pre_total, pre_system)) = (usage(&s.cpu_stats), usage(&s.precpu_stats));
    let online = s.cpu_stats.as_ref().and_then(|c| c.online_cpus).filter(|n| *n > 0).unwrap_or_else(|| {
        let per_cpu =
            s.cpu_stats.as_ref().and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.percpu_usage.as_ref());
        per_cpu.map_or(1, |cpus| u32::try_from(cpus.len()).unwrap_or(1).max(1))
    });
    let (cpu_delta, system_delta) = (total.saturating_sub(pre_total), system.saturating_sub(pre_system));
    let cpu_percent = if cpu_delta > 0 && system_delta > 0 {
        cpu_delta as f64 / system_delta as f64 * f64::from(online) * 100.0
    } else {
        0.0
    };
    let memory = s.memory_stats.as_ref();
    let cache = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|stats| stats.get("inactive_file").or_else(|| stats.get("total_inactive_file")).copied());
    let used = memory.and_then(|m| m.usage).unwrap_or(0);
    let (mut rx, mut tx) = (0u64, 0u64);
    for network in s.networks.iter().flat_map(|n| n.values()) {
        rx = rx.saturating_add(network.rx_bytes.unwrap_or(0));
        tx = tx.saturating_add(network.tx_bytes.unwrap_or(0));
    }
    let (mut read, mut write) = (0u64, 0u64);
    let entries = s.blkio_stats.as_ref().and_then(|b| b.io_service_bytes_recursive.as_ref());
    for entry in entries.into_iter().flatten() {
        let value = entry.value.unwrap_or(0);
        match entry.op.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => read = read.saturating_add(value),
            Some("write") => write = write.saturating_add(value),
            _ => {}
        }
    }
    ContainerStats {
        cpu_percent,
        memory_bytes: used.saturating_sub(cache.unwrap_or(0)),
        memory_limit_bytes: memory.and_then(|m| m.limit).unwrap_or(0),
        net_rx_bytes: rx,
        net_tx_bytes: tx,
        block_read_bytes: read,
        block_write_bytes: write,
        pids: s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
    }
}

pub(crate) fn event_from(e: b::EventMessage) -> Option<EngineEvent> {
    if e.typ == Some(b::EventMessageTypeEnum::NETWORK) {
        return network_event_from(e);
    }
    if e.typ != Some(b::EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let actor = e.actor.unwrap_or_default();
    let mut attributes = actor.attributes.unwrap_or_default();
    let name = attributes.remove("name");
    let exit_code = attributes.remove("exitCode").and_then(|c| c.parse().ok());
    let old_name = attributes.remove("oldName").map(|n| strip_slash(&n));
    // Docker mixes a few of its own attributes with the labels; drop the ones that are not labels.
    for key in ["image", "signal", "execID"] {
        attributes.remove(key);
    }
    let raw = e.action.unwrap_or_default();
    let action = match raw.as_str() {
        "create" => EventAction::Create,
        "start" => EventAction::Start,
        "restart" => EventAction::Restart,
        "die" => EventAction::Die,
        "stop" => EventAction::Stop,
        "kill" => EventAction::Kill,
        "destroy" => EventAction::Destroy,
        "oom" => EventAction::Oom,
        "pause" => EventAction::Pause,
        "unpause" => EventAction::Unpause,
        "rename" => EventAction::Rename { old_name },
        "update" => EventAction::Update,
        other => match other.strip_prefix("health_status") {
            Some(rest) => EventAction::HealthStatus(health_from_str(rest.trim_start_matches(':').trim())),
            None => EventAction::Other(other.to_string()),
        },
    };
    Some(EngineEvent {
        id: actor.id.unwrap_or_default(),
        name,
        action,
        exit_code,
        labels: attributes.into_iter().collect(),
        time_nano: e.time_nano.unwrap_or(0),
    })
}

/// A network connect or disconnect, reported as an event of the container it concerns. The
/// engine's network events carry the network's labels, not the container's: `labels` is empty.
fn network_event_from(e: b::EventMessage) -> Option<EngineEvent> {
    let actor = e.actor.unwrap_or_default();
    let attributes = actor.attributes.unwrap_or_default();
    let network = attributes.get("name").cloned().unwrap_or_default();
    let action = match e.action.as_deref() {
        Some("connect") => EventAction::NetworkConnect { network },
        Some("disconnect") => EventAction::NetworkDisconnect { network },
        _ => return None,
    };
    Some(EngineEvent {
        id: attributes.get("container").cloned()?,
        name: None,
        action,
        exit_code: None,
        labels: BTreeMap::new(),
        time_nano: e.time_nano.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn image_ids_always_carry_their_algorithm() {
        let hex = "bfd68785930c8020abc42c193241ec913d2b566cbaeeecdd96c6134ee9ae30dd";
        assert_eq!(super::image_id(hex.into()), format!("sha256:{hex}"));
        assert_eq!(super::image_id(format!("sha256:{hex}")), format!("sha256:{hex}"));
        assert_eq!(super::image_id(String::new()), "");
    }

    use super::*;

    #[test]
    fn stats_read_as_docker_stats_prints_them() {
        let answer: b::ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000u64}, "system_cpu_usage": 20_000_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000u64}, "system_cpu_usage": 10_000_000_000u64},
            "memory_stats": {"usage": 50_000_000u64, "limit": 67_108_864u64, "stats": {"inactive_file": 10_000_000u64}},
            "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 40}, "eth1": {"rx_bytes": 5, "tx_bytes": 1}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "read", "value": 4096},
                {"major": 8, "minor": 0, "op": "Write", "value": 8192},
                {"major": 8, "minor": 0, "op": "total", "value": 12288}]},
            "pids_stats": {"current": 3}
        }))
        .unwrap();
        let stats = stats_from(&answer);
        // 1 s of CPU in 10 s of the system's time, on 2 CPUs: 20% of one CPU.
        assert!((stats.cpu_percent - 20.0).abs() < 1e-9, "{stats:?}");
        assert_eq!(stats.memory_bytes, 40_000_000);
        assert_eq!(stats.memory_limit_bytes, 67_108_864);
        assert_eq!((stats.net_rx_bytes, stats.net_tx_bytes), (105, 41));
        assert_eq!((stats.block_read_bytes, stats.block_write_bytes), (4096, 8192));
        assert_eq!(stats.pids, 3);
        // A first sample (no earlier one) and counters that went back: 0%, never negative or NaN.
        let first: b::ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 5}, "system_cpu_usage": 10},
            "precpu_stats": {"cpu_usage": {"total_usage": 9}, "system_cpu_usage": 10}
        }))
        .unwrap();
        assert_eq!(stats_from(&first).cpu_percent, 0.0);
    }

    #[test]
    fn a_linked_container_is_listed_by_its_own_name() {
        let names = |names: &[&str]| names.iter().map(|name| name.to_string()).collect::<Vec<_>>();
        assert_eq!(own_name(&names(&["/client/database", "/db", "/other/db"])), "db");
        assert_eq!(own_name(&names(&["/db"])), "db");
        assert_eq!(own_name(&[]), "");
    }

    #[test]
    fn bind_strings_parse_as_bind_or_volume() {
        let check = |s: &str, expected: Option<Mount>| assert_eq!(mount_from_bind_string(s), expected, "{s}");
        check(
            "/srv:/data:ro",
            Some(Mount {
                source: MountSource::Bind { host_path: "/srv".into() },
                target: "/data".into(),
                read_only: true,
            }),
        );
        check(
            "vol:/data",
            Some(Mount {
                source: MountSource::Volume { name: Some("vol".into()) },
                target: "/data".into(),
                read_only: false,
            }),
        );
        check("nonsense", None);
    }

    #[test]
    fn exposed_port_keys_round_trip() {
        for key in ["80/tcp", "53/udp", "9/sctp"] {
            assert_eq!(ExposedPort::parse(key).map(|p| p.key()).as_deref(), Some(key));
        }
        assert_eq!(ExposedPort::parse("8080"), Some(ExposedPort { port: 8080, protocol: Protocol::Tcp }));
        assert_eq!(ExposedPort::parse("x/tcp"), None);
    }

    #[test]
    fn health_event_actions_parse() {
        let event = |action: &str| b::EventMessage {
            typ: Some(b::EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_string()),
            actor: Some(b::EventActor {
                id: Some("abc".into()),
                attributes: Some(HashMap::from([
                    ("name".to_string(), "web".to_string()),
                    ("image".to_string(), "img".to_string()),
                    ("io.kedge.key".to_string(), "ns/web".to_string()),
                ])),
            }),
            ..Default::default()
        };
        let e = event_from(event("health_status: healthy")).unwrap();
        assert_eq!(e.action, EventAction::HealthStatus(HealthStatus::Healthy));
        assert_eq!(e.name.as_deref(), Some("web"));
        assert_eq!(e.labels, BTreeMap::from([("io.kedge.key".to_string(), "ns/web".to_string())]));
        assert_eq!(
            event_from(event("exec_start: sh -c x")).unwrap().action,
            EventAction::Other("exec_start: sh -c x".into())
        );
    }
}
