//! Crash safety of the safe recreate: a process killed at every step boundary leaves containers
//! that `recover_name` turns into exactly one container holding the name, running the intended image.
//!
//! A child process (this test binary, re-run with `KEDGE_CRASH_CHILD` set, built with the
//! `kedge-controller/failpoints` feature) runs the recreate with `KEDGE_FAILPOINT=<name>` and
//! aborts there. When this binary was built without the feature, the harness builds a copy with it
//! (`cargo test --no-run`) once; CI avoids that by testing with `--features kedge-controller/failpoints`.

use crate::docker_support;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use docker_support::*;
use kedge_controller::docker::labels;
use kedge_controller::executor::{failpoint, RecoveryOutcome, RecreateOrder, RecreateStrategy};

/// Set in the child: `<run id>|<what>|<new image>|<start-first or stop-first>`.
const CHILD_ENV: &str = "KEDGE_CRASH_CHILD";

/// The child's side of the harness: run the recreate that the parent asked for, so that the
/// failpoint named by `KEDGE_FAILPOINT` aborts it. Run by `cargo test` directly it checks that the
/// failpoint list covers the recreate and returns.
#[tokio::test]
async fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        assert_eq!(failpoint::RECREATE_FAILPOINTS.len(), 7);
        assert_eq!(failpoint::ROLLBACK_FAILPOINTS.len(), 4);
        assert_eq!(failpoint::START_FIRST_FAILPOINTS.len(), 5);
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [run, what, image, order] = parts[..] else { panic!("bad {CHILD_ENV}: {spec}") };
    let order = if order == "start-first" { RecreateOrder::StartFirst } else { RecreateOrder::StopFirst };
    assert!(failpoint::compiled(), "the crash child must be built with the failpoints feature");
    let docker = kedge_controller::docker::DockerClient::connect().await.expect("connect");
    let executor = kedge_controller::executor::Executor::new(docker);
    let config = managed_config(run, what, image);
    let strategy = RecreateStrategy { order, ..quick_strategy() };
    let result = executor.recreate(&config, &strategy, &mut |_| {}).await;
    // A start-first recreate returns before its old container is stopped and removed: the
    // failpoints of that retirement are reached in the background.
    executor.wait_retired().await;
    panic!("the failpoint was not reached; the recreate ended with {result:?}");
}

/// The test binary with failpoints compiled in.
fn failpoint_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if failpoint::compiled() {
                return std::env::current_exe().expect("current exe");
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
            let output = Command::new(cargo)
                .args(["test", "--manifest-path", manifest, "--test", "it", "--no-run"])
                .args(["--features", "kedge-controller/failpoints", "--message-format=json"])
                .output()
                .expect("run cargo to build the failpoint binary");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "building with failpoints failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            stdout
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|m| m["target"]["name"] == "it")
                .find_map(|m| m["executable"].as_str().map(PathBuf::from))
                .expect("cargo reports the test executable")
        })
        .clone()
}

/// Runs the child until it aborts at `failpoint`.
fn crash_child_at(run: &str, what: &str, new_image: &str, failpoint: &str, order: &str) {
    let binary = failpoint_binary();
    let output = Command::new(&binary)
        .args(["executor_crash::crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{run}|{what}|{new_image}|{order}"))
        .env(failpoint::ENV, failpoint)
        .output()
        .expect("run the crash child");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(6),
        "the child must abort (SIGABRT) at {failpoint}; status {:?}, stderr:\n{stderr}",
        output.status
    );
    assert!(stderr.contains(&format!("failpoint {failpoint} reached")), "{stderr}");
}

/// Where the crash left things must recover to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The old container, same ID, running.
    Old,
    /// The new container, running the new image.
    New,
}

async fn crash_and_recover(failpoint: &str, new_image: &str, expect: Expect) {
    crash_and_recover_in("stop-first", failpoint, new_image, expect).await
}

