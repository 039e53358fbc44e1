//! Unhealthy remediation against the real engine and a real `kedge agent` (docs/health.md), with
//! `kedge-test/health` (healthcheck every 1 s, unhealthy while `/tmp/unhealthy` exists), the file
//! made by hand with `docker exec`:
//!
//! - with `/tmp` a tmpfs (a restart empties it), the container is restarted within two health
//!   intervals of the file's creation, and Ready again after;
//! - with `/tmp` in the container's own layer (a restart keeps the file), it is restarted with
//!   backoff until the flap limit (5), then Degraded=True/UnhealthyFlapping, and not started again
//!   over a further window;
//! - `onUnhealthy: recreate`: restarted once, then replaced by a new container, healthy again;
//! - `onUnhealthy: none`: never restarted, Ready=False/Unhealthy.
//!
//! The four share one agent and run at the same time.

use std::time::Duration;

use crate::api_support::{AgentGuard, SpecsOnAgent};
use chrono::{DateTime, Utc};
use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup};

/// The health test image's check interval.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// How long a container is watched after kedge gave up, or with `onUnhealthy: none`.
const LEFT_ALONE: Duration = Duration::from_secs(15);

pub(crate) fn inspect(name: &str, format: &str) -> String {
    let out = docker_cli(&["inspect", "-f", format, name]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub(crate) fn started_at(name: &str) -> Option<DateTime<Utc>> {
    let text = inspect(name, "{{.State.StartedAt}}");
    DateTime::parse_from_rfc3339(&text).ok().map(|at| at.with_timezone(&Utc))
}

fn make_unhealthy(name: &str) -> DateTime<Utc> {
    let before = Utc::now();
    let out = docker_cli(&["exec", name, "touch", "/tmp/unhealthy"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    before
}

/// Starts an agent of host `what-RUN` on a new embedded store; returns once its API answers.
pub(crate) async fn start(run: &str, what: &str) -> (SpecsOnAgent, AgentGuard) {
    let state_dir = std::env::temp_dir().join(format!("kedge-{what}-{run}"));
    let host = format!("{what}-{run}");
    let agent = AgentGuard::spawn(&state_dir, &host, &[]);
    let specs = SpecsOnAgent::new(run, &host, &state_dir);
    specs.wait_api().await;
    (specs, agent)
}

async fn ready(fx: &SpecsOnAgent, name: &str) {
    eventually(&format!("{name} to be Ready"), Duration::from_secs(60), || async {
        (fx.condition(name, "Ready")?.0 == "True").then_some(())
    })
    .await;
}

/// A restart empties the tmpfs, so one restart helps.
async fn restarted_within_two_intervals(fx: &SpecsOnAgent) {
    let name = format!("helped-{}", fx.run);
    fx.apply(&name, "  image: kedge-test/health:latest\n  mounts:\n    - {type: tmpfs, target: /tmp}\n");
    ready(fx, &name).await;
    let id = inspect(&name, "{{.Id}}");
    let first_start = started_at(&name).expect("started");
    let touched = make_unhealthy(&name);
    let restarted =
        eventually("the unhealthy container to be restarted", Duration::from_secs(30), || async {
            started_at(&name).filter(|at| *at > first_start)
        })
        .await;
    let took = (restarted - touched).to_std().unwrap_or_default();
    eprintln!(
        "measured: restarted {took:?} after /tmp/unhealthy was made (health interval {HEALTH_INTERVAL:?})"
    );
    // Two intervals to notice (the check after the file, with retries 1), plus the stop and start.
    assert!(
        took <= HEALTH_INTERVAL * 2 + Duration::from_secs(1),
        "restarted {took:?} after it turned unhealthy"
    );
    assert_eq!(inspect(&name, "{{.Id}}"), id, "the same container, restarted");
    ready(fx, &name).await;
    let events = String::from_utf8_lossy(&fx.kedge(&["events", "--for", &name, "-n", &fx.namespace]).stdout)
        .into_owned();
    assert!(events.contains("Restarted") && events.contains("unhealthy"), "{events}");
}

/// A restart keeps the file: restarted up to the flap limit, then left alone, Degraded.
async fn flapping_ends_degraded(fx: &SpecsOnAgent) {
    let name = format!("flaps-{}", fx.run);
    fx.apply(&name, "  image: kedge-test/health:latest\n");
    ready(fx, &name).await;
    let id = inspect(&name, "{{.Id}}");
    make_unhealthy(&name);
    let message = eventually("Degraded=True/UnhealthyFlapping", Duration::from_secs(120), || async {
        let (status, reason, message) = fx.condition(&name, "Degraded")?;
        (status == "True" && reason == "UnhealthyFlapping").then_some(message)
    })
    .await;
    eprintln!("measured: gave up: {message}");
    assert!(message.contains("5 remediations within 5m"), "{message}");
    let object = fx.get(&name);
    assert_eq!(object["status"]["remediation"]["at"].as_array().map(Vec::len), Some(5), "{object}");
    assert!(object["status"]["remediation"]["gaveUpAt"].is_string(), "{object}");
    assert_eq!(inspect(&name, "{{.Id}}"), id, "restarts, never a new container");
    let last_start = started_at(&name);
    tokio::time::sleep(LEFT_ALONE).await; // the window itself is what is measured
    assert_eq!(started_at(&name), last_start, "left alone after the flap limit");
    assert_eq!(inspect(&name, "{{.State.Health.Status}}"), "unhealthy");
    let (status, reason, _) = fx.condition(&name, "Degraded").expect("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "UnhealthyFlapping"));
}

/// `onUnhealthy: recreate`: a restart keeps the file, so the second remediation is a new container
/// (without it), healthy again.
async fn recreate_when_a_restart_does_not_help(fx: &SpecsOnAgent) {
    let name = format!("recreated-{}", fx.run);
    fx.apply(&name, "  image: kedge-test/health:latest\n  onUnhealthy: recreate\n");
    ready(fx, &name).await;
    let id = inspect(&name, "{{.Id}}");
    make_unhealthy(&name);
    eventually("a new, healthy container", Duration::from_secs(60), || async {
        let new = inspect(&name, "{{.Id}}");
        (!new.is_empty() && new != id && inspect(&name, "{{.State.Health.Status}}") == "healthy")
            .then_some(())
    })
    .await;
    let events = String::from_utf8_lossy(&fx.kedge(&["events", "--for", &name, "-n", &fx.namespace]).stdout)
        .into_owned();
    assert!(events.contains("Restarted") && events.contains("a restart did not help"), "{events}");
    ready(fx, &name).await;
}

/// `onUnhealthy: none`: reported, never touched.
async fn none_is_never_touched(fx: &SpecsOnAgent) {
    let name = format!("none-{}", fx.run);
    fx.apply(&name, "  image: kedge-test/health:latest\n  onUnhealthy: none\n");
    ready(fx, &name).await;
    let first_start = started_at(&name);
    make_unhealthy(&name);
    eventually("Ready=False/Unhealthy", Duration::from_secs(30), || async {
        let (status, reason, _) = fx.condition(&name, "Ready")?;
        (status == "False" && reason == "Unhealthy").then_some(())
    })
    .await;
    tokio::time::sleep(LEFT_ALONE).await; // the window itself is what is measured
    assert_eq!(started_at(&name), first_start, "never restarted");
    assert_eq!(fx.condition(&name, "Degraded").map(|c| c.0), Some("False".to_owned()));
    assert!(fx.get(&name)["status"]["remediation"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unhealthy_containers_are_restarted_or_recreated_flapping_ones_left_degraded_and_none_left_alone() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let (fx, _agent) = start(&run, "unhealthy").await;
    tokio::join!(
        restarted_within_two_intervals(&fx),
        flapping_ends_degraded(&fx),
        recreate_when_a_restart_does_not_help(&fx),
        none_is_never_touched(&fx)
    );
}
