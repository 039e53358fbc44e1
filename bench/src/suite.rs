//! `kedge-bench suite`: every figure of BENCHMARKS.md in one run, printed as a table and written
//! as JSON. Each figure is measured `--reps` times; the table shows the median and the spread.
//!
//! Phases, in order (each cleans up what it made, also on failure):
//! 1. kedge (an in-process agent on an embedded store) and the floor: drift repair, then rollout
//!    (rollouts, kedge's and Swarm's, are skipped when `--only` names drift without rollout);
//! 2. idle cost of the real `kedge agent` binary over many containers, then cold start over them;
//! 3. specs applied per second through the API, on the embedded store and on etcd;
//! 4. Docker Swarm: the same kill-and-restore and rollout (Swarm mode is left again at the end).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use kedge_controller::store::objects;
use serde_json::{json, Value};

use crate::common::{self, figure, percentiles, spec, typed, EventLog, Figure, Percentiles};
use crate::drift::{kill_each, Floor};
use crate::kedge::{open_embedded, wait_all_ready, AgentProcess, InProcessAgent};
use crate::load::Hogs;

const V1: &str = "kedge-test/app:v1";
const V2: &str = "kedge-test/app:v2";

#[derive(Debug, Clone)]
struct Options {
    reps: usize,
    drift: usize,
    rollout: usize,
    idle: usize,
    idle_seconds: u64,
    api_specs: usize,
    workers: usize,
    swarm: bool,
    out: PathBuf,
    kedge_bin: PathBuf,
    dockerd_pid: Option<u32>,
    etcd: Option<String>,
    only: Vec<String>,
    /// Busy loops run beside the drift repair measurements (kedge, the floor and Swarm).
    load: usize,
    /// The cargo profile the binaries were built with (scripts/bench passes it), for the record.
    profile: String,
    /// Swarm's `--update-order` for the rollout: `stop-first` (its default) or `start-first`.
    swarm_order: String,
}

const USAGE: &str = "usage: kedge-bench suite --kedge-bin PATH [--reps 2] [--drift 100] [--rollout 50] \
[--idle 500] [--idle-seconds 330] [--api-specs 200] [--workers 8] [--no-swarm] [--dockerd-pid PID] \
[--etcd ENDPOINTS] [--only drift,rollout,idle,api,swarm] [--load 0] [--profile release] [--swarm-order stop-first] \
[--out bench-results/latest.json]";

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        reps: 2,
        drift: 100,
        rollout: 50,
        idle: 500,
        // Long enough to hold the agent's periodic resync (300 s after its start) and the leader's
        // from-scratch pass (as often): a 60 s window missed both, and with them a 19% spike.
        idle_seconds: 330,
        api_specs: 200,
        workers: 8,
        swarm: true,
        out: PathBuf::from("bench-results/latest.json"),
        kedge_bin: PathBuf::from("target/release/kedge"),
        dockerd_pid: std::env::var("KEDGE_BENCH_DOCKERD_PID").ok().and_then(|p| p.parse().ok()),
        etcd: std::env::var("KEDGE_ETCD_ENDPOINTS").ok().filter(|s| !s.is_empty()),
        only: Vec::new(),
        load: 0,
        profile: "release".to_owned(),
        swarm_order: "stop-first".to_owned(),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value; {USAGE}"));
        match flag.as_str() {
            "--reps" => o.reps = value()?.parse()?,
            "--drift" => o.drift = value()?.parse()?,
            "--rollout" => o.rollout = value()?.parse()?,
            "--idle" => o.idle = value()?.parse()?,
            "--idle-seconds" => o.idle_seconds = value()?.parse()?,
            "--api-specs" => o.api_specs = value()?.parse()?,
            "--workers" => o.workers = value()?.parse()?,
            "--no-swarm" => o.swarm = false,
            "--out" => o.out = PathBuf::from(value()?),
            "--kedge-bin" => o.kedge_bin = PathBuf::from(value()?),
            "--dockerd-pid" => o.dockerd_pid = Some(value()?.parse()?),
            "--etcd" => o.etcd = Some(value()?.clone()),
            "--only" => o.only = value()?.split(',').map(str::to_owned).collect(),
            "--profile" => o.profile = value()?.clone(),
            "--swarm-order" => {
                o.swarm_order = value()?.clone();
                anyhow::ensure!(
                    ["stop-first", "start-first"].contains(&o.swarm_order.as_str()),
                    "--swarm-order is stop-first or start-first, not {:?}",
                    o.swarm_order
                );
            }
            "--load" => {
                o.load = value()?
                    .parse()
                    .with_context(|| format!("--load takes a count of busy loops; {USAGE}"))?
            }
            other => anyhow::bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    anyhow::ensure!(
        o.reps >= 1 && o.drift >= 1 && o.rollout >= 1 && o.idle >= 1,
        "counts must be at least 1"
    );
    anyhow::ensure!(
        !o.measures_rollout() || o.rollout <= o.drift,
        "--rollout reuses the drift specs: it must be at most --drift"
    );
    Ok(o)
}

