//! The routes of one kind, written once over [`Resource`]: mounting a kind is one row,
//! `routes::<ContainerSet>()`, with the kind's own hooks (validation, the policy check, extra routes).
//!
//! ```text
//! GET    /api/v1/{plural}?labelSelector=SEL                       every namespace
//! GET    /api/v1/namespaces/{ns}/{plural}?labelSelector=SEL
//! POST   /api/v1/namespaces/{ns}/{plural}                         create; 409 when it exists
//! GET    /api/v1/namespaces/{ns}/{plural}/{name}                  the object with its status merged in
//! PUT    /api/v1/namespaces/{ns}/{plural}/{name}                  create or replace (apply); with
//!                                                                 metadata.resourceVersion, only if unchanged
//! DELETE /api/v1/namespaces/{ns}/{plural}/{name}?resourceVersion=R
//! GET    /api/v1/namespaces/{ns}/{plural}/{name}/status           the status and its key's resourceVersion
//! GET    /api/v1/watch/{plural}?resourceVersion=R&namespace=NS&name=N&labelSelector=SEL
//!                                                                 newline-delimited JSON, statuses merged in
//! ```
//!
//! A kind marked [`Resource::SENSITIVE`] (a Secret) is never shown back: every answer above
//! carries `<redacted> fingerprint:HEX` in place of each value ([`Shower`]), keyed by the store's
//! fingerprint key (`fingerprints.rs`).
//!
//! `POST`, `PUT` and `DELETE` take `?dryRun=All`. Every kind answers the same way: an object whose stored
//! form cannot be read is a 422 naming why (and can be replaced or deleted), a stale resource version a
//! 409 with both versions, a write carries the [`OUTCOME_HEADER`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use kedge_crds::Resource;
use serde_json::{json, Value};

use super::fingerprints::{self, FingerprintKey};
use super::{
    after, invalid, is_dry_run, ndjson, parse_revision, selector_param, ApiError, ApiResult, AppState,
    FieldError, Params, OUTCOME_HEADER,
};
use crate::store::api::{self as typed, Api, ApplyOutcome, InvalidObject};
use crate::store::{keys, BoxFuture, EventKind, StoreError};

/// One kind's routes, ready to mount (see [`routes`]). Two rows for one plural would overlap: the
/// router refuses that when it is built.
#[derive(Clone)]
pub struct KindRoutes {
    /// The kind's plural, for messages, tests and the access table's rows.
    pub plural: &'static str,
    /// The kind's `Resource::SENSITIVE`: reading it needs write access to its namespace (`access.rs`).
    pub sensitive: bool,
    mount: Arc<dyn Fn(Router<AppState>) -> Router<AppState> + Send + Sync>,
}

impl KindRoutes {
    pub(super) fn mount(&self, router: Router<AppState>) -> Router<AppState> {
        (self.mount)(router)
    }
}

/// Checks a request body (a JSON object whose namespace and name already agree with the URL) and reads
/// it as the kind: the shape, then the kind's own rules, every refused field named.
pub type Validate<K> = fn(Value) -> Result<K, Vec<FieldError>>;

/// Refuses a valid object the server will not store (the host-escape policy): an error answer.
pub(super) type Admit<K> = for<'a> fn(&'a AppState, &'a K) -> BoxFuture<'a, ApiResult<()>>;

/// The routes of kind `K` and its hooks. Without hooks, a body is read with serde (its `apiVersion`
/// and `kind` must be the kind's) and everything readable is admitted.
pub struct Routes<K: Resource> {
    validate: Validate<K>,
    admit: Admit<K>,
    extra: fn(Router<AppState>) -> Router<AppState>,
}

/// The generic routes of `K` (list, read, create, apply, delete, status, watch), hooks to be added.
pub fn routes<K: Resource>() -> Routes<K> {
    Routes { validate: read_as::<K>, admit: admit_all::<K>, extra: |router| router }
}

/// The default hook: every readable object is admitted.
fn admit_all<'a, K>(_: &'a AppState, _: &'a K) -> BoxFuture<'a, ApiResult<()>> {
    Box::pin(async { Ok(()) })
}

impl<K: Resource> Routes<K> {
    /// Reads and checks bodies with `validate` instead of serde alone.
    pub fn validate(self, validate: Validate<K>) -> Routes<K> {
        Routes { validate, ..self }
    }

    /// Refuses valid objects `admit` refuses (dry runs too).
    pub(super) fn admit(self, admit: Admit<K>) -> Routes<K> {
        Routes { admit, ..self }
    }

