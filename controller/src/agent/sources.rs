//! The agent's sources of work: the store follower, the engine-event follower and the resync timer.
//! Each only updates the desired-state cache (the store follower) and adds keys to the work queue.
//!
//! Both followers reconnect with exponential backoff and jitter; after every reconnect they make up
//! for what they may have missed (the store follower re-lists, through [`crate::runtime::Watcher`];
//! the engine follower enqueues every key), because watches and event streams can drop silently.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::docker::{labels, DockerClient, Engine, EngineEvent, EventAction};
use crate::queue::WorkQueue;
use crate::runtime::{reflector, Watcher};
use crate::store::{keys, SharedStore};

use super::cache::DesiredState;
use super::snapshot::EngineSnapshot;

/// Reconnection backoff of the engine follower: quick at first, never slower than every 10 s.
fn reconnect_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Keeps `cache` equal to the store's specs with a [`Watcher`] (list, then watch from the list's
/// revision; on a compacted revision re-list, on any error mark the cache out of sync, keeping every
/// spec, and retry with backoff), enqueuing every key that changed. Ends when `shutdown` is cancelled.
pub(crate) async fn follow_store(
    store: SharedStore,
    cache: Arc<DesiredState>,
    queue: WorkQueue<String>,
    shutdown: CancellationToken,
) {
    let mut watcher = Watcher::new(store, keys::SPECS, shutdown);
    let _following = cache.reflector().following();
    while let Some(event) = watcher.next().await {
        let (changed, applied) = cache.apply(&event);
        reflector::log_sync("specs", keys::SPECS, &event, &applied);
        for key in changed {
            queue.add(key);
        }
    }
}

/// Turns the engine's container events into keys to reconcile. After every (re)connect it also
/// enqueues every known key, since events may have been missed while disconnected (an engine restart
/// is such a gap). Ends when `shutdown` is cancelled.
///
/// `since`: the first subscription asks the engine to replay the events from then on (the agent
/// passes the time before its first list of containers, so no change falls between that list and
/// the subscription). Every event stamps its key in `snapshot` ([`super::snapshot`]).
pub(crate) async fn follow_engine(
    agent: Arc<super::Agent>,
    since: Option<std::time::SystemTime>,
    shutdown: CancellationToken,
) {
    let (host, docker, cache) = (&agent.config.host_name, &agent.docker, &agent.cache);
    let (snapshot, queue, metrics) = (&agent.snapshot, &agent.queue, &agent.config.metrics);
    let mut backoff = reconnect_backoff();
    let mut connected_before = false;
    // After a reconnect, the engine replays events since the last one seen, closing most of the gap.
    let mut last_seen: Option<std::time::SystemTime> = since;
    loop {
        let mut events = Box::pin(docker.events_with_networks(last_seen));
        // Resync after subscribing, so nothing falls between the resync and the subscription.
        if connected_before {
            if let Err(error) = enqueue_everything(host, docker, cache, snapshot, queue, Duration::ZERO).await
            {
                tracing::warn!(%error, "resync after an engine reconnect failed");
            }
        }
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = events.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    let at = u64::try_from(event.time_nano)
                        .map(|nanos| std::time::UNIX_EPOCH + Duration::from_nanos(nanos))
                        .ok();
                    last_seen = at.or(last_seen);
                    backoff = reconnect_backoff();
                    if let Some(key) = key_of(host, docker, &event).await {
                        if let (Some(kind), Some(at)) = (drift_kind(&event.action), at) {
                            metrics.drift_seen(&key, kind, at);
                        }
                        snapshot.stamp(&key);
                        queue.add(key);
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "lost the engine's event stream; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!("the engine closed its event stream; reconnecting");
                    break;
                }
            }
        }
        connected_before = true;
        let delay = backoff.next().unwrap_or(Duration::from_secs(10));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The key of the spec an event may concern, for events that can mean drift. Exec, attach and the
