//! The GitSource controller: fetches each source's repository once per interval (or at once when a
//! webhook or `kedge reconcile gitsource` asks), validates every spec under its path, and applies
//! them as one unit with prune. Run by the scheduler's leader only, every write fenced on its term.
//!
//! Guarantees:
//! - A commit with one invalid spec applies nothing: the source reports every error (file, line,
//!   column, field path) and the last applied commit keeps running.
//! - Prune deletes only objects labelled with this source's apply set (`kedge.io/applyset`,
//!   [`applyset_id`]): what it applied before. Objects applied by a person carry another apply set
//!   (or none) and are never deleted by a source.
//! - Every sync applies the commit again, so a spec edited by hand on an object the source owns is
//!   put back at the next interval, with a `DriftCorrected` event.
//! - A source writes only into its own namespace.

mod git;
mod ssh;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kedge_crds::compose::ComposeOptions;
use kedge_crds::event::EventType;
use kedge_crds::gitsource::{gitsource_condition, CommitRef, GitSource, GitSourceStatus};
use kedge_crds::meta::{rfc3339, set_condition};
use kedge_crds::parse::{sort_errors, validate_objects, ParsedObjects};
use kedge_crds::{Condition, ConditionStatus, Resource, DEFAULT_NAMESPACE};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::EventRecorder;
use crate::runtime::reflector::{self, Reflector};
use crate::store::api::{decode, Api, ApplyOutcome};
use crate::store::keys;
use crate::store::{DeleteCondition, Fence, PutCondition, SharedStore, StoreError};

/// The label of the apply set an object belongs to: the one `kedge apply --prune` uses.
pub const APPLYSET_LABEL: &str = "kedge.io/applyset";

/// How long one fetch may take before the sync is given up (and tried again at the next interval).
const FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// How soon a sync that failed on the store is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// The apply set of a source's objects: `gitsource-` and a digest of its namespace and name (a label
/// value of at most 63 characters, whatever the names' lengths).
pub fn applyset_id(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    format!("gitsource-{}", &hex::encode(digest)[..20])
}

/// What one sync came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The commit was applied whole.
    Applied { commit: CommitRef, applied: u32, pruned: u32 },
    /// The commit (when it could be read) holds invalid specs: nothing was applied.
    Invalid { commit: Option<CommitRef>, errors: Vec<String> },
    /// The repository could not be fetched. `reason`: `FetchFailed`, or `HostKeyRejected` (the ssh
    /// server's key is not in `spec.ssh.knownHosts`), or `AuthenticationFailed`.
    FetchFailed { reason: &'static str, message: String },
    /// The store refused a write half-way: tried again soon.
    ApplyFailed { commit: CommitRef, message: String },
}

/// Follows the GitSources and syncs each when due, until `shutdown` (the leadership lost or the
/// agent stopping). `term` fences every write.
pub(crate) async fn run(store: SharedStore, host: String, term: i64, shutdown: CancellationToken) {
    let prefix = keys::objects_prefix::<GitSource>(None).expect("a constant prefix");
    let sources = reflector::spawn(
        store.clone(),
        &prefix,
        "gitsources",
        |kv| decode::<GitSource>(kv).map(|read| read.value).map_err(|e| e.to_string()),
        shutdown.clone(),
    );
    let requests = reflector::spawn(
        store.clone(),
        keys::GITSOURCE_REQUESTS,
        "gitsource requests",
        |kv| Ok(kv.mod_revision),
        shutdown.clone(),
    );
    let controller = Controller {
        store: store.clone(),
        term,
        events: EventRecorder::new(store, host.clone()),
        cache_root: std::env::temp_dir().join("kedge-gitsources").join(&host),
    };
    controller.follow(&sources, &requests, &shutdown).await;
    controller.events.flush().await;
}

/// When each source is next due, and what was last seen of it.
struct Track {
    due: Instant,
    generation: Option<i64>,
    request: i64,
}

struct Controller {
    store: SharedStore,
    term: i64,
    events: EventRecorder,
    /// One bare repository per source under here: the fetch cache.
    cache_root: PathBuf,
}

