//! The real `kedge` binary with ContainerSets against a real API server (in-process, embedded store, no
//! agent): apply of a file mixing both kinds, get, describe, diff, prune (which never prunes a set's
//! children), invalid input and delete, with their exit codes.

use crate::api_support;

use api_support::{stderr, stdout, unique, TestServer};
use kedge_controller::store::objects;

fn files(ns: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: db\n  namespace: {ns}\nspec:\n  image: busybox:1\n---\n\
apiVersion: kedge.io/v1\nkind: ContainerSet\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  replicas: {replicas}\n  \
template:\n    spec:\n      image: {image}\n  rollingUpdate:\n    batchSize: 2\n"
    )
}

#[track_caller]
fn assert_exit(output: &std::process::Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout(output), stderr(output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_apply_get_describe_diff_prune_and_delete() {
    let server = TestServer::start().await;
    let ns = unique("sets");
    let file = server.dir.join("app.yaml");
    std::fs::write(&file, files(&ns, "kedge-test/app:v1", 3)).unwrap();
    let f = file.to_str().unwrap();

    let applied = server.kedge(&["apply", "-f", f]);
    assert_exit(&applied, 0);
    assert_eq!(stdout(&applied), "container/db created\ncontainerset/web created\n");
    let again = server.kedge(&["apply", "-f", f]);
    assert_eq!(stdout(&again), "container/db unchanged\ncontainerset/web unchanged\n");
    let validated = server.kedge(&["validate", "-f", f]);
    assert_eq!(stdout(&validated), "1 container spec(s) and 1 container set(s) valid\n");

    // No agent runs here, so no status yet: 0 of 3 ready, no revision.
    let table = server.kedge(&["get", "sets", "-n", &ns]);
    assert_exit(&table, 0);
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "READY", "UP-TO-DATE", "REVISION", "AGE"]
    );
    assert_eq!(lines[1].split_whitespace().take(4).collect::<Vec<_>>(), ["web", "0/3", "0", "<none>"]);
    let name = server.kedge(&["get", "containerset", "web", "-n", &ns, "-o", "name"]);
    assert_eq!(stdout(&name), "containerset/web\n");
    let json = server.kedge(&["get", "cs", "web", "-n", &ns, "-o", "json"]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    assert_eq!(value["spec"]["replicas"], 3);
    let described = server.kedge(&["describe", "containerset", "web", "-n", &ns]);
    assert_exit(&described, 0);
    assert!(stdout(&described).contains("Rolling Update:   batch 2, health timeout 60s, on failure rollback"));

    let same = server.kedge(&["diff", "-f", f]);
    assert_exit(&same, 0);
    std::fs::write(&file, files(&ns, "kedge-test/app:v2", 3)).unwrap();
    let changed = server.kedge(&["diff", "-f", f]);
    assert_exit(&changed, 1);
    assert!(stdout(&changed).contains("--- live/containerset/"), "{}", stdout(&changed));
    assert!(stdout(&changed).contains("+      image: kedge-test/app:v2"), "{}", stdout(&changed));
    let dry = server.kedge(&["apply", "-f", f, "--dry-run=server"]);
    assert_eq!(
        stdout(&dry),
        "container/db unchanged (server dry run)\ncontainerset/web configured (server dry run)\n"
    );
    let (stored, _) = objects::list_sets(server.store.as_ref(), Some(&ns)).await.unwrap();
    assert_eq!(
        stored[0].spec.template.spec.image.to_string(),
        "kedge-test/app:v1",
        "a dry run writes nothing"
    );

    // Invalid input: every error with file, line and field; nothing changes (exit 2).
    std::fs::write(&file, files(&ns, "kedge-test/app:v2", 5000)).unwrap();
    let bad = server.kedge(&["apply", "-f", f]);
    assert_exit(&bad, 2);
    assert!(stderr(&bad).contains(&format!("{f}:15:13: spec.replicas: at most 1000")), "{}", stderr(&bad));

    // A set's child is never pruned, even one carrying the apply set's label (a template may set any
    // label); the set is, once gone from the file.
    let child: kedge_crds::Container = serde_json::from_value(serde_json::json!({
        "apiVersion": "kedge.io/v1", "kind": "Container",
        "metadata": {"name": "web-0", "namespace": ns,
                     "labels": {"kedge.io/set": "web", "kedge.io/set-revision": "0123456789",
                                "kedge.io/applyset": "sets-test"}},
        "spec": {"image": "kedge-test/app:v1"}
    }))
    .unwrap();
    objects::apply_container(server.store.as_ref(), &child, None).await.unwrap();
    std::fs::write(&file, files(&ns, "kedge-test/app:v1", 3)).unwrap();
    assert_exit(&server.kedge(&["apply", "-f", f, "--prune", "--applyset", "sets-test"]), 0);
    let only_db = files(&ns, "kedge-test/app:v1", 3).split("---\n").next().unwrap().to_owned();
    std::fs::write(&file, only_db).unwrap();
    let pruned = server.kedge(&["apply", "-f", f, "--prune", "--applyset", "sets-test"]);
    assert_exit(&pruned, 0);
    assert_eq!(stdout(&pruned), "container/db unchanged\ncontainerset/web pruned\n");
    assert!(objects::get_container(server.store.as_ref(), &ns, "web-0").await.unwrap().is_some());

    std::fs::write(&file, files(&ns, "kedge-test/app:v1", 3)).unwrap();
    assert_exit(&server.kedge(&["apply", "-f", f]), 0);
    let deleted = server.kedge(&["delete", "containerset", "web", "-n", &ns]);
    assert_exit(&deleted, 0);
    assert_eq!(stdout(&deleted), "containerset/web deleted\n");
    assert_exit(&server.kedge(&["delete", "containerset", "web", "-n", &ns]), 3);
    assert_exit(&server.kedge(&["delete", "containerset", "web", "-n", &ns, "--ignore-not-found"]), 0);
    assert_exit(&server.kedge(&["describe", "containerset", "web", "-n", &ns]), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_sets_watch_prints_a_row_when_a_set_changes() {
    let server = TestServer::start().await;
    let ns = unique("setwatch");
    let file = server.dir.join("app.yaml");
    std::fs::write(&file, files(&ns, "kedge-test/app:v1", 3)).unwrap();
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    let watcher = server.watch(&["get", "sets", "-n", &ns, "-w"]);
    watcher.expect_line("the header", |l| l.starts_with("NAME ") && l.contains("UP-TO-DATE"));
    watcher.expect_line("web at 0/3", |l| l.starts_with("web ") && l.contains(" 0/3 "));
    std::fs::write(&file, files(&ns, "kedge-test/app:v1", 5)).unwrap();
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    watcher.expect_line("web at 0/5", |l| l.starts_with("web ") && l.contains(" 0/5 "));
}
