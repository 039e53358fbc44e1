//! A Secret's value never leaves the API: every route of the generic set (create, apply, both dry
//! runs, read, list, watch, delete) answers `<redacted>` with a fingerprint, while the store keeps
//! the value for the agent. Tries to break the promise, not only the happy path: a redacted value
//! read back and applied again is refused, and a bad body's error does not quote the value.

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{router, ApiState};
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::store::SharedStore;

const VALUE: &str = "s3cr3t-value-7f1e";

async fn call(app: &axum::Router, method: &str, uri: &str, body: Option<Value>) -> (u16, String) {
    let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn secret(value: &str) -> Value {
    json!({
        "apiVersion": "kedge.io/v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "default"},
        "data": {"password": value, "user": "app"}
    })
}

#[tokio::test]
async fn no_route_answers_a_value_and_the_store_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap();
    let store: SharedStore = std::sync::Arc::new(store);
    let app = router(ApiState::new(store.clone(), "test-host", None), false, Default::default());
    let path = "/api/v1/namespaces/default/secrets/db";

    let mut answers = Vec::new();
    answers.push(call(&app, "PUT", &format!("{path}?dryRun=All"), Some(secret(VALUE))).await);
    answers.push(call(&app, "POST", "/api/v1/namespaces/default/secrets", Some(secret(VALUE))).await);
    assert_eq!(answers[1].0, 201, "{}", answers[1].1);
    answers.push(call(&app, "PUT", path, Some(secret(VALUE))).await);
    answers.push(call(&app, "GET", path, None).await);
    answers.push(call(&app, "GET", "/api/v1/secrets", None).await);
    answers.push(call(&app, "GET", "/api/v1/namespaces/default/secrets", None).await);
    for (status, body) in &answers {
        assert!(*status < 300, "{status}: {body}");
        assert!(!body.contains(VALUE), "a value in an answer: {body}");
        assert!(body.contains("<redacted> fingerprint:"), "{body}");
    }
    let read: Value = serde_json::from_str(&answers[3].1).unwrap();
    let before = read["data"]["password"].clone();

    // The watch's replay shows the redacted object too.
    let request = Request::builder().uri("/api/v1/watch/secrets").body(Body::empty()).unwrap();
    let mut body = app.clone().oneshot(request).await.unwrap().into_body();
    let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame()).await.unwrap();
    let line = String::from_utf8_lossy(&frame.unwrap().unwrap().into_data().unwrap()).into_owned();
    assert!(line.contains("ADDED") && line.contains("<redacted>") && !line.contains(VALUE), "{line}");
    drop(body);

    // The store holds the value itself: the agent needs it.
    let key = crate::store::keys::object_key::<kedge_crds::Secret>("default", "db").unwrap();
    let stored = String::from_utf8(store.get(&key).await.unwrap().unwrap().value).unwrap();
    assert!(stored.contains(VALUE));

    // A new value shows a new fingerprint, and the untouched key keeps its own.
    let (_, changed) = call(&app, "PUT", path, Some(secret("another-value"))).await;
    let changed: Value = serde_json::from_str(&changed).unwrap();
    assert_ne!(changed["data"]["password"], before);
    assert_eq!(changed["data"]["user"], read["data"]["user"]);

    // What `get -o yaml` printed, applied again, is refused rather than stored as the value.
    let (status, answer) = call(&app, "PUT", path, Some(read.clone())).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("data.password") && answer.contains("real value"), "{answer}");

    // A number where a string belongs is named by key, not quoted.
    let mut numeric = secret(VALUE);
    numeric["data"]["pin"] = json!(918273);
    let (status, answer) = call(&app, "PUT", path, Some(numeric)).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("data.pin") && !answer.contains("918273"), "{answer}");

    let (status, deleted) = call(&app, "DELETE", path, None).await;
    assert_eq!(status, 200, "{deleted}");
    assert!(!deleted.contains("another-value") && deleted.contains("<redacted>"), "{deleted}");
}
