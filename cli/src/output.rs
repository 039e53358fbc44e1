//! Everything `kedge` prints: tables, ages, YAML, describe pages. Pure functions of their input and a
//! fixed `now`, so the golden tests can pin them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use kedge_crds::campaign::{Campaign, CampaignState, HostUpgrade, HostUpgradeState};
use kedge_crds::event::Event;
use kedge_crds::{condition_type, Condition, Container, ContainerStatus, ObjectMeta};
use serde_json::Value;

use crate::types::{HostView, InvalidEntry};

/// Shown for a value that is not there, as kubectl does.
pub const NONE: &str = "<none>";

/// Left-aligned columns separated by three spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    table_at_least(header, rows, 0)
}

/// [`table`] with every column at least `min_width` characters wide: `get -w` prints its first table
/// so, and the rows it streams after with the same [`column_widths`], so that they line up.
pub fn table_at_least(header: &[&str], rows: &[Vec<String>], min_width: usize) -> String {
    let widths = column_widths(header, rows, min_width);
    let mut out = String::new();
    let header_row: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        out.push_str(&table_row(&widths, row));
        out.push('\n');
    }
    out
}

/// Each column's width in characters (not bytes): the widest of its header and cells, and `min_width`.
pub fn column_widths(header: &[&str], rows: &[Vec<String>], min_width: usize) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count().max(min_width)).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if index < widths.len() {
                widths[index] = widths[index].max(cell.chars().count());
            }
        }
    }
    widths
}

/// Bytes as megabytes with one decimal (`12.3`), as pull progress reads.
fn megabytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1_000_000.0)
}

/// One row padded to `widths` (for streaming rows under a header printed earlier).
pub fn table_row(widths: &[usize], row: &[String]) -> String {
    let mut line = String::new();
    for (index, cell) in row.iter().enumerate() {
        if index + 1 == row.len() {
            line.push_str(cell);
        } else {
            // `{:<width$}` pads by characters, as the widths are counted.
            let width = widths.get(index).copied().unwrap_or(0);
            let _ = write!(line, "{cell:<width$}   ");
        }
    }
    line.trim_end().to_owned()
}

/// The columns of `kedge token list`.
pub const TOKEN_HEADER: [&str; 5] = ["ID", "ROLE", "NAMESPACES", "EXPIRES", "AGE"];

/// A row of `kedge token list`: never a secret (the API has none to give).
pub fn token_row(token: &kedge_crds::token::Token, now: DateTime<Utc>) -> Vec<String> {
    let namespaces = if token.namespaces.is_empty() { "*".to_owned() } else { token.namespaces.join(",") };
    vec![
        token.id.clone(),
        token.role.to_string(),
        namespaces,
        token.expires.clone().unwrap_or_else(|| NONE.to_owned()),
        age(Some(&token.created), now),
    ]
}

/// What a token may do, in words: `deployer in a, b`.
pub fn token_scope(token: &kedge_crds::token::Token) -> String {
    if token.namespaces.is_empty() {
        token.role.to_string()
    } else {
        format!("{} in {}", token.role, token.namespaces.join(", "))
    }
}

/// kubectl's short age: `5s`, `3m`, `2h`, `4d`, `1y`.
pub fn age(since: Option<&str>, now: DateTime<Utc>) -> String {
    let Some(since) = since.and_then(|s| DateTime::parse_from_rfc3339(s).ok()) else {
        return NONE.to_owned();
    };
    let seconds = (now - since.with_timezone(&Utc)).num_seconds();
    match seconds {
        s if s < -1 => "<invalid>".to_owned(),
        s if s < 0 => "0s".to_owned(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s if s < 365 * 86_400 => format!("{}d", s / 86_400),
        s => format!("{}y", s / (365 * 86_400)),
    }
}

/// How `get containers` shows a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions {
    pub wide: bool,
    /// Adds a NAMESPACE column (with `-A`).
    pub namespaces: bool,
}

pub fn container_header(options: TableOptions) -> Vec<&'static str> {
    let mut header = Vec::new();
    if options.namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "HOST", "IMAGE", "READY", "SYNCED", "RESTARTS", "AGE"]);
    if options.wide {
        header.extend(["GENERATION", "CONTAINER", "DRIFT", "REASON"]);
    }
    header
}

