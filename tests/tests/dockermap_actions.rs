//! docker-map's container actions through the real `kedge` binary and a real `kedge agent` on the test
//! engine (issue 11): stop and start along dependency paths, in order by the engine's own timestamps,
//! kept across an agent restart; restart (one container, same ID) and restart --recreate (new ID);
//! startup replacing exactly the container that ended with a non-recoverable code; shutdown keeping
//! persistent (orphan) specs; and `kedge run --script`. Needs `scripts/test-env up`.

use crate::api_support;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use api_support::{kedge_command, stderr, stdout, AgentGuard};
use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup, TestEnv, TEST_LABEL};

/// One test's world: a state directory, a host name, a namespace, and the kedge CLI pointed at them.
struct World {
    run: String,
    host: String,
    ns: String,
    dir: PathBuf,
}

impl World {
    fn new(prefix: &str) -> World {
        let run = run_id();
        let dir = std::env::temp_dir().join(format!("kedge-dm-{prefix}-{run}"));
        std::fs::create_dir_all(dir.join("specs")).unwrap();
        World { host: format!("dm-{run}"), ns: format!("dm-{run}"), dir, run }
    }

    fn agent(&self) -> AgentGuard {
        AgentGuard::spawn(&self.dir.join("state"), &self.host, &[]).keeping_state()
    }

    fn kedge(&self, args: &[&str]) -> Output {
        let socket = format!("unix://{}", self.dir.join("state/kedge.sock").display());
        kedge_command(&self.dir)
            .env("KEDGE_SERVER", &socket)
            .env("KEDGE_NAMESPACE", &self.ns)
            .env("DOCKER_HOST", TestEnv::get().docker_host)
            .args(args)
            .output()
            .expect("kedge runs")
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let output = self.kedge(args);
        assert!(output.status.success(), "kedge {args:?}: {}{}", stdout(&output), stderr(&output));
        stdout(&output)
    }

    async fn api_up(&self) {
        eventually("the agent's API answers", Duration::from_secs(30), || async {
            self.kedge(&["version"]).status.success().then_some(())
        })
        .await;
    }

    /// Writes a spec file into `specs/`; `extra` is YAML under `spec:` (two-space indented).
    fn spec(&self, name: &str, image: &str, extra: &str) -> String {
        let name = self.name(name);
        let text = format!(
            "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  image: {image}\n  \
             labels:\n    {TEST_LABEL}: {run}\n  placement:\n    host: {host}\n  stopGracePeriod: 1s\n{extra}",
            run = self.run,
            host = self.host,
        );
        std::fs::write(self.dir.join("specs").join(format!("{name}.yaml")), text).unwrap();
        name
    }

    fn name(&self, short: &str) -> String {
        format!("{short}-{}", self.run)
    }

