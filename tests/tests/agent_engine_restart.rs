//! The engine restarted under a running agent: the agent reconnects to its event stream, resyncs, and
//! brings the containers the restart stopped back, without being restarted itself.

use std::sync::Arc;
use std::time::Duration;

use kedge_controller::store::{objects, EmbeddedStore, SharedStore};
use kedge_tests::engine::PrivateEngine;
use kedge_tests::{eventually, test_spec, wait_ready, InProcessAgent, TestScope};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_converges_after_an_engine_restart() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let mut engine = PrivateEngine::start(&["kedge-test/app:v1"]).await;
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore =
        Arc::new(EmbeddedStore::open(dir.path().join("kedge.db"), Default::default()).await.unwrap());
    let agent =
        InProcessAgent::start_on_engine(store.clone(), &format!("host-{id}"), None, Some(&engine.host)).await;
    let names: Vec<String> = (0..3).map(|i| format!("survivor{i}-{id}")).collect();
    for name in &names {
        // No restart policy: after an engine restart, only the agent brings these back.
        let spec = test_spec(name, &namespace, &agent.host, &cleanup, json!({"image": "kedge-test/app:v1"}));
        objects::apply_container(store.as_ref(), &spec, None).await.expect("apply");
    }
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, Duration::from_secs(60)).await;
    }
    let docker = kedge_controller::docker::DockerClient::connect_to(&engine.host).await.unwrap();
    let ids: Vec<String> = futures::future::join_all(names.iter().map(|name| {
        let docker = docker.clone();
        async move { docker.inspect_container(name).await.unwrap().unwrap().id }
    }))
    .await;

    engine.restart().await;
    let docker = kedge_controller::docker::DockerClient::connect_to(&engine.host).await.unwrap();
    for (name, id) in names.iter().zip(&ids) {
        let running = eventually(
            &format!("{name} to run again after the engine restart"),
            Duration::from_secs(90),
            || {
                let docker = docker.clone();
                async move { docker.inspect_container(name).await.ok()?.filter(|c| c.state.running) }
            },
        )
        .await;
        assert_eq!(&running.id, id, "started again, not replaced");
    }
    for name in &names {
        wait_ready(store.as_ref(), &namespace, name, Duration::from_secs(60)).await;
    }
    agent.stop().await.expect("the agent ran through the engine restart and stops cleanly");
}
