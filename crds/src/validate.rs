//! The rules a parsed `Container` must follow beyond its shape, one container at a time
//! ([`validate_container`]) and across a set of specs ([`validate`]: duplicates, unknown dependencies,
//! dependency cycles), and a Secret's ([`validate_secret`]). Every rule reports and goes on, so that
//! one run shows every error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::container::{
    Container, ContainerSpec, Healthcheck, MountKind, NetworkMode, ObjectMeta, Resources, RestartPolicyName,
    UpdateOrder, API_VERSION, KIND_CONTAINER,
};
use crate::container_set::{
    ContainerSet, KIND_CONTAINER_SET, MAX_REPLICAS, MAX_SET_NAME_LEN, SET_LABEL, SET_REVISION_LABEL,
};
pub use crate::located::FieldError;
use crate::located::{self, Located, ParsedContainer, SpecError};
use crate::quantity::MemorySwap;
use crate::secret::{check_key, is_redacted, Secret, KIND_SECRET, REDACTED};

/// Docker refuses a memory limit below this.
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// The kernel's largest CPU weight (cgroup v1 `cpu.shares`); Docker refuses more.
pub const MAX_CPU_SHARES: u64 = 262_144;
/// The longest `spec.minReadySeconds`: a recreate that waits longer than an hour for one container
/// is a mistake in the spec, not a rollout.
pub const MAX_MIN_READY_SECONDS: i64 = 3600;

/// Checks the rules of a single container, whatever its source (a file, or an API request body).
pub fn validate_container(container: &Container) -> Vec<FieldError> {
    let mut errors = Errors::default();
    if container.api_version != API_VERSION {
        errors.add(
            "apiVersion",
            format!("unsupported apiVersion `{}`, expected `{API_VERSION}`", container.api_version),
        );
    }
    if container.kind != KIND_CONTAINER {
        errors.add("kind", format!("unsupported kind `{}`, expected `{KIND_CONTAINER}`", container.kind));
    }
    check_metadata(&container.metadata, &mut errors);
    check_spec(&container.spec, &mut errors);
    errors.0
}

/// Checks every container's own rules, then the rules of the set: no two specs with one key, every
/// `dependsOn`, `networkMode: container:NAME` and `links` entry names a spec of the set or of
/// `existing` (the specs already stored, which the set may replace), and no dependency cycle through
/// any of them. Set-level errors point at the offending entry or name.
pub fn validate(containers: &[ParsedContainer], existing: &[Container]) -> Vec<SpecError> {
    let mut errors = Vec::new();
    for parsed in containers {
        errors.extend(validate_container(&parsed.container).into_iter().map(|e| parsed.field_error(e)));
    }
    let first_by_key =
        located::first_of_each_key(containers, "spec", |parsed| parsed.container.key(), &mut errors);
    // The dependency graph: the set's specs override stored ones of the same key.
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for container in existing {
        graph.insert(container.key(), dependency_keys(container));
    }
    for parsed in first_by_key.values() {
        graph.insert(parsed.container.key(), dependency_keys(&parsed.container));
    }
    for parsed in containers {
        let namespace = &parsed.container.metadata.namespace;
        let mut reported = BTreeSet::new();
        for (path, name) in dependency_edges(&parsed.container.spec) {
            let key = format!("{namespace}/{name}");
            // A target named in `dependsOn` too is reported there only.
            let first = reported.insert(name) || path.starts_with("spec.dependsOn");
            if !graph.contains_key(&key) && first {
                let what = if path.starts_with("spec.dependsOn") {
                    "depends on"
                } else if path == "spec.networkMode" {
                    "joins the network namespace of"
                } else {
                    "links to"
                };
                errors.push(parsed.error_at(&path, format!("{what} `{key}`, which is not among the specs")));
            }
        }
    }
    for component in cyclic_components(&graph) {
        // Reported once per cycle, at the first spec of the set on it, at its entry naming the next one.
        let Some(reporter) = containers.iter().find(|parsed| component.contains(&parsed.container.key()))
        else {
            continue;
        };
        let cycle = walk_cycle(&graph, &component, reporter.container.key());
        let namespace = &reporter.container.metadata.namespace;
        let next = cycle.get(1).unwrap_or(&cycle[0]);
        let path = dependency_edges(&reporter.container.spec)
            .into_iter()
            .find(|(_, name)| format!("{namespace}/{name}") == *next)
            .map_or_else(|| "spec.dependsOn".to_owned(), |(path, _)| path);
        let mut description: Vec<&str> = cycle.iter().map(String::as_str).collect();
        description.push(&cycle[0]);
        errors.push(reporter.error_at(&path, format!("dependency cycle: {}", description.join(" -> "))));
    }
    errors
}

/// The specs the set's `dependsOn`, `networkMode: container:NAME` and `links` entries name but that
/// neither the set nor `existing` holds, as (namespace, name): what a caller that can read the store
/// looks up, then passes to [`validate`] among `existing`.
pub fn outside_targets(containers: &[ParsedContainer], existing: &[Container]) -> BTreeSet<(String, String)> {
    let held: BTreeSet<String> =
        containers.iter().map(|p| p.container.key()).chain(existing.iter().map(Container::key)).collect();
    let mut outside = BTreeSet::new();
    for parsed in containers {
        let namespace = &parsed.container.metadata.namespace;
        for (_, name) in dependency_edges(&parsed.container.spec) {
            if !held.contains(&format!("{namespace}/{name}")) {
                outside.insert((namespace.clone(), name.to_owned()));
            }
        }
    }
    outside
}

