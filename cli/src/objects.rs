//! The verbs over the kinds users declare in files (Container, ContainerSet, Secret), written once over
//! [`Resource`](kedge_crds::Resource) and the API's generic routes: preparing what apply sends, applying one object (also as a
//! client or server dry run), pruning an apply set, the live and local texts `diff` compares, deleting
//! one object, listing by selector, and the describe page.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use kedge_crds::container_set::{SET_LABEL, SET_REVISION_LABEL};
use kedge_crds::event::Event;
use kedge_crds::{Container, ContainerSet};
use reqwest::Method;
use serde_json::Value;

use crate::base::{bad_answer, recent_events, resource_path, APPLYSET_LABEL};
use crate::client::{encode, Client};
use crate::error::{CliResult, Exit};
use crate::kinds::{Kind, Table};
use crate::output;
use crate::sets;
use crate::types::List;
use crate::DryRun;

/// A kind users declare: a crds [`Resource`](kedge_crds::Resource) (its metadata, and its plural, which names its routes)
/// with its `get` row ([`Table`]), and its describe page. A kind with neither children nor fields of its
/// own to describe is `impl Declared for K {}`.
pub(crate) trait Declared: Kind + Table {
    /// Whether `apply --prune` may delete it when its apply set no longer declares it.
    fn prunable(&self) -> bool {
        true
    }
    /// Whether an event listed under the object's name is about it (its describe page's `Events:`):
    /// those whose `involvedObject` names the kind.
    fn about(event: &Event) -> bool {
        event.involved_object.starts_with(&format!("{}/", Self::KIND))
    }
    /// The page `kedge describe KIND NAME` prints: the kind's fields and sections, `events` last. By
    /// default its metadata, its status as YAML and its events.
    async fn describe_page(&self, _: &Client, events: &[Event], now: DateTime<Utc>) -> CliResult<String> {
        let status = self.status().map(|status| serde_json::to_value(status).unwrap_or_default());
        Ok(output::describe_object(self.metadata(), status.as_ref(), events, now))
    }
}

impl Declared for Container {
    /// A set's children (both labels: what the controller writes) belong to the set, which writes
    /// them back: never pruned on their own.
    fn prunable(&self) -> bool {
        let labels = &self.metadata.labels;
        !(labels.contains_key(SET_LABEL) && labels.contains_key(SET_REVISION_LABEL))
    }

    /// Events are listed by name: a container's page shows every event of its name.
    fn about(_event: &Event) -> bool {
        true
    }

    async fn describe_page(&self, _: &Client, events: &[Event], now: DateTime<Utc>) -> CliResult<String> {
        Ok(output::describe_container(self, events, now))
    }
}

impl Declared for ContainerSet {
    /// The set, its children (the containers labelled with its name) and its events.
    async fn describe_page(
        &self,
        client: &Client,
        events: &[Event],
        now: DateTime<Utc>,
    ) -> CliResult<String> {
        let selector = format!("{SET_LABEL}={}", self.metadata.name);
        let children = list_selected::<Container>(client, &self.metadata.namespace, &selector, false).await?;
        Ok(sets::describe_set(self, &children, events, now))
    }
}

/// `kedge describe KIND NAME`: reads the object and its recent events, and prints its page.
pub(crate) async fn describe<K: Declared>(client: &Client, namespace: &str, name: &str) -> CliResult<()> {
    let object: K = crate::error::from_server(client.get(&resource_path::<K>(namespace, name)).await?)
        .map_err(bad_answer)?;
    let events = recent_events(client, namespace, name, K::about).await?;
    print!("{}", object.describe_page(client, &events, Utc::now()).await?);
    Ok(())
}

/// The objects of kind `K` a label selector picks, in `namespace` or (`all_namespaces`) in all.
pub(crate) async fn list_selected<K: Declared>(
    client: &Client,
    namespace: &str,
    selector: &str,
    all_namespaces: bool,
) -> CliResult<Vec<K>> {
    let selector = encode(selector);
    let path = if all_namespaces {
        format!("/api/v1/{}?labelSelector={selector}", K::PLURAL)
    } else {
        format!("/api/v1/namespaces/{}/{}?labelSelector={selector}", encode(namespace), K::PLURAL)
    };
    Ok(List::<K>::from_answer(client.get(&path).await?)?.items)
}

