//! Shared by the updater_* tests: `kedge check`/`kedge recreate` run as a user would, against
//! containers, networks and images made by hand with the docker CLI, all labelled for cleanup.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::Output;

use kedge_tests::{run_id, EngineCleanup, TestEnv, TEST_LABEL};

pub(crate) use crate::api_support;

pub(crate) use api_support::{kedge_bin, stderr, stdout};
pub use kedge_tests::docker_cli;

/// One test's world: a run id, a scratch directory, and guards that remove the containers and
/// networks (first) and then the images it made, also when the test fails.
pub struct Updater {
    pub run: String,
    pub env: TestEnv,
    pub dir: tempfile::TempDir,
    _engine: EngineCleanup,
    _images: ImageCleanup,
}

impl Updater {
    pub fn new() -> Updater {
        let env = TestEnv::get();
        let run = run_id();
        Updater {
            _engine: EngineCleanup::new(&run),
            _images: ImageCleanup { run: run.clone(), tags: Default::default() },
            dir: tempfile::tempdir().expect("tempdir"),
            env,
            run,
        }
    }

    /// `io.kedge.test=<run>`.
    pub fn label(&self) -> String {
        format!("{TEST_LABEL}={}", self.run)
    }

    /// A name unique to this run.
    pub fn name(&self, what: &str) -> String {
        format!("{what}-{}", self.run)
    }

    /// Runs `kedge ARGS` isolated from the user's config; DOCKER_HOST is the test engine's.
    pub fn kedge(&self, args: &[&str]) -> Output {
        api_support::kedge_command(self.dir.path()).args(args).output().expect("run kedge")
    }

    /// Builds `tag` from kedge-test/web with `page` as its index.html, labelled for cleanup.
    pub fn build_web(&self, tag: &str, page: &str) -> String {
        let context = self.dir.path().join(format!("build-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&context).expect("build dir");
        std::fs::write(context.join("index.html"), page).expect("index.html");
        std::fs::write(
            context.join("Dockerfile"),
            "FROM kedge-test/web:latest\nCOPY index.html /www/index.html\n",
        )
        .expect("Dockerfile");
        let label = self.label();
        let out = docker_ok(&["build", "-q", "--label", &label, "-t", tag, path_str(&context)]);
        stdout(&out).trim().to_string()
    }

    /// Creates a network with its own /24 subnet; returns its name and the subnet's first three octets.
    pub fn network(&self, what: &str) -> (String, String) {
        let name = self.name(what);
        let label = self.label();
        for _ in 0..20 {
            let bytes = *uuid::Uuid::new_v4().as_bytes();
            let prefix = format!("10.{}.{}", 100 + bytes[0] % 100, bytes[1]);
            let subnet = format!("{prefix}.0/24");
            let out = docker_cli(&["network", "create", "--label", &label, "--subnet", &subnet, &name]);
            if out.status.success() {
                return (name, prefix);
            }
            // Another parallel test took that subnet: try another.
            assert!(stderr(&out).contains("overlap"), "network create {name}: {}", stderr(&out));
        }
        panic!("no free subnet for {name}");
    }

    /// Points `tag` at an existing (unlabelled) image; the tag is removed when the test ends.
    pub fn tag(&self, image: &str, tag: &str) {
        self._images.tags.lock().unwrap_or_else(|p| p.into_inner()).push(tag.to_owned());
        docker_ok(&["tag", image, tag]);
    }

    /// The page the container serves on port 80, fetched from inside it.
    pub fn page(&self, container: &str) -> String {
        stdout(&docker_ok(&["exec", container, "wget", "-qO-", "http://127.0.0.1/"]))
    }
}

/// Runs the docker CLI and asserts success.
pub fn docker_ok(args: &[&str]) -> Output {
    let out = docker_cli(args);
    assert!(out.status.success(), "docker {}: {}", args.join(" "), stderr(&out));
    out
}

/// `docker inspect -f FORMAT OBJECT`, trimmed.
pub fn inspect(format: &str, object: &str) -> String {
    stdout(&docker_ok(&["inspect", "-f", format, object])).trim().to_string()
}

/// The exit code, asserting the process was not killed by a signal.
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or_else(|| panic!("killed by a signal: {}", stderr(output)))
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Removes (forced) every image labelled with the run id when dropped, tags and all, and the tags the
/// test put on images it did not build.
struct ImageCleanup {
    run: String,
    tags: std::sync::Mutex<Vec<String>>,
}

impl Drop for ImageCleanup {
    fn drop(&mut self) {
        for tag in self.tags.get_mut().unwrap_or_else(|p| p.into_inner()).drain(..) {
            // Untags only: the image itself is shared (e.g. kedge-test/fail).
            let _ = docker_cli(&["image", "rm", &tag]);
        }
        let filter = format!("label={TEST_LABEL}={}", self.run);
        let listed = docker_cli(&["image", "ls", "-q", "--no-trunc", "--filter", &filter]);
        let mut ids: Vec<String> = stdout(&listed).lines().map(str::to_owned).collect();
        ids.sort();
        ids.dedup();
        for id in ids {
            let out = docker_cli(&["image", "rm", "-f", &id]);
            if !out.status.success() {
                eprintln!("cleanup of image {id}: {}", stderr(&out));
            }
        }
    }
}