/// Checks the rules of one `ContainerSet`: its metadata, its replica count and rollout settings, and
/// its template as a Container spec (errors point into `spec.template.spec`). The template may not
/// name a placement: the set's `spec.placement` decides where children run.
pub fn validate_container_set(set: &ContainerSet) -> Vec<FieldError> {
    let mut errors = Errors::default();
    if set.api_version != API_VERSION {
        errors.add(
            "apiVersion",
            format!("unsupported apiVersion `{}`, expected `{API_VERSION}`", set.api_version),
        );
    }
    if set.kind != KIND_CONTAINER_SET {
        errors.add("kind", format!("unsupported kind `{}`, expected `{KIND_CONTAINER_SET}`", set.kind));
    }
    check_metadata(&set.metadata, &mut errors);
    if set.metadata.name.len() > MAX_SET_NAME_LEN {
        errors.add(
            "metadata.name",
            format!(
                "a ContainerSet's name has at most {MAX_SET_NAME_LEN} characters, so that `<name>-<ordinal>` is a valid container name"
            ),
        );
    }
    if set.spec.replicas > MAX_REPLICAS {
        errors.add("spec.replicas", format!("at most {MAX_REPLICAS}"));
    }
    for key in set.spec.template.metadata.labels.keys() {
        if let Err(why) = check_label_key(key) {
            errors.add_on_key(format!("spec.template.metadata.labels.{key}"), why);
        } else if key == SET_LABEL || key == SET_REVISION_LABEL {
            errors.add_on_key(format!("spec.template.metadata.labels.{key}"), "is set by kedge itself");
        }
    }
    if set.spec.template.spec.placement.is_some() {
        errors.add(
            "spec.template.spec.placement",
            "a ContainerSet's template may not name a placement; use the set's `spec.placement`",
        );
    }
    let mut template = Errors::default();
    check_spec(&set.spec.template.spec, &mut template);
    for error in template.0 {
        let path = format!("spec.template.{}", error.path);
        errors.0.push(FieldError { path, ..error });
    }
    if let Some(placement) = &set.spec.placement {
        if placement.max_per_host == Some(0) {
            errors.add("spec.placement.maxPerHost", "must be at least 1");
        }
        for key in placement.host_selector.keys() {
            if let Err(why) = check_label_key(key) {
                errors.add_on_key(format!("spec.placement.hostSelector.{key}"), why);
            }
        }
    }
    if let Some(rolling) = &set.spec.rolling_update {
        if rolling.batch_size == Some(0) {
            errors.add("spec.rollingUpdate.batchSize", "must be at least 1");
        }
        if rolling.health_timeout.is_some_and(|timeout| timeout.0 < Duration::from_secs(1)) {
            errors.add("spec.rollingUpdate.healthTimeout", "must be at least 1s");
        }
    }
    errors.0
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into(), on_key: false });
    }

    fn add_on_key(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into(), on_key: true });
    }
}

/// `secretEnv`: valid variable names not also in `env`, each naming a valid secret name and key.
fn check_secret_env(spec: &ContainerSpec, errors: &mut Errors) {
    for (name, reference) in &spec.secret_env {
        let path = format!("spec.secretEnv.{name}");
        if name.is_empty() || name.contains('=') || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            errors.add_on_key(
                path.clone(),
                format!(
                    "`{name}` is not a valid variable name: it must be non-empty, without `=` or whitespace"
                ),
            );
        }
        if spec.env.contains_key(name) {
            errors.add_on_key(
                path.clone(),
                format!("`{name}` is also in `spec.env`: a variable takes its value from one place"),
            );
        }
        if let Err(why) = check_dns_label(&reference.secret) {
            errors.add(
                format!("{path}.secret"),
                format!("`{}` is not a valid secret name: {why}", reference.secret),
            );
        }
        if let Err(why) = check_key(&reference.key) {
            errors.add(format!("{path}.key"), why);
        }
    }
}

/// A secret's own rules: its envelope and metadata as every kind's, keys as Kubernetes allows them,
/// and no value that is a redacted one read back from the API (`kedge get secret -o yaml` applied
/// again would otherwise store the placeholder). Messages never quote a value.
pub fn validate_secret(secret: &Secret) -> Vec<FieldError> {
    let field = |path: String, message: String, on_key: bool| FieldError { path, message, on_key };
    let mut errors = Vec::new();
    if secret.api_version != API_VERSION {
        let message = format!("unsupported apiVersion `{}`, expected `{API_VERSION}`", secret.api_version);
        errors.push(field("apiVersion".into(), message, false));
    }
    if secret.kind != KIND_SECRET {
        let message = format!("unsupported kind `{}`, expected `{KIND_SECRET}`", secret.kind);
        errors.push(field("kind".into(), message, false));
    }
    errors.extend(metadata_errors(&secret.metadata));
    let over = crate::secret::data_limit_errors(&secret.data);
    let too_many_keys = secret.data.len() > crate::secret::MAX_SECRET_KEYS;
    errors.extend(over.into_iter().map(|message| field("data".into(), message, false)));
    // Past the key limit, one error says so, not one per key.
    for (key, value) in secret.data.iter().filter(|_| !too_many_keys) {
        if let Err(why) = check_key(key) {
            errors.push(field(format!("data.{key}"), why, true));
        }
        if is_redacted(value) {
            let message = format!(
                "the value is a redacted one as the API shows it (`{REDACTED} ...`); write the real value"
            );
            errors.push(field(format!("data.{key}"), message, false));
        }
    }
    errors
}

