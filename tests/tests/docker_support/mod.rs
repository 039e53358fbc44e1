//! Shared fixtures of the Docker driver and executor tests: a client, unique names, labeled
//! networks and volumes, and configs that carry the ownership and test labels.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use kedge_controller::docker::labels;
use kedge_controller::docker::{ContainerConfig, DockerClient, ObservedContainer};
use kedge_controller::executor::{Executor, RecreateOrder, RecreateStrategy};
use kedge_tests::{run_id, EngineCleanup, TestEnv, TEST_LABEL};

pub const APP_V1: &str = "kedge-test/app:v1";
pub const APP_V2: &str = "kedge-test/app:v2";
pub const WEB: &str = "kedge-test/web:latest";
pub const FAIL: &str = "kedge-test/fail:latest";

/// One test's world: its run id, its cleanup guard, a client and an executor.
pub struct Fixture {
    pub run: String,
    pub docker: DockerClient,
    pub executor: Executor,
    /// Dropped last: removes everything labeled with the run id, also when the test panics.
    pub cleanup: EngineCleanup,
}

impl Fixture {
    pub async fn new() -> Fixture {
        // Fails loudly (with the command to run) when the test environment is not set up.
        let _ = TestEnv::get();
        let run = run_id();
        let cleanup = EngineCleanup::new(&run);
        let docker = DockerClient::connect().await.expect("connect to the test engine");
        assert_eq!(docker.api_version().split('.').next(), Some("1"), "negotiated an API version");
        let executor = Executor::new(docker.clone());
        Fixture { run, docker, executor, cleanup }
    }

    /// A unique container (or network, volume) name for this test.
    pub fn name(&self, what: &str) -> String {
        format!("kt-{what}-{}", self.run)
    }

    /// The test label alone (for foreign containers).
    pub fn test_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(TEST_LABEL.to_string(), self.run.clone())])
    }

    /// A config kedge owns (see [`managed_config`]).
    pub fn managed(&self, what: &str, image: &str) -> ContainerConfig {
        managed_config(&self.run, what, image)
    }

    /// Creates a labeled bridge network with a random /24 (for static addresses); returns (name, prefix).
    pub async fn network(&self, what: &str) -> (String, String) {
        let name = self.name(what);
        for _ in 0..20 {
            let bytes = uuid::Uuid::new_v4();
            let bytes = bytes.as_bytes();
            let prefix = format!("10.{}.{}", 100 + bytes[0] % 100, bytes[1]);
            let subnet = format!("{prefix}.0/24");
            match self.docker.ensure_network(&name, Some(&subnet), &self.test_labels()).await {
                Ok(_) => return (name, prefix),
                // Another parallel test took that subnet: try another.
                Err(e) if e.to_string().contains("overlap") => continue,
                Err(e) => panic!("create network {name}: {e}"),
            }
        }
        panic!("no free subnet for {name}");
    }

    /// Creates a named volume labeled for cleanup; returns its name.
    pub fn volume(&self, what: &str) -> String {
        let name = self.name(what);
        let label = format!("{TEST_LABEL}={}", self.run);
        let out = kedge_tests::docker_cli(&["volume", "create", "--label", &label, &name]);
        assert!(out.status.success(), "volume create: {}", String::from_utf8_lossy(&out.stderr));
        name
    }

    pub async fn inspect(&self, name: &str) -> ObservedContainer {
        self.docker
            .inspect_container(name)
            .await
            .expect("inspect")
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    /// Every container of this test whose name starts with `prefix`.
    pub async fn containers_named(&self, prefix: &str) -> Vec<kedge_controller::docker::ContainerSummary> {
        let filter = kedge_controller::docker::ContainerFilter {
            labels: vec![format!("{TEST_LABEL}={}", self.run)],
            name: None,
        };
        let mut all = self.docker.list_containers(&filter).await.expect("list");
        all.retain(|c| c.name.starts_with(prefix));
        all
    }
}

/// A config kedge owns: ownership labels, the test label, a 1 s stop grace (busybox `sleep`
/// as PID 1 ignores SIGTERM, so every stop waits the whole grace period).
pub fn managed_config(run: &str, what: &str, image: &str) -> ContainerConfig {
    let name = format!("kt-{what}-{run}");
    let mut labels = labels::ownership(&format!("test/{name}"), 1, "hash-1");
    labels.insert(TEST_LABEL.to_string(), run.to_string());
    ContainerConfig {
        name,
        image: image.to_string(),
        labels,
        stop_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    }
}

/// A recreate strategy with short waits, for tests.
pub fn quick_strategy() -> RecreateStrategy {
    RecreateStrategy {
        pull: false,
        health_timeout: Duration::from_secs(20),
        running_grace: Duration::from_secs(1),
        min_ready_healthy: Duration::ZERO,
        stop_timeout: Some(Duration::from_secs(1)),
        remove_old_image: false,
        order: RecreateOrder::StopFirst,
    }
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Runs `sh -c script` in the container and returns its stdout, asserting exit code 0.
pub async fn sh(docker: &DockerClient, container: &str, script: &str) -> String {
    let spec = kedge_controller::docker::ExecSpec {
        cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    let exec_id = docker.exec_create(container, &spec).await.expect("exec create");
    let output = docker.exec_start(&exec_id).await.expect("exec start");
    // The output closes when the script's last writer does, which can be a moment before the engine
    // marks the exec finished: read its exit code again until it has one.
    let exit_code = kedge_tests::eventually("the exec to finish", Duration::from_secs(3), || async {
        docker.exec_exit_code(&exec_id).await.expect("exec inspect")
    })
    .await;
    assert_eq!(exit_code, 0, "`{script}` in {container}: {output}");
    output
}

/// The value of `KEY` in a `KEY=value` list.
pub fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter().find_map(|e| e.strip_prefix(key)?.strip_prefix('='))
}
