//! The per-kind table of `kedge get`: for each kind its words, how it is listed, its table columns
//! and rows, and how `-w` follows it. `get.rs` is written once over this table; a new kind is one
//! `impl Kind`. A crds kind (a [`Resource`]) implements [`Table`] instead, its row alone: listing,
//! reading and `-w` streaming come from the API's generic routes for every such kind.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kedge_crds::campaign::Campaign;
use kedge_crds::event::Event;
use kedge_crds::{Container, ContainerSet, Resource};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::base::{bad_answer, resource_path, typed_items};
use crate::client::{encode, Client};
use crate::error::{CliError, CliResult, Exit};
use crate::output::{self, TableOptions};
use crate::sets;
use crate::types::{HostView, InvalidEntry, List};

/// What `get` was asked for, resolved against the context.
#[derive(Clone)]
pub(crate) struct Query<'a> {
    pub client: &'a Client,
    pub namespace: &'a str,
    pub name: Option<&'a str>,
    /// `labelSelector=...` (encoded), or empty.
    pub selector: String,
    pub all_namespaces: bool,
    pub watch: bool,
    pub options: TableOptions,
    /// More query parameters of a kind's list and watch (`kedge events --for KIND/NAME --types`).
    pub filter: String,
}

/// What a kind's list gave: each object with the JSON `-o json|yaml` prints, the rows of objects
/// the store holds but that cannot be read, and the revision a watch starts from.
pub(crate) struct Listed<K> {
    pub items: Vec<(Value, K)>,
    pub unreadable_rows: Vec<Vec<String>>,
    pub revision: i64,
}

impl<K> Listed<K> {
    pub(crate) fn of(items: Vec<(Value, K)>) -> Listed<K> {
        Listed { items, unreadable_rows: Vec::new(), revision: 0 }
    }
}

/// How `get -w` follows a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// The API streams its changes: the list, then a row per change.
    Stream,
    /// The API has no watch for it: listed again every [`POLL_PERIOD`], a row when it changed.
    Poll,
    /// `-w` is not offered; the list is printed once.
    Never,
}

/// How often a polled kind is listed again (hosts change by heartbeat).
pub(crate) const POLL_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

pub(crate) trait Kind: DeserializeOwned + Sized {
    /// The word of `-o name` (`container/web`).
    const WORD: &'static str;
    const FOLLOW: Follow;
    /// The streaming rows' minimum column width (the first rows may be narrower than later ones).
    const STREAM_MIN_WIDTH: usize = 0;
    /// Whether `-o name` has names to print.
    const NAMED: bool = true;