/// What apply sends: the namespace filled in from `-n` and the apply set label on the object itself
/// (a set's template does not get it: children are never pruned by the apply set).
pub(crate) fn prepare<K: Declared>(mut objects: Vec<K>, namespace: &str, applyset: Option<&str>) -> Vec<K> {
    for object in &mut objects {
        let metadata = object.metadata_mut();
        if metadata.namespace == kedge_crds::DEFAULT_NAMESPACE {
            metadata.namespace = namespace.to_owned();
        }
        if let Some(applyset) = applyset {
            metadata.labels.insert(APPLYSET_LABEL.to_owned(), applyset.to_owned());
        }
    }
    objects
}

/// Apply-set membership is named, never implied: reads each object's live version, and
/// - without a set of this apply's own (no `--prune`, no `--applyset`), keeps the set the live
///   object is in (an apply without prune neither adds an object to a set nor takes it out);
/// - with one, answers a line for each object the input would move out of another set (unless
///   `take_ownership`), so that the caller refuses the whole apply.
pub(crate) async fn settle_membership<K: Declared>(
    client: &Client,
    objects: &mut [K],
    applyset: Option<&str>,
    take_ownership: bool,
) -> CliResult<Vec<String>> {
    let mut moves = Vec::new();
    for object in objects.iter_mut() {
        let metadata = object.metadata();
        let Some(live) = read::<K>(client, &metadata.namespace, &metadata.name).await? else {
            continue;
        };
        let Some(live_set) = live.metadata().labels.get(APPLYSET_LABEL).cloned() else {
            continue;
        };
        match applyset {
            None => {
                object.metadata_mut().labels.entry(APPLYSET_LABEL.to_owned()).or_insert(live_set);
            }
            Some(ours) if ours != live_set && !take_ownership => moves.push(format!(
                "{}/{} (namespace {}) is in apply set `{live_set}`, not `{ours}`",
                K::WORD,
                metadata.name,
                metadata.namespace
            )),
            Some(_) => {}
        }
    }
    Ok(moves)
}

/// The objects whose JSON, as apply sends it, is larger than the API accepts
/// ([`kedge_controller::api::MAX_BODY_BYTES`]): one message each, naming its file (`files[i]` is
/// where `objects[i]` came from). Checked before anything is sent, because the server refuses such a
/// body by closing the connection in the middle of the upload.
pub(crate) fn too_large<K: Declared>(objects: &[K], files: &[String]) -> Vec<String> {
    let limit = kedge_controller::api::MAX_BODY_BYTES;
    objects
        .iter()
        .zip(files)
        .filter_map(|(object, file)| {
            let size = serde_json::to_vec(object).map_or(0, |json| json.len());
            (size > limit).then(|| {
                format!(
                    "{file}: {}/{} is {} KiB as JSON, over the API's limit of {} KiB per object",
                    K::WORD,
                    object.metadata().name,
                    size.div_ceil(1024),
                    limit >> 10
                )
            })
        })
        .collect()
}

/// An object as the CLI may print it: a [`Resource::SENSITIVE`](kedge_crds::Resource) kind with
/// each value as `<redacted>` alone. The CLI cannot fingerprint a value: the fingerprint is keyed by
/// a key only the store holds (docs/secrets.md), so a local file is compared through
/// [`as_the_server_shows`].
fn shown<K: Declared>(object: &K) -> Value {
    // A GitSource's webhook secret, as the API hides it: a changed secret is not shown by diff.
    let mut hidden = object.clone();
    hidden.hide_credentials();
    let mut value = serde_json::to_value(&hidden).unwrap_or_default();
    if K::SENSITIVE {
        kedge_crds::secret::redact_object(&mut value, None);
    }
    value
}

/// A local object as the API shows it, for comparing with the live one: a sensitive kind's answer
/// to a dry-run write (redacted and fingerprinted by the server with its key, nothing stored),
/// any other kind as [`shown`].
async fn as_the_server_shows<K: Declared>(client: &Client, object: &K) -> CliResult<Value> {
    if !K::SENSITIVE {
        return Ok(shown(object));
    }
    let metadata = object.metadata();
    let path = format!("{}?dryRun=All", resource_path::<K>(&metadata.namespace, &metadata.name));
    let body = serde_json::to_value(object).map_err(bad_answer)?;
    Ok(client.send(Method::PUT, &path, Some(&body)).await?.body)
}

/// The parts of an object a user declares: no status and no store-managed metadata.
/// On the serialized form, by field name, because it serves every kind: each `Resource` serializes
/// its `metadata` and `status` under these names (the only untyped field access of the CLI, with
/// [`compared_by_diff`]'s).
fn declared(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
    }
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in ["uid", "generation", "resourceVersion", "creationTimestamp"] {
            metadata.remove(key);
        }
    }
    value
}

