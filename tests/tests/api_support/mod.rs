//! Shared by the api_* and cli_* tests: the API server in-process on an embedded store in a fresh
//! directory, a minimal HTTP/1.1 client (so the tests need no HTTP crate), and the real `kedge` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use kedge_controller::api::{self, ApiListener, ApiState};
use kedge_controller::store::{EmbeddedOptions, EmbeddedStore, SharedStore};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// An API server on `127.0.0.1:0` over its own embedded store; stopped and cleaned up when dropped.
pub struct TestServer {
    pub url: String,
    pub token: String,
    pub store: SharedStore,
    pub dir: PathBuf,
    pub unix_socket: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    unix_shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|state| state).await
    }

    /// [`TestServer::start`], with the server's state changed by `configure` (a kind added).
    pub async fn start_with(configure: impl FnOnce(ApiState) -> ApiState) -> TestServer {
        let dir = std::env::temp_dir().join(format!("kedge-api-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let store = EmbeddedStore::open(dir.join("store.db"), EmbeddedOptions::default())
            .await
            .expect("the embedded store opens");
        let store: SharedStore = Arc::new(store);
        let token = api::load_or_create_token(&dir).expect("a token");
        let state = configure(ApiState::new(store.clone(), "test-host", Some(token.clone())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(api::serve(state.clone(), ApiListener::Tcp(listener), async move {
            let _ = stopped.await;
        }));
        let unix_socket = dir.join("api.sock");
        let unix = tokio::net::UnixListener::bind(&unix_socket).expect("a unix socket");
        let (unix_shutdown, unix_stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(api::serve(state, ApiListener::Unix(unix), async move {
            let _ = unix_stopped.await;
        }));
        TestServer {
            url,
            token,
            store,
            dir,
            unix_socket,
            shutdown: Some(shutdown),
            unix_shutdown: Some(unix_shutdown),
        }
    }

    pub fn address(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// A request with the server's token.
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        http(self.address(), method, path, Some(&self.token), body.map(str::as_bytes)).await
    }

    /// Opens a watch route (`/api/v1/watch/...`) with the server's token; read it with
    /// [`ApiWatch::next_event`].
    pub async fn watch_route(&self, path: &str) -> ApiWatch {
        let stream = tokio::net::TcpStream::connect(self.address()).await.expect("the server accepts");
        let (read, mut write) = stream.into_split();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n", self.token);
        write.write_all(request.as_bytes()).await.expect("request written");
        ApiWatch { lines: tokio::io::BufReader::new(read).lines(), _write: write }
    }

    /// Runs `kedge ARGS` against this server with its token, from `cwd`.
    pub fn kedge(&self, args: &[&str]) -> Output {
        kedge_command(&self.dir)
            .env("KEDGE_SERVER", &self.url)
            .env("KEDGE_TOKEN", &self.token)
            .args(args)
            .output()
            .expect("kedge runs")
    }

    /// Starts `kedge ARGS` (a `-w` watch) against this server and reads its output line by line.
    pub fn watch(&self, args: &[&str]) -> LineWatch {
        let mut child = kedge_command(&self.dir)
            .env("KEDGE_SERVER", &self.url)
            .env("KEDGE_TOKEN", &self.token)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kedge runs");
        let (lines, received) = std::sync::mpsc::channel::<String>();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        LineWatch { child, received }
    }
}

/// An open watch route: its answer's lines as they come.
pub struct ApiWatch {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>>,
    /// Kept so that the connection stays open while the watch is read.
    _write: tokio::net::tcp::OwnedWriteHalf,
}

impl ApiWatch {
    /// The stream's next JSON line (chunk-size lines and headers are not JSON), within 20 seconds.
    pub async fn next_event(&mut self) -> serde_json::Value {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
                .await
                .expect("an event within 20s")
                .expect("the stream is readable")
                .expect("the stream stays open");
            if let Ok(event @ serde_json::Value::Object(_)) = serde_json::from_str::<serde_json::Value>(&line)
            {
                return event;
            }
        }
    }
}

/// A running `kedge ... -w`: its stdout's lines as they come; killed when dropped.
pub struct LineWatch {
    child: std::process::Child,
    received: std::sync::mpsc::Receiver<String>,
}

impl LineWatch {
    /// The next line that `matches`, skipping others; fails the test after 20 s without one.
    pub fn expect_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.received.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no line with {what} within 20s"),
            }
        }
    }
}

impl Drop for LineWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(shutdown) = self.unix_shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }
}

