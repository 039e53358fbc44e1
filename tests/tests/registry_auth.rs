//! Registry credentials (docs/registry-credentials.md) against the real agent, the real engine and
//! a real registry with htpasswd authentication: without credentials the pull fails and the agent
//! says so naming the registry; with `--registry-config` the container runs; the password appears
//! nowhere the agent shows (its log, `get -o yaml`, `describe`, events); a config file kedge cannot
//! use stops the agent at start with exit 2, naming the file and the field. `kedge check --pull`
//! reads the same file from KEDGE_REGISTRY_CONFIG.

use crate::api_support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use api_support::{kedge_bin, kedge_command, stderr, stdout, AgentGuard};
use kedge_tests::registry::AuthRegistry;
use kedge_tests::{eventually, run_id, EngineCleanup, TEST_LABEL};

fn kedge(socket: &str, args: &[&str]) -> Output {
    kedge_command(&std::env::temp_dir()).env("KEDGE_SERVER", socket).args(args).output().expect("kedge runs")
}

/// Starts an agent on the store file `store` with `args` added, and waits for its API socket.
async fn agent(state_dir: &Path, host: &str, store: &Path, args: &[&str]) -> (AgentGuard, String) {
    let store = format!("--store=embedded:{}", store.display());
    let mut all = vec![store.as_str()];
    all.extend_from_slice(args);
    let mut guard = AgentGuard::spawn(state_dir, host, &all);
    guard.listening_address().await;
    (guard, format!("unix://{}", state_dir.join("kedge.sock").display()))
}

/// The Synced condition's reason and message, when the agent has written one.
fn synced(socket: &str, ns: &str, name: &str) -> Option<(String, String)> {
    let got = kedge(socket, &["get", "container", name, "-n", ns, "-o", "json"]);
    let value: serde_json::Value = serde_json::from_slice(&got.stdout).ok()?;
    let condition = value["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Synced")?.clone();
    Some((condition["reason"].as_str()?.to_owned(), condition["message"].as_str()?.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_pulls_with_credentials_from_the_config_file_and_never_shows_them() {
    let run = run_id();
    let password = format!("pw-{run}-not-to-be-shown");
    let mut registry = AuthRegistry::start(&format!("u{run}"), &password).await;
    let _cleanup = EngineCleanup::new(&run);
    let image = registry.push("kedge-test/app:v1", &format!("private-{run}:v1"));
    let config = registry.config_file();
    let files = tempfile::tempdir().unwrap();
    let store = files.path().join("store.db");
    let host = format!("auth-{run}");
    let ns = format!("ns-{run}");
    let name = format!("private-{run}");
    let spec = files.path().join("private.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n  image: {image}\n  labels:\n    {TEST_LABEL}: {run}\n  placement:\n    host: {host}\n\
             \x20 command: [/bin/sh, -c, 'exec sleep 3600']\n"
        ),
    )
    .unwrap();

    // A config file kedge cannot use stops the start: exit 2, the file and the field named.
    let bad = files.path().join("bad.json");
    std::fs::write(&bad, format!(r#"{{"auths": {{"{}": {{"auth": "{password}"}}}}}}"#, registry.address))
        .unwrap();
    let refused = std::process::Command::new(kedge_bin())
        .args(["agent", "--registry-config", bad.to_str().unwrap(), "--state-dir"])
        .arg(files.path().join("never"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let message = stderr(&refused);
    assert!(message.contains(bad.to_str().unwrap()) && message.contains(".auth"), "{message}");
    assert!(!message.contains(&password), "the value is never quoted: {message}");

    // Without credentials the pull is refused, and the agent says so naming the registry.
    let no_credentials = files.path().join("agent-without");
    let (without, socket) = agent(&no_credentials, &host, &store, &[]).await;
    let applied = kedge(&socket, &["apply", "-f", spec.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let (_, message) = eventually("the pull fails without credentials", Duration::from_secs(60), || async {
        synced(&socket, &ns, &name).filter(|(reason, _)| reason == "ImagePullFailed")
    })
    .await;
    assert!(message.contains(&registry.address), "names the registry: {message}");
    assert!(!kedge_tests::docker_cli(&["inspect", &name]).status.success(), "nothing runs");
    let mut log = std::fs::read_to_string(no_credentials.join("agent.log")).unwrap();
    drop(without);

    // With the config file the same spec pulls and runs.
    let with_credentials = files.path().join("agent-with");
    let (with, socket) =
        agent(&with_credentials, &host, &store, &["--registry-config", config.to_str().unwrap()]).await;
    let waited = kedge(
        &socket,
        &["wait", "container", &name, "-n", &ns, "--for", "condition=Ready", "--timeout", "90s"],
    );
    assert!(
        waited.status.success(),
        "{}{}\nregistry log:\n{}",
        stdout(&waited),
        stderr(&waited),
        registry.log()
    );

    // The password is nowhere the agent shows, nor in its log.
    let shown = [
        kedge(&socket, &["get", "container", &name, "-n", &ns, "-o", "yaml"]),
        kedge(&socket, &["describe", "container", &name, "-n", &ns]),
        kedge(&socket, &["get", "events", "-n", &ns, "-o", "yaml"]),
    ];
    for output in &shown {
        assert!(output.status.success(), "{}", stderr(output));
        let text = format!("{}{}", stdout(output), stderr(output));
        assert!(text.contains(&name), "the output is about the container: {text}");
        assert!(!text.contains(&password), "{text}");
    }
    // The updater's `kedge check --pull` takes the same file from KEDGE_REGISTRY_CONFIG.
    let check = |config: Option<&Path>| {
        let mut command = std::process::Command::new(kedge_bin());
        command.args(["check", "--pull", &name]).env_remove("KEDGE_REGISTRY_CONFIG");
        if let Some(config) = config {
            command.env("KEDGE_REGISTRY_CONFIG", config);
        }
        command.output().unwrap()
    };
    let refused = check(None);
    assert!(refused.status.code().unwrap_or(0) > 1, "{}{}", stdout(&refused), stderr(&refused));
    let pulled = check(Some(&config));
    assert_eq!(pulled.status.code(), Some(0), "{}{}", stdout(&pulled), stderr(&pulled));
    for output in [&refused, &pulled] {
        assert!(!stderr(output).contains(&password) && !stdout(output).contains(&password));
    }

    let loaded = std::fs::read_to_string(with_credentials.join("agent.log")).unwrap();
    assert!(loaded.contains("registry credentials loaded"), "{loaded}");
    log.push_str(&loaded);
    assert!(!log.contains(&password), "the agent's log never shows the password");
    drop(with);
}
