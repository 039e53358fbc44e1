//! The web dashboard end to end (docs/dashboard.md): a real agent on an embedded store running real
//! containers, its API with a token, `kedge dashboard --no-browser --port 0` in front of it, and a
//! real headless Chromium driven through chromedriver (WebDriver, fantoccini).
//!
//! The page lists what the API lists (containers, the host and its agent version); a container
//! killed with `docker kill` shows up repaired without a reload; an admin's "Upgrade agents" button
//! creates a campaign (checked through the API, then cancelled); a viewer signing in on the agent's
//! own `/ui/` gets no button and the API refuses it the campaign; a label shaped like markup stays
//! text. The proxy's guards (Host, Origin) are checked with raw requests.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use kedge_controller::api::{self, ApiListener, ApiState};
use kedge_controller::store::{objects, EmbeddedOptions, EmbeddedStore, SharedStore};
use kedge_tests::{docker_cli, eventually, test_spec, wait_ready, InProcessAgent, TestScope};
use serde_json::{json, Value};

use crate::api_support::{http, http_with_headers, kedge_command};

const DEADLINE: Duration = Duration::from_secs(30);
/// A label value a careless page would turn into markup that runs script.
const XSS: &str = "<img src=x onerror=\"window.__kedgeXss=1\">";

/// A child process killed with its whole process group (chromedriver and the Chromium it started,
/// whose helpers stay in the group) when dropped, also when the test fails.
struct Group(Child);

