//! Secrets that stay secret (docs/secrets.md), with the real agent binary and the real engine: a
//! secret made by `kedge create secret` reaches a container's env through `secretEnv`, and its
//! value appears nowhere else a user or operator reads: `kedge get`/`describe` of the secret and of
//! the container (table, YAML, JSON), `kedge diff`, events, the status as stored, and the agent's
//! log. A changed value recreates the container with the new one; a spec naming a missing secret
//! is not run (`SecretNotFound`, one event) until the secret is created from a `.env` file. The
//! fingerprint shown is keyed by the store's key, which nothing serves; `kedge run` refuses a spec
//! with `secretEnv`; a secret past its limits is refused naming the limit, nothing stored.

use crate::api_support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use api_support::{http_unix, kedge_command, stdout, AgentGuard};
use kedge_tests::{docker_cli, eventually, EngineCleanup, TestScope, TEST_LABEL};
use serde_json::Value;

struct Fixture {
    socket: String,
    state_dir: std::path::PathBuf,
    namespace: String,
    run: String,
    host: String,
    files: tempfile::TempDir,
    /// Removes what the run made on the engine, also when the test fails.
    _cleanup: EngineCleanup,
    /// Holds the agent's state directory.
    _parent: tempfile::TempDir,
}

impl Fixture {
    /// An agent of host `PREFIX-RUN` of its own, on an embedded store in a temporary state
    /// directory, once its API answers; the agent is dropped (stopped) before the fixture.
    async fn start(prefix: &str) -> (Fixture, AgentGuard) {
        let TestScope { id: run, cleanup, namespace } = TestScope::new();
        let parent = tempfile::tempdir().unwrap();
        let state_dir = parent.path().join("state");
        let host = format!("{prefix}-{run}");
        let agent = AgentGuard::spawn(&state_dir, &host, &[]);
        let fx = Fixture {
            socket: format!("unix://{}", state_dir.join("kedge.sock").display()),
            state_dir,
            namespace,
            run,
            host,
            files: tempfile::tempdir().unwrap(),
            _cleanup: cleanup,
            _parent: parent,
        };
        eventually("the agent's API answers on its socket", Duration::from_secs(30), || async {
            fx.kedge(&["version"]).status.success().then_some(())
        })
        .await;
        (fx, agent)
    }

    fn kedge(&self, args: &[&str]) -> Output {
        kedge_command(self.files.path())
            .env("KEDGE_SERVER", &self.socket)
            .env("KEDGE_NAMESPACE", &self.namespace)
            .args(args)
            .output()
            .expect("kedge runs")
    }

