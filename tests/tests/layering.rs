//! The shape of the code, checked: no file-level import cycle in `crds`, `controller` or `cli`, and in
//! `controller` no module imports from a layer above its own (ARCHITECTURE.md, "Layers").
//!
//! A file's imports are the `crate::…`, `super::…` and `self::…` paths in its text outside comments
//! and its `#[cfg(test)] mod tests` block, each resolved to the deepest module file it names. An edge
//! between a module and one of its own ancestors or descendants is not counted (a parent re-exporting
//! its children, a child using its parent's types), nor are test-only files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside its crate: `["agent", "scheduler"]` for `src/agent/scheduler.rs`.
type Module = Vec<String>;

/// Test-only files: their imports are the tests', not the code's.
const TEST_FILES: &[&str] =
    &["tests", "proptests", "conformance", "embedded_tests", "api_conformance", "fake"];

/// `controller`'s layers, lowest first: a module may import from its own layer and the ones below.
/// A new top-level module must be placed here.
const CONTROLLER_LAYERS: &[&[&str]] = &[
    &["store", "docker", "registry", "queue", "runtime", "hosts", "metrics", "notify"],
    &["events", "mapping", "restarts", "remediation"],
    &["planner"],
    &["executor"],
    &["agent", "api", "controllers", "updater", "upgrade", "invariants"],
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

fn module_files(crate_dir: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<Module, PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(src).expect("under src").with_extension("");
                let mut module: Module = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                    module.pop();
                }
                out.insert(module, path);
            }
        }
    }
    let src = crate_dir.join("src");
    let mut out = BTreeMap::new();
    walk(&src, &src, &mut out);
    out
}

/// The text that counts: without line comments and without the trailing `#[cfg(test)] mod tests`.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(start) => &text[..start],
        None => text,
    };
    text.lines().map(|line| line.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Every `crate::`/`super::`/`self::` path in `code`, with `{a, b::c}` groups expanded (one level).
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut paths = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let at_word_start = i == 0 || !ident(bytes[i - 1]);
        let rest: String = bytes[i..bytes.len().min(i + 6)].iter().collect();
        if at_word_start
            && (rest.starts_with("crate:") || rest.starts_with("super:") || rest.starts_with("self::"))
        {
            // Read `seg::seg::…` and an optional `::{…}` group.
            let mut segments = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < bytes.len() && ident(bytes[j]) {
                    j += 1;
                }
                if start == j {
                    break;
                }
                segments.push(bytes[start..j].iter().collect::<String>());
                if j + 1 < bytes.len() && bytes[j] == ':' && bytes[j + 1] == ':' {
                    j += 2;
                } else {
                    break;
                }
            }
            if j < bytes.len() && bytes[j] == '{' {
                let end = bytes[j..].iter().position(|&c| c == '}').map_or(bytes.len(), |p| j + p);
                let group: String = bytes[j + 1..end].iter().collect();
                for item in group.split(',') {
                    let item = item.split(" as ").next().unwrap_or_default().trim();
                    if !item.is_empty() && !item.contains('{') {
                        let mut path = segments.clone();
                        path.extend(item.split("::").map(|s| s.trim().to_owned()));
                        paths.push(path);
                    }
                }
                j = end;
            }
            if segments.len() > 1 {
                paths.push(segments);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    paths
}

/// The deepest module file `path`, written in `from`, names.
fn resolve(from: &Module, path: &[String], modules: &BTreeMap<Module, PathBuf>) -> Option<Module> {
    let mut current: Module = match path.first().map(String::as_str) {
        Some("crate") => Vec::new(),
        _ => from.clone(),
    };
    let mut rest = &path[1..];
    if path.first().map(String::as_str) == Some("super") {
        current.pop();
        while rest.first().map(String::as_str) == Some("super") {
            current.pop();
            rest = &rest[1..];
        }
    }
    for segment in rest {
        let mut next = current.clone();
        next.push(segment.clone());
        if modules.contains_key(&next) {
            current = next;
        } else {
            break;
        }
    }
    modules.contains_key(&current).then_some(current)
}

fn is_test_file(module: &Module) -> bool {
    module.last().is_some_and(|last| TEST_FILES.contains(&last.as_str()))
}

fn import_graph(crate_name: &str) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = module_files(&workspace().join(crate_name));
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &modules {
        if is_test_file(module) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read a source file");
        let edges = graph.entry(module.clone()).or_default();
        for path in paths_in(&code_of(&text)) {
            let Some(target) = resolve(module, &path, &modules) else { continue };
            let related = target.starts_with(module) || module.starts_with(&target);
            if !related && !is_test_file(&target) {
                edges.insert(target);
            }
        }
    }
    graph
}

