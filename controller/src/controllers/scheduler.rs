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
//! The leader reads no store prefix on a timer: when it wins, it starts reflector caches of what its
//! passes read ([`LeaderCaches`]: hosts, liveness keys, bindings, sets and statuses, campaigns and
//! upgrade requests; the specs are the agent's own cache) and drops them when it loses. It runs a pass
//! when a cache changed (at most one every 100 ms), at the nearest deadline it knows (a NotReady host's
//! grace expiry, a rollout's health timeout, a campaign's report deadline, the history compactor's
//! next sample) and at least every 10 s ([`Wake`]). It decides nothing from a cache that is not in
//! sync, nor binds or unbinds while no host is ready; and after its own writes it runs the next pass
//! only once the caches have seen them ([`Written`]), so a pass never acts twice on one state. A
//! controller whose caches did not change since it last decided nothing is skipped ([`Settled`]).
//!
//! Each pass, from those caches, [`plan`] decides:
//! - an unplaced spec (no `placement.host`) without a binding is bound to the ready host matching its
//!   `hostSelector` with the fewest specs (bound or named), ties broken by name;
//! - a binding to a host NotReady (no liveness key) for longer than the grace period moves to another
//!   ready host, and so does a binding to a host that no longer matches the selector (the host
//!   going NotReady is a Warning event `HostNotReady`, once per host and leader);
//! - the binding of a deleted spec, or of a spec that now names its host, is deleted.
//!
//! Children of one ContainerSet (specs labelled `kedge.io/set`) are spread: each goes to the matching
//! ready host with the fewest children of its set, then the fewest specs; a host already holding the
//! set's `maxPerHost` children (annotation `kedge.io/max-per-host`) is not a candidate. The leader also
//! runs the ContainerSet controller ([`super::sets`]) in its passes, fenced on the same term.
//!
//! A leader whose task panics revokes its lease on the way down ([`LeaseGuard`]), and its agent's
//! supervisor starts the scheduler again after [`RESTART_STANDBY`], so another agent takes over
//! first.
//!
//! A new leader has not seen hosts go NotReady: it counts the grace period from its own first
//! observation, which only delays a failover, never hastens one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use kedge_crds::container_set::{MAX_PER_HOST_ANNOTATION, SET_LABEL};

use crate::events::{EventRecorder, EventType};
use crate::store::{keys, DeleteCondition, Fence, LeaseId, PutCondition, SharedStore, StoreError};

use crate::agent::bindings::{Binding, StoredBinding};

use super::caches::{Changed, LeaderCaches, Reader, Written};
use super::wake::Wake;

/// The leader lease's TTL: how long a dead leader blocks scheduling at most (a leader that stops
/// revokes its lease, and another agent takes over at once). It was 6 s: at 1,000 simulated
/// hosts and 30,000 specs applied at full speed, leaders lost their leases while the store still
/// answered within a second, and every new leader lost its own within a TTL, each listing every
/// prefix again, so that nothing was scheduled for minutes.
const LEADER_TTL_SECONDS: i64 = 10;
/// How often the leader renews its lease: five tries within a TTL.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often an agent that could not reach the store tries again to take over.
const TICK: Duration = Duration::from_secs(1);
/// The most bindings one pass writes (the lease is renewed beside the passes, but a pass should
/// stay short so the projection of what it bound follows soon).
const MAX_BINDINGS_PER_PASS: usize = 1024;
/// How many of a pass's binding writes are in flight at once.
const CONCURRENT_BINDINGS: usize = 32;
/// How often the projection and ContainerSet controllers decide from scratch at the least, even
/// when their caches did not change since they last found nothing to do ([`Settled`]): a safety net
/// under the skipping, whose rule is that a controller is a pure function of its caches and its
/// deadlines (`changed_keys_decide_what_a_full_plan_decides` checks it for the scheduling pass). As
/// often as an agent re-reads its whole engine (the default resync). It was 30 s, and the quiet
/// safety tick ([`super::wake::SAFETY_TICK`]) decided from scratch too: at 500 specs that was 2.5 to
/// 3.4 ms of CPU every 10 s in an idle agent's second-by-second CPU. The scheduling pass, the
/// costliest from scratch (every spec's placement and the whole plan: 3 to 5 ms at 500 specs, the
/// idle agent's busiest second), has its own net instead, spread over the same period: the rolling
/// audit of [`audit`].
const FULL_PASS_EVERY: Duration = Duration::from_secs(300);

/// The caches' change counts ([`crate::runtime::Reflector::changes`]) at which each controller last
/// decided nothing and had no deadline ahead. A controller is a pure function of its caches (and,
/// through its deadlines, of time): while the counts it reads stay the same it would decide nothing
/// again, and its pass is skipped. Most wake-ups of a settled fleet are container statuses, which only
/// the ContainerSet controller reads, so the scheduling and projection passes over every spec run only
/// when specs, bindings, hosts or placements changed. Cleared at a leadership's first pass and on a
/// controller's deadline ([`Due`]): those passes decide everything; the projection's and sets' parts
/// also at each [`FULL_PASS_EVERY`], the scheduling part when its rolling audit finds a placement it
/// does not remember ([`audit`]). The quiet safety tick does not clear it: it is there for a change
/// that failed to wake the leader, and such a change moved the counts the skipping compares.
#[derive(Debug, Default)]
struct Settled {
    schedule: Option<ScheduleMemo>,
    /// The bindings' and placements' change counts (the specs' changes are taken by key).
    projection: Option<[u64; 2]>,
    sets: Option<[u64; 4]>,
}

