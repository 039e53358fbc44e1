//! The work queue: de-duplicates keys, never hands one key to two workers at once, delays keys, and
//! backs failing keys off exponentially with jitter, each key on its own.
//!
//! Sources (the store watch, the engine's events, the resync timer) only [`WorkQueue::add`] keys;
//! workers [`WorkQueue::next`] a key, reconcile it from the latest state (level-triggered), and then
//! call exactly one of [`WorkQueue::succeeded`], [`WorkQueue::failed`] or [`WorkQueue::done_requeue_after`].
//!
//! Guarantees, as client-go's rate-limited queue and kube-runtime's scheduler give them:
//! - a key is queued at most once, however many times it is added before a worker takes it;
//! - a key added while a worker holds it is handed out again only after that worker is done;
//! - a key's backoff grows only with its own failures and is reset by its first success, so one
//!   failing spec never slows the others;
//! - bounded concurrency is the caller's: run as many workers as you want reconciles at once.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::Notify;
use tokio::time::Instant;

/// How failing keys back off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// Delay before the first retry.
    pub min_delay: Duration,
    /// The delay stops growing here, so a key that failed for an hour is still retried this often.
    pub max_delay: Duration,
    /// Growth per failure.
    pub factor: f32,
    /// Randomizes each delay by up to one more delay, so many keys failing together spread out.
    pub jitter: bool,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(300),
            factor: 2.0,
            jitter: true,
        }
    }
}

/// What [`WorkQueue::failed`] decided for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Consecutive failures of this key, this one included.
    pub attempt: u32,
    /// When the key will be handed out again.
    pub delay: Duration,
}

/// A cloneable handle on one queue; all clones share it.
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue { shared: self.shared.clone() }
    }
}

struct Shared<K> {
    state: Mutex<State<K>>,
    wake: Notify,
    backoff: BackoffConfig,
}

struct State<K> {
    /// Keys ready to hand out, in the order they became ready.
    ready: VecDeque<K>,
    /// Keys that need a reconcile: queued in `ready`, or waiting for their worker to finish.
    dirty: HashSet<K>,
    /// Keys a worker holds now.
    processing: HashSet<K>,
    /// Keys due later, by due time; `due` holds each key's earliest due time.
    delayed: BTreeSet<(Instant, u64, K)>,
    due: HashMap<K, (Instant, u64)>,
    sequence: u64,
    /// The backoff of each key that is failing now.
    failures: HashMap<K, (u32, ExponentialBackoff)>,
    shutdown: bool,
}

