//! `kedge recreate NAME` and `POST .../containers/{name}/recreate` on containers started by hand:
//! every network with its aliases and static address survives, `--cleanup` removes the old image,
//! and a new container that fails to start rolls back to the very same old container.

use crate::updater_support;

use std::sync::Arc;
use std::time::Instant;

use kedge_controller::api::{self, ApiListener, ApiState};
use kedge_controller::docker::DockerClient;
use kedge_controller::store::{EmbeddedOptions, EmbeddedStore, SharedStore};
use updater_support::*;

/// A container on three networks: `front` (alias, static IP), `back` (alias), `admin` (two aliases,
/// static IP), plus a port, an env variable and a named volume.
fn three_network_container(t: &Updater, image: &str) -> (String, [(String, String); 3], String) {
    let (front, front_prefix) = t.network("front");
    let (back, _) = t.network("back");
    let (admin, admin_prefix) = t.network("admin");
    let name = t.name("multi");
    let volume = t.name("data");
    let label = t.label();
    docker_ok(&["volume", "create", "--label", &label, &volume]);
    let front_ip = format!("{front_prefix}.50");
    let admin_ip = format!("{admin_prefix}.60");
    docker_ok(&[
        "create",
        "--name",
        &name,
        "--label",
        &label,
        "--network",
        &front,
        "--network-alias",
        "web-front",
        "--ip",
        &front_ip,
        "-p",
        "127.0.0.1::80",
        "-e",
        "GREETING=hello",
        "-v",
        &format!("{volume}:/data"),
        image,
    ]);
    docker_ok(&["network", "connect", "--alias", "web-back", &back, &name]);
    docker_ok(&[
        "network",
        "connect",
        "--alias",
        "web-admin",
        "--alias",
        "admin",
        "--ip",
        &admin_ip,
        &admin,
        &name,
    ]);
    docker_ok(&["start", &name]);
    docker_ok(&["exec", &name, "sh", "-c", "echo kept > /data/marker"]);
    (name, [(front, front_ip), (back, String::new()), (admin, admin_ip)], volume)
}

fn assert_networks_kept(name: &str, networks: &[(String, String); 3]) {
    for (network, ip) in networks {
        let aliases =
            inspect(&format!("{{{{json (index .NetworkSettings.Networks \"{network}\").Aliases}}}}"), name);
        let expected: &[&str] = if network.starts_with("front") {
            &["web-front"]
        } else if network.starts_with("back") {
            &["web-back"]
        } else {
            &["web-admin", "admin"]
        };
        for alias in expected {
            assert!(aliases.contains(&format!("\"{alias}\"")), "{network}: alias {alias} lost: {aliases}");
        }
        if !ip.is_empty() {
            let requested = inspect(
                &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAMConfig.IPv4Address}}}}"),
                name,
            );
            assert_eq!(&requested, ip, "{network}: static address");
            let actual =
                inspect(&format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"), name);
            assert_eq!(&actual, ip, "{network}: address in use");
        }
    }
    let attached = inspect("{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", name);
    assert_eq!(attached.split_whitespace().count(), 3, "exactly the three networks: {attached}");
}

#[test]
fn recreate_keeps_three_networks_aliases_static_ips_volume_port_env_and_cleanup_removes_the_old_image() {
    let t = Updater::new();
    let repository = format!("kedge-test/multi-{}", t.run);
    let image_v1 = t.build_web(&repository, "one\n");
    let (name, networks, _volume) = three_network_container(&t, &repository);
    let old_id = inspect("{{.Id}}", &name);
    let image_v2 = t.build_web(&repository, "two\n");

    let started = Instant::now();
    let out = t.kedge(&["recreate", &name, "--cleanup"]);
    eprintln!("kedge recreate: {:?}", started.elapsed());
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).starts_with(&format!("container {name} recreated")), "{}", stdout(&out));
    for step in
        ["creating the new container", "stopping the old container", "starting the new container", "done"]
    {
        assert!(stderr(&out).contains(step), "progress {step:?} missing: {}", stderr(&out));
    }
    assert!(stdout(&out).contains("old image removed"), "{}", stdout(&out));

    assert_ne!(inspect("{{.Id}}", &name), old_id);
    assert_eq!(inspect("{{.Image}}", &name), image_v2);
    assert_eq!(t.page(&name), "two\n");
    assert_networks_kept(&name, &networks);
    assert!(inspect("{{json .Config.Env}}", &name).contains("GREETING=hello"));
    assert_eq!(
        inspect("{{json .HostConfig.PortBindings}}", &name),
        r#"{"80/tcp":[{"HostIp":"127.0.0.1","HostPort":""}]}"#
    );
    assert_eq!(
        stdout(&docker_ok(&["exec", &name, "cat", "/data/marker"])),
        "kept\n",
        "the named volume's data"
    );
    assert!(
        !docker_cli(&["image", "inspect", &image_v1]).status.success(),
        "--cleanup removes the unused old image"
    );
}

