//! The ownership contract: the labels kedge puts on every container it creates, and how to read them.
//!
//! kedge mutates a container only when it carries `io.kedge.managed-by=kedge`. The one exception is
//! the explicit `kedge recreate NAME` of any container, which goes through a separate entry point
//! (`executor::Executor::recreate_any`), never through a flag.

use std::collections::BTreeMap;

/// `io.kedge.managed-by=kedge`: kedge owns this container.
pub const MANAGED_BY: &str = "io.kedge.managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "kedge";
/// `<namespace>/<name>` of the spec the container realises.
pub const KEY: &str = "io.kedge.key";
/// The spec's `metadata.generation` the container was created from.
pub const GENERATION: &str = "io.kedge.generation";
/// A hash of the normalized spec the container was created from.
pub const SPEC_HASH: &str = "io.kedge.spec-hash";
/// `new` on a container created by a safe recreate. Labels cannot change after create, so this
/// stays on the container after the recreate finished; the container's name tells whether a
/// recreate is in progress (see [`recreate_new_name`]).
pub const RECREATE_ROLE: &str = "io.kedge.recreate-role";
/// The recreate's ID, also part of the temporary names (`-kedge-new-<id>`, `-kedge-old-<id>`).
pub const RECREATE_ID: &str = "io.kedge.recreate-id";
/// On the new container: the ID of the container it replaces.
pub const RECREATE_OLD_ID: &str = "io.kedge.recreate-old-id";
/// On the new container: whether the replaced container was running (`true`/`false`), so a
/// rollback restores its state and not more.
pub const RECREATE_OLD_RUNNING: &str = "io.kedge.recreate-old-running";
/// On a container a recreate made: the anonymous volumes it carried over from the container it
/// replaced, mounted by name so their data stays. A JSON object from the mount's target to
/// `declared` (the config declared an anonymous volume there) or `implicit` (the image's `VOLUME`
/// or the old container's `-v /path`). Read back, the mounts are what they stand for (see
/// [`carried_volumes`]), so the planner sees no drift and a later recreate carries them again.
pub const CARRIED_VOLUMES: &str = "io.kedge.carried-volumes";
/// The host whose agent made the container. An agent only ever considers containers of its own
/// host, so two agents on one engine (two kedge installations, or parallel tests) never touch each
/// other's containers.
pub const HOST: &str = "io.kedge.host";
/// The identity of the store whose spec the container realises. An agent removes a container whose
/// spec is gone only when the container came from its own store: started on a new or wrong store, an
/// agent prunes nothing it did not make.
pub const STORE: &str = "io.kedge.store";
/// `remove` or `orphan`: what the agent does with the container once its spec is deleted. Kept on
/// the container because the spec is gone by then.
pub const DELETION_POLICY: &str = "io.kedge.deletion-policy";
/// The names (comma-separated) of the container's environment variables whose values came from
/// secrets (`spec.secretEnv`): the values in its env are never rendered in drift, also after the
/// spec stops naming them.
pub const SECRET_ENV: &str = "io.kedge.secret-env";
/// Put by tests on everything they create, so they can clean up by label.
pub const TEST: &str = "io.kedge.test";

/// The role value of the container a recreate creates.
pub const ROLE_NEW: &str = "new";
/// The role of the replaced container. It cannot be labeled after create, so it is only ever
/// carried by the aside name; kept for symmetry in reports.
pub const ROLE_OLD: &str = "old";

/// The labels that make a container kedge's: managed-by, key, generation and spec hash.
pub fn ownership(key: &str, generation: i64, spec_hash: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGED_BY_VALUE.to_string()),
        (KEY.to_string(), key.to_string()),
        (GENERATION.to_string(), generation.to_string()),
        (SPEC_HASH.to_string(), spec_hash.to_string()),
    ])
}

/// True when the labels say kedge owns the container.
pub fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(MANAGED_BY).map(String::as_str) == Some(MANAGED_BY_VALUE)
}

/// The spec key, when the container is kedge's.
pub fn key(labels: &BTreeMap<String, String>) -> Option<&str> {
    is_managed(labels).then(|| labels.get(KEY).map(String::as_str)).flatten()
}

/// The generation label, parsed.
pub fn generation(labels: &BTreeMap<String, String>) -> Option<i64> {
    labels.get(GENERATION)?.parse().ok()
}

/// The spec hash label.
pub fn spec_hash(labels: &BTreeMap<String, String>) -> Option<&str> {
    labels.get(SPEC_HASH).map(String::as_str)
}

/// The Docker filter value selecting kedge's containers (`label=io.kedge.managed-by=kedge`).
pub fn managed_filter() -> String {
    format!("{MANAGED_BY}={MANAGED_BY_VALUE}")
}

/// The Docker filter value selecting the containers of one spec key.
pub fn key_filter(key: &str) -> String {
    format!("{KEY}={key}")
}

/// The temporary name of the container a recreate creates.
pub fn recreate_new_name(name: &str, recreate_id: &str) -> String {
    format!("{name}-kedge-new-{recreate_id}")
}

/// The name the replaced container is renamed aside to during a recreate.
pub fn recreate_old_name(name: &str, recreate_id: &str) -> String {
    format!("{name}-kedge-old-{recreate_id}")
}

