//! The conversion, through the narrowest surface: a Compose text in, kedge objects or placed errors out.

use std::collections::BTreeMap;

use crate::compose::service::short_port;
use crate::compose::ComposeOptions;
use crate::parse::{parse_objects_str_with, validate_objects, ParsedObjects};
use crate::SpecError;

fn convert_with(text: &str, options: &ComposeOptions) -> (ParsedObjects, Vec<SpecError>) {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(directory.path().join(".env"), "FROM_DOTENV=dotenv\nOVERRIDDEN=dotenv\n").unwrap();
    std::fs::write(
        directory.path().join("app.env"),
        "# comment\nFILE_ONLY=file\nBOTH=file\nQUOTED=\"a b\"\n",
    )
    .unwrap();
    std::fs::create_dir(directory.path().join("data")).unwrap();
    let (objects, mut errors) = parse_objects_str_with("compose.yml", text, directory.path(), options);
    errors.extend(validate_objects(&objects));
    (objects, errors)
}

fn options() -> ComposeOptions {
    ComposeOptions {
        project: Some("demo".into()),
        environment: [("TAG", "1"), ("OVERRIDDEN", "env"), ("HOME", "/home/u")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        ..ComposeOptions::default()
    }
}

fn errors_of(text: &str) -> Vec<String> {
    convert_with(text, &options()).1.iter().map(ToString::to_string).collect()
}

#[test]
fn a_full_service_converts() {
    let text = r#"
name: ignored
services:
  db:
    image: "busybox:${TAG}"
    healthcheck:
      test: "wget -q localhost"
      interval: 5s
      retries: 3
  web:
    image: busybox:$TAG
    command: sh -c 'echo "hi there"'
    entrypoint: ["/bin/sh"]
    env_file: app.env
    environment:
      BOTH: env
      DOT: ${FROM_DOTENV}
      OVER: $OVERRIDDEN
    ports: ["127.0.0.1:8080:80", "9000-9001:90-91/udp", {target: 53, published: "5353", protocol: udp}]
    volumes: ["./data:/data:ro", "cache:/cache", "/anon", {type: tmpfs, target: /t, tmpfs: {size: 1m}}]
    networks:
      front: {aliases: [www]}
      back:
    depends_on: {db: {condition: service_healthy}}
    restart: on-failure:3
    mem_limit: 64m
    cpus: 0.5
    user: "1000:1000"
    working_dir: /srv
    labels: [a=b]
    init: true
    shm_size: 128m
    extra_hosts: ["db.local:10.0.0.5", "gw=host-gateway"]
    ulimits: {nproc: 512, nofile: {soft: 1024, hard: 2048}}
    x-anything: ignored
  worker:
    image: busybox
    deploy: {replicas: 2, resources: {limits: {memory: 32M}}}
x-common: {}
volumes:
  cache:
networks:
  front:
  back: {external: true}
"#;
    let (objects, errors) = convert_with(text, &options());
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(objects.containers.len(), 2);
    let web = &objects.containers.iter().find(|c| c.container.metadata.name == "demo-web").unwrap().container;
    assert_eq!(web.metadata.namespace, "demo");
    let spec = serde_json::to_value(&web.spec).unwrap();
    assert_eq!(spec["image"], "busybox:1");
    assert_eq!(spec["command"], serde_json::json!(["sh", "-c", "echo \"hi there\""]));
    assert_eq!(spec["env"]["BOTH"], "env");
    assert_eq!(spec["env"]["FILE_ONLY"], "file");
    assert_eq!(spec["env"]["QUOTED"], "a b");
    assert_eq!(spec["env"]["DOT"], "dotenv");
    assert_eq!(spec["env"]["OVER"], "env");
    assert_eq!(spec["ports"].as_array().unwrap().len(), 4);
    let mounts = spec["mounts"].as_array().unwrap();
    assert!(mounts[0]["source"].as_str().unwrap().ends_with("/data"), "{mounts:?}");
    assert_eq!(mounts[1]["source"], "demo_cache");
    // serde_json's maps are sorted: the networks come in name order.
    assert_eq!(spec["networks"][1]["name"], "demo_front");
    assert_eq!(spec["networks"][1]["aliases"], serde_json::json!(["web", "www"]));
    assert_eq!(spec["networks"][0]["name"], "back");
    assert_eq!(spec["dependsOn"][0]["name"], "demo-db");
    assert_eq!(spec["dependsOn"][0]["condition"], "healthy");
    assert_eq!(spec["restartPolicy"]["maximumRetryCount"], 3);
    assert_eq!(spec["resources"]["memory"], "64Mi");
    assert_eq!(spec["init"], true);
    assert_eq!(spec["shmSize"], "128Mi");
    assert_eq!(spec["extraHosts"], serde_json::json!(["db.local:10.0.0.5", "gw:host-gateway"]));
    assert_eq!(spec["ulimits"]["nproc"], serde_json::json!({"soft": 512, "hard": 512}));
    assert_eq!(spec["ulimits"]["nofile"], serde_json::json!({"soft": 1024, "hard": 2048}));
    let db = &objects.containers.iter().find(|c| c.container.metadata.name == "demo-db").unwrap().container;
    assert_eq!(db.spec.healthcheck.as_ref().unwrap().test, ["CMD-SHELL", "wget -q localhost"]);
    assert_eq!(db.spec.networks[0].name, "demo_default");
    assert_eq!(objects.sets.len(), 1);
    assert_eq!(objects.sets[0].set.spec.replicas, 2);
}

#[test]
fn every_unsupported_key_is_named_with_its_line() {
    let text = "services:\n  web:\n    image: busybox\n    mac_address: 02:42:ac:11:00:02\n    volumes_from: [db]\n    deploy:\n      mode: global\nsecrets:\n  token:\n    environment: TOKEN\n";
    let errors = errors_of(text);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(
        errors[0].starts_with("compose.yml:4:5: services.web.mac_address: `mac_address` is not supported"),
        "{errors:#?}"
    );
    assert!(errors[1].starts_with("compose.yml:5:5: services.web.volumes_from:"), "{errors:#?}");
    assert!(errors[2].starts_with("compose.yml:7:7: services.web.deploy.mode:"), "{errors:#?}");
    assert!(
        errors[3].starts_with("compose.yml:10:5: secrets.token.environment: `environment` is not supported"),
        "{errors:#?}"
    );
}

#[test]
fn dns_terminal_and_file_secrets_and_configs() {
    let text = "services:\n  web:\n    image: busybox\n    dns: 10.0.0.53\n    dns_search: [a.example, b.example]\n    \
dns_opt: [ndots:2]\n    tty: true\n    stdin_open: true\n    secrets: [token, {source: token, target: other}]\n    \
configs: [{source: app, target: /etc/app.conf}, app]\nsecrets:\n  token:\n    file: ./token.txt\nconfigs:\n  app:\n    file: /srv/app.conf\n";
    let (objects, errors) = convert_with(text, &options());
    assert!(errors.is_empty(), "{errors:#?}");
    let spec = &objects.containers[0].container.spec;
    assert_eq!(spec.dns, ["10.0.0.53"]);
    assert_eq!(spec.dns_search, ["a.example", "b.example"]);
    assert_eq!(spec.dns_options, ["ndots:2"]);
    assert_eq!((spec.tty, spec.stdin_open), (Some(true), Some(true)));
    let spec = serde_json::to_value(spec).unwrap();
    let mounts = spec["mounts"].as_array().unwrap();
    let targets: Vec<&str> = mounts.iter().map(|m| m["target"].as_str().unwrap()).collect();
    // Keys in name order: `configs` before `secrets`.
    assert_eq!(targets, ["/etc/app.conf", "/app", "/run/secrets/token", "/run/secrets/other"]);
    assert!(mounts.iter().all(|m| m["readOnly"] == true && m["type"] == "bind"), "{mounts:?}");
    assert!(mounts[2]["source"].as_str().unwrap().ends_with("/token.txt"), "{mounts:?}");
    assert_eq!(mounts[0]["source"], "/srv/app.conf");

    // An undeclared secret, a secret's uid, and a secret with no file: each named.
    let text = "services:\n  web:\n    image: busybox\n    secrets: [nope, {source: token, uid: \"1\"}]\nsecrets:\n  token:\n    name: t\n";
    let errors = errors_of(text);
    // `token` has no file, so the second item names it as undeclared too.
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors
        .iter()
        .any(|e| e.contains("services.web.secrets[0]") && e.contains("`nope` is not declared")));
    assert!(errors.iter().any(|e| e.contains("services.web.secrets[1].uid")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("secrets.token: needs a `file`")), "{errors:#?}");
}

