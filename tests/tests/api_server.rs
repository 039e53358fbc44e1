//! The HTTP API against an embedded store: authentication, validation, limits, optimistic concurrency,
//! label selectors, status merging and the watch stream. No Docker needed.

use crate::api_support;

use api_support::{http, http_unix, spec_json, unique, TestServer};
use kedge_controller::store::objects;
use kedge_controller::store::PutCondition;
use kedge_crds::{Condition, ConditionStatus, ContainerStatus};

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/version"),
    ("GET", "/api/v1/containers"),
    ("GET", "/api/v1/namespaces/default/containers"),
    ("POST", "/api/v1/namespaces/default/containers"),
    ("GET", "/api/v1/namespaces/default/containers/web"),
    ("PUT", "/api/v1/namespaces/default/containers/web"),
    ("DELETE", "/api/v1/namespaces/default/containers/web"),
    ("GET", "/api/v1/namespaces/default/containers/web/status"),
    ("POST", "/api/v1/namespaces/default/containers/web/recreate"),
    ("GET", "/api/v1/watch/containers"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/watch/events"),
    ("GET", "/api/v1/hosts"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_every_call_but_health_is_refused() {
    let server = TestServer::start().await;
    let body = spec_json("default", "web", "nginx:1.27");
    for (method, path) in ROUTES {
        for token in [None, Some("wrong"), Some("")] {
            let reply = http(server.address(), method, path, token, Some(body.as_bytes())).await;
            assert_eq!(reply.status, 401, "{method} {path} with token {token:?}: {reply:?}");
            assert!(reply.json()["error"].as_str().unwrap().to_lowercase().contains("token"), "{reply:?}");
        }
    }
    let health = http(server.address(), "GET", "/healthz", None, None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    // Nothing was written by the refused calls.
    let list = server.call("GET", "/api/v1/containers", None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["items"].as_array().unwrap().len(), 0);
    // The Unix socket is authenticated by its file permissions instead.
    let reply = http_unix(&server.unix_socket, "GET", "/api/v1/containers", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_invalid_or_oversized_bodies_get_a_4xx_and_change_nothing() {
    let server = TestServer::start().await;
    let ns = unique("bad");
    let path = format!("/api/v1/namespaces/{ns}/containers");
    let before = server.store.list("/kedge/v1/").await.unwrap().revision;
    let huge = format!(
        r#"{{"apiVersion":"kedge.io/v1","kind":"Container","metadata":{{"name":"big"}},"spec":{{"image":"x","command":["{}"]}}}}"#,
        "a".repeat(2 << 20)
    );
    let cases: Vec<(String, u16, &str)> = vec![
        ("{not json".to_owned(), 400, "not valid JSON"),
        ("[1,2]".to_owned(), 400, "JSON object"),
        ("".to_owned(), 400, "not valid JSON"),
        (r#"{"apiVersion":"kedge.io/v1","kind":"Container","metadata":{"name":"web"},"spec":{"image":"nginx","portz":[]}}"#.to_owned(), 422, "portz"),
        (r#"{"apiVersion":"kedge.io/v1","kind":"Container","metadata":{"name":"web"},"spec":{"image":"nginx","ports":["99999:80"]}}"#.to_owned(), 422, "spec.ports[0]"),
        (r#"{"apiVersion":"kedge.io/v1","kind":"Container","metadata":{"name":"Not_A_Label"},"spec":{"image":"nginx"}}"#.to_owned(), 422, "metadata.name"),
        (r#"{"apiVersion":"kedge.io/v2","kind":"Container","metadata":{"name":"web"},"spec":{"image":"nginx"}}"#.to_owned(), 422, "apiVersion"),
        (spec_json("other-namespace", "web", "nginx"), 422, "metadata.namespace"),
        (huge, 413, "larger than"),
    ];
    for (body, status, needle) in &cases {
        let reply = server.call("POST", &path, Some(body)).await;
        assert_eq!(reply.status, *status, "{}: {reply:?}", &body[..body.len().min(120)]);
        let error = reply.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(needle), "{error:?} should mention {needle:?}");
    }
    // A PUT whose body names another container than the URL is refused too.
    let reply = server.call("PUT", &format!("{path}/web"), Some(&spec_json(&ns, "db", "nginx"))).await;
    assert_eq!(reply.status, 422, "{reply:?}");
    assert!(reply.json()["details"][0]["field"] == "metadata.name");
    // Bad query strings and selectors are 400s.
    let reply = server.call("GET", &format!("{path}?labelSelector=app%20in%20(a"), None).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let reply = server.call("DELETE", &format!("{path}/web?resourceVersion=abc"), None).await;
    assert!(reply.status == 400 || reply.status == 404, "{reply:?}");
    let reply = server.call("GET", "/api/v1/nope", None).await;
    assert_eq!(reply.status, 404);
    assert!(reply.json()["error"].is_string());
    assert_eq!(
        server.store.list("/kedge/v1/").await.unwrap().revision,
        before,
        "a refused request wrote something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_replace_delete_with_optimistic_concurrency() {
    let server = TestServer::start().await;
    let ns = unique("crud");
    let base = format!("/api/v1/namespaces/{ns}/containers");
    let created = server.call("POST", &base, Some(&spec_json(&ns, "web", "nginx:1.27"))).await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.header("x-kedge-outcome").as_deref(), Some("created"));
    let object = created.json();
    assert_eq!(object["metadata"]["generation"], 1);
    let first_version = object["metadata"]["resourceVersion"].as_str().unwrap().to_owned();

    let again = server.call("POST", &base, Some(&spec_json(&ns, "web", "nginx:1.27"))).await;
    assert_eq!(again.status, 409, "{again:?}");
    assert!(again.json()["error"].as_str().unwrap().contains("already exists"));

    // A replace based on the current version wins; the spec changed, so the generation moves.
    let mut update = object.clone();
    update["spec"]["image"] = "nginx:1.28".into();
    let replaced = server.call("PUT", &format!("{base}/web"), Some(&update.to_string())).await;
    assert_eq!(replaced.status, 200, "{replaced:?}");
    assert_eq!(replaced.header("x-kedge-outcome").as_deref(), Some("configured"));
    assert_eq!(replaced.json()["metadata"]["generation"], 2);
    let second_version = replaced.json()["metadata"]["resourceVersion"].as_str().unwrap().to_owned();

    // A replace based on the stale version is a 409 naming both versions, and changes nothing.
    let mut stale = object.clone();
    stale["spec"]["image"] = "nginx:1.29".into();
    let conflict = server.call("PUT", &format!("{base}/web"), Some(&stale.to_string())).await;
    assert_eq!(conflict.status, 409, "{conflict:?}");
    let error = conflict.json();
    assert_eq!(error["yourResourceVersion"], first_version.as_str());
    assert_eq!(error["currentResourceVersion"], second_version.as_str());
    let live = server.call("GET", &format!("{base}/web"), None).await.json();
    assert_eq!(live["spec"]["image"], "nginx:1.28");

    // The same object again is unchanged and writes nothing.
    let same = server.call("PUT", &format!("{base}/web"), Some(&replaced.json().to_string())).await;
    assert_eq!(same.header("x-kedge-outcome").as_deref(), Some("unchanged"));
    assert_eq!(same.json()["metadata"]["resourceVersion"], second_version.as_str());

    // Dry runs validate and answer without writing.
    let mut dry = live.clone();
    dry["spec"]["image"] = "nginx:9".into();
    dry["metadata"]["resourceVersion"] = serde_json::Value::Null;
    let answer = server.call("PUT", &format!("{base}/web?dryRun=All"), Some(&dry.to_string())).await;
    assert_eq!((answer.status, answer.header("x-kedge-outcome").as_deref()), (200, Some("configured")));
    assert_eq!(server.call("GET", &format!("{base}/web"), None).await.json()["spec"]["image"], "nginx:1.28");

    // Delete with a stale version is a conflict; with the current one it deletes.
    let stale_delete =
        server.call("DELETE", &format!("{base}/web?resourceVersion={first_version}"), None).await;
    assert_eq!(stale_delete.status, 409, "{stale_delete:?}");
    let deleted = server.call("DELETE", &format!("{base}/web?resourceVersion={second_version}"), None).await;
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(server.call("GET", &format!("{base}/web"), None).await.status, 404);
    assert_eq!(server.call("DELETE", &format!("{base}/web"), None).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_filter_by_label_and_merge_status() {
    let server = TestServer::start().await;
    let ns = unique("list");
    let base = format!("/api/v1/namespaces/{ns}/containers");
    for (name, tier) in [("a", "front"), ("b", "back"), ("c", "front")] {
        let mut spec: serde_json::Value = serde_json::from_str(&spec_json(&ns, name, "busybox")).unwrap();
        spec["metadata"]["labels"]["tier"] = tier.into();
        assert_eq!(server.call("POST", &base, Some(&spec.to_string())).await.status, 201);
    }
    let names = |reply: &api_support::Reply| -> Vec<String> {
        reply.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let check = |selector: &'static str, expected: &'static [&'static str]| {
        let server = &server;
        let base = base.clone();
        async move {
            let reply = server.call("GET", &format!("{base}?labelSelector={selector}"), None).await;
            assert_eq!(reply.status, 200, "{selector}: {reply:?}");
            assert_eq!(names(&reply), expected, "{selector}");
        }
    };
    check("tier%3Dfront", &["a", "c"]).await;
    check("tier%21%3Dfront", &["b"]).await;
    check("tier%20in%20(back%2Cother)", &["b"]).await;
    check("%21tier", &[]).await;
    check("", &["a", "b", "c"]).await;
    // All namespaces sees them too.
    let all = server.call("GET", "/api/v1/containers?labelSelector=tier%3Dback", None).await;
    assert!(names(&all).contains(&"b".to_owned()));

    // A status written by an agent is merged into reads, and served on its own.
    let status = ContainerStatus {
        observed_generation: Some(1),
        host: Some("h1".into()),
        restart_count: 2,
        conditions: vec![Condition {
            kind: "Ready".into(),
            status: ConditionStatus::True,
            reason: "Running".into(),
            message: String::new(),
            last_transition_time: "2026-11-21T10:00:00Z".into(),
            observed_generation: Some(1),
        }],
        ..ContainerStatus::default()
    };
    objects::put_status(server.store.as_ref(), &ns, "a", &status, PutCondition::Always).await.unwrap();
    let one = server.call("GET", &format!("{base}/a"), None).await.json();
    assert_eq!(one["status"]["host"], "h1");
    assert_eq!(one["status"]["restartCount"], 2);
    let listed = server.call("GET", &base, None).await.json();
    assert_eq!(listed["items"][0]["status"]["conditions"][0]["type"], "Ready");
    let own = server.call("GET", &format!("{base}/a/status"), None).await;
    assert_eq!((own.status, own.json()["host"].as_str()), (200, Some("h1")));
    assert_eq!(server.call("GET", &format!("{base}/b/status"), None).await.status, 404);
    let version = server.call("GET", "/version", None).await.json();
    assert_eq!(version["host"], "test-host");
    let recreate = server.call("POST", &format!("{base}/a/recreate"), None).await;
    assert_eq!(recreate.status, 501, "{recreate:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_streams_changes_made_by_another_client() {
    let server = TestServer::start().await;
    let ns = unique("watch");
    let base = format!("/api/v1/namespaces/{ns}/containers");
    assert_eq!(server.call("POST", &base, Some(&spec_json(&ns, "web", "nginx:1"))).await.status, 201);

    let mut lines = server.watch_route(&format!("/api/v1/watch/containers?namespace={ns}")).await;
    let first = lines.next_event().await;
    assert_eq!(
        (first["type"].as_str(), first["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("web"))
    );

    // Another client changes the spec, adds one and deletes one.
    let mut changed: serde_json::Value = serde_json::from_str(&spec_json(&ns, "web", "nginx:2")).unwrap();
    changed["metadata"]["resourceVersion"] = serde_json::Value::Null;
    assert_eq!(server.call("PUT", &format!("{base}/web"), Some(&changed.to_string())).await.status, 200);
    let modified = lines.next_event().await;
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["spec"]["image"], "nginx:2");
    assert_eq!(modified["object"]["metadata"]["generation"], 2);

    assert_eq!(server.call("POST", &base, Some(&spec_json(&ns, "db", "postgres"))).await.status, 201);
    let added = lines.next_event().await;
    assert_eq!(
        (added["type"].as_str(), added["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("db"))
    );

    // Another namespace's changes are not in this watch.
    let other = unique("other");
    let other_base = format!("/api/v1/namespaces/{other}/containers");
    assert_eq!(server.call("POST", &other_base, Some(&spec_json(&other, "x", "busybox"))).await.status, 201);

    assert_eq!(server.call("DELETE", &format!("{base}/db"), None).await.status, 200);
    let deleted = lines.next_event().await;
    assert_eq!(
        (deleted["type"].as_str(), deleted["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("db"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_an_old_version_replays_what_happened_since() {
    let server = TestServer::start().await;
    let ns = unique("replay");
    let base = format!("/api/v1/namespaces/{ns}/containers");
    assert_eq!(server.call("POST", &base, Some(&spec_json(&ns, "old", "busybox"))).await.status, 201);
    let listed = server.call("GET", &base, None).await.json();
    let since = listed["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    assert_eq!(server.call("DELETE", &format!("{base}/old"), None).await.status, 200);
    assert_eq!(server.call("POST", &base, Some(&spec_json(&ns, "new", "busybox"))).await.status, 201);

    let mut lines =
        server.watch_route(&format!("/api/v1/watch/containers?namespace={ns}&resourceVersion={since}")).await;
    let deleted = lines.next_event().await;
    assert_eq!(
        (deleted["type"].as_str(), deleted["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("old"))
    );
    let added = lines.next_event().await;
    assert_eq!(
        (added["type"].as_str(), added["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("new"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_and_the_cli_trusts_the_given_ca() {
    use kedge_controller::api::{self, ApiListener, ApiState, TlsConfig};
    let server = TestServer::start().await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_support/tls");
    assert!(TlsConfig::from_pem(b"not a certificate", b"not a key").is_err());
    let tls = TlsConfig::from_pem_files(&fixtures.join("server.pem"), &fixtures.join("server.key")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let state = ApiState::new(server.store.clone(), "tls-host", Some(server.token.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(api::serve(state, ApiListener::Tls(listener, tls), async move {
        let _ = stopped.await;
    }));
    let ca = fixtures.join("ca.pem");
    let run = |token: Option<&str>, ca: Option<&std::path::Path>| {
        let mut command = api_support::kedge_command(&server.dir);
        command.env("KEDGE_SERVER", &url).arg("version");
        if let Some(token) = token {
            command.env("KEDGE_TOKEN", token);
        }
        if let Some(ca) = ca {
            command.arg("--certificate-authority").arg(ca);
        }
        command.output().unwrap()
    };
    let trusted = run(Some(&server.token), Some(&ca));
    assert_eq!(trusted.status.code(), Some(0), "{}", api_support::stderr(&trusted));
    assert!(api_support::stdout(&trusted).contains("on host tls-host"));
    let untrusted = run(Some(&server.token), None);
    assert_eq!(untrusted.status.code(), Some(5), "an unknown CA is refused");
    let no_token = run(None, Some(&ca));
    assert_eq!(no_token.status.code(), Some(5), "TLS does not replace the token");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), serving)
        .await
        .expect("serve returns after shutdown")
        .unwrap()
        .unwrap();
}
