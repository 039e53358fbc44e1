//! One Compose service to one kedge document: the support matrix, key by key. Every key of a service
//! is converted, warned about (no runtime effect) or refused, in [`convert_service`]'s one `match`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::{dns_label, document, normalize, read_env_file, Project, Report};
use crate::container::KIND_CONTAINER;
use crate::container_set::KIND_CONTAINER_SET;
use crate::yaml::{PositionIndex, PositionedDocument};

/// The label on every converted object naming its Compose project, and the one naming its service.
pub const PROJECT_LABEL: &str = "kedge.io/compose-project";
pub const SERVICE_LABEL: &str = "kedge.io/compose-service";

/// What every service needs to know of the others: its spec name, whether it runs, whether it is a set.
struct Known {
    spec_name: String,
    active: bool,
    replicated: bool,
}

/// Every active service of the file to a document (profiles not asked for are skipped).
pub(super) fn convert_services(
    project: &Project,
    services: &Map<String, Value>,
    report: &mut Report,
) -> Vec<PositionedDocument> {
    let mut known = BTreeMap::new();
    for (name, service) in services {
        let active = match service.get("profiles") {
            Some(Value::Array(profiles)) => {
                profiles.iter().any(|p| p.as_str().is_some_and(|p| project.profiles.iter().any(|a| a == p)))
            }
            _ => true,
        };
        let spec_name = match service.get("container_name") {
            Some(Value::String(given)) => given.clone(),
            _ => project.spec_name(name),
        };
        known.insert(name.clone(), Known { spec_name, active, replicated: replicas(service).is_some() });
    }
    let mut documents = Vec::new();
    for (name, service) in services {
        if !known.get(name).is_some_and(|k| k.active) {
            continue;
        }
        let path = format!("services.{name}");
        let Value::Object(service) = service else {
            report.error(&path, "a service must be a map");
            continue;
        };
        documents.push(convert_service(project, name, service, &known, report));
    }
    documents
}

/// `deploy.replicas` (or the older `scale`), when given.
fn replicas(service: &Value) -> Option<u64> {
    service
        .get("deploy")
        .and_then(|deploy| deploy.get("replicas"))
        .or_else(|| service.get("scale"))
        .and_then(Value::as_u64)
}

/// The kedge spec being built, with the index from its paths to the Compose keys they came from.
struct Spec<'r, 'a> {
    fields: Map<String, Value>,
    index: PositionIndex,
    prefix: String,
    report: &'r mut Report<'a>,
}

impl Spec<'_, '_> {
    /// Sets `field` of the spec, placed at the Compose key `from`.
    fn set(&mut self, field: &str, value: Value, from: &str) {
        let position = self.report.position(from);
        self.index.set_value(format!("{}.{field}", self.prefix), position);
        self.fields.insert(field.to_owned(), value);
    }

