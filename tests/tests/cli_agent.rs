//! The real `kedge` binary against a real `kedge agent` on the test Docker Engine: the agent creates its
//! token (0600) and socket, apply makes a real container, wait/get/describe see the agent's status, and
//! delete removes the container; its text log written to a file carries no terminal colour codes.
//! Needs `scripts/test-env up` (fails loudly without it).

use crate::api_support;

use std::process::Stdio;
use std::time::Duration;

use api_support::{kedge_command, stderr, stdout, AgentGuard};
use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup, TEST_LABEL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_get_describe_delete_against_a_real_agent() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let state_dir = std::env::temp_dir().join(format!("kedge-cli-agent-{run}"));
    let host = format!("cli-{run}");
    let agent = AgentGuard::spawn(&state_dir, &host, &[]);
    let socket = agent.socket_url();
    let kedge = |args: &[&str]| agent.kedge(args);
    agent.wait_api().await;
    let token_file = state_dir.join("api-token");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the token file is the owner's only");
    let version = kedge(&["version"]);
    assert!(stdout(&version).contains(&format!("on host {host}")), "{}", stdout(&version));

    let name = format!("e2e-{run}");
    let ns = format!("ns-{run}");
    let spec = state_dir.join("specs/app.yaml");
    std::fs::create_dir_all(spec.parent().unwrap()).unwrap();
    std::fs::write(
        &spec,
        format!(
            "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n  image: kedge-test/app:v1\n  labels:\n    {TEST_LABEL}: {run}\n  placement:\n    host: {host}\n\
             \x20 command: [/bin/sh, -c, 'echo hello from {name}; echo to stderr >&2; exec sleep 3600']\n"
        ),
    )
    .unwrap();
    let applied = kedge(&["apply", "-f", spec.parent().unwrap().to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    assert_eq!(stdout(&applied), format!("container/{name} created\n"));

    let waited =
        kedge(&["wait", "container", &name, "-n", &ns, "--for", "condition=Ready", "--timeout", "90s"]);
    assert!(waited.status.success(), "wait: {}{}", stdout(&waited), stderr(&waited));
    let running = docker_cli(&["inspect", "-f", "{{.State.Running}}", &name]);
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "true");

    let table = stdout(&kedge(&["get", "containers", "-n", &ns]));
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(&host) && row.contains("kedge-test/app:v1") && row.contains(" True "), "{table}");
    // The Done-when forms of #22, as typed, against what the engine runs.
    let id = docker_cli(&["inspect", "-f", "{{.Id}}", &name]);
    let id = String::from_utf8_lossy(&id.stdout).trim().to_owned();
    let by_jsonpath = kedge(&["get", "container", &name, "-n", &ns, "-o", "jsonpath={.status.containerId}"]);
    assert_eq!(stdout(&by_jsonpath), format!("{id}\n"), "{}", stderr(&by_jsonpath));
    let columns = kedge(&[
        "get",
        "containers",
        "-n",
        &ns,
        "-o",
        "custom-columns=NAME:.metadata.name,IMAGE:.spec.image",
    ]);
    let columns: Vec<Vec<String>> =
        stdout(&columns).lines().map(|line| line.split_whitespace().map(str::to_owned).collect()).collect();
    assert_eq!(
        columns,
        [vec!["NAME".to_owned(), "IMAGE".into()], vec![name.clone(), "kedge-test/app:v1".into()]]
    );
    let named = kedge(&["get", "containers", "-n", &ns, "-o", "name"]);
    assert_eq!(stdout(&named), format!("container/{name}\n"), "{}", stderr(&named));
    let described = stdout(&kedge(&["describe", "container", &name, "-n", &ns]));
    assert!(described.contains(&format!("Host:             {host}\n")), "{described}");
    assert!(described.contains("  Ready "), "{described}");
    assert_eq!(kedge(&["diff", "-f", spec.to_str().unwrap()]).status.code(), Some(0));
    let events = stdout(&kedge(&["events", "--for", &name, "-n", &ns, "-o", "wide"]));
    assert!(events.starts_with("LAST SEEN ") && events.contains(&format!("container/{name}")), "{events}");
    assert!(events.contains(&host), "{events}");
    let hosts = stdout(&kedge(&["get", "hosts"]));
    let row = hosts.lines().find(|l| l.starts_with(&host)).unwrap_or_else(|| panic!("{hosts}"));
    assert!(row.contains(" True "), "the agent's host is registered and ready: {hosts}");

    // Logs: history, with stdout and stderr kept apart, then following.
    let logs = kedge(&["logs", &name, "-n", &ns]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    assert_eq!(stdout(&logs), format!("hello from {name}\n"));
    assert_eq!(stderr(&logs), "to stderr\n");
    let mut follower = kedge_command(&std::env::temp_dir())
        .env("KEDGE_SERVER", &socket)
        .args(["logs", &name, "-n", &ns, "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kedge logs -f runs");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(follower.stdout.take().unwrap()), &mut first)
        .unwrap();
    assert_eq!(first, format!("hello from {name}\n"));
    assert_eq!(follower.try_wait().unwrap(), None, "-f keeps following a running container");
    follower.kill().unwrap();
    follower.wait().unwrap();
    // With the engine's timestamps; and --since leaves out what is older than its window.
    let stamped = stdout(&kedge(&["logs", &name, "-n", &ns, "--timestamps"]));
    let (stamp, text) = stamped.trim_end().split_once(' ').unwrap_or_else(|| panic!("{stamped:?}"));
    assert!(stamp.starts_with("20") && stamp.contains('T') && stamp.ends_with('Z'), "{stamped:?}");
    assert_eq!(text, format!("hello from {name}"));
    assert_eq!(stdout(&kedge(&["logs", &name, "-n", &ns, "--since", "1h"])), format!("hello from {name}\n"));
    eventually("--since 1s leaves out the line written at start", Duration::from_secs(30), || async {
        let recent = kedge(&["logs", &name, "-n", &ns, "--since", "1s"]);
        (recent.status.success() && stdout(&recent).is_empty()).then_some(())
    })
    .await;

    // exec: the command's output on the matching streams, and its exit code as ours.
    let ran = kedge(&["exec", &name, "-n", &ns, "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(ran.status.code(), Some(3), "{}", stderr(&ran));
    assert_eq!((stdout(&ran).as_str(), stderr(&ran).as_str()), ("out\n", "err\n"));
    let as_nobody = kedge(&[
        "exec",
        "-u",
        "65534",
        "-w",
        "/tmp",
        &format!("container/{name}"),
        "-n",
        &ns,
        "--",
        "sh",
        "-c",
        "id -u; pwd",
    ]);
    assert_eq!(as_nobody.status.code(), Some(0), "{}", stderr(&as_nobody));
    assert_eq!(stdout(&as_nobody), "65534\n/tmp\n");
    let mut piped = kedge_command(&std::env::temp_dir())
        .env("KEDGE_SERVER", &socket)
        .args(["exec", "-i", &name, "-n", &ns, "--", "sh", "-c", "wc -l; tr a-z A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), b"one\ntwo\n").unwrap();
    let piped = piped.wait_with_output().unwrap();
    assert_eq!(piped.status.code(), Some(0), "{}", stderr(&piped));
    assert_eq!(stdout(&piped).split_whitespace().next(), Some("2"), "{}", stdout(&piped));
    // More input than one request may carry is refused before anything is sent (and not read whole).
    let mut flood = kedge_command(&std::env::temp_dir())
        .env("KEDGE_SERVER", &socket)
        .args(["exec", "-i", &name, "-n", &ns, "--", "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = flood.stdin.take().unwrap();
    // The CLI stops reading at the limit: the rest of the write may meet a closed pipe.
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut input, &vec![b'x'; 4 << 20]).ok());
    let flood = flood.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(flood.status.code(), Some(2), "{}", stderr(&flood));
    assert!(stderr(&flood).contains("at most 256 KiB"), "{}", stderr(&flood));
    assert_eq!(stdout(&flood), "", "nothing ran");
    let terminal = kedge(&["exec", "-it", &name, "-n", &ns, "--", "sh"]);
    assert_eq!(terminal.status.code(), Some(2), "{}", stderr(&terminal));
    let missing = kedge(&["exec", "nothing-here", "-n", &ns, "--", "true"]);
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));
    let exec_events = stdout(&kedge(&["events", "--for", &name, "-n", &ns]));
    assert!(exec_events.contains("Exec") && exec_events.contains("ran `sh`"), "{exec_events}");
    // --for KIND/NAME and --types narrow the list; the kind must match the object's.
    let normal = kedge(&["events", "--for", &format!("container/{name}"), "-n", &ns, "--types", "Normal"]);
    assert!(stdout(&normal).contains("Exec"), "{}{}", stdout(&normal), stderr(&normal));
    let warnings = kedge(&[
        "events",
        "--for",
        &format!("container/{name}"),
        "-n",
        &ns,
        "--types",
        "Warning",
        "-o",
        "jsonpath={.items[*].type}",
    ]);
    assert!(warnings.status.success(), "{}", stderr(&warnings));
    assert!(!stdout(&warnings).contains("Normal"), "only Warning events: {}", stdout(&warnings));
    let other_kind = kedge(&["events", "--for", &format!("containerset/{name}"), "-n", &ns, "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&other_kind)).unwrap();
    assert_eq!(listed["items"], serde_json::json!([]), "no ContainerSet of that name has events");
    let bad_kind = kedge(&["events", "--for", &format!("pod/{name}"), "-n", &ns]);
    assert_eq!(bad_kind.status.code(), Some(2), "{}", stderr(&bad_kind));

    let deleted = kedge(&["delete", "container", &name, "-n", &ns]);
    assert_eq!(stdout(&deleted), format!("container/{name} deleted\n"));
    assert!(kedge(&["wait", "container", &name, "-n", &ns, "--for", "delete", "--timeout", "10s"])
        .status
        .success());
    eventually("the agent removes the container", Duration::from_secs(60), || async {
        let inspect = docker_cli(&["inspect", &name]);
        (!inspect.status.success()).then_some(())
    })
    .await;
    drop(agent);
}

/// An agent whose log goes to a file (a service manager's, `2>agent.log`) writes plain text: no ANSI
/// colour codes, even without NO_COLOR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_text_log_in_a_file_has_no_colour_codes() {
    let run = run_id();
    let state_dir = std::env::temp_dir().join(format!("kedge-plain-log-{run}"));
    std::fs::create_dir_all(&state_dir).unwrap();
    let log_path = state_dir.join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = std::process::Command::new(kedge_tests::kedge_bin())
        .args(["agent", "--state-dir", state_dir.to_str().unwrap(), "--host-name", &format!("plain-{run}")])
        .args(["--listen", "127.0.0.1:0"])
        .env("DOCKER_HOST", &kedge_tests::TestEnv::get().docker_host)
        .env("KEDGE_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("KEDGE_STORE")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("kedge agent starts");
    let _agent = AgentGuard { child, state_dir: state_dir.clone(), keep_state: false };
    let text = eventually("the agent logs that its API listens", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log_path).ok()?;
        text.contains("API listening").then_some(text)
    })
    .await;
    assert!(text.contains("INFO"), "a text log: {text}");
    assert!(!text.contains('\u{1b}'), "no escape codes in a log file: {text:?}");
}

/// `apply --wait` returns once what it applied is Ready and Synced at the applied generation (not
/// before: the status read right after says so), and at `--timeout` names what is not, and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_wait_returns_when_ready_and_names_what_is_not() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let state_dir = std::env::temp_dir().join(format!("kedge-apply-wait-{run}"));
    let host = format!("wait-{run}");
    let agent = AgentGuard::spawn(&state_dir, &host, &[]);
    let kedge = |args: &[&str]| agent.kedge(args);
    agent.wait_api().await;
    let ns = format!("ns-{run}");
    let spec = |name: &str, image: &str| {
        format!(
            "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n  image: {image}\n  labels:\n    {TEST_LABEL}: {run}\n  placement:\n    host: {host}\n\
             \x20 updatePolicy:\n    pullPolicy: never\n  command: [/bin/sh, -c, 'exec sleep 3600']\n"
        )
    };
    let dir = state_dir.join("specs");
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    let name = format!("waited-{run}");
    std::fs::write(&good, spec(&name, "kedge-test/app:v1")).unwrap();

    let applied = kedge(&["apply", "-f", good.to_str().unwrap(), "--wait", "--timeout", "90s"]);
    assert!(applied.status.success(), "{}{}", stdout(&applied), stderr(&applied));
    assert_eq!(stdout(&applied), format!("container/{name} created\ncontainer/{name} ready\n"));
    let object: serde_json::Value =
        serde_json::from_str(&stdout(&kedge(&["get", "container", &name, "-n", &ns, "-o", "json"]))).unwrap();
    assert_eq!(object["status"]["observedGeneration"], object["metadata"]["generation"], "{object}");
    let conditions = object["status"]["conditions"].as_array().cloned().unwrap_or_default();
    for kind in ["Ready", "Synced"] {
        assert!(
            conditions.iter().any(|c| c["type"] == kind && c["status"] == "True"),
            "{kind} is True once apply --wait returned: {object}"
        );
    }

    // An image that is not there and may not be pulled never gets Ready: exit 6, naming it.
    let missing = format!("never-{run}");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, spec(&missing, &format!("kedge-test/absent-{run}:v1"))).unwrap();
    let timed_out = kedge(&["apply", "-f", bad.to_str().unwrap(), "--wait", "--timeout", "4s"]);
    assert_eq!(timed_out.status.code(), Some(6), "{}{}", stdout(&timed_out), stderr(&timed_out));
    let said = stderr(&timed_out);
    assert!(said.contains(&format!("container/{missing} ({ns}): ")), "{said}");
    assert!(said.contains("timed out after 4s: 1 of 1 object(s) not ready"), "{said}");

    let dry = kedge(&["apply", "-f", good.to_str().unwrap(), "--wait", "--dry-run"]);
    assert_eq!(dry.status.code(), Some(2), "{}", stderr(&dry));
}

