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
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSourceSpec {
    /// The repository: `file:///path`, `http(s)://host/repo.git` (a token as the URL's password),
    /// or `ssh://user@host[:port]/repo.git` (with `ssh`: the server's host keys, and a client key).
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
    /// How an `ssh://` repository is reached; required for one, refused for any other URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<GitSourceSsh>,
}

/// The two halves of trusting an ssh:// server and being trusted by it: the server's host keys, and
/// the client key kedge logs in with.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSourceSsh {
    /// The server's host keys as `known_hosts` lines (what `ssh-keyscan -p PORT HOST` prints; hashed
    /// names and `@revoked` accepted). A server whose key is not listed for its host, or listed with
    /// another key, is refused before any credential is sent: without this nobody can tell the
    /// repository from someone in the middle.
    pub known_hosts: String,
    /// The client's private key, unencrypted, OpenSSH or PEM format, written inline; never shown back
    /// by the API. Without it and without `privateKeyFile`: the agent's SSH agent (`SSH_AUTH_SOCK`),
    /// then `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// An absolute path to the client's private key file on the host of the agent that leads (every
    /// agent that may lead must have it), instead of `privateKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
}

/// Without the URL's token, like the webhook's secret and the ssh key: a `{:?}` in a log line must
/// not carry a credential.
impl std::fmt::Debug for GitSourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSourceSpec")
            .field("url", &url_without_password(&self.url))
            .field("branch", &self.branch)
            .field("tag", &self.tag)
            .field("commit", &self.commit)
            .field("path", &self.path)
            .field("interval", &self.interval)
            .field("prune", &self.prune)
            .field("suspend", &self.suspend)
            .field("webhook", &self.webhook)
            .field("ssh", &self.ssh)
            .finish()
    }
}

impl std::fmt::Debug for GitSourceSsh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSourceSsh")
            .field("known_hosts", &self.known_hosts)
            .field("private_key", &self.private_key.as_ref().map(|_| REDACTED))
            .field("private_key_file", &self.private_key_file)
            .finish()
    }
}

/// One line of a `known_hosts` text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownHost {
    /// `@revoked`: this key is refused for these hosts, whatever other lines say.
    pub revoked: bool,
    /// The host patterns: `host`, `[host]:port`, `*`/`?` wildcards, `!` negations, or hashed
    /// `|1|SALT|HASH` names.
    pub hosts: Vec<String>,
    /// `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`...
    pub key_type: String,
    /// The public key blob (SSH wire format), base64-decoded.
    pub key: Vec<u8>,
}

/// Reads a `known_hosts` text: blank lines and `#` comments skipped. An error names the line
/// (1-based) and what is wrong with it.
pub fn parse_known_hosts(text: &str) -> Result<Vec<KnownHost>, String> {
    use base64::Engine as _;
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace().peekable();
        let revoked = match fields.peek() {
            Some(&"@revoked") => {
                fields.next();
                true
            }
            Some(&"@cert-authority") => {
                return Err(format!("line {line_number}: `@cert-authority` lines are not supported"));
            }
            Some(marker) if marker.starts_with('@') => {
                return Err(format!("line {line_number}: unknown marker `{marker}`"));
            }
            _ => false,
        };
        let (Some(hosts), Some(key_type), Some(key)) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("line {line_number}: expected `HOSTS KEYTYPE BASE64-KEY`"));
        };
        let key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .map_err(|_| format!("line {line_number}: the key is not base64"))?;
        let blob_type = key
            .get(..4)
            .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
            .and_then(|len| key.get(4..4 + len));
        if blob_type != Some(key_type.as_bytes()) {
            return Err(format!("line {line_number}: the key is not a `{key_type}` key"));
        }
        let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        if hosts.iter().any(|h| h.starts_with('|') && !h.starts_with("|1|")) {
            return Err(format!("line {line_number}: only `|1|` hashed host names are known"));
        }
        found.push(KnownHost { revoked, hosts, key_type: key_type.to_owned(), key });
    }
    if found.iter().all(|k| k.revoked) {
        return Err("no host key: give at least one `HOST KEYTYPE KEY` line".to_owned());
    }
    Ok(found)
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
            format!(
                "`{}` is not a file://, http://, https:// or ssh:// URL",
                url_without_password(&spec.url)
            ),
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
    if password_span(&spec.url).is_some_and(|(start, end)| spec.url[start..end].starts_with(REDACTED)) {
        let message = format!(
            "the URL's password is a redacted one as the API shows it (`{REDACTED}`); write the real token"
        );
        errors.push(field("spec.url", message));
    }
    errors.extend(ssh_errors(spec));
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

