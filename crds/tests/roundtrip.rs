//! Property: any `Container` serializes and parses back to the same value, from JSON and from block YAML
//! with its keys in another order, and its spec hash does not depend on how it was written.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use kedge_crds::*;
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _./:=-]{0,12}",
        "\\PC{0,12}",
        Just(String::new()),
        Just("null".to_owned()),
        Just("123".to_owned())
    ]
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..4)
}

fn string_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("[A-Za-z_][A-Za-z0-9_.]{0,8}", text(), 0..4)
}

fn image() -> impl Strategy<Value = ImageReference> {
    (
        of(prop_oneof![
            Just("127.0.0.1:5000"),
            Just("ghcr.io"),
            Just("localhost"),
            Just("[::1]:5000"),
            Just("reg.example.com")
        ]),
        "[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?(/[a-z][a-z0-9]{0,6}){0,2}",
        of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
        of("sha256:[0-9a-f]{64}"),
    )
        .prop_map(|(registry, repository, tag, digest)| ImageReference {
            registry: registry.map(str::to_owned),
            repository,
            tag,
            digest,
        })
}

fn duration() -> impl Strategy<Value = HumanDuration> {
    prop_oneof![
        (0..=i64::MAX as u64).prop_map(|nanos| HumanDuration(std::time::Duration::from_nanos(nanos))),
        (0u64..100_000).prop_map(HumanDuration::from_secs),
    ]
}

fn byte_size() -> impl Strategy<Value = ByteSize> {
    prop_oneof![
        (0..=i64::MAX as u64).prop_map(ByteSize),
        (0u64..4096, 0u32..5).prop_map(|(n, shift)| ByteSize(n << (10 * shift)))
    ]
}

fn port() -> impl Strategy<Value = PortMapping> {
    (
        any::<u16>(),
        of(any::<u16>()),
        of(any::<IpAddr>()),
        prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp), Just(Protocol::Sctp)],
    )
        .prop_map(|(container_port, host_port, host_ip, protocol)| PortMapping {
            container_port,
            host_port,
            host_ip,
            protocol,
        })
}

fn mount() -> impl Strategy<Value = Mount> {
    (
        prop_oneof![Just(MountKind::Bind), Just(MountKind::Volume), Just(MountKind::Tmpfs)],
        of(text()),
        text(),
        of(any::<bool>()),
        of(byte_size()),
        of("[0-7]{3,4}"),
    )
        .prop_map(|(kind, source, target, read_only, tmpfs_size, tmpfs_mode)| Mount {
            kind,
            source,
            target,
            read_only,
            tmpfs_size,
            tmpfs_mode,
        })
}

fn network() -> impl Strategy<Value = NetworkAttachment> {
    (text(), texts(), of(any::<Ipv4Addr>())).prop_map(|(name, aliases, ipv4_address)| NetworkAttachment {
        name,
        aliases,
        ipv4_address,
    })
}

fn restart_policy() -> impl Strategy<Value = RestartPolicy> {
    (
        prop_oneof![
            Just(RestartPolicyName::No),
            Just(RestartPolicyName::Always),
            Just(RestartPolicyName::UnlessStopped),
            Just(RestartPolicyName::OnFailure)
        ],
        of(any::<u32>()),
    )
        .prop_map(|(name, maximum_retry_count)| RestartPolicy { name, maximum_retry_count })
}

fn resources() -> impl Strategy<Value = Resources> {
    (
        (
            of((0..=i64::MAX as u64).prop_map(NanoCpus)),
            of(any::<u64>()),
            of(any::<u64>()),
            of(any::<i64>()),
            of(text()),
            of(text()),
        ),
        (
            of(byte_size()),
            of(byte_size()),
            of(prop_oneof![Just(MemorySwap::Unlimited), byte_size().prop_map(MemorySwap::Limit)]),
            of(any::<u16>()),
            of(any::<i64>()),
        ),
    )
        .prop_map(
            |(
                (cpus, cpu_shares, cpu_period, cpu_quota, cpuset_cpus, cpuset_mems),
                (memory, memory_reservation, memory_swap, blkio_weight, pids_limit),
            )| Resources {
                cpus,
                cpu_shares,
                cpu_period,
                cpu_quota,
                cpuset_cpus,
                cpuset_mems,
                memory,
                memory_reservation,
                memory_swap,
                blkio_weight,
                pids_limit,
            },
        )
}

fn healthcheck() -> impl Strategy<Value = Healthcheck> {
    (texts(), of(duration()), of(duration()), of(any::<u32>()), of(duration()), of(duration())).prop_map(
        |(test, interval, timeout, retries, start_period, start_interval)| Healthcheck {
            test,
            interval,
            timeout,
            retries,
            start_period,
            start_interval,
        },
    )
}

