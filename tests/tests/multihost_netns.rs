//! Many hosts for real: three Docker engines, each in its own network namespace, real `kedge agent`
//! processes inside them reaching a three-member etcd over a hub bridge (`kedge_tests::netns`).
//! Taking a host's link down is a real partition. Issue #9's done-when, proven from each engine's own
//! `docker ps` and from the real CLI:
//!
//! - `an_agent_in_a_namespace_reaches_etcd_and_runs_a_container`: the harness's smoke test.
//! - `specs_land_by_name_by_selector_and_unplaced_across_namespaced_hosts`: placement by name, by
//!   host labels and unplaced, seen on the engines and in `kedge get containers -o wide`.
//! - `a_partitioned_hosts_specs_move_and_it_cleans_up_when_it_returns`: an agent SIGKILLed and its
//!   link taken down; its specs run elsewhere within the grace period plus a few seconds; back, it
//!   removes its old containers and every spec runs exactly once; foreign containers are untouched.
//! - `a_rollout_completes_while_the_etcd_leader_dies_and_the_scheduler_leader_is_cut_off`: the etcd
//!   leader is SIGKILLed and the scheduler's leader partitioned during a rollout; the rollout
//!   completes, the store's history shows no two scheduler leaders acting at once, and the returning
//!   old leader deletes no other host's status.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kedge_controller::docker::labels;
use kedge_controller::store::{keys, objects, SharedStore};
use kedge_crds::Placement;
use kedge_tests::netns::{AgentOptions, Cluster, NetnsHost};
use kedge_tests::{
    assert_stale_term_refused, check_scheduler_history, eventually, run_id, test_spec, wait_ready,
    EngineCleanup, TestScope,
};
use serde_json::json;

const READY: Duration = Duration::from_secs(90);
const IMAGES: &[&str] = &["kedge-test/app:v1", "kedge-test/app:v2"];
/// The scheduler's grace period in these tests (`kedge agent --scheduler-grace-seconds`).
const GRACE_SECONDS: u64 = 3;

/// One container on an engine, from that engine's own `docker ps -a`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    name: String,
    id: String,
    /// The spec's `namespace/name` label, empty on a container kedge does not manage.
    key: String,
    running: bool,
}

/// Every container on a host's engine, running or not.
fn containers_on(host: &NetnsHost) -> Vec<Seen> {
    let format = format!("{{{{.Names}}}} {{{{.ID}}}} {{{{.State}}}} {{{{.Label \"{}\"}}}}", labels::KEY);
    let out = host.docker(&["ps", "-a", "--no-trunc", "--format", &format]);
    assert!(out.status.success(), "docker ps on {}: {}", host.name, String::from_utf8_lossy(&out.stderr));
    let mut seen: Vec<Seen> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            Seen {
                name: fields[0].to_owned(),
                id: fields[1].to_owned(),
                running: fields[2] == "running",
                key: fields.get(3).copied().unwrap_or_default().to_owned(),
            }
        })
        .collect();
    seen.sort_by(|a, b| a.name.cmp(&b.name));
    seen
}

/// For every spec key, the indexes of the hosts whose engine holds a container of it (a spec running
/// exactly once has one entry; containers mid-recreate count too, under their temporary names).
fn placements(cluster: &Cluster) -> BTreeMap<String, Vec<usize>> {
    let mut found: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, host) in cluster.hosts.iter().enumerate() {
        for container in containers_on(host) {
            if !container.key.is_empty() {
                found.entry(container.key).or_default().push(i);
            }
        }
    }
    found
}

async fn wait_host_ready(store: &SharedStore, host: &str) {
    let alive = keys::host_lease_key(host).unwrap();
    eventually(&format!("host {host} ready"), READY, || async { store.get(&alive).await.ok()? }).await;
}

