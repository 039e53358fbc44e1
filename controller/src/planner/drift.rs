//! Field-by-field comparison of a declared config with an inspect, engine normalizations removed.
//!
//! Inspect reports what the engine made of a create call, not what was sent: the image's Env, Cmd,
//! Entrypoint, WorkingDir, User, Healthcheck and Labels merged in; MemorySwap set to twice Memory; the
//! container's hostname (by default its short ID) added to its aliases on user-defined networks; the default bridge joined when
//! no network was named; `0.0.0.0` and an empty host IP for "all addresses". Every comparison here
//! undoes those, so that a container freshly created from a spec shows no drift at all: that is what
//! lets an agent adopt a hundred running containers without recreating one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kedge_crds::FieldDiff;

use crate::docker::labels;
use crate::docker::{
    ContainerConfig, DeviceMapping, Healthcheck, ImageInfo, Isolation, Mount, MountSource, NetworkAttachment,
    ObservedContainer, PortBinding, ProcessSettings, Resources, RestartPolicy, RestartPolicyKind,
};
use crate::mapping::{parse_observed_link, short_id, RESTARTED_AT_LABEL};

/// How a difference can be repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repair {
    /// Only a new container has it (create-time settings).
    Recreate,
    /// Docker's update API changes it on the running container.
    UpdateResources,
    /// Network connect and disconnect change it on the running container.
    Network,
}

/// One difference and how to repair it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) diff: FieldDiff,
    pub(crate) repair: Repair,
}

/// Everything that differs, with the network changes that repair the network findings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Drift {
    pub(crate) findings: Vec<Finding>,
    /// Networks to leave (names), first in the repair.
    pub(crate) disconnect: Vec<String>,
    /// Networks to join, after the disconnects (an attachment whose aliases or address changed is
    /// in both lists).
    pub(crate) connect: Vec<NetworkAttachment>,
}

impl Drift {
    pub(crate) fn needs(&self, repair: Repair) -> bool {
        self.findings.iter().any(|finding| finding.repair == repair)
    }
}