impl Controller {
    async fn follow(
        &self,
        sources: &Arc<Reflector<GitSource>>,
        requests: &Arc<Reflector<i64>>,
        shutdown: &CancellationToken,
    ) {
        let mut source_changes = sources.subscribe();
        let mut request_changes = requests.subscribe();
        let mut tracks: HashMap<String, Track> = HashMap::new();
        loop {
            if sources.in_sync() && requests.in_sync() {
                let snapshot = sources.snapshot();
                let live: BTreeSet<String> = snapshot.values().map(|stored| stored.object.key()).collect();
                tracks.retain(|key, _| live.contains(key));
                for stored in snapshot.into_values() {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    let source = stored.object;
                    let metadata = &source.metadata;
                    let request = keys::gitsource_request_key(&metadata.namespace, &metadata.name)
                        .ok()
                        .and_then(|key| requests.get(&key))
                        .unwrap_or(0);
                    let now = Instant::now();
                    let track = tracks.entry(source.key()).or_insert(Track {
                        due: now,
                        generation: metadata.generation,
                        request,
                    });
                    let due = track.due <= now
                        || track.generation != metadata.generation
                        || request > track.request;
                    if !due {
                        continue;
                    }
                    track.generation = metadata.generation;
                    track.request = request;
                    track.due = now + source.spec.interval();
                    if source.spec.suspend {
                        self.write_suspended(&source).await;
                        continue;
                    }
                    if let Err(error) = self.sync(&source).await {
                        tracing::warn!(%error, source = %source.key(), "GitSource sync failed on the store; retrying");
                        track.due = Instant::now() + RETRY;
                    }
                }
            }
            let next = tracks
                .values()
                .map(|track| track.due)
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(10));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = source_changes.changed() => {}
                _ = request_changes.changed() => {}
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }

