//! Who may do what through the API: one table from each route (method and pattern) to the permission
//! it needs, and the middleware that authenticates a request and checks it against that table before
//! any handler runs (docs/access.md).
//!
//! Deny by default: a route with no row in [`AccessTable`] is refused to everyone (403, reason
//! `NoAccessRule`), so a route added without a row cannot be reached; a unit test walks every route the
//! router mounts and fails on any without one. The rows of every kind served by the generic routes are
//! derived from the kind ([`kind_rules`]): reading a kind whose `Resource::SENSITIVE` is set needs
//! write access to the namespace, never a hand-kept list of kind names.
//!
//! Roles ([`Role`]): a viewer reads (but not sensitive kinds); a deployer also writes, restarts,
//! recreates and reads logs and sensitive objects in its namespaces; an admin does everything (tokens,
//! upgrades, policy). The agent's bootstrap token and the Unix socket are admins. An unknown, revoked
//! or expired token gets 401; a known token without the permission 403 naming its role and what it
//! lacks. Neither answer changes anything, and no answer or log line carries a presented token.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::RequestExt;
use kedge_crds::token::{Role, StoredToken};
use serde_json::json;

use super::{token, ApiError, AppState, KindRoutes};
use crate::store::keys;

/// What a route needs of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: no token either. Only the GitSource webhook, which its handler verifies by the
    /// source's own secret (`/healthz` is outside the check; `/version` needs a token).
    Open,
    /// Any valid token.
    Read,
    /// Reading a sensitive kind: a deployer of the namespace (the path's `{ns}`, else `?namespace=`), or
    /// an admin.
    ReadSensitive,
    /// Writing or acting in the path's `{ns}`: a deployer of it, or an admin.
    Write,
    /// An admin token.
    Admin,
}

/// The rows that are no kind's generic routes: `(method, pattern, need)`. A new fixed route is one
/// row here (a `GET` row covers `HEAD`).
pub const FIXED_RULES: &[(&str, &str, Need)] = &[
    ("GET", "/version", Need::Read),
    ("GET", "/api/v1/whoami", Need::Read),
    // Counts and durations, no names of anything: every role may scrape.
    ("GET", "/metrics", Need::Read),
    ("GET", "/api/v1/events", Need::Read),
    ("GET", "/api/v1/watch/events", Need::Read),
    ("GET", "/api/v1/hosts", Need::Read),
    ("GET", "/api/v1/upgrades", Need::Read),
    ("GET", "/api/v1/upgrades/{id}", Need::Read),
    ("POST", "/api/v1/upgrades", Need::Admin),
    ("POST", "/api/v1/upgrades/{id}/cancel", Need::Admin),
    ("GET", "/api/v1/namespaces/{ns}/containers/{name}/logs", Need::Write),
    // CPU, memory, I/O and process counts: nothing a viewer of the namespace may not know.
    ("GET", "/api/v1/namespaces/{ns}/containers/{name}/stats", Need::Read),
    ("POST", "/api/v1/namespaces/{ns}/containers/{name}/exec", Need::Write),
    ("POST", "/api/v1/namespaces/{ns}/containers/{name}/restart", Need::Write),
    ("POST", "/api/v1/namespaces/{ns}/containers/{name}/recreate", Need::Write),
    ("POST", "/api/v1/namespaces/{ns}/gitsources/{name}/reconcile", Need::Write),
    ("POST", "/api/v1/namespaces/{ns}/gitsources/{name}/suspend", Need::Write),
    ("POST", "/api/v1/namespaces/{ns}/gitsources/{name}/resume", Need::Write),
    // Verified by the source's webhook secret in the handler, not by a token (`gitsources.rs`).
    ("POST", "/hooks/gitsources/{ns}/{name}", Need::Open),
    ("GET", "/api/v1/tokens", Need::Admin),
    ("POST", "/api/v1/tokens", Need::Admin),
    ("DELETE", "/api/v1/tokens/{id}", Need::Admin),
    // Levels are readable by every role (a deployer's `kedge run` checks its namespace's level);
    // only an admin sets them.
    ("GET", "/api/v1/policies", Need::Read),
    ("GET", "/api/v1/policies/{ns}", Need::Read),
    ("PUT", "/api/v1/policies/{ns}", Need::Admin),
    ("DELETE", "/api/v1/policies/{ns}", Need::Admin),
];

