//! The agent upgrade campaign's routes (docs/upgrades.md):
//!
//! ```text
//! POST /api/v1/upgrades          {"version": V, "image": REPO?, "selector": SEL?, "timeoutSeconds": N?}
//!                                creates a campaign (201); 409 while another one runs
//! GET  /api/v1/upgrades          every campaign, oldest first
//! GET  /api/v1/upgrades/{id}     one campaign
//! POST /api/v1/upgrades/{id}/cancel
//!                                asks the leader to stop the campaign (202, the campaign as it
//!                                stands); 409 once it has finished; 404 when unknown
//! ```
//!
//! Creating a campaign only writes its record: the scheduler's leader drives it
//! ([`crate::controllers::upgrade::drive`]). The hosts are chosen here, once: those whose labels match the
//! selector, ordered by name with the scheduler's leader last (so that leadership moves once, at
//! the end, rather than in the middle). Hosts whose agent does not run in a container, or that are
//! NotReady, are listed as `Skipped` with the reason. A campaign that would move an agent to an image
//! repository neither it runs nor `kedge agent --upgrade-repository` allows is refused (403,
//! `RepositoryNotAllowed`); see [`upgrade::check_repository`].

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::selector::LabelSelector;
use super::{ApiError, ApiResult, AppState};
use crate::store::{keys, PutCondition};
use crate::upgrade::{
    self, repository_of, Campaign, CampaignHost, CampaignState, HostUpgrade, HostUpgradeState,
    DEFAULT_TIMEOUT, MAX_TIMEOUT,
};

/// The body of `POST /api/v1/upgrades`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CampaignRequest {
    version: String,
    /// The repository to take `VERSION` from; default: each agent's current image repository.
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    selector: Option<String>,
    #[serde(default)]
    timeout_seconds: Option<u64>,
}

pub(super) async fn create_campaign(
    State(state): State<AppState>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request: CampaignRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid upgrade request: {e}")))?;
    let version = request.version.trim();
    let valid_tag = !version.is_empty()
        && version.len() <= 128
        && version.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !version.starts_with(['.', '-']);
    if !valid_tag {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("version {version:?} is not an image tag (letters, digits, `_`, `.`, `-`; at most 128)"),
        ));
    }
    if let Some(image) = &request.image {
        if image.is_empty() || repository_of(image) != image.as_str() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "image {image:?} must be a repository without a tag or digest (the tag is --version)"
                ),
            ));
        }
    }
    let selector_text = request.selector.clone().unwrap_or_default();
    let selector = LabelSelector::parse(&selector_text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("selector: {e}")))?;
    let timeout_seconds = request.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT.as_secs());
    if !(1..=MAX_TIMEOUT.as_secs()).contains(&timeout_seconds) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "timeoutSeconds {timeout_seconds} is out of range: from 1 to {} (a day)",
                MAX_TIMEOUT.as_secs()
            ),
        )
        .with("field", json!("timeoutSeconds")));
    }

    let store = &state.api.store;
    let existing = store.list(keys::UPGRADE_CAMPAIGNS).await?;
    if let Some(running) = existing
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Campaign>(&kv.value).ok())
        .find(|c| c.state == CampaignState::Running)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("campaign {} is still running; wait for it to finish", running.id),
        )
        .with("campaign", json!(running.id)));
    }
    let leader =
        store.get(keys::SCHEDULER_LEADER).await?.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    let views = upgrade::host_views(store).await?;
    let mut chosen: Vec<CampaignHost> = views
        .iter()
        .filter_map(|(name, view)| Some((name, view.record.as_ref()?)))
        .filter(|(_, record)| selector.matches(&record.labels))
        .map(|(name, record)| {
            let ready = views.get(name).is_some_and(|view| view.ready);
            let (image, state, message) = match &record.container {
                Some(_) if !ready => (
                    String::new(),
                    HostUpgradeState::Skipped,
                    "host is NotReady: its agent cannot be asked".to_owned(),
                ),
                Some(container) => {
                    let repository =
                        request.image.clone().unwrap_or_else(|| repository_of(&container.image).to_owned());
                    (format!("{repository}:{version}"), HostUpgradeState::Pending, String::new())
                }
                None => (
                    String::new(),
                    HostUpgradeState::Skipped,
                    "the agent does not run in a container: upgrade it by hand".to_owned(),
                ),
            };
            CampaignHost {
                name: name.clone(),
                image,
                state,
                message,
                started_at: None,
                finished_at: None,
                duration_seconds: None,
            }
        })
        .collect();
    // An agent is moved only within its own repository or to one the fleet allows: the agents check
    // it again, but a campaign that would fail on every host is better refused at once.
    let refused: Vec<String> = views
        .iter()
        .filter_map(|(name, view)| {
            let container = view.record.as_ref()?.container.as_ref()?;
            let host =
                chosen.iter().find(|host| &host.name == name && host.state == HostUpgradeState::Pending)?;
            let message =
                upgrade::check_repository(&container.image, &host.image, &state.api.upgrade_repositories)
                    .err()?;
            Some(format!("{name}: {message}"))
        })
        .collect();
    if !refused.is_empty() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, refused.join("; "))
            .with("reason", json!("RepositoryNotAllowed")));
    }
    if chosen.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no host matches selector {selector_text:?}"),
        ));
    }
    chosen.sort_by_key(|host| (Some(&host.name) == leader.as_ref(), host.name.clone()));
    let now = Utc::now();
    let campaign = Campaign {
        id: upgrade::new_campaign_id(now),
        version: version.to_owned(),
        selector: selector_text,
        timeout_seconds,
        state: CampaignState::Running,
        message: String::new(),
        created_at: upgrade::format_time(now),
        finished_at: None,
        cancel_requested_at: None,
        hosts: chosen,
    };
    let key = keys::upgrade_campaign_key(&campaign.id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let value = serde_json::to_vec(&campaign)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    state.api.store.put(&key, value, PutCondition::Absent, 0).await?;
    Ok((StatusCode::CREATED, Json(campaign_json(&campaign))))
}

