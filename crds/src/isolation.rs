//! The spec fields that loosen a container's isolation from the host, in Docker's meaning:
//! `pidMode`, `ipcMode`, `devices`, `securityOpt` and `sysctls`. Their syntax is checked here (the
//! validator reports it with the field's path); what each may do is the policy's (`policy.rs`).

/// The PID modes kedge accepts: `host` (the host's process namespace) or `private`, the default.
pub const PID_MODES: &[&str] = &["host", "private"];
/// The IPC modes kedge accepts (Docker's, without `container:NAME`).
pub const IPC_MODES: &[&str] = &["host", "private", "shareable", "none"];

/// The most `devices` a spec may list: far more than any host has to map, few enough that a
/// request's size, the policy's check and the create call stay small.
pub const MAX_DEVICES: usize = 256;
/// The most `securityOpt` entries a spec may list (Docker knows five options).
pub const MAX_SECURITY_OPTS: usize = 64;
/// The most `sysctls` a spec may set.
pub const MAX_SYSCTLS: usize = 256;
/// The longest device, security option, sysctl name or sysctl value, in bytes: the kernel takes a
/// sysctl value of at most a page, and no path or profile name comes near it.
pub const MAX_ENTRY_BYTES: usize = 4096;

/// Refuses an entry longer than [`MAX_ENTRY_BYTES`], without repeating it.
pub fn check_length(text: &str) -> Result<(), String> {
    if text.len() > MAX_ENTRY_BYTES {
        return Err(format!("is {} bytes long; at most {MAX_ENTRY_BYTES} are allowed", text.len()));
    }
    Ok(())
}

/// A host device mapped into the container, with every part spelled out.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeviceMapping {
    pub host_path: String,
    pub container_path: String,
    /// The cgroup permissions: a combination of `r`, `w` and `m`.
    pub permissions: String,
}

/// One `securityOpt` entry, split: `seccomp=unconfined` is `("seccomp", Some("unconfined"))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityOption<'a> {
    pub key: &'a str,
    pub value: Option<&'a str>,
}

/// Parses `HOST_PATH[:CONTAINER_PATH][:PERMISSIONS]` as `docker run --device` does.
pub fn parse_device(text: &str) -> Result<DeviceMapping, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let is_permissions = |part: &str| !part.is_empty() && part.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    let (host, container, permissions) = match parts.as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, last] if is_permissions(last) => (*host, *host, *last),
        [host, container] => (*host, *container, "rwm"),
        [host, container, permissions] => (*host, *container, *permissions),
        _ => return Err(format!("`{text}` is not HOST_PATH[:CONTAINER_PATH][:PERMISSIONS]")),
    };
    if !host.starts_with('/') {
        return Err(format!("the host path `{host}` must be absolute"));
    }
    if !container.starts_with('/') {
        return Err(format!("the container path `{container}` must be absolute"));
    }
    if !is_permissions(permissions) {
        return Err(format!("the permissions `{permissions}` must be a combination of `r`, `w` and `m`"));
    }
    Ok(DeviceMapping {
        host_path: host.to_owned(),
        container_path: container.to_owned(),
        permissions: permissions.to_owned(),
    })
}

/// Splits a `securityOpt` entry at its first `=` (or the older `:`) and checks it names an option
/// Docker knows with a value it takes.
pub fn parse_security_option(text: &str) -> Result<SecurityOption<'_>, String> {
    // As the engine splits it: at the first `=`, or else at the first `:` (its older separator).
    let (key, value) = match text.split_once('=').or_else(|| text.split_once(':')) {
        Some((key, value)) => (key, Some(value)),
        None => (text, None),
    };
    let option = SecurityOption { key, value };
    match (key, value) {
        ("no-new-privileges", None | Some("true" | "false")) => Ok(option),
        ("seccomp", Some("unconfined")) => Ok(option),
        ("seccomp", _) => Err(
            "`seccomp` takes `unconfined` (kedge does not read seccomp profile files; without the option Docker's default profile applies)"
                .to_owned(),
        ),
        ("apparmor", Some(profile)) if !profile.is_empty() => Ok(option),
        ("label", Some(value)) if !value.is_empty() => Ok(option),
        ("systempaths", _) => Err(
            "`systempaths=unconfined` is an option of the docker command line, which turns it into empty masked and read-only path lists; the engine's API refuses it, so kedge cannot pass it on".to_owned(),
        ),
        ("writable-cgroups", Some("true" | "false")) => Ok(option),
        ("no-new-privileges" | "apparmor" | "label" | "writable-cgroups", _) => {
            Err(format!("`{text}` is not a valid value for `{key}`"))
        }
        _ => Err(format!(
            "`{key}` is not a Docker security option (expected no-new-privileges, seccomp, apparmor, label or writable-cgroups)"
        )),
    }
}

