//! Host registration: the agent keeps a record of its host in the store (name, labels, agent and
//! Docker versions, capacity, last heartbeat, the container the agent runs in) and a key on a lease
//! that exists only while it is alive. A host whose lease lapsed is NotReady; its record stays, so
//! `kedge get hosts` still lists it.
//!
//! An agent that runs in a container finds that container through its engine ([`find_own_container`]),
//! so that an upgrade campaign can replace it (docs/upgrades.md). Its version is then the image's
//! `org.opencontainers.image.version` label when it has one, else the binary's version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::docker::{DockerClient, EngineInfo, ObservedContainer};
use crate::store::{keys, LeaseId, PutCondition, SharedStore, StoreError};

/// How often the lease is renewed (a keep-alive: no store revision).
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// The record is rewritten when its content changes, when the lease had to be granted anew, and at
/// least this often (so `lastHeartbeat` of a host that died says roughly when). Everything else rides
/// the lease: an idle agent adds no store revision between two refreshes.
pub const RECORD_REFRESH: Duration = Duration::from_secs(300);
/// How often the engine is asked again for what the record tells of it (version, CPUs, memory),
/// besides when the lease had to be granted anew. Asking at every heartbeat was half a millisecond
/// of an idle agent's CPU every 5 s (the engine's `/info` answer is large); an engine upgraded in
/// place shows in the record within this.
const ENGINE_INFO_REFRESH: Duration = Duration::from_secs(60);
/// The liveness lease's TTL: three missed heartbeats make the host NotReady.
const LEASE_TTL_SECONDS: i64 = 15;

pub use crate::hosts::{AgentContainer, HostRecord};

/// The image label whose value is the agent's version when it runs in a container.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// What an agent knows about itself at start: its container (if any) and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    pub container: Option<AgentContainer>,
    pub version: String,
}

/// The rule, in order: `explicit` (`--container`, `KEDGE_CONTAINER`: an ID or name), else the
/// container ID in the paths of the files Docker bind-mounts into every container
/// (`/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` come from `<data-root>/containers/<ID>/`,
/// visible in `/proc/self/mountinfo`, also with `--network host`), else the hostname (Docker makes
/// a container's short ID its hostname). A candidate counts only when this agent's engine knows the
/// container, so an agent on a host, or in a container of another engine, has none.
pub async fn find_own_container(docker: &DockerClient, explicit: Option<&str>) -> Option<ObservedContainer> {
    let mut candidates = Vec::new();
    match explicit {
        Some(explicit) => candidates.push(explicit.to_owned()),
        None => {
            if let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") {
                candidates.extend(container_ids_in_mountinfo(&mountinfo));
            }
            if let Ok(hostname) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
                let hostname = hostname.trim();
                if hostname.len() == 12 && hostname.bytes().all(|b| b.is_ascii_hexdigit()) {
                    candidates.push(hostname.to_owned());
                }
            }
        }
    }
    for candidate in candidates {
        if let Ok(Some(container)) = docker.inspect_container(&candidate).await {
            return Some(container);
        }
    }
    None
}

/// Who this agent is: its container (see [`find_own_container`]) and its version.
pub async fn identify(docker: &DockerClient, explicit: Option<&str>) -> AgentIdentity {
    let Some(own) = find_own_container(docker, explicit).await else {
        return AgentIdentity { container: None, version: env!("CARGO_PKG_VERSION").to_owned() };
    };
    let labelled = match docker.inspect_image(&own.image_id).await {
        Ok(Some(image)) => image.labels.get(VERSION_LABEL).cloned(),
        _ => None,
    };
    AgentIdentity {
        version: labelled.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
        container: Some(AgentContainer {
            id: own.id,
            name: own.name,
            image: own.image,
            image_id: own.image_id,
        }),
    }
}

/// The 64-hex-digit container IDs in the mount sources of Docker's per-container files.
fn container_ids_in_mountinfo(mountinfo: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for line in mountinfo.lines() {
        for field in line.split(' ') {
            let Some((_, rest)) = field.split_once("/containers/") else { continue };
            let Some((id, file)) = rest.split_once('/') else { continue };
            let docker_file = matches!(file, "hostname" | "hosts" | "resolv.conf");
            if docker_file
                && id.len() == 64
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && !ids.iter().any(|i| i == id)
            {
                ids.push(id.to_owned());
            }
        }
    }
    ids
}