/// Waits until an agent's API answers `kedge version` at `server` (a `unix://` socket or a URL),
/// up to 30 s: the one wait every test that starts an agent needs before its first command.
pub async fn wait_api_on(server: &str) {
    kedge_tests::eventually("the agent's API answers on its socket", Duration::from_secs(30), || async {
        kedge_command(&std::env::temp_dir())
            .env("KEDGE_SERVER", server)
            .arg("version")
            .output()
            .expect("kedge runs")
            .status
            .success()
            .then_some(())
    })
    .await;
}

/// One request on a fresh TCP connection (`Connection: close`), read to the end.
pub async fn http(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(address).await.expect("the server accepts");
    exchange(stream, method, path, token, &[], body).await
}

/// [`http`] with headers of the caller's own (`Host`, replacing the default, or `Origin`), no token.
pub async fn http_with_headers(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(address).await.expect("the server accepts");
    exchange(stream, method, path, None, headers, body).await
}

/// The same over a Unix socket.
pub async fn http_unix(socket: &Path, method: &str, path: &str, body: Option<&[u8]>) -> Reply {
    let stream = tokio::net::UnixStream::connect(socket).await.expect("the socket accepts");
    exchange(stream, method, path, None, &[], body).await
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str("Host: test\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("request written");
    // A server may answer (413) before reading the whole body and close. The answer is read while
    // the body is still being written: read only after the write failed, it may be gone, the
    // connection reset by the close of a server that left the body unread.
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut raw = Vec::new();
    let write = async {
        let _ = writer.write_all(body).await;
    };
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = [0u8; 8192];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                // A reset after the whole answer arrived is the server closing on an unread body.
                Err(_) if raw.windows(4).any(|w| w == b"\r\n\r\n") => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    });
    let ((), read) = tokio::join!(write, read);
    read.expect("the server answers within 30s").expect("the answer is readable");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Reply { status, headers: head, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
    out
}

pub use kedge_tests::kedge_bin;

/// A `kedge` command isolated from the user's config, token file and colours.
pub fn kedge_command(dir: &Path) -> Command {
    isolated(Command::new(kedge_bin()), dir)
}

/// `program` (which runs `kedge`: a wrapper such as time(1)) isolated as [`kedge_command`] is.
pub fn isolated(mut command: Command, dir: &Path) -> Command {
    command
        .current_dir(dir)
        .env_remove("KEDGE_SERVER")
        .env_remove("KEDGE_TOKEN")
        .env_remove("KEDGE_CONTEXT")
        .env_remove("KEDGE_NAMESPACE")
        .env("KEDGE_CONFIG", dir.join("no-config.json"))
        .env("KEDGE_STATE_DIR", dir.join("no-state"))
        .env("NO_COLOR", "1");
    command
}