    /// One object, or the list (one namespace or all, selected).
    async fn list(query: &Query<'_>) -> CliResult<Listed<Self>>;
    /// What stderr says when nothing is listed.
    fn nothing_found(query: &Query<'_>) -> String;
    fn header(options: TableOptions) -> Vec<&'static str>;
    fn row(&self, options: TableOptions, now: DateTime<Utc>) -> Vec<String>;
    fn name(&self) -> String;
    /// What tells two objects apart across polls (namespaced kinds add their namespace).
    fn identity(&self) -> String {
        self.name()
    }
    /// The page one named object shows instead of its row (an upgrade campaign's hosts).
    fn page(&self) -> Option<String> {
        None
    }
    /// The watch route's path and query, from the list's revision (kinds that stream).
    fn watch_path(_query: &Query<'_>, _revision: i64) -> String {
        String::new()
    }
    /// What of a row a polled watch compares: all but what moves by itself (ages).
    fn fingerprint(&self, row: &[String], _options: TableOptions) -> Value {
        json!(row)
    }
    /// The `-o json|yaml` answer: one object named, else a list.
    fn structured(objects: Vec<Value>, query: &Query<'_>) -> Option<Value> {
        Some(match query.name {
            Some(_) if objects.len() == 1 => objects.into_iter().next().unwrap_or_default(),
            _ => json!({ "apiVersion": kedge_crds::API_VERSION, "kind": "List", "items": objects }),
        })
    }
}

pub(crate) fn namespace_words(query: &Query<'_>) -> String {
    if query.all_namespaces {
        "any namespace".to_owned()
    } else {
        format!("namespace {}", query.namespace)
    }
}

/// Decodes every item of a list as `K` (a kind the API validates: one bad item is a bad answer).
fn strict_items<K: DeserializeOwned + serde::Serialize>(list: List<K>) -> Vec<(Value, K)> {
    list.items.into_iter().map(|k| (serde_json::to_value(&k).unwrap_or_default(), k)).collect()
}

/// A crds kind's part of `get`: its word and its table row. Everything else of [`Kind`] comes from its
/// [`Resource`] and the API's generic routes (list, read, watch), written once below.
pub(crate) trait Table: Resource {
    /// The word of `-o name` and of messages (`containerset`).
    const NOUN: &'static str;
    /// The streaming rows' minimum column width.
    const MIN_WIDTH: usize = 0;

    fn columns(options: TableOptions) -> Vec<&'static str>;
    fn cells(&self, options: TableOptions, now: DateTime<Utc>) -> Vec<String>;
    /// The row of an object the store holds but cannot read.
    fn unreadable_cells(entry: &InvalidEntry, options: TableOptions) -> Vec<String> {
        unreadable_row(entry, options)
    }
}

impl<K: Table> Kind for K {
    const WORD: &'static str = K::NOUN;
    const FOLLOW: Follow = Follow::Stream;
    const STREAM_MIN_WIDTH: usize = K::MIN_WIDTH;

    async fn list(query: &Query<'_>) -> CliResult<Listed<Self>> {
        list_resource(query, K::unreadable_cells).await
    }

    fn nothing_found(query: &Query<'_>) -> String {
        format!("No {} found in {}.", K::PLURAL, namespace_words(query))
    }

    fn header(options: TableOptions) -> Vec<&'static str> {
        K::columns(options)
    }

    fn row(&self, options: TableOptions, now: DateTime<Utc>) -> Vec<String> {
        self.cells(options, now)
    }

    fn name(&self) -> String {
        self.metadata().name.clone()
    }

    fn identity(&self) -> String {
        self.key()
    }

    fn watch_path(query: &Query<'_>, revision: i64) -> String {
        watch_resource::<Self>(query, revision)
    }
}

/// The list of a crds kind (one namespace or all, selected), or the one object named, through the
/// API's generic routes; with `-w`, the revision its watch starts from. Objects the store holds but
/// cannot read are shown as `unreadable_row`s, never hidden, and why is said on stderr.
async fn list_resource<K: Resource + Kind>(
    query: &Query<'_>,
    unreadable_row: fn(&InvalidEntry, TableOptions) -> Vec<String>,
) -> CliResult<Listed<K>> {
    let list_path = if query.all_namespaces {
        format!("/api/v1/{}?{}", K::PLURAL, query.selector)
    } else {
        format!("/api/v1/namespaces/{}/{}?{}", encode(query.namespace), K::PLURAL, query.selector)
    };
    if let Some(name) = query.name {
        let one: K =
            crate::error::from_server(query.client.get(&resource_path::<K>(query.namespace, name)).await?)
                .map_err(bad_answer)?;
        let revision = if query.watch {
            List::<Value>::from_answer(query.client.get(&list_path).await?)?.revision()
        } else {
            0
        };
        let mut listed = Listed::of(strict_items(List { items: vec![one], ..List::empty() }));
        listed.revision = revision;
        return Ok(listed);
    }
    let list = List::<K>::from_answer(query.client.get(&list_path).await?)?;
    for entry in &list.invalid {
        eprintln!(
            "warning: {} {}/{}: the stored spec cannot be read, so no agent acts on it: {}",
            K::WORD,
            entry.namespace,
            entry.name,
            entry.error
        );
    }
    let unreadable_rows = list.invalid.iter().map(|entry| unreadable_row(entry, query.options)).collect();
    let revision = list.revision();
    Ok(Listed { items: strict_items(list), unreadable_rows, revision })
}

/// The watch route of a crds kind, from `revision`, for what the query asks.
fn watch_resource<K: Resource>(query: &Query<'_>, revision: i64) -> String {
    let mut path = format!("/api/v1/watch/{}?resourceVersion={revision}&{}", K::PLURAL, query.selector);
    if !query.all_namespaces {
        path.push_str(&format!("&namespace={}", encode(query.namespace)));
    }
    if let Some(name) = query.name {
        path.push_str(&format!("&name={}", encode(name)));
    }
    path
}

/// The row of an object that cannot be read, for a kind without its own: its identity, the rest unknown.
fn unreadable_row(entry: &InvalidEntry, options: TableOptions) -> Vec<String> {
    let mut row = Vec::new();
    if options.namespaces {
        row.push(entry.namespace.clone());
    }
    row.extend([entry.name.clone(), "<invalid>".to_owned()]);
    row
}

impl Table for Container {
    const NOUN: &'static str = "container";
    const MIN_WIDTH: usize = 12;

