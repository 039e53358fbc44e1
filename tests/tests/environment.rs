//! The parts are real: the private engine answers bollard with a negotiated API version and runs a
//! test image; etcd answers put, get and watch through the etcd-client crate.

use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{CreateContainerOptionsBuilder, StartContainerOptions};
use etcd_client::{Client, EventType, WatchOptions};
use kedge_tests::{docker, eventually, run_id, TestEnv, TestScope};

#[tokio::test]
async fn engine_negotiates_and_runs_a_test_image() {
    let docker = docker().await;
    let version = docker.version().await.expect("version");
    let api = version.api_version.expect("the engine reports its API version");
    let (major, minor) = api.split_once('.').expect("API versions look like 1.41");
    assert_eq!(major, "1");
    assert!(minor.parse::<u32>().unwrap() >= 41, "engine API {api} is older than 1.41");

    let TestScope { id, cleanup, .. } = TestScope::new();
    let name = format!("kedge-env-{id}");
    let body = ContainerCreateBody {
        image: Some("kedge-test/app:v1".into()),
        labels: Some(cleanup.labels()),
        ..Default::default()
    };
    let created = docker
        .create_container(Some(CreateContainerOptionsBuilder::new().name(&name).build()), body)
        .await
        .expect("create from the test image (run scripts/test-images)");
    docker.start_container(&created.id, None::<StartContainerOptions>).await.expect("start");

    let inspected = eventually("the container to run", Duration::from_secs(10), || async {
        let inspect = docker.inspect_container(&name, None).await.ok()?;
        inspect.state.as_ref()?.running.filter(|running| *running).map(|_| inspect)
    })
    .await;
    assert_eq!(inspected.id.as_deref(), Some(created.id.as_str()));
    let env = inspected.config.and_then(|config| config.env).unwrap_or_default();
    assert!(env.contains(&"VERSION=1".to_owned()), "the image's ENV reached the container: {env:?}");
}

#[tokio::test]
async fn etcd_puts_gets_and_watches() {
    let env = TestEnv::get();
    let mut client = Client::connect(&env.etcd_endpoints, None).await.expect("connect to etcd");
    let prefix = format!("/kedge-test/{}/", run_id());
    let mut stream =
        client.watch(prefix.as_str(), Some(WatchOptions::new().with_prefix())).await.expect("watch");

    client.put(format!("{prefix}a"), "1", None).await.expect("put");
    let got = client.get(format!("{prefix}a"), None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"1");

    // The first responses may be the watch's creation notice, with no events.
    let response = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let response = stream.message().await.expect("watch stream").expect("the watch stays open");
            if !response.events().is_empty() {
                return response;
            }
        }
    })
    .await
    .expect("the watch delivers the put within 5 s");
    let event = &response.events()[0];
    assert_eq!(event.event_type(), EventType::Put);
    assert_eq!(event.kv().unwrap().key(), format!("{prefix}a").as_bytes());
    client
        .delete(prefix.as_str(), Some(etcd_client::DeleteOptions::new().with_prefix()))
        .await
        .expect("cleanup");
}

#[test]
fn registry_answers_the_distribution_api() {
    let env = TestEnv::get();
    let output = std::process::Command::new("curl")
        .args(["-sf", &format!("http://{}/v2/", env.registry)])
        .output()
        .expect("curl is installed by scripts/test-env");
    assert!(output.status.success(), "registry at {} did not answer /v2/", env.registry);
}
