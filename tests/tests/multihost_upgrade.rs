//! The agent upgrade campaign end to end (docs/upgrades.md): three agents running *in containers*
//! (kedge's own image, built from the binary under test by scripts/build-image), one per Docker
//! engine, on a three-member etcd. `kedge upgrade agents --version v2` rolls them host by host, each
//! through a helper container; then a campaign to a broken image (its binary exits at once) fails on its first
//! host, which gets its old agent container back with the same ID, and leaves the other hosts alone.
//!
//! Each host is an engine in its own network namespace (kedge_tests::netns). The agent containers use
//! the engine's host network, i.e. that namespace: they reach etcd over the host's link and serve
//! their API on the host's address, with the engine's socket and a state directory (for the API
//! token) bound in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kedge_controller::store::{keys, DeleteCondition, SharedStore};
use kedge_tests::netns::{Cluster, NetnsHost, AGENT_API_PORT};
use kedge_tests::{eventually, kedge_bin, TestScope, TEST_LABEL};
use serde_json::Value;

const READY: Duration = Duration::from_secs(120);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn ok(output: Output, what: &str) -> String {
    assert!(output.status.success(), "{what}: {}{}", text(&output.stdout), text(&output.stderr));
    text(&output.stdout).trim().to_owned()
}

/// `docker ARGS` against the engine at `docker_host`.
fn docker_on(docker_host: &str, args: &[&str]) -> Output {
    Command::new("docker").args(args).env("DOCKER_HOST", docker_host).output().expect("the docker CLI")
}

/// Removes the test's images from the shared engine when dropped, also when the test fails.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        let mut args = vec!["rmi", "-f"];
        args.extend(self.0.iter().map(String::as_str));
        let _ = Command::new("docker").args(&args).output();
    }
}

struct Host {
    name: String,
    /// `unix://...` of the host's engine.
    docker_host: String,
    /// The agent's API, on the host's address in its network namespace.
    api_url: String,
    state_dir: PathBuf,
}

impl Host {
    fn container(&self) -> String {
        format!("kedge-agent-{}", self.name)
    }

    /// `(name, id, image)` of every container on this host's engine.
    fn containers(&self) -> Vec<(String, String, String)> {
        let out = ok(
            docker_on(
                &self.docker_host,
                &["ps", "-a", "--no-trunc", "--format", "{{.Names}} {{.ID}} {{.Image}}"],
            ),
            "docker ps",
        );
        let mut all: Vec<(String, String, String)> = out
            .lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                Some((parts.next()?.to_owned(), parts.next()?.to_owned(), parts.next()?.to_owned()))
            })
            .collect();
        all.sort();
        all
    }

    fn agent_id(&self) -> String {
        ok(docker_on(&self.docker_host, &["inspect", "-f", "{{.Id}}", &self.container()]), "inspect agent")
    }
}

async fn host_record(store: &SharedStore, host: &str) -> Option<Value> {
    let kv = store.get(&keys::host_key(host).unwrap()).await.ok()??;
    serde_json::from_slice(&kv.value).ok()
}

