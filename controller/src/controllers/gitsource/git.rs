//! Fetching a GitSource's commit with libgit2 (the `git2` crate) and reading its spec files out of
//! the commit's tree: no work tree, no `git` process. One bare repository per source is kept as a
//! cache, so that a fetch moves only what changed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, Oid, RemoteCallbacks, Repository,
    TreeWalkMode, TreeWalkResult,
};
use kedge_crds::gitsource::{parse_known_hosts, CommitRef, GitReference, GitSourceSsh};

use super::ssh::{check_host_key, host_and_port, HostKeyVerdict};

/// The ref the wanted branch or tag is fetched into, inside the cache repository.
const WANTED_REF: &str = "refs/kedge/wanted";

/// The last commit fetched, kept so that the next fetch negotiates from it.
const LAST_REF: &str = "refs/kedge/last";

/// What a fetch found: the commit, and every spec file under the source's path.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub commit: CommitRef,
    /// `(path from the repository's root, text)`, in path order.
    pub files: Vec<(String, String)>,
    /// Every other text file under the path (hidden ones such as `.env` included), by its path from
    /// the repository's root: what a Compose file there may read (`.env`, `env_file`).
    pub others: std::collections::BTreeMap<String, String>,
}

/// The largest file kept in [`Fetched::others`]: an env file is small; an asset is not read.
const OTHER_FILE_LIMIT: usize = 1 << 20;

/// Why a fetch gave nothing to apply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The repository could not be reached or read, or the reference is gone: tried again at the
    /// next interval.
    #[error("{0}")]
    Git(String),
    /// The ssh server's host key is not the one `spec.ssh.knownHosts` lists: nothing was sent to it.
    #[error("{0}")]
    HostKey(String),
    /// The server refused the credentials.
    #[error("{0}")]
    Auth(String),
    /// The commit has no such path, or a file is not text: the commit cannot be applied.
    #[error("{0}")]
    Content(String),
}

impl From<git2::Error> for FetchError {
    fn from(error: git2::Error) -> FetchError {
        if error.code() == git2::ErrorCode::Auth {
            return FetchError::Auth(error.message().to_owned());
        }
        FetchError::Git(error.message().to_owned())
    }
}

/// How the repository is reached, beyond its URL.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    /// `spec.ssh`, for an ssh:// URL.
    pub ssh: Option<GitSourceSsh>,
}