fn lifecycle(
) -> impl Strategy<Value = (Vec<Dependency>, Vec<PostStartExec>, Option<UpdatePolicy>, Option<UpdateStrategy>)>
{
    let dependency = (
        text(),
        prop_oneof![
            Just(DependencyCondition::Started),
            Just(DependencyCondition::Healthy),
            Just(DependencyCondition::Completed)
        ],
    )
        .prop_map(|(name, condition)| Dependency { name, condition });
    let exec = (
        texts(),
        of(text()),
        prop_oneof![Just(ExecPolicy::Once), Just(ExecPolicy::EnsureRunning)],
        of(prop_oneof![Just(CommandMatch::Full), Just(CommandMatch::Partial)]),
    )
        .prop_map(|(command, user, policy, command_match)| PostStartExec {
            command,
            user,
            policy,
            command_match,
        });
    let update_policy = (
        of(prop_oneof![Just(ImageCheck::None), Just(ImageCheck::Local), Just(ImageCheck::Registry)]),
        of(duration()),
        of(prop_oneof![Just(PullPolicy::Always), Just(PullPolicy::IfNotPresent), Just(PullPolicy::Never)]),
        of(any::<bool>()),
    )
        .prop_map(|(image_check, check_interval, pull_policy, cleanup)| UpdatePolicy {
            image_check,
            check_interval,
            pull_policy,
            cleanup,
            ..UpdatePolicy::default()
        });
    let update_strategy = (
        of(prop_oneof![Just(UpdateOrder::StopFirst), Just(UpdateOrder::StartFirst)]),
        of(duration()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(any::<bool>()),
        of(duration()),
    )
        .prop_map(
            |(kind, health_timeout, rollback_on_failure, remove_old_image, skip_limit_reset, soak)| {
                UpdateStrategy {
                    kind,
                    health_timeout,
                    rollback_on_failure,
                    remove_old_image,
                    skip_limit_reset,
                    soak,
                }
            },
        );
    (vec(dependency, 0..3), vec(exec, 0..3), of(update_policy), of(update_strategy))
}

fn spec() -> impl Strategy<Value = ContainerSpec> {
    (
        (image(), of(texts()), of(texts()), string_map(), of(text()), of(text()), of(text()), string_map()),
        (
            vec(port(), 0..3),
            vec(mount(), 0..3),
            vec(network(), 0..3),
            of(restart_policy()),
            of(resources()),
            of(healthcheck()),
        ),
        (of(text()), of(duration()), texts(), texts(), of(any::<bool>()), of(any::<bool>())),
        (
            of((text(), string_map()).prop_map(|(driver, options)| Logging { driver, options })),
            lifecycle(),
            of((of(text()), string_map())
                .prop_map(|(host, host_selector)| Placement { host, host_selector })),
            of(vec(any::<i64>(), 0..3)),
            (
                of(prop_oneof![Just(DeletionPolicy::Remove), Just(DeletionPolicy::Orphan)]),
                of(prop_oneof![Just(RunState::Running), Just(RunState::Stopped)]),
                of(prop_oneof![
                    Just(NetworkMode::Bridge),
                    Just(NetworkMode::Host),
                    Just(NetworkMode::None),
                    "[a-z][a-z0-9-]{0,8}".prop_map(NetworkMode::Container),
                ]),
                vec(
                    ("[a-z][a-z0-9-]{0,8}", of("[a-z][a-z0-9.-]{0,8}"))
                        .prop_map(|(name, alias)| Link { name, alias }),
                    0..3,
                ),
                of(prop_oneof![
                    Just(OnUnhealthy::Restart),
                    Just(OnUnhealthy::Recreate),
                    Just(OnUnhealthy::None)
                ]),
                of((of(any::<u32>()), of(duration()))
                    .prop_map(|(remediations, period)| UnhealthyLimit { remediations, period })),
            ),
        ),
    )
        .prop_map(
            |(
                (image, entrypoint, command, env, working_dir, user, hostname, labels),
                (ports, mounts, networks, restart_policy, resources, healthcheck),
                (stop_signal, stop_grace_period, cap_add, cap_drop, privileged, read_only_rootfs),
                (
                    logging,
                    (depends_on, post_start, update_policy, update_strategy),
                    placement,
                    non_recoverable_exit_codes,
                    (deletion_policy, run_state, network_mode, links, on_unhealthy, unhealthy_limit),
                ),
            )| ContainerSpec {
                image,
                entrypoint,
                command,
                env,
                secret_env: Default::default(),
                working_dir,
                user,
                hostname,
                labels,
                ports,
                mounts,
                networks,
                restart_policy,
                resources,
                healthcheck,
                stop_signal,
                stop_grace_period,
                min_ready_seconds: None,
                cap_add,
                cap_drop,
                privileged,
                read_only_rootfs,
                pid_mode: None,
                ipc_mode: None,
                devices: Vec::new(),
                security_opt: Vec::new(),
                sysctls: Default::default(),
                init: None,
                shm_size: None,
                extra_hosts: Vec::new(),
                ulimits: Default::default(),
                dns: Vec::new(),
                dns_search: Vec::new(),
                dns_options: Vec::new(),
                tty: None,
                stdin_open: None,
                logging,
                depends_on,
                network_mode,
                links,
                post_start,
                update_policy,
                update_strategy,
                placement,
                non_recoverable_exit_codes,
                deletion_policy,
                run_state,
                on_unhealthy,
                unhealthy_limit,
            },
        )
}

fn status() -> impl Strategy<Value = ContainerStatus> {
    let condition = (
        prop_oneof![Just("Ready".to_owned()), Just("Synced".to_owned()), Just("Degraded".to_owned())],
        prop_oneof![
            Just(ConditionStatus::True),
            Just(ConditionStatus::False),
            Just(ConditionStatus::Unknown)
        ],
        "[A-Z][a-zA-Z]{0,10}",
        text(),
        "2026-11-21T22:[0-5][0-9]:00Z",
        of(any::<i64>()),
    )
        .prop_map(|(kind, status, reason, message, last_transition_time, observed_generation)| Condition {
            kind,
            status,
            reason,
            message,
            last_transition_time,
            observed_generation,
        });
    let diff = (text(), of(text()), of(text())).prop_map(|(field, desired, actual)| FieldDiff {
        field,
        desired,
        actual,
    });
    let volume = (text(), text()).prop_map(|(target, name)| MountedVolume { target, name });
    (
        (of(any::<i64>()), of(text()), of(text()), of(text()), of(text()), any::<u64>()),
        (vec(diff, 0..3), of(text()), vec(condition, 0..3), vec(volume, 0..3)),
    )
        .prop_map(
            |(
                (observed_generation, host, container_id, image_id, image_digest, restart_count),
                (drift, last_error, conditions, volumes),
            )| {
                ContainerStatus {
                    observed_generation,
                    host,
                    container_id,
                    image_id,
                    image_digest,
                    volumes,
                    restart_count,
                    drift,
                    last_error,
                    conditions,
                    ..ContainerStatus::default()
                }
            },
        )
}

prop_compose! {
    fn object_meta()(
        name in "[a-z0-9][a-z0-9-]{0,20}",
        namespace in "[a-z0-9]{1,10}",
        labels in string_map(),
        annotations in string_map(),
        uid in of(text()),
        generation in of(any::<i64>()),
        resource_version in of("[0-9]{1,6}"),
        creation_timestamp in of(Just("2026-11-21T22:00:00Z".to_owned())),
    ) -> ObjectMeta {
        ObjectMeta { name, namespace, labels, annotations, uid, generation, resource_version, creation_timestamp }
    }
}

fn container() -> impl Strategy<Value = Container> {
    let metadata = object_meta();
    (metadata, spec(), of(status())).prop_map(|(metadata, spec, status)| Container {
        api_version: API_VERSION.to_owned(),
        kind: KIND_CONTAINER.to_owned(),
        metadata,
        spec,
        status,
    })
}

/// Block-style YAML with every key and string JSON-quoted, and map keys in reverse order, to show that
/// neither style nor key order matters.
fn to_yaml(value: &serde_json::Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, item) in map.iter().rev() {
                out.push_str(&format!("\n{pad}{}:", serde_json::Value::String(key.clone())));
                to_yaml(item, indent + 2, out);
            }
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&format!("\n{pad}-"));
                to_yaml(item, indent + 2, out);
            }
        }
        scalar => out.push_str(&format!(" {scalar}")),
    }
}

