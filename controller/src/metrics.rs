//! The agent's Prometheus metrics, served as text at `GET /metrics` (docs/metrics.md).
//!
//! Cheap by construction: what the workers count is an atomic increment or one histogram
//! observation on handles made once at start; the gauges (queue depth, keys backing off, containers
//! by condition) are computed when scraped, by a sampler the agent attaches, so an idle agent does
//! no work for its metrics and no task wakes for them.
//!
//! A repair's duration runs from the engine event that showed the drift (a `die`, `destroy` or
//! `pause` of a managed container, [`Metrics::drift_seen`]) to the end of the reconcile that left the
//! container running again ([`Metrics::repaired`]). A drift the agent finds without such an event (a
//! resync, a start) is repaired but not timed: it has no start.
//!
//! Store requests are timed by a wrapper around whichever store the agent opened
//! (`store::metered`), so etcd and the embedded store report the same series; a watcher that lists
//! again (after an error, an ended stream or a compaction) tells its store, which counts a restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s text (OpenMetrics, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of `kedge_containers`: a condition (`Ready`, `Synced`, `Degraded`) and its status.
type ConditionLabels = [(&'static str, String); 2];

/// The labels of the store's series: the implementation (`etcd`, `embedded`) and the operation.
type StoreLabels = [(&'static str, &'static str); 2];

/// The labels of `kedge_store_errors_total`: the implementation, the operation and the error's kind.
type StoreErrorLabels = [(&'static str, &'static str); 3];

/// Why an update was rolled back, the `phase` label of `kedge_updates_rolled_back_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackPhase {
    /// The recreate itself failed (the new container did not start or did not become healthy).
    Recreate,
    /// The new container ran, then failed inside its soak (`updatePolicy`'s `minReadySeconds`).
    Soak,
}

/// How a reconcile ended, the `result` label of `kedge_reconcile_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    /// Converged; nothing to do until the next event.
    Done,
    /// Converged for now, and looked at again after a delay (a dependency, an image check, a backoff).
    Requeue,
    /// Failed; retried with the key's backoff.
    Error,
}

/// What the gauges read when scraped: the agent's queue and the statuses it wrote.
pub trait Sampler: Send + Sync {
    /// Keys waiting in the work queue.
    fn queue_depth(&self) -> usize;
    /// Keys whose last reconcile failed, waiting out their backoff.
    fn backoff_keys(&self) -> usize;
    /// Each key's conditions as last written: `(condition, status)` pairs.
    fn conditions(&self, each: &mut dyn FnMut(&str, &str));
}

/// Every metric of one agent. Shared: the agent counts, the API renders.
pub struct Metrics {
    registry: Registry,
    reconcile_done: Counter,
    reconcile_requeue: Counter,
    reconcile_error: Counter,
    reconcile_duration: Histogram,
    repair_stopped: Histogram,
    repair_missing: Histogram,
    repair_paused: Histogram,
    queue_depth: Gauge,
    backoff_keys: Gauge,
    leader: Gauge,
    term: Gauge,
    containers: Family<ConditionLabels, Gauge>,
    store_duration: Family<StoreLabels, Histogram>,
    store_errors: Family<StoreErrorLabels, Counter>,
    watch_restarts: Family<[(&'static str, String); 1], Counter>,
    updates_available: Gauge,
    updates_applied: Counter,
    rolled_back_recreate: Counter,
    rolled_back_soak: Counter,
    resync_reconciled: Counter,
    resync_passed: Counter,
    /// Per key, the first drift event not yet repaired: its time and kind.
    drifts: Mutex<HashMap<String, (SystemTime, DriftKind)>>,
    /// Set while an agent runs; without one the gauges read 0.
    sampler: Mutex<Option<std::sync::Weak<dyn Sampler>>>,
}

/// Holds `kedge_scheduler_leader` at 1 while it lives ([`Metrics::leading`]).
#[derive(Debug)]
pub struct Leading<'a> {
    leader: &'a Gauge,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        self.leader.set(0);
    }
}