pub fn container_row(container: &Container, options: TableOptions, now: DateTime<Utc>) -> Vec<String> {
    let status = container.status.as_ref();
    let mut row = Vec::new();
    if options.namespaces {
        row.push(container.metadata.namespace.clone());
    }
    row.push(container.metadata.name.clone());
    row.push(host_of(container));
    // A newer tag the agent took under `updatePolicy.tags` is what runs: `web:1.0.0 -> 1.2.0`.
    let resolved = status
        .and_then(|s| s.update.as_ref())
        .filter(|update| update.spec_image == container.spec.image.to_string())
        .and_then(|update| update.resolved_image.as_deref())
        .and_then(|resolved| resolved.parse::<kedge_crds::ImageReference>().ok());
    row.push(match resolved {
        Some(resolved) => format!("{} -> {}", container.spec.image, resolved.tag_or_default()),
        None => container.spec.image.to_string(),
    });
    row.push(condition_word(status, condition_type::READY));
    row.push(condition_word(status, condition_type::SYNCED));
    row.push(status.map_or("0".to_owned(), |s| s.restart_count.to_string()));
    row.push(age(container.metadata.creation_timestamp.as_deref(), now));
    if options.wide {
        let generation = container.metadata.generation.map_or("-".to_owned(), |g| g.to_string());
        let observed = status.and_then(|s| s.observed_generation).map_or("-".to_owned(), |g| g.to_string());
        row.push(format!("{observed}/{generation}"));
        row.push(status.and_then(|s| s.container_id.as_deref()).map_or(NONE.to_owned(), short_id));
        row.push(status.map_or(0, |s| s.drift.len()).to_string());
        row.push(problem_reason(status).unwrap_or_else(|| NONE.to_owned()));
    }
    row
}

/// The row of a stored spec that cannot be read (an entry of a list's `invalid`): its identity, IMAGE
/// `<invalid>` and SYNCED `Invalid`, the rest unknown.
pub fn invalid_container_row(entry: &InvalidEntry, options: TableOptions) -> Vec<String> {
    let mut row = Vec::new();
    if options.namespaces {
        row.push(entry.namespace.clone());
    }
    row.extend([entry.name.clone(), NONE.to_owned(), "<invalid>".to_owned()]);
    row.extend(["Unknown".to_owned(), "Invalid".to_owned(), "0".to_owned(), "<unknown>".to_owned()]);
    if options.wide {
        row.extend(["-".to_owned(), NONE.to_owned(), "0".to_owned(), "Invalid".to_owned()]);
    }
    row
}

/// The host the container runs on (from status), else the one it is placed on, else `<none>`.
fn host_of(container: &Container) -> String {
    container
        .status
        .as_ref()
        .and_then(|s| s.host.clone())
        .or_else(|| container.spec.placement.as_ref().and_then(|p| p.host.clone()))
        .unwrap_or_else(|| NONE.to_owned())
}

fn condition_word(status: Option<&ContainerStatus>, kind: &str) -> String {
    match status.and_then(|s| s.condition(kind)) {
        Some(condition) => format!("{:?}", condition.status),
        None => "Unknown".to_owned(),
    }
}

/// The reason of the first condition that is not as it should be (Ready/Synced not True, Degraded True).
fn problem_reason(status: Option<&ContainerStatus>) -> Option<String> {
    let status = status?;
    status
        .conditions
        .iter()
        .find(|c| {
            let healthy = if c.kind == condition_type::DEGRADED {
                c.status != kedge_crds::ConditionStatus::True
            } else {
                c.status == kedge_crds::ConditionStatus::True
            };
            !healthy
        })
        .map(|c| c.reason.clone())
}

/// A container or image ID as `docker ps` shows it: 12 characters, without `sha256:`.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

pub fn host_header(wide: bool) -> Vec<&'static str> {
    let mut header = vec!["NAME", "READY", "VERSION", "UPGRADE", "CONTAINERS", "LAST-SEEN", "AGE"];
    if wide {
        header.extend(["DOCKER", "CPUS", "MEMORY", "LABELS", "AGENT-CONTAINER"]);
    }
    header
}

/// A host as the API lists it.
pub fn host_row(host: &HostView, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let record = &host.record;
    let ready = match host.ready {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    };
    let mut row = vec![
        record.name.clone(),
        ready.to_owned(),
        or_none(&record.version),
        upgrade_text(host.upgrade.as_ref(), if wide { usize::MAX } else { 60 }),
        host.containers.to_string(),
        age(Some(&record.last_heartbeat), now),
        age(Some(&record.started_at), now),
    ];
    if wide {
        row.push(or_none(&record.docker_version));
        row.push(record.cpus.to_string());
        row.push(format!("{}Mi", record.memory_bytes >> 20));
        row.push(labels_text(&record.labels));
        let container = record.container.as_ref().map(|c| format!("{} ({})", c.name, c.image));
        row.push(container.unwrap_or_else(|| NONE.to_owned()));
    }
    row
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        NONE.to_owned()
    } else {
        text.to_owned()
    }
}

/// A host's last agent upgrade: `v2 Succeeded`, `v2 RolledBack: new agent exited with code 2`,
/// cut to `limit` characters.
fn upgrade_text(upgrade: Option<&HostUpgrade>, limit: usize) -> String {
    let Some(upgrade) = upgrade else { return NONE.to_owned() };
    let mut text = format!("{} {:?}", upgrade.version, upgrade.state);
    if matches!(upgrade.state, HostUpgradeState::RolledBack | HostUpgradeState::Failed)
        && !upgrade.message.is_empty()
    {
        text.push_str(": ");
        text.push_str(&upgrade.message);
    }
    if text.chars().count() > limit {
        text = text.chars().take(limit.saturating_sub(3)).collect::<String>() + "...";
    }
    text
}

