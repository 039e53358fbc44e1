//! The HTTP API every agent serves: the only door to the store for users and the `kedge` CLI.
//!
//! Routes (JSON in and out; errors are `{"error": MESSAGE, ...}` with a 4xx or 5xx status):
//!
//! ```text
//! GET    /healthz                                          no authentication; 503 with the failing task(s)
//!                                                          while an agent task keeps dying
//! GET    /version
//! GET    /api/v1/whoami                                    the caller's role, namespaces and token id
//! GET    /ui/                                              the web dashboard's files, no token (they hold no
//!                                                          data; the page reads the API with the caller's)
//! GET    /metrics                                          Prometheus text (docs/metrics.md); also without a
//!                                                          token on `kedge agent --metrics-listen` ([`serve_metrics`])
//! GET    /api/v1/{plural}, /api/v1/namespaces/{ns}/{plural}[/{name}[/status]]   every kind of
//! POST   /api/v1/namespaces/{ns}/{plural}                  [`builtin_kinds`] (containers, containersets, secrets, gitsources),
//! PUT    /api/v1/namespaces/{ns}/{plural}/{name}           the same routes and answers: see `routes.rs`
//! DELETE /api/v1/namespaces/{ns}/{plural}/{name}?resourceVersion=R
//! GET    /api/v1/watch/{plural}?resourceVersion=R&namespace=NS&name=N&labelSelector=SEL   newline-delimited JSON
//! GET    /api/v1/namespaces/{ns}/containers/{name}/logs
//! GET    /api/v1/namespaces/{ns}/containers/{name}/stats
//! POST   /api/v1/namespaces/{ns}/containers/{name}/recreate   body {"pull": true, "cleanup": false,
//!                                                          "healthTimeoutSeconds": 60, "runningGraceSeconds": 5}
//!                                                          or ?pull=true; 501 unless a RecreateHandler is installed
//!                                                          (the agent installs one, which runs a managed container's
//!                                                          recreate in its key's worker); errors carry a `reason`
//! POST   /api/v1/namespaces/{ns}/containers/{name}/restart    restart now, same container (an event records it)
//! POST   /api/v1/namespaces/{ns}/gitsources/{name}/reconcile  sync the GitSource now (see `gitsources`);
//!                                                          409 while it is suspended
//! POST   /api/v1/namespaces/{ns}/gitsources/{name}/suspend|resume  set its spec.suspend, the rest kept
//! POST   /hooks/gitsources/{ns}/{name}                      a push webhook, signed instead of a token
//! GET    /api/v1/events?namespace=NS   GET /api/v1/watch/events?resourceVersion=R
//! GET    /api/v1/hosts                                     each with its last agent upgrade (`upgrade`)
//! POST   /api/v1/upgrades   GET /api/v1/upgrades[/{id}]    agent upgrade campaigns (see `upgrades`)
//! POST   /api/v1/upgrades/{id}/cancel                      202; 409 once finished; 404 unknown
//! POST   /api/v1/tokens   GET /api/v1/tokens   DELETE /api/v1/tokens/{id}   scoped API tokens (see `tokens`)
//! ```
//!
//! A Container or ContainerSet template that breaks the namespace's host-escape policy (docs/policy.md)
//! gets 422 with `reason: PolicyDenied`, its `level` and `details` naming every refused field, dry runs too.
//! A Secret's values are never answered: every read, watch line and write answer shows each as
//! `<redacted> fingerprint:HEX` (`routes.rs`, for every `Resource::SENSITIVE` kind).
//! `PUT`, `POST` and `DELETE` take `?dryRun=All`: validated and answered as if done, but nothing is written.
//! Writes answer with the header `X-Kedge-Outcome: created|configured|unchanged|deleted`.
//!
//! Authentication and access (`access.rs`, docs/access.md): on TCP (plain or [`TlsConfig`]) every
//! route but `/healthz` needs `Authorization: Bearer TOKEN`: the agent's bootstrap token
//! (see [`load_or_create_token`], an admin) or a scoped token (`kedge_<id>_<secret>`, a role). One table
//! says what each route needs; a route without a row is refused. On the Unix socket the socket file's
//! permissions are the authentication (an admin).
//! Request bodies over [`MAX_BODY_BYTES`] get a 413, whatever the route. The generation rule lives in
//! [`crate::store::api`]; this module only translates HTTP to it.