pub(super) async fn list_campaigns(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let listed = state.api.store.list(keys::UPGRADE_CAMPAIGNS).await?;
    let mut campaigns: Vec<Campaign> =
        listed.kvs.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
    campaigns.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
    let items: Vec<Value> = campaigns.iter().map(campaign_json).collect();
    Ok(Json(json!({
        "kind": "UpgradeCampaignList",
        "metadata": { "resourceVersion": listed.revision.to_string() },
        "items": items,
    })))
}

pub(super) async fn read_campaign(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let key =
        keys::upgrade_campaign_key(&id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let Some(kv) = state.api.store.get(&key).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("upgrade campaign {id} not found")));
    };
    let campaign: Campaign = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("stored campaign {id}: {e}"))
    })?;
    Ok(Json(campaign_json(&campaign)))
}

/// `POST /api/v1/upgrades/{id}/cancel`: sets the campaign's `cancelRequestedAt` by compare-and-swap
/// (the leader's passes write it the same way, so neither overwrites the other; a lost race is read
/// and tried again). Asking twice is accepted twice; the first request's time stays.
pub(super) async fn cancel_campaign(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let key =
        keys::upgrade_campaign_key(&id).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let store = &state.api.store;
    for _ in 0..5 {
        let Some(kv) = store.get(&key).await? else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, format!("upgrade campaign {id} not found")));
        };
        let mut campaign: Campaign = serde_json::from_slice(&kv.value).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("stored campaign {id}: {e}"))
        })?;
        if campaign.state != CampaignState::Running {
            let finished = json!(campaign.state);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "upgrade campaign {id} has already finished: {}",
                    finished.as_str().unwrap_or_default()
                ),
            )
            .with("campaign", json!(id))
            .with("state", finished));
        }
        if campaign.cancel_requested_at.is_some() {
            return Ok((StatusCode::ACCEPTED, Json(campaign_json(&campaign))));
        }
        campaign.cancel_requested_at = Some(upgrade::format_time(Utc::now()));
        let value = serde_json::to_vec(&campaign)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        match store.put(&key, value, PutCondition::ModRevision(kv.mod_revision), 0).await {
            Ok(_) => {
                tracing::info!(campaign = %id, "agent upgrade campaign: cancel requested");
                return Ok((StatusCode::ACCEPTED, Json(campaign_json(&campaign))));
            }
            Err(crate::store::StoreError::Conflict { .. }) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("upgrade campaign {id} kept changing; ask again"),
    ))
}

/// Adds each host's last upgrade (its request key) to the host objects of `GET /api/v1/hosts`, as
/// `upgrade`.
pub(super) async fn merge_host_upgrades(state: &AppState, hosts: &mut [Value]) -> ApiResult<()> {
    let upgrades = state.api.store.list(keys::HOST_UPGRADES).await?;
    for kv in &upgrades.kvs {
        let Some(name) = keys::parse_host_upgrade_key(&kv.key) else { continue };
        let Ok(upgrade) = serde_json::from_slice::<HostUpgrade>(&kv.value) else { continue };
        if let Some(host) = hosts.iter_mut().find(|h| h.get("name").and_then(Value::as_str) == Some(name)) {
            host["upgrade"] = serde_json::to_value(&upgrade).unwrap_or(Value::Null);
        }
    }
    Ok(())
}

fn campaign_json(campaign: &Campaign) -> Value {
    let mut value = serde_json::to_value(campaign).unwrap_or(Value::Null);
    value["kind"] = json!("UpgradeCampaign");
    value
}
