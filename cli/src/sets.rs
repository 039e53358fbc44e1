//! The ContainerSet side of the kubectl-like commands: apply, prune, diff, get, describe and delete of
//! sets, and their table and describe page (golden-tested here, beside `output.rs`'s).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use kedge_crds::container_set::{set_condition, SET_LABEL, SET_REVISION_LABEL};
use kedge_crds::{Container, ContainerSet};
use reqwest::Method;
use serde_json::Value;

use crate::client::{encode, Client};
use crate::commands::{bad_answer, list_items, APPLYSET_LABEL};
use crate::error::{CliError, CliResult, Exit};
use crate::output::{self, age, table, NONE};
use crate::{DryRun, GetArgs, OutputFormat};

pub(crate) fn set_path(namespace: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{}/containersets/{}", encode(namespace), encode(name))
}

/// What apply sends: the namespace filled in from `-n` and the apply set label on the set itself (not
/// on its template: children are never pruned by the apply set, the set's controller owns them).
pub(crate) fn prepare(mut sets: Vec<ContainerSet>, namespace: &str, applyset: &str) -> Vec<ContainerSet> {
    for set in &mut sets {
        if set.metadata.namespace == kedge_crds::DEFAULT_NAMESPACE {
            set.metadata.namespace = namespace.to_owned();
        }
        set.metadata.labels.insert(APPLYSET_LABEL.to_owned(), applyset.to_owned());
    }
    sets
}

/// The parts of a set a user declares, without the apply set label (as `diff` compares containers).
pub(crate) fn declared(set: &ContainerSet) -> Value {
    let mut value = serde_json::to_value(set).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.remove("status");
    }
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in ["uid", "generation", "resourceVersion", "creationTimestamp"] {
            metadata.remove(key);
        }
        if let Some(labels) = metadata.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(APPLYSET_LABEL);
            if labels.is_empty() {
                metadata.remove("labels");
            }
        }
    }
    value
}

/// Applies one set; answers the outcome word and the object to print.
pub(crate) async fn apply_one(
    client: &Client,
    set: &ContainerSet,
    dry_run: DryRun,
) -> CliResult<(String, Value)> {
    let path = set_path(&set.metadata.namespace, &set.metadata.name);
    match dry_run {
        DryRun::Client => match client.get(&path).await {
            Ok(live) => {
                let live: ContainerSet = serde_json::from_value(live).map_err(bad_answer)?;
                let word = if declared(&live) == declared(set) { "unchanged" } else { "configured" };
                Ok((word.to_owned(), serde_json::to_value(set).unwrap_or_default()))
            }
            Err(error) if error.exit == Exit::NotFound => {
                Ok(("created".to_owned(), serde_json::to_value(set).unwrap_or_default()))
            }
            Err(error) => Err(error),
        },
        DryRun::None | DryRun::Server => {
            let path = if dry_run == DryRun::Server { format!("{path}?dryRun=All") } else { path };
            let body = serde_json::to_value(set).map_err(bad_answer)?;
            let answer = client.send(Method::PUT, &path, Some(&body)).await?;
            Ok((answer.outcome.unwrap_or_else(|| "configured".to_owned()), answer.body))
        }
    }
}

/// Deletes the sets of `applyset` that the input no longer declares.
pub(crate) async fn prune(
    client: &Client,
    wanted: &BTreeSet<(String, String)>,
    applyset: &str,
    dry_run: DryRun,
    suffix: &str,
) -> CliResult<()> {
    let selector = encode(&format!("{APPLYSET_LABEL}={applyset}"));
    let list = client.get(&format!("/api/v1/containersets?labelSelector={selector}")).await?;
    for set in set_items(&list)? {
        let key = (set.metadata.namespace.clone(), set.metadata.name.clone());
        if wanted.contains(&key) {
            continue;
        }
        if dry_run != DryRun::Client {
            let mut path = set_path(&key.0, &key.1);
            path.push_str(&format!("?resourceVersion={}", set.metadata.resource_version.unwrap_or_default()));
            if dry_run == DryRun::Server {
                path.push_str("&dryRun=All");
            }
            client.send(Method::DELETE, &path, None).await?;
        }
        println!("containerset/{} pruned{suffix}", key.1);
    }
    Ok(())
}

