//! Routes only the agent of a container's host can serve, from its own engine.
//!
//! `GET /api/v1/namespaces/{ns}/containers/{name}/logs?tail=N&follow=true&sinceSeconds=S&timestamps=true`:
//! a spec's container's logs, from the engine of the agent that serves the request, as
//! newline-delimited JSON (`{"type":"LOG","stream":"stdout|stderr","text":"..."}`). Only the agent of
//! the container's host has them; another agent answers 409 naming that host.
//!
//! `POST /api/v1/namespaces/{ns}/containers/{name}/exec` (`{"command": [...], "stdin": "...",
//! "user": "...", "workingDir": "..."}`): runs a command in the spec's running container, streaming
//! its output the same way, then `{"type":"EXIT","exitCode":N}`. Recorded as an `Exec` event naming
//! the program (not its arguments, which may hold secrets).

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, AppState};
use crate::docker::{
    labels, ContainerStats, DockerClient, DockerResult, ExecSpec, LogLine, LogStream, LogWindow,
    ObservedContainer,
};
use crate::events::{EventRecorder, EventType};
use crate::store::objects;

/// Lines of history sent when `tail` is not given.
const DEFAULT_TAIL: usize = 100;

pub(super) async fn container_logs(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    axum::extract::Query(params): axum::extract::Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (docker, container) = local_container(&state, &namespace, &name, "for its logs").await?;
    let number = |field: &str| -> ApiResult<Option<u64>> {
        params
            .get(field)
            .map(|text| {
                text.parse().map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, format!("{field}={text:?} is not a number"))
                })
            })
            .transpose()
    };
    let tail = number("tail")?.map_or(DEFAULT_TAIL, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let since = match number("sinceSeconds")? {
        // The engine takes a Unix time in an i32: a window reaching before 1970 is the whole log.
        Some(seconds) => {
            let now = chrono::Utc::now().timestamp();
            i32::try_from(now.saturating_sub(i64::try_from(seconds).unwrap_or(i64::MAX)).max(1)).unwrap_or(1)
        }
        None => 0,
    };
    let flag = |field: &str| matches!(params.get(field).map(String::as_str), Some("true" | "1"));
    let window = LogWindow { since, timestamps: flag("timestamps") };
    let lines = docker.logs_stream(&container.id, tail, flag("follow"), window).map(line_json);
    // End the stream on shutdown, so a follower does not hold the server open.
    let stopping = state.stopping.clone();
    let lines = lines.take_until(async move { stopping.cancelled().await });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

/// What `POST .../exec` asks for.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ExecRequest {
    command: Vec<String>,
    /// Written to the command's standard input, which is then closed; none: no standard input.
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
}

pub(super) async fn container_exec(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    Json(request): Json<ExecRequest>,
) -> ApiResult<Response> {
    let Some(program) = request.command.first().filter(|program| !program.is_empty()).cloned() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "command: give the program to run and its arguments",
        ));
    };
    let (docker, container) = local_container(&state, &namespace, &name, "to run commands in it").await?;
    if !container.state.running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("the container of {namespace}/{name} is not running; nothing can be run in it"),
        ));
    }
    let spec = ExecSpec {
        cmd: request.command,
        env: Vec::new(),
        user: request.user,
        working_dir: request.working_dir,
    };
    let (exec_id, output) = docker
        .exec_streaming(&container.id, &spec, request.stdin.map(String::into_bytes))
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("the Docker Engine: {e}")))?;
    EventRecorder::new(state.api.store.clone(), state.api.host.clone())
        .record(
            &format!("{namespace}/{name}"),
            EventType::Normal,
            "Exec",
            &format!("ran `{program}` in the container (kedge exec)"),
        )
        .await;
    let exit = futures::stream::once(async move {
        let value = match docker.exec_exit_code(&exec_id).await {
            Ok(code) => json!({"type": "EXIT", "exitCode": code}),
            Err(error) => json!({"type": "ERROR", "object": {"error": error.to_string()}}),
        };
        Ok::<_, std::io::Error>(ndjson(&value))
    });
    let stopping = state.stopping.clone();
    let lines = output.map(line_json).chain(exit).take_until(async move { stopping.cancelled().await });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

/// `GET /api/v1/namespaces/{ns}/containers/{name}/stats`: one sample of the container's resource use
/// (`kedge top`), from the engine of the agent of its host (another agent answers 409 naming it).
pub(super) async fn container_stats(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult<Json<ContainerStats>> {
    let (docker, container) = local_container(&state, &namespace, &name, "for its stats").await?;
    let stats = docker
        .stats(&container.id)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("the Docker Engine: {e}")))?;
    Ok(Json(stats))
}

/// The spec's container on this agent's engine, for a route that only that agent can serve: 404
/// when there is no such spec (or no container of it here), 409 naming the host it runs on.
async fn local_container(
    state: &AppState,
    namespace: &str,
    name: &str,
    purpose: &str,
) -> ApiResult<(DockerClient, ObservedContainer)> {
    let store = state.api.store.as_ref();
    if objects::get_container(store, namespace, name).await?.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("container {namespace}/{name} not found")));
    }
    let Some(docker) = state.api.docker.clone() else {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "this server has no Docker Engine"));
    };
    let host = objects::get_status(store, namespace, name).await?.and_then(|(status, _)| status.host);
    if let Some(host) = host.filter(|host| *host != state.api.host) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("container {namespace}/{name} runs on host {host}; ask that host's agent {purpose}"),
        ));
    }
    let key = format!("{namespace}/{name}");
    let container = docker
        .inspect_container(name)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("the Docker Engine: {e}")))?
        .filter(|container| labels::key(&container.labels) == Some(key.as_str()))
        .ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("no container runs for {key} on this host"))
        })?;
    Ok((docker, container))
}

fn line_json(line: DockerResult<LogLine>) -> Result<Bytes, std::io::Error> {
    let value = match line {
        Ok(line) => json!({
            "type": "LOG",
            "stream": if line.stream == LogStream::Stderr { "stderr" } else { "stdout" },
            "text": line.text,
        }),
        Err(error) => json!({"type": "ERROR", "object": {"error": error.to_string()}}),
    };
    Ok(ndjson(&value))
}

fn ndjson(value: &serde_json::Value) -> Bytes {
    let mut text = serde_json::to_vec(value).unwrap_or_default();
    text.push(b'\n');
    Bytes::from(text)
}
