//! Whole reconciles against the in-memory engine ([`FakeEngine`]) and the embedded store, with
//! paused time: the deletion guards, the crash-loop backoff's exact delays, and how often one
//! reconcile inspects a dependency.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kedge_crds::{Container, ContainerSpec};

use super::*;
use crate::agent::{AgentConfig, DesiredState};
use crate::docker::fake::FakeEngine;
use crate::docker::{DockerClient, ImageInfo, ObservedContainer};
use crate::executor::Executor;
use crate::runtime::Event;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::{KeyValue, SharedStore};

const HOST: &str = "h1";

/// An agent of host [`HOST`] whose engine is a [`FakeEngine`], over an embedded store in a
/// temporary directory.
struct Fixture {
    agent: Agent,
    engine: Arc<FakeEngine>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore =
        Arc::new(EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap());
    let engine = Arc::new(FakeEngine::new());
    let agent = new_agent(store, engine.clone());
    Fixture { agent, engine, _dir: dir }
}

/// A freshly started agent of [`HOST`]: empty memory, the given store and engine.
fn new_agent(store: SharedStore, engine: Arc<FakeEngine>) -> Agent {
    // The DockerClient is never reached: every reconcile reads and acts through the executor's engine.
    let executor = Executor::with_engine(engine);
    let agent = Agent::new(
        store,
        "store-1".to_owned(),
        DockerClient::unconnected(),
        executor,
        AgentConfig::new(HOST),
    );
    // No level is stored: every namespace gets the default.
    agent.policies.reflector().apply(&Event::Restarted { kvs: vec![], revision: 1 });
    agent
}

/// A spec of namespace `default` placed on [`HOST`], from JSON.
fn spec(name: &str, json_spec: &str) -> Container {
    let mut value: serde_json::Value = serde_json::from_str(json_spec).unwrap();
    value["placement"] = serde_json::json!({"host": HOST});
    let spec: ContainerSpec = serde_json::from_value(value).unwrap();
    let mut container = Container::new(name, spec);
    container.metadata.generation = Some(1);
    container
}

impl Fixture {
    /// The spec cache as a list at `revision` that holds exactly `specs`.
    fn specs(&self, specs: &[&Container], revision: i64) {
        self.agent.cache.apply(&listed_specs(specs, revision));
    }

    async fn reconcile(&self, key: &str) -> Next {
        match self.agent.reconcile(key).await {
            Ok(next) => next,
            Err(failure) => panic!("reconcile of {key} failed: {failure:?}"),
        }
    }

    /// Calls of the methods that change the engine.
    fn mutations(&self) -> usize {
        [
            "create_container",
            "start_container",
            "stop_container",
            "restart_container",
            "remove_container",
            "rename_container",
        ]
        .iter()
        .map(|method| self.engine.calls(method))
        .sum()
    }
}

/// A list of the spec prefix at `revision` that holds exactly `specs`.
fn listed_specs(specs: &[&Container], revision: i64) -> Event {
    let kvs = specs
        .iter()
        .map(|spec| {
            let key = crate::store::keys::spec_key(&spec.metadata.namespace, &spec.metadata.name).unwrap();
            stored(key, serde_json::to_vec(spec).unwrap(), revision)
        })
        .collect();
    Event::Restarted { kvs, revision }
}

/// A list of the bindings prefix at `revision` binding each spec key (`namespace/name`) to a host.
fn listed_bindings(bindings: &[(&str, &str)], revision: i64) -> Event {
    let kvs = bindings
        .iter()
        .map(|(key, host)| {
            let binding = crate::agent::bindings::Binding { host: (*host).to_owned(), term: 1 };
            stored(crate::store::keys::binding_key_of(key), serde_json::to_vec(&binding).unwrap(), revision)
        })
        .collect();
    Event::Restarted { kvs, revision }
}

fn stored(key: String, value: Vec<u8>, revision: i64) -> KeyValue {
    KeyValue { key, value, create_revision: revision, mod_revision: revision, version: 1, lease: 0 }
}

/// A container on the engine named `name` with `labels`, running.
fn container(id: &str, name: &str, labels: &[(&str, &str)]) -> ObservedContainer {
    let mut container = ObservedContainer {
        id: id.to_owned(),
        name: name.to_owned(),
        image: "kedge-test/app:v1".to_owned(),
        labels: labels.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
        ..ObservedContainer::default()
    };
    container.state.running = true;
    container.state.status = crate::docker::ContainerStatus::Running;
    container
}