/// The live set as YAML for `diff` (empty when it does not exist), and the local one.
pub(crate) async fn diff_texts(client: &Client, set: &ContainerSet) -> CliResult<(String, String)> {
    let live = match client.get(&set_path(&set.metadata.namespace, &set.metadata.name)).await {
        Ok(live) => {
            let live: ContainerSet = serde_json::from_value(live).map_err(bad_answer)?;
            output::to_yaml(&declared(&live))
        }
        Err(error) if error.exit == Exit::NotFound => String::new(),
        Err(error) => return Err(error),
    };
    Ok((live, output::to_yaml(&declared(set))))
}

pub(crate) fn set_items(list: &Value) -> CliResult<Vec<ContainerSet>> {
    let items = list.get("items").cloned().unwrap_or(Value::Array(Vec::new()));
    serde_json::from_value(items).map_err(bad_answer)
}

/// `kedge get containersets`.
pub(crate) async fn get(args: &GetArgs, client: &Client, ns: &str) -> CliResult<Exit> {
    let selector =
        args.selector.as_deref().map(|s| format!("labelSelector={}", encode(s))).unwrap_or_default();
    if args.watch {
        if !matches!(args.output, None | Some(OutputFormat::Wide)) {
            return Err(CliError::usage("`get containersets -w` prints a table: use no `-o`, or `-o wide`"));
        }
        return watch(args, client, ns, &selector).await;
    }
    let sets = list(args, client, ns, &selector).await?;
    let wide = args.output == Some(OutputFormat::Wide);
    match args.output {
        None | Some(OutputFormat::Wide) => {
            if sets.is_empty() {
                eprintln!("No containersets found.");
            } else {
                print!("{}", sets_table(&sets, wide, args.all_namespaces, Utc::now()));
            }
        }
        Some(OutputFormat::Name) => sets.iter().for_each(|s| println!("containerset/{}", s.metadata.name)),
        Some(OutputFormat::Json) | Some(OutputFormat::Yaml) => {
            let objects: Vec<Value> =
                sets.iter().map(|s| serde_json::to_value(s).unwrap_or_default()).collect();
            let value = if args.name.is_some() && objects.len() == 1 {
                objects[0].clone()
            } else {
                serde_json::json!({ "apiVersion": kedge_crds::API_VERSION, "kind": "List", "items": objects })
            };
            if args.output == Some(OutputFormat::Json) {
                println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
            } else {
                print!("{}", output::to_yaml(&value));
            }
        }
    }
    Ok(Exit::Ok)
}

/// The sets `get` shows: one by name, or a list (every namespace with `-A`), selected by `-l`.
async fn list(args: &GetArgs, client: &Client, ns: &str, selector: &str) -> CliResult<Vec<ContainerSet>> {
    Ok(match &args.name {
        Some(name) => {
            vec![serde_json::from_value::<ContainerSet>(client.get(&set_path(ns, name)).await?)
                .map_err(bad_answer)?]
        }
        None if args.all_namespaces => {
            set_items(&client.get(&format!("/api/v1/containersets?{selector}")).await?)?
        }
        None => set_items(
            &client.get(&format!("/api/v1/namespaces/{}/containersets?{selector}", encode(ns))).await?,
        )?,
    })
}