/// The rows of a kind's generic routes (`routes.rs`): reads need [`Need::Read`], or
/// [`Need::ReadSensitive`] for a sensitive kind; writes need [`Need::Write`].
pub fn kind_rules(plural: &str, sensitive: bool) -> Vec<(&'static str, String, Need)> {
    let read = if sensitive { Need::ReadSensitive } else { Need::Read };
    let namespaced = format!("/api/v1/namespaces/{{ns}}/{plural}");
    let named = format!("{namespaced}/{{name}}");
    vec![
        ("GET", format!("/api/v1/{plural}"), read),
        ("GET", format!("/api/v1/watch/{plural}"), read),
        ("GET", namespaced.clone(), read),
        ("POST", namespaced, Need::Write),
        ("GET", named.clone(), read),
        ("PUT", named.clone(), Need::Write),
        ("DELETE", named.clone(), Need::Write),
        ("GET", format!("{named}/status"), read),
    ]
}

/// The table the middleware decides from: [`FIXED_RULES`] and the rows of every served kind.
#[derive(Debug, Clone)]
pub struct AccessTable {
    rules: HashMap<(Method, String), Need>,
}

impl AccessTable {
    pub fn new(kinds: &[KindRoutes]) -> AccessTable {
        let fixed = FIXED_RULES.iter().map(|(method, pattern, need)| (*method, pattern.to_string(), *need));
        let kinds = kinds.iter().flat_map(|kind| kind_rules(kind.plural, kind.sensitive));
        let rules = fixed
            .chain(kinds)
            .map(|(method, pattern, need)| {
                let method = Method::from_bytes(method.as_bytes()).expect("the table's methods are words");
                ((method, pattern), need)
            })
            .collect();
        AccessTable { rules }
    }

    /// The need of `method` on the route `pattern` (as mounted: `/api/v1/namespaces/{ns}/...`); `HEAD`
    /// is `GET`'s. `None`: no row, so refused.
    pub fn need(&self, method: &Method, pattern: &str) -> Option<Need> {
        let method = if method == Method::HEAD { Method::GET } else { method.clone() };
        self.rules.get(&(method, pattern.to_owned())).copied()
    }
}

/// Who made a request: a token's role and namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The scoped token's id; `None` for the bootstrap token and the Unix socket.
    pub token: Option<String>,
    pub role: Role,
    pub namespaces: Vec<String>,
}

impl Identity {
    /// The agent's bootstrap token, and a caller on the Unix socket.
    pub fn bootstrap() -> Identity {
        Identity { token: None, role: Role::Admin, namespaces: Vec::new() }
    }
}

/// Decides whether `identity` may do what needs `need` in `namespace` (the path's `{ns}`, or the
/// `?namespace=` of a read). `Err`: what the role lacks, for the 403's message.
pub fn authorize(identity: &Identity, need: Need, namespace: Option<&str>) -> Result<(), String> {
    let in_namespace = |ns: &str| identity.namespaces.iter().any(|own| own == ns);
    let scope = || match identity.role {
        Role::Deployer => format!("its namespaces are {}", identity.namespaces.join(", ")),
        _ => "a viewer only reads".to_owned(),
    };
    match (need, identity.role) {
        (Need::Open | Need::Read, _) | (_, Role::Admin) => Ok(()),
        (Need::Admin, _) => Err("admin (tokens, upgrades, hosts and policy are an admin's)".to_owned()),
        (Need::Write, Role::Deployer) if namespace.is_some_and(in_namespace) => Ok(()),
        (Need::Write, _) => Err(match namespace {
            Some(ns) => format!("write in namespace `{ns}` ({})", scope()),
            None => "write in every namespace (an admin's)".to_owned(),
        }),
        (Need::ReadSensitive, Role::Deployer) if namespace.is_some_and(in_namespace) => Ok(()),
        (Need::ReadSensitive, _) => Err(match namespace {
            Some(ns) => format!("read of sensitive objects in namespace `{ns}` ({})", scope()),
            None => "read of sensitive objects in every namespace (name one with ?namespace=, or use an admin token)"
                .to_owned(),
        }),
    }
}

