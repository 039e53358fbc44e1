//! `GET /api/v1/namespaces/{ns}/containers/{name}/logs?tail=N&follow=true`: a spec's container's logs,
//! from the engine of the agent that serves the request, as newline-delimited JSON
//! (`{"type":"LOG","stream":"stdout|stderr","text":"..."}`). Only the agent of the container's host
//! has them; another agent answers 409 naming that host.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;

use super::{ApiError, ApiResult, AppState};
use crate::docker::{labels, LogStream};
use crate::store::objects;

/// Lines of history sent when `tail` is not given.
const DEFAULT_TAIL: usize = 100;

pub(super) async fn container_logs(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let store = state.api.store.as_ref();
    if objects::get_container(store, &namespace, &name).await?.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("container {namespace}/{name} not found")));
    }
    let Some(docker) = state.api.docker.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this server has no Docker Engine to read logs from",
        ));
    };
    let host = objects::get_status(store, &namespace, &name).await?.and_then(|(status, _)| status.host);
    if let Some(host) = host.filter(|host| *host != state.api.host) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("container {namespace}/{name} runs on host {host}; ask that host's agent for its logs"),
        ));
    }
    let key = format!("{namespace}/{name}");
    let container = docker
        .inspect_container(&name)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("the Docker Engine: {e}")))?
        .filter(|container| labels::key(&container.labels) == Some(key.as_str()))
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("no container runs for {key} on this host"))
        })?;
    let tail = match params.get("tail") {
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("tail={text:?} is not a number")))?,
        None => DEFAULT_TAIL,
    };
    let follow = matches!(params.get("follow").map(String::as_str), Some("true" | "1"));
    let stopping = state.stopping.clone();
    let lines = docker.logs_stream(&container.id, tail, follow).map(|line| {
        let value = match line {
            Ok(line) => json!({
                "type": "LOG",
                "stream": if line.stream == LogStream::Stderr { "stderr" } else { "stdout" },
                "text": line.text,
            }),
            Err(error) => json!({"type": "ERROR", "object": {"error": error.to_string()}}),
        };
        let mut text = serde_json::to_vec(&value).unwrap_or_default();
        text.push(b'\n');
        Ok::<_, std::io::Error>(Bytes::from(text))
    });
    // End the stream on shutdown, so a follower does not hold the server open.
    let lines = lines.take_until(async move { stopping.cancelled().await });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(lines)).into_response())
}