    /// Appends to the list `field`, each item placed at its Compose path.
    fn push(&mut self, field: &str, value: Value, from: &str) {
        let list = self.fields.entry(field.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(items) = list else { return };
        let index = items.len();
        items.push(value);
        let position = self.report.position(from);
        if index == 0 {
            self.index.set_value(format!("{}.{field}", self.prefix), position);
        }
        self.index.set_value(format!("{}.{field}[{index}]", self.prefix), position);
    }

    /// Sets `key` of the map `field` (`resources`, `restartPolicy`).
    fn set_in(&mut self, field: &str, key: &str, value: Value, from: &str) {
        let position = self.report.position(from);
        self.index.set_value(format!("{}.{field}.{key}", self.prefix), position);
        if let Value::Object(map) = self.fields.entry(field.to_owned()).or_insert_with(|| json!({})) {
            map.insert(key.to_owned(), value);
        }
    }
}

fn convert_service(
    project: &Project,
    name: &str,
    service: &Map<String, Value>,
    known: &BTreeMap<String, Known>,
    report: &mut Report,
) -> PositionedDocument {
    let path = format!("services.{name}");
    let start = report.position(&path);
    let replicas = replicas(&Value::Object(service.clone()));
    let prefix = if replicas.is_some() { "spec.template.spec" } else { "spec" };
    let mut spec =
        Spec { fields: Map::new(), index: PositionIndex::default(), prefix: prefix.to_owned(), report };
    spec.index.set_value(String::new(), start);
    let spec_name = known.get(name).map(|k| k.spec_name.clone()).unwrap_or_default();
    let mut environment: BTreeMap<String, String> = BTreeMap::new();
    let mut env_from_files: BTreeMap<String, String> = BTreeMap::new();
    let mut env_position = String::new();
    let mut has_networks = false;
    for (key, value) in service {
        let at = format!("{path}.{key}");
        let r = &mut *spec.report;
        match key.as_str() {
            "image" => match value {
                Value::String(image) => spec.set("image", json!(image), &at),
                _ => r.error(&at, "`image` must be a string"),
            },
            "build" if service.contains_key("image") => r.warn(
                &at,
                "`build` has no effect: kedge runs images and builds none; the image must exist on the host or in a registry",
            ),
            "build" => r.error(&at, "`build` without `image` is not supported: kedge builds no images; build and push it, then name it in `image`"),
            "container_name" if replicas.is_some() => r.error(&at, "`container_name` names one container: it cannot be used with replicas"),
            "container_name" => {}
            "profiles" => {}
            "command" | "entrypoint" => {
                if let Some(words) = words(value, &at, r) {
                    spec.set(key, json!(words), &at);
                }
            }
            "environment" => {
                env_position = at.clone();
                for (variable, value) in key_values(value, &at, r, Some(&project.environment)) {
                    environment.insert(variable, value);
                }
            }
            "env_file" => {
                let files: Vec<(String, bool)> = match value {
                    Value::String(file) => vec![(file.clone(), true)],
                    Value::Array(items) => items
                        .iter()
                        .filter_map(|item| match item {
                            Value::String(file) => Some((file.clone(), true)),
                            Value::Object(map) => map.get("path").and_then(Value::as_str).map(|file| {
                                (file.to_owned(), map.get("required").and_then(Value::as_bool).unwrap_or(true))
                            }),
                            _ => None,
                        })
                        .collect(),
                    _ => {
                        r.error(&at, "`env_file` must be a path or a list of paths");
                        Vec::new()
                    }
                };
                for (file, required) in files {
                    let full = project.directory.join(&file);
                    match project.read(&full) {
                        Ok(text) => env_from_files.extend(read_env_file(&text, &project.environment)),
                        Err(_) if !required => {}
                        Err(error) => r.error(&at, format!("cannot read the env_file {}: {error}", full.display())),
                    }
                }
                if env_position.is_empty() {
                    env_position = at.clone();
                }
            }
            "labels" => {
                let labels: Map<String, Value> =
                    key_values(value, &at, r, None).into_iter().map(|(k, v)| (k, json!(v))).collect();
                spec.set("labels", Value::Object(labels), &at);
            }
            "user" | "hostname" | "stop_signal" | "stop_grace_period" | "pid" | "ipc" => {
                let field = match key.as_str() {
                    "user" => "user",
                    "hostname" => "hostname",
                    "stop_signal" => "stopSignal",
                    "stop_grace_period" => "stopGracePeriod",
                    "pid" => "pidMode",
                    _ => "ipcMode",
                };
                match scalar(value) {
                    Some(text) => spec.set(field, json!(text), &at),
                    None => r.error(&at, format!("`{key}` must be a string")),
                }
            }
            "working_dir" => match value {
                Value::String(dir) => spec.set("workingDir", json!(dir), &at),
                _ => r.error(&at, "`working_dir` must be a string"),
            },
            "privileged" | "read_only" => {
                let field = if key == "privileged" { "privileged" } else { "readOnlyRootfs" };
                spec.set(field, value.clone(), &at);
            }
            "cap_add" | "cap_drop" | "security_opt" | "devices" => {
                let field = match key.as_str() {
                    "cap_add" => "capAdd",
                    "cap_drop" => "capDrop",
                    "security_opt" => "securityOpt",
                    _ => "devices",
                };
                spec.set(field, value.clone(), &at);
            }
            "sysctls" => {
                let sysctls: Map<String, Value> =
                    key_values(value, &at, r, None).into_iter().map(|(k, v)| (k, json!(v))).collect();
                spec.set("sysctls", Value::Object(sysctls), &at);
            }
            "ports" => ports(value, &at, &mut spec),
            "expose" => r.warn(&at, "`expose` has no effect: containers on a network reach each other on every port"),
            "volumes" => volumes(project, value, &at, &mut spec),
            "tmpfs" => {
                let items = match value {
                    Value::String(one) => vec![one.clone()],
                    Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
                    _ => Vec::new(),
                };
                for (index, item) in items.iter().enumerate() {
                    let item_at = if value.is_array() { format!("{at}[{index}]") } else { at.clone() };
                    let (target, options) = item.split_once(':').unwrap_or((item, ""));
                    let mut mount = json!({"type": "tmpfs", "target": target});
                    for option in options.split(',').filter(|o| !o.is_empty()) {
                        match option.split_once('=') {
                            Some(("size", size)) => mount["tmpfsSize"] = json!(size),
                            Some(("mode", mode)) => mount["tmpfsMode"] = json!(mode),
                            _ => spec.report.error(&item_at, format!("the tmpfs option `{option}` is not supported (only `size` and `mode`)")),
                        }
                    }
                    spec.push("mounts", mount, &item_at);
                }
            }
            "networks" => {
                has_networks = true;
                networks(project, name, value, &at, &mut spec);
            }
            "network_mode" => match value.as_str() {
                Some(mode @ ("host" | "none" | "bridge")) => spec.set("networkMode", json!(mode), &at),
                Some(mode) => match mode.strip_prefix("service:") {
                    Some(other) => match known.get(other) {
                        Some(k) if k.active && !k.replicated => {
                            spec.set("networkMode", json!(format!("container:{}", k.spec_name)), &at)
                        }
                        Some(k) if k.replicated => r.error(&at, format!("`{other}` has replicas: a network mode can join only one container")),
                        _ => r.error(&at, format!("no active service `{other}`")),
                    },
                    None => r.error(&at, format!("the network mode `{mode}` is not supported (host, none, bridge or service:NAME)")),
                },
                None => r.error(&at, "`network_mode` must be a string"),
            },
            "links" => {
                for (index, link) in value.as_array().into_iter().flatten().enumerate() {
                    let item_at = format!("{at}[{index}]");
                    let Some(link) = link.as_str() else { continue };
                    let (other, alias) = link.split_once(':').unwrap_or((link, link));
                    match known.get(other) {
                        Some(k) if k.active && !k.replicated => {
                            spec.push("links", json!({"name": k.spec_name, "alias": alias}), &item_at)
                        }
                        _ => spec.report.error(&item_at, format!("no active service `{other}` without replicas to link to")),
                    }
                }
            }
            "depends_on" => depends_on(value, &at, known, &mut spec),
            "healthcheck" => healthcheck(value, &at, &mut spec),
            "restart" => match value.as_str() {
                Some(policy) => {
                    let (policy_name, count) = policy.split_once(':').unwrap_or((policy, ""));
                    let mut restart = json!({"name": policy_name});
                    if !count.is_empty() {
                        match count.parse::<u32>() {
                            Ok(count) => restart["maximumRetryCount"] = json!(count),
                            Err(_) => r.error(&at, format!("invalid retry count `{count}`")),
                        }
                    }
                    spec.set("restartPolicy", restart, &at);
                }
                None => r.error(&at, "`restart` must be a string"),
            },
            "deploy" => deploy(value, &at, &mut spec),
            "scale" => r.warn(&at, "`scale` is read as `deploy.replicas`"),
            "mem_limit" | "mem_reservation" | "memswap_limit" | "cpus" | "cpu_shares" | "cpu_quota" | "cpu_period"
            | "cpuset" | "pids_limit" => {
                let field = match key.as_str() {
                    "mem_limit" => "memory",
                    "mem_reservation" => "memoryReservation",
                    "memswap_limit" => "memorySwap",
                    "cpus" => "cpus",
                    "cpu_shares" => "cpuShares",
                    "cpu_quota" => "cpuQuota",
                    "cpu_period" => "cpuPeriod",
                    "cpuset" => "cpusetCpus",
                    _ => "pidsLimit",
                };
                let value = match (field, value) {
                    ("memory" | "memoryReservation" | "memorySwap" | "cpus" | "cpusetCpus", Value::Number(n)) => json!(n.to_string()),
                    _ => value.clone(),
                };
                spec.set_in("resources", field, value, &at);
            }
            "init" => spec.set("init", value.clone(), &at),
            "tty" => spec.set("tty", value.clone(), &at),
            "stdin_open" => spec.set("stdinOpen", value.clone(), &at),
            "dns" | "dns_search" | "dns_opt" => {
                let field = match key.as_str() {
                    "dns" => "dns",
                    "dns_search" => "dnsSearch",
                    _ => "dnsOptions",
                };
                let items: Vec<Value> = match value {
                    Value::Array(items) => items.iter().map(|item| json!(scalar(item).unwrap_or_default())).collect(),
                    one => match scalar(one) {
                        Some(one) => vec![json!(one)],
                        None => {
                            r.error(&at, format!("`{key}` must be a string or a list of strings"));
                            Vec::new()
                        }
                    },
                };
                spec.set(field, Value::Array(items), &at);
            }
            "secrets" | "configs" => file_mounts(project, key, value, &at, &mut spec),
            "shm_size" => match scalar(value) {
                Some(size) => spec.set("shmSize", json!(size), &at),
                None => r.error(&at, "`shm_size` must be a size such as `128m`"),
            },
            "extra_hosts" => {
                let hosts: Vec<Value> = match value {
                    // The map form (`host: ip`) is Compose's newer spelling of `host:ip`.
                    Value::Object(map) => map.iter().map(|(host, ip)| json!(format!("{host}:{}", scalar(ip).unwrap_or_default()))).collect(),
                    Value::Array(items) => items.iter().map(|item| json!(scalar(item).unwrap_or_default().replacen('=', ":", 1))).collect(),
                    _ => {
                        r.error(&at, "`extra_hosts` must be a list of `HOST:IP` or a map");
                        Vec::new()
                    }
                };
                spec.set("extraHosts", Value::Array(hosts), &at);
            }
            "ulimits" => {
                let mut limits = Map::new();
                for (limit, setting) in value.as_object().into_iter().flatten() {
                    let converted = match setting {
                        Value::Number(both) => Some(json!({"soft": both, "hard": both})),
                        Value::Object(pair) => match (pair.get("soft"), pair.get("hard")) {
                            (Some(soft), Some(hard)) => Some(json!({"soft": soft, "hard": hard})),
                            _ => None,
                        },
                        _ => None,
                    };
                    match converted {
                        Some(converted) => drop(limits.insert(limit.clone(), converted)),
                        None => r.error(&format!("{at}.{limit}"), "a ulimit is a number or `{soft, hard}`"),
                    }
                }
                if !value.is_object() {
                    r.error(&at, "`ulimits` must be a map");
                }
                spec.set("ulimits", Value::Object(limits), &at);
            }
            "logging" => {
                let driver = value.get("driver").and_then(Value::as_str).unwrap_or("json-file");
                let mut logging = json!({"driver": driver});
                if let Some(options) = value.get("options") {
                    let options: Map<String, Value> =
                        key_values(options, &format!("{at}.options"), r, None).into_iter().map(|(k, v)| (k, json!(v))).collect();
                    logging["options"] = Value::Object(options);
                }
                for other in value.as_object().into_iter().flat_map(|m| m.keys()) {
                    if other != "driver" && other != "options" {
                        r.unsupported(&format!("{at}.{other}"), other);
                    }
                }
                spec.set("logging", logging, &at);
            }
            key if key.starts_with("x-") => {}
            _ => r.unsupported(&at, key),
        }
    }
    if !environment.is_empty() || !env_from_files.is_empty() {
        env_from_files.extend(environment);
        let env: Map<String, Value> = env_from_files.into_iter().map(|(k, v)| (k, json!(v))).collect();
        spec.set("env", Value::Object(env), &env_position);
    }
    if !has_networks && !service.contains_key("network_mode") {
        let default = project.networks.get("default").cloned().unwrap_or_default();
        spec.set("networks", json!([{"name": default, "aliases": [name]}]), &path);
    }
    if !service.contains_key("image") && !service.contains_key("build") {
        spec.report.error(&path, "a service needs an `image`");
    }
    let metadata = json!({
        "name": spec_name,
        "namespace": project.namespace(),
        "labels": {PROJECT_LABEL: dns_label(&project.name), SERVICE_LABEL: dns_label(name)},
    });
    let Spec { fields, mut index, .. } = spec;
    index.set_value("metadata".to_owned(), start);
    match replicas {
        Some(replicas) => document(
            KIND_CONTAINER_SET,
            metadata,
            json!({"replicas": replicas, "template": {"spec": Value::Object(fields)}}),
            index,
            start,
        ),
        None => document(KIND_CONTAINER, metadata, Value::Object(fields), index, start),
    }
}

/// A string or a number as text.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// `command`/`entrypoint`: a list as it is, or a string split as a POSIX shell would (Compose uses
/// Python's `shlex.split`).
fn words(value: &Value, at: &str, report: &mut Report) -> Option<Vec<String>> {
    match value {
        Value::String(text) => match shlex::split(text) {
            Some(words) => Some(words),
            None => {
                report.error(at, "the command does not split into words (an unclosed quote?)");
                None
            }
        },
        Value::Array(items) => Some(items.iter().map(|item| scalar(item).unwrap_or_default()).collect()),
        Value::Null => Some(Vec::new()),
        _ => {
            report.error(at, "must be a string or a list of strings");
            None
        }
    }
}

/// A map, or a list of `KEY=VALUE` (`environment`, `labels`, `sysctls`, logging options). With
/// `environment`, a key without a value is taken from it, or left out when unset.
fn key_values(
    value: &Value,
    at: &str,
    report: &mut Report,
    environment: Option<&BTreeMap<String, String>>,
) -> Vec<(String, String)> {
    let from_environment = |key: &str| environment.and_then(|e| e.get(key).cloned());
    match value {
        Value::Object(map) => map
            .iter()
            .filter_map(|(key, value)| match value {
                Value::Null => from_environment(key)
                    .or_else(|| environment.is_none().then(String::new))
                    .map(|v| (key.clone(), v)),
                Value::Bool(flag) => Some((key.clone(), flag.to_string())),
                other => scalar(other).map(|v| (key.clone(), v)),
            })
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| {
                let text = scalar(item)?;
                match text.split_once('=') {
                    Some((key, value)) => Some((key.to_owned(), value.to_owned())),
                    None => from_environment(&text)
                        .or_else(|| environment.is_none().then(String::new))
                        .map(|v| (text, v)),
                }
            })
            .collect(),
        _ => {
            report.error(at, "must be a map or a list of `KEY=VALUE`");
            Vec::new()
        }
    }
}

