//! The `GitSource` kind: a Git repository whose specs the scheduler's leader applies as one unit,
//! pruning what it applied before and no longer finds (docs/gitops.md). Plain data and its rules; the
//! fetching and applying is `kedge_controller::controllers::gitsource`.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::meta::{Condition, ObjectMeta};
use crate::quantity::HumanDuration;
use crate::secret::REDACTED;
use crate::validate::FieldError;

/// The `kind` of a GitSource.
pub const KIND_GIT_SOURCE: &str = "GitSource";

/// How often a source is fetched when `spec.interval` is not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The shortest interval accepted: one fetch per source per interval for the whole fleet, and a
/// fetch is cheap, but not free.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Condition types a GitSource reports.
pub mod gitsource_condition {
    /// The last sync applied the wanted commit (False: it could not, and why).
    pub const READY: &str = "Ready";
    /// A sync is under way.
    pub const RECONCILING: &str = "Reconciling";
    /// The wanted commit cannot be applied until the repository changes (invalid specs, a missing
    /// branch): retrying the same commit will not help.
    pub const STALLED: &str = "Stalled";
}

/// A Git repository of specs, kept applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(
    title = "GitSource",
    description = "A kedge GitSource: the specs under a path of a Git repository, applied and pruned as one unit."
)]
pub struct GitSource {
    /// Always `kedge.io/v1`.
    #[schemars(extend("const" = "kedge.io/v1"))]
    pub api_version: String,
    /// Always `GitSource`.
    #[schemars(extend("const" = "GitSource"))]
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: GitSourceSpec,
    /// Written by the scheduler's leader, never by the user; ignored by `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<GitSourceStatus>,
}

/// Where the specs are and how they are kept applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSourceSpec {
    /// The repository: `file:///path`, `http(s)://host/repo.git` (a token as the URL's password),
    /// or `ssh://user@host/repo.git` (the agent's SSH agent or keys).
    pub url: String,
    /// The branch to follow (the default when none of `branch`, `tag`, `commit` is given: `main`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// A tag to apply; fetched again every interval, so a moved tag is followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A full commit SHA to apply, pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The directory of the repository whose specs are applied (recursively); the root when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How often the repository is fetched: `30s`, `5m`, `1h` (default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Whether objects this source applied before and no longer finds are deleted (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// While true, nothing is fetched or applied; what runs keeps running.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// A push webhook: `POST /hooks/gitsources/NAMESPACE/NAME` signed with this secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<GitSourceWebhook>,
}

/// The webhook's shared secret; never shown back by the API.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSourceWebhook {
    /// GitHub, Gitea and Forgejo sign the body with it (`X-Hub-Signature-256`); GitLab sends it as
    /// `X-Gitlab-Token`.
    pub secret: String,
}

impl std::fmt::Debug for GitSourceWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSourceWebhook").field("secret", &REDACTED).finish()
    }
}

/// A commit: its SHA and the first line of its message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct CommitRef {
    pub sha: String,
    #[serde(default)]
    pub subject: String,
}

/// What the scheduler's leader reports of a source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GitSourceStatus {
    /// The source's generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The commit the last fetch found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fetched_commit: Option<CommitRef>,
    /// The last commit applied whole: what runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_commit: Option<CommitRef>,
    /// When the last sync ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    /// Objects the last applied commit declares.
    #[serde(default)]
    pub applied: u32,
    /// Objects the last sync deleted because the commit no longer declares them.
    #[serde(default)]
    pub pruned: u32,
    /// Every error of the last sync that applied nothing: `FILE:LINE:COLUMN: FIELD: MESSAGE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Ready, Reconciling, Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What a source wants checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitReference {
    Branch(String),
    Tag(String),
    Commit(String),
}

impl GitSourceSpec {
    /// The branch, tag or commit to apply (`main` when none is given).
    pub fn reference(&self) -> GitReference {
        if let Some(commit) = &self.commit {
            GitReference::Commit(commit.clone())
        } else if let Some(tag) = &self.tag {
            GitReference::Tag(tag.clone())
        } else {
            GitReference::Branch(self.branch.clone().unwrap_or_else(|| "main".to_owned()))
        }
    }

    /// The branch, tag or (short) commit followed, as a table shows it.
    pub fn reference_name(&self) -> String {
        match self.reference() {
            GitReference::Branch(name) | GitReference::Tag(name) => name,
            GitReference::Commit(sha) => sha.get(..7).unwrap_or(&sha).to_owned(),
        }
    }

    /// How often to fetch (an invalid interval is refused by [`validate_git_source`]; it reads as
    /// the default here).
    pub fn interval(&self) -> Duration {
        self.interval
            .as_deref()
            .and_then(|text| text.parse::<HumanDuration>().ok())
            .map_or(DEFAULT_INTERVAL, |d| d.duration().max(MIN_INTERVAL))
    }

    /// Whether to prune (default true).
    pub fn prune(&self) -> bool {
        self.prune.unwrap_or(true)
    }

    /// The path inside the repository, without leading or trailing `/` (empty: the root).
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("").trim_matches('/')
    }
}