/// A scheduling pass that decided nothing: the bindings', hosts' and liveness change counts it read,
/// and every spec's placement. While those counts stay, a pass whose changed specs (taken by key,
/// [`super::caches::ChangedSpecs`]) all have the placement remembered (an env change, say) would
/// decide nothing either: `plan` reads the specs only through their placements.
#[derive(Debug)]
struct ScheduleMemo {
    counts: [u64; 3],
    /// The ready hosts and their labels the pass decided from. When the hosts' or liveness count
    /// moved but these did not (a host record rewritten with only its heartbeat time, every
    /// [`crate::agent::host::RECORD_REFRESH`] per host), the plan would decide nothing either: it
    /// reads the hosts only through them. Without this, every record refresh made the leader plan
    /// every spec again (3 to 5 ms at 500 specs; at 1,000 hosts, three refreshes a second).
    ready: BTreeMap<String, BTreeMap<String, String>>,
    specs: HashMap<String, SpecPlacement>,
    /// How many entries the spec cache held when the memo was made.
    listed: usize,
    /// The store key of the last spec the rolling audit compared ([`audit`]); `None`: start over.
    audited: Option<String>,
    /// When the rolling audit last ran.
    audited_at: Option<Instant>,
}

/// How many skipped scheduling passes the rolling audit takes to compare every spec once: one
/// [`FULL_PASS_EVERY`] of quiet safety ticks.
const AUDIT_PASSES: usize = (FULL_PASS_EVERY.as_secs() / super::wake::SAFETY_TICK.as_secs()) as usize;

/// The scheduling memo's safety net, in place of deciding from scratch every [`FULL_PASS_EVERY`]:
/// a skipped pass at least a [`super::wake::SAFETY_TICK`] after the last audit compares the next
/// `1/AUDIT_PASSES` of the cached specs (at least one), in key order, with the placements the memo
/// remembers, and the number of cached specs with the number then. Every spec is compared within
/// a period, for a slice of the cost: a pass over 500 specs compares 17. Busy passes (a fleet's
/// statuses wake the leader up to ten times a second) do not audit more often. Answers the store key
/// of a spec whose placement differs (or a note that the count differs): a change the skipping
/// missed, which the caller decides from scratch. The bindings', hosts' and liveness counts are
/// compared at every pass already.
fn audit(
    memo: &mut ScheduleMemo,
    specs: &crate::runtime::Reflector<kedge_crds::Container>,
    now: Instant,
) -> Option<String> {
    use std::ops::Bound;
    if memo.audited_at.is_some_and(|at| now.duration_since(at) < super::wake::SAFETY_TICK) {
        return None;
    }
    memo.audited_at = Some(now);
    specs.with(|all| {
        if all.len() != memo.listed {
            return Some(format!("{} specs cached where {} were", all.len(), memo.listed));
        }
        let slice = all.len().div_ceil(AUDIT_PASSES).max(1);
        let from = memo.audited.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let (mut compared, mut last) = (0, None);
        for (store_key, stored) in all.range::<str, _>((from, Bound::Unbounded)).take(slice) {
            (compared, last) = (compared + 1, Some(store_key));
            let Some(placement) = spec_placement(store_key, &stored.object) else { continue };
            if memo.specs.get(&placement.key) != Some(&placement) {
                return Some(store_key.clone());
            }
        }
        // A short slice reached the end: the next audit starts over.
        memo.audited = if compared < slice { None } else { last.cloned() };
        None
    })
}

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

/// A sentence for the leader's log: `bind default/web to host h1 (a new binding)`.
impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Bind { key, host, previous: None } => {
                write!(f, "bind {key} to host {host} (a new binding)")
            }
            Change::Bind { key, host, previous: Some(revision) } => {
                write!(f, "bind {key} to host {host} (replacing the binding at revision {revision})")
            }
            Change::Unbind { key, mod_revision } => {
                write!(f, "unbind {key} (the binding at revision {mod_revision})")
            }
        }
    }
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
    // A binding that stays is decided from `placed` and `ready` alone, which no decision of this
    // pass changes, and it changes no load: such specs are set aside before anything costs more
    // than a lookup. Counting every spec's candidate hosts (specs x hosts: 30 million fits at
    // 1,000 hosts of 30 specs) took a pass seconds, and every pass paid it.
    let stays = |spec: &SpecPlacement| {
        bindings.get(&spec.key).is_some_and(|stored| {
            let host = stored.binding.host.as_str();
            if ready.contains_key(host) {
                fits(spec, host)
            } else {
                !expired(host)
            }
        })
    };
    // The most constrained specs choose first, so that a spec any host can run does not take the
    // place a spec with a selector needed.
    let mut unplaced: Vec<(usize, &SpecPlacement)> = specs
        .iter()
        .filter(|spec| spec.named_host.is_none() && !stays(spec))
        .map(|spec| (ready.keys().filter(|host| fits(spec, host)).count(), spec))
        .collect();
    unplaced.sort_by(|(a_count, a), (b_count, b)| a_count.cmp(b_count).then_with(|| a.key.cmp(&b.key)));
    for (_, spec) in unplaced {
        let current = bindings.get(&spec.key);
        let matches = |host: &str| fits(spec, host);
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
/// agent (which watches the leader key, or tries every [`TICK`] while it cannot) to take the
/// leadership a panic released, so that one agent's crashing leader does not keep it to itself.
pub(crate) const RESTART_STANDBY: Duration = Duration::from_secs(2);

/// Campaigns for leadership and schedules while leader, until `shutdown`; then lets go at once.
/// `standby` delays the first campaign (see [`RESTART_STANDBY`]).
pub(crate) async fn run(
    store: SharedStore,
    me: String,
    grace: Duration,
    standby: Duration,
    project: bool,
    metrics: Arc<crate::metrics::Metrics>,
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
                // Down again however the leadership ends, a panic included.
                let _leading = metrics.leading(term);
                tracing::info!(host = %me, term, "this agent leads the scheduler");
                announced_follower = false;
                let mut leader = Leader {
                    events: EventRecorder::new(store.clone(), me.clone()),
                    store: &store,
                    term,
                    lease,
                    caches: LeaderCaches::start(&store, &shutdown),
                    grace,
                    not_ready_since: HashMap::new(),
                    compactor: super::compaction::Compactor::from_env(),
                    written: Written::default(),
                    marked: false,
                    project,
                    settled: Settled::default(),
                    full_at: Instant::now(),
                };
                // The GitSource controller syncs on its own clock (intervals, webhooks), so it runs
                // beside the passes rather than in them, and stops with the leadership.
                let gitsources = shutdown.child_token();
                let _stop_gitsources = gitsources.clone().drop_guard();
                tokio::spawn(super::gitsource::run(store.clone(), me.clone(), term, gitsources.clone()));
                let stopped = leader.lead(&shutdown).await;
                gitsources.cancel();
                leader.events.flush().await;
                drop(leader);
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
    /// What the passes read; started with the leadership, dropped with it.
    caches: LeaderCaches,
    grace: Duration,
    /// When each host was first seen NotReady by this leader.
    not_ready_since: HashMap<String, Instant>,
    /// Records the ContainerSet controller's events.
    events: EventRecorder,
    /// Compacts the store's history (`None`: turned off).
    compactor: Option<super::compaction::Compactor>,
    /// What this leader wrote that its caches have not seen yet: no pass runs before they have.
    written: Written,
    /// The placements' marker is known written ([`super::projection`]).
    marked: bool,
    /// Whether the passes keep the placements (see `AgentConfig::project_placements`).
    project: bool,
    /// What each controller last settled on: its next pass is skipped while nothing it reads changed.
    settled: Settled,
    /// When every controller last decided from scratch ([`FULL_PASS_EVERY`]).
    full_at: Instant,
}

/// What the leader's next pass is woken for, besides a change and the safety tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Due {
    /// The nearest deadline a controller asked for (a grace expiry, a rollout's health timeout, a
    /// retry): time is one of a controller's inputs, so that pass decides from scratch.
    controllers: Option<Instant>,
    /// The history compactor's next sample. No controller reads it: a pass woken by it alone is
    /// skipped where nothing changed, as on the safety tick. It used to count as a controller's
    /// deadline, which made every controller decide from scratch every 300 s (the compactor's
    /// sampling period) on top of [`FULL_PASS_EVERY`].
    compactor: Option<Instant>,
}

