//! Supervision of the agent's tasks, end to end against the real `kedge agent` binary (built with
//! the `failpoints` feature, which `panic-task:` failpoints need; see `executor/failpoint.rs`):
//!
//! - reconciles that panic become the key's failure (`ReconcilePanicked`) and are retried: the spec
//!   still runs; a scheduler leader that panicked twice is restarted and still places specs;
//! - a task that keeps panicking turns `/healthz` into a 503 naming it;
//! - with the engine's event follower dead, the periodic resync alone repairs drift;
//! - a leader that panics gives up its leadership at once, and another agent takes over in about a
//!   second, where a leader that is killed outright blocks scheduling until its lease lapses.

use std::time::{Duration, Instant};

use crate::agent_metrics::scrape;
use crate::api_support::{http_unix, stderr, stdout};
use crate::store_scale::{apply_json, store_url, unplaced_spec, wait_running, AgentProcess};
use kedge_controller::store::{keys, SharedStore};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup};
use serde_json::Value;

/// The failpoints these tests use are compiled in only with the feature (the workspace is built
/// with it or without it as a whole): fail loudly without it.
fn require_failpoints() {
    assert!(
        kedge_controller::executor::failpoint::compiled(),
        "build with `--features kedge-controller/failpoints` (the agent binary too)"
    );
}

async fn healthz(agent: &AgentProcess) -> (u16, Value) {
    let reply = http_unix(&agent.state_dir.join("kedge.sock"), "GET", "/healthz", None).await;
    (reply.status, reply.json())
}

fn task<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body["tasks"].as_array()?.iter().find(|t| t["name"] == name)
}

