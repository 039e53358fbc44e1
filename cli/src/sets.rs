//! The ContainerSet's table row and describe page (golden-tested here, beside `output.rs`'s): all a
//! set adds to the generic verbs (`get.rs`, `objects.rs`).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use kedge_crds::container_set::{set_condition, SET_REVISION_LABEL};
use kedge_crds::event::Event;
use kedge_crds::{Container, ContainerSet};

use crate::output::{self, age, NONE};

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
    events: &[Event],
    now: DateTime<Utc>,
) -> String {
    let meta = &set.metadata;
    let spec = &set.spec;
    let status = set.status.as_ref();
    let mut out = output::page_start(meta);
    let mut field = |name: &str, value: String| out.push_str(&output::field_line(name, &value));
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

    out.push_str(&output::conditions_section(status.map_or(&[], |s| &s.conditions[..]), now));
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
    out.push_str(&output::section(
        "Children",
        &["NAME", "HOST", "REVISION", "IMAGE", "READY", "SYNCED"],
        &rows,
    ));
    out.push_str(&output::events_section(events, now));
    out
}

#[cfg(test)]
mod tests {
    //! Golden tests: fixed objects and a fixed `now`, the exact text pinned.

    use super::*;
    use crate::output::table;
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
            table(
                &set_header(false, false),
                &sets.iter().map(|s| set_row(s, false, false, now())).collect::<Vec<_>>()
            ),
            "\
NAME   READY   UP-TO-DATE   REVISION                 AGE
web    3/3     3            aaaaaaaaaa               1d
api    2/3     1            aaaaaaaaaa->bbbbbbbbbb   1d
"
        );
        assert_eq!(
            table(&set_header(true, true), &[set_row(&sets[0], true, true, now())]),
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
        let events: [Event; 1] =
            [serde_json::from_value(json!({"involvedObject": "ContainerSet/default/web",
            "namespace": "default", "type": "Warning", "reason": "RolledBack",
            "message": "revision cccccccccc failed", "host": "h1", "count": 1,
            "firstTimestamp": "2026-11-21T11:59:30Z", "lastTimestamp": "2026-11-21T11:59:30Z"}))
            .unwrap()];
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