    fn fence(&self) -> Fence<'static> {
        Fence { key: keys::SCHEDULER_LEADER, mod_revision: self.term }
    }

    /// Fetches, validates and applies one source, and writes its status.
    async fn sync(&self, source: &GitSource) -> Result<(), StoreError> {
        let (namespace, name) = (source.metadata.namespace.as_str(), source.metadata.name.as_str());
        let sources = Api::<GitSource>::new(self.store.clone());
        let previous = sources.get_status(namespace, name).await?.map(|(status, _)| status);
        let cache = self.cache_root.join(applyset_id(namespace, name));
        let (url, reference, path) =
            (source.spec.url.clone(), source.spec.reference(), source.spec.path().to_owned());
        let access = git::Access { ssh: source.spec.ssh.clone() };
        let fetched = tokio::time::timeout(
            FETCH_TIMEOUT,
            tokio::task::spawn_blocking(move || git::fetch(&cache, &url, &access, &reference, &path)),
        )
        .await;
        let fetched = match fetched {
            Err(_) => {
                Err(git::FetchError::Git(format!("the fetch took longer than {}s", FETCH_TIMEOUT.as_secs())))
            }
            Ok(Err(join)) => Err(git::FetchError::Git(format!("the fetch failed: {join}"))),
            Ok(Ok(result)) => result,
        };
        let last_applied = previous.as_ref().and_then(|status| status.last_applied_commit.clone());
        let outcome = match fetched {
            Err(git::FetchError::Git(message)) => Outcome::FetchFailed { reason: "FetchFailed", message },
            Err(git::FetchError::HostKey(message)) => {
                Outcome::FetchFailed { reason: "HostKeyRejected", message }
            }
            Err(git::FetchError::Auth(message)) => {
                Outcome::FetchFailed { reason: "AuthenticationFailed", message }
            }
            Err(git::FetchError::Content(message)) => {
                Outcome::Invalid { commit: None, errors: vec![message] }
            }
            Ok(fetched) => {
                let new_commit =
                    last_applied.as_ref().is_none_or(|applied| applied.sha != fetched.commit.sha);
                if new_commit {
                    let mut reconciling = previous.clone().unwrap_or_default();
                    reconciling.last_fetched_commit = Some(fetched.commit.clone());
                    let message = format!("applying {}", short(&fetched.commit));
                    set(
                        &mut reconciling.conditions,
                        gitsource_condition::RECONCILING,
                        true,
                        "Progressing",
                        &message,
                    );
                    self.write_status(source, &reconciling).await?;
                }
                self.apply_commit(source, fetched, !new_commit).await
            }
        };
        self.report(source, last_applied.as_ref(), &outcome).await;
        let fetched_commit = match &outcome {
            Outcome::Applied { commit, .. } | Outcome::ApplyFailed { commit, .. } => Some(commit.clone()),
            Outcome::Invalid { commit, .. } => commit.clone(),
            Outcome::FetchFailed { .. } => None,
        };
        let status =
            next_status(previous.as_ref(), source.metadata.generation, fetched_commit, &outcome, Utc::now());
        if previous.as_ref() != Some(&status) {
            self.write_status(source, &status).await?;
        }
        match outcome {
            Outcome::ApplyFailed { message, .. } => Err(StoreError::Invalid(message)),
            _ => Ok(()),
        }
    }

    /// Validates every file of the commit, then applies them all and prunes. `same_commit`: the
    /// commit was applied before, so a spec that differs now was edited by hand (drift).
    async fn apply_commit(&self, source: &GitSource, fetched: git::Fetched, same_commit: bool) -> Outcome {
        let namespace = source.metadata.namespace.as_str();
        let mut parsed = ParsedObjects::default();
        let mut errors = Vec::new();
        // A Compose file reads its `.env` and `env_file`s from the commit, never from the leader's
        // disk or environment, and lands in the source's namespace.
        let mut commit_files = fetched.others.clone();
        commit_files.extend(fetched.files.iter().cloned());
        let compose = ComposeOptions {
            namespace: Some(namespace.to_owned()),
            commit_files: Some(commit_files),
            ..ComposeOptions::default()
        };
        for (file, text) in &fetched.files {
            let directory = std::path::Path::new(file).parent().unwrap_or(std::path::Path::new(""));
            let (objects, file_errors) =
                kedge_crds::parse::parse_objects_str_with(file, text, directory, &compose);
            parsed.extend(objects);
            errors.extend(file_errors);
        }
        errors.extend(validate_objects(&parsed));
        errors.extend(kedge_crds::parse::git_source_scope_errors(&parsed, namespace));
        sort_errors(&mut errors);
        if !errors.is_empty() {
            let errors = errors.iter().map(ToString::to_string).collect();
            return Outcome::Invalid { commit: Some(fetched.commit), errors };
        }
        let applyset = applyset_id(namespace, &source.metadata.name);
        let secrets = owned(parsed.secrets.into_iter().map(|p| p.secret).collect(), namespace, &applyset);
        let containers =
            owned(parsed.containers.into_iter().map(|p| p.container).collect(), namespace, &applyset);
        let sets = owned(parsed.sets.into_iter().map(|p| p.set).collect(), namespace, &applyset);
        let applied = (secrets.len() + containers.len() + sets.len()) as u32;
        let commit = fetched.commit;
        let result: Result<u32, StoreError> = async {
            // Secrets first: the containers applied next may name them in `secretEnv`.
            self.apply_all(source, &secrets, &commit, same_commit).await?;
            self.apply_all(source, &containers, &commit, same_commit).await?;
            self.apply_all(source, &sets, &commit, same_commit).await?;
            let mut pruned = 0;
            if source.spec.prune() {
                pruned += self.prune(namespace, &sets, &applyset).await?;
                pruned += self.prune(namespace, &containers, &applyset).await?;
                pruned += self.prune(namespace, &secrets, &applyset).await?;
            }
            Ok(pruned)
        }
        .await;
        match result {
            Ok(pruned) => Outcome::Applied { commit, applied, pruned },
            Err(error) => Outcome::ApplyFailed { commit, message: error.to_string() },
        }
    }

    async fn apply_all<K: Resource>(
        &self,
        source: &GitSource,
        objects: &[K],
        commit: &CommitRef,
        same_commit: bool,
    ) -> Result<(), StoreError> {
        let api = Api::<K>::new(self.store.clone());
        for desired in objects {
            let metadata = desired.metadata();
            let current = api.get(&metadata.namespace, &metadata.name).await?;
            let applied = api.apply_fenced(self.fence(), desired, current.as_ref()).await?;
            let spec_changed =
                matches!(applied.map(|a| a.outcome), Some(ApplyOutcome::Updated { spec_changed: true }));
            if spec_changed && same_commit {
                let message = format!(
                    "the spec was edited outside Git; put back to commit {} of GitSource {}",
                    short(commit),
                    source.key()
                );
                self.events
                    .record_about(K::KIND, &desired.key(), EventType::Warning, "DriftCorrected", &message)
                    .await;
                let message = format!("{} {} was edited outside Git; put back", K::KIND, desired.key());
                self.events
                    .record_about(
                        GitSource::KIND,
                        &source.key(),
                        EventType::Warning,
                        "DriftCorrected",
                        &message,
                    )
                    .await;
            }
        }
        Ok(())
    }

    /// Deletes the objects of `applyset` in `namespace` that `wanted` no longer declares.
    async fn prune<K: Resource>(
        &self,
        namespace: &str,
        wanted: &[K],
        applyset: &str,
    ) -> Result<u32, StoreError> {
        let wanted: BTreeSet<&str> = wanted.iter().map(|o| o.metadata().name.as_str()).collect();
        let api = Api::<K>::new(self.store.clone());
        let mut pruned = 0;
        for object in api.list(Some(namespace)).await?.items {
            let metadata = object.metadata();
            let ours = metadata.labels.get(APPLYSET_LABEL).map(String::as_str) == Some(applyset);
            if !ours || wanted.contains(metadata.name.as_str()) {
                continue;
            }
            let key = keys::object_key::<K>(&metadata.namespace, &metadata.name)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            let revision = metadata.resource_version.as_deref().and_then(|rv| rv.parse().ok()).unwrap_or(0);
            self.store.delete_fenced(self.fence(), &key, DeleteCondition::ModRevision(revision)).await?;
            tracing::info!(kind = K::KIND, object = %object.key(), applyset, "pruned: no longer in the GitSource's commit");
            pruned += 1;
        }
        Ok(pruned)
    }

    async fn write_status(&self, source: &GitSource, status: &GitSourceStatus) -> Result<(), StoreError> {
        let api = Api::<GitSource>::new(self.store.clone());
        let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
        api.put_status_fenced(self.fence(), namespace, name, status, PutCondition::Always).await.map(drop)
    }

    async fn write_suspended(&self, source: &GitSource) {
        let api = Api::<GitSource>::new(self.store.clone());
        let (namespace, name) = (&source.metadata.namespace, &source.metadata.name);
        let Ok(previous) = api.get_status(namespace, name).await else { return };
        let mut status = previous.map(|(status, _)| status).unwrap_or_default();
        let before = status.clone();
        status.observed_generation = source.metadata.generation;
        set(
            &mut status.conditions,
            gitsource_condition::RECONCILING,
            false,
            "Suspended",
            "spec.suspend is true: nothing is fetched or applied",
        );
        if status != before {
            if let Err(error) = self.write_status(source, &status).await {
                tracing::debug!(%error, "could not write a suspended GitSource's status");
            }
        }
    }

    /// The events of a sync: a new commit applied, a commit refused, a fetch failed.
    async fn report(&self, source: &GitSource, last_applied: Option<&CommitRef>, outcome: &Outcome) {
        let key = source.key();
        let (kind, reason, message) = match outcome {
            Outcome::Applied { commit, applied, pruned } => {
                if last_applied.is_some_and(|last| last.sha == commit.sha) && *pruned == 0 {
                    return;
                }
                (
                    EventType::Normal,
                    "Applied",
                    format!("applied {}: {applied} object(s), {pruned} pruned", short(commit)),
                )
            }
            Outcome::Invalid { commit, errors } => {
                let at = commit.as_ref().map(short).unwrap_or_else(|| "the fetched commit".to_owned());
                let shown: Vec<&str> = errors.iter().take(5).map(String::as_str).collect();
                let more =
                    if errors.len() > 5 { format!("; and {} more", errors.len() - 5) } else { String::new() };
                (
                    EventType::Warning,
                    "InvalidSpecs",
                    format!("{at} applies nothing: {}{more}", shown.join("; ")),
                )
            }
            Outcome::FetchFailed { reason, message } => (
                EventType::Warning,
                *reason,
                format!("{}: {message}", kedge_crds::gitsource::url_without_password(&source.spec.url)),
            ),
            Outcome::ApplyFailed { commit, message } => {
                (EventType::Warning, "ApplyFailed", format!("{}: {message}", short(commit)))
            }
        };
        self.events.record_about(GitSource::KIND, &key, kind, reason, &message).await;
    }
}