impl Due {
    fn next(&self) -> Option<Instant> {
        self.controllers.into_iter().chain(self.compactor).min()
    }

    /// Whether a pass woken for `reason` at `now` decides everything from scratch: a leadership's
    /// first pass, or a controller's deadline come.
    fn decides_everything(&self, reason: super::wake::Reason, now: Instant) -> bool {
        use super::wake::Reason;
        let deadline = reason == Reason::Deadline && self.controllers.is_some_and(|at| at <= now);
        reason == Reason::First || deadline
    }
}

/// How soon a pass that failed (the store unreachable, say) is tried again.
const RETRY: Duration = Duration::from_secs(1);

impl Leader<'_> {
    /// Schedules until the leadership is lost (false) or `shutdown` (true): a pass whenever a cache
    /// changed, a deadline came or the safety tick passed ([`Wake`]), once the caches have seen the
    /// leader's own last writes.
    async fn lead(&mut self, shutdown: &CancellationToken) -> bool {
        // The lease is renewed beside the passes, not between them: a pass that waits on a slow
        // store (hundreds of writes while a fleet converges) must not let the lease lapse, which
        // handed the leadership to another agent every TTL at 100 simulated hosts. On a task of
        // its own, so that a pass's stretches of computing (over tens of thousands of specs) do
        // not hold a renewal back either.
        let mut renewing = AbortOnDrop(tokio::spawn(renew_until_lost(self.store.clone(), self.lease)));
        if self.project {
            // Before the first pass, which lists everything: the agents keep their placements
            // meanwhile ([`super::projection::announce_keeper`]).
            let fence = Fence { key: keys::SCHEDULER_LEADER, mod_revision: self.term };
            let announced = tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = &mut renewing.0 => return false,
                announced = super::projection::announce_keeper(self.store, fence) => announced,
            };
            match announced {
                Ok(()) => {}
                Err(error) if lost_leadership(&error) => return false,
                Err(error) => {
                    tracing::warn!(%error, term = self.term, "could not say in the placements' marker that this leader keeps them");
                }
            }
        }
        let mut wake = Wake::new(self.caches.subscribe());
        let mut due = Due::default();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = &mut renewing.0 => return false,
                reason = wake.next(due.next()) => {
                    tracing::trace!(?reason, "leader pass");
                    let now = Instant::now();
                    if due.decides_everything(reason, now) {
                        self.settled = Settled::default();
                        self.full_at = now;
                    } else if now.duration_since(self.full_at) >= FULL_PASS_EVERY {
                        // The scheduling pass's own net is its rolling audit.
                        self.settled.projection = None;
                        self.settled.sets = None;
                        self.full_at = now;
                    }
                }
            }
            if !self.caches.caught_up(&self.written) {
                // The cache's catching up is a change: it wakes the next pass.
                tracing::debug!(written = ?self.written, "waiting for the caches to see the leader's own writes");
                continue;
            }
            self.written = Written::default();
            // A pass cut short by the lease's loss wrote nothing a successor could not: every
            // write is fenced.
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = &mut renewing.0 => return false,
                outcome = self.pass() => outcome,
            };
            match outcome {
                Ok(next) => due = next,
                Err(error) if lost_leadership(&error) => return false,
                Err(error) => {
                    tracing::debug!(%error, "leader pass failed; retrying");
                    due = Due { controllers: Some(Instant::now() + RETRY), compactor: None };
                }
            }
        }
    }

    /// One pass of every controller; answers the nearest deadline they know of, and when the
    /// compactor's next sample is due.
    async fn pass(&mut self) -> Result<Due, StoreError> {
        let fence = Fence { key: keys::SCHEDULER_LEADER, mod_revision: self.term };
        // Each controller's failure is its own: it retries soon, and the others (and the
        // compactor) still run. Only a lost leader key ends the pass.
        let schedule = self.schedule().await;
        let mut deadlines = vec![settle("scheduler", schedule)?];
        // Each host's placements follow the specs and bindings (after this pass's bindings are
        // seen: the next pass waits for the caches to catch up with them).
        if self.project {
            let (caches, written) = (&self.caches, &mut self.written);
            let settled = &mut self.settled.projection;
            let projected =
                super::projection::pass(self.store, fence, caches, written, &mut self.marked, settled).await;
            deadlines.push(settle("placement projection", projected)?);
        }
        // Read before the pass: a change while it runs makes the next pass decide again.
        let seen = self.caches.sets_changes();
        if self.settled.sets != Some(seen) {
            let before = self.written;
            let sets =
                super::sets::pass(self.store, fence, &self.caches, &self.events, &mut self.written).await;
            let idle = matches!(sets, Ok(None)) && self.written == before;
            self.settled.sets = idle.then_some(seen);
            deadlines.push(settle("ContainerSet controller", sets.map(|at| at.map(instant_of)))?);
        }
        // The agent upgrade campaign is driven by the same leader, fenced on the same term.
        let campaign = super::upgrade::drive(self.store, fence, &self.caches, &mut self.written).await;
        deadlines.push(settle("upgrade campaign", campaign.map(|at| at.map(instant_of)))?);
        #[cfg(feature = "failpoints")]
        crate::executor::failpoint::panic_task("leader");
        let mut compactor_due = None;
        if let Some(compactor) = &mut self.compactor {
            if let Err(error) = compactor.tick(self.store, self.caches.revision()).await {
                tracing::warn!(%error, "could not compact the store's history; retrying");
            }
            compactor_due = compactor.next_due();
        }
        Ok(Due { controllers: deadlines.into_iter().flatten().min(), compactor: compactor_due })
    }

    /// The scheduling pass; answers when the next NotReady host's grace period ends. Decides nothing
    /// while the caches are not in sync or no host is ready ([`LeaderCaches::scheduling_view`]).
    async fn schedule(&mut self) -> Result<Option<Instant>, StoreError> {
        // Taken and read before the caches are: a change while the pass runs is decided next pass.
        let changed = self.caches.changed_specs.take(Reader::Scheduling);
        let seen = self.caches.scheduling_changes();
        if let (Some(memo), Changed::Keys(keys)) = (&self.settled.schedule, &changed) {
            let unchanged = |store_key: &String| {
                let Some((namespace, name)) = keys::parse_spec_key(store_key) else { return true };
                let now = self.caches.specs.reflector().stored(store_key);
                let now = now.and_then(|stored| spec_placement(store_key, &stored.object));
                now.as_ref() == memo.specs.get(&format!("{namespace}/{name}"))
            };
            // The bindings' count first, then the hosts as the plan reads them.
            let hosts_as_remembered = || {
                memo.counts == seen
                    || (memo.counts[0] == seen[0]
                        && self.caches.hosts_view().is_some_and(|view| view.ready == memo.ready))
            };
            if keys.iter().all(unchanged) && hosts_as_remembered() {
                let memo = self.settled.schedule.as_mut().expect("matched above");
                memo.counts = seen;
                let Some(missed) = audit(memo, self.caches.specs.reflector(), Instant::now()) else {
                    return Ok(None);
                };
                tracing::warn!(%missed, "the scheduler's rolling audit found a change its skipping missed; deciding from scratch");
            }
        }
        self.settled.schedule = None;
        let Some(view) = self.caches.scheduling_view() else {
            tracing::debug!("not scheduling: the caches are not in sync, or no host is ready");
            return Ok(None);
        };
        let now = Instant::now();
        for host in view.ready.keys() {
            self.not_ready_since.remove(host);
        }
        let bindings = self.bindings();
        let mut went_not_ready = Vec::new();
        for stored in bindings.values() {
            let host = &stored.binding.host;
            if !view.ready.contains_key(host) && !self.not_ready_since.contains_key(host) {
                self.not_ready_since.insert(host.clone(), now);
                went_not_ready.push(host.clone());
            }
        }
        // Told once per host and leader: `kedge events`, and `kedge agent --notify` (a Warning).
        for host in went_not_ready {
            let bound = bindings.values().filter(|stored| stored.binding.host == host).count();
            let message = format!(
                "host {host} is NotReady (no heartbeat); its {bound} container(s) move to other hosts after {}s",
                self.grace.as_secs()
            );
            self.events.record_host(&host, EventType::Warning, "HostNotReady", &message).await;
        }
        let (specs, listed) = self.placements();
        let grace = self.grace;
        let since = &self.not_ready_since;
        let expired = |host: &str| since.get(host).is_some_and(|at| now.duration_since(*at) >= grace);
        let mut changes = plan(&specs, &view.ready, &bindings, &expired);
        let next_expiry = since.values().map(|at| *at + grace).filter(|at| *at > now).min();
        if changes.is_empty() && next_expiry.is_none() {
            // Decided from these caches alone (every grace period ahead has ended): the same caches
            // decide nothing again.
            let specs = specs.into_iter().map(|spec| (spec.key.clone(), spec)).collect();
            let ready = view.ready.clone();
            let audited_at = Some(now);
            self.settled.schedule =
                Some(ScheduleMemo { counts: seen, ready, specs, listed, audited: None, audited_at });
        }
        let fence = Fence { key: keys::SCHEDULER_LEADER, mod_revision: self.term };
        // A few at a time and a bounded number per pass: 9,000 specs applied at once were bound
        // one write after another, and for the 10 s that took no pass projected a placement (the
        // stall of the 100 and 300 host simulations). The rest is decided again next pass, at once.
        let more = changes.len() > MAX_BINDINGS_PER_PASS;
        changes.truncate(MAX_BINDINGS_PER_PASS);
        let this = &*self;
        let outcomes: Vec<(Change, Result<i64, StoreError>)> = futures::stream::iter(changes)
            .map(|change| async move {
                let outcome = this.apply(fence, &change).await;
                (change, outcome)
            })
            .buffer_unordered(CONCURRENT_BINDINGS)
            .collect()
            .await;
        for (change, outcome) in outcomes {
            match outcome {
                Ok(revision) => {
                    self.written.bindings = self.written.bindings.max(revision);
                    tracing::info!(%change, term = self.term, "scheduled")
                }
                Err(error @ StoreError::Conflict { .. }) if !lost_leadership(&error) => {
                    tracing::debug!(%change, "binding changed meanwhile; deciding again next pass")
                }
                Err(error) => return Err(error),
            }
        }
        Ok(if more { Some(Instant::now()) } else { next_expiry })
    }

    /// The cached bindings by `namespace/name`.
    fn bindings(&self) -> BTreeMap<String, StoredBinding> {
        self.caches.bindings.with(|all| {
            all.iter()
                .filter_map(|(key, stored)| {
                    let (namespace, name) = keys::parse_binding_key(key)?;
                    let binding = stored.object.clone();
                    Some((
                        format!("{namespace}/{name}"),
                        StoredBinding { binding, mod_revision: stored.mod_revision },
                    ))
                })
                .collect()
        })
    }

    /// Every cached spec's placement, read in place (a pass over 30,000 specs copies no spec), and
    /// how many entries the cache held.
    fn placements(&self) -> (Vec<SpecPlacement>, usize) {
        self.caches.specs.reflector().with(|all| {
            let placements = all
                .iter()
                .filter_map(|(store_key, stored)| spec_placement(store_key, &stored.object))
                .collect();
            (placements, all.len())
        })
    }

    /// Writes one change; answers the revision it wrote at.
    async fn apply(&self, fence: Fence<'_>, change: &Change) -> Result<i64, StoreError> {
        let key_of = |key: &str| {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
            keys::binding_key(namespace, name).map_err(|e| StoreError::Invalid(e.to_string()))
        };
        match change {
            Change::Bind { key, host, previous } => {
                let binding = Binding { host: host.clone(), term: self.term };
                let value = serde_json::to_vec(&binding).map_err(|e| StoreError::Invalid(e.to_string()))?;
                let condition = previous.map_or(PutCondition::Absent, PutCondition::ModRevision);
                self.store.put_fenced(fence, &key_of(key)?, value, condition).await
            }
            Change::Unbind { key, mod_revision } => {
                let condition = DeleteCondition::ModRevision(*mod_revision);
                Ok(self.store.delete_fenced(fence, &key_of(key)?, condition).await?.unwrap_or(0))
            }
        }
    }
}