    fn columns(options: TableOptions) -> Vec<&'static str> {
        output::container_header(options)
    }

    fn cells(&self, options: TableOptions, now: DateTime<Utc>) -> Vec<String> {
        output::container_row(self, options, now)
    }

    fn unreadable_cells(entry: &InvalidEntry, options: TableOptions) -> Vec<String> {
        output::invalid_container_row(entry, options)
    }
}

impl Table for ContainerSet {
    const NOUN: &'static str = "containerset";

    fn columns(options: TableOptions) -> Vec<&'static str> {
        sets::set_header(options.wide, options.namespaces)
    }

    fn cells(&self, options: TableOptions, now: DateTime<Utc>) -> Vec<String> {
        sets::set_row(self, options.wide, options.namespaces, now)
    }
}

impl Kind for HostView {
    const WORD: &'static str = "host";
    // Hosts change by heartbeat: there is no event to follow.
    const FOLLOW: Follow = Follow::Poll;

    async fn list(query: &Query<'_>) -> CliResult<Listed<Self>> {
        let hosts = List::<Value>::from_answer(query.client.get("/api/v1/hosts").await?)?;
        let mut hosts: Vec<(Value, HostView)> = typed_items(hosts.items);
        if let Some(name) = query.name {
            hosts.retain(|(_, h)| h.record.name == name);
            if hosts.is_empty() {
                return Err(CliError::new(Exit::NotFound, format!("host {name} not found"))
                    .hint("list them with `kedge get hosts`"));
            }
        }
        let containers = List::<Container>::from_answer(query.client.get("/api/v1/containers").await?)?;
        let mut per_host: HashMap<String, usize> = HashMap::new();
        for container in &containers.items {
            if let Some(host) = container.status.as_ref().and_then(|s| s.host.clone()) {
                *per_host.entry(host).or_default() += 1;
            }
        }
        for (_, host) in &mut hosts {
            host.containers = per_host.get(&host.record.name).copied().unwrap_or(0);
        }
        Ok(Listed::of(hosts))
    }

    fn nothing_found(_query: &Query<'_>) -> String {
        "No hosts found.".to_owned()
    }

    fn header(options: TableOptions) -> Vec<&'static str> {
        output::host_header(options.wide)
    }

    fn row(&self, options: TableOptions, now: DateTime<Utc>) -> Vec<String> {
        output::host_row(self, options.wide, now)
    }

    fn name(&self) -> String {
        self.record.name.clone()
    }

    /// A host appears, or its readiness, version, labels, Docker version, container count or
    /// upgrade state changes (not its heartbeat's age).
    fn fingerprint(&self, _row: &[String], _options: TableOptions) -> Value {
        let record = &self.record;
        json!([
            self.ready,
            record.version,
            record.labels,
            record.docker_version,
            self.containers,
            self.upgrade.as_ref().map(|u| format!("{:?}", u.state))
        ])
    }
}