    /// Adds the kind's own routes (a Container's logs, restart and recreate).
    pub(super) fn with_routes(self, extra: fn(Router<AppState>) -> Router<AppState>) -> Routes<K> {
        Routes { extra, ..self }
    }
}

impl<K: Resource> From<Routes<K>> for KindRoutes {
    fn from(routes: Routes<K>) -> KindRoutes {
        let Routes { validate, admit, extra } = routes;
        let hooks = Hooks { validate, admit };
        KindRoutes {
            plural: K::PLURAL,
            sensitive: K::SENSITIVE,
            mount: Arc::new(move |router| extra(mount::<K>(router, hooks))),
        }
    }
}

/// The hooks the handlers need, copied into each.
struct Hooks<K> {
    validate: Validate<K>,
    admit: Admit<K>,
}

impl<K> Clone for Hooks<K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Hooks<K> {}

fn mount<K: Resource>(router: Router<AppState>, hooks: Hooks<K>) -> Router<AppState> {
    let plural = K::PLURAL;
    router
        .route(
            &format!("/api/v1/{plural}"),
            get(|State(state): State<AppState>, params: Params| async move {
                list::<K>(&state, None, &params?.0).await
            }),
        )
        .route(
            &format!("/api/v1/namespaces/{{ns}}/{plural}"),
            get(|State(state): State<AppState>, Path(ns): Path<String>, params: Params| async move {
                list::<K>(&state, Some(&ns), &params?.0).await
            })
            .post(
                move |State(state): State<AppState>,
                      Path(ns): Path<String>,
                      params: Params,
                      body: Result<Bytes, BytesRejection>| async move {
                    let params = params?.0;
                    let desired = decode_body::<K>(&body?, &ns, None, hooks.validate)?;
                    (hooks.admit)(&state, &desired).await?;
                    write(&state, desired, Some(0), is_dry_run(&params)?).await
                },
            ),
        )
        .route(
            &format!("/api/v1/namespaces/{{ns}}/{plural}/{{name}}"),
            get(|State(state): State<AppState>, Path((ns, name)): Path<(String, String)>| async move {
                read::<K>(&state, &ns, &name).await
            })
            .put(
                move |State(state): State<AppState>,
                      Path((ns, name)): Path<(String, String)>,
                      params: Params,
                      body: Result<Bytes, BytesRejection>| async move {
                    let params = params?.0;
                    let desired = decode_body::<K>(&body?, &ns, Some(&name), hooks.validate)?;
                    (hooks.admit)(&state, &desired).await?;
                    let expected = match desired.metadata().resource_version.as_deref() {
                        None | Some("") => None,
                        Some(text) => Some(parse_revision(text, "metadata.resourceVersion")?),
                    };
                    write(&state, desired, expected, is_dry_run(&params)?).await
                },
            )
            .delete(
                |State(state): State<AppState>, Path((ns, name)): Path<(String, String)>, params: Params| async move {
                    remove::<K>(&state, &ns, &name, &params?.0).await
                },
            ),
        )
        .route(
            &format!("/api/v1/namespaces/{{ns}}/{plural}/{{name}}/status"),
            get(|State(state): State<AppState>, Path((ns, name)): Path<(String, String)>| async move {
                read_status::<K>(&state, &ns, &name).await
            }),
        )
        .route(
            &format!("/api/v1/watch/{plural}"),
            get(|State(state): State<AppState>, params: Params| async move { watch::<K>(&state, params?.0).await }),
        )
}

/// How every answer shows an object: a [`Resource::SENSITIVE`] kind with each of its values
/// replaced by `<redacted>` and its keyed fingerprint ([`kedge_crds::secret::redact_object`],
/// `fingerprints.rs`), so that a client can tell a change without seeing the value. Every read,
/// write answer, deletion answer and watch line of the generic routes goes through here: the one
/// place values are held back.
#[derive(Clone)]
struct Shower {
    /// The store's fingerprint key; `None` for a kind that is not sensitive.
    key: Option<Arc<FingerprintKey>>,
}

impl Shower {
    /// The shower of `K`: reads (or makes) the store's fingerprint key when `K` is sensitive.
    async fn of<K: Resource>(state: &AppState) -> ApiResult<Shower> {
        if !K::SENSITIVE {
            return Ok(Shower { key: None });
        }
        let store = state.api.store.clone();
        let key = state
            .fingerprints
            .get_or_try_init(
                || async move { fingerprints::load_or_create(store.as_ref()).await.map(Arc::new) },
            )
            .await?;
        Ok(Shower { key: Some(key.clone()) })
    }

