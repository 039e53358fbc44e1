//! The set controller's decisions, without a store or Docker: batch planning, gates, rollback, scaling.

use super::*;

fn set(image: &str, replicas: u32, batch_size: u32) -> ContainerSet {
    let mut set: ContainerSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "kedge.io/v1",
        "kind": "ContainerSet",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"image": image}},
            "rollingUpdate": {"batchSize": batch_size, "healthTimeout": "30s"}
        }
    }))
    .unwrap();
    set.metadata.generation = Some(1);
    set
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
}

/// A child as the store would hold it after the controller wrote it at `generation`, with a status
/// whose conditions are `ready`, `synced` and `degraded` at `observed`.
fn child(
    set: &ContainerSet,
    ordinal: u32,
    template_of: &ContainerSet,
    generation: i64,
    observed: Option<(i64, bool, bool, bool)>,
) -> (u32, Child) {
    let revision = template_revision(&template_of.spec.template);
    let mut spec = child_spec(set, ordinal, &revision, &template_of.spec.template);
    spec.metadata.generation = Some(generation);
    spec.metadata.resource_version = Some("10".into());
    let status = observed.map(|(observed, ready, synced, degraded)| {
        let condition = |kind: &str, on: bool, reason: &str| Condition {
            kind: kind.into(),
            status: if on { ConditionStatus::True } else { ConditionStatus::False },
            reason: reason.into(),
            message: String::new(),
            last_transition_time: "2027-01-15T08:00:00Z".into(),
            observed_generation: Some(observed),
        };
        ContainerStatus {
            observed_generation: Some(observed),
            conditions: vec![
                condition("Ready", ready, "Running"),
                condition("Synced", synced, if degraded { "NewContainerExited" } else { "UpToDate" }),
                condition("Degraded", degraded, "Stalled"),
            ],
            last_error: degraded.then(|| "the new container exited with code 1: boom\nboom\n".to_owned()),
            ..ContainerStatus::default()
        }
    });
    (ordinal, Child { spec, status, foreign: false })
}

fn healthy(set: &ContainerSet, ordinal: u32, template_of: &ContainerSet, generation: i64) -> (u32, Child) {
    child(set, ordinal, template_of, generation, Some((generation, true, true, false)))
}

fn written(decision: &Decision) -> Vec<(String, String)> {
    decision.writes.iter().map(|c| (c.metadata.name.clone(), c.spec.image.to_string())).collect()
}

fn names(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(name, image)| (name.to_string(), image.to_string())).collect()
}

fn progressing(status: &ContainerSetStatus) -> (ConditionStatus, String) {
    let condition = status.condition(set_condition::PROGRESSING).unwrap();
    (condition.status, condition.reason.clone())
}

#[test]
fn a_new_set_writes_every_child_at_once_from_its_template() {
    let v1 = set("app:v1", 3, 1);
    let decision = decide(&v1, None, &BTreeMap::new(), at(0));
    assert_eq!(written(&decision), names(&[("web-0", "app:v1"), ("web-1", "app:v1"), ("web-2", "app:v1")]));
    let child = &decision.writes[0];
    assert_eq!(child.metadata.labels.get(SET_LABEL).map(String::as_str), Some("web"));
    assert_eq!(child.metadata.labels.get(SET_REVISION_LABEL), Some(&template_revision(&v1.spec.template)));
    assert_eq!(decision.status.current_template.as_ref(), Some(&v1.spec.template));
    assert_eq!(progressing(&decision.status), (ConditionStatus::False, "RolloutComplete".into()));
    assert_eq!(decision.status.condition("Available").unwrap().status, ConditionStatus::False);
}