#[test]
fn a_new_container_that_fails_to_start_rolls_back_to_the_same_old_container() {
    let t = Updater::new();
    let tag = format!("kedge-test/rollback-{}:latest", t.run);
    t.build_web(&tag, "old\n");
    let (name, networks, _volume) = three_network_container(&t, &tag);
    let old_id = inspect("{{.Id}}", &name);
    // The tag now names an image that exits 3 at once: the new container cannot prove itself.
    t.tag("kedge-test/fail:latest", &tag);

    let out = t.kedge(&["recreate", &name, "--running-grace", "2s"]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    assert!(stderr(&out).contains("rolling back"), "progress shows the rollback: {}", stderr(&out));

    assert_eq!(inspect("{{.Id}}", &name), old_id, "the very same old container");
    assert_eq!(inspect("{{.State.Running}}", &name), "true");
    assert_eq!(t.page(&name), "old\n");
    assert_networks_kept(&name, &networks);
    let filter = format!("label={}", t.label());
    let left = stdout(&docker_ok(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]));
    assert_eq!(left.trim(), name, "no temporary container left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_recreate_takes_pull_in_the_body_and_answers_a_report() {
    let t = Updater::new();
    let reference = format!("{}/kedge-test/api-{}:latest", t.env.registry, t.run);
    let image_v1 = t.build_web(&reference, "one\n");
    docker_ok(&["push", &reference]);
    let name = t.name("api");
    let label = t.label();
    docker_ok(&["run", "-d", "--name", &name, "--label", &label, &reference]);
    // A newer image in the registry only: the recreate must pull to see it.
    let image_v2 = t.build_web(&reference, "two\n");
    docker_ok(&["push", &reference]);
    docker_ok(&["tag", &image_v1, &reference]);
    docker_ok(&["image", "rm", &image_v2]);

    let store_dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(store_dir.path().join("store.db"), EmbeddedOptions::default())
        .await
        .expect("the embedded store opens");
    let store: SharedStore = Arc::new(store);
    let docker = DockerClient::connect().await.expect("the test engine");
    let state = ApiState {
        recreate: Some(kedge_controller::updater::recreate_handler(docker)),
        ..ApiState::new(store, "test-host", None)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(state, ApiListener::Tcp(listener), async move {
        let _ = stopped.await;
    }));

    let path = format!("/api/v1/namespaces/default/containers/{name}/recreate");
    let started = Instant::now();
    let reply = api_support::http(&address, "POST", &path, None, Some(br#"{"pull": true}"#)).await;
    eprintln!("API recreate with pull: {:?}", started.elapsed());
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let report = reply.json();
    assert_eq!(report["name"], name.as_str());
    assert_eq!(report["newId"].as_str(), Some(inspect("{{.Id}}", &name).as_str()));
    assert!(report["steps"].as_array().is_some_and(|steps| steps.iter().any(|s| s == "Pull")), "{report}");
    assert_eq!(inspect("{{.Image}}", &name), image_v2, "pulled, then recreated on the new image");
    assert_eq!(t.page(&name), "two\n");

    let missing = format!("/api/v1/namespaces/default/containers/{}/recreate", t.name("none"));
    let reply = api_support::http(&address, "POST", &missing, None, None).await;
    assert_eq!(reply.status, 409, "{}", String::from_utf8_lossy(&reply.body));
    let reply = api_support::http(&address, "POST", &path, None, Some(b"not json")).await;
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));

    let _ = stop.send(());
    server.await.expect("server task").expect("server ends cleanly");
}