/// like are the agent's own noise; containers kedge does not manage are none of its business.
async fn key_of(host: &str, docker: &DockerClient, event: &EngineEvent) -> Option<String> {
    if !can_mean_drift(&event.action) {
        return None;
    }
    match &event.action {
        // Network events carry the network's labels, not the container's: look the container up.
        EventAction::NetworkConnect { .. } | EventAction::NetworkDisconnect { .. } => {
            let container = docker.inspect_container(&event.id).await.ok()??;
            let ours = labels::is_managed_by_host(&container.labels, host);
            ours.then(|| labels::key(&container.labels).map(str::to_owned))?
        }
        _ => {
            let ours = labels::is_managed_by_host(&event.labels, host);
            ours.then(|| labels::key(&event.labels).map(str::to_owned))?
        }
    }
}

/// The kind of drift an event shows, for timing its repair ([`crate::metrics`]).
fn drift_kind(action: &EventAction) -> Option<crate::metrics::DriftKind> {
    match action {
        EventAction::Die => Some(crate::metrics::DriftKind::Stopped),
        EventAction::Destroy => Some(crate::metrics::DriftKind::Missing),
        EventAction::Pause => Some(crate::metrics::DriftKind::Paused),
        _ => None,
    }
}

/// Whether an engine event can mean drift worth a reconcile. A pause is (the agent resumes the
/// container); its own unpause is not news. A `kill` is not either: a signal that stops the
/// container is followed by its `die`, which is what the repair acts on, and one that does not stop
/// it changed nothing kedge keeps. Reconciling on the `kill` only made the `die`'s reconcile wait
/// behind one that found the container still running.
fn can_mean_drift(action: &EventAction) -> bool {
    !matches!(action, EventAction::Other(_) | EventAction::Unpause | EventAction::Kill)
}

/// Every `interval`, revisits every spec's key and the key of every managed container (which
/// finds containers whose spec is gone), from a list of the engine's containers taken in pages
/// ([`super::snapshot`]). The agent's start does the first one (`Agent::start_from_snapshot`),
/// and an engine reconnect does one too, each all at once; the periodic one spreads the specs' keys
/// evenly over the interval and passes over the settled keys whose containers did not change
/// ([`enqueue_everything`]).
pub(crate) async fn resync_every(agent: Arc<super::Agent>, shutdown: CancellationToken) {
    let interval = agent.config.resync_interval;
    loop {
        // The snapshot is dropped once past its age, so that an idle agent does not keep it.
        let expiry = super::snapshot::MAX_AGE.min(interval);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(expiry) => agent.snapshot.expire(),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval - expiry) => {}
        }
        let (host, docker, cache) = (&agent.config.host_name, &agent.docker, &agent.cache);
        match enqueue_everything(host, docker, cache, &agent.snapshot, &agent.queue, interval).await {
            Ok(resynced) => {
                agent.config.metrics.resynced(resynced.reconciled, resynced.passed);
                tracing::debug!(
                    reconciled = resynced.reconciled,
                    passed_over = resynced.passed,
                    "periodic resync"
                );
            }
            Err(error) => tracing::warn!(%error, "periodic resync could not list the engine's containers"),
        }
    }
}

/// Containers in one page of the periodic resync's list. One list of 500 cost an idle agent about
/// 11 ms of CPU (`opt-level = "s"`); pages of 50 still took 1.5 to 2 ms each, most of a second's
/// budget of an idle agent (2 ms). At 25 a page, 500 containers take 20 pages, 20 s.
const RESYNC_PAGE: usize = 25;

/// What a resync did with the specs' keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Resynced {
    /// Enqueued to be reconciled.
    pub reconciled: usize,
    /// Passed over: settled, and their containers listed as their settling reconcile saw them.
    pub passed: usize,
}