/// `kedge get upgrades`: one row per campaign.
pub fn upgrade_row(campaign: &Campaign) -> Vec<String> {
    let hosts = &campaign.hosts;
    let succeeded = hosts.iter().filter(|h| h.state == HostUpgradeState::Succeeded).count();
    // A cancel asked for and not yet concluded (the host in flight still finishing).
    let state = if campaign.state == CampaignState::Running && campaign.cancel_requested_at.is_some() {
        "Cancelling".to_owned()
    } else {
        format!("{:?}", campaign.state)
    };
    vec![
        campaign.id.clone(),
        campaign.version.clone(),
        state,
        format!("{succeeded}/{}", hosts.len()),
        or_none(&campaign.selector),
        campaign.created_at.clone(),
        or_none(&campaign.message),
    ]
}

pub const UPGRADE_HEADER: [&str; 7] =
    ["ID", "VERSION", "STATE", "UPGRADED", "SELECTOR", "CREATED", "MESSAGE"];

/// `kedge get upgrade ID`: the campaign's hosts in order.
pub fn upgrade_hosts_table(campaign: &Campaign) -> String {
    let rows: Vec<Vec<String>> = campaign
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                or_none(&h.image),
                format!("{:?}", h.state),
                h.duration_seconds.map_or_else(|| NONE.to_owned(), |s| format!("{s:.1}s")),
                or_none(&h.message),
            ]
        })
        .collect();
    format!(
        "campaign {}: {:?}\n{}",
        campaign.id,
        campaign.state,
        table(&["HOST", "IMAGE", "STATE", "TOOK", "MESSAGE"], &rows)
    )
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return NONE.to_owned();
    }
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

pub fn event_header(wide: bool) -> Vec<&'static str> {
    let mut header = vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"];
    if wide {
        header.splice(4..4, ["HOST", "COUNT", "FIRST SEEN"]);
    }
    header
}

pub fn event_row(event: &Event, wide: bool, now: DateTime<Utc>) -> Vec<String> {
    let object = &event.involved_object;
    let object = object.strip_prefix("Container/").map_or(object.clone(), |rest| {
        format!("container/{}", rest.split_once('/').map_or(rest, |(_, name)| name))
    });
    let mut row = vec![
        age(Some(&event.last_timestamp), now),
        format!("{:?}", event.kind),
        event.reason.clone(),
        object,
    ];
    if wide {
        row.push(event.host.clone());
        row.push(event.count.to_string());
        row.push(age(Some(&event.first_timestamp), now));
    }
    row.push(event.message.clone());
    row
}

/// Events sorted oldest first, as kubectl lists them.
pub fn sort_events(events: &mut [Event]) {
    events.sort_by(|a, b| a.last_timestamp.cmp(&b.last_timestamp));
}

/// The `Conditions:` section of a describe page.
pub fn conditions_section(conditions: &[Condition], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| {
            vec![
                c.kind.clone(),
                format!("{:?}", c.status),
                c.reason.clone(),
                age(Some(&c.last_transition_time), now),
                c.message.clone(),
            ]
        })
        .collect();
    section("Conditions", &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &rows)
}

/// The `Events:` section of a describe page: the last ones, a repeated event with its count.
pub fn events_section(events: &[Event], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let seen = age(Some(&e.last_timestamp), now);
            let seen = if e.count > 1 { format!("{seen} (x{})", e.count) } else { seen };
            vec![seen, format!("{:?}", e.kind), e.reason.clone(), e.message.clone()]
        })
        .collect();
    section("Events", &["LAST SEEN", "TYPE", "REASON", "MESSAGE"], &rows)
}

