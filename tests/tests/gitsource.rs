//! GitSource against real Git: a bare repository on disk (file://) pushed to by the real `git`, an
//! agent in-process (its scheduler's leader runs the GitSource controller) on the API server's store,
//! the real `kedge` binary to apply the source and read it back, and the webhook over HTTP.
//! Pushes, a removed file (pruned, while a spec applied by hand stays), a broken commit (applies
//! nothing, the status names the file and line), a force-push back, a hand edit put back (drift), a
//! deleted branch; a signed webhook applies a push within 5 s with the interval at 1 h, a bad
//! signature gets 401 and does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::api_support::{stderr, stdout, unique, TestServer};
use kedge_controller::store::api::Api;
use kedge_controller::store::objects;
use kedge_crds::{ConditionStatus, Container, GitSource};
use kedge_tests::{eventually, run_id, wait_ready, EngineCleanup, InProcessAgent, TEST_LABEL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A bare repository and a clone that pushes to it.
pub(crate) struct Repo {
    pub(crate) bare: PathBuf,
    pub(crate) work: PathBuf,
}

impl Repo {
    pub(crate) fn new(dir: &Path) -> Repo {
        let bare = dir.join("apps.git");
        let work = dir.join("work");
        git(dir, &["init", "--quiet", "--bare", "--initial-branch=main", bare.to_str().unwrap()]);
        // Deleting the branch is one of the cases under test.
        git(&bare, &["config", "receive.denyDeleteCurrent", "ignore"]);
        git(dir, &["init", "--quiet", "--initial-branch=main", work.to_str().unwrap()]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Repo { bare, work }
    }

    pub(crate) fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    pub(crate) fn write(&self, path: &str, text: &str) {
        let file = self.work.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    /// Commits everything and pushes (`force`: a force-push); answers the commit's SHA.
    pub(crate) fn commit_and_push(&self, message: &str, force: bool) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "--quiet", "--allow-empty", "-m", message]);
        self.push(force)
    }

    pub(crate) fn push(&self, force: bool) -> String {
        let mut args = vec!["push", "--quiet", "origin", "main"];
        if force {
            args.push("--force");
        }
        git(&self.work, &args);
        git(&self.work, &["rev-parse", "HEAD"]).trim().to_owned()
    }
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=kedge test",
            "-c",
            "user.email=test@kedge.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A Container document placed on `host`, labelled for cleanup.
pub(crate) fn container(name: &str, host: &str, run: &str, env: &str) -> String {
    format!(
        "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\nspec:\n  image: kedge-test/app:v1\n  \
command: [sleep, \"3600\"]\n  env:\n    VERSION: \"{env}\"\n  labels:\n    {TEST_LABEL}: {run}\n  placement:\n    host: {host}\n"
    )
}

fn source(ns: &str, url: &str, interval: &str, secret: Option<&str>) -> String {
    let webhook = secret.map(|s| format!("  webhook:\n    secret: {s}\n")).unwrap_or_default();
    format!(
        "apiVersion: kedge.io/v1\nkind: GitSource\nmetadata:\n  name: apps\n  namespace: {ns}\nspec:\n  url: {url}\n  \
branch: main\n  path: deploy\n  interval: {interval}\n{webhook}"
    )
}

pub(crate) async fn read_status(server: &TestServer, ns: &str) -> Option<kedge_crds::GitSourceStatus> {
    Api::<GitSource>::new(server.store.clone()).get_status(ns, "apps").await.ok()?.map(|(status, _)| status)
}

pub(crate) fn ready(status: &kedge_crds::GitSourceStatus) -> Option<(ConditionStatus, String)> {
    let found = status.conditions.iter().find(|c| c.kind == "Ready")?;
    Some((found.status, found.reason.clone()))
}

pub(crate) async fn env_of(server: &TestServer, ns: &str, name: &str) -> Option<String> {
    let spec = objects::get_container(server.store.as_ref(), ns, name).await.ok()??;
    spec.spec.env.get("VERSION").map(|v| v.to_string())
}

pub(crate) async fn wait_applied(
    server: &TestServer,
    ns: &str,
    sha: &str,
    timeout: Duration,
) -> kedge_crds::GitSourceStatus {
    eventually(&format!("commit {sha} applied"), timeout, || async {
        let status = read_status(server, ns).await?;
        let applied = status.last_applied_commit.as_ref()?.sha == sha;
        (applied && ready(&status)?.0 == ConditionStatus::True).then_some(status)
    })
    .await
}

#[track_caller]
pub(crate) fn assert_exit(output: &std::process::Output, code: i32) {
    assert_eq!(output.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", stdout(output), stderr(output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_repository_is_applied_pruned_refused_whole_and_healed() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let server = TestServer::start().await;
    let host = unique("gs-host");
    let agent = InProcessAgent::start(server.store.clone(), &host, None).await;
    let ns = unique("gitops");
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    repo.write("deploy/web.yaml", &container("web", &host, &run, "1"));
    repo.write("deploy/db.yaml", &container("db", &host, &run, "1"));
    repo.write("README.md", "not a spec\n");
    let first = repo.commit_and_push("first", false);

    // A spec applied by hand in the same namespace: never the source's to prune.
    let hand = dir.path().join("hand.yaml");
    std::fs::write(&hand, container("by-hand", "nowhere", &run, "1")).unwrap();
    assert_exit(&server.kedge(&["apply", "-n", &ns, "-f", hand.to_str().unwrap()]), 0);

    let file = dir.path().join("source.yaml");
    std::fs::write(&file, source(&ns, &repo.url(), "2s", Some("s3cret-value"))).unwrap();
    let started = Instant::now();
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    let status = wait_applied(&server, &ns, &first, Duration::from_secs(12)).await;
    assert_eq!((status.applied, status.pruned), (2, 0));
    assert_eq!(status.last_applied_commit.unwrap().subject, "first");
    wait_ready(server.store.as_ref(), &ns, "web", Duration::from_secs(30)).await;
    eprintln!("first commit running after {:?} (interval 2s)", started.elapsed());
    // #20's bar: the specs run within the interval and 10 s.
    assert!(started.elapsed() < Duration::from_secs(2 + 10), "running after {:?}", started.elapsed());

    // The table and the YAML: the webhook secret is never shown.
    let table = server.kedge(&["get", "gitsources", "-n", &ns]);
    assert_exit(&table, 0);
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["NAME", "URL", "REVISION", "READY", "AGE"]);
    assert!(lines[1].contains(&format!("main@{}", &first[..7])) && lines[1].contains("True"), "{text}");
    for args in [
        &["get", "gitsource", "apps", "-n", &ns, "-o", "yaml"][..],
        &["describe", "gitsource", "apps", "-n", &ns],
    ] {
        let shown = server.kedge(args);
        assert_exit(&shown, 0);
        assert!(!stdout(&shown).contains("s3cret-value"), "{}", stdout(&shown));
    }

    // A pushed change is applied.
    repo.write("deploy/web.yaml", &container("web", &host, &run, "2"));
    let second = repo.commit_and_push("web v2", false);
    wait_applied(&server, &ns, &second, Duration::from_secs(12)).await;
    assert_eq!(env_of(&server, &ns, "web").await.as_deref(), Some("2"));

    // A removed file is pruned; the spec applied by hand stays.
    git(&repo.work, &["rm", "--quiet", "deploy/db.yaml"]);
    let third = repo.commit_and_push("drop db", false);
    let status = wait_applied(&server, &ns, &third, Duration::from_secs(12)).await;
    assert_eq!((status.applied, status.pruned), (1, 1));
    assert!(objects::get_container(server.store.as_ref(), &ns, "db").await.unwrap().is_none());
    assert!(objects::get_container(server.store.as_ref(), &ns, "by-hand").await.unwrap().is_some());

    // A broken commit applies nothing: a valid change beside it is not applied either, and the
    // status names the broken file, line and field.
    repo.write("deploy/web.yaml", &container("web", &host, &run, "3"));
    repo.write("deploy/cache.yaml", &container("cache", &host, &run, "1").replace("placement:", "placment:"));
    let broken = repo.commit_and_push("broken", false);
    let status = eventually("the broken commit refused", Duration::from_secs(12), || async {
        let status = read_status(&server, &ns).await?;
        // While it is validated, the status says Reconciling with the commit fetched: wait past it.
        let refused =
            status.conditions.iter().any(|c| c.kind == "Stalled" && c.status == ConditionStatus::True);
        (status.last_fetched_commit.as_ref()?.sha == broken && refused).then_some(status)
    })
    .await;
    assert_eq!(ready(&status), Some((ConditionStatus::False, "InvalidSpecs".to_owned())));
    assert_eq!(status.last_applied_commit.as_ref().unwrap().sha, third, "the last good commit keeps running");
    assert!(
        status.errors.iter().any(|e| e.starts_with("deploy/cache.yaml:12:") && e.contains("spec.placment")),
        "{:?}",
        status.errors
    );
    assert_eq!(env_of(&server, &ns, "web").await.as_deref(), Some("2"));
    assert!(objects::get_container(server.store.as_ref(), &ns, "cache").await.unwrap().is_none());

    // A force-push back to the good commit: Ready again, at that commit.
    git(&repo.work, &["reset", "--quiet", "--hard", &third]);
    repo.push(true);
    let status = eventually("Ready again after the force-push", Duration::from_secs(12), || async {
        let status = read_status(&server, &ns).await?;
        (status.last_fetched_commit.as_ref()?.sha == third && ready(&status)?.0 == ConditionStatus::True)
            .then_some(status)
    })
    .await;
    assert!(status.errors.is_empty());

    // A hand edit of an object the source owns is put back, with a drift event.
    let edited = dir.path().join("edit.yaml");
    std::fs::write(&edited, container("web", &host, &run, "edited")).unwrap();
    assert_exit(&server.kedge(&["apply", "-n", &ns, "-f", edited.to_str().unwrap()]), 0);
    eventually("the hand edit put back", Duration::from_secs(12), || async {
        (env_of(&server, &ns, "web").await.as_deref() == Some("2")).then_some(())
    })
    .await;
    eventually("a DriftCorrected event", Duration::from_secs(15), || async {
        let events = kedge_controller::events::list_events(server.store.as_ref(), Some(&ns)).await.ok()?;
        events
            .iter()
            .any(|e| e.reason == "DriftCorrected" && e.involved_object == format!("Container/{ns}/web"))
            .then_some(())
    })
    .await;

    // The branch deleted: the fetch fails, nothing is removed.
    git(&repo.work, &["push", "--quiet", "origin", "--delete", "main"]);
    eventually("FetchFailed after the branch is deleted", Duration::from_secs(12), || async {
        let status = read_status(&server, &ns).await?;
        (ready(&status)? == (ConditionStatus::False, "FetchFailed".to_owned())).then_some(())
    })
    .await;
    assert!(objects::get_container(server.store.as_ref(), &ns, "web").await.unwrap().is_some());

    // Deleting the source keeps what it applied; deleting the specs is the user's call.
    assert_exit(&server.kedge(&["delete", "gitsource", "apps", "-n", &ns]), 0);
    for name in ["web", "by-hand"] {
        let api = Api::<Container>::new(server.store.clone());
        api.delete(&ns, name, None).await.unwrap();
    }
    agent.stop().await.unwrap();
}

/// One POST to the webhook with `headers`; answers the status code.
async fn post_hook(server: &TestServer, ns: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(server.address()).await.unwrap();
    let mut request = format!(
        "POST /hooks/gitsources/{ns}/apps HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

fn hub_signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_webhook_applies_a_push_at_once_and_a_bad_one_gets_401() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let server = TestServer::start().await;
    let host = unique("gs-hook");
    let agent = InProcessAgent::start(server.store.clone(), &host, None).await;
    let ns = unique("gitops-hook");
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    // Placed nowhere: this test is about when the specs are written, not about containers.
    repo.write("deploy/web.yaml", &container("web", "nowhere", &run, "1"));
    let first = repo.commit_and_push("first", false);
    let file = dir.path().join("source.yaml");
    std::fs::write(&file, source(&ns, &repo.url(), "1h", Some("hook-secret"))).unwrap();
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    wait_applied(&server, &ns, &first, Duration::from_secs(12)).await;

    repo.write("deploy/web.yaml", &container("web", "nowhere", &run, "2"));
    let second = repo.commit_and_push("second", false);
    let body = br#"{"ref":"refs/heads/main"}"#;

    // Bad signatures, a wrong GitLab token, no signature, an unknown source: 401, nothing done.
    let wrong = hub_signature("not-the-secret", body);
    assert_eq!(post_hook(&server, &ns, &[("X-Hub-Signature-256", wrong)], body).await, 401);
    assert_eq!(post_hook(&server, &ns, &[("X-Gitlab-Token", "nope".to_owned())], body).await, 401);
    assert_eq!(post_hook(&server, &ns, &[], body).await, 401);
    let good = hub_signature("hook-secret", body);
    assert_eq!(post_hook(&server, "no-such-ns", &[("X-Hub-Signature-256", good.clone())], body).await, 401);
    let request_key = kedge_controller::store::keys::gitsource_request_key(&ns, "apps").unwrap();
    assert!(server.store.get(&request_key).await.unwrap().is_none(), "a refused webhook writes nothing");

    // A good signature: applied within 5 s, though the interval is an hour.
    let sent = Instant::now();
    assert_eq!(post_hook(&server, &ns, &[("X-Hub-Signature-256", good)], body).await, 202);
    wait_applied(&server, &ns, &second, Duration::from_secs(5)).await;
    eprintln!("webhook to applied: {:?}", sent.elapsed());
    assert_eq!(env_of(&server, &ns, "web").await.as_deref(), Some("2"));

    // GitLab's token, and `kedge reconcile gitsource`, do the same.
    repo.write("deploy/web.yaml", &container("web", "nowhere", &run, "3"));
    let third = repo.commit_and_push("third", false);
    assert_eq!(post_hook(&server, &ns, &[("X-Gitlab-Token", "hook-secret".to_owned())], body).await, 202);
    wait_applied(&server, &ns, &third, Duration::from_secs(5)).await;
    repo.write("deploy/web.yaml", &container("web", "nowhere", &run, "4"));
    let fourth = repo.commit_and_push("fourth", false);
    let reconciled = server.kedge(&["reconcile", "gitsource", "apps", "-n", &ns]);
    assert_exit(&reconciled, 0);
    wait_applied(&server, &ns, &fourth, Duration::from_secs(5)).await;

    assert_exit(&server.kedge(&["delete", "gitsource", "apps", "-n", &ns]), 0);
    Api::<Container>::new(server.store.clone()).delete(&ns, "web", None).await.unwrap();
    agent.stop().await.unwrap();
}

/// A Git server over HTTP: `git http-backend` (CGI) behind a minimal HTTP/1.1 server on a free
/// loopback port, serving the repositories under `root` to requests with basic auth `ci:tok3n`
/// (others get 401 with a challenge, as Git hosts answer). One connection at a time is enough for
/// libgit2's fetch (a GET of `info/refs`, then a POST of `git-upload-pack`).
async fn serve_git_over_http(root: PathBuf) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let root = root.clone();
            tokio::spawn(async move {
                let _ = answer_git_request(stream, &root).await;
            });
        }
    });
    (address, task)
}

