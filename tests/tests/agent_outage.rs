//! Losing the store is not an instruction. With etcd stopped for 30 seconds in the middle of a
//! rollout, the agent keeps repairing from the last specs it read and removes or recreates nothing
//! because of the outage; once etcd is back, everything converges to the latest specs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kedge_controller::store::{objects, EtcdOptions, EtcdStore, SharedStore};
use kedge_tests::etcd::EtcdCluster;
use kedge_tests::{docker, docker_cli, eventually, test_spec, wait_ready, InProcessAgent, TestScope};
use serde_json::json;

const OUTAGE: Duration = Duration::from_secs(30);
const READY: Duration = Duration::from_secs(90);

async fn container(name: &str) -> Option<(String, String, bool)> {
    let inspect = docker().await.inspect_container(name, None).await.ok()?;
    Some((inspect.id?, inspect.config?.image?, inspect.state?.running?))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_outage_removes_and_recreates_nothing() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let mut etcd = EtcdCluster::start(1).await;
    let connect = |endpoints: Vec<String>| async move {
        let mut options = EtcdOptions::new(endpoints);
        options.request_timeout = Duration::from_secs(2);
        Arc::new(EtcdStore::connect(options).await.expect("connect")) as SharedStore
    };
    let store = connect(etcd.endpoints()).await;
    let agent = InProcessAgent::start(store.clone(), &format!("host-{id}"), None).await;
    let names: Vec<String> = (0..6).map(|i| format!("out{i}-{id}")).collect();
    let spec =
        |name: &str, image: &str| test_spec(name, &namespace, &agent.host, &cleanup, json!({"image": image}));
    for name in &names {
        objects::apply_container(store.as_ref(), &spec(name, "kedge-test/app:v1"), None)
            .await
            .expect("apply");
    }
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
    }

    // A rollout starts (two specs move to v2), and the store goes away right after.
    for name in &names[..2] {
        objects::apply_container(store.as_ref(), &spec(name, "kedge-test/app:v2"), None)
            .await
            .expect("apply");
    }
    etcd.kill(0);
    let outage_started = Instant::now();
    let before_outage = agent.stats.snapshot();

    // The agent keeps repairing from what it knows: a killed container runs again.
    let victim = &names[4];
    let victim_id = container(victim).await.unwrap().0;
    assert!(docker_cli(&["kill", victim]).status.success());
    eventually("the killed container to run again during the outage", READY, || async {
        container(victim).await.filter(|c| c.2).map(|_| ())
    })
    .await;
    assert_eq!(container(victim).await.unwrap().0, victim_id, "repaired in place, not replaced");

    // The outage lasts its full length; every container stays all the while.
    eventually("the outage to last 30 s", OUTAGE * 2, || async {
        for name in &names {
            assert!(container(name).await.is_some(), "{name} was removed during the outage");
        }
        (outage_started.elapsed() >= OUTAGE).then_some(())
    })
    .await;
    let during = agent.stats.snapshot();
    assert_eq!(
        during.actions_of("Remove"),
        before_outage.actions_of("Remove"),
        "nothing removed because of the outage: {during:?}"
    );

    etcd.restart(0).await;
    // Back: the rollout goes on, and a change made now is carried out too.
    objects::apply_container(store.as_ref(), &spec(&names[2], "kedge-test/app:v2"), None)
        .await
        .expect("the store answers again");
    objects::delete_container(store.as_ref(), &namespace, &names[5], None).await.expect("delete");
    for name in &names[..3] {
        wait_ready(store.as_ref(), &namespace, name, READY).await;
        eventually(&format!("{name} to run v2"), READY, || async {
            container(name).await.filter(|c| c.1 == "kedge-test/app:v2" && c.2).map(|_| ())
        })
        .await;
    }
    eventually("the deleted spec's container to go", READY, || async {
        container(&names[5]).await.is_none().then_some(())
    })
    .await;
    let after = agent.stats.snapshot();
    assert_eq!(
        after.actions_of("Remove") - before_outage.actions_of("Remove"),
        1,
        "only the deleted spec's: {after:?}"
    );
    for name in &names[3..5] {
        assert_eq!(container(name).await.unwrap().1, "kedge-test/app:v1", "{name} kept its image");
    }
    agent.stop().await.expect("stops");
}
