//! `minReadySeconds` against the real engine: a new container must stay up that long (without a
//! healthcheck), or be healthy and up that long (with one), before a recreate counts it ready.

use crate::docker_support;

use std::time::Duration;

use docker_support::*;
use kedge_controller::docker::{HealthStatus, Healthcheck, RestartPolicy, RestartPolicyKind};
use kedge_controller::executor::{ExecutorError, RecreateFailure, RecreateStrategy};

/// The waits the planner gives a spec with `minReadySeconds: 2`.
fn min_ready_2s() -> RecreateStrategy {
    RecreateStrategy {
        running_grace: Duration::from_secs(2),
        min_ready_healthy: Duration::from_secs(2),
        ..quick_strategy()
    }
}

/// A healthcheck that passes once `/tmp/ready` exists, polled every 200 ms; failures in the first
/// 10 s (its start period) do not count, so the container is `starting` until the file appears.
fn ready_file_healthcheck() -> Healthcheck {
    Healthcheck {
        test: vec!["CMD".into(), "test".into(), "-f".into(), "/tmp/ready".into()],
        interval: Some(Duration::from_millis(200)),
        timeout: Some(Duration::from_secs(2)),
        retries: Some(1),
        start_period: Some(Duration::from_secs(10)),
        start_interval: None,
    }
}

#[tokio::test]
async fn a_container_that_crashes_after_half_a_second_is_rolled_back_with_min_ready_2s() {
    let fx = Fixture::new().await;
    let config = fx.managed("crashes-late", APP_V1);
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    let mut late = config.clone();
    late.image = APP_V2.to_string();
    late.cmd = Some(vec!["sh".into(), "-c".into(), "sleep 0.5; echo crashing late; exit 4".into()]);
    let result = fx.executor.recreate(&late, &min_ready_2s(), &mut |_| {}).await;
    match &result {
        Err(ExecutorError::RolledBack {
            old_id: back,
            failure: RecreateFailure::Exited { exit_code, logs },
            ..
        }) => {
            assert_eq!(back, &old_id);
            assert_eq!(*exit_code, Some(4));
            assert!(logs.contains("crashing late"), "{logs}");
        }
        other => panic!("expected a rollback after the late crash, got {other:?}"),
    }
    let back = fx.inspect(&config.name).await;
    assert_eq!(back.id, old_id, "the same container, not a copy");
    assert!(back.state.running, "running again");
}

#[tokio::test]
async fn a_healthchecked_container_is_ready_only_once_healthy() {
    let fx = Fixture::new().await;
    let config = fx.managed("slow-health", APP_V1);
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    let mut slow = config.clone();
    slow.image = APP_V2.to_string();
    slow.cmd = Some(vec!["sh".into(), "-c".into(), "sleep 1.5; touch /tmp/ready; exec sleep 3600".into()]);
    slow.healthcheck = Some(ready_file_healthcheck());
    // The planner's default for a spec without minReadySeconds: the healthcheck alone decides, and
    // the 1 s running grace does not apply.
    let strategy = RecreateStrategy {
        running_grace: Duration::from_secs(1),
        min_ready_healthy: Duration::ZERO,
        ..quick_strategy()
    };
    let mut health_seen = Vec::new();
    let started = std::time::Instant::now();
    let report = fx
        .executor
        .recreate(&slow, &strategy, &mut |p| {
            if let kedge_controller::executor::RecreateProgress::Health(h) = p {
                health_seen.push((started.elapsed(), h))
            }
        })
        .await
        .expect("recreate");
    eprintln!("healthchecked recreate took {:?}: {health_seen:?}", report.duration);
    let healthy_at = health_seen.iter().find(|(_, h)| *h == HealthStatus::Healthy).map(|(at, _)| *at);
    assert!(healthy_at.is_some_and(|at| at >= Duration::from_millis(1500)), "{health_seen:?}");
    let new = fx.inspect(&config.name).await;
    assert_eq!(new.id, report.new_id);
    assert_eq!(new.state.health, Some(HealthStatus::Healthy));
}

#[tokio::test]
async fn a_healthy_container_that_crashes_within_min_ready_is_rolled_back() {
    let fx = Fixture::new().await;
    let config = fx.managed("healthy-then-crash", APP_V1);
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    let mut flaky = config.clone();
    flaky.image = APP_V2.to_string();
    flaky.cmd = Some(vec!["sh".into(), "-c".into(), "touch /tmp/ready; sleep 1; exit 5".into()]);
    flaky.healthcheck = Some(ready_file_healthcheck());
    let result = fx.executor.recreate(&flaky, &min_ready_2s(), &mut |_| {}).await;
    match &result {
        Err(ExecutorError::RolledBack {
            old_id: back,
            failure: RecreateFailure::Exited { exit_code, .. },
            ..
        }) => {
            assert_eq!(back, &old_id);
            assert_eq!(*exit_code, Some(5));
        }
        other => panic!("expected a rollback after the crash within minReadySeconds, got {other:?}"),
    }
    assert_eq!(fx.inspect(&config.name).await.id, old_id);
}

#[tokio::test]
async fn a_crash_looping_container_restarted_by_its_policy_is_rolled_back_whatever_the_moment() {
    let fx = Fixture::new().await;
    let mut config = fx.managed("crash-loop", APP_V1);
    config.restart_policy = Some(RestartPolicy { kind: RestartPolicyKind::Always, max_retries: 0 });
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    let mut looping = config.clone();
    looping.image = FAIL.to_string();
    // The planner's default without a healthcheck: 1 s, when the engine may have just started it
    // again between two crashes.
    let strategy = RecreateStrategy { running_grace: Duration::from_secs(1), ..quick_strategy() };
    let result = fx.executor.recreate(&looping, &strategy, &mut |_| {}).await;
    match &result {
        Err(ExecutorError::RolledBack { old_id: back, failure: RecreateFailure::Exited { .. }, .. }) => {
            assert_eq!(back, &old_id)
        }
        other => panic!("expected a rollback of the crash loop, got {other:?}"),
    }
    assert_eq!(fx.inspect(&config.name).await.id, old_id);
}
