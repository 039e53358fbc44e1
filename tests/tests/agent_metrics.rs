//! A real `kedge agent`'s Prometheus metrics (docs/metrics.md): `GET /metrics` on the API answers any
//! valid token and refuses none, `--metrics-listen` answers without one, the text parses strictly,
//! and a `docker kill` of a managed container adds exactly one repair to
//! `kedge_repair_duration_seconds{drift="stopped"}`; the embedded store's requests are timed, and an
//! agent on etcd's too. Needs `scripts/test-env up`.

use crate::api_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api_support::{http, stderr, AgentGuard};
use kedge_tests::{docker_cli, eventually, run_id, EngineCleanup, TEST_LABEL};

const STOPPED_COUNT: &str = "kedge_repair_duration_seconds_count{drift=\"stopped\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_killed_containers_repair() {
    let run = run_id();
    let _cleanup = EngineCleanup::new(&run);
    let state_dir = std::env::temp_dir().join(format!("kedge-metrics-{run}"));
    let host = format!("metrics-{run}");
    let mut agent = AgentGuard::spawn(&state_dir, &host, &["--metrics-listen", "127.0.0.1:0"]);
    let api = agent.listening_address().await;
    let open = metrics_address(&agent).await;
    let token = std::fs::read_to_string(state_dir.join("api-token")).expect("the agent wrote its token");
    let token = token.trim();

    let refused = http(&api, "GET", "/metrics", None, None).await;
    assert_eq!(refused.status, 401, "the API's /metrics needs a token");
    let scrape = || async {
        let reply = http(&api, "GET", "/metrics", Some(token), None).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        parse(&String::from_utf8_lossy(&reply.body))
    };
    let unauthenticated = http(&open, "GET", "/metrics", None, None).await;
    assert_eq!(unauthenticated.status, 200, "--metrics-listen needs no token");
    let unauthenticated = parse(&String::from_utf8_lossy(&unauthenticated.body));
    assert!(unauthenticated.contains_key("kedge_queue_depth"), "{unauthenticated:?}");
    let other = http(&open, "GET", "/api/v1/containers", None, None).await;
    assert_eq!(other.status, 404, "--metrics-listen serves nothing but /metrics");

    let name = format!("metrics-{run}");
    let ns = format!("ns-{run}");
    let spec = state_dir.join("specs/app.yaml");
    std::fs::create_dir_all(spec.parent().unwrap()).unwrap();
    std::fs::write(
        &spec,
        format!(
            "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: {name}\n  namespace: {ns}\n\
             spec:\n  image: kedge-test/app:v1\n  labels:\n    {TEST_LABEL}: {run}\n  placement:\n    host: {host}\n"
        ),
    )
    .unwrap();
    let kedge = |args: &[&str]| agent.kedge(args);
    let applied = kedge(&["apply", "-f", spec.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let waited =
        kedge(&["wait", "container", &name, "-n", &ns, "--for", "condition=Ready", "--timeout", "90s"]);
    assert!(waited.status.success(), "wait: {}", stderr(&waited));

    let before =
        eventually("the Ready status to show in kedge_containers", Duration::from_secs(30), || async {
            let samples = scrape().await;
            let ready = samples.get("kedge_containers{condition=\"Ready\",status=\"True\"}").copied();
            (ready >= Some(1.0)).then_some(samples)
        })
        .await;
    let repairs_before = before.get(STOPPED_COUNT).copied().unwrap_or(0.0);
    let reconciles = |samples: &BTreeMap<String, f64>| -> f64 {
        samples
            .iter()
            .filter(|(series, _)| series.starts_with("kedge_reconcile_total{"))
            .map(|(_, v)| v)
            .sum()
    };
    assert!(reconciles(&before) >= 1.0, "{before:?}");
    assert!(before.contains_key("kedge_backoff_keys"), "{before:?}");
    assert!(before.keys().any(|series| series.starts_with("kedge_build_info{version=")), "{before:?}");
    // The embedded store's requests are timed: the apply's write, the agent's status writes, its lists.
    for operation in ["put", "get", "list", "watch"] {
        let series = format!(
            "kedge_store_request_duration_seconds_count{{store=\"embedded\",operation=\"{operation}\"}}"
        );
        assert!(before.get(&series).is_some_and(|count| *count >= 1.0), "{series}: {before:?}");
    }

    let killed = docker_cli(&["kill", &name]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    let after = eventually("the kill's repair to be counted", Duration::from_secs(60), || async {
        let samples = scrape().await;
        (samples.get(STOPPED_COUNT).copied().unwrap_or(0.0) > repairs_before).then_some(samples)
    })
    .await;
    let running = docker_cli(&["inspect", "-f", "{{.State.Running}}", &name]);
    assert_eq!(String::from_utf8_lossy(&running.stdout).trim(), "true", "the killed container runs again");
    assert_eq!(after[STOPPED_COUNT], repairs_before + 1.0, "one kill, one repair: {after:?}");
    assert!(reconciles(&after) > reconciles(&before), "{after:?}");
    let took = after["kedge_repair_duration_seconds_sum{drift=\"stopped\"}"]
        - before.get("kedge_repair_duration_seconds_sum{drift=\"stopped\"}").copied().unwrap_or(0.0);
    assert!(took > 0.0 && took < 60.0, "the repair took {took} s");
    eprintln!("repair after docker kill: {:.3} s", took);

    let deleted = kedge(&["delete", "container", &name, "-n", &ns]);
    assert!(deleted.status.success(), "{}", stderr(&deleted));
}

/// The same series from an agent on etcd: the wrapper times every store alike, the watches' opens
/// included, and nothing failed while the agent started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_etcd_times_its_store_requests() {
    let run = run_id();
    let env = kedge_tests::TestEnv::get();
    let state_dir = std::env::temp_dir().join(format!("kedge-metrics-etcd-{run}"));
    let store = format!("etcd://{}", env.etcd_endpoints.join(","));
    let agent = AgentGuard::spawn(&state_dir, &format!("metrics-etcd-{run}"), &["--store", &store]);
    agent.wait_api().await;
    let samples = eventually("the agent's first writes and watches", Duration::from_secs(30), || async {
        let samples = scrape(&state_dir).await;
        let count = |operation: &str| {
            samples
                .get(&format!(
                    "kedge_store_request_duration_seconds_count{{store=\"etcd\",operation=\"{operation}\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
        };
        ["put", "get", "list", "watch", "lease_grant"]
            .iter()
            .all(|operation| count(operation) >= 1.0)
            .then_some(samples)
    })
    .await;
    assert!(
        !samples.keys().any(|series| series.contains("store=\"embedded\"")),
        "one store, named etcd: {samples:?}"
    );
    let failed: Vec<_> = samples
        .iter()
        .filter(|(series, value)| {
            series.starts_with("kedge_store_errors_total")
                && **value > 0.0
                && !series.contains("error=\"conflict\"")
                && !series.contains("error=\"not_found\"")
        })
        .collect();
    assert!(failed.is_empty(), "no store failure at a healthy start: {failed:?}");
}

/// The samples of the agent whose state directory is `state_dir`, read over its Unix socket.
pub(crate) async fn scrape(state_dir: &std::path::Path) -> BTreeMap<String, f64> {
    let reply = api_support::http_unix(&state_dir.join("kedge.sock"), "GET", "/metrics", None).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    parse(&String::from_utf8_lossy(&reply.body))
}

/// The `--metrics-listen` address, read from the agent's log once it says so.
async fn metrics_address(agent: &AgentGuard) -> String {
    let log = agent.state_dir.join("agent.log");
    eventually("the agent to say where its metrics listen", Duration::from_secs(30), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().find_map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).ok()?;
            let fields = line.get("fields")?;
            let message = fields.get("message")?.as_str()?;
            message
                .starts_with("metrics listening")
                .then(|| fields.get("address")?.as_str().map(str::to_owned))?
        })
    })
    .await
}