/// The name the old container of a start-first recreate takes once the new one is proven: it is
/// stopped and removed in the background, never started again (executor/retire.rs).
pub fn recreate_retired_name(name: &str, recreate_id: &str) -> String {
    format!("{name}-kedge-retired-{recreate_id}")
}

/// What a container name says about a recreate in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecreateName<'a> {
    /// A plain name.
    Plain(&'a str),
    /// `<base>-kedge-new-<id>`.
    New { base: &'a str, recreate_id: &'a str },
    /// `<base>-kedge-old-<id>`.
    Old { base: &'a str, recreate_id: &'a str },
    /// `<base>-kedge-retired-<id>`.
    Retired { base: &'a str, recreate_id: &'a str },
}

/// The Docker label filter for containers made by the agent of `host`.
pub fn host_filter(host: &str) -> String {
    format!("{HOST}={host}")
}

/// Whether the container carries kedge's ownership label and was made by the agent of `host`.
pub fn is_managed_by_host(labels: &BTreeMap<String, String>, host: &str) -> bool {
    is_managed(labels) && labels.get(HOST).map(String::as_str) == Some(host)
}

/// Splits a container name into its base name and recreate marker, if any.
pub fn parse_recreate_name(name: &str) -> RecreateName<'_> {
    for marker in ["-kedge-new-", "-kedge-old-", "-kedge-retired-"] {
        if let Some(at) = name.rfind(marker) {
            let base = &name[..at];
            let recreate_id = &name[at + marker.len()..];
            if !base.is_empty() && !recreate_id.is_empty() && !recreate_id.contains('-') {
                return match marker {
                    "-kedge-new-" => RecreateName::New { base, recreate_id },
                    "-kedge-old-" => RecreateName::Old { base, recreate_id },
                    _ => RecreateName::Retired { base, recreate_id },
                };
            }
        }
    }
    RecreateName::Plain(name)
}

/// Why an anonymous volume was carried over by a recreate (see [`CARRIED_VOLUMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CarriedVolume {
    /// The config declared an anonymous volume at the target.
    Declared,
    /// The config declared nothing there: the image's `VOLUME` or the old `-v /path` did.
    Implicit,
}

/// The [`CARRIED_VOLUMES`] label's value, by target. A missing or unreadable label is empty.
pub fn carried_volumes(labels: &BTreeMap<String, String>) -> BTreeMap<String, CarriedVolume> {
    labels.get(CARRIED_VOLUMES).and_then(|value| serde_json::from_str(value).ok()).unwrap_or_default()
}

/// The [`CARRIED_VOLUMES`] label's value for `carried`.
pub fn carried_volumes_value(carried: &BTreeMap<String, CarriedVolume>) -> String {
    serde_json::to_string(carried).unwrap_or_default()
}

/// The names in a container's [`SECRET_ENV`] label.
pub fn secret_env_names(labels: &BTreeMap<String, String>) -> Vec<String> {
    labels.get(SECRET_ENV).map_or_else(Vec::new, |names| {
        names.split(',').filter(|name| !name.is_empty()).map(str::to_owned).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_needs_the_exact_value() {
        let mut labels = BTreeMap::new();
        assert!(!is_managed(&labels));
        labels.insert(MANAGED_BY.to_string(), "someone-else".to_string());
        assert!(!is_managed(&labels));
        let owned = ownership("ns/web", 3, "abc");
        assert!(is_managed(&owned));
        assert_eq!(key(&owned), Some("ns/web"));
        assert_eq!(generation(&owned), Some(3));
        assert_eq!(spec_hash(&owned), Some("abc"));
    }

    #[test]
    fn recreate_names_round_trip() {
        let check = |name: &str, expected: RecreateName<'_>| {
            assert_eq!(parse_recreate_name(name), expected, "{name}")
        };
        check(
            &recreate_new_name("web-1", "ab12cd34"),
            RecreateName::New { base: "web-1", recreate_id: "ab12cd34" },
        );
        check(
            &recreate_old_name("my-kedge-app", "ff00"),
            RecreateName::Old { base: "my-kedge-app", recreate_id: "ff00" },
        );
        check(
            &recreate_retired_name("web", "ab12cd34"),
            RecreateName::Retired { base: "web", recreate_id: "ab12cd34" },
        );
        check("web", RecreateName::Plain("web"));
        check("-kedge-new-x", RecreateName::Plain("-kedge-new-x"));
        check("web-kedge-new-", RecreateName::Plain("web-kedge-new-"));
    }

    #[test]
    fn carried_volumes_round_trip_and_tolerate_garbage() {
        let carried = BTreeMap::from([
            ("/data".to_string(), CarriedVolume::Declared),
            ("/var/lib/a,b".to_string(), CarriedVolume::Implicit),
        ]);
        let value = carried_volumes_value(&carried);
        assert_eq!(value, r#"{"/data":"declared","/var/lib/a,b":"implicit"}"#);
        let labels = BTreeMap::from([(CARRIED_VOLUMES.to_string(), value)]);
        assert_eq!(carried_volumes(&labels), carried);
        let garbage = BTreeMap::from([(CARRIED_VOLUMES.to_string(), "{not json".to_string())]);
        assert!(carried_volumes(&garbage).is_empty());
        assert!(carried_volumes(&BTreeMap::new()).is_empty());
    }
}
