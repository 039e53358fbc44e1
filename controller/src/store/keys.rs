//! The key layout of the store (DESIGN.md section 5), in one place.
//!
//! ```text
//! /kedge/v1/specs/<ns>/<name>     what the user applied (an envelope object; `metadata.generation`)
//! /kedge/v1/status/<ns>/<name>    what the agent observed (written only by agents; `observedGeneration`)
//! /kedge/v1/hosts/<host>          an agent's heartbeat, on a lease
//! /kedge/v1/events/<ns>/<id>      events, on a lease so that they expire
//! /kedge/v1/bindings/<ns>/<name>  which host runs an unplaced spec (written only by the scheduler)
//! /kedge/v1/placements/<host>/<ns>/<name>  the spec as that host runs it, with the spec key's revision
//!                                 (a projection of specs and bindings, written only by the leader)
//! /kedge/v1/placements-ready      the placements' layout version, written by the leader after its
//!                                 first complete projection: agents follow placements from then on
//! /kedge/v1/scheduler/leader      the scheduler's leader, on its lease (create-only)
//! /kedge/v1/sets/<ns>/<name>      a ContainerSet as the user applied it
//! /kedge/v1/set-status/<ns>/<name> its status and rollout state (written only by the scheduler's leader)
//! /kedge/v1/upgrades/campaigns/<id>  an agent upgrade campaign (created by the API, driven by the leader)
//! /kedge/v1/upgrades/hosts/<host>    the upgrade asked of one host's agent, and how it went
//! /kedge/v1/host-leases/<host>    exists while the host's agent is alive (on its lease)
//! /kedge/v1/locks/agents/<host>   the host lock: one agent per Docker host (on its lease)
//! /kedge/v1/identity              the store's identity, written once by the first agent
//! /kedge/v1/policies/<ns>         the namespace's host-escape policy level (`{"level": "privileged"}`)
//! /kedge/v1/tokens/<id>           an API token: role, namespaces, expiry and its secret's SHA-256
//!                                 (never the secret); on a lease when it expires
//! ```
//!
//! Every kind that implements [`Resource`] lives at `/kedge/v1/<K::STORE_SEGMENT>/<ns>/<name>` and its
//! status at `/kedge/v1/<K::STATUS_SEGMENT>/<ns>/<name>` ([`object_key`], [`object_status_key`]): the
//! Container's segments are `specs` and `status`, the ContainerSet's `sets` and `set-status`.
//!
//! Spec and status are separate keys so that an agent never rewrites what the user applied. Every
//! prefix ends with `/` so that listing `specs/a/` never matches namespace `ab`. No other module spells
//! a key: every key kedge stores is made here.

use kedge_crds::Resource;

/// The root of kedge's key space; the version segment lets a future layout live next to this one.
pub const ROOT: &str = "/kedge/v1/";
pub const SPECS: &str = "/kedge/v1/specs/";
pub const STATUS: &str = "/kedge/v1/status/";
pub const HOSTS: &str = "/kedge/v1/hosts/";
pub const EVENTS: &str = "/kedge/v1/events/";
/// `/kedge/v1/host-leases/<host>`: present while the host's agent is alive (on its lease).
pub const HOST_LEASES: &str = "/kedge/v1/host-leases/";
/// `/kedge/v1/bindings/<ns>/<name>`: the host the scheduler chose for a spec that names none.
pub const BINDINGS: &str = "/kedge/v1/bindings/";
/// `/kedge/v1/placements/<host>/<ns>/<name>`: the spec `<ns>/<name>` as `<host>` runs it, projected
/// by the scheduler's leader from specs and bindings (`controllers/projection.rs`). An agent watches
/// only its own host's prefix, so a write reaches one agent (and the leader), not every agent.
pub const PLACEMENTS: &str = "/kedge/v1/placements/";
/// The leader's marker that the placements are complete (its value names the layout version): an
/// agent follows `specs/` and `bindings/` until it exists, and its own placements from then on.
pub const PLACEMENTS_READY: &str = "/kedge/v1/placements-ready";
/// The scheduler's leader key: created only when absent, on the leader's lease. Its `mod_revision`
/// is the leader's term, and every scheduler write is fenced on it.
pub const SCHEDULER_LEADER: &str = "/kedge/v1/scheduler/leader";
/// `/kedge/v1/upgrades/campaigns/<id>`: an agent upgrade campaign; after its creation only the
/// scheduler's leader writes it (fenced on its term).
pub const UPGRADE_CAMPAIGNS: &str = "/kedge/v1/upgrades/campaigns/";
/// `/kedge/v1/upgrades/hosts/<host>`: the upgrade the leader asked of a host (fenced), which that
/// host's agents then advance by compare-and-swap (Upgrading, then the outcome).
pub const HOST_UPGRADES: &str = "/kedge/v1/upgrades/hosts/";

