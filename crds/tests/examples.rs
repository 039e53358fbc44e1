//! Every file in examples/ is valid, and every example survives a serialize/parse round trip.

use std::path::Path;

fn examples_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn examples_are_valid() {
    let objects = match kedge_crds::load_objects_paths(&[examples_dir()]) {
        Ok(objects) => objects,
        Err(errors) => panic!("examples are invalid:\n{errors}"),
    };
    let sets: Vec<String> = objects.sets.iter().map(kedge_crds::ContainerSet::key).collect();
    assert_eq!(sets, ["default/sleeper-pool"]);
    assert_eq!(objects.containers, container_examples());
}

/// The Container examples (the Container-only reader refuses the ContainerSet file, by design).
fn container_examples() -> Vec<kedge_crds::Container> {
    let (parsed, errors) = kedge_crds::parse_objects_paths(&[examples_dir()]);
    assert!(errors.is_empty(), "{errors:?}");
    parsed.containers.into_iter().map(|p| p.container).collect()
}

#[test]
fn container_examples_are_the_known_ones() {
    let containers = container_examples();
    let mut keys: Vec<String> = containers.iter().map(kedge_crds::Container::key).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "default/api",
            "default/app",
            "default/db",
            "default/sleeper",
            "default/web",
            "default/web-client",
            "default/web-probe",
            "default/web-tracked",
            "jobs/worker"
        ]
    );
}

#[test]
fn examples_round_trip() {
    let containers = container_examples();
    // One stream of JSON documents: the set must stay whole for its dependsOn references to resolve.
    let stream: Vec<String> =
        containers.iter().map(|container| serde_json::to_string_pretty(container).unwrap()).collect();
    let stream = stream.join("\n---\n");
    let parsed =
        kedge_crds::load_str("roundtrip.json", &stream).unwrap_or_else(|errors| panic!("{errors}\n{stream}"));
    assert_eq!(parsed, containers);
    for (before, after) in containers.iter().zip(&parsed) {
        assert_eq!(kedge_crds::spec_hash(&before.spec), kedge_crds::spec_hash(&after.spec));
    }
}

#[test]
fn short_and_long_forms_parse_to_the_same_spec() {
    let short = "apiVersion: kedge.io/v1\nkind: Container\nmetadata: {name: a}\nspec:\n  image: busybox\n  ports: ['127.0.0.1:8080:80/udp', '[::1]:9090:90', '53']\n  mounts: ['/srv:/srv:ro', 'data:/data', '/anon']\n  restartPolicy: on-failure:3\n  dependsOn: [b]\n  env: [A=1, B=x=y]\n  healthcheck: {test: 'wget -q -O- http://127.0.0.1/'}\n  resources: {memory: 512m, cpus: 1.5}\n---\napiVersion: kedge.io/v1\nkind: Container\nmetadata: {name: b}\nspec: {image: busybox}\n";
    let long = r#"
apiVersion: kedge.io/v1
kind: Container
metadata:
  name: a
  namespace: default
spec:
  image: busybox
  ports:
    - {containerPort: 80, hostPort: 8080, hostIp: 127.0.0.1, protocol: udp}
    - {containerPort: 90, hostPort: 9090, hostIp: "::1"}
    - {containerPort: 53}
  mounts:
    - {type: bind, source: /srv, target: /srv, readOnly: true}
    - {type: volume, source: data, target: /data}
    - {type: volume, target: /anon}
  restartPolicy: {name: on-failure, maximumRetryCount: 3}
  dependsOn: [{name: b, condition: started}]
  env: {A: "1", B: x=y}
  healthcheck: {test: [CMD-SHELL, "wget -q -O- http://127.0.0.1/"]}
  resources: {memory: 512Mi, cpus: "1.5"}
---
apiVersion: kedge.io/v1
kind: Container
metadata: {name: b}
spec: {image: busybox}
"#;
    let short = kedge_crds::load_str("short.yaml", short).unwrap_or_else(|errors| panic!("{errors}"));
    let long = kedge_crds::load_str("long.yaml", long).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(short, long);
    assert_eq!(kedge_crds::spec_hash(&short[0].spec), kedge_crds::spec_hash(&long[0].spec));
    assert_eq!(short[0].spec.resources.as_ref().unwrap().memory.unwrap().bytes(), 512 * 1024 * 1024);
    assert_eq!(short[0].spec.resources.as_ref().unwrap().cpus.unwrap().nanos(), 1_500_000_000);
}

#[test]
fn json_with_tabs_crlf_and_a_byte_order_mark() {
    let text = "\u{feff}{\r\n\t\"apiVersion\": \"kedge.io/v1\",\r\n\t\"kind\": \"Container\",\r\n\t\"metadata\": {\"name\": \"a\"},\r\n\t\"spec\": {\r\n\t\t\"image\": \"busybox\",\r\n\t\t\"env\": {\"V\": 1.10, \"W\": 007}\r\n\t}\r\n}\r\n";
    let containers = kedge_crds::load_str("tabs.json", text).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(containers[0].spec.env["V"], "1.10");
    assert_eq!(containers[0].spec.env["W"], "007");
    let broken = text.replace("\"busybox\"", "\"busybox\" \"x\"");
    assert_eq!(
        kedge_crds::load_str("tabs.json", &broken).unwrap_err().to_string(),
        "tabs.json:6:22: YAML syntax error: invalid trailing content after double-quoted scalar"
    );
}

/// The default policy (`baseline`, docs/policy.md) refuses no example: a newcomer's first apply works.
#[test]
fn every_example_passes_the_baseline_policy() {
    let objects =
        kedge_crds::load_objects_paths(&[examples_dir()]).unwrap_or_else(|errors| panic!("{errors}"));
    let specs = objects
        .containers
        .iter()
        .map(|container| (container.key(), &container.spec))
        .chain(objects.sets.iter().map(|set| (set.key(), &set.spec.template.spec)));
    for (key, spec) in specs {
        let violations = kedge_crds::policy::check(spec, kedge_crds::PolicyLevel::Baseline);
        assert!(violations.is_empty(), "{key}: {violations:?}");
    }
}
