//! Property tests over the router: hundreds of generated requests (odd paths, query values at and past
//! every integer's edge, spec bodies with a field replaced by anything JSON can hold, upgrade requests
//! with absurd timeouts). None may panic, and each answer is a success or the caller's error (4xx), or
//! 501 for the routes that need an engine this test does not give.

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{router, ApiState};
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};

/// One generated request.
#[derive(Debug, Clone)]
struct Generated {
    method: &'static str,
    uri: String,
    body: Vec<u8>,
}

/// Numbers as text, crowded at the edges where arithmetic breaks.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("9223372036854775807".to_owned()),
        Just("9223372036854775806".to_owned()),
        Just("18446744073709551615".to_owned()),
        Just("-9223372036854775808".to_owned()),
        Just("9007199254740992".to_owned()),
        Just("9007199254740993".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("1e400".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9a-zA-Z.+-]{0,24}",
    ]
}

/// Any JSON value, numbers at the edges included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[0-9]{1,25}(ns|ms|s|m|h|Ki|Mi|Gi|Pi|m)?".prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Where a spec body is disturbed: the numeric and quantity fields above all.
const SPEC_FIELDS: &[&str] = &[
    "/spec/replicas",
    "/spec/stopGracePeriod",
    "/spec/resources/memory",
    "/spec/resources/memorySwap",
    "/spec/resources/memoryReservation",
    "/spec/resources/cpus",
    "/spec/resources/cpuShares",
    "/spec/resources/cpuPeriod",
    "/spec/resources/cpuQuota",
    "/spec/resources/pidsLimit",
    "/spec/resources/blkioWeight",
    "/spec/healthcheck/interval",
    "/spec/healthcheck/timeout",
    "/spec/healthcheck/retries",
    "/spec/healthcheck/startPeriod",
    "/spec/restartPolicy",
    "/spec/ports",
    "/spec/updateStrategy/healthTimeout",
    "/spec/updatePolicy/interval",
    "/spec/minReadySeconds",
    "/spec/rollingUpdate/batchSize",
    "/spec/rollingUpdate/healthTimeout",
    "/spec/placement/maxPerHost",
    "/metadata/resourceVersion",
    "/metadata/generation",
    "/metadata/name",
    "/metadata/labels",
    "/spec",
    "",
];

fn container_body() -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(SPEC_FIELDS), json_value(), any::<bool>()).prop_map(|(field, value, set)| {
        let mut body = json!({
            "apiVersion": "kedge.io/v1",
            "kind": if set { "ContainerSet" } else { "Container" },
            "metadata": { "name": "web" },
            "spec": { "image": "nginx:1.27", "healthcheck": { "test": ["CMD", "true"] } },
        });
        if set {
            body["spec"] = json!({ "replicas": 2, "template": { "spec": { "image": "nginx:1.27" } } });
        }
        if field.is_empty() {
            body = value;
        } else if let Some((parent, leaf)) = field.rsplit_once('/') {
            let parent = if parent.is_empty() { Some(&mut body) } else { body.pointer_mut(parent) };
            if let Some(Value::Object(object)) = parent {
                object.insert(leaf.to_owned(), value);
            }
        }
        serde_json::to_vec(&body).unwrap_or_default()
    })
}

