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
    eventually("the agent's API answers on its socket", Duration::from_secs(30), || async {
        kedge(&socket, &["version"]).status.success().then_some(())
    })
    .await;
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
