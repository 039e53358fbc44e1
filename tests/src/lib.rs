//! Shared helpers for kedge's end-to-end tests.
//!
//! Every test here runs against the real services that `scripts/test-env up` starts. Their endpoints
//! come from the environment that `scripts/test-env env` prints; a missing variable is a loud failure,
//! never a silent skip. Everything a test creates in the engine carries the label
//! [`TEST_LABEL`]`=<run id>` and is removed by an [`EngineCleanup`] guard when the test ends,
//! also when it panics, so tests can run in parallel and leave nothing behind.

pub mod engine;
pub mod etcd;
pub mod netns;
pub mod pki;
pub mod registry;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;

/// The label every engine object a test creates carries, valued with the test's run id.
pub const TEST_LABEL: &str = "io.kedge.test";

/// The endpoints of the test environment, read from the variables `scripts/test-env env` exports.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub docker_host: String,
    pub etcd_endpoints: Vec<String>,
    pub registry: String,
    pub state_dir: String,
}

impl TestEnv {
    /// Reads the environment; panics with the command to run when it is not set up.
    pub fn get() -> TestEnv {
        TestEnv {
            docker_host: required("DOCKER_HOST"),
            etcd_endpoints: required("KEDGE_ETCD_ENDPOINTS").split(',').map(str::to_owned).collect(),
            registry: required("KEDGE_REGISTRY"),
            state_dir: required("KEDGE_TEST_ENV_DIR"),
        }
    }
}

fn required(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: end-to-end tests need the real services. \
             Run `scripts/test-env up && eval \"$(scripts/test-env env)\"` (scripts/test does both)."
        ),
    }
}

/// A unique id for one test run, short enough to put into container names.
pub fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// What an engine test starts with: a run id, the cleanup of everything labelled with it (on drop,
/// also when the test fails) and a namespace of its own. Destructure it:
/// `let TestScope { id, cleanup, namespace } = TestScope::new();`.
pub struct TestScope {
    pub id: String,
    pub cleanup: EngineCleanup,
    pub namespace: String,
}

impl TestScope {
    #[allow(clippy::new_without_default)] // Each call is a new run: not a default value.
    pub fn new() -> TestScope {
        let id = run_id();
        TestScope { cleanup: EngineCleanup::new(&id), namespace: format!("t{id}"), id }
    }
}

/// A store client on the etcd at `endpoints` (the test environment's: `TestEnv::get().etcd_endpoints`).
pub async fn etcd_store(endpoints: Vec<String>) -> kedge_controller::store::SharedStore {
    let store =
        kedge_controller::store::EtcdStore::connect(kedge_controller::store::EtcdOptions::new(endpoints));
    std::sync::Arc::new(store.await.expect("connect to the test etcd"))
}

/// Waits until `host` is ready as the scheduler sees it: its host record (with its labels) and its
/// liveness lease are both in the store. An agent writes the lease first and the record after asking
/// its engine for facts, so the lease alone is not enough for a test that judges spreading.
pub async fn wait_host_ready(
    store: &dyn kedge_controller::store::Store,
    host: &str,
    within: std::time::Duration,
) {
    let record = kedge_controller::store::keys::host_key(host).expect("a valid host name");
    let alive = kedge_controller::store::keys::host_lease_key(host).expect("a valid host name");
    eventually(&format!("host {host} ready (record and lease)"), within, || async {
        let record = store.get(&record).await.ok()??;
        let alive = store.get(&alive).await.ok()??;
        Some((record, alive))
    })
    .await;
}

/// A Docker client for assertions, connected to the test engine with the API version negotiated.
pub async fn docker() -> Docker {
    let _ = TestEnv::get();
    let client = Docker::connect_with_defaults().expect("DOCKER_HOST names a usable engine");
    client.negotiate_version().await.expect("the test engine answers the version negotiation")
}

/// Removes every container, network and volume labelled with this run's id when dropped.
///
/// Drop runs while a failing test unwinds, so cleanup happens on failure too. It runs the removal
/// on a fresh thread with its own runtime because it may be dropped inside an async test.
pub struct EngineCleanup {
    pub run_id: String,
}

impl EngineCleanup {
    pub fn new(run_id: &str) -> EngineCleanup {
        EngineCleanup { run_id: run_id.to_owned() }
    }

