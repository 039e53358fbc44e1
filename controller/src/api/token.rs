//! The API's bearer token: made on first start, kept in a file only its owner can read.

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
    fn tokens_compare() {
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("abc", "abcd"));
    }
}
