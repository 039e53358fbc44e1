//! Mapping between a `Container` spec and Docker's create config, in both directions.
//!
//! [`container_config`] turns a spec into exactly what it declares, plus kedge's ownership labels:
//! an undeclared field stays unset so the image's own default (CMD, ENV, ENTRYPOINT, WORKDIR, USER,
//! HEALTHCHECK, EXPOSE, LABEL) applies, also after the image changes.
//!
//! [`declared_config`] goes the other way for containers kedge has no spec of (`kedge recreate NAME`):
//! it takes an inspect and the image's own config and keeps only what differs from the image's
//! defaults. Freezing the old image's defaults into the new container is the classic bug of
//! copy-inspect recreators (Portainer issues 8835 and 12072); this function is the guard against it.

use kedge_crds::secret::ResolvedEnv;
use kedge_crds::{
    Container, ContainerSpec, Healthcheck as SpecHealthcheck, MemorySwap, Mount as SpecMount, MountKind,
    NetworkMode, Protocol as SpecProtocol, RestartPolicyName,
};

use crate::docker::labels;
use crate::docker::{
    ContainerConfig, DeviceMapping, ExposedPort, Healthcheck, ImageInfo, Isolation, LogConfig, Mount,
    MountSource, NetworkAttachment, ObservedContainer, PortBinding, ProcessSettings, Protocol, Resources,
    RestartPolicy, RestartPolicyKind,
};

/// The annotation a user (or `kedge rollout restart`-like tooling) sets to ask for a recreate: any
/// new value forces one, as `kubectl.kubernetes.io/restartedAt` does for a Deployment.
pub const RESTARTED_AT_ANNOTATION: &str = "kedge.io/restartedAt";

/// The label recording the [`RESTARTED_AT_ANNOTATION`] value a container was created under, so the
/// planner can tell a new request from one already carried out.
pub const RESTARTED_AT_LABEL: &str = "io.kedge.restarted-at";

/// The create config for `container`: every declared field, nothing undeclared, plus kedge's
/// ownership labels (managed-by, key, generation, spec hash) and the restart marker, if any.
pub fn container_config(container: &Container) -> ContainerConfig {
    container_config_with_secrets(container, &ResolvedEnv::default())
}

/// [`container_config`] with the values of the spec's `secretEnv`, read by the agent just before it
/// plans: each value goes into the env, its fingerprint (never the value) into the spec hash, and
/// the variables' names into the [`labels::SECRET_ENV`] label, so drift never renders them.
pub fn container_config_with_secrets(container: &Container, secrets: &ResolvedEnv) -> ContainerConfig {
    let spec = &container.spec;
    let mut labels = spec.labels.clone();
    labels.extend(labels::ownership(
        &container.key(),
        container.metadata.generation.unwrap_or(0),
        &kedge_crds::spec_hash_with_secrets(spec, &secrets.fingerprints),
    ));
    if !secrets.values.is_empty() {
        let names: Vec<&str> = secrets.values.keys().map(String::as_str).collect();
        labels.insert(labels::SECRET_ENV.to_owned(), names.join(","));
    }
    let mut env: Vec<String> = spec.env.iter().map(|(key, value)| format!("{key}={value}")).collect();
    env.extend(secrets.values.iter().map(|(key, value)| format!("{key}={}", value.expose())));
    if let Some(restarted_at) = container.metadata.annotations.get(RESTARTED_AT_ANNOTATION) {
        labels.insert(RESTARTED_AT_LABEL.to_owned(), restarted_at.clone());
    }
    ContainerConfig {
        name: container.metadata.name.clone(),
        image: spec.image.to_string(),
        env: env.into(),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        labels,
        // The spec has no `expose`: published ports are exposed implicitly, the image's EXPOSE stays.
        exposed_ports: Vec::new(),
        port_bindings: spec.ports.iter().map(port_binding).collect(),
        mounts: spec.mounts.iter().map(mount).collect(),
        restart_policy: spec.restart_policy.as_ref().map(|policy| RestartPolicy {
            kind: restart_policy_kind(policy.name),
            max_retries: policy.maximum_retry_count.map_or(0, i64::from),
        }),
        resources: resources(spec),
        healthcheck: spec.healthcheck.as_ref().map(healthcheck),
        stop_signal: spec.stop_signal.clone(),
        stop_timeout: spec.stop_grace_period.map(|period| period.duration()),
        cap_add: spec.cap_add.clone(),
        cap_drop: spec.cap_drop.clone(),
        privileged: spec.privileged.unwrap_or(false),
        read_only_rootfs: spec.read_only_rootfs.unwrap_or(false),
        isolation: isolation(spec),
        process: process(spec),
        log_config: spec
            .logging
            .as_ref()
            .map(|logging| LogConfig { driver: logging.driver.clone(), options: logging.options.clone() }),
        networks: spec
            .networks
            .iter()
            .map(|network| NetworkAttachment {
                network: network.name.clone(),
                aliases: network.aliases.clone(),
                ipv4_address: network.ipv4_address.map(|ip| ip.to_string()),
            })
            .collect(),
        network_mode: spec.network_mode.as_ref().map(network_mode),
        links: spec
            .links
            .iter()
            .map(|link| format!("{}:{}", link.name, link.alias.as_deref().unwrap_or(&link.name)))
            .collect(),
    }
}