/// The label kedge's own end-to-end tests put on everything they make (so a guard can remove it);
/// the one `io.kedge.` label a spec may carry.
pub const TEST_LABEL: &str = "io.kedge.test";

/// Markers kedge puts in a container's name while it replaces it (`<name>-kedge-new-<id>`,
/// `<name>-kedge-old-<id>`); a spec name holding one would be taken for a recreate's leftover.
pub const RESERVED_NAME_MARKERS: [&str; 2] = ["-kedge-new-", "-kedge-old-"];

/// The rules of `metadata` every kind shares (name, namespace, label keys, generation).
pub(crate) fn metadata_errors(metadata: &ObjectMeta) -> Vec<FieldError> {
    let mut errors = Errors::default();
    check_metadata(metadata, &mut errors);
    errors.0
}

fn check_metadata(metadata: &ObjectMeta, errors: &mut Errors) {
    if let Err(why) = check_dns_label(&metadata.name) {
        errors.add("metadata.name", format!("`{}` is not a valid name: {why}", metadata.name));
    } else if let Some(marker) = RESERVED_NAME_MARKERS.iter().find(|m| metadata.name.contains(**m)) {
        errors.add(
            "metadata.name",
            format!(
                "`{}` contains `{marker}`, which kedge reserves for containers it is replacing",
                metadata.name
            ),
        );
    }
    if let Err(why) = check_dns_label(&metadata.namespace) {
        errors.add("metadata.namespace", format!("`{}` is not a valid namespace: {why}", metadata.namespace));
    }
    for key in metadata.labels.keys() {
        if let Err(why) = check_label_key(key) {
            errors.add_on_key(format!("metadata.labels.{key}"), why);
        }
    }
    if let Some(generation) = metadata.generation {
        if generation < 0 {
            errors.add("metadata.generation", "must not be negative");
        }
    }
}