/// How recent the ready file must be for `kedge healthcheck` to answer healthy: three heartbeats.
pub const READY_FILE_FRESHNESS: Duration = Duration::from_secs(HEARTBEAT.as_secs() * 3 + 1);

/// True when `path` was written by a heartbeat within [`READY_FILE_FRESHNESS`] (the container
/// image's HEALTHCHECK, `kedge healthcheck`, asks this).
pub fn ready_file_is_fresh(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age <= READY_FILE_FRESHNESS))
}

/// Keeps the host registered until `shutdown`; then revokes the lease, so the host reads NotReady
/// at once instead of after the TTL.
///
/// After each heartbeat that reached the store, `ready_file` (if any) is rewritten: the container
/// image's healthcheck reads its age, and the upgrade helper waits for that health to prove that
/// the new agent reports in.
pub(crate) async fn keep_registered(
    store: SharedStore,
    docker: DockerClient,
    name: String,
    labels: BTreeMap<String, String>,
    identity: AgentIdentity,
    ready_file: Option<PathBuf>,
    shutdown: CancellationToken,
) {
    let started_at = now();
    let mut lease: Option<LeaseId> = None;
    let mut written: Option<Written> = None;
    let mut engine: Option<(EngineInfo, tokio::time::Instant)> = None;
    loop {
        let (lease, written, engine) = (&mut lease, &mut written, &mut engine);
        let beat = heartbeat(&store, &docker, &name, &labels, &identity, &started_at, lease, written, engine);
        match beat.await {
            Ok(()) => {
                if let Some(path) = &ready_file {
                    if let Err(error) = std::fs::write(path, format!("{}\n", identity.version)) {
                        tracing::debug!(%error, path = %path.display(), "cannot write the ready file");
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "host heartbeat failed; retrying"),
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

/// The record as last written, without its heartbeat time, and when.
struct Written {
    record: HostRecord,
    at: tokio::time::Instant,
}

#[allow(clippy::too_many_arguments)]
async fn heartbeat(
    store: &SharedStore,
    docker: &DockerClient,
    name: &str,
    labels: &BTreeMap<String, String>,
    identity: &AgentIdentity,
    started_at: &str,
    lease: &mut Option<LeaseId>,
    written: &mut Option<Written>,
    engine: &mut Option<(EngineInfo, tokio::time::Instant)>,
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
    let asked_long_ago = engine.as_ref().is_none_or(|(_, at)| at.elapsed() >= ENGINE_INFO_REFRESH);
    if !renewed || asked_long_ago {
        // An engine that does not answer leaves what it said last (nothing yet: empty).
        match docker.info().await {
            Ok(info) => *engine = Some((info, tokio::time::Instant::now())),
            Err(error) => {
                tracing::debug!(%error, "the engine did not say what it is; the host record keeps what it said last")
            }
        }
    }
    let info = engine.as_ref().map(|(info, _)| info.clone()).unwrap_or_default();
    let mut record = HostRecord {
        name: name.to_owned(),
        labels: labels.clone(),
        version: identity.version.clone(),
        docker_version: info.server_version,
        cpus: info.cpus,
        memory_bytes: info.memory_bytes,
        started_at: started_at.to_owned(),
        last_heartbeat: String::new(),
        container: identity.container.clone(),
    };
    let fresh = written.as_ref().is_some_and(|w| w.record == record && w.at.elapsed() < RECORD_REFRESH);
    if renewed && fresh {
        return Ok(());
    }
    let unchanged = record.clone();
    record.last_heartbeat = now();
    let key = keys::host_key(name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let value = serde_json::to_vec(&record).map_err(|e| StoreError::Invalid(e.to_string()))?;
    store.put(&key, value, PutCondition::Always, 0).await?;
    *written = Some(Written { record: unchanged, at: tokio::time::Instant::now() });
    Ok(())
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_id_comes_from_dockers_per_container_files() {
        let id = "3f4e5d6c7b8a".repeat(5) + "abcd";
        let mountinfo = format!(
            "600 580 0:52 / / rw,relatime - overlay overlay rw\n\
             611 600 8:1 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw - ext4 /dev/sda1 rw\n\
             612 600 8:1 /srv/d/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n\
             613 600 8:1 /home/me/containers/notanid/hostname /x rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(container_ids_in_mountinfo(&mountinfo), vec![id]);
        assert!(container_ids_in_mountinfo("600 580 0:52 / / rw - overlay overlay rw\n").is_empty());
    }
}
