//! Health-gated, soaked updates with rollback, and cleanup of old images, against the real engine
//! and a real `kedge agent` (docs/health.md). Each test builds its own images from
//! `kedge-test/health` (healthcheck every 1 s) under a tag of its own, and moves the tag as a
//! registry push would (`updatePolicy.imageCheck: local`, checked every second):
//!
//! - an image whose healthcheck fails is rolled back to the previous image ID within
//!   `healthTimeout`, held (`status.rolledBack` names the image ID and when), not tried again over
//!   several check intervals, also not by a new agent on the same store; a fixed image pushed under
//!   the same tag is then taken; one whose healthcheck never decides is rolled back when
//!   `healthTimeout` passes;
//! - with `minReadySeconds: 0` and a healthcheck, the update is ready as soon as the container is
//!   healthy (from `status.lastUpdate.readyAt` and the engine's health log, not from the test's clock);
//! - an image that crashes after it became healthy, inside `updateStrategy.soak`, is rolled back,
//!   also when it crashed while no agent ran (the soak is a record in status);
//! - `updatePolicy.cleanup` removes the old image only after the soak, and only when no container
//!   (here a foreign one) uses it.

use std::time::Duration;

use crate::agent_unhealthy::{inspect, start, started_at};
use crate::api_support::{stdout, AgentGuard, SpecsOnAgent};
use chrono::{DateTime, Utc};
use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup, TEST_LABEL};
use serde_json::Value;

/// How often the specs here check their tag.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
const READY: Duration = Duration::from_secs(60);

/// Images this test built: removed (forced) when dropped, also on failure.
struct Images {
    run: String,
    dir: std::path::PathBuf,
    built: std::sync::Mutex<Vec<String>>,
}

