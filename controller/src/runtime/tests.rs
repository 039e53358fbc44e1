//! The watcher and the reflector over the embedded store: list then watch, compaction, deletions,
//! outages, waiting for a revision, backoff and cancellation. The store wrapper here breaks what a
//! real outage breaks (lists, new watches and open watch streams); the embedded store does the rest.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::reflector::{self, Reflector};
use super::watcher::{Backoff, Event, Watcher};
use crate::store::layer::{Request, StoreLayer};
use crate::store::{
    DeleteCondition, EmbeddedOptions, EmbeddedStore, KeyValue, PutCondition, SharedStore, Store, StoreError,
    StoreFuture, WatchStream,
};

/// An embedded store that can be taken "down" (every request and every open watch fails) and can hand
/// out one stale watch (from revision 1, as a watcher lagging behind a compaction would ask).
struct Flaky {
    inner: EmbeddedStore,
    down: tokio::sync::watch::Sender<bool>,
    stale_watch: AtomicBool,
}

impl Flaky {
    fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }

    fn check(&self) -> Result<(), StoreError> {
        if *self.down.borrow() {
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        Ok(())
    }
}

impl StoreLayer for Flaky {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }

    /// Down: reads and new watches fail (writes go through, so a test can change the store meanwhile).
    fn admit(&self, request: Request<'_>) -> Result<(), StoreError> {
        match request {
            Request::Get(_) | Request::List(_) | Request::Watch { .. } => self.check(),
            _ => Ok(()),
        }
    }

    fn open_watch<'a>(&'a self, prefix: &'a str, start_revision: i64) -> StoreFuture<'a, WatchStream> {
        Box::pin(async move {
            let start = if self.stale_watch.swap(false, Ordering::SeqCst) { 1 } else { start_revision };
            let inner = self.inner.watch(prefix, start).await?;
            let down = self.down.subscribe();
            // The stream fails once the store goes down, as a broken connection would.
            let stream = futures::stream::unfold(Some((inner, down)), |state| async move {
                let (mut inner, mut down) = state?;
                let went_down = tokio::select! {
                    item = crate::store::next_event(&mut inner) => Err(item),
                    _ = down.wait_for(|down| *down) => Ok(()),
                };
                match went_down {
                    Ok(()) => Some((Err(StoreError::Unavailable("connection reset".into())), None)),
                    Err(item) => item.map(|item| (item, Some((inner, down)))),
                }
            });
            Ok(Box::pin(stream) as WatchStream)
        })
    }
}

async fn flaky(dir: &tempfile::TempDir) -> Arc<Flaky> {
    let inner = EmbeddedStore::open(dir.path().join("kedge.db"), EmbeddedOptions::default()).await.unwrap();
    Arc::new(Flaky { inner, down: tokio::sync::watch::channel(false).0, stale_watch: AtomicBool::new(false) })
}

/// Values are UTF-8 numbers; anything else is unreadable.
fn number(kv: &KeyValue) -> Result<u32, String> {
    std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| "not a number".into())
}

async fn put(store: &dyn Store, key: &str, value: &str) -> i64 {
    store.put(key, value.as_bytes().to_vec(), PutCondition::Always, 0).await.unwrap()
}

/// The cache's contents as (key, value).
fn contents(cache: &Reflector<u32>) -> Vec<(String, u32)> {
    cache.with(|objects| objects.iter().map(|(key, stored)| (key.clone(), stored.object)).collect())
}

/// The store's readable contents under `prefix`, as the cache should hold them.
async fn store_contents(store: &dyn Store, prefix: &str) -> Vec<(String, u32)> {
    let listed = store.list(prefix).await.unwrap();
    listed.kvs.iter().filter_map(|kv| Some((kv.key.clone(), number(kv).ok()?))).collect()
}

const FAST: Backoff = Backoff { min: Duration::from_millis(10), max: Duration::from_millis(40) };
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn lists_then_follows_puts_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = flaky(&dir).await;
    put(store.as_ref(), "/p/a", "1").await;
    put(store.as_ref(), "/p/b", "2").await;
    put(store.as_ref(), "/q/other", "9").await;
    let shutdown = CancellationToken::new();
    let cache = reflector::spawn(store.clone() as SharedStore, "/p/", "test", number, shutdown.clone());
    assert!(cache.wait_in_sync(WAIT).await);
    assert_eq!(contents(&cache), vec![("/p/a".into(), 1), ("/p/b".into(), 2)], "only the prefix");

    let mut changes = cache.subscribe();
    changes.borrow_and_update();
    put(store.as_ref(), "/p/a", "10").await;
    let deleted = store.delete("/p/b", DeleteCondition::Always).await.unwrap().unwrap();
    assert!(cache.wait_for_revision(deleted, WAIT).await, "a writer sees its own write");
    assert!(changes.has_changed().unwrap(), "readers are woken");
    assert_eq!(contents(&cache), vec![("/p/a".into(), 10)]);
    assert_eq!(cache.stored("/p/a").unwrap().mod_revision, deleted - 1);
    assert_eq!(cache.revision(), deleted);
    assert!(!cache.wait_for_revision(deleted + 100, Duration::from_millis(50)).await, "not seen yet");
    shutdown.cancel();
}

