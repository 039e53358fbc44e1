//! The executor's in-place actions and ownership rules against the real engine.

use crate::docker_support;

use std::time::Duration;

use docker_support::*;
use kedge_controller::docker::{ContainerConfig, ExecSpec, NetworkAttachment, Resources};
use kedge_controller::executor::{Action, ActionOutcome, ExecutorError};

async fn run(fx: &Fixture, action: Action) -> Result<ActionOutcome, ExecutorError> {
    fx.executor.execute(&action, &mut |_| {}).await
}

async fn created_and_started(fx: &Fixture, config: &ContainerConfig) -> String {
    let ActionOutcome::Created { id } =
        run(fx, Action::Create { config: config.clone() }).await.expect("create")
    else {
        panic!("create reports the ID")
    };
    run(fx, Action::Start { container: id.clone() }).await.expect("start");
    id
}

#[tokio::test]
async fn update_in_place_keeps_the_container_and_does_not_restart_it() {
    let fx = Fixture::new().await;
    let mut config = fx.managed("update", APP_V1);
    config.resources = Resources { memory: Some(64 << 20), cpu_shares: Some(256), ..Default::default() };
    let id = created_and_started(&fx, &config).await;
    let before = fx.inspect(&id).await;

    let resources = Resources {
        memory: Some(96 << 20),
        memory_swap: Some(192 << 20),
        memory_reservation: Some(48 << 20),
        cpu_shares: Some(768),
        cpu_period: Some(100_000),
        cpu_quota: Some(25_000),
        cpuset_cpus: Some("0".into()),
        pids_limit: Some(50),
        ..Default::default()
    };
    run(&fx, Action::UpdateInPlace { container: config.name.clone(), resources: resources.clone() })
        .await
        .expect("update");
    let after = fx.inspect(&config.name).await;
    assert_eq!(after.id, id, "same container");
    assert_eq!(after.state.started_at, before.state.started_at, "not restarted");
    assert_eq!(after.state.restart_count, before.state.restart_count);
    assert!(after.state.running);
    assert_eq!(after.resources.memory, resources.memory);
    assert_eq!(after.resources.memory_swap, resources.memory_swap);
    assert_eq!(after.resources.memory_reservation, resources.memory_reservation);
    assert_eq!(after.resources.cpu_shares, resources.cpu_shares);
    assert_eq!(after.resources.cpu_quota, resources.cpu_quota);
    assert_eq!(after.resources.cpuset_cpus, resources.cpuset_cpus);
    assert_eq!(after.resources.pids_limit, resources.pids_limit);
}

#[tokio::test]
async fn networks_connect_and_disconnect_without_a_restart() {
    let fx = Fixture::new().await;
    let (extra, prefix) = fx.network("extra").await;
    let config = fx.managed("net", APP_V1);
    let id = created_and_started(&fx, &config).await;
    let before = fx.inspect(&id).await;
    let attachment = NetworkAttachment {
        network: extra.clone(),
        aliases: vec!["svc".into()],
        ipv4_address: Some(format!("{prefix}.7")),
    };
    let connect = Action::ConnectNetwork { container: id.clone(), network: attachment };
    run(&fx, connect.clone()).await.expect("connect");
    run(&fx, connect).await.expect("connecting again is a no-op");
    let connected = fx.inspect(&id).await;
    let on_extra = connected.networks.iter().find(|n| n.network == extra).expect("attached");
    assert_eq!(on_extra.ip_address.as_deref(), Some(format!("{prefix}.7").as_str()));
    assert!(on_extra.aliases.contains(&"svc".to_string()));
    assert_eq!(connected.state.started_at, before.state.started_at, "not restarted");
    // The address answers inside the container.
    let addresses = sh(&fx.docker, &id, "ip -4 addr").await;
    assert!(addresses.contains(&format!("{prefix}.7")), "{addresses}");

    let disconnect = Action::DisconnectNetwork { container: id.clone(), network: extra.clone() };
    run(&fx, disconnect.clone()).await.expect("disconnect");
    run(&fx, disconnect).await.expect("disconnecting again is a no-op");
    let after = fx.inspect(&id).await;
    assert!(after.networks.iter().all(|n| n.network != extra));
    assert_eq!(after.state.started_at, before.state.started_at, "not restarted");
    assert!(after.state.running);
}

