//! Every policy rule, both ways: refused at the level that names it, allowed one level below. One
//! `check(spec, level, expected paths)` helper, many small cases.

use serde_json::json;

use super::*;

/// Checks `spec` (JSON, as a user writes it) at `level`, and that exactly `expected` field paths are
/// refused, each naming the level that refuses it.
#[track_caller]
fn check_at(spec: serde_json::Value, level: PolicyLevel, expected: &[(&str, PolicyLevel)]) {
    let mut full = json!({"image": "busybox"});
    full.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
    let spec: ContainerSpec = serde_json::from_value(full).expect("a spec that parses");
    let found: Vec<(String, PolicyLevel)> =
        super::check(&spec, level).into_iter().map(|v| (v.path, v.level)).collect();
    let expected: Vec<(String, PolicyLevel)> =
        expected.iter().map(|(path, level)| ((*path).to_owned(), *level)).collect();
    assert_eq!(found, expected, "at level {level}");
}

use PolicyLevel::{Baseline, Privileged, Restricted};

/// A spec that `restricted` accepts, to add one field to.
fn clean() -> serde_json::Value {
    json!({"user": "1000:1000", "securityOpt": ["no-new-privileges"]})
}

fn with(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = clean();
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    spec
}

#[test]
fn a_clean_spec_passes_every_level() {
    for level in PolicyLevel::ALL {
        check_at(clean(), level, &[]);
    }
    let everyday = with(json!({
        "ports": ["8080:80"], "mounts": ["data:/data", "/srv/www:/usr/share/nginx/html:ro", {"type": "tmpfs", "target": "/tmp"}],
        "capAdd": ["NET_BIND_SERVICE"], "capDrop": ["ALL"], "networkMode": "bridge", "privileged": false,
        "postStart": [{"command": ["true"], "user": "app"}]
    }));
    check_at(everyday, Restricted, &[]);
}

#[test]
fn privileged_is_refused_at_baseline_and_allowed_at_privileged() {
    let spec = with(json!({"privileged": true}));
    check_at(spec.clone(), Baseline, &[("spec.privileged", Baseline)]);
    check_at(spec.clone(), Restricted, &[("spec.privileged", Baseline)]);
    check_at(spec, Privileged, &[]);
}

#[test]
fn capabilities_beyond_dockers_defaults_are_refused_at_baseline() {
    for capability in ["SYS_ADMIN", "NET_ADMIN", "sys_module", "CAP_SYS_PTRACE", "ALL", "all", "CAP_ALL"] {
        let spec = with(json!({"capAdd": ["CHOWN", capability]}));
        check_at(spec.clone(), Baseline, &[("spec.capAdd[1]", Baseline)]);
        check_at(spec.clone(), Privileged, &[]);
    }
}

#[test]
fn dockers_default_capabilities_may_be_added_back_at_baseline_but_not_at_restricted() {
    for capability in DOCKER_DEFAULT_CAPABILITIES.iter().filter(|c| **c != "NET_BIND_SERVICE") {
        let spec = with(json!({"capDrop": ["ALL"], "capAdd": [capability, format!("CAP_{capability}")]}));
        check_at(spec.clone(), Baseline, &[]);
        check_at(spec, Restricted, &[("spec.capAdd[0]", Restricted), ("spec.capAdd[1]", Restricted)]);
    }
    for capability in ["NET_BIND_SERVICE", "cap_net_bind_service"] {
        check_at(with(json!({"capAdd": [capability]})), Restricted, &[]);
    }
}

#[test]
fn the_host_network_is_refused_at_baseline() {
    let spec = with(json!({"networkMode": "host"}));
    check_at(spec.clone(), Baseline, &[("spec.networkMode", Baseline)]);
    check_at(spec, Privileged, &[]);
    for allowed in ["bridge", "none", "container:web"] {
        check_at(with(json!({"networkMode": allowed})), Restricted, &[]);
    }
}

