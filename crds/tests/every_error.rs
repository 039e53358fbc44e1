//! A file with several mistakes reports every one of them, each at its line and column with its field
//! path, in file order: wrong types, bad quantities and durations, unknown fields and broken rules,
//! in one document and across documents, not only the first one serde meets.

/// Parses and validates `text` as the CLI does and renders its errors.
fn errors_of(text: &str) -> Vec<String> {
    let (objects, mut errors) = kedge_crds::parse_objects_str("four.yaml", text);
    errors.extend(kedge_crds::validate_objects(&objects));
    kedge_crds::sort_errors(&mut errors);
    errors.iter().map(ToString::to_string).collect()
}

fn check(text: &str, expected: &[&str]) {
    let actual = errors_of(text);
    assert_eq!(actual, expected, "input:\n{text}");
    // The loaders give the same answer.
    let loaded = kedge_crds::load_str("four.yaml", text).map_or_else(|e| e.to_string(), |_| String::new());
    assert_eq!(loaded, expected.join("\n"));
}

#[test]
fn four_mistakes_in_two_documents_are_all_reported() {
    let text = "\
apiVersion: kedge.io/v1
kind: Container
metadata:
  name: web
spec:
  image: nginx:1.27
  ports:
    - containerPort: eighty
  resources:
    memory: 12XB
  healthcheck:
    test: [CMD, true]
    interval: 5 parsecs
---
apiVersion: kedge.io/v1
kind: Container
metadata:
  name: Bad_Name
spec:
  image: nginx:1.27
  restartPolicy: sometimes
  imagePullPolicyy: Always
---
apiVersion: kedge.io/v1
kind: Container
metadata:
  name: fine
spec:
  image: nginx:1.27
";
    let actual = errors_of(text);
    let expected_places = [
        ("four.yaml:8:22: spec.ports[0].containerPort:", "eighty"),
        ("four.yaml:10:13: spec.resources.memory:", "12XB"),
        ("four.yaml:13:15: spec.healthcheck.interval:", "parsecs"),
        ("four.yaml:18:9: metadata.name:", ""),
        ("four.yaml:21:18: spec.restartPolicy:", "sometimes"),
        ("four.yaml:22:3: spec.imagePullPolicyy: unknown field `imagePullPolicyy`", ""),
    ];
    assert_eq!(actual.len(), expected_places.len(), "{actual:#?}");
    for (line, (start, word)) in actual.iter().zip(expected_places) {
        assert!(line.starts_with(start), "{line} starts with {start}; all: {actual:#?}");
        assert!(line.contains(word), "{line} names {word}");
    }
}

#[test]
fn a_missing_field_beside_other_mistakes() {
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\n  labels: [a]\nspec:\n  ports: [70000]\n",
        &[
            "four.yaml:5:11: metadata.labels: invalid type: sequence, expected a map",
            "four.yaml:7:3: spec.image: missing required field `image`",
            "four.yaml:7:11: spec.ports[0]: invalid port `70000`: `70000` is not a port number from 1 to 65535",
        ],
    );
}

#[test]
fn a_typo_is_reported_once_and_a_repair_breaks_no_rule() {
    // `imgae` is named with its likely meaning, and the missing `image` it leaves is not reported again.
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  imgae: nginx\n  stopGracePeriod: soon\n",
        &[
            "four.yaml:6:3: spec.imgae: unknown field `imgae`, did you mean `image`?",
            "four.yaml:7:20: spec.stopGracePeriod: invalid duration `soon`: expected a number with a unit such as `30s`, `1m30s` or `500ms`",
        ],
    );
}

#[test]
fn a_container_set_reports_every_error_too() {
    let text = "apiVersion: kedge.io/v1\nkind: ContainerSet\nmetadata:\n  name: app\nspec:\n  replicas: many\n  template:\n    spec:\n      image: nginx\n      ports: [{containerPort: x}]\n";
    let actual = errors_of(text);
    assert_eq!(actual.len(), 2, "{actual:#?}");
    assert!(actual[0].starts_with("four.yaml:6:13: spec.replicas:"), "{actual:#?}");
    assert!(
        actual[1].starts_with("four.yaml:10:31: spec.template.spec.ports[0].containerPort:"),
        "{actual:#?}"
    );
}

#[test]
fn hundreds_of_mistakes_are_bounded() {
    let mut text = String::from(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  image: nginx\n  ports:\n",
    );
    for _ in 0..400 {
        text.push_str("    - containerPort: x\n");
    }
    let actual = errors_of(&text);
    assert_eq!(actual.len(), 257, "256 errors and a note: {:#?}", &actual[250..]);
    assert!(actual.iter().any(|line| line.contains("more errors may follow")), "{:?}", actual.last());
}

#[test]
fn a_spec_that_depends_on_a_broken_one_gets_no_error_of_its_own() {
    check(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: db\nspec:\n  image: postgres\n  ports: [{containerPort: x}]\n---\napiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  image: nginx\n  dependsOn: [db, cache]\n",
        &[
            "four.yaml:7:27: spec.ports[0].containerPort: invalid type: string \"x\", expected u16",
            "four.yaml:15:19: spec.dependsOn[1]: depends on `default/cache`, which is not among the specs",
        ],
    );
}

#[test]
fn process_settings_are_checked() {
    check(
        "\
apiVersion: kedge.io/v1
kind: Container
metadata:
  name: web
spec:
  image: busybox
  shmSize: 0
  extraHosts: [db.local:10.0.0.5, gw:host-gateway, nocolon, bad:999.1.1.1]
  ulimits:
    nofile: {soft: 10, hard: 5}
    bogus: {soft: 1, hard: 1}
    nproc: {soft: 1, hard: -1}
",
        &[
            "four.yaml:7:12: spec.shmSize: must be more than zero (leave it out for Docker's 64Mi)",
            "four.yaml:8:52: spec.extraHosts[2]: an entry is `HOST:IP` (or `HOST:host-gateway`), such as `db.local:10.0.0.5`",
            "four.yaml:8:61: spec.extraHosts[3]: an entry is `HOST:IP` (or `HOST:host-gateway`), such as `db.local:10.0.0.5`",
            "four.yaml:10:13: spec.ulimits.nofile: the soft limit must not exceed the hard one (-1: unlimited)",
            "four.yaml:11:5: spec.ulimits.bogus: not a process limit; one of core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack",
        ],
    );
}