#[tokio::test]
async fn stop_start_remove_are_idempotent() {
    let fx = Fixture::new().await;
    let config = fx.managed("life", APP_V1);
    let id = created_and_started(&fx, &config).await;
    run(&fx, Action::Start { container: id.clone() }).await.expect("start again");
    let stop = Action::Stop { container: id.clone(), timeout: Some(Duration::from_secs(1)) };
    run(&fx, stop.clone()).await.expect("stop");
    run(&fx, stop).await.expect("stop again");
    assert!(!fx.inspect(&id).await.state.running);
    run(&fx, Action::Remove { container: id.clone() }).await.expect("remove");
    run(&fx, Action::Remove { container: id.clone() }).await.expect("remove again");
    assert_eq!(fx.docker.inspect_container(&id).await.expect("inspect"), None);
    assert_eq!(run(&fx, Action::Nothing).await.expect("nothing"), ActionOutcome::Done);
}

#[tokio::test]
async fn run_exec_skips_a_command_that_already_runs() {
    let fx = Fixture::new().await;
    let config = fx.managed("exec", APP_V1);
    let id = created_and_started(&fx, &config).await;
    let background = ExecSpec {
        cmd: vec!["/bin/sh".into(), "-c".into(), "sleep 300 >/dev/null 2>&1 &".into()],
        ..Default::default()
    };
    let outcome =
        run(&fx, Action::RunExec { container: id.clone(), exec: background, unless_running: false })
            .await
            .expect("exec");
    assert!(matches!(outcome, ActionOutcome::Exec(Some(ref o)) if o.exit_code == Some(0)), "{outcome:?}");
    // `sleep 3600` is the container's own command: a post-start command identical to it is skipped.
    let same = ExecSpec { cmd: vec!["/bin/sleep".into(), "3600".into()], ..Default::default() };
    let skipped = run(&fx, Action::RunExec { container: id.clone(), exec: same, unless_running: true })
        .await
        .expect("exec");
    assert_eq!(skipped, ActionOutcome::Exec(None));
}

#[tokio::test]
async fn a_foreign_container_holding_the_name_is_a_reported_conflict_and_untouched() {
    let fx = Fixture::new().await;
    // A container kedge did not create: no managed-by label.
    let mut foreign = fx.managed("foreign", APP_V1);
    foreign.labels = fx.test_labels();
    let foreign_id = fx.docker.create_container(&foreign).await.expect("create foreign");
    fx.docker.start_container(&foreign_id).await.expect("start foreign");
    let before = fx.inspect(&foreign_id).await;

    let wanted = fx.managed("foreign", APP_V2);
    let check_foreign = |result: Result<ActionOutcome, ExecutorError>| match result {
        Err(ExecutorError::Foreign { name, id }) => {
            assert_eq!(name, wanted.name);
            assert_eq!(id, foreign_id);
        }
        other => panic!("expected a foreign-container conflict, got {other:?}"),
    };
    check_foreign(run(&fx, Action::Create { config: wanted.clone() }).await);
    check_foreign(
        run(
            &fx,
            Action::Recreate {
                config: wanted.clone(),
                reason: "spec changed".into(),
                strategy: quick_strategy(),
            },
        )
        .await,
    );
    for action in [
        Action::Stop { container: wanted.name.clone(), timeout: None },
        Action::Remove { container: wanted.name.clone() },
        Action::Start { container: wanted.name.clone() },
        Action::UpdateInPlace {
            container: wanted.name.clone(),
            resources: Resources { memory: Some(1 << 26), ..Default::default() },
        },
    ] {
        check_foreign(run(&fx, action).await);
    }
    let after = fx.inspect(&foreign_id).await;
    assert_eq!(after.name, before.name);
    assert_eq!(after.state.started_at, before.state.started_at, "never stopped");
    assert!(after.state.running);
    assert_eq!(after.resources, before.resources);
    assert_eq!(fx.containers_named(&wanted.name).await.len(), 1, "nothing else was created");
    let reason = ExecutorError::Foreign { name: String::new(), id: String::new() }.reason();
    assert_eq!(reason, "ForeignContainer");
}

#[tokio::test]
async fn a_config_without_ownership_labels_is_refused() {
    let fx = Fixture::new().await;
    let mut config = fx.managed("unlabeled", APP_V1);
    config.labels = fx.test_labels();
    let result = run(&fx, Action::Create { config: config.clone() }).await;
    assert!(matches!(result, Err(ExecutorError::Unlabeled { .. })), "{result:?}");
    assert_eq!(fx.docker.inspect_container(&config.name).await.expect("inspect"), None);
}
