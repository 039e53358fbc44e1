//! The routes of API tokens (admin only, see `access.rs`; docs/access.md):
//!
//! ```text
//! POST   /api/v1/tokens        {"role": ROLE, "namespaces": [NS], "description": TEXT, "ttlSeconds": N}
//!                              201: the record and, this once, the token (`bearer`)
//! GET    /api/v1/tokens        every live token, oldest first (never a secret or its hash)
//! DELETE /api/v1/tokens/{id}   revokes the token: its record goes, so every agent refuses it at once
//! ```
//!
//! A token with a TTL is written on a store lease of that TTL, so that its record disappears by itself
//! (no controller has to sweep it); authentication also checks `expires`, because a lease may outlive
//! its TTL a little (etcd renews leases when its leader changes; the embedded store when reopened), and
//! the list leaves out a record past its `expires` for the same reason.
//!
//! No token outlives its TTL, by construction: the lease is granted first and the record is written
//! once, with the lease attached, in one put (etcd attaches a lease in the put itself). A grant that
//! fails writes nothing; a writer that dies after the grant leaves a lease with no key, which expires
//! alone; a put that fails leaves nothing to attach later. And the record carries its `expires`, which
//! authentication checks whatever happened to the lease.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{SecondsFormat, Utc};
use kedge_crds::token::{CreatedToken, Role, StoredToken, Token, TokenRequest};
use serde_json::{json, Value};

use super::access::is_expired;
use super::{token, ApiError, ApiResult, AppState};
use crate::store::{keys, DeleteCondition, PutCondition, StoreError};

/// The longest TTL a token may ask for: ten years. etcd refuses a lease longer than about 285 years;
/// a token meant to live that long should have none.
pub const MAX_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// The longest description kept.
pub const MAX_DESCRIPTION: usize = 256;

pub(super) async fn create_token(
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request: TokenRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid token request: {e}")))?;
    check_request(&request).map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, message))?;
    let made = token::new_scoped_token();
    let now = Utc::now();
    let expires = request.ttl_seconds.map(|ttl| {
        let ttl = chrono::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
        now.checked_add_signed(ttl).unwrap_or(now).to_rfc3339_opts(SecondsFormat::Secs, true)
    });
    let record = Token {
        id: made.id.clone(),
        role: request.role,
        namespaces: request.namespaces,
        description: request.description,
        created: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        expires,
    };
    let stored = StoredToken { token: record.clone(), secret_sha256: made.secret_sha256 };
    let key = keys::token_key(&made.id)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let lease = match request.ttl_seconds {
        // Bounded by MAX_TTL_SECONDS above.
        Some(ttl) => state.api.store.lease_grant(ttl as i64).await?,
        None => 0,
    };
    let value = serde_json::to_vec(&stored).unwrap_or_default();
    let written = state.api.store.put(&key, value, PutCondition::Absent, lease).await;
    if written.is_err() && lease != 0 {
        // Nothing is on the lease; revoking it only spares the store its wait (it expires anyway).
        let _ = state.api.store.lease_revoke(lease).await;
    }
    match written {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "a token with this random id exists; ask again"))
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(token = %record.id, role = %record.role, namespaces = ?record.namespaces, "API token created");
    let created = CreatedToken { token: record, bearer: made.bearer };
    Ok((StatusCode::CREATED, Json(serde_json::to_value(created).unwrap_or_default())))
}

/// The rules of a token request, each refusal naming its field.
fn check_request(request: &TokenRequest) -> Result<(), String> {
    match request.role {
        Role::Deployer if request.namespaces.is_empty() => {
            return Err("namespaces: a deployer needs at least one namespace".to_owned())
        }
        Role::Viewer | Role::Admin if !request.namespaces.is_empty() => {
            return Err(format!(
                "namespaces: only a deployer has namespaces (a {} reads every namespace)",
                request.role
            ))
        }
        _ => {}
    }
    for (index, namespace) in request.namespaces.iter().enumerate() {
        keys::check_segment(namespace).map_err(|e| format!("namespaces[{index}]: {e}"))?;
    }
    if request.description.chars().count() > MAX_DESCRIPTION {
        return Err(format!("description: longer than {MAX_DESCRIPTION} characters"));
    }
    match request.ttl_seconds {
        Some(0) => Err("ttlSeconds: must be at least 1".to_owned()),
        Some(ttl) if ttl > MAX_TTL_SECONDS => Err(format!(
            "ttlSeconds: {ttl} is more than ten years ({MAX_TTL_SECONDS}); leave it out for no expiry"
        )),
        _ => Ok(()),
    }
}

