//! The host lock: a key on a lease that only one agent per Docker host holds, so two agents for the
//! same engine never both act. A second agent waits until the first lets go or its lease lapses.
//!
//! While the store is unreachable the holder keeps acting: no other agent can take the lock without
//! the store either. The lock is lost only when the store says the lease is gone; the agent then
//! stops (its supervisor restarts it, and it waits for the lock like any newcomer).

use std::time::Duration;

use tokio::sync::watch;

use crate::store::{keys, LeaseId, PutCondition, SharedStore, StoreError};

/// The lease's time to live; the holder renews it every third of it.
const LOCK_TTL_SECONDS: i64 = 10;

pub(crate) struct HostLock {
    store: SharedStore,
    key: String,
    lease: LeaseId,
    lost: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
}

/// The key of a host's lock.
fn lock_key(host: &str) -> Result<String, StoreError> {
    keys::check_segment(host).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(format!("/kedge/v1/locks/agents/{host}"))
}

impl HostLock {
    /// Waits until this agent holds the lock of `host`.
    pub(crate) async fn acquire(store: SharedStore, host: &str) -> Result<HostLock, StoreError> {
        let key = lock_key(host)?;
        let holder = format!("pid {} on {}", std::process::id(), hostname());
        let mut announced = false;
        loop {
            let lease = store.lease_grant(LOCK_TTL_SECONDS).await?;
            match store.put(&key, holder.clone().into_bytes(), PutCondition::Absent, lease).await {
                Ok(_) => {
                    let (report, lost) = watch::channel(false);
                    let keeper = tokio::spawn(keep_alive(store.clone(), lease, report));
                    return Ok(HostLock { store, key, lease, lost, keeper });
                }
                Err(StoreError::Conflict { .. }) => {
                    let _ = store.lease_revoke(lease).await;
                    if !announced {
                        let current =
                            store.get(&key).await?.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                        tracing::warn!(host, holder = ?current, "another agent holds this host's lock; waiting for it");
                        announced = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => {
                    let _ = store.lease_revoke(lease).await;
                    return Err(error);
                }
            }
        }
    }

    /// Resolves when the lock is lost (its lease expired in the store).
    pub(crate) async fn lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Lets go of the lock so another agent can take it at once.
    pub(crate) async fn release(self) {
        self.keeper.abort();
        if let Err(error) = self.store.lease_revoke(self.lease).await {
            tracing::debug!(key = %self.key, %error, "could not revoke the lock's lease; it will expire");
        }
    }
}

async fn keep_alive(store: SharedStore, lease: LeaseId, lost: watch::Sender<bool>) {
    let period = Duration::from_secs((LOCK_TTL_SECONDS / 3) as u64);
    loop {
        tokio::time::sleep(period).await;
        match store.lease_keep_alive(lease).await {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => {
                tracing::error!("this agent's host lock expired; stopping");
                let _ = lost.send(true);
                return;
            }
            // Unreachable store: keep acting from the last known state, keep trying.
            Err(error) => tracing::warn!(%error, "could not renew the host lock; retrying"),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}
