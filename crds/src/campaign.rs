//! The agent upgrade campaign's records (docs/upgrades.md), as the store keeps them and the API and
//! the CLI show them: a [`Campaign`] (`/kedge/v1/upgrades/campaigns/<id>`, cluster-wide) and the
//! request to one host, [`HostUpgrade`] (`/kedge/v1/upgrades/hosts/<host>`). One definition for
//! the controller that drives them (its `upgrade` module) and every reader.
//!
//! Not [`crate::Resource`]s: a campaign is created by the API from a request (`POST
//! /api/v1/upgrades`), named by a generated id, never applied by a user, and written afterwards only
//! by the scheduler's leader, fenced on its term; a host request is a mailbox between the leader and
//! one agent. Neither has `metadata`, and their JSON is read by older agents: the tests below decode
//! both as earlier versions wrote them.

use serde::{Deserialize, Serialize};

/// The state of a whole campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CampaignState {
    Running,
    Succeeded,
    Failed,
    /// Cancelled on request: no host was asked after the request; the one in flight finished.
    Cancelled,
}

/// The state of one host's upgrade, in a campaign and in the host's own request key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostUpgradeState {
    /// Not asked yet (campaign only).
    Pending,
    /// The leader asked; the host's agent has not picked it up yet (host key only).
    Requested,
    /// The helper container is replacing the agent's container.
    Upgrading,
    /// The new agent runs and reported in.
    Succeeded,
    /// The new agent did not come up in time: the old container runs again, same ID.
    RolledBack,
    /// Something else went wrong (no container, pull failed, no report in time, host NotReady).
    Failed,
    /// Not upgraded: its agent does not run in a container, or the campaign stopped before it.
    Skipped,
}

impl HostUpgradeState {
    /// True once nothing will change it any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            HostUpgradeState::Succeeded
                | HostUpgradeState::RolledBack
                | HostUpgradeState::Failed
                | HostUpgradeState::Skipped
        )
    }
}

/// An agent upgrade campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Campaign {
    pub id: String,
    /// The target version: the image tag, and the version the agents must report.
    pub version: String,
    /// The label selector the hosts were chosen by (empty: every host).
    #[serde(default)]
    pub selector: String,
    /// How long one host's new agent has to report in before the helper rolls back.
    pub timeout_seconds: u64,
    pub state: CampaignState,
    #[serde(default)]
    pub message: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Set by `POST /api/v1/upgrades/{id}/cancel`: the leader asks no further host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<String>,
    /// In the order they are upgraded.
    pub hosts: Vec<CampaignHost>,
}

/// One host of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CampaignHost {
    pub name: String,
    /// The image this host's agent moves to (`REPOSITORY:VERSION`).
    pub image: String,
    pub state: HostUpgradeState,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// From the leader's request to the host's final report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

/// The upgrade asked of one host, and how it went (`/kedge/v1/upgrades/hosts/<host>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostUpgrade {
    pub campaign: String,
    pub version: String,
    pub image: String,
    pub timeout_seconds: u64,
    pub state: HostUpgradeState,
    #[serde(default)]
    pub message: String,
    pub requested_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The helper container's name, once the agent started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper: Option<String>,
    /// The agent container being replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A campaign and a host request exactly as earlier versions wrote them: they still read, and
    /// write back byte for byte.
    #[test]
    fn records_written_by_an_earlier_version_read_and_write_back_byte_for_byte() {
        let campaign = r#"{"id":"u-1","version":"0.3.0","selector":"zone=a","timeoutSeconds":120,"state":"Running","message":"","createdAt":"2026-11-01T10:00:00Z","hosts":[{"name":"h1","image":"kedge:0.3.0","state":"Succeeded","message":"","startedAt":"2026-11-01T10:00:01Z","finishedAt":"2026-11-01T10:00:30Z","durationSeconds":29.0},{"name":"h2","image":"kedge:0.3.0","state":"Upgrading","message":""}]}"#;
        let read: Campaign = serde_json::from_str(campaign).unwrap();
        assert_eq!(read.hosts[1].state, HostUpgradeState::Upgrading);
        assert_eq!(serde_json::to_string(&read).unwrap(), campaign);
        let request = r#"{"campaign":"u-1","version":"0.3.0","image":"kedge:0.3.0","timeoutSeconds":120,"state":"RolledBack","message":"no report","requestedAt":"2026-11-01T10:00:01Z","finishedAt":"2026-11-01T10:03:00Z","helper":"kedge-upgrade-h1","oldContainerId":"abc"}"#;
        let read: HostUpgrade = serde_json::from_str(request).unwrap();
        assert!(read.state.is_final());
        assert_eq!(serde_json::to_string(&read).unwrap(), request);
    }
}
