//! A new kind costs one `impl Resource`: a toy `Widget`, defined here and nowhere else, gets get, list,
//! apply (with the generation rule), dry run, delete and status through the store's `Api<Widget>`,
//! proven by the same conformance suite Container and ContainerSet pass.

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