/// The objects of a commit as the source writes them: in the source's namespace, labelled with its
/// apply set.
fn owned<K: Resource>(mut objects: Vec<K>, namespace: &str, applyset: &str) -> Vec<K> {
    for object in &mut objects {
        let metadata = object.metadata_mut();
        if metadata.namespace == DEFAULT_NAMESPACE {
            metadata.namespace = namespace.to_owned();
        }
        metadata.labels.insert(APPLYSET_LABEL.to_owned(), applyset.to_owned());
    }
    objects
}

/// `abc1234 (subject)`.
fn short(commit: &CommitRef) -> String {
    let sha = commit.sha.get(..7).unwrap_or(&commit.sha);
    if commit.subject.is_empty() {
        sha.to_owned()
    } else {
        format!("{sha} ({})", commit.subject)
    }
}

fn set(conditions: &mut Vec<Condition>, kind: &str, status: bool, reason: &str, message: &str) {
    let status = if status { ConditionStatus::True } else { ConditionStatus::False };
    set_condition(
        conditions,
        Condition {
            kind: kind.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: rfc3339(Utc::now()),
            observed_generation: None,
        },
    );
}

/// The status after a sync: pure, so that equal outcomes give an equal status (and nothing is
/// written). `fetched`: the commit the fetch found, when it found one.
pub(crate) fn next_status(
    previous: Option<&GitSourceStatus>,
    generation: Option<i64>,
    fetched: Option<CommitRef>,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> GitSourceStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    if fetched.is_some() {
        status.last_fetched_commit = fetched;
    }
    let mut condition = |kind: &str, value: bool, reason: &str, message: &str| {
        let status_value = if value { ConditionStatus::True } else { ConditionStatus::False };
        set_condition(
            &mut status.conditions,
            Condition {
                kind: kind.to_owned(),
                status: status_value,
                reason: reason.to_owned(),
                message: message.to_owned(),
                last_transition_time: rfc3339(now),
                observed_generation: generation,
            },
        );
    };
    let running = previous
        .and_then(|p| p.last_applied_commit.as_ref())
        .map_or("nothing applied yet".to_owned(), |c| format!("{} keeps running", short(c)));
    let mut errors = Vec::new();
    let mut applied_commit = None;
    let mut counts = None;
    match outcome {
        Outcome::Applied { commit, applied, pruned } => {
            let message = format!("applied {}", short(commit));
            condition(gitsource_condition::READY, true, "Applied", &message);
            condition(gitsource_condition::STALLED, false, "Applied", "");
            condition(gitsource_condition::RECONCILING, false, "Applied", "");
            applied_commit = Some(commit.clone());
            counts = Some((*applied, *pruned));
        }
        Outcome::Invalid { commit, errors: found } => {
            let at = commit.as_ref().map(short).unwrap_or_else(|| "the fetched commit".to_owned());
            let message = format!("{} error(s) in {at}; nothing applied, {running}", found.len());
            condition(gitsource_condition::READY, false, "InvalidSpecs", &message);
            condition(
                gitsource_condition::STALLED,
                true,
                "InvalidSpecs",
                "fix the repository: the same commit is not tried again",
            );
            condition(gitsource_condition::RECONCILING, false, "InvalidSpecs", "");
            errors = found.clone();
        }
        Outcome::FetchFailed { reason, message } => {
            condition(gitsource_condition::READY, false, reason, &format!("{message}; {running}"));
            condition(gitsource_condition::STALLED, false, "Retrying", "fetched again at the next interval");
            condition(gitsource_condition::RECONCILING, false, reason, "");
        }
        Outcome::ApplyFailed { commit, message } => {
            let message = format!("applying {}: {message}", short(commit));
            condition(gitsource_condition::READY, false, "ApplyFailed", &message);
            condition(gitsource_condition::STALLED, false, "Retrying", "");
            condition(gitsource_condition::RECONCILING, false, "ApplyFailed", "");
        }
    }
    status.errors = errors;
    if let Some(commit) = applied_commit {
        status.last_applied_commit = Some(commit);
    }
    if let Some((applied, pruned)) = counts {
        status.applied = applied;
        status.pruned = pruned;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(sha: &str) -> CommitRef {
        CommitRef { sha: sha.repeat(40 / sha.len()), subject: format!("commit {sha}") }
    }

    fn condition(status: &GitSourceStatus, kind: &str) -> (ConditionStatus, String) {
        let found = status.conditions.iter().find(|c| c.kind == kind).expect("the condition");
        (found.status, found.reason.clone())
    }

    #[test]
    fn an_invalid_commit_keeps_the_last_applied_one_and_says_why() {
        let now = Utc::now();
        let applied = Outcome::Applied { commit: commit("a"), applied: 2, pruned: 0 };
        let first = next_status(None, Some(1), Some(commit("a")), &applied, now);
        assert_eq!(condition(&first, "Ready"), (ConditionStatus::True, "Applied".into()));
        assert_eq!(first.last_applied_commit, Some(commit("a")));
        assert_eq!(first.applied, 2);

        let errors = vec!["deploy/web.yaml:3:5: spec.image: must not be empty".to_owned()];
        let invalid = Outcome::Invalid { commit: Some(commit("b")), errors: errors.clone() };
        let second = next_status(Some(&first), Some(1), Some(commit("b")), &invalid, now);
        assert_eq!(condition(&second, "Ready"), (ConditionStatus::False, "InvalidSpecs".into()));
        assert_eq!(condition(&second, "Stalled"), (ConditionStatus::True, "InvalidSpecs".into()));
        assert_eq!(second.last_applied_commit, Some(commit("a")), "the last good commit keeps running");
        assert_eq!(second.last_fetched_commit, Some(commit("b")));
        assert_eq!(second.errors, errors);
        assert_eq!(second.applied, 2);

        // The same outcome again is the same status: nothing to write.
        let later = now + chrono::Duration::seconds(60);
        assert_eq!(next_status(Some(&second), Some(1), Some(commit("b")), &invalid, later), second);

        let fixed = Outcome::Applied { commit: commit("c"), applied: 1, pruned: 1 };
        let third = next_status(Some(&second), Some(1), Some(commit("c")), &fixed, later);
        assert!(third.errors.is_empty());
        assert_eq!((third.applied, third.pruned), (1, 1));
        assert_eq!(condition(&third, "Stalled"), (ConditionStatus::False, "Applied".into()));
    }

    #[test]
    fn a_failed_fetch_is_retried_not_stalled() {
        let status = next_status(
            None,
            Some(1),
            None,
            &Outcome::FetchFailed { reason: "FetchFailed", message: "no route".into() },
            Utc::now(),
        );
        assert_eq!(condition(&status, "Ready"), (ConditionStatus::False, "FetchFailed".into()));
        assert_eq!(condition(&status, "Stalled"), (ConditionStatus::False, "Retrying".into()));
        assert_eq!(status.last_fetched_commit, None);
    }

    #[test]
    fn the_apply_set_is_a_label_value_of_the_source() {
        let long = "n".repeat(63);
        let id = applyset_id(&long, &long);
        assert!(id.len() <= 63 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_ne!(applyset_id("a", "b"), applyset_id("b", "a"));
        assert_eq!(applyset_id("a", "b"), applyset_id("a", "b"));
    }
}