pub mod access;
pub mod connections;
pub mod fingerprints;
mod gitsources;
mod logs;
pub mod policies;
mod restart;
pub mod routes;
mod selector;
pub mod tls;
pub mod token;
mod tokens;
pub mod ui;
mod upgrades;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod redaction_tests;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use kedge_crds::{Container, ContainerSet, GitSource, Secret};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::store::{keys, BoxFuture, EventKind, SharedStore, StoreError};

pub use connections::ConnectionLimits;
pub use routes::{routes, KindRoutes};
pub use selector::{LabelSelector, SelectorError};
pub use tls::{TlsConfig, TlsError};
pub use token::{load_or_create_token, token_path, TOKEN_FILE};

/// Request bodies larger than this (256 KiB) are refused with 413, so no object in the store is larger:
/// a spec is a few kilobytes, and etcd answers every list in pages that must hold whole objects.
pub const MAX_BODY_BYTES: usize = 256 << 10;

/// The header write responses carry to say what happened.
pub const OUTCOME_HEADER: &str = "x-kedge-outcome";

/// What the API needs from the agent that serves it.
#[derive(Clone)]
pub struct ApiState {
    pub store: SharedStore,
    /// This agent's host name, reported by `/version`.
    pub host: String,
    /// The bearer token TCP clients must present; `None` disables authentication (tests, Unix socket only).
    pub token: Option<String>,
    /// The one-call recreate of issue 8; the route answers 501 until the agent installs a handler.
    pub recreate: Option<Arc<dyn RecreateHandler>>,
    /// The engine this agent manages, for container logs; the logs route answers 501 without it.
    pub docker: Option<crate::docker::DockerClient>,
    /// The agent's task health, which `/healthz` reports; without it `/healthz` always says ok.
    pub health: Option<Arc<crate::agent::supervisor::Health>>,
    /// The agent's metrics, which `/metrics` renders; without them it answers 501.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Limits every listener keeps before anyone has authenticated (`kedge agent --api-max-connections`).
    pub limits: ConnectionLimits,
    /// Image repositories an upgrade campaign may move agents to besides the one each runs
    /// (`kedge agent --upgrade-repository`).
    pub upgrade_repositories: Vec<String>,
    /// The host-escape policy every written spec must pass (docs/policy.md); the agent checks it
    /// again before running a spec, with the same settings.
    pub policy: kedge_crds::PolicySettings,
    /// The kinds served by the generic routes: [`builtin_kinds`], and any a test adds with
    /// [`ApiState::with_kind`].
    pub kinds: Vec<KindRoutes>,
}

/// The kinds every agent serves, one row each: the generic routes of `routes.rs` and the kind's own
/// hooks (its validation, the host-escape policy on writes, a Container's engine routes).
pub fn builtin_kinds() -> Vec<KindRoutes> {
    vec![
        routes::<Container>().validate(validate).admit(admit_container).with_routes(container_routes).into(),
        routes::<ContainerSet>().validate(validate_set).admit(admit_set).into(),
        routes::<Secret>().validate(validate_secret).into(),
        routes::<GitSource>().validate(validate_git_source).with_routes(gitsources::gitsource_routes).into(),
    ]
}

/// What only a Container has: its engine's logs, a restart and a recreate.
fn container_routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/api/v1/namespaces/{ns}/containers/{name}/logs", get(logs::container_logs))
        .route("/api/v1/namespaces/{ns}/containers/{name}/exec", post(logs::container_exec))
        .route("/api/v1/namespaces/{ns}/containers/{name}/stats", get(logs::container_stats))
        .route("/api/v1/namespaces/{ns}/containers/{name}/restart", post(restart::restart_container))
        .route("/api/v1/namespaces/{ns}/containers/{name}/recreate", post(recreate))
}

/// The hook for `POST .../containers/{name}/recreate`. The agent implements it with its executor.
pub trait RecreateHandler: Send + Sync + 'static {
    /// Recreates the container of spec `namespace/name`; answers a JSON report.
    fn recreate<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        options: RecreateOptions,
    ) -> BoxFuture<'a, Result<Value, RecreateRejection>>;
}