#[test]
fn bind_mounts_of_sensitive_host_paths_are_refused_at_baseline_even_read_only() {
    let refused = [
        "/",
        "//",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run/containerd/containerd.sock",
        "/run/podman/podman.sock",
        "/run/user/1000/podman/podman.sock",
        "/proc",
        "/proc/1/root",
        "/sys/fs/cgroup",
        "/dev",
        "/dev/sda",
        "/etc",
        "/etc/shadow",
        "/boot",
        "/root/.ssh",
        "/var/lib/docker",
        "/var/lib/docker/volumes/x/_data",
        "/var/lib/kedge",
        "/lib/modules",
        "/run/systemd/private",
        // Above a sensitive path: its parents expose it.
        "/var",
        "/var/run",
        "/run",
        "/var/lib",
        // Spelled around the rule.
        "/var/lib/../run/docker.sock",
        "/tmp/../etc",
        "/etc/",
        "/./proc",
    ];
    for source in refused {
        for read_only in [":ro", ""] {
            let spec = with(json!({"mounts": ["data:/data", format!("{source}:/host{read_only}")]}));
            check_at(spec.clone(), Baseline, &[("spec.mounts[1].source", Baseline)]);
            check_at(spec, Privileged, &[]);
        }
    }
}

#[test]
fn bind_mounts_of_other_host_paths_are_allowed_at_baseline() {
    for source in [
        "/srv/app",
        "/home/user/site",
        "/var/lib/app",
        "/opt/data",
        "/tmp/x",
        "/etcetera",
        "/devices",
        "/procfs",
    ] {
        check_at(with(json!({"mounts": [format!("{source}:/data:ro")]})), Restricted, &[]);
        check_at(with(json!({"mounts": [format!("{source}:/data")]})), Baseline, &[]);
    }
}

#[test]
fn writable_bind_mounts_are_refused_at_restricted() {
    for mount in [
        json!("/srv/app:/data"),
        json!("/srv/app:/data:rw"),
        json!({"type": "bind", "source": "/srv", "target": "/data", "readOnly": false}),
    ] {
        let spec = with(json!({"mounts": [mount]}));
        check_at(spec.clone(), Restricted, &[("spec.mounts[0].readOnly", Restricted)]);
        check_at(spec, Baseline, &[]);
    }
    // Volumes and tmpfs mounts are the container's own: writable at every level.
    check_at(
        with(json!({"mounts": ["data:/data", "/anonymous", {"type": "tmpfs", "target": "/tmp"}]})),
        Restricted,
        &[],
    );
}

#[test]
fn restricted_requires_a_declared_non_root_user() {
    let nnp = json!({"securityOpt": ["no-new-privileges"]});
    check_at(nnp.clone(), Restricted, &[("spec.user", Restricted)]);
    check_at(json!({}), Baseline, &[]);
    let user = |user: &str| {
        let mut spec = nnp.clone();
        spec["user"] = json!(user);
        spec
    };
    for root in ["root", "0", "00", "0:0", "root:root", "0:1000", ":1000", ""] {
        check_at(user(root), Restricted, &[("spec.user", Restricted)]);
        check_at(user(root), Baseline, &[]);
    }
    for name in ["1000", "1000:0", "app", "app:app", "nobody", "10", "rooter"] {
        check_at(user(name), Restricted, &[]);
    }
}

#[test]
fn restricted_refuses_post_start_commands_run_as_root() {
    let spec = with(
        json!({"postStart": [{"command": ["true"]}, {"command": ["true"], "user": "root"}, {"command": ["true"], "user": "0:0"}]}),
    );
    check_at(
        spec.clone(),
        Restricted,
        &[("spec.postStart[1].user", Restricted), ("spec.postStart[2].user", Restricted)],
    );
    check_at(spec, Baseline, &[]);
}

