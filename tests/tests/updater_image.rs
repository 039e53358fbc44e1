//! kedge's own container image (scripts/build-image, FROM scratch) run with the Docker socket
//! mounted: it lists the running containers without itself and answers `check` as the host binary does.

use crate::updater_support;

use std::process::Command;

use updater_support::*;

#[test]
fn the_scratch_image_leaves_itself_out_and_answers_like_the_host_binary() {
    let t = Updater::new();
    let image = format!("kedge-test/kedge-{}:test", t.run);
    let label = t.label();
    // The binary under test (not a release build: one build per test run is enough).
    let built = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/build-image"))
        .args(["--binary", path_str(&kedge_bin()), "--tag", &image, "--label", &label])
        .output()
        .expect("scripts/build-image runs");
    assert!(built.status.success(), "build-image: {}", stderr(&built));
    assert_eq!(inspect("{{.Os}}", &image), "linux");
    assert_eq!(inspect("{{json .Config.Entrypoint}}", &image), r#"["/kedge"]"#);
    let size: u64 = inspect("{{.Size}}", &image).parse().expect("a size");
    eprintln!("image size (debug binary, stripped): {:.1} MB", size as f64 / 1e6);
    let layers = inspect("{{len .RootFS.Layers}}", &image);
    assert_eq!(layers, "1", "FROM scratch and one COPY: a single layer");

    let repository = format!("kedge-test/mws-{}", t.run);
    t.build_web(&repository, "one\n");
    let mws = t.name("mws");
    docker_ok(&["run", "-d", "--name", &mws, "--label", &label, &repository]);

    let socket = t.env.docker_host.strip_prefix("unix://").expect("the test engine listens on a unix socket");
    let mount = format!("{socket}:/var/run/docker.sock");
    let in_container = |name: &str, args: &[&str]| {
        let mut all = vec!["run", "--rm", "--name", name, "--label", &label, "-v", &mount, &image];
        all.extend_from_slice(args);
        docker_cli(&all)
    };

    let kedge_name = t.name("kedge-list");
    let listed = in_container(&kedge_name, &[]);
    assert_eq!(code(&listed), 0, "{}", stderr(&listed));
    let listed_text = stdout(&listed);
    assert!(listed_text.lines().any(|line| line == mws), "{mws} not listed: {listed_text}");
    assert!(!listed_text.lines().any(|line| line == kedge_name), "kedge listed itself: {listed_text}");

    let current = in_container(&t.name("kedge-check"), &["check", &mws]);
    assert_eq!(code(&current), 0, "{}", stderr(&current));
    assert_eq!(code(&t.kedge(&["check", &mws])), 0);

    t.build_web(&repository, "two\n");
    let outdated = in_container(&t.name("kedge-check2"), &["check", &mws]);
    assert_eq!(code(&outdated), 1, "{}", stderr(&outdated));
    assert_eq!(code(&t.kedge(&["check", &mws])), 1);

    let updated = in_container(&t.name("kedge-update"), &["check", "--autoupdate", &mws]);
    assert_eq!(code(&updated), 0, "{}", stderr(&updated));
    assert_eq!(t.page(&mws), "two\n");
    assert_eq!(code(&t.kedge(&["check", &mws])), 0);
}