/// Compares `desired` (from the spec) with `observed`. `image` is the config of the image the
/// container runs: with it, undeclared fields must equal the image's defaults; without it, only
/// declared fields are checked.
pub(crate) fn compare(
    desired: &ContainerConfig,
    observed: &ObservedContainer,
    image: Option<&ImageInfo>,
) -> Drift {
    let mut drift = Drift::default();
    let mut recreate = |field: &str, want: Option<String>, have: Option<String>| {
        drift.findings.push(Finding {
            diff: FieldDiff { field: field.to_owned(), desired: want, actual: have },
            repair: Repair::Recreate,
        })
    };

    if !same_image_reference(&desired.image, &observed.image) {
        recreate("spec.image", Some(desired.image.clone()), Some(observed.image.clone()));
    }

    let (want_entrypoint, want_cmd) = effective_entrypoint_and_cmd(desired, image);
    if let Some(want) = want_entrypoint {
        let have = non_empty(observed.entrypoint.clone());
        if want != have {
            recreate("spec.entrypoint", want.as_deref().map(render_list), have.as_deref().map(render_list));
        }
    }
    if let Some(want) = want_cmd {
        let have = non_empty(observed.cmd.clone());
        if want != have {
            recreate("spec.command", want.as_deref().map(render_list), have.as_deref().map(render_list));
        }
    }

    let want_env = env_map(&desired.env);
    let have_env = env_map(&observed.env);
    let image_env = image.map(|image| env_map(&image.env));
    for (key, want) in &want_env {
        if have_env.get(key) != Some(want) {
            recreate(&format!("spec.env.{key}"), Some(want.clone()), have_env.get(key).cloned());
        }
    }
    if let Some(image_env) = &image_env {
        for (key, have) in &have_env {
            if !want_env.contains_key(key) && image_env.get(key) != Some(have) {
                recreate(&format!("spec.env.{key}"), image_env.get(key).cloned(), Some(have.clone()));
            }
        }
    }

    let defaulted = |declared: &Option<String>, default: Option<&Option<String>>| match (declared, default) {
        (Some(value), _) => Some(Some(value.clone())),
        (None, Some(default)) => Some(default.clone()),
        (None, None) => None,
    };
    let image_working_dir = image.map(|image| &image.working_dir);
    if let Some(want) = defaulted(&desired.working_dir, image_working_dir) {
        if want != observed.working_dir {
            recreate("spec.workingDir", want, observed.working_dir.clone());
        }
    }
    if let Some(want) = defaulted(&desired.user, image.map(|image| &image.user)) {
        if want != observed.user {
            recreate("spec.user", want, observed.user.clone());
        }
    }
    if let Some(want) = &desired.hostname {
        if Some(want) != observed.hostname.as_ref() {
            recreate("spec.hostname", Some(want.clone()), observed.hostname.clone());
        }
    }

    compare_labels(desired, observed, image, &mut recreate);

    let want_ports = normalized_ports(&desired.port_bindings);
    let have_ports = normalized_ports(&observed.port_bindings);
    if want_ports != have_ports {
        recreate("spec.ports", Some(render_ports(&want_ports)), Some(render_ports(&have_ports)));
    }

    compare_mounts(&desired.mounts, &observed.mounts, &mut recreate);

    let want_restart = normalized_restart_policy(desired.restart_policy);
    let have_restart = normalized_restart_policy(observed.restart_policy);
    if want_restart != have_restart {
        recreate(
            "spec.restartPolicy",
            Some(render_restart_policy(want_restart)),
            Some(render_restart_policy(have_restart)),
        );
    }

    let want_health = effective_healthcheck(desired.healthcheck.as_ref(), image);
    if let Some(want) = want_health {
        let have = observed.healthcheck.clone();
        if want != have {
            recreate(
                "spec.healthcheck",
                want.as_ref().map(render_healthcheck),
                have.as_ref().map(render_healthcheck),
            );
        }
    }

    match (&desired.stop_signal, image) {
        (Some(want), _) if Some(want) != observed.stop_signal.as_ref() => {
            recreate("spec.stopSignal", Some(want.clone()), observed.stop_signal.clone())
        }
        // The engine may or may not copy the image's STOPSIGNAL into the container's config.
        (None, Some(image))
            if observed.stop_signal.is_some() && observed.stop_signal != image.stop_signal =>
        {
            recreate("spec.stopSignal", image.stop_signal.clone(), observed.stop_signal.clone())
        }
        _ => {}
    }
    let want_timeout = desired.stop_timeout.map(|timeout| timeout.as_secs());
    let have_timeout = observed.stop_timeout.map(|timeout| timeout.as_secs());
    if want_timeout != have_timeout {
        recreate("spec.stopGracePeriod", want_timeout.map(render_secs), have_timeout.map(render_secs));
    }

    for (field, want, have) in [
        ("spec.capAdd", &desired.cap_add, &observed.cap_add),
        ("spec.capDrop", &desired.cap_drop, &observed.cap_drop),
    ] {
        let (want, have) = (capabilities(want), capabilities(have));
        if want != have {
            recreate(field, Some(render_set(&want)), Some(render_set(&have)));
        }
    }
    if desired.privileged != observed.privileged {
        recreate(
            "spec.privileged",
            Some(desired.privileged.to_string()),
            Some(observed.privileged.to_string()),
        );
    }
    if desired.read_only_rootfs != observed.read_only_rootfs {
        recreate(
            "spec.readOnlyRootfs",
            Some(desired.read_only_rootfs.to_string()),
            Some(observed.read_only_rootfs.to_string()),
        );
    }
    // Undeclared logging is the daemon's default, which inspect reports as if declared.
    if let Some(want) = &desired.log_config {
        let have = observed.log_config.as_ref();
        if Some(want) != have {
            let render = |log: &crate::docker::LogConfig| format!("{} {:?}", log.driver, log.options);
            recreate("spec.logging", Some(render(want)), have.map(render));
        }
    }

    compare_isolation(&desired.isolation, &observed.isolation, &mut drift.findings);
    compare_process(&desired.process, &observed.process, &mut drift.findings);
    compare_resources(&desired.resources, &observed.resources, &mut drift.findings);
    let want_mode = ModeClass::of(desired.network_mode.as_deref());
    let have_mode = ModeClass::of(observed.network_mode.as_deref());
    if want_mode != have_mode {
        // Only a new container changes its network mode; a `container:` mode of another provider
        // is the provider rules' business (see `providers`), since it needs the provider's ID.
        drift.findings.push(Finding {
            diff: FieldDiff {
                field: "spec.networkMode".to_owned(),
                desired: Some(desired.network_mode.clone().unwrap_or_else(|| "bridge".to_owned())),
                actual: observed.network_mode.clone(),
            },
            repair: Repair::Recreate,
        });
    } else if want_mode == ModeClass::Attached {
        compare_networks(desired, observed, &mut drift);
    }
    let want_links: BTreeSet<(String, String)> = desired
        .links
        .iter()
        .filter_map(|link| link.split_once(':'))
        .map(|(t, a)| (t.to_owned(), a.to_owned()))
        .collect();
    let have_links: BTreeSet<(String, String)> =
        observed.links.iter().filter_map(|link| parse_observed_link(link)).collect();
    if want_links != have_links {
        let render = |links: &BTreeSet<(String, String)>| {
            links.iter().map(|(target, alias)| format!("{target}:{alias}")).collect::<Vec<_>>().join(", ")
        };
        drift.findings.push(Finding {
            diff: FieldDiff {
                field: "spec.links".to_owned(),
                desired: Some(render(&want_links)),
                actual: Some(render(&have_links)),
            },
            repair: Repair::Recreate,
        });
    }
    drift
}

