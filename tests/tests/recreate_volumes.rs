//! Nothing lost across a recreate (issue #15): a `VOLUME`'s data, a spec's anonymous mount, the
//! user's options and the new image's defaults, over the real-shaped images of scripts/test-images,
//! on every recreate path: `kedge check --autoupdate`, `kedge recreate`, the agent's recreate on a
//! spec change, and the rollback of a failed update. What is checked is what a user would check by
//! hand: the file is still there, no volume is left dangling, nothing under a temporary name.

use crate::updater_support;

use std::collections::BTreeSet;
use std::time::Duration;

use kedge_controller::store::objects;
use kedge_tests::{eventually, test_spec, wait_ready, InProcessAgent, TestScope};
use serde_json::json;
use updater_support::*;

/// The volume names mounted in `container`, by target (`target=name`, sorted).
fn volumes_of(container: &str) -> BTreeSet<String> {
    inspect("{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Destination}}={{.Name}} {{end}}{{end}}", container)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Removes the volumes it was given when dropped: declared before the test's container cleanup, it
/// runs after it. Needed because a carried volume is mounted by name, which `docker rm -v` keeps.
#[derive(Default)]
pub(crate) struct VolumeCleanup(std::sync::Mutex<BTreeSet<String>>);

impl VolumeCleanup {
    /// Remembers the volumes of `volumes_of`'s answer; returns it.
    pub(crate) fn keep(&self, volumes: BTreeSet<String>) -> BTreeSet<String> {
        let mut names = self.0.lock().unwrap_or_else(|p| p.into_inner());
        names.extend(
            volumes.iter().map(|v| v.split_once('=').map_or(v.as_str(), |(_, name)| name).to_owned()),
        );
        volumes
    }
}

impl Drop for VolumeCleanup {
    fn drop(&mut self) {
        for name in self.0.get_mut().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = docker_cli(&["volume", "rm", "-f", name]);
        }
    }
}

/// The names of the dangling volumes (mounted by no container) on the engine.
fn dangling() -> BTreeSet<String> {
    stdout(&docker_ok(&["volume", "ls", "-q", "--filter", "dangling=true"]))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts that none of `volumes` (`target=name`) dangles.
fn assert_none_dangling(volumes: &BTreeSet<String>) {
    let dangling = dangling();
    for volume in volumes {
        let name = volume.split_once('=').map_or(volume.as_str(), |(_, name)| name);
        assert!(!dangling.contains(name), "volume {volume} was orphaned by the recreate");
    }
}

/// Asserts that no container of this run is left under a recreate's temporary name.
fn assert_no_temporary_names(t: &Updater) {
    let label = format!("label={}", t.label());
    let listed = docker_ok(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]);
    let names = stdout(&listed);
    let leftovers: Vec<&str> =
        names.lines().filter(|name| name.contains("-kedge-new-") || name.contains("-kedge-old-")).collect();
    assert!(leftovers.is_empty(), "left under a temporary name: {leftovers:?}");
}