/// `kedge rollout status|history|undo` on a ContainerSet run by a real agent (the embedded store's
/// single agent leads the scheduler): v1 rolled out, then v2, then undone back to v1, whose image the
/// children's containers then run; each status wait returns only once every replica is up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_history_and_undo_of_a_set_on_a_real_agent() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let state_dir = std::env::temp_dir().join(format!("kedge-rollout-{run}"));
    let host = format!("roll-{run}");
    let agent = AgentGuard::spawn(&state_dir, &host, &[]);
    let kedge = |args: &[&str]| agent.kedge(args);
    agent.wait_api().await;
    let (ns, set) = (format!("ns-{run}"), format!("pool-{run}"));
    let file = state_dir.join("set.yaml");
    let write = |image: &str| {
        std::fs::write(
            &file,
            format!(
                "apiVersion: kedge.io/v1\nkind: ContainerSet\nmetadata:\n  name: {set}\n  namespace: {ns}\n\
                 spec:\n  replicas: 2\n  rollingUpdate:\n    batchSize: 2\n  template:\n    spec:\n\
                 \x20     image: {image}\n      labels:\n        {TEST_LABEL}: {run}\n      minReadySeconds: 0\n"
            ),
        )
        .unwrap()
    };
    let status = |what: &str| {
        let out = kedge(&["rollout", "status", "containerset", &set, "-n", &ns, "--timeout", "120s"]);
        assert!(out.status.success(), "{what}: {}{}", stdout(&out), stderr(&out));
        assert_eq!(stdout(&out), format!("containerset/{set} ready\n"), "{what}");
    };
    let history = || -> Vec<(String, String)> {
        let out = kedge(&["rollout", "history", "containerset", &set, "-n", &ns]);
        assert!(out.status.success(), "{}", stderr(&out));
        // IMAGE and STATE of each row under the header.
        stdout(&out)
            .lines()
            .skip(1)
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                (words[1].to_owned(), words[2].to_owned())
            })
            .collect()
    };
    let images = || -> Vec<String> {
        (0..2)
            .map(|ordinal| {
                let out = docker_cli(&["inspect", "-f", "{{.Config.Image}}", &format!("{set}-{ordinal}")]);
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            })
            .collect()
    };

    write("kedge-test/app:v1");
    let apply = || {
        let out = kedge(&["apply", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    apply();
    status("v1");
    assert_eq!(history(), [("kedge-test/app:v1".to_owned(), "current".to_owned())]);
    let nothing = kedge(&["rollout", "undo", "containerset", &set, "-n", &ns]);
    assert_eq!(nothing.status.code(), Some(2), "no earlier revision: {}", stderr(&nothing));

    write("kedge-test/app:v2");
    apply();
    status("v2");
    assert_eq!(images(), ["kedge-test/app:v2", "kedge-test/app:v2"]);
    let v2_then_v1 = [
        ("kedge-test/app:v2".to_owned(), "current".to_owned()),
        ("kedge-test/app:v1".to_owned(), "replaced".to_owned()),
    ];
    assert_eq!(history(), v2_then_v1);

    let undone = kedge(&["rollout", "undo", "containerset", &set, "-n", &ns]);
    assert!(undone.status.success(), "{}", stderr(&undone));
    assert!(
        stdout(&undone).starts_with(&format!("containerset/{set} rolled back to revision ")),
        "{}",
        stdout(&undone)
    );
    status("undone to v1");
    assert_eq!(images(), ["kedge-test/app:v1", "kedge-test/app:v1"]);
    let v1_then_v2 = [
        ("kedge-test/app:v1".to_owned(), "current".to_owned()),
        ("kedge-test/app:v2".to_owned(), "replaced".to_owned()),
    ];
    assert_eq!(history(), v1_then_v2);
    let unknown = kedge(&["rollout", "undo", "containerset", &set, "-n", &ns, "--to-revision", "zzzz"]);
    assert_eq!(unknown.status.code(), Some(3), "{}", stderr(&unknown));

    assert!(kedge(&["delete", "containerset", &set, "-n", &ns]).status.success());
}

/// `kedge top` samples a running container through its agent: CPU, memory against the spec's limit,
/// processes; without names, the namespace's containers on the agent's host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_samples_containers_through_their_agent() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let state_dir = std::env::temp_dir().join(format!("kedge-top-{run}"));
    let host = format!("top-{run}");
    let agent = AgentGuard::spawn(&state_dir, &host, &[]);
    let kedge = |args: &[&str]| agent.kedge(args);
    agent.wait_api().await;
    let (ns, name) = (format!("ns-{run}"), format!("busy-{run}"));
    let file = state_dir.join("busy.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n  image: kedge-test/app:v1\n  labels:\n    {TEST_LABEL}: {run}\n  resources:\n    memory: 64Mi\n\
             \x20 command: [/bin/sh, -c, 'sleep 3600 & sleep 3600 & exec sleep 3600']\n"
        ),
    )
    .unwrap();
    let applied = kedge(&["apply", "-f", file.to_str().unwrap(), "--wait", "--timeout", "90s"]);
    assert!(applied.status.success(), "{}", stderr(&applied));

    for args in [vec!["top", name.as_str(), "-n", ns.as_str()], vec!["top", "-n", ns.as_str()]] {
        let out = kedge(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME ") && lines[0].contains("MEM USAGE / LIMIT"), "{text}");
        assert_eq!(lines.len(), 2, "one container: {text}");
        let row = lines[1];
        assert!(row.starts_with(&name), "{text}");
        assert!(row.contains(" / 64MiB "), "memory against the spec's limit: {text}");
        assert!(row.trim_end().ends_with(" 3"), "three processes: {text}");
    }
    let missing = kedge(&["top", "nothing-here", "-n", &ns]);
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));
}