#[test]
fn a_rollout_moves_batch_by_batch_through_the_health_gate() {
    let v1 = set("app:v1", 3, 1);
    let v2 = set("app:v2", 3, 1);
    let all_v1: BTreeMap<u32, Child> = (0..3).map(|o| healthy(&v1, o, &v1, 1)).collect();
    let settled = decide(&v1, None, &all_v1, at(0));
    assert!(settled.writes.is_empty());
    assert_eq!(settled.status.ready_replicas, 3);
    assert_eq!(settled.status.condition("Available").unwrap().status, ConditionStatus::True);

    // The template changes: the first batch (web-0) gets v2, the others are left alone.
    let first = decide(&v2, Some(&settled.status), &all_v1, at(1));
    assert_eq!(written(&first), names(&[("web-0", "app:v2")]));
    assert_eq!(first.status.rollout.as_ref().unwrap().batch, vec![0]);
    assert_eq!(progressing(&first.status), (ConditionStatus::True, "RollingUpdate".into()));

    // The write is stored (generation 2) but not reconciled yet: the gate waits, nothing more moves.
    let mut children = all_v1.clone();
    children.extend([child(&v2, 0, &v2, 2, Some((1, true, true, false)))]);
    let waiting = decide(&v2, Some(&first.status), &children, at(2));
    assert!(waiting.writes.is_empty(), "{:?}", written(&waiting));
    assert_eq!(waiting.status.rollout.as_ref().unwrap().batch, vec![0]);

    // Ready and Synced at generation 2: the next batch starts.
    children.extend([healthy(&v2, 0, &v2, 2)]);
    let second = decide(&v2, Some(&waiting.status), &children, at(3));
    assert_eq!(written(&second), names(&[("web-1", "app:v2")]));
    assert_eq!(second.status.rollout.as_ref().unwrap().updated, vec![0, 1]);

    children.extend([healthy(&v2, 1, &v2, 2)]);
    let third = decide(&v2, Some(&second.status), &children, at(4));
    assert_eq!(written(&third), names(&[("web-2", "app:v2")]));
    children.extend([healthy(&v2, 2, &v2, 2)]);
    let done = decide(&v2, Some(&third.status), &children, at(5));
    assert!(done.writes.is_empty());
    assert_eq!(done.status.rollout, None);
    assert_eq!(done.status.current_revision, Some(template_revision(&v2.spec.template)));
    assert_eq!(done.status.current_template.as_ref(), Some(&v2.spec.template));
    assert_eq!(done.status.updated_replicas, 3);
    assert_eq!(progressing(&done.status), (ConditionStatus::False, "RolloutComplete".into()));
    assert_eq!(done.event.as_ref().unwrap().1, "RolloutComplete");
    // v1 is history now: what `kedge rollout undo` goes back to.
    let record = RevisionRecord {
        revision: template_revision(&v1.spec.template),
        template: v1.spec.template.clone(),
        replaced_at: rfc3339(at(5)),
    };
    assert_eq!(done.status.history, vec![record]);
}

/// Rolls a one-replica set from `status` to `to` (its child reconciled and healthy), returning the
/// status after the rollout completed.
fn rolled(status: &ContainerSetStatus, to: &ContainerSet, generation: i64, now: i64) -> ContainerSetStatus {
    let started = decide(to, Some(status), &BTreeMap::new(), at(now));
    assert_eq!(started.writes.len(), 1, "the one child is written");
    let children: BTreeMap<u32, Child> = [healthy(to, 0, to, generation)].into();
    let done = decide(to, Some(&started.status), &children, at(now + 1));
    assert_eq!(done.status.rollout, None, "the rollout to {} completed", to.spec.template.spec.image);
    done.status
}

#[test]
fn the_history_keeps_the_latest_replaced_revisions_once_each() {
    let version = |n: u32| set(&format!("app:v{n}"), 1, 1);
    let first = decide(&version(0), None, &BTreeMap::new(), at(0));
    let mut status = first.status;
    for n in 1..=12 {
        status = rolled(&status, &version(n), i64::from(n) + 1, i64::from(n) * 10);
    }
    let images: Vec<String> = status.history.iter().map(|r| r.template.spec.image.to_string()).collect();
    let expected: Vec<String> = (2..=11).rev().map(|n| format!("app:v{n}")).collect();
    assert_eq!(images, expected, "the latest first, at most {HISTORY_LIMIT}, never the current one");

    // Back to v10 (an undo): it leaves the history, and v12 joins it; nothing appears twice.
    status = rolled(&status, &version(10), 14, 500);
    let images: Vec<String> = status.history.iter().map(|r| r.template.spec.image.to_string()).collect();
    assert_eq!(images[..3], ["app:v12", "app:v11", "app:v9"]);
    assert!(!images.contains(&"app:v10".to_owned()), "{images:?}");
    assert_eq!(images.len(), HISTORY_LIMIT, "{images:?}");
}