/// The page `kedge describe container NAME` prints.
pub fn describe_container(container: &Container, events: &[Event], now: DateTime<Utc>) -> String {
    let meta = &container.metadata;
    let spec = &container.spec;
    let status = container.status.as_ref();
    let mut out = page_start(meta);
    let mut field = |name: &str, value: String| out.push_str(&field_line(name, &value));
    field("Labels", map_lines(&meta.labels, 18));
    field("Annotations", map_lines(&meta.annotations, 18));
    let created = meta.creation_timestamp.as_deref();
    field("Created", created.map_or(NONE.to_owned(), |c| format!("{c} ({} ago)", age(Some(c), now))));
    let generation = meta.generation.map_or(NONE.to_owned(), |g| g.to_string());
    let observed = status.and_then(|s| s.observed_generation).map_or(NONE.to_owned(), |g| g.to_string());
    field("Generation", format!("{generation} (observed: {observed})"));
    field("Resource Version", meta.resource_version.clone().unwrap_or_else(|| NONE.to_owned()));
    field("Host", host_of(container));
    field("Image", spec.image.to_string());
    field("Image ID", status.and_then(|s| s.image_id.clone()).unwrap_or_else(|| NONE.to_owned()));
    field("Container ID", status.and_then(|s| s.container_id.as_deref()).map_or(NONE.to_owned(), short_id));
    field("Restarts", status.map_or(0, |s| s.restart_count).to_string());
    if let Some(command) = &spec.command {
        field("Command", command.join(" "));
    }
    let ports: Vec<String> = spec
        .ports
        .iter()
        .map(|p| {
            let host = match (p.host_ip, p.host_port) {
                (Some(ip), Some(port)) => format!("{ip}:{port}:"),
                (None, Some(port)) => format!("{port}:"),
                _ => String::new(),
            };
            format!("{host}{}/{}", p.container_port, json_word(&p.protocol))
        })
        .collect();
    field("Ports", list_or_none(&ports));
    let mounts: Vec<String> = spec
        .mounts
        .iter()
        .map(|m| {
            let mode = if m.read_only == Some(true) { " (ro)" } else { "" };
            format!("{}:{} [{}]{mode}", m.source.as_deref().unwrap_or(""), m.target, json_word(&m.kind))
        })
        .collect();
    field("Mounts", list_or_none(&mounts));
    // Every volume the container has, anonymous ones too, with the name to find it by.
    let volumes: Vec<String> = status
        .map(|s| s.volumes.iter().map(|v| format!("{} <- volume {}", v.target, v.name)).collect())
        .unwrap_or_default();
    if !volumes.is_empty() {
        field("Volumes", list_or_none(&volumes));
    }
    let networks: Vec<String> = spec.networks.iter().map(|n| n.name.clone()).collect();
    field("Networks", list_or_none(&networks));
    field(
        "Restart Policy",
        spec.restart_policy.as_ref().map_or(NONE.to_owned(), |r| match r.maximum_retry_count {
            Some(n) => format!("{}:{n}", json_word(&r.name)),
            None => json_word(&r.name),
        }),
    );
    // Shown only when declared, as the golden pages of specs without them stay as they were.
    if spec.init == Some(true) {
        field("Init", "true".to_owned());
    }
    if let Some(size) = spec.shm_size {
        field("Shm Size", size.to_string());
    }
    if !spec.extra_hosts.is_empty() {
        field("Extra Hosts", list_or_none(&spec.extra_hosts));
    }
    if !spec.ulimits.is_empty() {
        let limits: Vec<String> =
            spec.ulimits.iter().map(|(name, l)| format!("{name}={}:{}", l.soft, l.hard)).collect();
        field("Ulimits", list_or_none(&limits));
    }
    field("Env", map_lines(&spec.env, 18));
    if !spec.secret_env.is_empty() {
        // Where each value comes from, never the value: the agent alone reads it.
        let sources: BTreeMap<String, String> = spec
            .secret_env
            .iter()
            .map(|(name, source)| {
                (
                    name.clone(),
                    format!("{} (secret {}, key {})", kedge_crds::REDACTED, source.secret, source.key),
                )
            })
            .collect();
        field("Secret Env", map_lines(&sources, 18));
    }
    field("Last Error", status.and_then(|s| s.last_error.clone()).unwrap_or_else(|| NONE.to_owned()));
    if let Some(pull) = status.and_then(|s| s.pull.as_ref()) {
        // A long pull under way (the agent writes it while the pull runs).
        field(
            "Pulling",
            format!(
                "{}: {} of {} layers done, {} of {} MB, since {}",
                pull.image,
                pull.layers_done,
                pull.layers,
                megabytes(pull.bytes_done),
                megabytes(pull.bytes_total),
                pull.started_at
            ),
        );
    }
    if let Some(update) = status.and_then(|s| s.update.as_ref()) {
        // The update policy's findings: the newer tag the agent runs instead of spec.image (the
        // stored spec is never rewritten), and an update found but held back.
        let mut lines = Vec::new();
        if let Some(resolved) = &update.resolved_image {
            lines.push(format!("runs {resolved} (newer tag than the spec's {})", update.spec_image));
        }
        if let Some(available) = &update.available {
            let why = update.held_reason.as_deref().unwrap_or("Available");
            lines.push(format!("available: {available} (held: {why})"));
        }
        if let Some(checked) = &update.last_check {
            lines.push(format!("registry checked {checked}"));
        }
        field(
            "Image Update",
            if lines.is_empty() { NONE.to_owned() } else { lines.join(&format!("\n{}", " ".repeat(18))) },
        );
    }
    // The last update: which order it took and why, and where its soak stands.
    if let Some(update) = status.and_then(|s| s.last_update.as_ref()) {
        field("Update Order", update.order_reason.clone());
        let soak = match (update.phase.as_str(), update.soak_until.as_deref()) {
            ("Soaking", Some(until)) => format!("; soaking until {until}"),
            ("RolledBack", _) => "; failed its soak and was rolled back".to_owned(),
            (_, Some(until)) => format!("; soaked until {until}"),
            _ => String::new(),
        };
        let previous = update
            .previous_image_id
            .as_deref()
            .map_or(String::new(), |id| format!(" (was {})", short_id(id)));
        field(
            "Last Update",
            format!("image {}{previous}, ready at {}{soak}", short_id(&update.image_id), update.ready_at),
        );
    }
    if let Some(failed) = status.and_then(|s| s.rolled_back.as_ref()) {
        let id = failed.image_id.as_deref().map_or(String::new(), |id| format!(" ({})", short_id(id)));
        let at = failed.failed_at.as_deref().map_or(String::new(), |at| format!(" at {at}"));
        field(
            "Failed Image",
            format!(
                "{}{id}: {}{at}, held back until the spec or the image changes",
                failed.image, failed.reason
            ),
        );
    }
    if let Some(remediation) = status.and_then(|s| s.remediation.as_ref()) {
        let gave_up =
            remediation.gave_up_at.as_deref().map_or(String::new(), |at| format!("; gave up at {at}"));
        field(
            "Remediations",
            format!(
                "{} in the flap limit's period, {} since last healthy{gave_up}",
                remediation.at.len(),
                remediation.consecutive
            ),
        );
    }

    out.push_str(&conditions_section(status.map_or(&[], |s| &s.conditions[..]), now));
    let drift = status.map_or(&[][..], |s| &s.drift[..]);
    let rows: Vec<Vec<String>> = drift
        .iter()
        .map(|d| {
            vec![
                d.field.clone(),
                d.desired.clone().unwrap_or_else(|| NONE.to_owned()),
                d.actual.clone().unwrap_or_else(|| NONE.to_owned()),
            ]
        })
        .collect();
    out.push_str(&section("Drift", &["FIELD", "DESIRED", "ACTUAL"], &rows));
    out.push_str(&events_section(events, now));
    out
}

