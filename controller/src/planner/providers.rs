//! Containers that follow another spec's container: one that joins its network namespace
//! (`networkMode: container:NAME`) or links to it (`links`). Docker resolves both once, to the
//! provider's container of that moment, so a new container or a restart of the provider leaves
//! its followers behind.
//!
//! What Docker 20.10 (Engine API 1.41) does, as tried on the engine the tests use:
//!
//! - `--network container:NAME` is stored as `HostConfig.NetworkMode: container:<full ID>` (the
//!   name stays only when no such container existed at create). While the provider is stopped, the
//!   joiner keeps running with a loopback interface only. When the *same* provider container starts
//!   again, the joiner stays in the dead namespace until it is restarted; a restart joins the
//!   provider's new namespace (same ID). When the provider is *replaced* (stopped, renamed aside or
//!   removed, a new container of the name started), a restart fails ("cannot join network of a non
//!   running container: <old ID>", then "No such container") because the joiner still names the old
//!   ID: only a new joiner, created while the new provider runs, joins it.
//! - `--link NAME:ALIAS` is stored as `HostConfig.Links: ["/NAME:/THIS/ALIAS"]` and follows the
//!   target's renames (a target renamed aside shows as `/web-kedge-old-…:/this/alias`, and keeps
//!   that name after it is removed). The target's address is written into `/etc/hosts` at each start
//!   of the linking container, so after the same target restarts (with a new address) a restart of
//!   the linker is enough. A target that is replaced, even by one of the same name, is not followed:
//!   starting the linker fails ("Cannot link to a non running container: /NAME AS /THIS/ALIAS"), as it
//!   does while the target is stopped. Docker resolves links at create, so only a new linker follows
//!   a new target.
//!
//! Hence the rules, each a drift entry naming the field:
//! - joiner whose namespace is not the provider's current container's: recreate
//!   (`NetworkProviderReplaced`); joiner started before the provider's current start: restart
//!   (`NetworkProviderRestarted`).
//! - linker created before its target's current container was: recreate (`LinkTargetReplaced`);
//!   linker started before the target's current start: restart (`LinkTargetRestarted`).

use chrono::{DateTime, FixedOffset};
use kedge_crds::{FieldDiff, NetworkMode};

use crate::docker::ObservedContainer;
use crate::mapping::short_id;

use super::{Container, ProviderContainer};

/// What a follower needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Repair {
    Recreate,
    Restart,
}

/// One finding: the drift entry, the repair, and a reason for events (`Reason: details`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) diff: FieldDiff,
    pub(crate) repair: Repair,
    pub(crate) reason: String,
}

/// The findings for `observed`, the container of `desired`, given the current containers of the specs it
/// follows (by spec name). A provider that is not known is not judged: the agent plans a follower
/// only once what it depends on runs.
pub(crate) fn compare(
    desired: &Container,
    observed: &ObservedContainer,
    providers: &std::collections::BTreeMap<String, ProviderContainer>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let running = observed.state.running || observed.state.restarting;
    let started = timestamp(observed.state.started_at.as_deref());
    let created = timestamp(observed.created.as_deref());
    if let Some(NetworkMode::Container(name)) = &desired.spec.network_mode {
        let want = format!("container:{name}");
        let joined = observed.network_mode.as_deref().and_then(|mode| mode.strip_prefix("container:"));
        if let (Some(joined), Some(provider)) = (joined, providers.get(name)) {
            if joined != name && joined != provider.id {
                findings.push(Finding {
                    diff: FieldDiff {
                        field: "spec.networkMode".to_owned(),
                        desired: Some(format!("{want} ({})", short_id(&provider.id))),
                        actual: Some(format!("container:{}", short_id(joined))),
                    },
                    repair: Repair::Recreate,
                    reason: format!(
                        "NetworkProviderReplaced: joined the network namespace of container {}, and {name}'s container is now {}",
                        short_id(joined),
                        short_id(&provider.id)
                    ),
                });
            } else if running
                && provider.running
                && before(started, timestamp(provider.started_at.as_deref()))
            {
                findings.push(Finding {
                    diff: FieldDiff {
                        field: "spec.networkMode".to_owned(),
                        desired: Some(format!("{want} (started {})", provider.started_at.as_deref().unwrap_or("?"))),
                        actual: Some(format!("{want} (the namespace from before that start)")),
                    },
                    repair: Repair::Restart,
                    reason: format!(
                        "NetworkProviderRestarted: {name} started again after this container joined its network namespace"
                    ),
                });
            }
        }
    }
    for (index, link) in desired.spec.links.iter().enumerate() {
        let Some(target) = providers.get(&link.name) else { continue };
        let field = format!("spec.links[{index}]");
        let alias = link.alias.as_deref().unwrap_or(&link.name);
        if before(created, timestamp(target.created.as_deref())) {
            findings.push(Finding {
                diff: FieldDiff {
                    field,
                    desired: Some(format!("{}:{alias} ({})", link.name, short_id(&target.id))),
                    actual: Some(format!("{}:{alias} (a container of {} created before it)", link.name, link.name)),
                },
                repair: Repair::Recreate,
                reason: format!(
                    "LinkTargetReplaced: {} has a new container ({}), and a link follows only the container it was made to",
                    link.name,
                    short_id(&target.id)
                ),
            });
        } else if running && target.running && before(started, timestamp(target.started_at.as_deref())) {
            findings.push(Finding {
                diff: FieldDiff {
                    field,
                    desired: Some(format!(
                        "{}:{alias} (started {})",
                        link.name,
                        target.started_at.as_deref().unwrap_or("?")
                    )),
                    actual: Some(format!("{}:{alias} (its address from before that start)", link.name)),
                },
                repair: Repair::Restart,
                reason: format!(
                    "LinkTargetRestarted: {} started again after this container, whose /etc/hosts has its old address",
                    link.name
                ),
            });
        }
    }
    findings
}

fn timestamp(text: Option<&str>) -> Option<DateTime<FixedOffset>> {
    text.and_then(|text| DateTime::parse_from_rfc3339(text).ok())
}

/// `a` is strictly before `b`; unknown times decide nothing.
fn before(a: Option<DateTime<FixedOffset>>, b: Option<DateTime<FixedOffset>>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a < b)
}