    /// Runs `kedge ARGS` and answers stdout and stderr together, failing on a non-zero exit.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kedge(args);
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "kedge {args:?} failed: {text}");
        text
    }

    /// Applies a Container `name` on this agent's host with `secretEnv` naming `secret`/`key`.
    fn apply(&self, name: &str, secret: &str, key: &str) {
        let path = self.files.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  image: kedge-test/app:v1\n\
                 \x20 command: [/bin/sh, -c, 'exec sleep 3600']\n  stopGracePeriod: 1s\n  labels:\n    {TEST_LABEL}: {run}\n\
                 \x20 placement:\n    host: {host}\n  env:\n    MODE: test\n\
                 \x20 secretEnv:\n    DB_PASSWORD: {{secret: {secret}, key: {key}}}\n",
                run = self.run,
                host = self.host,
            ),
        )
        .unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    /// A condition of container `name`: (status, reason, message).
    fn condition(&self, name: &str, kind: &str) -> Option<(String, String, String)> {
        let got = self.kedge(&["get", "container", name, "-o", "json"]);
        let value: Value = serde_json::from_slice(&got.stdout).ok()?;
        let condition = value["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)?.clone();
        let text = |key: &str| condition[key].as_str().unwrap_or_default().to_owned();
        Some((text("status"), text("reason"), text("message")))
    }

    /// The value of `DB_PASSWORD` in container `name`'s env, as the engine has it (`None`: no container).
    fn engine_env(&self, name: &str) -> Option<String> {
        let out = docker_cli(&["inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", name]);
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find_map(|line| line.strip_prefix("DB_PASSWORD=").map(str::to_owned))
    }

    fn container_id(&self, name: &str) -> String {
        String::from_utf8_lossy(&docker_cli(&["inspect", "-f", "{{.Id}}", name]).stdout).trim().to_owned()
    }

    /// Everything a user or operator reads about `names` and the secrets, concatenated.
    async fn everything_shown(&self, names: &[&str], secrets: &[&str]) -> String {
        let mut shown = String::new();
        for secret in secrets {
            for args in [
                vec!["get", "secret", secret, "-o", "yaml"],
                vec!["get", "secret", secret, "-o", "json"],
                vec!["get", "secrets", "-o", "wide"],
                vec!["describe", "secret", secret],
            ] {
                shown.push_str(&self.ok(&args));
            }
        }
        for name in names {
            for args in [
                vec!["get", "container", name, "-o", "yaml"],
                vec!["get", "container", name, "-o", "json"],
                vec!["describe", "container", name],
            ] {
                shown.push_str(&self.ok(&args));
            }
            let status_path = format!("/api/v1/namespaces/{}/containers/{name}/status", self.namespace);
            let reply = http_unix(&self.state_dir.join("kedge.sock"), "GET", &status_path, None).await;
            shown.push_str(&String::from_utf8_lossy(&reply.body));
        }
        shown.push_str(&self.ok(&["get", "events", "-o", "json"]));
        shown.push_str(&self.ok(&["get", "containers", "-o", "wide"]));
        shown.push_str(&std::fs::read_to_string(self.state_dir.join("agent.log")).unwrap_or_default());
        shown
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_the_container_env_and_nothing_else() {
    let (fx, _agent) = Fixture::start("secrets").await;
    let run = fx.run.clone();

    // Distinctive values: any occurrence outside the container's env is a leak.
    let first = format!("first-s3cr3t-{run}");
    let second = format!("second-s3cr3t-{run}");
    let third = format!("third-s3cr3t-{run}");

    let created = fx.ok(&["create", "secret", "db", "--from-literal", &format!("password={first}")]);
    assert!(created.contains("secret/db created"), "{created}");
    let web = format!("web-{run}");
    fx.apply(&web, "db", "password");
    eventually("the container runs with the secret's value", Duration::from_secs(60), || async {
        (fx.engine_env(&web).as_deref() == Some(first.as_str())
            && fx.condition(&web, "Ready").is_some_and(|(status, _, _)| status == "True"))
        .then_some(())
    })
    .await;
    let inside = docker_cli(&["exec", &web, "/bin/sh", "-c", "echo \"$DB_PASSWORD\""]);
    assert_eq!(String::from_utf8_lossy(&inside.stdout).trim(), first, "the process sees the value");

    // `kedge diff` of a file holding the same value: no change; another value: a change, neither shown.
    let same = fx.files.path().join("db-same.yaml");
    let changed = fx.files.path().join("db-changed.yaml");
    let secret_file = |path: &Path, value: &str| {
        let text = format!(
            "apiVersion: kedge.io/v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {}\ndata:\n  password: {value}\n",
            fx.namespace
        );
        std::fs::write(path, text).unwrap();
    };
    secret_file(&same, &first);
    secret_file(&changed, &second);
    let diff_same = fx.kedge(&["diff", "-f", same.to_str().unwrap()]);
    assert_eq!(diff_same.status.code(), Some(0), "{}", stdout(&diff_same));
    let diff_changed = fx.kedge(&["diff", "-f", changed.to_str().unwrap()]);
    let diff_text = format!("{}{}", stdout(&diff_changed), String::from_utf8_lossy(&diff_changed.stderr));
    assert_eq!(diff_changed.status.code(), Some(1), "{diff_text}");
    assert!(diff_text.contains("<redacted> fingerprint:"), "{diff_text}");
    assert!(!diff_text.contains(&first) && !diff_text.contains(&second), "diff shows a value: {diff_text}");

    let shown = fx.everything_shown(&[&web], &["db"]).await;
    assert!(shown.contains("<redacted>"), "the outputs were read: {shown}");
    assert!(!shown.contains(&first), "the first value leaked:\n{shown}");

    // A new value: the container is recreated with it.
    let old_id = fx.container_id(&web);
    let changed_at = std::time::Instant::now();
    let updated =
        fx.ok(&["create", "secret", "db", "--from-literal", &format!("password={second}"), "--update"]);
    assert!(updated.contains("secret/db configured"), "{updated}");
    eventually("the container is recreated with the new value", Duration::from_secs(60), || async {
        (fx.engine_env(&web).as_deref() == Some(second.as_str()) && fx.container_id(&web) != old_id)
            .then_some(())
    })
    .await;
    eprintln!(
        "measured: secret changed -> container recreated with the new value in {:?}",
        changed_at.elapsed()
    );
    eventually("the recreated container is ready", Duration::from_secs(60), || async {
        fx.condition(&web, "Ready").is_some_and(|(status, _, _)| status == "True").then_some(())
    })
    .await;

    // A spec naming a secret that does not exist: nothing runs, status and one event say which.
    let lonely = format!("lonely-{run}");
    fx.apply(&lonely, "later", "token");
    let (_, _, message) = eventually("SecretNotFound", Duration::from_secs(30), || async {
        fx.condition(&lonely, "Synced")
            .filter(|(status, reason, _)| status == "False" && reason == "SecretNotFound")
    })
    .await;
    assert!(message.contains("`later`") && message.contains("`token`"), "{message}");
    assert!(fx.engine_env(&lonely).is_none(), "no container without its secret");
    let events = fx.ok(&["events", "--for", &lonely, "-o", "json"]);
    let events: Value = serde_json::from_str(&events).unwrap();
    let not_found: Vec<&Value> =
        events["items"].as_array().unwrap().iter().filter(|e| e["reason"] == "SecretNotFound").collect();
    assert_eq!(not_found.len(), 1, "one event: {events}");
    assert_eq!(not_found[0]["count"].as_u64().unwrap_or(1), 1, "reported once: {events}");

    // Created from a .env file, the secret lets it run.
    let env_file = fx.files.path().join("later.env");
    std::fs::write(&env_file, format!("# the token\ntoken={third}\n")).unwrap();
    let created_at = std::time::Instant::now();
    fx.ok(&["create", "secret", "later", "--from-env-file", env_file.to_str().unwrap()]);
    eventually("the waiting container runs once its secret exists", Duration::from_secs(60), || async {
        (fx.engine_env(&lonely).as_deref() == Some(third.as_str())).then_some(())
    })
    .await;
    eprintln!("measured: missing secret created -> container created in {:?}", created_at.elapsed());
    eventually("it is ready and synced", Duration::from_secs(60), || async {
        let synced = fx.condition(&lonely, "Synced").is_some_and(|(status, _, _)| status == "True");
        let ready = fx.condition(&lonely, "Ready").is_some_and(|(status, _, _)| status == "True");
        (synced && ready).then_some(())
    })
    .await;

    let shown = fx.everything_shown(&[&web, &lonely], &["db", "later"]).await;
    // The sweep read what it claims to: the agent's log, the events, the redacted secrets.
    for read in ["agent starting", "SecretNotFound", "spec.secretEnv.DB_PASSWORD", "<redacted> fingerprint:"]
    {
        assert!(shown.contains(read), "{read} not in what was read:\n{shown}");
    }
    for value in [&first, &second, &third] {
        assert!(!shown.contains(value.as_str()), "{value} leaked:\n{shown}");
    }
}

/// The fingerprint the API shows is keyed by the store's own random key (docs/secrets.md), so that
/// a short value cannot be guessed from it offline: one value in two secrets shows one fingerprint,
/// which is neither the value's SHA-256 nor any salted hash a reader could compute, and nothing the
/// API answers (or the agent logs) carries the key, which the store holds and the test reads back
/// once the agent has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_fingerprints_are_keyed_and_the_key_is_served_nowhere() {
    use sha2::{Digest, Sha256};
    let (fx, agent) = Fixture::start("fingerprints").await;
    let agent = agent.keeping_state();
    let (namespace, state_dir) = (fx.namespace.clone(), fx.state_dir.clone());
    let socket_path = state_dir.join("kedge.sock");

    // A PIN: four digits, ten thousand guesses away from any unkeyed hash of it.
    fx.ok(&["create", "secret", "card", "--from-literal", "pin=4711"]);
    fx.ok(&["create", "secret", "door", "--from-literal", "code=4711", "--from-literal", "other=4712"]);
    let shown_of = |secret: &str, key: &str| {
        let value: Value = serde_json::from_str(&fx.ok(&["get", "secret", secret, "-o", "json"])).unwrap();
        let text = value["data"][key].as_str().unwrap_or_default().to_owned();
        text.strip_prefix("<redacted> fingerprint:")
            .unwrap_or_else(|| panic!("not redacted: {value}"))
            .to_owned()
    };
    let pin = shown_of("card", "pin");
    assert_eq!(pin, shown_of("door", "code"), "one value, one fingerprint, in any secret and key");
    assert_ne!(pin, shown_of("door", "other"), "another value, another fingerprint");
    assert_eq!(pin.len(), 16, "{pin}");
    let plain = hex::encode(&Sha256::digest(b"4711")[..8]);
    let salted = kedge_crds::secret::hash_digest(&namespace, "card", "data.pin", "4711");
    let mut fixed_salt = Sha256::new();
    fixed_salt.update(b"kedge.io/v1 secret fingerprint\0");
    fixed_salt.update(b"4711");
    let fixed_salt = hex::encode(&fixed_salt.finalize()[..8]);
    for unkeyed in [&plain, &salted, &fixed_salt] {
        assert_ne!(&pin, unkeyed, "the fingerprint is a hash anyone can compute");
    }

    // No route serves the key: whatever path names it, an admin on the socket gets no 200.
    let mut answered = String::new();
    for path in [
        "/kedge/v1/keys/secret-fingerprint",
        "/api/v1/keys/secret-fingerprint",
        "/api/v1/keys",
        "/api/v1/namespaces/keys/secrets/secret-fingerprint",
        "/api/v1/namespaces/default/secrets/..%2F..%2Fkeys%2Fsecret-fingerprint",
    ] {
        let reply = http_unix(&socket_path, "GET", path, None).await;
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        assert_ne!(reply.status, 200, "{path} answered: {body}");
        answered.push_str(&body);
    }
    answered.push_str(&fx.everything_shown(&[], &["card", "door"]).await);

    // The agent stopped, the store is read: the fingerprint is the HMAC of the value under the key
    // the store holds, and the key appears in nothing the API answered or the agent logged.
    drop(agent);
    let store = kedge_controller::store::embedded::EmbeddedStore::open(
        state_dir.join("kedge.db"),
        kedge_controller::store::embedded::EmbeddedOptions::default(),
    )
    .await
    .expect("the agent's store opens once it has stopped");
    let stored =
        kedge_controller::store::Store::get(&store, kedge_controller::store::keys::SECRET_FINGERPRINT_KEY)
            .await
            .unwrap()
            .expect("the first secret shown made the key");
    let key_text = String::from_utf8(stored.value).unwrap();
    let key = kedge_controller::api::fingerprints::load_or_create(&store).await.unwrap();
    assert_eq!(key.fingerprint("4711"), pin, "keyed by the store's key");
    assert!(!answered.contains(&key_text), "the key was served or logged");
}

/// `kedge run` of a spec whose env takes a value from a secret: refused before anything starts
/// (exit 2, naming the field), because the values never leave the agent, and no one-off container
/// is made with an environment other than the spec's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kedge_run_refuses_a_spec_with_secret_env() {
    let (fx, _agent) = Fixture::start("run-secrets").await;
    let run = fx.run.clone();
    fx.ok(&["create", "secret", "db", "--from-literal", &format!("password=run-s3cr3t-{run}")]);
    let job = format!("job-{run}");
    fx.apply(&job, "db", "password");
    let script = fx.files.path().join("job.sh");
    std::fs::write(&script, "echo \"$DB_PASSWORD\"\n").unwrap();
    let script_container = format!("{job}-script");
    let out =
        fx.kedge(&["run", &job, "--script", script.to_str().unwrap(), "--container-name", &script_container]);
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("spec.secretEnv.DB_PASSWORD") && text.contains("nothing was run"), "{text}");
    assert!(!text.contains("s3cr3t"), "{text}");
    let inspected = docker_cli(&["inspect", &script_container]);
    assert!(!inspected.status.success(), "a one-off container was made");
}

