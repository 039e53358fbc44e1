//! The leader's caches: a [`Reflector`] of every prefix the leader's passes read, started when this
//! agent wins the scheduler's leadership and stopped (their watches cancelled) when it loses it, so
//! that a pass reads memory, not the store. The leader keeps its own cache of every spec
//! ([`DesiredState`]): an agent's own cache holds only the specs its host runs once it follows
//! its placements (`agent/placements.rs`).
//!
//! Two rules keep decisions from stale data:
//! - A pass decides only from caches that are in sync ([`LeaderCaches::scheduling_view`] and the
//!   other passes check theirs): a key missing from a cache that is not in sync proves nothing.
//! - After writing at revision R under a cached prefix, the leader decides again only once that
//!   cache has seen R ([`Written`], [`LeaderCaches::caught_up`]): the next pass never acts again on
//!   the state its own write replaced (a second binding, a child written twice).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use kedge_crds::{ContainerSet, ContainerSetStatus, ContainerStatus};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::agent::bindings::Binding;
use crate::agent::cache::DesiredState;
use crate::agent::placements::PlacementHeader;
use crate::hosts::HostRecord;
use crate::runtime::{reflector, Event, Reflector, Watcher};
use crate::store::{keys, objects, KeyValue, SharedStore};
use crate::upgrade::{Campaign, HostUpgrade};

/// Every cache the leader reads; see the module docs.
pub(crate) struct LeaderCaches {
    /// Every spec (the leader's own cache, fed while it leads).
    pub specs: Arc<DesiredState>,
    /// Host records; a record that cannot be decoded is a host without labels (`None`).
    pub hosts: Arc<Reflector<Option<HostRecord>>>,
    /// Host liveness keys: a host is ready while its key exists.
    pub alive: Arc<Reflector<()>>,
    pub bindings: Arc<Reflector<Binding>>,
    /// Every host's placements, by their spec key's revision (`controllers/projection.rs`).
    pub placements: Arc<Reflector<PlacementHeader>>,
    /// ContainerSets; an unreadable one is kept apart (it still owns its children).
    pub sets: Arc<Reflector<ContainerSet>>,
    /// ContainerSet statuses; an unreadable one is rewritten by compare-and-swap on its revision.
    pub set_statuses: Arc<Reflector<ContainerSetStatus>>,
    /// Container statuses, for the ContainerSet controller's health gates.
    pub statuses: Arc<Reflector<ContainerStatus>>,
    /// Upgrade campaigns with their `create_revision` (the oldest running one goes first).
    pub campaigns: Arc<Reflector<(Campaign, i64)>>,
    /// Each host's upgrade request.
    pub host_upgrades: Arc<Reflector<HostUpgrade>>,
    /// The specs that changed since each incremental reader last looked.
    pub changed_specs: Arc<ChangedSpecs>,
    /// Stops the watches when the caches are dropped (the leadership ended).
    _stop: Option<DropGuard>,
}

/// Which spec keys changed, as a reader of [`ChangedSpecs`] sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Changed {
    /// Anything may have: the cache was listed anew or its watch failed, or too many keys changed to
    /// remember them. The reader decides from every spec.
    Everything,
    /// These store keys (`/kedge/v1/specs/<ns>/<name>`), and no other.
    Keys(BTreeSet<String>),
}

/// The readers that take the changed spec keys, each its own copy.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reader {
    Scheduling = 0,
    Projection = 1,
}

/// Beyond this many changed keys a reader is told [`Changed::Everything`].
const MAX_CHANGED: usize = 4096;

/// The spec keys changed since each [`Reader`] last took them. The specs' feed notes an event's keys
/// after applying it, then wakes the leader: whatever a reader takes, the cache already holds those
/// keys' new contents, and a key applied but not yet noted when a reader takes is noted after, and
/// wakes the next pass.
#[derive(Debug)]
pub(crate) struct ChangedSpecs {
    readers: Mutex<[Changed; 2]>,
    noted: watch::Sender<u64>,
}

impl Default for ChangedSpecs {
    /// Everything changed: a reader's first look decides from every spec.
    fn default() -> ChangedSpecs {
        ChangedSpecs {
            readers: Mutex::new([Changed::Everything, Changed::Everything]),
            noted: watch::channel(0).0,
        }
    }
}

impl ChangedSpecs {
    /// Notes that `keys` changed (`None`: anything may have) and wakes the leader.
    pub(crate) fn note(&self, keys: Option<&[String]>) {
        {
            let mut readers = self.readers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for changed in readers.iter_mut() {
                match (keys, &mut *changed) {
                    (Some(keys), Changed::Keys(set)) if set.len() + keys.len() <= MAX_CHANGED => {
                        set.extend(keys.iter().cloned())
                    }
                    (_, changed) => *changed = Changed::Everything,
                }
            }
        }
        self.noted.send_modify(|count| *count = count.wrapping_add(1));
    }