impl<K: Clone + Eq + Hash + Ord> WorkQueue<K> {
    pub fn new(backoff: BackoffConfig) -> Self {
        WorkQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    ready: VecDeque::new(),
                    dirty: HashSet::new(),
                    processing: HashSet::new(),
                    delayed: BTreeSet::new(),
                    due: HashMap::new(),
                    sequence: 0,
                    failures: HashMap::new(),
                    shutdown: false,
                }),
                wake: Notify::new(),
                backoff,
            }),
        }
    }

    /// Asks for `key` to be reconciled as soon as a worker is free.
    pub fn add(&self, key: K) {
        let mut state = self.lock();
        state.remove_delayed(&key);
        if state.mark_dirty(key) {
            drop(state);
            self.shared.wake.notify_waiters();
        }
    }

    /// Asks for `key` to be reconciled after `delay`, unless something asks for it sooner.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let mut state = self.lock();
        state.schedule(key, Instant::now() + delay);
        drop(state);
        self.shared.wake.notify_waiters();
    }

    /// Waits for a key to reconcile; `None` once the queue is shut down.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.shared.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_due = {
                let mut state = self.lock();
                if state.shutdown {
                    return None;
                }
                state.promote_due(Instant::now());
                if let Some(key) = state.ready.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    return Some(key);
                }
                state.delayed.first().map(|(due, _, _)| *due)
            };
            match next_due {
                Some(due) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The reconcile of `key` succeeded: its backoff is forgotten.
    pub fn succeeded(&self, key: &K) {
        let mut state = self.lock();
        state.failures.remove(key);
        self.finish(state, key);
    }

    /// The reconcile of `key` succeeded and wants to run again after `delay` (a periodic check).
    pub fn done_requeue_after(&self, key: &K, delay: Duration) {
        let mut state = self.lock();
        state.failures.remove(key);
        state.schedule(key.clone(), Instant::now() + delay);
        self.finish(state, key);
    }

    /// The reconcile of `key` failed: it is handed out again after its next backoff delay.
    pub fn failed(&self, key: &K) -> Retry {
        let mut state = self.lock();
        let config = self.shared.backoff;
        let (attempt, backoff) =
            state.failures.entry(key.clone()).or_insert_with(|| (0, build_backoff(config)));
        *attempt += 1;
        let attempt = *attempt;
        let delay = backoff.next().unwrap_or(config.max_delay);
        state.schedule(key.clone(), Instant::now() + delay);
        self.finish(state, key);
        Retry { attempt, delay }
    }

    /// Consecutive failures of `key` so far (0 when it is not failing).
    pub fn failures(&self, key: &K) -> u32 {
        self.lock().failures.get(key).map_or(0, |(attempts, _)| *attempts)
    }

    /// Number of keys waiting: ready, delayed, or dirty behind their worker.
    pub fn len(&self) -> usize {
        let state = self.lock();
        let delayed_only = state.due.keys().filter(|key| !state.dirty.contains(*key)).count();
        state.dirty.len() + delayed_only
    }

    /// Number of keys failing now, each waiting out its backoff.
    pub fn backing_off(&self) -> usize {
        self.lock().failures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops handing out keys: every waiting [`WorkQueue::next`] returns `None`.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.shared.wake.notify_waiters();
    }

    fn finish(&self, mut state: std::sync::MutexGuard<'_, State<K>>, key: &K) {
        state.processing.remove(key);
        // A key added while it was being processed was held back; queue it now.
        if state.dirty.contains(key) {
            state.ready.push_back(key.clone());
        }
        drop(state);
        self.shared.wake.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A worker that panicked while holding the lock leaves the state consistent (every
        // mutation above completes before it could panic), so a poisoned lock is still usable.
        self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<K: Clone + Eq + Hash + Ord> State<K> {
    /// Marks `key` dirty; returns whether a worker may now pick it up.
    fn mark_dirty(&mut self, key: K) -> bool {
        if !self.dirty.insert(key.clone()) {
            return false;
        }
        if self.processing.contains(&key) {
            return false;
        }
        self.ready.push_back(key);
        true
    }

    fn schedule(&mut self, key: K, at: Instant) {
        if self.dirty.contains(&key) && !self.processing.contains(&key) {
            return; // Already queued to run now, which is sooner.
        }
        if let Some((current, _)) = self.due.get(&key) {
            if *current <= at {
                return;
            }
        }
        self.remove_delayed(&key);
        self.sequence += 1;
        self.delayed.insert((at, self.sequence, key.clone()));
        self.due.insert(key, (at, self.sequence));
    }

    fn remove_delayed(&mut self, key: &K) {
        if let Some((at, sequence)) = self.due.remove(key) {
            self.delayed.remove(&(at, sequence, key.clone()));
        }
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.delayed.first() {
            if *at > now {
                break;
            }
            let (_, _, key) = self.delayed.pop_first().expect("first exists");
            self.due.remove(&key);
            self.mark_dirty(key);
        }
    }
}

fn build_backoff(config: BackoffConfig) -> ExponentialBackoff {
    let builder = ExponentialBuilder::default()
        .with_min_delay(config.min_delay)
        .with_max_delay(config.max_delay)
        .with_factor(config.factor)
        .without_max_times();
    if config.jitter {
        builder.with_jitter().build()
    } else {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> WorkQueue<String> {
        WorkQueue::new(BackoffConfig {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(16),
            factor: 2.0,
            jitter: false,
        })
    }

    async fn next_now(queue: &WorkQueue<String>) -> Option<String> {
        tokio::time::timeout(Duration::from_millis(1), queue.next()).await.ok().flatten()
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_collapse() {
        let queue = queue();
        queue.add("a".into());
        queue.add("a".into());
        queue.add("b".into());
        assert_eq!(queue.len(), 2);
        assert_eq!(next_now(&queue).await.as_deref(), Some("a"));
        assert_eq!(next_now(&queue).await.as_deref(), Some("b"));
        assert_eq!(next_now(&queue).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_never_handed_out_twice_at_once() {
        let queue = queue();
        queue.add("a".into());
        let held = next_now(&queue).await.unwrap();
        queue.add("a".into());
        assert_eq!(next_now(&queue).await, None, "a is held by a worker");
        queue.succeeded(&held);
        assert_eq!(next_now(&queue).await.as_deref(), Some("a"), "the add made while held is kept");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_per_key_and_success_resets() {
        let queue = queue();
        queue.add("bad".into());
        let mut key = queue.next().await.unwrap();
        let mut delays = Vec::new();
        for attempt in 1..=6 {
            let started = Instant::now();
            let retry = queue.failed(&key);
            assert_eq!(retry.attempt, attempt);
            delays.push(retry.delay.as_secs());
            key = queue.next().await.unwrap();
            assert_eq!(Instant::now() - started, retry.delay, "handed out exactly when due");
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 16], "exponential, capped at max_delay");
        assert_eq!(queue.failures(&key), 6);
        queue.succeeded(&key);
        assert_eq!(queue.failures(&key), 0);
        queue.add(key.clone());
        let key = queue.next().await.unwrap();
        assert_eq!(queue.failed(&key).delay, Duration::from_secs(1), "a success starts the backoff over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_key_does_not_delay_others() {
        let queue = queue();
        queue.add("bad".into());
        let bad = queue.next().await.unwrap();
        for _ in 0..3 {
            queue.failed(&bad);
            let again = queue.next().await.unwrap();
            assert_eq!(again, "bad");
        }
        queue.add("good".into());
        // "bad" is held; "good" is ready at once, without waiting for any backoff.
        assert_eq!(next_now(&queue).await.as_deref(), Some("good"));
        queue.failed(&bad);
        assert_eq!(queue.failures(&bad), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_add_preempts_a_pending_backoff() {
        let queue = queue();
        queue.add("a".into());
        let key = queue.next().await.unwrap();
        let retry = queue.failed(&key);
        assert_eq!(retry, Retry { attempt: 1, delay: Duration::from_secs(1) });
        queue.add("a".into()); // A new event: reconcile now, not after the backoff.
        assert_eq!(next_now(&queue).await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_keeps_the_earliest_time() {
        let queue = queue();
        let start = Instant::now();
        queue.add_after("a".into(), Duration::from_secs(10));
        queue.add_after("a".into(), Duration::from_secs(3));
        queue.add_after("a".into(), Duration::from_secs(7));
        assert_eq!(queue.next().await.as_deref(), Some("a"));
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        queue.succeeded(&"a".to_owned());
        assert_eq!(next_now(&queue).await, None, "the later schedules were folded into the first");
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_requeue() {
        let queue = queue();
        queue.add("a".into());
        let key = queue.next().await.unwrap();
        let start = Instant::now();
        queue.done_requeue_after(&key, Duration::from_secs(30));
        assert_eq!(queue.next().await.as_deref(), Some("a"));
        assert_eq!(Instant::now() - start, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_stays_within_one_extra_delay() {
        let queue = WorkQueue::new(BackoffConfig {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            factor: 2.0,
            jitter: true,
        });
        let retry = {
            queue.add("a".to_owned());
            let key = queue.next().await.unwrap();
            queue.failed(&key)
        };
        assert!(retry.delay >= Duration::from_secs(1) && retry.delay <= Duration::from_secs(2), "{retry:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_releases_waiting_workers() {
        let queue = queue();
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        tokio::task::yield_now().await;
        queue.shutdown();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn many_workers_share_keys_without_overlap() {
        let queue: WorkQueue<String> = queue();
        let active = Arc::new(Mutex::new(HashSet::new()));
        let handled = Arc::new(Mutex::new(0usize));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (queue, active, handled) = (queue.clone(), active.clone(), handled.clone());
            workers.push(tokio::spawn(async move {
                while let Some(key) = queue.next().await {
                    assert!(active.lock().unwrap().insert(key.clone()), "{key} handed out twice at once");
                    // Slower than the adds of one key (every 15 ms), so adds arrive while held.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    active.lock().unwrap().remove(&key);
                    *handled.lock().unwrap() += 1;
                    queue.succeeded(&key);
                }
            }));
        }
        for round in 0..50 {
            queue.add(format!("k{}", round % 5));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(queue.is_empty());
        queue.shutdown();
        for worker in workers {
            worker.await.unwrap();
        }
        let handled = *handled.lock().unwrap();
        assert!((5..50).contains(&handled), "duplicates collapsed: {handled} reconciles for 50 adds");
    }
}