/// kedge's image from the binary under test, tagged `:v1` and `:v2` (only the version label
/// differs), and `:v3`, whose binary exits at once (an unknown flag, code 2).
fn build_images(id: &str) -> (Images, [String; 3]) {
    let repository = format!("kedge-test/kedge-up-{id}");
    let tags = [format!("{repository}:v1"), format!("{repository}:v2"), format!("{repository}:v3")];
    let images = Images(tags.to_vec());
    let test_label = format!("{TEST_LABEL}={id}");
    for (tag, version) in [(&tags[0], "v1"), (&tags[1], "v2")] {
        let built = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/build-image"))
            .args(["--binary", kedge_bin().to_str().unwrap(), "--tag", tag, "--label", &test_label])
            .args(["--label", &format!("org.opencontainers.image.version={version}")])
            .output()
            .expect("scripts/build-image runs");
        ok(built, "build-image");
    }
    let dockerfile = format!(
        "FROM {}\nENTRYPOINT [\"/kedge\", \"--no-such-flag\"]\nLABEL org.opencontainers.image.version=v3\n",
        tags[0]
    );
    let mut build = Command::new("docker")
        .args(["build", "-q", "-t", &tags[2], "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut build.stdin.take().unwrap(), dockerfile.as_bytes()).unwrap();
    ok(build.wait_with_output().unwrap(), "docker build of the broken image");
    (images, tags)
}

/// A host: its own engine (with the images loaded) and an agent container on `image`.
/// The agent container uses the engine's host network, i.e. the host's network namespace: it reaches
/// etcd over the host's link, and serves its API on the host's address.
fn start_host(net: &NetnsHost, work: &Path, images: &[String; 3], store_url: &str, env: &[&str]) -> Host {
    let name = net.name.clone();
    let state_dir = work.join(&name);
    std::fs::create_dir_all(&state_dir).unwrap();
    let host = Host {
        docker_host: net.docker_host.clone(),
        api_url: format!("http://{}:{AGENT_API_PORT}", net.address),
        state_dir,
        name,
    };
    let socket = host.docker_host.strip_prefix("unix://").unwrap();
    let listen = format!("{}:{AGENT_API_PORT}", net.address);
    let store_url = store_url.to_owned();
    let mounts =
        [format!("{socket}:/var/run/docker.sock"), format!("{}:/var/lib/kedge", host.state_dir.display())];
    let mut args = vec!["run", "-d", "--name"];
    let container = host.container();
    args.extend([container.as_str(), "--network", "host", "--restart", "unless-stopped"]);
    args.extend(["-v", &mounts[0], "-v", &mounts[1]]);
    for variable in env {
        args.extend(["-e", variable]);
    }
    args.extend([
        images[0].as_str(),
        "agent",
        "--store",
        &store_url,
        "--host-name",
        &host.name,
        "--listen",
        &listen,
    ]);
    ok(docker_on(&host.docker_host, &args), "docker run of the agent");
    host
}

/// Runs the `kedge` CLI against `host`'s agent API.
fn kedge(host: &Host, work: &Path, args: &[&str]) -> Output {
    let token = std::fs::read_to_string(host.state_dir.join("api-token")).expect("the agent's token");
    Command::new(kedge_bin())
        .args(["--server", &host.api_url])
        .args(args)
        .env("KEDGE_TOKEN", token.trim())
        .env("KEDGE_CONFIG", work.join("no-config.json"))
        .output()
        .expect("kedge runs")
}

async fn wait_reporting(store: &SharedStore, host: &Host, version: &str) -> Value {
    eventually(&format!("{} reports {version} from its container", host.name), READY, || async {
        host_record(store, &host.name).await.filter(|r| r["version"] == version && r["container"].is_object())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_campaign_upgrades_three_agents_and_a_broken_image_is_rolled_back_on_the_first_host() {
    let TestScope { id, cleanup: _cleanup, .. } = TestScope::new();
    let (_images, images) = build_images(&id);
    let [v1, v2, _] = images.clone();
    let loaded: Vec<&str> = images.iter().map(String::as_str).collect();
    let cluster = Cluster::start(3, 3, &loaded).await;
    let store = cluster.store().await;
    let work = tempfile::tempdir().unwrap();
    let hosts: Vec<Host> = cluster
        .hosts
        .iter()
        .map(|net| start_host(net, work.path(), &images, cluster.store_url(), &[]))
        .collect();
    for host in &hosts {
        let record = wait_reporting(&store, host, "v1").await;
        assert_eq!(record["container"]["name"], host.container().as_str());
        assert_eq!(record["container"]["image"], v1.as_str());
    }
    let kedge = |host: &Host, args: &[&str]| kedge(host, work.path(), args);
    let listed = ok(kedge(&hosts[0], &["get", "hosts"]), "get hosts");
    assert!(listed.lines().next().unwrap().contains("UPGRADE"), "{listed}");
    let ids_v1: Vec<String> = hosts.iter().map(Host::agent_id).collect();
    // Bad input changes nothing: not a tag (2), no host matches (3).
    let bad = kedge(&hosts[0], &["upgrade", "agents", "--version", "v2 final"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(text(&bad.stderr).contains("is not an image tag"), "{}", text(&bad.stderr));
    let none = kedge(&hosts[0], &["upgrade", "agents", "--version", "v2", "-l", "zone=nowhere"]);
    assert_eq!(none.status.code(), Some(3), "{}", text(&none.stderr));
    let listed = ok(kedge(&hosts[0], &["get", "upgrades"]), "get upgrades");
    assert!(listed.is_empty(), "no campaign was created: {listed}");

    // The campaign to v2, followed through the API of an agent that is itself upgraded.
    let started = Instant::now();
    let campaign = kedge(&hosts[0], &["upgrade", "agents", "--version", "v2", "--timeout", "60s"]);
    let took = started.elapsed();
    let printed = format!("{}{}", text(&campaign.stdout), text(&campaign.stderr));
    eprintln!("{printed}");
    assert_eq!(campaign.status.code(), Some(0), "{printed}");
    let campaign_id = printed.split_whitespace().nth(2).unwrap().trim_end_matches(':').to_owned();
    let shown = ok(kedge(&hosts[1], &["get", "upgrades", &campaign_id, "-o", "json"]), "get upgrades");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["state"], "Succeeded", "{shown}");
    let mut previous_end = None;
    for host in shown["hosts"].as_array().unwrap() {
        assert_eq!(host["state"], "Succeeded", "{shown}");
        // One host at a time: each starts after the previous one ended.
        let start = host["startedAt"].as_str().unwrap().to_owned();
        if let Some(end) = &previous_end {
            assert!(&start >= end, "{shown}");
        }
        previous_end = Some(host["finishedAt"].as_str().unwrap().to_owned());
        eprintln!("host {} upgraded in {:.1}s", host["name"], host["durationSeconds"].as_f64().unwrap());
    }
    eprintln!("campaign of three hosts: {:.1}s", took.as_secs_f64());
    for (host, old_id) in hosts.iter().zip(&ids_v1) {
        let record = host_record(&store, &host.name).await.unwrap();
        assert_eq!(record["version"], "v2", "{record}");
        assert_eq!(record["container"]["image"], v2.as_str(), "{record}");
        let containers = host.containers();
        // Only the new agent: the old container and the helper are gone.
        assert_eq!(containers.len(), 1, "{}: {containers:?}", host.name);
        assert_eq!(containers[0].0, host.container());
        assert_ne!(&containers[0].1, old_id);
        assert_eq!(containers[0].2, v2);
    }
    let wide = ok(kedge(&hosts[2], &["get", "hosts", "-o", "wide"]), "get hosts -o wide");
    for host in &hosts {
        let row = wide.lines().find(|l| l.starts_with(&host.name)).unwrap_or_else(|| panic!("{wide}"));
        assert!(row.contains(" v2 ") && row.contains("v2 Succeeded"), "{wide}");
    }
    let events = ok(kedge(&hosts[2], &["get", "events", "-A", "-o", "json"]), "get events");
    for host in &hosts {
        for reason in ["UpgradeStarted", "UpgradeSucceeded"] {
            let wanted = format!("Host/{}", host.name);
            let found = serde_json::from_str::<Value>(&events).unwrap()["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["involvedObject"] == wanted.as_str() && e["reason"] == reason);
            assert!(found, "no {reason} event for {}: {events}", host.name);
        }
    }

    // The campaign to the broken image: the first host rolls back to its very container, the
    // others are never asked.
    let ids_v2: Vec<String> = hosts.iter().map(Host::agent_id).collect();
    let broken = kedge(&hosts[2], &["upgrade", "agents", "--version", "v3", "--timeout", "60s"]);
    let printed = format!("{}{}", text(&broken.stdout), text(&broken.stderr));
    eprintln!("{printed}");
    assert_eq!(broken.status.code(), Some(1), "{printed}");
    let broken_id = printed.split_whitespace().nth(2).unwrap().trim_end_matches(':').to_owned();
    let shown: Value =
        serde_json::from_str(&ok(kedge(&hosts[2], &["get", "upgrades", &broken_id, "-o", "json"]), "get"))
            .unwrap();
    assert_eq!(shown["state"], "Failed", "{shown}");
    let order: Vec<&str> =
        shown["hosts"].as_array().unwrap().iter().map(|h| h["name"].as_str().unwrap()).collect();
    let first = &shown["hosts"][0];
    assert_eq!(first["state"], "RolledBack", "{shown}");
    let reason = first["message"].as_str().unwrap();
    assert!(reason.starts_with("new agent exited with code 2: error: unexpected argument"), "{shown}");
    for other in &shown["hosts"].as_array().unwrap()[1..] {
        assert_eq!(other["state"], "Skipped", "{shown}");
    }
    let by_name: BTreeMap<&str, (&Host, &String)> =
        hosts.iter().zip(&ids_v2).map(|(h, id)| (h.name.as_str(), (h, id))).collect();
    for (index, name) in order.iter().enumerate() {
        let (host, id_before) = by_name[name];
        let containers = host.containers();
        assert_eq!(containers.len(), 1, "{name}: {containers:?}");
        // The very same container: restored (first host) or never touched (the others).
        assert_eq!(&containers[0].1, id_before, "{name}");
        assert_eq!(containers[0].2, v2);
        let record = eventually(&format!("{name} reports v2"), READY, || async {
            host_record(&store, name).await.filter(|r| r["version"] == "v2")
        })
        .await;
        assert_eq!(record["container"]["id"], id_before.as_str());
        let upgrade = &kedge_upgrade_of(&store, name).await;
        if index == 0 {
            assert_eq!(upgrade["state"], "RolledBack", "{upgrade}");
            assert_eq!(upgrade["version"], "v3");
        } else {
            assert_eq!(upgrade["version"], "v2", "never asked to move to v3: {upgrade}");
        }
    }
    let events = ok(kedge(&hosts[2], &["get", "events", "-A", "-o", "json"]), "get events");
    assert!(events.contains("UpgradeRolledBack"), "{events}");
    let table = ok(kedge(&hosts[2], &["get", "hosts"]), "get hosts");
    assert!(table.contains("v3 RolledBack: new agent exited with code 2"), "{table}");
    eprintln!("{table}");
}

async fn kedge_upgrade_of(store: &SharedStore, host: &str) -> Value {
    let kv = store.get(&keys::host_upgrade_key(host).unwrap()).await.unwrap().expect("an upgrade record");
    serde_json::from_slice(&kv.value).unwrap()
}

/// The helper crashes (aborts, as under SIGKILL or an OOM kill) at a step of its recreate; Docker's
/// restart policy starts it again, and it finishes or undoes the interrupted recreate instead of
/// trying again. Crashing after the old agent stopped (the host has no agent at that moment) gets the
/// old container back, same ID; crashing after the new agent started completes the upgrade.
#[tokio::test(flavor = "multi_thread")]
async fn a_helper_that_crashes_midway_restores_the_old_agent_or_completes_the_upgrade() {
    let TestScope { id, cleanup: _cleanup, .. } = TestScope::new();
    let (_images, images) = build_images(&id);
    let loaded: Vec<&str> = images.iter().map(String::as_str).collect();
    let cluster = Cluster::start(2, 1, &loaded).await;
    let store = cluster.store().await;
    let work = tempfile::tempdir().unwrap();
    let rounds = [("recreate.after_stop_old", "RolledBack"), ("recreate.after_start_new", "Succeeded")];
    for ((failpoint, outcome), net) in rounds.into_iter().zip(&cluster.hosts) {
        let env = format!("{}={failpoint}", kedge_controller::executor::failpoint::ENV);
        let name = net.name.clone();
        let host = start_host(net, work.path(), &images, cluster.store_url(), &[&env]);
        wait_reporting(&store, &host, "v1").await;
        let id_before = host.agent_id();
        let campaign =
            kedge(&host, work.path(), &["upgrade", "agents", "--version", "v2", "--timeout", "60s"]);
        let printed = format!("{}{}", text(&campaign.stdout), text(&campaign.stderr));
        eprintln!("{failpoint}: {printed}");
        let expected_exit = if outcome == "Succeeded" { 0 } else { 1 };
        assert_eq!(campaign.status.code(), Some(expected_exit), "{failpoint}: {printed}");
        let upgrade = kedge_upgrade_of(&store, &name).await;
        assert_eq!(upgrade["state"], outcome, "{failpoint}: {upgrade}");
        assert!(upgrade["message"].as_str().unwrap().contains("crashed"), "{failpoint}: {upgrade}");
        let containers = host.containers();
        assert_eq!(containers.len(), 1, "{failpoint}: no helper or old container left: {containers:?}");
        if outcome == "RolledBack" {
            assert_eq!(containers[0].1, id_before, "{failpoint}: the very same agent container");
            assert_eq!(containers[0].2, images[0]);
            wait_reporting(&store, &host, "v1").await;
        } else {
            assert_ne!(containers[0].1, id_before);
            assert_eq!(containers[0].2, images[1]);
            wait_reporting(&store, &host, "v2").await;
        }
        // The next round is a campaign of its own, over its own host only: this host leaves.
        ok(docker_on(&host.docker_host, &["rm", "-f", &host.container()]), "remove the agent");
        store.delete(&keys::host_key(&name).unwrap(), DeleteCondition::Always).await.unwrap();
    }
}