#[test]
fn every_violation_is_reported_at_once() {
    let spec = json!({"privileged": true, "capAdd": ["SYS_ADMIN"], "networkMode": "host",
                      "mounts": ["/var/run/docker.sock:/var/run/docker.sock", "/srv:/srv"]});
    check_at(
        spec.clone(),
        Restricted,
        &[
            ("spec.privileged", Baseline),
            ("spec.capAdd[0]", Baseline),
            ("spec.networkMode", Baseline),
            ("spec.securityOpt", Restricted),
            ("spec.user", Restricted),
            ("spec.mounts[0].source", Baseline),
            ("spec.mounts[1].readOnly", Restricted),
        ],
    );
    check_at(
        spec,
        Baseline,
        &[
            ("spec.privileged", Baseline),
            ("spec.capAdd[0]", Baseline),
            ("spec.networkMode", Baseline),
            ("spec.mounts[0].source", Baseline),
        ],
    );
}

#[test]
fn a_violation_names_its_field_and_level() {
    let spec: ContainerSpec =
        serde_json::from_value(json!({"image": "busybox", "privileged": true})).unwrap();
    let violations = super::check(&spec, Baseline);
    let error = violations[0].to_field_error();
    assert_eq!(error.path, "spec.privileged");
    assert!(error.message.starts_with("refused by the `baseline` policy: "), "{}", error.message);
    assert!(violations[0].to_string().starts_with("spec.privileged: refused by the `baseline` policy"));
}

#[test]
fn levels_read_and_print_as_their_names() {
    for level in PolicyLevel::ALL {
        assert_eq!(level.to_string().parse::<PolicyLevel>(), Ok(level));
        assert_eq!(serde_json::to_value(level).unwrap(), json!(level.as_str()));
    }
    assert!("Baseline".parse::<PolicyLevel>().is_err());
    assert!("".parse::<PolicyLevel>().is_err());
    assert_eq!(PolicyLevel::default(), Baseline);
    assert!(Privileged < Baseline && Baseline < Restricted);
}

#[test]
fn every_namespace_gets_the_default_level_until_levels_are_stored() {
    let settings = PolicySettings { default_level: Restricted, ..Default::default() };
    assert_eq!(settings.level_for("default"), Restricted);
    assert_eq!(settings.level_for("jobs"), Restricted);
    assert_eq!(PolicySettings::default().level_for("default"), Baseline);
}

#[test]
fn sensitive_paths_are_normalized_absolute_paths() {
    for path in SENSITIVE_HOST_PATHS.iter().copied() {
        assert_eq!(normalize(path), path);
        assert_ne!(path, "/");
    }
}

#[test]
fn host_pid_and_ipc_namespaces_are_refused_at_baseline() {
    for (field, path) in [("pidMode", "spec.pidMode"), ("ipcMode", "spec.ipcMode")] {
        let spec = with(json!({field: "host"}));
        check_at(spec.clone(), Baseline, &[(path, Baseline)]);
        check_at(spec, Privileged, &[]);
    }
    check_at(with(json!({"pidMode": "private", "ipcMode": "shareable"})), Restricted, &[]);
    check_at(with(json!({"ipcMode": "none"})), Restricted, &[]);
}

#[test]
fn every_device_is_refused_at_baseline() {
    let spec = with(json!({"devices": ["/dev/fuse", "/dev/null:/dev/mine:r"]}));
    check_at(spec.clone(), Baseline, &[("spec.devices[0]", Baseline), ("spec.devices[1]", Baseline)]);
    check_at(spec, Privileged, &[]);
}

#[test]
fn security_options_that_switch_a_confinement_off_are_refused_at_baseline() {
    for option in [
        "seccomp=unconfined",
        "seccomp:unconfined",
        "apparmor=unconfined",
        "writable-cgroups=true",
        "label=disable",
        "label=user:root",
        "label=role:system_r",
        "label=type:spc_t",
    ] {
        let spec = with(json!({"securityOpt": ["no-new-privileges", option]}));
        check_at(spec.clone(), Baseline, &[("spec.securityOpt[1]", Baseline)]);
        check_at(spec, Privileged, &[]);
    }
    for option in [
        "apparmor=docker-default",
        "label=type:container_t",
        "label=level:s0:c100,c200",
        "writable-cgroups=false",
    ] {
        check_at(with(json!({"securityOpt": ["no-new-privileges", option]})), Restricted, &[]);
    }
}

