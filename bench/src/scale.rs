//! The scale simulation (`kedge-bench scale`, `scripts/bench --only scale`; docs/scale.md).
//!
//! H agents run in this process, each over its own in-memory engine with a real engine's latencies
//! ([`SimEngine`], [`Latencies::realistic`]), against a three-member etcd cluster this module starts
//! on loopback ports and tears down after, also on failure ([`EtcdCluster`]). Each agent's store is
//! metered ([`MeteredStore`]): its range reads, its writes and their bytes, and every watch event it
//! receives, classified by whose work it is.
//!
//! The run: wait until every host is registered and a scheduler leads; apply H x C unplaced specs
//! (the leader binds them); time until every container is Ready; then change specs one at a time
//! and time each change to the first engine call its agent makes for it; then count every agent's
//! range reads over an idle window. Figures go to the JSON under `scale`, merged into what the file
//! already holds (other phases' results are kept).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use kedge_controller::agent::{bindings, AgentConfig};
use kedge_controller::docker::fake::{Latencies, SimEngine};
use kedge_controller::docker::ImageInfo;
use kedge_controller::store::{
    keys, objects, DeleteRequest, EtcdOptions, EtcdStore, EventKind, KeyValue, LeaseId, ListResult,
    PutRequest, SharedStore, Store, StoreFuture, WatchEvent, WatchStream,
};
use kedge_crds::ConditionStatus;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::common::{self, percentiles};

const NAMESPACE: &str = "scale";
const IMAGE: &str = "kedge-sim/app:1";

#[derive(Debug, Clone)]
pub struct Options {
    pub hosts: usize,
    pub per_host: usize,
    /// Spec changes timed one at a time once everything is Ready.
    pub changes: usize,
    /// The idle window over which range reads are counted.
    pub idle_seconds: u64,
    /// Workers per agent.
    pub workers: usize,
    /// The run fails when not every container is Ready within this.
    pub deadline: Duration,
    pub out: PathBuf,
    /// Where etcd's members keep their data and logs (removed after), and `etcd.pids`.
    pub work_dir: PathBuf,
    /// The run fails when this process's resident memory exceeds this (every agent caches every
    /// spec: memory grows with hosts x containers), before the machine runs out.
    pub max_rss_mib: f64,
    pub profile: String,
    /// How many child processes run the agents (`kedge-bench scale-agents`); 0: this process.
    /// `None`: one per 100 hosts. One process of 1,000 agents on two cores starved its own lease
    /// keep-alives; a process each has its own runtime, scheduled by the kernel.
    pub agent_processes: Option<usize>,
}

const USAGE: &str = "usage: kedge-bench scale [--hosts 100] [--per-host 30] [--changes 50] [--idle-seconds 20] \
[--workers 8] [--deadline-seconds 900] [--max-rss-mib 8192] [--agent-processes HOSTS/100, 0: this one] [--work-dir DIR] \
[--profile release] [--out bench-results/latest.json]";

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        hosts: 100,
        per_host: 30,
        changes: 50,
        idle_seconds: 20,
        workers: 8,
        deadline: Duration::from_secs(900),
        out: PathBuf::from("bench-results/latest.json"),
        work_dir: std::env::temp_dir().join(format!("kscale{}", std::process::id())),
        max_rss_mib: 8192.0,
        profile: "release".to_owned(),
        agent_processes: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value; {USAGE}"));
        match flag.as_str() {
            "--hosts" => o.hosts = value()?.parse().context("--hosts takes a count")?,
            "--per-host" => o.per_host = value()?.parse().context("--per-host takes a count")?,
            "--changes" => o.changes = value()?.parse().context("--changes takes a count")?,
            "--idle-seconds" => o.idle_seconds = value()?.parse().context("--idle-seconds takes seconds")?,
            "--workers" => o.workers = value()?.parse().context("--workers takes a count")?,
            "--deadline-seconds" => {
                o.deadline =
                    Duration::from_secs(value()?.parse().context("--deadline-seconds takes seconds")?)
            }
            "--out" => o.out = PathBuf::from(value()?),
            "--max-rss-mib" => o.max_rss_mib = value()?.parse().context("--max-rss-mib takes MiB")?,
            "--work-dir" => o.work_dir = PathBuf::from(value()?),
            "--profile" => o.profile = value()?.clone(),
            "--agent-processes" => {
                o.agent_processes = Some(value()?.parse().context("--agent-processes takes a count")?)
            }
            other => anyhow::bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    anyhow::ensure!(o.hosts >= 1 && o.per_host >= 1 && o.workers >= 1, "counts must be at least 1; {USAGE}");
    Ok(o)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let figures = runtime.block_on(simulate(&o))?;
    print_figures(&figures);
    merge_into(&o.out, figures)?;
    eprintln!("wrote {} (scale)", o.out.display());
    Ok(())
}

/// Sets `scale` in the JSON at `out` to `figures`, keeping everything else the file holds.
pub fn merge_into(out: &Path, figures: Value) -> anyhow::Result<()> {
    let mut results = match std::fs::read_to_string(out) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{} is not JSON", out.display()))?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(error) => return Err(error).with_context(|| format!("reading {}", out.display())),
    };
    anyhow::ensure!(results.is_object(), "{} does not hold a JSON object", out.display());
    results["scale"] = figures;
    if let Some(dir) = out.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&results)?)?;
    Ok(())
}

fn print_figures(f: &Value) {
    println!("scale: {} hosts x {} = {} containers", f["hosts"], f["per_host"], f["containers"]);
    println!("  converged (applied to all Ready)   {} s", f["converge_seconds"]);
    println!(
        "  one spec change to its agent's act p50 {} ms, p99 {} ms",
        f["change_p50_ms"], f["change_p99_ms"]
    );
    println!("  store writes per container         {}", f["store_writes_per_container"]);
    println!("  store bytes written per container  {}", f["store_bytes_per_container"]);
    println!("  reconciles per container (fleet)   {}", f["reconciles_per_container"]);
    println!("  peak resident memory (all agents)  {} MiB", f["peak_rss_mib"]);
    println!("  foreign wake-ups (non-leaders)     {}", f["foreign_wakeups"]);
    println!("  watch events per agent (median)    {}", f["watch_events_per_agent_median"]);
    println!("  leader range reads/s when idle     {}", f["leader_idle_reads_per_second"]);
    println!("  all agents' range reads/s idle     {}", f["idle_reads_per_second"]);
    println!("  etcd CPU during convergence        {} s", f["etcd_cpu_seconds_converge"]);
    println!("  agents' CPU (their processes)     {} s", f["agents_cpu_seconds_converge"]);
    println!("  agent processes                    {}", f["agent_processes"]);
    println!("  etcd database size                 {} MiB", f["etcd_db_mib"]);
    println!(
        "  load average start / end          {} / {}",
        f["load_average_before"], f["load_average_after"]
    );
}

