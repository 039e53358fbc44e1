//! The generic verbs over a toy kind defined here and nowhere else: a `Gizmo` with its `impl Resource`
//! and its row (`impl Table`; its `impl Declared` is empty), served by a real API server (the generic routes,
//! one row: `api::routes::<Gizmo>()`, over an embedded store). `kedge get gizmos` through the binary
//! would need the kind compiled into it (its words are a closed `clap` enum), so this drives the code
//! behind the verbs directly: apply (and both dry runs), get's list and rows, diff, the `-w` stream,
//! describe, prune and delete.

use chrono::{DateTime, Utc};
use kedge_controller::api::{self, ApiListener, ApiState};
use kedge_controller::store::{EmbeddedOptions, EmbeddedStore, SharedStore};
use kedge_crds::{ObjectMeta, Resource};
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::config::Resolved;
use crate::get::rows_of;
use crate::kinds::{Kind, Query, Table};
use crate::objects::{self, Declared};
use crate::output::TableOptions;
use crate::DryRun;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Gizmo {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: GizmoSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<GizmoStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct GizmoSpec {
    colour: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct GizmoStatus {
    lit: bool,
}

impl Resource for Gizmo {
    type Spec = GizmoSpec;
    type Status = GizmoStatus;
    const KIND: &'static str = "Gizmo";
    const PLURAL: &'static str = "gizmos";
    const STORE_SEGMENT: &'static str = "gizmos";
    const STATUS_SEGMENT: &'static str = "gizmo-status";

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn spec(&self) -> &GizmoSpec {
        &self.spec
    }
    fn status(&self) -> Option<&GizmoStatus> {
        self.status.as_ref()
    }
    fn status_mut(&mut self) -> &mut Option<GizmoStatus> {
        &mut self.status
    }
}

/// Its table: NAME and COLOUR.
impl Table for Gizmo {
    const NOUN: &'static str = "gizmo";

    fn columns(_options: TableOptions) -> Vec<&'static str> {
        vec!["NAME", "COLOUR"]
    }
    fn cells(&self, _options: TableOptions, _now: DateTime<Utc>) -> Vec<String> {
        vec![self.metadata.name.clone(), self.spec.colour.clone()]
    }
}

impl Declared for Gizmo {}

fn gizmo(name: &str, colour: &str) -> Gizmo {
    Gizmo {
        api_version: Gizmo::API_VERSION.to_owned(),
        kind: Gizmo::KIND.to_owned(),
        metadata: ObjectMeta {
            name: name.to_owned(),
            namespace: kedge_crds::DEFAULT_NAMESPACE.to_owned(),
            ..ObjectMeta::default()
        },
        spec: GizmoSpec { colour: colour.to_owned() },
        status: None,
    }
}

/// A real API server serving gizmos on `127.0.0.1:0` (no token), how to reach it, and what stops it.
pub(crate) async fn server(dir: &std::path::Path) -> (Resolved, tokio::sync::oneshot::Sender<()>) {
    let store = EmbeddedStore::open(dir.join("store.db"), EmbeddedOptions::default()).await.unwrap();
    let store: SharedStore = std::sync::Arc::new(store);
    let state = ApiState::new(store, "test-host", None).with_kind(api::routes::<Gizmo>());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let resolved = Resolved {
        server: format!("http://{}", listener.local_addr().unwrap()),
        token: None,
        namespace: "toys".to_owned(),
        certificate_authority: None,
        client_identity: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(api::serve(state, ApiListener::Tcp(listener), async move {
        let _ = stopped.await;
    }));
    (resolved, stop)
}

/// The next event of a watch (kind, name, colour), within 20 s.
async fn next(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Gizmo)>,
) -> (String, String, String) {
    let (kind, gizmo) = tokio::time::timeout(std::time::Duration::from_secs(20), events.recv())
        .await
        .expect("an event within 20 s")
        .expect("the watch is open");
    (kind, gizmo.metadata.name, gizmo.spec.colour)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generic_verbs_serve_a_toy_kind_with_only_its_impls() {
    let dir = tempfile::tempdir().unwrap();
    let (resolved, _stop) = server(dir.path()).await;
    let client = Client::new(&resolved).unwrap();
    let prepared = objects::prepare(vec![gizmo("g1", "red"), gizmo("g2", "blue")], "toys", Some("toyset"));
    let apply = |object: Gizmo, dry_run: DryRun| {
        let client = &client;
        async move { objects::apply_one(client, &object, dry_run).await.unwrap().0 }
    };
    for object in &prepared {
        assert_eq!(apply(object.clone(), DryRun::None).await, "created");
    }
    assert_eq!(apply(prepared[0].clone(), DryRun::None).await, "unchanged");
    let mut green = prepared[0].clone();
    green.spec.colour = "green".to_owned();
    assert_eq!(apply(green.clone(), DryRun::Client).await, "configured");
    assert_eq!(apply(green.clone(), DryRun::Server).await, "configured");

    // get: the list (both dry runs wrote nothing), its rows, and a revision to watch from.
    let query = Query {
        client: &client,
        namespace: "toys",
        name: None,
        selector: String::new(),
        all_namespaces: false,
        watch: true,
        options: TableOptions { wide: false, namespaces: false },
        filter: String::new(),
    };
    let listed = Gizmo::list(&query).await.unwrap();
    let rows =
        rows_of(listed.items.iter().map(|(_, g)| g), &listed.unreadable_rows, query.options, Utc::now());
    assert_eq!(rows, [["g1", "red"], ["g2", "blue"]]);
    assert!(listed.revision > 0);

    // diff: nothing against what was applied, the colour against the changed object.
    let (live, local) = objects::diff_texts(&client, &prepared[0]).await.unwrap();
    assert_eq!(live, local);
    let (live, local) = objects::diff_texts(&client, &green).await.unwrap();
    assert!(live.contains("colour: red") && local.contains("colour: green"), "{live}\n{local}");

    // get -w: the stream from the list's revision sees the change, then the deletion.
    let path = Gizmo::watch_path(&query, listed.revision);
    assert_eq!(path, format!("/api/v1/watch/gizmos?resourceVersion={}&&namespace=toys", listed.revision));
    let (seen, mut events) = tokio::sync::mpsc::unbounded_channel::<(String, Gizmo)>();
    let watcher = {
        let client = Client::new(&resolved).unwrap();
        tokio::spawn(async move {
            client
                .stream(&path, |event| {
                    let gizmo: Gizmo = event.object()?;
                    let _ = seen.send((event.kind.clone(), gizmo));
                    Ok(event.kind != "DELETED")
                })
                .await
        })
    };
    assert_eq!(apply(green.clone(), DryRun::None).await, "configured");
    assert_eq!(next(&mut events).await, ("MODIFIED".to_owned(), "g1".to_owned(), "green".to_owned()));

    // describe reads it through its path; delete by name, and prune what the apply set no longer declares.
    objects::describe::<Gizmo>(&client, "toys", "g1").await.unwrap();
    let mut lit = listed.items[0].1.clone();
    lit.status = Some(GizmoStatus { lit: true });
    let page = lit.describe_page(&client, &[], Utc::now()).await.unwrap();
    let head: Vec<&str> = page.lines().take(2).collect();
    assert_eq!(head, ["Name:             g1", "Namespace:        toys"], "{page}");
    assert!(page.contains("Status:\n  lit: true\nEvents:\n  <none>\n"), "{page}");
    objects::delete_one::<Gizmo>(&client, "toys", "g1", None, DryRun::None).await.unwrap();
    assert_eq!(next(&mut events).await, ("DELETED".to_owned(), "g1".to_owned(), "green".to_owned()));
    watcher.await.unwrap().unwrap();
    let selected =
        objects::list_selected::<Gizmo>(&client, "toys", "kedge.io/applyset=toyset", false).await.unwrap();
    assert_eq!(selected.iter().map(|g| g.metadata.name.as_str()).collect::<Vec<_>>(), ["g2"]);
    objects::prune::<Gizmo>(&client, &[], "toyset", DryRun::None, "").await.unwrap();
    assert!(objects::list_selected::<Gizmo>(&client, "", "", true).await.unwrap().is_empty());
    let missing = objects::delete_one::<Gizmo>(&client, "toys", "g2", None, DryRun::None).await.unwrap_err();
    assert_eq!(missing.exit, crate::error::Exit::NotFound);
}