/// [`crash_and_recover`] of a recreate in `order` (`start-first` or `stop-first`).
async fn crash_and_recover_in(order: &str, failpoint: &str, new_image: &str, expect: Expect) {
    let fx = Fixture::new().await;
    let what = failpoint.replace(['.', '_'], "-");
    let config = fx.managed(&what, APP_V1);
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");

    crash_child_at(&fx.run, &what, new_image, failpoint, order);

    let report = fx.executor.recover_name(&config.name, &quick_strategy()).await.expect("recover");
    // A proven start-first recreate's old container is retired in the background.
    fx.executor.wait_retired().await;
    let left = fx.containers_named(&config.name).await;
    let names: Vec<_> = left.iter().map(|c| c.name.clone()).collect();
    assert_eq!(
        names,
        vec![config.name.clone()],
        "exactly one container, holding the name ({failpoint}: {report:?})"
    );
    let holder = fx.inspect(&config.name).await;
    assert!(holder.state.running, "{failpoint}: running");
    match expect {
        Expect::Old => {
            assert_eq!(holder.id, old_id, "{failpoint}: the same old container");
            assert_eq!(holder.image, APP_V1);
        }
        Expect::New => {
            assert_ne!(holder.id, old_id, "{failpoint}: the new container");
            assert_eq!(holder.image, new_image);
        }
    }
    // What recovery reported matches, and a second recovery finds nothing to do.
    match (expect, report.outcomes.first().map(|(_, o)| o)) {
        // Crashed after the last step of a recreate or of a rollback: nothing left to do.
        (_, None) => assert!(
            ["recreate.after_remove_old", "rollback.after_remove_new"].contains(&failpoint),
            "{failpoint}: only a finished recreate or rollback is clean"
        ),
        (Expect::Old, Some(RecoveryOutcome::RolledBack { old_id: back })) => assert_eq!(back, &old_id),
        (Expect::New, Some(RecoveryOutcome::Completed { new_id, removed_old_id })) => {
            assert_eq!(new_id, &holder.id);
            assert_eq!(removed_old_id, &old_id);
        }
        // The old container bore its retired name: the new one was proven, never rolled back.
        (Expect::New, Some(RecoveryOutcome::Retiring { old_id: retired })) => {
            assert_eq!(order, "start-first", "{failpoint}: only start-first retires");
            assert_eq!(retired, &old_id);
        }
        (expect, outcome) => panic!("{failpoint}: expected {expect:?}, recovery reported {outcome:?}"),
    }
    let again = fx.executor.recover_name(&config.name, &quick_strategy()).await.expect("recover again");
    assert!(again.is_clean(), "{failpoint}: {again:?}");
}

#[tokio::test]
async fn recover_key_and_recover_all_find_leftovers_by_label() {
    let fx = Fixture::new().await;
    let by_key = fx.managed("by-key", APP_V1);
    let by_name = fx.managed("by-name", APP_V1);
    let mut ids = Vec::new();
    for (config, what) in [(&by_key, "by-key"), (&by_name, "by-name")] {
        let id = fx.executor.create(config).await.expect("create");
        fx.docker.start_container(&id).await.expect("start");
        crash_child_at(&fx.run, what, APP_V2, "recreate.after_rename_old", "stop-first");
        ids.push(id);
    }
    let key = labels::key(&by_key.labels).expect("key").to_string();
    let report = fx.executor.recover_key(&key, &quick_strategy()).await.expect("recover key");
    assert_eq!(report.name, by_key.name);
    assert_eq!(report.outcomes.len(), 1, "{report:?}");
    assert_eq!(report.outcomes[0].1, RecoveryOutcome::RolledBack { old_id: ids[0].clone() });
    // The other one is found by recover_all, scoped by label to this test (unscoped it would also
    // recover the crashes of the tests running in parallel, under their feet).
    let scope = vec![format!("{}={}", kedge_tests::TEST_LABEL, fx.run)];
    let reports = fx.executor.recover_all(&scope, &quick_strategy()).await.expect("recover all");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].name, by_name.name);
    assert_eq!(reports[0].outcomes[0].1, RecoveryOutcome::RolledBack { old_id: ids[1].clone() });
    for (config, id) in [(&by_key, &ids[0]), (&by_name, &ids[1])] {
        let holder = fx.inspect(&config.name).await;
        assert_eq!(&holder.id, id);
        assert!(holder.state.running);
        assert_eq!(fx.containers_named(&config.name).await.len(), 1);
    }
}

#[tokio::test]
async fn crash_after_create_rolls_back() {
    crash_and_recover("recreate.after_create", APP_V2, Expect::Old).await;
}

#[tokio::test]
async fn crash_after_stop_old_rolls_back() {
    crash_and_recover("recreate.after_stop_old", APP_V2, Expect::Old).await;
}