fn ports(value: &Value, at: &str, spec: &mut Spec) {
    let Value::Array(items) = value else {
        spec.report.error(at, "`ports` must be a list");
        return;
    };
    for (index, item) in items.iter().enumerate() {
        let item_at = format!("{at}[{index}]");
        match item {
            Value::Object(long) => {
                let mut port = json!({"containerPort": long.get("target").cloned().unwrap_or(Value::Null)});
                for (key, setting) in long {
                    match key.as_str() {
                        "target" => {}
                        "published" => match scalar(setting).map(|p| p.parse::<u16>()) {
                            Some(Ok(published)) => port["hostPort"] = json!(published),
                            _ => spec.report.error(
                                &format!("{item_at}.published"),
                                "`published` must be one port number",
                            ),
                        },
                        "host_ip" => port["hostIp"] = setting.clone(),
                        "protocol" => port["protocol"] = setting.clone(),
                        "mode" => {}
                        "name" | "app_protocol" => spec
                            .report
                            .warn(&format!("{item_at}.{key}"), format!("`{key}` has no runtime effect")),
                        other => spec.report.unsupported(&format!("{item_at}.{other}"), other),
                    }
                }
                spec.push("ports", port, &item_at);
            }
            other => match scalar(other).map(|text| short_port(&text)) {
                Some(Ok(ports)) => ports.into_iter().for_each(|port| spec.push("ports", port, &item_at)),
                Some(Err(message)) => spec.report.error(&item_at, message),
                None => spec.report.error(&item_at, "a port is a string, a number or a map"),
            },
        }
    }
}

