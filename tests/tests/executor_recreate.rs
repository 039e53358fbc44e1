//! The safe recreate against the real engine: what survives it, and rollback to the same container.

use crate::docker_support;

use std::io::{Read, Write};
use std::time::Duration;

use docker_support::*;
use kedge_controller::docker::{
    labels, HealthStatus, Healthcheck, Mount, MountSource, NetworkAttachment, PortBinding, Protocol,
};
use kedge_controller::executor::{ExecutorError, RecreateFailure, RecreateProgress, RecreateStep};
use kedge_tests::docker_cli;

#[tokio::test]
async fn recreate_keeps_networks_aliases_static_ip_volume_data_ports_and_env_and_runs_the_new_image() {
    let fx = Fixture::new().await;
    let (front, front_prefix) = fx.network("front").await;
    let (back, _) = fx.network("back").await;
    let volume = fx.volume("data");
    let host_port = free_port();
    let mut config = fx.managed("keep", APP_V1);
    config.env = vec!["GREETING=hi".to_owned()].into();
    config.mounts = vec![Mount {
        source: MountSource::Volume { name: Some(volume.clone()) },
        target: "/data".into(),
        read_only: false,
    }];
    config.port_bindings = vec![PortBinding {
        container_port: 8080,
        protocol: Protocol::Tcp,
        host_ip: Some("127.0.0.1".into()),
        host_port: Some(host_port),
    }];
    config.networks = vec![
        NetworkAttachment {
            network: front.clone(),
            aliases: vec!["api".into()],
            ipv4_address: Some(format!("{front_prefix}.20")),
        },
        NetworkAttachment { network: back.clone(), aliases: vec!["api-back".into()], ipv4_address: None },
    ];
    let old_id = fx.executor.create(&config).await.expect("create v1");
    fx.docker.start_container(&old_id).await.expect("start v1");
    sh(&fx.docker, &old_id, "echo precious > /data/file").await;

    // The declared config names only the image: v2's own CMD and ENV must apply, not v1's.
    let mut v2 = config.clone();
    v2.image = APP_V2.to_string();
    let mut steps = Vec::new();
    let report = fx
        .executor
        .recreate(&v2, &quick_strategy(), &mut |p| {
            if let RecreateProgress::Step(step) = p {
                steps.push(step)
            }
        })
        .await
        .expect("recreate");
    eprintln!("recreate v1 -> v2 took {:?}", report.duration);
    use RecreateStep::*;
    assert_eq!(
        steps,
        vec![CreateNew, StopOld, RenameOldAside, RenameNew, StartNew, WaitHealthy, RemoveOld, Done]
    );
    assert_eq!(report.old_id.as_deref(), Some(old_id.as_str()));
    assert_ne!(report.new_id, old_id);

    let new = fx.inspect(&config.name).await;
    assert_eq!(new.id, report.new_id);
    assert!(new.state.running);
    assert_eq!(new.image, APP_V2);
    assert_eq!(new.cmd, Some(vec!["/bin/sleep".to_string(), "7200".to_string()]), "v2's CMD");
    assert_eq!(env_value(&new.env, "VERSION"), Some("2"), "v2's ENV");
    assert_eq!(env_value(&new.env, "APP_MODE"), Some("two"));
    assert_eq!(env_value(&new.env, "GREETING"), Some("hi"), "declared env kept");
    assert!(fx.docker.is_process_running(&new.id, &["/bin/sleep".into(), "7200".into()]).await.expect("top"));
    assert_eq!(new.port_bindings, config.port_bindings);
    let on_front = new.networks.iter().find(|n| n.network == front).expect("on front");
    assert!(on_front.aliases.contains(&"api".to_string()));
    assert_eq!(on_front.ip_address.as_deref(), Some(format!("{front_prefix}.20").as_str()), "static IP kept");
    let on_back = new.networks.iter().find(|n| n.network == back).expect("on back");
    assert!(on_back.aliases.contains(&"api-back".to_string()));
    assert_eq!(sh(&fx.docker, &new.id, "cat /data/file").await.trim(), "precious", "volume data kept");
    assert!(labels::is_managed(&new.labels));
    assert_eq!(new.labels.get(labels::RECREATE_ID), Some(&report.recreate_id));

    // The old container is gone and nothing temporary is left.
    assert_eq!(fx.docker.inspect_container(&old_id).await.expect("inspect"), None);
    let left: Vec<_> = fx.containers_named(&config.name).await.into_iter().map(|c| c.name).collect();
    assert_eq!(left, vec![config.name.clone()]);
}

