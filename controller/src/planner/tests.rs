//! The drift rules, one small case each, through `plan` only.
//!
//! `created` plays the engine: it turns a create config into what inspect reports for it (image
//! defaults merged, swap twice the memory, short-ID hostname, hostname alias, default bridge, restart
//! policy `no`). The end-to-end tests in tests/tests/drift_*.rs check the real engine agrees.

use std::collections::BTreeMap;
use std::time::Duration;

use kedge_crds::{Container, ContainerSpec};

use super::*;
use crate::docker::{
    ContainerConfig, ContainerState, Healthcheck, ObservedContainer, ObservedNetwork, RestartPolicy,
    RestartPolicyKind,
};
use crate::mapping::container_config;

const OLD_IMAGE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NEW_IMAGE: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const CONTAINER_ID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// A spec named `web` at generation 1, from JSON (this crate does not depend on a YAML parser).
fn spec(json_spec: &str) -> Container {
    let spec: ContainerSpec = serde_json::from_str(json_spec).expect("a valid spec");
    let mut container = Container::new("web", spec);
    container.metadata.generation = Some(1);
    container
}

pub(crate) fn image() -> ImageInfo {
    ImageInfo {
        id: OLD_IMAGE.to_owned(),
        repo_tags: vec!["kedge-test/app:v1".to_owned()],
        repo_digests: vec!["127.0.0.1:5000/kedge-test/app@sha256:aaaa".to_owned()],
        env: vec!["PATH=/bin".to_owned(), "VERSION=1".to_owned()],
        cmd: Some(vec!["/bin/sleep".to_owned(), "3600".to_owned()]),
        entrypoint: None,
        working_dir: None,
        user: None,
        healthcheck: None,
        exposed_ports: Vec::new(),
        labels: BTreeMap::from([("org.image".to_owned(), "yes".to_owned())]),
        stop_signal: None,
    }
}

/// What inspect reports for a container the engine created from `config` on `image`, running.
fn created(config: &ContainerConfig, image: &ImageInfo) -> ObservedContainer {
    created_with_id(config, image, CONTAINER_ID)
}

/// [`created`] with the container ID `id`: the in-memory engine's model of a create
/// (`docker::fake`), used here too so both agree.
pub(crate) use crate::docker::fake::created_with_id;

/// The container as kedge created it from `desired`, then changed by `edit` (a hand edit).
fn observed(desired: &Container, edit: impl FnOnce(&mut ObservedContainer)) -> ObservedContainer {
    let mut observed = created(&container_config(desired), &image());
    edit(&mut observed);
    observed
}

pub(crate) fn facts() -> ImageFacts {
    ImageFacts {
        local_image_id: Some(OLD_IMAGE.to_owned()),
        running_image: Some(image()),
        running_repo_digests: image().repo_digests,
        ..ImageFacts::default()
    }
}

/// The plan in short: action kinds in order, then drift field paths.
#[derive(Clone, Copy)]
struct Expect<'a> {
    actions: &'a [&'a str],
    drift: &'a [&'a str],
}

#[track_caller]
/// [`check`], and the plan's reason begins with `reason` (`LinkTargetReplaced:`).
fn check_because(
    desired: &Container,
    observed: Option<&ObservedContainer>,
    facts: &ImageFacts,
    expected: Expect<'_>,
    reason: &str,
) -> Plan {
    let plan = check(desired, observed, facts, expected);
    assert!(plan.reason.as_deref().is_some_and(|text| text.starts_with(reason)), "{reason}: {plan:#?}");
    plan
}

fn check(
    desired: &Container,
    observed: Option<&ObservedContainer>,
    facts: &ImageFacts,
    expected: Expect<'_>,
) -> Plan {
    let plan = plan(desired, observed, facts);
    let actions: Vec<&str> = plan.actions.iter().map(Action::kind).collect();
    let drift: Vec<&str> = plan.drift.iter().map(|diff| diff.field.as_str()).collect();
    assert_eq!((actions.as_slice(), drift.as_slice()), (expected.actions, expected.drift), "plan: {plan:#?}");
    assert!(plan.conflict.is_none(), "unexpected conflict: {plan:#?}");
    plan
}

const NOTHING: Expect<'static> = Expect { actions: &[], drift: &[] };

/// Specs shaped like the examples, each field kind at least once.
fn example_specs() -> Vec<Container> {
    [
        r#"{"image": "kedge-test/app:v1"}"#,
        r#"{"image": "kedge-test/web:latest", "ports": ["8080:80/tcp", "127.0.0.1:9090:90/udp", "0.0.0.0:7070:70"],
            "healthcheck": {"test": ["CMD", "wget", "-q", "-O-", "http://127.0.0.1/healthz"], "interval": "5s",
                            "timeout": "2s", "retries": 3, "startPeriod": "2s"},
            "restartPolicy": "unless-stopped", "stopGracePeriod": "5s", "labels": {"app": "web"}}"#,
        r#"{"image": "kedge-test/app:v1", "user": "1000:1000", "workingDir": "/tmp", "readOnlyRootfs": true,
            "mounts": [{"type": "tmpfs", "target": "/tmp", "tmpfsSize": "16Mi"}, "/srv:/srv:ro", "data:/data"],
            "resources": {"cpus": 0.5, "cpuShares": 512, "memory": "64Mi", "memoryReservation": "32Mi",
                          "memorySwap": "128Mi", "pidsLimit": 100, "blkioWeight": 300},
            "capDrop": ["ALL"], "capAdd": ["CAP_NET_ADMIN"], "stopSignal": "SIGTERM", "stopGracePeriod": "30s",
            "restartPolicy": "on-failure:3", "logging": {"driver": "json-file", "options": {"max-size": "10m"}}}"#,
        r#"{"image": "kedge-test/web:latest", "hostname": "api",
            "networks": [{"name": "front", "aliases": ["api"]},
                         {"name": "back", "aliases": ["api-internal", "search"], "ipv4Address": "172.29.0.10"}]}"#,
        r#"{"image": "kedge-test/app:v1", "command": ["sh", "-c", "sleep 1d"], "env": {"DB": "shop", "VERSION": "1"},
            "entrypoint": ["/bin/env"], "resources": {"memory": "64Mi"}}"#,
        r#"{"image": "kedge-test/app:v1", "entrypoint": ["/bin/sleep"], "privileged": true}"#,
        r#"{"image": "kedge-test/app:v1", "pidMode": "host", "ipcMode": "shareable", "devices": ["/dev/fuse", "/dev/null:/dev/mine:r"],
            "securityOpt": ["no-new-privileges", "seccomp=unconfined"], "sysctls": {"net.ipv4.tcp_syncookies": 1}}"#,
    ]
    .iter()
    .map(|text| spec(text))
    .collect()
}

#[test]
fn a_freshly_created_container_matches_its_spec() {
    for desired in example_specs() {
        check(&desired, Some(&observed(&desired, |_| {})), &facts(), NOTHING);
        // Without the image's defaults at hand, declared fields alone must match too.
        let without_image = ImageFacts { running_image: None, ..facts() };
        check(&desired, Some(&observed(&desired, |_| {})), &without_image, NOTHING);
    }
}

#[test]
fn engine_normalizations_are_not_drift() {
    let desired = spec(
        r#"{"image": "kedge-test/app:v1", "ports": ["8080:80"], "resources": {"memory": "64Mi"},
                          "networks": [{"name": "back", "aliases": ["db"]}]}"#,
    );
    let normalized = |edit: fn(&mut ObservedContainer)| observed(&desired, edit);
    // "0.0.0.0" and "" both mean all addresses.
    check(
        &desired,
        Some(&normalized(|o| o.port_bindings[0].host_ip = Some("0.0.0.0".into()))),
        &facts(),
        NOTHING,
    );
    // A kernel without swap accounting reports -1.
    check(&desired, Some(&normalized(|o| o.resources.memory_swap = Some(-1))), &facts(), NOTHING);
    // The short-ID alias Docker adds, or none of it.
    check(&desired, Some(&normalized(|o| o.networks[0].aliases = vec!["db".into()])), &facts(), NOTHING);
    check(&desired, Some(&normalized(|o| o.networks[0].aliases.push("web".into()))), &facts(), NOTHING);
    // Restart policy `no` reported as absent; the image's reference written out in full.
    check(&desired, Some(&normalized(|o| o.restart_policy = None)), &facts(), NOTHING);
    check(&desired, Some(&normalized(|o| o.image = "docker.io/kedge-test/app:v1".into())), &facts(), NOTHING);
    check(&desired, Some(&normalized(|o| o.cap_add = vec![])), &facts(), NOTHING);
}