#[tokio::test]
async fn crash_after_rename_old_rolls_back() {
    crash_and_recover("recreate.after_rename_old", APP_V2, Expect::Old).await;
}

#[tokio::test]
async fn crash_after_rename_new_rolls_back_because_the_new_one_never_started() {
    crash_and_recover("recreate.after_rename_new", APP_V2, Expect::Old).await;
}

#[tokio::test]
async fn crash_after_start_new_completes_once_the_new_one_proves_itself() {
    crash_and_recover("recreate.after_start_new", APP_V2, Expect::New).await;
}

#[tokio::test]
async fn crash_after_healthy_completes() {
    crash_and_recover("recreate.after_healthy", APP_V2, Expect::New).await;
}

#[tokio::test]
async fn crash_after_remove_old_is_already_complete() {
    crash_and_recover("recreate.after_remove_old", APP_V2, Expect::New).await;
}

#[tokio::test]
async fn start_first_crash_after_start_new_rolls_back_to_the_old_that_never_stopped() {
    crash_and_recover_in("start-first", "recreate.start_first.after_start_new", APP_V2, Expect::Old).await;
}

#[tokio::test]
async fn start_first_crash_after_healthy_rolls_back_before_the_old_is_touched() {
    crash_and_recover_in("start-first", "recreate.start_first.after_healthy", APP_V2, Expect::Old).await;
}

#[tokio::test]
async fn start_first_crash_after_retiring_the_old_one_gives_the_proven_new_one_the_name() {
    crash_and_recover_in("start-first", "recreate.start_first.after_retire_old", APP_V2, Expect::New).await;
}

#[tokio::test]
async fn start_first_crash_after_rename_new_retires_the_old_one_without_proving_again() {
    crash_and_recover_in("start-first", "recreate.start_first.after_rename_new", APP_V2, Expect::New).await;
}

#[tokio::test]
async fn start_first_crash_in_the_background_stop_of_the_old_one_removes_it() {
    crash_and_recover_in("start-first", "retire.after_stop_old", APP_V2, Expect::New).await;
}

#[tokio::test]
async fn start_first_crash_after_remove_old_is_already_complete() {
    crash_and_recover_in("start-first", "recreate.after_remove_old", APP_V2, Expect::New).await;
}

#[tokio::test]
async fn start_first_crash_in_rollback_after_new_aside_finishes_the_rollback() {
    crash_and_recover_in("start-first", "rollback.after_new_aside", FAIL, Expect::Old).await;
}

#[tokio::test]
async fn start_first_crash_in_rollback_after_rename_old_finishes_the_rollback() {
    crash_and_recover_in("start-first", "rollback.after_rename_old", FAIL, Expect::Old).await;
}

#[tokio::test]
async fn crash_in_rollback_after_new_aside_finishes_the_rollback() {
    crash_and_recover("rollback.after_new_aside", FAIL, Expect::Old).await;
}

#[tokio::test]
async fn crash_in_rollback_after_start_old_finishes_the_rollback() {
    crash_and_recover("rollback.after_start_old", FAIL, Expect::Old).await;
}

#[tokio::test]
async fn crash_in_rollback_after_rename_old_finishes_the_rollback() {
    crash_and_recover("rollback.after_rename_old", FAIL, Expect::Old).await;
}

#[tokio::test]
async fn crash_in_rollback_after_remove_new_is_already_rolled_back() {
    crash_and_recover("rollback.after_remove_new", FAIL, Expect::Old).await;
}

#[tokio::test]
async fn recovery_finishes_forward_when_the_old_container_vanished() {
    let fx = Fixture::new().await;
    let config = fx.managed("vanished", APP_V2);
    // What a crash after create leaves when someone then removed the old container by hand.
    let mut leftover = config.clone();
    leftover.name = labels::recreate_new_name(&config.name, "0badc0de");
    leftover.labels.insert(labels::RECREATE_ID.into(), "0badc0de".into());
    leftover.labels.insert(labels::RECREATE_OLD_RUNNING.into(), "true".into());
    let new_id = fx.executor.create(&leftover).await.expect("create");
    let report = fx.executor.recover_name(&config.name, &quick_strategy()).await.expect("recover");
    assert_eq!(
        report.outcomes,
        vec![("0badc0de".to_string(), RecoveryOutcome::FinishedForward { new_id: new_id.clone() })]
    );
    let holder = fx.inspect(&config.name).await;
    assert_eq!(holder.id, new_id);
    assert!(holder.state.running);
}

