//! The agent upgrade campaign (docs/upgrades.md): the records it keeps in the store and the
//! decisions the scheduler's leader takes to drive it, host by host.
//!
//! - A [`Campaign`] (`/kedge/v1/upgrades/campaigns/<id>`) is created by the API
//!   (`POST /api/v1/upgrades`) with the ordered list of hosts it selected; from then on only the
//!   scheduler's leader writes it, fenced on its term, so a new leader resumes it where it stood.
//! - A [`HostUpgrade`] (`/kedge/v1/upgrades/hosts/<host>`) is the request to one host. The leader
//!   writes it `Requested` (fenced); that host's agent moves it to `Upgrading` and then to its
//!   outcome by compare-and-swap (`crate::agent::upgrade`).
//! - [`advance`] is the leader's decision for one pass: pure, the unit tests' surface;
//!   [`crate::controllers::upgrade`] reads the leader's caches, calls it and writes what it decided.
//! - [`helper`]: the short-lived container that replaces an agent's container (`kedge upgrade-helper`).
//!
//! One host at a time: the next host is asked only once the previous one reported success. A host
//! that rolled back, failed, was NotReady or did not report in time stops the campaign; the hosts
//! after it are left as they are and reported `Skipped`.
//!
//! A campaign is cancelled by setting its `cancelRequestedAt` (the API, `POST .../cancel`, by
//! compare-and-swap, so it never overwrites the leader's pass nor is overwritten by it): the leader
//! asks no further host, lets the host in flight finish or roll back as usual, then ends the
//! campaign `Cancelled` with the hosts never asked `Skipped`.
//!
//! The records' types are `kedge_crds::campaign`'s (one definition shared with the CLI).

pub mod helper;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::hosts::HostRecord;
use crate::store::{keys, SharedStore, StoreError};

/// How long past a host's own timeout the leader waits for its report: the old agent's stop grace
/// period, the image pull, and the restored agent's report after a rollback.
pub const REPORT_MARGIN: Duration = Duration::from_secs(60);
/// The per-host timeout when the request names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest per-host timeout a campaign may ask for (a day). The API refuses more; a record read from
/// the store with more (written by hand, or before the bound) is treated as this, so that no deadline
/// arithmetic can overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A campaign's per-host timeout as the leader, the agent and the helper use it: at least a second, at
/// most [`MAX_TIMEOUT`], whatever the record says.
pub fn bounded_timeout(timeout_seconds: u64) -> Duration {
    Duration::from_secs(timeout_seconds.clamp(1, MAX_TIMEOUT.as_secs()))
}

pub use kedge_crds::campaign::{Campaign, CampaignHost, CampaignState, HostUpgrade, HostUpgradeState};

/// What the leader knows of one host for a pass.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    pub ready: bool,
    pub record: Option<HostRecord>,
    /// The host's request key and its `mod_revision`.
    pub upgrade: Option<(HostUpgrade, i64)>,
}

/// A write to a host's request key that a pass decided.
#[derive(Debug, Clone, PartialEq)]
pub enum HostWrite {
    /// Ask the host to upgrade (overwrites the result of an earlier campaign).
    Request { host: String, upgrade: HostUpgrade },
    /// The host did not report in time: its request is closed as Failed (compare-and-swap).
    Close { host: String, upgrade: HostUpgrade, mod_revision: i64 },
}