/// Runs the simulation of `o.hosts` x `o.per_host` on a cluster of its own; the figures as JSON.
pub async fn simulate(o: &Options) -> anyhow::Result<Value> {
    let cluster = EtcdCluster::start(&o.work_dir).context("starting a three-member etcd cluster")?;
    let outcome = simulate_on(o, &cluster).await;
    cluster.stop();
    outcome
}

/// One metered agent of the simulation.
struct SimHost {
    /// Its index in the fleet (`sim00042` is 42).
    index: usize,
    engine: Arc<SimEngine>,
    meter: Arc<Meter>,
    stats: Arc<kedge_controller::agent::AgentStats>,
}

/// Connects one client per etcd member; the agents are spread over them as a fleet's would be.
async fn connect_members(endpoints: &[String]) -> anyhow::Result<Vec<SharedStore>> {
    let mut members: Vec<SharedStore> = Vec::new();
    for endpoint in endpoints {
        let mut options = EtcdOptions::new([endpoint.clone()]);
        options.request_timeout = Duration::from_secs(30);
        members.push(Arc::new(EtcdStore::connect(options).await?));
    }
    Ok(members)
}

/// The simulated agents `range` of a fleet of `total` specs, in this process.
struct LocalGroup {
    hosts: Vec<SimHost>,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<Result<(), kedge_controller::agent::AgentError>>,
}

impl LocalGroup {
    fn start(
        members: &[SharedStore],
        range: std::ops::Range<usize>,
        total: usize,
        workers: usize,
    ) -> LocalGroup {
        let latencies = Latencies::realistic();
        let shutdown = CancellationToken::new();
        let mut hosts = Vec::new();
        let mut tasks = tokio::task::JoinSet::new();
        for index in range {
            let name = host_name(index);
            let engine = Arc::new(SimEngine::new(latencies, &[(IMAGE, image())]));
            let meter = Arc::new(Meter::new(name.clone(), total));
            let store: SharedStore = Arc::new(MeteredStore {
                inner: members[index % members.len()].clone(),
                meter: meter.clone(),
            });
            let mut config = AgentConfig::new(name.clone());
            config.workers = workers;
            let stats = config.stats.clone();
            // An agent that lost its host lock (its lease lapsed while the machine was saturated)
            // ends, and is started again, as its service manager would start `kedge agent`.
            let (sim_engine, token) = (engine.clone(), shutdown.child_token());
            tasks.spawn(async move {
                loop {
                    let outcome = kedge_controller::agent::run_simulated(
                        store.clone(),
                        sim_engine.clone(),
                        config.clone(),
                        token.clone(),
                    )
                    .await;
                    if token.is_cancelled() {
                        return outcome;
                    }
                    eprintln!("scale: agent {} ended ({outcome:?}); starting it again", config.host_name);
                }
            });
            hosts.push(SimHost { index, engine, meter, stats });
        }
        LocalGroup { hosts, shutdown, tasks }
    }

    fn report(&self, detail: bool) -> GroupReport {
        let mut report = GroupReport::default();
        for host in &self.hosts {
            let running = host.engine.engine().running();
            report.following += usize::from(host.stats.follows_placements());
            report.running += running;
            report.idle_hosts += usize::from(running == 0);
            report.reconciles += host.stats.snapshot().reconciles;
            report.writes += host.meter.writes.load(Ordering::Relaxed);
            report.bytes += host.meter.write_bytes.load(Ordering::Relaxed);
            if detail {
                report.hosts.push(host.meter.report(host.index));
            }
        }
        report
    }

    /// Waits up to `limit` for the first engine call of host `index` for spec `name` at or after
    /// `since`; answers when it began.
    async fn wait_change(
        &self,
        index: usize,
        name: &str,
        since: Instant,
        limit: Duration,
    ) -> anyhow::Result<Instant> {
        let host = self.hosts.iter().find(|host| host.index == index).context("no such host here")?;
        wait_until_fast(limit, || host.engine.first_change_since(&container_name(name), since)).await
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        let stopping = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(60), stopping).await.is_err() {
            eprintln!("scale: agents did not all stop within 60 s");
        }
    }
}

/// What a group of agents has done so far (summed), and with `detail` each host's meter.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct GroupReport {
    following: usize,
    running: usize,
    /// Hosts that run no container.
    idle_hosts: usize,
    reconciles: u64,
    writes: u64,
    bytes: u64,
    hosts: Vec<HostReport>,
}

impl GroupReport {
    fn add(&mut self, other: GroupReport) {
        self.following += other.following;
        self.running += other.running;
        self.idle_hosts += other.idle_hosts;
        self.reconciles += other.reconciles;
        self.writes += other.writes;
        self.bytes += other.bytes;
        self.hosts.extend(other.hosts);
    }
}

/// One host's meter.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct HostReport {
    index: usize,
    reads: u64,
    own_bindings: u64,
    foreign_bindings: u64,
    other_events: u64,
    /// Spec and status events by spec index, the nonzero ones.
    spec_events: Vec<(usize, u8)>,
}

/// Simulated agents in a child process (`kedge-bench scale-agents`), asked over its stdin and
/// stdout, one JSON line each way. The child ends when its stdin closes (this process ended).
struct ChildGroup {
    child: tokio::process::Child,
    io: tokio::sync::Mutex<(
        tokio::process::ChildStdin,
        tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    )>,
}

