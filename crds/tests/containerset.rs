//! ContainerSet documents: parsed beside Containers, validated with file, line and field path.

fn check_errors(text: &str, expected: &[&str]) {
    let (objects, mut errors) = kedge_crds::parse_objects_str("set.yaml", text);
    errors.extend(kedge_crds::validate_objects(&objects));
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(shown, expected, "{text}");
}

/// The first lines of a ContainerSet `web` of three replicas, up to its template.
const WEB_SET_HEAD: &str = "\
apiVersion: kedge.io/v1
kind: ContainerSet
metadata: {name: web}
spec:
  replicas: 3
  template:
";

#[test]
fn a_file_may_mix_containers_and_sets() {
    let text = &[
        WEB_SET_HEAD,
        "    metadata: {labels: {tier: web}}
    spec: {image: kedge-test/app:v1}
  placement: {maxPerHost: 2}
  rollingUpdate: {batchSize: 2, healthTimeout: 30s, failureAction: pause}
---
apiVersion: kedge.io/v1
kind: Container
metadata: {name: db}
spec: {image: kedge-test/app:v1}
",
    ]
    .concat();
    let (objects, errors) = kedge_crds::parse_objects_str("set.yaml", text);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(kedge_crds::validate_objects(&objects).is_empty());
    assert_eq!(objects.containers.len(), 1);
    let set = &objects.sets[0].set;
    assert_eq!(set.key(), "default/web");
    assert_eq!(set.spec.replicas, 3);
    assert_eq!(set.spec.batch_size_or_default(), 2);
    assert_eq!(set.spec.health_timeout_or_default(), std::time::Duration::from_secs(30));
    assert_eq!(set.spec.failure_action_or_default(), kedge_crds::FailureAction::Pause);
    // Only the `*_objects` functions accept sets: a Container-only reader says what it expected.
    let (_, errors) = kedge_crds::parse_str("set.yaml", text);
    assert_eq!(
        errors[0].to_string(),
        "set.yaml:2:7: kind: unsupported kind `ContainerSet`, expected `Container`"
    );
}

#[test]
fn defaults_apply_when_nothing_is_said() {
    let text = "{apiVersion: kedge.io/v1, kind: ContainerSet, metadata: {name: w}, spec: {replicas: 1, template: {spec: {image: a}}}}";
    let (objects, errors) = kedge_crds::parse_objects_str("set.yaml", text);
    assert!(errors.is_empty(), "{errors:?}");
    let spec = &objects.sets[0].set.spec;
    assert_eq!(spec.batch_size_or_default(), 1);
    assert_eq!(spec.health_timeout_or_default(), std::time::Duration::from_secs(60));
    assert_eq!(spec.failure_action_or_default(), kedge_crds::FailureAction::Rollback);
}

#[test]
fn errors_name_file_line_and_field() {
    check_errors(
        &[
            WEB_SET_HEAD,
            "    spec:
      image: kedge-test/app:v1
      imagePullPolicy: always
",
        ]
        .concat(),
        &["set.yaml:9:7: spec.template.spec.imagePullPolicy: unknown field `imagePullPolicy`"],
    );
    check_errors(
        "\
apiVersion: kedge.io/v1
kind: ContainerSet
metadata: {name: web}
spec:
  replicas: 2000
  template:
    spec:
      image: kedge-test/app:v1
      placement: {host: h1}
      resources: {memory: 1Ki}
  rollingUpdate:
    batchSize: 0
",
        &[
            "set.yaml:5:13: spec.replicas: at most 1000",
            "set.yaml:9:18: spec.template.spec.placement: a ContainerSet's template may not name a placement; use the set's `spec.placement`",
            "set.yaml:10:27: spec.template.spec.resources.memory: `1Ki` is below Docker's minimum of 6Mi",
            "set.yaml:12:16: spec.rollingUpdate.batchSize: must be at least 1",
        ],
    );
    check_errors(
        "\
apiVersion: kedge.io/v1
kind: ContainerSet
metadata: {name: web}
spec: {replicas: 1, template: {spec: {image: a}}}
---
apiVersion: kedge.io/v1
kind: Container
metadata: {name: web-0}
spec: {image: a}
",
        &["set.yaml:8:18: metadata.name: `web-0` is the name of a child of ContainerSet `web` (set.yaml:1); the set writes that spec"],
    );
}