/// What `diff` compares: what users declare, without the apply set label, which is bookkeeping (the
/// same file applied as part of a directory and on its own differs only in it).
fn compared_by_diff(value: Value) -> Value {
    let mut value = declared(value);
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(labels) = metadata.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(APPLYSET_LABEL);
            if labels.is_empty() {
                metadata.remove("labels");
            }
        }
    }
    value
}

/// Reads one object; `None` when it does not exist.
async fn read<K: Declared>(client: &Client, namespace: &str, name: &str) -> CliResult<Option<K>> {
    match client.get(&resource_path::<K>(namespace, name)).await {
        Ok(live) => Ok(Some(crate::error::from_server(live)?)),
        Err(error) if error.exit == Exit::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Applies one object; answers the outcome word (`created`, `configured`, `unchanged`) and the
/// object to print. A client dry run compares with the live object as apply would write it (the
/// apply set label included).
pub(crate) async fn apply_one<K: Declared>(
    client: &Client,
    object: &K,
    dry_run: DryRun,
) -> CliResult<(String, Value)> {
    let metadata = object.metadata();
    let path = resource_path::<K>(&metadata.namespace, &metadata.name);
    match dry_run {
        DryRun::Client => {
            let word = match read::<K>(client, &metadata.namespace, &metadata.name).await? {
                None => "created",
                Some(live)
                    if declared(shown(&live)) == declared(as_the_server_shows(client, object).await?) =>
                {
                    "unchanged"
                }
                Some(_) => "configured",
            };
            Ok((word.to_owned(), shown(object)))
        }
        DryRun::None | DryRun::Server => {
            let path = if dry_run == DryRun::Server { format!("{path}?dryRun=All") } else { path };
            let body = serde_json::to_value(object).map_err(bad_answer)?;
            let answer = client.send(Method::PUT, &path, Some(&body)).await?;
            Ok((answer.outcome.unwrap_or_else(|| "configured".to_owned()), answer.body))
        }
    }
}

/// Deletes the objects of `applyset` that the input no longer declares, printing each.
pub(crate) async fn prune<K: Declared>(
    client: &Client,
    wanted: &[K],
    applyset: &str,
    dry_run: DryRun,
    suffix: &str,
) -> CliResult<()> {
    let wanted: BTreeSet<(&str, &str)> =
        wanted.iter().map(|o| (o.metadata().namespace.as_str(), o.metadata().name.as_str())).collect();
    let selector = format!("{APPLYSET_LABEL}={applyset}");
    for object in list_selected::<K>(client, "", &selector, true).await? {
        let metadata = object.metadata();
        if wanted.contains(&(metadata.namespace.as_str(), metadata.name.as_str())) || !object.prunable() {
            continue;
        }
        if dry_run != DryRun::Client {
            let resource_version = metadata.resource_version.clone().unwrap_or_default();
            delete_one::<K>(client, &metadata.namespace, &metadata.name, Some(&resource_version), dry_run)
                .await?;
        }
        println!("{}/{} pruned{suffix}", K::WORD, metadata.name);
    }
    Ok(())
}

/// The live object as YAML for `diff` (empty when it does not exist), and the local one.
pub(crate) async fn diff_texts<K: Declared>(client: &Client, object: &K) -> CliResult<(String, String)> {
    let metadata = object.metadata();
    let live = read::<K>(client, &metadata.namespace, &metadata.name).await?;
    let live = live.map(|live| output::to_yaml(&compared_by_diff(shown(&live)))).unwrap_or_default();
    Ok((live, output::to_yaml(&compared_by_diff(as_the_server_shows(client, object).await?))))
}

/// Deletes one object by name, only at `resource_version` when given (a set's children go with it:
/// the scheduler's leader deletes them).
pub(crate) async fn delete_one<K: Declared>(
    client: &Client,
    namespace: &str,
    name: &str,
    resource_version: Option<&str>,
    dry_run: DryRun,
) -> CliResult<()> {
    let mut query = Vec::new();
    if let Some(rv) = resource_version {
        query.push(format!("resourceVersion={rv}"));
    }
    if dry_run != DryRun::None {
        query.push("dryRun=All".to_owned());
    }
    let mut path = resource_path::<K>(namespace, name);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    client.send(Method::DELETE, &path, None).await.map(drop)
}