async fn answer_git_request(mut stream: tokio::net::TcpStream, root: &Path) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (request_line.next().unwrap_or_default(), request_line.next().unwrap_or_default());
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut body = buffer[head_end..].to_vec();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        while !body.windows(5).any(|w| w == b"0\r\n\r\n") {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..read]);
        }
        body = dechunk(&body);
    } else {
        let length: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while body.len() < length {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..read]);
        }
    }
    if header("authorization").as_deref() != Some("Basic Y2k6dG9rM24=") {
        let answer = "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        return stream.write_all(answer.as_bytes()).await;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut cgi = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding").unwrap_or_default())
        .env("REMOTE_USER", "ci")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut stdin = cgi.stdin.take().expect("piped");
    stdin.write_all(&body).await?;
    drop(stdin);
    let output = cgi.wait_with_output().await?;
    let out = output.stdout;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").map(|at| (at, 4));
    let split = split.or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|at| (at, 2)));
    let (at, gap) = split.unwrap_or((out.len(), 0));
    let cgi_head = String::from_utf8_lossy(&out[..at]).into_owned();
    let mut status = "200 OK".to_owned();
    let mut response_headers = String::new();
    for line in cgi_head.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_owned(),
            _ => response_headers.push_str(&format!("{}\r\n", line.trim_end())),
        }
    }
    let content = &out[(at + gap).min(out.len())..];
    let answer = format!(
        "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.write_all(content).await
}