    /// What changed since `reader` last took it; from now on, nothing.
    pub(crate) fn take(&self, reader: Reader) -> Changed {
        let mut readers = self.readers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut readers[reader as usize], Changed::Keys(BTreeSet::new()))
    }
}

/// The highest revision the leader wrote under each cached prefix since its caches last caught up;
/// 0: nothing written there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Written {
    pub specs: i64,
    pub bindings: i64,
    pub placements: i64,
    pub set_statuses: i64,
    pub campaigns: i64,
    pub host_upgrades: i64,
}

/// What the scheduler decides from: every ready host's labels.
pub(crate) struct SchedulingView {
    pub ready: BTreeMap<String, BTreeMap<String, String>>,
}

fn decode_json<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Result<T, String> {
    serde_json::from_slice(&kv.value).map_err(|e| e.to_string())
}

impl LeaderCaches {
    /// Starts a watch of every prefix; they stop when the returned caches are dropped or `shutdown`
    /// is cancelled.
    pub(crate) fn start(store: &SharedStore, shutdown: &CancellationToken) -> Self {
        let token = shutdown.child_token();
        let mut caches = LeaderCaches::unfed(Arc::new(DesiredState::default()));
        let feed = |prefix: &str, what: &'static str| (store.clone(), prefix.to_owned(), what, token.clone());
        let specs = caches.specs.clone();
        let changed = caches.changed_specs.clone();
        let watcher = Watcher::new(store.clone(), keys::SPECS, token.clone());
        tokio::spawn(async move {
            let _following = specs.reflector().following();
            let mut watcher = watcher;
            while let Some(event) = watcher.next().await {
                let (_, applied) = specs.apply(&event);
                let one_key = matches!(event, Event::Put { .. } | Event::Delete { .. });
                changed.note(one_key.then_some(applied.keys.as_slice()));
                reflector::log_sync("leader: specs", keys::SPECS, &event, &applied);
            }
        });
        spawn_feed(feed(keys::PLACEMENTS, "leader: placements"), caches.placements.clone());
        spawn_feed(feed(keys::HOSTS, "leader: hosts"), caches.hosts.clone());
        spawn_feed(feed(keys::HOST_LEASES, "leader: host liveness"), caches.alive.clone());
        spawn_feed(feed(keys::BINDINGS, "leader: bindings"), caches.bindings.clone());
        spawn_feed(feed(keys::SETS, "leader: container sets"), caches.sets.clone());
        spawn_feed(feed(keys::SET_STATUS, "leader: container set statuses"), caches.set_statuses.clone());
        spawn_feed(feed(keys::STATUS, "leader: container statuses"), caches.statuses.clone());
        spawn_feed(feed(keys::UPGRADE_CAMPAIGNS, "leader: upgrade campaigns"), caches.campaigns.clone());
        spawn_feed(feed(keys::HOST_UPGRADES, "leader: upgrade requests"), caches.host_upgrades.clone());
        caches._stop = Some(token.drop_guard());
        caches
    }

    /// Empty caches that nothing feeds yet (not in sync): [`LeaderCaches::start`] feeds them from
    /// the store, unit tests by hand (`Reflector::apply`).
    pub(crate) fn unfed(specs: Arc<DesiredState>) -> Self {
        LeaderCaches {
            specs,
            hosts: Arc::new(Reflector::new(|kv| Ok(serde_json::from_slice(&kv.value).ok()))),
            alive: Arc::new(Reflector::new(|_| Ok(()))),
            bindings: Arc::new(Reflector::new(decode_json)),
            placements: Arc::new(Reflector::new(decode_json)),
            sets: Arc::new(Reflector::new(|kv| objects::decode_set(kv).map_err(|e| e.to_string()))),
            set_statuses: Arc::new(Reflector::new(decode_set_status)),
            statuses: Arc::new(Reflector::new(|kv| objects::decode_status(&kv.value))),
            campaigns: Arc::new(Reflector::new(|kv| decode_json(kv).map(|c| (c, kv.create_revision)))),
            host_upgrades: Arc::new(Reflector::new(decode_json)),
            changed_specs: Arc::new(ChangedSpecs::default()),
            _stop: None,
        }
    }

    /// A receiver per cache that changes with it: what wakes the leader.
    pub(crate) fn subscribe(&self) -> Vec<watch::Receiver<u64>> {
        let mut all: Vec<_> = self.every_cache().iter().map(|cache| cache.subscribe()).collect();
        all.push(self.changed_specs.noted.subscribe());
        all
    }

    /// The highest revision any cache reflects: a revision the store has reached (a lower bound of
    /// its current one), for the history compactor.
    pub(crate) fn revision(&self) -> i64 {
        self.every_cache().iter().map(|cache| cache.revision()).max().unwrap_or(0)
    }