#[tokio::test]
async fn a_new_container_that_exits_at_once_rolls_back_to_the_same_old_container() {
    let fx = Fixture::new().await;
    let config = fx.managed("exits", APP_V1);
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    let mut failing = config.clone();
    failing.image = FAIL.to_string();
    let result = fx.executor.recreate(&failing, &quick_strategy(), &mut |_| {}).await;
    let Err(error) = result else { panic!("the recreate must fail") };
    assert_eq!(error.reason(), "NewContainerExited");
    match &error {
        ExecutorError::RolledBack {
            old_id: rolled_back_to,
            failure: RecreateFailure::Exited { exit_code, logs },
            ..
        } => {
            assert_eq!(rolled_back_to, &old_id);
            assert_eq!(*exit_code, Some(3));
            assert!(logs.contains("failing on purpose"), "{logs}");
        }
        other => panic!("expected a rollback after exit, got {other:?}"),
    }
    assert_old_is_back(&fx, &config.name, &old_id).await;
}

#[tokio::test]
async fn a_failing_healthcheck_rolls_back_to_the_same_old_container() {
    let fx = Fixture::new().await;
    let config = fx.managed("unhealthy", APP_V1);
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    let mut sick = config.clone();
    sick.image = APP_V2.to_string();
    sick.healthcheck = Some(Healthcheck {
        test: vec!["CMD".into(), "/bin/false".into()],
        interval: Some(Duration::from_millis(300)),
        timeout: Some(Duration::from_secs(1)),
        retries: Some(1),
        start_period: None,
        start_interval: None,
    });
    let mut health_seen = Vec::new();
    let result = fx
        .executor
        .recreate(&sick, &quick_strategy(), &mut |p| {
            if let RecreateProgress::Health(h) = p {
                health_seen.push(h)
            }
        })
        .await;
    match &result {
        Err(ExecutorError::RolledBack {
            old_id: back,
            failure: RecreateFailure::Unhealthy { health, .. },
            ..
        }) => {
            assert_eq!(back, &old_id);
            assert_eq!(*health, HealthStatus::Unhealthy);
        }
        other => panic!("expected a rollback after unhealthy, got {other:?}"),
    }
    assert_eq!(health_seen.last(), Some(&HealthStatus::Unhealthy));
    assert_old_is_back(&fx, &config.name, &old_id).await;
}

#[tokio::test]
async fn a_healthchecked_web_server_is_recreated_once_healthy_and_answers_on_its_port() {
    let fx = Fixture::new().await;
    let host_port = free_port();
    let mut config = fx.managed("web", WEB);
    config.port_bindings = vec![PortBinding {
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: Some("127.0.0.1".into()),
        host_port: Some(host_port),
    }];
    config.healthcheck = Some(Healthcheck {
        test: vec!["CMD".into(), "wget".into(), "-q".into(), "-O-".into(), "http://127.0.0.1/healthz".into()],
        interval: Some(Duration::from_millis(250)),
        timeout: Some(Duration::from_secs(2)),
        retries: Some(3),
        start_period: None,
        start_interval: None,
    });
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    let mut changed = config.clone();
    changed.env = vec!["CHANGED=1".to_owned()].into();
    let mut health_seen = Vec::new();
    let mut timeline = Vec::new();
    let started = std::time::Instant::now();
    let report = fx
        .executor
        .recreate(&changed, &quick_strategy(), &mut |p| {
            timeline.push((started.elapsed(), format!("{p:?}")));
            if let RecreateProgress::Health(h) = p {
                health_seen.push(h)
            }
        })
        .await
        .expect("recreate");
    eprintln!("recreate of a healthchecked web server took {:?}: {timeline:?}", report.duration);
    assert_eq!(health_seen.last(), Some(&HealthStatus::Healthy));
    let new = fx.inspect(&config.name).await;
    assert_eq!(new.state.health, Some(HealthStatus::Healthy));
    assert_eq!(env_value(&new.env, "CHANGED"), Some("1"));
    let page = http_get(host_port, "/healthz").await;
    assert!(page.contains("ok"), "{page}");
}

#[tokio::test]
async fn recreate_without_an_old_container_creates_and_starts() {
    let fx = Fixture::new().await;
    let config = fx.managed("fresh", APP_V1);
    let report = fx.executor.recreate(&config, &quick_strategy(), &mut |_| {}).await.expect("recreate");
    assert_eq!(report.old_id, None);
    assert!(fx.inspect(&config.name).await.state.running);
}