/// A network mode, as far as it can be compared without knowing other containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModeClass {
    /// On networks: Docker's default bridge (`default`, `bridge`) or user-defined networks, whose
    /// membership the network comparison checks.
    Attached,
    Host,
    None,
    /// Another container's namespace, whichever.
    Container,
}

impl ModeClass {
    fn of(mode: Option<&str>) -> ModeClass {
        match mode {
            Some("host") => ModeClass::Host,
            Some("none") => ModeClass::None,
            Some(mode) if mode.starts_with("container:") => ModeClass::Container,
            _ => ModeClass::Attached,
        }
    }
}

/// The resources an in-place update sends: the declared ones, plus Docker's create-time default for
/// MemorySwap (twice the memory) when memory is declared and swap is not, because the engine refuses
/// a memory limit above the swap limit it set at create.
pub(crate) fn update_resources(desired: &Resources) -> Resources {
    let mut resources = desired.clone();
    if let (Some(memory), None) = (desired.memory, desired.memory_swap) {
        resources.memory_swap = Some(memory.saturating_mul(2));
    }
    resources
}

/// An ENTRYPOINT or CMD: `None` is none (the engine reports an empty one as absent too).
type Argv = Option<Vec<String>>;

/// Entrypoint and CMD the container must have, `None` when it cannot be told (undeclared, image
/// unknown). An ENTRYPOINT given at create drops the image's CMD; an empty CMD is the image's.
fn effective_entrypoint_and_cmd(
    desired: &ContainerConfig,
    image: Option<&ImageInfo>,
) -> (Option<Argv>, Option<Argv>) {
    let declared_entrypoint = non_empty(desired.entrypoint.clone());
    let declared_cmd = non_empty(desired.cmd.clone());
    let entrypoint = match (&desired.entrypoint, image) {
        (Some(_), _) => Some(declared_entrypoint.clone()),
        (None, Some(image)) => Some(non_empty(image.entrypoint.clone())),
        (None, None) => None,
    };
    let cmd = match (&declared_cmd, &declared_entrypoint, image) {
        (Some(cmd), _, _) => Some(Some(cmd.clone())),
        (None, Some(_), _) => Some(None),
        (None, None, Some(image)) => Some(non_empty(image.cmd.clone())),
        (None, None, None) => None,
    };
    (entrypoint, cmd)
}