/// What `POST .../recreate` may ask for (JSON body or query): `pull`, `cleanup` (remove the old
/// image when unused), `healthTimeoutSeconds`, `runningGraceSeconds`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecreateOptions {
    pub pull: bool,
    pub cleanup: bool,
    pub health_timeout: Option<std::time::Duration>,
    pub running_grace: Option<std::time::Duration>,
}

/// Why a recreate was not done, or not done well: the answer's status, a CamelCase `reason` (the
/// executor's, or `AgentNotRunning`, `OtherHost`) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecreateRejection {
    pub status: StatusCode,
    pub reason: String,
    pub message: String,
}

/// Where the API listens.
pub enum ApiListener {
    /// Authenticated by bearer token.
    Tcp(tokio::net::TcpListener),
    /// TCP with TLS, authenticated by bearer token.
    Tls(tokio::net::TcpListener, TlsConfig),
    /// Authenticated by the socket file's permissions: no token needed.
    Unix(tokio::net::UnixListener),
}

impl ApiState {
    pub fn new(store: SharedStore, host: impl Into<String>, token: Option<String>) -> ApiState {
        ApiState {
            store,
            host: host.into(),
            token,
            recreate: None,
            docker: None,
            health: None,
            metrics: None,
            limits: ConnectionLimits::default(),
            upgrade_repositories: Vec::new(),
            policy: kedge_crds::PolicySettings::default(),
            kinds: builtin_kinds(),
        }
    }

    /// Serves one more kind through the generic routes (`api::routes::<Widget>().into()`).
    pub fn with_kind(mut self, kind: impl Into<KindRoutes>) -> ApiState {
        self.kinds.push(kind.into());
        self
    }

    /// Serves container logs from `docker` (the agent's own engine).
    pub fn with_docker(mut self, docker: crate::docker::DockerClient) -> ApiState {
        self.docker = Some(docker);
        self
    }
}

/// Serves the API on `listener` until `shutdown` completes, then stops accepting, ends open watches and
/// returns once in-flight requests have finished.
pub async fn serve(
    state: ApiState,
    listener: ApiListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = CancellationToken::new();
    let require_token = !matches!(listener, ApiListener::Unix(_));
    let limits = state.limits;
    let app = router(state, require_token, stopping.clone());
    let shutdown = async move {
        shutdown.await;
        stopping.cancel();
    };
    match listener {
        ApiListener::Tcp(listener) => connections::serve(listener, app, limits, shutdown).await,
        ApiListener::Unix(listener) => connections::serve(listener, app, limits, shutdown).await,
        ApiListener::Tls(listener, tls) => {
            let listener = tls::TlsListener::new(listener, tls)?;
            connections::serve(listener, app, limits, shutdown).await
        }
    }
}

#[derive(Clone)]
struct AppState {
    api: ApiState,
    require_token: bool,
    /// Cancelled on shutdown so that watch streams end and graceful shutdown can complete.
    stopping: CancellationToken,
    /// What each route needs of its caller (`access.rs`), built from the served kinds.
    access: Arc<access::AccessTable>,
    /// The store's key of Secrets' fingerprints, read (or made) when a secret is first shown.
    fingerprints: Arc<tokio::sync::OnceCell<Arc<fingerprints::FingerprintKey>>>,
    /// The scoped tokens, followed from the store once the first one is presented, so that a request
    /// costs no store read (`access::authenticate`).
    tokens: Arc<std::sync::OnceLock<Arc<crate::runtime::Reflector<kedge_crds::token::StoredToken>>>>,
}

impl AppState {
    /// The token cache, started on first use (in the runtime that serves requests) and stopped with
    /// the API.
    fn tokens(&self) -> &crate::runtime::Reflector<kedge_crds::token::StoredToken> {
        self.tokens.get_or_init(|| {
            crate::runtime::reflector::spawn(
                self.api.store.clone(),
                crate::store::keys::TOKENS,
                "tokens",
                |kv| serde_json::from_slice(&kv.value).map_err(|error| error.to_string()),
                self.stopping.clone(),
            )
        })
    }
}