pub(super) async fn list_tokens(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let list = state.api.store.list(keys::TOKENS).await?;
    let now = Utc::now();
    let mut items: Vec<Token> = list
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<StoredToken>(&kv.value).ok())
        .map(|stored| stored.token)
        .filter(|token| !is_expired(token.expires.as_deref(), now))
        .collect();
    items.sort_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
    Ok(Json(json!({
        "kind": "TokenList",
        "metadata": { "resourceVersion": list.revision.to_string() },
        "items": items,
    })))
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, format!("token {id} not found"));
    let key = keys::token_key(&id).map_err(|_| not_found())?;
    let Some(kv) = state.api.store.get(&key).await? else { return Err(not_found()) };
    let shown = serde_json::from_slice::<StoredToken>(&kv.value)
        .map(|stored| serde_json::to_value(stored.token).unwrap_or_default())
        .unwrap_or_else(|_| json!({ "id": id }));
    let deleted_at = match state.api.store.delete(&key, DeleteCondition::Always).await? {
        Some(revision) => revision,
        None => return Err(not_found()),
    };
    // This agent's token cache drops it before the answer: revoked here means refused here.
    if !state.tokens().wait_for_revision(deleted_at, std::time::Duration::from_secs(5)).await {
        tracing::warn!(token = %id, "the token cache did not catch up with the revoke within 5 s");
    }
    if kv.lease != 0 {
        // The record is gone; the lease held nothing else. It may have expired meanwhile.
        if let Err(error) = state.api.store.lease_revoke(kv.lease).await {
            tracing::debug!(token = %id, %error, "the revoked token's lease was already gone");
        }
    }
    tracing::info!(token = %id, "API token revoked");
    Ok(Json(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(role: Role, namespaces: &[&str], ttl: Option<u64>) -> TokenRequest {
        TokenRequest {
            role,
            namespaces: namespaces.iter().map(|ns| ns.to_string()).collect(),
            description: String::new(),
            ttl_seconds: ttl,
        }
    }

    #[test]
    fn token_requests_are_checked_field_by_field() {
        let cases: &[(TokenRequest, Option<&str>)] = &[
            (request(Role::Viewer, &[], None), None),
            (request(Role::Admin, &[], Some(60)), None),
            (request(Role::Deployer, &["a", "b"], Some(MAX_TTL_SECONDS)), None),
            (request(Role::Deployer, &[], None), Some("namespaces: a deployer needs at least one")),
            (request(Role::Viewer, &["a"], None), Some("namespaces: only a deployer")),
            (request(Role::Deployer, &["a/b"], None), Some("namespaces[0]: invalid key segment")),
            (request(Role::Deployer, &["a", ""], None), Some("namespaces[1]")),
            (request(Role::Admin, &[], Some(0)), Some("ttlSeconds: must be at least 1")),
            (request(Role::Admin, &[], Some(u64::MAX)), Some("ttlSeconds: 18446744073709551615 is more")),
        ];
        for (request, expected) in cases {
            match (check_request(request), expected) {
                (Ok(()), None) => {}
                (Err(message), Some(expected)) => {
                    assert!(message.contains(expected), "{request:?}: {message}")
                }
                (got, expected) => panic!("{request:?}: got {got:?}, expected {expected:?}"),
            }
        }
        let mut long = request(Role::Admin, &[], None);
        long.description = "x".repeat(MAX_DESCRIPTION + 1);
        assert!(check_request(&long).unwrap_err().starts_with("description:"));
    }

    /// The store as the token route uses it: every grant and write in order, and grants or puts
    /// refused on demand.
    struct Recorded {
        inner: crate::store::embedded::EmbeddedStore,
        seen: std::sync::Mutex<Vec<String>>,
        fail_grant: bool,
        fail_put: bool,
    }

    impl crate::store::layer::StoreLayer for Recorded {
        fn inner(&self) -> &dyn crate::store::Store {
            &self.inner
        }

        fn admit(&self, request: crate::store::layer::Request<'_>) -> Result<(), StoreError> {
            use crate::store::layer::Request;
            let (seen, refuse) = match request {
                Request::LeaseGrant => ("grant".to_owned(), self.fail_grant),
                Request::Put(key) => (format!("put {}", key.split('/').nth(3).unwrap_or(key)), self.fail_put),
                Request::LeaseRevoke(_) => ("revoke".to_owned(), false),
                _ => return Ok(()),
            };
            self.seen.lock().unwrap().push(seen);
            if refuse {
                return Err(StoreError::Unavailable("refused by the test".to_owned()));
            }
            Ok(())
        }
    }

    /// A token with a TTL is one put carrying its lease, after the grant: a failed grant or put
    /// stores nothing, so no record can be left without its lease (an immortal token).
    #[tokio::test]
    async fn a_token_with_a_ttl_is_written_once_with_its_lease_or_not_at_all() {
        use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
        use crate::store::Store;
        use std::sync::Arc;
        let check = |fail_grant: bool, fail_put: bool, status: u16, order: &'static [&'static str]| async move {
            let dir = tempfile::tempdir().unwrap();
            let inner =
                EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap();
            let store = Arc::new(Recorded { inner, seen: Default::default(), fail_grant, fail_put });
            let app = super::super::router(
                super::super::ApiState::new(store.clone(), "tokens-host", None),
                false,
                tokio_util::sync::CancellationToken::new(),
            );
            let request = axum::http::Request::builder()
                .method("POST")
                .uri("/api/v1/tokens")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(r#"{"role": "viewer", "ttlSeconds": 3600}"#))
                .unwrap();
            let answer = tower::ServiceExt::oneshot(app, request).await.unwrap();
            assert_eq!(answer.status().as_u16(), status, "grant fails: {fail_grant}, put fails: {fail_put}");
            assert_eq!(*store.seen.lock().unwrap(), order);
            let stored = store.inner.list(keys::TOKENS).await.unwrap().kvs;
            if status == 201 {
                assert_eq!(stored.len(), 1);
                assert_ne!(stored[0].lease, 0, "the record is on its lease from its first write");
            } else {
                assert!(stored.is_empty(), "nothing stored: {stored:?}");
            }
        };
        check(false, false, 201, &["grant", "put tokens"]).await;
        check(true, false, 503, &["grant"]).await;
        check(false, true, 503, &["grant", "put tokens", "revoke"]).await;
    }
}