/// Parses Prometheus (OpenMetrics) text strictly: every line is `# HELP`, `# TYPE`, `# UNIT`, the
/// closing `# EOF`, or a sample `name{labels} value` of a family a `# TYPE` line declared before it.
/// Panics on anything else; answers every sample by its series (`name{labels}`).
pub(crate) fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut families = BTreeSet::new();
    let mut samples = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "the text ends with # EOF:\n{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (keyword, family) = (words.next(), words.next());
            let family =
                family.filter(|family| is_name(family)).unwrap_or_else(|| panic!("bad line {line:?}"));
            match keyword {
                Some("TYPE") => {
                    let kind = words.next().unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "info", "summary", "unknown"].contains(&kind),
                        "bad type in {line:?}"
                    );
                    families.insert(family.to_owned());
                }
                Some("HELP" | "UNIT") => {}
                _ => panic!("bad comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            value => value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = match series.split_once('{') {
            None => series,
            Some((name, labels)) => {
                let labels =
                    labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                for label in split_labels(labels) {
                    let (key, quoted) =
                        label.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(is_name(key) && !key.contains(':'), "bad label name in {line:?}");
                    assert!(
                        quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                        "unquoted label value in {line:?}"
                    );
                }
                name
            }
        };
        assert!(is_name(name), "bad metric name in {line:?}");
        let family = ["_total", "_bucket", "_count", "_sum", "_info", "_created"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|family| families.contains(*family)))
            .unwrap_or(name);
        assert!(families.contains(family), "{line:?} has no # TYPE before it");
        assert!(samples.insert(series.to_owned(), value).is_none(), "{series} twice");
    }
    samples
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_' || rest == ':')
}

/// `a="x",b="y, z"` into its labels, commas inside quotes kept.
fn split_labels(labels: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (at, char) in labels.char_indices() {
        match char {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&labels[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        parts.push(&labels[start..]);
    }
    parts
}
