//! The Compose import against Compose itself: one file, with interpolation (environment and `.env`),
//! `env_file`, a `service_healthy` and a `service_completed_successfully` dependency (a one-off job that
//! writes into the named volume), a named and a relative bind volume, two networks with
//! aliases, limits and `deploy.replicas: 2`, brought up by `docker-compose --compatibility` (Debian's
//! 1.29.2; `--compatibility` is what maps `deploy.*` to containers in Compose v1) and by a real kedge
//! agent from `kedge apply -f compose.yml`. Each service's `docker inspect` is compared field by field.
//!
//! Normalised, because it must differ: the project in container, network and volume names (each
//! side has its own project so both run at once on one engine), the host port (each side publishes
//! its own), Compose's `com.docker.compose.*` labels and kedge's `io.kedge.*` ownership labels, the
//! container's short ID among its network aliases (the engine adds it, and the IDs differ), and the
//! `tmpfs` form (Compose v1 sends `HostConfig.Tmpfs`, kedge a tmpfs mount; both are compared as
//! target, size and mode). The fields kedge's spec gained for Compose (`init`, `shmSize`, `extraHosts`,
//! `ulimits`, `dns`, `dnsSearch`, `dnsOptions`, `tty`, `stdinOpen`) are compared too, and a
//! file-sourced secret (a read-only bind at `/run/secrets/NAME`, or at its relative `target` there).
//!
//! And `kedge apply` of a file with three unsupported keys names all three with their lines and
//! applies nothing.

use crate::api_support;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use api_support::{kedge_command, stderr, stdout, AgentGuard, TestServer};
use kedge_tests::{eventually, run_id, TestEnv};
use serde_json::{json, Value};

const COMPOSE_FILE: &str = r#"
services:
  db:
    image: kedge-test/web:latest
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1/healthz"]
      interval: 1s
      timeout: 2s
      retries: 3
      start_period: 1s
    volumes:
      - data:/data
      - ./files:/files:ro
    networks:
      back:
        aliases: [database]
    labels:
      io.kedge.test: ${RUN}
    restart: unless-stopped
  web:
    image: kedge-test/app:v1
    entrypoint: ["/bin/sh", "-c"]
    command: "\"echo $${GREETING}; exec sleep 3600\""
    env_file: app.env
    environment:
      GREETING: ${GREETING:-hello}
      MODE: ${MODE}
      PORT: $WEB_PORT
    user: "1000:1000"
    working_dir: /tmp
    hostname: webhost
    ports: ["127.0.0.1:${WEB_PORT}:80", "90/udp"]
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
    networks:
      front: {aliases: [www]}
      back:
    mem_limit: 64m
    mem_reservation: 32m
    cpus: 0.5
    restart: on-failure:3
    stop_signal: SIGINT
    stop_grace_period: 5s
    cap_add: [CHOWN]
    cap_drop: [MKNOD, NET_RAW]
    labels:
      io.kedge.test: ${RUN}
      tier: front
    logging:
      driver: json-file
      options: {max-size: 1m}
    tmpfs: ["/scratch:size=1m,mode=1770"]
    init: true
    shm_size: 128m
    extra_hosts: ["db.example:192.0.2.10", "cache.example:192.0.2.11"]
    ulimits:
      nproc: 512
      nofile: {soft: 1024, hard: 2048}
    dns: [192.0.2.53, 192.0.2.54]
    dns_search: svc.example
    dns_opt: ["ndots:2"]
    tty: true
    stdin_open: true
    secrets: [token, {source: token, target: token2}]
  migrate:
    image: kedge-test/app:v1
    command: ["sh", "-c", "echo migrated > /data/migrated"]
    volumes: [data:/data]
    networks: [back]
    labels:
      io.kedge.test: ${RUN}
  worker:
    image: kedge-test/app:v1
    deploy:
      replicas: 2
      resources:
        limits: {memory: 32M, cpus: "0.25"}
        reservations: {memory: 16M}
      restart_policy: {condition: on-failure, max_attempts: 2}
    networks: [back]
    labels:
      io.kedge.test: ${RUN}
x-notes: ignored by both
volumes:
  data:
networks:
  front:
  back:
secrets:
  token:
    file: ./token.txt
"#;

/// Both projects' containers, networks and volumes, removed when dropped (also when the test fails):
/// `docker-compose down -v` for Compose's, and by label and name for kedge's (after the agent stopped).
struct Projects {
    dir: std::path::PathBuf,
    run: String,
    compose: String,
    kedge: String,
}