/// The rules of `spec.ssh`: required with its known hosts for an ssh:// URL, refused for another.
fn ssh_errors(spec: &GitSourceSpec) -> Vec<FieldError> {
    let field = |path: &str, message: String| FieldError { path: path.to_owned(), message, on_key: false };
    let is_ssh = spec.url.starts_with("ssh://");
    let Some(ssh) = &spec.ssh else {
        if is_ssh {
            let message = "required for an ssh:// URL: `knownHosts` (the server's host keys, as \
                           `ssh-keyscan -p PORT HOST` prints them) and the client key"
                .to_owned();
            return vec![field("spec.ssh", message)];
        }
        return Vec::new();
    };
    let mut errors = Vec::new();
    if !is_ssh {
        errors.push(field("spec.ssh", "only for an ssh:// URL".to_owned()));
    }
    if let Err(why) = parse_known_hosts(&ssh.known_hosts) {
        errors.push(field("spec.ssh.knownHosts", why));
    }
    if ssh.private_key.is_some() && ssh.private_key_file.is_some() {
        errors.push(field("spec.ssh", "give at most one of `privateKey` and `privateKeyFile`".to_owned()));
    }
    if let Some(key) = &ssh.private_key {
        if key.starts_with(REDACTED) {
            let message =
                format!("the value is a redacted one as the API shows it (`{REDACTED}`); write the real key");
            errors.push(field("spec.ssh.privateKey", message));
        } else if !(key.trim_start().starts_with("-----BEGIN ") && key.contains("PRIVATE KEY-----")) {
            let message = "not a private key: expected `-----BEGIN ... PRIVATE KEY-----`".to_owned();
            errors.push(field("spec.ssh.privateKey", message));
        } else if key.contains("ENCRYPTED") {
            errors.push(field(
                "spec.ssh.privateKey",
                "the key is encrypted: give an unencrypted one".to_owned(),
            ));
        }
    }
    if let Some(file) = &ssh.private_key_file {
        if !file.starts_with('/') {
            errors.push(field("spec.ssh.privateKeyFile", format!("`{file}` is not an absolute path")));
        }
    }
    errors
}

/// Hides the webhook's secret, the ssh private key and the password (token) of an http(s) URL:
/// what every API answer shows.
pub fn redact_git_source(source: &mut GitSource) {
    source.spec.url = url_without_password(&source.spec.url);
    if let Some(webhook) = &mut source.spec.webhook {
        webhook.secret = REDACTED.to_owned();
    }
    if let Some(key) = source.spec.ssh.as_mut().and_then(|ssh| ssh.private_key.as_mut()) {
        *key = REDACTED.to_owned();
    }
}

/// `url` with the password of its `user:password@` part (an https token) replaced by
/// [`REDACTED`], for API answers, messages and status; any other URL as it is.
pub fn url_without_password(url: &str) -> String {
    match password_span(url) {
        Some((start, end)) => format!("{}{REDACTED}{}", &url[..start], &url[end..]),
        None => url.to_owned(),
    }
}