/// Whether `securityOpt` leaves `no-new-privileges` on (`no-new-privileges` or `...=true`). The
/// engine reads the list in order and the last mention wins, so this does too:
/// `[no-new-privileges, no-new-privileges=false]` is off.
pub fn has_no_new_privileges(security_opt: &[String]) -> bool {
    security_opt
        .iter()
        .rev()
        .filter_map(|text| parse_security_option(text).ok())
        .find(|option| option.key == "no-new-privileges")
        .is_some_and(|option| matches!(option.value, None | Some("true")))
}

/// A sysctl name: dot- or slash-separated lowercase words (`net.ipv4.ip_forward`).
pub fn check_sysctl_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with(['.', '/'])
        && !name.ends_with(['.', '/'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!("`{name}` is not a sysctl name (such as `net.ipv4.ip_unprivileged_port_start`)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_as_docker_run_does() {
        let check = |text: &str, expected: Result<(&str, &str, &str), &str>| {
            let got = parse_device(text);
            match expected {
                Ok((host, container, permissions)) => assert_eq!(
                    got,
                    Ok(DeviceMapping {
                        host_path: host.into(),
                        container_path: container.into(),
                        permissions: permissions.into()
                    }),
                    "{text}"
                ),
                Err(part) => assert!(got.as_ref().is_err_and(|e| e.contains(part)), "{text}: {got:?}"),
            }
        };
        check("/dev/fuse", Ok(("/dev/fuse", "/dev/fuse", "rwm")));
        check("/dev/fuse:r", Ok(("/dev/fuse", "/dev/fuse", "r")));
        check("/dev/sda:/dev/xvda", Ok(("/dev/sda", "/dev/xvda", "rwm")));
        check("/dev/sda:/dev/xvda:rw", Ok(("/dev/sda", "/dev/xvda", "rw")));
        check("dev/sda", Err("absolute"));
        check("/dev/sda:xvda", Err("absolute"));
        check("/dev/sda:/dev/xvda:rx", Err("permissions"));
        check("/a:/b:r:w", Err("HOST_PATH"));
    }

    #[test]
    fn security_options_are_docker_s() {
        for ok in [
            "no-new-privileges",
            "no-new-privileges=true",
            "no-new-privileges:false",
            "seccomp=unconfined",
            "apparmor=unconfined",
            "apparmor=docker-default",
            "label=disable",
            "label=level:s0:c1",
        ] {
            assert!(parse_security_option(ok).is_ok(), "{ok}");
        }
        for bad in [
            "seccomp=/etc/profile.json",
            "seccomp",
            "no-new-privileges=yes",
            "apparmor=",
            "systempaths=unconfined",
            "privileged",
            // The engine splits at `=` first: this is the key `apparmor:x`, which it refuses.
            "apparmor:x=y",
        ] {
            assert!(parse_security_option(bad).is_err(), "{bad}");
        }
        assert!(has_no_new_privileges(&["no-new-privileges".into()]));
        assert!(has_no_new_privileges(&["no-new-privileges:true".into()]));
        assert!(!has_no_new_privileges(&["no-new-privileges=false".into()]));
        assert!(!has_no_new_privileges(&[]));
        let last_wins = |options: &[&str]| {
            has_no_new_privileges(&options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        };
        assert!(!last_wins(&["no-new-privileges", "no-new-privileges=false"]));
        assert!(last_wins(&["no-new-privileges=false", "no-new-privileges"]));
    }

    #[test]
    fn sysctl_names() {
        assert!(check_sysctl_name("net.ipv4.ip_forward").is_ok());
        assert!(check_sysctl_name("net/ipv4/conf/eth0/forwarding").is_ok());
        for bad in ["", ".net", "net.", "net ipv4", "NET=1"] {
            assert!(check_sysctl_name(bad).is_err(), "{bad}");
        }
    }
}
