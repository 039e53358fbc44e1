//! A long pull shows in the spec's status while it runs, and the status written after it drops it.
//! The pull is made long the way a slow registry link would: the test registry behind a proxy on
//! loopback that passes the registry's answers on at 400 kB/s, for an image with a 3 MB layer of
//! random bytes (which no compression shrinks). An agent killed in the middle of such a pull leaves
//! no stale pull in status once the agent after it has run the container.

use crate::api_support::{AgentGuard, SpecsOnAgent};
use crate::updater_support::{docker_ok, path_str, Updater};

use std::time::Duration;

use kedge_tests::eventually;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bytes per second the proxy passes from the registry to the engine.
const RATE: usize = 400_000;

/// Accepts connections on a loopback port and relays each to `upstream`, the answers paced at
/// [`RATE`]. Stops when dropped.
struct SlowProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl SlowProxy {
    async fn start(upstream: String) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let requests = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                        let _ = server_write.shutdown().await;
                    });
                    let mut chunk = vec![0u8; RATE / 20];
                    loop {
                        let read = match server_read.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(read) => read,
                        };
                        if client_write.write_all(&chunk[..read]).await.is_err() {
                            break;
                        }
                        // Pacing the relay (not a test waiting): a chunk is a 20th of a second's worth.
                        tokio::time::sleep(Duration::from_secs_f64(read as f64 / RATE as f64)).await;
                    }
                    requests.abort();
                });
            }
        });
        SlowProxy { port, task }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An image with a 3 MB layer of random bytes, pushed to the test registry and removed locally, and
/// the proxy it is pulled through slowly; answers the proxy and the slow reference.
async fn slow_image(up: &Updater) -> (SlowProxy, String) {
    let context = up.dir.path().join("big");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM kedge-test/app:v1\nRUN head -c 3000000 /dev/urandom > /blob\n",
    )
    .unwrap();
    let repository = format!("kedge-test/pull-{}", up.run);
    let pushed = format!("{}/{repository}:v1", up.env.registry);
    docker_ok(&["build", "-q", "--label", &up.label(), "-t", &pushed, path_str(&context)]);
    docker_ok(&["push", "-q", &pushed]);
    let proxy = SlowProxy::start(up.env.registry.clone()).await;
    let slow = format!("127.0.0.1:{}/{repository}:v1", proxy.port);
    // The engine must fetch it: nothing of the new layer stays local.
    docker_ok(&["image", "rm", &pushed]);
    (proxy, slow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pull_shows_its_progress_in_status_until_it_ends() {
    let up = Updater::new();
    let (_proxy, slow) = slow_image(&up).await;

    let host = format!("pull-{}", up.run);
    let state_dir = up.dir.path().join("agent");
    let _agent = AgentGuard::spawn(&state_dir, &host, &[]);
    let specs = SpecsOnAgent::new(&up.run, &host, &state_dir);
    specs.wait_api().await;
    let name = format!("big-{}", up.run);
    specs.apply(&name, &format!("  image: {slow}\n  command: [/bin/sleep, '3600']\n"));

    let pulling = eventually("the pull's progress in status", Duration::from_secs(60), || async {
        let pull = specs.get(&name)["status"]["pull"].clone();
        pull.is_object().then_some(pull)
    })
    .await;
    assert_eq!(pulling["image"], slow.as_str(), "{pulling}");
    assert!(pulling["layers"].as_u64().unwrap_or(0) >= 1, "{pulling}");
    let (done, total) = (pulling["bytesDone"].as_u64().unwrap(), pulling["bytesTotal"].as_u64().unwrap());
    assert!(done <= total, "{pulling}");
    assert!(pulling["startedAt"].as_str().is_some_and(|at| at.ends_with('Z')), "{pulling}");

    // It moves on while the pull lasts, then the status of the running container drops it.
    let later = eventually("more bytes, or the pull over", Duration::from_secs(60), || async {
        let status = specs.get(&name)["status"].clone();
        let pull = &status["pull"];
        (pull.is_null() || pull["bytesDone"].as_u64() > Some(done)).then_some(status)
    })
    .await;
    assert!(later.is_object(), "{later}");
    eventually("Ready, the pull gone from status", Duration::from_secs(90), || async {
        let object = specs.get(&name);
        let ready = specs.condition(&name, "Ready").is_some_and(|(status, _, _)| status == "True");
        (ready && object["status"]["pull"].is_null()).then_some(())
    })
    .await;
    let running = docker_ok(&["inspect", "-f", "{{.Config.Image}}", &name]);
    assert_eq!(crate::api_support::stdout(&running).trim(), slow);
}

/// An agent killed in the middle of a long pull leaves its last `status.pull` in the store; the agent
/// started after it on the same store must not leave it there: once the container runs, the status
/// has no pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_pull_leaves_no_stale_pull_status_after_its_restart() {
    let up = Updater::new();
    let (_proxy, slow) = slow_image(&up).await;
    let host = format!("pullkill-{}", up.run);
    let state_dir = up.dir.path().join("agent");
    let mut first = AgentGuard::spawn(&state_dir, &host, &[]).keeping_state();
    let specs = SpecsOnAgent::new(&up.run, &host, &state_dir);
    specs.wait_api().await;
    let name = format!("bigkill-{}", up.run);
    specs.apply(&name, &format!("  image: {slow}\n  command: [/bin/sleep, '3600']\n"));
    let pulling = eventually("the pull's progress in status", Duration::from_secs(60), || async {
        let pull = specs.get(&name)["status"]["pull"].clone();
        pull.is_object().then_some(pull)
    })
    .await;

    // Killed at once, no shutdown: the status it wrote last says a pull runs.
    first.child.kill().expect("kill the agent");
    first.child.wait().expect("the agent ends");
    drop(first);
    let _second = AgentGuard::spawn(&state_dir, &host, &[]);
    specs.wait_api().await;
    let status = specs.get(&name)["status"].clone();
    eprintln!("right after the restart, status.pull: {}", status["pull"]);
    eventually("Ready, and no pull left in status", Duration::from_secs(120), || async {
        let object = specs.get(&name);
        let pull = &object["status"]["pull"];
        let ready = specs.condition(&name, "Ready").is_some_and(|(status, _, _)| status == "True");
        (ready && pull.is_null()).then_some(())
    })
    .await;
    let running = docker_ok(&["inspect", "-f", "{{.Config.Image}}", &name]);
    assert_eq!(crate::api_support::stdout(&running).trim(), slow);
    assert!(pulling["startedAt"].is_string(), "{pulling}");
}