/// Strongly connected components of more than one module (Tarjan's algorithm, iterative enough for
/// a few hundred files).
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on_stack: BTreeSet<&'g Module>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(state: &mut State<'g>, v: &'g Module) {
        let n = state.index.len();
        state.index.insert(v, n);
        state.low.insert(v, n);
        state.stack.push(v);
        state.on_stack.insert(v);
        let graph = state.graph;
        for w in graph.get(v).into_iter().flatten() {
            if !state.index.contains_key(w) {
                visit(state, w);
                let low = state.low[v].min(state.low[w]);
                state.low.insert(v, low);
            } else if state.on_stack.contains(w) {
                let low = state.low[v].min(state.index[w]);
                state.low.insert(v, low);
            }
        }
        if state.low[v] == state.index[v] {
            let mut component = Vec::new();
            while let Some(w) = state.stack.pop() {
                state.on_stack.remove(w);
                component.push(w.join("/"));
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn no_file_level_import_cycle_in_crds_controller_or_cli() {
    let mut found = Vec::new();
    for crate_name in ["crds", "controller", "cli"] {
        for cycle in cycles(&import_graph(crate_name)) {
            found.push(format!("{crate_name}: {}", cycle.join(" <-> ")));
        }
    }
    assert!(
        found.is_empty(),
        "import cycles (move the shared piece into a lower module):\n{}",
        found.join("\n")
    );
}

#[test]
fn no_controller_module_imports_from_a_layer_above_its_own() {
    let layer_of = |module: &Module| {
        let top = module.first().map(String::as_str).unwrap_or_default();
        CONTROLLER_LAYERS.iter().position(|layer| layer.contains(&top))
    };
    let mut problems = Vec::new();
    for (module, imports) in import_graph("controller") {
        if module.is_empty() || is_test_file(&module) {
            continue; // lib.rs wires everything together
        }
        let Some(own) = layer_of(&module) else {
            problems.push(format!("{} has no layer: add it to CONTROLLER_LAYERS", module.join("/")));
            continue;
        };
        for import in imports {
            if import.is_empty() {
                continue;
            }
            if layer_of(&import).is_some_and(|theirs| theirs > own) {
                problems.push(format!(
                    "{} imports {} from a higher layer",
                    module.join("/"),
                    import.join("/")
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_cycles_and_group_imports() {
    let module = |p: &str| p.split('/').map(str::to_owned).collect::<Module>();
    let modules: BTreeMap<Module, PathBuf> =
        ["a", "b", "b/c", "b/d"].iter().map(|m| (module(m), PathBuf::new())).collect();
    let paths = paths_in("use crate::{a::Thing, b::c::Other as O};\nfn f() { super::d::g(); self::x(); }");
    let resolved: BTreeSet<Module> =
        paths.iter().filter_map(|p| resolve(&module("b/c"), p, &modules)).collect();
    assert_eq!(resolved, [module("a"), module("b/c"), module("b/d")].into_iter().collect::<BTreeSet<_>>());
    assert_eq!(paths_in(&code_of("// use crate::a;\nfn x() {}")), Vec::<Vec<String>>::new());
    let graph: BTreeMap<Module, BTreeSet<Module>> = [
        (module("a"), [module("b")].into_iter().collect()),
        (module("b"), [module("a")].into_iter().collect()),
        (module("d"), [module("a")].into_iter().collect()),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycles(&graph), vec![vec!["a".to_owned(), "b".to_owned()]]);
}