    /// The label pair to put on everything this test creates.
    pub fn label(&self) -> (String, String) {
        (TEST_LABEL.to_owned(), self.run_id.clone())
    }

    /// The labels map to pass to create calls.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([self.label()])
    }
}

impl Drop for EngineCleanup {
    fn drop(&mut self) {
        let run_id = self.run_id.clone();
        let result = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(remove_labelled(&run_id))
        })
        .join();
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("cleanup of test run {}: {error:#}", self.run_id),
            Err(_) => eprintln!("cleanup of test run {} panicked", self.run_id),
        }
    }
}

/// Removes containers (forced, with anonymous volumes), then networks and volumes carrying
/// `io.kedge.test=<run_id>`.
pub async fn remove_labelled(run_id: &str) -> anyhow::Result<()> {
    let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
    let filter = format!("{TEST_LABEL}={run_id}");
    let filters = HashMap::from([("label".to_owned(), vec![filter.clone()])]);
    let containers = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
        .await?;
    for container in containers {
        if let Some(id) = container.id {
            let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
            docker.remove_container(&id, Some(options)).await.ok();
        }
    }
    let networks = docker
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await?;
    for network in networks {
        if let Some(id) = network.id {
            docker.remove_network(&id).await.ok();
        }
    }
    let volumes = docker
        .list_volumes(Some(
            bollard::query_parameters::ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await?;
    for volume in volumes.volumes.unwrap_or_default() {
        docker.remove_volume(&volume.name, None::<bollard::query_parameters::RemoveVolumeOptions>).await.ok();
    }
    Ok(())
}

/// Polls `probe` until it returns `Some`, or panics naming `what` once `timeout` has passed.
///
/// This is how tests wait: never a bare sleep as synchronisation.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Runs the `docker` CLI against the test engine (tests make drift by hand, as a user would).
pub fn docker_cli(args: &[&str]) -> std::process::Output {
    let _ = TestEnv::get();
    std::process::Command::new("docker").args(args).output().expect("the docker CLI is installed")
}

/// The `kedge` binary: `$KEDGE_BIN`, else `kedge` next to the running test's `deps` directory. It is
/// built by `cargo build -p kedge-cli` (scripts/test does it); a missing binary fails loudly.
pub fn kedge_bin() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("KEDGE_BIN") {
        return std::path::PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test's path");
    let profile_dir = exe.parent().and_then(std::path::Path::parent).expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("kedge");
    assert!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build -p kedge-cli`, or set KEDGE_BIN",
        bin.display()
    );
    bin
}

/// A `kedge agent` process on the test environment's etcd and engine, logging to
/// `<state_dir>/agent.log`; SIGKILLed when dropped, so a failing test leaves none behind.
pub struct AgentProcess {
    /// The process, for a test that waits for it to exit on its own.
    pub child: std::process::Child,
}

impl AgentProcess {
    /// Starts an agent as `host`. With `failpoint`, it aborts there (the binary must be built with
    /// failpoints); without, a failpoint set in the test's own environment is not passed on.
    pub fn start(
        state_dir: &std::path::Path,
        host: &str,
        env: &TestEnv,
        failpoint: Option<&str>,
    ) -> AgentProcess {
        use kedge_controller::executor::failpoint;
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(state_dir.join("agent.log")).unwrap();
        let mut command = std::process::Command::new(kedge_bin());
        command
            .args(["agent", "--listen", "127.0.0.1:0", "--host-name", host])
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--store")
            .arg(format!("etcd://{}", env.etcd_endpoints.join(",")))
            .env("DOCKER_HOST", &env.docker_host)
            .env("KEDGE_LOG", "info")
            .env_remove(failpoint::ENV)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(failpoint) = failpoint {
            command.env(failpoint::ENV, failpoint);
        }
        AgentProcess { child: command.spawn().expect("kedge agent starts") }
    }

    /// Kills the agent with SIGKILL and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An agent running in this test process against the test engine, stopped when dropped.
pub struct InProcessAgent {
    pub store: kedge_controller::store::SharedStore,
    pub host: String,
    /// What the agent has done so far.
    pub stats: std::sync::Arc<kedge_controller::agent::AgentStats>,
    shutdown: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), kedge_controller::agent::AgentError>>>,
    _dir: Option<tempfile::TempDir>,
}

impl InProcessAgent {
    /// Starts an agent on a fresh embedded store in a temporary directory.
    pub async fn embedded(host: &str) -> InProcessAgent {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = kedge_controller::store::EmbeddedStore::open(
            dir.path().join("kedge.db"),
            kedge_controller::store::EmbeddedOptions::default(),
        )
        .await
        .expect("open the embedded store");
        Self::start(std::sync::Arc::new(store), host, Some(dir)).await
    }

    /// Starts an agent on the test environment's etcd.
    pub async fn etcd(host: &str) -> InProcessAgent {
        Self::start(etcd_store(TestEnv::get().etcd_endpoints.clone()).await, host, None).await
    }

    /// Starts an agent on `store`, against the test engine.
    pub async fn start(
        store: kedge_controller::store::SharedStore,
        host: &str,
        dir: Option<tempfile::TempDir>,
    ) -> InProcessAgent {
        Self::start_on_engine(store, host, dir, None).await
    }

    /// Starts an agent on `store`, against the engine at `docker_host` (default: `DOCKER_HOST`).
    pub async fn start_on_engine(
        store: kedge_controller::store::SharedStore,
        host: &str,
        dir: Option<tempfile::TempDir>,
        docker_host: Option<&str>,
    ) -> InProcessAgent {
        Self::start_with(store, host, dir, docker_host, |_| {}).await
    }

    /// [`InProcessAgent::start_on_engine`], the configuration changed by `configure` (labels, grace
    /// periods).
    pub async fn start_with(
        store: kedge_controller::store::SharedStore,
        host: &str,
        dir: Option<tempfile::TempDir>,
        docker_host: Option<&str>,
        configure: impl FnOnce(&mut kedge_controller::agent::AgentConfig),
    ) -> InProcessAgent {
        init_logs();
        let docker = match docker_host {
            Some(docker_host) => kedge_controller::docker::DockerClient::connect_to(docker_host).await,
            None => kedge_controller::docker::DockerClient::connect().await,
        }
        .expect("connect to the test engine");
        let mut config = kedge_controller::agent::AgentConfig::new(host);
        config.backoff.min_delay = Duration::from_millis(200);
        config.backoff.max_delay = Duration::from_secs(5);
        configure(&mut config);
        let stats = config.stats.clone();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task =
            tokio::spawn(kedge_controller::agent::run(store.clone(), docker, config, shutdown.clone()));
        InProcessAgent { store, host: host.to_owned(), stats, shutdown, task: Some(task), _dir: dir }
    }

    /// Stops the agent gracefully and returns how it ended.
    pub async fn stop(mut self) -> Result<(), kedge_controller::agent::AgentError> {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the agent stops within 60 s")
            .expect("the agent task did not panic")
    }
}

impl Drop for InProcessAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A Container spec for tests: placed on `host`, labelled for cleanup with `cleanup`'s run id.
pub fn test_spec(
    name: &str,
    namespace: &str,
    host: &str,
    cleanup: &EngineCleanup,
    spec: serde_json::Value,
) -> kedge_crds::Container {
    let mut document = serde_json::json!({
        "apiVersion": "kedge.io/v1",
        "kind": "Container",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    let spec = document["spec"].as_object_mut().expect("spec is an object");
    spec.insert("placement".into(), serde_json::json!({"host": host}));
    let labels = spec.entry("labels").or_insert_with(|| serde_json::json!({}));
    labels[TEST_LABEL] = serde_json::Value::String(cleanup.run_id.clone());
    serde_json::from_value(document).expect("a valid test spec")
}

/// The status condition `kind` of spec `namespace/name`, if reported.
pub async fn condition(
    store: &dyn kedge_controller::store::Store,
    namespace: &str,
    name: &str,
    kind: &str,
) -> Option<kedge_crds::Condition> {
    let (status, _) = kedge_controller::store::objects::get_status(store, namespace, name).await.ok()??;
    status.condition(kind).cloned()
}

/// Waits until spec `namespace/name` reports Ready=True and Synced=True for its current generation.
pub async fn wait_ready(
    store: &dyn kedge_controller::store::Store,
    namespace: &str,
    name: &str,
    timeout: Duration,
) {
    eventually(&format!("{namespace}/{name} to be Ready and Synced"), timeout, || async {
        let spec = kedge_controller::store::objects::get_container(store, namespace, name).await.ok()??;
        let (status, _) =
            kedge_controller::store::objects::get_status(store, namespace, name).await.ok()??;
        let current = status.observed_generation == spec.metadata.generation;
        let ready = status.condition("Ready")?.status == kedge_crds::ConditionStatus::True;
        let synced = status.condition("Synced")?.status == kedge_crds::ConditionStatus::True;
        (current && ready && synced).then_some(())
    })
    .await
}

/// With `KEDGE_LOG` set (`debug`, `kedge_controller=debug`, ...), the agent's logs go to the test output.
pub fn init_logs() {
    if let Ok(filter) = std::env::var("KEDGE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// What [`check_scheduler_history`] found in the store's history.
#[derive(Debug, Clone)]
pub struct SchedulerHistory {
    /// Binding writes seen (puts under `/kedge/v1/bindings/`).
    pub bindings: usize,
    /// The terms (leader keys' `mod_revision`) in the order they began.
    pub terms: Vec<i64>,
}

/// Proves from the store's whole history, read by a watch from revision 1 to now, that no two
/// scheduler leaders ever acted at once: every binding write carries the term of the leader key
/// current at its revision (so no write of a stale leader landed), no leader key was created while
/// another existed, and every binding names a host for which `allowed_host` holds.
///
/// The store must not have been compacted (a fresh [`etcd::EtcdCluster`] is not).
pub async fn check_scheduler_history(
    store: &dyn kedge_controller::store::Store,
    allowed_host: impl Fn(&str) -> bool,
) -> SchedulerHistory {
    use kedge_controller::store::{keys, next_event, EventKind};
    // An etcd member that was just killed or restarted may refuse the first calls: retry those.
    let now = eventually("the store's current revision", Duration::from_secs(30), || async {
        Some(store.list(keys::SCHEDULER_LEADER).await.ok()?.revision)
    })
    .await;
    let mut history = eventually("a watch of the whole history", Duration::from_secs(30), || async {
        store.watch("/", 1).await.ok()
    })
    .await;
    let mut term: Option<i64> = None;
    let mut found = SchedulerHistory { bindings: 0, terms: Vec::new() };
    while let Some(event) =
        tokio::time::timeout(Duration::from_secs(20), next_event(&mut history)).await.expect("history")
    {
        let event = event.expect("a history event");
        if event.kv.key == keys::SCHEDULER_LEADER {
            term = match event.kind {
                EventKind::Put => {
                    assert!(term.is_none(), "a leader key created over another at {}", event.revision);
                    found.terms.push(event.kv.mod_revision);
                    Some(event.kv.mod_revision)
                }
                EventKind::Delete => None,
            };
        } else if event.kv.key.starts_with(keys::BINDINGS) && event.kind == EventKind::Put {
            let binding: serde_json::Value = serde_json::from_slice(&event.kv.value).expect("binding JSON");
            assert_eq!(binding["term"].as_i64(), term, "binding {} at {}", event.kv.key, event.revision);
            let host = binding["host"].as_str().expect("a binding names its host");
            assert!(allowed_host(host), "binding {} names host {host}", event.kv.key);
            found.bindings += 1;
        }
        if event.revision >= now {
            break;
        }
    }
    found
}

/// Proves that a binding write fenced on the ended term `old_term` is refused, naming the leader key
/// at `current_term`. A transient error (etcd still settling) is retried: had such a write landed,
/// [`check_scheduler_history`] would find a binding of the old term.
pub async fn assert_stale_term_refused(
    store: &dyn kedge_controller::store::Store,
    old_term: i64,
    current_term: i64,
    binding_key: &str,
) {
    use kedge_controller::store::{keys, Fence, PutCondition, StoreError};
    let fence = Fence { key: keys::SCHEDULER_LEADER, mod_revision: old_term };
    let stale = serde_json::json!({"host": "stale-leader", "term": old_term}).to_string().into_bytes();
    let mut outcome = store.put_fenced(fence, binding_key, stale.clone(), PutCondition::Always).await;
    for _ in 0..20 {
        match &outcome {
            Err(error) if error.is_transient() => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                outcome = store.put_fenced(fence, binding_key, stale.clone(), PutCondition::Always).await;
            }
            _ => break,
        }
    }
    match outcome {
        Err(StoreError::Conflict { key, current_mod_revision }) => {
            assert_eq!(key, keys::SCHEDULER_LEADER);
            assert_eq!(current_mod_revision, current_term);
        }
        other => panic!("a stale leader's write must be refused: {other:?}"),
    }
}