/// `get containersets -w`: the table, then a row whenever a set's row changes (looked at every 2 s;
/// the scheduler's leader moves sets once a second at most).
async fn watch(args: &GetArgs, client: &Client, ns: &str, selector: &str) -> CliResult<Exit> {
    let wide = args.output == Some(OutputFormat::Wide);
    let mut shown: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    let mut header = true;
    loop {
        let sets = list(args, client, ns, selector).await?;
        let now = Utc::now();
        let mut rows = Vec::new();
        for set in &sets {
            let row = set_row(set, wide, args.all_namespaces, now);
            // AGE moves by itself: a row is printed again when anything else changes.
            let mut fingerprint = row.clone();
            fingerprint.remove(if args.all_namespaces { 5 } else { 4 });
            if shown.get(&set.key()) != Some(&fingerprint) {
                shown.insert(set.key(), fingerprint);
                rows.push(row);
            }
        }
        if !rows.is_empty() {
            let table = table(&set_header(wide, args.all_namespaces), &rows);
            let body =
                if header { table.as_str() } else { table.split_once('\n').map_or("", |(_, rest)| rest) };
            print!("{body}");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            header = false;
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

/// `kedge describe containerset NAME`: the set, its children and its recent events.
pub(crate) async fn describe(client: &Client, ns: &str, name: &str) -> CliResult<Exit> {
    let set: ContainerSet =
        serde_json::from_value(client.get(&set_path(ns, name)).await?).map_err(bad_answer)?;
    let selector = encode(&format!("{SET_LABEL}={name}"));
    let children = list_items(
        &client
            .get(&format!("/api/v1/namespaces/{}/containers?labelSelector={selector}", encode(ns)))
            .await?,
    )?;
    let events =
        client.get(&format!("/api/v1/events?namespace={}&object={}", encode(ns), encode(name))).await?;
    let mut events: Vec<Value> = events["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["involvedObject"].as_str().is_some_and(|o| o.starts_with("ContainerSet/")))
        .collect();
    output::sort_events(&mut events);
    let recent = events.split_off(events.len().saturating_sub(10));
    print!("{}", describe_set(&set, &children, &recent, Utc::now()));
    Ok(Exit::Ok)
}

/// Deletes one set by name; its children go with it (the scheduler's leader deletes them).
pub(crate) async fn delete(
    client: &Client,
    ns: &str,
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
    let mut path = set_path(ns, name);
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    client.send(Method::DELETE, &path, None).await.map(drop)
}

pub fn set_header(wide: bool, namespaces: bool) -> Vec<&'static str> {
    let mut header = Vec::new();
    if namespaces {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "READY", "UP-TO-DATE", "REVISION", "AGE"]);
    if wide {
        header.extend(["IMAGE", "ROLLOUT", "SELECTOR"]);
    }
    header
}

pub fn set_row(set: &ContainerSet, wide: bool, namespaces: bool, now: DateTime<Utc>) -> Vec<String> {
    let status = set.status.as_ref();
    let mut row = Vec::new();
    if namespaces {
        row.push(set.metadata.namespace.clone());
    }
    row.push(set.metadata.name.clone());
    row.push(format!("{}/{}", status.map_or(0, |s| s.ready_replicas), set.spec.replicas));
    row.push(status.map_or(0, |s| s.updated_replicas).to_string());
    row.push(revision_word(set));
    row.push(age(set.metadata.creation_timestamp.as_deref(), now));
    if wide {
        row.push(set.spec.template.spec.image.to_string());
        let rollout = status.and_then(|s| s.condition(set_condition::PROGRESSING)).map(|c| c.reason.clone());
        row.push(rollout.unwrap_or_else(|| NONE.to_owned()));
        let selector =
            set.spec.placement.as_ref().map(|p| {
                p.host_selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
            });
        row.push(selector.filter(|s| !s.is_empty()).unwrap_or_else(|| NONE.to_owned()));
    }
    row
}

pub fn sets_table(sets: &[ContainerSet], wide: bool, namespaces: bool, now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = sets.iter().map(|s| set_row(s, wide, namespaces, now)).collect();
    table(&set_header(wide, namespaces), &rows)
}

/// `current` or `current->update` while a rollout runs.
fn revision_word(set: &ContainerSet) -> String {
    let Some(status) = set.status.as_ref() else { return NONE.to_owned() };
    match (&status.current_revision, &status.update_revision) {
        (Some(current), Some(update)) if current != update => format!("{current}->{update}"),
        (Some(current), _) => current.clone(),
        _ => NONE.to_owned(),
    }
}

pub fn describe_set(
    set: &ContainerSet,
    children: &[Container],
    events: &[Value],
    now: DateTime<Utc>,
) -> String {
    let meta = &set.metadata;
    let spec = &set.spec;
    let status = set.status.as_ref();
    let mut out = String::new();
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "{:<18}{value}", format!("{name}:"));
    };
    field("Name", meta.name.clone());
    field("Namespace", meta.namespace.clone());
    let labels: Vec<String> = meta.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    field("Labels", if labels.is_empty() { NONE.to_owned() } else { labels.join(", ") });
    let created = meta.creation_timestamp.as_deref();
    field("Created", created.map_or(NONE.to_owned(), |c| format!("{c} ({} ago)", age(Some(c), now))));
    let generation = meta.generation.map_or(NONE.to_owned(), |g| g.to_string());
    let observed = status.and_then(|s| s.observed_generation).map_or(NONE.to_owned(), |g| g.to_string());
    field("Generation", format!("{generation} (observed: {observed})"));
    field(
        "Replicas",
        format!(
            "{} desired | {} current | {} ready | {} up-to-date",
            spec.replicas,
            status.map_or(0, |s| s.replicas),
            status.map_or(0, |s| s.ready_replicas),
            status.map_or(0, |s| s.updated_replicas)
        ),
    );
    field("Image", spec.template.spec.image.to_string());
    let placement = spec.placement.clone().unwrap_or_default();
    let selector: Vec<String> = placement.host_selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    field("Host Selector", if selector.is_empty() { NONE.to_owned() } else { selector.join(", ") });
    field(
        "Spread",
        match placement.max_per_host {
            Some(max) => format!("at most {max} per host"),
            None => "one per host while hosts suffice, then even".to_owned(),
        },
    );
    let action = match spec.failure_action_or_default() {
        kedge_crds::FailureAction::Rollback => "rollback",
        kedge_crds::FailureAction::Pause => "pause",
    };
    field(
        "Rolling Update",
        format!(
            "batch {}, health timeout {}s, on failure {action}",
            spec.batch_size_or_default(),
            spec.health_timeout_or_default().as_secs()
        ),
    );
    field("Revision", revision_word(set));
    let rollout = status.and_then(|s| s.rollout.as_ref()).map(|r| {
        let names =
            |ordinals: &[u32]| ordinals.iter().map(|o| set.child_name(*o)).collect::<Vec<_>>().join(", ");
        let mut text =
            format!("to {}: updated [{}], gating [{}]", r.revision, names(&r.updated), names(&r.batch));
        if let Some(paused) = &r.paused {
            let _ = write!(text, ", paused: {paused}");
        }
        text
    });
    field("Rollout", rollout.unwrap_or_else(|| NONE.to_owned()));
    let failed = status.and_then(|s| s.failed_revision.as_ref()).map(|revision| {
        format!("{revision}: {}", status.and_then(|s| s.failure_message.clone()).unwrap_or_default())
    });
    field("Failed Revision", failed.unwrap_or_else(|| NONE.to_owned()));

    out.push_str("Conditions:\n");
    match status.filter(|s| !s.conditions.is_empty()) {
        None => out.push_str("  <none>\n"),
        Some(status) => {
            let rows: Vec<Vec<String>> = status
                .conditions
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
            out.push_str(&indent(&table(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &rows)));
        }
    }
    out.push_str("Children:\n");
    if children.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = children
            .iter()
            .map(|c| {
                let status = c.status.as_ref();
                let word = |kind: &str| {
                    status
                        .and_then(|s| s.condition(kind))
                        .map_or("Unknown".to_owned(), |c| format!("{:?}", c.status))
                };
                vec![
                    c.metadata.name.clone(),
                    status.and_then(|s| s.host.clone()).unwrap_or_else(|| NONE.to_owned()),
                    c.metadata.labels.get(SET_REVISION_LABEL).cloned().unwrap_or_else(|| NONE.to_owned()),
                    c.spec.image.to_string(),
                    word("Ready"),
                    word("Synced"),
                ]
            })
            .collect();
        out.push_str(&indent(&table(&["NAME", "HOST", "REVISION", "IMAGE", "READY", "SYNCED"], &rows)));
    }
    out.push_str("Events:\n");
    if events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                let text = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
                vec![age(Some(&text("lastTimestamp")), now), text("type"), text("reason"), text("message")]
            })
            .collect();
        out.push_str(&indent(&table(&["LAST SEEN", "TYPE", "REASON", "MESSAGE"], &rows)));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