/// The healthcheck the container must have: declared fields, the image's for the others (the engine
/// merges them field by field). `None` when it cannot be told.
fn effective_healthcheck(
    declared: Option<&Healthcheck>,
    image: Option<&ImageInfo>,
) -> Option<Option<Healthcheck>> {
    let image_check = image.map(|image| image.healthcheck.clone());
    match (declared, image_check) {
        (None, None) => None,
        (None, Some(image_check)) => Some(image_check),
        (Some(declared), None) => Some(Some(declared.clone())),
        (Some(declared), Some(image_check)) => {
            let base = image_check.unwrap_or_default();
            Some(Some(Healthcheck {
                test: if declared.test.is_empty() { base.test } else { declared.test.clone() },
                interval: declared.interval.or(base.interval),
                timeout: declared.timeout.or(base.timeout),
                retries: declared.retries.or(base.retries),
                start_period: declared.start_period.or(base.start_period),
                start_interval: declared.start_interval.or(base.start_interval),
            }))
        }
    }
}

/// The prefix of every label kedge puts on containers itself.
const KEDGE_LABEL_PREFIX: &str = "io.kedge.";

/// Labels kedge puts on containers itself; the spec does not declare them.
fn is_kedge_label(key: &str) -> bool {
    [
        labels::MANAGED_BY,
        labels::KEY,
        labels::GENERATION,
        labels::SPEC_HASH,
        labels::RECREATE_ROLE,
        labels::RECREATE_ID,
        labels::RECREATE_OLD_ID,
        labels::RECREATE_OLD_RUNNING,
        labels::CARRIED_VOLUMES,
        labels::HOST,
        labels::STORE,
        labels::DELETION_POLICY,
        RESTARTED_AT_LABEL,
    ]
    .contains(&key)
}

fn compare_labels(
    desired: &ContainerConfig,
    observed: &ObservedContainer,
    image: Option<&ImageInfo>,
    recreate: &mut impl FnMut(&str, Option<String>, Option<String>),
) {
    for (key, want) in desired.labels.iter().filter(|(key, _)| !is_kedge_label(key)) {
        let have = observed.labels.get(key);
        if have != Some(want) {
            recreate(&format!("spec.labels.{key}"), Some(want.clone()), have.cloned());
        }
    }
    let Some(image) = image else { return };
    // kedge's own namespace: labels the agent stamps (host, store, ...) are not declarations, and a
    // label kedge adds in a later version must not make every existing container drift.
    let reserved = |key: &str| key.starts_with(KEDGE_LABEL_PREFIX);
    for (key, have) in observed.labels.iter().filter(|(key, _)| !is_kedge_label(key) && !reserved(key)) {
        if !desired.labels.contains_key(key) && image.labels.get(key) != Some(have) {
            recreate(&format!("spec.labels.{key}"), image.labels.get(key).cloned(), Some(have.clone()));
        }
    }
}

fn compare_mounts(
    want: &[Mount],
    have: &[Mount],
    recreate: &mut impl FnMut(&str, Option<String>, Option<String>),
) {
    // Docker's default tmpfs mode (1777) declared is the same tmpfs as one left out.
    let normalized = |mount: &Mount| {
        let mut mount = mount.clone();
        if let MountSource::Tmpfs { mode, .. } = &mut mount.source {
            if *mode == Some(0o1777) {
                *mode = None;
            }
        }
        mount
    };
    let by_target = |mounts: &[Mount]| -> BTreeMap<String, Mount> {
        mounts.iter().map(|mount| (mount.target.clone(), normalized(mount))).collect()
    };
    let (want, have) = (by_target(want), by_target(have));
    let targets: BTreeSet<&String> = want.keys().chain(have.keys()).collect();
    for target in targets {
        let (want, have) = (want.get(target), have.get(target));
        if want != have {
            recreate(&format!("spec.mounts[{target}]"), want.map(render_mount), have.map(render_mount));
        }
    }
}