/// `[[HOST_IP:]HOST_PORT:]CONTAINER_PORT[/PROTOCOL]`, with ranges (`8000-8001:80-81`) as one mapping
/// per port.
pub(super) fn short_port(text: &str) -> Result<Vec<Value>, String> {
    let invalid = |why: &str| format!("invalid port `{text}`: {why}");
    let (mapping, protocol) = text.rsplit_once('/').unwrap_or((text, "tcp"));
    let (rest, container) = match mapping.rsplit_once(':') {
        Some((rest, container)) => (Some(rest), container),
        None => (None, mapping),
    };
    let (host_ip, host) = match rest {
        None => (None, ""),
        Some(rest) => match rest.rsplit_once(':') {
            Some((ip, host)) => (Some(ip.trim_start_matches('[').trim_end_matches(']')), host),
            None => (None, rest),
        },
    };
    let range = |text: &str| -> Result<(u16, u16), String> {
        let (first, last) = text.split_once('-').unwrap_or((text, text));
        let first = first.parse::<u16>().map_err(|_| invalid("not a port number"))?;
        let last = last.parse::<u16>().map_err(|_| invalid("not a port number"))?;
        if last < first {
            return Err(invalid("a range must go up"));
        }
        Ok((first, last))
    };
    let (container_first, container_last) = range(container)?;
    let host_range = if host.is_empty() { None } else { Some(range(host)?) };
    if let Some((first, last)) = host_range {
        if last - first != container_last - container_first {
            return Err(invalid("the host and container ranges must be of one length"));
        }
    }
    Ok((0..=(container_last - container_first))
        .map(|offset| {
            let mut port = json!({"containerPort": container_first + offset, "protocol": protocol});
            if let Some((first, _)) = host_range {
                port["hostPort"] = json!(first + offset);
            }
            if let Some(ip) = host_ip.filter(|ip| !ip.is_empty()) {
                port["hostIp"] = json!(ip);
            }
            port
        })
        .collect())
}