async fn leader(store: &SharedStore) -> Option<(String, i64)> {
    let kv = store.get(keys::SCHEDULER_LEADER).await.ok()??;
    Some((String::from_utf8_lossy(&kv.value).into_owned(), kv.mod_revision))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_reconciles_and_a_panicking_leader_are_survived() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let cluster = EtcdCluster::start(1).await;
    let work = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start_with_env(
        &store_url(&cluster),
        &format!("sup-{run}"),
        &work.path().join("state"),
        &[("KEDGE_FAILPOINT", "panic-task:reconcile:2,panic-task:leader:2")],
    );
    agent.wait_serving().await;
    require_failpoints();

    // The leader panics after each of its first two passes and is restarted each time.
    let (status, body) = eventually("the scheduler died twice", Duration::from_secs(30), || async {
        let (status, body) = healthz(&agent).await;
        (task(&body, "scheduler").is_some_and(|t| t["totalDeaths"] == 2)).then_some((status, body))
    })
    .await;
    assert_eq!(status, 200, "two deaths do not make the agent unhealthy: {body}");
    let scheduler = task(&body, "scheduler").unwrap();
    assert!(scheduler["lastError"].as_str().unwrap().contains("panic-task:leader"), "{scheduler}");

    // A spec applied now needs the restarted leader to place it; its first reconciles panic.
    let name = format!("sup-{run}");
    apply_json(&agent, work.path(), &unplaced_spec(&name, &run));
    wait_running(&name).await;
    let events = agent.kedge(&["events", "--for", &name, "-o", "json"]);
    let events: Value = serde_json::from_str(&stdout(&events)).unwrap_or(Value::Null);
    let panicked =
        events["items"].as_array().into_iter().flatten().find(|e| e["reason"] == "ReconcilePanicked");
    let panicked = panicked.unwrap_or_else(|| panic!("a ReconcilePanicked event: {events}"));
    assert!(panicked["message"].as_str().unwrap().contains("panic-task:reconcile"), "{panicked}");
    let (status, body) = healthz(&agent).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_panicking_turns_healthz_503_naming_it() {
    let run = run_id();
    let work = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start_with_env(
        "embedded",
        &format!("sick-{run}"),
        &work.path().join("state"),
        &[("KEDGE_FAILPOINT", "panic-task:resync")],
    );
    agent.wait_serving().await;
    require_failpoints();
    let started = Instant::now();
    let body = eventually("/healthz answers 503", Duration::from_secs(40), || async {
        let (status, body) = healthz(&agent).await;
        (status == 503).then_some(body)
    })
    .await;
    eprintln!("measured: /healthz 503 {:.1}s after the agent served", started.elapsed().as_secs_f64());
    assert_eq!(body["status"], "unhealthy");
    assert!(body["error"].as_str().unwrap().contains("resync"), "{body}");
    let resync = task(&body, "resync").expect("the failing task is listed");
    assert_eq!(resync["unhealthy"], true);
    assert!(resync["recentDeaths"].as_u64().unwrap() >= 5, "{resync}");
    // Only the failing task is blamed, and the API still serves.
    assert!(body["tasks"].as_array().unwrap().iter().all(|t| t["name"] == "resync"), "{body}");
    let version = agent.kedge(&["version"]);
    assert!(version.status.success(), "{}", stderr(&version));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_leader_hands_over_at_once_where_a_killed_one_waits_for_its_lease() {
    let run = run_id();
    let cluster = EtcdCluster::start(1).await;
    let store = cluster.store().await;
    let work = tempfile::tempdir().unwrap();
    let trigger = work.path().join("panic-now");
    let first_host = format!("lead-{run}");
    let second_host = format!("next-{run}");
    let failpoint = format!("panic-task:leader@{}", trigger.display());
    let first = AgentProcess::start_with_env(
        &store_url(&cluster),
        &first_host,
        &work.path().join("first"),
        &[("KEDGE_FAILPOINT", failpoint.as_str())],
    );
    first.wait_serving().await;
    require_failpoints();
    eventually("the first agent leads", Duration::from_secs(30), || async {
        leader(&store).await.filter(|(host, _)| *host == first_host)
    })
    .await;
    let mut second = AgentProcess::start(&store_url(&cluster), &second_host, &work.path().join("second"));
    second.wait_serving().await;

    // The leader panics on its next pass: its lease is revoked and the other agent takes over.
    std::fs::write(&trigger, b"").unwrap();
    let panicked = Instant::now();
    eventually("the second agent leads", Duration::from_secs(20), || async {
        leader(&store).await.filter(|(host, _)| *host == second_host)
    })
    .await;
    let handover = panicked.elapsed();
    let (status, body) = healthz(&first).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(task(&body, "scheduler").map(|t| t["totalDeaths"].clone()), Some(1.into()), "{body}");

    // For comparison, the leader killed outright: nobody revokes its lease, which must lapse.
    second.child.kill().unwrap();
    let killed = Instant::now();
    eventually("the first agent leads again", Duration::from_secs(30), || async {
        leader(&store).await.filter(|(host, _)| *host == first_host)
    })
    .await;
    let lapse = killed.elapsed();
    eprintln!(
        "measured: takeover after a leader's panic {:.1}s (lease revoked), after a SIGKILL {:.1}s (lease lapsed)",
        handover.as_secs_f64(),
        lapse.as_secs_f64()
    );
    assert!(handover < Duration::from_secs(5), "a panicking leader hands over at once: {handover:?}");
}

/// Without the engine's event stream (its follower panics at every start, so no `die` and no
/// reconnect resync reach the agent), the periodic resync alone repairs drift: with a 4 s interval,
/// spread over the interval, a container killed by hand runs again and one removed by hand is made
/// again. Nothing else would: no store write follows either. The drift comes only once the resync
/// passes over the settled keys (their containers listed as their last reconcile saw them):
/// passing over a key must not hide what its own list shows, even with no event to tell it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_engine_events_the_periodic_resync_repairs_drift() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let work = tempfile::tempdir().unwrap();
    let agent = agent_without_engine_events(&format!("resync-{run}"), work.path()).await;
    let names: Vec<String> = (0..3).map(|i| format!("resync{i}-{run}")).collect();
    for name in &names {
        apply_json(&agent, work.path(), &unplaced_spec(name, &run));
    }
    for name in &names {
        wait_running(name).await;
    }
    let (status, body) = healthz(&agent).await;
    assert!(
        task(&body, "follow-engine").is_some_and(|t| t["totalDeaths"].as_u64() >= Some(1)),
        "{status} {body}"
    );

    let passed = "kedge_resync_keys_total{decision=\"passed\"}";
    let reconciled = "kedge_resync_keys_total{decision=\"reconciled\"}";
    let settled = resync_passed_over(&agent, 3).await;
    eprintln!(
        "measured: before the drift, the resync reconciled {} keys and passed over {}",
        settled[reconciled], settled[passed]
    );

    let before: Vec<String> = names.iter().map(|name| identity(name)).collect();
    let killed = docker_cli(&["kill", &names[1]]);
    assert!(killed.status.success(), "docker kill: {}", String::from_utf8_lossy(&killed.stderr));
    let removed = docker_cli(&["rm", "-f", &names[2]]);
    assert!(removed.status.success(), "docker rm: {}", String::from_utf8_lossy(&removed.stderr));
    let started = Instant::now();
    for (name, before) in names.iter().zip(&before).skip(1) {
        eventually(&format!("{name} running again, started anew"), Duration::from_secs(30), || async {
            let now = identity(name);
            (now.starts_with("true ") && now != *before).then_some(())
        })
        .await;
    }
    eprintln!(
        "measured: both repaired {:.1}s after the drift, by the resync alone",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(identity(&names[0]), before[0], "the container nobody touched was left alone");
}

/// A settled container that turns unhealthy while the agent gets no engine events (no
/// `health_status`) is still remediated by the periodic resync: the list's status line carries the
/// health, so the key is not passed over. `kedge-test/health` is unhealthy while `/tmp/unhealthy`
/// exists; the default remediation restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_engine_events_the_resync_still_restarts_a_container_gone_unhealthy() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let work = tempfile::tempdir().unwrap();
    let agent = agent_without_engine_events(&format!("unhealthy-{run}"), work.path()).await;
    let name = format!("sick-{run}");
    let mut spec = unplaced_spec(&name, &run);
    spec["spec"]["image"] = "kedge-test/health:latest".into();
    spec["spec"].as_object_mut().unwrap().remove("command");
    apply_json(&agent, work.path(), &spec);
    eventually(&format!("{name} healthy"), Duration::from_secs(30), || async {
        let health = docker_cli(&["inspect", "-f", "{{.State.Health.Status}}", &name]);
        (String::from_utf8_lossy(&health.stdout).trim() == "healthy").then_some(())
    })
    .await;
    resync_passed_over(&agent, 1).await;

    let before = identity(&name);
    let sick = docker_cli(&["exec", &name, "touch", "/tmp/unhealthy"]);
    assert!(sick.status.success(), "docker exec: {}", String::from_utf8_lossy(&sick.stderr));
    let started = Instant::now();
    eventually(&format!("{name} restarted for its health"), Duration::from_secs(30), || async {
        let now = identity(&name);
        (now.starts_with("true ") && now != before).then_some(())
    })
    .await;
    eprintln!(
        "measured: restarted {:.1}s after turning unhealthy, by the resync alone",
        started.elapsed().as_secs_f64()
    );
}

/// An agent on the embedded store whose engine-event follower panics at every start (so no `die` and
/// no reconnect resync reach it) and whose periodic resync runs every 4 s: only the resync can see
/// drift.
async fn agent_without_engine_events(host: &str, work: &std::path::Path) -> AgentProcess {
    let agent = AgentProcess::start_with_env(
        "embedded",
        host,
        &work.join("state"),
        &[("KEDGE_FAILPOINT", "panic-task:follow-engine"), ("KEDGE_RESYNC_SECONDS", "4")],
    );
    agent.wait_serving().await;
    require_failpoints();
    agent
}

/// Waits until the periodic resyncs passed over at least `keys` settled keys in all; answers the
/// agent's metric samples then.
async fn resync_passed_over(agent: &AgentProcess, keys: u32) -> std::collections::BTreeMap<String, f64> {
    let passed = "kedge_resync_keys_total{decision=\"passed\"}";
    eventually(&format!("the resync to pass over {keys} settled key(s)"), Duration::from_secs(30), || async {
        let samples = scrape(&agent.state_dir).await;
        (samples.get(passed).copied().unwrap_or(0.0) >= f64::from(keys)).then_some(samples)
    })
    .await
}

/// `running startedAt id` of the container `name` (empty when there is none).
fn identity(name: &str) -> String {
    let inspect = docker_cli(&["inspect", "-f", "{{.State.Running}} {{.State.StartedAt}} {{.Id}}", name]);
    String::from_utf8_lossy(&inspect.stdout).trim().to_owned()
}
