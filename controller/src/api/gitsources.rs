//! What only a GitSource has besides the generic routes: a sync asked for now.
//!
//! - `POST /api/v1/namespaces/{ns}/gitsources/{name}/reconcile` (a deployer of `ns`): `kedge
//!   reconcile gitsource NAME`.
//! - `POST /api/v1/namespaces/{ns}/gitsources/{name}/suspend` and `.../resume` (a deployer of `ns`):
//!   `kedge suspend|resume gitsource NAME`. They set `spec.suspend` in the stored spec, keeping the
//!   rest of it as stored (the webhook secret and ssh key included, which a client only ever sees
//!   redacted and so could not write back).
//! - `POST /hooks/gitsources/{ns}/{name}`: a Git host's push webhook, with no bearer token. It is
//!   verified by `X-Hub-Signature-256` (`sha256=HEX`, the HMAC-SHA256 of the body under the source's
//!   `spec.webhook.secret`: GitHub, Gitea, Forgejo) or `X-Gitlab-Token` (the secret itself). Any
//!   other request (no such source, no webhook secret, a bad signature) gets the same 401 and does
//!   nothing, so the route tells an outsider nothing about which sources exist.
//!
//! Both only write the source's request key ([`keys::gitsource_request_key`]); the scheduler's
//! leader, which may run on another agent, follows those keys and syncs the source at once.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use kedge_crds::GitSource;
use ring::hmac;
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState};
use crate::store::api::Api;
use crate::store::{keys, PutCondition};

/// The routes of [`super::builtin_kinds`]'s GitSource row.
pub(super) fn gitsource_routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/api/v1/namespaces/{ns}/gitsources/{name}/reconcile", post(reconcile))
        .route("/api/v1/namespaces/{ns}/gitsources/{name}/suspend", post(suspend))
        .route("/api/v1/namespaces/{ns}/gitsources/{name}/resume", post(resume))
        .route("/hooks/gitsources/{ns}/{name}", post(webhook))
}

async fn reconcile(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let api = Api::<GitSource>::new(state.api.store.clone());
    let Some(source) = api.get(&namespace, &name).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("gitsource {namespace}/{name} not found")));
    };
    if source.spec.suspend {
        let message = format!(
            "gitsource {namespace}/{name} is suspended: nothing is fetched or applied until `kedge resume gitsource {name}`"
        );
        return Err(ApiError::new(StatusCode::CONFLICT, message));
    }
    request_sync(&state, &namespace, &name, "reconcile").await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "requested": true, "gitsource": format!("{namespace}/{name}") }))))
}

async fn suspend(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    set_suspend(&state, &namespace, &name, true).await
}

async fn resume(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    set_suspend(&state, &namespace, &name, false).await
}

/// Writes `spec.suspend` into the stored source, compare-and-swap on its revision (tried again when
/// another write came between). Answers whether it changed.
async fn set_suspend(state: &AppState, namespace: &str, name: &str, suspend: bool) -> ApiResult<Json<Value>> {
    let api = Api::<GitSource>::new(state.api.store.clone());
    for _ in 0..5 {
        let Some(mut source) = api.get(namespace, name).await? else {
            let message = format!("gitsource {namespace}/{name} not found");
            return Err(ApiError::new(StatusCode::NOT_FOUND, message));
        };
        if source.spec.suspend == suspend {
            return Ok(Json(
                json!({ "gitsource": format!("{namespace}/{name}"), "suspend": suspend, "changed": false }),
            ));
        }
        let revision = source.metadata.resource_version.as_deref().and_then(|rv| rv.parse().ok());
        source.spec.suspend = suspend;
        match api.apply(&source, revision).await {
            Ok(_) => {
                tracing::info!(gitsource = %format!("{namespace}/{name}"), suspend, "GitSource suspend set");
                return Ok(Json(
                    json!({ "gitsource": format!("{namespace}/{name}"), "suspend": suspend, "changed": true }),
                ));
            }
            Err(crate::store::StoreError::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::new(StatusCode::CONFLICT, format!("gitsource {namespace}/{name} kept changing; try again")))
}

async fn webhook(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "the webhook's signature does not verify");
    let api = Api::<GitSource>::new(state.api.store.clone());
    let source = match keys::check_segment(&namespace).and_then(|_| keys::check_segment(&name)) {
        Ok(()) => api.get(&namespace, &name).await?,
        Err(_) => None,
    };
    let Some(secret) = source.and_then(|source| source.spec.webhook).map(|webhook| webhook.secret) else {
        return Err(unauthorized());
    };
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if !verified(secret.as_bytes(), &body, header("x-hub-signature-256"), header("x-gitlab-token")) {
        tracing::info!(gitsource = %format!("{namespace}/{name}"), "refused a webhook whose signature does not verify");
        return Err(unauthorized());
    }
    request_sync(&state, &namespace, &name, "webhook").await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "requested": true }))))
}

/// Whether the request is signed with `secret`: a GitHub-style HMAC of the body, or a GitLab-style
/// token. Both are compared in constant time (as HMAC tags).
pub(crate) fn verified(
    secret: &[u8],
    body: &[u8],
    hub_signature: Option<&str>,
    gitlab_token: Option<&str>,
) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    if let Some(signature) = hub_signature {
        let Some(tag) =
            signature.strip_prefix("sha256=").and_then(|hex_tag| hex::decode(hex_tag.trim()).ok())
        else {
            return false;
        };
        return hmac::verify(&key, body, &tag).is_ok();
    }
    if let Some(token) = gitlab_token {
        // Compares the two as MACs of themselves: a comparison that takes the same time whatever
        // prefix they share.
        let expected = hmac::sign(&key, secret);
        return hmac::verify(&key, token.as_bytes(), expected.as_ref()).is_ok();
    }
    false
}

async fn request_sync(state: &AppState, namespace: &str, name: &str, why: &str) -> ApiResult<()> {
    let key = keys::gitsource_request_key(namespace, name)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let value = json!({ "requestedAt": kedge_crds::meta::rfc3339(chrono::Utc::now()), "by": why });
    state.api.store.put(&key, value.to_string().into_bytes(), PutCondition::Always, 0).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::verified;

    fn hub(secret: &[u8], body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        format!("sha256={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
    }

    #[test]
    fn signatures() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        assert!(verified(b"s3cret", body, Some(&hub(b"s3cret", body)), None));
        assert!(!verified(b"s3cret", body, Some(&hub(b"other", body)), None));
        assert!(!verified(b"s3cret", b"tampered", Some(&hub(b"s3cret", body)), None));
        assert!(!verified(b"s3cret", body, Some("sha256=zz"), None));
        assert!(!verified(b"s3cret", body, Some("sha1=abc"), None));
        assert!(verified(b"s3cret", body, None, Some("s3cret")));
        assert!(!verified(b"s3cret", body, None, Some("s3cre")));
        assert!(!verified(b"s3cret", body, None, None));
        // A wrong GitHub signature is not saved by a right GitLab token alongside it.
        assert!(!verified(b"s3cret", body, Some(&hub(b"other", body)), Some("s3cret")));
    }
}