/// Limits: a declared limit that differs is updated in place; an undeclared one the container has
/// cannot be removed by Docker's update API (zero means "leave as is"), so it takes a recreate.
/// `pidMode`, `ipcMode`, `devices`, `securityOpt` and `sysctls`: each only a new container changes.
/// An undeclared IPC mode is the engine's default, which inspect reports as `private` (or
/// `shareable` on engines before 20.10); an SELinux `label` option the engine added itself (it
/// disables labelling for host namespaces when SELinux is on) is not drift.
fn compare_isolation(want: &Isolation, have: &Isolation, findings: &mut Vec<Finding>) {
    let mut recreate = |field: &str, want: Option<String>, have: Option<String>| {
        if want != have {
            findings.push(Finding {
                diff: FieldDiff { field: field.to_owned(), desired: want, actual: have },
                repair: Repair::Recreate,
            });
        }
    };
    recreate("spec.pidMode", want.pid_mode.clone(), have.pid_mode.clone());
    let engine_default_ipc = |mode: &Option<String>| {
        mode.clone().filter(|mode| !["private", "shareable"].contains(&mode.as_str()))
    };
    match &want.ipc_mode {
        Some(mode) => recreate("spec.ipcMode", Some(mode.clone()), have.ipc_mode.clone()),
        None => recreate("spec.ipcMode", None, engine_default_ipc(&have.ipc_mode)),
    }
    let (want_devices, have_devices): (BTreeSet<_>, BTreeSet<_>) =
        (want.devices.iter().collect(), have.devices.iter().collect());
    let render_devices = |devices: &BTreeSet<&DeviceMapping>| {
        let rendered: Vec<String> = devices
            .iter()
            .map(|d| format!("{}:{}:{}", d.host_path, d.container_path, d.permissions))
            .collect();
        render_list(&rendered)
    };
    if want_devices != have_devices {
        recreate("spec.devices", Some(render_devices(&want_devices)), Some(render_devices(&have_devices)));
    }
    let want_options: BTreeSet<String> = want.security_opt.iter().cloned().collect();
    let have_options: BTreeSet<String> = have
        .security_opt
        .iter()
        .filter(|option| !option.starts_with("label") || want_options.contains(*option))
        .cloned()
        .collect();
    if want_options != have_options {
        recreate("spec.securityOpt", Some(render_set(&want_options)), Some(render_set(&have_options)));
    }
    if want.sysctls != have.sysctls {
        recreate("spec.sysctls", Some(format!("{:?}", want.sysctls)), Some(format!("{:?}", have.sysctls)));
    }
}

