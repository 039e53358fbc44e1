//! Host registration: the agent keeps a record of its host in the store (name, labels, agent and
//! Docker versions, capacity, last heartbeat) and a key on a lease that exists only while it is
//! alive. A host whose lease lapsed is NotReady; its record stays, so `kedge get hosts` still lists it.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::docker::DockerClient;
use crate::store::{keys, LeaseId, PutCondition, SharedStore, StoreError};

/// How often the record is refreshed and the lease renewed.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// The liveness lease's TTL: three missed heartbeats make the host NotReady.
const LEASE_TTL_SECONDS: i64 = 15;

/// A host as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRecord {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// kedge's version on this host.
    pub version: String,
    pub docker_version: String,
    pub cpus: u64,
    pub memory_bytes: u64,
    /// RFC 3339.
    pub started_at: String,
    pub last_heartbeat: String,
}

/// Keeps the host registered until `shutdown`; then revokes the lease, so the host reads NotReady
/// at once instead of after the TTL.
pub(crate) async fn keep_registered(
    store: SharedStore,
    docker: DockerClient,
    name: String,
    labels: BTreeMap<String, String>,
    shutdown: CancellationToken,
) {
    let started_at = now();
    let mut lease: Option<LeaseId> = None;
    loop {
        if let Err(error) = heartbeat(&store, &docker, &name, &labels, &started_at, &mut lease).await {
            tracing::debug!(%error, "host heartbeat failed; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
    if let Some(lease) = lease {
        let _ = store.lease_revoke(lease).await;
    }
}

async fn heartbeat(
    store: &SharedStore,
    docker: &DockerClient,
    name: &str,
    labels: &BTreeMap<String, String>,
    started_at: &str,
    lease: &mut Option<LeaseId>,
) -> Result<(), StoreError> {
    let alive_key = keys::host_lease_key(name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let renewed = match *lease {
        Some(id) => match store.lease_keep_alive(id).await {
            Ok(_) => true,
            Err(StoreError::NotFound(_)) => false,
            Err(error) => return Err(error),
        },
        None => false,
    };
    if !renewed {
        let id = store.lease_grant(LEASE_TTL_SECONDS).await?;
        store.put(&alive_key, b"alive".to_vec(), PutCondition::Always, id).await?;
        *lease = Some(id);
    }
    let info = docker.info().await.unwrap_or_default();
    let record = HostRecord {
        name: name.to_owned(),
        labels: labels.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        docker_version: info.server_version,
        cpus: info.cpus,
        memory_bytes: info.memory_bytes,
        started_at: started_at.to_owned(),
        last_heartbeat: now(),
    };
    let key = keys::host_key(name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let value = serde_json::to_vec(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
    store.put(&key, value, PutCondition::Always, 0).await?;
    Ok(())
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}