/// The spec's `pidMode`, `ipcMode`, `devices`, `securityOpt` and `sysctls` for the engine. `pidMode:
/// private` is Docker's default, which the engine knows only as no mode at all. Devices were
/// validated; one that does not parse is left out rather than guessed.
fn isolation(spec: &ContainerSpec) -> Isolation {
    Isolation {
        pid_mode: spec.pid_mode.clone().filter(|mode| mode != "private"),
        ipc_mode: spec.ipc_mode.clone(),
        devices: spec
            .devices
            .iter()
            .filter_map(|device| kedge_crds::isolation::parse_device(device).ok())
            .map(|device| DeviceMapping {
                host_path: device.host_path,
                container_path: device.container_path,
                permissions: device.permissions,
            })
            .collect(),
        security_opt: spec.security_opt.clone(),
        sysctls: spec.sysctls.clone(),
    }
}

/// The spec's `init`, `shmSize`, `extraHosts`, `ulimits`, `dns*`, `tty` and `stdinOpen` for the engine (ulimits sorted by name,
/// as inspect is read).
fn process(spec: &ContainerSpec) -> ProcessSettings {
    ProcessSettings {
        init: spec.init.unwrap_or(false),
        shm_size: spec.shm_size.map(|size| saturating_i64(size.bytes())),
        extra_hosts: spec.extra_hosts.clone(),
        ulimits: spec.ulimits.iter().map(|(name, limit)| (name.clone(), limit.soft, limit.hard)).collect(),
        dns: spec.dns.clone(),
        dns_search: spec.dns_search.clone(),
        dns_options: spec.dns_options.clone(),
        tty: spec.tty.unwrap_or(false),
        open_stdin: spec.stdin_open.unwrap_or(false),
    }
}

/// Docker's `NetworkMode` for a spec's: the spec's names are the containers' names.
pub(crate) fn network_mode(mode: &NetworkMode) -> String {
    mode.to_string()
}

/// One of inspect's `HostConfig.Links`, `/TARGET:/THIS/ALIAS`, as `(TARGET, ALIAS)`; `None` when it
/// has another shape.
pub(crate) fn parse_observed_link(link: &str) -> Option<(String, String)> {
    let (target, path) = link.split_once(':')?;
    let alias = path.rsplit('/').next()?;
    Some((target.strip_prefix('/').unwrap_or(target).to_owned(), alias.to_owned()))
}

