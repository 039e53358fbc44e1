//! The config a container was declared with, recovered from inspect by removing its image's defaults.
//!
//! Inspect merges the image's Env, Cmd, Entrypoint, WorkingDir, User, Healthcheck, ExposedPorts,
//! Labels and StopSignal into the container's config. Copying them into a re-created container
//! freezes the old image's defaults over the new image's (Portainer issues 8835 and 12072). This
//! is used by `kedge recreate NAME` of containers kedge did not create; managed containers are
//! recreated from their spec instead.

use crate::docker::labels;
use crate::docker::{ContainerConfig, ImageInfo, NetworkAttachment, ObservedContainer};

/// The declared part of `observed`, given the image it was created from (`None`: the image is
/// gone, everything is kept). Recreate markers are dropped from the labels.
pub fn declared_config(observed: &ObservedContainer, image: Option<&ImageInfo>) -> ContainerConfig {
    let default_image = ImageInfo::default();
    let image = image.unwrap_or(&default_image);
    let differs =
        |value: &Option<String>, default: &Option<String>| value.clone().filter(|_| value != default);
    let short_id: String = observed.id.chars().take(12).collect();
    let bound: Vec<_> = observed.port_bindings.iter().map(|b| (b.container_port, b.protocol)).collect();
    let mut config = ContainerConfig {
        name: observed.name.clone(),
        image: observed.image.clone(),
        env: observed.env.iter().filter(|entry| !image.env.contains(entry)).cloned().collect(),
        cmd: observed.cmd.clone().filter(|cmd| Some(cmd) != image.cmd.as_ref()),
        entrypoint: observed.entrypoint.clone().filter(|e| Some(e) != image.entrypoint.as_ref()),
        working_dir: differs(&observed.working_dir, &image.working_dir),
        user: differs(&observed.user, &image.user),
        // Docker names an undeclared hostname after the container's short ID.
        hostname: observed.hostname.clone().filter(|h| *h != short_id),
        labels: observed
            .labels
            .iter()
            .filter(|(k, v)| image.labels.get(*k) != Some(*v))
            .filter(|(k, _)| !k.starts_with("io.kedge.recreate-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        exposed_ports: observed
            .exposed_ports
            .iter()
            .filter(|p| !image.exposed_ports.contains(p) && !bound.contains(&(p.port, p.protocol)))
            .copied()
            .collect(),
        port_bindings: observed.port_bindings.clone(),
        mounts: observed.mounts.clone(),
        restart_policy: observed.restart_policy,
        resources: observed.resources.clone(),
        healthcheck: observed.healthcheck.clone().filter(|h| Some(h) != image.healthcheck.as_ref()),
        stop_signal: differs(&observed.stop_signal, &image.stop_signal),
        stop_timeout: observed.stop_timeout,
        cap_add: observed.cap_add.clone(),
        cap_drop: observed.cap_drop.clone(),
        privileged: observed.privileged,
        read_only_rootfs: observed.read_only_rootfs,
        log_config: observed.log_config.clone(),
        networks: Vec::new(),
    };
    // The network named by NetworkMode goes first: it is the one attached at create.
    let mut networks: Vec<NetworkAttachment> = observed
        .networks
        .iter()
        .map(|n| NetworkAttachment {
            network: n.network.clone(),
            aliases: n.aliases.iter().filter(|a| **a != short_id && **a != observed.name).cloned().collect(),
            ipv4_address: n.ipv4_address.clone(),
        })
        .collect();
    if let Some(mode) = &observed.network_mode {
        if let Some(at) = networks.iter().position(|n| &n.network == mode) {
            let first = networks.remove(at);
            networks.insert(0, first);
        }
    }
    config.networks = networks;
    debug_assert!(!config.labels.contains_key(labels::RECREATE_ID));
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{ExposedPort, ObservedNetwork, Protocol};

    #[test]
    fn image_defaults_are_not_declared() {
        let image = ImageInfo {
            env: vec!["PATH=/bin".into(), "VERSION=1".into()],
            cmd: Some(vec!["/bin/sleep".into(), "3600".into()]),
            exposed_ports: vec![ExposedPort { port: 80, protocol: Protocol::Tcp }],
            ..Default::default()
        };
        let observed = ObservedContainer {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            image: "app:latest".into(),
            env: vec!["PATH=/bin".into(), "VERSION=1".into(), "MODE=x".into()],
            cmd: Some(vec!["/bin/sleep".into(), "3600".into()]),
            hostname: Some("0123456789ab".into()),
            exposed_ports: vec![ExposedPort { port: 80, protocol: Protocol::Tcp }],
            labels: [
                ("io.kedge.recreate-id".to_string(), "x".to_string()),
                ("a".to_string(), "b".to_string()),
            ]
            .into(),
            network_mode: Some("two".into()),
            networks: vec![
                ObservedNetwork {
                    network: "one".into(),
                    aliases: vec!["0123456789ab".into()],
                    ..Default::default()
                },
                ObservedNetwork { network: "two".into(), aliases: vec!["db".into()], ..Default::default() },
            ],
            ..Default::default()
        };
        let config = declared_config(&observed, Some(&image));
        assert_eq!(config.env, vec!["MODE=x".to_string()]);
        assert_eq!(config.cmd, None);
        assert_eq!(config.hostname, None);
        assert!(config.exposed_ports.is_empty());
        assert_eq!(config.labels, [("a".to_string(), "b".to_string())].into());
        let networks: Vec<_> =
            config.networks.iter().map(|n| (n.network.as_str(), n.aliases.clone())).collect();
        assert_eq!(networks, vec![("two", vec!["db".to_string()]), ("one", vec![])]);
    }
}
