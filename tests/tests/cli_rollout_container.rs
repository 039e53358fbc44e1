//! `kedge rollout status|history|undo container NAME` against a real agent and engine: the agent
//! records each image a container ran, `undo` puts the previous one back (or generation N's), the
//! agent recreates the container on it, and `status` waits for Ready at the new generation and fails
//! at once on a rolled-back update. (A concurrent change during `undo` is exit 4: a unit test in
//! `cli/src/rollout.rs`, against a real API server, makes the race deterministic.)

use crate::api_support::{stderr, stdout, AgentGuard, SpecsOnAgent};

use std::time::Duration;

use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_previous_image_comes_back_with_rollout_undo() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let state_dir = std::env::temp_dir().join(format!("kedge-rollout-{run}"));
    let host = format!("rollout-{run}");
    let _agent = AgentGuard::spawn(&state_dir, &host, &[]);
    let specs = SpecsOnAgent::new(&run, &host, &state_dir);
    specs.wait_api().await;
    let name = format!("roll-{run}");
    let ns = specs.namespace.clone();
    let rollout = |args: &[&str]| {
        let mut all = vec!["rollout"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-n", &ns]);
        specs.kedge(&all)
    };
    let status_ok = |why: &str| {
        let out = rollout(&["status", "container", &name, "--timeout", "90s"]);
        assert!(out.status.success(), "{why}: {}{}", stdout(&out), stderr(&out));
    };
    let running_image = || {
        let out = docker_cli(&["inspect", "-f", "{{.Config.Image}}", &name]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let head = || specs.get(&name)["status"]["imageHistory"][0].clone();

    specs.apply(&name, "  image: kedge-test/app:v1\n");
    status_ok("v1 rolls out");
    specs.apply(&name, "  image: kedge-test/app:v2\n");
    status_ok("v2 rolls out");
    assert_eq!(running_image(), "kedge-test/app:v2");
    let recorded = eventually("v2 to be recorded", Duration::from_secs(30), || async {
        let head = head();
        (head["generation"] == 2).then_some(head)
    })
    .await;
    assert_eq!(recorded["image"], "kedge-test/app:v2", "{recorded}");
    assert!(recorded["imageId"].as_str().is_some_and(|id| id.starts_with("sha256:")), "{recorded}");

    let history = rollout(&["history", "container", &name]);
    assert!(history.status.success(), "{}", stderr(&history));
    let text = stdout(&history);
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|line| line.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(&rows[0][..2], ["2", "kedge-test/app:v2"], "{text}");
    assert!(text.lines().nth(1).is_some_and(|line| line.contains("current")), "{text}");
    assert_eq!(&rows[1][..2], ["1", "kedge-test/app:v1"], "{text}");
    assert!(text.lines().nth(2).is_some_and(|line| line.contains("replaced")), "{text}");

    // Back to the previous image: a new generation with v1, run by a new container.
    let undo = rollout(&["undo", "container", &name]);
    assert!(undo.status.success(), "{}", stderr(&undo));
    assert!(stdout(&undo).contains("revision 1's image kedge-test/app:v1"), "{}", stdout(&undo));
    status_ok("the undo rolls out");
    assert_eq!(running_image(), "kedge-test/app:v1");
    let object = specs.get(&name);
    assert_eq!(object["metadata"]["generation"], 3, "{object}");
    assert_eq!(object["spec"]["image"], "kedge-test/app:v1", "{object}");

    // A named revision; an unknown one is exit 3.
    let undo = rollout(&["undo", "container", &name, "--to-revision", "2"]);
    assert!(undo.status.success(), "{}", stderr(&undo));
    status_ok("revision 2's image rolls out");
    assert_eq!(running_image(), "kedge-test/app:v2");
    let unknown = rollout(&["undo", "container", &name, "--to-revision", "99"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));

    // A broken image is rolled back by the agent: status fails at once (not at its timeout),
    // history shows it, and undo goes back to the image that ran last.
    specs.apply(&name, "  image: kedge-test/fail:latest\n");
    let started = std::time::Instant::now();
    let failed = rollout(&["status", "container", &name, "--timeout", "120s"]);
    assert_eq!(failed.status.code(), Some(1), "{}{}", stdout(&failed), stderr(&failed));
    assert!(started.elapsed() < Duration::from_secs(100), "failed at once, not at the timeout");
    let history = stdout(&rollout(&["history", "container", &name]));
    let first = history.lines().nth(1).unwrap_or_default();
    assert!(first.contains("kedge-test/fail:latest") && first.contains("rolled back"), "{history}");
    let undo = rollout(&["undo", "container", &name]);
    assert!(undo.status.success(), "{}", stderr(&undo));
    assert!(stdout(&undo).contains("kedge-test/app:v2"), "{}", stdout(&undo));
    status_ok("back on v2 after the broken image");
    assert_eq!(running_image(), "kedge-test/app:v2");

    let deleted = specs.kedge(&["delete", "container", &name, "-n", &ns]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
}