/// The repository of an image reference: `127.0.0.1:5000/kedge:1` -> `127.0.0.1:5000/kedge`.
pub fn repository_of(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// Whether an agent running `current` may be moved to `target`: only within the repository it runs
/// already, or to one of `allowed` (`kedge agent --upgrade-repository`, the fleet's list). The API
/// checks it when a campaign is created and every agent again before it acts on a request, so a
/// request written straight to the store cannot move an agent onto somebody else's image either.
/// The error is the sentence a user reads.
pub fn check_repository(current: &str, target: &str, allowed: &[String]) -> Result<(), String> {
    let (from, to) = (repository_of(current), repository_of(target));
    if from == to || allowed.iter().any(|repository| repository_of(repository) == to) {
        return Ok(());
    }
    let allowed = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
    Err(format!(
        "repository {to} is not allowed for agent upgrades: the agent runs {from}, and the other allowed \
         repositories are {allowed} (kedge agent --upgrade-repository)"
    ))
}

/// Decides one pass of a running campaign: updates `campaign` in place and returns the writes to
/// host request keys. The caller writes the campaign when it changed.
pub fn advance(
    campaign: &mut Campaign,
    hosts: &BTreeMap<String, HostView>,
    now: DateTime<Utc>,
) -> Vec<HostWrite> {
    if campaign.state != CampaignState::Running {
        return Vec::new();
    }
    let empty = HostView::default();
    if let Some(index) = campaign.hosts.iter().position(|h| h.state == HostUpgradeState::Upgrading) {
        let host = &campaign.hosts[index];
        let view = hosts.get(&host.name).unwrap_or(&empty);
        let upgrade = view.upgrade.as_ref().filter(|(u, _)| u.campaign == campaign.id);
        let reports_target = view.record.as_ref().is_some_and(|record| {
            record.version == campaign.version
                || record.container.as_ref().is_some_and(|c| c.image == host.image)
        });
        let started = host.started_at.as_deref().and_then(parse_time).unwrap_or(now);
        let wait = chrono::Duration::from_std(bounded_timeout(campaign.timeout_seconds) + REPORT_MARGIN)
            .unwrap_or_default();
        let deadline = started.checked_add_signed(wait).unwrap_or(started);
        let mut writes = Vec::new();
        let outcome = match upgrade.map(|(u, _)| (u.state, u.message.clone())) {
            Some((HostUpgradeState::Succeeded, message)) if reports_target => {
                Some((HostUpgradeState::Succeeded, message))
            }
            Some((state @ (HostUpgradeState::RolledBack | HostUpgradeState::Failed), message)) => {
                Some((state, message))
            }
            _ if now > deadline => {
                let message = format!(
                    "no report within {}s (the new agent must report version {})",
                    (deadline - started).num_seconds(),
                    campaign.version
                );
                if let Some((upgrade, mod_revision)) = upgrade.filter(|(u, _)| !u.state.is_final()) {
                    let closed = HostUpgrade {
                        state: HostUpgradeState::Failed,
                        message: message.clone(),
                        finished_at: Some(format_time(now)),
                        ..upgrade.clone()
                    };
                    writes.push(HostWrite::Close {
                        host: host.name.clone(),
                        upgrade: closed,
                        mod_revision: *mod_revision,
                    });
                }
                Some((HostUpgradeState::Failed, message))
            }
            _ => None,
        };
        if let Some((state, message)) = outcome {
            let host = &mut campaign.hosts[index];
            host.state = state;
            host.message = message;
            host.finished_at = Some(format_time(now));
            host.duration_seconds = Some((now - started).num_milliseconds() as f64 / 1000.0);
            if state != HostUpgradeState::Succeeded {
                let name = host.name.clone();
                stop(campaign, &name, now);
            }
            if campaign.cancel_requested_at.is_some() {
                cancel(campaign, now);
            }
        }
        return writes;
    }
    if campaign.cancel_requested_at.is_some() {
        cancel(campaign, now);
        return Vec::new();
    }
    if let Some(index) = campaign.hosts.iter().position(|h| h.state == HostUpgradeState::Pending) {
        let name = campaign.hosts[index].name.clone();
        let view = hosts.get(&name).unwrap_or(&empty);
        if !view.ready {
            let host = &mut campaign.hosts[index];
            host.state = HostUpgradeState::Failed;
            host.message = "host is NotReady: its agent cannot be asked".to_owned();
            host.finished_at = Some(format_time(now));
            stop(campaign, &name, now);
            return Vec::new();
        }
        let host = &mut campaign.hosts[index];
        host.state = HostUpgradeState::Upgrading;
        // A request of this campaign already written (the previous leader stopped between its two
        // writes) is not written again: the agent may already be acting on it.
        if let Some((existing, _)) = view.upgrade.as_ref().filter(|(u, _)| u.campaign == campaign.id) {
            host.started_at = Some(existing.requested_at.clone());
            return Vec::new();
        }
        host.started_at = Some(format_time(now));
        let upgrade = HostUpgrade {
            campaign: campaign.id.clone(),
            version: campaign.version.clone(),
            image: host.image.clone(),
            timeout_seconds: campaign.timeout_seconds,
            state: HostUpgradeState::Requested,
            message: String::new(),
            requested_at: format_time(now),
            finished_at: None,
            helper: None,
            old_container_id: None,
            new_container_id: None,
            duration_seconds: None,
        };
        return vec![HostWrite::Request { host: name, upgrade }];
    }
    campaign.state = CampaignState::Succeeded;
    let upgraded = campaign.hosts.iter().filter(|h| h.state == HostUpgradeState::Succeeded).count();
    campaign.message =
        format!("{upgraded} of {} hosts upgraded to {}", campaign.hosts.len(), campaign.version);
    campaign.finished_at = Some(format_time(now));
    Vec::new()
}

/// Ends the campaign after `failed_host` failed: the hosts not asked yet are left as they are.
fn stop(campaign: &mut Campaign, failed_host: &str, now: DateTime<Utc>) {
    for host in &mut campaign.hosts {
        if host.state == HostUpgradeState::Pending {
            host.state = HostUpgradeState::Skipped;
            host.message = format!("not upgraded: the campaign stopped after {failed_host} failed");
        }
    }
    let reason = campaign.hosts.iter().find(|h| h.name == failed_host).map(|h| h.message.clone());
    campaign.state = CampaignState::Failed;
    campaign.message = format!("host {failed_host}: {}", reason.unwrap_or_default());
    campaign.finished_at = Some(format_time(now));
}

/// Ends a campaign whose cancel was requested, once no host is in flight: the hosts never asked
/// are skipped. A failure of the last host in flight stays in the message.
fn cancel(campaign: &mut Campaign, now: DateTime<Utc>) {
    for host in &mut campaign.hosts {
        if host.state == HostUpgradeState::Pending {
            host.state = HostUpgradeState::Skipped;
            host.message = "not upgraded: the campaign was cancelled".to_owned();
        }
    }
    let upgraded = campaign.hosts.iter().filter(|h| h.state == HostUpgradeState::Succeeded).count();
    let mut message =
        format!("cancelled: {upgraded} of {} hosts upgraded to {}", campaign.hosts.len(), campaign.version);
    if campaign.state == CampaignState::Failed {
        message = format!("{message}; {}", campaign.message);
    }
    campaign.state = CampaignState::Cancelled;
    campaign.message = message;
    campaign.finished_at = Some(format_time(now));
}

/// Every host's record, readiness and request key, read from the store (the API's view; the
/// leader builds the same from its caches).
pub async fn host_views(store: &SharedStore) -> Result<BTreeMap<String, HostView>, StoreError> {
    let hosts = store.list(keys::HOSTS).await?;
    let alive = store.list(keys::HOST_LEASES).await?;
    let upgrades = store.list(keys::HOST_UPGRADES).await?;
    let records = hosts.kvs.iter().filter_map(|kv| {
        let name = keys::parse_host_key(&kv.key)?;
        Some((name.to_owned(), serde_json::from_slice(&kv.value).ok()))
    });
    let alive = alive.kvs.iter().filter_map(|kv| keys::parse_host_lease_key(&kv.key).map(str::to_owned));
    let upgrades = upgrades.kvs.iter().filter_map(|kv| {
        let name = keys::parse_host_upgrade_key(&kv.key)?;
        let upgrade = serde_json::from_slice::<HostUpgrade>(&kv.value).ok()?;
        Some((name.to_owned(), upgrade, kv.mod_revision))
    });
    Ok(build_host_views(records, alive, upgrades))
}

/// Every host's view from its record (`None`: unreadable), the hosts whose liveness key exists, and
/// the request keys with their `mod_revision`.
pub fn build_host_views(
    records: impl IntoIterator<Item = (String, Option<HostRecord>)>,
    alive: impl IntoIterator<Item = String>,
    upgrades: impl IntoIterator<Item = (String, HostUpgrade, i64)>,
) -> BTreeMap<String, HostView> {
    let mut views: BTreeMap<String, HostView> = BTreeMap::new();
    for (name, record) in records {
        views.entry(name).or_default().record = record;
    }
    for name in alive {
        views.entry(name).or_default().ready = true;
    }
    for (name, upgrade, mod_revision) in upgrades {
        views.entry(name).or_default().upgrade = Some((upgrade, mod_revision));
    }
    views
}

/// When the leader stops waiting for the report of the host a running campaign is upgrading: past
/// it, [`advance`] fails the host.
pub fn report_deadline(campaign: &Campaign) -> Option<DateTime<Utc>> {
    if campaign.state != CampaignState::Running {
        return None;
    }
    let host = campaign.hosts.iter().find(|h| h.state == HostUpgradeState::Upgrading)?;
    let started = parse_time(host.started_at.as_deref()?)?;
    let wait = chrono::Duration::from_std(bounded_timeout(campaign.timeout_seconds) + REPORT_MARGIN).ok()?;
    started.checked_add_signed(wait)
}

/// A new campaign's ID: sortable by creation time, unique enough for a human to type.
pub fn new_campaign_id(now: DateTime<Utc>) -> String {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    format!("{}-{suffix}", now.format("%Y%m%d-%H%M%S"))
}

pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::AgentContainer;

    #[test]
    fn an_agent_moves_only_within_its_repository_or_to_an_allowed_one() {
        let allowed = vec!["registry.example:5000/kedge".to_owned()];
        let cases: &[(&str, &str, &[String], bool)] = &[
            ("ghcr.io/kedge/kedge:1.0", "ghcr.io/kedge/kedge:1.1", &[], true),
            ("ghcr.io/kedge/kedge:1.0", "ghcr.io/kedge/kedge@sha256:00", &[], true),
            ("127.0.0.1:5000/kedge:v1", "127.0.0.1:5000/kedge:v2", &[], true),
            ("ghcr.io/kedge/kedge:1.0", "evil.example/kedge:1.1", &[], false),
            // A look-alike: the same last segment, another registry.
            ("ghcr.io/kedge/kedge:1.0", "docker.io/kedge/kedge:1.1", &[], false),
            ("ghcr.io/kedge/kedge:1.0", "registry.example:5000/kedge:2", &allowed, true),
            ("ghcr.io/kedge/kedge:1.0", "registry.example:5000/kedge-evil:2", &allowed, false),
            ("ghcr.io/kedge/kedge:1.0", "registry.example:5000/kedge/x:2", &allowed, false),
        ];
        for (current, target, allowed, expected) in cases {
            let outcome = check_repository(current, target, allowed);
            assert_eq!(outcome.is_ok(), *expected, "{current} -> {target} with {allowed:?}: {outcome:?}");
            if let Err(message) = outcome {
                assert!(message.contains(repository_of(target)) && message.contains("--upgrade-repository"));
            }
        }
    }

    fn campaign(hosts: &[&str]) -> Campaign {
        Campaign {
            id: "c1".into(),
            version: "v2".into(),
            selector: String::new(),
            timeout_seconds: 60,
            state: CampaignState::Running,
            message: String::new(),
            created_at: "2026-11-22T00:00:00Z".into(),
            finished_at: None,
            cancel_requested_at: None,
            hosts: hosts
                .iter()
                .map(|name| CampaignHost {
                    name: name.to_string(),
                    image: "kedge:v2".into(),
                    state: HostUpgradeState::Pending,
                    message: String::new(),
                    started_at: None,
                    finished_at: None,
                    duration_seconds: None,
                })
                .collect(),
        }
    }

    fn ready(version: &str) -> HostView {
        HostView {
            ready: true,
            record: Some(HostRecord {
                name: "h".into(),
                labels: BTreeMap::new(),
                version: version.into(),
                docker_version: String::new(),
                cpus: 1,
                memory_bytes: 1,
                started_at: String::new(),
                last_heartbeat: String::new(),
                container: Some(AgentContainer {
                    id: "x".into(),
                    name: "kedge".into(),
                    image: format!("kedge:{version}"),
                    image_id: "sha256:x".into(),
                }),
            }),
            upgrade: None,
        }
    }

    fn reported(view: &mut HostView, state: HostUpgradeState, message: &str) {
        view.upgrade = Some((
            HostUpgrade {
                campaign: "c1".into(),
                version: "v2".into(),
                image: "kedge:v2".into(),
                timeout_seconds: 60,
                state,
                message: message.into(),
                requested_at: "2026-11-22T00:00:00Z".into(),
                finished_at: None,
                helper: None,
                old_container_id: None,
                new_container_id: None,
                duration_seconds: None,
            },
            7,
        ));
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        parse_time("2026-11-22T00:00:00Z").unwrap() + chrono::Duration::seconds(seconds)
    }

    fn states(campaign: &Campaign) -> Vec<HostUpgradeState> {
        campaign.hosts.iter().map(|h| h.state).collect()
    }

    use HostUpgradeState::*;

    #[test]
    fn an_absurd_stored_timeout_is_bounded_rather_than_overflowing() {
        // A record with u64::MAX seconds (written by hand, or before the API bounded it): the leader's
        // deadline arithmetic does not panic, and the host still times out, after MAX_TIMEOUT.
        let mut c = campaign(&["a"]);
        c.timeout_seconds = u64::MAX;
        let views = BTreeMap::from([("a".to_string(), ready("v1"))]);
        advance(&mut c, &views, at(0));
        assert_eq!(states(&c), vec![Upgrading]);
        assert!(advance(&mut c, &views, at(3600)).is_empty());
        let past = (MAX_TIMEOUT + REPORT_MARGIN).as_secs() as i64 + 1;
        advance(&mut c, &views, at(past));
        assert_eq!(states(&c), vec![Failed]);
        assert_eq!(bounded_timeout(u64::MAX), MAX_TIMEOUT);
        assert_eq!(bounded_timeout(0), Duration::from_secs(1));
    }

    #[test]
    fn hosts_are_upgraded_one_at_a_time_until_all_succeeded() {
        let mut c = campaign(&["a", "b"]);
        let mut views = BTreeMap::from([("a".to_string(), ready("v1")), ("b".to_string(), ready("v1"))]);
        let writes = advance(&mut c, &views, at(0));
        assert!(matches!(&writes[..], [HostWrite::Request { host, .. }] if host == "a"));
        assert_eq!(states(&c), vec![Upgrading, Pending]);
        // Asked, nothing reported yet: nothing changes.
        reported(views.get_mut("a").unwrap(), Upgrading, "");
        assert!(advance(&mut c, &views, at(5)).is_empty());
        assert_eq!(states(&c), vec![Upgrading, Pending]);
        // The new agent says Succeeded but the host still reports v1: not yet.
        reported(views.get_mut("a").unwrap(), Succeeded, "");
        advance(&mut c, &views, at(6));
        assert_eq!(states(&c), vec![Upgrading, Pending]);
        let mut upgraded = ready("v2");
        reported(&mut upgraded, Succeeded, "done");
        views.insert("a".into(), upgraded);
        advance(&mut c, &views, at(8));
        assert_eq!(states(&c), vec![Succeeded, Pending]);
        assert_eq!(c.hosts[0].duration_seconds, Some(8.0));
        let writes = advance(&mut c, &views, at(9));
        assert!(matches!(&writes[..], [HostWrite::Request { host, .. }] if host == "b"));
        let mut upgraded = ready("v2");
        reported(&mut upgraded, Succeeded, "done");
        views.insert("b".into(), upgraded);
        advance(&mut c, &views, at(12));
        advance(&mut c, &views, at(13));
        assert_eq!(c.state, CampaignState::Succeeded);
        assert_eq!(c.message, "2 of 2 hosts upgraded to v2");
    }

    #[test]
    fn a_rollback_stops_the_campaign_and_skips_the_rest() {
        let mut c = campaign(&["a", "b", "c"]);
        let mut views: BTreeMap<String, HostView> =
            ["a", "b", "c"].iter().map(|h| (h.to_string(), ready("v1"))).collect();
        advance(&mut c, &views, at(0));
        reported(views.get_mut("a").unwrap(), RolledBack, "new agent exited with code 2");
        assert!(advance(&mut c, &views, at(4)).is_empty());
        assert_eq!(states(&c), vec![RolledBack, Skipped, Skipped]);
        assert_eq!(c.state, CampaignState::Failed);
        assert_eq!(c.message, "host a: new agent exited with code 2");
        // A finished campaign is left alone.
        assert!(advance(&mut c, &views, at(5)).is_empty());
    }

    #[test]
    fn no_report_in_time_fails_the_host_and_closes_its_request() {
        let mut c = campaign(&["a", "b"]);
        let mut views: BTreeMap<String, HostView> =
            ["a", "b"].iter().map(|h| (h.to_string(), ready("v1"))).collect();
        advance(&mut c, &views, at(0));
        reported(views.get_mut("a").unwrap(), Upgrading, "");
        assert!(advance(&mut c, &views, at(119)).is_empty());
        let writes = advance(&mut c, &views, at(121));
        assert!(
            matches!(&writes[..], [HostWrite::Close { host, mod_revision: 7, upgrade }] if host == "a" && upgrade.state == Failed)
        );
        assert_eq!(states(&c), vec![Failed, Skipped]);
    }

    #[test]
    fn a_not_ready_host_fails_at_once_and_an_existing_request_is_not_repeated() {
        let mut c = campaign(&["a"]);
        let views = BTreeMap::from([("a".to_string(), HostView { ready: false, ..ready("v1") })]);
        advance(&mut c, &views, at(0));
        assert_eq!(states(&c), vec![Failed]);
        assert_eq!(c.state, CampaignState::Failed);

        let mut c = campaign(&["a"]);
        let mut view = ready("v1");
        reported(&mut view, Upgrading, "");
        let views = BTreeMap::from([("a".to_string(), view)]);
        assert!(advance(&mut c, &views, at(3)).is_empty());
        assert_eq!(states(&c), vec![Upgrading]);
        assert_eq!(c.hosts[0].started_at.as_deref(), Some("2026-11-22T00:00:00Z"));
    }

    #[test]
    fn a_cancel_lets_the_host_in_flight_finish_and_asks_no_further_host() {
        let mut c = campaign(&["a", "b", "c"]);
        let mut views: BTreeMap<String, HostView> =
            ["a", "b", "c"].iter().map(|h| (h.to_string(), ready("v1"))).collect();
        advance(&mut c, &views, at(0));
        c.cancel_requested_at = Some(format_time(at(1)));
        // Host a is in flight: the campaign waits for it.
        reported(views.get_mut("a").unwrap(), Upgrading, "");
        assert!(advance(&mut c, &views, at(2)).is_empty());
        assert_eq!((states(&c), c.state), (vec![Upgrading, Pending, Pending], CampaignState::Running));
        let mut upgraded = ready("v2");
        reported(&mut upgraded, Succeeded, "done");
        views.insert("a".into(), upgraded);
        assert!(advance(&mut c, &views, at(3)).is_empty(), "no request to b");
        assert_eq!(states(&c), vec![Succeeded, Skipped, Skipped]);
        assert_eq!(c.state, CampaignState::Cancelled);
        assert_eq!(c.message, "cancelled: 1 of 3 hosts upgraded to v2");
        assert_eq!(c.hosts[1].message, "not upgraded: the campaign was cancelled");
        assert!(advance(&mut c, &views, at(4)).is_empty());
    }

    #[test]
    fn a_cancel_before_any_host_and_one_whose_host_rolls_back_both_end_cancelled() {
        let views: BTreeMap<String, HostView> =
            ["a", "b"].iter().map(|h| (h.to_string(), ready("v1"))).collect();
        let mut c = campaign(&["a", "b"]);
        c.cancel_requested_at = Some(format_time(at(0)));
        assert!(advance(&mut c, &views, at(1)).is_empty());
        assert_eq!((states(&c), c.state), (vec![Skipped, Skipped], CampaignState::Cancelled));

        let mut views = views;
        let mut c = campaign(&["a", "b"]);
        advance(&mut c, &views, at(0));
        c.cancel_requested_at = Some(format_time(at(1)));
        reported(views.get_mut("a").unwrap(), RolledBack, "new agent exited with code 2");
        advance(&mut c, &views, at(2));
        assert_eq!((states(&c), c.state), (vec![RolledBack, Skipped], CampaignState::Cancelled));
        assert_eq!(c.message, "cancelled: 0 of 2 hosts upgraded to v2; host a: new agent exited with code 2");
    }

    #[test]
    fn repositories_of_references() {
        assert_eq!(repository_of("kedge:v1"), "kedge");
        assert_eq!(repository_of("127.0.0.1:5000/team/kedge:v1"), "127.0.0.1:5000/team/kedge");
        assert_eq!(repository_of("127.0.0.1:5000/kedge"), "127.0.0.1:5000/kedge");
        assert_eq!(repository_of("kedge@sha256:abc"), "kedge");
    }
}