    fn specs(&self) -> String {
        self.dir.join("specs").display().to_string()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn inspect(name: &str, format: &str) -> String {
    let output = docker_cli(&["inspect", "-f", format, name]);
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn running(name: &str) -> bool {
    inspect(name, "{{.State.Running}}") == "true"
}

/// The engine's StartedAt / FinishedAt (UTC), with the fraction padded to nanoseconds so that the
/// strings compare as the times do (the engine trims trailing zeros).
fn engine_time(name: &str, field: &str) -> String {
    let text = inspect(name, &format!("{{{{.State.{field}}}}}"));
    let text = text.strip_suffix('Z').unwrap_or_else(|| panic!("{name} {field}: {text:?} is not UTC"));
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    format!("{seconds}.{fraction:0<9}")
}

const HEALTHY_DEP: &str = "  healthcheck:\n    test: [CMD, wget, -q, -O-, http://127.0.0.1/healthz]\n    \
interval: 1s\n    timeout: 1s\n    retries: 3\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start_follow_the_chain_and_stop_survives_an_agent_restart() {
    let world = World::new("chain");
    let _cleanup = EngineCleanup::new(&world.run);
    let agent = world.agent();
    world.api_up().await;
    let web_image = "kedge-test/web:latest";
    let db = world.spec("db", web_image, HEALTHY_DEP);
    let app = world.spec(
        "app",
        web_image,
        &format!("{HEALTHY_DEP}  dependsOn:\n    - name: {db}\n      condition: healthy\n"),
    );
    let web = world.spec(
        "web",
        web_image,
        &format!("{HEALTHY_DEP}  dependsOn:\n    - name: {app}\n      condition: healthy\n"),
    );
    world.ok(&["apply", "-f", &world.specs()]);
    world.ok(&["wait", "container", &web, "--for", "condition=Ready", "--timeout", "120s"]);

    // stop app: web (which depends on it) goes down first; db keeps running.
    let stopped = world.ok(&["stop", "container", &app, "--wait", "60s"]);
    assert!(stopped.contains(&format!("container/{web} runState: stopped")), "{stopped}");
    assert!(!running(&web) && !running(&app) && running(&db));
    assert!(engine_time(&web, "FinishedAt") < engine_time(&app, "FinishedAt"), "web stopped before app");
    let described = world.ok(&["describe", "container", &app]);
    assert!(described.contains("Stopped"), "{described}");

    // The agent goes away; someone starts both by hand (a reboot under restart: always would too).
    drop(agent);
    docker_cli(&["start", &app, &web]);
    assert!(running(&app) && running(&web));
    let agent = world.agent();
    world.api_up().await;
    eventually("the restarted agent stops them again", Duration::from_secs(60), || async {
        (!running(&app) && !running(&web)).then_some(())
    })
    .await;
    assert!(engine_time(&web, "FinishedAt") < engine_time(&app, "FinishedAt"), "web again before app");
    assert!(running(&db));

    // stop db now takes everything down; start web brings db, app, web up, in that order.
    world.ok(&["stop", "container", &db, "--wait", "60s"]);
    assert!(!running(&db));
    let started = world.ok(&["start", "container", &web, "--wait", "120s"]);
    assert!(started.contains(&format!("container/{db} runState: running")), "{started}");
    let (db_at, app_at, web_at) =
        (engine_time(&db, "StartedAt"), engine_time(&app, "StartedAt"), engine_time(&web, "StartedAt"));
    assert!(db_at < app_at && app_at < web_at, "db {db_at}, app {app_at}, web {web_at}");

    // restart app: app alone, same container; db and web keep their start times.
    let app_id = inspect(&app, "{{.Id}}");
    let restarted = world.ok(&["restart", "container", &app]);
    assert!(restarted.starts_with(&format!("container/{app} restarted")), "{restarted}");
    assert_eq!(inspect(&app, "{{.Id}}"), app_id);
    assert!(engine_time(&app, "StartedAt") > app_at);
    assert_eq!((engine_time(&db, "StartedAt"), engine_time(&web, "StartedAt")), (db_at, web_at));
    let events = world.ok(&["events", "--for", &app]);
    assert!(events.contains("Restarted"), "{events}");

    // --recreate: the agent replaces it (a new ID), as `kubectl rollout restart` does.
    world.ok(&["restart", "container", &app, "--recreate"]);
    eventually("app runs as a new container", Duration::from_secs(90), || async {
        let id = inspect(&app, "{{.Id}}");
        (!id.is_empty() && id != app_id && running(&app)).then_some(())
    })
    .await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_replaces_only_the_non_recoverable_and_shutdown_keeps_persistent() {
    let world = World::new("startup");
    let _cleanup = EngineCleanup::new(&world.run);
    let agent = world.agent();
    world.api_up().await;
    // a <- b <- c; `sleep` ignores SIGTERM, so every stop ends in SIGKILL: exit code 137, which only
    // b calls non-recoverable.
    let a = world.spec("a", "kedge-test/app:v1", "  restartPolicy: always\n");
    let b = world.spec(
        "b",
        "kedge-test/app:v1",
        &format!("  restartPolicy: always\n  nonRecoverableExitCodes: [137]\n  dependsOn: [{a}]\n"),
    );
    let c = world.spec("c", "kedge-test/app:v1", &format!("  deletionPolicy: orphan\n  dependsOn: [{b}]\n"));
    world.ok(&["apply", "-f", &world.specs()]);
    world.ok(&["wait", "container", &c, "--for", "condition=Ready", "--timeout", "90s"]);
    let ids: Vec<String> = [&a, &b, &c].iter().map(|name| inspect(name, "{{.Id}}")).collect();

    world.ok(&["stop", "container", &a, "--wait", "60s"]);
    for name in [&a, &b, &c] {
        assert_eq!(inspect(name, "{{.State.ExitCode}}"), "137", "{name}");
    }
    // Stopped as asked: a non-recoverable end is not acted on while the spec says stopped.
    assert_eq!(inspect(&b, "{{.Id}}"), ids[1]);

    world.ok(&["startup", "-f", &world.specs(), "--wait", "90s"]);
    let after: Vec<String> = [&a, &b, &c].iter().map(|name| inspect(name, "{{.Id}}")).collect();
    assert_eq!(after[0], ids[0], "a was only started");
    assert_ne!(after[1], ids[1], "b exited 137, which it calls non-recoverable: a new container");
    assert_eq!(after[2], ids[2], "c was only started");
    assert!(running(&a) && running(&b) && running(&c));

    // shutdown: c (dependents first) and b stopped and deleted, a too; c is persistent: kept.
    let out = world.ok(&["shutdown", "-f", &world.specs(), "--wait", "60s"]);
    assert!(out.contains(&format!("container/{c} kept stopped")), "{out}");
    assert!(
        out.contains(&format!("container/{a} deleted")) && out.contains(&format!("container/{b} deleted"))
    );
    eventually("a and b are removed", Duration::from_secs(60), || async {
        (inspect(&a, "{{.Id}}").is_empty() && inspect(&b, "{{.Id}}").is_empty()).then_some(())
    })
    .await;
    assert!(!running(&c) && inspect(&c, "{{.Id}}") == after[2]);
    world.ok(&["get", "container", &c]);
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_exec_reruns_post_start_commands() {
    let world = World::new("exec");
    let _cleanup = EngineCleanup::new(&world.run);
    let agent = world.agent();
    world.api_up().await;
    let app = world.spec(
        "app",
        "kedge-test/app:v1",
        "  postStart:\n    - command: [sh, -c, echo start >> /tmp/starts]\n",
    );
    world.ok(&["apply", "-f", &world.specs()]);
    world.ok(&["wait", "container", &app, "--for", "condition=Ready", "--timeout", "60s"]);
    let starts = || {
        let output = docker_cli(&["exec", &app, "cat", "/tmp/starts"]);
        String::from_utf8_lossy(&output.stdout).lines().count()
    };
    eventually("the post-start command ran once", Duration::from_secs(30), || async {
        (starts() == 1).then_some(())
    })
    .await;
    // FIXME: a plain restart may run them too: the agent can see the container stopped mid-restart
    // and start it itself, with its post-start commands. Only `--exec` promises a run.
    world.ok(&["restart", "container", &app]);
    let before = starts();
    world.ok(&["restart", "container", &app, "--exec"]);
    assert!(starts() > before, "--exec ran the post-start command again before answering");
    let events = world.ok(&["events", "--for", &app]);
    assert!(events.contains("ExecRan"), "{events}");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_a_script_in_a_one_off_container() {
    let world = World::new("run");
    let _cleanup = EngineCleanup::new(&world.run);
    let agent = world.agent();
    world.api_up().await;
    // The dependency is declared stopped: run must start it first.
    let dep = world.spec("dep", "kedge-test/app:v1", "  runState: stopped\n");
    let job = world.spec("job", "kedge-test/app:v1", &format!("  runState: stopped\n  dependsOn: [{dep}]\n"));
    world.ok(&["apply", "-f", &world.specs()]);
    let scripts = world.dir.join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let script = scripts.join("write.sh");
    // The script tries to leave a file beside itself, to change itself and to see its neighbour: none of
    // it reaches the host (only the script is mounted, read-only).
    let text = "echo \"hello from $1\"\necho written > \"${0%/*}/out.txt\"\necho tampered >> \"$0\"\n[ -e \"${0%/*}/secret.txt\" ] && echo sees the secret\nexit 3\n";
    std::fs::write(&script, text).unwrap();
    std::fs::write(scripts.join("secret.txt"), "not for the container\n").unwrap();

    let script_arg = script.display().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", &job, "--script", &script_arg, "--entrypoint", "/bin/sh"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "{script_path}", "kedge"]);
        world.kedge(&args)
    };
    let output = run(&[]);
    assert_eq!(output.status.code(), Some(3), "{}{}", stdout(&output), stderr(&output));
    assert_eq!(stdout(&output), "hello from kedge\n");
    assert!(!scripts.join("out.txt").exists(), "the script wrote into the host directory");
    assert_eq!(std::fs::read_to_string(&script).unwrap(), text, "the script changed itself on the host");
    assert!(stderr(&output).contains("Read-only file system"), "{}", stderr(&output));
    assert!(running(&dep), "the dependency was started first");
    let one_off = format!("{job}-script");
    assert!(inspect(&one_off, "{{.Id}}").is_empty(), "the one-off container is removed");

    // --keep leaves it; the next run refuses to clobber it unless --replace.
    assert_eq!(run(&["--keep"]).status.code(), Some(3));
    assert!(!inspect(&one_off, "{{.Id}}").is_empty());
    assert_eq!(
        inspect(&one_off, "{{index .Config.Labels \"io.kedge.run-of\"}}"),
        format!("{}/{job}", world.ns)
    );
    let refused = run(&[]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("exists"), "{}", stderr(&refused));
    assert_eq!(run(&["--replace"]).status.code(), Some(3));
    assert!(inspect(&one_off, "{{.Id}}").is_empty());
    // The one-off container goes through the host-escape policy (docs/policy.md): a script that is
    // the host's root or /etc is refused as the same bind mount in a spec would be, and nothing runs.
    for sensitive in ["/", "/etc"] {
        let refused = world.kedge(&["run", &job, "--script", sensitive, "--", "true"]);
        assert_eq!(refused.status.code(), Some(2), "{}{}", stdout(&refused), stderr(&refused));
        let message = stderr(&refused);
        let named = format!("--script {sensitive}: refused by the `baseline` policy");
        assert!(message.contains(&named), "{message}");
        assert!(inspect(&one_off, "{{.Id}}").is_empty(), "nothing was run for {sensitive}");
    }
    // The spec's own container is untouched and still stopped as declared.
    assert!(!running(&job));
    drop(agent);
}