/// `init`, `shmSize`, `extraHosts`, `ulimits`, `dns*`, `tty` and `stdinOpen`: each only a new
/// container changes. An undeclared
/// `/dev/shm` size is the engine's default, which inspect reports as if declared.
fn compare_process(want: &ProcessSettings, have: &ProcessSettings, findings: &mut Vec<Finding>) {
    let mut recreate = |field: &str, want: String, have: String| {
        if want != have {
            findings.push(Finding {
                diff: FieldDiff { field: field.to_owned(), desired: Some(want), actual: Some(have) },
                repair: Repair::Recreate,
            });
        }
    };
    recreate("spec.init", want.init.to_string(), have.init.to_string());
    if let Some(size) = want.shm_size {
        recreate(
            "spec.shmSize",
            size.to_string(),
            have.shm_size.map_or_else(|| "none".to_owned(), |s| s.to_string()),
        );
    }
    let (want_hosts, have_hosts): (BTreeSet<String>, BTreeSet<String>) =
        (want.extra_hosts.iter().cloned().collect(), have.extra_hosts.iter().cloned().collect());
    recreate("spec.extraHosts", render_set(&want_hosts), render_set(&have_hosts));
    let render_limits = |limits: &[(String, i64, i64)]| {
        let rendered: Vec<String> =
            limits.iter().map(|(name, soft, hard)| format!("{name}={soft}:{hard}")).collect();
        render_list(&rendered)
    };
    recreate("spec.ulimits", render_limits(&want.ulimits), render_limits(&have.ulimits));
    // The order of DNS servers and search domains is the resolver's order: a list, not a set.
    recreate("spec.dns", render_list(&want.dns), render_list(&have.dns));
    recreate("spec.dnsSearch", render_list(&want.dns_search), render_list(&have.dns_search));
    recreate("spec.dnsOptions", render_list(&want.dns_options), render_list(&have.dns_options));
    recreate("spec.tty", want.tty.to_string(), have.tty.to_string());
    recreate("spec.stdinOpen", want.open_stdin.to_string(), have.open_stdin.to_string());
}

fn compare_resources(want: &Resources, have: &Resources, findings: &mut Vec<Finding>) {
    let want = normalized_resources(want);
    let have = normalized_resources(have);
    // Undeclared swap beside declared memory: the engine sets twice the memory at create (or -1
    // where the kernel cannot limit swap), and an in-place update sends twice the new memory.
    let implied_swap = want.memory.map(|memory| memory.saturating_mul(2));
    let swap_as_implied = |swap: i64| {
        swap == -1
            || Some(swap) == implied_swap
            || Some(swap) == have.memory.map(|memory| memory.saturating_mul(2))
    };
    let fields: [(&str, Option<String>, Option<String>); 11] = [
        ("cpus", want.nano_cpus.map(render_nano_cpus), have.nano_cpus.map(render_nano_cpus)),
        ("cpuShares", render(want.cpu_shares), render(have.cpu_shares)),
        ("cpuPeriod", render(want.cpu_period), render(have.cpu_period)),
        ("cpuQuota", render(want.cpu_quota), render(have.cpu_quota)),
        ("cpusetCpus", want.cpuset_cpus.clone(), have.cpuset_cpus.clone()),
        ("cpusetMems", want.cpuset_mems.clone(), have.cpuset_mems.clone()),
        ("memory", render(want.memory), render(have.memory)),
        ("memoryReservation", render(want.memory_reservation), render(have.memory_reservation)),
        match (want.memory_swap, implied_swap, have.memory_swap) {
            (None, Some(_), Some(swap)) if swap_as_implied(swap) => ("memorySwap", None, None),
            (None, Some(implied), swap) => ("memorySwap", render(Some(implied)), render(swap)),
            (want, _, have) => ("memorySwap", render(want), render(have)),
        },
        ("blkioWeight", render(want.blkio_weight), render(have.blkio_weight)),
        ("pidsLimit", render(want.pids_limit), render(have.pids_limit)),
    ];
    for (name, want, have) in fields {
        if want != have {
            let repair = if want.is_some() { Repair::UpdateResources } else { Repair::Recreate };
            findings.push(Finding {
                diff: FieldDiff { field: format!("spec.resources.{name}"), desired: want, actual: have },
                repair,
            });
        }
    }
}

/// Zero (and, where Docker reads it so, negative) limits mean "no limit": the same as undeclared.
fn normalized_resources(resources: &Resources) -> Resources {
    let positive = |value: Option<i64>| value.filter(|value| *value > 0);
    let text = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
    Resources {
        nano_cpus: positive(resources.nano_cpus),
        cpu_shares: positive(resources.cpu_shares),
        cpu_period: positive(resources.cpu_period),
        cpu_quota: positive(resources.cpu_quota),
        cpuset_cpus: text(&resources.cpuset_cpus),
        cpuset_mems: text(&resources.cpuset_mems),
        memory: positive(resources.memory),
        memory_reservation: positive(resources.memory_reservation),
        memory_swap: resources.memory_swap.filter(|swap| *swap != 0),
        blkio_weight: resources.blkio_weight.filter(|weight| *weight > 0),
        pids_limit: positive(resources.pids_limit),
    }
}