impl ChildGroup {
    fn start(
        endpoints: &[String],
        range: std::ops::Range<usize>,
        total: usize,
        workers: usize,
    ) -> anyhow::Result<ChildGroup> {
        use tokio::io::AsyncBufReadExt;
        let exe = std::env::current_exe().context("finding kedge-bench")?;
        let mut child = tokio::process::Command::new(exe)
            .arg("scale-agents")
            .args(["--endpoints", &endpoints.join(",")])
            .args(["--first", &range.start.to_string(), "--count", &range.len().to_string()])
            .args(["--total", &total.to_string(), "--workers", &workers.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting a process of simulated agents")?;
        let stdin = child.stdin.take().context("the child's stdin")?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let lines = tokio::io::BufReader::new(stdout).lines();
        Ok(ChildGroup { child, io: tokio::sync::Mutex::new((stdin, lines)) })
    }

    async fn ask(&self, request: Value) -> anyhow::Result<Value> {
        use tokio::io::AsyncWriteExt;
        let mut io = self.io.lock().await;
        let (stdin, lines) = &mut *io;
        stdin.write_all(format!("{request}\n").as_bytes()).await?;
        stdin.flush().await?;
        let line = lines.next_line().await?.context("the process of simulated agents ended")?;
        let answer: Value = serde_json::from_str(&line)?;
        if let Some(error) = answer.get("error").and_then(Value::as_str) {
            anyhow::bail!("{error}");
        }
        Ok(answer)
    }
}

/// A group of simulated agents: in this process, or in a child process.
enum Group {
    Local(LocalGroup),
    Child(Box<ChildGroup>),
}

impl Group {
    async fn report(&self, detail: bool) -> anyhow::Result<GroupReport> {
        match self {
            Group::Local(group) => Ok(group.report(detail)),
            Group::Child(child) => {
                Ok(serde_json::from_value(child.ask(json!({"report": {"detail": detail}})).await?)?)
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Group::Local(_) => None,
            Group::Child(child) => child.child.id(),
        }
    }

    async fn stop(self) {
        match self {
            Group::Local(group) => group.stop().await,
            Group::Child(child) => {
                let ChildGroup { mut child, io } = *child;
                drop(io);
                if tokio::time::timeout(Duration::from_secs(60), child.wait()).await.is_err() {
                    eprintln!("scale: a process of simulated agents did not stop within 60 s; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    }
}

/// Every simulated agent, in one or more groups.
struct Fleet {
    groups: Vec<(std::ops::Range<usize>, Group)>,
    hosts: usize,
}

impl Fleet {
    /// `processes`: how many child processes share the agents (0: all in this process).
    fn start(
        endpoints: &[String],
        members: &[SharedStore],
        o: &Options,
        processes: usize,
    ) -> anyhow::Result<Fleet> {
        let total = o.hosts * o.per_host;
        let mut groups = Vec::new();
        if processes == 0 {
            groups.push((0..o.hosts, Group::Local(LocalGroup::start(members, 0..o.hosts, total, o.workers))));
        } else {
            let per = o.hosts.div_ceil(processes);
            for first in (0..o.hosts).step_by(per) {
                let range = first..(first + per).min(o.hosts);
                let child = ChildGroup::start(endpoints, range.clone(), total, o.workers)?;
                groups.push((range, Group::Child(Box::new(child))));
            }
        }
        Ok(Fleet { groups, hosts: o.hosts })
    }

    async fn report(&self, detail: bool) -> anyhow::Result<GroupReport> {
        let reports =
            futures::future::try_join_all(self.groups.iter().map(|(_, group)| group.report(detail))).await?;
        let mut all = GroupReport::default();
        for report in reports {
            all.add(report);
        }
        all.hosts.sort_by_key(|host| host.index);
        Ok(all)
    }

    /// The milliseconds from `at` (just before a change of spec `name` was written) to the first
    /// engine call host `index` made for it.
    async fn change_ms(
        &self,
        index: usize,
        name: &str,
        at: Instant,
        at_wall: std::time::SystemTime,
    ) -> anyhow::Result<f64> {
        let limit = Duration::from_secs(30);
        let (_, group) = self
            .groups
            .iter()
            .find(|(range, _)| range.contains(&index))
            .context("no group runs this host")?;
        match group {
            Group::Local(group) => {
                Ok(group.wait_change(index, name, at, limit).await?.duration_since(at).as_secs_f64() * 1000.0)
            }
            Group::Child(child) => {
                let since = at_wall.duration_since(std::time::UNIX_EPOCH)?.as_micros() as u64;
                let request = json!({"change": {"host": index, "name": name, "since_micros": since, "limit_ms": limit.as_millis() as u64}});
                child.ask(request).await?["ms"].as_f64().context("no answer")
            }
        }
    }

    /// The agents' processes: this one when they run here, else the children.
    fn pids(&self) -> Vec<u32> {
        let children: Vec<u32> = self.groups.iter().filter_map(|(_, group)| group.pid()).collect();
        if children.is_empty() {
            vec![std::process::id()]
        } else {
            children
        }
    }

    fn cpu_seconds(&self) -> f64 {
        self.pids().into_iter().map(|pid| common::cpu_seconds(pid).unwrap_or(0.0)).sum()
    }

    fn rss_mib(&self, field: &str) -> f64 {
        self.pids().into_iter().map(|pid| common::status_mib(pid, field).unwrap_or(0.0)).sum()
    }

    async fn stop(self) {
        futures::future::join_all(self.groups.into_iter().map(|(_, group)| group.stop())).await;
    }
}

/// `kedge-bench scale-agents --endpoints E1,E2,E3 --first F --count N --total T --workers W`: the
/// simulated agents F..F+N of a fleet, in this process, answering the parent `kedge-bench scale`
/// on stdin/stdout (one JSON request and one answer a line) until its stdin closes.
pub fn run_agents(args: &[String]) -> anyhow::Result<()> {
    let (mut endpoints, mut first, mut count, mut total, mut workers) = (Vec::new(), 0, 0, 0, 8);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoints" => endpoints = value.split(',').map(str::to_owned).collect(),
            "--first" => first = value.parse()?,
            "--count" => count = value.parse()?,
            "--total" => total = value.parse()?,
            "--workers" => workers = value.parse()?,
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    anyhow::ensure!(!endpoints.is_empty() && count >= 1, "scale-agents needs --endpoints and --count");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let members = connect_members(&endpoints).await?;
        let group = LocalGroup::start(&members, first..first + count, total, workers);
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut stdout = tokio::io::stdout();
        while let Some(line) = lines.next_line().await? {
            let answer = match answer(&group, &line).await {
                Ok(answer) => answer,
                Err(error) => json!({"error": format!("{error:#}")}),
            };
            stdout.write_all(format!("{answer}\n").as_bytes()).await?;
            stdout.flush().await?;
        }
        group.stop().await;
        anyhow::Ok(())
    })
}

/// The answer of a child's group to one request line of its parent.
async fn answer(group: &LocalGroup, line: &str) -> anyhow::Result<Value> {
    let request: Value = serde_json::from_str(line)?;
    if let Some(report) = request.get("report") {
        return Ok(serde_json::to_value(group.report(report["detail"].as_bool().unwrap_or(false)))?);
    }
    if let Some(change) = request.get("change") {
        let since_wall =
            std::time::UNIX_EPOCH + Duration::from_micros(change["since_micros"].as_u64().context("since")?);
        let ago = std::time::SystemTime::now().duration_since(since_wall).unwrap_or_default();
        let since = Instant::now().checked_sub(ago).context("since before this process")?;
        let index = change["host"].as_u64().context("host")? as usize;
        let name = change["name"].as_str().context("name")?;
        let limit = Duration::from_millis(change["limit_ms"].as_u64().unwrap_or(30_000));
        let at = group.wait_change(index, name, since, limit).await?;
        return Ok(json!({"ms": at.duration_since(since).as_secs_f64() * 1000.0}));
    }
    anyhow::bail!("unknown request {line}")
}

async fn simulate_on(o: &Options, cluster: &EtcdCluster) -> anyhow::Result<Value> {
    let load_before = common::load_average();
    cluster.wait_healthy(Duration::from_secs(30)).await?;
    let members = connect_members(&cluster.clients).await?;
    let total = o.hosts * o.per_host;
    let latencies = Latencies::realistic();
    let processes = o.agent_processes.unwrap_or_else(|| o.hosts.div_ceil(100));
    let fleet = Fleet::start(&cluster.clients, &members, o, processes)?;
    eprintln!("scale: {} agents in {} process(es)", o.hosts, fleet.pids().len());
    let shutdown = CancellationToken::new();
    let applier_meter = Arc::new(Meter::new("applier".to_owned(), total));
    let applier: SharedStore =
        Arc::new(MeteredStore { inner: members[0].clone(), meter: applier_meter.clone() });
    let observer = members[0].clone();
    // Every agent that led during the run: each watches everything while it leads, by design.
    let leaders: Arc<Mutex<std::collections::BTreeSet<String>>> = Arc::default();
    let sampling = shutdown.child_token();
    tokio::spawn({
        let (observer, leaders, sampling) = (observer.clone(), leaders.clone(), sampling.clone());
        async move {
            let (started, mut last) = (Instant::now(), String::new());
            while !sampling.is_cancelled() {
                if let Ok(Some(kv)) = observer.get(keys::SCHEDULER_LEADER).await {
                    let leader = String::from_utf8_lossy(&kv.value).into_owned();
                    if leader != last {
                        eprintln!(
                            "scale: {leader} leads (term {}) at {:.1} s",
                            kv.mod_revision,
                            started.elapsed().as_secs_f64()
                        );
                        last = leader.clone();
                    }
                    leaders.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(leader);
                }
                tokio::select! {
                    _ = sampling.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        }
    });

    let figures = measure(o, &fleet, &applier, &applier_meter, observer.as_ref(), cluster, &leaders).await;
    sampling.cancel();
    shutdown.cancel();
    let mut figures = figures?;
    figures["agent_processes"] = json!(processes);
    fleet.stop().await;
    figures["load_average_before"] = json!(load_before);
    figures["load_average_after"] = json!(common::load_average());
    figures["profile"] = json!(o.profile);
    figures["latencies_ms"] = json!({
        "read": latencies.read.as_millis() as u64, "create": latencies.create.as_millis() as u64,
        "start": latencies.start.as_millis() as u64, "stop": latencies.stop.as_millis() as u64,
        "remove": latencies.remove.as_millis() as u64, "other": latencies.other.as_millis() as u64,
    });
    Ok(figures)
}

async fn measure(
    o: &Options,
    fleet: &Fleet,
    applier: &SharedStore,
    applier_meter: &Meter,
    observer: &dyn Store,
    cluster: &EtcdCluster,
    leaders: &Mutex<std::collections::BTreeSet<String>>,
) -> anyhow::Result<Value> {
    let total = o.hosts * o.per_host;
    let started = Instant::now();
    wait_until(
        "every host registered and a scheduler leading",
        Duration::from_secs(120).max(o.deadline / 4),
        || async {
            let registered = observer.list(keys::HOSTS).await?.kvs.len();
            let leader = observer.get(keys::SCHEDULER_LEADER).await?.is_some();
            anyhow::Ok((registered >= o.hosts && leader).then_some(()))
        },
    )
    .await?;
    // The leader projects the (empty) placements and marks them complete; each agent then
    // follows its own host's placements only. What is measured is that layout, not the switch.
    let last_report = std::cell::Cell::new(Instant::now());
    wait_until(
        "every agent following its host's placements",
        Duration::from_secs(120).max(o.deadline / 2),
        || async {
            let following = fleet.report(false).await?.following;
            if last_report.get().elapsed() >= Duration::from_secs(10) {
                last_report.set(Instant::now());
                let marked = observer.get(keys::PLACEMENTS_READY).await?.is_some();
                eprintln!(
                    "scale: {following}/{} agents follow their placements (marker written: {marked})",
                    o.hosts
                );
            }
            anyhow::Ok((following == o.hosts).then_some(()))
        },
    )
    .await?;
    eprintln!(
        "scale: {} agents up and following their placements in {:.1} s; applying {total} specs",
        o.hosts,
        started.elapsed().as_secs_f64()
    );

    let before = Counts::take(fleet, applier_meter, cluster).await?;
    let applied_at = Instant::now();
    let names: Vec<String> = (0..total).map(spec_name).collect();
    let applied = AtomicU64::new(0);
    let apply = common::bounded(
        32,
        names.iter().map(|name| {
            let applied = &applied;
            async move {
                let container = common::typed(spec(name, 0))?;
                objects::apply_container(applier.as_ref(), &container, None).await?;
                applied.fetch_add(1, Ordering::Relaxed);
                anyhow::Ok(())
            }
        }),
    );
    // The deadline counts from the first apply: applying is part of converging.
    match tokio::time::timeout(o.deadline, apply).await {
        Ok(outcome) => outcome.context("applying the specs")?,
        Err(_) => anyhow::bail!(
            "not converged: only {} of {total} specs applied in {} s ({})",
            applied.load(Ordering::Relaxed),
            o.deadline.as_secs(),
            progress(fleet, total).await
        ),
    };
    let applied_seconds = applied_at.elapsed().as_secs_f64();
    eprintln!("scale: applied {total} specs in {applied_seconds:.1} s; waiting for them to run");
    let deadline = o.deadline.saturating_sub(applied_at.elapsed());
    let last_report = std::cell::Cell::new(Instant::now());
    let outcome = wait_until("every container running", deadline, || async {
        let report = fleet.report(false).await?;
        let running = report.running;
        let rss = fleet.rss_mib("VmRSS");
        if last_report.get().elapsed() >= Duration::from_secs(10) {
            last_report.set(Instant::now());
            eprintln!(
                "scale: {running}/{total} running after {:.0} s; {} reconciles; {rss:.0} MiB resident; load {}",
                applied_at.elapsed().as_secs_f64(),
                report.reconciles,
                common::load_average()
            );
        }
        anyhow::ensure!(
            rss <= o.max_rss_mib,
            "this process holds {rss:.0} MiB, over --max-rss-mib {}",
            o.max_rss_mib
        );
        anyhow::Ok((running >= total).then_some(()))
    })
    .await;
    if let Err(error) = outcome {
        return Err(error.context(format!("not converged: {}", progress(fleet, total).await)));
    }
    let remaining = deadline.saturating_sub(applied_at.elapsed()).max(Duration::from_secs(30));
    wait_until("every container Ready", remaining, || async {
        let ready = ready_count(observer).await?;
        anyhow::Ok((ready >= total).then_some(()))
    })
    .await?;
    let converge_seconds = applied_at.elapsed().as_secs_f64();
    let after = Counts::take(fleet, applier_meter, cluster).await?;
    let converge_reconciles = fleet.report(false).await?.reconciles;
    eprintln!("scale: all {total} Ready {converge_seconds:.1} s after the first apply");

    // Where the scheduler put each spec, for the changes and for whose work each event was.
    let placement = placement(observer, total).await?;
    let changes = time_changes(o, fleet, applier, &placement).await?;
    let change = percentiles(&changes);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_before = fleet.report(true).await?.hosts;
    tokio::time::sleep(Duration::from_secs(o.idle_seconds)).await;
    let detail = fleet.report(true).await?.hosts;
    let idle_reads: Vec<f64> = detail
        .iter()
        .zip(&idle_before)
        .map(|(h, before)| (h.reads - before.reads) as f64 / o.idle_seconds as f64)
        .collect();
    let leader = observer
        .get(keys::SCHEDULER_LEADER)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .unwrap_or_default();
    let leader_index = host_index(&leader);
    let leader_idle = leader_index.and_then(|i| idle_reads.get(i).copied()).unwrap_or(f64::NAN);
    let mut leaders = leaders.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    leaders.insert(leader.clone());
    let led: Vec<usize> = leaders.iter().filter_map(|name| host_index(name)).collect();

    let wakeups = Wakeups::count(&detail, &placement, &led, fleet.hosts);
    let writes = after.writes - before.writes;
    let bytes = after.bytes - before.bytes;
    let db_bytes = cluster.db_size_bytes().await.unwrap_or(f64::NAN);
    let round = |value: f64, places: i32| (value * 10f64.powi(places)).round() / 10f64.powi(places);
    Ok(json!({
        "hosts": o.hosts,
        "per_host": o.per_host,
        "containers": total,
        "workers_per_agent": o.workers,
        "apply_seconds": round(applied_seconds, 2),
        "converge_seconds": round(converge_seconds, 2),
        "change_p50_ms": round(change.p50, 1),
        "change_p99_ms": round(change.p99, 1),
        "change_max_ms": round(change.max, 1),
        "changes_timed": change.samples,
        "store_writes_per_container": round(writes as f64 / total as f64, 2),
        "store_bytes_per_container": round(bytes as f64 / total as f64, 0),
        "store_writes_converge": writes,
        "reconciles_converge": converge_reconciles,
        "reconciles_per_container": round(converge_reconciles as f64 / total as f64, 1),
        "peak_rss_mib": round(fleet.rss_mib("VmHWM"), 0),
        "foreign_wakeups": wakeups.foreign,
        "foreign_wakeups_per_change": round(wakeups.foreign as f64 / wakeups.changes.max(1) as f64, 1),
        "own_watch_events": wakeups.own,
        "leader_watch_events": wakeups.leader,
        "watch_events_per_agent_median": wakeups.per_agent_median,
        "leader": leader,
        "leaders": leaders.iter().collect::<Vec<_>>(),
        "leader_idle_reads_per_second": round(leader_idle, 2),
        "idle_reads_per_second": round(idle_reads.iter().sum::<f64>(), 2),
        "idle_seconds": o.idle_seconds,
        "etcd_cpu_seconds_converge": round(after.etcd_cpu - before.etcd_cpu, 2),
        "etcd_cpu_share_converge": round((after.etcd_cpu - before.etcd_cpu) / converge_seconds, 3),
        "agents_cpu_seconds_converge": round(after.own_cpu - before.own_cpu, 2),
        "etcd_db_mib": round(db_bytes / 1024.0 / 1024.0, 2),
        "etcd_members": cluster.clients.len(),
    }))
}

/// How far the fleet got, for a failure's message.
async fn progress(fleet: &Fleet, total: usize) -> String {
    match fleet.report(false).await {
        Ok(report) => format!(
            "{} of {total} containers running; {} hosts run none; {} reconciles",
            report.running, report.idle_hosts, report.reconciles
        ),
        Err(error) => format!("the agents did not report: {error:#}"),
    }
}

/// Polls `check` every half second until it gives a value; fails naming `what` after `limit`.
async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) if started.elapsed() >= limit => {
                return Err(error.context(format!("waiting for {what}")))
            }
            Err(_) => {}
        }
        anyhow::ensure!(started.elapsed() < limit, "{what}: not reached in {} s", limit.as_secs());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn ready_count(store: &dyn Store) -> anyhow::Result<usize> {
    let prefix = format!("{}{NAMESPACE}/", keys::STATUS);
    let statuses = store.list(&prefix).await?;
    Ok(statuses
        .kvs
        .iter()
        .filter_map(|kv| objects::decode_status(&kv.value).ok())
        .filter(|status| status.condition("Ready").is_some_and(|c| c.status == ConditionStatus::True))
        .count())
}

/// The host index of each spec (by its index), from the bindings the scheduler wrote.
async fn placement(store: &dyn Store, total: usize) -> anyhow::Result<Vec<Option<usize>>> {
    let mut placed = vec![None; total];
    for kv in store.list(keys::BINDINGS).await?.kvs {
        let Some((key, stored)) = bindings::decode(&kv) else { continue };
        let Some(index) = key.strip_prefix(&format!("{NAMESPACE}/")).and_then(spec_index) else { continue };
        if let Some(slot) = placed.get_mut(index) {
            *slot = host_index(&stored.binding.host);
        }
    }
    anyhow::ensure!(placed.iter().all(Option::is_some), "some specs have no binding after convergence");
    Ok(placed)
}

/// Changes `o.changes` specs spread over the fleet, one at a time (each waits for the previous to
/// be acted on), and times each from just before its write to its agent's first engine call for it.
async fn time_changes(
    o: &Options,
    fleet: &Fleet,
    applier: &SharedStore,
    placement: &[Option<usize>],
) -> anyhow::Result<Vec<f64>> {
    let total = placement.len();
    let count = o.changes.min(total);
    let mut samples = Vec::with_capacity(count);
    for round in 0..count {
        let index = round * total / count;
        let name = spec_name(index);
        let host = placement[index].context("unplaced")?;
        let changed = common::typed(spec(&name, round + 1))?;
        let (at, at_wall) = (Instant::now(), std::time::SystemTime::now());
        objects::apply_container(applier.as_ref(), &changed, None).await?;
        let acted = fleet.change_ms(host, &name, at, at_wall).await.with_context(|| {
            format!("the change of {name} was not acted on by {} within 30 s", host_name(host))
        })?;
        samples.push(acted);
    }
    Ok(samples)
}

/// Polls `check` every 2 ms up to `limit`.
async fn wait_until_fast<T>(limit: Duration, check: impl Fn() -> Option<T>) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        anyhow::ensure!(started.elapsed() < limit, "not within {} s", limit.as_secs());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn host_name(index: usize) -> String {
    format!("sim{index:05}")
}

fn host_index(name: &str) -> Option<usize> {
    name.strip_prefix("sim")?.parse().ok()
}

/// Fixed width, so that no spec's name is part of another's.
fn spec_name(index: usize) -> String {
    format!("c{index:07}")
}

fn spec_index(name: &str) -> Option<usize> {
    name.strip_prefix('c')?.parse().ok()
}

/// The engine's name of the container of spec `name` (a recreate's temporary names begin with it).
fn container_name(name: &str) -> String {
    kedge_controller::executor::base_name_of_key(&format!("{NAMESPACE}/{name}")).to_owned()
}

/// An unplaced spec: the scheduler's leader binds it to a host.
fn spec(name: &str, round: usize) -> Value {
    json!({
        "apiVersion": "kedge.io/v1",
        "kind": "Container",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"image": IMAGE, "env": {"ROUND": round.to_string()}},
    })
}

fn image() -> ImageInfo {
    ImageInfo {
        id: format!("sha256:{}", "5".repeat(64)),
        repo_tags: vec![IMAGE.to_owned()],
        env: vec!["PATH=/bin".to_owned()],
        cmd: Some(vec!["/bin/sleep".to_owned(), "3600".to_owned()]),
        ..ImageInfo::default()
    }
}

/// Counters at one instant: the fleet's writes, etcd's CPU and this process's.
struct Counts {
    writes: u64,
    bytes: u64,
    etcd_cpu: f64,
    own_cpu: f64,
}

impl Counts {
    async fn take(fleet: &Fleet, applier: &Meter, cluster: &EtcdCluster) -> anyhow::Result<Counts> {
        let report = fleet.report(false).await?;
        Ok(Counts {
            writes: report.writes + applier.writes.load(Ordering::Relaxed),
            bytes: report.bytes + applier.write_bytes.load(Ordering::Relaxed),
            etcd_cpu: cluster.cpu_seconds(),
            own_cpu: fleet.cpu_seconds(),
        })
    }
}

/// What one agent's store saw.
struct Meter {
    host: String,
    specs: usize,
    reads: AtomicU64,
    writes: AtomicU64,
    write_bytes: AtomicU64,
    /// Binding and placement events for this host's specs and for other hosts'.
    own_bindings: AtomicU64,
    foreign_bindings: AtomicU64,
    /// Events on other prefixes (hosts, leader, locks, policies, ...): not any container's work.
    other_events: AtomicU64,
    /// Spec and status events per spec index (saturating): whose they were is known once the
    /// scheduler has placed every spec.
    spec_events: Mutex<Vec<u8>>,
}

impl Meter {
    fn new(host: String, specs: usize) -> Meter {
        Meter {
            host,
            specs,
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            write_bytes: AtomicU64::new(0),
            own_bindings: AtomicU64::new(0),
            foreign_bindings: AtomicU64::new(0),
            other_events: AtomicU64::new(0),
            spec_events: Mutex::new(Vec::new()),
        }
    }

    /// What this meter counted, for host `index`.
    fn report(&self, index: usize) -> HostReport {
        let counts = self.spec_events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        HostReport {
            index,
            reads: self.reads.load(Ordering::Relaxed),
            own_bindings: self.own_bindings.load(Ordering::Relaxed),
            foreign_bindings: self.foreign_bindings.load(Ordering::Relaxed),
            other_events: self.other_events.load(Ordering::Relaxed),
            spec_events: counts
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(i, c)| (i, *c))
                .collect(),
        }
    }

    fn wrote(&self, key: &str, value_len: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.write_bytes.fetch_add((key.len() + value_len) as u64, Ordering::Relaxed);
    }

    fn saw(&self, event: &WatchEvent) {
        let key = event.kv.key.as_str();
        let spec = keys::parse_spec_key(key).or_else(|| keys::parse_status_key(key));
        if let Some(index) = spec.filter(|(ns, _)| *ns == NAMESPACE).and_then(|(_, name)| spec_index(name)) {
            let mut counts = self.spec_events.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if counts.is_empty() {
                counts.resize(self.specs, 0);
            }
            if let Some(count) = counts.get_mut(index) {
                *count = count.saturating_add(1);
            }
        } else if let Some((host, ..)) = keys::parse_placement_key(key) {
            let counter = if host == self.host { &self.own_bindings } else { &self.foreign_bindings };
            counter.fetch_add(1, Ordering::Relaxed);
        } else if keys::parse_binding_key(key).is_some() {
            let mine = event.kind == EventKind::Put
                && bindings::decode(&event.kv).is_some_and(|(_, stored)| stored.binding.host == self.host);
            let counter = if mine { &self.own_bindings } else { &self.foreign_bindings };
            counter.fetch_add(1, Ordering::Relaxed);
        } else {
            self.other_events.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Watch events the agents received, by whose work they were.
struct Wakeups {
    /// Received by an agent that never led the scheduler during the run, for a spec placed on
    /// another host.
    foreign: u64,
    /// Received by an agent for its own specs.
    own: u64,
    /// Received by the agents that led at some time during the run (a leader watches everything,
    /// by design).
    leader: u64,
    /// Spec and binding changes of the run (the applied specs, their bindings, the timed changes):
    /// what each agent would receive were the watches per host.
    changes: u64,
    per_agent_median: u64,
}

impl Wakeups {
    /// `led`: the agents that led at some time during the run; `hosts`: the fleet's size.
    fn count(reports: &[HostReport], placement: &[Option<usize>], led: &[usize], hosts: usize) -> Wakeups {
        let mut w = Wakeups { foreign: 0, own: 0, leader: 0, changes: 0, per_agent_median: 0 };
        let mut per_agent = Vec::new();
        for host in reports {
            let index = host.index;
            let (mut own, mut foreign) = (host.own_bindings, host.foreign_bindings);
            for (spec, count) in &host.spec_events {
                if placement.get(*spec).copied().flatten() == Some(index) {
                    own += u64::from(*count);
                } else {
                    foreign += u64::from(*count);
                }
            }
            per_agent.push(own + foreign + host.other_events);
            if led.contains(&index) {
                w.leader += own + foreign;
            } else {
                w.own += own;
                w.foreign += foreign;
            }
        }
        per_agent.sort_unstable();
        w.per_agent_median = per_agent.get(per_agent.len() / 2).copied().unwrap_or(0);
        // Every non-leader receives each change once per watch: own + foreign over the agents.
        let agents = hosts.saturating_sub(led.len()).max(1) as u64;
        w.changes = (w.own + w.foreign) / agents;
        w
    }
}

/// A store that passes everything through to `inner` and counts it in `meter`.
struct MeteredStore {
    inner: SharedStore,
    meter: Arc<Meter>,
}

impl Store for MeteredStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        self.meter.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key)
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ListResult> {
        self.meter.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }

    fn put_request<'a>(&'a self, request: PutRequest<'a>) -> StoreFuture<'a, i64> {
        self.meter.wrote(request.key, request.value.len());
        self.inner.put_request(request)
    }

    fn delete_request<'a>(&'a self, request: DeleteRequest<'a>) -> StoreFuture<'a, Option<i64>> {
        self.meter.wrote(request.key, 0);
        self.inner.delete_request(request)
    }

    fn watch<'a>(&'a self, prefix: &'a str, start_revision: i64) -> StoreFuture<'a, WatchStream> {
        let meter = self.meter.clone();
        Box::pin(async move {
            let stream = self.inner.watch(prefix, start_revision).await?;
            let metered = stream.inspect(move |item| {
                if let Ok(event) = item {
                    meter.saw(event);
                }
            });
            Ok(Box::pin(metered) as WatchStream)
        })
    }

    fn lease_grant(&self, ttl_seconds: i64) -> StoreFuture<'_, LeaseId> {
        self.inner.lease_grant(ttl_seconds)
    }

    fn lease_keep_alive(&self, lease: LeaseId) -> StoreFuture<'_, i64> {
        self.inner.lease_keep_alive(lease)
    }

    fn lease_revoke(&self, lease: LeaseId) -> StoreFuture<'_, ()> {
        self.inner.lease_revoke(lease)
    }

    fn compact(&self, revision: i64) -> StoreFuture<'_, ()> {
        self.inner.compact(revision)
    }
}

/// Three etcd members on loopback ports, their data and logs under one directory; stopped and
/// removed by [`EtcdCluster::stop`] or on drop (an error or a panic of the run).
pub struct EtcdCluster {
    dir: PathBuf,
    members: Mutex<Vec<Child>>,
    pub clients: Vec<String>,
}

impl EtcdCluster {
    /// Starts the members (`etcd` from PATH, or `KEDGE_ETCD_BIN`) under `dir`; writes their process
    /// IDs to `dir/etcd.pids` for a caller that must clean up after this process dies.
    pub fn start(dir: &Path) -> anyhow::Result<EtcdCluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ports = free_ports(6)?;
        let peer = |i: usize| format!("http://127.0.0.1:{}", ports[3 + i]);
        let clients: Vec<String> = (0..3).map(|i| format!("http://127.0.0.1:{}", ports[i])).collect();
        let initial = (0..3).map(|i| format!("m{i}={}", peer(i))).collect::<Vec<_>>().join(",");
        let cluster = EtcdCluster { dir: dir.to_owned(), members: Mutex::new(Vec::new()), clients };
        let binary = std::env::var("KEDGE_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned());
        for i in 0..3 {
            let log = std::fs::File::create(dir.join(format!("m{i}.log")))?;
            let child = Command::new(&binary)
                .args(["--name", &format!("m{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("m{i}")))
                .args([
                    "--listen-client-urls",
                    &cluster.clients[i],
                    "--advertise-client-urls",
                    &cluster.clients[i],
                ])
                .args(["--listen-peer-urls", &peer(i), "--initial-advertise-peer-urls", &peer(i)])
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "kedge-scale", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {binary} (the test env provides etcd)"))?;
            cluster.members.lock().unwrap_or_else(|p| p.into_inner()).push(child);
        }
        let pids = cluster.pids().iter().map(u32::to_string).collect::<Vec<_>>().join("\n");
        std::fs::write(dir.join("etcd.pids"), pids + "\n")?;
        Ok(cluster)
    }

    fn pids(&self) -> Vec<u32> {
        self.members.lock().unwrap_or_else(|p| p.into_inner()).iter().map(Child::id).collect()
    }

    /// Waits until every member answers `/health` with `true`.
    pub async fn wait_healthy(&self, limit: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        wait_until("etcd's members healthy", limit, || {
            let http = http.clone();
            async move {
                for client in &self.clients {
                    let body = http.get(format!("{client}/health")).send().await?.text().await?;
                    if !body.contains("\"true\"") {
                        return Ok(None);
                    }
                }
                anyhow::Ok(Some(()))
            }
        })
        .await
        .map_err(|error| {
            let log = std::fs::read_to_string(self.dir.join("m0.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            error.context(format!("member m0's log ends with: {}", tail.join(" | ")))
        })
    }

    /// CPU seconds the members have used.
    pub fn cpu_seconds(&self) -> f64 {
        self.pids().into_iter().map(|pid| common::cpu_seconds(pid).unwrap_or(0.0)).sum()
    }

    /// The largest member's backend database (`etcd_mvcc_db_total_size_in_bytes`).
    pub async fn db_size_bytes(&self) -> anyhow::Result<f64> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
        let mut largest: f64 = 0.0;
        for client in &self.clients {
            let metrics = http.get(format!("{client}/metrics")).send().await?.text().await?;
            let size = metrics
                .lines()
                .find(|line| {
                    line.starts_with("etcd_mvcc_db_total_size_in_bytes ")
                        || line.starts_with("etcd_debugging_mvcc_db_total_size_in_bytes ")
                })
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|value| value.parse::<f64>().ok())
                .context("etcd reports no database size")?;
            largest = largest.max(size);
        }
        Ok(largest)
    }

    /// Kills the members and removes their data.
    pub fn stop(&self) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        for child in members.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        members.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` distinct loopback ports free at this instant.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_are_read_and_bad_ones_refused() {
        let o = parse(&args(&["--hosts", "10", "--per-host", "5", "--deadline-seconds", "60"])).unwrap();
        assert_eq!((o.hosts, o.per_host, o.deadline), (10, 5, Duration::from_secs(60)));
        assert!(parse(&args(&["--hosts", "0"])).is_err());
        assert!(parse(&args(&["--hosts"])).is_err());
        assert!(parse(&args(&["--bogus"])).is_err());
    }

    #[test]
    fn names_are_fixed_width_and_read_back() {
        assert_eq!(spec_index(&spec_name(42)), Some(42));
        assert_eq!(host_index(&host_name(7)), Some(7));
        assert!(!spec_name(12).contains(&spec_name(1)));
    }

    #[test]
    fn scale_figures_are_merged_keeping_other_phases() {
        let dir = std::env::temp_dir().join(format!("kscale-merge-{}", std::process::id()));
        let out = dir.join("latest.json");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&out, r#"{"kedge": {"drift": 1}, "scale": {"old": true}}"#).unwrap();
        merge_into(&out, json!({"hosts": 3})).unwrap();
        let merged: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(merged, json!({"kedge": {"drift": 1}, "scale": {"hosts": 3}}));
    }

    /// The whole simulation at 10 hosts x 5 on a cluster of its own: it converges, the figures
    /// BENCHMARKS.md names are in the JSON beside what it held, and no agent but the leader hears
    /// of another host's work: each follows its own host's placements (docs/scale.md).
    #[test]
    fn ten_hosts_of_five_converge() {
        let dir = std::env::temp_dir().join(format!("kscale-test-{}", std::process::id()));
        let out = dir.with_extension("json");
        std::fs::write(&out, r#"{"idle": {"kept": true}}"#).unwrap();
        let o = Options {
            hosts: 10,
            per_host: 5,
            changes: 10,
            idle_seconds: 3,
            workers: 4,
            deadline: Duration::from_secs(40),
            out: out.clone(),
            work_dir: dir.clone(),
            max_rss_mib: 4096.0,
            profile: "dev".to_owned(),
            agent_processes: Some(0),
        };
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let figures = runtime.block_on(simulate(&o)).unwrap();
        merge_into(&out, figures).unwrap();
        let merged: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        std::fs::remove_file(&out).unwrap();
        assert!(!dir.exists(), "the cluster's directory is removed");
        assert_eq!(merged["idle"]["kept"], json!(true));
        let scale = &merged["scale"];
        for field in [
            "hosts",
            "containers",
            "converge_seconds",
            "change_p99_ms",
            "foreign_wakeups",
            "store_writes_per_container",
        ] {
            assert!(!scale[field].is_null(), "{field} missing from {scale}");
        }
        assert_eq!(scale["containers"], json!(50));
        assert_eq!(scale["changes_timed"], json!(10));
        assert!(scale["converge_seconds"].as_f64().unwrap() < 40.0);
        assert_eq!(scale["foreign_wakeups"], json!(0), "no agent hears of other hosts' specs: {scale}");
        assert_eq!(scale["leader_idle_reads_per_second"], json!(0.0), "no periodic range reads: {scale}");
    }
}