fn upgrade_body() -> impl Strategy<Value = Vec<u8>> {
    (number_text(), "[a-z0-9.]{0,8}", json_value()).prop_map(|(timeout, version, selector)| {
        // The number is spliced in as text so that values serde_json would not produce are sent too.
        format!(r#"{{"version":"{version}","timeoutSeconds":{timeout},"selector":{selector}}}"#).into_bytes()
    })
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![Just("default".to_owned()), "[a-z][a-z0-9-]{0,12}", "[A-Za-z0-9_.~%-]{0,20}"]
}

fn request() -> impl Strategy<Value = Generated> {
    let routes = prop_oneof![
        (segment(), container_body()).prop_map(|(ns, body)| Generated {
            method: "POST",
            uri: format!("/api/v1/namespaces/{ns}/containers"),
            body,
        }),
        (segment(), container_body(), number_text()).prop_map(|(ns, body, version)| Generated {
            method: "PUT",
            uri: format!("/api/v1/namespaces/{ns}/containers/web?resourceVersion={version}"),
            body,
        }),
        (segment(), container_body()).prop_map(|(ns, body)| Generated {
            method: "PUT",
            uri: format!("/api/v1/namespaces/{ns}/containersets/web"),
            body,
        }),
        (segment(), segment(), number_text()).prop_map(|(ns, name, version)| Generated {
            method: "DELETE",
            uri: format!("/api/v1/namespaces/{ns}/containers/{name}?resourceVersion={version}"),
            body: Vec::new(),
        }),
        (segment(), number_text()).prop_map(|(ns, version)| Generated {
            method: "DELETE",
            uri: format!("/api/v1/namespaces/{ns}/containersets/web?resourceVersion={version}"),
            body: Vec::new(),
        }),
        (number_text(), segment()).prop_map(|(version, ns)| Generated {
            method: "GET",
            uri: format!("/api/v1/watch/containers?resourceVersion={version}&namespace={ns}"),
            body: Vec::new(),
        }),
        number_text().prop_map(|version| Generated {
            method: "GET",
            uri: format!("/api/v1/watch/events?resourceVersion={version}"),
            body: Vec::new(),
        }),
        (segment(), number_text()).prop_map(|(name, tail)| Generated {
            method: "GET",
            uri: format!("/api/v1/namespaces/default/containers/{name}/logs?tail={tail}"),
            body: Vec::new(),
        }),
        (segment(), prop::sample::select(&["status", "recreate", "restart"][..])).prop_map(|(name, what)| {
            Generated {
                method: if what == "status" { "GET" } else { "POST" },
                uri: format!("/api/v1/namespaces/default/containers/{name}/{what}"),
                body: Vec::new(),
            }
        }),
        upgrade_body().prop_map(|body| Generated {
            method: "POST",
            uri: "/api/v1/upgrades".to_owned(),
            body
        }),
        segment().prop_map(|id| Generated {
            method: "GET",
            uri: format!("/api/v1/upgrades/{id}"),
            body: Vec::new(),
        }),
        (segment(), "[a-z=!,() ]{0,20}").prop_map(|(ns, selector)| Generated {
            method: "GET",
            uri: format!(
                "/api/v1/namespaces/{ns}/containers?labelSelector={}",
                selector.replace(' ', "%20").replace('!', "%21")
            ),
            body: Vec::new(),
        }),
    ];
    routes
}

#[test]
fn no_generated_request_panics_or_fails_on_the_server_side() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = runtime.block_on(async {
        let store =
            EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap();
        let state = ApiState::new(std::sync::Arc::new(store), "prop-host", None);
        router(state, false, tokio_util::sync::CancellationToken::new())
    });
    let mut runner = TestRunner::new(Config { cases: 600, failure_persistence: None, ..Config::default() });
    runner
        .run(&request(), |generated| {
            let Ok(request) = Request::builder()
                .method(generated.method)
                .uri(&generated.uri)
                .header("content-type", "application/json")
                .body(Body::from(generated.body.clone()))
            else {
                // Not a request an HTTP client could send (the URI does not parse).
                return Ok(());
            };
            let response = runtime.block_on(app.clone().oneshot(request)).unwrap();
            let status = response.status().as_u16();
            let body = runtime.block_on(async {
                // Watches stream until the client leaves: only their status matters here.
                if generated.uri.contains("/watch/") && status == 200 {
                    return Value::Null;
                }
                let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            });
            if !(200..500).contains(&status) && status != 501 {
                return Err(TestCaseError::fail(format!(
                    "{} {} answered {status}: {body}",
                    generated.method, generated.uri
                )));
            }
            // kedge's own refusals say why in `error` (axum's rejections of undecodable path segments
            // answer plain text, which is no JSON at all).
            if status >= 400 && body.is_object() {
                prop_assert!(
                    body["error"].is_string(),
                    "{} {}: {status} without an error: {body}",
                    generated.method,
                    generated.uri
                );
            }
            Ok(())
        })
        .unwrap();
}

/// The two requests of issue 16 that killed scheduling, answered with the field named.
#[test]
fn the_absurd_timeout_and_revision_are_refused_naming_the_field() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let store =
            EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap();
        let state = ApiState::new(std::sync::Arc::new(store), "prop-host", None);
        let app = router(state, false, tokio_util::sync::CancellationToken::new());
        let cases = [
            (
                "POST",
                "/api/v1/upgrades",
                r#"{"version":"v2","timeoutSeconds":18446744073709551615}"#,
                422,
                "timeoutSeconds",
            ),
            ("POST", "/api/v1/upgrades", r#"{"version":"v2","timeoutSeconds":86401}"#, 422, "timeoutSeconds"),
            ("POST", "/api/v1/upgrades", r#"{"version":"v2","timeoutSeconds":0}"#, 422, "timeoutSeconds"),
            (
                "GET",
                "/api/v1/watch/containers?resourceVersion=9223372036854775807",
                "",
                400,
                "resourceVersion",
            ),
            ("GET", "/api/v1/watch/events?resourceVersion=9223372036854775807", "", 400, "resourceVersion"),
            (
                "DELETE",
                "/api/v1/namespaces/default/containers/web?resourceVersion=-1",
                "",
                400,
                "resourceVersion",
            ),
        ];
        for (method, uri, body, expected, field) in cases {
            let request = Request::builder().method(method).uri(uri).body(Body::from(body)).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
            let answer: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(status, expected, "{method} {uri}: {answer}");
            let error = answer["error"].as_str().unwrap();
            assert!(error.contains(field), "{method} {uri}: {error}");
        }
    });
}