fn dechunk(chunked: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = chunked;
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16).unwrap_or(0);
        rest = &rest[line_end + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_served_over_http_with_a_token() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let server = TestServer::start().await;
    let host = unique("gs-http");
    let agent = InProcessAgent::start(server.store.clone(), &host, None).await;
    let ns = unique("gitops-http");
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    repo.write("deploy/web.yaml", &container("web", "nowhere", &run, "1"));
    let first = repo.commit_and_push("first", false);
    let (address, http) = serve_git_over_http(dir.path().to_owned()).await;

    // Without the token the server refuses: FetchFailed, nothing applied.
    let file = dir.path().join("source.yaml");
    std::fs::write(&file, source(&ns, &format!("http://{address}/apps.git"), "1h", None)).unwrap();
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    eventually("FetchFailed without a token", Duration::from_secs(15), || async {
        let status = read_status(&server, &ns).await?;
        (ready(&status)?.1 == "FetchFailed").then_some(())
    })
    .await;
    assert!(objects::get_container(server.store.as_ref(), &ns, "web").await.unwrap().is_none());

    // With the token in the URL: applied, and the token never shown.
    std::fs::write(&file, source(&ns, &format!("http://ci:tok3n@{address}/apps.git"), "1h", None)).unwrap();
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    wait_applied(&server, &ns, &first, Duration::from_secs(15)).await;
    let table = stdout(&server.kedge(&["get", "gitsources", "-n", &ns]));
    assert!(table.contains("http://ci:<redacted>@") && !table.contains("tok3n"), "{table}");
    for shown in [
        stdout(&server.kedge(&["get", "gitsource", "apps", "-n", &ns, "-o", "yaml"])),
        stdout(&server.kedge(&["get", "gitsource", "apps", "-n", &ns, "-o", "json"])),
    ] {
        assert!(shown.contains("ci:<redacted>@") && !shown.contains("tok3n"), "{shown}");
    }
    let described = stdout(&server.kedge(&["describe", "gitsource", "apps", "-n", &ns]));
    assert!(!described.contains("tok3n"), "{described}");
    // The file as applied is what runs: no difference, and the token not printed.
    let diff = server.kedge(&["diff", "-f", file.to_str().unwrap()]);
    assert_exit(&diff, 0);
    assert!(!stdout(&diff).contains("tok3n"));
    // What the API shows, applied back, is refused: it would replace the token with the marker.
    let shown = stdout(&server.kedge(&["get", "gitsource", "apps", "-n", &ns, "-o", "yaml"]));
    let written_back = dir.path().join("shown.yaml");
    std::fs::write(&written_back, shown).unwrap();
    let refused = server.kedge(&["apply", "-f", written_back.to_str().unwrap()]);
    assert_exit(&refused, 2);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("spec.url"), "{refused:?}");

    // A push, then `kedge reconcile`: applied over HTTP.
    repo.write("deploy/web.yaml", &container("web", "nowhere", &run, "2"));
    let second = repo.commit_and_push("second", false);
    assert_exit(&server.kedge(&["reconcile", "gitsource", "apps", "-n", &ns]), 0);
    wait_applied(&server, &ns, &second, Duration::from_secs(10)).await;
    assert_eq!(env_of(&server, &ns, "web").await.as_deref(), Some("2"));

    assert_exit(&server.kedge(&["delete", "gitsource", "apps", "-n", &ns]), 0);
    Api::<Container>::new(server.store.clone()).delete(&ns, "web", None).await.unwrap();
    http.abort();
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_source_applies_no_push_until_resumed() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let server = TestServer::start().await;
    let host = unique("gs-suspend");
    let agent = InProcessAgent::start(server.store.clone(), &host, None).await;
    let ns = unique("gitops-suspend");
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    repo.write("deploy/web.yaml", &container("web", "nowhere", &run, "1"));
    let first = repo.commit_and_push("first", false);
    let file = dir.path().join("source.yaml");
    std::fs::write(&file, source(&ns, &repo.url(), "1s", Some("kept-secret"))).unwrap();
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    wait_applied(&server, &ns, &first, Duration::from_secs(12)).await;

    let suspended = server.kedge(&["suspend", "gitsource", "apps", "-n", &ns]);
    assert_exit(&suspended, 0);
    assert!(stdout(&suspended).contains("gitsource/apps suspended"), "{}", stdout(&suspended));
    assert!(stdout(&server.kedge(&["suspend", "gitsource", "apps", "-n", &ns])).contains("already suspended"));
    let table = stdout(&server.kedge(&["get", "gitsources", "-n", &ns]));
    assert!(table.lines().nth(1).is_some_and(|row| row.contains("Suspended")), "{table}");
    eventually("Reconciling=False Suspended", Duration::from_secs(10), || async {
        let status = read_status(&server, &ns).await?;
        status.conditions.iter().any(|c| c.kind == "Reconciling" && c.reason == "Suspended").then_some(())
    })
    .await;

    // A push while suspended: not applied over many intervals, and `reconcile` refuses, saying why.
    repo.write("deploy/web.yaml", &container("web", "nowhere", &run, "2"));
    let second = repo.commit_and_push("second", false);
    let reconciled = server.kedge(&["reconcile", "gitsource", "apps", "-n", &ns]);
    assert_ne!(reconciled.status.code(), Some(0), "{}", stdout(&reconciled));
    assert!(stderr(&reconciled).contains("suspended"), "{}", stderr(&reconciled));
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(5) {
        let status = read_status(&server, &ns).await.unwrap();
        assert_eq!(status.last_applied_commit.as_ref().unwrap().sha, first, "applied while suspended");
        assert_eq!(env_of(&server, &ns, "web").await.as_deref(), Some("1"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Resumed: the push is applied, and the rest of the spec was kept (the webhook secret too,
    // which the CLI only ever saw redacted).
    let resumed = server.kedge(&["resume", "gitsource", "apps", "-n", &ns]);
    assert_exit(&resumed, 0);
    assert!(stdout(&resumed).contains("gitsource/apps resumed"), "{}", stdout(&resumed));
    wait_applied(&server, &ns, &second, Duration::from_secs(10)).await;
    assert_eq!(env_of(&server, &ns, "web").await.as_deref(), Some("2"));
    let stored = Api::<GitSource>::new(server.store.clone()).get(&ns, "apps").await.unwrap().unwrap();
    assert!(!stored.spec.suspend);
    assert_eq!(stored.spec.webhook.map(|w| w.secret).as_deref(), Some("kept-secret"));
    assert_eq!(stored.spec.interval.as_deref(), Some("1s"));
    assert_exit(&server.kedge(&["reconcile", "gitsource", "apps", "-n", &ns]), 0);

    assert_exit(&server.kedge(&["delete", "gitsource", "apps", "-n", &ns]), 0);
    Api::<Container>::new(server.store.clone()).delete(&ns, "web", None).await.unwrap();
    agent.stop().await.unwrap();
}

/// A Compose file of a GitSource's repository: its `.env` and `env_file` read from the commit.
fn compose_file(run: &str, extra: &str) -> String {
    format!(
        "name: shop\nservices:\n  web:\n    image: kedge-test/app:${{TAG}}\n    command: [sleep, \"3600\"]\n    \
env_file: web.env\n    environment:\n      GREETING: ${{GREETING}}\n      HOME_SEEN: ${{HOME:-unset}}\n    \
labels:\n      {TEST_LABEL}: {run}\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compose_file_in_the_repository_is_converted_and_applied_whole_or_not_at_all() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let server = TestServer::start().await;
    let host = unique("gs-compose");
    let agent = InProcessAgent::start(server.store.clone(), &host, None).await;
    let ns = unique("gitops-compose");
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new(dir.path());
    repo.write("deploy/compose.yml", &compose_file(&run, ""));
    repo.write("deploy/.env", "TAG=v1\nGREETING=hello\n");
    repo.write("deploy/web.env", "FROM_FILE=yes\n");
    let first = repo.commit_and_push("compose", false);
    let file = dir.path().join("source.yaml");
    std::fs::write(&file, source(&ns, &repo.url(), "1s", None)).unwrap();
    assert_exit(&server.kedge(&["apply", "-f", file.to_str().unwrap()]), 0);
    let status = wait_applied(&server, &ns, &first, Duration::from_secs(12)).await;
    assert_eq!(status.applied, 1);

    // One Container per service, in the source's namespace, named `<project>-<service>`, with the
    // commit's `.env` interpolated and its `env_file` read; the leader's own environment (HOME) is
    // not read.
    let web =
        objects::get_container(server.store.as_ref(), &ns, "shop-web").await.unwrap().expect("shop-web");
    assert_eq!(web.spec.image.to_string(), "kedge-test/app:v1");
    let env = |key: &str| web.spec.env.get(key).map(|v| v.to_string());
    assert_eq!(env("GREETING").as_deref(), Some("hello"));
    assert_eq!(env("FROM_FILE").as_deref(), Some("yes"));
    assert_eq!(env("HOME_SEEN").as_deref(), Some("unset"));
    let applyset = kedge_controller::controllers::gitsource::applyset_id(&ns, "apps");
    assert_eq!(web.metadata.labels.get("kedge.io/applyset"), Some(&applyset));

    // A broken compose file (a key kedge does not know, a relative bind) beside a change of `.env`:
    // nothing applied, and the status names the file, line and key.
    repo.write("deploy/.env", "TAG=v2\nGREETING=changed\n");
    repo.write(
        "deploy/compose.yml",
        &compose_file(&run, "    volumes:\n      - ./data:/data\n    scale_typo: 2\n"),
    );
    let broken = repo.commit_and_push("broken compose", false);
    let status = eventually("the broken compose file refused", Duration::from_secs(12), || async {
        let status = read_status(&server, &ns).await?;
        let refused =
            status.conditions.iter().any(|c| c.kind == "Stalled" && c.status == ConditionStatus::True);
        (status.last_fetched_commit.as_ref()?.sha == broken && refused).then_some(status)
    })
    .await;
    assert_eq!(ready(&status), Some((ConditionStatus::False, "InvalidSpecs".to_owned())));
    assert!(
        status.errors.iter().any(|e| e.starts_with("deploy/compose.yml:14:5: services.web.scale_typo")),
        "{:?}",
        status.errors
    );
    assert!(
        status
            .errors
            .iter()
            .any(|e| e.starts_with("deploy/compose.yml:13:") && e.contains("relative bind path")),
        "{:?}",
        status.errors
    );
    assert_eq!(status.last_applied_commit.as_ref().unwrap().sha, first);
    let web = objects::get_container(server.store.as_ref(), &ns, "shop-web").await.unwrap().unwrap();
    assert_eq!(web.spec.image.to_string(), "kedge-test/app:v1", "nothing of the broken commit applied");

    // Fixed: the new `.env` applies.
    repo.write("deploy/compose.yml", &compose_file(&run, ""));
    let fixed = repo.commit_and_push("fixed", false);
    wait_applied(&server, &ns, &fixed, Duration::from_secs(12)).await;
    let web = objects::get_container(server.store.as_ref(), &ns, "shop-web").await.unwrap().unwrap();
    assert_eq!(web.spec.image.to_string(), "kedge-test/app:v2");
    assert_eq!(web.spec.env.get("GREETING").map(|v| v.to_string()).as_deref(), Some("changed"));

    assert_exit(&server.kedge(&["delete", "gitsource", "apps", "-n", &ns]), 0);
    Api::<Container>::new(server.store.clone()).delete(&ns, "shop-web", None).await.unwrap();
    agent.stop().await.unwrap();
}