#[tokio::test]
async fn a_compacted_watch_lists_again_and_the_cache_equals_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = flaky(&dir).await;
    put(store.as_ref(), "/p/a", "1").await;
    let revision = put(store.as_ref(), "/p/b", "2").await;
    store.compact(revision).await.unwrap();
    // The first watch asks for history the store no longer has.
    store.stale_watch.store(true, Ordering::SeqCst);
    let cache = Reflector::new(number);
    let mut watcher = Watcher::new(store.clone() as SharedStore, "/p/", CancellationToken::new());
    let first = watcher.next().await.unwrap();
    assert!(matches!(&first, Event::Restarted { kvs, .. } if kvs.len() == 2), "{first:?}");
    cache.apply(&first);
    // Changes the stale watch will never deliver.
    store.delete("/p/a", DeleteCondition::Always).await.unwrap();
    put(store.as_ref(), "/p/c", "3").await;
    store.put("/p/bad", b"x".to_vec(), PutCondition::Always, 0).await.unwrap();
    let second = watcher.next().await.unwrap();
    let Event::Restarted { .. } = &second else {
        panic!("a compaction is a re-list, not an error: {second:?}")
    };
    let applied = cache.apply(&second);
    assert!(applied.was_in_sync && cache.in_sync());
    assert_eq!(applied.keys, vec!["/p/a", "/p/bad", "/p/c"], "what the re-list changed");
    assert_eq!(contents(&cache), store_contents(store.as_ref(), "/p/").await, "replaced, not merged");
    assert_eq!(cache.unreadable("/p/bad").unwrap().error, "not a number", "kept apart");
    assert!(cache.get("/p/a").is_none(), "the key deleted meanwhile is gone");
}

#[tokio::test]
async fn an_outage_keeps_the_contents_and_clears_in_sync_until_the_next_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = flaky(&dir).await;
    put(store.as_ref(), "/p/a", "1").await;
    let cache = Reflector::new(number);
    let mut watcher =
        Watcher::with_backoff(store.clone() as SharedStore, "/p/", CancellationToken::new(), FAST);
    cache.apply(&watcher.next().await.unwrap());
    assert!(cache.in_sync());

    store.set_down(true);
    let broken = watcher.next().await.unwrap();
    assert!(matches!(broken, Event::Error { transient: true, .. }), "{broken:?}");
    let applied = cache.apply(&broken);
    assert!(applied.was_in_sync && !cache.in_sync());
    assert_eq!(contents(&cache), vec![("/p/a".into(), 1)], "an outage empties nothing");
    assert_eq!(cache.last_error().as_deref(), Some("store unavailable: connection reset"));
    // Lists keep failing while the store is down; the cache stays as it was.
    let again = watcher.next().await.unwrap();
    assert!(matches!(again, Event::Error { .. }), "{again:?}");
    cache.apply(&again);
    assert_eq!(contents(&cache), vec![("/p/a".into(), 1)]);

    // What changed during the outage arrives with the next list.
    store.inner.delete("/p/a", DeleteCondition::Always).await.unwrap();
    put(&store.inner, "/p/b", "2").await;
    store.set_down(false);
    let back = watcher.next().await.unwrap();
    let applied = cache.apply(&back);
    assert!(!applied.was_in_sync && cache.in_sync() && cache.last_error().is_none());
    assert_eq!(contents(&cache), vec![("/p/b".into(), 2)]);
}