/// Fetches `reference` of `url` into the bare repository at `cache` (made when missing) and reads the
/// `.yaml`, `.yml` and `.json` files under `path` (recursively, hidden entries skipped).
pub(crate) fn fetch(
    cache: &Path,
    url: &str,
    access: &Access,
    reference: &GitReference,
    path: &str,
) -> Result<Fetched, FetchError> {
    let repo = match Repository::open_bare(cache) {
        Ok(repo) => repo,
        Err(_) => {
            std::fs::create_dir_all(cache)
                .map_err(|e| FetchError::Git(format!("{}: {e}", cache.display())))?;
            Repository::init_bare(cache)?
        }
    };
    let refspec = match reference {
        GitReference::Branch(branch) => format!("+refs/heads/{branch}:{WANTED_REF}"),
        GitReference::Tag(tag) => format!("+refs/tags/{tag}:{WANTED_REF}"),
        // A pinned commit is fetched with every branch: servers need not serve a bare SHA.
        GitReference::Commit(_) => "+refs/heads/*:refs/kedge/heads/*".to_owned(),
    };
    let mut remote = repo.remote_anonymous(url)?;
    let mut options = FetchOptions::new();
    // A refusal decided in a callback is kept here: libgit2 reports it only as a failed connection.
    let refused: Arc<Mutex<Option<FetchError>>> = Arc::default();
    options.remote_callbacks(callbacks(url, access, refused.clone())?);
    options.download_tags(git2::AutotagOption::None);
    // A fetch whose source ref is gone leaves the destination as it was: the wanted ref is removed
    // first, so that a deleted branch or tag reads as gone, not as its last commit. The last commit
    // stays under LAST_REF, so the fetch still tells the server what it has.
    if let Ok(mut wanted) = repo.find_reference(WANTED_REF) {
        wanted.delete()?;
    }
    if let Err(error) = remote.fetch(&[refspec.as_str()], Some(&mut options), None) {
        let decided = refused.lock().map(|mut slot| slot.take()).unwrap_or(None);
        return Err(decided.unwrap_or_else(|| error.into()));
    }
    let oid = match reference {
        GitReference::Commit(sha) => Oid::from_str(sha)?,
        GitReference::Branch(name) => repo
            .refname_to_id(WANTED_REF)
            .map_err(|_| FetchError::Git(format!("branch `{name}` not found in the repository")))?,
        GitReference::Tag(name) => repo
            .refname_to_id(WANTED_REF)
            .map_err(|_| FetchError::Git(format!("tag `{name}` not found in the repository")))?,
    };
    repo.reference(LAST_REF, oid, true, "kedge: last fetched")?;
    let commit = repo
        .find_object(oid, None)
        .and_then(|object| object.peel_to_commit())
        .map_err(|e| FetchError::Git(format!("commit {oid}: {}", e.message())))?;
    let subject = commit.summary().ok().flatten().unwrap_or_default().to_owned();
    let root = commit.tree()?;
    let tree = if path.is_empty() {
        root
    } else {
        let entry = root
            .get_path(Path::new(path))
            .map_err(|_| FetchError::Content(format!("commit {oid} has no path `{path}`")))?;
        entry
            .to_object(&repo)
            .and_then(|object| object.peel_to_tree())
            .map_err(|_| FetchError::Content(format!("`{path}` is not a directory in commit {oid}")))?
    };
    let mut files = Vec::new();
    let mut others = std::collections::BTreeMap::new();
    let mut unreadable = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        let is_blob = entry.kind() == Some(git2::ObjectType::Blob);
        let shown = [path, dir.trim_end_matches('/'), name]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let is_spec = [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext));
        if !is_blob || name.starts_with('.') || !is_spec {
            // A hidden directory is skipped whole; a hidden file (`.env`) or another file is kept
            // for a Compose file to read, when it is small text.
            if !is_blob {
                return if name.starts_with('.') { TreeWalkResult::Skip } else { TreeWalkResult::Ok };
            }
            if let Ok(blob) = repo.find_blob(entry.id()) {
                if blob.size() <= OTHER_FILE_LIMIT {
                    if let Ok(text) = String::from_utf8(blob.content().to_vec()) {
                        others.insert(shown, text);
                    }
                }
            }
            return TreeWalkResult::Ok;
        }
        match repo.find_blob(entry.id()).map(|blob| String::from_utf8(blob.content().to_vec())) {
            Ok(Ok(text)) => files.push((shown, text)),
            _ => {
                unreadable = Some(format!("{shown}: not UTF-8 text"));
                return TreeWalkResult::Abort;
            }
        }
        TreeWalkResult::Ok
    })
    .or_else(|e| if unreadable.is_some() { Ok(()) } else { Err(e) })?;
    if let Some(message) = unreadable {
        return Err(FetchError::Content(message));
    }
    files.sort();
    Ok(Fetched { commit: CommitRef { sha: oid.to_string(), subject }, files, others })
}