#[tokio::test]
async fn recovery_touches_nothing_when_another_container_took_the_name() {
    let fx = Fixture::new().await;
    let config = fx.managed("taken", APP_V1);
    // An old container set aside, and meanwhile someone else's container under the name.
    let mut aside = config.clone();
    aside.name = labels::recreate_old_name(&config.name, "feedf00d");
    let aside_id = fx.executor.create(&aside).await.expect("create aside");
    let mut intruder = fx.managed("taken", APP_V1);
    intruder.labels = fx.test_labels();
    let intruder_id = fx.docker.create_container(&intruder).await.expect("create intruder");
    fx.docker.start_container(&intruder_id).await.expect("start intruder");
    let result = fx.executor.recover_name(&config.name, &quick_strategy()).await;
    assert!(
        matches!(result, Err(kedge_controller::executor::ExecutorError::Ambiguous { ref message, .. }) if message.contains(&intruder_id)),
        "{result:?}"
    );
    assert_eq!(fx.inspect(&config.name).await.id, intruder_id, "untouched");
    assert!(fx.inspect(&intruder_id).await.state.running);
    assert_eq!(fx.inspect(&aside_id).await.name, aside.name, "untouched");
}

#[tokio::test]
async fn look_alikes_named_like_leftovers_are_left_alone_while_real_leftovers_are_recovered() {
    let fx = Fixture::new().await;
    let config = fx.managed("alike", APP_V1);
    let key = labels::key(&config.labels).expect("key").to_string();
    let old_id = fx.executor.create(&config).await.expect("create");
    fx.docker.start_container(&old_id).await.expect("start");
    // A real interrupted recreate: the old container set aside, the new one under its temporary name.
    crash_child_at(&fx.run, "alike", APP_V2, "recreate.after_rename_old", "stop-first");

    // Look-alikes, running: a hand-made container, another spec's container (its key names another
    // container), and a container claiming to be a new one of a recreate without kedge's labels.
    let mut alikes = Vec::new();
    for (marker, with) in [
        ("-kedge-old-abc", fx.test_labels()),
        ("-kedge-old-def", {
            let mut other = labels::ownership(&format!("test/{}-kedge-old-def", config.name), 1, "h");
            other.extend(fx.test_labels());
            other
        }),
        ("-kedge-new-ghi", {
            let mut bare = fx.test_labels();
            bare.insert(labels::RECREATE_OLD_RUNNING.into(), "true".into());
            bare
        }),
    ] {
        let mut alike = fx.managed("alike", APP_V1);
        alike.name = format!("{}{marker}", config.name);
        alike.labels = with;
        let id = fx.docker.create_container(&alike).await.expect("create look-alike");
        fx.docker.start_container(&id).await.expect("start look-alike");
        let started = fx.inspect(&id).await.state.started_at;
        alikes.push((id, alike.name, started));
    }

    // The agent's scope: by key and labels.
    let report = fx.executor.recover_key(&key, &quick_strategy()).await.expect("recover by key");
    assert_eq!(report.outcomes.len(), 1, "only the real recreate: {report:?}");
    assert_eq!(report.outcomes[0].1, RecoveryOutcome::RolledBack { old_id: old_id.clone() });
    let holder = fx.inspect(&config.name).await;
    assert_eq!(holder.id, old_id);
    assert!(holder.state.running);
    // `kedge recreate NAME`'s scope, now that the name is held: still nothing to recover.
    let again = fx.executor.recover_name(&config.name, &quick_strategy()).await.expect("recover by name");
    assert!(again.is_clean(), "{again:?}");
    for (id, name, started) in &alikes {
        let now = fx.inspect(id).await;
        assert_eq!(&now.name, name, "never renamed");
        assert!(now.state.running, "{name}: never stopped");
        assert_eq!(&now.state.started_at, started, "{name}: never restarted");
    }
    let names: Vec<String> = fx.containers_named(&config.name).await.into_iter().map(|c| c.name).collect();
    assert_eq!(names.len(), 4, "the holder and the three look-alikes: {names:?}");
}
