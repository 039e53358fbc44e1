//! The store's identity: a random ID written once, at the first start of any agent on the store.
//!
//! Containers carry it ([`crate::docker::labels::STORE`]), so an agent can tell the containers made
//! from its store from those made from another one (an agent started on a new, empty or wrong
//! store): only the former are removed when their spec is not in the store.

use crate::store::keys::IDENTITY as IDENTITY_KEY;
use crate::store::{PutCondition, Store, StoreError};

/// Reads the store's identity, creating it if this is the store's first agent.
pub(crate) async fn store_identity(store: &dyn Store) -> Result<String, StoreError> {
    loop {
        if let Some(kv) = store.get(IDENTITY_KEY).await? {
            return String::from_utf8(kv.value)
                .map_err(|_| StoreError::Corrupt(format!("{IDENTITY_KEY} is not UTF-8")));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        match store.put(IDENTITY_KEY, id.clone().into_bytes(), PutCondition::Absent, 0).await {
            Ok(_) => return Ok(id),
            // Another agent wrote it first: read theirs.
            Err(StoreError::Conflict { .. }) => continue,
            Err(error) => return Err(error),
        }
    }
}