    fn show<K: Resource>(&self, object: &K) -> Value {
        let mut hidden = object.clone();
        hidden.hide_credentials();
        let mut value = serde_json::to_value(&hidden).unwrap_or_default();
        if K::SENSITIVE {
            let keyed = self.key.as_ref().map(|key| move |text: &str| key.fingerprint(text));
            kedge_crds::secret::redact_object(
                &mut value,
                keyed.as_ref().map(|f| f as &dyn Fn(&str) -> String),
            );
        }
        value
    }
}

/// The word of messages: `container`, `containerset`.
fn word<K: Resource>() -> String {
    K::KIND.to_lowercase()
}

/// The list answer: `<Kind>List` with the items a label selector picks, statuses merged in. Objects
/// that cannot be read are listed apart (their labels are unknown, so only an empty selector shows
/// them): a client that does not know this field still gets every readable object.
async fn list<K: Resource>(
    state: &AppState,
    ns: Option<&str>,
    params: &HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    let selector = selector_param(params)?;
    let shower = Shower::of::<K>(state).await?;
    let read = Api::<K, _>::new(state.api.store.as_ref()).list_with_status(ns).await?;
    let items: Vec<&K> = read.items.iter().filter(|o| selector.matches(&o.metadata().labels)).collect();
    let mut list = json!({
        "apiVersion": K::API_VERSION,
        "kind": format!("{}List", K::KIND),
        "metadata": { "resourceVersion": read.revision.to_string() },
        "items": items.into_iter().map(|item| shower.show(item)).collect::<Vec<_>>(),
    });
    if !read.invalid.is_empty() && selector.is_empty() {
        list["invalid"] = serde_json::to_value(&read.invalid).unwrap_or_default();
    }
    Ok(Json(list))
}

async fn read<K: Resource>(state: &AppState, ns: &str, name: &str) -> ApiResult<Json<Value>> {
    let api = Api::<K, _>::new(state.api.store.as_ref());
    let mut object = match api.get_or_invalid(ns, name).await? {
        Some(Ok(object)) => object,
        Some(Err(invalid)) => return Err(unreadable::<K>(&invalid)),
        None => return Err(not_found::<K>(ns, name)),
    };
    *object.status_mut() = api.get_status(ns, name).await?.map(|(status, _)| status);
    Ok(Json(Shower::of::<K>(state).await?.show(&object)))
}

async fn read_status<K: Resource>(state: &AppState, ns: &str, name: &str) -> ApiResult<Json<Value>> {
    match Api::<K, _>::new(state.api.store.as_ref()).get_status(ns, name).await? {
        Some((status, revision)) => {
            let mut value = serde_json::to_value(status).unwrap_or_default();
            value["resourceVersion"] = json!(revision.to_string());
            Ok(Json(value))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no status reported yet for {} {ns}/{name}", word::<K>()),
        )),
    }
}

/// Applies (or dry-runs) `desired`, only at `expected` when given (`0`: only if absent).
async fn write<K: Resource>(
    state: &AppState,
    desired: K,
    expected: Option<i64>,
    dry_run: bool,
) -> ApiResult<Response> {
    let api = Api::<K, _>::new(state.api.store.as_ref());
    let result =
        if dry_run { api.dry_run(&desired, expected).await } else { api.apply(&desired, expected).await };
    let applied = match result {
        Ok(applied) => applied,
        Err(StoreError::Conflict { current_mod_revision, .. }) => {
            let (ns, name, word) = (&desired.metadata().namespace, &desired.metadata().name, word::<K>());
            let message = match (expected, current_mod_revision) {
                (Some(0), _) => format!("{word} {ns}/{name} already exists"),
                (_, 0) => format!("{word} {ns}/{name} does not exist (it was deleted)"),
                _ => {
                    format!("{word} {ns}/{name} was changed since resourceVersion {}", expected.unwrap_or(0))
                }
            };
            return Err(conflict(message, expected, current_mod_revision));
        }
        Err(error) => return Err(error.into()),
    };
    let (status, outcome) = match applied.outcome {
        ApplyOutcome::Created => (StatusCode::CREATED, "created"),
        ApplyOutcome::Updated { .. } => (StatusCode::OK, "configured"),
        ApplyOutcome::Unchanged => (StatusCode::OK, "unchanged"),
    };
    let shown = Shower::of::<K>(state).await?.show(&applied.object);
    Ok(with_outcome((status, Json(shown)).into_response(), outcome))
}