#[tokio::test]
async fn the_old_image_is_removed_when_asked_and_no_longer_used() {
    let fx = Fixture::new().await;
    let base = fx.managed("base", APP_V1);
    let base_id = fx.docker.create_container(&base).await.expect("create");
    let tag = format!("kedge-test/old-{}:1", fx.run);
    let commit = docker_cli(&["commit", "-c", &format!("LABEL io.kedge.test={}", fx.run), &base_id, &tag]);
    assert!(commit.status.success(), "{}", String::from_utf8_lossy(&commit.stderr));
    fx.docker.remove_container(&base_id, Default::default()).await.expect("remove base");
    let old_image = fx.docker.inspect_image(&tag).await.expect("inspect").expect("committed");

    let config = fx.managed("gc", &tag);
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    let mut v1 = config.clone();
    v1.image = APP_V1.to_string();
    let strategy =
        kedge_controller::executor::RecreateStrategy { remove_old_image: true, ..quick_strategy() };
    let report = fx.executor.recreate(&v1, &strategy, &mut |_| {}).await.expect("recreate");
    assert!(report.old_image_removed);
    assert_eq!(fx.docker.inspect_image(&old_image.id).await.expect("inspect"), None);
    // An image still in use is kept.
    let again = fx.executor.recreate(&v1, &strategy, &mut |_| {}).await.expect("recreate again");
    assert!(!again.old_image_removed);
    assert!(fx.docker.inspect_image(APP_V1).await.expect("inspect").is_some());
}

#[tokio::test]
async fn recreate_any_of_an_unmanaged_container_takes_the_new_image_defaults() {
    let fx = Fixture::new().await;
    // `docker run`-style: an unlabeled container from a tag that later names another image.
    let tag = format!("kedge-test/app-{}:current", fx.run);
    assert!(docker_cli(&["tag", APP_V1, &tag]).status.success());
    let mut foreign = fx.managed("any", &tag);
    foreign.labels = fx.test_labels();
    foreign.env = vec!["EXTRA=1".to_owned()].into();
    let old_id = fx.docker.create_container(&foreign).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    assert!(docker_cli(&["tag", APP_V2, &tag]).status.success(), "the tag now names v2");

    // The managed entry point refuses it ...
    let mut managed = fx.managed("any", &tag);
    managed.env = foreign.env.clone();
    let refused = fx.executor.recreate(&managed, &quick_strategy(), &mut |_| {}).await;
    assert!(matches!(refused, Err(ExecutorError::Foreign { ref id, .. }) if id == &old_id), "{refused:?}");
    // ... the explicit one does it.
    let report =
        fx.executor.recreate_any(&foreign.name, &quick_strategy(), &mut |_| {}).await.expect("recreate any");
    let new = fx.inspect(&foreign.name).await;
    assert_eq!(new.id, report.new_id);
    let v2 = fx.docker.inspect_image(APP_V2).await.expect("inspect").expect("v2");
    assert_eq!(new.image_id, v2.id);
    assert_eq!(
        new.cmd,
        Some(vec!["/bin/sleep".to_string(), "7200".to_string()]),
        "v2's CMD, not v1's frozen one"
    );
    assert_eq!(env_value(&new.env, "VERSION"), Some("2"));
    assert_eq!(env_value(&new.env, "EXTRA"), Some("1"));
    assert!(!labels::is_managed(&new.labels), "still not kedge's");
    assert_eq!(fx.containers_named(&foreign.name).await.len(), 1);
    docker_cli(&["rmi", &tag]);
}

async fn assert_old_is_back(fx: &Fixture, name: &str, old_id: &str) {
    let back = fx.inspect(name).await;
    assert_eq!(back.id, old_id, "the same container, not a copy");
    assert!(back.state.running, "running again");
    let left: Vec<_> = fx.containers_named(name).await.into_iter().map(|c| c.name).collect();
    assert_eq!(left, vec![name.to_string()], "no leftovers");
}

/// A plain HTTP/1.0 GET against 127.0.0.1:port, retried until the server answers (10 s).
async fn http_get(port: u16, path: &str) -> String {
    kedge_tests::eventually("the web server to answer on its host port", Duration::from_secs(10), || async {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        (!body.is_empty()).then_some(body)
    })
    .await
}
