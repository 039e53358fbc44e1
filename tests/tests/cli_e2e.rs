//! The real `kedge` binary against a real API server (in-process, on an embedded store): apply a
//! directory, get, describe, diff, wait, delete, prune, watch, configuration and exit codes.

use crate::api_support;

use std::path::Path;
use std::process::Stdio;

use api_support::{kedge_command, stderr, stdout, unique, TestServer};
use kedge_controller::store::{objects, PutCondition};
use kedge_crds::{Condition, ConditionStatus, ContainerStatus};

fn spec_yaml(ns: &str, name: &str, image: &str) -> String {
    format!(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {name}\nspec:\n  image: {image}\n"
    )
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[track_caller]
fn assert_exit(output: &std::process::Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code\nstdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

fn ready(host: &str) -> ContainerStatus {
    ContainerStatus {
        observed_generation: Some(1),
        host: Some(host.into()),
        conditions: vec![Condition {
            kind: "Ready".into(),
            status: ConditionStatus::True,
            reason: "Running".into(),
            message: "running".into(),
            last_transition_time: "2026-11-21T10:00:00Z".into(),
            observed_generation: Some(1),
        }],
        ..ContainerStatus::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_a_directory_then_get_describe_diff_wait_and_delete() {
    let server = TestServer::start().await;
    let ns = unique("e2e");
    let dir = server.dir.join("specs");
    write(&dir.join("web.yaml"), &spec_yaml(&ns, "web", "nginx:1.27"));
    write(
        &dir.join("nested/workers.yaml"),
        &format!(
            "{}---\n{}",
            spec_yaml(&ns, "worker-a", "busybox:1"),
            spec_yaml(&ns, "worker-b", "busybox:1")
        ),
    );
    let d = dir.to_str().unwrap();

    let applied = server.kedge(&["apply", "-f", d]);
    assert_exit(&applied, 0);
    assert_eq!(
        stdout(&applied),
        "container/worker-a created\ncontainer/worker-b created\ncontainer/web created\n"
    );
    let again = server.kedge(&["apply", "-f", d]);
    assert_exit(&again, 0);
    assert!(stdout(&again).lines().all(|l| l.ends_with(" unchanged")), "{}", stdout(&again));

    let table = server.kedge(&["get", "containers", "-n", &ns]);
    assert_exit(&table, 0);
    let table = stdout(&table);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME ") && lines[0].contains("READY") && lines[0].ends_with("AGE"),
        "{table}"
    );
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[1].starts_with("web ") && lines[1].contains("nginx:1.27"), "{table}");

    let names = server.kedge(&["get", "containers", "-n", &ns, "-l", "app in (web,worker-b)", "-o", "name"]);
    assert_eq!(stdout(&names), "container/web\ncontainer/worker-b\n");
    let json = server.kedge(&["get", "container", "web", "-n", &ns, "-o", "json"]);
    assert_exit(&json, 0);
    let object: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(object["metadata"]["generation"], 1);
    // An apply without --prune puts nothing in an apply set.
    assert_eq!(object["metadata"]["labels"].get("kedge.io/applyset"), None, "{object}");
    let yaml = server.kedge(&["get", "container", "web", "-n", &ns, "-o", "yaml"]);
    assert!(stdout(&yaml).contains("  image: nginx:1.27\n"), "{}", stdout(&yaml));

    // No difference right after apply; a changed file is a diff and exit 1, and nothing is written.
    let same = server.kedge(&["diff", "-f", d]);
    assert_exit(&same, 0);
    assert_eq!(stdout(&same), "");
    write(&dir.join("web.yaml"), &spec_yaml(&ns, "web", "nginx:1.28"));
    let changed = server.kedge(&["diff", "-f", d]);
    assert_exit(&changed, 1);
    let text = stdout(&changed);
    assert!(text.contains(&format!("--- live/container/{ns}/web\n+++ local/container/{ns}/web\n")), "{text}");
    assert!(text.contains("\n-  image: nginx:1.27\n+  image: nginx:1.28\n"), "{text}");
    let dry = server.kedge(&["apply", "-f", d, "--dry-run=server"]);
    assert!(stdout(&dry).contains("container/web configured (server dry run)"), "{}", stdout(&dry));
    assert_exit(&server.kedge(&["diff", "-f", d]), 1);

    // wait blocks until an agent (here: the test, writing status) reports Ready.
    let waiter = kedge_command(&server.dir)
        .env("KEDGE_SERVER", &server.url)
        .env("KEDGE_TOKEN", &server.token)
        .args(["wait", "container", "web", "-n", &ns, "--for", "condition=Ready", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    objects::put_status(server.store.as_ref(), &ns, "web", &ready("h1"), PutCondition::Always).await.unwrap();
    let waited = tokio::task::spawn_blocking(move || waiter.wait_with_output()).await.unwrap().unwrap();
    assert_exit(&waited, 0);
    assert_eq!(stdout(&waited), "container/web condition Ready met\n");
    let timed_out = server.kedge(&[
        "wait",
        "container",
        "worker-a",
        "-n",
        &ns,
        "--for",
        "condition=Ready",
        "--timeout",
        "1s",
    ]);
    assert_exit(&timed_out, 6);
    assert!(stderr(&timed_out).contains("timed out after 1s"), "{}", stderr(&timed_out));

    let described = server.kedge(&["describe", "container", "web", "-n", &ns]);
    assert_exit(&described, 0);
    let page = stdout(&described);
    for needle in [
        "Name:             web\n",
        "Host:             h1\n",
        "Conditions:\n",
        "  Ready  ",
        "Drift:\n  <none>\n",
        "Events:\n",
    ] {
        assert!(page.contains(needle), "{needle:?} in\n{page}");
    }
    let wide = server.kedge(&["get", "containers", "-n", &ns, "-o", "wide"]);
    let wide = stdout(&wide);
    assert!(wide.lines().next().unwrap().contains("GENERATION"), "{wide}");
    assert!(
        wide.lines().any(|l| l.starts_with("web ") && l.contains(" h1 ") && l.contains(" True ")),
        "{wide}"
    );

    let deleted = server.kedge(&["delete", "container", "worker-a", "-n", &ns]);
    assert_exit(&deleted, 0);
    assert_eq!(stdout(&deleted), "container/worker-a deleted\n");
    assert_exit(
        &server.kedge(&["wait", "container", "worker-a", "-n", &ns, "--for", "delete", "--timeout", "10s"]),
        0,
    );
    let missing = server.kedge(&["get", "container", "worker-a", "-n", &ns]);
    assert_exit(&missing, 3);
    assert!(
        stderr(&missing).starts_with("error: container ") && stderr(&missing).contains("\nhint: "),
        "{}",
        stderr(&missing)
    );
    // What `-o name` prints is a name other commands take.
    assert_exit(&server.kedge(&["describe", "container", "container/web", "-n", &ns]), 0);
    let by_label = server.kedge(&["delete", "container", "-n", &ns, "-l", "app=worker-b"]);
    assert_eq!(stdout(&by_label), "container/worker-b deleted\n");
    assert_exit(&server.kedge(&["delete", "container", "worker-a", "-n", &ns]), 3);
    assert_exit(&server.kedge(&["delete", "container", "worker-a", "-n", &ns, "--ignore-not-found"]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_all_prints_each_kind_with_kind_slash_name() {
    let server = TestServer::start().await;
    let ns = unique("all");
    let set = format!(
        "apiVersion: kedge.io/v1\nkind: ContainerSet\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  replicas: 2\n  \
template:\n    spec:\n      image: nginx:1.27\n"
    );
    let file = server.dir.join("all.yaml");
    write(
        &file,
        &[spec_yaml(&ns, "db", "postgres:16"), spec_yaml(&ns, "cache", "redis:7"), set].join("---\n"),
    );
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);

    let all = server.kedge(&["get", "all", "-n", &ns]);
    assert_exit(&all, 0);
    let text = stdout(&all);
    let sections: Vec<&str> = text.split("\n\n").collect();
    assert_eq!(sections.len(), 2, "containers, then sets (no GitSources here):\n{text}");
    let first_words = |section: &str| -> Vec<String> {
        section.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_owned).collect()
    };
    let mut containers = first_words(sections[0]);
    containers[1..].sort();
    assert_eq!(containers, ["NAME", "container/cache", "container/db"], "{text}");
    assert_eq!(first_words(sections[1]), ["NAME", "containerset/web"], "{text}");

    // Every namespace: NAME is the second column.
    let everywhere = server.kedge(&["get", "all", "-A"]);
    assert_exit(&everywhere, 0);
    let row = stdout(&everywhere).lines().find(|line| line.starts_with(ns.as_str())).map(str::to_owned);
    let words: Vec<String> = row.unwrap_or_default().split_whitespace().map(str::to_owned).collect();
    assert!(words.get(1).is_some_and(|name| name.starts_with("container")), "{words:?}");

    let names = server.kedge(&["get", "all", "-n", &ns, "-o", "name", "--sort-by", ".metadata.name"]);
    assert_exit(&names, 0);
    assert_eq!(stdout(&names), "container/cache\ncontainer/db\ncontainerset/web\n");

    let empty = server.kedge(&["get", "all", "-n", &unique("none")]);
    assert_exit(&empty, 0);
    assert_eq!(stdout(&empty), "");
    assert!(stderr(&empty).starts_with("No resources found in namespace "), "{}", stderr(&empty));
    for refused in [&["-o", "json"][..], &["-w"], &["db"]] {
        let mut args = vec!["get", "all", "-n", ns.as_str()];
        args.extend_from_slice(refused);
        assert_exit(&server.kedge(&args), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_kubectl_templates_columns_sorted_and_several_names() {
    let server = TestServer::start().await;
    let ns = unique("tpl");
    let file = server.dir.join("three.yaml");
    write(
        &file,
        &[("web", "nginx:1.27"), ("db", "postgres:16"), ("cache", "redis:7")]
            .map(|(name, image)| spec_yaml(&ns, name, image))
            .join("---\n"),
    );
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    let mut status = ready("h1");
    status.container_id = Some("c0ffee".into());
    objects::put_status(server.store.as_ref(), &ns, "web", &status, PutCondition::Always).await.unwrap();
    let get = |args: &[&str]| {
        let mut all = vec!["get", "containers", "-n", ns.as_str()];
        all.extend_from_slice(args);
        server.kedge(&all)
    };

    // One object: the path reads it; a list: `.items`.
    let id = get(&["web", "-o", "jsonpath={.status.containerId}"]);
    assert_exit(&id, 0);
    assert_eq!(stdout(&id), "c0ffee\n");
    let names = get(&["-o", "jsonpath={.items[*].metadata.name}", "--sort-by", ".metadata.name"]);
    assert_eq!(stdout(&names), "cache db web\n");
    let lines = get(&["-o", r#"jsonpath={range .items[*]}{.metadata.name}={.spec.image}{"\n"}{end}"#]);
    let mut lines: Vec<String> = stdout(&lines).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["cache=redis:7", "db=postgres:16", "web=nginx:1.27"]);
    let filtered = get(&["-o", r#"jsonpath={.items[?(@.spec.image=="redis:7")].metadata.name}"#]);
    assert_eq!(stdout(&filtered), "cache\n");

    let columns = get(&[
        "-o",
        "custom-columns=NAME:.metadata.name,IMAGE:.spec.image,ID:.status.containerId",
        "--sort-by",
        "{.spec.image}",
    ]);
    assert_exit(&columns, 0);
    let text = stdout(&columns);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "IMAGE", "ID"],
            vec!["web", "nginx:1.27", "c0ffee"],
            vec!["db", "postgres:16", "<none>"],
            vec!["cache", "redis:7", "<none>"],
        ],
        "{text}"
    );
    let bare = get(&["--no-headers", "--sort-by", ".metadata.name"]);
    let bare = stdout(&bare);
    let first_words: Vec<&str> = bare.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(first_words, ["cache", "db", "web"], "{bare}");

    // Several names in one get; a missing one is reported after the found ones, exit 3.
    let two = get(&["web", "container/db", "-o", "name"]);
    assert_exit(&two, 0);
    assert_eq!(stdout(&two), "container/web\ncontainer/db\n");
    let with_missing = get(&["web", "nothing-here", "db", "-o", "name"]);
    assert_exit(&with_missing, 3);
    assert_eq!(stdout(&with_missing), "container/web\ncontainer/db\n");
    assert!(stderr(&with_missing).contains("nothing-here"), "{}", stderr(&with_missing));

    // A bad template is a usage error naming what is wrong, before anything is asked of the server.
    for bad in ["jsonpath={.items[", "custom-columns=NAME", "jsonpath={range .items[*]}{.x}", "tabular"] {
        let refused = get(&["-o", bad]);
        assert_exit(&refused, 2);
        assert!(
            stderr(&refused).contains("-o") || stderr(&refused).contains("output"),
            "{bad}: {}",
            stderr(&refused)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_exactly_the_dropped_spec() {
    let server = TestServer::start().await;
    let ns = unique("prune");
    let dir = server.dir.join("set");
    for name in ["a", "b", "c"] {
        write(&dir.join(format!("{name}.yaml")), &spec_yaml(&ns, name, "busybox:1"));
    }
    // A container of the same namespace applied from elsewhere is not part of the set.
    let other = server.dir.join("other.yaml");
    write(&other, &spec_yaml(&ns, "outsider", "busybox:1"));
    assert_exit(&server.kedge(&["apply", "-f", other.to_str().unwrap()]), 0);
    let d = dir.to_str().unwrap();
    let first = server.kedge(&["apply", "-f", d, "--prune"]);
    assert_exit(&first, 0);
    assert_eq!(stdout(&first), "container/a created\ncontainer/b created\ncontainer/c created\n");

    std::fs::remove_file(dir.join("b.yaml")).unwrap();
    let dry = server.kedge(&["apply", "-f", d, "--prune", "--dry-run=client"]);
    assert_exit(&dry, 0);
    assert!(stdout(&dry).contains("container/b pruned (dry run)\n"), "{}", stdout(&dry));
    let pruned = server.kedge(&["apply", "-f", d, "--prune"]);
    assert_exit(&pruned, 0);
    assert_eq!(stdout(&pruned), "container/a unchanged\ncontainer/c unchanged\ncontainer/b pruned\n");
    let left = server.kedge(&["get", "containers", "-n", &ns, "-o", "name"]);
    assert_eq!(stdout(&left), "container/a\ncontainer/c\ncontainer/outsider\n");
    // Pruning again finds nothing more to delete.
    assert_eq!(
        stdout(&server.kedge(&["apply", "-f", d, "--prune"])),
        "container/a unchanged\ncontainer/c unchanged\n"
    );

    // A named apply set from stdin.
    let mut child = kedge_command(&server.dir)
        .env("KEDGE_SERVER", &server.url)
        .env("KEDGE_TOKEN", &server.token)
        .args(["apply", "-f", "-", "--applyset", "piped", "--prune"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(spec_yaml(&ns, "piped", "busybox:1").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(stdout(&output), "container/piped created\n");
    let stdin_without_name = server.kedge(&["apply", "-f", "-", "--prune"]);
    assert_exit(&stdin_without_name, 2);
}

/// `kedge apply` with stdin `input`.
fn apply_stdin(server: &TestServer, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = kedge_command(&server.dir)
        .env("KEDGE_SERVER", &server.url)
        .env("KEDGE_TOKEN", &server.token)
        .args(["apply", "-f", "-"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_set_membership_is_named_and_one_file_may_depend_on_live_specs() {
    let server = TestServer::start().await;
    let ns = unique("member");
    let set_of = |name: &str| {
        let out = server.kedge(&["get", "container", name, "-n", &ns, "-o", "jsonpath={.metadata.labels}"]);
        assert_exit(&out, 0);
        let labels: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        labels.get("kedge.io/applyset").and_then(|v| v.as_str()).map(str::to_owned)
    };

    // From stdin, no --applyset needed without --prune; nothing joins a set.
    let piped = apply_stdin(&server, &[], &spec_yaml(&ns, "a", "busybox:1"));
    assert_exit(&piped, 0);
    assert_eq!(stdout(&piped), "container/a created\n");
    assert_eq!(set_of("a"), None);

    // A pruning apply adopts what is in no set.
    let dir = server.dir.join("member");
    write(&dir.join("a.yaml"), &spec_yaml(&ns, "a", "busybox:1"));
    write(&dir.join("b.yaml"), &spec_yaml(&ns, "b", "busybox:1"));
    let d = dir.to_str().unwrap();
    assert_exit(&server.kedge(&["apply", "-f", d, "--prune"]), 0);
    let first_set = set_of("a").expect("adopted by the pruning apply");
    assert_eq!(set_of("b").as_deref(), Some(first_set.as_str()));

    // A second -f is another set: the objects of the first are not moved silently, and nothing changes.
    let extra = server.dir.join("extra.yaml");
    write(&extra, &spec_yaml(&ns, "x", "busybox:1"));
    let e = extra.to_str().unwrap();
    let refused = server.kedge(&["apply", "-f", d, "-f", e, "--prune"]);
    assert_exit(&refused, 2);
    let err = stderr(&refused);
    assert!(err.contains(&format!("container/a (namespace {ns}) is in apply set `{first_set}`")), "{err}");
    assert!(err.contains("container/b") && err.contains("--take-ownership"), "{err}");
    let none = server.kedge(&["get", "container", "x", "-n", &ns]);
    assert_exit(&none, 3);
    assert_eq!(set_of("a").as_deref(), Some(first_set.as_str()));
    // Named explicitly, the move happens.
    let moved = server.kedge(&["apply", "-f", d, "-f", e, "--prune", "--take-ownership"]);
    assert_exit(&moved, 0);
    let second_set = set_of("x").expect("x is in the new set");
    assert_ne!(second_set, first_set);
    assert_eq!(set_of("a").as_deref(), Some(second_set.as_str()));

    // An apply without --prune keeps an object in its set, and says unchanged.
    let again = server.kedge(&["apply", "-f", dir.join("a.yaml").to_str().unwrap()]);
    assert_exit(&again, 0);
    assert_eq!(stdout(&again), "container/a unchanged\n");
    assert_eq!(set_of("a").as_deref(), Some(second_set.as_str()));

    // One file whose dependency is live (in the -n namespace, the file naming none).
    let web = server.dir.join("web.yaml");
    write(
        &web,
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  image: nginx:1.27\n  dependsOn: [a]\n  links: [b]\n",
    );
    let w = web.to_str().unwrap();
    let diffed = server.kedge(&["diff", "-f", w, "-n", &ns]);
    assert_exit(&diffed, 1);
    let applied = server.kedge(&["apply", "-f", w, "-n", &ns]);
    assert_exit(&applied, 0);
    assert_eq!(stdout(&applied), "container/web created\n");
    // A target that is nowhere is still refused, with its place in the file, and nothing is written.
    write(
        &web,
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  image: nginx:1.28\n  dependsOn: [a, ghost]\n",
    );
    let ghost = server.kedge(&["apply", "-f", w, "-n", &ns]);
    assert_exit(&ghost, 2);
    assert!(
        stderr(&ghost).contains("web.yaml:7:")
            && stderr(&ghost).contains(&format!("`{ns}/ghost`, which is not among the specs")),
        "{}",
        stderr(&ghost)
    );
    let image = server.kedge(&["get", "container", "web", "-n", &ns, "-o", "jsonpath={.spec.image}"]);
    assert_eq!(stdout(&image), "nginx:1.27\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_sees_a_change_made_by_another_client() {
    let server = TestServer::start().await;
    let ns = unique("watch");
    let file = server.dir.join("web.yaml");
    write(&file, &spec_yaml(&ns, "web", "nginx:1"));
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);

    let watcher = server.watch(&["get", "containers", "-n", &ns, "-w"]);
    watcher.expect_line("the header", |l| l.starts_with("NAME "));
    watcher.expect_line("web at nginx:1", |l| l.starts_with("web ") && l.contains("nginx:1 "));

    // Another client: a second kedge changes the image; the watch shows the new row.
    write(&file, &spec_yaml(&ns, "web", "nginx:2"));
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    watcher.expect_line("web at nginx:2", |l| l.starts_with("web ") && l.contains("nginx:2 "));
    // And an agent's status report shows as a new row too.
    objects::put_status(server.store.as_ref(), &ns, "web", &ready("h9"), PutCondition::Always).await.unwrap();
    watcher.expect_line("web ready on h9", |l| {
        l.starts_with("web ") && l.contains(" h9 ") && l.contains(" True ")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_with_a_hint_and_a_documented_exit_code() {
    let server = TestServer::start().await;
    let ns = unique("errors");

    // No token: refused, exit 5.
    let refused = kedge_command(&server.dir)
        .env("KEDGE_SERVER", &server.url)
        .args(["get", "containers"])
        .output()
        .unwrap();
    assert_exit(&refused, 5);
    let text = stderr(&refused);
    assert!(text.starts_with("error: missing `Authorization: Bearer TOKEN` header\nhint: "), "{text}");
    // Nothing listens: exit 5.
    let unreachable = kedge_command(&server.dir)
        .env("KEDGE_SERVER", "http://127.0.0.1:1")
        .args(["get", "containers"])
        .output()
        .unwrap();
    assert_exit(&unreachable, 5);
    assert!(
        stderr(&unreachable).contains("cannot reach the kedge API at http://127.0.0.1:1"),
        "{}",
        stderr(&unreachable)
    );

    // An invalid file: exit 2, file:line:column and field path, and nothing applied.
    let bad = server.dir.join("bad.yaml");
    write(&bad, &format!("{}  ports: [\"70000:80\"]\n", spec_yaml(&ns, "bad", "nginx")));
    let rejected = server.kedge(&["apply", "-f", bad.to_str().unwrap()]);
    assert_exit(&rejected, 2);
    assert!(stderr(&rejected).contains("bad.yaml:10:"), "{}", stderr(&rejected));
    assert!(stderr(&rejected).contains("spec.ports[0]"), "{}", stderr(&rejected));
    assert_exit(&server.kedge(&["get", "container", "bad", "-n", &ns]), 3);
    assert_exit(&server.kedge(&["validate", "-f", bad.to_str().unwrap()]), 2);

    // A bad selector is the server's 400: exit 2.
    assert_exit(&server.kedge(&["get", "containers", "-l", "app in (a"]), 2);
    // Logs of a container that has no spec: not found.
    assert_exit(&server.kedge(&["logs", "no-such-container", "-n", &ns]), 3);
    // Usage errors are clap's exit 2.
    assert_exit(&server.kedge(&["get", "nonsense"]), 2);

    // Every command's help has an example.
    for command in [
        "agent",
        "apply",
        "get",
        "describe",
        "diff",
        "delete",
        "wait",
        "logs",
        "events",
        "validate",
        "schema",
        "completion",
        "config",
        "version",
    ] {
        let help = server.kedge(&[command, "--help"]);
        assert_exit(&help, 0);
        assert!(stdout(&help).contains("Example"), "`kedge {command} --help` has no example");
    }
    for sub in ["view", "get-contexts", "current-context", "use-context", "set-context", "delete-context"] {
        let help = server.kedge(&["config", sub, "--help"]);
        assert_exit(&help, 0);
        assert!(stdout(&help).contains("Example"), "`kedge config {sub} --help` has no example");
    }
    let completion = server.kedge(&["completion", "bash"]);
    assert_exit(&completion, 0);
    assert!(stdout(&completion).contains("_kedge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_context_names_the_server_and_token() {
    let server = TestServer::start().await;
    let config = server.dir.join("kedge-config.json");
    let set = kedge_command(&server.dir)
        .env("KEDGE_CONFIG", &config)
        .args([
            "config",
            "set-context",
            "test",
            "--server",
            &server.url,
            "--token",
            &server.token,
            "--namespace",
            "ctx-ns",
        ])
        .output()
        .unwrap();
    assert_exit(&set, 0);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let contexts = kedge_command(&server.dir)
        .env("KEDGE_CONFIG", &config)
        .args(["config", "get-contexts"])
        .output()
        .unwrap();
    assert!(
        stdout(&contexts).lines().nth(1).unwrap().starts_with("*         test   http://"),
        "{}",
        stdout(&contexts)
    );
    let view =
        kedge_command(&server.dir).env("KEDGE_CONFIG", &config).args(["config", "view"]).output().unwrap();
    assert!(!stdout(&view).contains(&server.token), "config view shows the token");

    let file = server.dir.join("c.yaml");
    std::fs::write(
        &file,
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: c\nspec:\n  image: busybox\n",
    )
    .unwrap();
    let applied = kedge_command(&server.dir)
        .env("KEDGE_CONFIG", &config)
        .args(["apply", "-f", "c.yaml"])
        .output()
        .unwrap();
    assert_exit(&applied, 0);
    // The context's namespace applies to documents that name none.
    let got = kedge_command(&server.dir)
        .env("KEDGE_CONFIG", &config)
        .args(["get", "containers", "-o", "name"])
        .output()
        .unwrap();
    assert_eq!(stdout(&got), "container/c\n");
    let json = server.call("GET", "/api/v1/namespaces/ctx-ns/containers/c", None).await;
    assert_eq!(json.status, 200);
    // --server beats the context.
    let flag = kedge_command(&server.dir)
        .env("KEDGE_CONFIG", &config)
        .args(["get", "containers", "--server", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_exit(&flag, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_needs_no_token() {
    let server = TestServer::start().await;
    let ns = unique("unix");
    let file = server.dir.join("u.yaml");
    write(&file, &spec_yaml(&ns, "u", "busybox:1"));
    let socket = format!("unix://{}", server.unix_socket.display());
    let run =
        |args: &[&str]| kedge_command(&server.dir).env("KEDGE_SERVER", &socket).args(args).output().unwrap();
    assert_exit(&run(&["apply", "-f", file.to_str().unwrap()]), 0);
    let got = run(&["get", "containers", "-n", &ns, "-o", "name"]);
    assert_exit(&got, 0);
    assert_eq!(stdout(&got), "container/u\n");
    assert_exit(&run(&["get", "container", "nope", "-n", &ns]), 3);
    assert_exit(&run(&["diff", "-f", file.to_str().unwrap()]), 0);
    let gone = kedge_command(&server.dir)
        .env("KEDGE_SERVER", "unix:///nonexistent/kedge.sock")
        .args(["get", "containers"])
        .output()
        .unwrap();
    assert_exit(&gone, 5);
}

/// An object larger than the API's 256 KiB is refused before anything is sent (the server would cut
/// the upload short): exit 2, the file and the object named, and nothing stored, not even the small
/// object beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_the_api_limit_is_refused_before_sending() {
    let server = TestServer::start().await;
    let ns = unique("big");
    let small = spec_yaml(&ns, "small", "kedge-test/app:v1");
    let padding = "y".repeat(300 << 10);
    let big = format!(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: huge\n  namespace: {ns}\nspec:\n  image: kedge-test/app:v1\n  env:\n    PADDING: \"{padding}\"\n"
    );
    let dir = server.dir.join("specs-big");
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir.join("a-small.yaml"), &small);
    write(&dir.join("b-huge.yaml"), &big);
    let refused = server.kedge(&["apply", "-f", dir.to_str().unwrap()]);
    assert_exit(&refused, 2);
    let message = stderr(&refused);
    assert!(
        message.contains("b-huge.yaml") && message.contains("container/huge") && message.contains("256 KiB"),
        "{message}"
    );
    assert!(!message.contains("Broken pipe"), "{message}");
    let stored = objects::list_containers(server.store.as_ref(), Some(&ns)).await.unwrap();
    assert!(stored.containers.is_empty() && stored.invalid.is_empty(), "nothing was applied");
}

/// CLI hygiene (issue 22): a reader that closed the pipe (`kedge get ... | head`) ends the client
/// quietly, with the status a shell gives a process ended by SIGPIPE; an error on a stderr that is no
/// terminal carries no colour codes; and `wait --for condition=Unknown` is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_is_quiet_errors_have_no_colour_off_a_terminal_and_wait_for_unknown_fails_at_once() {
    let server = TestServer::start().await;
    let ns = unique("hygiene");
    let dir = server.dir.join("hygiene");
    for name in ["a", "b", "c"] {
        write(&dir.join(format!("{name}.yaml")), &spec_yaml(&ns, name, "busybox:1"));
    }
    assert_exit(&server.kedge(&["apply", "-f", dir.to_str().unwrap()]), 0);

    // The reader is gone before the client writes a byte: every write meets a closed pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let closed = kedge_command(&server.dir)
        .env("KEDGE_SERVER", &server.url)
        .env("KEDGE_TOKEN", &server.token)
        .args(["get", "containers", "-n", &ns])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(closed.status.code(), Some(128 + 13), "{}", stderr(&closed));
    assert_eq!(stderr(&closed), "", "quiet: no panic, no message");

    // An error, its stderr a pipe: plain text.
    let missing = server.kedge(&["get", "container", "nothing-here", "-n", &ns]);
    assert_exit(&missing, 3);
    assert!(stderr(&missing).starts_with("error: "), "{}", stderr(&missing));
    assert!(!stderr(&missing).contains('\u{1b}'), "no ANSI codes: {:?}", stderr(&missing));

    // A condition is never awaited as Unknown: refused before any waiting (the timeout is long).
    let started = std::time::Instant::now();
    let unknown = server.kedge(&[
        "wait",
        "container",
        "a",
        "-n",
        &ns,
        "--for",
        "condition=Unknown",
        "--timeout",
        "60s",
    ]);
    assert_exit(&unknown, 2);
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "at once: {:?}", started.elapsed());
    assert!(!stderr(&unknown).contains('\u{1b}'), "{:?}", stderr(&unknown));
}