#[tokio::test]
async fn a_broken_stream_relists_through_the_running_reflector() {
    let dir = tempfile::tempdir().unwrap();
    let store = flaky(&dir).await;
    put(store.as_ref(), "/p/a", "1").await;
    let shutdown = CancellationToken::new();
    let cache = Arc::new(Reflector::new(number));
    let watcher = Watcher::with_backoff(store.clone() as SharedStore, "/p/", shutdown.clone(), FAST);
    let task = tokio::spawn({
        let cache = cache.clone();
        async move { reflector::run(&cache, watcher, |_, _| {}).await }
    });
    assert!(cache.wait_in_sync(WAIT).await);
    store.set_down(true);
    let deadline = tokio::time::Instant::now() + WAIT;
    while cache.in_sync() {
        assert!(tokio::time::Instant::now() < deadline, "the outage was not noticed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let revision = put(&store.inner, "/p/b", "2").await;
    store.set_down(false);
    assert!(cache.wait_for_revision(revision, WAIT).await);
    assert_eq!(contents(&cache), vec![("/p/a".into(), 1), ("/p/b".into(), 2)]);
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.expect("the reflector ends when cancelled").unwrap();
}

/// A store that is always down, without any IO: for paused-time tests of the backoff.
struct Down;

impl StoreLayer for Down {
    /// Never reached: [`StoreLayer::admit`] refuses every request first.
    fn inner(&self) -> &dyn Store {
        self
    }

    fn admit(&self, _: Request<'_>) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }

    fn pass_watch_restarted(&self, _: &str) {}
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_up_to_the_cap_and_cancel_at_once() {
    let backoff = Backoff { min: Duration::from_millis(100), max: Duration::from_secs(2) };
    let shutdown = CancellationToken::new();
    let mut watcher = Watcher::with_backoff(Arc::new(Down), "/p/", shutdown.clone(), backoff);
    let first = tokio::time::Instant::now();
    assert!(matches!(watcher.next().await, Some(Event::Error { transient: true, .. })));
    assert_eq!(first.elapsed(), Duration::ZERO, "the first list is not delayed");
    let mut gaps = Vec::new();
    for _ in 0..12 {
        let before = tokio::time::Instant::now();
        assert!(matches!(watcher.next().await, Some(Event::Error { .. })));
        gaps.push(before.elapsed());
    }
    // Exponential from `min`, capped at `max` (plus a jitter of less than as much again; tokio's
    // timer rounds a sleep up to the whole millisecond, so a 199.6 ms delay is a 200 ms gap).
    assert!(gaps[0] >= backoff.min && gaps[0] <= backoff.min * 2, "{gaps:?}");
    assert!(gaps.iter().all(|gap| *gap <= backoff.max * 2), "{gaps:?}");
    assert!(gaps[8..].iter().all(|gap| *gap >= backoff.max), "reaches the cap: {gaps:?}");
    // Cancelled in the middle of a backoff: ends at once.
    let waiting = tokio::spawn(async move { watcher.next().await });
    tokio::task::yield_now().await;
    shutdown.cancel();
    assert_eq!(waiting.await.unwrap(), None);
}

#[tokio::test]
async fn a_quiet_watch_ends_when_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let store = flaky(&dir).await;
    let shutdown = CancellationToken::new();
    let mut watcher = Watcher::new(store as SharedStore, "/p/", shutdown.clone());
    assert!(matches!(watcher.next().await, Some(Event::Restarted { .. })));
    let waiting = tokio::spawn(async move { watcher.next().await });
    shutdown.cancel();
    assert_eq!(tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap(), None);
}

/// A cache whose follower ends (here: a panic unwinds it) stops saying it is in sync, keeping its
/// contents: nothing decides an absence on a view no watch keeps current.
#[tokio::test]
async fn a_cache_whose_follower_ends_is_no_longer_in_sync() {
    let cache = Arc::new(Reflector::new(number));
    cache.apply(&Event::Restarted { kvs: vec![], revision: 3 });
    assert!(cache.in_sync());
    {
        let _following = cache.following();
    }
    assert!(!cache.in_sync(), "ended normally");
    cache.apply(&Event::Restarted { kvs: vec![], revision: 4 });
    assert!(cache.in_sync(), "a list makes it in sync again");
    let followed = cache.clone();
    let task = tokio::spawn(async move {
        let _following = followed.following();
        panic!("the follower panics");
    });
    assert!(task.await.is_err_and(|error| error.is_panic()));
    assert!(!cache.in_sync(), "unwound by a panic");
    assert!(cache.last_error().is_some_and(|error| error.contains("ended")));
}

#[tokio::test]
async fn every_list_after_a_failure_or_a_compaction_is_a_counted_watch_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = flaky(&dir).await;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let metered: SharedStore =
        Arc::new(crate::store::MeteredStore::new(store.clone() as SharedStore, "embedded", metrics.clone()));
    let restarts = || {
        let text = metrics.render();
        text.lines()
            .find_map(|line| {
                line.strip_prefix("kedge_watch_restarts_total{watch=\"p\"} ")?.parse::<f64>().ok()
            })
            .unwrap_or(0.0)
    };
    let revision = put(store.as_ref(), "/p/a", "1").await;
    let mut watcher = Watcher::with_backoff(metered, "/p/", CancellationToken::new(), FAST);
    assert!(matches!(watcher.next().await, Some(Event::Restarted { .. })));
    assert_eq!(restarts(), 0.0, "the first list is no restart");

    store.set_down(true);
    assert!(matches!(watcher.next().await, Some(Event::Error { .. })));
    assert!(matches!(watcher.next().await, Some(Event::Error { .. })));
    assert_eq!(restarts(), 2.0, "the broken stream, then the failed list");
    store.set_down(false);
    assert!(matches!(watcher.next().await, Some(Event::Restarted { .. })));
    assert_eq!(restarts(), 2.0, "a list that succeeds is not another restart");

    // A compaction past the watch: the watcher lists again at once.
    store.compact(revision).await.unwrap();
    store.stale_watch.store(true, Ordering::SeqCst);
    store.set_down(true);
    assert!(matches!(watcher.next().await, Some(Event::Error { .. })));
    store.set_down(false);
    assert!(matches!(watcher.next().await, Some(Event::Restarted { .. })));
    put(store.as_ref(), "/p/b", "2").await;
    let next = watcher.next().await;
    assert!(matches!(next, Some(Event::Restarted { .. })), "{next:?}");
    assert_eq!(restarts(), 4.0, "the outage's and the compaction's");
}