fn router(api: ApiState, require_token: bool, stopping: CancellationToken) -> Router {
    let access = Arc::new(access::AccessTable::new(&api.kinds));
    let guarded = guarded_routes(&api.kinds);
    let state = AppState {
        api,
        require_token,
        stopping,
        access,
        fingerprints: Default::default(),
        tokens: Default::default(),
    };
    with_guard(guarded, state)
}

/// Every route behind the access check (all but `/healthz`): each must have a row in
/// [`access::AccessTable`], or it is refused (`access.rs`'s test walks them).
fn guarded_routes(kinds: &[KindRoutes]) -> Router<AppState> {
    let router = Router::new()
        .route("/version", get(version))
        .route("/api/v1/whoami", get(whoami))
        .route("/metrics", get(metrics))
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/watch/events", get(watch_events))
        .route("/api/v1/hosts", get(list_hosts))
        .route("/api/v1/upgrades", get(upgrades::list_campaigns).post(upgrades::create_campaign))
        .route("/api/v1/upgrades/{id}", get(upgrades::read_campaign))
        .route("/api/v1/upgrades/{id}/cancel", post(upgrades::cancel_campaign))
        .route("/api/v1/policies", get(policies::list_policies))
        .route(
            "/api/v1/policies/{ns}",
            get(policies::read_policy).put(policies::set_policy).delete(policies::delete_policy),
        )
        .route("/api/v1/tokens", get(tokens::list_tokens).post(tokens::create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(tokens::revoke_token));
    kinds.iter().fold(router, |router, kind| kind.mount(router))
}

/// `guarded` behind the access check, with `/healthz`, the fallbacks and the limits every route keeps.
fn with_guard(guarded: Router<AppState>, state: AppState) -> Router {
    let guarded = guarded.route_layer(middleware::from_fn_with_state(state.clone(), access::guard));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(ui::routes())
        .merge(guarded)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// `GET /healthz`: 200 `{"status": "ok"}`, or 503 `{"status": "unhealthy", "tasks": [...]}` while
/// one of the agent's tasks keeps dying (see [`crate::agent::supervisor`]). Tasks that died lately
/// without making the agent unhealthy are listed too.
async fn healthz(State(state): State<AppState>) -> Response {
    let Some(health) = &state.api.health else {
        return Json(json!({"status": "ok"})).into_response();
    };
    let report = health.report();
    let tasks = serde_json::to_value(&report.tasks).unwrap_or(Value::Null);
    if report.healthy {
        let mut body = json!({"status": "ok"});
        if !report.tasks.is_empty() {
            body["tasks"] = tasks;
        }
        return Json(body).into_response();
    }
    let failing: Vec<&str> =
        report.tasks.iter().filter(|task| task.unhealthy).map(|task| task.name.as_str()).collect();
    let body = json!({
        "status": "unhealthy",
        "error": format!("agent task(s) keep dying: {}", failing.join(", ")),
        "tasks": tasks,
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// An error answer: `{"error": message, ...details}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, body: json!({ "error": message.into() }) }
    }

    fn with(mut self, key: &str, value: Value) -> ApiError {
        self.body[key] = value;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        let status = match &error {
            StoreError::Conflict { .. } => StatusCode::CONFLICT,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            StoreError::Unavailable(_) | StoreError::Timeout(_) | StoreError::Compacted { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "request body is larger than the {} KiB limit ({MAX_BODY_BYTES} bytes) on one object",
                MAX_BODY_BYTES >> 10
            )
        } else {
            format!("cannot read request body: {}", rejection.body_text())
        };
        ApiError::new(status, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, format!("bad query string: {}", rejection.body_text()))
    }
}

type ApiResult<T> = Result<T, ApiError>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

/// `GET /metrics`: the agent's metrics as Prometheus (OpenMetrics) text.
async fn metrics(State(state): State<AppState>) -> Response {
    match &state.api.metrics {
        Some(metrics) => render_metrics(metrics),
        None => ApiError::new(StatusCode::NOT_IMPLEMENTED, "this server keeps no metrics").into_response(),
    }
}

fn render_metrics(metrics: &crate::metrics::Metrics) -> Response {
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], metrics.render()).into_response()
}

/// Serves only `GET /metrics`, without authentication, on `listener` until `shutdown`
/// (`kedge agent --metrics-listen`): for a Prometheus that holds no token. Everything else is 404.
pub async fn serve_metrics(
    metrics: Arc<crate::metrics::Metrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(render_metrics(&metrics))))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") });
    connections::serve(listener, app, ConnectionLimits::default(), shutdown).await
}