/// `/kedge/v1/sets/<ns>/<name>`: a ContainerSet. Not under `specs/`: agents list and decode every
/// key there as a Container, and a set is run through its children, never by an agent directly.
pub const SETS: &str = "/kedge/v1/sets/";
/// `/kedge/v1/set-status/<ns>/<name>`: a set's status and the state of its rollout.
pub const SET_STATUS: &str = "/kedge/v1/set-status/";

/// `/kedge/v1/locks/agents/<host>`: the host lock, on the holder's lease (see `agent/lock.rs`).
pub const AGENT_LOCKS: &str = "/kedge/v1/locks/agents/";
/// The store's identity: a random ID written once, create-only, by the first agent on the store.
pub const IDENTITY: &str = "/kedge/v1/identity";

/// `/kedge/v1/policies/<ns>`: the host-escape policy level stored for a namespace (`kedge policy
/// set`); a namespace without one gets the agent's `--policy-level`. Every agent follows these.
pub const POLICIES: &str = "/kedge/v1/policies/";

/// The key of the Secrets' fingerprints (api/fingerprints.rs): random bytes written once,
/// create-only, by the first API to show a secret. No route serves it (the API serves typed objects
/// of their own prefixes only, and the access table has no row for anything else).
pub const SECRET_FINGERPRINT_KEY: &str = "/kedge/v1/keys/secret-fingerprint";

/// `/kedge/v1/tokens/<id>`: an API token's record (`kedge_crds::token::StoredToken`), written and
/// deleted only by the API; on a lease of its TTL when it has one, so that it disappears by itself.
pub const TOKENS: &str = "/kedge/v1/tokens/";
/// `gitsource-requests/<ns>/<name>`: a sync asked for now (the webhook, `kedge reconcile gitsource`);
/// the scheduler's leader syncs the source when the key's revision moves.
pub const GITSOURCE_REQUESTS: &str = "/kedge/v1/gitsource-requests/";

/// Why a key segment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key segment {segment:?}: {reason}")]
pub struct InvalidSegment {
    pub segment: String,
    pub reason: &'static str,
}

/// Checks one path segment (a namespace, a name, a host): non-empty, no `/`, no control characters,
/// not `.` or `..`.
pub fn check_segment(segment: &str) -> Result<(), InvalidSegment> {
    let reason = if segment.is_empty() {
        "empty"
    } else if segment.contains('/') {
        "contains '/'"
    } else if segment.chars().any(char::is_control) {
        "contains a control character"
    } else if segment == "." || segment == ".." {
        "is '.' or '..'"
    } else {
        return Ok(());
    };
    Err(InvalidSegment { segment: segment.to_owned(), reason })
}

fn two(prefix: &str, a: &str, b: &str) -> Result<String, InvalidSegment> {
    check_segment(a)?;
    check_segment(b)?;
    Ok(format!("{prefix}{a}/{b}"))
}

pub fn spec_key(namespace: &str, name: &str) -> Result<String, InvalidSegment> {
    two(SPECS, namespace, name)
}

pub fn status_key(namespace: &str, name: &str) -> Result<String, InvalidSegment> {
    two(STATUS, namespace, name)
}

pub fn binding_key(namespace: &str, name: &str) -> Result<String, InvalidSegment> {
    two(BINDINGS, namespace, name)
}

/// The key of the placement of `namespace/name` on `host`.
pub fn placement_key(host: &str, namespace: &str, name: &str) -> Result<String, InvalidSegment> {
    check_segment(host)?;
    two(&format!("{PLACEMENTS}{host}/"), namespace, name)
}

/// The prefix of every placement on `host`: what that host's agent watches.
pub fn placements_prefix(host: &str) -> Result<String, InvalidSegment> {
    check_segment(host)?;
    Ok(format!("{PLACEMENTS}{host}/"))
}

/// Splits a placement key into (host, namespace, name).
pub fn parse_placement_key(key: &str) -> Option<(&str, &str, &str)> {
    let (host, rest) = key.strip_prefix(PLACEMENTS)?.split_once('/')?;
    check_segment(host).ok()?;
    let (namespace, name) = rest.split_once('/')?;
    check_segment(namespace).ok()?;
    check_segment(name).ok()?;
    Some((host, namespace, name))
}