impl Projects {
    fn docker_compose(&self, args: &[&str], port: u16) -> Output {
        Command::new("docker-compose")
            .current_dir(&self.dir)
            .env("DOCKER_HOST", TestEnv::get().docker_host)
            .env("RUN", &self.run)
            .env("WEB_PORT", port.to_string())
            .env_remove("GREETING")
            .args(["-p", &self.compose, "-f", "compose.yml"])
            .args(args)
            .output()
            .expect("docker-compose is installed (scripts/test-env installs it)")
    }
}

impl Drop for Projects {
    fn drop(&mut self) {
        let _ = self.docker_compose(&["down", "-v", "-t", "1"], 0);
        let listed = docker(&["ps", "-aq", "--filter", &format!("label=io.kedge.test={}", self.run)]);
        let ids: Vec<&str> = listed.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").args(["rm", "-f", "-v"]).args(&ids).output();
        }
        for network in ["front", "back", "default"] {
            let _ =
                Command::new("docker").args(["network", "rm", &format!("{}_{network}", self.kedge)]).output();
        }
        let _ = Command::new("docker").args(["volume", "rm", &format!("{}_data", self.kedge)]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn docker(args: &[&str]) -> String {
    let _ = TestEnv::get();
    let output = Command::new("docker").args(args).output().expect("the docker CLI is installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn inspect(name: &str) -> Option<Value> {
    let text = docker(&["inspect", name]);
    serde_json::from_str::<Value>(&text).ok()?.get(0).cloned()
}

/// Two free ports, one for each side: both listeners are held until both are chosen, so the two differ.
fn two_free_ports() -> (u16, u16) {
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (first.local_addr().unwrap().port(), second.local_addr().unwrap().port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_file_runs_under_kedge_as_under_docker_compose() {
    let run = run_id();
    let dir = std::env::temp_dir().join(format!("kedge-compose-{run}"));
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/hello"), "hi\n").unwrap();
    std::fs::write(dir.join("token.txt"), "s3cret\n").unwrap();
    std::fs::write(dir.join("compose.yml"), COMPOSE_FILE).unwrap();
    std::fs::write(dir.join(".env"), "MODE=dotenv\n").unwrap();
    std::fs::write(dir.join("app.env"), "FROM_FILE=yes\nMODE=file\n").unwrap();
    let projects = Projects {
        dir: dir.clone(),
        run: run.clone(),
        compose: format!("cmp{run}"),
        kedge: format!("kdg{run}"),
    };
    let (compose_port, kedge_port) = two_free_ports();

    let up = projects.docker_compose(&["--compatibility", "up", "-d"], compose_port);
    assert!(up.status.success(), "docker-compose up: {}", stderr(&up));

    let agent = AgentGuard::spawn(&dir.join("agent"), &format!("compose-{run}"), &[]);
    let kedge = |args: &[&str]| -> Output {
        kedge_command(&dir)
            .env("KEDGE_SERVER", agent.socket_url())
            .env("RUN", &run)
            .env("WEB_PORT", kedge_port.to_string())
            .env_remove("GREETING")
            .args(args)
            .output()
            .expect("kedge runs")
    };
    eventually("the agent's API answers", Duration::from_secs(30), || async {
        kedge(&["version"]).status.success().then_some(())
    })
    .await;
    let applied = kedge(&["apply", "-f", "compose.yml", "-p", &projects.kedge]);
    assert!(applied.status.success(), "{}{}", stdout(&applied), stderr(&applied));
    let k = &projects.kedge;
    assert_eq!(
        stdout(&applied),
        format!(
            "container/{k}-db created\ncontainer/{k}-migrate created\ncontainer/{k}-web created\ncontainerset/{k}-worker created\n"
        )
    );
    let diff = kedge(&["diff", "-f", "compose.yml", "-p", k]);
    assert_eq!(diff.status.code(), Some(0), "diff of what was applied: {}", stdout(&diff));

    let (web, db) = (format!("{k}-web"), format!("{k}-db"));
    let workers = [format!("{k}-worker-0"), format!("{k}-worker-1")];
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let running = |name: &str| inspect(name).is_some_and(|i| i["State"]["Running"] == true);
        let healthy = inspect(&db).is_some_and(|i| i["State"]["Health"]["Status"] == "healthy");
        if healthy && running(&web) && workers.iter().all(|w| running(w)) {
            break;
        }
        // On a timeout, what kedge says of them, to tell why.
        assert!(
            std::time::Instant::now() < deadline,
            "kedge's containers did not all run (the database healthy) within 120 s:\n{}\n{}",
            stdout(&kedge(&["get", "containers", "-n", k])),
            stdout(&kedge(&["describe", "container", &db, "-n", k]))
                .lines()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let c = &projects.compose;
    let pairs = [
        (format!("{c}_db_1"), db.clone()),
        (format!("{c}_web_1"), web.clone()),
        (format!("{c}_migrate_1"), format!("{k}-migrate")),
        (format!("{c}_worker_1"), workers[0].clone()),
        (format!("{c}_worker_2"), workers[1].clone()),
    ];
    for (theirs, ours) in pairs {
        let theirs_seen = comparable(&inspect(&theirs).expect("Compose's container"), c, compose_port);
        let ours_seen = comparable(&inspect(&ours).expect("kedge's container"), k, kedge_port);
        for (field, expected) in theirs_seen.as_object().unwrap() {
            assert_eq!(
                &ours_seen[field], expected,
                "{field} of {ours} (kedge) and {theirs} (docker-compose)"
            );
        }
    }
    // What kedge made is what its spec says: no drift left (Synced), so no recreate loop from a
    // field read back differently from the engine (the new fields above included).
    let web_id = inspect(&web).unwrap()["Id"].clone();
    eventually("kedge's web container is Ready and Synced", Duration::from_secs(30), || async {
        let answer = kedge(&["get", "container", &web, "-n", k, "-o", "json"]);
        let object: Value = serde_json::from_slice(&answer.stdout).ok()?;
        let conditions = object["status"]["conditions"].as_array()?.clone();
        let holds = |kind: &str| conditions.iter().any(|c| c["type"] == kind && c["status"] == "True");
        (holds("Ready") && holds("Synced")).then_some(())
    })
    .await;
    assert_eq!(inspect(&web).unwrap()["Id"], web_id, "the web container was not recreated");
    // The job ran to completion (exit 0) before web started, and wrote into kedge's named volume.
    let migrate = inspect(&format!("{k}-migrate")).unwrap();
    assert_eq!(migrate["State"]["ExitCode"], 0);
    // Docker's times are UTC RFC 3339 with up to 9 fractional digits: padded, they sort as text.
    let time = |value: &Value| {
        let text = value.as_str().unwrap().trim_end_matches('Z');
        let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
        format!("{seconds}.{fraction:0<9}")
    };
    let web_started = time(&inspect(&web).unwrap()["State"]["StartedAt"]);
    assert!(time(&migrate["State"]["FinishedAt"]) <= web_started, "the job finished before web started");
    // The dependency gate and the interpolated command ran: the web container printed the greeting.
    let logs = Command::new("docker").args(["logs", &web]).output().unwrap();
    // With `tty: true` the output went through a terminal, which ends lines with CR LF.
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "hello\r\n");
    // The file secret is readable where Compose puts it, and read-only.
    for target in ["/run/secrets/token", "/run/secrets/token2"] {
        let read = Command::new("docker").args(["exec", &web, "cat", target]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&read.stdout), "s3cret\n", "{target}");
    }
    let write = Command::new("docker")
        .args(["exec", &web, "sh", "-c", "echo x > /run/secrets/token"])
        .output()
        .unwrap();
    assert!(!write.status.success(), "the secret is read-only");
    drop(agent);
}

/// What the comparison reads of one container's inspect, with what must differ normalised (see the
/// module's doc comment): the project's name as `P`, the published host port as `PORT`.
fn comparable(inspect: &Value, project: &str, port: u16) -> Value {
    let config = &inspect["Config"];
    let host = &inspect["HostConfig"];
    let name = |text: &str| text.replace(&format!("{project}_"), "P_");
    let mut env: Vec<String> =
        strings(&config["Env"]).into_iter().map(|e| e.replace(&port.to_string(), "PORT")).collect();
    env.sort();
    let labels: BTreeMap<String, Value> = config["Labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| {
            !key.starts_with("com.docker.compose.") && !key.starts_with("io.kedge.")
                || key.as_str() == "io.kedge.test"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let short_id = inspect["Id"].as_str().unwrap_or_default().get(..12).unwrap_or_default().to_owned();
    let networks: BTreeMap<String, Vec<String>> = inspect["NetworkSettings"]["Networks"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(network, settings)| {
            let mut aliases: Vec<String> =
                strings(&settings["Aliases"]).into_iter().filter(|a| *a != short_id).collect();
            aliases.sort();
            (name(network), aliases)
        })
        .collect();
    let mut mounts: Vec<Value> = inspect["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Type"] != "tmpfs")
        .map(|m| {
            let source = if m["Type"] == "volume" {
                name(m["Name"].as_str().unwrap_or_default())
            } else {
                m["Source"].as_str().unwrap_or_default().to_owned()
            };
            json!({"type": m["Type"], "source": source, "target": m["Destination"], "rw": m["RW"]})
        })
        .collect();
    mounts.sort_by_key(|m| m["target"].as_str().unwrap_or_default().to_owned());
    let mut tmpfs: BTreeMap<String, String> = host["Tmpfs"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(target, options)| {
            // Compose v1's `size=1m,mode=1770`, written as kedge's mount is read below.
            let mut shown: Vec<String> = options
                .as_str()
                .unwrap_or_default()
                .split(',')
                .map(|option| option.replace("size=1m", "size=1048576"))
                .collect();
            shown.sort();
            (target.clone(), shown.join(" "))
        })
        .collect();
    for mount in host["Mounts"].as_array().into_iter().flatten().filter(|m| m["Type"] == "tmpfs") {
        let size = mount["TmpfsOptions"]["SizeBytes"].as_i64().unwrap_or_default();
        let mode = mount["TmpfsOptions"]["Mode"].as_i64().unwrap_or_default();
        tmpfs.insert(
            mount["Target"].as_str().unwrap_or_default().to_owned(),
            format!("mode={mode:o} size={size}"),
        );
    }
    let ports: BTreeMap<String, Value> = host["PortBindings"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(port_key, bindings)| {
            let bindings: Vec<Value> = bindings
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    let host_port = b["HostPort"].as_str().unwrap_or_default();
                    let host_port = if host_port == port.to_string() { "PORT" } else { host_port };
                    json!({"ip": b["HostIp"], "port": host_port})
                })
                .collect();
            (port_key.clone(), json!(bindings))
        })
        .collect();
    let mut extra_hosts = strings(&host["ExtraHosts"]);
    extra_hosts.sort();
    let mut ulimits: Vec<Value> = host["Ulimits"].as_array().cloned().unwrap_or_default();
    ulimits.sort_by_key(|u| u["Name"].as_str().unwrap_or_default().to_owned());
    json!({
        "image": config["Image"],
        "env": env,
        "cmd": config["Cmd"],
        "entrypoint": config["Entrypoint"],
        "user": config["User"],
        "workdir": config["WorkingDir"],
        "hostname": if config["Hostname"] == inspect["Id"].as_str().unwrap_or_default().get(..12).unwrap_or_default() { json!("<id>") } else { config["Hostname"].clone() },
        "labels": labels,
        "healthcheck": config["Healthcheck"],
        "stop signal": config["StopSignal"],
        "stop timeout": config["StopTimeout"],
        "restart policy": host["RestartPolicy"],
        "memory": host["Memory"],
        "memory reservation": host["MemoryReservation"],
        "nano cpus": host["NanoCpus"],
        "cap add": host["CapAdd"],
        "cap drop": host["CapDrop"],
        "log config": host["LogConfig"],
        "ports": ports,
        "mounts": mounts,
        "tmpfs": tmpfs,
        "networks": networks,
        "init": host["Init"],
        "shm size": host["ShmSize"],
        "extra hosts": extra_hosts,
        "ulimits": ulimits,
        "dns": host["Dns"],
        "dns search": host["DnsSearch"],
        "dns options": host["DnsOptions"],
        "tty": config["Tty"],
        "stdin open": config["OpenStdin"],
    })
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
}

/// Three different unsupported keys: all three named with their lines, exit 2, nothing applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_compose_keys_are_all_named_and_nothing_is_applied() {
    let server = TestServer::start().await;
    let project = api_support::unique("cmpbad");
    let file = server.dir.join("compose.yml");
    std::fs::write(
        &file,
        "services:\n  ok:\n    image: busybox\n  web:\n    image: busybox\n    mac_address: 02:42:ac:11:00:02\n    volumes_from: [ok]\ninclude: [other.yml]\n",
    )
    .unwrap();
    let applied = server.kedge(&["apply", "-f", file.to_str().unwrap(), "-p", &project]);
    assert_eq!(applied.status.code(), Some(2), "{}", stderr(&applied));
    let shown = stderr(&applied);
    let f = file.display();
    for expected in [
        format!("{f}:6:5: services.web.mac_address: `mac_address` is not supported"),
        format!("{f}:7:5: services.web.volumes_from: `volumes_from` is not supported"),
        format!("{f}:8:1: include: `include` is not supported"),
    ] {
        assert!(shown.contains(&expected), "{expected} in:\n{shown}");
    }
    assert!(shown.contains("3 error(s) in the input; nothing was changed"), "{shown}");
    let listed = server.kedge(&["get", "containers", "-n", &project, "-o", "name"]);
    assert_eq!(stdout(&listed), "", "nothing was applied");
}
