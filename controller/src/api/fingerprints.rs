//! The fingerprint the API shows in place of a Secret's value: `<redacted> fingerprint:HEX`, 16 hex
//! digits of HMAC-SHA256 keyed by a random key of the store's own (docs/secrets.md).
//!
//! Keyed, because a value short enough to guess (a PIN, a short password) could otherwise be found
//! offline from an unkeyed hash and a salt everyone knows: without the key, a fingerprint tells
//! only whether two values are equal. The key is made by the first API that shows a secret and
//! written create-only ([`keys::SECRET_FINGERPRINT_KEY`]), so that every agent of a store reads the
//! same key and shows the same fingerprints; it lives in the store, next to the values themselves,
//! and no route serves it.

use std::fmt;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::{keys, PutCondition, Store, StoreError};

/// The bytes of a key.
const KEY_BYTES: usize = 32;

/// A store's fingerprint key. `Debug` never shows it.
pub struct FingerprintKey(hmac::Key);

impl fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintKey(<redacted>)")
    }
}

impl FingerprintKey {
    fn from_bytes(bytes: &[u8]) -> FingerprintKey {
        FingerprintKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// The fingerprint of `value`: the same for the same value in any secret, key or namespace of
    /// the store, so that a reused value shows as reused and a changed one as changed.
    pub fn fingerprint(&self, value: &str) -> String {
        hex::encode(&hmac::sign(&self.0, value.as_bytes()).as_ref()[..8])
    }
}

/// Reads the store's fingerprint key, creating it if none exists yet. Create-only, so that two APIs
/// racing on an empty store agree: the loser of the write reads the winner's key.
pub async fn load_or_create(store: &dyn Store) -> Result<FingerprintKey, StoreError> {
    let key = keys::SECRET_FINGERPRINT_KEY;
    loop {
        if let Some(kv) = store.get(key).await? {
            let bytes = hex::decode(&kv.value)
                .ok()
                .filter(|bytes| bytes.len() == KEY_BYTES)
                .ok_or_else(|| StoreError::Corrupt(format!("{key} is not {KEY_BYTES} hex-encoded bytes")))?;
            return Ok(FingerprintKey::from_bytes(&bytes));
        }
        let mut bytes = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| StoreError::Corrupt("the system's random source failed".to_owned()))?;
        match store.put(key, hex::encode(bytes).into_bytes(), PutCondition::Absent, 0).await {
            Ok(_) => return Ok(FingerprintKey::from_bytes(&bytes)),
            // Another API wrote it first: read theirs.
            Err(StoreError::Conflict { .. }) => continue,
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
    use sha2::{Digest, Sha256};

    #[tokio::test]
    async fn one_key_per_store_made_once_and_the_fingerprint_is_keyed() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EmbeddedStore::open(dir.path().join("store.db"), EmbeddedOptions::default()).await.unwrap();
        // Two APIs racing on an empty store agree on one key.
        let (one, two) = tokio::join!(load_or_create(&store), load_or_create(&store));
        let (one, two) = (one.unwrap(), two.unwrap());
        assert_eq!(one.fingerprint("1234"), two.fingerprint("1234"));
        assert_eq!(load_or_create(&store).await.unwrap().fingerprint("1234"), one.fingerprint("1234"));
        assert_ne!(one.fingerprint("1234"), one.fingerprint("1235"));
        assert_eq!(one.fingerprint("1234").len(), 16);
        // Not a hash anyone can compute: neither the value's SHA-256 nor the old salted form.
        let plain = hex::encode(&Sha256::digest(b"1234")[..8]);
        assert_ne!(one.fingerprint("1234"), plain);
        assert_ne!(
            one.fingerprint("1234"),
            kedge_crds::secret::hash_digest("default", "db", "data.pin", "1234")
        );
        // Another store, another key.
        let other_dir = tempfile::tempdir().unwrap();
        let other =
            EmbeddedStore::open(other_dir.path().join("store.db"), EmbeddedOptions::default()).await.unwrap();
        assert_ne!(load_or_create(&other).await.unwrap().fingerprint("1234"), one.fingerprint("1234"));
        assert_eq!(format!("{one:?}"), "FingerprintKey(<redacted>)");
    }
}