/// Where the spec at `store_key` may go, as [`plan`] reads it.
fn spec_placement(store_key: &str, spec: &kedge_crds::Container) -> Option<SpecPlacement> {
    let (namespace, name) = keys::parse_spec_key(store_key)?;
    let placement = spec.spec.placement.as_ref();
    let labels = &spec.metadata.labels;
    let group = labels.get(SET_LABEL).map(|set| format!("{namespace}/{set}"));
    let max_per_host =
        spec.metadata.annotations.get(MAX_PER_HOST_ANNOTATION).and_then(|max| max.parse().ok());
    let depends_on = spec
        .spec
        .dependencies()
        .into_iter()
        .map(|dependency| format!("{namespace}/{}", dependency.name))
        .collect();
    Some(SpecPlacement {
        key: format!("{namespace}/{name}"),
        named_host: placement.and_then(|placement| placement.host.clone()),
        selector: placement.map(|placement| placement.host_selector.clone()).unwrap_or_default(),
        group,
        max_per_host,
        depends_on,
    })
}

/// Aborts its task when dropped: the lease's renewal ends with the leadership.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews the leader's lease every [`RENEW_EVERY`]; returns once the store says it is gone (a
/// failed renewal is tried again every 500 ms meanwhile: the fence protects the store).
async fn renew_until_lost(store: SharedStore, lease: LeaseId) {
    let mut next = Instant::now() + RENEW_EVERY;
    loop {
        tokio::time::sleep_until(next).await;
        match store.lease_keep_alive(lease).await {
            Ok(_) => next = Instant::now() + RENEW_EVERY,
            Err(StoreError::NotFound(_)) => return,
            Err(error) => {
                tracing::debug!(%error, "could not renew the scheduler's lease");
                next = Instant::now() + Duration::from_millis(500);
            }
        }
    }
}