impl Options {
    fn wants(&self, phase: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == phase)
    }

    /// Whether rollouts are timed: always, unless `--only` names drift without rollout (drift repair
    /// alone, of kedge or of Swarm, then takes minutes instead of a quarter of an hour).
    fn measures_rollout(&self) -> bool {
        self.wants("rollout") || !self.wants("drift")
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(suite(options))
}

async fn suite(o: Options) -> anyhow::Result<()> {
    let docker = common::docker().await?;
    let run = common::run_id();
    let version = docker.version().await?;
    let mut results = json!({
        "run_id": run,
        "started_at_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "machine": machine(),
        "engine": {"version": version.version, "api_version": version.api_version},
        "load_average_before": common::load_average(),
        "options": {
            "reps": o.reps, "drift_containers": o.drift, "rollout_specs": o.rollout, "idle_containers": o.idle,
            "idle_seconds": o.idle_seconds, "api_specs": o.api_specs, "workers": o.workers, "swarm": o.swarm,
            "load": o.load, "profile": o.profile,
        },
    });
    eprintln!("bench run {run}: load average {}", common::load_average());

    let outcome = phases(&o, &docker, &run, &mut results).await;
    let removed = common::remove_labelled(&docker, &run).await;
    outcome?;
    removed?;
    results["load_average_after"] = json!(common::load_average());

    print_table(&results);
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&results)?)?;
    eprintln!("wrote {}", o.out.display());
    Ok(())
}

async fn phases(o: &Options, docker: &bollard::Docker, run: &str, results: &mut Value) -> anyhow::Result<()> {
    if o.wants("drift") || o.wants("rollout") {
        results["kedge"] = kedge_phase(o, docker, run).await.context("drift and rollout (kedge, floor)")?;
        common::remove_labelled(docker, run).await?;
    }
    if o.wants("idle") {
        results["idle"] = idle_phase(o, docker, run).await.context("idle cost and cold start")?;
        common::remove_labelled(docker, run).await?;
    }
    if o.wants("api") {
        results["api"] = api_phase(o, run).await.context("specs applied through the API")?;
    }
    if o.swarm && (o.wants("swarm") || o.only.is_empty()) {
        let swarm = {
            let _mode = crate::swarm::SwarmMode::init()?;
            swarm_phase(o, docker, run).await
        };
        common::remove_labelled(docker, run).await?;
        results["swarm"] = swarm.context("Docker Swarm")?;
    }
    Ok(())
}

