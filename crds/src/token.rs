//! An API token's record: who may do what through an agent's API (docs/access.md).
//!
//! Not a [`crate::Resource`]: a token is created by the API from a request (`POST /api/v1/tokens`),
//! named by a generated id, and never applied. The store keeps a [`StoredToken`] (the record and the
//! SHA-256 of its secret); the API shows a [`Token`] (the record alone). The secret itself is shown
//! once, when the token is created, and kept nowhere.

use serde::{Deserialize, Serialize};

/// What a token may do. Every agent's bootstrap token (`STATE_DIR/api-token`) is an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything but the objects of sensitive kinds.
    Viewer,
    /// Reads like a viewer; in its namespaces also writes objects, reads sensitive ones, and
    /// restarts, recreates and reads the logs of containers.
    Deployer,
    /// Everything: tokens, upgrades, hosts, policy, every namespace.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Deployer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("unknown role `{text}`: the roles are viewer, deployer and admin"))
    }
}

/// A token as the API lists it: never its secret nor the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// The token's public part: `kedge_<id>_<secret>`.
    pub id: String,
    pub role: Role,
    /// The namespaces a deployer works in (empty for the other roles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; none: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// What the store keeps under `/kedge/v1/tokens/<id>`: the token and the SHA-256 (hex) of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredToken {
    #[serde(flatten)]
    pub token: Token,
    pub secret_sha256: String,
}

/// The answer of `POST /api/v1/tokens`: the token's record and, this once, the whole token.
/// `Debug` leaves the token out, so that no log line can carry it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: Token,
    /// `kedge_<id>_<secret>`: shown once, stored nowhere.
    pub bearer: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken").field("token", &self.token).field("bearer", &"<redacted>").finish()
    }
}

/// The body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    pub role: Role,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// How long the token lives; none: until revoked.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_token_keeps_the_hash_beside_the_flat_record() {
        let stored = StoredToken {
            token: Token {
                id: "0123456789abcdef".into(),
                role: Role::Deployer,
                namespaces: vec!["a".into()],
                description: String::new(),
                created: "2026-12-06T10:00:00Z".into(),
                expires: None,
            },
            secret_sha256: "ff".into(),
        };
        let json = serde_json::to_value(&stored).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "0123456789abcdef", "role": "deployer", "namespaces": ["a"],
                "created": "2026-12-06T10:00:00Z", "secretSha256": "ff"})
        );
        let shown: Token = serde_json::from_value(json).unwrap();
        assert_eq!(shown, stored.token);
    }

    #[test]
    fn roles_read_and_print_their_words() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("viewer, deployer and admin"));
    }
}