/// Networks: each declared one joined with its aliases and address, nothing else joined. No network
/// declared means Docker's default bridge. Repaired by disconnect and connect, without a restart.
fn compare_networks(desired: &ContainerConfig, observed: &ObservedContainer, drift: &mut Drift) {
    // The engine adds the container's hostname (by default its short ID) to the aliases on
    // user-defined networks; its name resolves anyway.
    let implied = [Some(short_id(&observed.id)), Some(observed.name.as_str()), observed.hostname.as_deref()];
    let clean_aliases = |aliases: &[String]| -> BTreeSet<String> {
        aliases.iter().filter(|alias| !implied.contains(&Some(alias.as_str()))).cloned().collect()
    };
    let want: Vec<NetworkAttachment> = if desired.networks.is_empty() {
        vec![NetworkAttachment { network: "bridge".to_owned(), ..NetworkAttachment::default() }]
    } else {
        desired.networks.clone()
    };
    for attachment in &want {
        let field = format!("spec.networks[{}]", attachment.network);
        let want_aliases = clean_aliases(&attachment.aliases);
        let render_want = Some(render_attachment(&want_aliases, attachment.ipv4_address.as_deref()));
        match observed.networks.iter().find(|network| network.network == attachment.network) {
            None => {
                drift.findings.push(Finding {
                    diff: FieldDiff { field, desired: render_want, actual: None },
                    repair: Repair::Network,
                });
                drift.connect.push(attachment.clone());
            }
            Some(joined) => {
                let have_aliases = clean_aliases(&joined.aliases);
                if have_aliases != want_aliases || joined.ipv4_address != attachment.ipv4_address {
                    drift.findings.push(Finding {
                        diff: FieldDiff {
                            field,
                            desired: render_want,
                            actual: Some(render_attachment(&have_aliases, joined.ipv4_address.as_deref())),
                        },
                        repair: Repair::Network,
                    });
                    drift.disconnect.push(attachment.network.clone());
                    drift.connect.push(attachment.clone());
                }
            }
        }
    }
    for joined in &observed.networks {
        if !want.iter().any(|attachment| attachment.network == joined.network) {
            drift.findings.push(Finding {
                diff: FieldDiff {
                    field: format!("spec.networks[{}]", joined.network),
                    desired: None,
                    actual: Some(render_attachment(
                        &clean_aliases(&joined.aliases),
                        joined.ipv4_address.as_deref(),
                    )),
                },
                repair: Repair::Network,
            });
            drift.disconnect.push(joined.network.clone());
        }
    }
}

/// `nginx` and `docker.io/library/nginx:latest` name the same image.
fn same_image_reference(want: &str, have: &str) -> bool {
    if want == have {
        return true;
    }
    match (want.parse::<kedge_crds::ImageReference>(), have.parse::<kedge_crds::ImageReference>()) {
        (Ok(want), Ok(have)) => want.normalized() == have.normalized(),
        _ => false,
    }
}

fn non_empty(list: Option<Vec<String>>) -> Option<Vec<String>> {
    list.filter(|list| !list.is_empty())
}

/// `KEY=value` entries as a map; an entry without `=` is a key with an empty value.
fn env_map(entries: &[String]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (entry.clone(), String::new()),
        })
        .collect()
}