/// Lists the engine's containers into `snapshot` (at once after a reconnect, in pages
/// for the periodic resync: [`EngineSnapshot::list_in_pages`]), enqueues at once the keys of listed
/// containers that have no spec (a spec deleted behind the agent's back), and the specs' keys evenly
/// over `over` (all at once when it is zero: an engine reconnect). The periodic resync spreads them
/// over its interval: at 500 containers, enqueueing them all at once cost an idle agent 194 ms of CPU
/// within two seconds every 5 minutes (19% of a core in the worst second). A key that something
/// else enqueues meanwhile (an engine event, a spec change) runs at once as always: a spread key is
/// only a deadline by which it is looked at again. Keys revisited after the snapshot's age read the
/// engine themselves.
///
/// The periodic resync (`over` not zero) also passes over the settled keys whose containers are
/// listed as their settling reconcile saw them ([`EngineSnapshot::resync`]): at 500 settled containers
/// their reconciles were 1.3 to 3.9 ms of CPU in every second of the interval. A reconnect may
/// have missed events, and passes over nothing.
pub(crate) async fn enqueue_everything(
    host: &str,
    engine: &dyn Engine,
    cache: &DesiredState,
    snapshot: &EngineSnapshot,
    queue: &WorkQueue<String>,
    over: Duration,
) -> Result<Resynced, crate::docker::DockerError> {
    let by_key = if over.is_zero() {
        snapshot.list(engine, host).await?
    } else {
        // At most a second apart, and all the pages within a fifth of the interval at 60 pages.
        let pause = (over / 300).min(Duration::from_secs(1));
        snapshot.list_in_pages(engine, host, RESYNC_PAGE, pause).await?
    };
    let specs = cache.keys();
    let known: std::collections::HashSet<&str> = specs.iter().map(String::as_str).collect();
    for key in by_key.keys().filter(|key| !known.contains(key.as_str())) {
        queue.add(key.clone());
    }
    snapshot.retain_settled(|key| known.contains(key) || by_key.contains_key(key));
    let may_pass = !over.is_zero();
    let mut resynced = Resynced::default();
    let due: Vec<String> = specs
        .iter()
        .filter(|key| {
            let print = super::snapshot::print(by_key.get(key.as_str()).into_iter().flatten());
            let due = snapshot.resync(key, print, may_pass);
            if due {
                resynced.reconciled += 1;
            } else {
                resynced.passed += 1;
            }
            due
        })
        .cloned()
        .collect();
    for (key, after) in spread(due, over) {
        queue.add_after(key, after);
    }
    Ok(resynced)
}

/// `keys` paired with delays from zero up to (not including) `over`, evenly apart.
fn spread(keys: Vec<String>, over: Duration) -> impl Iterator<Item = (String, Duration)> {
    let count = keys.len().max(1) as u32;
    keys.into_iter().enumerate().map(move |(i, key)| (key, over / count * i as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::HealthStatus;

    #[test]
    fn a_resync_spreads_its_keys_evenly_over_the_interval() {
        let keys: Vec<String> = (0..500).map(|i| format!("ns/c{i}")).collect();
        let spread: Vec<(String, Duration)> = spread(keys.clone(), Duration::from_secs(300)).collect();
        assert_eq!(spread.iter().map(|(key, _)| key.clone()).collect::<Vec<_>>(), keys);
        assert_eq!(spread[0].1, Duration::ZERO);
        assert_eq!(spread[1].1, Duration::from_millis(600));
        assert_eq!(spread[499].1, Duration::from_millis(299_400));
        // No second holds more than its share.
        let mut per_second = std::collections::BTreeMap::new();
        for (_, after) in &spread {
            *per_second.entry(after.as_secs()).or_insert(0) += 1;
        }
        assert!(per_second.values().all(|n| *n <= 2), "{per_second:?}");
        assert_eq!(super::spread(Vec::new(), Duration::from_secs(300)).count(), 0);
    }

    #[test]
    fn only_events_that_can_mean_drift_wake_a_reconcile() {
        let network = || "net".to_owned();
        let cases = [
            (EventAction::Die, true),
            (EventAction::Stop, true),
            (EventAction::Destroy, true),
            (EventAction::Oom, true),
            (EventAction::Pause, true),
            (EventAction::Start, true),
            (EventAction::Create, true),
            (EventAction::Update, true),
            (EventAction::Rename { old_name: None }, true),
            (EventAction::HealthStatus(HealthStatus::Unhealthy), true),
            (EventAction::NetworkDisconnect { network: network() }, true),
            (EventAction::NetworkConnect { network: network() }, true),
            (EventAction::Kill, false),
            (EventAction::Unpause, false),
            (EventAction::Other("exec_start: sh".to_owned()), false),
        ];
        for (action, expected) in cases {
            assert_eq!(can_mean_drift(&action), expected, "{action:?}");
        }
    }
}