/// The page `kedge describe` prints for a kind without its own: the metadata, the status as YAML and
/// the recent events.
pub fn describe_object(
    meta: &ObjectMeta,
    status: Option<&Value>,
    events: &[Event],
    now: DateTime<Utc>,
) -> String {
    let created = meta.creation_timestamp.as_deref();
    let fields = [
        ("Labels", map_lines(&meta.labels, 18)),
        ("Created", created.map_or(NONE.to_owned(), |c| format!("{c} ({} ago)", age(Some(c), now)))),
        ("Generation", meta.generation.map_or(NONE.to_owned(), |g| g.to_string())),
        ("Resource Version", meta.resource_version.clone().unwrap_or_else(|| NONE.to_owned())),
    ];
    let mut out = page_start(meta);
    out.extend(fields.iter().map(|(name, value)| field_line(name, value)));
    out.push_str("Status:\n");
    match status {
        Some(status) => out.push_str(&indent(&to_yaml(status))),
        None => out.push_str("  <none>\n"),
    }
    out.push_str(&events_section(events, now));
    out
}

/// A describe page's first lines: the object's name and namespace.
pub fn page_start(meta: &ObjectMeta) -> String {
    field_line("Name", &meta.name) + &field_line("Namespace", &meta.namespace)
}

/// One `Field:  value` line of a describe page, the values in one column.
pub fn field_line(name: &str, value: &str) -> String {
    format!("{:<18}{value}\n", format!("{name}:"))
}

/// A section of a describe page: its title, then its table indented, or `<none>`.
pub fn section(title: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("{title}:\n");
    if rows.is_empty() {
        out.push_str("  <none>\n");
    } else {
        out.push_str(&indent(&table(header, rows)));
    }
    out
}

pub fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        NONE.to_owned()
    } else {
        items.join(", ")
    }
}

/// `k=v` one a line, continuation lines indented to the value column.
fn map_lines(map: &BTreeMap<String, String>, column: usize) -> String {
    if map.is_empty() {
        return NONE.to_owned();
    }
    map.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(&format!("\n{}", " ".repeat(column)))
}

/// A serde enum's wire name (`on-failure`, `tcp`).
fn json_word<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Block-style YAML of a JSON value, readable back by the crds parser. Strings that could read as
/// another type or hold special characters are double-quoted (JSON escapes are valid YAML escapes).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
    out
}

fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_string(key));
        out.push(':');
        write_nested(out, value, indent);
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first entry shares the dash's line; the rest align under it.
                let mut nested = String::new();
                write_map(&mut nested, map, indent + 2);
                out.push(' ');
                out.push_str(&nested[indent + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, indent + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
    }
}

fn write_nested(out: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&yaml_scalar(scalar));
            out.push('\n');
        }
    }
}

fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => yaml_string(s),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
    }
}