/// A service's `secrets` or `configs`: each a read-only bind of the top-level entry's file, at
/// `/run/secrets/NAME` (a secret) or `/NAME` (a config) unless `target` says otherwise, as Compose
/// mounts them without Swarm. `uid`, `gid` and `mode` are errors: a bind keeps the file's own.
fn file_mounts(project: &Project, key: &str, value: &Value, at: &str, spec: &mut Spec) {
    let Value::Array(items) = value else {
        spec.report.error(at, format!("`{key}` must be a list"));
        return;
    };
    let (declared, under) =
        if key == "secrets" { (&project.secrets, "/run/secrets/") } else { (&project.configs, "/") };
    for (index, item) in items.iter().enumerate() {
        let item_at = format!("{at}[{index}]");
        let (name, target) = match item {
            Value::String(name) => (name.clone(), None),
            Value::Object(long) => {
                for (option, _) in long {
                    match option.as_str() {
                        "source" | "target" => {}
                        other if other.starts_with("x-") => {}
                        other => spec.report.unsupported(&format!("{item_at}.{other}"), other),
                    }
                }
                let Some(name) = long.get("source").and_then(Value::as_str) else {
                    spec.report.error(&item_at, "needs a `source`");
                    continue;
                };
                (name.to_owned(), long.get("target").and_then(Value::as_str).map(str::to_owned))
            }
            _ => {
                spec.report.error(&item_at, "must be a name or a map with `source`");
                continue;
            }
        };
        let Some(file) = declared.get(&name) else {
            spec.report.error(
                &item_at,
                format!("`{name}` is not declared under the top-level `{key}` with a `file`"),
            );
            continue;
        };
        let file = if file.starts_with(['/', '.', '~']) { file.clone() } else { format!("./{file}") };
        let Some((_, path)) = source(project, &file, &item_at, spec.report) else { continue };
        let target = match target {
            Some(target) if target.starts_with('/') => target,
            Some(target) => format!("{under}{target}"),
            None => format!("{under}{name}"),
        };
        spec.push(
            "mounts",
            json!({"type": "bind", "source": path, "target": target, "readOnly": true}),
            &item_at,
        );
    }
}

