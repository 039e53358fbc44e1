//! Restart semantics and repair accounting against the real engine and a real `kedge agent`
//! process (docs/restarts.md), as a user would check them with `docker events` and `kedge get`:
//!
//! - `restartPolicy: "no"` and an image that exits 3: started exactly once in 40 s, reported Exited;
//! - no policy declared: kedge restarts it with its own backoff, Degraded=True/CrashLoopBackOff;
//! - `always`: no more starts in 40 s than the same image under Docker's own policy alone (run side
//!   by side), RESTARTS >= 2, Degraded=True/CrashLoopBackOff;
//! - a broken image applied to a spec with a published port: rolled back, then no `die` of the old
//!   container in the next 60 s, Ready=True and Synced=False/RolledBack; a new spec clears it;
//! - three `docker kill`s: RESTARTS >= 3, events naming the cause, DRIFT counting the run state;
//! - `docker pause`: resumed, with an event;
//! - and no Rust debug formatting in any event or status text;
//! - an agent SIGKILLed in a crash loop and started again goes on with the backoff it had reached.
//!
//! The scenarios share one agent and run at the same time, so the test takes about as long as the
//! longest wait (the rollback's 60 s watch).

use crate::api_support::{stdout, AgentGuard, SpecsOnAgent};

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use kedge_controller::docker::{DockerClient, EventAction};
use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup, TEST_LABEL};
use serde_json::Value;

const WINDOW: Duration = Duration::from_secs(40);
const HOLD_WATCH: Duration = Duration::from_secs(60);
const READY: Duration = Duration::from_secs(60);

/// Container events of this run, as the engine reports them: (name, action, exit code, id, time).
type Seen = Arc<Mutex<Vec<(String, EventAction, Option<i64>, String, SystemTime)>>>;

struct Fixture {
    specs: SpecsOnAgent,
    events: Seen,
}

impl std::ops::Deref for Fixture {
    type Target = SpecsOnAgent;
    fn deref(&self) -> &SpecsOnAgent {
        &self.specs
    }
}

