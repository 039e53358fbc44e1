//! Replicas: a ContainerSet of three children on three agents sharing one etcd. The children spread
//! one per host; a rollout to a broken image stops after the first batch and rolls back (the other
//! children never change); a rollout to a good image completes batch by batch; the set scales 3 -> 5
//! -> 2 (highest ordinals go); deleting the set deletes its children and their containers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kedge_controller::store::{keys, objects, Store};
use kedge_crds::container_set::SET_LABEL;
use kedge_crds::{ConditionStatus, Container, ContainerSet};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker, eventually, InProcessAgent, TestScope, TEST_LABEL};
use serde_json::json;

const READY: Duration = Duration::from_secs(120);

fn set_document(name: &str, namespace: &str, run: &str, image: &str, replicas: u32) -> ContainerSet {
    serde_json::from_value(json!({
        "apiVersion": "kedge.io/v1",
        "kind": "ContainerSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"image": image, "stopGracePeriod": "1s", "labels": {TEST_LABEL: run}}
            },
            "rollingUpdate": {"batchSize": 1, "healthTimeout": "60s"}
        }
    }))
    .expect("a valid set")
}

/// The children of set `name` (by its label), by name, with whether each is Ready and Synced at its
/// current generation and the host its status names.
struct Child {
    spec: Container,
    ready: bool,
    host: Option<String>,
    container_id: Option<String>,
}

async fn children(store: &dyn Store, namespace: &str, set: &str) -> Option<BTreeMap<String, Child>> {
    let specs = objects::list_containers(store, Some(namespace)).await.ok()?.containers;
    let mut out = BTreeMap::new();
    for spec in
        specs.into_iter().filter(|c| c.metadata.labels.get(SET_LABEL).map(String::as_str) == Some(set))
    {
        let status = objects::get_status(store, namespace, &spec.metadata.name).await.ok()?.map(|(s, _)| s);
        let holds = |kind: &str| {
            status.as_ref().and_then(|s| s.condition(kind)).is_some_and(|c| c.status == ConditionStatus::True)
        };
        let current = status.as_ref().is_some_and(|s| s.observed_generation == spec.metadata.generation);
        let ready = current && holds("Ready") && holds("Synced");
        let host = status.as_ref().and_then(|s| s.host.clone());
        let container_id = status.as_ref().and_then(|s| s.container_id.clone());
        out.insert(spec.metadata.name.clone(), Child { spec, ready, host, container_id });
    }
    Some(out)
}

async fn set_status(
    store: &dyn Store,
    namespace: &str,
    name: &str,
) -> Option<kedge_crds::ContainerSetStatus> {
    objects::get_set_status(store, namespace, name).await.ok()?.map(|(status, _)| status)
}

fn progressing(status: &kedge_crds::ContainerSetStatus) -> Option<(ConditionStatus, String)> {
    status.condition("Progressing").map(|c| (c.status, c.reason.clone()))
}

/// Waits until the set has exactly `names` as children, all Ready on `image`, with the set's status
/// saying so.
async fn wait_settled(store: &dyn Store, namespace: &str, set: &str, names: &[String], image: &str) {
    eventually(&format!("{set}: {names:?} Ready on {image}"), READY, || async {
        let children = children(store, namespace, set).await?;
        let all = children.len() == names.len()
            && names.iter().all(|name| {
                children.get(name).is_some_and(|c| c.ready && c.spec.spec.image.to_string() == image)
            });
        let status = set_status(store, namespace, set).await?;
        let counted =
            status.ready_replicas as usize == names.len() && status.replicas as usize == names.len();
        (all && counted).then_some(())
    })
    .await
}

/// What the looks at a rollout to `image` saw: the most children not Ready at once, and the order in
/// which the children took the image.
struct RolloutWatch {
    image: &'static str,
    most_not_ready: std::cell::Cell<usize>,
    order: std::sync::Mutex<Vec<String>>,
}

impl RolloutWatch {
    fn new(image: &'static str) -> RolloutWatch {
        RolloutWatch { image, most_not_ready: Default::default(), order: Default::default() }
    }

