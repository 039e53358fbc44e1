//! Containers that follow another spec's container, through its network namespace
//! (`networkMode: container:NAME`) or a legacy link: when the provider gets a new container (a spec
//! change) or is started again (killed by hand), the agent repairs the follower at once, because
//! the provider's reconcile enqueues it, not at the next resync (300 s, far beyond the deadlines).

use std::time::{Duration, Instant};

use bollard::models::ContainerInspectResponse;
use kedge_controller::events::list_events;
use kedge_controller::store::objects;
use kedge_tests::{
    condition, docker, docker_cli, eventually, test_spec, wait_ready, InProcessAgent, TestScope,
};
use serde_json::json;

const READY: Duration = Duration::from_secs(60);
/// How long a follower's repair may take after its provider's: a recreate stops the old container
/// (1 s grace here) and waits 5 s to see the new one keep running; the resync would take 300 s.
const REPAIR: Duration = Duration::from_secs(45);

async fn inspect(name: &str) -> Option<ContainerInspectResponse> {
    docker().await.inspect_container(name, None).await.ok()
}

fn id_of(inspect: &ContainerInspectResponse) -> String {
    inspect.id.clone().expect("an ID")
}

/// The last start, comparable as a string: the engine prints UTC with up to nine fraction digits,
/// trailing zeros dropped, so the fraction is padded.
fn started_at(inspect: &ContainerInspectResponse) -> String {
    let text = inspect.state.as_ref().and_then(|state| state.started_at.clone()).expect("a start time");
    let text = text.trim_end_matches('Z');
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    format!("{seconds}.{fraction:0<9}")
}

fn running(inspect: &ContainerInspectResponse) -> bool {
    inspect.state.as_ref().and_then(|state| state.running) == Some(true)
}

fn network_mode(inspect: &ContainerInspectResponse) -> String {
    inspect.host_config.as_ref().and_then(|host| host.network_mode.clone()).unwrap_or_default()
}

fn address(inspect: &ContainerInspectResponse) -> String {
    let networks = inspect.network_settings.as_ref().and_then(|settings| settings.networks.as_ref());
    networks
        .and_then(|networks| networks.get("bridge"))
        .and_then(|bridge| bridge.ip_address.clone())
        .filter(|ip| !ip.is_empty())
        .expect("an address on the default bridge")
}

fn cli_ok(args: &[&str]) -> String {
    let output = docker_cli(args);
    assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The test page of `kedge-test/web`, fetched from inside `container` at 127.0.0.1: only a
/// container in the web server's network namespace gets it.
fn page_from(container: &str) -> Option<String> {
    let output = docker_cli(&["exec", container, "wget", "-q", "-O-", "http://127.0.0.1:80/"]);
    let page = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success() && page.contains("kedge test page")).then_some(page)
}

