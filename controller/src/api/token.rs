//! The API's bearer tokens: the agent's bootstrap token (made on first start, kept in a file only its
//! owner can read; an admin) and the scoped tokens of `POST /api/v1/tokens`, `kedge_<id>_<secret>`,
//! whose id names their record in the store and whose secret only its SHA-256 is kept of.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The token file's name inside the agent's state directory.
pub const TOKEN_FILE: &str = "api-token";

/// Where [`load_or_create_token`] keeps the token for `state_dir`.
pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

/// Reads the token from `state_dir/api-token`, creating it (32 random bytes, hex) when absent.
///
/// The file is written under a temporary name with mode 0600 and then hard-linked into place, so a reader
/// never sees a partial token and two agents starting at once agree on one token (the loser of the race
/// reads the winner's). An existing file readable by others is tightened to 0600.
pub fn load_or_create_token(state_dir: &Path) -> io::Result<String> {
    let path = token_path(state_dir);
    if let Some(token) = read_token(&path)? {
        return Ok(token);
    }
    fs::create_dir_all(state_dir)?;
    let token = hex::encode(rand::random::<[u8; 32]>());
    let temporary = state_dir.join(format!(".{TOKEN_FILE}.{}.tmp", uuid::Uuid::new_v4()));
    {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
    }
    let linked = fs::hard_link(&temporary, &path);
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(token),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => read_token(&path)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{} is empty", path.display()))
        }),
        Err(error) => Err(error),
    }
}

fn read_token(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
            }
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(Some(token))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Every scoped token starts with this, so it is never taken for a bootstrap token (64 hex digits).
pub const SCOPED_PREFIX: &str = "kedge_";

/// A scoped token just made: the whole token to show once, its id, and what the store keeps of its
/// secret. `Debug` leaves the token out.
pub struct NewScopedToken {
    /// `kedge_<id>_<secret>`.
    pub bearer: String,
    /// 16 hex digits (8 random bytes): the record's key.
    pub id: String,
    /// The SHA-256 of the secret, hex.
    pub secret_sha256: String,
}

impl std::fmt::Debug for NewScopedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewScopedToken").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Makes a scoped token: an id of 8 random bytes and a secret of 32 (hex, 64 digits).
pub fn new_scoped_token() -> NewScopedToken {
    let id = hex::encode(rand::random::<[u8; 8]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let secret_sha256 = secret_sha256(&secret);
    NewScopedToken { bearer: format!("{SCOPED_PREFIX}{id}_{secret}"), id, secret_sha256 }
}

/// Splits a presented scoped token into (id, secret); `None` when it is not of the form
/// `kedge_<id>_<secret>` with a non-empty hex id and secret.
pub fn split_scoped_token(presented: &str) -> Option<(&str, &str)> {
    let (id, secret) = presented.strip_prefix(SCOPED_PREFIX)?.split_once('_')?;
    let hex =
        |text: &str| !text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id) && hex(secret)).then_some((id, secret))
}

/// The SHA-256 of a scoped token's secret, hex: what the store keeps.
pub fn secret_sha256(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// Compares two tokens in time independent of where they first differ.
pub(crate) fn tokens_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_created_once_owner_only_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = load_or_create_token(&state).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        let mode = fs::metadata(token_path(&state)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_token(&state).unwrap(), first);
        let leftovers: Vec<_> = fs::read_dir(&state).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from(TOKEN_FILE)]);
    }

    #[test]
    fn scoped_tokens_split_into_id_and_secret_whose_hash_is_kept() {
        let made = new_scoped_token();
        assert_eq!(made.id.len(), 16);
        assert_eq!(made.bearer.len(), "kedge_".len() + 16 + 1 + 64);
        let (id, secret) = split_scoped_token(&made.bearer).unwrap();
        assert_eq!(id, made.id);
        assert_eq!(secret_sha256(secret), made.secret_sha256);
        assert!(!made.secret_sha256.contains(secret));
        assert!(!format!("{made:?}").contains(secret), "Debug shows no secret");
        assert_ne!(new_scoped_token().bearer, made.bearer);
        // SHA-256 of "abc", the standard's own example.
        assert_eq!(secret_sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn malformed_scoped_tokens_are_refused() {
        for bad in
            ["", "kedge_", "kedge_ab", "kedge__ab", "kedge_ab_", "kedge_zz_ab", "kedge_ab_cd_ef", "ab_cd"]
        {
            assert_eq!(split_scoped_token(bad), None, "{bad:?}");
        }
        assert_eq!(split_scoped_token("kedge_ab_cd"), Some(("ab", "cd")));
    }

    #[test]
    fn tokens_compare() {
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("abc", "abcd"));
    }
}