fn volumes(project: &Project, value: &Value, at: &str, spec: &mut Spec) {
    let Value::Array(items) = value else {
        spec.report.error(at, "`volumes` must be a list");
        return;
    };
    for (index, item) in items.iter().enumerate() {
        let item_at = format!("{at}[{index}]");
        let mount = match item {
            Value::String(short) => short_volume(project, short, &item_at, spec.report),
            Value::Object(long) => long_volume(project, long, &item_at, spec.report),
            _ => {
                spec.report.error(&item_at, "a volume is a string or a map");
                None
            }
        };
        if let Some(mount) = mount {
            spec.push("mounts", mount, &item_at);
        }
    }
}

/// A bind's source, a named volume's Docker name, or an error for an undeclared volume.
fn source(project: &Project, source: &str, at: &str, report: &mut Report) -> Option<(&'static str, String)> {
    if source.starts_with('.') || source.starts_with('/') || source.starts_with('~') {
        if project.commit_files.is_some() && !source.starts_with('/') {
            report.error(
                at,
                format!("the relative bind path `{source}` cannot be used from a GitSource: the repository is not on the host the container runs on; give an absolute path or a named volume"),
            );
            return None;
        }
        if project.commit_files.is_some() {
            return Some(("bind", normalize(Path::new(source)).display().to_string()));
        }
        let path = match source.strip_prefix('~') {
            Some(rest) => Path::new(project.environment.get("HOME").map_or("/", String::as_str))
                .join(rest.trim_start_matches('/')),
            None => project.directory.join(source),
        };
        let path = normalize(&path);
        if !path.exists() {
            report.warn(at, format!("the bind source {} does not exist here: Docker will refuse to start the container where it is missing (kedge does not create it)", path.display()));
        }
        return Some(("bind", path.display().to_string()));
    }
    match project.volumes.get(source) {
        Some(name) => Some(("volume", name.clone())),
        None => {
            report.error(
                at,
                format!("the named volume `{source}` is not declared under the top-level `volumes`"),
            );
            None
        }
    }
}