/// `GET /api/v1/whoami`: the caller's role, its namespaces and its token's id (none for the
/// bootstrap token and the Unix socket), so that a client (the dashboard) shows only what the role
/// may do. The access check has already authenticated the caller and left its identity here.
async fn whoami(identity: Option<axum::Extension<access::Identity>>) -> Json<Value> {
    let identity = identity.map_or_else(access::Identity::bootstrap, |axum::Extension(identity)| identity);
    Json(json!({
        "role": identity.role,
        "namespaces": identity.namespaces,
        "token": identity.token,
    }))
}

async fn version(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "apiVersion": kedge_crds::API_VERSION,
        "host": state.api.host,
    }))
}

async fn recreate(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    params: Params,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let params = params?.0;
    // `{"pull": true}` in the body (home-automation integrations), or `?pull=true`; an empty body is fine.
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))?
    };
    let seconds = |key: &str| body.get(key).and_then(Value::as_u64).map(std::time::Duration::from_secs);
    let Some(handler) = state.api.recreate.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "recreate is not available on this agent yet",
        ));
    };
    let flag = |key: &str| {
        body.get(key).and_then(Value::as_bool).unwrap_or(false)
            || matches!(params.get(key).map(String::as_str), Some("true" | "1"))
    };
    let options = RecreateOptions {
        pull: flag("pull"),
        cleanup: flag("cleanup"),
        health_timeout: seconds("healthTimeoutSeconds"),
        running_grace: seconds("runningGraceSeconds"),
    };
    handler.recreate(&ns, &name, options).await.map(Json).map_err(|rejection| {
        ApiError::new(rejection.status, rejection.message).with("reason", json!(rejection.reason))
    })
}

async fn list_events(State(state): State<AppState>, params: Params) -> ApiResult<Json<Value>> {
    let params = params?.0;
    let prefix = keys::events_prefix(params.get("namespace").map(String::as_str))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let list = state.api.store.list(&prefix).await?;
    let items: Vec<Value> = list
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|event| event_matches(event, &params))
        .collect();
    Ok(Json(
        json!({ "kind": "EventList", "metadata": { "resourceVersion": list.revision.to_string() }, "items": items }),
    ))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn list_hosts(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let list = state.api.store.list(keys::HOSTS).await?;
    // A host is ready while its agent's liveness key (on the agent's lease) exists.
    let alive = state.api.store.list(keys::HOST_LEASES).await?;
    let alive: std::collections::BTreeSet<&str> =
        alive.kvs.iter().filter_map(|kv| keys::parse_host_lease_key(&kv.key)).collect();
    let mut items: Vec<Value> = list
        .kvs
        .iter()
        .filter_map(|kv| {
            let mut host = serde_json::from_slice::<Value>(&kv.value).ok()?;
            let name = keys::parse_host_key(&kv.key)?;
            if host.is_object() && host.get("name").is_none() {
                host["name"] = json!(name);
            }
            let ready = alive.contains(name);
            host["ready"] = json!(ready);
            // The agent rewrites its record only when it changes (and every few minutes); its
            // heartbeats renew the lease. A live lease proves a heartbeat within its TTL.
            if ready && host.is_object() {
                host["lastHeartbeat"] = json!(now_rfc3339());
            }
            Some(host)
        })
        .collect();
    upgrades::merge_host_upgrades(&state, &mut items).await?;
    Ok(Json(
        json!({ "kind": "HostList", "metadata": { "resourceVersion": list.revision.to_string() }, "items": items }),
    ))
}

