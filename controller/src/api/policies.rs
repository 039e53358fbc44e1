//! The per-namespace host-escape policy levels (docs/policy.md):
//!
//! ```text
//! GET    /api/v1/policies        every stored level, and the default: {"default": L, "items": [...]}
//! GET    /api/v1/policies/{ns}   the namespace's effective level: {"namespace", "level", "source"}
//! PUT    /api/v1/policies/{ns}   {"level": "privileged|baseline|restricted"}: stores it
//! DELETE /api/v1/policies/{ns}   forgets it: the namespace is back to the default
//! ```
//!
//! `source` is `namespace` (stored) or `default` (the agent's `--policy-level`). A level is stored at
//! `/kedge/v1/policies/<ns>`, where every agent of the fleet reads it; admission reads it from the
//! store at each write, so the answer of a `PUT` holds for the next request to any agent.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kedge_crds::{LevelSource, PolicyLevel, PolicySettings, StoredPolicy};
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState};
use crate::store::{keys, DeleteCondition, PutCondition, SharedStore, StoreError};

/// Reads a stored level. An entry that cannot be read counts as none stored, so the namespace gets
/// the default; the error is logged (the API refuses to write such an entry).
pub fn decode_stored(value: &[u8]) -> Result<PolicyLevel, String> {
    serde_json::from_slice::<StoredPolicy>(value).map(|stored| stored.level).map_err(|e| e.to_string())
}

/// The settings to admit a write in `namespace` with: `base` (the agent's default level and state
/// directory) with the namespace's stored level, read from the store now.
pub async fn settings_for(
    store: &SharedStore,
    base: &PolicySettings,
    namespace: &str,
) -> Result<PolicySettings, StoreError> {
    let mut settings = PolicySettings { namespaces: Default::default(), ..base.clone() };
    let Ok(key) = keys::policy_key(namespace) else { return Ok(settings) };
    if let Some(kv) = store.get(&key).await? {
        match decode_stored(&kv.value) {
            Ok(level) => {
                settings.namespaces.insert(namespace.to_owned(), level);
            }
            Err(error) => tracing::error!(key, %error, "ignoring an unreadable policy level"),
        }
    }
    Ok(settings)
}

/// `GET /api/v1/policies`.
pub(super) async fn list_policies(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let listed = state.api.store.list(keys::POLICIES).await?;
    let mut items = Vec::new();
    for kv in &listed.kvs {
        let Some(namespace) = keys::parse_policy_key(&kv.key) else { continue };
        match decode_stored(&kv.value) {
            Ok(level) => items.push(effective(namespace, level, LevelSource::Namespace)),
            Err(error) => tracing::error!(key = %kv.key, %error, "ignoring an unreadable policy level"),
        }
    }
    Ok(Json(json!({"default": state.api.policy.default_level, "items": items})))
}

/// `GET /api/v1/policies/{ns}`.
pub(super) async fn read_policy(
    State(state): State<AppState>,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    namespace_key(&ns)?;
    let settings = settings_for(&state.api.store, &state.api.policy, &ns).await?;
    let (level, source) = settings.effective(&ns);
    Ok(Json(effective(&ns, level, source)))
}

/// `PUT /api/v1/policies/{ns}` with `{"level": L}`.
pub(super) async fn set_policy(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let key = namespace_key(&ns)?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid policy request: {e}")))?;
    let level = match request.get("level") {
        Some(Value::String(text)) => {
            text.parse::<PolicyLevel>().map_err(|message| refused_level(&message))?
        }
        _ => return Err(refused_level("`level` is required: `privileged`, `baseline` or `restricted`")),
    };
    if let Some(other) = request.as_object().and_then(|fields| fields.keys().find(|field| *field != "level"))
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown field `{other}`: only `level` may be given"),
        )
        .with("field", json!(other)));
    }
    let value = serde_json::to_vec(&StoredPolicy { level }).unwrap_or_default();
    state.api.store.put(&key, value, PutCondition::Always, 0).await?;
    tracing::info!(namespace = %ns, %level, "policy level stored");
    Ok(Json(effective(&ns, level, LevelSource::Namespace)))
}

/// `DELETE /api/v1/policies/{ns}`: idempotent; answers the level the namespace has now.
pub(super) async fn delete_policy(
    State(state): State<AppState>,
    Path(ns): Path<String>,
) -> ApiResult<Json<Value>> {
    let key = namespace_key(&ns)?;
    state.api.store.delete(&key, DeleteCondition::Always).await?;
    tracing::info!(namespace = %ns, "policy level forgotten: back to the default");
    Ok(Json(effective(&ns, state.api.policy.default_level, LevelSource::Default)))
}

fn effective(namespace: &str, level: PolicyLevel, source: LevelSource) -> Value {
    json!({"namespace": namespace, "level": level, "source": source})
}

fn namespace_key(namespace: &str) -> ApiResult<String> {
    keys::policy_key(namespace).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("namespace: {e}")))
}

fn refused_level(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid policy: level: {message}"))
        .with("field", json!("level"))
}