fn check_spec(spec: &ContainerSpec, errors: &mut Errors) {
    if spec.image.repository.is_empty() {
        errors.add("spec.image", "missing required field `image`");
    }
    for name in spec.env.keys() {
        if name.is_empty() || name.contains('=') || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            errors.add_on_key(
                format!("spec.env.{name}"),
                format!(
                    "`{name}` is not a valid variable name: it must be non-empty, without `=` or whitespace"
                ),
            );
        }
    }
    check_secret_env(spec, errors);
    if let Some(directory) = &spec.working_dir {
        if !directory.starts_with('/') {
            errors.add("spec.workingDir", format!("`{directory}` is not an absolute path"));
        }
    }
    if let Some(hostname) = &spec.hostname {
        if let Err(why) = check_hostname(hostname) {
            errors.add("spec.hostname", format!("`{hostname}` is not a valid hostname: {why}"));
        }
    }
    for key in spec.labels.keys() {
        if key.starts_with("io.kedge.") && key != TEST_LABEL {
            errors.add_on_key(
                format!("spec.labels.{key}"),
                "labels under `io.kedge.` are kedge's own container labels (ownership, host, upgrade helper)",
            );
        } else if key.starts_with("kedge.io/") {
            errors.add_on_key(
                format!("spec.labels.{key}"),
                "labels under `kedge.io/` are reserved for kedge itself",
            );
        } else if key.is_empty() {
            errors.add("spec.labels", "a label key must not be empty");
        }
    }
    check_ports(spec, errors);
    check_mounts(spec, errors);
    check_networks(spec, errors);
    check_network_mode_and_links(spec, errors);
    if let Some(policy) = &spec.restart_policy {
        if policy.maximum_retry_count.is_some() && policy.name != RestartPolicyName::OnFailure {
            errors.add(
                "spec.restartPolicy.maximumRetryCount",
                "a retry count is only allowed with `on-failure`",
            );
        }
    }
    if let Some(resources) = &spec.resources {
        check_resources(resources, errors);
    }
    if let Some(healthcheck) = &spec.healthcheck {
        check_healthcheck(healthcheck, errors);
    }
    if let Some(signal) = &spec.stop_signal {
        if !is_valid_signal(signal) {
            errors.add(
                "spec.stopSignal",
                format!("`{signal}` is not a signal name (such as `SIGTERM`) or number"),
            );
        }
    }
    for (field, capabilities) in [("capAdd", &spec.cap_add), ("capDrop", &spec.cap_drop)] {
        for (index, capability) in capabilities.iter().enumerate() {
            if !is_valid_capability(capability) {
                errors.add(
                    format!("spec.{field}[{index}]"),
                    format!("`{capability}` is not a Linux capability"),
                );
            }
        }
    }
    check_isolation(spec, errors);
    check_process(spec, errors);
    if let Some(logging) = &spec.logging {
        if logging.driver.is_empty() {
            errors.add("spec.logging.driver", "must not be empty");
        }
    }
    let mut dependencies = BTreeSet::new();
    for (index, dependency) in spec.depends_on.iter().enumerate() {
        let path = format!("spec.dependsOn[{index}]");
        if let Err(why) = check_dns_label(&dependency.name) {
            errors.add(&path, format!("`{}` is not a valid name: {why}", dependency.name));
        } else if !dependencies.insert(dependency.name.as_str()) {
            errors.add(&path, format!("`{}` is listed twice", dependency.name));
        }
    }
    for (index, exec) in spec.post_start.iter().enumerate() {
        if exec.command.is_empty() {
            errors.add(format!("spec.postStart[{index}].command"), "must not be empty");
        }
    }
    if let Some(policy) = &spec.update_policy {
        if let Some(interval) = policy.check_interval {
            if interval.duration() < Duration::from_secs(1) {
                errors.add("spec.updatePolicy.checkInterval", "must be at least 1s");
            }
        }
        if let Some(interval) = policy.interval {
            if interval.duration() < Duration::from_secs(1) {
                errors.add("spec.updatePolicy.interval", "must be at least 1s");
            }
            if policy.check_interval.is_some() {
                errors.add(
                    "spec.updatePolicy.interval",
                    "give `interval` or its older spelling `checkInterval`, not both",
                );
            }
        }
        if let Some(tags) = &policy.tags {
            if let Err(error) = crate::update_policy::TagSelector::compile(tags) {
                errors.add(format!("spec.updatePolicy.{}", error.field), error.problem);
            }
            if policy.image_check.unwrap_or_default() != crate::container::ImageCheck::Registry {
                errors.add(
                    "spec.updatePolicy.tags",
                    "following tags needs `imageCheck: registry` (the tags are listed there)",
                );
            }
        }
        if let Some(window) = &policy.window {
            if let Err(error) = crate::update_policy::DailyWindow::parse(window) {
                errors.add(format!("spec.updatePolicy.{}", error.field), error.problem);
            }
        }
    }
    if let Some(limit) = &spec.unhealthy_limit {
        if limit.remediations == Some(0) {
            errors.add(
                "spec.unhealthyLimit.remediations",
                "must be at least 1 (use `onUnhealthy: none` for none)",
            );
        }
        if limit.period.is_some_and(|period| period.duration() < Duration::from_secs(1)) {
            errors.add("spec.unhealthyLimit.period", "must be at least 1s");
        }
    }
    if let Some(seconds) = spec.min_ready_seconds {
        if !(0..=MAX_MIN_READY_SECONDS).contains(&seconds) {
            errors.add(
                "spec.minReadySeconds",
                format!("must be between 0 and {MAX_MIN_READY_SECONDS} (one hour), not {seconds}"),
            );
        }
    }
    if let Some(strategy) = &spec.update_strategy {
        if let Some(timeout) = strategy.health_timeout {
            if timeout.duration().is_zero() {
                errors.add("spec.updateStrategy.healthTimeout", "must be more than 0s");
            }
        }
        if strategy.kind == Some(UpdateOrder::StartFirst)
            && spec.ports.iter().any(|port| port.host_port.is_some())
        {
            errors.add(
                "spec.updateStrategy.type",
                "`start-first` cannot be used with published host ports: the new container could not bind them",
            );
        }
    }
    if let Some(placement) = &spec.placement {
        if placement.host.is_none() && placement.host_selector.is_empty() {
            errors.add("spec.placement", "give `host`, `hostSelector` or both");
        }
        if let Some(host) = &placement.host {
            if let Err(why) = check_hostname(host) {
                errors.add("spec.placement.host", format!("`{host}` is not a valid host name: {why}"));
            }
        }
        for key in placement.host_selector.keys() {
            if let Err(why) = check_label_key(key) {
                errors.add_on_key(format!("spec.placement.hostSelector.{key}"), why);
            }
        }
    }
}

