//! What every benchmark shares: the engine client, the run's labels, engine event timing,
//! specs, percentiles and the summary of repeated runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::query_parameters::{
    EventsOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// The label every engine object a bench run creates carries, valued with the run id.
/// Not under `io.kedge.`: a spec may not carry kedge's own label prefix.
pub const BENCH_LABEL: &str = "kedge-bench.run";

/// A Docker client for the bench engine (DOCKER_HOST), API version negotiated.
pub async fn docker() -> anyhow::Result<Docker> {
    let client = Docker::connect_with_defaults().context("DOCKER_HOST names no usable engine")?;
    Ok(client.negotiate_version().await?)
}

/// A unique, short run id (fits container names).
pub fn run_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:x}", (nanos as u64) ^ u64::from(std::process::id()))[..10].to_owned()
}

/// A Container spec (JSON envelope) placed on `host`, labelled for the bench's cleanup.
pub fn spec(namespace: &str, name: &str, host: &str, run: &str, image: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kedge.io/v1",
        "kind": "Container",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "image": image,
            "placement": {"host": host},
            "labels": {BENCH_LABEL: run},
        },
    })
}

pub fn typed(spec: serde_json::Value) -> anyhow::Result<kedge_crds::Container> {
    Ok(serde_json::from_value(spec)?)
}