#[tokio::test(start_paused = true)]
async fn a_deleted_spec_removes_only_its_own_container() {
    let f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/app:v1"}"#);
    f.specs(&[&web], 1);
    f.reconcile("default/web").await;
    assert!(f.engine.container("web").is_some_and(|c| c.state.running), "created and started");
    let managed = (labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let key = (labels::KEY, "default/web");
    // Look-alikes of web's container, each with the key's label: none is this agent's to remove.
    f.engine.add_container(container("a1", "unlabelled", &[key, (labels::HOST, HOST)]));
    f.engine.add_container(container("a2", "other-host", &[managed, key, (labels::HOST, "h2")]));
    f.engine.add_container(container(
        "a3",
        "other-store",
        &[managed, key, (labels::HOST, HOST), (labels::STORE, "store-0")],
    ));
    f.engine.add_container(container("a4", "foreign", &[]));

    f.specs(&[], 2);
    assert_eq!(f.reconcile("default/web").await, Next::Done);
    assert_eq!(f.engine.names(), ["foreign", "other-host", "other-store", "unlabelled"]);
    assert_eq!(f.engine.calls("remove_container"), 1, "only web's container");
}

/// The partition test's lost container: an agent restarts with empty caches, a reconcile looks its
/// spec up before the first list has landed, and the list lands while the engine answers. The spec
/// it did not find is not a deletion, although the cache is in sync by the time it decides.
#[tokio::test(start_paused = true)]
async fn a_spec_not_listed_yet_when_it_was_looked_up_is_not_deleted() {
    let mut f = fixture().await;
    let db = spec("db", r#"{"image": "kedge-test/app:v1"}"#);
    f.specs(&[&db], 1);
    f.reconcile("default/db").await;
    let before = f.engine.container("db").expect("created").id;
    let made = f.mutations();

    f.agent.cache = Arc::new(DesiredState::default());
    let cache = f.agent.cache.clone();
    f.engine.during_next_list(move || {
        cache.apply(&listed_specs(&[&db], 2));
    });
    assert_eq!(f.reconcile("default/db").await, Next::After(STATUS_RETRY), "decided nothing");
    assert!(f.agent.cache.authoritative(), "the list landed during the reconcile");
    assert_eq!(f.engine.container("db").map(|c| c.id), Some(before.clone()));
    assert_eq!(f.reconcile("default/db").await, Next::Done);
    assert_eq!(f.engine.container("db").map(|c| c.id), Some(before), "the same container");
    assert_eq!(f.mutations(), made, "nothing was removed, created or restarted");
}

/// The same race on the bindings: a spec bound here, looked up before the bindings were listed, is
/// not "placed elsewhere" once they are.
#[tokio::test(start_paused = true)]
async fn a_binding_not_listed_yet_when_it_was_looked_up_is_not_a_move() {
    let mut f = fixture().await;
    let mut web = spec("web", r#"{"image": "kedge-test/app:v1"}"#);
    web.spec.placement = None;
    f.specs(&[&web], 1);
    f.agent.bindings.reflector().apply(&listed_bindings(&[("default/web", HOST)], 2));
    f.reconcile("default/web").await;
    let before = f.engine.container("web").expect("created").id;
    let made = f.mutations();

    f.agent.bindings = Arc::new(crate::agent::bindings::BindingCache::default());
    let bindings = f.agent.bindings.clone();
    f.engine.during_next_list(move || {
        bindings.reflector().apply(&listed_bindings(&[("default/web", HOST)], 3));
    });
    assert_eq!(f.reconcile("default/web").await, Next::After(STATUS_RETRY), "decided nothing");
    assert_eq!(f.reconcile("default/web").await, Next::Done);
    assert_eq!(f.engine.container("web").map(|c| c.id), Some(before), "the same container");
    assert_eq!(f.mutations(), made);

    // Bound to another host by a list in sync when it was read: that is a move.
    f.agent.bindings.reflector().apply(&listed_bindings(&[("default/web", "h2")], 4));
    assert_eq!(f.reconcile("default/web").await, Next::Done);
    assert!(f.engine.container("web").is_none(), "removed: it runs on h2 now");
}

#[tokio::test(start_paused = true)]
async fn an_orphaned_container_stays_after_its_spec_is_deleted() {
    let f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/app:v1", "deletionPolicy": "orphan"}"#);
    f.specs(&[&web], 1);
    f.reconcile("default/web").await;
    f.specs(&[], 2);
    assert_eq!(f.reconcile("default/web").await, Next::Done);
    assert_eq!(f.engine.names(), ["web"]);
    assert_eq!(f.engine.calls("remove_container"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_foreign_container_holding_the_name_is_never_touched() {
    let f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/app:v1"}"#);
    f.engine.add_container(container("f1", "web", &[]));
    f.specs(&[&web], 1);
    assert_eq!(f.reconcile("default/web").await, Next::After(f.agent.config.conflict_poll));
    assert_eq!(f.mutations(), 0);
    assert_eq!(f.engine.container("web").map(|c| c.id), Some("f1".to_owned()));
    // Deleting the spec leaves it too: it is not the key's.
    f.specs(&[], 2);
    assert_eq!(f.reconcile("default/web").await, Next::Done);
    assert_eq!(f.mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_engine_read_is_an_error_not_a_deletion() {
    let f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/app:v1"}"#);
    f.specs(&[&web], 1);
    f.reconcile("default/web").await;
    f.specs(&[], 2);
    let down = crate::docker::DockerError::Engine { status: 500, message: "engine down".to_owned() };
    f.engine.fail_next("list_containers", down);
    let failure = f.agent.reconcile("default/web").await.expect_err("the listing failed");
    assert_eq!(failure.reason, "EngineUnavailable");
    assert_eq!(f.engine.names(), ["web"]);
    assert_eq!(f.reconcile("default/web").await, Next::Done, "removed once the engine answers");
    assert!(f.engine.names().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_second_container_of_the_key_goes_unless_another_store_made_it() {
    let f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/app:v1"}"#);
    f.specs(&[&web], 1);
    f.reconcile("default/web").await;
    let owned =
        [(labels::MANAGED_BY, labels::MANAGED_BY_VALUE), (labels::KEY, "default/web"), (labels::HOST, HOST)];
    let mut ours = owned.to_vec();
    ours.push((labels::STORE, "store-1"));
    let mut theirs = owned.to_vec();
    theirs.push((labels::STORE, "store-0"));
    f.engine.add_container(container("b1", "web-renamed", &ours));
    f.engine.add_container(container("b2", "web-elsewhere", &theirs));
    f.reconcile("default/web").await;
    assert_eq!(f.engine.names(), ["web", "web-elsewhere"]);
}

#[test]
fn removal_is_decided_by_store_and_deletion_policy() {
    let summary = |store: &str, policy: &str| ContainerSummary {
        labels: BTreeMap::from([
            (labels::STORE.to_owned(), store.to_owned()),
            (labels::DELETION_POLICY.to_owned(), policy.to_owned()),
        ]),
        ..ContainerSummary::default()
    };
    let cases = [
        (summary("s", "remove"), Gone::Deleted, Removal::Remove),
        (summary("s", "orphan"), Gone::Deleted, Removal::Orphan),
        (summary("s", "orphan"), Gone::PlacedElsewhere, Removal::Remove),
        (summary("s", "orphan"), Gone::Duplicate, Removal::Remove),
        (summary("t", "remove"), Gone::Deleted, Removal::OtherStore),
        (summary("t", "remove"), Gone::PlacedElsewhere, Removal::OtherStore),
        (summary("t", "remove"), Gone::Duplicate, Removal::OtherStore),
        (ContainerSummary::default(), Gone::Deleted, Removal::OtherStore),
    ];
    for (container, gone, expected) in cases {
        assert_eq!(removal(&container, "s", gone), expected, "{gone:?} {:?}", container.labels);
    }
}

#[tokio::test(start_paused = true)]
async fn each_dependency_and_provider_is_inspected_once_per_reconcile() {
    let f = fixture().await;
    let db = spec("db", r#"{"image": "kedge-test/app:v1"}"#);
    let web = spec(
        "web",
        r#"{"image": "kedge-test/app:v1", "networkMode": "container:db", "links": ["db:database"],
            "dependsOn": ["db"]}"#,
    );
    f.specs(&[&db, &web], 1);
    f.reconcile("default/db").await;
    for pass in ["create", "converged"] {
        let before = f.engine.calls("inspect_container:db");
        f.reconcile("default/web").await;
        assert_eq!(f.engine.calls("inspect_container:db") - before, 1, "{pass}");
    }
    assert!(f.engine.container("web").is_some_and(|c| c.state.running));
    assert_eq!(f.engine.calls("create_container"), 2, "the converged pass changed nothing");
    assert_eq!(f.engine.calls("start_container"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_missing_dependency_waits_without_acting() {
    let f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/app:v1", "dependsOn": ["db"]}"#);
    f.specs(&[&web], 1);
    assert_eq!(f.reconcile("default/web").await, Next::After(f.agent.config.dependency_poll));
    assert_eq!(f.mutations(), 0);
    // A container named like the dependency that is not its spec's does not count.
    f.engine.add_container(container("d1", "db", &[]));
    assert_eq!(f.reconcile("default/web").await, Next::After(f.agent.config.dependency_poll));
    assert_eq!(f.mutations(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_completed_dependency_waits_for_the_job_to_exit_0() {
    let f = fixture().await;
    let job = spec("job", r#"{"image": "kedge-test/app:v1"}"#);
    let web = spec(
        "web",
        r#"{"image": "kedge-test/app:v1", "dependsOn": [{"name": "job", "condition": "completed"}]}"#,
    );
    f.specs(&[&job, &web], 1);
    // The job runs: not completed yet.
    f.reconcile("default/job").await;
    assert_eq!(f.reconcile("default/web").await, Next::After(f.agent.config.dependency_poll));
    assert!(f.engine.container("web").is_none());
    // It failed (exit 3): still not completed.
    f.engine.add_container(exited_like(&f.engine.container("job").unwrap(), 3));
    assert_eq!(f.reconcile("default/web").await, Next::After(f.agent.config.dependency_poll));
    assert!(f.engine.container("web").is_none());
    // It exited 0: the dependent starts (and stays up: the gate is the job's exit, not its running).
    f.engine.add_container(exited_like(&f.engine.container("job").unwrap(), 0));
    f.reconcile("default/web").await;
    assert!(f.engine.container("web").is_some(), "created once the job completed");
}

/// `container` as it is after exiting with `code`.
fn exited_like(container: &ObservedContainer, code: i64) -> ObservedContainer {
    let mut exited = container.clone();
    exited.state.running = false;
    exited.state.status = crate::docker::ContainerStatus::Exited;
    exited.state.exit_code = Some(code);
    exited.state.finished_at = Some("2026-01-01T00:00:00.000Z".to_owned());
    exited
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_is_started_again_after_1_2_4_8_16_seconds() {
    let f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/app:v1"}"#);
    f.specs(&[&web], 1);
    f.engine.crash_on_start(1);
    // Created and started: it exits at once. The first start again is not delayed.
    assert_eq!(f.reconcile("default/web").await, Next::Done);
    assert_eq!(f.engine.calls("start_container"), 1);
    let mut delays = Vec::new();
    for _ in 0..5 {
        let next = f.reconcile("default/web").await;
        let Next::After(delay) = next else { panic!("a crash loop waits: {next:?}") };
        delays.push(delay);
        // Early, it is not started (a die event may wake the key at any time).
        let starts = f.engine.calls("start_container");
        f.engine.advance(delay / 2).await;
        assert_eq!(f.reconcile("default/web").await, Next::After(delay - delay / 2));
        assert_eq!(f.engine.calls("start_container"), starts, "not before the back-off");
        f.engine.advance(delay - delay / 2).await;
    }
    let seconds: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
    assert_eq!(seconds, [1, 2, 4, 8, 16]);
    assert!(delays.iter().all(|delay| delay.subsec_nanos() == 0), "exact: {delays:?}");
    assert_eq!(f.engine.calls("start_container"), 6);
}

/// An agent restarted in the middle of a crash loop goes on with the backoff it had reached (kept in
/// the status), rather than starting the container again at once and climbing from 1 s again.
#[tokio::test(start_paused = true)]
async fn a_restarted_agent_keeps_a_crash_loops_backoff() {
    let mut f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/app:v1"}"#);
    f.specs(&[&web], 1);
    f.engine.crash_on_start(1);
    assert_eq!(f.reconcile("default/web").await, Next::Done);
    for expected in [1, 2, 4] {
        assert_eq!(f.reconcile("default/web").await, Next::After(Duration::from_secs(expected)));
        f.engine.advance(Duration::from_secs(expected)).await;
    }
    assert_eq!(f.reconcile("default/web").await, Next::After(Duration::from_secs(8)), "started, crashed");
    let starts = f.engine.calls("start_container");

    f.agent = new_agent(f.agent.store.clone(), f.engine.clone());
    f.specs(&[&web], 1);
    assert_eq!(
        f.reconcile("default/web").await,
        Next::After(Duration::from_secs(8)),
        "the backoff goes on where it was"
    );
    assert_eq!(f.engine.calls("start_container"), starts, "not started at once");
    f.engine.advance(Duration::from_secs(8)).await;
    assert_eq!(f.reconcile("default/web").await, Next::After(Duration::from_secs(16)));
    assert_eq!(f.engine.calls("start_container"), starts + 1);
}

#[tokio::test(start_paused = true)]
async fn a_missing_network_is_made_by_the_executor_first_and_once() {
    let f = fixture().await;
    let web =
        spec("web", r#"{"image": "kedge-test/app:v1", "networks": [{"name": "front", "aliases": ["api"]}]}"#);
    f.specs(&[&web], 1);
    f.reconcile("default/web").await;
    let labels = f.engine.network("front").expect("the network was made");
    assert_eq!(labels.get(labels::MANAGED_BY).map(String::as_str), Some(labels::MANAGED_BY_VALUE));
    assert!(f.engine.container("web").is_some_and(|c| c.networks.iter().any(|n| n.network == "front")));
    let mutations = f.mutations();
    f.reconcile("default/web").await;
    assert_eq!(f.mutations(), mutations, "converged: nothing changes");
}

#[tokio::test(start_paused = true)]
async fn the_executor_restarts_and_removes_only_kedges_containers() {
    let f = fixture().await;
    f.engine.add_container(container("f1", "theirs", &[]));
    let restart =
        Action::Restart { container: "theirs".to_owned(), reason: "asked".to_owned(), timeout: None };
    for action in [restart, Action::Remove { container: "theirs".to_owned() }] {
        let refused = f.agent.executor.execute(&action, &mut |_| {}).await;
        assert!(matches!(refused, Err(ExecutorError::Foreign { .. })), "{}: {refused:?}", action.kind());
    }
    assert_eq!(f.mutations(), 0);
    assert!(f.engine.container("theirs").is_some_and(|c| c.state.running));
}

#[tokio::test(start_paused = true)]
async fn a_new_image_under_the_tag_is_a_safe_recreate_under_the_same_name() {
    let f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/app:v1", "updatePolicy": {"imageCheck": "local"}}"#);
    f.specs(&[&web], 1);
    f.reconcile("default/web").await;
    let old = f.engine.container("web").expect("created");
    let new_image = ImageInfo { id: format!("sha256:{}", "2".repeat(64)), ..crate::planner::tests::image() };
    f.engine.add_image("kedge-test/app:v1", new_image.clone());
    f.reconcile("default/web").await;
    let new = f.engine.container("web").expect("recreated");
    assert_ne!(new.id, old.id);
    assert_eq!(new.image_id, new_image.id);
    assert!(new.state.running);
    assert_eq!(f.engine.names(), ["web"], "the old container is gone, no temporary name is left");
    let mutations = f.mutations();
    f.reconcile("default/web").await;
    assert_eq!(f.mutations(), mutations, "converged");
}

/// Spec `web` applied as `first` and reconciled, then changed to `second`: the old container, the
/// changed spec's config as the executor gets it (the old container's labels included) and the
/// recreate strategy the planner picks. The recreate itself is left to the test.
async fn planned_recreate(
    f: &Fixture,
    first: &str,
    second: &str,
) -> (ObservedContainer, crate::docker::ContainerConfig, crate::planner::RecreateStrategy) {
    f.specs(&[&spec("web", first)], 1);
    f.reconcile("default/web").await;
    let old = f.engine.container("web").expect("created");
    let changed = spec("web", second);
    f.specs(&[&changed], 2);
    let plan = crate::planner::plan(&changed, Some(&old), &crate::planner::tests::facts());
    let Some(crate::planner::Action::Recreate { strategy, .. }) = plan.actions.into_iter().next() else {
        panic!("expected a recreate of web for {second}")
    };
    let mut config = crate::mapping::container_config(&changed);
    config.labels.extend(old.labels.clone());
    (old, config, strategy)
}

#[tokio::test(start_paused = true)]
async fn a_healthy_new_container_is_ready_after_min_ready_seconds_and_not_a_moment_more() {
    // `(the spec's minReadySeconds, the time the recreate waits)`: the fake's container is healthy
    // from its start, so without the field the healthcheck alone decides at once. The recreate is
    // called on the executor directly: the store's writes in a reconcile let paused time jump.
    for (min_ready, waited) in
        [("", 0), (r#", "minReadySeconds": 2"#, 2000), (r#", "minReadySeconds": 0"#, 0)]
    {
        let f = fixture().await;
        let json = |value: &str| {
            format!(
                r#"{{"image": "kedge-test/app:v1", "healthcheck": {{"test": ["CMD", "true"]}}, "env": {{"A": "{value}"}}{min_ready}}}"#
            )
        };
        let (old, config, strategy) = planned_recreate(&f, &json("1"), &json("2")).await;
        let executor = Executor::with_engine(f.engine.clone());
        let started = tokio::time::Instant::now();
        executor.recreate(&config, &strategy, &mut |_| {}).await.expect("recreated");
        assert_eq!(started.elapsed(), Duration::from_millis(waited), "{min_ready}");
        let new = f.engine.container("web").expect("recreated");
        assert_ne!(new.id, old.id, "{min_ready}");
        executor.wait_retired().await;
        assert_eq!(f.engine.names(), ["web"], "{min_ready}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_start_first_recreate_ends_when_the_new_container_is_proven_and_the_old_one_stops_behind() {
    // The old container ignores SIGTERM: a stop takes its whole 10 s grace period. The recreate is
    // called on the agent's executor directly: the store's writes in a reconcile let paused time jump.
    let f = fixture().await;
    f.engine.containers_ignore_sigterm(Duration::from_secs(10));
    let json = |value: &str| {
        format!(
            r#"{{"image": "kedge-test/app:v1", "healthcheck": {{"test": ["CMD", "true"]}}, "env": {{"A": "{value}"}}}}"#
        )
    };
    let (old, config, strategy) = planned_recreate(&f, &json("1"), &json("2")).await;
    assert_eq!(strategy.order, crate::planner::RecreateOrder::StartFirst);
    let executor = &f.agent.executor;
    let started = tokio::time::Instant::now();
    let report = executor.recreate(&config, &strategy, &mut |_| {}).await.expect("recreated");
    assert_eq!(started.elapsed(), Duration::ZERO, "the recreate does not wait for the old one's stop");
    let retired = crate::docker::labels::recreate_retired_name("web", &report.recreate_id);
    assert_eq!(
        f.engine.names(),
        ["web".to_owned(), retired],
        "the old one is retired, the new one holds the name"
    );
    assert_eq!(f.engine.container("web").expect("new").id, report.new_id);
    assert_eq!(executor.retirements_in_flight(), 1);

    // A reconcile meanwhile leaves the retired container to its retirement: no removal by force
    // of "a second container for one spec" (which would be a second `remove_container` call).
    f.reconcile("default/web").await;
    assert_eq!(f.agent.config.stats.snapshot().actions_of("Remove"), 0, "the reconcile removed nothing");
    executor.wait_retired().await;
    assert!(started.elapsed() >= Duration::from_secs(10), "retired with its grace period");
    assert_eq!(f.engine.names(), ["web"]);
    assert_eq!(f.engine.calls(&format!("stop_container:{}", old.id)), 1, "stopped once");
    assert_eq!(f.engine.calls(&format!("remove_container:{}", old.id)), 1, "removed once, by the retirement");
}

#[tokio::test(start_paused = true)]
async fn an_absent_image_with_pull_policy_never_fails_without_acting() {
    let f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/absent:v1", "updatePolicy": {"pullPolicy": "never"}}"#);
    f.specs(&[&web], 1);
    let failure = f.agent.reconcile("default/web").await.expect_err("no image");
    assert_eq!(failure.reason, "ImageNotPresent");
    assert_eq!((f.mutations(), f.engine.calls("pull")), (0, 0));
}

#[test]
fn api_versions_compare_by_number() {
    assert!(api_older_than("1.41", (1, 44)));
    assert!(api_older_than("1.9", (1, 44)));
    assert!(!api_older_than("1.44", (1, 44)));
    assert!(!api_older_than("1.100", (1, 44)));
    assert!(!api_older_than("2.0", (1, 44)));
    assert!(api_older_than("garbage", (1, 44)));
}

/// The stored levels as a list at `revision`: `(namespace, level)` each.
fn policy_list(levels: &[(&str, &str)], revision: i64) -> Event {
    let kvs = levels
        .iter()
        .map(|(namespace, level)| KeyValue {
            key: crate::store::keys::policy_key(namespace).unwrap(),
            value: serde_json::to_vec(&serde_json::json!({"level": level})).unwrap(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        })
        .collect();
    Event::Restarted { kvs, revision }
}

#[tokio::test(start_paused = true)]
async fn a_spec_runs_at_its_namespace_level_and_a_tightened_level_evicts_nothing() {
    let f = fixture().await;
    let escape = spec("escape", r#"{"image": "kedge-test/app:v1", "capAdd": ["SYS_ADMIN"]}"#);
    f.specs(&[&escape], 1);
    assert_eq!(f.reconcile("default/escape").await, Next::Done);
    assert_eq!(f.mutations(), 0, "refused at the default level: nothing is made");

    // Another namespace's level changes nothing here; the spec's own does.
    f.agent.policies.reflector().apply(&policy_list(&[("ops", "privileged")], 2));
    f.reconcile("default/escape").await;
    assert_eq!(f.mutations(), 0);
    f.agent.policies.reflector().apply(&policy_list(&[("ops", "privileged"), ("default", "privileged")], 3));
    f.reconcile("default/escape").await;
    assert!(f.engine.container("escape").is_some_and(|c| c.state.running), "created and started");

    // Back to the default: the running container is left as it is.
    let before = f.mutations();
    f.agent.policies.reflector().apply(&policy_list(&[], 4));
    assert_eq!(f.reconcile("default/escape").await, Next::Done);
    assert_eq!(f.mutations(), before, "a stricter level stops and removes nothing");
    assert!(f.engine.container("escape").is_some_and(|c| c.state.running));
}

#[tokio::test(start_paused = true)]
async fn nothing_is_decided_before_the_levels_were_read() {
    let f = fixture().await;
    let unread = Agent::new(
        f.agent.store.clone(),
        "store-1".to_owned(),
        DockerClient::unconnected(),
        Executor::with_engine(f.engine.clone()),
        AgentConfig::new(HOST),
    );
    let web = spec("web", r#"{"image": "kedge-test/app:v1"}"#);
    let kvs = vec![KeyValue {
        key: crate::store::keys::spec_key("default", "web").unwrap(),
        value: serde_json::to_vec(&web).unwrap(),
        create_revision: 1,
        mod_revision: 1,
        version: 1,
        lease: 0,
    }];
    unread.cache.apply(&Event::Restarted { kvs, revision: 1 });
    assert_eq!(unread.reconcile("default/web").await.unwrap(), Next::After(super::POLICY_WAIT));
    assert_eq!(f.mutations(), 0);
}

impl Fixture {
    /// The secret cache as a list at `revision` that holds exactly `secrets`.
    fn secrets(&self, secrets: &[&kedge_crds::Secret], revision: i64) {
        let kvs = secrets
            .iter()
            .map(|secret| KeyValue {
                key: crate::store::keys::object_key::<kedge_crds::Secret>("default", &secret.metadata.name)
                    .unwrap(),
                value: serde_json::to_vec(secret).unwrap(),
                create_revision: revision,
                mod_revision: revision,
                version: 1,
                lease: 0,
            })
            .collect();
        self.agent.secrets.reflector().apply(&Event::Restarted { kvs, revision });
    }
}

#[tokio::test(start_paused = true)]
async fn a_missing_secret_creates_nothing_until_it_exists_and_its_value_is_never_reported() {
    let f = fixture().await;
    let web = spec(
        "web",
        r#"{"image": "kedge-test/app:v1", "secretEnv": {"DB_PASSWORD": {"secret": "db", "key": "password"}}}"#,
    );
    f.specs(&[&web], 1);
    // The cache has not read the store yet: a missing secret proves nothing, nothing is reported.
    assert_eq!(f.reconcile("default/web").await, Next::After(STATUS_RETRY));
    assert_eq!(f.mutations(), 0);
    assert!(f.agent.statuses_lock().get("default/web").is_none());

    let other = kedge_crds::Secret::new("db", BTreeMap::from([("user".to_owned(), "app".to_owned())]));
    f.secrets(&[&other], 2);
    assert_eq!(f.reconcile("default/web").await, Next::Done);
    assert_eq!(f.mutations(), 0, "nothing created without the value");
    let status = f.agent.statuses_lock().get("default/web").cloned().unwrap();
    let synced = status.condition(kedge_crds::condition_type::SYNCED).unwrap();
    assert_eq!(
        (synced.status, synced.reason.as_str()),
        (kedge_crds::ConditionStatus::False, "SecretNotFound")
    );
    assert!(synced.message.contains("secret `db` has no key `password`"), "{}", synced.message);

    let secret = kedge_crds::Secret::new(
        "db",
        BTreeMap::from([("password".to_owned(), "hunter2-distinctive".to_owned())]),
    );
    f.secrets(&[&secret], 3);
    f.engine.add_image("kedge-test/app:v1", ImageInfo { id: "sha256:aa".into(), ..ImageInfo::default() });
    f.reconcile("default/web").await;
    let running = f.engine.container("web").expect("created once the secret exists");
    assert!(running.env.contains(&"DB_PASSWORD=hunter2-distinctive".to_owned()), "{:?}", running.env);
    let status = f.agent.statuses_lock().get("default/web").cloned().unwrap();
    let status = serde_json::to_string(&status).unwrap();
    assert!(!status.contains("hunter2"), "{status}");
}

/// `count` specs `app0`.. of namespace `default`, each already run by an agent of this store and
/// host; answers the specs. The agent is then replaced by a freshly started one (empty memory)
/// whose spec cache holds them.
async fn running_specs(f: &mut Fixture, count: usize) -> Vec<Container> {
    let specs: Vec<Container> =
        (0..count).map(|i| spec(&format!("app{i}"), r#"{"image": "kedge-test/app:v1"}"#)).collect();
    let listed: Vec<&Container> = specs.iter().collect();
    f.specs(&listed, 1);
    for spec in &specs {
        f.reconcile(&format!("default/{}", spec.metadata.name)).await;
    }
    f.agent = new_agent(f.agent.store.clone(), f.engine.clone());
    f.specs(&listed, 2);
    specs
}

/// The cold start: one list of the engine's containers for every key, then per key one inspect of
/// its container and nothing changed.
#[tokio::test(start_paused = true)]
async fn a_cold_start_lists_the_engine_once_for_every_key_and_changes_nothing() {
    let mut f = fixture().await;
    let specs = running_specs(&mut f, 20).await;
    let (lists, made) = (f.engine.calls("list_containers"), f.mutations());
    f.agent.start_from_snapshot().await.unwrap();
    assert_eq!(f.agent.queue.len(), 20, "every listed key is enqueued");
    for spec in &specs {
        assert_eq!(f.reconcile(&format!("default/{}", spec.metadata.name)).await, Next::Done);
    }
    assert_eq!(f.engine.calls("list_containers") - lists, 1, "one list for 20 keys");
    assert_eq!(f.mutations(), made, "nothing created, started or removed");
}

/// A snapshot answers only for keys nothing happened to since its list: an engine event or an
/// action of the agent sends the key's next reconcile to the engine.
#[tokio::test(start_paused = true)]
async fn a_key_stamped_after_the_list_reads_the_engine() {
    let mut f = fixture().await;
    running_specs(&mut f, 2).await;
    f.agent.start_from_snapshot().await.unwrap();
    let lists = f.engine.calls("list_containers");
    f.agent.snapshot.stamp("default/app0");
    f.reconcile("default/app0").await;
    assert_eq!(f.engine.calls("list_containers"), lists + 1, "stamped: listed");
    f.reconcile("default/app1").await;
    assert_eq!(f.engine.calls("list_containers"), lists + 1, "not stamped: from the snapshot");
    // Past its age a snapshot answers for nothing.
    f.engine.advance(crate::agent::snapshot::MAX_AGE + Duration::from_secs(1)).await;
    f.reconcile("default/app1").await;
    assert_eq!(f.engine.calls("list_containers"), lists + 2, "expired: listed");
}

/// A container of the key created after the list (by an agent that was still running, by hand) is
/// not in the snapshot; the spec's container is inspected live, so it is not made a second time.
#[tokio::test(start_paused = true)]
async fn a_container_created_after_the_snapshot_is_not_duplicated() {
    let mut f = fixture().await;
    let specs = running_specs(&mut f, 1).await;
    let existing = f.engine.container("app0").expect("created");
    let force = crate::docker::RemoveOptions { force: true, anonymous_volumes: false };
    f.engine.remove_container(&existing.id, force).await.unwrap();
    f.agent.start_from_snapshot().await.unwrap();
    // After the list: the container appears again, with no event seen yet.
    f.engine.add_container(existing.clone());
    let made = f.mutations();
    assert_eq!(f.reconcile(&format!("default/{}", specs[0].metadata.name)).await, Next::Done);
    assert_eq!(f.engine.names(), ["app0"], "one container");
    assert_eq!(f.engine.container("app0").map(|c| c.id), Some(existing.id));
    assert_eq!(f.mutations(), made, "nothing created");
}

/// The periodic resync's list in pages: every container once, newest first, a page at a time; when
/// the container a page would start after is removed between two pages, the rest is one list.
#[tokio::test(start_paused = true)]
async fn a_list_in_pages_sees_every_container_once_and_survives_its_anchor_removed() {
    let mut f = fixture().await;
    running_specs(&mut f, 7).await;
    // Every listed container's ID, newest first (a container listed twice shows twice).
    let ids = |listed: &crate::agent::snapshot::ByKey| {
        let mut ids: Vec<String> = listed.values().flatten().map(|c| c.id.clone()).collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    };
    let all = ids(&f.agent.snapshot.list(&*f.engine, HOST).await.unwrap());
    assert_eq!(all.len(), 7);
    let pages = f.engine.calls("list_containers_page");
    let paged = f.agent.snapshot.list_in_pages(&*f.engine, HOST, 3, Duration::from_secs(1)).await.unwrap();
    assert_eq!(ids(&paged), all, "each once");
    assert_eq!(f.engine.calls("list_containers_page") - pages, 3, "pages of 3, 3 and 1");
    assert_eq!(f.agent.snapshot.owned("default/app6").map(|owned| owned.len()), Some(1));

    // The first page's last container goes before the second page is asked for.
    let anchor = all[2].clone();
    let (snapshot, engine) = (f.agent.snapshot.clone(), f.engine.clone());
    let pages = f.engine.calls("list_containers_page");
    let listing =
        tokio::spawn(async move { snapshot.list_in_pages(&*engine, HOST, 3, Duration::from_secs(1)).await });
    while f.engine.calls("list_containers_page") == pages {
        tokio::task::yield_now().await;
    }
    let force = crate::docker::RemoveOptions { force: true, anonymous_volumes: false };
    f.engine.remove_container(&anchor, force).await.unwrap();
    let lists = f.engine.calls("list_containers");
    let paged = listing.await.unwrap().unwrap();
    let rest: Vec<String> = all.iter().filter(|id| **id != anchor).cloned().collect();
    assert_eq!(ids(&paged), rest, "the rest as one list");
    assert_eq!(f.engine.calls("list_containers") - lists, 1);
}

/// A container the list saw under another name (a second container of the key, to be removed)
/// that holds the spec's name by the time the key is reconciled is the spec's container now: it is
/// kept, not removed as a duplicate on the snapshot's word.
#[tokio::test(start_paused = true)]
async fn a_container_listed_before_but_still_wanted_is_not_removed() {
    let mut f = fixture().await;
    running_specs(&mut f, 1).await;
    let current = f.engine.container("app0").expect("created");
    f.engine.rename_container(&current.id, "app0-old").await.unwrap();
    f.agent.start_from_snapshot().await.unwrap();
    f.engine.rename_container(&current.id, "app0").await.unwrap();
    let made = f.mutations();
    assert_eq!(f.reconcile("default/app0").await, Next::Done);
    assert_eq!(f.engine.container("app0").map(|c| c.id), Some(current.id), "kept");
    assert_eq!(f.mutations(), made, "nothing removed or created");
}

/// An unhealthy container is restarted at once, then no sooner than 1, 2, 4, 8 s after the last
/// restart (the crash-loop delays); at the flap limit (5 in 5 min) kedge gives up and leaves it
/// alone, Degraded, and a restarted agent keeps to that (the record is in status).
#[tokio::test(start_paused = true)]
async fn an_unhealthy_container_is_restarted_after_0_1_2_4_8_seconds_then_left_degraded() {
    let mut f = fixture().await;
    let web = spec("web", r#"{"image": "kedge-test/app:v1", "healthcheck": {"test": ["CMD", "true"]}}"#);
    f.specs(&[&web], 1);
    f.reconcile("default/web").await;
    let turn_unhealthy = |f: &Fixture| {
        let mut container = f.engine.container("web").unwrap();
        container.state.health = Some(HealthStatus::Unhealthy);
        f.engine.add_container(container);
    };
    let mut waits = Vec::new();
    for _ in 0..5 {
        turn_unhealthy(&f);
        let restarts = f.engine.calls("restart_container");
        if let Next::After(wait) = f.reconcile("default/web").await {
            assert_eq!(f.engine.calls("restart_container"), restarts, "not before the backoff");
            waits.push(wait.as_secs_f64().round() as u64);
            f.engine.advance(wait).await;
            f.reconcile("default/web").await;
        } else {
            waits.push(0);
        }
        assert_eq!(f.engine.calls("restart_container"), restarts + 1, "restarted");
    }
    assert_eq!(waits, [0, 1, 2, 4, 8]);
    let degraded = |status: &ContainerStatus| {
        status.condition(kedge_crds::condition_type::DEGRADED).map(|c| (c.status, c.reason.clone()))
    };
    turn_unhealthy(&f);
    let restarts = f.engine.calls("restart_container");
    f.engine.advance(Duration::from_secs(60)).await;
    f.reconcile("default/web").await;
    assert_eq!(f.engine.calls("restart_container"), restarts, "given up");
    let stored = objects::get_status(f.agent.store.as_ref(), "default", "web").await.unwrap().unwrap().0;
    assert_eq!(degraded(&stored), Some((kedge_crds::ConditionStatus::True, "UnhealthyFlapping".to_owned())));

    f.agent = new_agent(f.agent.store.clone(), f.engine.clone());
    f.specs(&[&web], 1);
    f.reconcile("default/web").await;
    assert_eq!(f.engine.calls("restart_container"), restarts, "a new agent keeps to it");
    // Healthy by itself: a clean slate.
    let mut container = f.engine.container("web").unwrap();
    container.state.health = Some(HealthStatus::Healthy);
    f.engine.add_container(container);
    f.reconcile("default/web").await;
    let stored = objects::get_status(f.agent.store.as_ref(), "default", "web").await.unwrap().unwrap().0;
    assert_eq!(stored.remediation, None);
    assert_eq!(degraded(&stored).map(|d| d.0), Some(kedge_crds::ConditionStatus::False));
}
