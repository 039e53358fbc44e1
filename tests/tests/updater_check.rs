//! `kedge check`, the container updater, on containers started by hand with `docker run`: the
//! walkthrough of docs/updater.md (local rebuild of the same tag) and the registry flow (`--pull`).

use crate::updater_support;

use std::time::Instant;

use updater_support::*;

#[test]
fn walkthrough_same_tag_rebuilt_is_an_update_and_autoupdate_keeps_name_networks_ports_and_env() {
    let t = Updater::new();
    let repository = format!("kedge-test/mws-{}", t.run);
    let image_v1 = t.build_web(&repository, "page one\n");
    let (network, _) = t.network("mws-net");
    let mws = t.name("mws");
    let label = t.label();
    // As a user would: no tag (so `latest`), a user network, a published port, an environment variable.
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &mws,
        "--label",
        &label,
        "--network",
        &network,
        "-p",
        "127.0.0.1::80",
        "-e",
        "GREETING=hello",
        &repository,
    ]);
    assert_eq!(t.page(&mws), "page one\n");

    // `-o name`: the seed's list, one name a line (the report without it is tested below).
    let listed = t.kedge(&["check", "-o", "name"]);
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    assert!(stdout(&listed).lines().any(|line| line == mws), "{mws} not in:\n{}", stdout(&listed));

    let started = Instant::now();
    let current = t.kedge(&["check", &mws]);
    let latency = started.elapsed();
    assert_eq!(code(&current), 0, "{}", stderr(&current));
    assert!(stdout(&current).is_empty(), "diagnostics go to stderr: {}", stdout(&current));
    eprintln!("kedge check latency: {latency:?}");

    let image_v2 = t.build_web(&repository, "page two\n");
    assert_ne!(image_v1, image_v2);
    let outdated = t.kedge(&["check", &mws]);
    assert_eq!(code(&outdated), 1, "{}", stderr(&outdated));
    assert!(stderr(&outdated).contains("update available"), "{}", stderr(&outdated));

    let old_id = inspect("{{.Id}}", &mws);
    let started = Instant::now();
    let updated = t.kedge(&["check", "--autoupdate", &mws]);
    eprintln!("kedge check --autoupdate: {:?}", started.elapsed());
    assert_eq!(code(&updated), 0, "{}", stderr(&updated));
    let new_id = inspect("{{.Id}}", &mws);
    assert_ne!(old_id, new_id, "the container was recreated");
    assert_eq!(inspect("{{.Image}}", &mws), image_v2);
    assert_eq!(inspect("{{.State.Running}}", &mws), "true");
    assert_eq!(t.page(&mws), "page two\n");
    assert_eq!(inspect("{{.Config.Image}}", &mws), repository, "still follows the same reference");
    let env = inspect("{{json .Config.Env}}", &mws);
    assert!(env.contains("GREETING=hello"), "{env}");
    assert_eq!(inspect("{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", &mws), network);
    assert_eq!(
        inspect("{{json .HostConfig.PortBindings}}", &mws),
        r#"{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":""}]}"#
    );
    assert_eq!(inspect("{{index .Config.Labels \"io.kedge.test\"}}", &mws), t.run);
    // The old container is gone, not left aside.
    assert!(!docker_cli(&["inspect", &old_id]).status.success(), "old container {old_id} still exists");

    let again = t.kedge(&["check", &mws]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
}