/// `pidMode`, `ipcMode`, `devices`, `securityOpt` and `sysctls`: Docker's syntax (isolation.rs), in
/// bounded amounts (`isolation::MAX_*`): a list over its limit is one error, not one per entry, and an
/// entry over its length is named by its place, never echoed.
fn check_isolation(spec: &ContainerSpec, errors: &mut Errors) {
    use crate::isolation::{
        self, IPC_MODES, MAX_DEVICES, MAX_ENTRY_BYTES, MAX_SECURITY_OPTS, MAX_SYSCTLS, PID_MODES,
    };
    for (field, value, modes) in
        [("pidMode", &spec.pid_mode, PID_MODES), ("ipcMode", &spec.ipc_mode, IPC_MODES)]
    {
        if let Some(mode) = value.as_deref().filter(|mode| !modes.contains(mode)) {
            if mode.len() > MAX_ENTRY_BYTES {
                errors.add(format!("spec.{field}"), format!("is not one of {}", modes.join(", ")));
            } else {
                errors.add(format!("spec.{field}"), format!("`{mode}` is not one of {}", modes.join(", ")));
            }
        }
    }
    check_list(errors, "devices", &spec.devices, MAX_DEVICES, |text| isolation::parse_device(text).map(drop));
    check_list(errors, "securityOpt", &spec.security_opt, MAX_SECURITY_OPTS, |text| {
        isolation::parse_security_option(text).map(drop)
    });
    if spec.sysctls.len() > MAX_SYSCTLS {
        errors.add("spec.sysctls", too_many(MAX_SYSCTLS, spec.sysctls.len()));
        return;
    }
    for (name, value) in &spec.sysctls {
        if name.len() > MAX_ENTRY_BYTES {
            errors
                .add("spec.sysctls", format!("a sysctl name {}", isolation::check_length(name).unwrap_err()));
            continue;
        }
        if let Err(why) = isolation::check_sysctl_name(name) {
            errors.add_on_key(format!("spec.sysctls.{name}"), why);
        }
        if let Err(why) = isolation::check_length(value) {
            errors.add(format!("spec.sysctls.{name}"), why);
        }
    }
}

/// The names `setrlimit` knows, as Docker's `--ulimit` takes them.
const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `extraHosts` (`HOST:IP`), `ulimits` (known names, soft at most hard), `shmSize` (not zero), and
/// `dns` (IP addresses), `dnsSearch` (domains), `dnsOptions` (one word each).
fn check_process(spec: &ContainerSpec, errors: &mut Errors) {
    for (index, entry) in spec.extra_hosts.iter().enumerate() {
        let valid = entry.split_once(':').is_some_and(|(host, address)| {
            check_hostname(host).is_ok()
                && (address == "host-gateway" || address.parse::<std::net::IpAddr>().is_ok())
        });
        if !valid {
            errors.add(
                format!("spec.extraHosts[{index}]"),
                "an entry is `HOST:IP` (or `HOST:host-gateway`), such as `db.local:10.0.0.5`",
            );
        }
    }
    for (name, limit) in &spec.ulimits {
        if !ULIMIT_NAMES.contains(&name.as_str()) {
            errors.add_on_key(
                format!("spec.ulimits.{name}"),
                format!("not a process limit; one of {}", ULIMIT_NAMES.join(", ")),
            );
        } else if limit.hard != -1 && (limit.soft == -1 || limit.soft > limit.hard) {
            errors.add(
                format!("spec.ulimits.{name}"),
                "the soft limit must not exceed the hard one (-1: unlimited)",
            );
        }
    }
    if spec.shm_size.is_some_and(|size| size.bytes() == 0) {
        errors.add("spec.shmSize", "must be more than zero (leave it out for Docker's 64Mi)");
    }
    for (index, server) in spec.dns.iter().enumerate() {
        if server.parse::<std::net::IpAddr>().is_err() {
            errors.add(format!("spec.dns[{index}]"), format!("`{server}` is not an IP address"));
        }
    }
    for (index, domain) in spec.dns_search.iter().enumerate() {
        if domain != "." && check_hostname(domain.trim_end_matches('.')).is_err() {
            errors.add(format!("spec.dnsSearch[{index}]"), format!("`{domain}` is not a domain name"));
        }
    }
    for (index, option) in spec.dns_options.iter().enumerate() {
        if option.is_empty() || option.chars().any(char::is_whitespace) {
            errors.add(
                format!("spec.dnsOptions[{index}]"),
                "a resolver option is one word such as `ndots:2` or `use-vc`",
            );
        }
    }
}

/// One error for a list over `limit`; else each entry's, by its index.
fn check_list(
    errors: &mut Errors,
    field: &str,
    entries: &[String],
    limit: usize,
    parse: fn(&str) -> Result<(), String>,
) {
    if entries.len() > limit {
        errors.add(format!("spec.{field}"), too_many(limit, entries.len()));
        return;
    }
    for (index, entry) in entries.iter().enumerate() {
        if let Err(why) = crate::isolation::check_length(entry).and_then(|()| parse(entry)) {
            errors.add(format!("spec.{field}[{index}]"), why);
        }
    }
}

fn too_many(limit: usize, given: usize) -> String {
    format!("at most {limit} entries ({given} given)")
}

fn check_ports(spec: &ContainerSpec, errors: &mut Errors) {
    let mut bindings = std::collections::HashSet::new();
    for (index, port) in spec.ports.iter().enumerate() {
        let path = format!("spec.ports[{index}]");
        if port.container_port == 0 {
            errors.add(format!("{path}.containerPort"), "must be a port number from 1 to 65535");
        }
        if let Some(host_port) = port.host_port {
            if host_port == 0 {
                errors.add(
                    format!("{path}.hostPort"),
                    "must be a port number from 1 to 65535 (leave it out for any)",
                );
            } else if !bindings.insert((port.host_ip, host_port, port.protocol)) {
                errors.add(format!("{path}.hostPort"), format!("host port {host_port} is published twice"));
            }
        }
    }
}