pub fn gitsource_request_key(namespace: &str, name: &str) -> Result<String, InvalidSegment> {
    two(GITSOURCE_REQUESTS, namespace, name)
}

pub fn set_key(namespace: &str, name: &str) -> Result<String, InvalidSegment> {
    two(SETS, namespace, name)
}

pub fn set_status_key(namespace: &str, name: &str) -> Result<String, InvalidSegment> {
    two(SET_STATUS, namespace, name)
}

/// The prefix of every set in one namespace, or of all sets.
pub fn sets_prefix(namespace: Option<&str>) -> Result<String, InvalidSegment> {
    namespaced_prefix(SETS, namespace)
}

pub fn set_status_prefix(namespace: Option<&str>) -> Result<String, InvalidSegment> {
    namespaced_prefix(SET_STATUS, namespace)
}

/// Splits a set key into (namespace, name).
pub fn parse_set_key(key: &str) -> Option<(&str, &str)> {
    parse_two(SETS, key)
}

/// Splits a set status key into (namespace, name).
pub fn parse_set_status_key(key: &str) -> Option<(&str, &str)> {
    parse_two(SET_STATUS, key)
}

/// Splits a binding key into (namespace, name).
pub fn parse_binding_key(key: &str) -> Option<(&str, &str)> {
    parse_two(BINDINGS, key)
}

/// The key of an object of kind `K`: `/kedge/v1/<K::STORE_SEGMENT>/<ns>/<name>`.
pub fn object_key<K: Resource>(namespace: &str, name: &str) -> Result<String, InvalidSegment> {
    two(&kind_root(K::STORE_SEGMENT), namespace, name)
}

/// The key of the status of an object of kind `K`: `/kedge/v1/<K::STATUS_SEGMENT>/<ns>/<name>`.
pub fn object_status_key<K: Resource>(namespace: &str, name: &str) -> Result<String, InvalidSegment> {
    two(&kind_root(K::STATUS_SEGMENT), namespace, name)
}

/// The prefix of every object of kind `K` in one namespace, or in all.
pub fn objects_prefix<K: Resource>(namespace: Option<&str>) -> Result<String, InvalidSegment> {
    namespaced_prefix(&kind_root(K::STORE_SEGMENT), namespace)
}

/// The prefix of the statuses of kind `K` in one namespace, or in all.
pub fn object_statuses_prefix<K: Resource>(namespace: Option<&str>) -> Result<String, InvalidSegment> {
    namespaced_prefix(&kind_root(K::STATUS_SEGMENT), namespace)
}

/// Splits the key of an object of kind `K` into (namespace, name).
pub fn parse_object_key<K: Resource>(key: &str) -> Option<(&str, &str)> {
    parse_two(&kind_root(K::STORE_SEGMENT), key)
}

/// Splits the key of a status of kind `K` into (namespace, name).
pub fn parse_object_status_key<K: Resource>(key: &str) -> Option<(&str, &str)> {
    parse_two(&kind_root(K::STATUS_SEGMENT), key)
}

/// `/kedge/v1/<segment>/`.
fn kind_root(segment: &str) -> String {
    format!("{ROOT}{segment}/")
}

/// The key of `host`'s lock.
pub fn agent_lock_key(host: &str) -> Result<String, InvalidSegment> {
    check_segment(host)?;
    Ok(format!("{AGENT_LOCKS}{host}"))
}

/// The key that exists while `host`'s agent is alive: it is on the agent's lease.
pub fn host_lease_key(host: &str) -> Result<String, InvalidSegment> {
    check_segment(host)?;
    Ok(format!("{HOST_LEASES}{host}"))
}

pub fn host_key(host: &str) -> Result<String, InvalidSegment> {
    check_segment(host)?;
    Ok(format!("{HOSTS}{host}"))
}

pub fn upgrade_campaign_key(id: &str) -> Result<String, InvalidSegment> {
    check_segment(id)?;
    Ok(format!("{UPGRADE_CAMPAIGNS}{id}"))
}

/// The key of the API token `id` (the id is the token's public part, never its secret).
pub fn token_key(id: &str) -> Result<String, InvalidSegment> {
    check_segment(id)?;
    Ok(format!("{TOKENS}{id}"))
}

/// The id of a token key ([`token_key`]).
pub fn parse_token_key(key: &str) -> Option<&str> {
    parse_one(TOKENS, key)
}