fn parse_one(file: &str, text: &str) -> Container {
    let (mut parsed, errors) = parse_str(file, text);
    assert!(
        errors.is_empty(),
        "{}\n{text}",
        errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(parsed.len(), 1);
    parsed.remove(0).container
}

fn round_trip(container: &Container) -> Result<(), TestCaseError> {
    let json = serde_json::to_string_pretty(container).unwrap();
    let from_json = parse_one("gen.json", &json);
    prop_assert_eq!(&from_json, container);

    let mut yaml = String::from("---");
    to_yaml(&serde_json::to_value(container).unwrap(), 0, &mut yaml);
    yaml.push('\n');
    let from_yaml = parse_one("gen.yaml", &yaml);
    prop_assert_eq!(&from_yaml, container);
    prop_assert_eq!(spec_hash(&from_yaml.spec), spec_hash(&container.spec));
    Ok(())
}

/// Generating values from this large a strategy tree takes more stack than a test thread has in debug
/// builds, so the runner gets a thread of its own; parsing itself runs on an ordinary 2 MiB thread, the
/// size of a tokio worker's stack, to show the parser fits there.
#[test]
fn containers_round_trip() {
    let generator = std::thread::Builder::new().stack_size(256 << 20).spawn(|| {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(2000));
        runner
            .run(&container(), |container| {
                std::thread::Builder::new()
                    .stack_size(2 << 20)
                    .spawn(move || round_trip(&container))
                    .unwrap()
                    .join()
                    .unwrap_or_else(|_| Err(TestCaseError::fail("the round trip panicked")))
            })
            .map_err(|failure| failure.to_string())
    });
    if let Err(failure) = generator.unwrap().join().unwrap() {
        panic!("{failure}");
    }
}
