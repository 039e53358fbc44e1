//! Work handed to the agent from outside: the one-call recreate of a managed container (the API's
//! `POST .../recreate`, which `kedge recreate` and `kedge check --autoupdate` use for a managed
//! container). A request is queued on the key's work queue and carried out by the key's worker,
//! before its reconcile, so it never runs beside the agent's own reconcile or crash recovery of the
//! same container: one writer per container.
//!
//! Guarantees: a request is answered exactly once: with the recreate's outcome, or with
//! [`RequestError::AgentStopped`] when the agent stops before a worker took it. A request made while
//! no agent runs is refused at once ([`RequestError::NotRunning`]).

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::executor::{ExecutorError, RecreateReport, RecreateStep, RecreateStrategy};
use crate::queue::WorkQueue;

/// What a recreate request answers: the report or the error, with the steps it went through.
pub type RecreateOutcome = (Result<RecreateReport, ExecutorError>, Vec<RecreateStep>);

/// Why a request got no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the agent is not running")]
    NotRunning,
    #[error("the agent stopped before it carried the request out")]
    AgentStopped,
}

/// The requests waiting for their key's worker. Shared between the API (which makes requests)
/// and the agent (which serves them): create it, put it in `AgentConfig::requests`, hand a clone
/// to the API's recreate handler.
#[derive(Default)]
pub struct AgentRequests {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The running agent's queue; `None` before it starts and after it stopped.
    queue: Option<WorkQueue<String>>,
    pending: HashMap<String, Vec<RecreateRequest>>,
}

/// One recreate to carry out in a key's worker.
pub(crate) struct RecreateRequest {
    /// The container's name.
    pub(crate) name: String,
    pub(crate) strategy: RecreateStrategy,
    reply: oneshot::Sender<RecreateOutcome>,
}

impl RecreateRequest {
    /// Sends the outcome; a requester that gave up waiting is not an error.
    pub(crate) fn answer(self, outcome: RecreateOutcome) {
        let _ = self.reply.send(outcome);
    }
}

impl std::fmt::Debug for AgentRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRequests").finish_non_exhaustive()
    }
}

impl AgentRequests {
    /// Asks the agent to recreate container `name` of spec `key` in the key's worker, and waits for
    /// the outcome.
    pub async fn recreate(
        &self,
        key: &str,
        name: &str,
        strategy: RecreateStrategy,
    ) -> Result<RecreateOutcome, RequestError> {
        let (reply, outcome) = oneshot::channel();
        {
            let mut inner = self.lock();
            let Some(queue) = inner.queue.clone() else { return Err(RequestError::NotRunning) };
            let request = RecreateRequest { name: name.to_string(), strategy, reply };
            inner.pending.entry(key.to_string()).or_default().push(request);
            // Preempts a backing-off key's delay: the request runs as soon as the key is free.
            queue.add(key.to_string());
        }
        outcome.await.map_err(|_| RequestError::AgentStopped)
    }

    /// Whether an agent serves requests now.
    pub fn is_running(&self) -> bool {
        self.lock().queue.is_some()
    }

    /// The agent starts serving requests through `queue`.
    pub(crate) fn attach(&self, queue: WorkQueue<String>) {
        self.lock().queue = Some(queue);
    }

    /// The agent stopped: new requests are refused, waiting ones answered with
    /// [`RequestError::AgentStopped`] (their reply senders are dropped).
    pub(crate) fn detach(&self) {
        let mut inner = self.lock();
        inner.queue = None;
        inner.pending.clear();
    }

    /// The requests waiting for `key`, oldest first; the caller answers each.
    pub(crate) fn take(&self, key: &str) -> Vec<RecreateRequest> {
        self.lock().pending.remove(key).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::BackoffConfig;

    #[tokio::test]
    async fn a_request_without_an_agent_is_refused_at_once() {
        let requests = AgentRequests::default();
        let refused = requests.recreate("ns/web", "web", RecreateStrategy::default()).await;
        assert_eq!(refused.err(), Some(RequestError::NotRunning));
    }

    #[tokio::test]
    async fn a_request_queues_its_key_and_is_answered_by_the_worker() {
        let requests = std::sync::Arc::new(AgentRequests::default());
        let queue = WorkQueue::new(BackoffConfig::default());
        requests.attach(queue.clone());
        let asking = {
            let requests = requests.clone();
            tokio::spawn(async move { requests.recreate("ns/web", "web", RecreateStrategy::default()).await })
        };
        assert_eq!(queue.next().await.as_deref(), Some("ns/web"));
        let mut taken = requests.take("ns/web");
        assert_eq!(taken.len(), 1);
        let request = taken.remove(0);
        assert_eq!(request.name, "web");
        request.answer((
            Err(ExecutorError::NotFound { container: "web".into() }),
            vec![RecreateStep::CreateNew],
        ));
        let (outcome, steps) = asking.await.expect("no panic").expect("answered");
        assert_eq!(outcome.err().map(|e| e.reason()), Some("NotFound"));
        assert_eq!(steps, vec![RecreateStep::CreateNew]);
        assert!(requests.take("ns/web").is_empty(), "answered once");
    }

    #[tokio::test]
    async fn a_stopping_agent_answers_the_waiting_requests() {
        let requests = std::sync::Arc::new(AgentRequests::default());
        requests.attach(WorkQueue::new(BackoffConfig::default()));
        let asking = {
            let requests = requests.clone();
            tokio::spawn(async move { requests.recreate("ns/web", "web", RecreateStrategy::default()).await })
        };
        // Wait until the request is pending, then stop.
        while requests.lock().pending.is_empty() {
            tokio::task::yield_now().await;
        }
        requests.detach();
        assert_eq!(asking.await.expect("no panic").err(), Some(RequestError::AgentStopped));
        assert!(!requests.is_running());
    }
}