pub fn host_upgrade_key(host: &str) -> Result<String, InvalidSegment> {
    check_segment(host)?;
    Ok(format!("{HOST_UPGRADES}{host}"))
}

/// The key of `namespace`'s stored policy level.
pub fn policy_key(namespace: &str) -> Result<String, InvalidSegment> {
    check_segment(namespace)?;
    Ok(format!("{POLICIES}{namespace}"))
}

/// The namespace of a [`policy_key`].
pub fn parse_policy_key(key: &str) -> Option<&str> {
    parse_one(POLICIES, key)
}

/// An event key; `id` should sort by time (e.g. a zero-padded timestamp followed by a random suffix).
pub fn event_key(namespace: &str, id: &str) -> Result<String, InvalidSegment> {
    two(EVENTS, namespace, id)
}

/// The prefix of every spec in one namespace, or of all specs when `namespace` is `None`.
pub fn specs_prefix(namespace: Option<&str>) -> Result<String, InvalidSegment> {
    namespaced_prefix(SPECS, namespace)
}

pub fn status_prefix(namespace: Option<&str>) -> Result<String, InvalidSegment> {
    namespaced_prefix(STATUS, namespace)
}

pub fn events_prefix(namespace: Option<&str>) -> Result<String, InvalidSegment> {
    namespaced_prefix(EVENTS, namespace)
}

fn namespaced_prefix(root: &str, namespace: Option<&str>) -> Result<String, InvalidSegment> {
    match namespace {
        None => Ok(root.to_owned()),
        Some(ns) => {
            check_segment(ns)?;
            Ok(format!("{root}{ns}/"))
        }
    }
}

/// Splits a spec key into (namespace, name); `None` if the key is not a well-formed spec key.
pub fn parse_spec_key(key: &str) -> Option<(&str, &str)> {
    parse_two(SPECS, key)
}

/// Splits a status key into (namespace, name).
pub fn parse_status_key(key: &str) -> Option<(&str, &str)> {
    parse_two(STATUS, key)
}

pub fn parse_host_key(key: &str) -> Option<&str> {
    parse_one(HOSTS, key)
}

/// The host of a liveness key ([`host_lease_key`]).
pub fn parse_host_lease_key(key: &str) -> Option<&str> {
    parse_one(HOST_LEASES, key)
}

/// The host of an upgrade request key ([`host_upgrade_key`]).
pub fn parse_host_upgrade_key(key: &str) -> Option<&str> {
    parse_one(HOST_UPGRADES, key)
}

/// The id of a campaign key ([`upgrade_campaign_key`]).
pub fn parse_upgrade_campaign_key(key: &str) -> Option<&str> {
    parse_one(UPGRADE_CAMPAIGNS, key)
}

/// The spec key of a work-queue key `namespace/name` (made from checked segments, so not checked again).
pub fn spec_key_of(work_key: &str) -> String {
    format!("{SPECS}{work_key}")
}

/// The binding key of a work-queue key `namespace/name` (made from checked segments).
pub fn binding_key_of(work_key: &str) -> String {
    format!("{BINDINGS}{work_key}")
}

fn parse_one<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    let segment = key.strip_prefix(prefix)?;
    check_segment(segment).ok()?;
    Some(segment)
}