/// Where the password of `scheme://user:password@host/...` lies in `url` (byte offsets).
fn password_span(url: &str) -> Option<(usize, usize)> {
    let authority_start = url.find("://")? + 3;
    let rest = &url[authority_start..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let colon = userinfo.find(':')?;
    Some((authority_start + colon + 1, authority_start + userinfo.len()))
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

    const HOST_KEY: &str =
        "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDhsAYgafhpiGmisgHS22pbI4x0L/2cB2UtmyYgJgCZW";

    fn ssh(known_hosts: &str, private_key: Option<&str>) -> GitSourceSpec {
        let ssh = GitSourceSsh {
            known_hosts: known_hosts.into(),
            private_key: private_key.map(Into::into),
            private_key_file: None,
        };
        GitSourceSpec { ssh: Some(ssh), ..url("ssh://git@127.0.0.1:2222/apps.git") }
    }

    #[test]
    fn rules_of_ssh() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n";
        check(ssh(HOST_KEY, Some(key)), &[]);
        check(ssh(HOST_KEY, None), &[]);
        check(url("ssh://git@host/apps.git"), &["spec.ssh"]);
        check(GitSourceSpec { url: "file:///r".into(), ..ssh(HOST_KEY, None) }, &["spec.ssh"]);
        check(ssh("", None), &["spec.ssh.knownHosts"]);
        check(ssh("host ssh-ed25519 not-base64!", None), &["spec.ssh.knownHosts"]);
        check(ssh(&HOST_KEY.replace("ssh-ed25519", "ssh-rsa"), None), &["spec.ssh.knownHosts"]);
        check(ssh(&format!("@cert-authority {HOST_KEY}"), None), &["spec.ssh.knownHosts"]);
        check(ssh(&format!("@revoked {HOST_KEY}"), None), &["spec.ssh.knownHosts"]);
        check(ssh(HOST_KEY, Some("hunter2")), &["spec.ssh.privateKey"]);
        check(ssh(HOST_KEY, Some(REDACTED)), &["spec.ssh.privateKey"]);
        let mut both = ssh(HOST_KEY, Some(key));
        both.ssh.as_mut().unwrap().private_key_file = Some("/etc/kedge/id".into());
        check(both, &["spec.ssh"]);
        let mut relative = ssh(HOST_KEY, None);
        relative.ssh.as_mut().unwrap().private_key_file = Some("id_ed25519".into());
        check(relative, &["spec.ssh.privateKeyFile"]);
    }

    #[test]
    fn known_hosts_lines() {
        let text = format!(
            "# a comment\n\n{HOST_KEY}\n@revoked host.example,|1|c2FsdA==|aGFzaA== {}\n",
            HOST_KEY.split_once(' ').unwrap().1
        );
        let found = parse_known_hosts(&text).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].hosts, ["[127.0.0.1]:2222"]);
        assert_eq!(found[0].key_type, "ssh-ed25519");
        assert_eq!(found[0].key.len(), 51);
        assert!(found[1].revoked);
        assert_eq!(found[1].hosts, ["host.example", "|1|c2FsdA==|aGFzaA=="]);
        assert_eq!(parse_known_hosts("a b\n").unwrap_err(), "line 1: expected `HOSTS KEYTYPE BASE64-KEY`");
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
            ..url("https://bot:hunter4@git.example/r.git")
        });
        s.spec.ssh = Some(GitSourceSsh {
            known_hosts: HOST_KEY.into(),
            private_key: Some("-----BEGIN OPENSSH PRIVATE KEY-----\nhunter3\n".into()),
            private_key_file: None,
        });
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s:?}").contains("hunter3"));
        assert!(!format!("{s:?}").contains("hunter4"), "the URL's token: {s:?}");
        assert!(format!("{s:?}").contains("git.example/r.git"), "the rest of the URL is shown: {s:?}");
        redact_git_source(&mut s);
        let shown = serde_json::to_string(&s).unwrap();
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3") && !shown.contains("hunter4"),
            "{shown}"
        );
        assert!(shown.contains("AAAAC3NzaC1lZDI1NTE5"), "the host keys are not secret: {shown}");
    }

    #[test]
    fn an_https_token_is_redacted_and_a_redacted_one_is_refused() {
        assert_eq!(
            url_without_password("https://bot:tok3n@git.example/a.git"),
            format!("https://bot:{REDACTED}@git.example/a.git")
        );
        // A password with an `@` (written unencoded), no path, a user without password, other schemes.
        assert_eq!(
            url_without_password("https://u:p@ss@git.example"),
            format!("https://u:{REDACTED}@git.example")
        );
        assert_eq!(url_without_password("https://bot@git.example/a.git"), "https://bot@git.example/a.git");
        assert_eq!(url_without_password("ssh://git@host:2222/a.git"), "ssh://git@host:2222/a.git");
        assert_eq!(url_without_password("file:///srv/a.git"), "file:///srv/a.git");
        assert_eq!(url_without_password("https://git.example/a:b@c.git"), "https://git.example/a:b@c.git");
        assert_eq!(url_without_password("not a url: x@y"), "not a url: x@y");

        let mut s = source(url("https://bot:tok3n@git.example/a.git"));
        redact_git_source(&mut s);
        let shown = serde_json::to_string(&s).unwrap();
        assert!(!shown.contains("tok3n"), "{shown}");
        // Written back as shown, it is refused rather than stored as the token.
        check(s.spec.clone(), &["spec.url"]);
        check(url("https://bot:tok3n@git.example/a.git"), &[]);
        let errors = validate_git_source(&source(url("htps://bot:tok3n@git.example/a.git")));
        assert!(errors.iter().all(|e| !e.message.contains("tok3n")), "{errors:?}");
    }
}