#[test]
fn restricted_requires_no_new_privileges() {
    for without in [json!([]), json!(["no-new-privileges=false"]), json!(["apparmor=docker-default"])] {
        let spec = with(json!({"securityOpt": without}));
        check_at(spec.clone(), Restricted, &[("spec.securityOpt", Restricted)]);
        check_at(spec, Baseline, &[]);
    }
    for with_it in ["no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"] {
        check_at(with(json!({"securityOpt": [with_it]})), Restricted, &[]);
    }
    // The engine reads the options in order and the last mention wins.
    let switched_off = with(json!({"securityOpt": ["no-new-privileges", "no-new-privileges=false"]}));
    check_at(switched_off, Restricted, &[("spec.securityOpt", Restricted)]);
    check_at(with(json!({"securityOpt": ["no-new-privileges=false", "no-new-privileges"]})), Restricted, &[]);
}

#[test]
fn a_security_option_kedge_cannot_read_is_refused_at_baseline() {
    // A seccomp profile file would replace Docker's default profile with whatever it allows.
    for unreadable in ["seccomp=/etc/docker/permissive.json", "systempaths=unconfined", "mystery=1"] {
        let spec = with(json!({"securityOpt": ["no-new-privileges", unreadable]}));
        check_at(spec.clone(), Baseline, &[("spec.securityOpt[1]", Baseline)]);
        check_at(spec, Privileged, &[]);
    }
}

#[test]
fn only_kubernetes_safe_sysctls_pass_baseline() {
    for safe in SAFE_SYSCTLS.iter().copied().chain(["net/ipv4/ip_unprivileged_port_start"]) {
        check_at(with(json!({"sysctls": {safe: "1"}})), Restricted, &[]);
    }
    for unsafe_name in ["net.ipv4.ip_forward", "kernel.msgmax", "net.core.somaxconn", "vm.overcommit_memory"]
    {
        let spec = with(json!({"sysctls": {unsafe_name: "1"}}));
        check_at(spec.clone(), Baseline, &[(&format!("spec.sysctls.{unsafe_name}"), Baseline)]);
        check_at(spec, Privileged, &[]);
    }
}

/// Settings with `default` and the stored `levels`.
fn settings(default: PolicyLevel, levels: &[(&str, PolicyLevel)]) -> PolicySettings {
    PolicySettings {
        default_level: default,
        namespaces: levels.iter().map(|(ns, level)| ((*ns).to_owned(), *level)).collect(),
        state_dir: None,
        engine_socket: None,
    }
}

#[track_caller]
fn check_level(settings: &PolicySettings, namespace: &str, expected: (PolicyLevel, LevelSource)) {
    assert_eq!(settings.effective(namespace), expected, "namespace {namespace}");
    assert_eq!(settings.level_for(namespace), expected.0, "namespace {namespace}");
}

#[test]
fn a_namespace_gets_its_stored_level_else_the_default() {
    let stored = settings(Baseline, &[("ops", Privileged), ("web", Restricted)]);
    check_level(&stored, "ops", (Privileged, LevelSource::Namespace));
    check_level(&stored, "web", (Restricted, LevelSource::Namespace));
    check_level(&stored, "default", (Baseline, LevelSource::Default));
    // Names are compared whole: `op` and `ops-2` are other namespaces.
    check_level(&stored, "op", (Baseline, LevelSource::Default));
    check_level(&stored, "ops-2", (Baseline, LevelSource::Default));
    // A stored level wins over the default both ways: looser and stricter.
    let strict_default = settings(Restricted, &[("ops", Privileged)]);
    check_level(&strict_default, "ops", (Privileged, LevelSource::Namespace));
    check_level(&strict_default, "other", (Restricted, LevelSource::Default));
    let stored_default = settings(Privileged, &[("ops", Baseline)]);
    check_level(&stored_default, "ops", (Baseline, LevelSource::Namespace));
    check_level(&settings(Baseline, &[]), "", (Baseline, LevelSource::Default));
}