    /// Takes one look at the children; answers the set's status once it says the rollout is over,
    /// with `replicas` children updated.
    async fn look(
        &self,
        store: &dyn Store,
        namespace: &str,
        set: &str,
        replicas: u32,
    ) -> Option<kedge_crds::ContainerSetStatus> {
        let children = children(store, namespace, set).await?;
        self.most_not_ready
            .set(self.most_not_ready.get().max(children.values().filter(|c| !c.ready).count()));
        {
            let mut order = self.order.lock().unwrap();
            for (child_name, c) in &children {
                if c.spec.spec.image.to_string() == self.image && !order.contains(child_name) {
                    order.push(child_name.clone());
                }
            }
        }
        let status = set_status(store, namespace, set).await?;
        let complete = progressing(&status)? == (ConditionStatus::False, "RolloutComplete".to_owned())
            && status.updated_replicas == replicas;
        complete.then_some(status)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_spreads_rolls_back_a_broken_image_completes_a_good_one_scales_and_goes() {
    let TestScope { id, cleanup: _cleanup, namespace } = TestScope::new();
    let etcd = EtcdCluster::start(1).await;
    let store = etcd.store().await;
    let host = |n: usize| format!("h{n}-{id}");
    let mut agents = Vec::new();
    for n in 1..=3 {
        agents.push(InProcessAgent::start_with(store.clone(), &host(n), None, None, |_| {}).await);
    }
    // Spreading is judged against the hosts that are ready: wait for all three.
    for n in 1..=3 {
        kedge_tests::wait_host_ready(store.as_ref(), &host(n), READY).await;
    }
    let docker = docker().await;
    let name = format!("web-{id}");
    let child = |ordinal: u32| format!("{name}-{ordinal}");
    let first_three: Vec<String> = (0..3).map(child).collect();

    // Three replicas: one per host.
    let started = Instant::now();
    objects::apply_set(store.as_ref(), &set_document(&name, &namespace, &id, "kedge-test/app:v1", 3), None)
        .await
        .unwrap();
    wait_settled(store.as_ref(), &namespace, &name, &first_three, "kedge-test/app:v1").await;
    eprintln!("measured: 3 replicas Ready in {:?}", started.elapsed());
    let before = children(store.as_ref(), &namespace, &name).await.unwrap();
    let hosts: BTreeSet<String> = before.values().filter_map(|c| c.host.clone()).collect();
    assert_eq!(
        hosts.len(),
        3,
        "one child per host: {:?}",
        before.values().map(|c| &c.host).collect::<Vec<_>>()
    );
    for (child_name, c) in &before {
        let inspect = docker.inspect_container(child_name, None).await.expect("the child's container exists");
        let labels = inspect.config.unwrap().labels.unwrap();
        assert_eq!(labels.get("io.kedge.host"), c.host.as_ref(), "{child_name} runs where its status says");
    }
    // A hand edit of a child is put back by the set's controller.
    let mut edited = before[&child(1)].spec.clone();
    edited.spec.env.insert("HAND".into(), "edit".into());
    objects::apply_container(store.as_ref(), &edited, None).await.unwrap();
    eventually("the hand edit to be put back", READY, || async {
        let spec = objects::get_container(store.as_ref(), &namespace, &child(1)).await.ok()??;
        spec.spec.env.is_empty().then_some(())
    })
    .await;
    wait_settled(store.as_ref(), &namespace, &name, &first_three, "kedge-test/app:v1").await;
    let before = children(store.as_ref(), &namespace, &name).await.unwrap();
    let status = set_status(store.as_ref(), &namespace, &name).await.unwrap();
    let v1_revision = status.current_revision.clone().unwrap();
    assert_eq!(progressing(&status), Some((ConditionStatus::False, "RolloutComplete".into())));

    // A broken image: the first batch fails, is rolled back, and the other children never change.
    let started = Instant::now();
    objects::apply_set(
        store.as_ref(),
        &set_document(&name, &namespace, &id, "kedge-test/fail:latest", 3),
        None,
    )
    .await
    .unwrap();
    let most_on_broken = &std::cell::Cell::new(0);
    let (s, ns, set) = (store.as_ref(), namespace.as_str(), name.as_str());
    let rolled_back = eventually("the broken rollout to be rolled back", READY, || async move {
        let children = children(s, ns, set).await?;
        let on_broken =
            children.values().filter(|c| c.spec.spec.image.to_string() == "kedge-test/fail:latest");
        most_on_broken.set(most_on_broken.get().max(on_broken.count()));
        let status = set_status(s, ns, set).await?;
        (progressing(&status)? == (ConditionStatus::False, "RolledBack".to_owned())).then_some(status)
    })
    .await;
    eprintln!("measured: broken rollout rolled back {:?} after the apply", started.elapsed());
    assert_eq!(most_on_broken.get(), 1, "only the first batch ever got the broken image");
    let message = rolled_back.failure_message.clone().unwrap_or_default();
    assert!(message.contains(&child(0)), "the failure names the child: {message}");
    assert!(message.contains("NewContainerExited"), "and the agent's reason: {message}");
    assert!(rolled_back.failed_revision.is_some());
    assert_eq!(rolled_back.current_revision.as_deref(), Some(v1_revision.as_str()));
    wait_settled(store.as_ref(), &namespace, &name, &first_three, "kedge-test/app:v1").await;
    let after = children(store.as_ref(), &namespace, &name).await.unwrap();
    for untouched in [child(1), child(2)] {
        let (was, is) = (&before[&untouched], &after[&untouched]);
        assert_eq!(
            is.spec.metadata.generation, was.spec.metadata.generation,
            "{untouched} was never written"
        );
        assert_eq!(is.container_id, was.container_id, "{untouched}'s container was never replaced");
    }
    let first = &after[&child(0)];
    assert!(
        first.spec.metadata.generation > before[&child(0)].spec.metadata.generation,
        "the first child was written (broken, then v1 again)"
    );
    assert_eq!(
        first.container_id,
        before[&child(0)].container_id,
        "the agent kept the old container running"
    );
    let events = kedge_controller::events::list_events(store.as_ref(), Some(&namespace)).await.unwrap();
    assert!(
        events.iter().any(|e| e.involved_object == format!("ContainerSet/{namespace}/{name}")
            && e.reason == "RolledBack"
            && e.message.contains(&child(0))),
        "a RolledBack event names the child: {events:?}"
    );
    // The failed revision is not retried: the set stays rolled back.
    let still = set_status(store.as_ref(), &namespace, &name).await.unwrap();
    assert_eq!(still.rollout, None);

    // A good image: batch by batch, never more than one child not Ready, in ordinal order.
    let started = Instant::now();
    objects::apply_set(store.as_ref(), &set_document(&name, &namespace, &id, "kedge-test/app:v2", 3), None)
        .await
        .unwrap();
    let watch = &RolloutWatch::new("kedge-test/app:v2");
    let observations = &std::cell::Cell::new(0);
    let v1 = v1_revision.as_str();
    eventually("the v2 rollout to complete", READY, || async move {
        observations.set(observations.get() + 1);
        let status = watch.look(s, ns, set, 3).await?;
        (status.current_revision.as_deref() != Some(v1)).then_some(())
    })
    .await;
    eprintln!(
        "measured: v2 rollout of 3 in batches of 1 took {:?} ({} observations)",
        started.elapsed(),
        observations.get()
    );
    let most_not_ready = watch.most_not_ready.get();
    assert!(most_not_ready <= 1, "at most batchSize children not Ready at once, saw {most_not_ready}");
    assert_eq!(*watch.order.lock().unwrap(), first_three, "batches go in ordinal order");
    wait_settled(store.as_ref(), &namespace, &name, &first_three, "kedge-test/app:v2").await;
    for child_name in &first_three {
        let inspect = docker.inspect_container(child_name, None).await.unwrap();
        assert_eq!(inspect.config.unwrap().image.as_deref(), Some("kedge-test/app:v2"), "{child_name}");
    }

    // Scale 3 -> 5: spread stays even (2, 2, 1); 5 -> 2: the highest ordinals go.
    let five: Vec<String> = (0..5).map(child).collect();
    objects::apply_set(store.as_ref(), &set_document(&name, &namespace, &id, "kedge-test/app:v2", 5), None)
        .await
        .unwrap();
    wait_settled(store.as_ref(), &namespace, &name, &five, "kedge-test/app:v2").await;
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    for c in children(store.as_ref(), &namespace, &name).await.unwrap().values() {
        *per_host.entry(c.host.clone().unwrap()).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_host.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(counts, vec![1, 2, 2], "five children on three hosts, as even as possible: {per_host:?}");
    let two: Vec<String> = (0..2).map(child).collect();
    objects::apply_set(store.as_ref(), &set_document(&name, &namespace, &id, "kedge-test/app:v2", 2), None)
        .await
        .unwrap();
    wait_settled(store.as_ref(), &namespace, &name, &two, "kedge-test/app:v2").await;
    for gone in (2..5).map(child) {
        eventually(&format!("{gone}'s container to go"), READY, || async {
            docker.inspect_container(&gone, None).await.is_err().then_some(())
        })
        .await;
    }

    // Deleting the set deletes its children, their containers and its status.
    objects::delete_set(store.as_ref(), &namespace, &name, None).await.unwrap();
    eventually("the children's specs to go", READY, || async {
        children(store.as_ref(), &namespace, &name).await?.is_empty().then_some(())
    })
    .await;
    for gone in &two {
        eventually(&format!("{gone}'s container to go"), READY, || async {
            docker.inspect_container(gone, None).await.is_err().then_some(())
        })
        .await;
    }
    let status_key = keys::set_status_key(&namespace, &name).unwrap();
    eventually("the set's status to go", READY, || async {
        store.get(&status_key).await.ok()?.is_none().then_some(())
    })
    .await;
    for agent in agents {
        agent.stop().await.expect("stops");
    }
}

/// The rollout's state lives in the store: when the agent leading the scheduler stops mid-rollout,
/// the next leader finishes it from the set's status, batch by batch, without starting over.
#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_survives_a_change_of_leader() {
    let TestScope { id, cleanup: _cleanup, namespace } = TestScope::new();
    let etcd = EtcdCluster::start(1).await;
    let store = etcd.store().await;
    let host = |n: usize| format!("h{n}-{id}");
    let role = |n: usize| if n == 1 { "control" } else { "worker" };
    let start = |n: usize| {
        let labels = BTreeMap::from([("role".to_owned(), role(n).to_owned())]);
        let (store, name) = (store.clone(), host(n));
        async move {
            InProcessAgent::start_with(store, &name, None, None, move |config| config.host_labels = labels)
                .await
        }
    };
    // h1 starts alone, so it leads; it runs no child (the set selects workers), so stopping it
    // interrupts the controller and nothing else.
    let leader = start(1).await;
    eventually("h1 to lead the scheduler", READY, || async {
        let kv = store.get(keys::SCHEDULER_LEADER).await.ok()??;
        (kv.value == host(1).as_bytes()).then_some(())
    })
    .await;
    let mut workers = Vec::new();
    for n in 2..=4 {
        workers.push(start(n).await);
    }
    for n in 2..=4 {
        let alive = keys::host_lease_key(&host(n)).unwrap();
        eventually("every worker ready", READY, || async { store.get(&alive).await.ok()? }).await;
    }
    let name = format!("api-{id}");
    let names: Vec<String> = (0..3).map(|o| format!("{name}-{o}")).collect();
    let document = |image: &str| {
        let mut set = set_document(&name, &namespace, &id, image, 3);
        set.spec.placement = Some(kedge_crds::SetPlacement {
            host_selector: BTreeMap::from([("role".to_owned(), "worker".to_owned())]),
            max_per_host: Some(1),
        });
        set
    };
    objects::apply_set(store.as_ref(), &document("kedge-test/app:v1"), None).await.unwrap();
    wait_settled(store.as_ref(), &namespace, &name, &names, "kedge-test/app:v1").await;

    objects::apply_set(store.as_ref(), &document("kedge-test/app:v2"), None).await.unwrap();
    let (s, ns, set) = (store.as_ref(), namespace.as_str(), name.as_str());
    // Stop the leader once the first batch has passed its gate and the second has been written.
    eventually("the rollout's second batch", READY, || async move {
        let rollout = set_status(s, ns, set).await?.rollout?;
        (rollout.updated.len() == 2).then_some(())
    })
    .await;
    let first_generation = children(s, ns, set).await.unwrap()[&names[0]].spec.metadata.generation;
    let stopped = Instant::now();
    leader.stop().await.expect("the leader stops");
    let watch = &RolloutWatch::new("kedge-test/app:v2");
    eventually("the rollout to complete under the next leader", READY, || async move {
        watch.look(s, ns, set, 3).await.map(drop)
    })
    .await;
    eprintln!("measured: rollout completed {:?} after the leader stopped", stopped.elapsed());
    let new_leader = store.get(keys::SCHEDULER_LEADER).await.unwrap().expect("someone leads");
    assert_ne!(new_leader.value, host(1).as_bytes(), "another agent took over");
    // The new leader went on where the old one stopped: the first batch was not written again.
    assert_eq!(
        watch.order.lock().unwrap().last(),
        Some(&names[2]),
        "the new leader went on with the last batch"
    );
    let after = children(s, ns, set).await.unwrap();
    assert_eq!(after[&names[0]].spec.metadata.generation, first_generation, "the first batch was not redone");
    let most_not_ready = watch.most_not_ready.get();
    assert!(most_not_ready <= 1, "at most one child not Ready at once, saw {most_not_ready}");
    wait_settled(store.as_ref(), &namespace, &name, &names, "kedge-test/app:v2").await;
    let hosts: BTreeSet<String> =
        children(s, ns, set).await.unwrap().values().filter_map(|c| c.host.clone()).collect();
    assert_eq!(hosts, (2..=4).map(host).collect(), "one child per worker, none on the control host");
    objects::delete_set(store.as_ref(), &namespace, &name, None).await.unwrap();
    eventually("the children to go", READY, || async move {
        children(s, ns, set).await?.is_empty().then_some(())
    })
    .await;
    for worker in workers {
        worker.stop().await.expect("stops");
    }
}

/// The example in examples/ works with the quick start's single agent on the embedded store: with one
/// host and the default spread, every replica runs on it.
#[tokio::test(flavor = "multi_thread")]
async fn the_example_runs_every_replica_on_a_single_host() {
    let TestScope { id, cleanup: _cleanup, .. } = TestScope::new();
    let agent = InProcessAgent::embedded(&format!("solo-{id}")).await;
    let store = agent.store.clone();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/replicas.yaml");
    let mut set = kedge_crds::load_objects_paths(&[path]).expect("the example is valid").sets.remove(0);
    // The test's own name and cleanup label, so that it runs beside the quick start and other tests.
    set.metadata.name = format!("pool-{id}");
    set.metadata.namespace = format!("t{id}");
    set.spec.template.spec.labels.insert(TEST_LABEL.to_owned(), id.clone());
    objects::apply_set(store.as_ref(), &set, None).await.unwrap();
    let names: Vec<String> = (0..set.spec.replicas).map(|o| set.child_name(o)).collect();
    wait_settled(store.as_ref(), &set.metadata.namespace, &set.metadata.name, &names, "kedge-test/app:v1")
        .await;
    let on = children(store.as_ref(), &set.metadata.namespace, &set.metadata.name).await.unwrap();
    assert!(on.values().all(|c| c.host.as_deref() == Some(agent.host.as_str())), "all on the one host");
    objects::delete_set(store.as_ref(), &set.metadata.namespace, &set.metadata.name, None).await.unwrap();
    let docker = docker().await;
    for gone in &names {
        eventually(&format!("{gone}'s container to go"), READY, || async {
            docker.inspect_container(gone, None).await.is_err().then_some(())
        })
        .await;
    }
    agent.stop().await.expect("stops");
}