/// `?object=NAME` keeps the events about one object: those whose `involvedObject`
/// (`Container/<ns>/<name>`) names it; `?objectKind=KIND` those about objects of that kind
/// (`Container`, `ContainerSet`, `Host`...); `?type=Warning[,Normal]` those of these types.
/// `?namespace=` is already applied by the key prefix.
fn event_matches(event: &Value, params: &HashMap<String, String>) -> bool {
    let object = event.get("involvedObject").and_then(Value::as_str).unwrap_or_default();
    let named = params
        .get("object")
        .is_none_or(|wanted| object == wanted || object.rsplit('/').next() == Some(wanted.as_str()));
    let of_kind = params
        .get("objectKind")
        .is_none_or(|kind| object.split('/').next().is_some_and(|k| k.eq_ignore_ascii_case(kind)));
    let event_type = event.get("type").and_then(Value::as_str).unwrap_or_default();
    let typed = params
        .get("type")
        .is_none_or(|types| types.split(',').any(|wanted| wanted.trim().eq_ignore_ascii_case(event_type)));
    named && of_kind && typed
}

async fn watch_events(State(state): State<AppState>, params: Params) -> ApiResult<Response> {
    let params = params?.0;
    let start = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => after(state.api.store.list(keys::EVENTS).await?.revision),
        Some(text) => after(parse_revision(text, "resourceVersion")?),
    };
    let prefix = keys::events_prefix(params.get("namespace").map(String::as_str))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let mut upstream = state.api.store.watch(&prefix, start).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let stopping = state.stopping.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stopping.cancelled() => return,
                _ = sender.closed() => return,
                event = upstream.next() => event,
            };
            let Some(Ok(event)) = event else { return };
            if event.kind != EventKind::Put {
                continue;
            }
            let Ok(value) = serde_json::from_slice::<Value>(&event.kv.value) else { continue };
            if !event_matches(&value, &params) {
                continue;
            }
            let text = format!("{}\n", json!({ "type": "ADDED", "object": value }));
            if sender.send(Ok(Bytes::from(text))).await.is_err() {
                return;
            }
        }
    });
    Ok(ndjson(receiver))
}

fn ndjson(receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// One rejected field: its path (`spec.ports[1].hostPort`) and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// The crds rules, server side: the shape (serde, with the field path of the first error) and then every
/// rule of [`kedge_crds::validate_container`].
fn validate(value: Value) -> Result<Container, Vec<FieldError>> {
    let container: Container = match serde_json::from_value(value.clone()) {
        Ok(container) => container,
        Err(_) => {
            // Re-parse through the crds file parser for its field path and wording.
            let (_, errors) = kedge_crds::parse_str("request body", &value.to_string());
            let errors: Vec<FieldError> =
                errors.into_iter().map(|e| FieldError::new(e.path, e.message)).collect();
            return Err(if errors.is_empty() {
                vec![FieldError::new("", "not a Container")]
            } else {
                errors
            });
        }
    };
    let errors = kedge_crds::validate_container(&container);
    if errors.is_empty() {
        Ok(container)
    } else {
        Err(errors.into_iter().map(|e| FieldError::new(e.path, e.message)).collect())
    }
}

/// The crds rules of a ContainerSet: the shape, then every rule of [`kedge_crds::validate_container_set`].
fn validate_set(value: Value) -> Result<ContainerSet, Vec<FieldError>> {
    let set: ContainerSet = match serde_json::from_value(value.clone()) {
        Ok(set) => set,
        Err(_) => {
            let (_, errors) = kedge_crds::parse_objects_str("request body", &value.to_string());
            let mut errors: Vec<FieldError> =
                errors.into_iter().map(|e| FieldError::new(e.path, e.message)).collect();
            if errors.is_empty() {
                errors.push(FieldError::new("", "not a ContainerSet"));
            }
            return Err(errors);
        }
    };
    let errors = kedge_crds::validate_container_set(&set);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(errors.into_iter().map(|e| FieldError::new(e.path, e.message)).collect())
    }
}

/// The crds rules of a Secret: the shape of `data` first (without quoting a value, as serde's
/// messages would), then serde, then every rule of [`kedge_crds::validate::validate_secret`].
fn validate_git_source(value: Value) -> Result<GitSource, Vec<FieldError>> {
    let source = routes::read_as::<GitSource>(value)?;
    let errors = kedge_crds::gitsource::validate_git_source(&source);
    if errors.is_empty() {
        Ok(source)
    } else {
        Err(errors.into_iter().map(|e| FieldError::new(e.path, e.message)).collect())
    }
}