/// Builds `tag` from `dockerfile` (labelled for cleanup) and returns its image ID.
fn build(t: &Updater, tag: &str, dockerfile: &str) -> String {
    let context = t.dir.path().join(format!("build-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&context).expect("build dir");
    std::fs::write(context.join("Dockerfile"), dockerfile).expect("Dockerfile");
    let label = t.label();
    let out = docker_ok(&["build", "-q", "--label", &label, "-t", tag, path_str(&context)]);
    stdout(&out).trim().to_string()
}

fn exec(container: &str, script: &str) -> String {
    stdout(&docker_ok(&["exec", container, "sh", "-c", script]))
}

#[test]
fn check_autoupdate_recreate_and_a_failed_update_keep_the_image_volume_data() {
    let cleanup_volumes = VolumeCleanup::default();
    let t = Updater::new();
    let repository = format!("kedge-test/db-{}", t.run);
    build(&t, &repository, "FROM kedge-test/volume:latest\nLABEL app.version=1\n");
    let db = t.name("db");
    let label = t.label();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &db,
        "--label",
        &label,
        "-e",
        "POSTGRES_PASSWORD=secret",
        &repository,
    ]);
    exec(&db, "echo precious >/data/keep.txt");
    let volumes = cleanup_volumes.keep(volumes_of(&db));
    assert_eq!(volumes.len(), 1, "one anonymous volume at /data: {volumes:?}");
    let dangling_before = dangling().len();

    // An update of the tag: check --autoupdate recreates on it, the volume goes along.
    let v2 = build(&t, &repository, "FROM kedge-test/volume:latest\nLABEL app.version=2\n");
    let old_id = inspect("{{.Id}}", &db);
    let updated = t.kedge(&["check", "--autoupdate", &db]);
    assert_eq!(code(&updated), 0, "{}", stderr(&updated));
    assert_ne!(inspect("{{.Id}}", &db), old_id, "recreated");
    assert_eq!(inspect("{{.Image}}", &db), v2);
    assert_eq!(exec(&db, "cat /data/keep.txt"), "precious\n");
    assert_eq!(exec(&db, "wc -l </data/boots").trim(), "2", "the same volume saw both starts");
    assert_eq!(volumes_of(&db), volumes, "the same volume at the same target");
    assert!(inspect("{{json .Config.Env}}", &db).contains("POSTGRES_PASSWORD=secret"));
    assert_none_dangling(&volumes);

    // kedge recreate: the carried volume is carried again.
    let recreated = t.kedge(&["recreate", &db]);
    assert_eq!(code(&recreated), 0, "{}", stderr(&recreated));
    assert_eq!(exec(&db, "cat /data/keep.txt"), "precious\n");
    assert_eq!(volumes_of(&db), volumes);

    // A broken update: rolled back to the same container, its data still there.
    build(&t, &repository, "FROM kedge-test/volume:latest\nCMD [\"/bin/sh\", \"-c\", \"exit 3\"]\n");
    let serving = inspect("{{.Id}}", &db);
    let failed = t.kedge(&["check", "--autoupdate", &db]);
    assert_ne!(code(&failed), 0, "a broken update is not a success: {}", stderr(&failed));
    assert!(stderr(&failed).contains("rolled back"), "{}", stderr(&failed));
    assert_eq!(inspect("{{.Id}}", &db), serving, "the old container is back");
    assert_eq!(inspect("{{.State.Running}}", &db), "true");
    assert_eq!(exec(&db, "cat /data/keep.txt"), "precious\n");
    assert_eq!(volumes_of(&db), volumes);
    assert_none_dangling(&volumes);
    let dangling_after = dangling().len();
    eprintln!("dangling volumes on the engine: {dangling_before} before, {dangling_after} after");
    assert_no_temporary_names(&t);
}