/// A unique namespace for one test, so tests can share nothing and run in parallel.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// A minimal valid spec as JSON.
pub fn spec_json(namespace: &str, name: &str, image: &str) -> String {
    serde_json::json!({
        "apiVersion": "kedge.io/v1",
        "kind": "Container",
        "metadata": { "name": name, "namespace": namespace, "labels": { "app": name } },
        "spec": { "image": image }
    })
    .to_string()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A `kedge agent` child process a test spawned: stopped with SIGTERM (killed after 5 s) when dropped,
/// also when the test fails, and its state directory removed.
pub struct AgentGuard {
    pub child: std::process::Child,
    pub state_dir: PathBuf,
    /// Whether the state directory outlives the agent (for a test that starts it again there).
    pub keep_state: bool,
}

impl AgentGuard {
    /// Starts `kedge agent` as host `host` on an embedded store in `state_dir` (created), against the
    /// test engine, its API on a port the kernel chooses (see [`AgentGuard::listening_address`]), with
    /// `args` added (they may override `--listen`). It logs JSON lines at info level to
    /// `state_dir/agent.log`.
    pub fn spawn(state_dir: &Path, host: &str, args: &[&str]) -> AgentGuard {
        let env = kedge_tests::TestEnv::get();
        std::fs::create_dir_all(state_dir).expect("create the agent's state directory");
        let log = std::fs::File::create(state_dir.join("agent.log")).expect("create the agent's log");
        let child = Command::new(kedge_bin())
            .args(["agent", "--state-dir", state_dir.to_str().expect("a UTF-8 path")])
            .args(["--host-name", host, "--log-json", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("DOCKER_HOST", &env.docker_host)
            .env_remove("KEDGE_STORE")
            .env("KEDGE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kedge agent starts");
        AgentGuard { child, state_dir: state_dir.to_owned(), keep_state: false }
    }

    /// Waits until the agent's API answers on its socket (`kedge version`), up to 30 s.
    pub async fn wait_api(&self) {
        wait_api_on(&self.socket_url()).await;
    }

    /// The `unix://` address of the agent's socket (file permissions, no token).
    pub fn socket_url(&self) -> String {
        format!("unix://{}", self.state_dir.join("kedge.sock").display())
    }

    /// Runs `kedge ARGS` against this agent's socket.
    pub fn kedge(&self, args: &[&str]) -> std::process::Output {
        kedge_command(&std::env::temp_dir())
            .env("KEDGE_SERVER", self.socket_url())
            .args(args)
            .output()
            .expect("kedge runs")
    }

    /// This agent, its state directory left in place when it stops, so that another agent can be
    /// started on the same store.
    pub fn keeping_state(mut self) -> AgentGuard {
        self.keep_state = true;
        self
    }

    /// The TCP address the agent's API listens on, read from its log once it says so (no port is
    /// chosen before the agent binds it, so no other process can take it in between).
    pub async fn listening_address(&mut self) -> String {
        let log = self.state_dir.join("agent.log");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let address = text.lines().find_map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).ok()?;
                let fields = line.get("fields")?;
                let message = fields.get("message")?.as_str()?;
                message
                    .starts_with("API listening")
                    .then(|| fields.get("address")?.as_str().map(str::to_owned))?
            });
            if let Some(address) = address {
                return address;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("kedge agent exited ({status}) before listening:\n{text}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "kedge agent did not say where it listens in 30 s:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep_state {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}

/// One test's specs on a real agent, driven through the CLI on the agent's socket: each spec in the
/// test's namespace, labelled with its run and placed on the agent's host.
pub struct SpecsOnAgent {
    pub run: String,
    pub host: String,
    pub namespace: String,
    pub socket: String,
    pub state_dir: PathBuf,
}

impl SpecsOnAgent {
    /// For `agent`, started as `host` in `state_dir`, with namespace `ns-RUN`.
    pub fn new(run: &str, host: &str, state_dir: &Path) -> SpecsOnAgent {
        SpecsOnAgent {
            run: run.to_owned(),
            host: host.to_owned(),
            namespace: format!("ns-{run}"),
            socket: format!("unix://{}", state_dir.join("kedge.sock").display()),
            state_dir: state_dir.to_owned(),
        }
    }

    pub fn kedge(&self, args: &[&str]) -> Output {
        kedge_command(&std::env::temp_dir())
            .env("KEDGE_SERVER", &self.socket)
            .args(args)
            .output()
            .expect("kedge runs")
    }

    /// Waits until the agent's API answers on its socket.
    pub async fn wait_api(&self) {
        wait_api_on(&self.socket).await;
    }

    /// Applies Container `name` with `spec` (YAML lines indented under `spec:`) added.
    pub fn apply(&self, name: &str, spec: &str) {
        let dir = self.state_dir.join(format!("specs-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("spec.yaml");
        std::fs::write(
            &file,
            format!(
                "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
                 spec:\n  labels:\n    {label}: {run}\n  placement:\n    host: {host}\n{spec}",
                label = kedge_tests::TEST_LABEL,
                ns = self.namespace,
                run = self.run,
                host = self.host,
            ),
        )
        .unwrap();
        let applied = self.kedge(&["apply", "-f", file.to_str().unwrap()]);
        assert!(applied.status.success(), "apply {name}: {}", stderr(&applied));
    }

    /// `kedge get container NAME -o json` (`Null` when it cannot be read).
    pub fn get(&self, name: &str) -> serde_json::Value {
        let out = self.kedge(&["get", "container", name, "-n", &self.namespace, "-o", "json"]);
        serde_json::from_str(&stdout(&out)).unwrap_or(serde_json::Value::Null)
    }

    /// The status, reason and message of condition `kind` of container `name`.
    pub fn condition(&self, name: &str, kind: &str) -> Option<(String, String, String)> {
        let object = self.get(name);
        let conditions = object["status"]["conditions"].as_array()?.clone();
        let found = conditions.into_iter().find(|c| c["type"] == kind)?;
        Some((
            found["status"].as_str()?.to_owned(),
            found["reason"].as_str()?.to_owned(),
            found["message"].as_str().unwrap_or_default().to_owned(),
        ))
    }
}