/// Waits for an event of `reason` about `namespace/name` whose message contains `cause`.
async fn wait_event(agent: &InProcessAgent, namespace: &str, name: &str, reason: &str, cause: &str) {
    let object = format!("Container/{namespace}/{name}");
    eventually(&format!("a {reason} event of {name} saying {cause}"), READY, || async {
        let events = list_events(agent.store.as_ref(), Some(namespace)).await.ok()?;
        events
            .iter()
            .any(|event| {
                event.involved_object == object && event.reason == reason && event.message.contains(cause)
            })
            .then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_joiner_follows_its_provider_into_a_new_container_and_after_a_kill() {
    let TestScope { id, cleanup, .. } = TestScope::new();
    let agent = InProcessAgent::embedded(&format!("host-{id}")).await;
    let namespace = format!("t{id}");
    let web = format!("web-{id}");
    let side = format!("side-{id}");
    let provider = |version: &str| {
        test_spec(
            &web,
            &namespace,
            &agent.host,
            &cleanup,
            json!({"image": "kedge-test/web:latest", "env": {"VERSION": version}, "stopGracePeriod": "1s"}),
        )
    };
    let joiner = test_spec(
        &side,
        &namespace,
        &agent.host,
        &cleanup,
        json!({
            "image": "kedge-test/app:v1",
            "networkMode": format!("container:{web}"),
            "stopGracePeriod": "1s",
        }),
    );
    // The joiner first: the agent holds it until its provider runs, as a dependency it never listed.
    objects::apply_container(agent.store.as_ref(), &joiner, None).await.expect("apply");
    eventually("the joiner to wait for its provider", READY, || async {
        let synced = condition(agent.store.as_ref(), &namespace, &side, "Synced").await?;
        (synced.reason == "WaitingForDependency").then_some(())
    })
    .await;
    assert!(inspect(&side).await.is_none(), "no joiner is made before its provider runs");
    objects::apply_container(agent.store.as_ref(), &provider("1"), None).await.expect("apply");
    wait_ready(agent.store.as_ref(), &namespace, &web, READY).await;
    wait_ready(agent.store.as_ref(), &namespace, &side, READY).await;
    let first_web = id_of(&inspect(&web).await.unwrap());
    let first_side = inspect(&side).await.unwrap();
    // Docker stores the provider's ID, not its name: why a new provider leaves the joiner behind.
    assert_eq!(network_mode(&first_side), format!("container:{first_web}"));
    eventually("the web page from the joiner's 127.0.0.1", READY, || async { page_from(&side) }).await;

    // A spec change gives the provider a new container: the joiner is recreated into its namespace.
    let changed = Instant::now();
    objects::apply_container(agent.store.as_ref(), &provider("2"), None).await.expect("apply");
    let second_web = eventually("the provider's new container to run", READY, || async {
        let inspect = inspect(&web).await?;
        (running(&inspect) && id_of(&inspect) != first_web).then(|| id_of(&inspect))
    })
    .await;
    let provider_done = changed.elapsed();
    let second_side = eventually("the joiner to run in the new provider's namespace", REPAIR, || async {
        let inspect = inspect(&side).await?;
        (running(&inspect) && network_mode(&inspect) == format!("container:{second_web}")).then_some(inspect)
    })
    .await;
    let follower_done = changed.elapsed();
    assert_ne!(id_of(&second_side), id_of(&first_side), "a joiner of a replaced provider is a new container");
    eventually("the web page from the new joiner", READY, || async { page_from(&side) }).await;
    wait_event(&agent, &namespace, &side, "Recreated", "NetworkProviderReplaced").await;
    eprintln!("netns: provider recreated after {provider_done:?}, joiner after {follower_done:?}");

    // Killed by hand: the provider is started again (same container), the joiner restarted into it.
    cli_ok(&["kill", &web]);
    let restarted_web = eventually("the killed provider to run again", READY, || async {
        let inspect = inspect(&web).await?;
        (running(&inspect)
            && id_of(&inspect) == second_web
            && started_at(&inspect) > started_at(&second_side))
        .then_some(inspect)
    })
    .await;
    let killed = Instant::now();
    eventually("the joiner to be restarted after its provider", REPAIR, || async {
        let inspect = inspect(&side).await?;
        let after = started_at(&inspect) > started_at(&restarted_web);
        (running(&inspect) && after && id_of(&inspect) == id_of(&second_side)).then_some(())
    })
    .await;
    eprintln!("netns: joiner restarted {:?} after its provider ran again", killed.elapsed());
    eventually("the web page from the restarted joiner", READY, || async { page_from(&side) }).await;
    wait_event(&agent, &namespace, &side, "Restarted", "NetworkProviderRestarted").await;

    agent.stop().await.expect("the agent stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_linker_gets_its_targets_new_address() {
    let TestScope { id, cleanup, .. } = TestScope::new();
    let agent = InProcessAgent::embedded(&format!("host-{id}")).await;
    let namespace = format!("t{id}");
    let db = format!("db-{id}");
    let client = format!("client-{id}");
    let target = |version: &str| {
        test_spec(
            &db,
            &namespace,
            &agent.host,
            &cleanup,
            json!({"image": "kedge-test/web:latest", "env": {"VERSION": version}, "stopGracePeriod": "1s"}),
        )
    };
    let linker = test_spec(
        &client,
        &namespace,
        &agent.host,
        &cleanup,
        json!({"image": "kedge-test/app:v1", "links": [format!("{db}:database")], "stopGracePeriod": "1s"}),
    );
    // A container that takes an address before the target's and then goes, so that the target's
    // next container gets another address than its first (the bridge hands out the lowest free one).
    let filler = format!("filler-{id}");
    cli_ok(&["run", "-d", "--name", &filler, "--label", &format!("io.kedge.test={id}"), "kedge-test/app:v1"]);
    objects::apply_container(agent.store.as_ref(), &target("1"), None).await.expect("apply");
    objects::apply_container(agent.store.as_ref(), &linker, None).await.expect("apply");
    wait_ready(agent.store.as_ref(), &namespace, &db, READY).await;
    wait_ready(agent.store.as_ref(), &namespace, &client, READY).await;
    cli_ok(&["rm", "-f", &filler]);
    let first_db = inspect(&db).await.unwrap();
    let first_client = inspect(&client).await.unwrap();
    let hosts_line = |ip: &str| format!("{ip}\tdatabase");
    let hosts = cli_ok(&["exec", &client, "cat", "/etc/hosts"]);
    assert!(hosts.contains(&hosts_line(&address(&first_db))), "/etc/hosts:\n{hosts}");

    // The default bridge is shared with the tests running beside this one: one of them may take the
    // address the filler left before the target's new container does, which then gets its old one
    // back. Another update then tries again; the linker must follow every time.
    let mut previous_db = first_db.clone();
    let mut attempt = 2;
    let (second_client, changed) = loop {
        let changed = Instant::now();
        objects::apply_container(agent.store.as_ref(), &target(&attempt.to_string()), None)
            .await
            .expect("apply");
        let db_now = eventually("the target's new container to run", READY, || async {
            let inspect = inspect(&db).await?;
            (running(&inspect) && id_of(&inspect) != id_of(&previous_db)).then_some(inspect)
        })
        .await;
        let client_now = eventually("the linker to hold the target's new address", REPAIR, || async {
            let inspect = inspect(&client).await?;
            let hosts = String::from_utf8_lossy(&docker_cli(&["exec", &client, "cat", "/etc/hosts"]).stdout)
                .into_owned();
            (running(&inspect) && hosts.contains(&hosts_line(&address(&db_now)))).then_some(inspect)
        })
        .await;
        if address(&db_now) != address(&first_db) {
            break (client_now, changed);
        }
        assert!(attempt < 4, "the target's container got its first address back {} times", attempt - 1);
        eprintln!(
            "link: the target got {} again (a test beside took the free one); updating again",
            address(&db_now)
        );
        previous_db = db_now;
        attempt += 1;
    };
    eprintln!("link: linker repaired {:?} after the target's spec changed", changed.elapsed());
    assert_ne!(id_of(&second_client), id_of(&first_client), "a link follows only a new linker");
    wait_event(&agent, &namespace, &client, "Recreated", "LinkTargetReplaced").await;

    // Killed by hand: the same target starts again, and the linker is restarted to reread it.
    cli_ok(&["kill", &db]);
    let restarted_db = eventually("the killed target to run again", READY, || async {
        let inspect = inspect(&db).await?;
        (running(&inspect) && started_at(&inspect) > started_at(&second_client)).then_some(inspect)
    })
    .await;
    eventually("the linker to be restarted after its target", REPAIR, || async {
        let inspect = inspect(&client).await?;
        let after = started_at(&inspect) > started_at(&restarted_db);
        (running(&inspect) && after && id_of(&inspect) == id_of(&second_client)).then_some(())
    })
    .await;
    let hosts = cli_ok(&["exec", &client, "cat", "/etc/hosts"]);
    assert!(hosts.contains(&hosts_line(&address(&restarted_db))), "/etc/hosts:\n{hosts}");
    wait_event(&agent, &namespace, &client, "Restarted", "LinkTargetRestarted").await;

    agent.stop().await.expect("the agent stops cleanly");
}