/// Credentials for the URL's transport: the user and password (or token) written in an https
/// URL; for ssh, the server's host key checked against `spec.ssh.knownHosts` first, then the key of
/// `spec.ssh` (else the agent's SSH agent, then its default key files). Each credential is offered
/// once: a second request means the server refused it.
fn callbacks(
    url: &str,
    access: &Access,
    refused: Arc<Mutex<Option<FetchError>>>,
) -> Result<RemoteCallbacks<'static>, FetchError> {
    let (user, password) = userinfo(url);
    let mut callbacks = RemoteCallbacks::new();
    if url.starts_with("ssh://") {
        let Some(ssh) = access.ssh.clone() else {
            return Err(FetchError::HostKey(
                "an ssh:// URL needs spec.ssh.knownHosts: the server's host key cannot be checked".to_owned(),
            ));
        };
        let known = parse_known_hosts(&ssh.known_hosts)
            .map_err(|why| FetchError::HostKey(format!("spec.ssh.knownHosts: {why}")))?;
        let (host, port) = host_and_port(url)
            .ok_or_else(|| FetchError::Git(format!("`{url}` has no host and port that can be read")))?;
        let certificate_refused = refused.clone();
        callbacks.certificate_check(move |cert, _hostname| {
            let shown = if port == 22 { host.clone() } else { format!("[{host}]:{port}") };
            let Some(key) = cert.as_hostkey().and_then(|hostkey| hostkey.hostkey()) else {
                let message = format!("{shown} showed no ssh host key to check against spec.ssh.knownHosts");
                return Err(refuse(&certificate_refused, FetchError::HostKey(message)));
            };
            let message = match check_host_key(&known, &host, port, key) {
                HostKeyVerdict::Known => return Ok(CertificateCheckStatus::CertificateOk),
                HostKeyVerdict::UnknownHost { fingerprint } => format!(
                    "host key not verified: spec.ssh.knownHosts has no line for {shown} (the server showed {fingerprint})"
                ),
                HostKeyVerdict::Changed { fingerprint } => format!(
                    "host key mismatch: {shown} showed {fingerprint}, not a key spec.ssh.knownHosts lists for it \
                     (the server's key changed, or someone is in the middle); nothing was sent to it"
                ),
                HostKeyVerdict::Revoked { fingerprint } => {
                    format!("host key revoked: {shown} showed {fingerprint}, an @revoked key of spec.ssh.knownHosts")
                }
            };
            Err(refuse(&certificate_refused, FetchError::HostKey(message)))
        });
        let mut tried = false;
        let mut tried_defaults = false;
        callbacks.credentials(move |_url, username, allowed| {
            let user = username.unwrap_or("git");
            if !allowed.contains(CredentialType::SSH_KEY) {
                let message = format!("the ssh server offers no public key login for user `{user}`");
                return Err(refuse(&refused, FetchError::Auth(message)));
            }
            let given = match (&ssh.private_key, &ssh.private_key_file) {
                (Some(key), _) => Some(("spec.ssh.privateKey", Cred::ssh_key_from_memory(user, None, key, None))),
                (None, Some(file)) => {
                    Some(("spec.ssh.privateKeyFile", Cred::ssh_key(user, None, Path::new(file), None)))
                }
                (None, None) => None,
            };
            if let Some((field, credential)) = given {
                if tried {
                    let message = format!("authentication failed: the ssh server refused the key of {field} for user `{user}`");
                    return Err(refuse(&refused, FetchError::Auth(message)));
                }
                tried = true;
                return credential.map_err(|e| {
                    let message = format!("{field}: the key cannot be used: {}", e.message());
                    refuse(&refused, FetchError::Auth(message))
                });
            }
            if !tried {
                tried = true;
                return Cred::ssh_key_from_agent(user);
            }
            if !tried_defaults {
                tried_defaults = true;
                let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_default();
                for key in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                    let private = home.join(".ssh").join(key);
                    if private.exists() {
                        return Cred::ssh_key(user, None, &private, None);
                    }
                }
            }
            let message = format!(
                "authentication failed: the ssh server refused the SSH agent's and ~/.ssh's keys for user `{user}` \
                 (give spec.ssh.privateKey)"
            );
            Err(refuse(&refused, FetchError::Auth(message)))
        });
        return Ok(callbacks);
    }
    let mut tried_plain = false;
    callbacks.credentials(move |_url, _username, allowed| {
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) && !tried_plain {
            tried_plain = true;
            if let Some(password) = &password {
                return Cred::userpass_plaintext(user.as_deref().unwrap_or("git"), password);
            }
        }
        Err(git2::Error::from_str("no credentials for this repository"))
    });
    Ok(callbacks)
}

/// Keeps the reason of a refusal for [`fetch`], and answers the error libgit2 is given.
fn refuse(slot: &Mutex<Option<FetchError>>, error: FetchError) -> git2::Error {
    let shown = git2::Error::from_str(&error.to_string());
    if let Ok(mut slot) = slot.lock() {
        *slot = Some(error);
    }
    shown
}

/// The user and password of `scheme://user:password@host/...`, percent-decoding left to the server.
fn userinfo(url: &str) -> (Option<String>, Option<String>) {
    let Some(rest) = url.split_once("://").map(|(_, rest)| rest) else { return (None, None) };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else { return (None, None) };
    match userinfo.split_once(':') {
        Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
        None => (Some(userinfo.to_owned()), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_from_the_url() {
        assert_eq!(
            userinfo("https://bot:tok3n@git.example/a.git"),
            (Some("bot".into()), Some("tok3n".into()))
        );
        assert_eq!(userinfo("ssh://git@host/a.git"), (Some("git".into()), None));
        assert_eq!(userinfo("file:///srv/a.git"), (None, None));
    }
}
