//! The watcher: follows every key under one prefix of a [`Store`](crate::store::Store) as a sequence
//! of [`Event`]s, whatever happens to the store.
//!
//! It lists the prefix, opens a watch from the list's revision + 1 and only then yields
//! [`Event::Restarted`] with the whole list, so that a consumer that has seen `Restarted` knows the
//! watch behind it is healthy. Then every put and delete, in revision order. When the watch reports
//! that its revision was compacted away it lists again at once (and yields `Restarted` again: the
//! consumer replaces its contents, it does not merge, or it would keep keys deleted meanwhile). Any
//! other failure of the list, the watch or its stream is yielded as [`Event::Error`], then the
//! watcher waits (exponential backoff with jitter, from [`Backoff::min`] up to [`Backoff::max`],
//! reset by every successful list) and lists again.
//!
//! A watcher is cancellable: [`Watcher::next`] returns `None` once its token is cancelled, at any
//! await point (a list, a backoff, a quiet watch).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

use crate::store::{next_event, EventKind, KeyValue, SharedStore, StoreError, WatchStream};

/// What a watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The whole prefix as listed at `revision`, with a watch from `revision + 1` open behind it:
    /// replace everything known with `kvs`.
    Restarted { kvs: Vec<KeyValue>, revision: i64 },
    /// A key was written at `revision`.
    Put { kv: KeyValue, revision: i64 },
    /// `key` was deleted at `revision`.
    Delete { key: String, revision: i64 },
    /// The store failed; the watcher lists again after a backoff. `transient` tells an outage
    /// (expected to pass) from a refusal (a bad request, authentication) that needs a person.
    Error { message: String, transient: bool },
}

/// The watcher's retry delays: exponential from `min` up to `max`, each with a random jitter of up to
/// as much again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// Quick at first, never slower than every 10 s.
    fn default() -> Backoff {
        Backoff { min: Duration::from_millis(200), max: Duration::from_secs(10) }
    }
}

impl Backoff {
    fn delays(self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

enum State {
    /// List next, after waiting `delay`.
    List {
        delay: Duration,
    },
    Watching(WatchStream),
}

/// Follows one prefix; see the module docs.
pub struct Watcher {
    store: SharedStore,
    prefix: String,
    shutdown: CancellationToken,
    backoff: Backoff,
    delays: ExponentialBackoff,
    state: State,
}

/// Lists `prefix`, then opens a watch from the list's revision + 1.
async fn list_and_watch(
    store: &SharedStore,
    prefix: &str,
) -> Result<(Vec<KeyValue>, i64, WatchStream), StoreError> {
    let listed = store.list(prefix).await?;
    let stream = store.watch(prefix, listed.revision.saturating_add(1)).await?;
    Ok((listed.kvs, listed.revision, stream))
}

impl Watcher {
    /// A watcher of every key under `prefix`, ending when `shutdown` is cancelled.
    pub fn new(store: SharedStore, prefix: impl Into<String>, shutdown: CancellationToken) -> Watcher {
        Watcher::with_backoff(store, prefix, shutdown, Backoff::default())
    }

    pub fn with_backoff(
        store: SharedStore,
        prefix: impl Into<String>,
        shutdown: CancellationToken,
        backoff: Backoff,
    ) -> Watcher {
        Watcher {
            store,
            prefix: prefix.into(),
            shutdown,
            backoff,
            delays: backoff.delays(),
            state: State::List { delay: Duration::ZERO },
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The next event; `None` once cancelled.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if self.shutdown.is_cancelled() {
                return None;
            }
            match &mut self.state {
                State::List { delay } => {
                    let delay = *delay;
                    if !delay.is_zero() {
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return None,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                    let listed = tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        listed = list_and_watch(&self.store, &self.prefix) => listed,
                    };
                    match listed {
                        Ok((kvs, revision, stream)) => {
                            self.delays = self.backoff.delays();
                            self.state = State::Watching(stream);
                            return Some(Event::Restarted { kvs, revision });
                        }
                        Err(error) => return Some(self.failed(error)),
                    }
                }
                State::Watching(stream) => {
                    let next = tokio::select! {
                        _ = self.shutdown.cancelled() => return None,
                        next = next_event(stream) => next,
                    };
                    match next {
                        Some(Ok(event)) => {
                            let revision = event.revision;
                            return Some(match event.kind {
                                EventKind::Put => Event::Put { kv: event.kv, revision },
                                EventKind::Delete => Event::Delete { key: event.kv.key, revision },
                            });
                        }
                        Some(Err(StoreError::Compacted { compact_revision })) => {
                            tracing::info!(prefix = %self.prefix, compact_revision, "the store compacted past the watch; listing again");
                            self.store.watch_restarted(&self.prefix);
                            self.state = State::List { delay: Duration::ZERO };
                        }
                        Some(Err(error)) => return Some(self.failed(error)),
                        None => {
                            return Some(
                                self.failed(StoreError::Unavailable("the store ended the watch".into())),
                            )
                        }
                    }
                }
            }
        }
    }

    /// Schedules the next list after a backoff and describes the failure.
    fn failed(&mut self, error: StoreError) -> Event {
        self.store.watch_restarted(&self.prefix);
        let delay = self.delays.next().unwrap_or(self.backoff.max);
        self.state = State::List { delay };
        Event::Error { message: error.to_string(), transient: error.is_transient() }
    }
}
