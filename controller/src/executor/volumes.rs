//! Anonymous volumes across a recreate (Compose's rule): the new container gets the old one's
//! anonymous volumes at the same targets, so a database image's `VOLUME /data` or a spec's
//! `mounts: ["/data"]` keeps its data through an update, a spec change and a rollback.
//!
//! An anonymous volume of the old container (from the config's anonymous mount, the image's
//! `VOLUME` or `docker run -v /path`) is carried when the new config declares an anonymous volume
//! at its target, or declares nothing there while the old container's `Config.Volumes` names the
//! target (the image's `VOLUME`, `-v /path`). A bind, tmpfs or named volume the new config puts
//! there wins, as it does in Compose. Named volumes and binds are the config's to say and are never
//! carried. A carried volume is mounted by name, and the `io.kedge.carried-volumes` label says which
//! mounts stand for an anonymous declaration, so reading the container back gives the declaration
//! (see `docker::labels::carried_volumes`) and the next recreate carries them again.
//!
//! Mounted by name, a carried volume is not removed with the new container by a rollback
//! (`docker rm -v` removes only volumes a container got without a name), and the old container is
//! removed without its volumes, so no recreate orphans or deletes one.

use std::collections::BTreeMap;

use crate::docker::labels::{self, CarriedVolume};
use crate::docker::{ContainerConfig, Mount, MountSource, ObservedContainer};

/// `config` with the anonymous volumes of `old` it keeps mounted by name, and the
/// `io.kedge.carried-volumes` label saying so. Unchanged when there is nothing to carry.
pub fn with_carried_volumes(old: &ObservedContainer, config: &ContainerConfig) -> ContainerConfig {
    let mut carried = BTreeMap::new();
    let mut config = config.clone();
    for volume in &old.volumes {
        let target = normalize(&volume.target);
        if !is_anonymous(old, target) {
            continue;
        }
        let declared = config.mounts.iter().position(|mount| normalize(&mount.target) == target);
        let kind = match declared.map(|at| &config.mounts[at]) {
            Some(Mount { source: MountSource::Volume { name: None }, .. }) => CarriedVolume::Declared,
            // The new config mounts something else there: that wins.
            Some(_) => continue,
            None if old.config_volumes.iter().any(|path| normalize(path) == target) => {
                CarriedVolume::Implicit
            }
            // Declared anonymous before and no longer: the user dropped it.
            None => continue,
        };
        let read_only = match declared {
            Some(at) => config.mounts.remove(at).read_only,
            None => volume.read_only,
        };
        config.mounts.push(Mount {
            source: MountSource::Volume { name: Some(volume.name.clone()) },
            target: target.to_string(),
            read_only,
        });
        carried.insert(target.to_string(), kind);
    }
    if !carried.is_empty() {
        config.labels.insert(labels::CARRIED_VOLUMES.to_string(), labels::carried_volumes_value(&carried));
    }
    config
}

/// Whether the old container's volume at `target` is anonymous: no named volume is declared there
/// (a carried one reads back as anonymous, see `docker::convert`).
fn is_anonymous(old: &ObservedContainer, target: &str) -> bool {
    !old.mounts.iter().any(|mount| {
        normalize(&mount.target) == target && matches!(mount.source, MountSource::Volume { name: Some(_) })
    })
}