impl Fixture {
    /// Watches `name` for the crash-loop window (the counts are over a fixed window, so this observes
    /// it whole) and returns the first Degraded=True/CrashLoopBackOff message seen, if any.
    async fn first_crash_loop_message(&self, name: &str) -> Option<String> {
        let mut first = None;
        let deadline = tokio::time::Instant::now() + WINDOW;
        while tokio::time::Instant::now() < deadline {
            if let Some((status, reason, message)) = self.condition(name, "Degraded") {
                if first.is_none() && status == "True" && reason == "CrashLoopBackOff" {
                    first = Some(message);
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        first
    }

    /// `kedge events --for NAME -o json`: (reason, message, count).
    fn events_of(&self, name: &str) -> Vec<(String, String, u64)> {
        let out = self.kedge(&["events", "--for", name, "-n", &self.namespace, "-o", "json"]);
        let list: Value = serde_json::from_str(&stdout(&out)).unwrap_or(Value::Null);
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|e| {
                        (
                            e["reason"].as_str().unwrap_or_default().to_owned(),
                            e["message"].as_str().unwrap_or_default().to_owned(),
                            e["count"].as_u64().unwrap_or(1),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn name(&self, what: &str) -> String {
        format!("{what}-{}", self.run)
    }

    /// Engine events of container `name` with `action` between `from` and `to`.
    fn count(&self, name: &str, action: &EventAction, from: SystemTime, to: SystemTime) -> usize {
        let seen = self.events.lock().unwrap();
        seen.iter().filter(|(n, a, _, _, at)| n == name && a == action && *at >= from && *at <= to).count()
    }

    fn dies_of_id(&self, id: &str, from: SystemTime) -> usize {
        let seen = self.events.lock().unwrap();
        seen.iter().filter(|(_, a, _, i, at)| i == id && *a == EventAction::Die && *at >= from).count()
    }
}

fn inspect(name: &str, format: &str) -> String {
    let out = docker_cli(&["inspect", "-f", format, name]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Rust's debug formatting in text people read: `Some(`, `None`, `Struct { field:`.
fn debug_formatting(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    let struct_like = words
        .windows(3)
        .any(|w| w[0].chars().next().is_some_and(char::is_uppercase) && w[1] == "{" && w[2].ends_with(':'));
    text.contains("Some(") || text.contains("None") || struct_like
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts collecting this run's engine events (from now on), then an agent of host `what-RUN` on a
/// new embedded store; returns once its API answers. The collector ends with the test's runtime.
async fn start(run: &str, what: &str) -> (Fixture, AgentGuard) {
    let state_dir = std::env::temp_dir().join(format!("kedge-{what}-{run}"));
    let host = format!("{what}-{run}");
    // The agent's log (KEDGE_LOG=info) sits in its state directory, removed with it.
    std::fs::create_dir_all(&state_dir).unwrap();

    // Every engine event of this run, from before the first container.
    let events: Seen = Arc::default();
    let docker = DockerClient::connect().await.expect("the engine");
    let mut stream = Box::pin(docker.events(&[format!("{TEST_LABEL}={run}")], Some(SystemTime::now())));
    {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(event.time_nano.max(0) as u64);
                let name = event.name.clone().unwrap_or_default();
                events.lock().unwrap().push((name, event.action, event.exit_code, event.id, at));
            }
        });
    }

    let agent = AgentGuard::spawn(&state_dir, &host, &[]);
    let fx = Fixture { specs: SpecsOnAgent::new(run, &host, &state_dir), events };
    fx.wait_api().await;
    (fx, agent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_policies_backoff_rollback_hold_and_repairs_are_kept_and_told() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let (fx, _agent) = start(&run, "crash").await;

    tokio::join!(
        policy_no(&fx),
        policy_unset(&fx),
        policy_always(&fx),
        rollback_held(&fx),
        kills_and_pause(&fx)
    );

    // No debug formatting anywhere a user reads: every event and every status of the namespace.
    let all = stdout(&fx.kedge(&["events", "-n", &fx.namespace, "-o", "json"]));
    let statuses = stdout(&fx.kedge(&["get", "containers", "-n", &fx.namespace, "-o", "json"]));
    let list: Value = serde_json::from_str(&all).unwrap();
    let mut texts: Vec<String> =
        list["items"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect();
    let containers: Value = serde_json::from_str(&statuses).unwrap();
    for item in containers["items"].as_array().unwrap() {
        for condition in item["status"]["conditions"].as_array().into_iter().flatten() {
            texts.push(condition["message"].as_str().unwrap_or_default().to_owned());
        }
        texts.push(item["status"]["lastError"].as_str().unwrap_or_default().to_owned());
    }
    assert!(texts.len() > 10, "events and statuses were read: {texts:?}");
    for text in &texts {
        assert!(!debug_formatting(text), "debug formatting in {text:?}");
    }
}

/// SIGKILLed in the middle of a crash loop, an agent started again on the same store goes on with
/// the backoff it had reached (`status.backoff`), instead of starting the container at once and
/// climbing from 1 s again. Killed after kedge's fifth start, whose next start is due 16 s after
/// the container died: the new agent takes the host's lock over at once (its holder died on this
/// machine) and is reconciling within a few seconds, so a start from nothing would come well before
/// that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_goes_on_with_a_crash_loops_backoff() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let (fx, agent) = start(&run, "crashr").await;
    let mut agent = agent.keeping_state();
    let name = fx.name("resumed");
    fx.apply(&name, "  image: kedge-test/fail:latest\n");
    let starts = |fx: &Fixture| fx.get(&name)["status"]["backoff"]["starts"].as_u64();
    let reached = eventually("kedge's fifth start of the crash loop", Duration::from_secs(120), || async {
        starts(&fx).filter(|starts| *starts >= 5)
    })
    .await;
    // The next start is 16 s away: nothing happens between the read and the kill.
    agent.child.kill().expect("SIGKILL the agent");
    agent.child.wait().expect("reap the agent");
    let killed = SystemTime::now();
    assert_eq!(reached, 5, "killed before a sixth start");
    let last_die = eventually("the fifth start's die", Duration::from_secs(10), || async {
        let seen = fx.events.lock().unwrap();
        let last_start =
            seen.iter().filter(|e| e.0 == name && e.1 == EventAction::Start).map(|e| e.4).max()?;
        seen.iter().filter(|e| e.0 == name && e.1 == EventAction::Die && e.4 >= last_start).map(|e| e.4).max()
    })
    .await;

    let _again = AgentGuard::spawn(&fx.state_dir, &fx.host, &[]);
    fx.wait_api().await;
    let next_start = eventually("the next start, from the new agent", Duration::from_secs(60), || async {
        let seen = fx.events.lock().unwrap();
        seen.iter().filter(|e| e.0 == name && e.1 == EventAction::Start && e.4 > killed).map(|e| e.4).min()
    })
    .await;
    let waited = next_start.duration_since(last_die).unwrap_or_default();
    eprintln!(
        "measured: after a restart of the agent the crash loop's next start came {waited:?} after the \
         container died (due 16 s); the agent was down {:?}",
        next_start.duration_since(killed).unwrap_or_default()
    );
    assert!(waited >= Duration::from_millis(15_500), "the backoff went on: {waited:?}");
    eventually("the loop's sixth start in the status", Duration::from_secs(30), || async {
        starts(&fx).filter(|starts| *starts >= 6)
    })
    .await;
}

/// `no` + an image that exits 3: started exactly once in 40 s; status says it exited, with the code.
async fn policy_no(fx: &Fixture) {
    let name = fx.name("no");
    let from = SystemTime::now();
    fx.apply(&name, "  image: kedge-test/fail:latest\n  restartPolicy: \"no\"\n");
    tokio::time::sleep(WINDOW).await; // the window itself is what is measured
    let starts = fx.count(&name, &EventAction::Start, from, from + WINDOW);
    eprintln!("measured: restartPolicy no, exit 3: {starts} start(s) in {}s", WINDOW.as_secs());
    assert_eq!(starts, 1, "started exactly once");
    let (ready, reason, message) = fx.condition(&name, "Ready").expect("a Ready condition");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "Exited"), "{message}");
    assert!(message.contains("code 3") && message.contains("\"no\""), "{message}");
    let (degraded, _, _) = fx.condition(&name, "Degraded").unwrap();
    assert_eq!(degraded, "False", "a policy that says no is not a crash loop");
}

/// No policy declared and an image that exits 3: kedge restarts it itself, backing off (0, 1 s,
/// 2 s, 4 s, ...: 7 starts at most in 40 s), and says when the next start comes.
async fn policy_unset(fx: &Fixture) {
    let name = fx.name("unset");
    let from = SystemTime::now();
    fx.apply(&name, "  image: kedge-test/fail:latest\n");
    let crash_loop = fx.first_crash_loop_message(&name).await;
    let starts = fx.count(&name, &EventAction::Start, from, from + WINDOW);
    let message = crash_loop.expect("Degraded=True/CrashLoopBackOff was reported");
    eprintln!("measured: no restart policy, exit 3: {starts} starts in {}s; {message}", WINDOW.as_secs());
    assert!((3..=7).contains(&starts), "kedge restarts it with its backoff: {starts} starts");
    assert!(message.contains("kedge starts it again at"), "the next start is told: {message}");
    let restarts = fx.get(&name)["status"]["restartCount"].as_u64().unwrap_or(0);
    assert!(restarts >= 2, "RESTARTS counts kedge's starts: {restarts}");
}

/// `always`: Docker restarts it; kedge starts nothing more than Docker's own policy would, and says
/// it crash loops.
async fn policy_always(fx: &Fixture) {
    let name = fx.name("always");
    let baseline = fx.name("docker-only");
    let from = SystemTime::now();
    fx.apply(&name, "  image: kedge-test/fail:latest\n  restartPolicy: always\n");
    let label = format!("{TEST_LABEL}={}", fx.run);
    let out = docker_cli(&[
        "run",
        "-d",
        "--name",
        &baseline,
        "--label",
        &label,
        "--restart",
        "always",
        "kedge-test/fail:latest",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let crash_loop = fx.first_crash_loop_message(&name).await;
    let to = from + WINDOW;
    let starts = fx.count(&name, &EventAction::Start, from, to);
    let docker_starts = fx.count(&baseline, &EventAction::Start, from, to);
    eprintln!(
        "measured: restartPolicy always, exit 3: {starts} starts in {}s; Docker's policy alone: {docker_starts}",
        WINDOW.as_secs()
    );
    assert!(starts >= 2, "Docker's policy restarts it: {starts}");
    assert!(starts <= docker_starts + 1, "never more starts than Docker alone: {starts} > {docker_starts}");
    let message = crash_loop.expect("Degraded=True/CrashLoopBackOff was reported");
    assert!(message.contains("exited with code 3") && message.contains("always"), "{message}");
    let restarts = fx.get(&name)["status"]["restartCount"].as_u64().unwrap_or(0);
    eprintln!("measured: RESTARTS {restarts}; CrashLoopBackOff message: {message}");
    assert!(restarts >= 2, "RESTARTS counts the engine's restarts: {restarts}");
}

/// A broken image on a spec with a published port: rolled back, then the old container is left
/// serving; a new spec clears the hold.
async fn rollback_held(fx: &Fixture) {
    let name = fx.name("held");
    let port = free_port();
    let spec = |image: &str| format!("  image: {image}\n  ports: [\"127.0.0.1:{port}:80\"]\n");
    fx.apply(&name, &spec("kedge-test/web:latest"));
    eventually("the web container to be Ready", READY, || async {
        (fx.condition(&name, "Ready")?.0 == "True").then_some(())
    })
    .await;
    let old_id = inspect(&name, "{{.Id}}");
    let started = std::time::Instant::now();
    fx.apply(&name, &spec("kedge-test/fail:latest"));
    let message = eventually("the broken update to be rolled back", READY, || async {
        let (status, reason, message) = fx.condition(&name, "Synced")?;
        (status == "False" && reason == "RolledBack").then_some(message)
    })
    .await;
    eprintln!("measured: broken update rolled back {:?} after the apply: {message}", started.elapsed());
    assert!(message.contains("generation 2") && message.contains("kedge-test/fail:latest"), "{message}");
    assert_eq!(inspect(&name, "{{.Id}}"), old_id, "the old container is back");
    let watch_from = SystemTime::now();
    tokio::time::sleep(HOLD_WATCH).await; // the window itself is what is measured
    let dies = fx.dies_of_id(&old_id, watch_from);
    eprintln!(
        "measured: {dies} die events of the old container in the {}s after the rollback",
        HOLD_WATCH.as_secs()
    );
    assert_eq!(dies, 0, "the failed generation is not retried against the serving container");
    let object = fx.get(&name);
    let conditions = object["status"]["conditions"].as_array().unwrap();
    let of = |kind: &str| conditions.iter().find(|c| c["type"] == kind).unwrap();
    assert_eq!(
        (of("Ready")["status"].as_str(), of("Synced")["reason"].as_str()),
        (Some("True"), Some("RolledBack"))
    );
    assert_eq!(object["status"]["rolledBack"]["generation"], 2, "{object}");
    let served = std::net::TcpStream::connect(("127.0.0.1", port));
    assert!(served.is_ok(), "the old container still serves on its port");

    // A new spec is a new attempt: back to the good image, the hold is gone.
    fx.apply(&name, &spec("kedge-test/web:latest"));
    eventually("the spec to be Synced again", READY, || async {
        let object = fx.get(&name);
        let synced = fx.condition(&name, "Synced")?;
        (synced.0 == "True" && object["status"]["rolledBack"].is_null()).then_some(())
    })
    .await;
}

/// Three `docker kill`s and a `docker pause`: each repaired, counted and told.
async fn kills_and_pause(fx: &Fixture) {
    let name = fx.name("killed");
    fx.apply(&name, "  image: kedge-test/app:v1\n");
    eventually("the container to be Ready", READY, || async {
        (fx.condition(&name, "Ready")?.0 == "True").then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    for round in 1..=3 {
        let before = inspect(&name, "{{.State.StartedAt}}");
        let out = docker_cli(&["kill", &name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        eventually(&format!("kill {round} to be repaired"), READY, || async {
            let now = inspect(&name, "{{.State.Running}} {{.State.StartedAt}}");
            (now.starts_with("true ") && !now.ends_with(&before)).then_some(())
        })
        .await;
    }
    eprintln!("measured: three kills repaired in {:?}", started.elapsed());
    let object = eventually("RESTARTS to count the three", READY, || async {
        let object = fx.get(&name);
        (object["status"]["restartCount"].as_u64()? >= 3).then_some(object)
    })
    .await;
    let drift = object["status"]["drift"].as_array().cloned().unwrap_or_default();
    assert!(drift.iter().any(|d| d["field"] == "spec.runState"), "DRIFT counts the run state: {object}");
    // The first kill's event is written at once; the repeats are batched and reach the store by
    // the recorder's next flush (events::FLUSH_INTERVAL), so the count may lag that long.
    let flushed = kedge_controller::events::FLUSH_INTERVAL + READY;
    eventually("the events to count the three kills", flushed, || async {
        let killed: u64 = fx
            .events_of(&name)
            .iter()
            .filter(|(reason, message, _)| {
                reason == "Started" && message == "container was killed (exit 137); started again"
            })
            .map(|(_, _, count)| count)
            .sum();
        (killed >= 3).then_some(())
    })
    .await;
    let table = stdout(&fx.kedge(&["get", "containers", "-n", &fx.namespace, "-o", "wide"]));
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap_or_default().to_owned();
    eprintln!("measured: after three kills: {row}");

    // Paused by hand: resumed, with an event.
    let out = docker_cli(&["pause", &name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let paused_at = std::time::Instant::now();
    eventually("the paused container to be resumed", READY, || async {
        (inspect(&name, "{{.State.Paused}} {{.State.Running}}") == "false true").then_some(())
    })
    .await;
    eprintln!("measured: a paused container resumed after {:?}", paused_at.elapsed());
    eventually("an event to say so", READY, || async {
        fx.events_of(&name)
            .iter()
            .any(|(reason, message, _)| reason == "Unpaused" && message == "container was paused; resumed")
            .then_some(())
    })
    .await;
}
