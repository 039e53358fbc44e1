//! The scheduler: binds every spec that names no host to a ready host, run by one agent at a time.
//!
//! Leadership is a key on a lease, created only when absent ([`keys::SCHEDULER_LEADER`]); the leader
//! renews the lease, the others watch the key (a [`crate::runtime::Reflector`]; they ask the store
//! every second only while that watch is not in sync) and take over once it is gone (the lease lapsed
//! or the leader revoked it on shutdown). The leader key's `mod_revision` is the leader's
//! term, and every binding write is fenced on it ([`Fence`]): the store applies the write only if the
//! leader key still has that `mod_revision`, atomically. A leader that was paused, partitioned or slow
//! past its lease therefore cannot write once a successor exists, or while nobody leads: at any
//! revision of the store, only writes of the then-current term can commit. Decisions may be taken
//! from stale reads; every binding write is also a compare-and-swap on the binding itself, so a
//! decision taken from a stale binding is refused and taken again on the next pass.
//!
//! Each pass, from the agent's spec cache (only when it is authoritative) and fresh lists of hosts,
//! liveness keys and bindings, [`plan`] decides:
//! - an unplaced spec (no `placement.host`) without a binding is bound to the ready host matching its
//!   `hostSelector` with the fewest specs (bound or named), ties broken by name;
//! - a binding to a host NotReady (no liveness key) for longer than the grace period moves to another
//!   ready host, and so does a binding to a host that no longer matches the selector;
//! - the binding of a deleted spec, or of a spec that now names its host, is deleted.
//!
//! Children of one ContainerSet (specs labelled `kedge.io/set`) are spread: each goes to the matching
//! ready host with the fewest children of its set, then the fewest specs; a host already holding the
//! set's `maxPerHost` children (annotation `kedge.io/max-per-host`) is not a candidate. The leader also
//! runs the ContainerSet controller ([`super::sets`]) on every pass, fenced on the same term.
//!
//! A leader whose task panics revokes its lease on the way down ([`LeaseGuard`]), and its agent's
//! supervisor starts the scheduler again after [`RESTART_STANDBY`], so another agent takes over
//! first.
//!
//! A new leader has not seen hosts go NotReady: it counts the grace period from its own first
//! observation, which only delays a failover, never hastens one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use kedge_crds::container_set::{MAX_PER_HOST_ANNOTATION, SET_LABEL};

use crate::events::EventRecorder;
use crate::store::{keys, DeleteCondition, Fence, LeaseId, PutCondition, SharedStore, StoreError};

use super::bindings::{self, Binding, StoredBinding};
use super::cache::DesiredState;
use super::host::HostRecord;

/// The leader lease's TTL: how long a dead leader blocks scheduling at most.
const LEADER_TTL_SECONDS: i64 = 6;
/// How often the leader schedules, and how often the others try to take over.
const TICK: Duration = Duration::from_secs(1);

/// Where an unplaced spec may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecPlacement {
    /// `namespace/name`.
    pub key: String,
    /// The host the spec names itself: it needs no binding.
    pub named_host: Option<String>,
    pub selector: BTreeMap<String, String>,
    /// The ContainerSet (`namespace/set`) the spec is a child of: children of one set are spread.
    pub group: Option<String>,
    /// At most this many children of `group` on one host.
    pub max_per_host: Option<u32>,
    /// The specs (`namespace/name`) this one depends on (`dependsOn`, a network namespace, links):
    /// it runs on the host they run on, since Docker joins and links containers of one engine only,
    /// and an agent checks a dependency on its own engine.
    pub depends_on: Vec<String>,
}

/// One change a pass makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Bind `key` to `host`; `previous` is the current binding's `mod_revision` (None: create).
    Bind {
        key: String,
        host: String,
        previous: Option<i64>,
    },
    Unbind {
        key: String,
        mod_revision: i64,
    },
}

