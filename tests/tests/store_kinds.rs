//! A new kind costs one `impl Resource`: a toy `Widget`, defined here and nowhere else, gets get, list,
//! apply (with the generation rule), dry run, delete and status through the store's `Api<Widget>`,
//! proven by the same conformance suite Container and ContainerSet pass; and, mounted with one row
//! (`api::routes::<Widget>()`), the API's list, read, create, apply, delete, status and watch routes
//! over HTTP from a real server.

use crate::api_support::{unique, TestServer};
use kedge_controller::api;
use kedge_controller::store::api::{Api, ApplyOutcome};
use kedge_controller::store::api_conformance::{self, Fixture};
use kedge_controller::store::{keys, EmbeddedOptions, EmbeddedStore, PutCondition, Store};
use kedge_crds::{Container, ObjectMeta, Resource};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Widget {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: WidgetSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<WidgetStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WidgetSpec {
    size: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WidgetStatus {
    polished: u32,
}

impl Resource for Widget {
    type Spec = WidgetSpec;
    type Status = WidgetStatus;
    const KIND: &'static str = "Widget";
    const PLURAL: &'static str = "widgets";
    const STORE_SEGMENT: &'static str = "widgets";
    const STATUS_SEGMENT: &'static str = "widget-status";

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn spec(&self) -> &WidgetSpec {
        &self.spec
    }
    fn status(&self) -> Option<&WidgetStatus> {
        self.status.as_ref()
    }
    fn status_mut(&mut self) -> &mut Option<WidgetStatus> {
        &mut self.status
    }
}

fn widget(namespace: &str, name: &str, size: u32) -> Widget {
    Widget {
        api_version: Widget::API_VERSION.to_owned(),
        kind: Widget::KIND.to_owned(),
        metadata: ObjectMeta {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            ..ObjectMeta::default()
        },
        spec: WidgetSpec { size },
        status: None,
    }
}

async fn store() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap();
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_kinds_a_toy_kind_passes_the_api_conformance_suite() {
    let (_dir, store) = store().await;
    let fixture = Fixture { object: widget, status: |polished| WidgetStatus { polished } };
    api_conformance::run(&store, "toys", &fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_kinds_a_toy_kind_lives_under_its_own_segment() {
    let (_dir, store) = store().await;
    let widgets = Api::<Widget, _>::new(&store as &dyn Store);
    let applied = widgets.apply(&widget("default", "w", 1), None).await.unwrap();
    assert_eq!((applied.outcome, applied.object.metadata.generation), (ApplyOutcome::Created, Some(1)));
    let key = keys::object_key::<Widget>("default", "w").unwrap();
    assert_eq!(key, "/kedge/v1/widgets/default/w");
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().mod_revision.to_string(),
        applied.object.metadata.resource_version.unwrap()
    );
    widgets.put_status("default", "w", &WidgetStatus { polished: 3 }, PutCondition::Always).await.unwrap();
    assert!(store.get("/kedge/v1/widget-status/default/w").await.unwrap().is_some());

    // Other kinds never see it: a Container list is not a Widget list.
    let containers = Api::<Container, _>::new(&store as &dyn Store).list(None).await.unwrap();
    assert!(containers.items.is_empty() && containers.invalid.is_empty(), "{containers:?}");
    let merged = widgets.get_with_status("default", "w").await.unwrap().unwrap();
    assert_eq!(merged.status, Some(WidgetStatus { polished: 3 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_kinds_a_toy_kind_is_served_by_the_generic_routes() {
    let server = TestServer::start_with(|state| state.with_kind(api::routes::<Widget>())).await;
    let ns = unique("widgets");
    let base = format!("/api/v1/namespaces/{ns}/widgets");
    let one = format!("{base}/w");
    let body = |size: u32| serde_json::to_string(&widget(&ns, "w", size)).unwrap();
    let outcome = |reply: &crate::api_support::Reply| (reply.status, reply.header("x-kedge-outcome"));
    let mut watch = server.watch_route(&format!("/api/v1/watch/widgets?namespace={ns}")).await;

    // Apply: created, then unchanged; a dry run answers what the apply would, and writes nothing.
    let created = server.call("PUT", &one, Some(&body(1))).await;
    assert_eq!(outcome(&created), (201, Some("created".to_owned())), "{created:?}");
    assert_eq!(created.json()["metadata"]["generation"], 1);
    let added = watch.next_event().await;
    assert_eq!((added["type"].as_str(), added["object"]["spec"]["size"].as_u64()), (Some("ADDED"), Some(1)));
    assert_eq!(outcome(&server.call("PUT", &one, Some(&body(1))).await), (200, Some("unchanged".to_owned())));
    let dry = server.call("PUT", &format!("{one}?dryRun=All"), Some(&body(2))).await;
    assert_eq!(outcome(&dry), (200, Some("configured".to_owned())));
    assert_eq!(dry.json()["metadata"]["generation"], 2);
    assert_eq!(server.call("GET", &one, None).await.json()["spec"]["size"], 1, "a dry run writes nothing");

    // Create refuses an existing object; bodies are checked against the kind.
    let exists = server.call("POST", &base, Some(&body(1))).await;
    assert_eq!(exists.status, 409, "{exists:?}");
    assert!(exists.json()["error"].as_str().unwrap().contains(&format!("widget {ns}/w already exists")));
    let mut gadget = widget(&ns, "w", 1);
    gadget.kind = "Gadget".to_owned();
    let refused = server.call("PUT", &one, Some(&serde_json::to_string(&gadget).unwrap())).await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert_eq!(refused.json()["details"][0]["field"], "kind");
    let unknown = serde_json::json!({"apiVersion": "kedge.io/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 1, "colour": "red"}});
    let refused = server.call("PUT", &one, Some(&unknown.to_string())).await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert!(refused.json()["error"].as_str().unwrap().starts_with("invalid Widget: "), "{refused:?}");

    // A spec change moves the generation, and the watch sees it.
    assert_eq!(
        outcome(&server.call("PUT", &one, Some(&body(3))).await),
        (200, Some("configured".to_owned()))
    );
    let modified = watch.next_event().await;
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(
        (modified["object"]["spec"]["size"].as_u64(), modified["object"]["metadata"]["generation"].as_u64()),
        (Some(3), Some(2))
    );

    // Its controller's status: merged into reads, lists and the watch; its own route.
    assert_eq!(server.call("GET", &format!("{one}/status"), None).await.status, 404);
    let widgets = Api::<Widget>::new(server.store.clone());
    widgets.put_status(&ns, "w", &WidgetStatus { polished: 7 }, PutCondition::Always).await.unwrap();
    let polished = watch.next_event().await;
    assert_eq!(
        (polished["type"].as_str(), polished["object"]["status"]["polished"].as_u64()),
        (Some("MODIFIED"), Some(7))
    );
    assert_eq!(server.call("GET", &one, None).await.json()["status"]["polished"], 7);
    let status = server.call("GET", &format!("{one}/status"), None).await.json();
    assert_eq!(status["polished"], 7);
    assert!(status["resourceVersion"].as_str().is_some(), "{status}");
    for path in [base.clone(), "/api/v1/widgets".to_owned()] {
        let list = server.call("GET", &path, None).await.json();
        assert_eq!(list["kind"], "WidgetList");
        let names: Vec<(&str, u64)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["metadata"]["namespace"] == ns.as_str())
            .map(|w| (w["metadata"]["name"].as_str().unwrap(), w["status"]["polished"].as_u64().unwrap()))
            .collect();
        assert_eq!(names, [("w", 7)], "{path}: {list}");
    }

    // Delete: a stale version is a conflict, a dry run deletes nothing, then it is gone.
    let version = server.call("GET", &one, None).await.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server.call("DELETE", &format!("{one}?resourceVersion=1"), None).await.status, 409);
    let dry = server.call("DELETE", &format!("{one}?dryRun=All"), None).await;
    assert_eq!(outcome(&dry), (200, Some("deleted".to_owned())));
    assert_eq!(server.call("GET", &one, None).await.status, 200, "a dry run deletes nothing");
    let deleted = server.call("DELETE", &format!("{one}?resourceVersion={version}"), None).await;
    assert_eq!(outcome(&deleted), (200, Some("deleted".to_owned())), "{deleted:?}");
    let gone = watch.next_event().await;
    assert_eq!(
        (gone["type"].as_str(), gone["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("w"))
    );
    let missing = server.call("GET", &one, None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains(&format!("widget {ns}/w not found")));
    assert_eq!(server.call("DELETE", &one, None).await.status, 404);
}