/// Sorted, with `0.0.0.0` read as "all addresses" like an empty host IP.
fn normalized_ports(bindings: &[PortBinding]) -> Vec<PortBinding> {
    let mut ports: Vec<PortBinding> = bindings
        .iter()
        .map(|binding| PortBinding {
            host_ip: binding.host_ip.clone().filter(|ip| !ip.is_empty() && ip != "0.0.0.0"),
            ..binding.clone()
        })
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// `no` is Docker's default; retries mean something only for `on-failure`.
fn normalized_restart_policy(policy: Option<RestartPolicy>) -> RestartPolicy {
    match policy {
        None => RestartPolicy { kind: RestartPolicyKind::No, max_retries: 0 },
        Some(policy) if policy.kind != RestartPolicyKind::OnFailure => {
            RestartPolicy { max_retries: 0, ..policy }
        }
        Some(policy) => policy,
    }
}

/// Docker accepts `NET_ADMIN` and `CAP_NET_ADMIN`, in any case.
fn capabilities(caps: &[String]) -> BTreeSet<String> {
    caps.iter()
        .map(|cap| {
            let upper = cap.to_ascii_uppercase();
            upper.strip_prefix("CAP_").map(str::to_owned).unwrap_or(upper)
        })
        .collect()
}

fn render<T: ToString>(value: Option<T>) -> Option<String> {
    value.map(|value| value.to_string())
}

fn render_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_default()
}

fn render_set(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(",")
}

fn render_secs(secs: u64) -> String {
    format!("{secs}s")
}

fn render_nano_cpus(nanos: i64) -> String {
    kedge_crds::NanoCpus(u64::try_from(nanos).unwrap_or(0)).to_string()
}

fn render_ports(ports: &[PortBinding]) -> String {
    let rendered: Vec<String> = ports
        .iter()
        .map(|port| {
            let host = match (&port.host_ip, port.host_port) {
                (Some(ip), Some(host_port)) => format!("{ip}:{host_port}:"),
                (Some(ip), None) => format!("{ip}::"),
                (None, Some(host_port)) => format!("{host_port}:"),
                (None, None) => String::new(),
            };
            format!("{host}{}/{}", port.container_port, port.protocol.as_str())
        })
        .collect();
    rendered.join(",")
}

fn render_mount(mount: &Mount) -> String {
    let mode = if mount.read_only { ":ro" } else { "" };
    match &mount.source {
        MountSource::Bind { host_path } => format!("bind {host_path}:{}{mode}", mount.target),
        MountSource::Volume { name: Some(name) } => format!("volume {name}:{}{mode}", mount.target),
        MountSource::Volume { name: None } => format!("volume {}{mode}", mount.target),
        MountSource::Tmpfs { size_bytes, mode: bits } => {
            let size = size_bytes.map(|size| format!(" size={size}")).unwrap_or_default();
            // Docker's default root mode is 1777: declared so or left out, the same tmpfs.
            let bits =
                bits.filter(|bits| *bits != 0o1777).map(|bits| format!(" mode={bits:o}")).unwrap_or_default();
            format!("tmpfs {}{size}{bits}{mode}", mount.target)
        }
    }
}

fn render_restart_policy(policy: RestartPolicy) -> String {
    match policy.kind {
        RestartPolicyKind::No => "no".to_owned(),
        RestartPolicyKind::Always => "always".to_owned(),
        RestartPolicyKind::UnlessStopped => "unless-stopped".to_owned(),
        RestartPolicyKind::OnFailure if policy.max_retries > 0 => {
            format!("on-failure:{}", policy.max_retries)
        }
        RestartPolicyKind::OnFailure => "on-failure".to_owned(),
    }
}

fn render_healthcheck(check: &Healthcheck) -> String {
    let duration = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{d:?}"));
    format!(
        "{} interval={} timeout={} retries={} startPeriod={}",
        render_list(&check.test),
        duration(check.interval),
        duration(check.timeout),
        check.retries.map_or("-".to_owned(), |r| r.to_string()),
        duration(check.start_period),
    )
}

fn render_attachment(aliases: &BTreeSet<String>, ipv4: Option<&str>) -> String {
    let mut text = format!("aliases=[{}]", render_set(aliases));
    if let Some(ip) = ipv4 {
        text.push_str(&format!(" ipv4={ip}"));
    }
    text
}