/// Poison input on secrets (docs/secrets.md, "Limits"): a 10 MB env file, one of 100,000 keys, a
/// value over 128 KiB, and the same through the API; each refused with a message naming the limit,
/// nothing stored, the agent still answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_secrets_are_refused_naming_the_limit_and_nothing_is_stored() {
    let (fx, mut agent) = Fixture::start("poison-secrets").await;
    let namespace = fx.namespace.clone();
    let socket_path = fx.state_dir.join("kedge.sock");

    let write = |name: &str, text: String| {
        let path = fx.files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let ten_mb = write("ten-mb.env", format!("blob={}\n", "x".repeat(10 << 20)));
    let many_keys = write("many.env", (0..100_000).map(|i| format!("k{i}=v\n")).collect());
    let big_value = format!("blob={}", write("big-value", "x".repeat(200 << 10)));
    let cases: [(&str, Vec<&str>, &str); 3] = [
        ("ten-mb", vec!["--from-env-file", &ten_mb], "1024 KiB a secret's source file may have"),
        ("many", vec!["--from-env-file", &many_keys], "a secret holds at most 1000 keys"),
        ("big", vec!["--from-file", &big_value], "a secret holds at most 128 KiB"),
    ];
    for (name, sources, limit) in &cases {
        let mut args = vec!["create", "secret", name];
        args.extend(sources.iter().copied());
        let started = std::time::Instant::now();
        let out = fx.kedge(&args);
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        eprintln!("measured: kedge create secret {name} refused in {:?}", started.elapsed());
        assert_eq!(out.status.code(), Some(2), "{name}: {text}");
        assert!(text.contains(limit), "{name}: the limit is named: {text}");
        assert!(text.len() < 4096, "{name}: a short message, {} bytes", text.len());
        assert!(!text.contains("xxxxxxxx"), "{name}: a value is quoted");
    }

    // The API refuses the same, whatever the client: past the key limit (a body under the API's
    // body limit), past the byte limit, and past the body limit itself.
    let path = |name: &str| format!("/api/v1/namespaces/{namespace}/secrets/{name}");
    let body = |name: &str, data: serde_json::Map<String, Value>| {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "kedge.io/v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, "data": data,
        }))
        .unwrap()
    };
    let api_cases = [
        (
            "api-many",
            body("api-many", (0..5000).map(|i| (format!("k{i}"), Value::from("v"))).collect()),
            422,
            "at most 1000 keys",
        ),
        (
            "api-big",
            body("api-big", [("blob".to_owned(), Value::from("x".repeat(200 << 10)))].into_iter().collect()),
            422,
            "at most 128 KiB",
        ),
        (
            "api-huge",
            body("api-huge", [("blob".to_owned(), Value::from("x".repeat(10 << 20)))].into_iter().collect()),
            413,
            "256 KiB limit",
        ),
    ];
    for (name, body, status, limit) in &api_cases {
        let reply = http_unix(&socket_path, "PUT", &path(name), Some(body)).await;
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        assert_eq!(reply.status, *status, "{name}: {text}");
        assert!(text.contains(limit), "{name}: {text}");
        assert!(text.len() < 4096 && !text.contains("xxxxxxxx"), "{name}: {} bytes", text.len());
    }

    // Nothing stored, and the agent goes on.
    for name in cases.iter().map(|c| c.0).chain(api_cases.iter().map(|c| c.0)) {
        let reply = http_unix(&socket_path, "GET", &path(name), None).await;
        assert_eq!(reply.status, 404, "{name} was stored");
    }
    assert!(agent.child.try_wait().unwrap().is_none(), "the agent is running");
    let health = http_unix(&socket_path, "GET", "/healthz", None).await;
    assert_eq!(health.status, 200, "{}", String::from_utf8_lossy(&health.body));
    fx.ok(&["create", "secret", "fine", "--from-literal", "pin=4711"]);
}
