//! Notifications: events worth a person's attention (`kedge agent --notify URL`) sent to a generic
//! JSON webhook, a Slack-compatible webhook or an ntfy topic, batched and rate-limited.
//!
//! Guarantees (docs/notifications.md is the user's contract):
//! - [`submit`] never blocks and never fails: the queue is bounded, and when it is full the oldest
//!   notification is dropped and counted; the count is logged and sent with the next batch. So a
//!   slow or dead receiver never slows reconciliation.
//! - Everything submitted within [`Settings::window`] of the first pending notification goes out
//!   as one message per target.
//! - The same (object, reason) is sent at most once per [`Settings::repeat_interval`]: repeats
//!   within it are counted and sent as one line ("N more times") when the interval ends. A crash
//!   loop is one message, then one summary per interval, not one per crash.
//! - A failed delivery is retried with exponential backoff, [`Settings::retries`] times, then
//!   dropped with a warning. Targets are delivered to concurrently; one slow target delays only
//!   the next batch, which meanwhile collects in the bounded queue.
//! - [`flush`] (the agent stopping) sends what is queued at once and waits a bounded time for it.
//! - A URL is logged only redacted (scheme, host and port): Slack and ntfy URLs carry secrets.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use kedge_crds::event::EventType;

/// How a target's messages are written; chosen from its URL by [`Target::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `POST` of a JSON array of [`Notification`]s.
    Webhook,
    /// `POST {"text": "..."}`: Slack incoming webhooks and the many services that accept them.
    Slack,
    /// `POST` of plain text with `Title`, `Priority` and `Tags` headers (ntfy.sh or self-hosted).
    Ntfy,
}

/// One receiver of notifications.
#[derive(Debug, Clone)]
pub struct Target {
    pub format: Format,
    url: reqwest::Url,
}

/// What is wrong with a `--notify` URL.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--notify {0}: not a URL: {1}")]
    Invalid(String, String),
    #[error("--notify {0}: the scheme must be http or https (or slack+https, ntfy+https)")]
    Scheme(String),
}

/// One event as sent: the JSON webhook's array items, and what the other formats render.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// `Normal` or `Warning`.
    pub kind: EventType,
    pub reason: String,
    /// `namespace/name` for a container, `Kind/namespace/name` for other objects, `Host/name`.
    pub object: String,
    pub host: String,
    pub message: String,
    /// RFC 3339, of the last occurrence.
    pub time: String,
    /// Occurrences this line stands for (more than one when repeats were folded into it).
    pub count: u32,
}

/// The timing rules; [`Settings::default`] is what the agent uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Notifications within this long of the first pending one go out together.
    pub window: Duration,
    /// The same (object, reason) is sent at most once per this interval.
    pub repeat_interval: Duration,
    /// Notifications queued at most; beyond it the oldest is dropped.
    pub capacity: usize,
    /// Retries of a failed delivery, with exponential backoff from `first_retry`.
    pub retries: usize,
    pub first_retry: Duration,
    /// One request's timeout.
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            window: Duration::from_secs(3),
            repeat_interval: Duration::from_secs(300),
            capacity: 1024,
            retries: 5,
            first_retry: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The Normal events that are notified; every Warning event is. Reasons of features not in this
/// build simply never occur.
pub const NOTIFIED_NORMAL_REASONS: &[&str] = &["UpdateAvailable", "UpdateApplied", "UpgradeSucceeded"];

/// Whether an event of this type and reason is notified.
pub fn is_notified(kind: EventType, reason: &str) -> bool {
    kind == EventType::Warning || NOTIFIED_NORMAL_REASONS.contains(&reason)
}