#[test]
fn a_failed_recreate_rolls_the_batch_back_at_once_and_is_not_retried() {
    let v1 = set("app:v1", 3, 1);
    let broken = set("fail:latest", 3, 1);
    let all_v1: BTreeMap<u32, Child> = (0..3).map(|o| healthy(&v1, o, &v1, 1)).collect();
    let settled = decide(&v1, None, &all_v1, at(0));
    let first = decide(&broken, Some(&settled.status), &all_v1, at(1));
    assert_eq!(written(&first), names(&[("web-0", "fail:latest")]));

    // The agent's recreate failed and rolled back: Degraded at the new generation, well before the timeout.
    let mut children = all_v1.clone();
    children.extend([child(&broken, 0, &broken, 2, Some((2, true, false, true)))]);
    let rolled_back = decide(&broken, Some(&first.status), &children, at(2));
    assert_eq!(written(&rolled_back), names(&[("web-0", "app:v1")]), "only the updated child is rewritten");
    let status = &rolled_back.status;
    assert_eq!(status.failed_revision, Some(template_revision(&broken.spec.template)));
    assert_eq!(status.rollout, None);
    assert_eq!(progressing(status), (ConditionStatus::False, "RolledBack".into()));
    let message = &status.condition("Progressing").unwrap().message;
    assert!(message.contains("web-0: NewContainerExited"), "{message}");
    assert_eq!(
        status.failure_message.as_deref(),
        Some("web-0: NewContainerExited: the new container exited with code 1: boom boom"),
        "one line, naming the child and the agent's reason"
    );
    assert_eq!(rolled_back.event.as_ref().unwrap().0, EventType::Warning);

    // The same template later: no new rollout, the children stay on v1.
    children.extend([healthy(&v1, 0, &v1, 3)]);
    let later = decide(&broken, Some(status), &children, at(60));
    assert!(later.writes.is_empty(), "{:?}", written(&later));
    assert_eq!(later.status.rollout, None);
    assert_eq!(progressing(&later.status), (ConditionStatus::False, "RolledBack".into()));
    // A new template clears the failure and rolls out.
    let v2 = set("app:v2", 3, 1);
    let next = decide(&v2, Some(&later.status), &children, at(61));
    assert_eq!(next.status.failed_revision, None);
    assert_eq!(written(&next), names(&[("web-0", "app:v2")]));
}

#[test]
fn a_batch_of_every_child_still_rolls_back_to_the_stored_template() {
    let v1 = set("app:v1", 2, 5);
    let broken = set("fail:latest", 2, 5);
    let all_v1: BTreeMap<u32, Child> = (0..2).map(|o| healthy(&v1, o, &v1, 1)).collect();
    let settled = decide(&v1, None, &all_v1, at(0));
    let first = decide(&broken, Some(&settled.status), &all_v1, at(1));
    assert_eq!(written(&first), names(&[("web-0", "fail:latest"), ("web-1", "fail:latest")]));
    // Neither becomes Ready: the health timeout (30 s) fails the batch.
    let children: BTreeMap<u32, Child> =
        (0..2).map(|o| child(&broken, o, &broken, 2, Some((2, false, false, false)))).collect();
    let waiting = decide(&broken, Some(&first.status), &children, at(30));
    assert!(waiting.writes.is_empty());
    let timed_out = decide(&broken, Some(&waiting.status), &children, at(31));
    assert_eq!(written(&timed_out), names(&[("web-0", "app:v1"), ("web-1", "app:v1")]));
    assert!(timed_out.status.failure_message.as_deref().unwrap().contains("health timeout of 30s"));
}

#[test]
fn pause_leaves_the_children_and_waits_for_a_new_template() {
    let v1 = set("app:v1", 2, 1);
    let mut broken = set("fail:latest", 2, 1);
    broken.spec.rolling_update.as_mut().unwrap().failure_action = Some(FailureAction::Pause);
    let all_v1: BTreeMap<u32, Child> = (0..2).map(|o| healthy(&v1, o, &v1, 1)).collect();
    let settled = decide(&v1, None, &all_v1, at(0));
    let first = decide(&broken, Some(&settled.status), &all_v1, at(1));
    let mut children = all_v1.clone();
    children.extend([child(&broken, 0, &broken, 2, Some((2, false, false, true)))]);
    let paused = decide(&broken, Some(&first.status), &children, at(2));
    assert!(paused.writes.is_empty());
    assert_eq!(progressing(&paused.status), (ConditionStatus::False, "RolloutPaused".into()));
    let still = decide(&broken, Some(&paused.status), &children, at(100));
    assert!(still.writes.is_empty());
}

#[test]
fn scaling_creates_missing_ordinals_and_deletes_the_highest() {
    let v1 = set("app:v1", 3, 1);
    let children: BTreeMap<u32, Child> = (0..3).map(|o| healthy(&v1, o, &v1, 1)).collect();
    let settled = decide(&v1, None, &children, at(0));
    let five = set("app:v1", 5, 1);
    let up = decide(&five, Some(&settled.status), &children, at(1));
    assert_eq!(written(&up), names(&[("web-3", "app:v1"), ("web-4", "app:v1")]));
    assert!(up.status.rollout.is_none(), "scaling is not a rollout");
    let children: BTreeMap<u32, Child> = (0..5).map(|o| healthy(&v1, o, &v1, 1)).collect();
    let two = set("app:v1", 2, 1);
    let down = decide(&two, Some(&up.status), &children, at(2));
    assert!(down.writes.is_empty());
    assert_eq!(down.deletes, vec![4, 3, 2]);
    assert_eq!(down.status.replicas, 2);
}

