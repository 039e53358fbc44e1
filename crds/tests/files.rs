//! Reading files and directories: which files are read, and errors from several files at once.

use std::path::Path;

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn spec(name: &str, extra: &str) -> String {
    format!("apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  image: busybox\n{extra}")
}

/// Renders the outcome of loading `paths` with the directory's path replaced by `DIR`.
fn load(dir: &Path, paths: &[&Path]) -> String {
    let rendered = match kedge_crds::load_paths(paths) {
        Ok(containers) => containers.iter().map(kedge_crds::Container::key).collect::<Vec<_>>().join(" "),
        Err(errors) => errors.to_string(),
    };
    rendered.replace(&dir.display().to_string(), "DIR")
}

#[test]
fn a_directory_is_read_recursively_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.yaml", &spec("b", "  dependsOn: [a]\n"));
    write(
        dir.path(),
        "a.json",
        r#"{"apiVersion": "kedge.io/v1", "kind": "Container", "metadata": {"name": "a"}, "spec": {"image": "busybox"}}"#,
    );
    write(dir.path(), "sub/c.yml", &format!("{}---\n{}", spec("c", ""), spec("d", "")));
    write(dir.path(), "notes.txt", "not a spec");
    write(dir.path(), ".hidden/x.yaml", "not: a spec");
    write(dir.path(), ".y.yaml", "not: a spec");
    assert_eq!(load(dir.path(), &[dir.path()]), "default/a default/b default/c default/d");
}

#[test]
fn errors_of_every_file_are_reported_with_their_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "one.yaml", &spec("one", "  dependsOn: [missing]\n"));
    write(dir.path(), "two.yaml", &spec("two", "  ports: ['99999']\n"));
    write(dir.path(), "three.yaml", &spec("one", ""));
    let expected = [
        "DIR/one.yaml:7:15: spec.dependsOn[0]: depends on `default/missing`, which is not among the specs",
        "DIR/three.yaml:4:9: metadata.name: duplicate spec `default/one`, first defined at DIR/one.yaml:4:9",
        "DIR/two.yaml:7:11: spec.ports[0]: invalid port `99999`: `99999` is not a port number from 1 to 65535",
    ];
    assert_eq!(load(dir.path(), &[dir.path()]), expected.join("\n"));
}

#[test]
fn unreadable_paths() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    assert_eq!(load(dir.path(), &[&missing]), "DIR/missing.yaml: No such file or directory (os error 2)");
    assert_eq!(load(dir.path(), &[dir.path()]), "DIR: the directory holds no .yaml, .yml or .json files");
    write(dir.path(), "named.txt", &spec("x", ""));
    // A file named directly is read whatever its extension.
    assert_eq!(load(dir.path(), &[&dir.path().join("named.txt")]), "default/x");
}