fn short_volume(project: &Project, short: &str, at: &str, report: &mut Report) -> Option<Value> {
    let Some((from, rest)) = short.split_once(':') else {
        return Some(json!({"type": "volume", "target": short}));
    };
    let (target, mode) = rest.split_once(':').unwrap_or((rest, ""));
    let mut read_only = None;
    for option in mode.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = Some(true),
            "rw" => read_only = Some(false),
            "cached" | "delegated" | "consistent" => {
                report.warn(at, format!("`{option}` has no effect on Linux"))
            }
            other => {
                report.error(at, format!("the volume option `{other}` is not supported (only `ro` and `rw`)"))
            }
        }
    }
    let (kind, source) = source(project, from, at, report)?;
    let mut mount = json!({"type": kind, "source": source, "target": target});
    if let Some(read_only) = read_only {
        mount["readOnly"] = json!(read_only);
    }
    Some(mount)
}

fn long_volume(project: &Project, long: &Map<String, Value>, at: &str, report: &mut Report) -> Option<Value> {
    let kind = long.get("type").and_then(Value::as_str).unwrap_or("volume");
    let target = long.get("target").and_then(Value::as_str).unwrap_or_default();
    let mut mount = json!({"type": kind, "target": target});
    for (key, setting) in long {
        let key_at = format!("{at}.{key}");
        match (key.as_str(), setting) {
            ("type", Value::String(kind)) if ["bind", "volume", "tmpfs"].contains(&kind.as_str()) => {}
            ("type", _) => report.error(&key_at, "the type must be `bind`, `volume` or `tmpfs`"),
            ("target", _) => {}
            ("source", Value::String(from)) => {
                let (found, name) = source(project, from, &key_at, report)?;
                if kind == "bind" && found == "volume" {
                    report.error(&key_at, "a bind's source must be a path (`./dir`, `/dir`)");
                }
                mount["source"] = json!(name);
            }
            ("read_only", _) => mount["readOnly"] = setting.clone(),
            ("tmpfs", Value::Object(options)) => {
                for (option, value) in options {
                    match option.as_str() {
                        "size" => mount["tmpfsSize"] = json!(scalar(value).unwrap_or_default()),
                        // Written as octal digits (`1770`), whether as a number or a string.
                        "mode" => mount["tmpfsMode"] = json!(scalar(value).unwrap_or_default()),
                        other => report.unsupported(&format!("{key_at}.{other}"), other),
                    }
                }
            }
            ("bind", Value::Object(options)) => {
                for option in options.keys() {
                    match option.as_str() {
                        "create_host_path" => report.warn(
                            &format!("{key_at}.{option}"),
                            "kedge does not create a missing bind source",
                        ),
                        other => report.unsupported(&format!("{key_at}.{other}"), other),
                    }
                }
            }
            ("consistency", _) => report.warn(&key_at, "`consistency` has no effect on Linux"),
            (other, _) => report.unsupported(&key_at, other),
        }
    }
    Some(mount)
}

fn networks(project: &Project, service: &str, value: &Value, at: &str, spec: &mut Spec) {
    let entries: Vec<(String, Value, String)> = match value {
        Value::Array(names) => names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_str().map(|n| (n.to_owned(), Value::Null, format!("{at}[{i}]"))))
            .collect(),
        Value::Object(map) => map.iter().map(|(n, v)| (n.clone(), v.clone(), format!("{at}.{n}"))).collect(),
        _ => {
            spec.report.error(at, "`networks` must be a list or a map");
            return;
        }
    };
    for (network, settings, network_at) in entries {
        let Some(docker_name) = project.networks.get(&network) else {
            spec.report.error(
                &network_at,
                format!("the network `{network}` is not declared under the top-level `networks`"),
            );
            continue;
        };
        let mut aliases = vec![json!(service)];
        let mut attachment = json!({"name": docker_name});
        for (key, setting) in settings.as_object().into_iter().flatten() {
            match key.as_str() {
                "aliases" => aliases.extend(setting.as_array().cloned().unwrap_or_default()),
                "ipv4_address" => attachment["ipv4Address"] = setting.clone(),
                other => spec.report.unsupported(&format!("{network_at}.{other}"), other),
            }
        }
        attachment["aliases"] = Value::Array(aliases);
        spec.push("networks", attachment, &network_at);
    }
}