/// The kind of drift a repair mended, the `drift` label of `kedge_repair_duration_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftKind {
    /// The container stopped (`die`).
    Stopped,
    /// The container was removed (`destroy`).
    Missing,
    /// The container was paused.
    Paused,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let reconciles = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "kedge_reconcile",
            "Reconciles finished, by result (done, requeue, error)",
            reconciles.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "kedge_reconcile_duration_seconds",
            "How long one reconcile of one key took",
            reconcile_duration.clone(),
        );
        let repairs = Family::<[(&'static str, &'static str); 1], Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.05, 2.0, 14))
        });
        registry.register(
            "kedge_repair_duration_seconds",
            "From the engine event that showed a drift to the container running again, by kind of drift",
            repairs.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register("kedge_queue_depth", "Keys waiting in the work queue", queue_depth.clone());
        let backoff_keys = Gauge::default();
        registry.register("kedge_backoff_keys", "Keys waiting out a failure's backoff", backoff_keys.clone());
        let leader = Gauge::default();
        registry.register(
            "kedge_scheduler_leader",
            "1 while this agent leads the scheduler, else 0",
            leader.clone(),
        );
        let term = Gauge::default();
        registry.register(
            "kedge_scheduler_term",
            "The term of this agent's last scheduler leadership (the leader key's revision), 0 before one",
            term.clone(),
        );
        let containers = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "kedge_containers",
            "This host's containers by condition and status, as the agent last wrote them",
            containers.clone(),
        );
        let store_duration = Family::<StoreLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "kedge_store_request_duration_seconds",
            "How long one store request took, by store (etcd, embedded) and operation, errors included",
            store_duration.clone(),
        );
        let store_errors = Family::<StoreErrorLabels, Counter>::default();
        registry.register(
            "kedge_store_errors",
            "Store requests that failed, by store, operation and kind of error",
            store_errors.clone(),
        );
        let watch_restarts = Family::<[(&'static str, String); 1], Counter>::default();
        registry.register(
            "kedge_watch_restarts",
            "Store watches listed again after an error, an ended stream or a compaction, by what was watched",
            watch_restarts.clone(),
        );
        let updates_available = Gauge::default();
        registry.register(
            "kedge_updates_available",
            "This host's containers whose update policy found an update not applied yet",
            updates_available.clone(),
        );
        let updates_applied = Counter::default();
        registry.register(
            "kedge_updates_applied",
            "Containers replaced for an update their update policy found",
            updates_applied.clone(),
        );
        let rolled_back = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "kedge_updates_rolled_back",
            "Updates rolled back to the previous container or image, by phase (recreate, soak)",
            rolled_back.clone(),
        );
        registry.register(
            "kedge_build",
            "The agent's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let resync_keys = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "kedge_resync_keys",
            "Specs' keys the periodic resync went through, by decision (reconciled, or passed over: settled and listed as its last reconcile saw them)",
            resync_keys.clone(),
        );
        let resync_reconciled = resync_keys.get_or_create(&[("decision", "reconciled")]).clone();
        let resync_passed = resync_keys.get_or_create(&[("decision", "passed")]).clone();
        let rolled_back_recreate = rolled_back.get_or_create(&[("phase", "recreate")]).clone();
        let rolled_back_soak = rolled_back.get_or_create(&[("phase", "soak")]).clone();
        let result = |value| reconciles.get_or_create(&[("result", value)]).clone();
        let repair = |value| repairs.get_or_create(&[("drift", value)]).clone();
        Metrics {
            reconcile_done: result("done"),
            reconcile_requeue: result("requeue"),
            reconcile_error: result("error"),
            reconcile_duration,
            repair_stopped: repair("stopped"),
            repair_missing: repair("missing"),
            repair_paused: repair("paused"),
            queue_depth,
            backoff_keys,
            leader,
            term,
            containers,
            store_duration,
            store_errors,
            watch_restarts,
            updates_available,
            updates_applied,
            rolled_back_recreate,
            rolled_back_soak,
            resync_reconciled,
            resync_passed,
            drifts: Mutex::new(HashMap::new()),
            sampler: Mutex::new(None),
            registry,
        }
    }

    /// Counts one reconcile that took `took`.
    /// A periodic resync enqueued `reconciled` specs' keys and passed over `passed`.
    pub fn resynced(&self, reconciled: usize, passed: usize) {
        self.resync_reconciled.inc_by(reconciled as u64);
        self.resync_passed.inc_by(passed as u64);
    }

    pub fn reconciled(&self, result: ReconcileResult, took: Duration) {
        let counter = match result {
            ReconcileResult::Done => &self.reconcile_done,
            ReconcileResult::Requeue => &self.reconcile_requeue,
            ReconcileResult::Error => &self.reconcile_error,
        };
        counter.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// Notes that the engine showed `key` drifting at `at`; the first such event of a drift counts
    /// (a later `destroy` only makes its kind `missing`),
    /// until a repair or a reconcile that finds nothing to repair ends it ([`Metrics::repaired`],
    /// [`Metrics::no_drift`]).
    pub fn drift_seen(&self, key: &str, kind: DriftKind, at: SystemTime) {
        let mut drifts = self.lock_drifts();
        match drifts.get_mut(key) {
            // A removal by force shows `die` then `destroy`: one drift, the container missing.
            Some((_, seen)) if kind == DriftKind::Missing => *seen = kind,
            Some(_) => {}
            None => {
                drifts.insert(key.to_owned(), (at, kind));
            }
        }
    }

    /// `key`'s container runs again after a repair: observes the time since its drift event, if
    /// one was seen.
    pub fn repaired(&self, key: &str) {
        let Some((at, kind)) = self.lock_drifts().remove(key) else {
            return;
        };
        let took = SystemTime::now().duration_since(at).unwrap_or_default();
        let histogram = match kind {
            DriftKind::Stopped => &self.repair_stopped,
            DriftKind::Missing => &self.repair_missing,
            DriftKind::Paused => &self.repair_paused,
        };
        histogram.observe(took.as_secs_f64());
    }

    /// A reconcile of `key` found nothing to repair: the events noted were the agent's own (a
    /// recreate stops and removes the old container) or were repaired already.
    pub fn no_drift(&self, key: &str) {
        let mut drifts = self.lock_drifts();
        if !drifts.is_empty() {
            drifts.remove(key);
        }
    }

    /// Counts one store request of `operation` on `store` that took `took`, and failed with an
    /// error of kind `error` when that is `Some`.
    pub fn store_request(
        &self,
        store: &'static str,
        operation: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        self.store_duration
            .get_or_create(&[("store", store), ("operation", operation)])
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            self.store_errors
                .get_or_create(&[("store", store), ("operation", operation), ("error", error)])
                .inc();
        }
    }

    /// A watch of `watched` (a name for the prefix, as `store::metered` gives it) was listed again.
    pub fn watch_restarted(&self, watched: &str) {
        self.watch_restarts.get_or_create(&[("watch", watched.to_owned())]).inc();
    }

    /// A container was replaced for an update its update policy found.
    pub fn update_applied(&self) {
        self.updates_applied.inc();
    }

    /// An update was rolled back in `phase`.
    pub fn update_rolled_back(&self, phase: RollbackPhase) {
        match phase {
            RollbackPhase::Recreate => self.rolled_back_recreate.inc(),
            RollbackPhase::Soak => self.rolled_back_soak.inc(),
        };
    }

    /// This agent leads the scheduler in `term` until the answer is dropped.
    pub fn leading(&self, term: i64) -> Leading<'_> {
        self.term.set(term);
        self.leader.set(1);
        Leading { leader: &self.leader }
    }

    /// Makes the gauges read `sampler` when scraped (the running agent; a `Weak`, so a stopped
    /// agent is not kept alive by its metrics).
    pub fn attach(&self, sampler: std::sync::Weak<dyn Sampler>) {
        *self.sampler.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(sampler);
    }

    /// The text Prometheus scrapes: the gauges sampled now, then every metric.
    pub fn render(&self) -> String {
        self.sample();
        let mut text = String::new();
        // Writing to a String cannot fail; the metric names and labels are valid by construction.
        let _ = encode(&mut text, &self.registry);
        text
    }

    fn sample(&self) {
        let sampler = self.sampler.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let Some(sampler) = sampler.and_then(|weak| weak.upgrade()) else {
            return;
        };
        self.queue_depth.set(sampler.queue_depth() as i64);
        self.backoff_keys.set(sampler.backoff_keys() as i64);
        let mut counts: HashMap<ConditionLabels, i64> = HashMap::new();
        let mut updates_available = 0;
        sampler.conditions(&mut |condition, status| {
            if condition == "UpdateAvailable" && status == "True" {
                updates_available += 1;
            }
            let Some(condition) =
                ["Ready", "Synced", "Degraded"].into_iter().find(|known| *known == condition)
            else {
                return;
            };
            *counts
                .entry([("condition", condition.to_owned()), ("status", status.to_owned())])
                .or_default() += 1;
        });
        self.updates_available.set(updates_available);
        self.containers.clear();
        for (labels, count) in counts {
            self.containers.get_or_create(&labels).set(count);
        }
    }

    fn lock_drifts(&self) -> std::sync::MutexGuard<'_, HashMap<String, (SystemTime, DriftKind)>> {
        self.drifts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_repair_is_timed_from_its_first_drift_event_once() {
        let metrics = Metrics::new();
        let at = SystemTime::now() - Duration::from_secs(2);
        metrics.drift_seen("default/web", DriftKind::Stopped, at);
        metrics.drift_seen("default/web", DriftKind::Paused, SystemTime::now());
        metrics.repaired("default/web");
        metrics.repaired("default/web");
        let text = metrics.render();
        assert_eq!(
            value_of(&text, "kedge_repair_duration_seconds_count{drift=\"stopped\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value_of(&text, "kedge_repair_duration_seconds_count{drift=\"paused\"}"),
            Some(0.0),
            "{text}"
        );
        let sum = value_of(&text, "kedge_repair_duration_seconds_sum{drift=\"stopped\"}").unwrap();
        assert!((2.0..10.0).contains(&sum), "{text}");
    }

    #[test]
    fn a_removal_by_force_is_one_missing_drift_from_its_die() {
        let metrics = Metrics::new();
        let at = SystemTime::now() - Duration::from_secs(2);
        metrics.drift_seen("default/web", DriftKind::Stopped, at);
        metrics.drift_seen("default/web", DriftKind::Missing, SystemTime::now());
        metrics.repaired("default/web");
        let text = metrics.render();
        assert_eq!(
            value_of(&text, "kedge_repair_duration_seconds_count{drift=\"stopped\"}"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value_of(&text, "kedge_repair_duration_seconds_count{drift=\"missing\"}"),
            Some(1.0),
            "{text}"
        );
        let sum = value_of(&text, "kedge_repair_duration_seconds_sum{drift=\"missing\"}").unwrap();
        assert!((2.0..10.0).contains(&sum), "{text}");
    }

    #[test]
    fn a_reconcile_without_drift_forgets_the_agents_own_events() {
        let metrics = Metrics::new();
        metrics.drift_seen("default/web", DriftKind::Missing, SystemTime::now());
        metrics.no_drift("default/web");
        metrics.repaired("default/web");
        let text = metrics.render();
        assert_eq!(
            value_of(&text, "kedge_repair_duration_seconds_count{drift=\"missing\"}"),
            Some(0.0),
            "{text}"
        );
    }

    #[test]
    fn reconciles_are_counted_by_result() {
        let metrics = Metrics::new();
        metrics.reconciled(ReconcileResult::Done, Duration::from_millis(3));
        metrics.reconciled(ReconcileResult::Error, Duration::from_millis(3));
        metrics.reconciled(ReconcileResult::Error, Duration::from_millis(3));
        let text = metrics.render();
        assert_eq!(value_of(&text, "kedge_reconcile_total{result=\"done\"}"), Some(1.0), "{text}");
        assert_eq!(value_of(&text, "kedge_reconcile_total{result=\"error\"}"), Some(2.0), "{text}");
        assert_eq!(value_of(&text, "kedge_reconcile_duration_seconds_count"), Some(3.0), "{text}");
        assert!(text.contains("kedge_build_info{version=\""), "{text}");
    }

    #[test]
    fn updates_applied_and_rolled_back_are_counted_by_phase() {
        let metrics = Metrics::new();
        metrics.update_applied();
        metrics.update_rolled_back(RollbackPhase::Recreate);
        metrics.update_rolled_back(RollbackPhase::Soak);
        metrics.update_rolled_back(RollbackPhase::Soak);
        let text = metrics.render();
        assert_eq!(value_of(&text, "kedge_updates_applied_total"), Some(1.0), "{text}");
        assert_eq!(
            value_of(&text, "kedge_updates_rolled_back_total{phase=\"recreate\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(value_of(&text, "kedge_updates_rolled_back_total{phase=\"soak\"}"), Some(2.0), "{text}");
    }

    /// A sampler with one key, so that every family has a series (an empty one is not rendered).
    struct OneKey;

    impl Sampler for OneKey {
        fn queue_depth(&self) -> usize {
            1
        }
        fn backoff_keys(&self) -> usize {
            0
        }
        fn conditions(&self, each: &mut dyn FnMut(&str, &str)) {
            each("Ready", "True");
            each("Synced", "True");
            each("NotACondition", "True");
            each("UpdateAvailable", "True");
            each("UpdateAvailable", "False");
        }
    }

    fn sampled() -> (Metrics, std::sync::Arc<dyn Sampler>) {
        let metrics = Metrics::new();
        // A series in every family of the store's and the watches' too.
        metrics.store_request("etcd", "get", Duration::from_millis(1), Some("unavailable"));
        metrics.watch_restarted("specs");
        let sampler: std::sync::Arc<dyn Sampler> = std::sync::Arc::new(OneKey);
        metrics.attach(std::sync::Arc::downgrade(&sampler));
        (metrics, sampler)
    }

    #[test]
    fn gauges_are_sampled_when_scraped() {
        let (metrics, _sampler) = sampled();
        let text = metrics.render();
        assert_eq!(value_of(&text, "kedge_queue_depth"), Some(1.0), "{text}");
        assert_eq!(
            value_of(&text, "kedge_containers{condition=\"Ready\",status=\"True\"}"),
            Some(1.0),
            "{text}"
        );
        assert!(!text.contains("NotACondition"), "{text}");
        assert_eq!(value_of(&text, "kedge_updates_available"), Some(1.0), "only True counts: {text}");
        let _leading = metrics.leading(7);
        let text = metrics.render();
        assert_eq!(value_of(&text, "kedge_scheduler_leader"), Some(1.0), "{text}");
        assert_eq!(value_of(&text, "kedge_scheduler_term"), Some(7.0), "{text}");
        drop(_leading);
        assert_eq!(value_of(&metrics.render(), "kedge_scheduler_leader"), Some(0.0));
    }

    /// The families `render` declares (`# TYPE NAME`), and the names their samples may carry.
    fn rendered_names() -> std::collections::BTreeSet<String> {
        let (metrics, _sampler) = sampled();
        let text = metrics.render();
        let families = text.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next());
        families
            .flat_map(|family| {
                ["", "_total", "_bucket", "_count", "_sum", "_info"].map(|suffix| format!("{family}{suffix}"))
            })
            .collect()
    }

    fn kedge_names(text: &str) -> std::collections::BTreeSet<&str> {
        text.match_indices("kedge_")
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
                &rest[..end]
            })
            .collect()
    }

    #[test]
    fn the_dashboard_queries_only_metrics_the_agent_serves() {
        let rendered = rendered_names();
        let dashboard = include_str!("../../charts/grafana/kedge-dashboard.json");
        for name in kedge_names(dashboard) {
            assert!(rendered.contains(name), "the dashboard queries {name}, which /metrics does not serve");
        }
    }

    #[test]
    fn every_served_metric_is_documented() {
        let docs = include_str!("../../docs/metrics.md");
        let (metrics, _sampler) = sampled();
        let text = metrics.render();
        for family in text.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split(' ').next()) {
            let documented = [family.to_owned(), format!("{family}_total"), format!("{family}_info")]
                .iter()
                .any(|name| docs.contains(&format!("`{name}`")));
            assert!(documented, "docs/metrics.md does not list {family}");
        }
    }
}