#[test]
fn from_a_commit_env_files_come_from_it_and_relative_binds_are_refused() {
    let files: std::collections::BTreeMap<String, String> =
        [("deploy/.env", "TAG=7\n"), ("deploy/web.env", "FROM_FILE=yes\n")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
    let options = ComposeOptions {
        namespace: Some("team".into()),
        commit_files: Some(files),
        ..ComposeOptions::default()
    };
    let text = "services:\n  web:\n    image: busybox:${TAG}\n    env_file: web.env\n";
    let (objects, errors) = crate::parse::parse_objects_str_with(
        "deploy/compose.yml",
        text,
        std::path::Path::new("deploy"),
        &options,
    );
    assert!(errors.is_empty(), "{errors:#?}");
    let web = &objects.containers[0].container;
    assert_eq!((web.metadata.namespace.as_str(), web.metadata.name.as_str()), ("team", "deploy-web"));
    assert_eq!(web.spec.image.to_string(), "busybox:7");
    assert_eq!(web.spec.env.get("FROM_FILE").map(|v| v.to_string()).as_deref(), Some("yes"));
    let text = "services:\n  web:\n    image: busybox\n    env_file: missing.env\n    volumes: [./data:/data, /srv:/srv]\n";
    let (_, errors) = crate::parse::parse_objects_str_with(
        "deploy/compose.yml",
        text,
        std::path::Path::new("deploy"),
        &options,
    );
    let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("cannot read the env_file /deploy/missing.env")), "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("relative bind path `./data`")), "{errors:#?}");
}

#[test]
fn interpolation_errors_name_their_line() {
    let errors = errors_of("services:\n  web:\n    image: busybox\n    user: ${NOBODY:?set NOBODY}\n");
    assert_eq!(
        errors,
        ["compose.yml:4:11: services.web.user: required variable `NOBODY` is unset or empty: set NOBODY"]
    );
    let errors = errors_of("services:\n  web:\n    image: busybox\n    hostname: 5$\n");
    assert!(
        errors[0].starts_with("compose.yml:4:15: services.web.hostname: invalid interpolation"),
        "{errors:?}"
    );
}

#[test]
fn kedge_rules_point_at_the_compose_line() {
    let errors = errors_of("services:\n  web:\n    image: busybox\n    mem_limit: lots\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("compose.yml:4:5:"), "{errors:?}");
}

#[test]
fn profiles_skip_services_unless_active() {
    let text = "services:\n  web: {image: busybox}\n  debug: {image: busybox, profiles: [debug]}\n";
    let (objects, errors) = convert_with(text, &options());
    assert!(errors.is_empty());
    assert_eq!(objects.containers.len(), 1);
    let active = ComposeOptions { profiles: vec!["debug".into()], ..options() };
    assert_eq!(convert_with(text, &active).0.containers.len(), 2);
    let errors = errors_of("services:\n  web: {image: busybox, depends_on: [debug]}\n  debug: {image: busybox, profiles: [debug]}\n");
    assert!(errors[0].contains("not enabled by the active profiles"), "{errors:?}");
}

#[test]
fn warnings_do_not_refuse_the_file() {
    let (objects, errors) = convert_with(
        "services:\n  web: {image: busybox, build: ., expose: [80], user: $UNSET}\n",
        &options(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(objects.warnings.len(), 3, "{:?}", objects.warnings);
}

#[test]
fn project_names_follow_compose() {
    let named = ComposeOptions { project: None, ..options() };
    let (objects, _) =
        convert_with("name: My_App\nservices:\n  web_1: {image: busybox}\nvolumes: {data: {}}\n", &named);
    assert_eq!(objects.containers[0].container.metadata.name, "my-app-web-1");
    assert_eq!(objects.containers[0].container.metadata.namespace, "my-app");
    assert_eq!(objects.containers[0].container.spec.networks[0].name, "my_app_default");
}

#[test]
fn short_ports() {
    let check = |text: &str, expected: serde_json::Value| {
        assert_eq!(short_port(text).map(serde_json::Value::from), Ok(expected), "{text}")
    };
    check("80", serde_json::json!([{"containerPort": 80, "protocol": "tcp"}]));
    check("8080:80", serde_json::json!([{"containerPort": 80, "hostPort": 8080, "protocol": "tcp"}]));
    check(
        "127.0.0.1::80/udp",
        serde_json::json!([{"containerPort": 80, "hostIp": "127.0.0.1", "protocol": "udp"}]),
    );
    check(
        "[::1]:81:80",
        serde_json::json!([{"containerPort": 80, "hostPort": 81, "hostIp": "::1", "protocol": "tcp"}]),
    );
    check(
        "1-2:3-4",
        serde_json::json!([{"containerPort": 3, "hostPort": 1, "protocol": "tcp"}, {"containerPort": 4, "hostPort": 2, "protocol": "tcp"}]),
    );
    assert!(short_port("1-3:3-4").is_err());
    assert!(short_port("x:80").is_err());
}

#[test]
fn environment_of_a_bare_key_comes_from_the_environment() {
    let (objects, errors) = convert_with(
        "services:\n  web:\n    image: busybox\n    environment: [TAG, MISSING, A=1]\n",
        &options(),
    );
    assert!(errors.is_empty());
    let env = &objects.containers[0].container.spec.env;
    assert_eq!(env, &BTreeMap::from([("TAG".to_owned(), "1".to_owned()), ("A".to_owned(), "1".to_owned())]));
}