#[test]
fn a_missing_container_is_created_and_started() {
    let desired = spec(
        r#"{"image": "kedge-test/app:v1",
        "postStart": [{"command": ["touch", "/tmp/x"]}, {"command": ["sh", "-c", "sleep 1d"], "policy": "ensureRunning"}]}"#,
    );
    let plan = check(
        &desired,
        None,
        &facts(),
        Expect { actions: &["Create", "Start", "RunExec", "RunExec"], drift: &[] },
    );
    assert_eq!(plan.reason.as_deref(), Some("container missing"));
    let Action::Create { config } = &plan.actions[0] else { unreachable!() };
    assert_eq!(config, &container_config(&desired));
    // The image is not in the local store: pull first (pull policy ifNotPresent).
    let no_image = ImageFacts { local_image_id: None, ..facts() };
    check(
        &desired,
        None,
        &no_image,
        Expect { actions: &["Pull", "Create", "Start", "RunExec", "RunExec"], drift: &[] },
    );
    let never = spec(r#"{"image": "kedge-test/app:v1", "updatePolicy": {"pullPolicy": "never"}}"#);
    check(&never, None, &no_image, Expect { actions: &["Create", "Start"], drift: &[] });
    let always = spec(r#"{"image": "kedge-test/app:v1", "updatePolicy": {"pullPolicy": "always"}}"#);
    check(&always, None, &facts(), Expect { actions: &["Pull", "Create", "Start"], drift: &[] });
}

#[test]
fn a_foreign_container_is_a_conflict_and_never_touched() {
    let desired = spec(r#"{"image": "kedge-test/app:v1"}"#);
    let foreign = observed(&desired, |o| {
        o.labels.remove(labels::MANAGED_BY);
    });
    let refused = plan(&desired, Some(&foreign), &facts());
    assert!(refused.actions.is_empty());
    assert_eq!(refused.conflict.map(|c| c.container_id), Some(CONTAINER_ID.to_owned()));
    // kedge's, but another spec's (same name in another namespace).
    let other_key = observed(&desired, |o| {
        o.labels.insert(labels::KEY.into(), "other/web".into());
    });
    let refused = plan(&desired, Some(&other_key), &facts());
    assert!(refused.actions.is_empty());
    assert!(refused.conflict.is_some());
}

#[test]
fn limits_are_updated_in_place() {
    let desired = spec(
        r#"{"image": "kedge-test/app:v1",
        "resources": {"memory": "64Mi", "cpus": 0.5, "cpuShares": 512, "cpuPeriod": 100000, "cpuQuota": 50000,
                      "cpusetCpus": "0", "cpusetMems": "0", "memoryReservation": "32Mi", "blkioWeight": 300,
                      "pidsLimit": 100}}"#,
    );
    let in_place = |field: &'static str, edit: fn(&mut ObservedContainer)| {
        let plan = check(
            &desired,
            Some(&observed(&desired, edit)),
            &facts(),
            Expect { actions: &["UpdateInPlace"], drift: &[field] },
        );
        let Action::UpdateInPlace { container, resources } = &plan.actions[0] else { unreachable!() };
        assert_eq!(container, CONTAINER_ID);
        // Everything declared is sent, with swap at Docker's create-time default of twice the memory.
        assert_eq!(resources.memory, Some(64 << 20));
        assert_eq!(resources.memory_swap, Some(128 << 20));
        assert_eq!(resources.pids_limit, Some(100));
    };
    in_place("spec.resources.memory", |o| o.resources.memory = Some(128 << 20));
    in_place("spec.resources.cpus", |o| o.resources.nano_cpus = Some(2_000_000_000));
    in_place("spec.resources.cpuShares", |o| o.resources.cpu_shares = None);
    in_place("spec.resources.cpuPeriod", |o| o.resources.cpu_period = Some(50_000));
    in_place("spec.resources.cpuQuota", |o| o.resources.cpu_quota = Some(1));
    in_place("spec.resources.cpusetCpus", |o| o.resources.cpuset_cpus = Some("0-1".into()));
    in_place("spec.resources.cpusetMems", |o| o.resources.cpuset_mems = None);
    in_place("spec.resources.memoryReservation", |o| o.resources.memory_reservation = Some(1 << 20));
    in_place("spec.resources.blkioWeight", |o| o.resources.blkio_weight = Some(10));
    in_place("spec.resources.pidsLimit", |o| o.resources.pids_limit = Some(5));
    in_place("spec.resources.memorySwap", |o| o.resources.memory_swap = Some(1 << 30));
}

