//! `POST /api/v1/namespaces/{ns}/containers/{name}/restart`: restarts a spec's container now, on the
//! engine of the agent that serves the request (docker-map's `restart`: only this container, not its
//! dependencies), and records it as an event. A one-off: nothing about it is stored in the spec, and
//! the container keeps its ID. Only the agent of the container's host can; another answers 409.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState};
use crate::docker::labels;
use crate::events::{EventRecorder, EventType};
use crate::store::objects;

pub(super) async fn restart_container(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let Some(docker) = state.api.docker.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this server has no Docker Engine to restart containers on",
        ));
    };
    let store = state.api.store.as_ref();
    let Some(spec) = objects::get_container(store, &namespace, &name).await? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("container {namespace}/{name} not found")));
    };
    let host = objects::get_status(store, &namespace, &name).await?.and_then(|(status, _)| status.host);
    if let Some(host) = host.filter(|host| *host != state.api.host) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("container {namespace}/{name} runs on host {host}; ask that host's agent to restart it"),
        ));
    }
    let key = spec.key();
    let engine = |e: crate::docker::DockerError| {
        ApiError::new(StatusCode::BAD_GATEWAY, format!("the Docker Engine: {e}"))
    };
    let container = docker
        .inspect_container(&name)
        .await
        .map_err(engine)?
        .filter(|container| {
            labels::is_managed(&container.labels) && labels::key(&container.labels) == Some(key.as_str())
        })
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no container of {key} on this host")))?;
    let timeout = spec.spec.stop_grace_period.map(|period| period.duration());
    docker.restart_container(&container.id, timeout).await.map_err(engine)?;
    let short = &container.id[..container.id.len().min(12)];
    EventRecorder::new(state.api.store.clone(), state.api.host.clone())
        .record(
            &key,
            EventType::Normal,
            "Restarted",
            &format!("restarted container {name} ({short}) on request"),
        )
        .await;
    Ok(Json(json!({
        "kind": "RestartReport",
        "namespace": namespace,
        "name": name,
        "id": container.id,
        "host": state.api.host,
    })))
}