#[test]
fn with_a_registry_only_pull_sees_a_new_push_and_the_pulled_image_stays_an_update() {
    let t = Updater::new();
    let reference = format!("{}/kedge-test/mws-{}:latest", t.env.registry, t.run);
    let image_v1 = t.build_web(&reference, "page one\n");
    docker_ok(&["push", &reference]);
    let mws = t.name("mws");
    let label = t.label();
    docker_ok(&["run", "-d", "--name", &mws, "--label", &label, &reference]);

    // A new image pushed under the running tag from elsewhere: build and push it, then give the local
    // tag back to v1, so the local store knows nothing of the push.
    let image_v2 = t.build_web(&reference, "page two\n");
    assert_ne!(image_v1, image_v2);
    docker_ok(&["push", &reference]);
    docker_ok(&["tag", &image_v1, &reference]);
    docker_ok(&["image", "rm", &image_v2]);

    let local = t.kedge(&["check", &mws]);
    assert_eq!(code(&local), 0, "no pull, no update: {}", stderr(&local));

    let started = Instant::now();
    let pulled = t.kedge(&["check", "--pull", &mws]);
    eprintln!("kedge check --pull: {:?}", started.elapsed());
    assert_eq!(code(&pulled), 1, "{}", stderr(&pulled));
    assert!(stderr(&pulled).contains("pulling"), "pull progress on stderr: {}", stderr(&pulled));
    assert!(stdout(&pulled).is_empty(), "{}", stdout(&pulled));

    let later = t.kedge(&["check", &mws]);
    assert_eq!(code(&later), 1, "the pulled image is local now: {}", stderr(&later));
    assert_eq!(inspect("{{.Image}}", &mws), image_v1, "check never touches the container");
}

#[test]
fn errors_exit_above_one_on_stderr() {
    let t = Updater::new();
    let missing = t.kedge(&["check", &t.name("no-such-container")]);
    assert_eq!(code(&missing), 3, "{}", stderr(&missing));
    assert!(stderr(&missing).starts_with("error: no container"), "{}", stderr(&missing));

    let usage = t.kedge(&["check", "--pull"]);
    assert_eq!(code(&usage), 2, "{}", stderr(&usage));

    // A container whose tag was removed from the local store: nothing to compare with.
    let repository = format!("kedge-test/gone-{}", t.run);
    let image = t.build_web(&repository, "x\n");
    let gone = t.name("gone");
    let label = t.label();
    docker_ok(&["run", "-d", "--name", &gone, "--label", &label, &repository]);
    docker_ok(&["tag", &image, &format!("{repository}:keep")]);
    docker_ok(&["image", "rm", &repository]);
    let untagged = t.kedge(&["check", &gone]);
    assert_eq!(code(&untagged), 3, "{}", stderr(&untagged));
    assert!(stderr(&untagged).contains("--pull"), "the hint says what to do: {}", stderr(&untagged));

    let unreachable = kedge_with_docker_host(&t, "unix:///nonexistent/docker.sock", &["check", &gone]);
    assert_eq!(code(&unreachable), 5, "{}", stderr(&unreachable));
}

fn kedge_with_docker_host(t: &Updater, host: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(kedge_bin())
        .args(args)
        .current_dir(t.dir.path())
        .env("DOCKER_HOST", host)
        .env("NO_COLOR", "1")
        .output()
        .expect("run kedge")
}

#[test]
fn check_without_a_name_reports_and_exits_one_naming_the_outdated_container() {
    let t = Updater::new();
    let repository = format!("kedge-test/report-{}", t.run);
    t.build_web(&repository, "one\n");
    let (current, outdated) = (t.name("current"), t.name("outdated"));
    let label = t.label();
    docker_ok(&["run", "-d", "--name", &current, "--label", &label, "kedge-test/web:latest"]);
    docker_ok(&["run", "-d", "--name", &outdated, "--label", &label, &repository]);
    t.build_web(&repository, "two\n");

    let report = t.kedge(&["check"]);
    assert_eq!(code(&report), 1, "{}{}", stdout(&report), stderr(&report));
    let line = |name: &str| {
        stdout(&report)
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in:\n{}", stdout(&report)))
            .to_owned()
    };
    assert!(stdout(&report).starts_with("NAME "), "{}", stdout(&report));
    let outdated_line = line(&outdated);
    assert!(outdated_line.contains("yes (local)") && outdated_line.contains(&repository), "{outdated_line}");
    assert!(line(&current).contains("no (local)"), "{}", line(&current));

    let json = t.kedge(&["check", "-o", "json"]);
    assert_eq!(code(&json), 1, "{}", stderr(&json));
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let row = rows.as_array().unwrap().iter().find(|row| row["name"] == outdated.as_str()).cloned().unwrap();
    assert_eq!(row["localUpdate"], true, "{row}");
    assert_eq!(row["updateAvailable"], true, "{row}");
    assert!(row.get("registryUpdate").is_none(), "the registry is asked only with --registry: {row}");
}