async fn remove<K: Resource>(
    state: &AppState,
    ns: &str,
    name: &str,
    params: &HashMap<String, String>,
) -> ApiResult<Response> {
    let api = Api::<K, _>::new(state.api.store.as_ref());
    let expected = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") => None,
        Some(text) => Some(parse_revision(text, "resourceVersion")?),
    };
    let dry_run = is_dry_run(params)?;
    let current = match api.get_or_invalid(ns, name).await? {
        Some(Ok(object)) => Shower::of::<K>(state).await?.show(&object),
        // An unreadable object can be deleted (that is one way to repair it); the answer shows its identity.
        Some(Err(invalid)) => identity::<K>(ns, name, &invalid.resource_version),
        None => return Err(not_found::<K>(ns, name)),
    };
    let deleted = if dry_run {
        api.delete_dry_run(ns, name, expected).await
    } else {
        api.delete(ns, name, expected).await
    };
    match deleted {
        Ok(Some(_)) => Ok(with_outcome(Json(current).into_response(), "deleted")),
        Ok(None) => Err(not_found::<K>(ns, name)),
        Err(StoreError::Conflict { current_mod_revision, .. }) => Err(conflict(
            format!(
                "{} {ns}/{name} was changed since resourceVersion {}",
                word::<K>(),
                expected.unwrap_or(0)
            ),
            expected,
            current_mod_revision,
        )),
        Err(error) => Err(error.into()),
    }
}

/// `GET /api/v1/watch/{plural}`: the objects (statuses merged in) as they change, one JSON line each
/// (`{"type": "ADDED"|"MODIFIED"|"DELETED"|"ERROR", "object": ...}`). Without a `resourceVersion` the
/// current objects come first as `ADDED`; with one, the changes after it. Ends when the client goes,
/// the server stops, or the store's watch fails (after an `ERROR` line).
async fn watch<K: Resource>(state: &AppState, params: HashMap<String, String>) -> ApiResult<Response> {
    let selector = selector_param(&params)?;
    let ns = params.get("namespace").cloned().filter(|ns| !ns.is_empty());
    let name = params.get("name").cloned();
    let wanted = move |meta: &kedge_crds::ObjectMeta| {
        ns.as_ref().is_none_or(|ns| &meta.namespace == ns)
            && name.as_ref().is_none_or(|name| &meta.name == name)
            && selector.matches(&meta.labels)
    };
    let shower = Shower::of::<K>(state).await?;
    let read = Api::<K, _>::new(state.api.store.as_ref()).list_with_status(None).await?;
    let (start, replay) = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => (after(read.revision), true),
        Some(text) => (after(parse_revision(text, "resourceVersion")?), false),
    };
    let mut cache: BTreeMap<(String, String), K> = read
        .items
        .into_iter()
        .map(|o| ((o.metadata().namespace.clone(), o.metadata().name.clone()), o))
        .collect();
    let replay_only_identity = !replay && params.get("labelSelector").is_none_or(|s| s.trim().is_empty());
    let mut upstream = state.api.store.watch(keys::ROOT, start).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let stopping = state.stopping.clone();
    tokio::spawn(async move {
        let line = |kind: &str, object: Value| {
            let mut text = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
            text.push(b'\n');
            Ok(Bytes::from(text))
        };
        if replay {
            for object in cache.values().filter(|o| wanted(o.metadata())) {
                if sender.send(line("ADDED", shower.show(object))).await.is_err() {
                    return;
                }
            }
        }
        loop {
            let event = tokio::select! {
                _ = stopping.cancelled() => return,
                _ = sender.closed() => return,
                event = upstream.next() => event,
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(error)) => {
                    let _ = sender.send(line("ERROR", json!({ "error": error.to_string() }))).await;
                    return;
                }
                None => return,
            };
            let out = if let Some((ns, name)) = keys::parse_object_key::<K>(&event.kv.key) {
                let key = (ns.to_owned(), name.to_owned());
                match event.kind {
                    EventKind::Put => {
                        let Ok(read) = typed::decode::<K>(&event.kv) else { continue };
                        let mut object = read.value;
                        if let Some(previous) = cache.get(&key) {
                            *object.status_mut() = previous.status().cloned();
                        }
                        // The key's first write is its creation, whatever the cache (primed from the
                        // current list) already knows when replaying from an old revision.
                        let kind = if event.kv.version == 1 { "ADDED" } else { "MODIFIED" };
                        cache.insert(key, object.clone());
                        Some((kind, object.metadata().clone(), shower.show(&object)))
                    }
                    EventKind::Delete => {
                        let revision = event.revision.to_string();
                        match cache.remove(&key) {
                            Some(mut object) => {
                                object.metadata_mut().resource_version = Some(revision);
                                let meta = object.metadata().clone();
                                Some(("DELETED", meta, shower.show(&object)))
                            }
                            // Replaying from an old revision, an object deleted since is in no list: report
                            // it with its identity only (a label-selected watch cannot tell whether it matched).
                            None if replay_only_identity => {
                                let meta = kedge_crds::ObjectMeta {
                                    namespace: key.0.clone(),
                                    name: key.1.clone(),
                                    ..Default::default()
                                };
                                Some(("DELETED", meta, identity::<K>(&key.0, &key.1, &revision)))
                            }
                            None => None,
                        }
                    }
                }
            } else if let Some((ns, name)) = keys::parse_object_status_key::<K>(&event.kv.key) {
                let key = (ns.to_owned(), name.to_owned());
                match (event.kind, cache.get_mut(&key)) {
                    (EventKind::Put, Some(object)) => {
                        let Ok(status) = typed::decode_status::<K>(&event.kv) else { continue };
                        *object.status_mut() = Some(status);
                        Some(("MODIFIED", object.metadata().clone(), shower.show(&*object)))
                    }
                    _ => None,
                }
            } else {
                None
            };
            if let Some((kind, meta, object)) = out {
                if wanted(&meta) && sender.send(line(kind, object)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(ndjson(receiver))
}

/// Parses and checks an object sent to `namespace` (and to `name`, for a PUT). The namespace defaults
/// to the path's; a body that names another namespace or name is refused. Then the kind's validation.
fn decode_body<K: Resource>(
    body: &[u8],
    namespace: &str,
    name: Option<&str>,
    validate: Validate<K>,
) -> ApiResult<K> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("request body is not valid JSON: {e}"))
    })?;
    let Some(object) = value.as_object_mut() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("request body must be a JSON object (a {})", K::KIND),
        ));
    };
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        let wanted = [("namespace", Some(namespace)), ("name", name)];
        for (field, wanted) in wanted.into_iter().filter_map(|(field, wanted)| Some((field, wanted?))) {
            match metadata.get(field) {
                None | Some(Value::Null) => {
                    metadata.insert(field.to_owned(), json!(wanted));
                }
                Some(Value::String(given)) if given == wanted => {}
                Some(given) => {
                    return Err(invalid(
                        K::KIND,
                        vec![FieldError::new(
                            format!("metadata.{field}"),
                            format!("{given} does not match the {field} in the URL, `{wanted}`"),
                        )],
                    ))
                }
            }
        }
    }
    validate(value).map_err(|errors| invalid(K::KIND, errors))
}

