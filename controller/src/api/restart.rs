//! `POST /api/v1/namespaces/{ns}/containers/{name}/restart`: restarts a spec's container now, on the
//! engine of the agent that serves the request (docker-map's `restart`: only this container, not its
//! dependencies), and records it as an event. A one-off: nothing about it is stored in the spec, and
//! the container keeps its ID. Only the agent of the container's host can; another answers 409.
//! With `?exec=true`, the spec's post-start commands run again after the restart (docker-map's
//! `restart_exec_commands`); `ensureRunning` ones only when not running already.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiResult, AppState};
use crate::docker::{labels, ExecSpec};
use crate::events::{EventRecorder, EventType};
use crate::executor::Executor;
use crate::planner::Action;
use crate::store::objects;

pub(super) async fn restart_container(
    State(state): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let rerun_execs = matches!(params.get("exec").map(String::as_str), Some("true" | "1"));
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
    // Through the executor, the one place that mutates containers (it checks ownership again).
    let executor = Executor::new(docker);
    let restart = Action::Restart {
        container: container.id.clone(),
        reason: "a restart was requested".to_owned(),
        timeout,
    };
    executor.execute(&restart, &mut |_| {}).await.map_err(|e| {
        ApiError::new(StatusCode::BAD_GATEWAY, format!("the Docker Engine: {}", crate::error_chain(&e)))
    })?;
    let short = &container.id[..container.id.len().min(12)];
    let events = EventRecorder::new(state.api.store.clone(), state.api.host.clone());
    events
        .record(
            &key,
            EventType::Normal,
            "Restarted",
            &format!("restarted container {name} ({short}) on request"),
        )
        .await;
    let mut execs_ran = 0;
    if rerun_execs {
        for exec in &spec.spec.post_start {
            let action = Action::RunExec {
                container: container.id.clone(),
                exec: ExecSpec { cmd: exec.command.clone(), user: exec.user.clone(), ..ExecSpec::default() },
                unless_running: exec.policy == kedge_crds::ExecPolicy::EnsureRunning,
            };
            executor.execute(&action, &mut |_| {}).await.map_err(|e| {
                ApiError::new(StatusCode::BAD_GATEWAY, format!("post-start command {:?}: {e}", exec.command))
            })?;
            execs_ran += 1;
        }
        let message = format!("ran {execs_ran} post-start command(s) again after the restart");
        events.record(&key, EventType::Normal, "ExecRan", &message).await;
    }
    Ok(Json(json!({
        "kind": "RestartReport",
        "namespace": namespace,
        "name": name,
        "id": container.id,
        "host": state.api.host,
        "postStartCommands": execs_ran,
    })))
}