impl Images {
    fn new(run: &str) -> Images {
        let dir = std::env::temp_dir().join(format!("kedge-images-{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        Images { run: run.to_owned(), dir, built: Default::default() }
    }

    /// The tag `kedge-test/h21-RUN:what`.
    fn tag(&self, what: &str) -> String {
        format!("kedge-test/h21-{}:{what}", self.run)
    }

    /// Builds `dockerfile` as `tag` (moving the tag); returns the image ID.
    fn build(&self, tag: &str, dockerfile: &str) -> String {
        let context = self.dir.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&context).unwrap();
        std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
        let label = format!("{TEST_LABEL}={}", self.run);
        let out = docker_cli(&["build", "-q", "--label", &label, "-t", tag, context.to_str().unwrap()]);
        assert!(out.status.success(), "docker build: {}", String::from_utf8_lossy(&out.stderr));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.built.lock().unwrap().push(id.clone());
        id
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for id in self.built.lock().unwrap().iter() {
            let _ = docker_cli(&["rmi", "-f", id]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn image_exists(id: &str) -> bool {
    docker_cli(&["image", "inspect", id]).status.success()
}

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}")).with_timezone(&Utc)
}

/// Containers of this run created between `from` and `to`, by name.
fn creates(run: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
    let label = format!("label={TEST_LABEL}={run}");
    let out = docker_cli(&[
        "events",
        "--since",
        &from.timestamp().to_string(),
        "--until",
        &to.timestamp().to_string(),
        "--filter",
        &label,
        "--filter",
        "event=create",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

fn spec(image: &str, extra: &str) -> String {
    format!(
        "  image: {image}\n  updatePolicy: {{imageCheck: local, checkInterval: {}s}}\n{extra}",
        CHECK_INTERVAL.as_secs()
    )
}

async fn ready_on(fx: &SpecsOnAgent, name: &str, image_id: &str) {
    eventually(&format!("{name} Ready on {image_id}"), READY, || async {
        let ready = fx.condition(name, "Ready")?.0 == "True";
        (ready && inspect(name, "{{.Image}}") == image_id).then_some(())
    })
    .await;
}

async fn rolled_back(fx: &SpecsOnAgent, name: &str, timeout: Duration) -> Value {
    eventually(&format!("{name} rolled back"), timeout, || async {
        let object = fx.get(name);
        let (status, reason, _) = fx.condition(name, "Synced")?;
        (status == "False" && reason == "RolledBack" && object["status"]["rolledBack"].is_object())
            .then_some(object)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_healthcheck_rolls_back_to_the_previous_image_id_and_is_not_retried_even_by_a_new_agent() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let images = Images::new(&run);
    let tag = images.tag("app");
    let good = images.build(&tag, "FROM kedge-test/health:latest\nLABEL h21.version=1\n");
    let (fx, agent) = start(&run, "hcfail").await;
    let agent = agent.keeping_state();
    let name = format!("hc-{run}");
    fx.apply(&name, &spec(&tag, "  updateStrategy: {healthTimeout: 20s}\n"));
    ready_on(&fx, &name, &good).await;
    let old_id = inspect(&name, "{{.Id}}");

    let pushed = Utc::now();
    let bad =
        images.build(&tag, "FROM kedge-test/health:latest\nLABEL h21.version=2\nRUN touch /tmp/unhealthy\n");
    let object = rolled_back(&fx, &name, Duration::from_secs(60)).await;
    let held = &object["status"]["rolledBack"];
    let failed_at = time(held["failedAt"].as_str().expect("failedAt"));
    let took = (failed_at - pushed).to_std().unwrap_or_default();
    eprintln!("measured: rolled back {took:?} after the tag moved: {held}");
    assert!(
        took < Duration::from_secs(20) + CHECK_INTERVAL * 2,
        "rolled back within healthTimeout: {took:?}"
    );
    assert_eq!(held["imageId"], bad.as_str(), "the failed image ID is recorded: {held}");
    assert_eq!(held["image"], tag.as_str());
    assert_eq!(held["reason"], "NewContainerUnhealthy");
    assert_eq!(inspect(&name, "{{.Id}}"), old_id, "the old container, with its ID, runs again");
    assert_eq!(inspect(&name, "{{.Image}}"), good, "on the previous image ID");

    // Not tried again: no container made over several check intervals.
    let from = Utc::now();
    tokio::time::sleep(CHECK_INTERVAL * 8).await; // the window itself is what is measured
    let made = creates(&run, from, Utc::now());
    assert!(made.is_empty(), "the held image was tried again: {made:?}");
    let described = stdout(&fx.kedge(&["describe", "container", &name, "-n", &fx.namespace]));
    assert!(described.contains("Failed Image") && described.contains(&bad[7..19]), "{described}");

    // A new agent on the same store reads the hold from status and keeps it.
    let state_dir = agent.state_dir.clone();
    drop(agent);
    let agent = AgentGuard::spawn(&state_dir, &fx.host, &[]);
    fx.wait_api().await;
    let from = Utc::now();
    tokio::time::sleep(CHECK_INTERVAL * 8).await; // the window itself is what is measured
    let made = creates(&run, from, Utc::now());
    assert!(made.is_empty(), "a new agent tried the held image again: {made:?}");
    assert_eq!(inspect(&name, "{{.Id}}"), old_id);

    // A fixed image under the same tag is a new attempt, and it is taken.
    let fixed = images.build(&tag, "FROM kedge-test/health:latest\nLABEL h21.version=3\n");
    ready_on(&fx, &name, &fixed).await;
    eventually("the hold to be gone", READY, || async {
        let object = fx.get(&name);
        (fx.condition(&name, "Synced")?.0 == "True" && object["status"]["rolledBack"].is_null()).then_some(())
    })
    .await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_min_ready_seconds_0_an_update_is_ready_as_soon_as_healthy() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let images = Images::new(&run);
    let tag = images.tag("app");
    let first = images.build(&tag, "FROM kedge-test/health:latest\nLABEL h21.version=1\n");
    let (fx, _agent) = start(&run, "minready0").await;
    let name = format!("mr0-{run}");
    fx.apply(&name, &spec(&tag, "  minReadySeconds: 0\n"));
    ready_on(&fx, &name, &first).await;

    let second = images.build(&tag, "FROM kedge-test/health:latest\nLABEL h21.version=2\n");
    let update = eventually("the update's record", READY, || async {
        let update = fx.get(&name)["status"]["lastUpdate"].clone();
        (update["imageId"] == second.as_str()).then_some(update)
    })
    .await;
    // Read at once: the engine keeps the last five checks, one a second.
    let log: Value =
        serde_json::from_str(&inspect(&name, "{{json .State.Health.Log}}")).unwrap_or(Value::Null);
    let started = started_at(&name).expect("started");
    let ready_at = time(update["readyAt"].as_str().unwrap());
    let first_healthy = log
        .as_array()
        .and_then(|checks| checks.iter().find(|check| check["ExitCode"] == 0))
        .and_then(|check| check["End"].as_str())
        .map(time);
    eprintln!(
        "measured: started {started}, first healthy check {first_healthy:?}, ready at {ready_at}: {update}"
    );
    assert_eq!(update["order"], "start-first", "{update}");
    assert!(update["orderReason"].as_str().unwrap().starts_with("start-first"), "{update}");
    let after_start = (ready_at - started).to_std().unwrap_or_default();
    // The first check runs one interval after the start; ready right after it, not a fixed wait later.
    assert!(after_start < Duration::from_millis(2500), "ready {after_start:?} after the start");
    if let Some(healthy) = first_healthy {
        let gap = (ready_at - healthy).num_milliseconds();
        assert!((-200..1000).contains(&gap), "ready {gap} ms after the first healthy check");
    }
    let described = stdout(&fx.kedge(&["describe", "container", &name, "-n", &fx.namespace]));
    assert!(described.contains("Update Order:") && described.contains("start-first"), "{described}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_the_soak_rolls_back_to_the_previous_image_id() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let images = Images::new(&run);
    let tag = images.tag("app");
    let good = images.build(&tag, "FROM kedge-test/health:latest\nLABEL h21.version=1\n");
    let (fx, _agent) = start(&run, "soakfail").await;
    let name = format!("soak-{run}");
    fx.apply(&name, &spec(&tag, "  updateStrategy: {soak: 30s}\n"));
    ready_on(&fx, &name, &good).await;

    // Healthy after a second, proven, then it crashes 5 s after its start: inside the soak.
    let crashing = images.build(
        &tag,
        "FROM kedge-test/health:latest\nLABEL h21.version=2\nCMD [\"/bin/sh\",\"-c\",\"sleep 5; echo crashing; exit 7\"]\n",
    );
    let soaking = eventually("the soak to begin", READY, || async {
        let update = fx.get(&name)["status"]["lastUpdate"].clone();
        (update["imageId"] == crashing.as_str() && update["phase"] == "Soaking").then_some(update)
    })
    .await;
    eprintln!("soaking: {soaking}");
    let object = rolled_back(&fx, &name, Duration::from_secs(60)).await;
    let held = &object["status"]["rolledBack"];
    eprintln!("measured: soak failure held: {held}");
    assert_eq!(held["reason"], "SoakFailed", "{held}");
    assert_eq!(held["imageId"], crashing.as_str(), "{held}");
    assert!(held["message"].as_str().unwrap().contains("exited with code 7"), "{held}");
    assert_eq!(object["status"]["lastUpdate"]["phase"], "RolledBack", "{object}");
    ready_on(&fx, &name, &good).await;
    // Not tried again.
    let id = inspect(&name, "{{.Id}}");
    let from = Utc::now();
    tokio::time::sleep(CHECK_INTERVAL * 8).await; // the window itself is what is measured
    assert!(creates(&run, from, Utc::now()).is_empty(), "the failed image was tried again");
    assert_eq!(inspect(&name, "{{.Id}}"), id);
    assert_eq!(inspect(&name, "{{.State.Running}}"), "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_removes_the_old_image_after_the_soak_and_only_when_unused() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let images = Images::new(&run);
    let (fx, _agent) = start(&run, "cleanup").await;
    let extra = "  updatePolicy: {imageCheck: local, checkInterval: 1s, cleanup: true}\n  updateStrategy: {soak: 4s}\n";
    let spec = |image: &str| format!("  image: {image}\n{extra}");

    // Unused: removed, but only once the soak is over.
    let unused_tag = images.tag("unused");
    let old = images.build(&unused_tag, "FROM kedge-test/health:latest\nLABEL h21.version=1\n");
    let unused = format!("unused-{run}");
    fx.apply(&unused, &spec(&unused_tag));
    ready_on(&fx, &unused, &old).await;
    let new = images.build(&unused_tag, "FROM kedge-test/health:latest\nLABEL h21.version=2\n");
    eventually("the soak to begin", READY, || async {
        let update = fx.get(&unused)["status"]["lastUpdate"].clone();
        (update["imageId"] == new.as_str() && update["phase"] == "Soaking").then_some(())
    })
    .await;
    assert!(image_exists(&old), "the rollback image stays while the soak runs");
    eventually("the old image to be removed", READY, || async { (!image_exists(&old)).then_some(()) }).await;
    let update = fx.get(&unused)["status"]["lastUpdate"].clone();
    assert_eq!(update["phase"], "Complete", "{update}");

    // Used by another container (not kedge's): kept.
    let used_tag = images.tag("used");
    let old = images.build(&used_tag, "FROM kedge-test/health:latest\nLABEL h21.version=3\n");
    let label = format!("{TEST_LABEL}={run}");
    let bystander = format!("bystander-{run}");
    let out = docker_cli(&["create", "--name", &bystander, "--label", &label, &old]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let used = format!("used-{run}");
    fx.apply(&used, &spec(&used_tag));
    ready_on(&fx, &used, &old).await;
    let new = images.build(&used_tag, "FROM kedge-test/health:latest\nLABEL h21.version=4\n");
    eventually("the update's soak to end", READY, || async {
        let update = fx.get(&used)["status"]["lastUpdate"].clone();
        (update["imageId"] == new.as_str() && update["phase"] == "Complete").then_some(())
    })
    .await;
    let events = eventually("the kept image to be told", READY, || async {
        let events = stdout(&fx.kedge(&["events", "--for", &used, "-n", &fx.namespace]));
        events.contains("ImageKept").then_some(events)
    })
    .await;
    assert!(image_exists(&old), "an image another container uses is kept: {events}");
}

/// The soak is a record in status: an agent stopped inside it, whose new container crashes while no
/// agent runs, is followed by one that finds the failure at its start and rolls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_failure_while_the_agent_is_down_is_rolled_back_by_the_next_agent() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let images = Images::new(&run);
    let tag = images.tag("app");
    let good = images.build(&tag, "FROM kedge-test/health:latest\nLABEL h21.version=1\n");
    let (fx, agent) = start(&run, "soakrestart").await;
    let agent = agent.keeping_state();
    let name = format!("soakr-{run}");
    fx.apply(&name, &spec(&tag, "  updateStrategy: {soak: 60s}\n"));
    ready_on(&fx, &name, &good).await;
    let crashing = images.build(
        &tag,
        "FROM kedge-test/health:latest\nLABEL h21.version=2\nCMD [\"/bin/sh\",\"-c\",\"sleep 6; exit 9\"]\n",
    );
    eventually("the soak to begin", READY, || async {
        let update = fx.get(&name)["status"]["lastUpdate"].clone();
        (update["imageId"] == crashing.as_str() && update["phase"] == "Soaking").then_some(())
    })
    .await;
    let state_dir = agent.state_dir.clone();
    drop(agent);
    eventually("the new container to crash with no agent", READY, || async {
        (inspect(&name, "{{.State.Running}}") == "false").then_some(())
    })
    .await;
    let _agent = AgentGuard::spawn(&state_dir, &fx.host, &[]);
    fx.wait_api().await;
    let object = rolled_back(&fx, &name, Duration::from_secs(60)).await;
    assert_eq!(object["status"]["rolledBack"]["reason"], "SoakFailed", "{object}");
    ready_on(&fx, &name, &good).await;
}

/// A new container whose healthcheck never decides (still `starting`, its start period long) is
/// rolled back once `updateStrategy.healthTimeout` has passed, not before and not much after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_never_healthy_is_rolled_back_when_its_health_timeout_passes() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let images = Images::new(&run);
    let tag = images.tag("app");
    let good = images.build(&tag, "FROM kedge-test/health:latest\nLABEL h21.version=1\n");
    let (fx, _agent) = start(&run, "hctimeout").await;
    let name = format!("hct-{run}");
    fx.apply(&name, &spec(&tag, "  updateStrategy: {healthTimeout: 5s}\n"));
    ready_on(&fx, &name, &good).await;
    let pushed = Utc::now();
    let undecided = images.build(
        &tag,
        "FROM kedge-test/health:latest\nLABEL h21.version=2\nHEALTHCHECK --interval=1s --start-period=120s CMD false\n",
    );
    let object = rolled_back(&fx, &name, Duration::from_secs(60)).await;
    let held = &object["status"]["rolledBack"];
    let took = (time(held["failedAt"].as_str().unwrap()) - pushed).to_std().unwrap_or_default();
    eprintln!("measured: an update still starting rolled back {took:?} after the tag moved: {held}");
    assert_eq!(held["imageId"], undecided.as_str(), "{held}");
    assert!(held["message"].as_str().unwrap().contains("still starting after 5s"), "{held}");
    // The check interval, the pull-free create and start, then the 5 s timeout (failedAt in seconds).
    assert!(took >= Duration::from_secs(4) && took < Duration::from_secs(12), "{took:?}");
    assert_eq!(inspect(&name, "{{.Image}}"), good);
}