fn depends_on(value: &Value, at: &str, known: &BTreeMap<String, Known>, spec: &mut Spec) {
    let entries: Vec<(String, &str, String)> = match value {
        Value::Array(names) => names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_str().map(|n| (n.to_owned(), "service_started", format!("{at}[{i}]"))))
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(n, v)| {
                let condition = v.get("condition").and_then(Value::as_str).unwrap_or("service_started");
                (n.clone(), condition, format!("{at}.{n}"))
            })
            .collect(),
        _ => {
            spec.report.error(at, "`depends_on` must be a list or a map");
            return;
        }
    };
    for (other, condition, other_at) in entries {
        let condition = match condition {
            "service_started" => "started",
            "service_healthy" => "healthy",
            "service_completed_successfully" => "completed",
            other => {
                spec.report.error(&other_at, format!("unknown condition `{other}`"));
                continue;
            }
        };
        match known.get(&other) {
            Some(k) if k.replicated => spec
                .report
                .error(&other_at, format!("`{other}` has replicas: kedge's dependencies name one container")),
            Some(k) if !k.active => {
                spec.report.error(&other_at, format!("`{other}` is not enabled by the active profiles"))
            }
            Some(k) => {
                spec.push("dependsOn", json!({"name": k.spec_name, "condition": condition}), &other_at)
            }
            None => spec.report.error(&other_at, format!("no service `{other}`")),
        }
    }
}

fn healthcheck(value: &Value, at: &str, spec: &mut Spec) {
    let Value::Object(settings) = value else {
        spec.report.error(at, "`healthcheck` must be a map");
        return;
    };
    if settings.get("disable").and_then(Value::as_bool) == Some(true) {
        spec.set("healthcheck", json!({"test": ["NONE"]}), at);
        return;
    }
    let mut check = Map::new();
    for (key, setting) in settings {
        let key_at = format!("{at}.{key}");
        match key.as_str() {
            "test" => {
                let test = match setting {
                    Value::String(shell) => json!(["CMD-SHELL", shell]),
                    other => other.clone(),
                };
                check.insert("test".into(), test);
            }
            "interval" | "timeout" | "start_period" | "start_interval" | "retries" => {
                let field = match key.as_str() {
                    "start_period" => "startPeriod",
                    "start_interval" => "startInterval",
                    other => other,
                };
                check.insert(field.into(), setting.clone());
            }
            "disable" => {}
            other => spec.report.unsupported(&key_at, other),
        }
    }
    spec.set("healthcheck", Value::Object(check), at);
}

fn deploy(value: &Value, at: &str, spec: &mut Spec) {
    for (key, setting) in value.as_object().into_iter().flatten() {
        let key_at = format!("{at}.{key}");
        match key.as_str() {
            "replicas" => {}
            "resources" => {
                for (kind, limits) in setting.as_object().into_iter().flatten() {
                    let kind_at = format!("{key_at}.{kind}");
                    for (limit, amount) in limits.as_object().into_iter().flatten() {
                        let limit_at = format!("{kind_at}.{limit}");
                        let field = match (kind.as_str(), limit.as_str()) {
                            ("limits", "cpus") => "cpus",
                            ("limits", "memory") => "memory",
                            ("limits", "pids") => "pidsLimit",
                            ("reservations", "memory") => "memoryReservation",
                            ("reservations", "cpus") => {
                                spec.report.warn(&limit_at, "a CPU reservation has no effect outside Swarm");
                                continue;
                            }
                            (_, other) => {
                                spec.report.unsupported(&limit_at, other);
                                continue;
                            }
                        };
                        let amount = match amount {
                            Value::Number(n) if field != "pidsLimit" => json!(n.to_string()),
                            other => other.clone(),
                        };
                        spec.set_in("resources", field, amount, &limit_at);
                    }
                }
            }
            "restart_policy" => {
                let mut restart = Map::new();
                for (option, setting) in setting.as_object().into_iter().flatten() {
                    match (option.as_str(), setting.as_str()) {
                        ("condition", Some("none")) => drop(restart.insert("name".into(), json!("no"))),
                        ("condition", Some("any")) => drop(restart.insert("name".into(), json!("always"))),
                        ("condition", Some("on-failure")) => {
                            drop(restart.insert("name".into(), json!("on-failure")))
                        }
                        ("max_attempts", _) => {
                            drop(restart.insert("maximumRetryCount".into(), setting.clone()))
                        }
                        (other, _) => spec.report.unsupported(&format!("{key_at}.{other}"), other),
                    }
                }
                restart.entry("name").or_insert(json!("always"));
                spec.set("restartPolicy", Value::Object(restart), &key_at);
            }
            other => spec.report.unsupported(&key_at, other),
        }
    }
}