#[test]
fn settings_check_at_the_namespace_level() {
    let stored = settings(Baseline, &[("ops", Privileged)]);
    let spec: ContainerSpec =
        serde_json::from_value(json!({"image": "busybox", "privileged": true})).unwrap();
    let (level, violations) = stored.check("ops", &spec);
    assert_eq!((level, violations), (Privileged, vec![]));
    let (level, violations) = stored.check("default", &spec);
    assert_eq!(level, Baseline);
    assert_eq!(violations.iter().map(|v| v.path.as_str()).collect::<Vec<_>>(), ["spec.privileged"]);
}

/// Binds `source` in namespace `default` with the state directory `state_dir`: the refused paths.
#[track_caller]
fn check_state_dir(state_dir: &str, level: PolicyLevel, source: &str, expected: &[&str]) {
    let settings = PolicySettings { state_dir: Some(state_dir.to_owned()), ..settings(level, &[]) };
    let spec: ContainerSpec = serde_json::from_value(json!({
        "image": "busybox",
        "user": "1000",
        "securityOpt": ["no-new-privileges"],
        "mounts": [{"type": "bind", "source": source, "target": "/x", "readOnly": true}],
    }))
    .unwrap();
    let (_, violations) = settings.check("default", &spec);
    let found: Vec<&str> = violations.iter().map(|v| v.path.as_str()).collect();
    assert_eq!(found, expected, "{source} with state dir {state_dir} at {level}");
    for violation in &violations {
        assert!(violation.message().contains("`baseline` policy"), "{violation}");
    }
}

#[test]
fn the_agent_state_dir_is_not_bindable_below_privileged() {
    let refused = ["spec.mounts[0].source"];
    for level in [Baseline, Restricted] {
        // The directory itself, under it, above it, and spelled another way.
        check_state_dir("/srv/kedge-state", level, "/srv/kedge-state", &refused);
        check_state_dir("/srv/kedge-state", level, "/srv/kedge-state/token", &refused);
        check_state_dir("/srv/kedge-state", level, "/srv", &refused);
        check_state_dir("/srv/kedge-state/", level, "/srv/./x/../kedge-state//", &refused);
        // A neighbour is not the state directory.
        check_state_dir("/srv/kedge-state", level, "/srv/kedge-state-2", &[]);
        check_state_dir("/srv/kedge-state", level, "/srv/other", &[]);
        // The default state dir is refused once, not twice.
        check_state_dir("/var/lib/kedge", level, "/var/lib/kedge", &refused);
    }
    check_state_dir("/srv/kedge-state", Privileged, "/srv/kedge-state", &[]);
}

#[test]
fn the_agent_engine_socket_is_not_bindable_below_privileged() {
    let settings = |level| PolicySettings {
        engine_socket: Some("/tmp/engine-1/docker.sock".to_owned()),
        state_dir: Some("/srv/kedge".to_owned()),
        ..settings(level, &[])
    };
    let check_source = |level, source: &str| -> Vec<String> {
        let spec: ContainerSpec = serde_json::from_value(json!({
            "image": "busybox",
            "mounts": [{"type": "bind", "source": source, "target": "/x", "readOnly": true}],
        }))
        .unwrap();
        let (_, violations) = PolicySettings::check(&settings(level), "default", &spec);
        violations.into_iter().filter(|v| v.path.ends_with(".source")).map(|v| v.reason).collect()
    };
    for source in ["/tmp/engine-1/docker.sock", "/tmp/engine-1", "/tmp", "/tmp//engine-1/./docker.sock"] {
        let refused = check_source(Baseline, source);
        assert_eq!(refused.len(), 1, "{source}: {refused:?}");
        assert!(refused[0].contains("the agent's engine socket"), "{source}: {refused:?}");
    }
    assert_eq!(check_source(Baseline, "/tmp/engine-2"), Vec::<String>::new());
    assert_eq!(check_source(Privileged, "/tmp/engine-1/docker.sock"), Vec::<String>::new());
    // `/` exposes everything: one refusal, the root's.
    assert_eq!(check_source(Baseline, "/").len(), 1);
}