#[cfg(test)]
mod tests {
    //! Golden tests: fixed objects and a fixed `now`, the exact text pinned.

    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn fixture(rolling: bool) -> ContainerSet {
        let status = if rolling {
            json!({
                "observedGeneration": 2, "replicas": 3, "readyReplicas": 2, "updatedReplicas": 1,
                "currentRevision": "aaaaaaaaaa", "updateRevision": "bbbbbbbbbb",
                "rollout": {"revision": "bbbbbbbbbb", "updated": [0, 1], "batch": [1]},
                "conditions": [
                    {"type": "Available", "status": "False", "reason": "ReplicasNotReady", "message": "2 of 3 ready",
                     "lastTransitionTime": "2026-11-21T11:59:00Z"},
                    {"type": "Progressing", "status": "True", "reason": "RollingUpdate", "message": "batch",
                     "lastTransitionTime": "2026-11-21T11:58:00Z"}
                ]
            })
        } else {
            json!({
                "observedGeneration": 3, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 3,
                "currentRevision": "aaaaaaaaaa", "updateRevision": "aaaaaaaaaa",
                "failedRevision": "cccccccccc", "failureMessage": "web-0: NewContainerExited: exited (code 1)",
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasReady", "message": "3 of 3 ready",
                     "lastTransitionTime": "2026-11-21T11:00:00Z"},
                    {"type": "Progressing", "status": "False", "reason": "RolledBack",
                     "message": "revision cccccccccc failed", "lastTransitionTime": "2026-11-21T11:59:30Z"}
                ]
            })
        };
        serde_json::from_value(json!({
            "apiVersion": "kedge.io/v1", "kind": "ContainerSet",
            "metadata": {"name": if rolling { "api" } else { "web" }, "namespace": "default", "generation": 3,
                         "creationTimestamp": "2026-11-20T12:00:00Z"},
            "spec": {"replicas": 3, "template": {"spec": {"image": "kedge-test/app:v1"}},
                     "placement": {"hostSelector": {"zone": "a"}}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn the_sets_table() {
        let sets = [fixture(false), fixture(true)];
        assert_eq!(
            sets_table(&sets, false, false, now()),
            "\
NAME   READY   UP-TO-DATE   REVISION                 AGE
web    3/3     3            aaaaaaaaaa               1d
api    2/3     1            aaaaaaaaaa->bbbbbbbbbb   1d
"
        );
        assert_eq!(
            sets_table(&sets[..1], true, true, now()),
            "\
NAMESPACE   NAME   READY   UP-TO-DATE   REVISION     AGE   IMAGE               ROLLOUT      SELECTOR
default     web    3/3     3            aaaaaaaaaa   1d    kedge-test/app:v1   RolledBack   zone=a
"
        );
    }

    #[test]
    fn the_describe_page() {
        let child: Container = serde_json::from_value(json!({
            "apiVersion": "kedge.io/v1", "kind": "Container",
            "metadata": {"name": "web-0", "labels": {"kedge.io/set": "web", "kedge.io/set-revision": "aaaaaaaaaa"}},
            "spec": {"image": "kedge-test/app:v1"},
            "status": {"host": "h1", "conditions": [
                {"type": "Ready", "status": "True", "reason": "Running", "lastTransitionTime": "2026-11-21T11:00:00Z"},
                {"type": "Synced", "status": "True", "reason": "UpToDate", "lastTransitionTime": "2026-11-21T11:00:00Z"}
            ]}
        }))
        .unwrap();
        let events =
            [json!({"type": "Warning", "reason": "RolledBack", "message": "revision cccccccccc failed",
                             "lastTimestamp": "2026-11-21T11:59:30Z"})];
        assert_eq!(
            describe_set(&fixture(false), &[child], &events, now()),
            "\
Name:             web
Namespace:        default
Labels:           <none>
Created:          2026-11-20T12:00:00Z (1d ago)
Generation:       3 (observed: 3)
Replicas:         3 desired | 3 current | 3 ready | 3 up-to-date
Image:            kedge-test/app:v1
Host Selector:    zone=a
Spread:           one per host while hosts suffice, then even
Rolling Update:   batch 1, health timeout 60s, on failure rollback
Revision:         aaaaaaaaaa
Rollout:          <none>
Failed Revision:  cccccccccc: web-0: NewContainerExited: exited (code 1)
Conditions:
  TYPE          STATUS   REASON                 AGE   MESSAGE
  Available     True     MinimumReplicasReady   1h    3 of 3 ready
  Progressing   False    RolledBack             30s   revision cccccccccc failed
Children:
  NAME    HOST   REVISION     IMAGE               READY   SYNCED
  web-0   h1     aaaaaaaaaa   kedge-test/app:v1   True    True
Events:
  LAST SEEN   TYPE      REASON       MESSAGE
  30s         Warning   RolledBack   revision cccccccccc failed
"
        );
    }
}