impl Kind for Event {
    const WORD: &'static str = "event";
    const FOLLOW: Follow = Follow::Stream;
    const NAMED: bool = false;

    async fn list(query: &Query<'_>) -> CliResult<Listed<Self>> {
        let list = List::<Value>::from_answer(
            query.client.get(&format!("/api/v1/events?{}", events_query(query))).await?,
        )?;
        let revision = list.revision();
        let mut items: Vec<(Value, Event)> = typed_items(list.items);
        items.sort_by(|a, b| a.1.last_timestamp.cmp(&b.1.last_timestamp));
        Ok(Listed { items, unreadable_rows: Vec::new(), revision })
    }

    fn nothing_found(query: &Query<'_>) -> String {
        format!("No events found in {}.", namespace_words(query))
    }

    fn header(options: TableOptions) -> Vec<&'static str> {
        output::event_header(options.wide)
    }

    fn row(&self, options: TableOptions, now: DateTime<Utc>) -> Vec<String> {
        output::event_row(self, options.wide, now)
    }

    fn name(&self) -> String {
        String::new()
    }

    fn watch_path(query: &Query<'_>, revision: i64) -> String {
        format!("/api/v1/watch/events?resourceVersion={revision}&{}", events_query(query))
    }

    /// Events are always a list, also `--for NAME`'s.
    fn structured(objects: Vec<Value>, _query: &Query<'_>) -> Option<Value> {
        Some(json!({ "apiVersion": kedge_crds::API_VERSION, "kind": "List", "items": objects }))
    }
}

/// `namespace=NS` (not with `-A`), `object=NAME` (`--for NAME`) and the query's filter
/// (`objectKind=KIND`, `type=TYPES`).
fn events_query(query: &Query<'_>) -> String {
    let mut text = String::new();
    if !query.all_namespaces {
        text.push_str(&format!("namespace={}", encode(query.namespace)));
    }
    if let Some(name) = query.name {
        text.push_str(&format!("&object={}", encode(name)));
    }
    if !query.filter.is_empty() {
        text.push('&');
        text.push_str(&query.filter);
    }
    text
}

impl Kind for Campaign {
    const WORD: &'static str = "upgrade";
    const FOLLOW: Follow = Follow::Never;

    async fn list(query: &Query<'_>) -> CliResult<Listed<Self>> {
        let raw: Vec<Value> = match query.name {
            Some(id) => vec![query.client.get(&format!("/api/v1/upgrades/{}", encode(id))).await?],
            None => List::<Value>::from_answer(query.client.get("/api/v1/upgrades").await?)?.items,
        };
        let mut items = Vec::new();
        for value in raw {
            let campaign = crate::error::from_server(value.clone())?;
            items.push((value, campaign));
        }
        Ok(Listed::of(items))
    }

    fn nothing_found(_query: &Query<'_>) -> String {
        "No upgrade campaigns found.".to_owned()
    }

    fn header(_options: TableOptions) -> Vec<&'static str> {
        output::UPGRADE_HEADER.to_vec()
    }

    fn row(&self, _options: TableOptions, _now: DateTime<Utc>) -> Vec<String> {
        output::upgrade_row(self)
    }

    fn name(&self) -> String {
        self.id.clone()
    }

    fn page(&self) -> Option<String> {
        Some(output::upgrade_hosts_table(self))
    }

    /// Campaigns' list has no apiVersion (they are no crds kind).
    fn structured(objects: Vec<Value>, query: &Query<'_>) -> Option<Value> {
        Some(match query.name {
            Some(_) => objects.into_iter().next().unwrap_or_default(),
            None => json!({"kind": "List", "items": objects}),
        })
    }
}