impl Target {
    /// Reads a `--notify` URL: `slack+https://…` and `ntfy+https://…` force a format; otherwise
    /// `hooks.slack.com` is Slack, `ntfy.sh` is ntfy, anything else the JSON webhook.
    pub fn parse(spec: &str) -> Result<Target, TargetError> {
        let (forced, rest) = match spec.split_once('+') {
            Some(("slack", rest)) => (Some(Format::Slack), rest),
            Some(("ntfy", rest)) => (Some(Format::Ntfy), rest),
            _ => (None, spec),
        };
        // The error names the URL redacted: it may hold a token.
        let url =
            reqwest::Url::parse(rest).map_err(|e| TargetError::Invalid(redact_str(rest), e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(TargetError::Scheme(redact(&url)));
        }
        let format = forced.unwrap_or(match url.host_str() {
            Some("hooks.slack.com") => Format::Slack,
            Some("ntfy.sh") => Format::Ntfy,
            _ => Format::Webhook,
        });
        Ok(Target { format, url })
    }

    /// The URL as it may be logged: scheme, host and port, no path or query.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }
}

fn redact(url: &reqwest::Url) -> String {
    let port = url.port().map(|port| format!(":{port}")).unwrap_or_default();
    let elided = if url.path() == "/" && url.query().is_none() { "" } else { "/…" };
    format!("{}://{}{port}{elided}", url.scheme(), url.host_str().unwrap_or(""))
}

fn redact_str(spec: &str) -> String {
    match spec.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}…", rest.split(['/', '?', '@']).next().unwrap_or("")),
        None => "(not a URL)".to_owned(),
    }
}

/// The process's notifier, installed once by the agent; every [`crate::events::EventRecorder`]
/// submits to it.
static GLOBAL: OnceLock<Notifier> = OnceLock::new();

/// Makes `notifier` the one [`submit`] feeds. A second call is ignored (returns false).
pub fn install(notifier: Notifier) -> bool {
    GLOBAL.set(notifier).is_ok()
}

/// Hands an event to the installed notifier, if any and if the event is notified.
pub fn submit(notification: Notification) {
    if let Some(notifier) = GLOBAL.get() {
        if is_notified(notification.kind, &notification.reason) {
            notifier.submit(notification);
        }
    }
}

/// For the agent's shutdown: sends what is queued at once and waits, at most `timeout`, for its
/// delivery. Repeats held back by the rate limit are not sent.
pub async fn flush(timeout: Duration) {
    if let Some(notifier) = GLOBAL.get() {
        notifier.flush(timeout).await
    }
}