fn parse_two<'k>(prefix: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
    let (ns, name) = key.strip_prefix(prefix)?.split_once('/')?;
    check_segment(ns).ok()?;
    check_segment(name).ok()?;
    Some((ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        let k = spec_key("default", "web").unwrap();
        assert_eq!(k, "/kedge/v1/specs/default/web");
        assert_eq!(parse_spec_key(&k), Some(("default", "web")));
        assert_eq!(status_key("default", "web").unwrap(), "/kedge/v1/status/default/web");
        assert_eq!(parse_status_key("/kedge/v1/status/a/b"), Some(("a", "b")));
        assert_eq!(host_key("h1").unwrap(), "/kedge/v1/hosts/h1");
        assert_eq!(parse_host_key("/kedge/v1/hosts/h1"), Some("h1"));
        assert_eq!(event_key("ns", "0001-x").unwrap(), "/kedge/v1/events/ns/0001-x");
        assert_eq!(specs_prefix(Some("a")).unwrap(), "/kedge/v1/specs/a/");
        assert_eq!(specs_prefix(None).unwrap(), SPECS);
        assert_eq!(binding_key("ns", "web").unwrap(), "/kedge/v1/bindings/ns/web");
        assert_eq!(parse_binding_key("/kedge/v1/bindings/ns/web"), Some(("ns", "web")));
        assert_eq!(set_key("ns", "web").unwrap(), "/kedge/v1/sets/ns/web");
        assert_eq!(parse_set_key("/kedge/v1/sets/ns/web"), Some(("ns", "web")));
        assert_eq!(set_status_key("ns", "web").unwrap(), "/kedge/v1/set-status/ns/web");
        assert_eq!(parse_set_status_key("/kedge/v1/set-status/ns/web"), Some(("ns", "web")));
        assert!(!set_key("ns", "web").unwrap().starts_with(SPECS), "agents never see sets as specs");
        assert_eq!(agent_lock_key("h1").unwrap(), "/kedge/v1/locks/agents/h1");
        assert_eq!(parse_host_lease_key(&host_lease_key("h1").unwrap()), Some("h1"));
        assert_eq!(parse_host_upgrade_key(&host_upgrade_key("h1").unwrap()), Some("h1"));
        assert_eq!(parse_upgrade_campaign_key(&upgrade_campaign_key("u-1").unwrap()), Some("u-1"));
        assert_eq!(parse_host_upgrade_key("/kedge/v1/upgrades/hosts/a/b"), None);
        assert_eq!(spec_key_of("ns/web"), spec_key("ns", "web").unwrap());
        assert_eq!(binding_key_of("ns/web"), binding_key("ns", "web").unwrap());
        assert_eq!(policy_key("ops").unwrap(), "/kedge/v1/policies/ops");
        assert_eq!(parse_policy_key("/kedge/v1/policies/ops"), Some("ops"));
        assert_eq!(parse_policy_key("/kedge/v1/policies/a/b"), None);
        assert!(policy_key("a/b").is_err());
        let placed = placement_key("h1", "ns", "web").unwrap();
        assert_eq!(placed, "/kedge/v1/placements/h1/ns/web");
        assert_eq!(parse_placement_key(&placed), Some(("h1", "ns", "web")));
        assert!(placed.starts_with(&placements_prefix("h1").unwrap()));
        assert!(!placed.starts_with(&placements_prefix("h").unwrap()), "h1's placements are not h's");
        assert_eq!(parse_placement_key("/kedge/v1/placements/h1/ns"), None);
        assert_eq!(parse_placement_key("/kedge/v1/placements/h1/ns/a/b"), None);
        assert!(!PLACEMENTS_READY.starts_with(PLACEMENTS), "the marker is no placement");
    }

    #[test]
    fn every_kind_lives_where_its_segments_say() {
        use kedge_crds::{Container, ContainerSet};
        assert_eq!(object_key::<Container>("ns", "web"), spec_key("ns", "web"));
        assert_eq!(object_status_key::<Container>("ns", "web"), status_key("ns", "web"));
        assert_eq!(objects_prefix::<Container>(Some("ns")), specs_prefix(Some("ns")));
        assert_eq!(objects_prefix::<Container>(None).unwrap(), SPECS);
        assert_eq!(object_statuses_prefix::<Container>(None).unwrap(), STATUS);
        assert_eq!(object_key::<ContainerSet>("ns", "web"), set_key("ns", "web"));
        assert_eq!(object_status_key::<ContainerSet>("ns", "web"), set_status_key("ns", "web"));
        assert_eq!(objects_prefix::<ContainerSet>(None).unwrap(), SETS);
        assert_eq!(object_statuses_prefix::<ContainerSet>(None).unwrap(), SET_STATUS);
        assert_eq!(parse_object_key::<ContainerSet>("/kedge/v1/sets/ns/web"), Some(("ns", "web")));
        assert_eq!(parse_object_key::<Container>("/kedge/v1/sets/ns/web"), None);
        assert_eq!(parse_object_status_key::<Container>("/kedge/v1/status/a/b"), Some(("a", "b")));
        assert!(object_key::<Container>("ns", "a/b").is_err());
    }

    #[test]
    fn bad_segments_are_refused() {
        for bad in ["", "a/b", "..", ".", "x\ny"] {
            assert!(spec_key("ns", bad).is_err(), "{bad:?}");
            assert!(spec_key(bad, "n").is_err(), "{bad:?}");
        }
        assert_eq!(parse_spec_key("/kedge/v1/specs/a/b/c"), None);
        assert_eq!(parse_spec_key("/kedge/v1/status/a/b"), None);
        assert_eq!(parse_spec_key("/kedge/v1/specs/a"), None);
    }
}