/// `/data/` and `/data` are one target for Docker.
fn normalize(target: &str) -> &str {
    match target.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::AttachedVolume;

    const OLD_VOLUME: &str = "0123abcd";

    fn anonymous(target: &str) -> Mount {
        Mount { source: MountSource::Volume { name: None }, target: target.into(), read_only: false }
    }

    fn named(name: &str, target: &str) -> Mount {
        Mount {
            source: MountSource::Volume { name: Some(name.into()) },
            target: target.into(),
            read_only: false,
        }
    }

    fn bind(path: &str, target: &str) -> Mount {
        Mount {
            source: MountSource::Bind { host_path: path.into() },
            target: target.into(),
            read_only: false,
        }
    }

    /// An old container with `declared` create-time mounts, `config_volumes`, and one volume
    /// per target in `attached` (named `OLD_VOLUME` for the first, `OLD_VOLUME-<n>` after).
    fn old(declared: Vec<Mount>, config_volumes: &[&str], attached: &[&str]) -> ObservedContainer {
        ObservedContainer {
            mounts: declared,
            config_volumes: config_volumes.iter().map(|path| path.to_string()).collect(),
            volumes: attached
                .iter()
                .enumerate()
                .map(|(at, target)| AttachedVolume {
                    name: if at == 0 { OLD_VOLUME.into() } else { format!("{OLD_VOLUME}-{at}") },
                    target: target.to_string(),
                    read_only: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Checks the carried mounts (sorted) and the label's kinds.
    fn check(
        old: &ObservedContainer,
        new_mounts: Vec<Mount>,
        mounts: Vec<Mount>,
        kinds: &[(&str, CarriedVolume)],
    ) {
        let config = ContainerConfig { mounts: new_mounts, ..Default::default() };
        let mut got = with_carried_volumes(old, &config);
        got.mounts.sort();
        let mut want = mounts;
        want.sort();
        assert_eq!(got.mounts, want);
        let kinds: BTreeMap<String, CarriedVolume> =
            kinds.iter().map(|(target, kind)| (target.to_string(), *kind)).collect();
        assert_eq!(labels::carried_volumes(&got.labels), kinds);
        assert_eq!(got.labels.contains_key(labels::CARRIED_VOLUMES), !kinds.is_empty());
    }

    #[test]
    fn a_declared_anonymous_volume_is_carried_by_name() {
        let old = old(vec![anonymous("/data")], &[], &["/data"]);
        check(
            &old,
            vec![anonymous("/data")],
            vec![named(OLD_VOLUME, "/data")],
            &[("/data", CarriedVolume::Declared)],
        );
    }

    #[test]
    fn an_image_volume_is_carried_when_nothing_is_declared_there() {
        let old = old(vec![], &["/data"], &["/data"]);
        check(&old, vec![], vec![named(OLD_VOLUME, "/data")], &[("/data", CarriedVolume::Implicit)]);
    }

    #[test]
    fn something_else_declared_at_the_target_wins() {
        let old = old(vec![], &["/data"], &["/data"]);
        check(&old, vec![bind("/srv", "/data")], vec![bind("/srv", "/data")], &[]);
        check(&old, vec![named("db", "/data")], vec![named("db", "/data")], &[]);
    }

    #[test]
    fn named_volumes_and_binds_are_not_carried() {
        // The old container's named volume: the new config says what it wants, even nothing.
        let old = old(vec![named("db", "/data")], &[], &["/data"]);
        check(&old, vec![], vec![], &[]);
        check(&old, vec![anonymous("/data")], vec![anonymous("/data")], &[]);
        check(&old, vec![named("db", "/data")], vec![named("db", "/data")], &[]);
    }

    #[test]
    fn an_anonymous_volume_dropped_from_the_config_is_not_carried() {
        let old = old(vec![anonymous("/data")], &[], &["/data"]);
        check(&old, vec![], vec![], &[]);
    }

    #[test]
    fn a_carried_volume_is_carried_again() {
        // A recreated container reads back as its declaration (docker::convert), its volume named.
        let old = old(vec![], &["/data"], &["/data"]);
        let once = with_carried_volumes(&old, &ContainerConfig::default());
        let twice = with_carried_volumes(&old, &once);
        assert_eq!(once, twice);
    }

    #[test]
    fn targets_compare_without_a_trailing_slash_and_keep_read_only() {
        let old = old(vec![], &["/data/"], &["/data"]);
        let mut read_only = anonymous("/data/");
        read_only.read_only = true;
        let mut want = named(OLD_VOLUME, "/data");
        want.read_only = true;
        check(&old, vec![read_only], vec![want], &[("/data", CarriedVolume::Declared)]);
    }

    #[test]
    fn several_volumes_each_follow_the_rule() {
        let old = old(vec![anonymous("/a")], &["/b", "/c"], &["/a", "/b", "/c"]);
        check(
            &old,
            vec![anonymous("/a"), bind("/srv", "/c"), anonymous("/new")],
            vec![
                named(OLD_VOLUME, "/a"),
                named(&format!("{OLD_VOLUME}-1"), "/b"),
                bind("/srv", "/c"),
                anonymous("/new"),
            ],
            &[("/a", CarriedVolume::Declared), ("/b", CarriedVolume::Implicit)],
        );
    }
}
