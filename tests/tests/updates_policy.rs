//! `spec.updatePolicy` against the real agent, the real engine and a real registry with htpasswd
//! authentication that each test starts (so tests run in parallel and count their own requests):
//! a tag policy `^1.0` moves a container from 1.0.0 to 1.2.0 and never to 2.0.0 without touching
//! the spec in the store; `minAge` holds a just-pushed digest; `mode: notify` only records
//! UpdateAvailable; kedge's own manifest requests are HEAD only (counted in the registry's log,
//! by kedge's user agent); `kedge check --registry` names the outdated containers and exits 1.

use crate::api_support;
use crate::updater_support;

use std::time::Duration;

use api_support::{stderr, stdout, AgentGuard, SpecsOnAgent};
use kedge_tests::eventually;
use kedge_tests::registry::AuthRegistry;
use updater_support::Updater;

/// kedge's requests for manifests in the registry's log, as (method, uri). The engine's pulls and
/// the docker CLI's pushes are told apart by their user agent.
fn kedge_manifest_requests(registry: &AuthRegistry) -> Vec<(String, String)> {
    registry
        .log()
        .lines()
        .filter(|line| {
            line.contains("response completed")
                && (line.contains("http.request.useragent=kedge/")
                    || line.contains("http.request.useragent=\"kedge/"))
        })
        .filter_map(|line| {
            let field = |name: &str| {
                let start = line.find(&format!("{name}="))? + name.len() + 1;
                let rest = &line[start..];
                let value = match rest.strip_prefix('"') {
                    Some(quoted) => quoted.split('"').next()?,
                    None => rest.split_whitespace().next()?,
                };
                Some(value.to_owned())
            };
            let uri = field("http.request.uri")?;
            uri.contains("/manifests/").then(|| (field("http.request.method").unwrap_or_default(), uri))
        })
        .collect()
}

/// The agent of one test with the registry's credentials, and its specs.
async fn agent_with_credentials(updater: &Updater, registry: &AuthRegistry) -> (AgentGuard, SpecsOnAgent) {
    let config = registry.config_file();
    let state_dir = updater.dir.path().join("agent");
    let host = format!("updates-{}", updater.run);
    let agent = AgentGuard::spawn(&state_dir, &host, &["--registry-config", config.to_str().unwrap()]);
    let specs = SpecsOnAgent::new(&updater.run, &host, &state_dir);
    specs.wait_api().await;
    (agent, specs)
}