impl Group {
    fn spawn(command: &mut Command) -> Group {
        use std::os::unix::process::CommandExt;
        Group(command.process_group(0).spawn().unwrap_or_else(|e| panic!("cannot start {command:?}: {e}")))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// chromedriver on a free port, and a headless Chromium session with its own profile directory.
async fn browser(profile: &std::path::Path) -> (Group, Client) {
    let port = free_port();
    let driver = Group::spawn(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    let client = eventually("chromedriver to start a session", DEADLINE, || {
        let capabilities = capabilities.clone();
        let url = url.clone();
        async move {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            ClientBuilder::new(connector).capabilities(capabilities).connect(&url).await.ok()
        }
    })
    .await;
    (driver, client)
}

/// Runs `script` in the page and answers its value.
async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script {script}: {e}"))
}

/// Polls `script` in the page until it answers something other than `null`/`false`.
async fn page_until(client: &Client, what: &str, script: &str) -> Value {
    eventually(what, DEADLINE, || async {
        let value = js(client, script).await;
        (!value.is_null() && value != json!(false)).then_some(value)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_the_api_updates_live_and_upgrades_only_for_admins() {
    let TestScope { id, cleanup, namespace } = TestScope::new();
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(
        EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.expect("store"),
    );
    let agent = InProcessAgent::start(store.clone(), &format!("host-{id}"), None).await;
    let token = api::load_or_create_token(dir.path()).expect("a token");
    let docker = kedge_controller::docker::DockerClient::connect().await.expect("the test engine");
    let state = ApiState::new(store.clone(), agent.host.clone(), Some(token.clone())).with_docker(docker);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_address = listener.local_addr().unwrap().to_string();
    let stop_api = tokio_util::sync::CancellationToken::new();
    let stopped = stop_api.clone();
    tokio::spawn(api::serve(state, ApiListener::Tcp(listener), async move { stopped.cancelled().await }));
    let _stop_api = stop_api.drop_guard();

    let killed = format!("dash-{id}");
    let marked = format!("xss-{id}");
    for (name, labels) in [(&killed, json!({"app": "web"})), (&marked, json!({"note": XSS}))] {
        let mut spec =
            test_spec(name, &namespace, &agent.host, &cleanup, json!({"image": "kedge-test/app:v1"}));
        spec.metadata.labels = serde_json::from_value(labels).unwrap();
        objects::apply_container(store.as_ref(), &spec, None).await.expect("apply");
    }
    for name in [&killed, &marked] {
        wait_ready(store.as_ref(), &namespace, name, Duration::from_secs(60)).await;
    }
    let api_get = |path: String| {
        let (address, token) = (api_address.clone(), token.clone());
        async move { http(&address, "GET", &path, Some(&token), None).await }
    };

    // `kedge dashboard` with the CLI's credentials in its environment, never in the browser.
    let mut dashboard = Group::spawn(
        kedge_command(dir.path())
            .env("KEDGE_SERVER", format!("http://{api_address}"))
            .env("KEDGE_TOKEN", &token)
            .args(["dashboard", "--no-browser", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let stdout = dashboard.0.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let first = received.recv_timeout(DEADLINE).expect("kedge dashboard prints its address");
    let url = first.strip_prefix("Dashboard at ").unwrap_or_else(|| panic!("first line: {first}")).to_owned();
    let proxy = url.trim_start_matches("http://").trim_end_matches("/ui/").to_owned();
    assert!(proxy.starts_with("127.0.0.1:") && !proxy.ends_with(":0"), "{url}");

    // The proxy's guards: a foreign Host (DNS rebinding) and a foreign or missing Origin on a write
    // (CSRF) are refused before anything is forwarded; its own host reads with the CLI's token.
    let port = proxy.rsplit(':').next().unwrap();
    let own_host = [("Host", proxy.as_str())];
    let page = http_with_headers(&proxy, "GET", "/ui/", &own_host, None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-security-policy").unwrap().split(';').next(), Some("default-src 'self'"));
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    let whoami = http_with_headers(&proxy, "GET", "/api/v1/whoami", &own_host, None).await;
    assert_eq!((whoami.status, whoami.json()["role"].clone()), (200, json!("admin")));
    let rebinding = format!("rebind.example:{port}");
    let refused = http_with_headers(&proxy, "GET", "/api/v1/whoami", &[("Host", &rebinding)], None).await;
    assert_eq!(refused.status, 403, "{:?}", String::from_utf8_lossy(&refused.body));
    let campaign = br#"{"version":"9.9.9"}"#.as_slice();
    for origin in [Some("http://evil.example"), None] {
        let mut headers = vec![("Host", proxy.as_str())];
        headers.extend(origin.map(|origin| ("Origin", origin)));
        let refused = http_with_headers(&proxy, "POST", "/api/v1/upgrades", &headers, Some(campaign)).await;
        assert_eq!(refused.status, 403, "origin {origin:?}: {}", String::from_utf8_lossy(&refused.body));
    }
    assert_eq!(api_get("/api/v1/upgrades".into()).await.json()["items"], json!([]), "nothing forwarded");

    let profile = tempfile::tempdir().unwrap();
    let (_driver, client) = browser(profile.path()).await;

    // Containers: every one the API lists, with its restarts; the markup-shaped label stays text.
    client.goto(&format!("{url}#/containers")).await.expect("open the dashboard");
    let listed = api_get(format!("/api/v1/namespaces/{namespace}/containers")).await.json();
    let names: Vec<String> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    for name in &names {
        page_until(
            &client,
            &format!("the row of {name}"),
            &format!("return document.querySelector('tr[data-container=\"{namespace}/{name}\"]') !== null"),
        )
        .await;
    }
    let rows = js(&client, "return document.querySelectorAll('tr[data-container]').length").await;
    assert_eq!(rows, json!(names.len()), "the page lists exactly what the API lists");
    let label = js(
        &client,
        &format!("return document.querySelector('tr[data-container=\"{namespace}/{marked}\"] td.labels').textContent"),
    )
    .await;
    assert_eq!(label, json!(format!("note={XSS}")), "the label is shown as its text");
    assert_eq!(js(&client, "return document.querySelectorAll('main img').length").await, json!(0));
    assert_eq!(js(&client, "return window.__kedgeXss === undefined").await, json!(true));

    // A killed container is repaired, and the page shows it without a reload.
    js(&client, "window.__kedgeMarker = 42; return null").await;
    let restarts = format!(
        "return Number(document.querySelector('tr[data-container=\"{namespace}/{killed}\"] td.restarts').textContent)"
    );
    let before = js(&client, &restarts).await.as_u64().unwrap();
    let kill = docker_cli(&["kill", &killed]);
    assert!(kill.status.success(), "docker kill: {}", String::from_utf8_lossy(&kill.stderr));
    page_until(&client, "the page to show the repair", &format!("{restarts} > {before}")).await;
    assert_eq!(js(&client, "return window.__kedgeMarker").await, json!(42), "no reload");
    let status = api_get(format!("/api/v1/namespaces/{namespace}/containers/{killed}")).await.json();
    assert!(status["status"]["restartCount"].as_u64().unwrap() > before, "{status}");

    // Hosts: this agent, Ready, with the version it reports.
    client.goto(&format!("{url}#/hosts")).await.unwrap();
    let hosts = api_get("/api/v1/hosts".into()).await.json();
    let version = hosts["items"][0]["version"].as_str().expect("the host's agent version").to_owned();
    let host_row = format!("tr[data-host=\"{}\"]", agent.host);
    let shown = page_until(
        &client,
        "the host row",
        &format!("const r = document.querySelector('{host_row}'); return r && [r.querySelector('.version').textContent, r.querySelector('.ready').textContent]"),
    )
    .await;
    assert_eq!(shown, json!([version, "Ready"]));

    // The admin's upgrade button creates a campaign through the API.
    page_until(&client, "the upgrade button", "return document.getElementById('upgrade-agents') !== null")
        .await;
    let input = client.find(Locator::Id("upgrade-version")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys("9.9.9").await.unwrap();
    client.find(Locator::Id("upgrade-agents")).await.unwrap().click().await.unwrap();
    eventually("the confirmation dialog", DEADLINE, || async { client.accept_alert().await.ok() }).await;
    let created = eventually("a campaign through the API", DEADLINE, || async {
        let campaigns = api_get("/api/v1/upgrades".into()).await.json();
        campaigns["items"].as_array().and_then(|items| items.first().cloned())
    })
    .await;
    assert_eq!(created["version"], "9.9.9", "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    page_until(
        &client,
        "the campaign's progress",
        &format!("return document.querySelector('#campaign[data-campaign=\"{id}\"]') !== null"),
    )
    .await;
    let host_state = js(
        &client,
        &format!(
            "return document.querySelector('tr[data-campaign-host=\"{}\"] .state').textContent",
            agent.host
        ),
    )
    .await;
    assert!(host_state.as_str().is_some_and(|s| !s.is_empty()), "{host_state}");
    let cancel =
        http(&api_address, "POST", &format!("/api/v1/upgrades/{id}/cancel"), Some(&token), None).await;
    assert!(
        matches!(cancel.status, 202 | 409),
        "cancel: {} {}",
        cancel.status,
        String::from_utf8_lossy(&cancel.body)
    );

    // A viewer on the agent's own page: asked for a token, kept for the tab only; no upgrade button,
    // and the API refuses it the campaign.
    let viewer =
        http(&api_address, "POST", "/api/v1/tokens", Some(&token), Some(br#"{"role":"viewer"}"#)).await;
    assert_eq!(viewer.status, 201, "{}", String::from_utf8_lossy(&viewer.body));
    let viewer = viewer.json()["bearer"].as_str().unwrap().to_owned();
    client.goto(&format!("http://{api_address}/ui/#/hosts")).await.unwrap();
    page_until(&client, "the token form", "return !document.getElementById('token-form').hidden").await;
    client.find(Locator::Id("token-input")).await.unwrap().send_keys(&viewer).await.unwrap();
    client.find(Locator::Css("#token-form button")).await.unwrap().click().await.unwrap();
    page_until(
        &client,
        "the viewer's hosts",
        &format!("return document.querySelector('{host_row}') !== null"),
    )
    .await;
    assert_eq!(js(&client, "return document.body.getAttribute('data-role')").await, json!("viewer"));
    assert_eq!(js(&client, "return document.getElementById('upgrade-agents')").await, Value::Null);
    assert_eq!(
        js(&client, "return localStorage.length").await,
        json!(0),
        "the token is not kept beyond the tab"
    );
    let refused = http(&api_address, "POST", "/api/v1/upgrades", Some(&viewer), Some(campaign)).await;
    assert_eq!(refused.status, 403, "{}", String::from_utf8_lossy(&refused.body));

    client.close().await.ok();
}