impl Notifier {
    async fn flush(&self, timeout: Duration) {
        let queue = &self.queue;
        queue.flushing.store(true, std::sync::atomic::Ordering::Relaxed);
        queue.wake.notify_one();
        let deadline = Instant::now() + timeout;
        loop {
            let idle = {
                let pending = queue.lock();
                pending.items.is_empty() && !pending.in_flight
            };
            if idle {
                return;
            }
            if Instant::now() >= deadline {
                tracing::warn!("notifications not all delivered before the agent stopped");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The sending side of the notification queue; its worker runs until the process ends.
#[derive(Clone)]
pub struct Notifier {
    queue: Arc<Queue>,
}

struct Queue {
    pending: Mutex<Pending>,
    wake: Notify,
    capacity: usize,
    /// Set by [`flush`]: the batcher sends what is queued without waiting for the window.
    flushing: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Pending {
    items: VecDeque<Notification>,
    /// Dropped because the queue was full, since the last batch.
    dropped: u64,
    /// A batch was taken and its delivery has not ended.
    in_flight: bool,
}

impl Notifier {
    /// Starts the worker that delivers to `targets`. `host` names this agent in the messages.
    pub fn start(targets: Vec<Target>, host: String, settings: Settings) -> Notifier {
        let (notifier, batches) = Notifier::new(host, settings.clone());
        tokio::spawn(deliver_batches(batches, targets, settings));
        notifier
    }

    /// The queue and its batcher, without delivery (the unit tests read the batches).
    fn new(host: String, settings: Settings) -> (Notifier, Batcher) {
        let queue = Arc::new(Queue {
            pending: Mutex::default(),
            wake: Notify::new(),
            capacity: settings.capacity.max(1),
            flushing: Default::default(),
        });
        let batcher = Batcher { queue: queue.clone(), host, settings, sent: HashMap::new() };
        (Notifier { queue }, batcher)
    }

    /// Queues one notification; never waits.
    pub fn submit(&self, notification: Notification) {
        {
            let mut pending = self.queue.lock();
            if pending.items.len() >= self.queue.capacity {
                pending.items.pop_front();
                pending.dropped += 1;
            }
            pending.items.push_back(notification);
        }
        self.queue.wake.notify_one();
    }
}

impl Queue {
    fn flushing(&self) -> bool {
        self.flushing.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Turns the queue into batches: waits for a first notification, lets the window fill, folds
/// repeats and holds back what was sent within the repeat interval.
struct Batcher {
    queue: Arc<Queue>,
    host: String,
    settings: Settings,
    /// Per (object, reason): when it was last sent, and the repeats held back since.
    sent: HashMap<(String, String), Sent>,
}

struct Sent {
    at: Instant,
    held: Option<Notification>,
}

impl Batcher {
    /// The next batch to send; never empty.
    async fn next(&mut self) -> Vec<Notification> {
        loop {
            // Wait for a notification, or for the end of a repeat interval with repeats held.
            let held_due = self.sent.values().filter(|sent| sent.held.is_some()).map(|sent| sent.at).min();
            let has_pending = !self.queue.lock().items.is_empty();
            if !has_pending {
                match held_due {
                    Some(at) => {
                        let due = at + self.settings.repeat_interval;
                        let _ = tokio::time::timeout_at(due, self.queue.wake.notified()).await;
                    }
                    None => self.queue.wake.notified().await,
                }
            }
            if !self.queue.lock().items.is_empty() {
                // The window, cut short by a flush (each submit wakes this loop to check).
                let window_end = Instant::now() + self.settings.window;
                while !self.queue.flushing() && Instant::now() < window_end {
                    let _ = tokio::time::timeout_at(window_end, self.queue.wake.notified()).await;
                }
            }
            let batch = self.take(Instant::now());
            if !batch.is_empty() {
                return batch;
            }
        }
    }

    /// Takes what is queued at `now` and returns what is to be sent.
    fn take(&mut self, now: Instant) -> Vec<Notification> {
        let (items, dropped) = {
            let mut pending = self.queue.lock();
            pending.in_flight = !pending.items.is_empty() || pending.dropped > 0;
            (std::mem::take(&mut pending.items), std::mem::take(&mut pending.dropped))
        };
        let mut batch: Vec<Notification> = Vec::new();
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        for item in items {
            let key = (item.object.clone(), item.reason.clone());
            if let Some(&at) = index.get(&key) {
                fold(&mut batch[at], item);
                continue;
            }
            match self.sent.get_mut(&key) {
                Some(sent) if now.saturating_duration_since(sent.at) < self.settings.repeat_interval => {
                    match &mut sent.held {
                        Some(held) => fold(held, item),
                        None => sent.held = Some(item),
                    }
                }
                _ => {
                    // Repeats held back before the interval ended are folded in, not lost.
                    let line = match self.sent.get_mut(&key).and_then(|sent| sent.held.take()) {
                        Some(mut held) => {
                            fold(&mut held, item);
                            held
                        }
                        None => item,
                    };
                    index.insert(key, batch.len());
                    batch.push(line);
                }
            }
        }
        // Repeats held back for a whole interval: send them as one line each.
        for (key, sent) in &mut self.sent {
            if now.saturating_duration_since(sent.at) >= self.settings.repeat_interval
                && !index.contains_key(key)
            {
                if let Some(held) = sent.held.take() {
                    index.insert(key.clone(), batch.len());
                    batch.push(held);
                }
            }
        }
        for notification in &batch {
            let key = (notification.object.clone(), notification.reason.clone());
            self.sent.insert(key, Sent { at: now, held: None });
        }
        // Forget what can no longer hold anything back (bounded memory).
        let interval = self.settings.repeat_interval;
        self.sent.retain(|_, sent| sent.held.is_some() || now.saturating_duration_since(sent.at) < interval);
        if dropped > 0 {
            tracing::warn!(dropped, "notifications dropped: the queue was full");
            batch.push(Notification {
                kind: EventType::Warning,
                reason: "NotificationsDropped".to_owned(),
                object: format!("Host/{}", self.host),
                host: self.host.clone(),
                message: format!("{dropped} notifications were dropped: the queue was full"),
                time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                count: dropped.min(u64::from(u32::MAX)) as u32,
            });
        }
        batch
    }
}

/// Folds a repeat into the line that stands for it: the count grows, the latest message and time win.
fn fold(line: &mut Notification, repeat: Notification) {
    line.count = line.count.saturating_add(repeat.count);
    line.message = repeat.message;
    line.time = repeat.time;
}

async fn deliver_batches(mut batches: Batcher, targets: Vec<Target>, settings: Settings) {
    let client = match reqwest::Client::builder().timeout(settings.timeout).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "notifications disabled: cannot build an HTTP client");
            return;
        }
    };
    loop {
        let batch = batches.next().await;
        let host = batches.host.clone();
        let sends = targets.iter().map(|target| deliver(&client, target, &host, &batch, &settings));
        futures::future::join_all(sends).await;
        batches.queue.lock().in_flight = false;
    }
}

/// Sends one batch to one target, retrying with backoff; logs the outcome.
async fn deliver(
    client: &reqwest::Client,
    target: &Target,
    host: &str,
    batch: &[Notification],
    settings: &Settings,
) {
    let request = || async {
        // Without the URL: errors are logged, and the URL may hold a token.
        let response =
            render(client, target, host, batch).send().await.map_err(reqwest::Error::without_url)?;
        response.error_for_status().map(drop).map_err(reqwest::Error::without_url)
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(settings.first_retry)
        .with_max_delay(Duration::from_secs(60))
        .with_max_times(settings.retries);
    let outcome = request
        .retry(backoff)
        .notify(|error, after| {
            tracing::debug!(target_url = %target.redacted(), %error, ?after, "notification not delivered; retrying")
        })
        .await;
    match outcome {
        Ok(()) => tracing::debug!(target_url = %target.redacted(), lines = batch.len(), "notification sent"),
        Err(error) => tracing::warn!(
            target_url = %target.redacted(),
            %error,
            lines = batch.len(),
            "notification dropped after retries"
        ),
    }
}

/// The request for one batch in the target's format.
fn render(
    client: &reqwest::Client,
    target: &Target,
    host: &str,
    batch: &[Notification],
) -> reqwest::RequestBuilder {
    let post = client.post(target.url.clone());
    match target.format {
        Format::Webhook => post.json(batch),
        Format::Slack => post.json(&serde_json::json!({ "text": text(host, batch) })),
        Format::Ntfy => {
            let warning = batch.iter().any(|line| line.kind == EventType::Warning);
            post.header("Title", title(host, batch))
                .header("Priority", if warning { "high" } else { "default" })
                .header("Tags", if warning { "warning" } else { "information_source" })
                .body(text(host, batch))
        }
    }
}

/// A one-line summary: the event itself when the batch has one, else the count.
fn title(host: &str, batch: &[Notification]) -> String {
    match batch {
        [line] => format!("kedge: {} {}", line.reason, line.object),
        _ => format!("kedge: {} events on {host}", batch.len()),
    }
}

/// The message text of the Slack and ntfy formats: one line per event.
fn text(host: &str, batch: &[Notification]) -> String {
    let mut text = match batch {
        [_] => format!("kedge on {host}:\n"),
        _ => format!("kedge on {host}: {} events\n", batch.len()),
    };
    for line in batch {
        let kind = match line.kind {
            EventType::Warning => "Warning",
            EventType::Normal => "Normal",
        };
        text.push_str(&format!("{kind} {} {}: {}", line.reason, line.object, line.message));
        if line.count > 1 {
            text.push_str(&format!(" ({} times)", line.count));
        }
        text.push('\n');
    }
    text.truncate(text.trim_end().len());
    text
}

#[cfg(test)]
mod tests;
