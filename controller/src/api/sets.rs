//! The ContainerSet routes: the same shapes as the container routes, for sets.
//!
//! ```text
//! GET    /api/v1/containersets?labelSelector=SEL                 every namespace
//! GET    /api/v1/namespaces/{ns}/containersets?labelSelector=SEL
//! GET    /api/v1/namespaces/{ns}/containersets/{name}            the set with its status merged in
//! PUT    /api/v1/namespaces/{ns}/containersets/{name}            create or replace (?dryRun=All; with
//!                                                                metadata.resourceVersion, only if unchanged)
//! DELETE /api/v1/namespaces/{ns}/containersets/{name}?resourceVersion=R   its children go with it
//! ```
//!
//! The set's children are ordinary containers (`/api/v1/.../containers?labelSelector=kedge.io/set=NAME`).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kedge_crds::ContainerSet;
use serde_json::{json, Value};

use crate::store::api::Api;
use crate::store::objects::{self, ApplyOutcome};
use crate::store::StoreError;

use super::{is_dry_run, parse_revision, ApiError, ApiResult, AppState, FieldError, Params, OUTCOME_HEADER};

/// Adds the set routes to the authenticated router.
pub(super) fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/api/v1/containersets", get(list_all))
        .route("/api/v1/namespaces/{ns}/containersets", get(list_namespace))
        .route("/api/v1/namespaces/{ns}/containersets/{name}", get(read).put(replace).delete(remove))
}

async fn list_all(State(state): State<AppState>, params: Params) -> ApiResult<Json<Value>> {
    list(&state, None, &params?.0).await
}

async fn list_namespace(
    State(state): State<AppState>,
    Path(ns): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    list(&state, Some(&ns), &params?.0).await
}

async fn list(
    state: &AppState,
    ns: Option<&str>,
    params: &HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    super::list_objects::<ContainerSet>(state, ns, params).await
}

async fn read(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
) -> ApiResult<Json<ContainerSet>> {
    let sets = Api::<ContainerSet, _>::new(state.api.store.as_ref());
    let set = sets.get_with_status(&ns, &name).await?.ok_or_else(|| not_found(&ns, &name))?;
    Ok(Json(set))
}

async fn replace(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let params = params?.0;
    let desired = decode_body(&body?, &ns, &name)?;
    super::enforce_policy(&state, &ns, "ContainerSet", &desired.spec.template.spec, "spec.template.spec")?;
    let expected = match desired.metadata.resource_version.as_deref() {
        None | Some("") => None,
        Some(text) => Some(parse_revision(text, "metadata.resourceVersion")?),
    };
    let store = state.api.store.as_ref();
    let result = if is_dry_run(&params)? {
        dry_run(&state, &desired, expected).await
    } else {
        objects::apply_set(store, &desired, expected).await
    };
    let (set, outcome) = match result {
        Ok(done) => done,
        Err(StoreError::Conflict { current_mod_revision, .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "containerset {ns}/{name} was changed since resourceVersion {}",
                    expected.unwrap_or(0)
                ),
            )
            .with("yourResourceVersion", json!(expected.unwrap_or(0).to_string()))
            .with("currentResourceVersion", json!(current_mod_revision.to_string())))
        }
        Err(error) => return Err(error.into()),
    };
    let (status, word) = match outcome {
        ApplyOutcome::Created => (StatusCode::CREATED, "created"),
        ApplyOutcome::Updated { .. } => (StatusCode::OK, "configured"),
        ApplyOutcome::Unchanged => (StatusCode::OK, "unchanged"),
    };
    let mut response = (status, Json(set)).into_response();
    response.headers_mut().insert(OUTCOME_HEADER, HeaderValue::from_static(word));
    Ok(response)
}

/// What [`Api::apply`] would answer, without writing: the comparison of every kind ([`Api::dry_run`]).
async fn dry_run(
    state: &AppState,
    desired: &ContainerSet,
    expected: Option<i64>,
) -> Result<(ContainerSet, ApplyOutcome), StoreError> {
    let applied = Api::<ContainerSet, _>::new(state.api.store.as_ref()).dry_run(desired, expected).await?;
    Ok((applied.object, applied.outcome))
}

async fn remove(
    State(state): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let params = params?.0;
    let store = state.api.store.as_ref();
    let expected = match params.get("resourceVersion").map(String::as_str) {
        None | Some("") => None,
        Some(text) => Some(parse_revision(text, "resourceVersion")?),
    };
    let current = objects::get_set(store, &ns, &name).await?.ok_or_else(|| not_found(&ns, &name))?;
    let deleted = if is_dry_run(&params)? {
        Api::<ContainerSet, _>::new(store).delete_dry_run(&ns, &name, expected).await
    } else {
        objects::delete_set(store, &ns, &name, expected).await
    };
    match deleted {
        Ok(Some(_)) => {
            let mut response = Json(current).into_response();
            response.headers_mut().insert(OUTCOME_HEADER, HeaderValue::from_static("deleted"));
            Ok(response)
        }
        Ok(None) => Err(not_found(&ns, &name)),
        Err(StoreError::Conflict { current_mod_revision, .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("containerset {ns}/{name} was changed since resourceVersion {}", expected.unwrap_or(0)),
        )
        .with("yourResourceVersion", json!(expected.unwrap_or(0).to_string()))
        .with("currentResourceVersion", json!(current_mod_revision.to_string()))),
        Err(error) => Err(error.into()),
    }
}

/// Parses and checks a set sent to `namespace`/`name`: the shape, then every rule of
/// [`kedge_crds::validate_container_set`].
fn decode_body(body: &[u8], namespace: &str, name: &str) -> ApiResult<ContainerSet> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, format!("request body is not valid JSON: {e}"))
    })?;
    if let Some(Value::Object(metadata)) = value.get_mut("metadata") {
        for (field, wanted) in [("namespace", namespace), ("name", name)] {
            match metadata.get(field) {
                None | Some(Value::Null) => {
                    metadata.insert(field.to_owned(), json!(wanted));
                }
                Some(Value::String(given)) if given == wanted => {}
                Some(given) => {
                    return Err(invalid(vec![FieldError::new(
                        format!("metadata.{field}"),
                        format!("{given} does not match the {field} in the URL, `{wanted}`"),
                    )]))
                }
            }
        }
    }
    let set: ContainerSet = match serde_json::from_value(value.clone()) {
        Ok(set) => set,
        Err(_) => {
            let (_, errors) = kedge_crds::parse_objects_str("request body", &value.to_string());
            let mut errors: Vec<FieldError> =
                errors.into_iter().map(|e| FieldError::new(e.path, e.message)).collect();
            if errors.is_empty() {
                errors.push(FieldError::new("", "not a ContainerSet"));
            }
            return Err(invalid(errors));
        }
    };
    let errors = kedge_crds::validate_container_set(&set);
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(invalid(errors.into_iter().map(|e| FieldError::new(e.path, e.message)).collect()))
    }
}

fn invalid(errors: Vec<FieldError>) -> ApiError {
    let summary = errors
        .iter()
        .map(|e| if e.field.is_empty() { e.message.clone() } else { format!("{}: {}", e.field, e.message) })
        .collect::<Vec<_>>()
        .join("; ");
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid ContainerSet: {summary}"))
        .with("details", serde_json::to_value(errors).unwrap_or_default())
}

fn not_found(ns: &str, name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("containerset {ns}/{name} not found"))
}
