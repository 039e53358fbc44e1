//! Hostile and careless input, end to end: the real `kedge` binary (agent and CLI) on an etcd of the
//! test's own. Nothing that enters through the API or sits in the store may stop the agent or the
//! scheduler's leader:
//!
//! - an undecodable spec put straight into etcd is listed as Invalid (`kedge get` exits 0) and blocks
//!   nothing: a new spec is placed and runs, also after the agent restarts;
//! - an upgrade with an absurd `timeoutSeconds` and a watch from an overflowing `resourceVersion` are
//!   refused naming the field, and the leader goes on placing specs afterwards;
//! - names and labels that collide with kedge's own are refused by `kedge validate` (exit 2), both
//!   errors of the file reported;
//! - a file with four mistakes in two documents has all four listed, at their line, column and field
//!   path, by `kedge validate`, `apply` and `diff`, which exit 2 and change nothing;
//! - a YAML alias bomb is refused naming the limit, with `kedge validate` staying under 200 MiB.
//! - oversized isolation fields (a 1 MiB sysctl value, 10,000 devices, 5,000 security options) are
//!   refused by `kedge apply` at their line, column and field in a short message, and by the agent's
//!   API (422 naming the field, 413 past the body limit); nothing is stored.
//! - a reader that closes the CLI's output early (`kedge completion bash | head`) ends it quietly with
//!   141, as SIGPIPE would, not with a panic.

use std::path::Path;

use crate::api_support::{http_unix, kedge_command, stderr, stdout, unique, TestServer};
use crate::store_scale::{apply_json, store_url, unplaced_spec, wait_running, AgentProcess};
use kedge_controller::store::{keys, PutCondition};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker_cli, run_id, EngineCleanup};

