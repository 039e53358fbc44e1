//! The host lock: a key on a lease that only one agent per Docker host holds, so two agents for the
//! same engine never both act. A second agent waits until the first lets go or its lease lapses.
//!
//! A holder that died (SIGKILL, a crash) leaves its key until the lease lapses. The key names the
//! holder's process (pid, start time and PID namespace), machine and boot, so an agent restarted on the
//! same machine, in the same PID namespace, sees that the holder is gone and takes the lock over at once
//! instead of waiting for the lease. A holder in another PID namespace (an agent in a container and one
//! on the host) cannot be judged from here and is waited for; so is one that names no namespace.
//!
//! The holder checks every renewal that the key is still its own (on its lease), from a watch of the
//! key (the store is asked only while that watch is not in sync): a lock taken from it by any means is
//! noticed within a renewal period, and the agent stops at once.
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
    keys::agent_lock_key(host).map_err(|e| StoreError::Invalid(e.to_string()))
}

impl HostLock {
    /// Waits until this agent holds the lock of `host`.
    pub(crate) async fn acquire(store: SharedStore, host: &str) -> Result<HostLock, StoreError> {
        let key = lock_key(host)?;
        let holder = Holder::this_process().to_string();
        let mut announced = false;
        loop {
            let lease = store.lease_grant(LOCK_TTL_SECONDS).await?;
            match store.put(&key, holder.clone().into_bytes(), PutCondition::Absent, lease).await {
                Ok(_) => {
                    let (report, lost) = watch::channel(false);
                    let keeper = tokio::spawn(keep_alive(store.clone(), key.clone(), lease, report));
                    return Ok(HostLock { store, key, lease, lost, keeper });
                }
                Err(StoreError::Conflict { .. }) => {
                    let _ = store.lease_revoke(lease).await;
                    let Some(current) = store.get(&key).await? else { continue };
                    let text = String::from_utf8_lossy(&current.value).into_owned();
                    if Holder::parse(&text).is_some_and(|holder| holder.is_dead_here()) {
                        tracing::info!(host, holder = %text, "the lock's holder died on this machine; taking over");
                        let condition = crate::store::DeleteCondition::ModRevision(current.mod_revision);
                        match store.delete(&key, condition).await {
                            Ok(_) | Err(StoreError::Conflict { .. }) => continue,
                            Err(error) => return Err(error),
                        }
                    }
                    if !announced {
                        tracing::warn!(host, holder = %text, "another agent holds this host's lock; waiting for it");
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

async fn keep_alive(store: SharedStore, key: String, lease: LeaseId, lost: watch::Sender<bool>) {
    let period = Duration::from_secs((LOCK_TTL_SECONDS / 3) as u64);
    // The key, watched (ended when this task is aborted or returns): whether it is still ours is read
    // from the watch, and from the store only while the watch is not in sync.
    let watching = tokio_util::sync::CancellationToken::new();
    let _stop_watching = watching.clone().drop_guard();
    let cache =
        crate::runtime::reflector::spawn(store.clone(), &key, "host lock", |kv| Ok(kv.lease), watching);
    loop {
        tokio::time::sleep(period).await;
        let renewed = match store.lease_keep_alive(lease).await {
            Ok(_) if cache.in_sync() => Ok(cache.get(&key) == Some(lease)),
            Ok(_) => store.get(&key).await.map(|kv| kv.filter(|kv| kv.lease == lease).is_some()),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(error) => Err(error),
        };
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                tracing::error!(%key, "this agent's host lock expired or was taken; stopping");
                let _ = lost.send(true);
                return;
            }
            // Unreachable store: keep acting from the last known state, keep trying.
            Err(error) => tracing::warn!(%error, "could not renew the host lock; retrying"),
        }
    }
}

/// Who holds a lock: `pid PID on MACHINE boot BOOT_ID` and, since kedge judges PID namespaces,
/// ` pidns NS start TICKS` (the namespace's inode and the process's start time in clock ticks).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    pid: u32,
    machine: String,
    boot: String,
    /// `/proc/self/ns/pid`'s target, e.g. `pid:[4026531836]`; empty when unknown.
    pid_namespace: String,
    /// Field 22 of `/proc/PID/stat`; 0 when unknown.
    start: u64,
}

impl Holder {
    fn this_process() -> Holder {
        let pid = std::process::id();
        Holder {
            pid,
            machine: read_trimmed("/proc/sys/kernel/hostname"),
            boot: boot_id(),
            pid_namespace: pid_namespace(),
            start: start_time(pid).unwrap_or(0),
        }
    }

    fn parse(text: &str) -> Option<Holder> {
        let words: Vec<&str> = text.split(' ').collect();
        let (base, rest) = words.split_at(words.len().min(6));
        let ["pid", pid, "on", machine, "boot", boot] = base[..] else { return None };
        let (pid_namespace, start) = match rest {
            [] => (String::new(), 0),
            ["pidns", ns, "start", start] => ((*ns).to_owned(), start.parse().ok()?),
            _ => return None,
        };
        Some(Holder {
            pid: pid.parse().ok()?,
            machine: machine.to_owned(),
            boot: boot.to_owned(),
            pid_namespace,
            start,
        })
    }

    /// True only when the holder ran on this machine, in this boot and this PID namespace, and its
    /// process is gone (no such pid, or a pid reused by a process started at another time). A holder
    /// elsewhere, in another namespace, or one that cannot be judged, is waited for.
    fn is_dead_here(&self) -> bool {
        let here = Holder::this_process();
        let comparable = !self.boot.is_empty()
            && !self.pid_namespace.is_empty()
            && self.machine == here.machine
            && self.boot == here.boot
            && self.pid_namespace == here.pid_namespace
            && self.pid != here.pid;
        comparable && start_time(self.pid).is_none_or(|start| self.start != 0 && start != self.start)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {} boot {}", self.pid, self.machine, self.boot)?;
        if !self.pid_namespace.is_empty() {
            write!(f, " pidns {} start {}", self.pid_namespace, self.start)?;
        }
        Ok(())
    }
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|target| target.to_string_lossy().replace(' ', "_"))
        .unwrap_or_default()
}

/// When process `pid` started, in clock ticks since boot; `None` when there is no such process.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id")
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|text| text.trim().replace(' ', "_")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_round_trip_and_judge_liveness() {
        let me = Holder::this_process();
        assert!(!me.pid_namespace.is_empty() && me.start > 0, "{me}");
        assert_eq!(Holder::parse(&me.to_string()), Some(me.clone()));
        assert!(!me.is_dead_here(), "this process is alive");
        let gone = Holder { pid: u32::MAX - 1, ..me.clone() };
        assert!(gone.is_dead_here(), "no such pid on this machine");
        let elsewhere = Holder { machine: "another-machine".into(), ..gone.clone() };
        assert!(!elsewhere.is_dead_here(), "a holder elsewhere is never judged dead");
        let other_boot = Holder { boot: "another-boot".into(), ..gone.clone() };
        assert!(!other_boot.is_dead_here());
        let other_namespace = Holder { pid_namespace: "pid:[1]".into(), ..gone.clone() };
        assert!(!other_namespace.is_dead_here(), "a holder in another PID namespace is waited for");
        let old_format = Holder::parse(&format!("pid {} on {} boot {}", gone.pid, gone.machine, gone.boot));
        assert!(!old_format.unwrap().is_dead_here(), "a holder naming no namespace is waited for");
        assert_eq!(Holder::parse("pid 12 on somewhere"), None);
    }

    #[test]
    fn a_reused_pid_is_not_the_holder() {
        let me = Holder::this_process();
        // This process's parent is alive, but started at another time than recorded: a reused pid.
        let parent = std::os::unix::process::parent_id();
        let reused = Holder { pid: parent, start: 1, ..me.clone() };
        assert!(reused.is_dead_here());
        let alive = Holder { pid: parent, start: start_time(parent).unwrap(), ..me };
        assert!(!alive.is_dead_here());
    }
}