fn check_mounts(spec: &ContainerSpec, errors: &mut Errors) {
    let mut targets = BTreeSet::new();
    for (index, mount) in spec.mounts.iter().enumerate() {
        let path = format!("spec.mounts[{index}]");
        if !mount.target.starts_with('/') {
            errors.add(format!("{path}.target"), format!("`{}` is not an absolute path", mount.target));
        } else if !targets.insert(mount.target.trim_end_matches('/')) {
            errors.add(format!("{path}.target"), format!("`{}` is mounted twice", mount.target));
        }
        match (mount.kind, &mount.source) {
            (MountKind::Bind, None) => {
                errors.add(format!("{path}.source"), "a bind mount needs a source path")
            }
            (MountKind::Bind, Some(source)) if !source.starts_with('/') => {
                errors.add(format!("{path}.source"), format!("`{source}` is not an absolute path"))
            }
            (MountKind::Volume, Some(source)) if !is_valid_volume_name(source) => errors.add(
                format!("{path}.source"),
                format!("`{source}` is not a valid volume name: use letters, digits, `_`, `.` and `-`"),
            ),
            (MountKind::Tmpfs, Some(_)) => {
                errors.add(format!("{path}.source"), "a tmpfs mount has no source")
            }
            _ => {}
        }
        if mount.tmpfs_size.is_some() && mount.kind != MountKind::Tmpfs {
            errors.add(format!("{path}.tmpfsSize"), "only a tmpfs mount has a size");
        }
        if let Some(mode) = &mount.tmpfs_mode {
            if mount.kind != MountKind::Tmpfs {
                errors.add(format!("{path}.tmpfsMode"), "only a tmpfs mount has a mode");
            } else if crate::container::tmpfs_mode_bits(mode).is_none() {
                errors.add(
                    format!("{path}.tmpfsMode"),
                    format!("`{mode}` is not permission bits in octal, such as `1777` or `0700`"),
                );
            }
        }
        if mount.kind == MountKind::Tmpfs && mount.read_only == Some(true) {
            errors.add(format!("{path}.readOnly"), "a read-only tmpfs mount cannot be written at all");
        }
    }
}

fn check_networks(spec: &ContainerSpec, errors: &mut Errors) {
    let mut names = BTreeSet::new();
    for (index, network) in spec.networks.iter().enumerate() {
        let path = format!("spec.networks[{index}]");
        if network.name.is_empty() {
            errors.add(format!("{path}.name"), "must not be empty");
        } else if !names.insert(network.name.as_str()) {
            errors.add(format!("{path}.name"), format!("network `{}` is listed twice", network.name));
        }
        for (alias_index, alias) in network.aliases.iter().enumerate() {
            if let Err(why) = check_hostname(alias) {
                errors.add(
                    format!("{path}.aliases[{alias_index}]"),
                    format!("`{alias}` is not a valid alias: {why}"),
                );
            }
        }
        if let Some(address) = network.ipv4_address {
            if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
                errors.add(
                    format!("{path}.ipv4Address"),
                    format!("`{address}` cannot be a container's address"),
                );
            }
        }
    }
}

/// Docker refuses these combinations at create ("conflicting options: ..."); saying so here names the
/// field instead of failing the container later.
fn check_network_mode_and_links(spec: &ContainerSpec, errors: &mut Errors) {
    if let Some(mode) = &spec.network_mode {
        if let NetworkMode::Container(name) = mode {
            if let Err(why) = check_dns_label(name) {
                errors.add("spec.networkMode", format!("`{name}` is not a valid spec name: {why}"));
            }
            let joined = format!("the container shares `{name}`'s network namespace (networkMode: {mode})");
            if !spec.ports.is_empty() {
                errors.add("spec.ports", format!("cannot publish ports: {joined}; publish them on `{name}`"));
            }
            if spec.hostname.is_some() {
                errors.add("spec.hostname", format!("cannot be set: {joined}, and its hostname"));
            }
            if !spec.links.is_empty() {
                errors.add("spec.links", format!("cannot be used: {joined}"));
            }
        }
        if !spec.networks.is_empty() {
            errors.add(
                "spec.networks",
                format!("cannot be combined with `networkMode: {mode}`: give one or the other"),
            );
        }
        if *mode == NetworkMode::Host {
            if !spec.ports.is_empty() {
                errors.add(
                    "spec.ports",
                    "cannot publish ports with `networkMode: host`: the host's ports are the container's",
                );
            }
            if !spec.links.is_empty() {
                errors.add("spec.links", "cannot be used with `networkMode: host` (Docker refuses it)");
            }
        }
    }
    if !spec.links.is_empty() && !spec.networks.is_empty() {
        errors.add(
            "spec.links",
            "links only work on the default bridge: on `networks`, containers reach each other by name (add `aliases` for other names)",
        );
    }
    let mut names = BTreeSet::new();
    for (index, link) in spec.links.iter().enumerate() {
        let path = format!("spec.links[{index}]");
        if let Err(why) = check_dns_label(&link.name) {
            errors.add(&path, format!("`{}` is not a valid spec name: {why}", link.name));
        }
        if let Some(alias) = &link.alias {
            if let Err(why) = check_hostname(alias) {
                errors.add(&path, format!("`{alias}` is not a valid alias: {why}"));
            }
        }
        let host_name = link.alias.as_deref().unwrap_or(&link.name);
        if !names.insert(host_name) {
            errors.add(&path, format!("`{host_name}` is linked twice"));
        }
    }
}

