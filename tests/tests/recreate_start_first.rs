//! Start-first recreates against the real engine: the new container runs and proves itself beside
//! the old one before the old one stops (in the background, after the recreate), keeps its networks
//! and aliases under the name, and a container that holds data falls back to stop-first.

use crate::docker_support;

use docker_support::*;
use kedge_controller::docker::{ContainerConfig, Mount, MountSource, NetworkAttachment};
use kedge_controller::executor::{
    RecreateOrder, RecreateProgress, RecreateReport, RecreateStep, RecreateStrategy,
};

fn start_first() -> RecreateStrategy {
    RecreateStrategy { order: RecreateOrder::StartFirst, ..quick_strategy() }
}

#[tokio::test]
async fn start_first_proves_the_new_container_before_the_old_one_stops_and_keeps_its_aliases() {
    let fx = Fixture::new().await;
    let (front, _) = fx.network("front").await;
    let mut config = fx.managed("start-first", APP_V1);
    config.networks =
        vec![NetworkAttachment { network: front.clone(), aliases: vec!["api".into()], ipv4_address: None }];
    let old_id = fx.executor.create(&config).await.expect("create v1");
    fx.docker.start_container(&old_id).await.expect("start v1");
    let mut v2 = config.clone();
    v2.image = APP_V2.to_string();
    let (report, steps) = recreate_asking_start_first(&fx, &v2).await;
    use RecreateStep::*;
    assert_eq!(steps, vec![CreateNew, StartNew, WaitHealthy, RenameOldAside, RenameNew, RemoveOld, Done]);
    // The recreate ends once the new container holds the name; the old one (whose PID 1 ignores
    // SIGTERM: its 1 s grace period) still runs under its retired name, and goes in the background.
    let retired = kedge_controller::docker::labels::recreate_retired_name(&config.name, &report.recreate_id);
    let old = fx.inspect(&retired).await;
    assert_eq!(old.id, old_id);
    assert!(old.state.running, "the recreate did not wait for the old one's stop");
    fx.executor.wait_retired().await;
    let new = fx.inspect(&config.name).await;
    assert_eq!(new.id, report.new_id);
    assert_ne!(new.id, old_id);
    assert!(new.state.running);
    assert_eq!(new.image, APP_V2);
    let on_front = new.networks.iter().find(|n| n.network == front).expect("on front");
    assert!(on_front.aliases.contains(&"api".to_string()), "{on_front:?}");
    let left: Vec<_> = fx.containers_named(&config.name).await.into_iter().map(|c| c.name).collect();
    assert_eq!(left, vec![config.name.clone()], "no leftovers");
}

#[tokio::test]
async fn a_failing_start_first_recreate_leaves_the_old_container_running_untouched() {
    let fx = Fixture::new().await;
    let config = fx.managed("start-first-fails", APP_V1);
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    let mut failing = config.clone();
    failing.image = FAIL.to_string();
    let error = fx.executor.recreate(&failing, &start_first(), &mut |_| {}).await.expect_err("must fail");
    assert_eq!(error.reason(), "NewContainerExited");
    let old = fx.inspect(&config.name).await;
    assert_eq!(old.id, old_id);
    assert!(old.state.running);
    assert_eq!(old.state.restart_count, 0);
    assert!(old.state.started_at.is_some());
    let left: Vec<_> = fx.containers_named(&config.name).await.into_iter().map(|c| c.name).collect();
    assert_eq!(left, vec![config.name.clone()], "no leftovers");
}

#[tokio::test]
async fn a_container_with_a_volume_is_recreated_stop_first_even_when_start_first_is_asked() {
    let fx = Fixture::new().await;
    let volume = fx.volume("data");
    let mut config = fx.managed("with-volume", APP_V1);
    config.mounts = vec![Mount {
        source: MountSource::Volume { name: Some(volume) },
        target: "/data".into(),
        read_only: false,
    }];
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    let mut v2 = config.clone();
    v2.image = APP_V2.to_string();
    let (_, steps) = recreate_asking_start_first(&fx, &v2).await;
    use RecreateStep::*;
    assert_eq!(
        steps,
        vec![CreateNew, StopOld, RenameOldAside, RenameNew, StartNew, WaitHealthy, RemoveOld, Done]
    );
}

/// Recreates onto `config` asking for start-first; the report and the steps taken, in order.
async fn recreate_asking_start_first(
    fx: &Fixture,
    config: &ContainerConfig,
) -> (RecreateReport, Vec<RecreateStep>) {
    let mut steps = Vec::new();
    let report = fx
        .executor
        .recreate(config, &start_first(), &mut |p| {
            if let RecreateProgress::Step(step) = p {
                steps.push(step)
            }
        })
        .await
        .expect("recreate");
    (report, steps)
}