/// The validation of a kind without its own: serde's reading, its `apiVersion` and `kind` the kind's.
pub(super) fn read_as<K: Resource>(value: Value) -> Result<K, Vec<FieldError>> {
    let mut errors = Vec::new();
    for (field, wanted) in [("apiVersion", K::API_VERSION), ("kind", K::KIND)] {
        if value.get(field).and_then(Value::as_str) != Some(wanted) {
            errors.push(FieldError::new(field, format!("must be `{wanted}`")));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    serde_json::from_value(value).map_err(|e| vec![FieldError::new("", e.to_string())])
}

/// An object's identity as JSON (what a deletion of an unreadable object shows).
fn identity<K: Resource>(namespace: &str, name: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": K::API_VERSION,
        "kind": K::KIND,
        "metadata": { "name": name, "namespace": namespace, "resourceVersion": resource_version },
    })
}

fn with_outcome(mut response: Response, outcome: &'static str) -> Response {
    response.headers_mut().insert(OUTCOME_HEADER, HeaderValue::from_static(outcome));
    response
}

fn conflict(message: String, expected: Option<i64>, current: i64) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, message)
        .with("yourResourceVersion", json!(expected.unwrap_or(0).to_string()))
        .with("currentResourceVersion", json!(current.to_string()))
}

/// A stored object that cannot be read: the caller's data, not the server's fault, and repairable by
/// applying a good object over it or deleting it.
fn unreadable<K: Resource>(invalid: &InvalidObject) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "the stored spec of {} {}/{} cannot be read ({}); apply a valid spec over it or delete it",
            word::<K>(),
            invalid.namespace,
            invalid.name,
            invalid.error
        ),
    )
    .with("reason", json!("Invalid"))
}

fn not_found<K: Resource>(ns: &str, name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("{} {ns}/{name} not found", word::<K>()))
}