/// The moment of a wall-clock deadline on the monotonic clock (now, if it is past; a day ahead at
/// most, so a far date read from the store cannot overflow the clock: the safety tick comes first).
fn instant_of(deadline: DateTime<Utc>) -> Instant {
    let ahead = (deadline - Utc::now()).to_std().unwrap_or_default();
    Instant::now() + ahead.min(Duration::from_secs(24 * 60 * 60))
}

/// A controller's part of a leader pass: its next deadline, or, when it failed, a retry after
/// [`RETRY`]. A conflict on the leader key (this agent no longer leads) ends the pass.
fn settle(
    controller: &str,
    outcome: Result<Option<Instant>, StoreError>,
) -> Result<Option<Instant>, StoreError> {
    match outcome {
        Ok(deadline) => Ok(deadline),
        Err(error) if lost_leadership(&error) => Err(error),
        Err(error) => {
            tracing::debug!(%error, controller, "leader controller failed; retrying");
            Ok(Some(Instant::now() + RETRY))
        }
    }
}

/// Whether `error` says this agent no longer leads: its fence, the leader key, moved.
fn lost_leadership(error: &StoreError) -> bool {
    matches!(error, StoreError::Conflict { key, .. } if key == keys::SCHEDULER_LEADER)
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
    fn a_change_reads_as_a_sentence_in_the_log() {
        let check = |change: Change, expected: &str| assert_eq!(change.to_string(), expected);
        check(bind("ns/web", "h1", None), "bind ns/web to host h1 (a new binding)");
        check(bind("ns/web", "h2", Some(7)), "bind ns/web to host h2 (replacing the binding at revision 7)");
        check(
            Change::Unbind { key: "ns/web".into(), mod_revision: 9 },
            "unbind ns/web (the binding at revision 9)",
        );
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

/// The leader's pass against a real (embedded) store, fed by caches the test fills by hand: what it
/// decides, and when it refuses to.
#[cfg(test)]
mod leader_tests {
    use super::*;
    use crate::agent::cache::DesiredState;
    use crate::runtime::Event;
    use crate::store::{EmbeddedOptions, EmbeddedStore, KeyValue};

    fn kv(key: String, value: &[u8], revision: i64) -> KeyValue {
        KeyValue {
            key,
            value: value.to_vec(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease: 0,
        }
    }

    fn unplaced_spec(name: &str, revision: i64) -> KeyValue {
        let value = serde_json::json!({
            "apiVersion": "kedge.io/v1",
            "kind": "Container",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"image": "kedge-test/app:v1"}
        });
        kv(keys::spec_key("default", name).unwrap(), value.to_string().as_bytes(), revision)
    }

    fn restarted(kvs: Vec<KeyValue>, revision: i64) -> Event {
        Event::Restarted { kvs, revision }
    }

    /// An embedded store in which "me" holds the leader key; answers the term.
    async fn leading_store() -> (tempfile::TempDir, SharedStore, i64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kedge.db");
        let store: SharedStore =
            Arc::new(EmbeddedStore::open(path, EmbeddedOptions::default()).await.unwrap());
        let term = store.put(keys::SCHEDULER_LEADER, b"me".to_vec(), PutCondition::Absent, 0).await.unwrap();
        (dir, store, term)
    }

    /// A leader of `term` whose spec cache holds one unplaced spec, "default/web"; its other caches
    /// are not fed yet.
    fn leader_of_one_spec(store: &SharedStore, term: i64, grace: Duration) -> Leader<'_> {
        let specs = Arc::new(DesiredState::default());
        specs.apply(&restarted(vec![unplaced_spec("web", 2)], 2));
        Leader {
            store,
            term,
            lease: 0,
            caches: LeaderCaches::unfed(specs),
            grace,
            not_ready_since: HashMap::new(),
            events: EventRecorder::new(store.clone(), "me"),
            compactor: None,
            written: Written::default(),
            marked: false,
            project: true,
            settled: Settled::default(),
            full_at: Instant::now(),
        }
    }

    #[test]
    fn only_a_leaderships_first_pass_or_a_controllers_deadline_decides_everything_from_scratch() {
        use super::super::wake::Reason;
        let now = Instant::now();
        let compactor_only = Due { controllers: None, compactor: Some(now) };
        assert!(
            !compactor_only.decides_everything(Reason::Deadline, now),
            "the compactor's sample is no controller's input"
        );
        assert!(!compactor_only.decides_everything(Reason::SafetyTick, now));
        assert!(!compactor_only.decides_everything(Reason::Changed, now));
        let both = Due { controllers: Some(now), compactor: Some(now) };
        assert!(
            both.decides_everything(Reason::Deadline, now),
            "a grace expiry or a retry decides everything"
        );
        let later = Due { controllers: Some(now + Duration::from_secs(5)), compactor: Some(now) };
        assert!(
            !later.decides_everything(Reason::Deadline, now),
            "woken for the compactor before the controller's deadline"
        );
        assert!(Due::default().decides_everything(Reason::First, now), "a leadership's first pass");
        assert_eq!(later.next(), Some(now));
        assert_eq!(Due::default().next(), None);
    }

    /// The scheduling memo's safety net: a placement changed behind the skipping's back (no
    /// change noted) is found by the rolling audit within one period of quiet safety ticks, and a
    /// spec added that way at the next audit; no audit runs twice within a tick.
    #[test]
    fn the_rolling_audit_finds_what_the_skipping_missed_within_a_period() {
        use super::super::wake::SAFETY_TICK;
        let specs = DesiredState::default();
        let names: Vec<String> = (0..100).map(|i| format!("web{i:03}")).collect();
        specs.apply(&restarted(names.iter().map(|name| unplaced_spec(name, 2)).collect(), 2));
        let remember = |specs: &DesiredState| {
            let (remembered, listed) = specs.reflector().with(|all| {
                let placements = all.iter().filter_map(|(key, stored)| spec_placement(key, &stored.object));
                (placements.map(|placement| (placement.key.clone(), placement)).collect(), all.len())
            });
            let ready = BTreeMap::new();
            ScheduleMemo { counts: [0; 3], ready, specs: remembered, listed, audited: None, audited_at: None }
        };
        let mut memo = remember(&specs);
        let start = Instant::now();
        let tick = |n: usize| start + SAFETY_TICK * n as u32;
        for n in 0..2 * AUDIT_PASSES {
            assert_eq!(audit(&mut memo, specs.reflector(), tick(n)), None, "nothing missed: pass {n}");
        }

        // web077 now names its host, and nobody told the scheduler.
        let mut named = serde_json::json!({
            "apiVersion": "kedge.io/v1", "kind": "Container",
            "metadata": {"name": "web077", "namespace": "default"},
            "spec": {"image": "kedge-test/app:v1"}
        });
        named["spec"]["placement"] = serde_json::json!({"host": "h2"});
        let web077 = keys::spec_key("default", "web077").unwrap();
        specs.apply(&Event::Put { kv: kv(web077.clone(), named.to_string().as_bytes(), 3), revision: 3 });
        let after = 2 * AUDIT_PASSES;
        // Twice within one tick: the second does not audit.
        assert_eq!(audit(&mut memo, specs.reflector(), tick(after)), None);
        let cursor = memo.audited.clone();
        assert_eq!(audit(&mut memo, specs.reflector(), tick(after) + Duration::from_secs(1)), None);
        assert_eq!(memo.audited, cursor, "not audited again within a tick");
        let found =
            (after + 1..=after + AUDIT_PASSES).find_map(|n| audit(&mut memo, specs.reflector(), tick(n)));
        assert_eq!(found, Some(web077), "found within a period");

        // A spec added behind the skipping's back: the count tells at the next audit.
        let mut memo = remember(&specs);
        specs.apply(&Event::Put { kv: unplaced_spec("api", 4), revision: 4 });
        let found = audit(&mut memo, specs.reflector(), start).expect("found at once");
        assert!(found.contains("101 specs cached where 100 were"), "{found}");
    }

    async fn bindings_in(store: &SharedStore) -> Vec<String> {
        store.list(keys::BINDINGS).await.unwrap().kvs.into_iter().map(|kv| kv.key).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn no_binding_while_a_cache_is_not_in_sync_or_no_host_is_ready() {
        let (_dir, store, term) = leading_store().await;
        let mut leader = leader_of_one_spec(&store, term, Duration::from_secs(30));
        let host = keys::host_key("h1").unwrap();
        let alive = keys::host_lease_key("h1").unwrap();

        // Nothing listed yet: the spec is unplaced, but nothing proves there is a host for it.
        assert_eq!(leader.schedule().await.unwrap(), None);
        leader.caches.hosts.apply(&restarted(vec![kv(host.clone(), b"{}", term)], term));
        // (The caches reflect the store at the leader key's revision: older than any binding written.)
        leader.caches.bindings.apply(&restarted(vec![], term));
        // Hosts and bindings in sync, liveness still listing: no host is known ready.
        assert_eq!(leader.schedule().await.unwrap(), None);
        // Every cache in sync, but the only host is NotReady.
        leader.caches.alive.apply(&restarted(vec![], term));
        assert_eq!(leader.schedule().await.unwrap(), None);
        assert!(bindings_in(&store).await.is_empty());
        // The host comes alive, then the liveness watch fails: the cache keeps its contents but is
        // not in sync, so still nothing.
        leader.caches.alive.apply(&Event::Put { kv: kv(alive.clone(), b"", term), revision: term });
        leader.caches.alive.apply(&Event::Error { message: "connection refused".into(), transient: true });
        assert_eq!(leader.schedule().await.unwrap(), None);
        assert!(bindings_in(&store).await.is_empty(), "no decision from a cache that is not in sync");

        // In sync again with a ready host: the spec is bound, once.
        leader.caches.alive.apply(&restarted(vec![kv(alive, b"", term)], term));
        leader.schedule().await.unwrap();
        assert_eq!(bindings_in(&store).await, vec![keys::binding_key("default", "web").unwrap()]);
        let written = leader.written;
        assert!(written.bindings > term, "the binding's revision is remembered: {written:?}");
        assert!(!leader.caches.caught_up(&written), "the bindings cache has not seen the write yet");
        // The cache sees the write: the next pass may decide, and decides nothing new.
        let binding = store.get(&keys::binding_key("default", "web").unwrap()).await.unwrap().unwrap();
        let revision = binding.mod_revision;
        leader.caches.bindings.apply(&Event::Put { kv: binding, revision });
        assert!(leader.caches.caught_up(&written));
        leader.written = Written::default();
        leader.schedule().await.unwrap();
        assert_eq!(leader.written, Written::default(), "nothing written twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_settled_pass_is_skipped_until_something_it_reads_changes() {
        let (_dir, store, term) = leading_store().await;
        let mut leader = leader_of_one_spec(&store, term, Duration::from_secs(30));
        let host = kv(keys::host_key("h1").unwrap(), b"{}", term);
        leader.caches.hosts.apply(&restarted(vec![host], term));
        leader.caches.alive.apply(&restarted(vec![kv(keys::host_lease_key("h1").unwrap(), b"", term)], term));
        let web = store
            .put(
                &keys::binding_key("default", "web").unwrap(),
                serde_json::to_vec(&Binding { host: "h1".into(), term }).unwrap(),
                PutCondition::Absent,
                0,
            )
            .await
            .unwrap();
        let bound = store.get(&keys::binding_key("default", "web").unwrap()).await.unwrap().unwrap();
        leader.caches.bindings.apply(&restarted(vec![bound], web));
        assert_eq!(leader.schedule().await.unwrap(), None);
        assert_eq!(leader.written, Written::default(), "settled: nothing to bind");
        assert!(leader.settled.schedule.is_some(), "remembered as settled");
        // A status (no cache the scheduler reads) changes, and web's image: still settled, skipped.
        leader.caches.statuses.apply(&restarted(vec![], web));
        let revised = serde_json::json!({
            "apiVersion": "kedge.io/v1", "kind": "Container",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"image": "kedge-test/app:v2"}
        });
        let web_key = keys::spec_key("default", "web").unwrap();
        let revised = kv(web_key.clone(), revised.to_string().as_bytes(), web + 1);
        leader.caches.specs.apply(&Event::Put { kv: revised, revision: web + 1 });
        leader.caches.changed_specs.note(Some(std::slice::from_ref(&web_key)));
        assert_eq!(leader.schedule().await.unwrap(), None);
        assert!(leader.settled.schedule.is_some(), "an image changed: where web may run did not");
        // h1's record rewritten with only its heartbeat time (every RECORD_REFRESH): the hosts'
        // count moves, the ready hosts and their labels do not: still skipped. Its labels changed:
        // decided again.
        let record = |heartbeat: &str, zone: &str| {
            let record = kedge_crds::host::HostRecord {
                name: "h1".into(),
                labels: BTreeMap::from([("zone".to_owned(), zone.to_owned())]),
                version: "0.1.0".into(),
                docker_version: "26.1.5".into(),
                cpus: 2,
                memory_bytes: 1 << 30,
                started_at: "2026-12-08T00:00:00Z".into(),
                last_heartbeat: heartbeat.into(),
                container: None,
            };
            serde_json::to_vec(&record).unwrap()
        };
        let h1 = keys::host_key("h1").unwrap();
        let beat = |at: &str, zone: &str, revision: i64| Event::Put {
            kv: kv(h1.clone(), &record(at, zone), revision),
            revision,
        };
        leader.caches.hosts.apply(&beat("2026-12-08T00:00:05Z", "a", web + 1));
        leader.settled.schedule = None;
        assert_eq!(leader.schedule().await.unwrap(), None);
        let before = leader.caches.scheduling_changes();
        assert!(leader.settled.schedule.is_some(), "settled with h1's labels");
        // Marks this memo: a pass that decides again makes a new one.
        leader.settled.schedule.as_mut().unwrap().audited = Some("this memo".into());
        leader.caches.hosts.apply(&beat("2026-12-08T00:05:05Z", "a", web + 2));
        assert_ne!(leader.caches.scheduling_changes(), before, "the hosts' count moved");
        assert_eq!(leader.schedule().await.unwrap(), None);
        let memo = leader.settled.schedule.as_ref().expect("a heartbeat's rewrite changes no plan: skipped");
        assert_eq!(memo.audited.as_deref(), Some("this memo"), "skipped, not decided again");
        assert_eq!(memo.counts, leader.caches.scheduling_changes(), "the new counts remembered");
        leader.caches.hosts.apply(&beat("2026-12-08T00:05:10Z", "b", web + 3));
        leader.schedule().await.unwrap();
        let memo = leader.settled.schedule.as_ref().expect("settled again: nothing to bind");
        assert_eq!(
            memo.ready.get("h1").and_then(|labels| labels.get("zone")).map(String::as_str),
            Some("b"),
            "decided again from the new labels"
        );
        // A new spec: the next pass decides again and binds it.
        let api = unplaced_spec("api", web + 2);
        leader.caches.changed_specs.note(Some(std::slice::from_ref(&api.key)));
        leader.caches.specs.apply(&Event::Put { kv: api, revision: web + 2 });
        leader.schedule().await.unwrap();
        assert!(leader.written.bindings > web, "the new spec is bound");
        assert!(leader.settled.schedule.is_none(), "a pass that wrote is not settled");
        let api = store.get(&keys::binding_key("default", "api").unwrap()).await.unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Binding>(&api.value).unwrap().host, "h1");
    }

    /// Feeds `leader` hosts h1 and h2, only h2 alive, and "web" bound to h1; answers the binding's
    /// revision.
    async fn web_bound_to_dead_h1(leader: &mut Leader<'_>, store: &SharedStore, term: i64) -> i64 {
        let hosts = ["h1", "h2"].map(|h| kv(keys::host_key(h).unwrap(), b"{}", 3));
        leader.caches.hosts.apply(&restarted(hosts.to_vec(), 3));
        let binding = serde_json::to_vec(&Binding { host: "h1".into(), term }).unwrap();
        let bound = kv(keys::binding_key("default", "web").unwrap(), &binding, 4);
        store.put(&bound.key, binding.clone(), PutCondition::Absent, 0).await.unwrap();
        let bound = store.get(&bound.key).await.unwrap().unwrap();
        let revision = bound.mod_revision;
        leader.caches.bindings.apply(&restarted(vec![bound], revision));
        leader
            .caches
            .alive
            .apply(&restarted(vec![kv(keys::host_lease_key("h2").unwrap(), b"", 3)], revision));
        revision
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_deadline_is_the_grace_expiry_of_a_host_that_went_not_ready() {
        let (_dir, store, term) = leading_store().await;
        let grace = Duration::from_secs(30);
        let mut leader = leader_of_one_spec(&store, term, grace);
        let revision = web_bound_to_dead_h1(&mut leader, &store, term).await;
        let start = Instant::now();
        assert_eq!(leader.schedule().await.unwrap(), Some(start + grace), "wake when h1's grace ends");
        assert_eq!(leader.written, Written::default(), "within the grace period, nothing moves");
        tokio::time::advance(grace).await;
        assert_eq!(leader.schedule().await.unwrap(), None, "no deadline left");
        assert!(leader.written.bindings > revision, "the spec moved to h2");
        let moved = store.get(&keys::binding_key("default", "web").unwrap()).await.unwrap().unwrap();
        assert_eq!(serde_json::from_slice::<Binding>(&moved.value).unwrap().host, "h2");
    }

    /// Real time: paused time would expire the events' lease while the embedded store writes.
    #[tokio::test]
    async fn a_host_going_not_ready_is_a_warning_event_once() {
        let (_dir, store, term) = leading_store().await;
        let mut leader = leader_of_one_spec(&store, term, Duration::from_secs(30));
        web_bound_to_dead_h1(&mut leader, &store, term).await;
        leader.schedule().await.unwrap();
        leader.schedule().await.unwrap();
        let events = crate::events::list_events(store.as_ref(), None).await.unwrap();
        let told: Vec<(&str, &str, u32)> =
            events.iter().map(|e| (e.involved_object.as_str(), e.reason.as_str(), e.count)).collect();
        assert_eq!(told, vec![("Host/h1", "HostNotReady", 1)], "told once, not every pass");
        assert_eq!(events[0].kind, EventType::Warning);
        assert!(
            events[0].message.contains("1 container(s) move to other hosts after 30s"),
            "{}",
            events[0].message
        );
    }
}
