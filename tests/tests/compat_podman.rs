//! Podman's Docker-compatible API service (`scripts/test-env up --podman`, KEDGE_PODMAN_HOST): what
//! works against it (listing, inspect, create, start, `kedge check`), and what kedge refuses there
//! with a message naming what Podman does differently (the agent, `kedge recreate`, `check
//! --autoupdate`). docs/compatibility.md says why.

use std::process::{Command, Output};
use std::time::Duration;

use kedge_controller::docker::{ContainerConfig, ContainerFilter, DockerClient};
use kedge_tests::{run_id, InProcessAgent, TEST_LABEL};

use crate::api_support::{kedge_bin, stderr, stdout};

/// The Podman service's address; a missing variable is a loud failure, never a skip.
fn podman_host() -> String {
    match std::env::var("KEDGE_PODMAN_HOST") {
        Ok(host) if !host.is_empty() => host,
        _ => panic!(
            "KEDGE_PODMAN_HOST is not set: run `scripts/test-env up --podman && eval \"$(scripts/test-env env)\"` \
             (scripts/test does both)"
        ),
    }
}

/// The docker CLI against Podman.
fn podman_cli(args: &[&str]) -> Output {
    Command::new("docker").args(args).env("DOCKER_HOST", podman_host()).output().expect("the docker CLI")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman_cli(args);
    assert!(out.status.success(), "docker {} on Podman: {}", args.join(" "), stderr(&out));
    stdout(&out).trim().to_owned()
}

/// `kedge ARGS` with DOCKER_HOST on Podman, isolated from the user's config.
fn kedge_on_podman(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(kedge_bin())
        .args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", podman_host())
        .env("KEDGE_CONFIG", dir.join("no-config.json"))
        .env("KEDGE_STATE_DIR", dir.join("no-state"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run kedge")
}

/// Removes the run's containers and the tags it made on Podman, also when the test fails.
struct PodmanCleanup {
    run: String,
    tags: Vec<String>,
}

impl Drop for PodmanCleanup {
    fn drop(&mut self) {
        let filter = format!("label={TEST_LABEL}={}", self.run);
        let ids = podman_cli(&["ps", "-aq", "--filter", &filter]);
        for id in stdout(&ids).split_whitespace() {
            let _ = podman_cli(&["rm", "-f", id]);
        }
        for tag in &self.tags {
            let _ = podman_cli(&["image", "rm", tag]);
        }
    }
}

#[tokio::test]
async fn the_driver_lists_inspects_creates_and_starts_containers_on_podman() {
    let run = run_id();
    let _cleanup = PodmanCleanup { run: run.clone(), tags: Vec::new() };
    let docker = DockerClient::connect_to(&podman_host()).await.expect("connect to Podman's API");
    let podman = docker.podman_version().expect("Podman is told apart from Docker by its version");
    assert!(podman.starts_with(|c: char| c.is_ascii_digit()), "{podman}");
    assert!(docker.api_version().starts_with("1."), "{}", docker.api_version());

    let name = format!("kt-podman-{run}");
    let config = ContainerConfig {
        name: name.clone(),
        image: "kedge-test/app:v1".into(),
        env: vec!["GREETING=hello".to_owned()].into(),
        labels: [(TEST_LABEL.to_owned(), run.clone())].into(),
        ..Default::default()
    };
    let id = docker.create_container(&config).await.expect("create on Podman");
    docker.start_container(&id).await.expect("start on Podman (rlimits capped by scripts/test-env)");

    let seen = docker.inspect_container(&name).await.expect("inspect").expect("the container exists");
    assert_eq!(seen.id, id);
    assert!(seen.state.running, "{:?}", seen.state);
    assert!(seen.env.contains(&"GREETING=hello".to_owned()), "{:?}", seen.env);
    // Podman answers a container's image ID bare; kedge reads it in Docker's form, the same as the
    // image's own, or every container would look like it runs another image.
    let image = docker.inspect_image("kedge-test/app:v1").await.expect("inspect image").expect("image");
    assert!(seen.image_id.starts_with("sha256:"), "{}", seen.image_id);
    assert_eq!(seen.image_id, image.id);

    let filter = ContainerFilter { labels: vec![format!("{TEST_LABEL}={run}")], name: None };
    let listed = docker.list_containers(&filter).await.expect("list");
    assert_eq!(listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
}

#[test]
fn kedge_check_answers_on_podman_and_recreate_is_refused_naming_what_podman_lacks() {
    let run = run_id();
    let tag = format!("kedge-test/podman-{run}:current");
    let _cleanup = PodmanCleanup { run: run.clone(), tags: vec![tag.clone()] };
    let dir = tempfile::tempdir().expect("tempdir");
    podman_ok(&["tag", "kedge-test/app:v1", &tag]);
    let name = format!("kt-check-{run}");
    let label = format!("{TEST_LABEL}={run}");
    podman_ok(&["run", "-d", "--name", &name, "--label", &label, &tag]);

    let current = kedge_on_podman(dir.path(), &["check", &name]);
    assert_eq!(current.status.code(), Some(0), "{}", stderr(&current));
    assert!(stderr(&current).contains("is up to date"), "{}", stderr(&current));

    // The tag moves to another image: an update is available, as on Docker.
    podman_ok(&["tag", "kedge-test/app:v2", &tag]);
    let update = kedge_on_podman(dir.path(), &["check", &name]);
    assert_eq!(update.status.code(), Some(1), "{}{}", stdout(&update), stderr(&update));

    // Recreating needs Docker's inspect: refused, with what differs named, and nothing touched.
    let before = podman_ok(&["inspect", "-f", "{{.Id}}", &name]);
    for args in [vec!["recreate", name.as_str()], vec!["check", "--autoupdate", name.as_str()]] {
        let refused = kedge_on_podman(dir.path(), &args);
        assert_eq!(refused.status.code(), Some(5), "{args:?}: {}", stderr(&refused));
        let message = stderr(&refused);
        assert!(message.contains("is Podman"), "{message}");
        assert!(message.contains("container=podman") && message.contains("docker.io/"), "{message}");
    }
    assert_eq!(podman_ok(&["inspect", "-f", "{{.Id}}", &name]), before, "the container is untouched");
    assert_eq!(podman_ok(&["inspect", "-f", "{{.State.Running}}", &name]), "true");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_refuses_to_run_on_podman_before_touching_anything() {
    let run = run_id();
    let _cleanup = PodmanCleanup { run: run.clone(), tags: Vec::new() };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = kedge_controller::store::EmbeddedStore::open(dir.path().join("kedge.db"), Default::default())
        .await
        .expect("open the embedded store");
    let agent = InProcessAgent::start_on_engine(
        std::sync::Arc::new(store),
        &format!("host-{run}"),
        None,
        Some(&podman_host()),
    )
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(30), agent.stop()).await.expect("the agent ends");
    let error = ended.expect_err("the agent refuses Podman");
    let message = kedge_controller::error_chain(&error);
    assert!(
        message.contains("is Podman") && message.contains("the agent needs Docker's inspect"),
        "{message}"
    );
}