/// What the user declared when creating `observed`, told apart from `image`'s defaults (the image the
/// container runs): env entries, CMD, ENTRYPOINT, WORKDIR, USER, HEALTHCHECK, STOPSIGNAL, EXPOSE and
/// LABELs equal to the image's are dropped, as are Docker's own additions (the short-ID hostname and
/// network alias, the default bridge) and the bookkeeping labels of a past recreate.
///
/// Creating a container from the result on a *new* image gives it the new image's defaults. The one
/// ambiguity: a value the user declared that equals the old image's default is taken for the
/// default, and so follows the new image. kedge-managed containers do not have it: their spec is known.
pub fn declared_config(observed: &ObservedContainer, image: &ImageInfo) -> ContainerConfig {
    let short_id = short_id(&observed.id);
    let env = observed.env.iter().filter(|entry| !image.env.contains(entry)).cloned().collect();
    // An ENTRYPOINT declared at create resets the image's CMD, so an absent CMD beside a declared
    // entrypoint is what the user asked for, and an empty one too.
    let entrypoint =
        observed.entrypoint.clone().filter(|entrypoint| Some(entrypoint) != image.entrypoint.as_ref());
    let cmd = observed.cmd.clone().filter(|cmd| Some(cmd) != image.cmd.as_ref());
    let labels = observed
        .labels
        .iter()
        .filter(|(key, value)| image.labels.get(*key) != Some(*value) && !is_recreate_bookkeeping(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let published: Vec<ExposedPort> = observed
        .port_bindings
        .iter()
        .map(|binding| ExposedPort { port: binding.container_port, protocol: binding.protocol })
        .collect();
    let exposed_ports = observed
        .exposed_ports
        .iter()
        .filter(|port| !image.exposed_ports.contains(port) && !published.contains(port))
        .copied()
        .collect();
    ContainerConfig {
        name: observed.name.clone(),
        image: observed.image.clone(),
        env,
        cmd,
        entrypoint,
        working_dir: observed.working_dir.clone().filter(|dir| Some(dir) != image.working_dir.as_ref()),
        user: observed.user.clone().filter(|user| Some(user) != image.user.as_ref()),
        // A container in another's network namespace has that one's hostname, and may not set one.
        hostname: observed.hostname.clone().filter(|hostname| {
            !short_id.is_empty() && *hostname != short_id && !joins_another_namespace(observed)
        }),
        labels,
        exposed_ports,
        port_bindings: observed.port_bindings.clone(),
        mounts: observed.mounts.clone(),
        restart_policy: observed
            .restart_policy
            .filter(|policy| *policy != RestartPolicy { kind: RestartPolicyKind::No, max_retries: 0 }),
        resources: observed.resources.clone(),
        healthcheck: observed.healthcheck.clone().filter(|check| Some(check) != image.healthcheck.as_ref()),
        stop_signal: observed.stop_signal.clone().filter(|signal| Some(signal) != image.stop_signal.as_ref()),
        stop_timeout: observed.stop_timeout,
        cap_add: observed.cap_add.clone(),
        cap_drop: observed.cap_drop.clone(),
        privileged: observed.privileged,
        read_only_rootfs: observed.read_only_rootfs,
        // Docker's default IPC mode is reported as if declared; carrying it over is harmless.
        isolation: observed.isolation.clone(),
        // The engine's default `/dev/shm` size is reported as if declared; carrying it over is harmless.
        process: observed.process.clone(),
        log_config: observed.log_config.clone(),
        networks: declared_networks(observed),
        // Another container's namespace, by the ID the engine resolved at create: the same
        // namespace, while that container lives.
        network_mode: observed.network_mode.clone().filter(|mode| mode.starts_with("container:")),
        links: observed
            .links
            .iter()
            .filter_map(|link| parse_observed_link(link))
            .map(|(target, alias)| format!("{target}:{alias}"))
            .collect(),
    }
}

fn joins_another_namespace(observed: &ObservedContainer) -> bool {
    observed.network_mode.as_deref().is_some_and(|mode| mode.starts_with("container:"))
}

/// Docker's short container ID (the default hostname and, on user-defined networks, an alias).
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Docker's restart policy kind for a spec's policy name.
pub(crate) fn restart_policy_kind(name: RestartPolicyName) -> RestartPolicyKind {
    match name {
        RestartPolicyName::No => RestartPolicyKind::No,
        RestartPolicyName::Always => RestartPolicyKind::Always,
        RestartPolicyName::UnlessStopped => RestartPolicyKind::UnlessStopped,
        RestartPolicyName::OnFailure => RestartPolicyKind::OnFailure,
    }
}

/// The declared limits in Docker's units. Only declared limits are set.
pub(crate) fn resources(spec: &ContainerSpec) -> Resources {
    let Some(declared) = &spec.resources else { return Resources::default() };
    Resources {
        nano_cpus: declared.cpus.map(|cpus| saturating_i64(cpus.nanos())),
        cpu_shares: declared.cpu_shares.map(saturating_i64),
        cpu_period: declared.cpu_period.map(saturating_i64),
        cpu_quota: declared.cpu_quota,
        cpuset_cpus: declared.cpuset_cpus.clone(),
        cpuset_mems: declared.cpuset_mems.clone(),
        memory: declared.memory.map(|size| saturating_i64(size.bytes())),
        memory_reservation: declared.memory_reservation.map(|size| saturating_i64(size.bytes())),
        memory_swap: declared.memory_swap.map(|swap| match swap {
            MemorySwap::Unlimited => -1,
            MemorySwap::Limit(size) => saturating_i64(size.bytes()),
        }),
        blkio_weight: declared.blkio_weight,
        pids_limit: declared.pids_limit,
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn port_binding(port: &kedge_crds::PortMapping) -> PortBinding {
    PortBinding {
        container_port: port.container_port,
        protocol: match port.protocol {
            SpecProtocol::Tcp => Protocol::Tcp,
            SpecProtocol::Udp => Protocol::Udp,
            SpecProtocol::Sctp => Protocol::Sctp,
        },
        host_ip: port.host_ip.map(|ip| ip.to_string()),
        host_port: port.host_port,
    }
}

fn mount(mount: &SpecMount) -> Mount {
    let source = match mount.kind {
        MountKind::Bind => MountSource::Bind { host_path: mount.source.clone().unwrap_or_default() },
        MountKind::Volume => MountSource::Volume { name: mount.source.clone() },
        MountKind::Tmpfs => MountSource::Tmpfs {
            size_bytes: mount.tmpfs_size.map(|size| saturating_i64(size.bytes())),
            mode: mount.tmpfs_mode.as_deref().and_then(kedge_crds::container::tmpfs_mode_bits).map(i64::from),
        },
    };
    Mount { source, target: mount.target.clone(), read_only: mount.read_only.unwrap_or(false) }
}

/// Every declared field, `startInterval` included: an engine older than API 1.44 would drop it
/// silently, so the planner leaves it out there and the agent reports it (`ImageFacts`).
fn healthcheck(check: &SpecHealthcheck) -> Healthcheck {
    Healthcheck {
        test: check.test.clone(),
        interval: check.interval.map(|d| d.duration()),
        timeout: check.timeout.map(|d| d.duration()),
        retries: check.retries.map(i64::from),
        start_period: check.start_period.map(|d| d.duration()),
        start_interval: check.start_interval.map(|d| d.duration()),
    }
}

/// The labels a safe recreate puts on the container it creates: they describe that recreate, not
/// the user's intent, so a later recreate must not copy them.
fn is_recreate_bookkeeping(key: &str) -> bool {
    [
        labels::RECREATE_ROLE,
        labels::RECREATE_ID,
        labels::RECREATE_OLD_ID,
        labels::RECREATE_OLD_RUNNING,
        labels::CARRIED_VOLUMES,
    ]
    .contains(&key)
}

/// The observed networks as a declaration: the network of `NetworkMode` first (it is the one joined
/// at create), the hostname (short-ID) alias Docker adds on user-defined networks left out, and
/// nothing declared for a container on the default bridge alone.
///
/// The default bridge alone is what a container gets without a network. Docker answers `NetworkMode`
/// `default` for it up to API 1.43 but `bridge` from Engine 25 on (API 1.44), whether or not it was
/// asked for, so both read as "no network declared"; it carries no aliases or static address, so
/// nothing is lost. Beside other networks it is kept, so a recreate stays on all of them.
fn declared_networks(observed: &ObservedContainer) -> Vec<NetworkAttachment> {
    let short_id = short_id(&observed.id);
    let mode = match observed.network_mode.as_deref() {
        None | Some("default") => "bridge",
        Some(mode) => mode,
    };
    if mode == "bridge" && observed.networks.iter().all(|network| network.network == "bridge") {
        return Vec::new();
    }
    let mut networks: Vec<NetworkAttachment> = observed
        .networks
        .iter()
        .map(|network| NetworkAttachment {
            network: network.network.clone(),
            aliases: network
                .aliases
                .iter()
                .filter(|alias| {
                    alias.as_str() != short_id
                        && **alias != observed.name
                        && Some(alias.as_str()) != observed.hostname.as_deref()
                })
                .cloned()
                .collect(),
            ipv4_address: network.ipv4_address.clone(),
        })
        .collect();
    if let Some(first) = networks.iter().position(|network| network.network == mode) {
        let network = networks.remove(first);
        networks.insert(0, network);
    }
    networks
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use kedge_crds::{Container, ContainerSpec};

    use super::*;
    use crate::docker::{ObservedNetwork, PortBinding};

    const ID: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    fn old_image() -> ImageInfo {
        ImageInfo {
            id: "sha256:old".into(),
            env: strings(&["PATH=/usr/bin", "VERSION=1"]),
            cmd: Some(strings(&["/bin/sleep", "3600"])),
            entrypoint: Some(strings(&["/entry.sh"])),
            working_dir: Some("/app".into()),
            user: Some("app".into()),
            healthcheck: Some(Healthcheck { test: strings(&["CMD", "true"]), ..Healthcheck::default() }),
            exposed_ports: vec![ExposedPort { port: 80, protocol: Protocol::Tcp }],
            labels: BTreeMap::from([("org.opencontainers.image.version".into(), "1".into())]),
            stop_signal: Some("SIGQUIT".into()),
            ..ImageInfo::default()
        }
    }

    /// A container created with `docker run` on the old image, image defaults merged by the engine.
    fn inspected() -> ObservedContainer {
        ObservedContainer {
            id: ID.into(),
            name: "legacy".into(),
            image: "kedge-test/app:v1".into(),
            image_id: "sha256:old".into(),
            env: strings(&["PATH=/usr/bin", "VERSION=1", "MODE=prod"]).into(),
            cmd: Some(strings(&["/bin/sleep", "3600"])),
            entrypoint: Some(strings(&["/entry.sh"])),
            working_dir: Some("/app".into()),
            user: Some("app".into()),
            hostname: Some(ID[..12].into()),
            labels: BTreeMap::from([
                ("org.opencontainers.image.version".into(), "1".into()),
                ("team".into(), "a".into()),
                (labels::RECREATE_ROLE.into(), labels::ROLE_NEW.into()),
            ]),
            exposed_ports: vec![
                ExposedPort { port: 80, protocol: Protocol::Tcp },
                ExposedPort { port: 8080, protocol: Protocol::Tcp },
                ExposedPort { port: 9000, protocol: Protocol::Udp },
            ],
            port_bindings: vec![PortBinding {
                container_port: 8080,
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: Some(18080),
            }],
            healthcheck: Some(Healthcheck { test: strings(&["CMD", "true"]), ..Healthcheck::default() }),
            stop_signal: Some("SIGQUIT".into()),
            restart_policy: Some(RestartPolicy { kind: RestartPolicyKind::No, max_retries: 0 }),
            network_mode: Some("back".into()),
            networks: vec![
                ObservedNetwork {
                    network: "a-front".into(),
                    aliases: strings(&["web", &ID[..12]]),
                    ..Default::default()
                },
                ObservedNetwork {
                    network: "back".into(),
                    aliases: strings(&[&ID[..12]]),
                    ipv4_address: Some("10.1.0.5".into()),
                    ..Default::default()
                },
            ],
            ..ObservedContainer::default()
        }
    }

    #[test]
    fn declared_config_leaves_the_image_defaults_out() {
        let declared = declared_config(&inspected(), &old_image());
        let expected = ContainerConfig {
            name: "legacy".into(),
            image: "kedge-test/app:v1".into(),
            env: strings(&["MODE=prod"]).into(),
            labels: BTreeMap::from([("team".into(), "a".into())]),
            // 80 is the image's, 8080 is published: only the explicit `--expose 9000/udp` stays.
            exposed_ports: vec![ExposedPort { port: 9000, protocol: Protocol::Udp }],
            port_bindings: inspected().port_bindings,
            networks: vec![
                NetworkAttachment {
                    network: "back".into(),
                    aliases: vec![],
                    ipv4_address: Some("10.1.0.5".into()),
                },
                NetworkAttachment {
                    network: "a-front".into(),
                    aliases: strings(&["web"]),
                    ipv4_address: None,
                },
            ],
            ..ContainerConfig::default()
        };
        assert_eq!(declared, expected);
    }

    #[test]
    fn declared_config_keeps_what_differs_from_the_image() {
        let mut overridden = inspected();
        overridden.env = strings(&["PATH=/usr/bin", "VERSION=9"]).into();
        overridden.cmd = Some(strings(&["serve"]));
        overridden.entrypoint = Some(strings(&["/other"]));
        overridden.working_dir = Some("/srv".into());
        overridden.user = Some("root".into());
        overridden.hostname = Some("legacy-host".into());
        overridden.healthcheck = Some(Healthcheck { test: strings(&["NONE"]), ..Healthcheck::default() });
        overridden.stop_signal = Some("SIGTERM".into());
        overridden.labels.insert("org.opencontainers.image.version".into(), "override".into());
        overridden.restart_policy = Some(RestartPolicy { kind: RestartPolicyKind::Always, max_retries: 0 });
        overridden.stop_timeout = Some(Duration::from_secs(3));
        let declared = declared_config(&overridden, &old_image());
        assert_eq!(declared.env, strings(&["VERSION=9"]));
        assert_eq!(declared.cmd, Some(strings(&["serve"])));
        assert_eq!(declared.entrypoint, Some(strings(&["/other"])));
        assert_eq!(declared.working_dir.as_deref(), Some("/srv"));
        assert_eq!(declared.user.as_deref(), Some("root"));
        assert_eq!(declared.hostname.as_deref(), Some("legacy-host"));
        assert_eq!(declared.healthcheck.map(|check| check.test), Some(strings(&["NONE"])));
        assert_eq!(declared.stop_signal.as_deref(), Some("SIGTERM"));
        assert_eq!(
            declared.labels.get("org.opencontainers.image.version").map(String::as_str),
            Some("override")
        );
        assert_eq!(declared.restart_policy.map(|policy| policy.kind), Some(RestartPolicyKind::Always));
        assert_eq!(declared.stop_timeout, Some(Duration::from_secs(3)));
    }

    #[test]
    fn declared_config_on_the_default_bridge_declares_no_network() {
        // Engine 20.10 (API 1.41) answers `default`, Engine 25 and later (API 1.44) `bridge`.
        for mode in ["default", "bridge"] {
            let mut on_bridge = inspected();
            on_bridge.network_mode = Some(mode.into());
            on_bridge.networks = vec![ObservedNetwork { network: "bridge".into(), ..Default::default() }];
            assert!(declared_config(&on_bridge, &old_image()).networks.is_empty(), "{mode}");
            // Connected to another network as well: both stay, the bridge joined at create first.
            on_bridge.networks.insert(
                0,
                ObservedNetwork {
                    network: "front".into(),
                    aliases: vec!["api".into()],
                    ..Default::default()
                },
            );
            let networks = declared_config(&on_bridge, &old_image()).networks;
            let names: Vec<&str> = networks.iter().map(|network| network.network.as_str()).collect();
            assert_eq!(names, ["bridge", "front"], "{mode}");
            assert_eq!(networks[1].aliases, ["api"]);
        }
    }

    #[test]
    fn container_config_maps_every_declared_field_and_nothing_else() {
        let spec: ContainerSpec = serde_json::from_str(
            r#"{"image": "kedge-test/app:v1", "entrypoint": ["/bin/sh"], "command": ["-c", "sleep 1d"],
                "env": {"B": "2", "A": "1"}, "workingDir": "/w", "user": "1000:1000", "hostname": "h",
                "labels": {"team": "a"}, "ports": ["127.0.0.1:8080:80/udp", "90"],
                "mounts": ["/srv:/srv:ro", "data:/data", "/anon", {"type": "tmpfs", "target": "/tmp", "tmpfsSize": "16Mi"}],
                "networks": [{"name": "front", "aliases": ["api"]}, {"name": "back", "ipv4Address": "10.1.0.5"}],
                "restartPolicy": "on-failure:3",
                "resources": {"cpus": 0.5, "cpuShares": 512, "cpuPeriod": 100000, "cpuQuota": 50000, "cpusetCpus": "0",
                              "cpusetMems": "0", "memory": "64Mi", "memoryReservation": "32Mi", "memorySwap": -1,
                              "blkioWeight": 300, "pidsLimit": 100},
                "healthcheck": {"test": "true", "interval": "5s", "timeout": "2s", "retries": 3, "startPeriod": "1s",
                                "startInterval": "500ms"},
                "stopSignal": "SIGINT", "stopGracePeriod": "30s", "capAdd": ["NET_ADMIN"], "capDrop": ["ALL"],
                "privileged": true, "readOnlyRootfs": true, "logging": {"driver": "local", "options": {"max-size": "10m"}}}"#,
        )
        .unwrap();
        let mut container = Container::new("web", spec.clone());
        container.metadata.namespace = "shop".into();
        container.metadata.generation = Some(4);
        let config = container_config(&container);
        assert_eq!(config.name, "web");
        assert_eq!(config.image, "kedge-test/app:v1");
        assert_eq!(config.env, strings(&["A=1", "B=2"]));
        assert_eq!(config.entrypoint, Some(strings(&["/bin/sh"])));
        assert_eq!(config.cmd, Some(strings(&["-c", "sleep 1d"])));
        assert_eq!(
            (config.working_dir.as_deref(), config.user.as_deref(), config.hostname.as_deref()),
            (Some("/w"), Some("1000:1000"), Some("h"))
        );
        assert_eq!(config.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(labels::key(&config.labels), Some("shop/web"));
        assert_eq!(labels::generation(&config.labels), Some(4));
        assert_eq!(labels::spec_hash(&config.labels), Some(kedge_crds::spec_hash(&spec).as_str()));
        assert_eq!(
            config.port_bindings,
            vec![
                PortBinding {
                    container_port: 80,
                    protocol: Protocol::Udp,
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(8080)
                },
                PortBinding { container_port: 90, protocol: Protocol::Tcp, host_ip: None, host_port: None },
            ]
        );
        assert_eq!(
            config.mounts,
            vec![
                Mount {
                    source: MountSource::Bind { host_path: "/srv".into() },
                    target: "/srv".into(),
                    read_only: true
                },
                Mount {
                    source: MountSource::Volume { name: Some("data".into()) },
                    target: "/data".into(),
                    read_only: false
                },
                Mount {
                    source: MountSource::Volume { name: None },
                    target: "/anon".into(),
                    read_only: false
                },
                Mount {
                    source: MountSource::Tmpfs { size_bytes: Some(16 << 20), mode: None },
                    target: "/tmp".into(),
                    read_only: false
                },
            ]
        );
        assert_eq!(
            config.networks,
            vec![
                NetworkAttachment { network: "front".into(), aliases: strings(&["api"]), ipv4_address: None },
                NetworkAttachment {
                    network: "back".into(),
                    aliases: vec![],
                    ipv4_address: Some("10.1.0.5".into())
                },
            ]
        );
        assert_eq!(
            config.restart_policy,
            Some(RestartPolicy { kind: RestartPolicyKind::OnFailure, max_retries: 3 })
        );
        assert_eq!(
            config.resources,
            Resources {
                nano_cpus: Some(500_000_000),
                cpu_shares: Some(512),
                cpu_period: Some(100_000),
                cpu_quota: Some(50_000),
                cpuset_cpus: Some("0".into()),
                cpuset_mems: Some("0".into()),
                memory: Some(64 << 20),
                memory_reservation: Some(32 << 20),
                memory_swap: Some(-1),
                blkio_weight: Some(300),
                pids_limit: Some(100),
            }
        );
        assert_eq!(
            config.healthcheck,
            Some(Healthcheck {
                test: strings(&["CMD-SHELL", "true"]),
                interval: Some(Duration::from_secs(5)),
                timeout: Some(Duration::from_secs(2)),
                retries: Some(3),
                start_period: Some(Duration::from_secs(1)),
                start_interval: Some(Duration::from_millis(500)),
            })
        );
        assert_eq!(config.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(config.stop_timeout, Some(Duration::from_secs(30)));
        assert_eq!((config.cap_add, config.cap_drop), (strings(&["NET_ADMIN"]), strings(&["ALL"])));
        assert!(config.privileged && config.read_only_rootfs);
        assert_eq!(config.log_config.map(|log| (log.driver, log.options.len())), Some(("local".into(), 1)));
    }

    #[test]
    fn network_mode_and_links_map_to_dockers_forms_and_back() {
        let spec: ContainerSpec = serde_json::from_str(
            r#"{"image": "kedge-test/app:v1", "networkMode": "service:db", "links": []}"#,
        )
        .unwrap();
        let config = container_config(&Container::new("web", spec));
        assert_eq!((config.network_mode.as_deref(), config.networks.len()), (Some("container:db"), 0));
        let spec: ContainerSpec = serde_json::from_str(
            r#"{"image": "kedge-test/app:v1", "links": ["db", {"name": "cache", "alias": "c"}]}"#,
        )
        .unwrap();
        let config = container_config(&Container::new("web", spec));
        assert_eq!((config.network_mode, config.links), (None, strings(&["db:db", "cache:c"])));
        // Inspect's form names the target as it is called now, and the alias under this container.
        assert_eq!(parse_observed_link("/db:/web/db"), Some(("db".into(), "db".into())));
        assert_eq!(
            parse_observed_link("/db-kedge-old-1:/web/database"),
            Some(("db-kedge-old-1".into(), "database".into()))
        );
        assert_eq!(parse_observed_link("nonsense"), None);
        // `kedge recreate` of a joiner keeps the namespace and the links it was created with.
        let mut joiner = inspected();
        joiner.network_mode = Some(format!("container:{ID}"));
        joiner.networks = vec![];
        joiner.links = strings(&["/db:/legacy/database"]);
        joiner.hostname = Some("d00d0000d00d".into());
        let declared = declared_config(&joiner, &old_image());
        assert_eq!(declared.hostname, None, "the provider's hostname is not the joiner's to declare");
        assert_eq!(declared.network_mode, Some(format!("container:{ID}")));
        assert_eq!((declared.networks.len(), declared.links), (0, strings(&["db:database"])));
    }

    #[test]
    fn container_config_leaves_undeclared_fields_to_the_image() {
        let container = Container::new(
            "bare",
            ContainerSpec { image: "kedge-test/app:v1".parse().unwrap(), ..ContainerSpec::default() },
        );
        let config = container_config(&container);
        let ownership_only = labels::ownership("default/bare", 0, &kedge_crds::spec_hash(&container.spec));
        assert_eq!(
            config,
            ContainerConfig {
                name: "bare".into(),
                image: "kedge-test/app:v1".into(),
                labels: ownership_only,
                ..ContainerConfig::default()
            }
        );
    }
}