fn yaml_string(text: &str) -> String {
    let reserved = ["true", "false", "null", "yes", "no", "on", "off", "y", "n", "~", ""];
    let plain = !reserved.contains(&text.to_ascii_lowercase().as_str())
        && text.parse::<f64>().is_err()
        && !text.starts_with(|c: char| !(c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '.'))
        && !text.ends_with([' ', ':'])
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.starts_with("0x")
        && text.chars().all(|c| c.is_ascii_alphanumeric() || " _./:@+,=-".contains(c));
    if plain {
        text.to_owned()
    } else {
        serde_json::to_string(text).expect("strings serialize")
    }
}

/// Whether to colour `stream`: a terminal, and `NO_COLOR` unset or empty.
pub fn use_colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub fn paint(text: &str, ansi: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[{ansi}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    //! Golden tests: fixed objects and a fixed `now`, the exact text pinned.

    use super::*;
    use kedge_crds::{Condition, ConditionStatus, FieldDiff};
    use serde_json::json;

    /// Where each column of a line starts (a column is preceded by three spaces).
    fn column_starts(line: &str) -> Vec<usize> {
        let chars: Vec<char> = line.chars().collect();
        (3..chars.len())
            .filter(|&at| chars[at - 3..at].iter().all(|c| *c == ' ') && chars[at] != ' ')
            .collect()
    }

    #[test]
    fn streamed_rows_line_up_with_the_table_printed_before_them() {
        let header = ["NAME", "HOST", "READY"];
        // Narrower than the minimum width, and not ASCII (counted in characters, not bytes).
        let first = vec![vec!["a".to_owned(), "hôst-µ".to_owned(), "True".to_owned()]];
        let table = table_at_least(&header, &first, 12);
        let widths = column_widths(&header, &first, 12);
        let later = table_row(&widths, &["web-frontend".to_owned(), "h2".to_owned(), "False".to_owned()]);
        let lines: Vec<&str> = table.lines().chain([later.as_str()]).collect();
        let starts: Vec<Vec<usize>> = lines.iter().map(|line| column_starts(line)).collect();
        assert_eq!(starts[0], vec![15, 30], "{table}");
        assert!(starts.iter().all(|s| *s == starts[0]), "columns move:\n{}", lines.join("\n"));
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn container(name: &str, json_spec: Value, status: Option<ContainerStatus>) -> Container {
        let mut value = json!({
            "apiVersion": "kedge.io/v1",
            "kind": "Container",
            "metadata": {
                "name": name,
                "namespace": "default",
                "labels": {"app": name},
                "generation": 3,
                "resourceVersion": "42",
                "uid": "u-1",
                "creationTimestamp": "2026-11-19T11:00:00Z"
            },
            "spec": json_spec
        });
        if let Some(status) = status {
            // A fixture built as JSON, as the API answers it.
            value["status"] = serde_json::to_value(status).unwrap();
        }
        serde_json::from_value(value).unwrap()
    }

    fn condition(kind: &str, status: ConditionStatus, reason: &str, at: &str, message: &str) -> Condition {
        Condition {
            kind: kind.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: at.into(),
            observed_generation: Some(3),
        }
    }

    fn fixtures() -> Vec<Container> {
        let ready = ContainerStatus {
            observed_generation: Some(3),
            host: Some("host-a".into()),
            container_id: Some("0123456789abcdef0123".into()),
            image_id: Some("sha256:feedbeef".into()),
            restart_count: 2,
            conditions: vec![
                condition("Ready", ConditionStatus::True, "Running", "2026-11-21T11:55:00Z", ""),
                condition("Synced", ConditionStatus::True, "UpToDate", "2026-11-21T11:59:55Z", ""),
            ],
            ..ContainerStatus::default()
        };
        let stalled = ContainerStatus {
            observed_generation: Some(2),
            host: Some("host-b".into()),
            drift: vec![FieldDiff {
                field: "spec.resources.memory".into(),
                desired: Some("512Mi".into()),
                actual: Some("1Gi".into()),
            }],
            last_error: Some("pull access denied".into()),
            conditions: vec![
                condition(
                    "Ready",
                    ConditionStatus::False,
                    "ImagePullFailed",
                    "2026-11-21T09:00:00Z",
                    "pull access denied",
                ),
                condition(
                    "Synced",
                    ConditionStatus::False,
                    "Drifted",
                    "2026-11-21T09:00:00Z",
                    "1 field differs",
                ),
                condition(
                    "Degraded",
                    ConditionStatus::True,
                    "Stalled",
                    "2026-11-21T09:00:00Z",
                    "backing off 5m",
                ),
            ],
            ..ContainerStatus::default()
        };
        vec![
            container(
                "web",
                json!({"image": "nginx:1.27", "ports": ["8080:80"], "restartPolicy": "unless-stopped"}),
                Some(ready),
            ),
            container(
                "db",
                json!({"image": "registry.example.com/team/postgres:16", "resources": {"memory": "512Mi"}}),
                Some(stalled),
            ),
            container("pending", json!({"image": "busybox", "placement": {"host": "host-c"}}), None),
        ]
    }

    #[test]
    fn container_table() {
        let options = TableOptions { wide: false, namespaces: false };
        assert_eq!(
            table(
                &container_header(options),
                &fixtures().iter().map(|c| container_row(c, options, now())).collect::<Vec<_>>()
            ),
            "\
NAME      HOST     IMAGE                                   READY     SYNCED    RESTARTS   AGE
web       host-a   nginx:1.27                              True      True      2          2d
db        host-b   registry.example.com/team/postgres:16   False     False     0          2d
pending   host-c   busybox                                 Unknown   Unknown   0          2d
"
        );
    }

    #[test]
    fn container_table_wide_with_namespaces() {
        let options = TableOptions { wide: true, namespaces: true };
        assert_eq!(
            table(&container_header(options), &fixtures()[..2].iter().map(|c| container_row(c, options, now())).collect::<Vec<_>>()),
            "\
NAMESPACE   NAME   HOST     IMAGE                                   READY   SYNCED   RESTARTS   AGE   GENERATION   CONTAINER      DRIFT   REASON
default     web    host-a   nginx:1.27                              True    True     2          2d    3/3          0123456789ab   0       <none>
default     db     host-b   registry.example.com/team/postgres:16   False   False    0          2d    2/3          <none>         1       ImagePullFailed
"
        );
    }

    #[test]
    fn describe_page() {
        let events: Vec<Event> = serde_json::from_value(json!([{
            "involvedObject": "Container/default/db",
            "namespace": "default",
            "type": "Warning",
            "reason": "BackOff",
            "message": "pull access denied for registry.example.com/team/postgres",
            "host": "host-b",
            "count": 4,
            "firstTimestamp": "2026-11-21T09:00:00Z",
            "lastTimestamp": "2026-11-21T11:57:00Z"
        }]))
        .unwrap();
        assert_eq!(
            describe_container(&fixtures()[1], &events, now()),
            "\
Name:             db
Namespace:        default
Labels:           app=db
Annotations:      <none>
Created:          2026-11-19T11:00:00Z (2d ago)
Generation:       3 (observed: 2)
Resource Version: 42
Host:             host-b
Image:            registry.example.com/team/postgres:16
Image ID:         <none>
Container ID:     <none>
Restarts:         0
Ports:            <none>
Mounts:           <none>
Networks:         <none>
Restart Policy:   <none>
Env:              <none>
Last Error:       pull access denied
Conditions:
  TYPE       STATUS   REASON            AGE   MESSAGE
  Ready      False    ImagePullFailed   3h    pull access denied
  Synced     False    Drifted           3h    1 field differs
  Degraded   True     Stalled           3h    backing off 5m
Drift:
  FIELD                   DESIRED   ACTUAL
  spec.resources.memory   512Mi     1Gi
Events:
  LAST SEEN   TYPE      REASON    MESSAGE
  3m (x4)     Warning   BackOff   pull access denied for registry.example.com/team/postgres
"
        );
    }

    #[test]
    fn describe_page_without_status() {
        let page = describe_container(&fixtures()[0], &[], now());
        assert!(page.contains("Ports:            8080:80/tcp\n"), "{page}");
        assert!(page.contains("Restart Policy:   unless-stopped\n"), "{page}");
        assert!(page.contains("Container ID:     0123456789ab\n"), "{page}");
        assert!(page.ends_with("Drift:\n  <none>\nEvents:\n  <none>\n"), "{page}");
    }

    #[test]
    fn describe_page_tells_the_update_order_the_soak_the_failed_image_and_remediations() {
        let mut container = fixtures()[0].clone();
        let status = container.status.get_or_insert_with(Default::default);
        status.last_update = Some(kedge_crds::LastUpdate {
            container_id: "c2".into(),
            image_id: "sha256:bbbbbbbbbbbbbbbb".into(),
            previous_image_id: Some("sha256:aaaaaaaaaaaaaaaa".into()),
            order: "stop-first".into(),
            order_reason:
                "stop-first: the new container has a published host port, which two containers must not share"
                    .into(),
            ready_at: "2026-12-07T02:53:03.545Z".into(),
            phase: "Soaking".into(),
            soak_until: Some("2026-12-07T02:58:03.545Z".into()),
            ..Default::default()
        });
        status.rolled_back = Some(kedge_crds::RolledBackUpdate {
            image: "app:2".into(),
            image_id: Some("sha256:dddddddddddddddd".into()),
            reason: "NewContainerUnhealthy".into(),
            failed_at: Some("2026-12-07T02:52:16Z".into()),
            ..Default::default()
        });
        status.remediation = Some(kedge_crds::UnhealthyRemediation {
            at: vec!["2026-12-07T02:50:00Z".into(), "2026-12-07T02:50:01Z".into()],
            consecutive: 2,
            ..Default::default()
        });
        let page = describe_container(&container, &[], now());
        for line in [
            "Update Order:     stop-first: the new container has a published host port, which two containers must not share\n",
            "Last Update:      image bbbbbbbbbbbb (was aaaaaaaaaaaa), ready at 2026-12-07T02:53:03.545Z; soaking until 2026-12-07T02:58:03.545Z\n",
            "Failed Image:     app:2 (dddddddddddd): NewContainerUnhealthy at 2026-12-07T02:52:16Z, held back until the spec or the image changes\n",
            "Remediations:     2 in the flap limit's period, 2 since last healthy\n",
        ] {
            assert!(page.contains(line), "{line:?} in\n{page}");
        }
    }

    #[test]
    fn host_and_event_tables() {
        let host = |value: Value, containers: usize| HostView {
            containers,
            ..serde_json::from_value::<HostView>(value).unwrap()
        };
        let up = host(
            json!({"name": "host-a", "ready": true, "version": "0.1.0", "lastHeartbeat": "2026-11-21T11:59:50Z",
            "startedAt": "2026-11-20T12:00:00Z", "dockerVersion": "20.10.24", "cpus": 2, "memoryBytes": 25_769_803_776u64,
            "labels": {"zone": "eu"},
            "container": {"id": "c0ffee", "name": "kedge", "image": "kedge:0.1.0", "imageId": "sha256:c0ffee"},
            "upgrade": {"campaign": "c1", "version": "0.2.0", "image": "kedge:0.2.0", "timeoutSeconds": 120,
                        "state": "RolledBack", "message": "new agent exited with code 2",
                        "requestedAt": "2026-11-21T11:00:00Z"}}),
            3,
        );
        let gone = host(
            json!({"name": "host-b", "ready": false, "version": "0.1.0", "lastHeartbeat": "2026-11-21T11:00:00Z",
            "startedAt": "2026-11-21T10:00:00Z", "dockerVersion": "", "cpus": 4, "memoryBytes": 8_589_934_592u64}),
            0,
        );
        assert_eq!(
            table(&host_header(true), &[host_row(&up, true, now()), host_row(&gone, true, now())]),
            "\
NAME     READY   VERSION   UPGRADE                                          CONTAINERS   LAST-SEEN   AGE   DOCKER     CPUS   MEMORY    LABELS    AGENT-CONTAINER
host-a   True    0.1.0     0.2.0 RolledBack: new agent exited with code 2   3            10s         1d    20.10.24   2      24576Mi   zone=eu   kedge (kedge:0.1.0)
host-b   False   0.1.0     <none>                                           0            1h          2h    <none>     4      8192Mi    <none>    <none>
"
        );
        let event: Event = serde_json::from_value(json!({"involvedObject": "Container/default/web",
            "namespace": "default", "type": "Normal", "reason": "Created",
            "message": "created container", "host": "host-a", "count": 1,
            "firstTimestamp": "2026-11-21T11:00:00Z", "lastTimestamp": "2026-11-21T11:00:00Z"}))
        .unwrap();
        assert_eq!(
            table(&event_header(false), &[event_row(&event, false, now())]),
            "LAST SEEN   TYPE     REASON    OBJECT          MESSAGE\n1h          Normal   Created   container/web   created container\n"
        );
    }

    #[test]
    fn ages_like_kubectl() {
        let check = |at: &str, expected: &str| assert_eq!(age(Some(at), now()), expected, "{at}");
        check("2026-11-21T12:00:00Z", "0s");
        check("2026-11-21T11:59:55Z", "5s");
        check("2026-11-21T11:57:00Z", "3m");
        check("2026-11-21T10:00:00Z", "2h");
        check("2026-11-17T12:00:00Z", "4d");
        check("2024-11-21T12:00:00Z", "2y");
        check("2026-11-21T12:00:30Z", "<invalid>");
        assert_eq!(age(None, now()), NONE);
        assert_eq!(age(Some("yesterday"), now()), NONE);
    }

    #[test]
    fn yaml_reads_back_as_the_same_container() {
        for container in fixtures() {
            let mut value = serde_json::to_value(&container).unwrap();
            // Annotations that YAML could misread, added to the JSON the fixture serializes to.
            value["metadata"]["annotations"] = json!({"note": "yes", "k": "a: b #c", "n": "0x10", "e": ""});
            let text = to_yaml(&value);
            let (parsed, errors) = kedge_crds::parse_str("golden", &text);
            assert!(errors.is_empty(), "{errors:?}\n{text}");
            assert_eq!(serde_json::to_value(&parsed[0].container).unwrap(), value, "{text}");
        }
    }

    #[test]
    fn yaml_layout() {
        let value = json!({"a": 1, "b": {"c": [1, {"d": "x", "e": [true]}], "f": {}}, "g": "true", "h": []});
        assert_eq!(
            to_yaml(&value),
            "a: 1\nb:\n  c:\n  - 1\n  - d: x\n    e:\n    - true\n  f: {}\ng: \"true\"\nh: []\n"
        );
    }
}
