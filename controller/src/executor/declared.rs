//! The config a container was declared with, recovered from inspect by removing its image's defaults.
//!
//! Inspect merges the image's Env, Cmd, Entrypoint, WorkingDir, User, Healthcheck, ExposedPorts,
//! Labels and StopSignal into the container's config. Copying them into a re-created container
//! freezes the old image's defaults over the new image's (Portainer issues 8835 and 12072). This
//! is used by `kedge recreate NAME` of containers kedge did not create; managed containers are
//! recreated from their spec instead.

use crate::docker::{ContainerConfig, ImageInfo, ObservedContainer};

/// The declared part of `observed`, given the image it was created from (`None`: the image is
/// gone, everything is kept). The rules live in [`crate::mapping::declared_config`]; this is the
/// executor's entry point to them.
pub fn declared_config(observed: &ObservedContainer, image: Option<&ImageInfo>) -> ContainerConfig {
    match image {
        Some(image) => crate::mapping::declared_config(observed, image),
        None => crate::mapping::declared_config(observed, &ImageInfo::default()),
    }
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
            env: vec!["PATH=/bin".into(), "VERSION=1".into(), "MODE=x".into()].into(),
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