fn check_resources(resources: &Resources, errors: &mut Errors) {
    if let Some(cpus) = resources.cpus {
        if cpus.nanos() == 0 {
            errors.add("spec.resources.cpus", "must be more than 0");
        }
        if resources.cpu_period.is_some() || resources.cpu_quota.is_some() {
            errors.add(
                "spec.resources.cpus",
                "cannot be combined with cpuPeriod or cpuQuota (Docker refuses both)",
            );
        }
    }
    if let Some(shares) = resources.cpu_shares {
        if shares == 1 || shares > MAX_CPU_SHARES {
            errors.add(
                "spec.resources.cpuShares",
                format!("must be from 2 to {MAX_CPU_SHARES} (or 0 for Docker's default)"),
            );
        }
    }
    if let Some(period) = resources.cpu_period {
        if period != 0 && !(1_000..=1_000_000).contains(&period) {
            errors.add("spec.resources.cpuPeriod", "must be from 1000 to 1000000 microseconds");
        }
    }
    if let Some(quota) = resources.cpu_quota {
        if quota != -1 && quota != 0 && quota < 1_000 {
            errors.add("spec.resources.cpuQuota", "must be at least 1000 microseconds, or -1 for none");
        }
    }
    for (field, value) in [("cpusetCpus", &resources.cpuset_cpus), ("cpusetMems", &resources.cpuset_mems)] {
        if let Some(list) = value {
            if !is_valid_cpu_list(list) {
                errors.add(
                    format!("spec.resources.{field}"),
                    format!("`{list}` is not a list such as `0-3` or `0,2`"),
                );
            }
        }
    }
    if let Some(memory) = resources.memory {
        if memory.bytes() < MIN_MEMORY_BYTES {
            errors.add("spec.resources.memory", format!("`{memory}` is below Docker's minimum of 6Mi"));
        }
    }
    if let (Some(reservation), Some(memory)) = (resources.memory_reservation, resources.memory) {
        if reservation > memory {
            errors.add(
                "spec.resources.memoryReservation",
                format!("`{reservation}` is more than memory `{memory}`"),
            );
        }
    }
    match (resources.memory_swap, resources.memory) {
        (Some(MemorySwap::Limit(swap)), Some(memory)) if swap < memory => errors.add(
            "spec.resources.memorySwap",
            format!("`{swap}` is less than memory `{memory}`: it counts memory plus swap (-1 for unlimited)"),
        ),
        (Some(_), None) => errors.add("spec.resources.memorySwap", "needs `memory` to be set too"),
        _ => {}
    }
    if let Some(weight) = resources.blkio_weight {
        if weight != 0 && !(10..=1000).contains(&weight) {
            errors.add("spec.resources.blkioWeight", "must be from 10 to 1000, or 0 for Docker's default");
        }
    }
    if let Some(limit) = resources.pids_limit {
        if limit < -1 {
            errors.add("spec.resources.pidsLimit", "must be positive, or 0 or -1 for unlimited");
        }
    }
}

fn check_healthcheck(healthcheck: &Healthcheck, errors: &mut Errors) {
    let test = &healthcheck.test;
    let problem = match test.first().map(String::as_str) {
        None => Some("must not be empty: use [NONE] to disable the image's health check"),
        Some("CMD") if test.len() < 2 => Some("[CMD, ...] needs a command after CMD"),
        Some("CMD-SHELL") if test.len() != 2 => Some("[CMD-SHELL, command] takes exactly one shell command"),
        Some("NONE") if test.len() != 1 => Some("[NONE] takes nothing after NONE"),
        Some("CMD" | "CMD-SHELL" | "NONE") => None,
        Some(_) => Some("must start with CMD, CMD-SHELL or NONE (or be a string, run as CMD-SHELL)"),
    };
    if let Some(problem) = problem {
        errors.add("spec.healthcheck.test", problem);
    }
    for (field, value) in [
        ("interval", healthcheck.interval),
        ("timeout", healthcheck.timeout),
        ("startPeriod", healthcheck.start_period),
        ("startInterval", healthcheck.start_interval),
    ] {
        if let Some(value) = value {
            if !value.duration().is_zero() && value.duration() < Duration::from_millis(1) {
                errors.add(
                    format!("spec.healthcheck.{field}"),
                    "must be at least 1ms, or 0 for Docker's default",
                );
            }
        }
    }
}

fn dependency_keys(container: &Container) -> Vec<String> {
    let namespace = &container.metadata.namespace;
    dependency_edges(&container.spec).into_iter().map(|(_, name)| format!("{namespace}/{name}")).collect()
}

/// Every spec this one depends on, with the field path that says so: `dependsOn` entries, the
/// network provider, the link targets.
fn dependency_edges(spec: &ContainerSpec) -> Vec<(String, &str)> {
    let mut edges: Vec<(String, &str)> = spec
        .depends_on
        .iter()
        .enumerate()
        .map(|(index, dependency)| (format!("spec.dependsOn[{index}]"), dependency.name.as_str()))
        .collect();
    if let Some(provider) = spec.network_provider() {
        edges.push(("spec.networkMode".to_owned(), provider));
    }
    for (index, link) in spec.links.iter().enumerate() {
        edges.push((format!("spec.links[{index}]"), link.name.as_str()));
    }
    edges
}