/// Decides a pass. `ready` holds every ready host's labels; `expired(host)` tells whether a host
/// that is not ready has been so for longer than the grace period. Pure: the unit tests' surface.
pub(crate) fn plan(
    specs: &[SpecPlacement],
    ready: &BTreeMap<String, BTreeMap<String, String>>,
    bindings: &BTreeMap<String, StoredBinding>,
    expired: &dyn Fn(&str) -> bool,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let by_key: HashMap<&str, &SpecPlacement> = specs.iter().map(|spec| (spec.key.as_str(), spec)).collect();
    for (key, stored) in bindings {
        let unplaced = by_key.get(key.as_str()).is_some_and(|spec| spec.named_host.is_none());
        if !unplaced {
            changes.push(Change::Unbind { key: key.clone(), mod_revision: stored.mod_revision });
        }
    }
    let mut load: BTreeMap<&str, usize> = ready.keys().map(|host| (host.as_str(), 0)).collect();
    for spec in specs {
        let host = match &spec.named_host {
            Some(host) => Some(host.as_str()),
            None => bindings.get(&spec.key).map(|stored| stored.binding.host.as_str()),
        };
        if let Some(count) = host.and_then(|host| load.get_mut(host)) {
            *count += 1;
        }
    }
    // Children of each set per host, for the spread rule.
    let mut group_load: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for spec in specs {
        let host = match &spec.named_host {
            Some(host) => Some(host.as_str()),
            None => bindings.get(&spec.key).map(|stored| stored.binding.host.as_str()),
        };
        if let (Some(group), Some(host)) = (&spec.group, host) {
            *group_load.entry((group.as_str(), host)).or_default() += 1;
        }
    }
    // Where each spec runs now (named or bound), for co-locating dependents with what they need.
    let placed: HashMap<&str, &str> = specs
        .iter()
        .filter_map(|spec| {
            let host = match &spec.named_host {
                Some(host) => Some(host.as_str()),
                None => bindings.get(&spec.key).map(|stored| stored.binding.host.as_str()),
            };
            host.map(|host| (spec.key.as_str(), host))
        })
        .collect();
    // A spec with dependencies may go only where all of them run; while one runs nowhere, nowhere.
    let fits = |spec: &SpecPlacement, host: &str| {
        ready.get(host).is_some_and(|labels| spec.selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
            && spec.depends_on.iter().all(|dependency| placed.get(dependency.as_str()) == Some(&host))
    };
    // The most constrained specs choose first, so that a spec any host can run does not take the
    // place a spec with a selector needed.
    let mut unplaced: Vec<(usize, &SpecPlacement)> = specs
        .iter()
        .filter(|spec| spec.named_host.is_none())
        .map(|spec| (ready.keys().filter(|host| fits(spec, host)).count(), spec))
        .collect();
    unplaced.sort_by(|(a_count, a), (b_count, b)| a_count.cmp(b_count).then_with(|| a.key.cmp(&b.key)));
    for (_, spec) in unplaced {
        let current = bindings.get(&spec.key);
        let matches = |host: &str| fits(spec, host);
        if let Some(stored) = current {
            let host = stored.binding.host.as_str();
            let keep = if ready.contains_key(host) { matches(host) } else { !expired(host) };
            if keep {
                continue;
            }
        }
        let siblings = |host: &str| {
            spec.group.as_deref().map_or(0, |group| group_load.get(&(group, host)).copied().unwrap_or(0))
        };
        let best = load
            .iter()
            .filter(|(host, _)| matches(host))
            .filter(|(host, _)| spec.max_per_host.is_none_or(|max| siblings(host) < max))
            .min_by_key(|(host, count)| (siblings(host), **count, **host))
            .map(|(host, _)| host.to_string());
        let Some(best) = best else { continue };
        if let Some(count) = current.and_then(|stored| load.get_mut(stored.binding.host.as_str())) {
            *count -= 1;
        }
        *load.get_mut(best.as_str()).expect("a ready host") += 1;
        if let Some(group) = spec.group.as_deref() {
            if let Some(previous) = current.map(|stored| stored.binding.host.as_str()) {
                if let Some(count) = group_load.get_mut(&(group, previous)) {
                    *count = count.saturating_sub(1);
                }
            }
            let host = load.get_key_value(best.as_str()).map(|(host, _)| *host).expect("a ready host");
            *group_load.entry((group, host)).or_default() += 1;
        }
        changes.push(Change::Bind {
            key: spec.key.clone(),
            host: best,
            previous: current.map(|stored| stored.mod_revision),
        });
    }
    changes
}

/// How long a scheduler restarted after a death waits before it campaigns: long enough for another
/// agent (which tries every [`TICK`]) to take the leadership a panic released, so that one agent's
/// crashing leader does not keep the leadership to itself.
pub(crate) const RESTART_STANDBY: Duration = Duration::from_secs(2);

/// Campaigns for leadership and schedules while leader, until `shutdown`; then lets go at once.
/// `standby` delays the first campaign (see [`RESTART_STANDBY`]).
pub(crate) async fn run(
    store: SharedStore,
    me: String,
    specs: Arc<DesiredState>,
    grace: Duration,
    standby: Duration,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = tokio::time::sleep(standby) => {}
    }
    // The leader key, watched: while someone leads, the others wait for its key to go instead of
    // asking the store every tick.
    let watching = shutdown.child_token();
    let _stop_watching = watching.clone().drop_guard();
    let leader_key = crate::runtime::reflector::spawn(
        store.clone(),
        keys::SCHEDULER_LEADER,
        "scheduler leader",
        |kv| Ok(kv.mod_revision),
        watching,
    );
    let mut announced_follower = false;
    loop {
        let mut changes = leader_key.subscribe();
        let known = leader_key.in_sync();
        if known && leader_key.get(keys::SCHEDULER_LEADER).is_some() {
            if !announced_follower {
                tracing::debug!(host = %me, "another agent leads the scheduler");
                announced_follower = true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changes.changed() => continue,
            }
        }
        match campaign(&store, &me, known).await {
            Ok(Some((term, lease))) => {
                // Revokes the lease if this task panics while leading, so that another agent takes
                // over at once instead of after the lease's TTL.
                let mut held = LeaseGuard { store: &store, lease: Some(lease) };
                tracing::info!(host = %me, term, "this agent leads the scheduler");
                announced_follower = false;
                let mut leader = Leader {
                    events: EventRecorder::new(store.clone(), me.clone()),
                    store: &store,
                    term,
                    lease,
                    specs: &specs,
                    grace,
                    not_ready_since: HashMap::new(),
                    compactor: super::compaction::Compactor::from_env(),
                };
                let stopped = leader.lead(&shutdown).await;
                leader.events.flush().await;
                held.lease = None;
                let _ = store.lease_revoke(lease).await;
                if stopped {
                    return;
                }
                tracing::warn!(host = %me, term, "lost the scheduler's leadership");
            }
            Ok(None) => {
                if !announced_follower {
                    tracing::debug!(host = %me, "another agent leads the scheduler");
                    announced_follower = true;
                }
            }
            Err(error) => tracing::debug!(%error, "could not campaign for the scheduler's leadership"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Revokes a leader lease when dropped while still set: the leader task panicked (or was dropped)
/// holding it. The revoke runs on a task of its own, since a drop cannot wait.
struct LeaseGuard<'a> {
    store: &'a SharedStore,
    lease: Option<LeaseId>,
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let store = self.store.clone();
        tracing::warn!(lease, "the scheduler's leader ended abruptly; giving up its leadership");
        runtime.spawn(async move {
            if let Err(error) = store.lease_revoke(lease).await {
                tracing::warn!(%error, "could not revoke the scheduler's lease; it lapses on its own");
            }
        });
    }
}

/// Tries once to become leader: `Some((term, lease))` on success, `None` when someone else leads.
/// `known_absent`: the watched leader key is in sync and absent, so the store is not asked first.
async fn campaign(
    store: &SharedStore,
    me: &str,
    known_absent: bool,
) -> Result<Option<(i64, LeaseId)>, StoreError> {
    if !known_absent && store.get(keys::SCHEDULER_LEADER).await?.is_some() {
        return Ok(None);
    }
    let lease = store.lease_grant(LEADER_TTL_SECONDS).await?;
    match store.put(keys::SCHEDULER_LEADER, me.as_bytes().to_vec(), PutCondition::Absent, lease).await {
        Ok(term) => Ok(Some((term, lease))),
        Err(error) => {
            let _ = store.lease_revoke(lease).await;
            match error {
                StoreError::Conflict { .. } => Ok(None),
                error => Err(error),
            }
        }
    }
}

struct Leader<'a> {
    store: &'a SharedStore,
    term: i64,
    lease: LeaseId,
    specs: &'a DesiredState,
    grace: Duration,
    /// When each host was first seen NotReady by this leader.
    not_ready_since: HashMap<String, Instant>,
    /// Records the ContainerSet controller's events.
    events: EventRecorder,
    /// Compacts the store's history (`None`: turned off).
    compactor: Option<super::compaction::Compactor>,
}

impl Leader<'_> {
    /// Schedules until the leadership is lost (false) or `shutdown` (true).
    async fn lead(&mut self, shutdown: &CancellationToken) -> bool {
        let renew_every = Duration::from_secs((LEADER_TTL_SECONDS / 3) as u64);
        let mut renewed = Instant::now();
        loop {
            if renewed.elapsed() >= renew_every {
                match self.store.lease_keep_alive(self.lease).await {
                    Ok(_) => renewed = Instant::now(),
                    Err(StoreError::NotFound(_)) => return false,
                    // The fence protects the store meanwhile; keep trying.
                    Err(error) => tracing::debug!(%error, "could not renew the scheduler's lease"),
                }
            }
            match self.pass().await {
                Ok(()) => {}
                Err(StoreError::Conflict { key, .. }) if key == keys::SCHEDULER_LEADER => return false,
                Err(error) => tracing::debug!(%error, "scheduling pass failed; retrying"),
            }
            let fence = Fence { key: keys::SCHEDULER_LEADER, mod_revision: self.term };
            match super::sets::pass(self.store, fence, self.specs, &self.events).await {
                Ok(()) => {}
                Err(StoreError::Conflict { key, .. }) if key == keys::SCHEDULER_LEADER => return false,
                Err(error) => tracing::debug!(%error, "container set pass failed; retrying"),
            }
            // The agent upgrade campaign is driven by the same leader, fenced on the same term.
            match crate::upgrade::drive(self.store, self.term).await {
                Ok(()) => {}
                Err(StoreError::Conflict { key, .. }) if key == keys::SCHEDULER_LEADER => return false,
                Err(error) => tracing::debug!(%error, "upgrade campaign pass failed; retrying"),
            }
            #[cfg(feature = "failpoints")]
            crate::executor::failpoint::panic_task("leader");
            if let Some(compactor) = &mut self.compactor {
                if let Err(error) = compactor.tick(self.store).await {
                    tracing::warn!(%error, "could not compact the store's history; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn pass(&mut self) -> Result<(), StoreError> {
        if !self.specs.authoritative() {
            return Ok(());
        }
        let hosts = self.store.list(keys::HOSTS).await?;
        let alive = self.store.list(keys::HOST_LEASES).await?;
        let listed = self.store.list(keys::BINDINGS).await?;
        let alive: std::collections::HashSet<&str> =
            alive.kvs.iter().filter_map(|kv| kv.key.strip_prefix(keys::HOST_LEASES)).collect();
        let mut ready = BTreeMap::new();
        let now = Instant::now();
        for kv in &hosts.kvs {
            let Some(name) = keys::parse_host_key(&kv.key) else { continue };
            if alive.contains(name) {
                self.not_ready_since.remove(name);
                let labels =
                    serde_json::from_slice::<HostRecord>(&kv.value).map(|r| r.labels).unwrap_or_default();
                ready.insert(name.to_owned(), labels);
            }
        }
        let bindings: BTreeMap<String, StoredBinding> =
            listed.kvs.iter().filter_map(bindings::decode).collect();
        for stored in bindings.values() {
            if !ready.contains_key(&stored.binding.host) {
                self.not_ready_since.entry(stored.binding.host.clone()).or_insert(now);
            }
        }
        let specs: Vec<SpecPlacement> = self
            .specs
            .keys()
            .into_iter()
            .filter_map(|key| {
                let spec = self.specs.get(&key)?;
                let placement = spec.spec.placement.clone().unwrap_or_default();
                let labels = &spec.metadata.labels;
                let group = labels.get(SET_LABEL).map(|set| format!("{}/{set}", spec.metadata.namespace));
                let max_per_host =
                    spec.metadata.annotations.get(MAX_PER_HOST_ANNOTATION).and_then(|max| max.parse().ok());
                let namespace = &spec.metadata.namespace;
                let depends_on = spec
                    .spec
                    .dependencies()
                    .into_iter()
                    .map(|dependency| format!("{namespace}/{}", dependency.name))
                    .collect();
                Some(SpecPlacement {
                    key,
                    named_host: placement.host,
                    selector: placement.host_selector,
                    group,
                    max_per_host,
                    depends_on,
                })
            })
            .collect();
        let grace = self.grace;
        let since = &self.not_ready_since;
        let expired = |host: &str| since.get(host).is_some_and(|at| now.duration_since(*at) >= grace);
        let fence = Fence { key: keys::SCHEDULER_LEADER, mod_revision: self.term };
        for change in plan(&specs, &ready, &bindings, &expired) {
            let outcome = self.apply(fence, &change).await;
            match outcome {
                Ok(()) => tracing::info!(?change, term = self.term, "scheduled"),
                Err(StoreError::Conflict { key, .. }) if key != keys::SCHEDULER_LEADER => {
                    tracing::debug!(?change, "binding changed meanwhile; deciding again next pass")
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn apply(&self, fence: Fence<'_>, change: &Change) -> Result<(), StoreError> {
        let key_of = |key: &str| {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
            keys::binding_key(namespace, name).map_err(|e| StoreError::Invalid(e.to_string()))
        };
        match change {
            Change::Bind { key, host, previous } => {
                let binding = Binding { host: host.clone(), term: self.term };
                let value = serde_json::to_vec(&binding).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let condition = previous.map_or(PutCondition::Absent, PutCondition::ModRevision);
                self.store.put_fenced(fence, &key_of(key)?, value, condition).await?;
            }
            Change::Unbind { key, mod_revision } => {
                let condition = DeleteCondition::ModRevision(*mod_revision);
                self.store.delete_fenced(fence, &key_of(key)?, condition).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: &str, named: Option<&str>, selector: &[(&str, &str)]) -> SpecPlacement {
        SpecPlacement {
            key: key.into(),
            named_host: named.map(str::to_owned),
            selector: selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            group: None,
            max_per_host: None,
            depends_on: vec![],
        }
    }

    fn child(key: &str, set: &str, max_per_host: Option<u32>) -> SpecPlacement {
        SpecPlacement { group: Some(set.into()), max_per_host, ..spec(key, None, &[]) }
    }

    #[test]
    fn children_of_a_set_spread_one_per_host_while_hosts_suffice() {
        let ready = hosts(&[("a", &[]), ("b", &[]), ("c", &[])]);
        // Host "a" is busiest with other specs, yet it gets a child before any host gets a second one.
        let mut specs = vec![spec("ns/x1", Some("b"), &[]), spec("ns/x2", Some("c"), &[])];
        specs.extend((0..5).map(|i| child(&format!("ns/web-{i}"), "ns/web", None)));
        let changes = plan(&specs, &ready, &bound(&[]), &|_| false);
        let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
        for change in &changes {
            let Change::Bind { host, .. } = change else { panic!("{change:?}") };
            *per_host.entry(host.clone()).or_default() += 1;
        }
        assert_eq!(changes.len(), 5);
        let counts: Vec<usize> = per_host.values().copied().collect();
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1, "{per_host:?}");
        assert_eq!(changes[0], bind("ns/web-0", "a", None), "the first child takes the idlest host");
    }

    #[test]
    fn spread_counts_existing_children_and_respects_max_per_host() {
        let ready = hosts(&[("a", &[]), ("b", &[])]);
        let specs = [
            child("ns/web-0", "ns/web", Some(1)),
            child("ns/web-1", "ns/web", Some(1)),
            child("ns/web-2", "ns/web", Some(1)),
            child("ns/api-0", "ns/api", None),
        ];
        let changes = plan(&specs, &ready, &bound(&[("ns/web-0", "a", 5)]), &|_| false);
        // web-1 goes to b (a holds web-0); web-2 has no host left under maxPerHost 1 and waits; api-0,
        // of another set, goes to the host with fewer specs.
        assert_eq!(changes, vec![bind("ns/api-0", "b", None), bind("ns/web-1", "b", None)]);
    }

    fn hosts(list: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
        list.iter()
            .map(|(name, labels)| {
                (name.to_string(), labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
            })
            .collect()
    }

    fn bound(list: &[(&str, &str, i64)]) -> BTreeMap<String, StoredBinding> {
        list.iter()
            .map(|(key, host, rev)| {
                let binding = Binding { host: host.to_string(), term: 1 };
                (key.to_string(), StoredBinding { binding, mod_revision: *rev })
            })
            .collect()
    }

    fn bind(key: &str, host: &str, previous: Option<i64>) -> Change {
        Change::Bind { key: key.into(), host: host.into(), previous }
    }

    fn check(
        specs: &[SpecPlacement],
        ready: &BTreeMap<String, BTreeMap<String, String>>,
        bindings: &BTreeMap<String, StoredBinding>,
        expired: &[&str],
        expected: &[Change],
    ) {
        let changes = plan(specs, ready, bindings, &|host| expired.contains(&host));
        assert_eq!(changes, expected);
    }

    #[test]
    fn unbound_specs_spread_by_load_then_name() {
        let ready = hosts(&[("b", &[]), ("a", &[]), ("c", &[])]);
        let specs = [
            spec("ns/1", None, &[]),
            spec("ns/2", None, &[]),
            spec("ns/3", Some("a"), &[]),
            spec("ns/4", None, &[]),
        ];
        // "a" already runs ns/3 by name, so the unplaced ones go to b, c, then a.
        check(
            &specs,
            &ready,
            &bound(&[]),
            &[],
            &[bind("ns/1", "b", None), bind("ns/2", "c", None), bind("ns/4", "a", None)],
        );
    }

    #[test]
    fn selectors_limit_the_candidates_and_nothing_matching_waits() {
        let ready = hosts(&[("a", &[("disk", "ssd")]), ("b", &[])]);
        let specs = [spec("ns/fast", None, &[("disk", "ssd")]), spec("ns/gpu", None, &[("gpu", "yes")])];
        check(&specs, &ready, &bound(&[]), &[], &[bind("ns/fast", "a", None)]);
    }

    #[test]
    fn constrained_specs_choose_first() {
        let ready = hosts(&[("a", &[("zone", "x")]), ("b", &[])]);
        let specs = [spec("ns/1", None, &[]), spec("ns/2", None, &[("zone", "x")]), spec("ns/3", None, &[])];
        let expected = [bind("ns/2", "a", None), bind("ns/1", "b", None), bind("ns/3", "a", None)];
        check(&specs, &ready, &bound(&[]), &[], &expected);
    }

    #[test]
    fn bindings_stay_put_until_the_grace_period_ends() {
        let ready = hosts(&[("a", &[]), ("b", &[])]);
        let specs = [spec("ns/1", None, &[]), spec("ns/2", None, &[])];
        let bindings = bound(&[("ns/1", "dead", 7), ("ns/2", "a", 8)]);
        check(&specs, &ready, &bindings, &[], &[]);
        check(&specs, &ready, &bindings, &["dead"], &[bind("ns/1", "b", Some(7))]);
    }

    #[test]
    fn a_host_that_stops_matching_loses_the_spec() {
        let ready = hosts(&[("a", &[]), ("b", &[("zone", "x")])]);
        let specs = [spec("ns/1", None, &[("zone", "x")])];
        check(&specs, &ready, &bound(&[("ns/1", "a", 3)]), &[], &[bind("ns/1", "b", Some(3))]);
    }

    #[test]
    fn dependents_go_where_their_dependencies_run() {
        let hosts = hosts(&[("h1", &[]), ("h2", &[]), ("h3", &[])]);
        let follower = |key: &str, on: &[&str]| SpecPlacement {
            depends_on: on.iter().map(|dependency| dependency.to_string()).collect(),
            ..spec(key, None, &[])
        };
        // web is named on h2 and db bound to h3: probe (web's network) goes to h2; app, which needs
        // both, fits nowhere and waits; cache waits for queue, which is not bound yet.
        let specs = [
            spec("ns/web", Some("h2"), &[]),
            spec("ns/db", None, &[]),
            spec("ns/queue", None, &[]),
            follower("ns/probe", &["ns/web"]),
            follower("ns/app", &["ns/web", "ns/db"]),
            follower("ns/cache", &["ns/queue"]),
        ];
        let before = bound(&[("ns/db", "h3", 7)]);
        let changes = plan(&specs, &hosts, &before, &|_| false);
        assert!(changes.contains(&bind("ns/probe", "h2", None)), "{changes:?}");
        assert!(changes.iter().any(|c| matches!(c, Change::Bind { key, .. } if key == "ns/queue")));
        assert!(!changes
            .iter()
            .any(|c| matches!(c, Change::Bind { key, .. } if key == "ns/app" || key == "ns/cache")));
        // A dependency that moved takes its dependents along.
        let moved = bound(&[("ns/db", "h1", 8), ("ns/cache", "h3", 9), ("ns/queue", "h1", 10)]);
        let changes = plan(&specs, &hosts, &moved, &|_| false);
        assert!(changes.contains(&bind("ns/cache", "h1", Some(9))), "{changes:?}");
    }

    #[test]
    fn bindings_of_deleted_or_named_specs_go() {
        let ready = hosts(&[("a", &[])]);
        let specs = [spec("ns/named", Some("a"), &[])];
        let bindings = bound(&[("ns/gone", "a", 4), ("ns/named", "a", 5)]);
        let expected = [
            Change::Unbind { key: "ns/gone".into(), mod_revision: 4 },
            Change::Unbind { key: "ns/named".into(), mod_revision: 5 },
        ];
        check(&specs, &ready, &bindings, &[], &expected);
    }
}