    /// Every cache, once: the one list [`LeaderCaches::subscribe`] and [`LeaderCaches::revision`]
    /// iterate, so that a cache added to the leader is both watched for changes and counted.
    fn every_cache(&self) -> [&dyn AnyCache; 10] {
        let LeaderCaches {
            specs,
            hosts,
            alive,
            bindings,
            placements,
            sets,
            set_statuses,
            statuses,
            campaigns,
            host_upgrades,
            changed_specs: _,
            _stop,
        } = self;
        [
            specs.reflector(),
            hosts.as_ref(),
            alive.as_ref(),
            bindings.as_ref(),
            placements.as_ref(),
            sets.as_ref(),
            set_statuses.as_ref(),
            statuses.as_ref(),
            campaigns.as_ref(),
            host_upgrades.as_ref(),
        ]
    }

    /// The change counts ([`Reflector::changes`]) of what the scheduling pass reads besides the
    /// specs (whose changes it takes by key, [`ChangedSpecs`]): bindings, hosts and liveness.
    pub(crate) fn scheduling_changes(&self) -> [u64; 3] {
        [self.bindings.changes(), self.hosts.changes(), self.alive.changes()]
    }

    /// The change counts of what the placement projection reads besides the specs: bindings and
    /// placements.
    pub(crate) fn projection_changes(&self) -> [u64; 2] {
        [self.bindings.changes(), self.placements.changes()]
    }

    /// The change counts of what the ContainerSet controller reads: specs, sets, set statuses and
    /// container statuses.
    pub(crate) fn sets_changes(&self) -> [u64; 4] {
        let specs = self.specs.reflector().changes();
        [specs, self.sets.changes(), self.set_statuses.changes(), self.statuses.changes()]
    }

    /// Whether every cache the leader wrote under has seen (in sync) the leader's own last write there.
    pub(crate) fn caught_up(&self, written: &Written) -> bool {
        let seen = |revision: i64, in_sync: bool, wrote: i64| wrote == 0 || (in_sync && revision >= wrote);
        seen(self.specs.revision(), self.specs.authoritative(), written.specs)
            && seen(self.bindings.revision(), self.bindings.in_sync(), written.bindings)
            && seen(self.placements.revision(), self.placements.in_sync(), written.placements)
            && seen(self.set_statuses.revision(), self.set_statuses.in_sync(), written.set_statuses)
            && seen(self.campaigns.revision(), self.campaigns.in_sync(), written.campaigns)
            && seen(self.host_upgrades.revision(), self.host_upgrades.in_sync(), written.host_upgrades)
    }

    /// Every host's readiness and labels, or `None` while the host or liveness cache is not in sync:
    /// nothing is decided about hosts from a partial picture.
    pub(crate) fn hosts_view(&self) -> Option<SchedulingView> {
        if !(self.hosts.in_sync() && self.alive.in_sync()) {
            return None;
        }
        let mut ready = BTreeMap::new();
        self.hosts.with(|hosts| {
            for (key, stored) in hosts {
                let Some(name) = keys::parse_host_key(key) else { continue };
                let alive = keys::host_lease_key(name).is_ok_and(|lease| self.alive.get(&lease).is_some());
                if alive {
                    let labels =
                        stored.object.as_ref().map(|record| record.labels.clone()).unwrap_or_default();
                    ready.insert(name.to_owned(), labels);
                }
            }
        });
        Some(SchedulingView { ready })
    }

    /// What the scheduler decides from, or `None` (decide nothing) while the specs, hosts, liveness
    /// or bindings are not in sync, or no host is ready: binding or unbinding then could only act on
    /// a partial picture (a newly elected leader whose host cache is still listing sees no host).
    pub(crate) fn scheduling_view(&self) -> Option<SchedulingView> {
        if !(self.specs.authoritative() && self.bindings.in_sync()) {
            return None;
        }
        self.hosts_view().filter(|view| !view.ready.is_empty())
    }
}

/// What [`LeaderCaches::subscribe`] and [`LeaderCaches::revision`] ask of a cache, whatever it holds.
trait AnyCache {
    fn subscribe(&self) -> watch::Receiver<u64>;
    fn revision(&self) -> i64;
}

impl<K: Clone + Send + Sync + 'static> AnyCache for Reflector<K> {
    fn subscribe(&self) -> watch::Receiver<u64> {
        Reflector::subscribe(self)
    }

    fn revision(&self) -> i64 {
        Reflector::revision(self)
    }
}

/// Feeds `cache` from a watcher of `prefix` on a task of its own, until `token` is cancelled.
fn spawn_feed<K: Clone + Send + Sync + 'static>(
    (store, prefix, what, token): (SharedStore, String, &'static str, CancellationToken),
    cache: Arc<Reflector<K>>,
) {
    let watcher = Watcher::new(store, prefix.clone(), token);
    tokio::spawn(async move {
        reflector::run(&cache, watcher, |event, applied| reflector::log_sync(what, &prefix, event, applied))
            .await;
    });
}

fn decode_set_status(kv: &KeyValue) -> Result<ContainerSetStatus, String> {
    kedge_crds::from_json_lenient::<ContainerSetStatus>(&kv.value)
        .map(|read| read.value)
        .map_err(|e| e.to_string())
}
