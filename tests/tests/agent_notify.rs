//! `kedge agent --notify URL` against a webhook receiver in the test (an axum server on
//! 127.0.0.1:0) and a real agent and engine (docs/notifications.md):
//!
//! - a broken update rolled back: one message naming the container arrives within 10 s of the
//!   rollback, with the JSON fields the docs promise, and `kedge_updates_rolled_back_total` counts it;
//! - a crash loop: one message about it, however many times it crashes, not one per crash;
//! - the URL's path (where a token would be) is not in the agent's log.
//!
//! Both scenarios share one agent and run at the same time.

use crate::api_support::{stderr, AgentGuard, SpecsOnAgent};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kedge_tests::{eventually, run_id, EngineCleanup};
use serde_json::Value;

const READY: Duration = Duration::from_secs(60);
/// The path of the receiver's URL: a stand-in for a token, which must never be logged.
const SECRET_PATH: &str = "hook/s3cr3t-t0ken";

/// Every POST the receiver got: when, and the body.
type Received = Arc<Mutex<Vec<(Instant, Value)>>>;

/// Serves `POST /SECRET_PATH` on a free port until the test's runtime ends; returns the URL.
async fn receiver(received: Received) -> String {
    let app = axum::Router::new().route(
        &format!("/{SECRET_PATH}"),
        axum::routing::post(move |body: axum::body::Bytes| async move {
            let value =
                serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
            received.lock().unwrap().push((Instant::now(), value));
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}/{SECRET_PATH}")
}

struct Fixture {
    specs: SpecsOnAgent,
    received: Received,
}

impl std::ops::Deref for Fixture {
    type Target = SpecsOnAgent;
    fn deref(&self) -> &SpecsOnAgent {
        &self.specs
    }
}

impl Fixture {
    /// The messages (arrival, body) with a line about `object`, and those lines.
    fn messages_about(&self, object: &str) -> Vec<(Instant, Vec<Value>)> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter_map(|(at, body)| {
                let lines: Vec<Value> =
                    body.as_array()?.iter().filter(|line| line["object"] == object).cloned().collect();
                (!lines.is_empty()).then_some((*at, lines))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollbacks_and_crash_loops_reach_a_webhook_batched() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let received: Received = Arc::default();
    let url = receiver(received.clone()).await;
    let state_dir = std::env::temp_dir().join(format!("kedge-notify-{run}"));
    let host = format!("notify-{run}");
    let agent = AgentGuard::spawn(&state_dir, &host, &["--notify", &url]);
    let fx = Fixture { specs: SpecsOnAgent::new(&run, &host, &state_dir), received };
    fx.wait_api().await;

    tokio::join!(rollback(&fx), crash_loop(&fx));

    let log = std::fs::read_to_string(agent.state_dir.join("agent.log")).unwrap_or_default();
    assert!(log.contains("notifications enabled"), "the agent says where it notifies");
    assert!(!log.contains("s3cr3t"), "the URL's path is never logged");
}

/// A broken image applied to a Ready container is rolled back; the webhook hears of it within 10 s.
async fn rollback(fx: &Fixture) {
    let name = format!("held-{}", fx.run);
    let object = format!("{}/{name}", fx.namespace);
    fx.apply(&name, "  image: kedge-test/web:latest\n");
    eventually("the web container to be Ready", READY, || async {
        (fx.condition(&name, "Ready")?.0 == "True").then_some(())
    })
    .await;
    fx.apply(&name, "  image: kedge-test/fail:latest\n");
    let rolled_back = eventually("the broken update to be rolled back", READY, || async {
        let (status, reason, _) = fx.condition(&name, "Synced")?;
        (status == "False" && reason == "RolledBack").then(Instant::now)
    })
    .await;
    let (arrived, lines) = eventually("a notification of the rollback", Duration::from_secs(10), || async {
        fx.messages_about(&object)
            .into_iter()
            .find(|(_, lines)| lines.iter().any(|line| line["reason"] == "RolledBack"))
    })
    .await;
    eprintln!(
        "measured: the rollback's notification arrived {:?} after the rollback was seen in the status",
        arrived.saturating_duration_since(rolled_back)
    );
    assert!(arrived.saturating_duration_since(rolled_back) < Duration::from_secs(10));
    let about_rollback = |lines: &Vec<Value>| lines.iter().any(|line| line["reason"] == "RolledBack");
    let rollback_messages =
        fx.messages_about(&object).iter().filter(|(_, lines)| about_rollback(lines)).count();
    assert_eq!(rollback_messages, 1, "one message about the rollback");
    let line = lines.iter().find(|line| line["reason"] == "RolledBack").unwrap();
    assert_eq!(line["kind"], "Warning", "{line}");
    assert_eq!(line["host"], fx.host.as_str(), "{line}");
    assert!(line["message"].as_str().is_some_and(|m| m.contains("kedge-test/fail:latest")), "{line}");
    assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    assert_eq!(line["count"], 1, "{line}");

    // The same rollback, counted in the agent's metrics (nothing else in this agent rolls back).
    let samples = crate::agent_metrics::scrape(&fx.state_dir).await;
    assert_eq!(samples.get("kedge_updates_rolled_back_total{phase=\"recreate\"}"), Some(&1.0), "{samples:?}");
    assert_eq!(samples.get("kedge_updates_rolled_back_total{phase=\"soak\"}"), Some(&0.0), "{samples:?}");
}

/// An image that exits at once, no restart policy: kedge restarts it with its backoff; the
/// webhook gets one message about it, not one per crash.
async fn crash_loop(fx: &Fixture) {
    let name = format!("loop-{}", fx.run);
    let object = format!("{}/{name}", fx.namespace);
    fx.apply(&name, "  image: kedge-test/fail:latest\n");
    let restarts = eventually("four restarts of the crash loop", Duration::from_secs(90), || async {
        fx.get(&name)["status"]["restartCount"].as_u64().filter(|count| *count >= 4)
    })
    .await;
    // Long enough for a message the last crashes would have caused (the batch window is 3 s).
    let settle = Instant::now() + Duration::from_secs(6);
    let messages = eventually("a notification of the crash loop", Duration::from_secs(10), || async {
        (Instant::now() >= settle).then(|| fx.messages_about(&object))
    })
    .await;
    let lines: Vec<String> =
        messages.iter().flat_map(|(_, lines)| lines.iter().map(|line| format!("{line}"))).collect();
    eprintln!(
        "measured: {restarts} restarts of the crash loop, {} message(s) about it: {lines:?}",
        messages.len()
    );
    assert_eq!(messages.len(), 1, "one message for the crash loop, not one per crash: {lines:?}");
}

/// A `--notify` URL kedge cannot use is input to fix: exit 2 before anything starts, and the error
/// does not print the URL's path (a token).
#[test]
fn a_bad_notify_url_is_a_usage_error_that_hides_its_token() {
    let state_dir = std::env::temp_dir().join(format!("kedge-notify-bad-{}", run_id()));
    let out = std::process::Command::new(kedge_tests::kedge_bin())
        .args(["agent", "--state-dir", state_dir.to_str().unwrap(), "--host-name", "bad"])
        .args(["--notify", "ftp://hooks.example.com/s3cr3t-t0ken"])
        .output()
        .expect("kedge runs");
    let error = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{error}");
    assert!(error.contains("--notify") && error.contains("hooks.example.com"), "{error}");
    assert!(!error.contains("s3cr3t"), "{error}");
    assert!(!state_dir.exists(), "nothing was started");
}