fn tmp_dir(run: &str, what: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kedge-bench-{run}-{what}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn summary(runs: &[Percentiles]) -> Value {
    json!({
        "runs": runs,
        "p50": figure(&runs.iter().map(|p| p.p50).collect::<Vec<_>>()),
        "p95": figure(&runs.iter().map(|p| p.p95).collect::<Vec<_>>()),
        "p99": figure(&runs.iter().map(|p| p.p99).collect::<Vec<_>>()),
    })
}

/// Drift repair of kedge and the floor, interleaved rep by rep, then kedge's rollout (if measured).
async fn kedge_phase(o: &Options, docker: &bollard::Docker, run: &str) -> anyhow::Result<Value> {
    let dir = tmp_dir(run, "kedge")?;
    let result = async {
        let store = open_embedded(&dir.join("kedge.db")).await?;
        let host = format!("bench-{run}");
        let ns = format!("b{run}");
        let agent = InProcessAgent::start(store.clone(), &host, o.workers).await?;
        // A fresh set of containers for each rep: a container killed a second time within kedge's
        // backoff window (10 min) is a crash loop to kedge, which waits before starting it again
        // (docs/restarts.md), while the floor does not; the drift figures are of first kills only.
        let names: Vec<String> = (0..o.drift * o.reps).map(|i| format!("bk{i}-{run}")).collect();
        let started = Instant::now();
        let mut generations = Vec::new();
        for name in &names {
            let applied = objects::apply_container(store.as_ref(), &typed(spec(&ns, name, &host, run, V1))?, None).await?;
            generations.push((name.clone(), applied.container.metadata.generation));
        }
        wait_all_ready(store.as_ref(), &ns, &generations, Duration::from_secs(600)).await?;
        let create_seconds = started.elapsed().as_secs_f64();
        eprintln!("kedge: {} specs Ready in {create_seconds:.1} s", names.len());

        let floor = Floor::start(docker, run, o.drift, V1).await?;
        let log = EventLog::follow(docker, run).await?;
        let same = |name: &str| -> Box<dyn Fn(&str) -> bool + Send> {
            let name = name.to_owned();
            Box::new(move |n: &str| n == name)
        };
        let (mut floor_runs, mut kedge_runs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let hogs = Hogs::start(o.load)?;
        let drift_load_start = common::load_average();
        for rep in 0..o.reps {
            let f = percentiles(&kill_each(docker, &log, &floor.names, same).await?);
            let fresh = &names[rep * o.drift..(rep + 1) * o.drift];
            let k = percentiles(&kill_each(docker, &log, fresh, same).await?);
            eprintln!("drift rep {rep}: floor p50 {:.1} p99 {:.1} ms | kedge p50 {:.1} p99 {:.1} ms", f.p50, f.p99, k.p50, k.p99);
            ratios.push(k.p99 / f.p99);
            floor_runs.push(f);
            kedge_runs.push(k);
        }
        let drift_load_end = common::load_average();
        drop(hogs);
        drop(floor);

        // Rollout: the first `rollout` specs flip between v1 and v2, rep by rep.
        let (mut rollout_seconds, mut old_gone_seconds) = (Vec::new(), Vec::new());
        for rep in 0..if o.measures_rollout() { o.reps } else { 0 } {
            let image = if rep % 2 == 0 { V2 } else { V1 };
            let started = Instant::now();
            let mut wanted = Vec::new();
            for name in &names[..o.rollout] {
                let applied =
                    objects::apply_container(store.as_ref(), &typed(spec(&ns, name, &host, run, image))?, None).await?;
                wanted.push((name.clone(), applied.container.metadata.generation));
            }
            wait_all_ready(store.as_ref(), &ns, &wanted, Duration::from_secs(600)).await?;
            let seconds = started.elapsed().as_secs_f64();
            // Start-first recreates stop their old containers in the background: also when the
            // last one is gone (the next rep starts from one container per spec).
            common::wait_no_retired(docker, run, Duration::from_secs(120)).await?;
            let gone = started.elapsed().as_secs_f64();
            eprintln!(
                "kedge rollout rep {rep}: {} specs to {image} Ready in {seconds:.2} s, old containers gone at {gone:.2} s",
                o.rollout
            );
            rollout_seconds.push(seconds);
            old_gone_seconds.push(gone);
        }
        let stats = agent.stats.snapshot();
        agent.stop().await?;
        let mut out = json!({
            "initial_create_seconds": create_seconds,
            "initial_containers": names.len(),
            "drift_load": o.load,
            "drift_load_average_start": drift_load_start,
            "drift_load_average_end": drift_load_end,
            "drift_floor_ms": summary(&floor_runs),
            "drift_kedge_ms": summary(&kedge_runs),
            "drift_p99_ratio_kedge_over_floor": figure(&ratios),
            "drift_p50_ratio_kedge_over_floor": figure(&kedge_runs.iter().zip(&floor_runs).map(|(k, f)| k.p50 / f.p50).collect::<Vec<_>>()),
            "agent_actions": stats.actions,
            "agent_failures": stats.failures,
        });
        if o.measures_rollout() {
            out["rollout_kedge_seconds"] = json!(figure(&rollout_seconds));
            out["rollout_kedge_old_gone_seconds"] = json!(figure(&old_gone_seconds));
        }
        anyhow::Ok(out)
    }
    .await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

/// Idle cost of the real agent binary over `idle` containers, then cold start over them.
async fn idle_phase(o: &Options, docker: &bollard::Docker, run: &str) -> anyhow::Result<Value> {
    let dir = tmp_dir(run, "idle")?;
    let result = async {
        let host = format!("bench-{run}-idle");
        let ns = format!("bi{run}");
        let agent = AgentProcess::start(&o.kedge_bin, &dir, "embedded", &host).await?;
        let agent_started = Instant::now();
        let client = reqwest::Client::new();
        let names: Vec<String> = (0..o.idle).map(|i| format!("bi{i}-{run}")).collect();
        let started = Instant::now();
        common::bounded(8, names.iter().map(|name| agent.put(&client, spec(&ns, name, &host, run, V1)))).await?;
        loop {
            let ready = agent.ready_count(&client, &ns).await?;
            if ready == o.idle {
                break;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(900), "only {ready} of {} Ready after 900 s", o.idle);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let create_seconds = started.elapsed().as_secs_f64();
        eprintln!("idle: {} specs Ready in {create_seconds:.1} s through the agent binary", o.idle);
        // Let the last status writes and event records settle before the window opens.
        tokio::time::sleep(Duration::from_secs(5)).await;

        let pid = agent.pid();
        let agent_cpu0 = common::cpu_seconds(pid)?;
        let engine_cpu0 = o.dockerd_pid.map(common::tree_cpu_seconds).transpose()?;
        let load_before = common::load_average();
        let window = Instant::now();
        let agent_age_at_window = agent_started.elapsed().as_secs_f64();
        let samples = idle_samples(pid, o.idle_seconds).await?;
        let seconds = window.elapsed().as_secs_f64();
        let agent_cpu = common::cpu_seconds(pid)? - agent_cpu0;
        let engine_cpu = match (o.dockerd_pid, engine_cpu0) {
            (Some(p), Some(c0)) => Some(common::tree_cpu_seconds(p)? - c0),
            _ => None,
        };
        let peak_rss = common::status_mib(pid, "VmHWM")?;
        let rss = common::status_mib(pid, "VmRSS")?;
        // What the RSS is made of: the process's own memory (heap, stacks) and the pages of the
        // binary and libraries it touched (file-backed, shared with the page cache).
        let rss_anon = common::status_mib(pid, "RssAnon")?;
        let rss_file = common::status_mib(pid, "RssFile")?;
        eprintln!("idle: RSS at the end {rss_anon:.1} MiB anonymous + {rss_file:.1} MiB file-backed (code)");
        eprintln!(
            "idle: agent {agent_cpu:.3} CPU s over {seconds:.0} s ({:.2}% of a core; max {:.2}% in one second), RSS max {:.1} mean {:.1} MiB in the window, peak RSS {peak_rss:.1} MiB since start, RSS {rss:.1} MiB at the end; engine {engine_cpu:?} CPU s",
            100.0 * agent_cpu / seconds,
            samples.max_cpu_percent,
            samples.max_rss_mib,
            samples.mean_rss_mib,
        );
        let busiest = samples.busiest(5, agent_age_at_window);
        let told: Vec<String> = busiest.iter().map(|(age, p)| format!("{p:.2}% at {age:.0} s")).collect();
        eprintln!("idle: the busiest seconds (the agent's age at their end): {}", told.join(", "));
        agent.stop().await?;

        // Cold start: an agent (in process, for its counters) over the same store and containers.
        let before = container_identities(docker, &names).await?;
        let (mut cold_seconds, mut reconciled_seconds, mut recreates, mut actions) = (Vec::new(), Vec::new(), 0u64, 0u64);
        for rep in 0..o.reps {
            let started = Instant::now();
            let store = open_embedded(&dir.join("kedge.db")).await?;
            let agent = InProcessAgent::start(store.clone(), &host, o.workers).await?;
            let mut first_reconcile: Option<f64> = None;
            loop {
                let now = agent.stats.snapshot();
                if now.reconciles > 0 && first_reconcile.is_none() {
                    first_reconcile = Some(started.elapsed().as_secs_f64());
                    eprintln!("cold start rep {rep}: first reconcile done at {:.2} s", started.elapsed().as_secs_f64());
                }
                if now.reconciles >= o.idle as u64 && now.in_flight == 0 {
                    break;
                }
                anyhow::ensure!(started.elapsed() < Duration::from_secs(300), "cold start: {now:?} after 300 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            reconciled_seconds.push(started.elapsed().as_secs_f64());
            let every: Vec<(String, Option<i64>)> = names.iter().map(|n| (n.clone(), None)).collect();
            wait_all_ready(store.as_ref(), &ns, &every, Duration::from_secs(120)).await?;
            let seconds = started.elapsed().as_secs_f64();
            let stats = agent.stats.snapshot();
            recreates += stats.actions_of("Recreate");
            actions += stats.actions.values().sum::<u64>();
            eprintln!("cold start rep {rep}: every spec reconciled and Ready in {seconds:.2} s; {stats:?}");
            cold_seconds.push(seconds);
            agent.stop().await?;
        }
        let after = container_identities(docker, &names).await?;
        let changed = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        anyhow::Ok(json!({
            "containers": o.idle,
            "initial_create_seconds": create_seconds,
            "initial_containers": names.len(),
            "window_seconds": seconds,
            "agent_cpu_seconds": agent_cpu,
            "agent_cpu_percent_of_one_core": 100.0 * agent_cpu / seconds,
            "agent_cpu_percent_max_per_second": samples.max_cpu_percent,
            "agent_rss_mib_max": samples.max_rss_mib,
            "agent_rss_mib_mean": samples.mean_rss_mib,
            "agent_peak_rss_mib": peak_rss,
            "agent_rss_mib_end": rss,
            "agent_rss_anon_mib_end": rss_anon,
            "agent_rss_file_mib_end": rss_file,
            "samples": samples.count,
            "agent_cpu_busiest_seconds": busiest
                .iter()
                .map(|(age, percent)| json!({"agent_age_seconds": age, "cpu_percent": percent}))
                .collect::<Vec<_>>(),
            "agent_cpu_percent_per_second": samples.cpu_percent.iter().map(|p| (p * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
            // The agent's periodic resync comes 300 s after its start: inside the window when this
            // plus window_seconds passes 300.
            "agent_age_at_window_start_seconds": agent_age_at_window,
            "window_covers_first_resync": agent_age_at_window < 300.0 && agent_age_at_window + seconds > 300.0,
            "engine_cpu_seconds": engine_cpu,
            "engine_cpu_percent_of_one_core": engine_cpu.map(|c| 100.0 * c / seconds),
            "load_average_window_start": load_before,
            "cold_start_ready_seconds": figure(&cold_seconds),
            "cold_start_reconciled_seconds": figure(&reconciled_seconds),
            "cold_start_recreates": recreates,
            "cold_start_actions": actions,
            "cold_start_containers_changed": changed,
        }))
    }
    .await;
    std::fs::remove_dir_all(&dir).ok();
    result
}

/// The idle window, sampled every second: the agent's CPU in each second and its RSS.
struct IdleSamples {
    count: usize,
    /// The largest share of a core the agent used in any one second of the window.
    max_cpu_percent: f64,
    max_rss_mib: f64,
    mean_rss_mib: f64,
    /// Every second's share of a core, in order: when a spike came tells what it was (the agent's
    /// periodic work runs at fixed ages: its resync and its leader's pass from scratch every 300 s).
    cpu_percent: Vec<f64>,
}

impl IdleSamples {
    /// The `n` busiest seconds, busiest first: (the agent's age at the end of the second, % of a core).
    fn busiest(&self, n: usize, age_at_window: f64) -> Vec<(f64, f64)> {
        let mut seconds: Vec<(f64, f64)> =
            self.cpu_percent.iter().enumerate().map(|(i, p)| (age_at_window + (i + 1) as f64, *p)).collect();
        seconds.sort_by(|a, b| b.1.total_cmp(&a.1));
        seconds.truncate(n);
        seconds
    }
}

/// Samples the agent `pid` every second for `seconds` seconds (a periodic spike shows in the
/// maximum, where a mean over the window would hide it). CPU from the scheduler's nanosecond
/// counters, which a per-second sample needs.
async fn idle_samples(pid: u32, seconds: u64) -> anyhow::Result<IdleSamples> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let (mut cpu_before, mut at_before) = (common::cpu_seconds_fine(pid)?, Instant::now());
    let mut samples = IdleSamples {
        count: 0,
        max_cpu_percent: 0.0,
        max_rss_mib: 0.0,
        mean_rss_mib: 0.0,
        cpu_percent: Vec::new(),
    };
    let mut rss_sum = 0.0;
    for _ in 0..seconds.max(1) {
        ticker.tick().await;
        let (cpu, at) = (common::cpu_seconds_fine(pid)?, Instant::now());
        let rss = common::status_mib(pid, "VmRSS")?;
        let percent = 100.0 * (cpu - cpu_before) / (at - at_before).as_secs_f64();
        samples.max_cpu_percent = samples.max_cpu_percent.max(percent);
        samples.cpu_percent.push(percent);
        samples.max_rss_mib = samples.max_rss_mib.max(rss);
        rss_sum += rss;
        samples.count += 1;
        (cpu_before, at_before) = (cpu, at);
    }
    samples.mean_rss_mib = rss_sum / samples.count as f64;
    Ok(samples)
}

/// (id, started at) per container: a recreate changes the id, a restart the start time.
async fn container_identities(
    docker: &bollard::Docker,
    names: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let inspect = docker.inspect_container(name, None).await?;
        out.push((
            inspect.id.unwrap_or_default(),
            inspect.state.and_then(|s| s.started_at).unwrap_or_default(),
        ));
    }
    Ok(out)
}

/// Specs applied per second through the agent's HTTP API, on each store.
async fn api_phase(o: &Options, run: &str) -> anyhow::Result<Value> {
    let mut stores = vec![("embedded".to_owned(), "embedded".to_owned())];
    match &o.etcd {
        Some(endpoints) => {
            let list: Vec<&str> =
                endpoints.split(',').map(|e| e.trim().trim_start_matches("http://")).collect();
            stores.push(("etcd".to_owned(), format!("etcd://{}", list.join(","))));
        }
        None => eprintln!("api: etcd skipped (no KEDGE_ETCD_ENDPOINTS / --etcd)"),
    }
    let mut out = json!({});
    for (label, store) in stores {
        let dir = tmp_dir(run, &format!("api-{label}"))?;
        let result = async {
            // Specs are placed on a host no agent serves: this measures the API and the store alone.
            let agent = AgentProcess::start(&o.kedge_bin, &dir, &store, &format!("bench-{run}-api")).await?;
            let client = reqwest::Client::new();
            let ns = format!("ba{run}");
            let nowhere = format!("nowhere-{run}");
            let names: Vec<String> = (0..o.api_specs).map(|i| format!("ba{i}-{run}")).collect();
            let (mut sequential, mut concurrent) = (Vec::new(), Vec::new());
            for rep in 0..o.reps {
                let versioned = |name: &str, round: usize| {
                    let mut s = spec(&ns, name, &nowhere, run, V1);
                    s["spec"]["env"] = json!({"ROUND": round.to_string()});
                    s
                };
                let started = Instant::now();
                for name in &names {
                    agent.put(&client, versioned(name, 2 * rep)).await?;
                }
                sequential.push(names.len() as f64 / started.elapsed().as_secs_f64());
                let started = Instant::now();
                common::bounded(16, names.iter().map(|name| agent.put(&client, versioned(name, 2 * rep + 1)))).await?;
                concurrent.push(names.len() as f64 / started.elapsed().as_secs_f64());
                eprintln!(
                    "api {label} rep {rep}: {:.0} specs/s one at a time, {:.0} specs/s 16 at once",
                    sequential[rep], concurrent[rep]
                );
            }
            common::bounded(16, names.iter().map(|name| agent.delete(&client, &ns, name))).await?;
            agent.stop().await?;
            anyhow::Ok(json!({"sequential_specs_per_second": figure(&sequential), "concurrent16_specs_per_second": figure(&concurrent)}))
        }
        .await;
        std::fs::remove_dir_all(&dir).ok();
        out[label] = result?;
    }
    Ok(out)
}

/// The same kill-and-restore and rollout against Docker Swarm services.
async fn swarm_phase(o: &Options, docker: &bollard::Docker, run: &str) -> anyhow::Result<Value> {
    let label = format!("{}={run}", common::BENCH_LABEL);
    let drift_service = format!("bs{run}");
    crate::swarm::create_service(&drift_service, o.drift, V1, &label, o.workers, &o.swarm_order)?;
    crate::swarm::wait_converged(docker, &drift_service, o.drift, V1, Duration::from_secs(600)).await?;
    let log = EventLog::follow(docker, run).await?;
    let mut runs = Vec::new();
    let hogs = Hogs::start(o.load)?;
    let drift_load_start = common::load_average();
    for rep in 0..o.reps {
        let mut tasks: Vec<String> =
            crate::swarm::running_tasks(docker, &drift_service).await?.into_iter().map(|t| t.0).collect();
        tasks.sort();
        let replacement = |name: &str| -> Box<dyn Fn(&str) -> bool + Send> {
            let (name, slot) = (name.to_owned(), crate::swarm::slot_prefix(name));
            Box::new(move |n: &str| n != name && n.starts_with(&slot))
        };
        let p = percentiles(&kill_each(docker, &log, &tasks, replacement).await?);
        eprintln!("swarm drift rep {rep}: p50 {:.1} p99 {:.1} ms", p.p50, p.p99);
        runs.push(p);
    }
    let drift_load_end = common::load_average();
    drop(hogs);
    crate::swarm::docker_cli(&["service", "rm", &drift_service])?;
    let mut out = json!({"drift_ms": summary(&runs), "drift_load": o.load, "drift_load_average_start": drift_load_start,
            "drift_load_average_end": drift_load_end, "update_parallelism": o.workers});
    if !o.measures_rollout() {
        return Ok(out);
    }

    let rollout_service = format!("br{run}");
    crate::swarm::create_service(&rollout_service, o.rollout, V1, &label, o.workers, &o.swarm_order)?;
    crate::swarm::wait_converged(docker, &rollout_service, o.rollout, V1, Duration::from_secs(600)).await?;
    let mut rollout_seconds = Vec::new();
    for rep in 0..o.reps {
        let image = if rep % 2 == 0 { V2 } else { V1 };
        let started = Instant::now();
        crate::swarm::docker_cli(&[
            "service",
            "update",
            "-d",
            "--no-resolve-image",
            "--image",
            image,
            &rollout_service,
        ])?;
        crate::swarm::wait_converged(docker, &rollout_service, o.rollout, image, Duration::from_secs(600))
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("swarm rollout rep {rep}: {} tasks to {image} in {seconds:.2} s", o.rollout);
        rollout_seconds.push(seconds);
    }
    crate::swarm::docker_cli(&["service", "rm", &rollout_service])?;
    out["rollout_seconds"] = json!(figure(&rollout_seconds));
    out["update_order"] = json!(o.swarm_order);
    Ok(out)
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": memory,
        "kernel": kernel.trim(),
    })
}

fn med(v: &Value) -> Option<f64> {
    v["median"].as_f64()
}

fn cell(v: &Value, unit: &str) -> String {
    match serde_json::from_value::<Figure>(v.clone()) {
        Ok(f) if f.runs > 1 => format!("{:.2}{unit} ({:.2}-{:.2})", f.median, f.min, f.max),
        Ok(f) => format!("{:.2}{unit}", f.median),
        Err(_) => "-".to_owned(),
    }
}

fn print_table(r: &Value) {
    for line in table(r) {
        println!("{line}");
    }
}

/// The table's lines: a header naming the machine's load (and the busy loops, if any), then one row
/// per figure present in the results.
fn table(r: &Value) -> Vec<String> {
    let mut rows: Vec<[String; 4]> = Vec::new();
    // With `--load N`, every drift row says so: those figures were taken beside N busy loops.
    let load = r["options"]["load"].as_u64().unwrap_or(0);
    let beside = if load > 0 { format!(", {load} busy loops") } else { String::new() };
    let k = &r["kedge"];
    if !k.is_null() {
        for p in ["p50", "p95", "p99"] {
            rows.push([
                format!("drift repair {p}{beside}"),
                cell(&k["drift_kedge_ms"][p], " ms"),
                format!("floor {}", cell(&k["drift_floor_ms"][p], " ms")),
                String::new(),
            ]);
        }
        let ratio = med(&k["drift_p99_ratio_kedge_over_floor"]).unwrap_or(f64::NAN);
        rows.push([
            format!("drift p99 kedge/floor{beside}"),
            cell(&k["drift_p99_ratio_kedge_over_floor"], "x"),
            "target <= 1.10x (issue 19)".into(),
            verdict(ratio <= 1.10),
        ]);
        if !k["rollout_kedge_seconds"].is_null() {
            rows.push(bare_row("rollout (kedge)", cell(&k["rollout_kedge_seconds"], " s")));
        }
        if !k["rollout_kedge_old_gone_seconds"].is_null() {
            let gone = cell(&k["rollout_kedge_old_gone_seconds"], " s");
            rows.push(bare_row("rollout (kedge), last old container gone", gone));
        }
    }
    let s = &r["swarm"];
    if !s.is_null() {
        rows.push([
            format!("drift repair p99 (Swarm){beside}"),
            cell(&s["drift_ms"]["p99"], " ms"),
            String::new(),
            String::new(),
        ]);
        if let (Some(kp), Some(sp)) = (med(&k["drift_kedge_ms"]["p99"]), med(&s["drift_ms"]["p99"])) {
            rows.push([
                format!("drift p99 kedge/Swarm{beside}"),
                format!("{:.2}x", kp / sp),
                "target < 1x".into(),
                verdict(kp < sp),
            ]);
        }
        if !s["rollout_seconds"].is_null() {
            let order = s["update_order"].as_str().unwrap_or("stop-first");
            rows.push(bare_row(&format!("rollout (Swarm, {order})"), cell(&s["rollout_seconds"], " s")));
        }
        if let (Some(kr), Some(sr)) = (med(&k["rollout_kedge_seconds"]), med(&s["rollout_seconds"])) {
            rows.push([
                "rollout kedge/Swarm".into(),
                format!("{:.2}x", kr / sr),
                "target <= 0.9x (issue 19)".into(),
                verdict(kr <= 0.9 * sr),
            ]);
        }
    }
    let i = &r["idle"];
    if !i.is_null() {
        let cpu = i["agent_cpu_percent_of_one_core"].as_f64().unwrap_or(f64::NAN);
        let cpu_max = i["agent_cpu_percent_max_per_second"].as_f64().unwrap_or(f64::NAN);
        let rss_max = i["agent_rss_mib_max"].as_f64().unwrap_or(f64::NAN);
        let rss_mean = i["agent_rss_mib_mean"].as_f64().unwrap_or(f64::NAN);
        rows.push([
            format!(
                "idle CPU, {} containers, {:.0} s",
                i["containers"],
                i["window_seconds"].as_f64().unwrap_or(f64::NAN)
            ),
            format!(
                "{cpu:.3}% of a core, max {cpu_max:.2}% in a second (at agent age {:.0} s)",
                i["agent_cpu_busiest_seconds"][0]["agent_age_seconds"].as_f64().unwrap_or(f64::NAN)
            ),
            format!(
                "engine {:.2}%; resync in the window: {}; target <= 0.2% (the mean and every second)",
                i["engine_cpu_percent_of_one_core"].as_f64().unwrap_or(f64::NAN),
                i["window_covers_first_resync"]
            ),
            verdict(cpu <= 0.2 && cpu_max <= 0.2),
        ]);
        rows.push([
            "idle RSS (sampled each second)".into(),
            format!("max {rss_max:.1} MiB, mean {rss_mean:.1} MiB"),
            format!(
                "peak since start {:.1} MiB; at the end {:.1} anonymous + {:.1} file-backed; target <= 24 MiB",
                i["agent_peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
                i["agent_rss_anon_mib_end"].as_f64().unwrap_or(f64::NAN),
                i["agent_rss_file_mib_end"].as_f64().unwrap_or(f64::NAN)
            ),
            verdict(rss_max <= 24.0),
        ]);
        let cold = med(&i["cold_start_ready_seconds"]).unwrap_or(f64::NAN);
        let recreates = i["cold_start_recreates"].as_u64().unwrap_or(u64::MAX);
        rows.push([
            "cold start, all Ready".into(),
            cell(&i["cold_start_ready_seconds"], " s"),
            format!("{recreates} recreates; target <= 1.5 s, 0"),
            verdict(cold <= 1.5 && recreates == 0),
        ]);
    }
    let a = &r["api"];
    if let Some(stores) = a.as_object() {
        for (store, v) in stores {
            rows.push([
                format!("API applies/s ({store})"),
                cell(&v["sequential_specs_per_second"], "/s"),
                format!("16 at once {}", cell(&v["concurrent16_specs_per_second"], "/s")),
                String::new(),
            ]);
        }
    }
    let widths: Vec<usize> =
        (0..4).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0).max(6)).collect();
    let mut lines = vec![format!(
        "figure (median (min-max) over runs)   load average {}{}{}",
        r["load_average_before"].as_str().unwrap_or(""),
        match r["options"]["profile"].as_str() {
            Some(profile) if profile != "release" =>
                format!("   {profile} profile (not comparable to release)"),
            _ => String::new(),
        },
        if load > 0 {
            format!("   drift measured beside {load} busy loops (--load {load})")
        } else {
            String::new()
        }
    )];
    for row in rows {
        lines.push(format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    lines
}

/// A row with a figure and neither a reference nor a target.
fn bare_row(name: &str, value: String) -> [String; 4] {
    [name.to_owned(), value, String::new(), String::new()]
}

fn verdict(met: bool) -> String {
    if met { "met" } else { "MISSED" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn defaults_run_every_phase_without_load() {
        let o = parse(&[]).unwrap();
        assert_eq!((o.reps, o.drift, o.rollout, o.idle, o.workers), (2, 100, 50, 500, 8));
        assert!(o.swarm && o.only.is_empty());
        assert_eq!(o.load, 0);
        assert_eq!(o.profile, "release");
    }

    #[test]
    fn options_are_read() {
        let o = parse(&args(&[
            "--reps",
            "1",
            "--drift",
            "30",
            "--rollout",
            "10",
            "--no-swarm",
            "--only",
            "drift,swarm",
            "--load",
            "2",
            "--out",
            "x.json",
            "--profile",
            "dev",
            "--swarm-order",
            "start-first",
        ]))
        .unwrap();
        assert_eq!(o.swarm_order, "start-first");
        assert!(parse(&args(&["--swarm-order", "sideways"])).is_err());
        assert_eq!(parse(&args(&[])).unwrap().swarm_order, "stop-first");
        assert_eq!((o.reps, o.drift, o.rollout, o.load), (1, 30, 10, 2));
        assert!(!o.swarm);
        assert_eq!(o.only, ["drift", "swarm"]);
        assert_eq!(o.out, PathBuf::from("x.json"));
        assert_eq!(o.profile, "dev");
        assert!(o.wants("drift") && o.wants("swarm") && !o.wants("idle"));
    }

    #[test]
    fn load_must_be_a_count() {
        for bad in ["-1", "two", "1.5", ""] {
            let error = format!("{:#}", parse(&args(&["--load", bad])).unwrap_err());
            assert!(error.contains("--load takes a count of busy loops"), "{bad:?}: {error}");
        }
        let error = format!("{:#}", parse(&args(&["--load"])).unwrap_err());
        assert!(error.contains("--load needs a value"), "{error}");
    }

    #[test]
    fn only_drift_skips_the_rollouts_and_their_bound_on_drift() {
        let o = parse(&args(&["--only", "drift", "--drift", "30"])).unwrap();
        assert!(!o.measures_rollout());
        let o = parse(&args(&["--only", "drift,swarm", "--drift", "30"])).unwrap();
        assert!(!o.measures_rollout());
        for only in [&["--only", "drift,rollout"][..], &["--only", "swarm"], &[]] {
            assert!(parse(&args(only)).unwrap().measures_rollout(), "{only:?}");
        }
        assert!(parse(&args(&["--only", "rollout", "--drift", "30"])).is_err());
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(format!("{:#}", parse(&args(&["--lode", "2"])).unwrap_err())
            .contains("unknown argument \"--lode\""));
        assert!(parse(&args(&["--reps", "0"])).is_err());
        assert!(parse(&args(&["--drift", "10", "--rollout", "20"])).is_err());
    }

    #[test]
    fn the_table_names_the_load_only_when_there_was_one() {
        let p = json!({"runs": 1, "median": 600.0, "min": 600.0, "max": 600.0});
        let drift = json!({"p50": p, "p95": p, "p99": p});
        let result = |load: u64| {
            json!({
                "options": {"load": load, "profile": "release"},
                "load_average_before": "1.00 1.00 1.00",
                "kedge": {"drift_kedge_ms": drift, "drift_floor_ms": drift,
                          "drift_p99_ratio_kedge_over_floor": {"runs": 1, "median": 1.0, "min": 1.0, "max": 1.0}},
                "swarm": {"drift_ms": drift},
            })
        };
        let quiet = table(&result(0)).join("\n");
        assert!(!quiet.contains("busy loops"), "{quiet}");
        assert!(
            quiet.starts_with("figure (median (min-max) over runs)   load average 1.00 1.00 1.00\n"),
            "{quiet}"
        );
        let mut dev = result(0);
        dev["options"]["profile"] = json!("dev");
        assert!(table(&dev)[0].ends_with("   dev profile (not comparable to release)"), "{}", table(&dev)[0]);
        let loaded = table(&result(2));
        assert!(loaded[0].ends_with("drift measured beside 2 busy loops (--load 2)"), "{}", loaded[0]);
        let drift_rows: Vec<&String> = loaded.iter().filter(|l| l.starts_with("drift")).collect();
        assert_eq!(drift_rows.len(), 6, "{loaded:#?}");
        assert!(!loaded.iter().any(|l| l.starts_with("rollout")), "no rollout was measured: {loaded:#?}");
        assert!(drift_rows.iter().all(|l| l.contains(", 2 busy loops")), "{loaded:#?}");
    }
}