/// Every rule of a GitSource's own fields.
pub fn validate_git_source(source: &GitSource) -> Vec<FieldError> {
    let field = |path: &str, message: String| FieldError { path: path.to_owned(), message, on_key: false };
    let mut errors = Vec::new();
    if source.api_version != crate::container::API_VERSION {
        let message = format!(
            "unsupported apiVersion `{}`, expected `{}`",
            source.api_version,
            crate::container::API_VERSION
        );
        errors.push(field("apiVersion", message));
    }
    if source.kind != KIND_GIT_SOURCE {
        errors
            .push(field("kind", format!("unsupported kind `{}`, expected `{KIND_GIT_SOURCE}`", source.kind)));
    }
    errors.extend(crate::validate::metadata_errors(&source.metadata));
    let spec = &source.spec;
    let scheme_ok = ["file://", "http://", "https://", "ssh://"].iter().any(|s| spec.url.starts_with(s));
    if !scheme_ok {
        errors.push(field(
            "spec.url",
            format!("`{}` is not a file://, http://, https:// or ssh:// URL", spec.url),
        ));
    }
    let chosen =
        [spec.branch.is_some(), spec.tag.is_some(), spec.commit.is_some()].iter().filter(|b| **b).count();
    if chosen > 1 {
        errors.push(field("spec", "give at most one of `branch`, `tag` and `commit`".to_owned()));
    }
    for (path, name) in [("spec.branch", &spec.branch), ("spec.tag", &spec.tag)] {
        if let Some(name) = name {
            if !is_ref_name(name) {
                errors.push(field(path, format!("`{name}` is not a Git reference name")));
            }
        }
    }
    if let Some(commit) = &spec.commit {
        if commit.len() != 40 || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
            errors.push(field("spec.commit", format!("`{commit}` is not a full (40 hex digit) commit SHA")));
        }
    }
    if let Some(path) = &spec.path {
        if path.split('/').any(|part| part == ".." || part == ".") {
            errors.push(field("spec.path", format!("`{path}` must not contain `.` or `..`")));
        }
    }
    if let Some(interval) = &spec.interval {
        match interval.parse::<HumanDuration>() {
            Ok(d) if d.duration() < MIN_INTERVAL => {
                errors.push(field("spec.interval", format!("`{interval}` is shorter than 1s")))
            }
            Ok(_) => {}
            Err(why) => errors.push(field("spec.interval", why)),
        }
    }
    if let Some(webhook) = &spec.webhook {
        if webhook.secret.is_empty() {
            errors.push(field("spec.webhook.secret", "must not be empty".to_owned()));
        } else if webhook.secret.starts_with(REDACTED) {
            let message = format!(
                "the value is a redacted one as the API shows it (`{REDACTED}`); write the real secret"
            );
            errors.push(field("spec.webhook.secret", message));
        }
    }
    errors
}

/// Hides the webhook's secret: what every API answer shows.
pub fn redact_git_source(source: &mut GitSource) {
    if let Some(webhook) = &mut source.spec.webhook {
        webhook.secret = REDACTED.to_owned();
    }
}

/// A branch or tag name Git accepts, kept to a conservative subset.
fn is_ref_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with(['-', '/', '.'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("//")
        && !name.ends_with(".lock")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_./+".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(spec: GitSourceSpec) -> GitSource {
        GitSource {
            api_version: "kedge.io/v1".into(),
            kind: KIND_GIT_SOURCE.into(),
            metadata: ObjectMeta { name: "apps".into(), namespace: "default".into(), ..Default::default() },
            spec,
            status: None,
        }
    }

    fn check(spec: GitSourceSpec, expected: &[&str]) {
        let errors: Vec<String> = validate_git_source(&source(spec)).into_iter().map(|e| e.path).collect();
        assert_eq!(errors, expected);
    }

    fn url(url: &str) -> GitSourceSpec {
        GitSourceSpec { url: url.into(), ..Default::default() }
    }

    #[test]
    fn rules_of_the_fields() {
        check(url("file:///srv/git/apps.git"), &[]);
        check(url("git@host:apps.git"), &["spec.url"]);
        check(
            GitSourceSpec { branch: Some("main".into()), tag: Some("v1".into()), ..url("file:///r") },
            &["spec"],
        );
        check(GitSourceSpec { branch: Some("a..b".into()), ..url("file:///r") }, &["spec.branch"]);
        check(GitSourceSpec { commit: Some("abc".into()), ..url("file:///r") }, &["spec.commit"]);
        check(GitSourceSpec { path: Some("../etc".into()), ..url("file:///r") }, &["spec.path"]);
        check(GitSourceSpec { interval: Some("soon".into()), ..url("file:///r") }, &["spec.interval"]);
        check(GitSourceSpec { interval: Some("100ms".into()), ..url("file:///r") }, &["spec.interval"]);
        let webhook = |secret: &str| Some(GitSourceWebhook { secret: secret.into() });
        check(GitSourceSpec { webhook: webhook(""), ..url("file:///r") }, &["spec.webhook.secret"]);
        check(GitSourceSpec { webhook: webhook(REDACTED), ..url("file:///r") }, &["spec.webhook.secret"]);
    }

    #[test]
    fn defaults() {
        let spec = url("file:///r");
        assert_eq!(spec.reference(), GitReference::Branch("main".into()));
        assert_eq!(spec.interval(), DEFAULT_INTERVAL);
        assert!(spec.prune());
        let spec =
            GitSourceSpec { interval: Some("1h".into()), path: Some("/deploy/".into()), ..url("file:///r") };
        assert_eq!(spec.interval(), Duration::from_secs(3600));
        assert_eq!(spec.path(), "deploy");
    }

    #[test]
    fn the_secret_is_never_in_debug_or_a_redacted_copy() {
        let mut s = source(GitSourceSpec {
            webhook: Some(GitSourceWebhook { secret: "hunter2".into() }),
            ..url("file:///r")
        });
        assert!(!format!("{s:?}").contains("hunter2"));
        redact_git_source(&mut s);
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
    }
}