/// The strongly connected components that hold a cycle: more than one spec, or one that depends on itself.
fn cyclic_components(graph: &BTreeMap<String, Vec<String>>) -> Vec<BTreeSet<String>> {
    let keys: Vec<&String> = graph.keys().collect();
    let index_of: HashMap<&String, usize> =
        keys.iter().enumerate().map(|(index, key)| (*key, index)).collect();
    let edges: Vec<Vec<usize>> = keys
        .iter()
        .map(|key| graph[*key].iter().filter_map(|target| index_of.get(target).copied()).collect())
        .collect();
    strongly_connected_components(&edges)
        .into_iter()
        .filter(|component| component.len() > 1 || edges[component[0]].contains(&component[0]))
        .map(|component| component.into_iter().map(|index| keys[index].clone()).collect())
        .collect()
}

/// A shortest cycle through `start` inside its strongly connected component, as keys without repeating the
/// first: a breadth-first search from `start` back to itself (every key of such a component is on a cycle).
fn walk_cycle(
    graph: &BTreeMap<String, Vec<String>>,
    component: &BTreeSet<String>,
    start: String,
) -> Vec<String> {
    let mut came_from: HashMap<&String, &String> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([&start]);
    while let Some(key) = queue.pop_front() {
        for target in graph.get(key).into_iter().flatten().filter(|target| component.contains(*target)) {
            if *target == start {
                let mut cycle = vec![key.clone()];
                let mut current = key;
                while *current != start {
                    current = came_from[current];
                    cycle.push(current.clone());
                }
                cycle.reverse();
                return cycle;
            }
            if !came_from.contains_key(target) {
                came_from.insert(target, key);
                queue.push_back(target);
            }
        }
    }
    vec![start]
}

/// Tarjan's algorithm, iterative.
fn strongly_connected_components(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let count = edges.len();
    let mut index = vec![usize::MAX; count];
    let mut low = vec![0; count];
    let mut on_stack = vec![false; count];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut components = Vec::new();
    for root in 0..count {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (node, ref mut edge)) = work.last_mut() {
            if *edge == 0 && index[node] == usize::MAX {
                index[node] = next_index;
                low[node] = next_index;
                next_index += 1;
                stack.push(node);
                on_stack[node] = true;
            }
            if *edge < edges[node].len() {
                let target = edges[node][*edge];
                *edge += 1;
                if index[target] == usize::MAX {
                    work.push((target, 0));
                } else if on_stack[target] {
                    low[node] = low[node].min(index[target]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut component = Vec::new();
                loop {
                    let member = stack.pop().expect("the node is on the stack");
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

fn check_dns_label(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 63 {
        return Err("it must be 1 to 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("use only lowercase letters, digits and `-`");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("it must start and end with a letter or digit");
    }
    Ok(())
}

/// RFC 1123 host names: dot-separated labels of letters, digits and `-`; case is free.
fn check_hostname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("it must be 1 to 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated part must be 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err("use letters, digits and `-`, not at the start or end of a part");
        }
    }
    Ok(())
}

/// `[prefix/]name` as Kubernetes label keys: the name is 1 to 63 of `[A-Za-z0-9._-]`, starting and ending
/// alphanumeric; the prefix a DNS subdomain.
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok =
        prefix.is_none_or(|prefix| check_hostname(prefix).is_ok() && prefix == prefix.to_ascii_lowercase());
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!(
            "`{key}` is not a valid label key: `[prefix/]name`, name of letters, digits, `.`, `_`, `-`"
        ))
    }
}

fn is_valid_volume_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_valid_cpu_list(list: &str) -> bool {
    list.split(',').all(|part| {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        match (low.parse::<u32>(), high.parse::<u32>()) {
            (Ok(low), Ok(high)) => low <= high,
            _ => false,
        }
    })
}

const SIGNALS: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE",
    "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ",
    "VTALRM", "PROF", "WINCH", "IO", "PWR",
];

/// `SIGTERM`, `TERM`, `15`, `SIGRTMIN+3`, as `docker run --stop-signal` takes them.
fn is_valid_signal(signal: &str) -> bool {
    if let Ok(number) = signal.parse::<u32>() {
        return (1..=64).contains(&number);
    }
    let name = signal.strip_prefix("SIG").unwrap_or(signal);
    if SIGNALS.contains(&name) || name == "SYS" || name == "RTMIN" || name == "RTMAX" {
        return true;
    }
    let offset = |rest: &str| rest.parse::<u32>().is_ok_and(|n| (1..=15).contains(&n));
    name.strip_prefix("RTMIN+").is_some_and(offset) || name.strip_prefix("RTMAX-").is_some_and(offset)
}

const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's names, with or without `CAP_`, in any case, or `ALL`.
fn is_valid_capability(capability: &str) -> bool {
    let upper = capability.to_ascii_uppercase();
    let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
    name == "ALL" || CAPABILITIES.contains(&name)
}
