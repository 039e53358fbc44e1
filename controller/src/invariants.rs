//! Invariants of ARCHITECTURE.md checked by scanning the sources (test-only).
//!
//! "Only the executor mutates containers": a call of a mutating Docker driver method stands only in
//! `executor/` and `docker/` (the driver itself), or in one of the [`EXCEPTIONS`], each with its reason.

/// The driver methods that change a container, a network or an image on the engine.
const MUTATING: &[&str] = &[
    "create_container",
    "start_container",
    "stop_container",
    "kill_container",
    "restart_container",
    "unpause_container",
    "rename_container",
    "remove_container",
    "update_resources",
    "connect_network",
    "disconnect_network",
    "ensure_network",
    "remove_network",
    "exec_create",
    "exec_start",
    "exec_detached",
    "remove_image_if_unused",
];

/// Where mutations may stand, relative to the repository root.
const ALLOWED_DIRS: &[&str] = &["controller/src/executor", "controller/src/docker/"];

/// Files outside the executor that mutate, and why that is right.
const EXCEPTIONS: &[(&str, &str)] = &[
    (
        "controller/src/agent/upgrade.rs",
        "the agent's own upgrade helper: a one-off container of kedge's, labelled with its host, made and removed by the agent that hands its replacement to it",
    ),
    ("cli/src/run.rs", "`kedge run`'s one-off script container: kedge's own, made and removed by the command"),
    (
        "controller/src/agent/reconcile/tests.rs",
        "unit tests that stage a hand edit (a container removed or renamed behind the agent's back) on the in-memory engine",
    ),
];

/// The mutating calls in `text`: (line number, method).
fn mutating_calls(text: &str) -> Vec<(usize, &'static str)> {
    let mut calls = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        for method in MUTATING {
            if code.contains(&format!(".{method}(")) {
                calls.push((index + 1, *method));
            }
        }
    }
    calls
}

fn rust_files(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn only_the_executor_and_the_driver_mutate_the_engine() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository root");
    let mut files = Vec::new();
    for dir in ["controller/src", "cli/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "the scan found too few files to mean anything: {files:?}");
    let mut offenders = Vec::new();
    let mut exceptions_used = std::collections::BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(root).expect("under the root").to_string_lossy().replace('\\', "/");
        if relative == "controller/src/invariants.rs"
            || ALLOWED_DIRS.iter().any(|dir| relative.starts_with(dir))
        {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let calls = mutating_calls(&text);
        if calls.is_empty() {
            continue;
        }
        if EXCEPTIONS.iter().any(|(path, _)| *path == relative) {
            exceptions_used.insert(relative);
            continue;
        }
        offenders.extend(calls.into_iter().map(|(line, method)| format!("{relative}:{line}: {method}")));
    }
    assert!(offenders.is_empty(), "mutations outside the executor (go through an Action): {offenders:#?}");
    // An exception that no longer mutates is stale: drop it, so the list stays the truth.
    for (path, _) in EXCEPTIONS {
        assert!(exceptions_used.contains(*path), "{path} is listed as an exception but mutates nothing");
    }
}

#[test]
fn the_scan_sees_calls_and_ignores_comments() {
    let text = "let a = 1;\ndocker.restart_container(&id, None).await?;\n// docker.remove_container(id)\n";
    assert_eq!(mutating_calls(text), vec![(2, "restart_container")]);
}