#[test]
fn autoupdate_keeps_user_options_and_takes_the_new_image_defaults() {
    let cleanup_volumes = VolumeCleanup::default();
    let t = Updater::new();
    let repository = format!("kedge-test/svc-{}", t.run);
    build(&t, &repository, "FROM kedge-test/service:latest\n");
    let svc = t.name("svc");
    let label = t.label();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &svc,
        "--label",
        &label,
        "--label",
        "team=payments",
        "-e",
        "API_KEY=abc",
        "-p",
        "127.0.0.1::8080",
        "-v",
        "/cache",
        &repository,
    ]);
    eventually_ok(&svc, "wget -qO- http://127.0.0.1:8080/");
    assert_eq!(exec(&svc, "id -u").trim(), "1000");
    // The anonymous volume is root's, as Docker makes it; the user's data is written by root.
    docker_ok(&["exec", "-u", "0", &svc, "sh", "-c", "echo warm >/cache/entry"]);
    let volumes = cleanup_volumes.keep(volumes_of(&svc));

    // The new image changes every default a container inherits: they must not stay frozen.
    let v2 = build(
        &t,
        &repository,
        "FROM kedge-test/service:latest\nUSER root\nRUN cp -a /srv/app /srv/app2\nUSER 1001\n\
         WORKDIR /srv/app2\nENV SERVICE_MODE=two\nENTRYPOINT [\"/srv/app2/entrypoint\"]\n\
         CMD [\"--port\", \"8080\", \"--two\"]\nLABEL org.opencontainers.image.version=2.0\n",
    );
    let updated = t.kedge(&["check", "--autoupdate", &svc]);
    assert_eq!(code(&updated), 0, "{}", stderr(&updated));
    assert_eq!(inspect("{{.Image}}", &svc), v2);
    let env = inspect("{{json .Config.Env}}", &svc);
    assert!(env.contains("API_KEY=abc"), "the user's env is kept: {env}");
    assert!(env.contains("SERVICE_MODE=two") && !env.contains("SERVICE_MODE=default"), "{env}");
    assert_eq!(inspect("{{json .Config.Cmd}}", &svc), r#"["--port","8080","--two"]"#);
    assert_eq!(inspect("{{json .Config.Entrypoint}}", &svc), r#"["/srv/app2/entrypoint"]"#);
    assert_eq!(inspect("{{.Config.WorkingDir}}", &svc), "/srv/app2");
    assert_eq!(inspect("{{.Config.User}}", &svc), "1001");
    assert_eq!(exec(&svc, "id -u; pwd"), "1001\n/srv/app2\n");
    assert_eq!(
        inspect("{{json .HostConfig.PortBindings}}", &svc),
        r#"{"8080/tcp":[{"HostIp":"127.0.0.1","HostPort":""}]}"#
    );
    assert_eq!(inspect("{{index .Config.Labels \"team\"}}", &svc), "payments");
    assert_eq!(inspect("{{index .Config.Labels \"org.opencontainers.image.version\"}}", &svc), "2.0");
    eventually_ok(&svc, "wget -qO- http://127.0.0.1:8080/");
    // `docker run -v /cache` is an anonymous volume too: carried.
    assert_eq!(exec(&svc, "cat /cache/entry"), "warm\n");
    assert_eq!(volumes_of(&svc), volumes);
    assert_none_dangling(&volumes);
    assert_no_temporary_names(&t);
}

/// Runs `script` in `container` until it succeeds (a service that is still starting), or panics.
fn eventually_ok(container: &str, script: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let out = docker_cli(&["exec", container, "sh", "-c", script]);
        if out.status.success() {
            return stdout(&out);
        }
        assert!(std::time::Instant::now() < deadline, "{script} in {container}: {}", stderr(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_recreates_and_rollbacks_keep_spec_and_image_anonymous_volumes() {
    let cleanup_volumes = VolumeCleanup::default();
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let host = format!("host-{id}");
    let agent = InProcessAgent::embedded(&host).await;
    let name = format!("vol-{id}");
    let spec = |env: &str, image: &str| {
        test_spec(
            &name,
            &namespace,
            &host,
            &cleanup,
            json!({"image": image, "env": {"STAGE": env}, "mounts": ["/cache"], "restartPolicy": "always"}),
        )
    };
    objects::apply_container(agent.store.as_ref(), &spec("one", "kedge-test/volume:latest"), None)
        .await
        .expect("apply");
    wait_ready(agent.store.as_ref(), &namespace, &name, Duration::from_secs(60)).await;
    exec(&name, "echo image-volume >/data/keep.txt; echo spec-volume >/cache/keep.txt");
    let volumes = cleanup_volumes.keep(volumes_of(&name));
    assert_eq!(volumes.len(), 2, "/data from the image, /cache from the spec: {volumes:?}");
    let first_id = inspect("{{.Id}}", &name);

    // A spec change: the agent recreates, both volumes go along, and the result is not drift.
    objects::apply_container(agent.store.as_ref(), &spec("two", "kedge-test/volume:latest"), None)
        .await
        .expect("apply");
    wait_ready(agent.store.as_ref(), &namespace, &name, Duration::from_secs(60)).await;
    let second_id = inspect("{{.Id}}", &name);
    assert_ne!(second_id, first_id, "recreated for the new env");
    assert_eq!(exec(&name, "cat /data/keep.txt /cache/keep.txt"), "image-volume\nspec-volume\n");
    assert_eq!(volumes_of(&name), volumes);
    assert_none_dangling(&volumes);
    let recreates = agent.stats.snapshot().actions.get("Recreate").copied().unwrap_or(0);
    // Settled: the carried mounts read back as the spec, so there is no second recreate.
    let stats = agent.stats.clone();
    let settle = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            inspect("{{.Id}}", &name),
            second_id,
            "no second recreate: the carried volumes are no drift"
        );
    }
    assert_eq!(stats.snapshot().actions.get("Recreate").copied().unwrap_or(0), recreates);

    // A broken update: rolled back onto the same container and its volumes.
    objects::apply_container(agent.store.as_ref(), &spec("three", "kedge-test/fail:latest"), None)
        .await
        .expect("apply");
    let store = agent.store.clone();
    eventually("the failed update to be rolled back", Duration::from_secs(90), || {
        let store = store.clone();
        let (namespace, name) = (namespace.clone(), name.clone());
        async move {
            let synced = kedge_tests::condition(store.as_ref(), &namespace, &name, "Synced").await?;
            let rolled_back = synced.reason == "RolledBack" || synced.message.contains("rolled back");
            (synced.status == kedge_crds::ConditionStatus::False && rolled_back).then_some(())
        }
    })
    .await;
    // Until the agent stops retrying a failed generation (issue #15's restart semantics), it
    // stops the old container at each retry: stop the agent, which finishes a retry in flight.
    agent.stop().await.expect("the agent stops cleanly");
    assert_eq!(
        inspect("{{.Id}} {{.State.Running}}", &name),
        format!("{second_id} true"),
        "the old container is back"
    );
    assert_eq!(exec(&name, "cat /data/keep.txt /cache/keep.txt"), "image-volume\nspec-volume\n");
    assert_eq!(volumes_of(&name), volumes);
    assert_none_dangling(&volumes);
    let label = format!("label={}={}", kedge_tests::TEST_LABEL, cleanup.run_id);
    let listed = stdout(&docker_ok(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"]));
    assert_eq!(listed.trim(), name, "nothing left under a temporary name");
}

#[test]
fn an_update_that_turns_unhealthy_rolls_back_to_the_old_container_stopped_gracefully() {
    let cleanup_volumes = VolumeCleanup::default();
    let t = Updater::new();
    let repository = format!("kedge-test/hc-{}", t.run);
    build(&t, &repository, "FROM kedge-test/health:latest\nLABEL app.version=1\n");
    let app = t.name("hc");
    let label = t.label();
    docker_ok(&["run", "-d", "--name", &app, "--label", &label, "-v", "/state", &repository]);
    let healthy = || inspect("{{.State.Health.Status}}", &app) == "healthy";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !healthy() {
        assert!(std::time::Instant::now() < deadline, "the container never turned healthy");
        std::thread::sleep(Duration::from_millis(200));
    }
    exec(&app, "echo kept >/state/file");
    let volumes = cleanup_volumes.keep(volumes_of(&app));
    let old_id = inspect("{{.Id}}", &app);

    // The new image starts, but its healthcheck fails: not a success, the old container is back.
    build(&t, &repository, "FROM kedge-test/health:latest\nRUN touch /tmp/unhealthy\n");
    let started = std::time::Instant::now();
    let failed = t.kedge(&["check", "--autoupdate", &app]);
    eprintln!("failed autoupdate took {:?}", started.elapsed());
    assert_eq!(code(&failed), 5, "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("unhealthy") || stderr(&failed).contains("Unhealthy"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(inspect("{{.Id}} {{.State.Running}}", &app), format!("{old_id} true"));
    // Its PID 1 got SIGTERM and exited on its own: stopped gracefully, not killed.
    let logs = docker_ok(&["logs", &app]);
    assert!(stdout(&logs).contains("got SIGTERM, exiting"), "{}", stdout(&logs));
    assert_eq!(exec(&app, "cat /state/file"), "kept\n");
    assert_eq!(volumes_of(&app), volumes);
    assert_none_dangling(&volumes);
    assert_no_temporary_names(&t);
}

#[test]
fn kedge_recreate_finds_a_container_a_crash_left_aside_and_keeps_its_volume() {
    let cleanup_volumes = VolumeCleanup::default();
    let t = Updater::new();
    let db = t.name("aside");
    let label = t.label();
    docker_ok(&["run", "-d", "--name", &db, "--label", &label, "kedge-test/volume:latest"]);
    exec(&db, "echo precious >/data/keep.txt");
    let volumes = cleanup_volumes.keep(volumes_of(&db));
    // What a recreate killed after step 3 leaves: the old container under its aside name only.
    docker_ok(&["rename", &db, &format!("{db}-kedge-old-ab12cd34")]);
    let recreated = t.kedge(&["recreate", &db]);
    assert_eq!(code(&recreated), 0, "{}", stderr(&recreated));
    assert_eq!(exec(&db, "cat /data/keep.txt"), "precious\n");
    assert_eq!(volumes_of(&db), volumes);
    assert_none_dangling(&volumes);
    assert_no_temporary_names(&t);
}