fn agent_options(label: (&str, &str)) -> AgentOptions {
    AgentOptions {
        host_labels: BTreeMap::from([(label.0.to_owned(), label.1.to_owned())]),
        scheduler_grace_seconds: Some(GRACE_SECONDS),
    }
}

fn unplaced(name: &str, namespace: &str, cleanup: &EngineCleanup, image: &str) -> kedge_crds::Container {
    let mut container = test_spec(name, namespace, "unused", cleanup, json!({"image": image}));
    container.spec.placement = None;
    container
}

/// `kedge get containers -n NAMESPACE -o wide` against `host`'s agent: NAME -> (HOST, CONTAINER).
fn cli_table(host: &NetnsHost, namespace: &str) -> BTreeMap<String, (String, String)> {
    let out = host.kedge(&["get", "containers", "-n", namespace, "-o", "wide"]);
    assert!(out.status.success(), "kedge get: {}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("{table}"));
    let (name, host_column, container) = (column("NAME"), column("HOST"), column("CONTAINER"));
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells[name].to_owned(), (cells[host_column].to_owned(), cells[container].to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_in_a_namespace_reaches_etcd_and_runs_a_container() {
    let started = Instant::now();
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let mut cluster = Cluster::start(1, 1, &IMAGES[..1]).await;
    let store = cluster.store().await;
    let host = &mut cluster.hosts[0];
    host.start_agent(AgentOptions::default());
    wait_host_ready(&store, &host.name).await;

    let name = format!("smoke-{id}");
    let spec = test_spec(&name, &namespace, &host.name, &cleanup, json!({"image": "kedge-test/app:v1"}));
    objects::apply_container(store.as_ref(), &spec, None).await.unwrap();
    wait_ready(store.as_ref(), &namespace, &name, READY).await;
    let seen = containers_on(host);
    assert_eq!(seen.len(), 1, "one container on the namespace's engine: {seen:?}");
    assert!(seen[0].name == name && seen[0].running, "{seen:?}");
    let table = cli_table(host, &namespace);
    assert_eq!(table[&name].0, host.name, "the CLI names the host");
    assert!(seen[0].id.starts_with(&table[&name].1), "the CLI names the container: {table:?}");
    eprintln!("netns smoke test: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn specs_land_by_name_by_selector_and_unplaced_across_namespaced_hosts() {
    let started = Instant::now();
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let mut cluster = Cluster::start(3, 3, &IMAGES[..1]).await;
    let store = cluster.store().await;
    // h0 is in zone a, h1 and h2 in zone b.
    for (i, host) in cluster.hosts.iter_mut().enumerate() {
        host.start_agent(agent_options(("zone", if i == 0 { "a" } else { "b" })));
    }
    // Spreading is judged against the hosts that are ready: wait for all three.
    for host in &cluster.hosts {
        wait_host_ready(&store, &host.name).await;
    }
    let setup = started.elapsed();

    let named = format!("named-{id}");
    let selected = format!("sel-{id}");
    let mut spec = unplaced(&named, &namespace, &cleanup, "kedge-test/app:v1");
    spec.spec.placement = Some(Placement { host: Some(cluster.hosts[1].name.clone()), ..Default::default() });
    objects::apply_container(store.as_ref(), &spec, None).await.unwrap();
    let mut spec = unplaced(&selected, &namespace, &cleanup, "kedge-test/app:v1");
    let zone_a = BTreeMap::from([("zone".to_owned(), "a".to_owned())]);
    spec.spec.placement = Some(Placement { host: None, host_selector: zone_a });
    objects::apply_container(store.as_ref(), &spec, None).await.unwrap();
    let mut names = vec![named.clone(), selected.clone()];
    for i in 0..4 {
        let name = format!("free{i}-{id}");
        objects::apply_container(
            store.as_ref(),
            &unplaced(&name, &namespace, &cleanup, "kedge-test/app:v1"),
            None,
        )
        .await
        .unwrap();
        names.push(name);
    }
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
    }
    let converged = started.elapsed() - setup;

    // Each engine's own `docker ps`: every spec has exactly one container, running, on one engine.
    let mut on_engine: BTreeMap<String, (usize, Seen)> = BTreeMap::new();
    for (i, host) in cluster.hosts.iter().enumerate() {
        for container in containers_on(host) {
            assert!(container.running, "{container:?} on {}", host.name);
            let previous = on_engine.insert(container.name.clone(), (i, container));
            assert!(previous.is_none(), "a spec runs twice: {previous:?}");
        }
    }
    assert_eq!(on_engine.keys().cloned().collect::<Vec<_>>(), sorted(&names), "every spec, nothing else");
    assert_eq!(on_engine[&named].0, 1, "the spec naming h1 runs on h1's engine");
    assert_eq!(on_engine[&selected].0, 0, "the spec selecting zone a runs on h0's engine");
    let mut per_host = [0usize; 3];
    for (i, _) in on_engine.values() {
        per_host[*i] += 1;
    }
    assert_eq!(per_host, [2, 2, 2], "six specs spread two per host (fewest specs first)");

    // The real CLI against h2's agent shows the same: each row's HOST and CONTAINER are where the
    // engine has it.
    let table = cli_table(&cluster.hosts[2], &namespace);
    assert_eq!(table.keys().cloned().collect::<Vec<_>>(), sorted(&names), "{table:?}");
    for (name, (host, container)) in &table {
        let (i, seen) = &on_engine[name];
        assert_eq!(host, &cluster.hosts[*i].name, "{name}: HOST");
        assert!(seen.id.starts_with(container.as_str()), "{name}: CONTAINER {container} is {}", seen.id);
    }
    eprintln!(
        "placement across namespaces: set-up {setup:?}, six specs running {converged:?}, total {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_hosts_specs_move_and_it_cleans_up_when_it_returns() {
    let started = Instant::now();
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let mut cluster = Cluster::start(3, 3, &IMAGES[..1]).await;
    let store = cluster.store().await;
    for host in cluster.hosts.iter_mut() {
        host.start_agent(agent_options(("zone", "any")));
    }
    for host in &cluster.hosts {
        wait_host_ready(&store, &host.name).await;
    }
    // Six unplaced specs, spread over the three hosts, and one that names h0 (it never moves).
    let names: Vec<String> = (0..6).map(|i| format!("mv{i}-{id}")).collect();
    for name in &names {
        objects::apply_container(
            store.as_ref(),
            &unplaced(name, &namespace, &cleanup, "kedge-test/app:v1"),
            None,
        )
        .await
        .unwrap();
    }
    let pinned = format!("pinned-{id}");
    let victim_name = cluster.hosts[0].name.clone();
    let spec = test_spec(&pinned, &namespace, &victim_name, &cleanup, json!({"image": "kedge-test/app:v1"}));
    objects::apply_container(store.as_ref(), &spec, None).await.unwrap();
    for name in names.iter().chain([&pinned]) {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
    }
    let key = |name: &str| format!("{namespace}/{name}");
    let before = placements(&cluster);
    let moving: Vec<String> = names.iter().filter(|name| before[&key(name)] == vec![0]).cloned().collect();
    assert!(!moving.is_empty(), "some unplaced specs run on h0: {before:?}");
    // Two foreign containers on h0's engine: an unmanaged one, and one labelled as another host's.
    let victim = &cluster.hosts[0];
    for args in [
        vec!["create", "--name", "plain"],
        vec![
            "create",
            "--name",
            "other",
            "--label",
            "io.kedge.managed-by=kedge",
            "--label",
            "io.kedge.host=elsewhere",
        ],
    ] {
        let out = victim.docker(&[args, vec!["kedge-test/app:v1"]].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let foreign: Vec<Seen> = containers_on(victim).into_iter().filter(|c| c.key.is_empty()).collect();
    assert_eq!(foreign.len(), 2, "{foreign:?}");

    // h0 is lost: its agent is SIGKILLed (its liveness lease is not revoked, it lapses) and its
    // cable pulled. Its containers keep running on its engine, out of everyone's reach.
    let victim = &mut cluster.hosts[0];
    victim.kill_agent();
    victim.link_down();
    let lost = Instant::now();
    let alive = keys::host_lease_key(&victim_name).unwrap();
    let not_ready: std::cell::Cell<Option<Instant>> = std::cell::Cell::new(None);
    eventually("h0's specs to run on the other hosts", READY, || {
        let (store, alive, cluster, moving, not_ready, key) =
            (&store, &alive, &cluster, &moving, &not_ready, &key);
        async move {
            if not_ready.get().is_none() && store.get(alive).await.ok()?.is_none() {
                not_ready.set(Some(Instant::now()));
            }
            let now = placements(cluster);
            let moved = moving.iter().all(|name| {
                let on = &now[&key(name)];
                // Still on h0's unreachable engine, and running once elsewhere.
                on.contains(&0) && on.iter().filter(|i| **i != 0).count() == 1
            });
            moved.then_some(())
        }
    })
    .await;
    let not_ready = not_ready.get().expect("h0 went NotReady before its specs moved");
    let (from_loss, from_not_ready) = (lost.elapsed(), not_ready.elapsed());
    eprintln!(
        "partition failover: specs running elsewhere {from_loss:?} after the loss, {from_not_ready:?} \
         after h0's liveness lapsed ({:?} after the loss; grace {GRACE_SECONDS} s)",
        not_ready - lost
    );
    let grace = Duration::from_secs(GRACE_SECONDS);
    assert!(from_loss >= grace, "nothing moves before the grace period");
    assert!(
        from_not_ready <= grace + Duration::from_secs(8),
        "specs run elsewhere within the grace period plus a few seconds of h0 going NotReady"
    );
    for name in &moving {
        // The status h0 wrote last still says Ready until the new host reports: wait for that.
        let (store, namespace, victim_name) = (&store, &namespace, &victim_name);
        eventually(&format!("{name}'s status from its new host"), READY, || async move {
            let (status, _) = objects::get_status(store.as_ref(), namespace, name).await.ok()??;
            let ready = status.condition("Ready")?.status == kedge_crds::ConditionStatus::True;
            (ready && status.host.as_deref() != Some(victim_name.as_str())).then_some(())
        })
        .await;
    }

    // h0 returns: cable first, then its agent. It removes its containers of the moved specs, keeps
    // the pinned one, and leaves the foreign containers alone.
    let victim = &mut cluster.hosts[0];
    victim.link_up();
    victim.restart_agent();
    let returned = Instant::now();
    let expected_on_victim = {
        let mut expected = foreign.clone();
        expected.extend(containers_on(victim).into_iter().filter(|c| c.name == pinned));
        expected.sort_by(|a, b| a.name.cmp(&b.name));
        expected
    };
    eventually("h0 to remove its containers of the moved specs", READY, || async {
        (containers_on(&cluster.hosts[0]) == expected_on_victim).then_some(())
    })
    .await;
    eprintln!("h0 cleaned up {:?} after it returned", returned.elapsed());
    wait_host_ready(&store, &victim_name).await;
    let after = placements(&cluster);
    for name in &names {
        assert_eq!(after[&key(name)].len(), 1, "{name} runs exactly once: {after:?}");
    }
    assert_eq!(after[&key(&pinned)], vec![0], "the pinned spec stays on h0");
    assert_eq!(after.len(), names.len() + 1, "no other managed container: {after:?}");
    for (i, host) in cluster.hosts.iter().enumerate() {
        for container in containers_on(host).iter().filter(|c| !c.key.is_empty()) {
            assert!(container.running, "{container:?} on h{i}");
        }
    }
    assert!(cluster.hosts[0].agent_running(), "h0's agent keeps running");
    eprintln!("partition test: total {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_completes_while_the_etcd_leader_dies_and_the_scheduler_leader_is_cut_off() {
    let started = Instant::now();
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let mut cluster = Cluster::start(3, 3, IMAGES).await;
    let store = cluster.store().await;
    // h0 leads the scheduler and, by the specs' selector, runs none of them; h1 and h2 are workers.
    cluster.hosts[0].start_agent(agent_options(("role", "lead")));
    let leader =
        eventually("a scheduler leader", READY, || async { store.get(keys::SCHEDULER_LEADER).await.ok()? })
            .await;
    assert_eq!(leader.value, cluster.hosts[0].name.as_bytes());
    let first_term = leader.mod_revision;
    for host in &mut cluster.hosts[1..] {
        host.start_agent(agent_options(("role", "worker")));
    }
    for host in &cluster.hosts {
        wait_host_ready(&store, &host.name).await;
    }
    let workers: Vec<String> = cluster.hosts[1..].iter().map(|host| host.name.clone()).collect();
    let worker = BTreeMap::from([("role".to_owned(), "worker".to_owned())]);
    let spec = |name: &str, image: &str| {
        let mut container = unplaced(name, &namespace, &cleanup, image);
        container.spec.placement = Some(Placement { host: None, host_selector: worker.clone() });
        container
    };
    let mut names: Vec<String> = (0..6).map(|i| format!("ro{i}-{id}")).collect();
    for name in &names {
        objects::apply_container(store.as_ref(), &spec(name, "kedge-test/app:v1"), None).await.unwrap();
    }
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
    }

    // The rollout starts; the etcd leader is SIGKILLed and the scheduler's leader is cut off (its
    // agent runs on, believing it leads until it hears otherwise).
    let rollout = Instant::now();
    for name in &names {
        objects::apply_container(store.as_ref(), &spec(name, "kedge-test/app:v2"), None).await.unwrap();
    }
    let etcd_leader = cluster.etcd.kill_leader().await;
    cluster.hosts[0].link_down();
    let lost = Instant::now();
    // Two specs arrive while the old leader is away: only a new leader can bind them.
    for i in 6..8 {
        let name = format!("ro{i}-{id}");
        apply(&store, &spec(&name, "kedge-test/app:v2")).await;
        names.push(name);
    }
    let leader = eventually("a new scheduler leader", READY, || async {
        let kv = store.get(keys::SCHEDULER_LEADER).await.ok()??;
        (kv.mod_revision != first_term).then_some(kv)
    })
    .await;
    let moved_after = lost.elapsed();
    let holder = String::from_utf8(leader.value.clone()).unwrap();
    assert!(workers.contains(&holder), "a worker leads now: {holder}");
    // The old leader comes back as soon as another leads, still believing it leads until the store
    // tells it otherwise. Its agent then either carries on (its host lock held: the lock's lease is
    // 10 s) or, having lost its host lock while cut off, stops by design and is restarted as its
    // service manager would. Either way it has had scheduling passes with its old term by the time
    // its host heartbeats again: none may land (the history check below).
    cluster.hosts[0].link_up();
    let returned = Instant::now();
    let outcome = back_in_touch(&store, &cluster.hosts[0]).await;
    if outcome == Return::Stopped {
        eprintln!(
            "leader chaos: the old leader's agent stopped {:?} after its return (its host lock lapsed \
             while it was cut off); restarting it",
            returned.elapsed()
        );
        cluster.hosts[0].restart_agent();
        assert_eq!(back_in_touch(&store, &cluster.hosts[0]).await, Return::Heartbeating);
    } else {
        eprintln!(
            "leader chaos: the old leader's agent heartbeats again, {:?} after its return",
            returned.elapsed()
        );
    }
    // The rollout completed, seen on the workers' engines (every spec once, running, on v2) and in
    // each spec's status (Ready and Synced for its current generation).
    let mut statuses_lost = Vec::new();
    for name in &names {
        if rolled_out_on_engines(&cluster, &store, &namespace, name).await == Status::Lost {
            statuses_lost.push(name.clone());
        }
    }
    // The returning old leader's spec watch may still be reconnecting (silently) when its bindings
    // watch already delivers bindings of specs applied while it was cut off. It once took such a spec
    // for a deleted one and deleted the status the spec's own host wrote; it must not.
    assert!(statuses_lost.is_empty(), "the status of {statuses_lost:?} was deleted by another host's agent");
    let rolled_out = rollout.elapsed();

    // The killed etcd member returns too, so that the history below is read from a whole cluster.
    cluster.etcd.restart(etcd_leader).await;
    let current = eventually("the current leader key", READY, || async {
        store.get(keys::SCHEDULER_LEADER).await.ok()?
    })
    .await;
    let binding = keys::binding_key(&namespace, &names[0]).unwrap();
    assert_stale_term_refused(store.as_ref(), first_term, current.mod_revision, &binding).await;
    let history = check_scheduler_history(store.as_ref(), |host| workers.iter().any(|w| w == host)).await;
    assert!(history.bindings >= names.len(), "{history:?}");
    assert!(history.terms.len() >= 2 && history.terms[0] == first_term, "{history:?}");
    eprintln!(
        "leader chaos: new scheduler leader {moved_after:?} after the loss, rollout of {} specs done \
         {rolled_out:?} after it began, {} terms, {} binding writes; total {:?}",
        names.len(),
        history.terms.len(),
        history.bindings,
        started.elapsed()
    );
}

#[derive(Debug, PartialEq, Eq)]
enum Return {
    /// The agent wrote two more heartbeats.
    Heartbeating,
    /// The agent exited.
    Stopped,
}

/// Waits until `host`'s agent heartbeats again, or exited. Heartbeats are keep-alives of the lease of
/// its liveness key (no store write), so "heartbeating" is that key held on one lease for longer than
/// the lease's 15 s TTL: only renewals keep it that long.
async fn back_in_touch(store: &SharedStore, host: &NetnsHost) -> Return {
    let alive_key = keys::host_lease_key(&host.name).unwrap();
    let seen: std::cell::Cell<Option<(i64, Instant)>> = std::cell::Cell::new(None);
    eventually(&format!("{} heartbeating, or stopped", host.name), READY, || async {
        if !host.agent_running() {
            return Some(Return::Stopped);
        }
        let Some(kv) = store.get(&alive_key).await.ok()? else {
            seen.set(None);
            return None;
        };
        match seen.get() {
            Some((lease, since)) if lease == kv.lease => {
                (since.elapsed() > Duration::from_secs(16)).then_some(Return::Heartbeating)
            }
            _ => {
                seen.set(Some((kv.lease, Instant::now())));
                None
            }
        }
    })
    .await
}

#[derive(Debug, PartialEq, Eq)]
enum Status {
    /// Ready and Synced for the spec's current generation.
    Ready,
    /// No status, long after the container ran as specified: someone deleted it.
    Lost,
}

/// Waits until spec `name`'s container runs exactly once, on a worker's engine (not h0), on
/// `kedge-test/app:v2`, and its status says Ready and Synced for the current generation. A status
/// still missing 10 s after the container ran as specified counts as lost. On a timeout, says what
/// the store and the engines held last.
async fn rolled_out_on_engines(
    cluster: &Cluster,
    store: &SharedStore,
    namespace: &str,
    name: &str,
) -> Status {
    let deadline = Instant::now() + READY;
    let key = format!("{namespace}/{name}");
    let mut running_since: Option<Instant> = None;
    loop {
        let on = placements(cluster).remove(&key).unwrap_or_default();
        let running = match on.as_slice() {
            [host] if *host != 0 => {
                let format = "{{.State.Running}} {{.Config.Image}}";
                let inspect = cluster.hosts[*host].docker(&["inspect", "-f", format, name]);
                String::from_utf8_lossy(&inspect.stdout).trim() == "true kedge-test/app:v2"
            }
            _ => false,
        };
        running_since = if running { running_since.or(Some(Instant::now())) } else { None };
        let spec = objects::get_container(store.as_ref(), namespace, name).await;
        let status = objects::get_status(store.as_ref(), namespace, name).await;
        let last = match (&spec, &status) {
            (Ok(Some(spec)), Ok(Some((status, _)))) => {
                let is_true = |kind: &str| {
                    status.condition(kind).is_some_and(|c| c.status == kedge_crds::ConditionStatus::True)
                };
                let current = status.observed_generation == spec.metadata.generation;
                if running && current && is_true("Ready") && is_true("Synced") {
                    return Status::Ready;
                }
                let status = serde_json::to_string(status).unwrap();
                format!("generation {:?}, status {status}", spec.metadata.generation)
            }
            (Ok(Some(_)), Ok(None))
                if running_since.is_some_and(|at| at.elapsed() > Duration::from_secs(10)) =>
            {
                return Status::Lost;
            }
            _ => format!("spec {:?}, status {:?}", spec.map(|s| s.is_some()), status.map(|s| s.is_some())),
        };
        assert!(Instant::now() < deadline, "{key} not rolled out after {READY:?}: on hosts {on:?}, {last}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Applies `spec`, retrying while the store is unavailable (an etcd member was just killed, and the
/// client may try it first).
async fn apply(store: &SharedStore, spec: &kedge_crds::Container) {
    eventually(&format!("apply {}", spec.metadata.name), READY, || async {
        match objects::apply_container(store.as_ref(), spec, None).await {
            Ok(_) => Some(()),
            Err(error) if error.is_transient() => None,
            Err(error) => panic!("apply {}: {error}", spec.metadata.name),
        }
    })
    .await
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names
}

/// A ContainerSet of three replicas on the three namespaced hosts, rolled by batches of one: to a
/// broken image it stops after the first batch and rolls back (the other replicas' containers never
/// change), to a good image it completes, each replica on its own host's engine.
#[tokio::test(flavor = "multi_thread")]
async fn a_replicated_spec_rolls_back_a_broken_image_and_completes_a_good_one_across_namespaced_hosts() {
    let started = Instant::now();
    let id = run_id();
    let namespace = format!("t{id}");
    let images = ["kedge-test/app:v1", "kedge-test/app:v2", "kedge-test/fail:latest"];
    let mut cluster = Cluster::start(3, 3, &images).await;
    let store = cluster.store().await;
    for host in cluster.hosts.iter_mut() {
        host.start_agent(agent_options(("zone", "b")));
    }
    for host in &cluster.hosts {
        wait_host_ready(&store, &host.name).await;
    }
    let set_name = format!("rs-{id}");
    let children: Vec<String> = (0..3).map(|ordinal| format!("{set_name}-{ordinal}")).collect();
    let document = |image: &str| -> kedge_crds::ContainerSet {
        serde_json::from_value(json!({
            "apiVersion": "kedge.io/v1", "kind": "ContainerSet",
            "metadata": {"name": set_name, "namespace": namespace},
            "spec": {
                "replicas": 3,
                "template": {"spec": {"image": image, "stopGracePeriod": "1s"}},
                "rollingUpdate": {"batchSize": 1, "healthTimeout": "60s"}
            }
        }))
        .expect("a valid set")
    };
    let apply = |image: &'static str| {
        let (store, set) = (store.clone(), document(image));
        async move {
            eventually("apply the set", READY, || async {
                objects::apply_set(store.as_ref(), &set, None).await.ok()
            })
            .await
        }
    };
    let progressing = || async {
        let (status, _) = objects::get_set_status(store.as_ref(), &namespace, &set_name).await.ok()??;
        let condition = status.condition("Progressing")?.clone();
        Some((condition.reason, status))
    };
    // Where each child's container runs, from the engines themselves: name -> (host index, ID, image).
    let on_engines = || -> BTreeMap<String, (usize, String, String)> {
        let mut found = BTreeMap::new();
        for (i, host) in cluster.hosts.iter().enumerate() {
            for seen in containers_on(host).into_iter().filter(|seen| children.contains(&seen.name)) {
                let image = host.docker(&["inspect", "-f", "{{.Config.Image}}", &seen.name]);
                let image = String::from_utf8_lossy(&image.stdout).trim().to_owned();
                let previous = found.insert(seen.name.clone(), (i, seen.id, image));
                assert!(previous.is_none(), "{} runs on two engines", seen.name);
            }
        }
        found
    };
    let settled_on = |image: &'static str, reason: &'static str| {
        let (store, namespace, children) = (store.clone(), namespace.clone(), children.clone());
        let progressing = &progressing;
        async move {
            eventually(&format!("every replica Ready on {image}, the set {reason}"), READY, || async {
                let (now, _) = progressing().await?;
                for child in &children {
                    let spec = objects::get_container(store.as_ref(), &namespace, child).await.ok()??;
                    let (status, _) = objects::get_status(store.as_ref(), &namespace, child).await.ok()??;
                    let holds = |kind: &str| {
                        status.condition(kind).is_some_and(|c| c.status == kedge_crds::ConditionStatus::True)
                    };
                    let current = status.observed_generation == spec.metadata.generation;
                    if spec.spec.image.to_string() != image || !current || !holds("Ready") || !holds("Synced")
                    {
                        return None;
                    }
                }
                (now == reason).then_some(())
            })
            .await
        }
    };

    apply("kedge-test/app:v1").await;
    settled_on("kedge-test/app:v1", "RolloutComplete").await;
    let before = on_engines();
    let hosts: std::collections::BTreeSet<usize> = before.values().map(|(host, _, _)| *host).collect();
    assert_eq!(hosts.len(), 3, "one replica per namespaced host: {before:?}");

    // The broken image: the first batch fails and is rolled back; the others never change.
    let rollout = Instant::now();
    apply("kedge-test/fail:latest").await;
    let most_on_broken = std::cell::Cell::new(0);
    let (reason, status) = eventually("the broken rollout rolled back", READY, || async {
        let on_broken =
            on_engines().values().filter(|(_, _, image)| image == "kedge-test/fail:latest").count();
        most_on_broken.set(most_on_broken.get().max(on_broken));
        progressing().await.filter(|(reason, _)| reason == "RolledBack")
    })
    .await;
    let rolled_back = rollout.elapsed();
    assert_eq!(reason, "RolledBack");
    assert!(most_on_broken.get() <= 1, "at most the first batch ran the broken image");
    let message = status.failure_message.unwrap_or_default();
    assert!(message.contains(&children[0]), "the failure names the first batch's child: {message}");
    settled_on("kedge-test/app:v1", "RolledBack").await;
    let after = on_engines();
    assert_eq!(after, before, "every replica runs its original container again, on its host");

    // The good image: completes, batch by batch, every replica on v2 on its own host.
    let rollout = Instant::now();
    apply("kedge-test/app:v2").await;
    settled_on("kedge-test/app:v2", "RolloutComplete").await;
    let completed = rollout.elapsed();
    let done = on_engines();
    assert_eq!(done.len(), 3, "{done:?}");
    for (child, (host, id, image)) in &done {
        assert_eq!(image, "kedge-test/app:v2", "{child}");
        assert_eq!(*host, before[child].0, "{child} stayed on its host");
        assert_ne!(id, &before[child].1, "{child} was recreated");
    }
    eprintln!(
        "replicas across namespaces: broken rollout rolled back in {rolled_back:?}, good one completed \
         in {completed:?}, total {:?}",
        started.elapsed()
    );
}