fn events(specs: &SpecsOnAgent) -> String {
    let out = specs.kedge(&["get", "events", "-n", &specs.namespace, "-o", "yaml"]);
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caret_range_moves_to_the_newest_minor_never_the_next_major_with_head_requests_only() {
    let updater = Updater::new();
    let run = updater.run.clone();
    let mut registry = AuthRegistry::start(&format!("u{run}"), &format!("pw-{run}")).await;
    let local = format!("kedge-test/tags-{run}");
    for version in ["1.0.0", "1.2.0", "2.0.0"] {
        updater.build_web(&format!("{local}:{version}"), &format!("version {version}\n"));
    }
    let repository = format!("tags-{run}");
    let first = registry.push(&format!("{local}:1.0.0"), &format!("{repository}:1.0.0"));
    let (_agent, specs) = agent_with_credentials(&updater, &registry).await;
    let name = format!("tags-{run}");
    specs.apply(
        &name,
        &format!(
            "  image: {first}\n  updatePolicy:\n    imageCheck: registry\n    interval: 2s\n    tags: \"^1.0\"\n"
        ),
    );
    let ready = specs.kedge(&[
        "wait",
        "container",
        &name,
        "-n",
        &specs.namespace,
        "--for",
        "condition=Ready",
        "--timeout",
        "90s",
    ]);
    assert!(ready.status.success(), "{}{}\n{}", stdout(&ready), stderr(&ready), registry.log());
    let first_id = updater_support::inspect("{{.Id}}", &name);

    registry.push(&format!("{local}:2.0.0"), &format!("{repository}:2.0.0"));
    let minor = registry.push(&format!("{local}:1.2.0"), &format!("{repository}:1.2.0"));
    eventually("the agent moves the container to 1.2.0", Duration::from_secs(90), || async {
        let running = updater_support::docker_cli(&["inspect", "-f", "{{.Config.Image}}", &name]);
        (stdout(&running).trim() == minor).then_some(())
    })
    .await;
    assert_ne!(updater_support::inspect("{{.Id}}", &name), first_id, "a new container");
    assert_eq!(updater.page(&name), "version 1.2.0\n");

    // The spec in the store is the user's; the tag taken is in status.
    let object = specs.get(&name);
    assert_eq!(object["spec"]["image"], first, "{object}");
    assert_eq!(object["status"]["update"]["resolvedImage"], minor, "{object}");
    eventually("UpdateApplied is recorded", Duration::from_secs(30), || async {
        events(&specs).contains("UpdateApplied").then_some(())
    })
    .await;
    let samples = crate::agent_metrics::scrape(&specs.state_dir).await;
    assert_eq!(samples.get("kedge_updates_applied_total"), Some(&1.0), "{samples:?}");

    // Several more checks later it still runs 1.2.0: 2.0.0 is outside ^1.0.
    let checked = object["status"]["update"]["lastCheck"].as_str().unwrap_or_default().to_owned();
    eventually("two more checks", Duration::from_secs(60), || async {
        let now = specs.get(&name)["status"]["update"]["lastCheck"].as_str().unwrap_or_default().to_owned();
        (now > checked).then_some(())
    })
    .await;
    let checked = specs.get(&name)["status"]["update"]["lastCheck"].as_str().unwrap_or_default().to_owned();
    eventually("one more check", Duration::from_secs(60), || async {
        let now = specs.get(&name)["status"]["update"]["lastCheck"].as_str().unwrap_or_default().to_owned();
        (now > checked).then_some(())
    })
    .await;
    let running = updater_support::inspect("{{.Config.Image}}", &name);
    assert_eq!(running, minor, "never the next major");

    // Every manifest request kedge made was a HEAD (the pulls are the engine's, not counted).
    let requests = kedge_manifest_requests(&registry);
    assert!(requests.len() >= 3, "kedge checked the registry: {requests:?}\n{}", registry.log());
    let not_head: Vec<_> = requests.iter().filter(|(method, _)| method != "HEAD").collect();
    assert!(not_head.is_empty(), "only HEAD on manifests: {not_head:?}");
    eprintln!("kedge manifest requests: {}", requests.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_age_holds_a_fresh_digest_and_notify_only_records_update_available() {
    let updater = Updater::new();
    let run = updater.run.clone();
    let mut registry = AuthRegistry::start(&format!("u{run}"), &format!("pw-{run}")).await;
    let local = format!("kedge-test/held-{run}");
    updater.build_web(&format!("{local}:one"), "one\n");
    updater.build_web(&format!("{local}:two"), "two\n");
    let young = registry.push(&format!("{local}:one"), &format!("young-{run}:1"));
    let notify = registry.push(&format!("{local}:one"), &format!("notify-{run}:1"));
    let (_agent, specs) = agent_with_credentials(&updater, &registry).await;
    let (young_name, notify_name) = (format!("young-{run}"), format!("notify-{run}"));
    specs.apply(
        &young_name,
        &format!(
            "  image: {young}\n  updatePolicy:\n    imageCheck: registry\n    interval: 2s\n    minAge: 1h\n"
        ),
    );
    specs.apply(
        &notify_name,
        &format!("  image: {notify}\n  updatePolicy:\n    imageCheck: registry\n    interval: 2s\n    mode: notify\n"),
    );
    for name in [&young_name, &notify_name] {
        let ready = specs.kedge(&[
            "wait",
            "container",
            name,
            "-n",
            &specs.namespace,
            "--for",
            "condition=Ready",
            "--timeout",
            "90s",
        ]);
        assert!(ready.status.success(), "{}{}", stdout(&ready), stderr(&ready));
    }
    let ids =
        [updater_support::inspect("{{.Id}}", &young_name), updater_support::inspect("{{.Id}}", &notify_name)];

    // The same tags now name new images in the registry.
    registry.push(&format!("{local}:two"), &format!("young-{run}:1"));
    registry.push(&format!("{local}:two"), &format!("notify-{run}:1"));
    for (name, reason) in [(&young_name, "TooYoung"), (&notify_name, "Notify")] {
        let (status, found, message) =
            eventually(&format!("{name}: UpdateAvailable {reason}"), Duration::from_secs(60), || async {
                specs.condition(name, "UpdateAvailable").filter(|(status, _, _)| status == "True")
            })
            .await;
        assert_eq!((status.as_str(), found.as_str()), ("True", reason), "{message}");
        assert!(message.contains("@sha256:"), "names the digest: {message}");
    }
    eventually("UpdateAvailable events", Duration::from_secs(30), || async {
        let text = events(&specs);
        (text.matches("UpdateAvailable").count() >= 2).then_some(())
    })
    .await;
    // Several checks later nothing was replaced.
    let checked =
        specs.get(&young_name)["status"]["update"]["lastCheck"].as_str().unwrap_or_default().to_owned();
    eventually("more checks", Duration::from_secs(60), || async {
        let now =
            specs.get(&young_name)["status"]["update"]["lastCheck"].as_str().unwrap_or_default().to_owned();
        (now > checked).then_some(())
    })
    .await;
    assert_eq!(updater_support::inspect("{{.Id}}", &young_name), ids[0], "minAge kept the container");
    assert_eq!(updater_support::inspect("{{.Id}}", &notify_name), ids[1], "notify kept the container");
    assert!(!events(&specs).contains("UpdateApplied"), "{}", events(&specs));
    let samples = crate::agent_metrics::scrape(&specs.state_dir).await;
    assert_eq!(samples.get("kedge_updates_available"), Some(&2.0), "both held: {samples:?}");
    assert_eq!(samples.get("kedge_updates_applied_total"), Some(&0.0), "{samples:?}");

    // `kedge check --registry` (no name) sees both, names them, exits 1; -o json says the same.
    let config = registry.config_file();
    let check = |args: &[&str]| {
        api_support::kedge_command(updater.dir.path())
            .env("KEDGE_SERVER", &specs.socket)
            .env("KEDGE_REGISTRY_CONFIG", &config)
            .args(args)
            .output()
            .unwrap()
    };
    let report = check(&["check", "--registry"]);
    assert_eq!(report.status.code(), Some(1), "{}{}", stdout(&report), stderr(&report));
    for name in [&young_name, &notify_name] {
        let line = stdout(&report).lines().find(|line| line.starts_with(name.as_str())).map(str::to_owned);
        let line = line.unwrap_or_else(|| panic!("{name} not in:\n{}", stdout(&report)));
        assert!(line.contains("yes (registry)"), "{line}");
    }
    let json = check(&["check", "--registry", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    let row = rows.as_array().unwrap().iter().find(|row| row["name"] == young_name.as_str()).cloned();
    let row = row.unwrap_or_else(|| panic!("{young_name} not in {rows}"));
    assert_eq!(row["registryUpdate"], true, "{row}");
    assert_eq!(row["updateAvailable"], true, "{row}");
    let not_head: Vec<_> =
        kedge_manifest_requests(&registry).into_iter().filter(|(method, _)| method != "HEAD").collect();
    assert!(not_head.is_empty(), "only HEAD on manifests: {not_head:?}");
}