#[test]
fn a_limit_docker_cannot_unset_takes_a_recreate() {
    // Set by hand (or left from an older spec), not declared: the update API cannot remove it.
    let desired = spec(r#"{"image": "kedge-test/app:v1"}"#);
    for (field, edit) in [
        ("spec.resources.memory", (|o| o.resources.memory = Some(64 << 20)) as fn(&mut ObservedContainer)),
        ("spec.resources.pidsLimit", |o| o.resources.pids_limit = Some(10)),
        ("spec.resources.cpus", |o| o.resources.nano_cpus = Some(1_000_000_000)),
    ] {
        let plan = check(
            &desired,
            Some(&observed(&desired, edit)),
            &facts(),
            Expect { actions: &["Recreate"], drift: &[field] },
        );
        assert!(plan.reason.unwrap().contains(field));
    }
    // Memory removed, swap went with it: both listed, one recreate.
    let with_memory = spec(r#"{"image": "kedge-test/app:v1", "resources": {"memory": "64Mi"}}"#);
    let was_limited = observed(&with_memory, |_| {});
    check(
        &desired,
        Some(&was_limited),
        &facts(),
        Expect { actions: &["Recreate"], drift: &["spec.resources.memory", "spec.resources.memorySwap"] },
    );
}

#[test]
fn skip_limit_reset_keeps_the_container_and_reports_the_limit() {
    let desired = spec(r#"{"image": "kedge-test/app:v1", "updateStrategy": {"skipLimitReset": true}}"#);
    check(
        &desired,
        Some(&observed(&desired, |o| o.resources.pids_limit = Some(10))),
        &facts(),
        Expect { actions: &[], drift: &["spec.resources.pidsLimit"] },
    );
    // Other reasons still recreate.
    check(
        &desired,
        Some(&observed(&desired, |o| {
            o.resources.pids_limit = Some(10);
            o.env.push("HAND=edit".to_owned());
        })),
        &facts(),
        Expect { actions: &["Recreate"], drift: &["spec.env.HAND", "spec.resources.pidsLimit"] },
    );
}

#[test]
fn networks_are_reconnected_in_place() {
    let desired = spec(
        r#"{"image": "kedge-test/app:v1",
        "networks": [{"name": "front", "aliases": ["api"]}, {"name": "back", "ipv4Address": "172.29.0.10"}]}"#,
    );
    let network_plan = |edit: fn(&mut ObservedContainer), expected: Expect<'_>| {
        check(&desired, Some(&observed(&desired, edit)), &facts(), expected)
    };
    // `docker network disconnect back web`
    let plan = network_plan(
        |o| o.networks.retain(|n| n.network != "back"),
        Expect { actions: &["EnsureNetwork", "ConnectNetwork"], drift: &["spec.networks[back]"] },
    );
    // Only the network without a static address is made when missing: a subnet is its owner's choice.
    assert_eq!(plan.actions[0], Action::EnsureNetwork { network: "front".into() });
    let Action::ConnectNetwork { network, .. } = &plan.actions[1] else { unreachable!() };
    assert_eq!(network.ipv4_address.as_deref(), Some("172.29.0.10"));
    // `docker network connect extra web`
    let plan = network_plan(
        |o| o.networks.push(ObservedNetwork { network: "extra".into(), ..ObservedNetwork::default() }),
        Expect { actions: &["DisconnectNetwork"], drift: &["spec.networks[extra]"] },
    );
    assert_eq!(
        plan.actions[0],
        Action::DisconnectNetwork { container: CONTAINER_ID.into(), network: "extra".into() }
    );
    // Reconnected by hand without the alias: disconnect, then connect with it.
    let plan = network_plan(
        |o| o.networks.iter_mut().filter(|n| n.network == "front").for_each(|n| n.aliases.clear()),
        Expect {
            actions: &["EnsureNetwork", "DisconnectNetwork", "ConnectNetwork"],
            drift: &["spec.networks[front]"],
        },
    );
    assert_eq!(plan.drift[0].desired.as_deref(), Some("aliases=[api]"));
    assert_eq!(plan.drift[0].actual.as_deref(), Some("aliases=[]"));
    // No network declared: Docker's bridge, and nothing else.
    let plain = spec(r#"{"image": "kedge-test/app:v1"}"#);
    let off_bridge = observed(&plain, |o| o.networks.clear());
    check(
        &plain,
        Some(&off_bridge),
        &facts(),
        Expect { actions: &["ConnectNetwork"], drift: &["spec.networks[bridge]"] },
    );
}

#[test]
fn a_spec_change_of_limits_or_networks_only_stays_in_place() {
    let before = spec(
        r#"{"image": "kedge-test/app:v1", "resources": {"memory": "64Mi"}, "networks": [{"name": "a"}]}"#,
    );
    let running = observed(&before, |_| {});
    let after = spec(
        r#"{"image": "kedge-test/app:v1", "resources": {"memory": "128Mi"}, "networks": [{"name": "a"}, {"name": "b"}]}"#,
    );
    // The spec-hash label is stale now, and stays so: in-place repairs cannot relabel.
    check(
        &after,
        Some(&running),
        &facts(),
        Expect {
            actions: &["EnsureNetwork", "EnsureNetwork", "UpdateInPlace", "ConnectNetwork"],
            drift: &["spec.resources.memory", "spec.networks[b]"],
        },
    );
    // Once repaired, the stale hash alone does not recreate.
    let repaired = observed(&before, |o| {
        o.resources.memory = Some(128 << 20);
        o.resources.memory_swap = Some(256 << 20);
        o.networks.push(ObservedNetwork {
            network: "b".into(),
            aliases: vec![CONTAINER_ID[..12].into()],
            ..ObservedNetwork::default()
        });
    });
    check(&after, Some(&repaired), &facts(), NOTHING);
    // A change that does not shape the container (update policy) changes nothing either.
    let policy_only = spec(
        r#"{"image": "kedge-test/app:v1", "resources": {"memory": "64Mi"}, "networks": [{"name": "a"}],
                               "updatePolicy": {"checkInterval": "1m"}}"#,
    );
    check(&policy_only, Some(&running), &facts(), NOTHING);
    // But without the image's defaults kedge cannot tell what changed, so it replaces.
    let blind = ImageFacts { running_image: None, ..facts() };
    check(
        &policy_only,
        Some(&running),
        &blind,
        Expect { actions: &["EnsureNetwork", "Recreate"], drift: &[] },
    );
}

#[test]
fn spec_changes_that_need_a_new_container_recreate() {
    let before = spec(
        r#"{"image": "kedge-test/app:v1", "env": {"A": "1"}, "ports": ["8080:80"],
                          "mounts": ["/srv:/srv"], "labels": {"team": "a"}}"#,
    );
    let running = observed(&before, |_| {});
    let recreate = |after: &str, drift: &[&str]| {
        let plan = check(&spec(after), Some(&running), &facts(), Expect { actions: &["Recreate"], drift });
        let Action::Recreate { config, .. } = &plan.actions[0] else { unreachable!() };
        assert_eq!(config, &container_config(&spec(after)));
    };
    let base = r#""ports": ["8080:80"], "mounts": ["/srv:/srv"], "labels": {"team": "a"}"#;
    recreate(&format!(r#"{{"image": "kedge-test/app:v2", "env": {{"A": "1"}}, {base}}}"#), &["spec.image"]);
    recreate(&format!(r#"{{"image": "kedge-test/app:v1", "env": {{"A": "2"}}, {base}}}"#), &["spec.env.A"]);
    // An env entry removed from the spec: found because the image does not have it.
    recreate(&format!(r#"{{"image": "kedge-test/app:v1", {base}}}"#), &["spec.env.A"]);
    recreate(
        r#"{"image": "kedge-test/app:v1", "env": {"A": "1"}, "ports": ["8081:80"], "mounts": ["/srv:/srv"], "labels": {"team": "a"}}"#,
        &["spec.ports"],
    );
    recreate(
        r#"{"image": "kedge-test/app:v1", "env": {"A": "1"}, "ports": ["8080:80"], "mounts": ["/srv:/srv:ro"], "labels": {"team": "a"}}"#,
        &["spec.mounts[/srv]"],
    );
    recreate(
        r#"{"image": "kedge-test/app:v1", "env": {"A": "1"}, "ports": ["8080:80"], "mounts": ["/srv:/srv"], "labels": {"team": "b"}}"#,
        &["spec.labels.team"],
    );
    recreate(
        &format!(
            r#"{{"image": "kedge-test/app:v1", "env": {{"A": "1"}}, "command": ["sleep", "9"], {base}}}"#
        ),
        &["spec.command"],
    );
    recreate(
        &format!(
            r#"{{"image": "kedge-test/app:v1", "env": {{"A": "1"}}, "restartPolicy": "always", {base}}}"#
        ),
        &["spec.restartPolicy"],
    );
    recreate(
        &format!(
            r#"{{"image": "kedge-test/app:v1", "env": {{"A": "1"}}, "healthcheck": {{"test": "true"}}, {base}}}"#
        ),
        &["spec.healthcheck"],
    );
    recreate(
        &format!(r#"{{"image": "kedge-test/app:v1", "env": {{"A": "1"}}, "stopGracePeriod": "3s", {base}}}"#),
        &["spec.stopGracePeriod"],
    );
    recreate(
        &format!(
            r#"{{"image": "kedge-test/app:v1", "env": {{"A": "1"}}, "user": "nobody", "workingDir": "/w", {base}}}"#
        ),
        &["spec.workingDir", "spec.user"],
    );
}

#[test]
fn hand_edits_are_found_from_inspect() {
    let desired = spec(r#"{"image": "kedge-test/app:v1", "env": {"A": "1"}, "restartPolicy": "always"}"#);
    // `docker update --restart no web`: not a resource, so a recreate (the wrapper cannot update it).
    let plan = check(
        &desired,
        Some(&observed(&desired, |o| {
            o.restart_policy = Some(RestartPolicy { kind: RestartPolicyKind::No, max_retries: 0 })
        })),
        &facts(),
        Expect { actions: &["Recreate"], drift: &["spec.restartPolicy"] },
    );
    assert_eq!(plan.drift[0].desired.as_deref(), Some("always"));
    assert_eq!(plan.drift[0].actual.as_deref(), Some("no"));
    // A container re-run by hand with an extra variable and label, kedge's labels copied.
    let plan = check(
        &desired,
        Some(&observed(&desired, |o| {
            o.env.push("DEBUG=1".into());
            o.labels.insert("hand".into(), "made".into());
        })),
        &facts(),
        Expect { actions: &["Recreate"], drift: &["spec.env.DEBUG", "spec.labels.hand"] },
    );
    assert_eq!(
        plan.drift[0],
        FieldDiff { field: "spec.env.DEBUG".into(), desired: None, actual: Some("1".into()) }
    );
}

#[test]
fn a_tag_that_names_another_image_recreates_under_policy_local() {
    let local = spec(r#"{"image": "kedge-test/app:v1", "updatePolicy": {"imageCheck": "local"}}"#);
    let retagged = ImageFacts { local_image_id: Some(NEW_IMAGE.to_owned()), ..facts() };
    let plan = check(
        &local,
        Some(&observed(&local, |_| {})),
        &retagged,
        Expect { actions: &["Recreate"], drift: &[] },
    );
    assert!(plan.reason.unwrap().contains("now names image 222222222222"));
    let Action::Recreate { strategy, .. } = &plan.actions[0] else { unreachable!() };
    assert!(!strategy.pull);
    // The same tag move is ignored without the policy, and the same ID is current.
    let none = spec(r#"{"image": "kedge-test/app:v1"}"#);
    check(&none, Some(&observed(&none, |_| {})), &retagged, NOTHING);
    check(&local, Some(&observed(&local, |_| {})), &facts(), NOTHING);
}

#[test]
fn a_moved_registry_digest_recreates_with_a_pull_under_policy_registry() {
    let registry = spec(r#"{"image": "kedge-test/app:v1", "updatePolicy": {"imageCheck": "registry"}}"#);
    let moved = ImageFacts { registry_digest: Some("sha256:bbbb".to_owned()), ..facts() };
    let plan = check(
        &registry,
        Some(&observed(&registry, |_| {})),
        &moved,
        Expect { actions: &["Recreate"], drift: &[] },
    );
    let Action::Recreate { strategy, .. } = &plan.actions[0] else { unreachable!() };
    assert!(strategy.pull);
    let same = ImageFacts { registry_digest: Some("sha256:aaaa".to_owned()), ..facts() };
    check(&registry, Some(&observed(&registry, |_| {})), &same, NOTHING);
    // Registry unreachable: no news is no recreate.
    check(&registry, Some(&observed(&registry, |_| {})), &facts(), NOTHING);
}

fn exited(code: i64) -> impl FnOnce(&mut ObservedContainer) {
    move |o| {
        o.state = ContainerState {
            status: ContainerStatus::Exited,
            running: false,
            exit_code: Some(code),
            ..ContainerState::default()
        }
    }
}

#[test]
fn a_stopped_container_is_started_per_restart_policy() {
    let cases: [(&str, i64, &[&str]); 10] = [
        (r#""no""#, 0, &[]),
        // Explicit `no`: never started again by kedge either.
        (r#""no""#, 137, &[]),
        (r#""on-failure""#, 0, &[]),
        (r#""on-failure:3""#, 3, &["Start"]),
        (r#""always""#, 0, &["Start"]),
        (r#""always""#, 137, &["Start"]),
        (r#""unless-stopped""#, 0, &["Start"]),
        (r#""unless-stopped""#, 143, &["Start"]),
        // Non-recoverable exit codes (default -127 and -1) take a new container.
        (r#""always""#, -1, &["Recreate"]),
        (r#""no""#, -127, &["Recreate"]),
    ];
    for (policy, code, actions) in cases {
        let desired = spec(&format!(r#"{{"image": "kedge-test/app:v1", "restartPolicy": {policy}}}"#));
        let plan = check(
            &desired,
            Some(&observed(&desired, exited(code))),
            &facts(),
            Expect { actions, drift: &[] },
        );
        if actions == ["Start"] {
            assert_eq!(plan.actions[0], Action::Start { container: CONTAINER_ID.to_owned() });
        }
    }
    // Declared non-recoverable codes replace the default ones.
    let custom =
        spec(r#"{"image": "kedge-test/app:v1", "restartPolicy": "always", "nonRecoverableExitCodes": [3]}"#);
    check(
        &custom,
        Some(&observed(&custom, exited(3))),
        &facts(),
        Expect { actions: &["Recreate"], drift: &[] },
    );
    check(
        &custom,
        Some(&observed(&custom, exited(-1))),
        &facts(),
        Expect { actions: &["Start"], drift: &[] },
    );
    // Docker restarting it itself, or never started.
    let always = spec(r#"{"image": "kedge-test/app:v1", "restartPolicy": "always"}"#);
    let restarting = observed(&always, |o| {
        o.state = ContainerState {
            status: ContainerStatus::Restarting,
            restarting: true,
            ..ContainerState::default()
        }
    });
    check(&always, Some(&restarting), &facts(), NOTHING);
    let never_started = observed(&always, |o| {
        o.state = ContainerState { status: ContainerStatus::Created, ..ContainerState::default() }
    });
    check(&always, Some(&never_started), &facts(), Expect { actions: &["Start"], drift: &[] });
    let dead = observed(&always, |o| {
        o.state = ContainerState { status: ContainerStatus::Dead, ..ContainerState::default() }
    });
    check(&always, Some(&dead), &facts(), Expect { actions: &["Recreate"], drift: &[] });
}

#[test]
fn restarts_follow_the_policy_the_limit_and_the_backoff() {
    // No policy declared: failures are started again, a clean exit is a finished job.
    let unset = spec(r#"{"image": "kedge-test/app:v1"}"#);
    check(&unset, Some(&observed(&unset, exited(3))), &facts(), Expect { actions: &["Start"], drift: &[] });
    check(&unset, Some(&observed(&unset, exited(0))), &facts(), NOTHING);
    // on-failure:2 after two restarts: left.
    let limited = spec(r#"{"image": "kedge-test/app:v1", "restartPolicy": "on-failure:2"}"#);
    let after = |restarts| ImageFacts { restarts, ..facts() };
    check(
        &limited,
        Some(&observed(&limited, exited(3))),
        &after(1),
        Expect { actions: &["Start"], drift: &[] },
    );
    check(&limited, Some(&observed(&limited, exited(3))), &after(2), NOTHING);
    // kedge's backoff holds the start back, whatever the policy.
    let always = spec(r#"{"image": "kedge-test/app:v1", "restartPolicy": "always"}"#);
    let backing_off = ImageFacts { start_backoff: Some("back-off 4s".into()), ..facts() };
    check(&always, Some(&observed(&always, exited(3))), &backing_off, NOTHING);
    // `kedge start` of a spec that was stopped as asked: started whatever the policy says.
    let no = spec(r#"{"image": "kedge-test/app:v1", "restartPolicy": "no"}"#);
    let requested = ImageFacts { start_requested: true, ..facts() };
    check(&no, Some(&observed(&no, exited(3))), &requested, Expect { actions: &["Start"], drift: &[] });
}

#[test]
fn a_paused_container_is_resumed_unless_it_is_meant_to_stop() {
    let desired = spec(r#"{"image": "kedge-test/app:v1"}"#);
    let paused = observed(&desired, |o| {
        o.state =
            ContainerState { status: ContainerStatus::Paused, running: true, ..ContainerState::default() }
    });
    let plan = check(&desired, Some(&paused), &facts(), Expect { actions: &["Unpause"], drift: &[] });
    assert_eq!(plan.actions[0], Action::Unpause { container: CONTAINER_ID.to_owned() });
    assert_eq!(plan.reason.as_deref(), Some("container was paused"));
    let mut stopped = desired.clone();
    stopped.spec.run_state = Some(RunState::Stopped);
    check(&stopped, Some(&paused), &facts(), NOTHING);
}

#[test]
fn a_held_update_keeps_the_running_container() {
    let desired = spec(r#"{"image": "kedge-test/app:v2", "resources": {"memory": "64Mi"}}"#);
    let old = observed(&spec(r#"{"image": "kedge-test/app:v1"}"#), |_| {});
    let held = ImageFacts { update_held: true, ..facts() };
    let kept = super::plan(&desired, Some(&old), &held);
    assert!(kept.actions.is_empty(), "nothing is recreated or changed in place: {kept:#?}");
    assert!(kept.drift.iter().any(|diff| diff.field == "spec.image"), "the drift is still reported");
    // A held update's container that stopped is still started.
    let stopped = observed(&spec(r#"{"image": "kedge-test/app:v1"}"#), exited(137));
    let started = super::plan(&desired, Some(&stopped), &held);
    assert_eq!(started.actions, [Action::Start { container: CONTAINER_ID.to_owned() }]);
    // Not held: replaced.
    check(
        &desired,
        Some(&old),
        &facts(),
        Expect {
            actions: &["Recreate"],
            drift: &["spec.image", "spec.resources.memory", "spec.resources.memorySwap"],
        },
    );
}

#[test]
fn post_start_commands_run_after_a_start_and_are_kept_running() {
    let desired = spec(
        r#"{"image": "kedge-test/app:v1", "restartPolicy": "always", "postStart": [
        {"command": ["touch", "/tmp/started"]},
        {"command": ["sh", "-c", "while true; do sleep 5; done"], "policy": "ensureRunning", "user": "nobody"}]}"#,
    );
    let plan = check(
        &desired,
        Some(&observed(&desired, exited(137))),
        &facts(),
        Expect { actions: &["Start", "RunExec", "RunExec"], drift: &[] },
    );
    assert!(matches!(&plan.actions[1], Action::RunExec { unless_running: false, .. }));
    // Running, heartbeat gone: run it again; it is drift of its own.
    let processes = |list: &[&str]| ImageFacts {
        running_processes: Some(list.iter().map(|p| p.to_string()).collect()),
        ..facts()
    };
    let plan = check(
        &desired,
        Some(&observed(&desired, |_| {})),
        &processes(&["/bin/sleep 3600"]),
        Expect { actions: &["RunExec"], drift: &["spec.postStart[1]"] },
    );
    let Action::RunExec { exec, unless_running, .. } = &plan.actions[0] else { unreachable!() };
    assert!(*unless_running);
    assert_eq!(exec.user.as_deref(), Some("nobody"));
    check(
        &desired,
        Some(&observed(&desired, |_| {})),
        &processes(&["/bin/sleep 3600", "sh -c while true; do sleep 5; done"]),
        NOTHING,
    );
    // Processes not looked at: nothing assumed.
    check(&desired, Some(&observed(&desired, |_| {})), &facts(), NOTHING);
}

#[test]
fn ensure_running_commands_match_fully_or_partially() {
    let spec_with = |command_match: &str| {
        spec(&format!(
            r#"{{"image": "kedge-test/app:v1", "postStart": [
            {{"command": ["worker", "--queue", "q"], "policy": "ensureRunning", "match": "{command_match}"}}]}}"#
        ))
    };
    let rewritten = ImageFacts {
        running_processes: Some(vec![
            "/bin/sleep 3600".to_owned(),
            "/usr/bin/worker --queue q [busy]".to_owned(),
        ]),
        ..facts()
    };
    let full = spec_with("full");
    check(
        &full,
        Some(&observed(&full, |_| {})),
        &rewritten,
        Expect { actions: &["RunExec"], drift: &["spec.postStart[0]"] },
    );
    let partial = spec_with("partial");
    check(&partial, Some(&observed(&partial, |_| {})), &rewritten, NOTHING);
    let gone = ImageFacts { running_processes: Some(vec!["/bin/sleep 3600".to_owned()]), ..facts() };
    check(
        &partial,
        Some(&observed(&partial, |_| {})),
        &gone,
        Expect { actions: &["RunExec"], drift: &["spec.postStart[0]"] },
    );
}

#[test]
fn a_requested_recreate_happens_once() {
    let desired = spec(r#"{"image": "kedge-test/app:v1"}"#);
    let forced = ImageFacts { force_recreate: true, ..facts() };
    check(
        &desired,
        Some(&observed(&desired, |_| {})),
        &forced,
        Expect { actions: &["Recreate"], drift: &[] },
    );

    let mut restarted = desired.clone();
    restarted.metadata.annotations.insert(RESTARTED_AT_ANNOTATION.into(), "2026-11-21T22:00:00Z".into());
    // The container predates the annotation: recreate, and the new one records it.
    let plan = check(
        &restarted,
        Some(&observed(&desired, |_| {})),
        &facts(),
        Expect { actions: &["Recreate"], drift: &[] },
    );
    let Action::Recreate { config, .. } = &plan.actions[0] else { unreachable!() };
    assert_eq!(config.labels.get(RESTARTED_AT_LABEL).map(String::as_str), Some("2026-11-21T22:00:00Z"));
    check(&restarted, Some(&observed(&restarted, |_| {})), &facts(), NOTHING);
}

#[test]
fn recreate_strategy_follows_the_spec() {
    let desired = spec(
        r#"{"image": "kedge-test/app:v1", "stopGracePeriod": "7s", "env": {"A": "1"},
        "updateStrategy": {"healthTimeout": "20s", "removeOldImage": true}}"#,
    );
    let stale = observed(&desired, |o| o.env.retain(|e| e != "A=1"));
    let plan =
        check(&desired, Some(&stale), &facts(), Expect { actions: &["Recreate"], drift: &["spec.env.A"] });
    let Action::Recreate { strategy, .. } = &plan.actions[0] else { unreachable!() };
    assert_eq!(strategy.stop_timeout, Some(Duration::from_secs(7)));
    assert_eq!(strategy.health_timeout, Duration::from_secs(20));
    assert!(strategy.remove_old_image);
    assert!(!strategy.pull);
}

#[test]
fn min_ready_seconds_sets_both_waits_and_defaults_by_healthcheck() {
    // `(spec's minReadySeconds, running grace without a healthcheck, minimum run with one)`.
    let cases: &[(Option<i64>, u64, u64)] =
        &[(None, 1, 0), (Some(0), 0, 0), (Some(2), 2, 2), (Some(3600), 3600, 3600)];
    for &(seconds, running_grace, min_ready_healthy) in cases {
        let min_ready = seconds.map_or(String::new(), |s| format!(r#", "minReadySeconds": {s}"#));
        let strategy = recreate_strategy_with(&min_ready);
        assert_eq!(strategy.running_grace, Duration::from_secs(running_grace), "{seconds:?}");
        assert_eq!(strategy.min_ready_healthy, Duration::from_secs(min_ready_healthy), "{seconds:?}");
    }
}

#[test]
fn recreates_are_start_first_unless_the_spec_says_stop_first() {
    for (update_strategy, order) in [
        ("", RecreateOrder::StartFirst),
        (r#", "updateStrategy": {"type": "start-first"}"#, RecreateOrder::StartFirst),
        (r#", "updateStrategy": {"type": "stop-first"}"#, RecreateOrder::StopFirst),
    ] {
        assert_eq!(recreate_strategy_with(update_strategy).order, order, "{update_strategy}");
    }
}

/// The strategy of the recreate planned for a spec with `extra` (JSON fields after `image` and
/// `env`) whose container lacks the spec's env entry.
fn recreate_strategy_with(extra: &str) -> RecreateStrategy {
    let desired = spec(&format!(r#"{{"image": "kedge-test/app:v1", "env": {{"A": "1"}}{extra}}}"#));
    let stale = observed(&desired, |o| o.env.retain(|e| e != "A=1"));
    let expect = Expect { actions: &["Recreate"], drift: &["spec.env.A"] };
    let plan = check(&desired, Some(&stale), &facts(), expect);
    let Action::Recreate { strategy, .. } = &plan.actions[0] else { unreachable!() };
    strategy.clone()
}

#[test]
fn image_defaults_are_not_declarations() {
    // The image has a HEALTHCHECK, STOPSIGNAL and WORKDIR the spec does not mention: no drift.
    let desired = spec(r#"{"image": "kedge-test/app:v1"}"#);
    let mut rich = image();
    rich.healthcheck =
        Some(Healthcheck { test: vec!["CMD".into(), "true".into()], ..Healthcheck::default() });
    rich.stop_signal = Some("SIGQUIT".into());
    rich.working_dir = Some("/app".into());
    rich.entrypoint = Some(vec!["/entry".into()]);
    let observed = created(&container_config(&desired), &rich);
    let facts = ImageFacts { running_image: Some(rich.clone()), ..facts() };
    check(&desired, Some(&observed), &facts, NOTHING);
    // Overriding one field of the image's healthcheck keeps the rest of it.
    let partial =
        spec(r#"{"image": "kedge-test/app:v1", "healthcheck": {"test": ["CMD", "true"], "interval": "3s"}}"#);
    let mut merged = created(&container_config(&partial), &rich);
    merged.healthcheck = Some(Healthcheck {
        test: vec!["CMD".into(), "true".into()],
        interval: Some(Duration::from_secs(3)),
        ..Healthcheck::default()
    });
    check(&partial, Some(&merged), &facts, NOTHING);
}

#[test]
fn labels_kedge_stamps_on_its_containers_are_not_drift() {
    let desired = spec(r#"{"image": "kedge-test/app:v1", "labels": {"team": "a"}}"#);
    let stamped = observed(&desired, |o| {
        o.labels.insert(labels::HOST.into(), "host-1".into());
        o.labels.insert(labels::STORE.into(), "store-1".into());
        o.labels.insert("io.kedge.some-future-label".into(), "x".into());
        o.labels.insert(labels::GENERATION.into(), "7".into());
        o.labels.insert(labels::SPEC_HASH.into(), "stale".into());
    });
    check(&desired, Some(&stamped), &facts(), NOTHING);
}

#[test]
fn run_state_stopped_stops_and_keeps_stopped() {
    let stopped = spec(
        r#"{"image": "kedge-test/app:v1", "restartPolicy": "always", "stopGracePeriod": "7s",
            "runState": "stopped", "postStart": [{"command": ["sh", "-c", "sleep 1d"], "policy": "ensureRunning"}]}"#,
    );
    // Running: stopped, with the spec's grace period; no post-start command is looked for.
    let plan = check(
        &stopped,
        Some(&observed(&stopped, |_| {})),
        &facts(),
        Expect { actions: &["Stop"], drift: &[] },
    );
    assert_eq!(
        plan.actions[0],
        Action::Stop { container: CONTAINER_ID.to_owned(), timeout: Some(Duration::from_secs(7)) }
    );
    let with_processes = ImageFacts { running_processes: Some(vec![]), ..facts() };
    check(
        &stopped,
        Some(&observed(&stopped, |_| {})),
        &with_processes,
        Expect { actions: &["Stop"], drift: &[] },
    );
    // Stopped, whatever the exit code and restart policy: left so.
    for code in [0, 137, 143] {
        check(&stopped, Some(&observed(&stopped, exited(code))), &facts(), NOTHING);
    }
    // Missing: created, not started.
    check(&stopped, None, &facts(), Expect { actions: &["Create"], drift: &[] });
    // A non-recoverable exit code matters only once the container is to run again.
    check(&stopped, Some(&observed(&stopped, exited(-1))), &facts(), NOTHING);
    let started =
        spec(r#"{"image": "kedge-test/app:v1", "restartPolicy": "always", "stopGracePeriod": "7s"}"#);
    check(
        &started,
        Some(&observed(&stopped, exited(-1))),
        &facts(),
        Expect { actions: &["Recreate"], drift: &[] },
    );
    // A requested recreate of a stopped container: replaced plainly, left unstarted.
    let mut requested = stopped.clone();
    requested
        .metadata
        .annotations
        .insert(RESTARTED_AT_ANNOTATION.to_owned(), "2026-11-21T23:00:00Z".to_owned());
    check(
        &requested,
        Some(&observed(&stopped, exited(0))),
        &facts(),
        Expect { actions: &["Remove", "Create"], drift: &[] },
    );
    // The run state is not part of the spec hash: the same container serves both states.
    let running = spec(
        r#"{"image": "kedge-test/app:v1", "restartPolicy": "always", "stopGracePeriod": "7s",
            "postStart": [{"command": ["sh", "-c", "sleep 1d"], "policy": "ensureRunning"}]}"#,
    );
    let without_image = ImageFacts { running_image: None, ..facts() };
    check(
        &running,
        Some(&observed(&stopped, exited(0))),
        &without_image,
        Expect { actions: &["Start", "RunExec"], drift: &[] },
    );
    check(
        &stopped,
        Some(&observed(&running, |_| {})),
        &without_image,
        Expect { actions: &["Stop"], drift: &[] },
    );
    // Running again after a stop on purpose: started even after a clean exit under restart policy `no`.
    let job = spec(r#"{"image": "kedge-test/app:v1"}"#);
    check(&job, Some(&observed(&job, exited(0))), &facts(), NOTHING);
    let requested = ImageFacts { start_requested: true, ..facts() };
    check(&job, Some(&observed(&job, exited(0))), &requested, Expect { actions: &["Start"], drift: &[] });
}

const PROVIDER_ID: &str = "d00d0000d00d0000d00d0000d00d0000d00d0000d00d0000d00d0000d00d0000";
const NEW_PROVIDER_ID: &str = "feed0000feed0000feed0000feed0000feed0000feed0000feed0000feed0000";

/// A follower container as the engine shows it: created at 22:00, started at 22:01, its
/// `container:` mode resolved to the provider's ID.
fn follower(desired: &Container, joined: &str) -> ObservedContainer {
    observed(desired, |container| {
        container.created = Some("2026-11-21T22:00:00.5Z".to_owned());
        container.state.started_at = Some("2026-11-21T22:01:00.123456789Z".to_owned());
        if container.network_mode.as_deref().is_some_and(|mode| mode.starts_with("container:")) {
            container.network_mode = Some(format!("container:{joined}"));
        }
    })
}

/// Facts naming `db`'s current container (and `cache`'s, an older one that has not restarted).
fn with_providers(db_id: &str, db_created: &str, db_started: &str) -> ImageFacts {
    let provider = |id: &str, created: &str, started: &str| ProviderContainer {
        id: id.to_owned(),
        created: Some(created.to_owned()),
        started_at: Some(started.to_owned()),
        running: true,
    };
    ImageFacts {
        providers: BTreeMap::from([
            ("db".to_owned(), provider(db_id, db_created, db_started)),
            ("cache".to_owned(), provider("cafe", "2026-11-21T21:00:00Z", "2026-11-21T21:00:01Z")),
        ]),
        ..facts()
    }
}

/// `db` as it was when the follower was made: created and started before it.
fn providers_unchanged() -> ImageFacts {
    with_providers(PROVIDER_ID, "2026-11-21T21:59:00Z", "2026-11-21T21:59:30.9Z")
}

#[test]
fn network_modes_and_links_as_created_are_not_drift() {
    for text in [
        r#"{"image": "kedge-test/app:v1", "networkMode": "host"}"#,
        r#"{"image": "kedge-test/app:v1", "networkMode": "none"}"#,
        r#"{"image": "kedge-test/app:v1", "networkMode": "bridge", "links": ["db", "cache:c"]}"#,
        r#"{"image": "kedge-test/app:v1", "networkMode": "container:db"}"#,
        r#"{"image": "kedge-test/app:v1", "networkMode": "service:db"}"#,
    ] {
        let desired = spec(text);
        check(&desired, Some(&follower(&desired, PROVIDER_ID)), &providers_unchanged(), NOTHING);
        // A `container:` mode the engine could not resolve at create keeps the name.
        check(&desired, Some(&follower(&desired, "db")), &providers_unchanged(), NOTHING);
        // A provider not known (the agent plans a follower once its providers run) decides nothing.
        check(&desired, Some(&follower(&desired, "0ther")), &facts(), NOTHING);
    }
}

#[test]
fn a_network_mode_changed_in_the_spec_or_by_hand_recreates() {
    let recreate = Expect { actions: &["Recreate"], drift: &["spec.networkMode"] };
    let on_host = spec(r#"{"image": "kedge-test/app:v1", "networkMode": "host"}"#);
    let bridged = observed(&spec(r#"{"image": "kedge-test/app:v1"}"#), |_| {});
    check(&on_host, Some(&bridged), &facts(), recreate);
    let plain = spec(r#"{"image": "kedge-test/app:v1"}"#);
    let joined =
        follower(&spec(r#"{"image": "kedge-test/app:v1", "networkMode": "container:db"}"#), PROVIDER_ID);
    check(&plain, Some(&joined), &facts(), recreate);
    let none = spec(r#"{"image": "kedge-test/app:v1", "networkMode": "none"}"#);
    check(&none, Some(&observed(&on_host, |_| {})), &facts(), recreate);
    // `bridge` is what a spec without a mode gets.
    let bridge = spec(r#"{"image": "kedge-test/app:v1", "networkMode": "bridge"}"#);
    check(&bridge, Some(&bridged), &facts(), NOTHING);
}

/// A joiner (`networkMode: container:db`) sits in its provider's network namespace: when the
/// provider is replaced it is recreated, when the provider is started again it is restarted, and
/// when it is stopped it catches up as it starts (or is recreated: Docker cannot start it into a
/// namespace that is gone).
#[test]
fn a_joiner_follows_its_provider_replaced_or_restarted() {
    let desired = spec(r#"{"image": "kedge-test/app:v1", "networkMode": "container:db"}"#);
    let stopped = observed(&desired, |container| {
        *container = follower(&desired, PROVIDER_ID);
        exited(137)(container);
    });
    let network_mode: &[&str] = &["spec.networkMode"];
    // (provider, its creation and start, the action and reason prefix while the joiner runs, then
    // the action and drift while it is stopped)
    let cases = [
        (
            NEW_PROVIDER_ID,
            ("2026-11-21T22:05:00Z", "2026-11-21T22:05:01Z"),
            ("Recreate", "NetworkProviderReplaced:"),
            ("Recreate", network_mode),
        ),
        (
            PROVIDER_ID,
            ("2026-11-21T21:59:00Z", "2026-11-21T22:01:00.2Z"),
            ("Restart", "NetworkProviderRestarted:"),
            ("Start", &[][..]),
        ),
    ];
    for (provider, (created, started), (action, reason), (stopped_action, stopped_drift)) in cases {
        let facts = with_providers(provider, created, started);
        let running = follower(&desired, PROVIDER_ID);
        let expect = Expect { actions: &[action], drift: network_mode };
        check_because(&desired, Some(&running), &facts, expect, reason);
        check(&desired, Some(&stopped), &facts, Expect { actions: &[stopped_action], drift: stopped_drift });
    }
    // The drift names the container the joiner is in and the one it should be in.
    let facts = with_providers(NEW_PROVIDER_ID, "2026-11-21T22:05:00Z", "2026-11-21T22:05:01Z");
    let plan = plan(&desired, Some(&follower(&desired, PROVIDER_ID)), &facts);
    assert_eq!(plan.drift[0].actual.as_deref(), Some("container:d00d0000d00d"));
    assert_eq!(plan.drift[0].desired.as_deref(), Some("container:db (feed0000feed)"));
    // Meant to stay stopped: nothing to catch up with.
    let facts = with_providers(PROVIDER_ID, "2026-11-21T21:59:00Z", "2026-11-21T22:01:00.2Z");
    let mut kept_stopped = desired.clone();
    kept_stopped.spec.run_state = Some(RunState::Stopped);
    check(&kept_stopped, Some(&stopped), &facts, NOTHING);
}

#[test]
fn a_linker_follows_its_targets_new_container_and_address() {
    let desired = spec(r#"{"image": "kedge-test/app:v1", "links": ["db:database", "cache"]}"#);
    let linker = follower(&desired, "");
    // Target replaced after the link was made: only a new container links to the new one.
    let replaced = with_providers(NEW_PROVIDER_ID, "2026-11-21T22:05:00Z", "2026-11-21T22:05:01Z");
    let expect = Expect { actions: &["Recreate"], drift: &["spec.links[0]"] };
    check_because(&desired, Some(&linker), &replaced, expect, "LinkTargetReplaced:");
    // Same target container, started again (a new address): a restart rewrites /etc/hosts.
    let restarted = with_providers(PROVIDER_ID, "2026-11-21T21:59:00Z", "2026-11-21T22:03:00Z");
    let expect = Expect { actions: &["Restart"], drift: &["spec.links[0]"] };
    let plan = check_because(&desired, Some(&linker), &restarted, expect, "LinkTargetRestarted:");
    let Action::Restart { container, .. } = &plan.actions[0] else { unreachable!() };
    assert_eq!(container, CONTAINER_ID);
    // The safe recreate renames the old target aside; the engine's link follows the rename.
    let renamed = observed(&desired, |container| {
        *container = follower(&desired, "");
        container.links[0] = "/db-kedge-old-1:/web/database".to_owned();
    });
    check(
        &desired,
        Some(&renamed),
        &providers_unchanged(),
        Expect { actions: &["Recreate"], drift: &["spec.links"] },
    );
    // A link added to or removed from the spec takes a new container too.
    let fewer = spec(r#"{"image": "kedge-test/app:v1", "links": ["db:database"]}"#);
    check(
        &fewer,
        Some(&linker),
        &providers_unchanged(),
        Expect { actions: &["Recreate"], drift: &["spec.links"] },
    );
}

#[test]
fn start_interval_is_sent_and_compared_only_where_the_engine_has_it() {
    let desired =
        spec(r#"{"image": "kedge-test/app:v1", "healthcheck": {"test": "true", "startInterval": "1s"}}"#);
    // API 1.44 and later: sent, and kept by the engine.
    let plan = check(&desired, None, &facts(), Expect { actions: &["Create", "Start"], drift: &[] });
    let Action::Create { config } = &plan.actions[0] else { unreachable!() };
    assert_eq!(
        config.healthcheck.as_ref().and_then(|check| check.start_interval),
        Some(Duration::from_secs(1))
    );
    check(&desired, Some(&observed(&desired, |_| {})), &facts(), NOTHING);
    // An older engine drops it: not sent, and its absence is not drift to recreate for ever.
    let old_engine = ImageFacts { engine_lacks_start_interval: true, ..facts() };
    let plan = check(&desired, None, &old_engine, Expect { actions: &["Create", "Start"], drift: &[] });
    let Action::Create { config } = &plan.actions[0] else { unreachable!() };
    assert_eq!(config.healthcheck.as_ref().and_then(|check| check.start_interval), None);
    let dropped = observed(&desired, |container| {
        if let Some(check) = &mut container.healthcheck {
            check.start_interval = None;
        }
    });
    check(&desired, Some(&dropped), &old_engine, NOTHING);
    check(
        &desired,
        Some(&dropped),
        &facts(),
        Expect { actions: &["Recreate"], drift: &["spec.healthcheck"] },
    );
}

#[test]
fn dns_tty_and_stdin_recreate_and_dns_order_matters() {
    let before = spec(r#"{"image": "kedge-test/app:v1"}"#);
    let running = observed(&before, |o| o.process.shm_size = Some(64 << 20));
    check(&before, Some(&running), &facts(), NOTHING);
    let recreate = |after: &str, drift: &[&str]| {
        check(&spec(after), Some(&running), &facts(), Expect { actions: &["Recreate"], drift });
    };
    recreate(r#"{"image": "kedge-test/app:v1", "dns": ["10.0.0.53"]}"#, &["spec.dns"]);
    recreate(r#"{"image": "kedge-test/app:v1", "dnsSearch": ["svc.example"]}"#, &["spec.dnsSearch"]);
    recreate(r#"{"image": "kedge-test/app:v1", "dnsOptions": ["ndots:2"]}"#, &["spec.dnsOptions"]);
    recreate(r#"{"image": "kedge-test/app:v1", "tty": true}"#, &["spec.tty"]);
    recreate(r#"{"image": "kedge-test/app:v1", "stdinOpen": true}"#, &["spec.stdinOpen"]);
    // Declared and created so: nothing to do.
    let full = spec(
        r#"{"image": "kedge-test/app:v1", "dns": ["10.0.0.53", "10.0.0.54"], "dnsSearch": ["a.example"],
            "dnsOptions": ["ndots:2"], "tty": true, "stdinOpen": true}"#,
    );
    check(&full, Some(&observed(&full, |_| {})), &facts(), NOTHING);
    // The resolver asks the servers in order: another order is drift (seen from inspect, the
    // spec's hash unchanged).
    let reordered = observed(&full, |o| o.process.dns.reverse());
    check(&full, Some(&reordered), &facts(), Expect { actions: &["Recreate"], drift: &["spec.dns"] });
    // A tmpfs's mode: a change recreates; Docker's default declared is no drift.
    let tmpfs = |mode: &str| {
        spec(&format!(
            r#"{{"image": "kedge-test/app:v1", "mounts": [{{"type": "tmpfs", "target": "/run", "tmpfsMode": "{mode}"}}]}}"#
        ))
    };
    let running_1770 = observed(&tmpfs("1770"), |_| {});
    check(&tmpfs("1770"), Some(&running_1770), &facts(), NOTHING);
    check(
        &tmpfs("0700"),
        Some(&running_1770),
        &facts(),
        Expect { actions: &["Recreate"], drift: &["spec.mounts[/run]"] },
    );
    let plain = spec(r#"{"image": "kedge-test/app:v1", "mounts": [{"type": "tmpfs", "target": "/run"}]}"#);
    check(&tmpfs("1777"), Some(&observed(&plain, |_| {})), &facts(), NOTHING);
    // A terminal taken away by hand (inspect says no tty): recreated with one.
    let no_tty = observed(&full, |o| o.process.tty = false);
    check(&full, Some(&no_tty), &facts(), Expect { actions: &["Recreate"], drift: &["spec.tty"] });
}

#[test]
fn process_settings_recreate_and_the_engine_default_shm_size_is_not_drift() {
    let before = spec(r#"{"image": "kedge-test/app:v1"}"#);
    let running = observed(&before, |o| o.process.shm_size = Some(64 << 20));
    check(&before, Some(&running), &facts(), NOTHING);
    let recreate = |after: &str, drift: &[&str]| {
        check(&spec(after), Some(&running), &facts(), Expect { actions: &["Recreate"], drift });
    };
    recreate(r#"{"image": "kedge-test/app:v1", "init": true}"#, &["spec.init"]);
    recreate(r#"{"image": "kedge-test/app:v1", "shmSize": "128Mi"}"#, &["spec.shmSize"]);
    recreate(r#"{"image": "kedge-test/app:v1", "extraHosts": ["db:10.0.0.5"]}"#, &["spec.extraHosts"]);
    recreate(
        r#"{"image": "kedge-test/app:v1", "ulimits": {"nofile": {"soft": 10, "hard": 20}}}"#,
        &["spec.ulimits"],
    );
    // Declared and created so: nothing to do, whatever the order of the hosts.
    let full = spec(
        r#"{"image": "kedge-test/app:v1", "init": true, "shmSize": "128Mi", "extraHosts": ["a:10.0.0.1", "b:10.0.0.2"],
            "ulimits": {"nproc": {"soft": 5, "hard": 5}, "nofile": {"soft": 10, "hard": 20}}}"#,
    );
    check(&full, Some(&observed(&full, |o| o.process.extra_hosts.reverse())), &facts(), NOTHING);
    // Removed from the spec: the container still has them, so it is recreated without.
    check(
        &before,
        Some(&observed(&full, |_| {})),
        &facts(),
        Expect { actions: &["Recreate"], drift: &["spec.init", "spec.extraHosts", "spec.ulimits"] },
    );
}

#[test]
fn isolation_changes_recreate_and_the_engine_default_ipc_mode_is_not_drift() {
    let before = spec(r#"{"image": "kedge-test/app:v1"}"#);
    let running = observed(&before, |_| {});
    check(
        &before,
        Some(&observed(&before, |o| o.isolation.ipc_mode = Some("shareable".to_owned()))),
        &facts(),
        NOTHING,
    );
    check(
        &before,
        Some(&observed(&before, |o| o.isolation.security_opt = vec!["label=disable".to_owned()])),
        &facts(),
        NOTHING,
    );
    let recreate = |after: &str, drift: &[&str]| {
        check(&spec(after), Some(&running), &facts(), Expect { actions: &["Recreate"], drift });
    };
    recreate(r#"{"image": "kedge-test/app:v1", "pidMode": "host"}"#, &["spec.pidMode"]);
    recreate(r#"{"image": "kedge-test/app:v1", "ipcMode": "host"}"#, &["spec.ipcMode"]);
    recreate(r#"{"image": "kedge-test/app:v1", "devices": ["/dev/fuse"]}"#, &["spec.devices"]);
    recreate(
        r#"{"image": "kedge-test/app:v1", "securityOpt": ["no-new-privileges"]}"#,
        &["spec.securityOpt"],
    );
    recreate(
        r#"{"image": "kedge-test/app:v1", "sysctls": {"net.ipv4.tcp_syncookies": "0"}}"#,
        &["spec.sysctls"],
    );
    // `pidMode: private` is Docker's default: no mode at all.
    check(
        &spec(r#"{"image": "kedge-test/app:v1", "pidMode": "private"}"#),
        Some(&running),
        &facts(),
        NOTHING,
    );
    // Removed from the spec: the container still has it, so it is recreated without it.
    let with_device =
        spec(r#"{"image": "kedge-test/app:v1", "devices": ["/dev/fuse:/dev/fuse:r"], "ipcMode": "none"}"#);
    let running = observed(&with_device, |_| {});
    check(
        &before,
        Some(&running),
        &facts(),
        Expect { actions: &["Recreate"], drift: &["spec.ipcMode", "spec.devices"] },
    );
}

/// `secretEnv` values as the agent resolves them: `DB_PASSWORD` from secret `db`, key `password`.
fn secret_facts(value: &str) -> ImageFacts {
    let secret = kedge_crds::Secret::new("db", BTreeMap::from([("password".to_owned(), value.to_owned())]));
    let refs = BTreeMap::from([(
        "DB_PASSWORD".to_owned(),
        kedge_crds::SecretKeyRef { secret: "db".into(), key: "password".into() },
    )]);
    let secret_env = kedge_crds::secret::resolve_env("default", &refs, |_| Some(secret.clone())).unwrap();
    ImageFacts { secret_env, ..facts() }
}

#[test]
fn a_secret_value_goes_into_the_env_and_a_new_one_recreates_without_showing_either() {
    let desired = spec(
        r#"{"image": "kedge-test/app:v1", "env": {"MODE": "prod"},
            "secretEnv": {"DB_PASSWORD": {"secret": "db", "key": "password"}}}"#,
    );
    let created_plan = check(
        &desired,
        None,
        &secret_facts("old-value"),
        Expect { actions: &["Create", "Start"], drift: &[] },
    );
    let Action::Create { config } = &created_plan.actions[0] else { unreachable!() };
    assert!(config.env.contains(&"DB_PASSWORD=old-value".to_owned()), "{:?}", config.env);
    assert!(!format!("{created_plan:?}").contains("old-value"), "Debug redacts: {created_plan:?}");
    let running = created(config, &image());
    // The same value: nothing to do. The hash carries the fingerprint, not the value.
    check(&desired, Some(&running), &secret_facts("old-value"), NOTHING);
    let hash = crate::docker::labels::spec_hash(&running.labels).unwrap().to_owned();
    assert_ne!(hash, kedge_crds::spec_hash(&desired.spec), "the fingerprint is in the hash");
    // A new value: a recreate, its drift redacted on both sides.
    let plan = check(
        &desired,
        Some(&running),
        &secret_facts("new-value"),
        Expect { actions: &["Recreate"], drift: &["spec.secretEnv.DB_PASSWORD"] },
    );
    assert_eq!(plan.drift[0].desired.as_deref(), Some("<redacted>"));
    assert_eq!(plan.drift[0].actual.as_deref(), Some("<redacted>"));
    let shown = format!("{plan:?}");
    assert!(!shown.contains("old-value") && !shown.contains("new-value"), "{shown}");
    // The spec stops naming it: the container's label still marks the variable as a secret's.
    let plain = spec(r#"{"image": "kedge-test/app:v1", "env": {"MODE": "prod"}}"#);
    let plan = check(
        &plain,
        Some(&running),
        &facts(),
        Expect { actions: &["Recreate"], drift: &["spec.secretEnv.DB_PASSWORD"] },
    );
    assert!(!format!("{plan:?}").contains("old-value"));
}