/// Waits until no container of this run bears a retired name (the old container of a start-first
/// recreate, stopping in the background).
pub async fn wait_no_retired(docker: &Docker, run: &str, deadline: Duration) -> anyhow::Result<()> {
    let filters = HashMap::from([
        ("label".to_owned(), vec![format!("{BENCH_LABEL}={run}")]),
        ("name".to_owned(), vec!["-kedge-retired-".to_owned()]),
    ]);
    let started = std::time::Instant::now();
    loop {
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let left = docker.list_containers(Some(options)).await?.len();
        if left == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < deadline,
            "{left} retired containers still there after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes every container labelled with this run (forced, with anonymous volumes).
pub async fn remove_labelled(docker: &Docker, run: &str) -> anyhow::Result<usize> {
    let filters = HashMap::from([("label".to_owned(), vec![format!("{BENCH_LABEL}={run}")])]);
    let containers = docker
        .list_containers(Some(ListContainersOptionsBuilder::new().all(true).filters(&filters).build()))
        .await?;
    let n = containers.len();
    let removals = containers.into_iter().filter_map(|c| c.id).map(|id| {
        let docker = docker.clone();
        async move {
            let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
            docker.remove_container(&id, Some(options)).await.ok();
        }
    });
    futures::stream::iter(removals).buffer_unordered(8).collect::<Vec<_>>().await;
    Ok(n)
}

/// One container event as the engine stamped it.
#[derive(Debug, Clone)]
pub struct EngineEvent {
    pub action: String,
    pub name: String,
    pub time_nano: i64,
}

/// Collects `die` and `start` events of containers labelled with this run, from the engine's own
/// clock (so the latencies measured do not include the bench's reading delays).
#[derive(Clone)]
pub struct EventLog {
    events: Arc<Mutex<Vec<EngineEvent>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl EventLog {
    pub async fn follow(docker: &Docker, run: &str) -> anyhow::Result<EventLog> {
        let filters = HashMap::from([
            ("type", vec!["container".to_owned()]),
            ("event", vec!["die".to_owned(), "start".to_owned()]),
            ("label", vec![format!("{BENCH_LABEL}={run}")]),
        ]);
        let mut stream = docker.events(Some(EventsOptionsBuilder::new().filters(&filters).build())).boxed();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        // The stream connects on first poll: take events in a task from now on.
        let task = tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let actor = event.actor.unwrap_or_default();
                let attributes = actor.attributes.unwrap_or_default();
                let entry = EngineEvent {
                    action: event.action.unwrap_or_default(),
                    name: attributes.get("name").cloned().unwrap_or_default(),
                    time_nano: event.time_nano.unwrap_or_default(),
                };
                sink.lock().expect("event log").push(entry);
            }
        });
        // Give the subscription a moment to be registered by the engine.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(EventLog { events, task: Arc::new(task) })
    }

    pub fn len(&self) -> usize {
        self.events.lock().expect("event log").len()
    }

    /// The first event from index `from` on whose name satisfies `matches` and whose action is `action`.
    pub fn find(&self, from: usize, action: &str, matches: impl Fn(&str) -> bool) -> Option<EngineEvent> {
        let events = self.events.lock().expect("event log");
        events.iter().skip(from).find(|e| e.action == action && matches(&e.name)).cloned()
    }

    /// Waits (polling, with a deadline) for an event as [`EventLog::find`] describes.
    pub async fn wait(
        &self,
        from: usize,
        action: &str,
        deadline: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<EngineEvent> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(event) = self.find(from, action, &matches) {
                return Ok(event);
            }
            anyhow::ensure!(Instant::now() < until, "no {action} event within {deadline:?}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

/// Latency percentiles of one run, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

pub fn percentiles(samples_ms: &[f64]) -> Percentiles {
    let mut sorted = samples_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    // Nearest rank: the smallest value with at least p of the samples at or below it.
    let rank = |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
    Percentiles { p50: rank(0.50), p95: rank(0.95), p99: rank(0.99), max: rank(1.0), samples: sorted.len() }
}

/// One figure over repeated runs: the median of the runs and their spread (min and max).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Figure {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

pub fn figure(values: &[f64]) -> Figure {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Figure {
        median,
        min: sorted.first().copied().unwrap_or(f64::NAN),
        max: sorted.last().copied().unwrap_or(f64::NAN),
        runs: n,
    }
}

/// Runs futures with at most `n` at once, failing on the first error.
pub async fn bounded<F, T>(n: usize, futures: impl IntoIterator<Item = F>) -> anyhow::Result<Vec<T>>
where
    F: std::future::Future<Output = anyhow::Result<T>>,
{
    futures::stream::iter(futures).buffer_unordered(n).collect::<Vec<_>>().await.into_iter().collect()
}

/// The machine's load averages (1, 5, 15 min).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').context("odd /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields[11].parse()?;
    let stime: f64 = fields[12].parse()?;
    Ok((utime + stime) / clock_ticks())
}

/// CPU seconds of a process's live threads from the scheduler's nanosecond counters
/// (`/proc/PID/task/*/schedstat`), for short intervals: `/proc/PID/stat` counts in clock ticks
/// (10 ms), too coarse to tell 0.2% of a core in one second from 1%. A thread that ended is not
/// counted: compare two readings only over an interval.
pub fn cpu_seconds_fine(pid: u32) -> anyhow::Result<f64> {
    let mut nanos: u64 = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        nanos += text.split_whitespace().next().context("odd schedstat")?.parse::<u64>()?;
    }
    Ok(nanos as f64 / 1e9)
}

/// CPU seconds of a process and all its live descendants (dockerd with its containerd and shims).
pub fn tree_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let mut total = cpu_seconds(pid)?;
    for child in children(pid) {
        total += tree_cpu_seconds(child).unwrap_or(0.0);
    }
    Ok(total)
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let path = task.path().join("children");
            if let Ok(text) = std::fs::read_to_string(path) {
                out.extend(text.split_whitespace().filter_map(|s| s.parse::<u32>().ok()));
            }
        }
    }
    out
}

fn clock_ticks() -> f64 {
    // SC_CLK_TCK is 100 on every Linux this runs on; getconf confirms it when available.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A field of /proc/PID/status in KiB (`VmHWM`, `VmRSS`), as MiB.
pub fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    let kib: f64 = line.split_whitespace().nth(1).context("odd status line")?.parse()?;
    Ok(kib / 1024.0)
}