fn assert_listed_invalid(agent: &AgentProcess, poison: &str) {
    let listed = agent.kedge(&["get", "containers"]);
    assert!(
        listed.status.success(),
        "kedge get containers exits 0 beside a poison entry: {}",
        stderr(&listed)
    );
    let row = stdout(&listed).lines().find(|line| line.contains(poison)).map(str::to_owned);
    let row = row.unwrap_or_else(|| panic!("the poison entry is listed:\n{}", stdout(&listed)));
    assert!(row.contains("Invalid"), "the poison entry's row says Invalid: {row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_and_absurd_numbers_block_nothing() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let cluster = EtcdCluster::start(1).await;
    let store = cluster.store().await;
    let host = format!("hostile-{run}");
    let work = std::env::temp_dir().join(format!("kedge-hostile-{run}"));
    std::fs::create_dir_all(&work).unwrap();

    // A spec a careless hand (or a newer kedge) wrote: `image` is a number.
    let poison = format!("poison-{run}");
    let undecodable = serde_json::json!({
        "apiVersion": "kedge.io/v1",
        "kind": "Container",
        "metadata": {"name": poison, "namespace": "default", "generation": 1},
        "spec": {"image": 42},
    });
    let key = keys::spec_key("default", &poison).unwrap();
    store
        .put(&key, serde_json::to_vec(&undecodable).unwrap(), PutCondition::Absent, 0)
        .await
        .expect("put poison");

    let agent = AgentProcess::start(&store_url(&cluster), &host, &work.join("state-1"));
    agent.wait_serving().await;
    assert_listed_invalid(&agent, &poison);

    let first = format!("first-{run}");
    apply_json(&agent, &work, &unplaced_spec(&first, &run));
    wait_running(&first).await;

    // Absurd numbers are refused naming the field.
    let socket = agent.state_dir.join("kedge.sock");
    let absurd = br#"{"version": "9.9.9", "timeoutSeconds": 18446744073709551615}"#;
    let reply = http_unix(&socket, "POST", "/api/v1/upgrades", Some(absurd)).await;
    assert!(
        matches!(reply.status, 400 | 422),
        "absurd timeout: {} {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    assert!(String::from_utf8_lossy(&reply.body).contains("timeoutSeconds"), "the error names the field");
    let reply =
        http_unix(&socket, "GET", "/api/v1/watch/containers?resourceVersion=9223372036854775807", None).await;
    assert_eq!(reply.status, 400, "overflowing resourceVersion: {}", String::from_utf8_lossy(&reply.body));
    assert!(String::from_utf8_lossy(&reply.body).contains("resourceVersion"), "the error names the field");

    // The leader still places, and the agent still runs, new specs.
    let second = format!("second-{run}");
    apply_json(&agent, &work, &unplaced_spec(&second, &run));
    wait_running(&second).await;

    // After a restart the agent reads the poison entry again and still blocks on nothing.
    drop(agent);
    let agent = AgentProcess::start(&store_url(&cluster), &host, &work.join("state-2"));
    agent.wait_serving().await;
    assert_listed_invalid(&agent, &poison);
    let third = format!("third-{run}");
    apply_json(&agent, &work, &unplaced_spec(&third, &run));
    wait_running(&third).await;
    let first_state = docker_cli(&["inspect", "-f", "{{.State.Running}}", &first]);
    assert_eq!(
        String::from_utf8_lossy(&first_state.stdout).trim(),
        "true",
        "the first spec's container still runs"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn names_and_labels_that_collide_with_kedges_own_are_refused_by_validate() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("collide.yaml");
    std::fs::write(
        &file,
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: probe-kedge-old-abc\nspec:\n  image: kedge-test/app:v1\n  labels:\n    io.kedge.managed-by: me\n",
    )
    .unwrap();
    let output = kedge_command(dir.path()).args(["validate", "-f", file.to_str().unwrap()]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "validate refuses: {}", stderr(&output));
    let errors = format!("{}{}", stdout(&output), stderr(&output));
    assert!(errors.contains("-kedge-old-"), "the name's error is reported: {errors}");
    assert!(errors.contains("io.kedge.managed-by"), "the label's error is reported: {errors}");
}

/// Two documents with four mistakes (a wrong type, a bad quantity, a bad duration and an unknown
/// field) and a valid third one, and each error's start as `kedge` prints it.
fn four_mistakes(namespace: &str) -> (String, [&'static str; 4]) {
    let text = format!(
        "apiVersion: kedge.io/v1
kind: Container
metadata:
  name: web
  namespace: {namespace}
spec:
  image: kedge-test/app:v1
  ports:
    - containerPort: eighty
  resources:
    memory: 12XB
---
apiVersion: kedge.io/v1
kind: Container
metadata:
  name: worker
  namespace: {namespace}
spec:
  image: kedge-test/app:v1
  stopGracePeriod: soon
  restrat: always
---
apiVersion: kedge.io/v1
kind: Container
metadata:
  name: fine
  namespace: {namespace}
spec:
  image: kedge-test/app:v1
"
    );
    let errors = [
        "four.yaml:9:22: spec.ports[0].containerPort: invalid type: string \"eighty\"",
        "four.yaml:11:13: spec.resources.memory: invalid byte size `12XB`",
        "four.yaml:20:20: spec.stopGracePeriod: invalid duration `soon`",
        "four.yaml:21:3: spec.restrat: unknown field `restrat`",
    ];
    (text, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_four_mistakes_lists_all_four_and_changes_nothing() {
    let server = TestServer::start().await;
    let namespace = unique("four");
    let (text, expected) = four_mistakes(&namespace);
    std::fs::write(server.dir.join("four.yaml"), text).unwrap();
    for command in [
        &["validate", "-f", "four.yaml"][..],
        &["apply", "-f", "four.yaml"],
        &["apply", "-f", "four.yaml", "--dry-run=server"],
        &["diff", "-f", "four.yaml"],
    ] {
        let output = server.kedge(command);
        let errors = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "kedge {command:?} refuses the file: {errors}");
        let listed: Vec<&str> = errors.lines().filter(|line| line.starts_with("four.yaml:")).collect();
        assert_eq!(listed.len(), 4, "kedge {command:?} lists four errors:\n{errors}");
        for (line, start) in listed.iter().zip(expected) {
            assert!(line.starts_with(start), "kedge {command:?}: `{line}` starts with `{start}`:\n{errors}");
        }
        assert!(errors.contains("4 error(s) in the input; nothing was changed"), "{errors}");
    }
    // Not even the valid document was applied.
    let listed = server.kedge(&["get", "containers", "-n", &namespace, "-o", "json"]);
    assert!(listed.status.success(), "kedge get: {}", stderr(&listed));
    for name in ["web", "worker", "fine"] {
        assert!(
            !stdout(&listed).contains(&format!("\"{name}\"")),
            "{name} was not applied: {}",
            stdout(&listed)
        );
    }
}

/// Runs `kedge validate -f FILE` under GNU time and answers its output and its peak resident memory
/// in KiB. time(1) waits for its one child with wait4, so the figure is that process's alone,
/// whatever else the test runner's process has started.
fn validate_measured(dir: &Path, file: &Path) -> (std::process::Output, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(time.exists(), "GNU time is needed to measure memory (scripts/test-env installs it)");
    let report = dir.join("rss.txt");
    let mut command = crate::api_support::isolated(std::process::Command::new(time), dir);
    command.arg("-f").arg("%M").arg("-o").arg(&report).arg(crate::api_support::kedge_bin());
    let output = command.arg("validate").arg("-f").arg(file).output().expect("time runs kedge");
    let text = std::fs::read_to_string(&report).expect("time wrote its report");
    let kib = text.lines().last().and_then(|line| line.trim().parse().ok());
    (output, kib.unwrap_or_else(|| panic!("a peak RSS in KiB in {text:?}")))
}

/// A Container whose `spec.command` list is anchored with one long string, and `levels` more lists of
/// ten aliases each to the one before: about `string_bytes * 10^levels` bytes once expanded.
fn alias_bomb(string_bytes: usize, levels: usize) -> String {
    let mut text = format!(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: bomb\nspec:\n  image: kedge-test/app:v1\n  command: &l0 [{}]\n",
        "x".repeat(string_bytes)
    );
    for level in 1..=levels {
        let aliases = vec![format!("*l{}", level - 1); 10].join(", ");
        text.push_str(&format!("  more{level}: &l{level} [{aliases}]\n"));
    }
    text
}

#[test]
fn alias_bombs_are_refused_naming_the_limit_in_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    // About 100 KB expanding to 950 MB, and about 3 KB expanding to 250 MB: kedge used 2 GiB and
    // 295 MiB on them before aliases were bounded by their text.
    for (name, string_bytes, levels) in [("bomb-100k.yaml", 95_000, 4), ("bomb-3k.yaml", 2_500, 5)] {
        let file = dir.path().join(name);
        std::fs::write(&file, alias_bomb(string_bytes, levels)).unwrap();
        let (output, peak_kib) = validate_measured(dir.path(), &file);
        let errors = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{name} is refused: {errors}");
        assert!(
            errors.contains("the document expands to more than 16 MiB of text"),
            "{name}: the refusal names the limit: {errors}"
        );
        assert!(peak_kib < 200 * 1024, "{name}: kedge validate peaked at {peak_kib} KiB, more than 200 MiB");
    }
}

/// A Container file of `namespace/name` whose spec adds `spec_lines` (indented under `spec:`).
fn isolation_file(namespace: &str, name: &str, spec_lines: &str) -> String {
    format!(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  image: kedge-test/app:v1\n{spec_lines}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_isolation_fields_are_refused_by_the_cli_and_the_agent_and_change_nothing() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let cluster = EtcdCluster::start(1).await;
    let host = format!("hostile-iso-{run}");
    let work = std::env::temp_dir().join(format!("kedge-hostile-iso-{run}"));
    std::fs::create_dir_all(&work).unwrap();
    let agent = AgentProcess::start(&store_url(&cluster), &host, &work.join("state"));
    agent.wait_serving().await;
    let namespace = format!("iso-{run}");

    // Through `kedge apply`: each file is refused (exit 2) at its line, column and field, in a short
    // message that does not repeat the megabyte.
    let huge = "x".repeat(1 << 20);
    let devices: String = (0..10_000).map(|i| format!("    - /dev/d{i}\n")).collect();
    let options: String = (0..5_000).map(|_| "    - no-new-privileges\n".to_owned()).collect();
    let cases = [
        (
            "sysctl",
            format!("  sysctls:\n    net.core.somaxconn: '{huge}'\n"),
            "9:25: spec.sysctls.net.core.somaxconn: is 1048576 bytes long",
        ),
        ("devices", format!("  devices:\n{devices}"), "9:5: spec.devices: at most 256 entries (10000 given)"),
        (
            "options",
            format!("  securityOpt:\n{options}"),
            "9:5: spec.securityOpt: at most 64 entries (5000 given)",
        ),
        ("device", format!("  devices: ['/dev/{huge}']\n"), "8:13: spec.devices[0]: is 1048581 bytes long"),
    ];
    for (name, spec_lines, expected) in &cases {
        let file = work.join(format!("{name}.yaml"));
        std::fs::write(&file, isolation_file(&namespace, name, spec_lines)).unwrap();
        let output = agent.kedge(&["apply", "-f", file.to_str().unwrap()]);
        let errors = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "kedge apply refuses {name}: {}",
            &errors[..errors.len().min(2000)]
        );
        assert!(
            errors.contains(&format!("{name}.yaml:{expected}")),
            "{name}: {}",
            &errors[..errors.len().min(2000)]
        );
        assert!(errors.len() < 4096, "{name}: the errors are short ({} bytes)", errors.len());
    }

    // Past the CLI, straight to the agent's API: the same limits hold there (the 1 MiB value is over
    // the body limit before it is read).
    let socket = agent.state_dir.join("kedge.sock");
    let spec = |name: &str, extra: serde_json::Value| {
        let mut spec = serde_json::json!({"image": "kedge-test/app:v1"});
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        serde_json::json!({
            "apiVersion": "kedge.io/v1", "kind": "Container",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec,
        })
        .to_string()
    };
    let path = |name: &str| format!("/api/v1/namespaces/{namespace}/containers/{name}");
    let many: Vec<String> = (0..10_000).map(|i| format!("/dev/d{i}")).collect();
    let body = spec("devices", serde_json::json!({"devices": many}));
    let reply = http_unix(&socket, "PUT", &path("devices"), Some(body.as_bytes())).await;
    let text = String::from_utf8_lossy(&reply.body);
    assert_eq!(reply.status, 422, "10,000 devices: {}", &text[..text.len().min(2000)]);
    assert!(
        text.contains("spec.devices") && text.contains("at most 256"),
        "the error names the field: {text}"
    );
    let body = spec("sysctl", serde_json::json!({"sysctls": {"net.core.somaxconn": huge}}));
    let reply = http_unix(&socket, "PUT", &path("sysctl"), Some(body.as_bytes())).await;
    assert_eq!(reply.status, 413, "a 1 MiB sysctl: {}", String::from_utf8_lossy(&reply.body));

    // Nothing was stored, and the agent still answers.
    let listed = agent.kedge(&["get", "containers", "-n", &namespace, "-o", "json"]);
    assert!(listed.status.success(), "kedge get: {}", stderr(&listed));
    for (name, _, _) in &cases {
        assert!(
            !stdout(&listed).contains(&format!("\"{name}\"")),
            "{name} was not stored: {}",
            stdout(&listed)
        );
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&work);
}

/// `kedge completion bash | head -c 1`: the script (about 140 KB) outgrows the pipe's buffer, so the
/// CLI writes again after its reader has gone; it stops quietly, exit 141, nothing on stderr.
#[test]
fn a_closed_output_pipe_ends_the_cli_quietly() {
    use std::io::Read;
    let mut child = kedge_command(&std::env::temp_dir())
        .args(["completion", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kedge runs");
    let mut first = [0u8; 1];
    child.stdout.take().expect("piped").read_exact(&mut first).expect("the script's first byte");
    // The reader is dropped here, as `head` exits.
    let output = child.wait_with_output().expect("kedge ends");
    let errors = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(141), "{errors}");
    assert!(errors.is_empty(), "quiet: {errors}");
}