fn validate_secret(value: Value) -> Result<Secret, Vec<FieldError>> {
    let to_api = |errors: Vec<kedge_crds::FieldError>| -> Vec<FieldError> {
        errors.into_iter().map(|e| FieldError::new(e.path, e.message)).collect()
    };
    let shape = kedge_crds::secret::data_shape_errors(&value);
    if !shape.is_empty() {
        return Err(to_api(shape));
    }
    let secret = routes::read_as::<Secret>(value)?;
    let errors = kedge_crds::validate::validate_secret(&secret);
    if errors.is_empty() {
        Ok(secret)
    } else {
        Err(to_api(errors))
    }
}

fn admit_container<'a>(state: &'a AppState, container: &'a Container) -> BoxFuture<'a, ApiResult<()>> {
    Box::pin(enforce_policy(state, &container.metadata.namespace, "Container", &container.spec, "spec"))
}

fn admit_set<'a>(state: &'a AppState, set: &'a ContainerSet) -> BoxFuture<'a, ApiResult<()>> {
    let spec = &set.spec.template.spec;
    Box::pin(enforce_policy(state, &set.metadata.namespace, "ContainerSet", spec, "spec.template.spec"))
}

/// Refuses, with 422 naming every refused field and the level, a spec that breaks the namespace's
/// host-escape policy (dry runs too): the level stored for the namespace, read now, else the
/// agent's default. `prefix` is the spec's path in the object (`spec`, `spec.template.spec`), so
/// that the CLI can place each field in the file.
async fn enforce_policy(
    state: &AppState,
    namespace: &str,
    kind: &str,
    spec: &kedge_crds::ContainerSpec,
    prefix: &str,
) -> ApiResult<()> {
    let settings = policies::settings_for(&state.api.store, &state.api.policy, namespace).await?;
    let (level, violations) = settings.check(namespace, spec);
    if violations.is_empty() {
        return Ok(());
    }
    let errors: Vec<FieldError> = violations
        .iter()
        .map(|violation| {
            let field = format!("{prefix}{}", violation.path.strip_prefix("spec").unwrap_or(&violation.path));
            FieldError::new(field, violation.message())
        })
        .collect();
    let summary = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; ");
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("{kind} refused by the `{level}` policy of namespace `{namespace}`: {summary}"),
    )
    .with("reason", json!("PolicyDenied"))
    .with("level", json!(level))
    .with("namespace", json!(namespace))
    .with("details", serde_json::to_value(errors).unwrap_or_default()))
}

fn invalid(kind: &str, errors: Vec<FieldError>) -> ApiError {
    let summary = errors
        .iter()
        .map(|e| if e.field.is_empty() { e.message.clone() } else { format!("{}: {}", e.field, e.message) })
        .collect::<Vec<_>>()
        .join("; ");
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid {kind}: {summary}"))
        .with("details", serde_json::to_value(errors).unwrap_or_default())
}

fn selector_param(params: &HashMap<String, String>) -> ApiResult<LabelSelector> {
    LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

fn is_dry_run(params: &HashMap<String, String>) -> ApiResult<bool> {
    match params.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, format!("dryRun={other}: the only value is `All`")))
        }
    }
}

/// The largest resource version a request may name: 2^53, the largest integer every JSON client
/// represents exactly. A store at this revision after a million writes a second would be 285 years old, so
/// the bound refuses only nonsense, and leaves room for the `+ 1` a watch adds.
pub const MAX_RESOURCE_VERSION: i64 = 1 << 53;

fn parse_revision(text: &str, field: &str) -> ApiResult<i64> {
    let shown: String = text.chars().take(40).collect();
    match text.parse::<i64>() {
        Ok(revision) if (0..=MAX_RESOURCE_VERSION).contains(&revision) => Ok(revision),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{field} `{shown}` is out of range: a resource version is from 0 to {MAX_RESOURCE_VERSION}"
            ),
        )
        .with("field", json!(field))),
        Err(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{field} `{shown}` is not a resource version (a whole number)"),
        )
        .with("field", json!(field))),
    }
}

/// The revision a watch starts from: the one after `revision`, which [`parse_revision`] bounds so that
/// the addition cannot overflow.
fn after(revision: i64) -> i64 {
    revision.saturating_add(1)
}