/// The middleware in front of every route but `/healthz`: finds the route's row, authenticates the
/// caller, and lets the request through only when the row's need is met.
pub(super) async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let pattern =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let method = request.method().clone();
    let Some(need) = state.access.need(&method, &pattern) else {
        tracing::error!(%method, route = %pattern, "refused a request to a route without an access rule");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{method} {pattern} has no access rule: refused"),
        )
        .with("reason", json!("NoAccessRule"))
        .into_response();
    };
    if need == Need::Open {
        return next.run(request).await;
    }
    // Read before any await: a `&Request` is not `Send`.
    let authorization =
        request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let identity = match authenticate(&state, authorization.as_deref()).await {
        Ok(identity) => identity,
        Err(error) => return error.into_response(),
    };
    let namespace = match need {
        Need::Write | Need::ReadSensitive => {
            let path = request.extract_parts::<Path<HashMap<String, String>>>().await.ok();
            let from_path = path.and_then(|Path(mut params)| params.remove("ns"));
            let from_query = || {
                let Query(mut params) = Query::<HashMap<String, String>>::try_from_uri(request.uri()).ok()?;
                params.remove("namespace").filter(|ns| !ns.is_empty())
            };
            match need {
                Need::ReadSensitive => from_path.or_else(from_query),
                _ => from_path,
            }
        }
        _ => None,
    };
    if let Err(lacks) = authorize(&identity, need, namespace.as_deref()) {
        let who = identity
            .token
            .as_deref()
            .map_or_else(|| "the bootstrap token".to_owned(), |id| format!("token {id}"));
        tracing::info!(token = identity.token.as_deref().unwrap_or("bootstrap"), role = %identity.role, %method, route = %pattern, "refused: lacks {lacks}");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{who} (role `{}`) lacks {lacks}: {method} {pattern} refused", identity.role),
        )
        .with("reason", json!("Forbidden"))
        .with("role", json!(identity.role))
        .with("lacks", json!(lacks))
        .into_response();
    }
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// Who presented the request's bearer token: the bootstrap token (or no token needed: the Unix
/// socket, or an API without one) is an admin; a scoped token is looked up by its id (in the token
/// cache, else in the store; a revoke on another agent reaches this cache within its watch's
/// latency, one on this agent before its answer), its
/// secret's SHA-256 compared in constant time, and its expiry checked against now (its lease may
/// outlive it a little: etcd renews leases when its leader changes). Any failure is one 401.
async fn authenticate(state: &AppState, authorization: Option<&str>) -> Result<Identity, ApiError> {
    let expected = match (state.require_token, state.api.token.as_deref()) {
        (true, Some(expected)) => expected,
        _ => return Ok(Identity::bootstrap()),
    };
    let presented =
        authorization.and_then(|value| value.strip_prefix("Bearer ")).map(str::trim).ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer TOKEN` header")
        })?;
    let invalid =
        || ApiError::new(StatusCode::UNAUTHORIZED, "invalid bearer token (unknown, revoked or expired)");
    let Some((id, secret)) = token::split_scoped_token(presented) else {
        return if token::tokens_equal(presented, expected) {
            Ok(Identity::bootstrap())
        } else {
            Err(invalid())
        };
    };
    let key = keys::token_key(id).map_err(|_| invalid())?;
    // From the token cache when it has the token and follows the store; from the store otherwise (a
    // token made a moment ago on another agent, a cache still listing, or one whose watch is down, so
    // that a token revoked meanwhile elsewhere is not taken on the word of a stale cache).
    let cached = state.tokens().sight(&key);
    let stored: StoredToken = match cached.stored.filter(|_| cached.in_sync) {
        Some(stored) => stored.object,
        None => {
            let Some(kv) = state.api.store.get(&key).await? else { return Err(invalid()) };
            serde_json::from_slice(&kv.value).map_err(|error| {
                tracing::warn!(token = id, %error, "a stored token cannot be read; refusing it");
                invalid()
            })?
        }
    };
    if !token::tokens_equal(&token::secret_sha256(secret), &stored.secret_sha256) {
        return Err(invalid());
    }
    if is_expired(stored.token.expires.as_deref(), chrono::Utc::now()) {
        return Err(invalid());
    }
    Ok(Identity {
        token: Some(stored.token.id),
        role: stored.token.role,
        namespaces: stored.token.namespaces,
    })
}

/// Whether a token whose `expires` is this has expired at `now`; an unreadable time counts as expired.
pub fn is_expired(expires: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> bool {
    match expires {
        None => false,
        Some(text) => chrono::DateTime::parse_from_rfc3339(text).map_or(true, |at| at <= now),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::api::{builtin_kinds, guarded_routes, router, with_guard, ApiState};
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};

    const BOOTSTRAP: &str = "bootstrap-token-of-the-test";

    async fn state(dir: &std::path::Path) -> ApiState {
        let store = EmbeddedStore::open(dir.join("kedge.db"), EmbeddedOptions::default()).await.unwrap();
        ApiState::new(std::sync::Arc::new(store), "access-host", Some(BOOTSTRAP.to_owned()))
    }

    /// The route patterns a router mounts, read from its `Debug` (axum lists them as
    /// `RouteId(N): "/path"`): the router itself, not a list kept beside it.
    fn mounted_paths(router: &Router<AppState>) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        debug
            .split("RouteId(")
            .filter_map(|chunk| {
                let (_, rest) = chunk.split_once(')')?;
                let path = rest.strip_prefix(": \"")?;
                Some(path[..path.find('"')?].to_owned())
            })
            .collect()
    }

    fn example_uri(pattern: &str) -> String {
        pattern
            .split('/')
            .map(|segment| if segment.starts_with('{') { "x" } else { segment })
            .collect::<Vec<_>>()
            .join("/")
    }

    async fn status_of(
        app: &Router,
        method: &Method,
        uri: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = axum::http::Request::builder().method(method.clone()).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Every route the router mounts, with every method it answers, has a row: a route added without
    /// one fails here (and is refused at run time). And every row names a mounted route.
    #[tokio::test]
    async fn every_mounted_route_has_a_row_and_every_row_a_route() {
        let dir = tempfile::tempdir().unwrap();
        let kinds = builtin_kinds();
        let paths = mounted_paths(&guarded_routes(&kinds));
        for expected in [
            "/version",
            "/api/v1/hosts",
            "/api/v1/tokens/{id}",
            "/api/v1/namespaces/{ns}/containers/{name}/logs",
        ] {
            assert!(
                paths.contains(expected),
                "the router's Debug no longer lists routes as expected: {paths:?}"
            );
        }
        let table = AccessTable::new(&kinds);
        let app = router(state(dir.path()).await, true, tokio_util::sync::CancellationToken::new());
        let methods = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ];
        let mut missing = Vec::new();
        let mut mounted = BTreeSet::new();
        for path in &paths {
            // axum's own fallback entries (`/`, `/{*__private__axum_fallback}`) answer "no such route".
            let (status, body) = status_of(&app, &Method::GET, &example_uri(path), None).await;
            if status == StatusCode::NOT_FOUND && body.contains("no such route") {
                continue;
            }
            for method in &methods {
                let (status, body) = status_of(&app, method, &example_uri(path), None).await;
                if status == StatusCode::METHOD_NOT_ALLOWED {
                    continue;
                }
                mounted.insert((method.clone(), path.clone()));
                match table.need(method, path) {
                    None => missing.push(format!("{method} {path}")),
                    Some(Need::Open) => {}
                    // Without a token, nothing but an open route is reached.
                    Some(_) => assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}"),
                }
            }
        }
        assert!(missing.is_empty(), "routes without a row in the access table: {missing:?}");
        for (method, pattern) in table.rules.keys() {
            assert!(
                mounted.contains(&(method.clone(), pattern.clone())),
                "a row for no route: {method} {pattern}"
            );
        }
    }

    /// `GET /api/v1/whoami` answers the identity the check found: the bootstrap token is an admin with
    /// no token id, a scoped token its role, namespaces and id; no token is a 401. The dashboard's
    /// files need none.
    #[tokio::test]
    async fn whoami_answers_the_callers_role_and_the_dashboard_needs_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path()).await, true, tokio_util::sync::CancellationToken::new());
        let (status, body) = status_of(&app, &Method::GET, "/api/v1/whoami", Some(BOOTSTRAP)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let admin: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(admin, serde_json::json!({"role": "admin", "namespaces": [], "token": null}));
        let create = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/api/v1/tokens")
            .header(header::AUTHORIZATION, format!("Bearer {BOOTSTRAP}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"role": "deployer", "namespaces": ["shop"]}"#))
            .unwrap();
        let response = app.clone().oneshot(create).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        let created: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let bearer = created["bearer"].as_str().unwrap();
        let (status, body) = status_of(&app, &Method::GET, "/api/v1/whoami", Some(bearer)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let deployer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            deployer,
            serde_json::json!({"role": "deployer", "namespaces": ["shop"], "token": created["id"]})
        );
        let (status, _) = status_of(&app, &Method::GET, "/api/v1/whoami", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = status_of(&app, &Method::GET, "/api/v1/whoami", Some("kedge_x_wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        for path in ["/ui/", "/ui/app.js", "/ui/style.css"] {
            let (status, body) = status_of(&app, &Method::GET, path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        let (status, _) = status_of(&app, &Method::GET, "/ui/nothing.js", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_route_without_a_row_is_refused_even_to_an_admin() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path()).await;
        let app_state = AppState {
            access: std::sync::Arc::new(AccessTable::new(&state.kinds)),
            api: state,
            require_token: true,
            stopping: tokio_util::sync::CancellationToken::new(),
            fingerprints: Default::default(),
            tokens: Default::default(),
        };
        let unguarded = Router::new().route("/api/v1/unguarded", get(|| async { "reached" }));
        let app = with_guard(unguarded, app_state);
        let (status, body) = status_of(&app, &Method::GET, "/api/v1/unguarded", Some(BOOTSTRAP)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains("NoAccessRule") && !body.contains("reached"), "{body}");
    }

    /// A scoped token costs no store read per request once the token cache follows the store, and a
    /// revoke on this agent refuses the token from its very answer on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scoped_tokens_are_checked_from_the_cache_and_a_revoke_here_refuses_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap();
        let counting = std::sync::Arc::new(crate::store::CountingStore::new(std::sync::Arc::new(store)));
        let api = ApiState::new(counting.clone(), "access-host", Some(BOOTSTRAP.to_owned()));
        let app = super::super::router(api, true, tokio_util::sync::CancellationToken::new());
        let create = axum::http::Request::builder()
            .method(Method::POST)
            .uri("/api/v1/tokens")
            .header(header::AUTHORIZATION, format!("Bearer {BOOTSTRAP}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"role": "viewer"}"#))
            .unwrap();
        let response = app.clone().oneshot(create).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let bytes = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        let created: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let bearer = created["bearer"].as_str().expect("the new token").to_owned();
        let id = created["id"].as_str().expect("its id").to_owned();

        // Accepted at once (from the store while the cache starts), then from the cache.
        let (status, body) = status_of(&app, &Method::GET, "/version", Some(&bearer)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let key = keys::token_key(&id).unwrap();
        let cache = app_tokens_in_sync(&app, &bearer, &counting).await;
        assert!(cache, "the token cache did not take over from the store within 10 s");
        let before = counting.range_requests();
        for _ in 0..20 {
            let (status, body) = status_of(&app, &Method::GET, "/version", Some(&bearer)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        assert_eq!(counting.range_requests(), before, "20 requests read nothing from the store");

        let (status, body) =
            status_of(&app, &Method::DELETE, &format!("/api/v1/tokens/{id}"), Some(BOOTSTRAP)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _) = status_of(&app, &Method::GET, "/version", Some(&bearer)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "refused from the revoke's answer on ({key})");
    }

    /// Polls (every 20 ms, for 10 s at most) until a request with `bearer` reads nothing from the
    /// store: the token cache has it.
    async fn app_tokens_in_sync(app: &Router, bearer: &str, counting: &crate::store::CountingStore) -> bool {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let before = counting.range_requests();
            status_of(app, &Method::GET, "/version", Some(bearer)).await;
            if counting.range_requests() == before {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    }

    #[test]
    fn a_sensitive_kind_is_read_only_by_its_namespaces_deployers_and_admins() {
        let plain = kind_rules("widgets", false);
        let sensitive = kind_rules("secrets", true);
        assert!(plain
            .iter()
            .all(|(method, _, need)| *need == if *method == "GET" { Need::Read } else { Need::Write }));
        assert!(sensitive.iter().all(
            |(method, _, need)| *need == if *method == "GET" { Need::ReadSensitive } else { Need::Write }
        ));
    }

    fn identity(role: Role, namespaces: &[&str]) -> Identity {
        Identity {
            token: Some("t".into()),
            role,
            namespaces: namespaces.iter().map(|ns| ns.to_string()).collect(),
        }
    }

    #[test]
    fn authorize_decides_by_role_need_and_namespace() {
        let viewer = identity(Role::Viewer, &[]);
        let deployer = identity(Role::Deployer, &["a", "c"]);
        let admin = identity(Role::Admin, &[]);
        // (who, need, namespace, Ok or a piece of what is lacking)
        type Case<'a> = (&'a Identity, Need, Option<&'a str>, Result<(), &'a str>);
        let cases: &[Case] = &[
            (&viewer, Need::Open, None, Ok(())),
            (&viewer, Need::Read, None, Ok(())),
            (&viewer, Need::Write, Some("a"), Err("write in namespace `a` (a viewer only reads)")),
            (&viewer, Need::ReadSensitive, Some("a"), Err("read of sensitive objects in namespace `a`")),
            (&viewer, Need::Admin, None, Err("admin")),
            (&deployer, Need::Read, None, Ok(())),
            (&deployer, Need::Write, Some("a"), Ok(())),
            (&deployer, Need::Write, Some("c"), Ok(())),
            (&deployer, Need::Write, Some("b"), Err("write in namespace `b` (its namespaces are a, c)")),
            (&deployer, Need::Write, Some("ab"), Err("namespace `ab`")),
            (&deployer, Need::Write, None, Err("write in every namespace")),
            (&deployer, Need::ReadSensitive, Some("a"), Ok(())),
            (&deployer, Need::ReadSensitive, Some("b"), Err("sensitive objects in namespace `b`")),
            (&deployer, Need::ReadSensitive, None, Err("in every namespace")),
            (&deployer, Need::Admin, None, Err("admin (tokens, upgrades")),
            (&admin, Need::Write, Some("z"), Ok(())),
            (&admin, Need::ReadSensitive, None, Ok(())),
            (&admin, Need::Admin, None, Ok(())),
        ];
        for (who, need, namespace, expected) in cases {
            let got = authorize(who, *need, *namespace);
            match (&got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(lacks), Err(piece)) => {
                    assert!(lacks.contains(piece), "{who:?} {need:?} {namespace:?}: {lacks}")
                }
                _ => panic!("{who:?} {need:?} {namespace:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn expiry_is_read_from_rfc3339_and_an_unreadable_time_has_expired() {
        let now =
            chrono::DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert!(!is_expired(None, now));
        assert!(!is_expired(Some("2026-12-06T12:00:01Z"), now));
        assert!(is_expired(Some("2026-12-06T12:00:00Z"), now));
        assert!(is_expired(Some("tomorrow"), now));
    }

    #[test]
    fn head_is_checked_as_get() {
        let table = AccessTable::new(&builtin_kinds());
        assert_eq!(table.need(&Method::HEAD, "/api/v1/hosts"), Some(Need::Read));
        assert_eq!(table.need(&Method::PATCH, "/api/v1/hosts"), None);
    }
}
