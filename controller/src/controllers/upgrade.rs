//! The upgrade campaign's driver: each pass of the scheduler's leader advances the running campaign
//! ([`advance`], pure) from the leader's caches and writes what it decided, fenced on the leader's
//! term. The records and the rules are [`crate::upgrade`]'s.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::store::{keys, Fence, PutCondition, SharedStore, StoreError};
use crate::upgrade::{
    advance, build_host_views, format_time, report_deadline, Campaign, CampaignState, HostUpgradeState,
    HostView, HostWrite,
};

use super::caches::{LeaderCaches, Written};

/// One pass of the leader over every running campaign, its writes fenced on `fence`; answers when
/// the host in flight's report is due. A refused fence comes back as [`StoreError::Conflict`] on the
/// leader key: the caller steps down. Does nothing while a cache it reads is not in sync.
pub(crate) async fn drive(
    store: &SharedStore,
    fence: Fence<'_>,
    caches: &LeaderCaches,
    written: &mut Written,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    if !caches.campaigns.in_sync() {
        return Ok(None);
    }
    let mut running: Vec<(Campaign, i64, i64)> = caches.campaigns.with(|all| {
        all.values()
            .filter(|stored| stored.object.0.state == CampaignState::Running)
            .map(|stored| (stored.object.0.clone(), stored.mod_revision, stored.object.1))
            .collect()
    });
    if running.is_empty() {
        return Ok(None);
    }
    let Some(views) = host_views(caches) else { return Ok(None) };
    // One campaign at a time, the first created. The API refuses a second one, but two requests at
    // the same moment can both pass its check: the later ones fail here before touching any host.
    running.sort_by_key(|(_, _, created)| *created);
    for (mut later, mod_revision, _) in running.split_off(1) {
        let first = &running[0].0.id;
        for host in &mut later.hosts {
            if host.state == HostUpgradeState::Pending {
                host.state = HostUpgradeState::Skipped;
                host.message = format!("not upgraded: campaign {first} was already running");
            }
        }
        later.state = CampaignState::Failed;
        later.message = format!("campaign {first} was already running; start this one again when it ends");
        later.finished_at = Some(format_time(Utc::now()));
        tracing::warn!(campaign = %later.id, %first, "agent upgrade: a second campaign refused");
        let key = keys::upgrade_campaign_key(&later.id).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let revision =
            store.put_fenced(fence, &key, to_json(&later)?, PutCondition::ModRevision(mod_revision)).await?;
        written.campaigns = written.campaigns.max(revision);
    }
    let mut next_deadline = None;
    for (mut campaign, mod_revision, _) in running {
        let before = campaign.clone();
        let writes = advance(&mut campaign, &views, Utc::now());
        for write in writes {
            let (host, upgrade, condition) = match write {
                HostWrite::Request { host, upgrade } => (host, upgrade, PutCondition::Always),
                HostWrite::Close { host, upgrade, mod_revision } => {
                    (host, upgrade, PutCondition::ModRevision(mod_revision))
                }
            };
            tracing::info!(campaign = %campaign.id, %host, state = ?upgrade.state, "agent upgrade: host request");
            let key = keys::host_upgrade_key(&host).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let revision = store.put_fenced(fence, &key, to_json(&upgrade)?, condition).await?;
            written.host_upgrades = written.host_upgrades.max(revision);
        }
        if campaign != before {
            tracing::info!(campaign = %campaign.id, state = ?campaign.state, "agent upgrade campaign advanced");
            let key =
                keys::upgrade_campaign_key(&campaign.id).map_err(|e| StoreError::Invalid(e.to_string()))?;
            let revision = store
                .put_fenced(fence, &key, to_json(&campaign)?, PutCondition::ModRevision(mod_revision))
                .await?;
            written.campaigns = written.campaigns.max(revision);
        }
        // Just past the deadline: `advance` fails a host only once the deadline has passed.
        next_deadline = report_deadline(&campaign).map(|at| at + chrono::Duration::milliseconds(10));
    }
    Ok(next_deadline)
}

/// Every host's record, readiness and request key from the caches, or `None` while one of them is
/// not in sync.
fn host_views(caches: &LeaderCaches) -> Option<BTreeMap<String, HostView>> {
    if !(caches.hosts.in_sync() && caches.alive.in_sync() && caches.host_upgrades.in_sync()) {
        return None;
    }
    let records = caches.hosts.with(|all| {
        all.iter()
            .filter_map(|(key, stored)| Some((keys::parse_host_key(key)?.to_owned(), stored.object.clone())))
            .collect::<Vec<_>>()
    });
    let alive: Vec<String> = caches
        .alive
        .keys()
        .iter()
        .filter_map(|key| keys::parse_host_lease_key(key).map(str::to_owned))
        .collect();
    let upgrades = caches.host_upgrades.with(|all| {
        all.iter()
            .filter_map(|(key, stored)| {
                let name = keys::parse_host_upgrade_key(key)?;
                Some((name.to_owned(), stored.object.clone(), stored.mod_revision))
            })
            .collect::<Vec<_>>()
    });
    Some(build_host_views(records, alive, upgrades))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Invalid(e.to_string()))
}
