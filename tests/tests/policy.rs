//! The host-escape policy (docs/policy.md) against the real agent and the real engine: the API
//! refuses what `baseline` refuses (exit 2, naming the object, field and level; nothing stored), a
//! clean spec runs, an agent at `--policy-level privileged` runs what baseline refuses (`capAdd: [SYS_ADMIN]`, `networkMode: host`), and a
//! refused spec already in the store is not run by a baseline agent (`PolicyDenied`), while the
//! container it already had is left running. `pidMode`, `devices`, `securityOpt` and `sysctls` reach
//! the engine as declared and are refused at `baseline` where unsafe. The store is the embedded one, in a file outside the
//! agents' state directories, so that three agents in turn read the same specs.

use crate::api_support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use api_support::{kedge_bin, kedge_command, stderr, stdout, AgentGuard};
use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup, TestEnv, TEST_LABEL};

/// Starts an agent of host `host` on the store file `store` at `level`, and waits for its API.
async fn agent(run: &str, host: &str, store: &Path, level: &str) -> (AgentGuard, String) {
    let env = TestEnv::get();
    let state_dir = std::env::temp_dir().join(format!("kedge-policy-{run}-{level}"));
    let child = std::process::Command::new(kedge_bin())
        .args(["agent", "--state-dir", state_dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--host-name", host, "--policy-level", level])
        .arg(format!("--store=embedded:{}", store.display()))
        .env("DOCKER_HOST", &env.docker_host)
        .env_remove("KEDGE_STORE")
        .env_remove("KEDGE_POLICY_LEVEL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kedge agent starts");
    let guard = AgentGuard { child, state_dir: state_dir.clone(), keep_state: false };
    let socket = format!("unix://{}", state_dir.join("kedge.sock").display());
    api_support::wait_api_on(&socket).await;
    (guard, socket)
}

fn kedge(socket: &str, args: &[&str]) -> Output {
    kedge_command(&std::env::temp_dir()).env("KEDGE_SERVER", socket).args(args).output().expect("kedge runs")
}

/// A spec file for `name` on `host`, with `extra` lines added under `spec:` (indented two spaces).
fn spec_file(dir: &Path, run: &str, host: &str, ns: &str, name: &str, extra: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n  image: kedge-test/app:v1\n  labels:\n    {TEST_LABEL}: {run}\n  placement:\n    host: {host}\n\
             \x20 command: [/bin/sh, -c, 'exec sleep 3600']\n{extra}"
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn condition(socket: &str, ns: &str, name: &str, kind: &str) -> Option<(String, String, String)> {
    let got = kedge(socket, &["get", "container", name, "-n", ns, "-o", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&got.stdout).ok()?;
    let condition = value["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)?.clone();
    let text = |key: &str| condition[key].as_str().unwrap_or_default().to_owned();
    Some((text("status"), text("reason"), text("message")))
}

fn running(name: &str) -> bool {
    String::from_utf8_lossy(&docker_cli(&["inspect", "-f", "{{.State.Running}}", name]).stdout).trim()
        == "true"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_refuses_host_escapes_at_the_api_and_in_the_agent() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let files = tempfile::tempdir().unwrap();
    let store = files.path().join("store.db");
    let host = format!("policy-{run}");
    let ns = format!("ns-{run}");
    let (baseline, socket) = agent(&run, &host, &store, "baseline").await;

    // The API refuses, naming the object, field and level; nothing is stored.
    let privileged = format!("priv-{run}");
    let privileged_file = spec_file(files.path(), &run, &host, &ns, &privileged, "  privileged: true\n");
    let refused = kedge(&socket, &["apply", "-f", &privileged_file]);
    assert_eq!(refused.status.code(), Some(2), "{}{}", stdout(&refused), stderr(&refused));
    let message = stderr(&refused);
    assert!(message.contains("spec.privileged") && message.contains("`baseline` policy"), "{message}");
    assert!(message.contains(&format!("container/{privileged}")), "names the object: {message}");
    assert_eq!(kedge(&socket, &["get", "container", &privileged, "-n", &ns]).status.code(), Some(3));
    let dry = kedge(&socket, &["apply", "-f", &privileged_file, "--dry-run=server"]);
    assert_eq!(dry.status.code(), Some(2), "a server dry run is refused too: {}", stderr(&dry));

    let socket_bind = format!("sock-{run}");
    let socket_file = spec_file(
        files.path(),
        &run,
        &host,
        &ns,
        &socket_bind,
        "  mounts: ['/var/run/docker.sock:/var/run/docker.sock:ro']\n",
    );
    let refused = kedge(&socket, &["apply", "-f", &socket_file]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("spec.mounts[0].source"), "{}", stderr(&refused));
    assert_eq!(kedge(&socket, &["get", "container", &socket_bind, "-n", &ns]).status.code(), Some(3));

    let clean = format!("clean-{run}");
    let clean_file =
        spec_file(files.path(), &run, &host, &ns, &clean, "  capDrop: [ALL]\n  capAdd: [CHOWN]\n");
    let applied = kedge(&socket, &["apply", "-f", &clean_file]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let waited = kedge(
        &socket,
        &["wait", "container", &clean, "-n", &ns, "--for", "condition=Ready", "--timeout", "90s"],
    );
    assert!(waited.status.success(), "{}{}", stdout(&waited), stderr(&waited));
    drop(baseline);

    // An agent of the whole host at `privileged` stores and runs both.
    let (privileged_agent, socket) = agent(&run, &host, &store, "privileged").await;
    let pending = format!("pending-{run}");
    let pending_file = spec_file(files.path(), &run, &host, &ns, &pending, "  networkMode: host\n");
    // A capability beyond Docker's defaults stands for every baseline rule here: a privileged
    // container depends on what the test engine allows.
    let capable = format!("cap-{run}");
    let capable_file = spec_file(files.path(), &run, &host, &ns, &capable, "  capAdd: [SYS_ADMIN]\n");
    for file in [&capable_file, &pending_file] {
        let applied = kedge(&socket, &["apply", "-f", file]);
        assert!(applied.status.success(), "{}", stderr(&applied));
    }
    for name in [&capable, &pending] {
        let waited = kedge(
            &socket,
            &["wait", "container", name, "-n", &ns, "--for", "condition=Ready", "--timeout", "90s"],
        );
        assert!(waited.status.success(), "{name}: {}{}", stdout(&waited), stderr(&waited));
    }
    drop(privileged_agent);

    // Back at baseline, the stored specs that break the policy are not acted on: the running
    // container is left running, the missing one is not created, and both say PolicyDenied.
    assert!(docker_cli(&["rm", "-f", &pending]).status.success());
    let (_baseline_again, socket) = agent(&run, &host, &store, "baseline").await;
    for (name, field) in [(&capable, "spec.capAdd[0]"), (&pending, "spec.networkMode")] {
        let (status, _, message) =
            eventually(&format!("{name} reports PolicyDenied"), Duration::from_secs(60), || async {
                condition(&socket, &ns, name, "Synced").filter(|(_, reason, _)| reason == "PolicyDenied")
            })
            .await;
        assert_eq!(status, "False");
        assert!(message.contains(field) && message.contains("`baseline` policy"), "{message}");
        let degraded = condition(&socket, &ns, name, "Degraded").unwrap();
        assert_eq!((degraded.0.as_str(), degraded.1.as_str()), ("True", "PolicyDenied"));
        let described = stdout(&kedge(&socket, &["describe", "container", name, "-n", &ns]));
        assert!(described.contains("PolicyDenied"), "{described}");
    }
    assert!(running(&capable), "an existing container is left as it is");
    assert!(!docker_cli(&["inspect", &pending]).status.success(), "a refused spec is not created");
    eventually("a clean spec keeps running", Duration::from_secs(60), || async {
        condition(&socket, &ns, &clean, "Ready").filter(|(status, _, _)| status == "True")
    })
    .await;
}

/// The API alone (default settings: `baseline`): every write path refuses a spec that breaks the
/// policy with 422 `PolicyDenied`, naming every field and the level, and stores nothing.
#[tokio::test]
async fn every_api_write_path_refuses_and_stores_nothing() {
    let server = api_support::TestServer::start().await;
    let ns = api_support::unique("policy");
    let before = server.store.list("/kedge/v1/").await.unwrap().revision;
    let container = serde_json::json!({
        "apiVersion": "kedge.io/v1", "kind": "Container", "metadata": {"name": "escape", "namespace": ns},
        "spec": {"image": "busybox", "privileged": true, "mounts": ["/:/host:ro"], "capAdd": ["ALL"]}
    })
    .to_string();
    let set = serde_json::json!({
        "apiVersion": "kedge.io/v1", "kind": "ContainerSet", "metadata": {"name": "escapes", "namespace": ns},
        "spec": {"replicas": 2, "template": {"spec": {"image": "busybox", "networkMode": "host"}}}
    })
    .to_string();
    let containers = format!("/api/v1/namespaces/{ns}/containers");
    let cases = [
        ("POST", containers.clone(), &container, "spec.mounts[0].source"),
        ("PUT", format!("{containers}/escape"), &container, "spec.capAdd[0]"),
        ("PUT", format!("{containers}/escape?dryRun=All"), &container, "spec.privileged"),
        (
            "PUT",
            format!("/api/v1/namespaces/{ns}/containersets/escapes"),
            &set,
            "spec.template.spec.networkMode",
        ),
    ];
    for (method, path, body, field) in &cases {
        let reply = server.call(method, path, Some(body)).await;
        assert_eq!(reply.status, 422, "{method} {path}: {reply:?}");
        let answer = reply.json();
        assert_eq!(answer["reason"], "PolicyDenied");
        assert_eq!(answer["level"], "baseline");
        let fields: Vec<&str> =
            answer["details"].as_array().unwrap().iter().filter_map(|d| d["field"].as_str()).collect();
        assert!(fields.contains(field), "{method} {path}: {fields:?}");
        assert!(answer["error"].as_str().unwrap().contains("`baseline` policy"), "{answer}");
    }
    assert_eq!(server.store.list("/kedge/v1/").await.unwrap().revision, before, "nothing was written");
}

/// `pidMode`, `ipcMode`, `devices`, `securityOpt` and `sysctls` against the real agent: at
/// `baseline` the API refuses the host's PID namespace, a device, an unconfined seccomp and an unsafe
/// sysctl, each by its field, and runs a spec with a safe sysctl and `no-new-privileges`, which reach
/// the engine; an agent at `privileged` runs the host PID namespace and a device, as declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_fields_reach_the_engine_and_baseline_refuses_the_unsafe_ones() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let files = tempfile::tempdir().unwrap();
    let store = files.path().join("store.db");
    let host = format!("isolation-{run}");
    let ns = format!("ns-{run}");
    let (baseline, socket) = agent(&run, &host, &store, "baseline").await;

    let escape = format!("escape-{run}");
    let escape_file = spec_file(
        files.path(),
        &run,
        &host,
        &ns,
        &escape,
        "  pidMode: host\n  devices: [/dev/null]\n  securityOpt: [seccomp=unconfined]\n  sysctls:\n    net.ipv4.ip_forward: 1\n",
    );
    let refused = kedge(&socket, &["apply", "-f", &escape_file]);
    assert_eq!(refused.status.code(), Some(2), "{}{}", stdout(&refused), stderr(&refused));
    let message = stderr(&refused);
    // Every refused field is named where it is in the file: FILE:LINE:COL: FIELD: ... (the extra
    // lines start at line 13 of the file).
    for (line, field) in [
        (13, "spec.pidMode"),
        (14, "spec.devices[0]"),
        (15, "spec.securityOpt[0]"),
        (17, "spec.sysctls.net.ipv4.ip_forward"),
    ] {
        let placed = format!("{escape_file}:{line}:");
        let refused_here = format!(": {field}: refused by the `baseline` policy");
        assert!(
            message.lines().any(|l| l.starts_with(&placed) && l.contains(&refused_here)),
            "{field} at line {line}: {message}"
        );
    }
    assert_eq!(kedge(&socket, &["get", "container", &escape, "-n", &ns]).status.code(), Some(3));

    let safe = format!("safe-{run}");
    let safe_file = spec_file(
        files.path(),
        &run,
        &host,
        &ns,
        &safe,
        "  ipcMode: private\n  securityOpt: [no-new-privileges]\n  sysctls:\n    net.ipv4.ip_unprivileged_port_start: 80\n",
    );
    let applied = kedge(&socket, &["apply", "-f", &safe_file]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let waited = kedge(
        &socket,
        &["wait", "container", &safe, "-n", &ns, "--for", "condition=Ready", "--timeout", "90s"],
    );
    assert!(waited.status.success(), "{}{}", stdout(&waited), stderr(&waited));
    let inspect = |name: &str, format: &str| {
        String::from_utf8_lossy(&docker_cli(&["inspect", "-f", format, name]).stdout).trim().to_owned()
    };
    assert_eq!(inspect(&safe, "{{json .HostConfig.SecurityOpt}}"), r#"["no-new-privileges"]"#);
    assert_eq!(
        inspect(&safe, "{{json .HostConfig.Sysctls}}"),
        r#"{"net.ipv4.ip_unprivileged_port_start":"80"}"#
    );
    assert_eq!(inspect(&safe, "{{.HostConfig.IpcMode}}"), "private");
    drop(baseline);

    // At `privileged` the same fields are stored and reach the engine as declared.
    let (_privileged, socket) = agent(&run, &host, &store, "privileged").await;
    let host_pid = format!("hostpid-{run}");
    let host_pid_file = spec_file(
        files.path(),
        &run,
        &host,
        &ns,
        &host_pid,
        "  pidMode: host\n  devices: ['/dev/null:/dev/kedge-null:r']\n",
    );
    let applied = kedge(&socket, &["apply", "-f", &host_pid_file]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let waited = kedge(
        &socket,
        &["wait", "container", &host_pid, "-n", &ns, "--for", "condition=Ready", "--timeout", "90s"],
    );
    assert!(waited.status.success(), "{}{}", stdout(&waited), stderr(&waited));
    assert_eq!(inspect(&host_pid, "{{.HostConfig.PidMode}}"), "host");
    assert_eq!(
        inspect(
            &host_pid,
            "{{range .HostConfig.Devices}}{{.PathOnHost}} {{.PathInContainer}} {{.CgroupPermissions}}{{end}}"
        ),
        "/dev/null /dev/kedge-null r"
    );
    // The engine's answer matches the declaration: no drift, the container the agent made is kept.
    let status = kedge(&socket, &["get", "container", &host_pid, "-n", &ns, "-o", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("get -o json");
    let drift = status["status"]["drift"].as_array().cloned().unwrap_or_default();
    assert!(drift.is_empty(), "no drift: {drift:?}");
    assert_eq!(status["status"]["containerId"].as_str(), Some(inspect(&host_pid, "{{.Id}}").as_str()));
}

/// Starts an agent of host `host` on the test environment's etcd (default level `baseline`), and
/// waits for its API on its socket.
async fn etcd_agent(run: &str, host: &str) -> (AgentGuard, String) {
    let env = TestEnv::get();
    let state_dir = std::env::temp_dir().join(format!("kedge-nspolicy-{run}-{host}"));
    let store = format!("etcd://{}", env.etcd_endpoints.join(","));
    let guard = AgentGuard::spawn(&state_dir, host, &["--store", &store]);
    let socket = format!("unix://{}", state_dir.join("kedge.sock").display());
    api_support::wait_api_on(&socket).await;
    (guard, socket)
}

/// The effective level of `ns` as `kedge policy get NS -o json` prints it: (level, source).
fn policy_of(socket: &str, ns: &str) -> (String, String) {
    let got = kedge(socket, &["policy", "get", ns, "-o", "json"]);
    assert!(got.status.success(), "{}", stderr(&got));
    let value: serde_json::Value = serde_json::from_slice(&got.stdout).expect("policy get -o json");
    assert_eq!(value["namespace"], ns);
    (value["level"].as_str().unwrap().to_owned(), value["source"].as_str().unwrap().to_owned())
}

fn wait_ready_via(socket: &str, ns: &str, name: &str) {
    let waited =
        kedge(socket, &["wait", "container", name, "-n", ns, "--for", "condition=Ready", "--timeout", "90s"]);
    assert!(waited.status.success(), "{name}: {}{}", stdout(&waited), stderr(&waited));
}

/// Levels per namespace, stored in etcd and followed by two agents of one store: what `baseline`
/// refuses by default (each host escape, and a bind of the agent's own state directory) is refused
/// at the API naming the field, the level and the namespace; a spec written straight to etcd that
/// breaks the level is not run (`PolicyDenied`) and runs, without being applied again, once the
/// level is loosened through the OTHER agent; after `kedge policy set NS privileged` (through one
/// agent) the other agent's API accepts every escape and the first agent runs them. Set back to
/// `default`, a running container is left running and reports `PolicyDenied`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_levels_are_stored_and_followed_by_every_agent() {
    let run = run_id();
    let cleanup = EngineCleanup::new(&run);
    let files = tempfile::tempdir().unwrap();
    let ns = format!("ns-{run}");
    let (host_a, host_b) = (format!("nspa-{run}"), format!("nspb-{run}"));
    let (agent_a, socket_a) = etcd_agent(&run, &host_a).await;
    let (_agent_b, socket_b) = etcd_agent(&run, &host_b).await;
    let store = kedge_tests::etcd_store(TestEnv::get().etcd_endpoints).await;
    assert_eq!(policy_of(&socket_a, &ns), ("baseline".to_owned(), "default".to_owned()));

    // Each escape, and a bind of agent A's state directory (not the default /var/lib/kedge), is
    // refused by default: exit 2, naming the field, the level and the namespace; nothing stored.
    let state_dir = agent_a.state_dir.display().to_string();
    let escapes = [
        ("privileged", "  privileged: true\n", "spec.privileged"),
        ("root", "  mounts: ['/:/host:ro']\n", "spec.mounts[0].source"),
        ("sock", "  mounts: ['/var/run/docker.sock:/var/run/docker.sock']\n", "spec.mounts[0].source"),
        ("hostnet", "  networkMode: host\n", "spec.networkMode"),
        ("sysadmin", "  capAdd: [SYS_ADMIN]\n", "spec.capAdd[0]"),
    ];
    let mut files_of = Vec::new();
    for (what, extra, field) in escapes {
        let name = format!("{what}-{run}");
        let file = spec_file(files.path(), &run, &host_a, &ns, &name, extra);
        let refused = kedge(&socket_a, &["apply", "-f", &file]);
        assert_eq!(refused.status.code(), Some(2), "{what}: {}{}", stdout(&refused), stderr(&refused));
        let message = stderr(&refused);
        assert!(message.contains(field), "{what} names {field}: {message}");
        assert!(message.contains(&format!("`baseline` policy of namespace `{ns}`")), "{what}: {message}");
        assert_eq!(kedge(&socket_a, &["get", "container", &name, "-n", &ns]).status.code(), Some(3));
        files_of.push((name, file));
    }
    let state_bind = format!("state-{run}");
    let state_file = spec_file(
        files.path(),
        &run,
        &host_a,
        &ns,
        &state_bind,
        &format!("  mounts: ['{state_dir}:/state:ro']\n"),
    );
    let refused = kedge(&socket_a, &["apply", "-f", &state_file]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("state directory"), "{}", stderr(&refused));
    // So is the socket of the engine the agent manages, wherever DOCKER_HOST puts it.
    let engine_socket = TestEnv::get().docker_host.strip_prefix("unix://").unwrap().to_owned();
    let engine_bind = format!("engine-{run}");
    let engine_file = spec_file(
        files.path(),
        &run,
        &host_a,
        &ns,
        &engine_bind,
        &format!("  mounts: ['{engine_socket}:/var/run/docker.sock']\n"),
    );
    let refused = kedge(&socket_a, &["apply", "-f", &engine_file]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("the agent's engine socket"), "{}", stderr(&refused));

    // A violating spec written straight to etcd, placed on host B: not run, PolicyDenied, one event.
    let direct = format!("direct-{run}");
    let spec = kedge_tests::test_spec(
        &direct,
        &ns,
        &host_b,
        &cleanup,
        serde_json::json!({"image": "kedge-test/app:v1", "command": ["/bin/sh", "-c", "exec sleep 3600"], "capAdd": ["SYS_ADMIN"]}),
    );
    kedge_controller::store::objects::apply_container(store.as_ref(), &spec, None)
        .await
        .expect("put the spec");
    let (status, _, message) =
        eventually(&format!("{direct} reports PolicyDenied"), Duration::from_secs(60), || async {
            condition(&socket_b, &ns, &direct, "Synced").filter(|(_, reason, _)| reason == "PolicyDenied")
        })
        .await;
    assert_eq!(status, "False");
    assert!(
        message.contains("spec.capAdd[0]")
            && message.contains(&format!("`baseline` policy of namespace `{ns}`")),
        "{message}"
    );
    assert!(!docker_cli(&["inspect", &direct]).status.success(), "a refused spec is not created");
    let events = stdout(&kedge(&socket_b, &["events", "--for", &direct, "-n", &ns]));
    assert_eq!(events.matches("PolicyDenied").count(), 1, "one event: {events}");

    // Bad levels are refused and change nothing.
    let bad = kedge(&socket_a, &["policy", "set", &ns, "root"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert_eq!(policy_of(&socket_b, &ns), ("baseline".to_owned(), "default".to_owned()));

    // Loosened through agent A: agent B sees it, and runs the stored spec without a new apply.
    let set = kedge(&socket_a, &["policy", "set", &ns, "privileged"]);
    assert!(set.status.success(), "{}", stderr(&set));
    assert_eq!(policy_of(&socket_b, &ns), ("privileged".to_owned(), "namespace".to_owned()));
    let listed = stdout(&kedge(&socket_b, &["policy", "get"]));
    assert!(
        listed.lines().any(|l| l.split_whitespace().eq([ns.as_str(), "privileged", "namespace"])),
        "{listed}"
    );
    wait_ready_via(&socket_b, &ns, &direct);

    // Every escape is now accepted (through agent B's API) and run (by agent A).
    for (name, file) in &files_of {
        let applied = kedge(&socket_b, &["apply", "-f", file]);
        assert!(applied.status.success(), "{name}: {}", stderr(&applied));
    }
    // The test engine cannot start a privileged container (runc: "unable to apply caps"), and its
    // host has no /var/run/docker.sock (the engine listens elsewhere): those two count as accepted
    // once the agent acted on them (the engine's error, not PolicyDenied). The others must run.
    let (privileged, _) = &files_of[0];
    eventually(&format!("{privileged} is created"), Duration::from_secs(90), || async {
        docker_cli(&["inspect", privileged]).status.success().then_some(())
    })
    .await;
    let (sock, _) = &files_of[2];
    let (_, reason, _) = eventually(&format!("{sock} is acted on"), Duration::from_secs(90), || async {
        condition(&socket_a, &ns, sock, "Synced").filter(|(_, reason, _)| reason != "PolicyDenied")
    })
    .await;
    assert_ne!(reason, "PolicyDenied");
    for (name, _) in [&files_of[1], &files_of[3], &files_of[4]] {
        wait_ready_via(&socket_a, &ns, name);
        assert!(running(name), "{name} runs");
    }
    let applied = kedge(&socket_b, &["apply", "-f", &state_file]);
    assert!(applied.status.success(), "the state dir may be bound at privileged: {}", stderr(&applied));

    // Back to the default: running containers are left running, and say PolicyDenied.
    let reset = kedge(&socket_b, &["policy", "set", &ns, "default"]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    assert_eq!(policy_of(&socket_a, &ns), ("baseline".to_owned(), "default".to_owned()));
    let (hostnet, _) = &files_of[3];
    eventually(&format!("{hostnet} reports PolicyDenied"), Duration::from_secs(60), || async {
        condition(&socket_a, &ns, hostnet, "Synced").filter(|(_, reason, _)| reason == "PolicyDenied")
    })
    .await;
    assert!(running(hostnet), "a running container is not evicted when its level is tightened");
    assert!(running(&direct), "nor on the other host");

    // `kedge run` checks at the namespace's stored level, which wins over --policy-level.
    let plain = format!("plain-{run}");
    let plain_file = spec_file(files.path(), &run, &host_a, &ns, &plain, "");
    let applied = kedge(&socket_a, &["apply", "-f", &plain_file]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let set = kedge(&socket_a, &["policy", "set", &ns, "restricted"]);
    assert!(set.status.success(), "{}", stderr(&set));
    let script = files.path().join("script.sh");
    std::fs::write(&script, "true\n").unwrap();
    let script = script.display().to_string();
    for flag in ["baseline", "privileged"] {
        let args = ["run", &plain, "-n", &ns, "--script", &script, "--policy-level", flag, "--", "true"];
        let refused = kedge(&socket_a, &args);
        assert_eq!(refused.status.code(), Some(2), "{flag}: {}{}", stdout(&refused), stderr(&refused));
        let message = stderr(&refused);
        assert!(message.contains("spec.user: refused by the `restricted` policy"), "{flag}: {message}");
    }
    assert!(!docker_cli(&["inspect", &format!("{plain}-script")]).status.success(), "nothing was run");
    let reset = kedge(&socket_a, &["policy", "set", &ns, "default"]);
    assert!(reset.status.success(), "{}", stderr(&reset));
}

/// The policy routes alone (default `baseline`): a level is stored, read and forgotten; admission
/// follows it at once (the 422 names the namespace); bad requests are refused and store nothing.
#[tokio::test]
async fn policy_routes_store_levels_and_admission_follows_them() {
    let server = api_support::TestServer::start().await;
    let ns = api_support::unique("levels");
    let path = format!("/api/v1/policies/{ns}");
    let effective = |reply: &api_support::Reply| {
        let answer = reply.json();
        (answer["namespace"].clone(), answer["level"].clone(), answer["source"].clone())
    };
    let read = server.call("GET", &path, None).await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(effective(&read), (ns.clone().into(), "baseline".into(), "default".into()));

    // Refused requests change nothing.
    let before = server.store.list("/kedge/v1/").await.unwrap().revision;
    for (body, status, field) in [
        (r#"{"level": "root"}"#, 422, Some("level")),
        (r#"{"level": 1}"#, 422, Some("level")),
        (r#"{}"#, 422, Some("level")),
        (r#"{"level": "privileged", "extra": 1}"#, 422, Some("extra")),
        ("not json", 400, None),
    ] {
        let reply = server.call("PUT", &path, Some(body)).await;
        assert_eq!(reply.status, status, "{body}: {reply:?}");
        if let Some(field) = field {
            assert_eq!(reply.json()["field"], field, "{body}");
        }
    }
    let reply = server.call("PUT", "/api/v1/policies/%2E%2E", Some(r#"{"level": "privileged"}"#)).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert_eq!(server.store.list("/kedge/v1/").await.unwrap().revision, before, "nothing was written");

    // A privileged spec is refused, naming the namespace, until the namespace is privileged.
    let container = serde_json::json!({
        "apiVersion": "kedge.io/v1", "kind": "Container", "metadata": {"name": "escape", "namespace": ns},
        "spec": {"image": "busybox", "privileged": true}
    })
    .to_string();
    let spec_path = format!("/api/v1/namespaces/{ns}/containers/escape");
    let refused = server.call("PUT", &spec_path, Some(&container)).await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert_eq!(refused.json()["namespace"], ns.as_str());
    assert!(refused.json()["error"].as_str().unwrap().contains(&format!("of namespace `{ns}`")));

    let set = server.call("PUT", &path, Some(r#"{"level": "privileged"}"#)).await;
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(effective(&set), (ns.clone().into(), "privileged".into(), "namespace".into()));
    let stored = server.store.get(&format!("/kedge/v1/policies/{ns}")).await.unwrap().expect("stored");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&stored.value).unwrap(),
        serde_json::json!({"level": "privileged"})
    );
    let accepted = server.call("PUT", &spec_path, Some(&container)).await;
    assert!(accepted.status < 300, "{accepted:?}");
    // Another namespace keeps the default.
    let other = serde_json::json!({
        "apiVersion": "kedge.io/v1", "kind": "Container", "metadata": {"name": "escape", "namespace": format!("{ns}-2")},
        "spec": {"image": "busybox", "privileged": true}
    })
    .to_string();
    let refused =
        server.call("PUT", &format!("/api/v1/namespaces/{ns}-2/containers/escape"), Some(&other)).await;
    assert_eq!(refused.status, 422, "{refused:?}");

    let listed = server.call("GET", "/api/v1/policies", None).await.json();
    assert_eq!(listed["default"], "baseline");
    let items = listed["items"].as_array().unwrap();
    assert!(
        items.iter().any(|item| item["namespace"] == ns.as_str() && item["level"] == "privileged"),
        "{listed}"
    );

    let deleted = server.call("DELETE", &path, None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(effective(&deleted), (ns.clone().into(), "baseline".into(), "default".into()));
    assert_eq!(server.call("DELETE", &path, None).await.status, 200, "deleting again is no error");
    let refused = server.call("PUT", &spec_path, Some(&container)).await;
    assert_eq!(refused.status, 422, "back to baseline: {refused:?}");
}

/// A namespace's level tightened while a loop writes specs that break the tighter level into it:
/// a write that starts after `kedge policy set N baseline` has returned is refused by the API; every
/// spec that got in before reports `PolicyDenied` once the agent's own cache has the new level
/// (the agent re-checks every spec of the namespace on a change); and no container is started for
/// any of them afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tightening_a_level_while_specs_are_written_runs_nothing_new() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let files = tempfile::tempdir().unwrap();
    let store = files.path().join("store.db");
    let host = format!("tighten-{run}");
    let ns = format!("tighten-{run}");
    let (_agent, socket) = agent(&run, &host, &store, "baseline").await;
    let set = kedge(&socket, &["policy", "set", &ns, "privileged"]);
    assert!(set.status.success(), "{}", stderr(&set));

    // The writer: a new spec with a capability beyond Docker's defaults (what baseline refuses) a
    // round, until told to stop. Each write: (name, when it started, its exit code).
    type Writes = Vec<(String, Instant, Option<i32>)>;
    let stop = Arc::new(AtomicBool::new(false));
    let writes: Arc<Mutex<Writes>> = Arc::default();
    let writer = {
        let (stop, writes, socket, dir) =
            (stop.clone(), writes.clone(), socket.clone(), files.path().to_owned());
        let (run, host, ns) = (run.clone(), host.clone(), ns.clone());
        std::thread::spawn(move || {
            for round in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let name = format!("w{round}-{run}");
                let file = spec_file(&dir, &run, &host, &ns, &name, "  capAdd: [SYS_ADMIN]\n");
                let started = Instant::now();
                let code = kedge(&socket, &["apply", "-f", &file]).status.code();
                writes.lock().unwrap().push((name, started, code));
            }
        })
    };
    let accepted =
        |writes: &[(String, Instant, Option<i32>)]| writes.iter().filter(|w| w.2 == Some(0)).count();
    eventually("a few specs are written at `privileged`", Duration::from_secs(30), || async {
        (accepted(&writes.lock().unwrap()) >= 3).then_some(())
    })
    .await;
    let tightened = kedge(&socket, &["policy", "set", &ns, "baseline"]);
    assert!(tightened.status.success(), "{}", stderr(&tightened));
    let landed = Instant::now();
    eventually("the writer is refused a few times after", Duration::from_secs(30), || async {
        let writes = writes.lock().unwrap();
        (writes.iter().filter(|w| w.1 > landed).count() >= 3).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let writes = writes.lock().unwrap().clone();

    // Every write started after the level landed is refused (exit 2) by the API.
    for (name, started, code) in writes.iter().filter(|w| w.1 > landed) {
        assert_eq!(
            *code,
            Some(2),
            "{name}, written {:?} after the level landed, was accepted",
            *started - landed
        );
    }
    // Every spec that got in reports PolicyDenied: the agent re-checked it by its own cache.
    let stored: Vec<&String> = writes.iter().filter(|w| w.2 == Some(0)).map(|w| &w.0).collect();
    eventually("every stored spec reports PolicyDenied", Duration::from_secs(60), || async {
        stored
            .iter()
            .all(|name| {
                condition(&socket, &ns, name, "Synced")
                    .is_some_and(|(status, reason, _)| status == "False" && reason == "PolicyDenied")
            })
            .then_some(())
    })
    .await;
    // Nothing is started afterwards: the set of running containers no longer grows.
    let running_now = || -> Vec<&String> { stored.iter().copied().filter(|name| running(name)).collect() };
    let denied_at = running_now();
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(3) {
        let now = running_now();
        assert!(
            now.iter().all(|name| denied_at.contains(name)),
            "started after PolicyDenied: {now:?} vs {denied_at:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "measured: {} specs stored at `privileged`, {} written after the level landed (all refused), {} containers started before the agent had the new level",
        stored.len(),
        writes.iter().filter(|w| w.1 > landed).count(),
        denied_at.len()
    );
    // FIXME: a container started before the agent read the tighter level keeps running, as
    // docs/policy.md says ("a container it already has is left as it is", as Kubernetes' Pod
    // Security admission leaves running pods). The brief for issue 18 asks that no such container
    // runs afterwards; that is a change of the documented rule (stop it, or remove it?), left to a
    // decision rather than made here.
}