#[test]
fn a_hand_edited_child_is_put_back() {
    let v1 = set("app:v1", 2, 1);
    let mut children: BTreeMap<u32, Child> = (0..2).map(|o| healthy(&v1, o, &v1, 1)).collect();
    let settled = decide(&v1, None, &children, at(0));
    children.get_mut(&1).unwrap().spec.spec.env.insert("DEBUG".into(), "1".into());
    let decision = decide(&v1, Some(&settled.status), &children, at(1));
    assert_eq!(written(&decision), names(&[("web-1", "app:v1")]));
    assert!(decision.writes[0].spec.env.is_empty());
}

#[test]
fn batches_take_the_lowest_ordinals_not_yet_updated() {
    assert_eq!(next_batch(5, &[], 2), vec![0, 1]);
    assert_eq!(next_batch(5, &[0, 1], 2), vec![2, 3]);
    assert_eq!(next_batch(5, &[0, 1, 2, 3], 2), vec![4]);
    assert_eq!(next_batch(5, &[0, 1, 2, 3, 4], 2), Vec::<u32>::new());
    assert_eq!(next_batch(3, &[1], 10), vec![0, 2]);
    assert_eq!(next_batch(3, &[], 0), vec![0], "a batch is never empty while children remain");
}

#[test]
fn children_carry_the_sets_selector_and_spread_limit() {
    let mut v1 = set("app:v1", 1, 1);
    v1.spec.placement = Some(kedge_crds::SetPlacement {
        host_selector: [("zone".to_owned(), "a".to_owned())].into(),
        max_per_host: Some(2),
    });
    let child = child_spec(&v1, 0, "abc", &v1.spec.template);
    assert_eq!(child.spec.placement.unwrap().host_selector.get("zone").map(String::as_str), Some("a"));
    assert_eq!(child.metadata.annotations.get(MAX_PER_HOST_ANNOTATION).map(String::as_str), Some("2"));
}

#[test]
fn a_users_container_holding_a_childs_name_is_left_alone_and_reported() {
    let v1 = set("app:v1", 2, 1);
    let mut children: BTreeMap<u32, Child> = (0..1).map(|o| healthy(&v1, o, &v1, 1)).collect();
    let mut theirs = Container::new("web-1", v1.spec.template.spec.clone());
    theirs.spec.env.insert("MINE".into(), "yes".into());
    children.insert(1, Child { spec: theirs, status: None, foreign: true });
    let decision = decide(&v1, None, &children, at(0));
    assert!(decision.writes.is_empty(), "{:?}", written(&decision));
    assert_eq!(decision.status.replicas, 1);
    let available = decision.status.condition("Available").unwrap();
    assert_eq!((available.status, available.reason.as_str()), (ConditionStatus::False, "NameTaken"));
    assert!(available.message.contains("web-1"), "{}", available.message);
    // Scaling down does not delete it either.
    let one = set("app:v1", 1, 1);
    let down = decide(&one, Some(&decision.status), &children, at(1));
    assert!(down.deletes.is_empty());
}

#[test]
fn a_new_reason_under_the_same_status_keeps_the_transition_time() {
    // The one rule of every kind (kedge_crds::meta::transition_time): only a new status moves it.
    let v1 = set("app:v1", 2, 1);
    let all_v1: BTreeMap<u32, Child> = (0..2).map(|o| healthy(&v1, o, &v1, 1)).collect();
    let mut previous = decide(&v1, None, &all_v1, at(0)).status;
    for condition in &mut previous.conditions {
        if condition.kind == set_condition::PROGRESSING {
            condition.reason = set_condition::REASON_ROLLED_BACK.to_owned();
            condition.last_transition_time = "2027-01-01T00:00:00Z".to_owned();
        }
    }
    let next = decide(&v1, Some(&previous), &all_v1, at(60)).status;
    let progressing = next.condition(set_condition::PROGRESSING).unwrap();
    assert_eq!(
        (progressing.status, progressing.reason.as_str()),
        (ConditionStatus::False, "RolloutComplete")
    );
    assert_eq!(progressing.last_transition_time, "2027-01-01T00:00:00Z");
}
