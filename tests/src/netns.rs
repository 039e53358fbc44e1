//! Several Docker hosts on one machine, each in its own network namespace, with real `kedge agent`
//! processes and a three-member etcd: taking a host's link down is a real partition.
//!
//! # How the network is laid out
//!
//! ```text
//!   root network namespace                              namespace kedge-<run>-h0
//!   ┌────────────────────────────────────────┐          ┌───────────────────────────────────┐
//!   │ etcd members: 127.0.0.1:P and          │          │ eth0 10.213.N.10/24               │
//!   │               10.213.N.1:P  (the hub)  │   veth   │ dockerd (own docker0 172.17/16)   │
//!   │ hub bridge knhub<N>  10.213.N.1/24 ────┼─kev…h0 ──┤ kedge agent, API on :7443         │
//!   │                                    ────┼─kev…h1 ──┤ ...  (h1 at .11, h2 at .12, ...)  │
//!   │ the test, the docker and kedge CLIs    │          └───────────────────────────────────┘
//!   └────────────────────────────────────────┘
//! ```
//!
//! - One **hub** per [`Cluster`]: a bridge in the root namespace named `knhub<N>`, holding
//!   `10.213.N.1/24`. `N` starts from the run id and moves on until a /24 is found that no address or
//!   route on the machine overlaps and whose bridge name nobody holds (`ip link add` is the atomic
//!   claim), so tests run in parallel.
//! - One **network namespace** per host, `kedge-<run>-h<i>`, joined to the hub by a veth pair: the
//!   root side `kev<run>h<i>` is a port of the hub, the namespace side is `eth0` with `10.213.N.(10+i)`.
//!   The namespace knows only the hub's /24: no default route, no NAT, no iptables rules.
//! - **etcd** runs in the root namespace and serves clients both on loopback (for the test process)
//!   and on the hub address (for everything inside the namespaces): [`Cluster::store_url`].
//! - **dockerd** runs inside the namespace (`nsenter --net=/var/run/netns/...`, never `ip netns
//!   exec`, which makes a mount namespace in which dockerd fails), with `--iptables=false`, its socket
//!   and roots under `/tmp/kn-<run>/h<i>/e` (unix socket paths are limited to 107 bytes). Its socket is
//!   a file, so the test and the docker CLI reach it from the root namespace whatever the network does.
//! - The **agent** is the real `kedge` binary started inside the namespace, reaching etcd over the hub
//!   and the engine over its socket. Its API listens on `10.213.N.(10+i):7443` and on the Unix socket
//!   in its state directory, which [`NetnsHost::kedge`] uses.
//! - [`NetnsHost::link_down`] takes the root side of the host's veth down: the cable is pulled, the
//!   namespace's own configuration stays, and [`NetnsHost::link_up`] plugs it back in.
//!
//! Containers that should reach etcd (an agent in a container, say) run with `--network host`: the
//! host network of such a container is its engine's namespace. Containers on `docker0` cannot reach
//! the hub (no NAT).
//!
//! Everything is torn down when the [`Cluster`] is dropped, also while a failing test unwinds:
//! agents, every container of every engine, the engines, the namespaces, the veths, etcd, the hub
//! bridge and the temporary directories. Only the logs of a failed test (agents' and etcd members')
//! are kept, in `$TMPDIR/kedge-netns-logs-<run>/`. A test process killed outright leaves them behind;
//! `scripts/test` reports namespaces named `kedge-*` and links named `knhub*`/`kev*` as leftovers.
//! Needs root, `ip` (iproute2) and `nsenter` (util-linux); `scripts/test-env up` installs them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::PrivateEngine;
use crate::etcd::EtcdCluster;

/// The port every agent's HTTP API listens on, in its own namespace.
pub const AGENT_API_PORT: u16 = 7443;

/// Several emulated Docker hosts ([`NetnsHost`]) and an etcd cluster, joined by a hub bridge.
pub struct Cluster {
    /// Short and unique to this cluster: it names the namespaces, links and directories.
    pub run_id: String,
    /// `hosts[i]` is `h<i>-<run id>`, at `10.213.N.(10+i)` on the hub.
    pub hosts: Vec<NetnsHost>,
    /// Serves clients on loopback (the test) and on the hub (the namespaces); kill members with it.
    pub etcd: EtcdCluster,
    hub: Hub,
    dir: PathBuf,
    store_url: String,
}

/// One emulated Docker host: a network namespace, the Docker Engine in it, and (once started) a
/// `kedge agent` in it.
pub struct NetnsHost {
    /// The agent's host name (`--host-name`): `h<i>-<run id>`.
    pub name: String,
    /// The network namespace, `/var/run/netns/<netns>`.
    pub netns: String,
    /// The host's address on the hub.
    pub address: Ipv4Addr,
    /// `unix://...`: the engine's socket, for `DOCKER_HOST`, reachable from the root namespace.
    pub docker_host: String,
    engine: Option<PrivateEngine>,
    /// `docker events` of this engine, written to `engine-events.log`: what the engine was told to
    /// do and when, kept with a failed test's logs (an agent's log says what it meant to do).
    engine_events: Option<Child>,
    dir: PathBuf,
    store_url: String,
    /// A mutex so that [`NetnsHost::agent_running`] needs only `&self` (polled inside `eventually`).
    agent: std::sync::Mutex<Option<Child>>,
    agent_options: AgentOptions,
    /// Declared last: it removes the namespace and veth after the engine has stopped.
    network: HostNetwork,
}

/// How [`NetnsHost::start_agent`] runs `kedge agent`.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// `--host-label KEY=VALUE` each.
    pub host_labels: BTreeMap<String, String>,
    /// `--scheduler-grace-seconds` (the agent's default, 30 s, when `None`).
    pub scheduler_grace_seconds: Option<u64>,
}

impl Cluster {
    /// Starts `etcd_members` etcd members and `hosts` hosts (namespace, veth, engine; no agents yet),
    /// and loads `images` from the shared test engine into every engine.
    pub async fn start(hosts: usize, etcd_members: usize, images: &[&str]) -> Cluster {
        let _ = crate::TestEnv::get();
        let run_id = crate::run_id()[..8].to_owned();
        let dir = PathBuf::from(format!("/tmp/kn-{run_id}"));
        std::fs::create_dir_all(&dir).unwrap();
        let hub = Hub::create(&run_id);
        let hub_address = hub.address().to_string();
        let etcd = EtcdCluster::start_listening_on(etcd_members, &[&hub_address]).await;
        let store_url = format!(
            "etcd://{}",
            etcd.endpoints_on(&hub_address)
                .iter()
                .map(|e| e.trim_start_matches("http://"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut cluster = Cluster { run_id, hosts: Vec::new(), etcd, hub, dir, store_url };
        let mut networks = Vec::new();
        for i in 0..hosts {
            networks.push(cluster.add_network(i));
        }
        // The engines start in parallel (each takes about 2 s). When one fails to start, the panic
        // drops the networks made so far, which removes them.
        let engines = futures::future::join_all(
            networks
                .iter()
                .map(|network| PrivateEngine::start_in_netns(&network.netns, network.dir.join("e"), images)),
        )
        .await;
        for (network, engine) in networks.into_iter().zip(engines) {
            let engine_events = record_engine_events(&engine.host, &network.dir.join("engine-events.log"));
            cluster.hosts.push(NetnsHost {
                name: format!("h{}-{}", network.index, cluster.run_id),
                netns: network.netns.clone(),
                address: network.address,
                docker_host: engine.host.clone(),
                engine: Some(engine),
                engine_events,
                dir: network.dir.clone(),
                store_url: cluster.store_url.clone(),
                agent: std::sync::Mutex::new(None),
                agent_options: AgentOptions::default(),
                network,
            });
        }
        cluster
    }

    /// The hub's address in the root namespace: what the namespaces reach the machine on.
    pub fn hub_address(&self) -> Ipv4Addr {
        self.hub.address()
    }

    /// `etcd://HUB:PORT,...`: the store as seen from inside the namespaces (`kedge agent --store`).
    pub fn store_url(&self) -> &str {
        &self.store_url
    }

    /// A store client for the test itself, over loopback (it is never partitioned).
    pub async fn store(&self) -> kedge_controller::store::SharedStore {
        let mut options = kedge_controller::store::EtcdOptions::new(self.etcd.endpoints());
        options.request_timeout = Duration::from_secs(3);
        Arc::new(kedge_controller::store::EtcdStore::connect(options).await.expect("connect to etcd"))
    }

    /// Copies `images` from the shared test engine into every host's engine.
    pub fn load_images(&self, images: &[&str]) {
        for host in &self.hosts {
            host.engine().load_images(images);
        }
    }

    fn add_network(&self, index: usize) -> HostNetwork {
        let netns = format!("kedge-{}-h{index}", self.run_id);
        let veth = format!("kev{}h{index}", self.run_id);
        let address = self.hub.host_address(index);
        let dir = self.dir.join(format!("h{index}"));
        std::fs::create_dir_all(&dir).unwrap();
        // From here on, drop removes what was made, also after a failing step.
        let network = HostNetwork { index, netns, veth, address, dir };
        let netns = network.netns.as_str();
        ip(&["netns", "add", netns]);
        ip(&["-n", netns, "link", "set", "lo", "up"]);
        ip(&["link", "add", &network.veth, "type", "veth", "peer", "name", "eth0", "netns", netns]);
        ip(&["link", "set", &network.veth, "master", &self.hub.bridge, "up"]);
        ip(&["-n", netns, "addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        ip(&["-n", netns, "link", "set", "eth0", "up"]);
        network
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The agents' logs outlive a failed test (they are small), everything else goes.
            let kept = std::env::temp_dir().join(format!("kedge-netns-logs-{}", self.run_id));
            let _ = std::fs::create_dir_all(&kept);
            for host in &self.hosts {
                eprintln!("--- {} ({}): last lines of the agent's log", host.name, host.netns);
                eprintln!("{}", tail(&host.dir.join("agent.log"), 40));
                let _ = std::fs::copy(host.dir.join("agent.log"), kept.join(format!("{}.log", host.name)));
                let events = host.dir.join("engine-events.log");
                let _ = std::fs::copy(events, kept.join(format!("{}-engine-events.log", host.name)));
                if let Some(engine) = &host.engine {
                    let dockerd = engine.dir().join("dockerd.log");
                    let _ = std::fs::copy(dockerd, kept.join(format!("{}-dockerd.log", host.name)));
                }
            }
            // etcd keeps its directory when a test fails; this cluster keeps only the members' logs.
            for i in 0..self.etcd.endpoints().len() {
                self.etcd.kill(i);
            }
            for entry in std::fs::read_dir(self.etcd.dir()).into_iter().flatten().flatten() {
                let name = entry.file_name();
                if name.to_string_lossy().ends_with(".log") {
                    let _ =
                        std::fs::copy(entry.path(), kept.join(format!("etcd-{}", name.to_string_lossy())));
                }
            }
            let _ = std::fs::remove_dir_all(self.etcd.dir());
            eprintln!("--- the agents', engines' and etcd's logs are kept in {}", kept.display());
        }
        // Hosts first (agents, engines, namespaces), then etcd and the hub as fields drop.
        self.hosts.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl NetnsHost {
    /// The engine in this host's namespace.
    pub fn engine(&self) -> &PrivateEngine {
        self.engine.as_ref().expect("the engine runs until the host is dropped")
    }

    /// A command run inside this host's network namespace (and no other namespace).
    pub fn in_netns(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/var/run/netns/{}", self.netns)).arg(program);
        command
    }

    /// Starts `kedge agent` in the namespace: store on the hub, this host's name and engine, API on
    /// [`AGENT_API_PORT`] and a Unix socket. Its log is `agent.log` in the host's directory (set
    /// `KEDGE_LOG` to change the level). Returns at once; wait for the host's liveness key or
    /// [`NetnsHost::wait_api`].
    pub fn start_agent(&mut self, options: AgentOptions) {
        assert!(self.agent().is_none(), "{}: an agent runs already", self.name);
        self.agent_options = options;
        self.spawn_agent();
    }

    /// SIGKILLs the agent: no lease is revoked, its containers keep running.
    pub fn kill_agent(&mut self) {
        let mut child = self.agent().take().expect("an agent runs");
        child.kill().expect("SIGKILL the agent");
        child.wait().expect("reap the agent");
    }

    /// Starts the agent again with the options it last had, after [`NetnsHost::kill_agent`] or after
    /// it exited by itself (as a service manager would restart it).
    pub fn restart_agent(&mut self) {
        assert!(!self.agent_running(), "{}: the agent still runs; kill it first", self.name);
        if let Some(mut exited) = self.agent().take() {
            let _ = exited.wait();
        }
        self.spawn_agent();
    }

    /// Whether the agent process is still running (it has not exited by itself).
    pub fn agent_running(&self) -> bool {
        self.agent().as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Pulls the cable: the root side of the veth goes down, the namespace is cut off the hub (and so
    /// from etcd and every other host). Processes inside keep running.
    pub fn link_down(&self) {
        ip(&["link", "set", &self.network.veth, "down"]);
    }

    /// Plugs the cable back in.
    pub fn link_up(&self) {
        ip(&["link", "set", &self.network.veth, "up"]);
    }

    /// `http://ADDRESS:7443`: the agent's API over the hub (needs the bearer token,
    /// [`NetnsHost::api_token`]).
    pub fn api_url(&self) -> String {
        format!("http://{}:{AGENT_API_PORT}", self.address)
    }

    /// The agent's API bearer token, once the agent has made it.
    pub fn api_token(&self) -> Option<String> {
        std::fs::read_to_string(self.agent_state_dir().join("api-token")).ok().map(|t| t.trim().to_owned())
    }

    /// Runs the real `kedge` CLI against this host's agent, over the agent's Unix socket, isolated from
    /// the user's configuration.
    pub fn kedge(&self, args: &[&str]) -> Output {
        Command::new(crate::kedge_bin())
            .current_dir(&self.dir)
            .env("KEDGE_SERVER", format!("unix://{}", self.agent_state_dir().join("kedge.sock").display()))
            .env_remove("KEDGE_TOKEN")
            .env_remove("KEDGE_CONTEXT")
            .env_remove("KEDGE_NAMESPACE")
            .env("KEDGE_CONFIG", self.dir.join("no-config.json"))
            .env("KEDGE_STATE_DIR", self.dir.join("no-state"))
            .env("NO_COLOR", "1")
            .args(args)
            .output()
            .expect("kedge runs")
    }

    /// Runs the `docker` CLI against this host's engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker").args(args).env("DOCKER_HOST", &self.docker_host).output().expect("docker runs")
    }

    /// Polls until the agent's API answers on its socket.
    pub async fn wait_api(&self, timeout: Duration) {
        crate::eventually(&format!("{}'s agent API", self.name), timeout, || async {
            self.kedge(&["version"]).status.success().then_some(())
        })
        .await
    }

    /// The last `lines` lines of the agent's log.
    pub fn agent_log(&self, lines: usize) -> String {
        tail(&self.dir.join("agent.log"), lines)
    }

    fn agent_state_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    fn spawn_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("the agent's log file");
        let mut command = self.in_netns(crate::kedge_bin());
        command
            .arg("agent")
            .args(["--store", &self.store_url])
            .arg("--state-dir")
            .arg(self.agent_state_dir())
            .args(["--host-name", &self.name])
            .args(["--listen", &format!("{}:{AGENT_API_PORT}", self.address)]);
        for (key, value) in &self.agent_options.host_labels {
            command.args(["--host-label", &format!("{key}={value}")]);
        }
        if let Some(grace) = self.agent_options.scheduler_grace_seconds {
            command.args(["--scheduler-grace-seconds", &grace.to_string()]);
        }
        let child = command
            .env("DOCKER_HOST", &self.docker_host)
            .env("KEDGE_LOG", std::env::var("KEDGE_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .env_remove("KEDGE_STORE")
            .env_remove("KEDGE_LISTEN")
            .env_remove("KEDGE_HOST_NAME")
            .env_remove("KEDGE_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("nsenter runs the kedge binary");
        *self.agent() = Some(child);
    }

    fn agent(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.agent.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for NetnsHost {
    fn drop(&mut self) {
        if let Some(mut child) = self.agent().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut recorder) = self.engine_events.take() {
            let _ = recorder.kill();
            let _ = recorder.wait();
        }
        // The engine removes every container it has, then stops; the namespace and the veth go when
        // `network` drops, after this.
        self.engine.take();
    }
}

/// Starts `docker events` against `docker_host`, one line per event (time, type, action, ID, name)
/// appended to `log`. Only a diagnostic: when it cannot start, the test goes on without it.
fn record_engine_events(docker_host: &str, log: &Path) -> Option<Child> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).ok()?;
    let format = r#"{{.TimeNano}} {{.Type}} {{.Action}} {{.Actor.ID}} {{index .Actor.Attributes "name"}}"#;
    Command::new("docker")
        .args(["events", "--format", format])
        .env("DOCKER_HOST", docker_host)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// The bridge in the root namespace that joins the hosts, and its /24.
struct Hub {
    bridge: String,
    /// The third octet of `10.213.N.0/24`.
    subnet: u8,
}

impl Hub {
    /// Claims a free /24 in 10.213.0.0/16, starting from one derived from `run_id`: the first that no
    /// address or route overlaps and whose bridge name `ip link add` can still create.
    fn create(run_id: &str) -> Hub {
        let start = u8::from_str_radix(&run_id[..2], 16).unwrap();
        for step in 0..=255u8 {
            let subnet = start.wrapping_add(step);
            if subnet_in_use(subnet) {
                continue;
            }
            let bridge = format!("knhub{subnet}");
            let created = Command::new("ip")
                .args(["link", "add", &bridge, "type", "bridge"])
                .stderr(Stdio::null())
                .status()
                .expect("ip (iproute2) is installed; scripts/test-env up installs it");
            if !created.success() {
                continue; // Another test holds this /24.
            }
            let hub = Hub { bridge, subnet };
            ip(&["addr", "add", &format!("{}/24", hub.address()), "dev", &hub.bridge]);
            ip(&["link", "set", &hub.bridge, "up"]);
            return hub;
        }
        panic!("no free /24 in 10.213.0.0/16 for a hub bridge (leftover knhub* bridges? `ip -br link`)");
    }

    fn address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 1)
    }

    fn host_address(&self, index: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 10 + u8::try_from(index).expect("fewer than 240 hosts"))
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).stderr(Stdio::null()).status();
    }
}

/// A namespace and veth pair made for one host, removed on drop.
struct HostNetwork {
    index: usize,
    netns: String,
    veth: String,
    address: Ipv4Addr,
    dir: PathBuf,
}

impl Drop for HostNetwork {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        };
        // Deleting either end of a veth pair deletes both.
        quiet(&["link", "del", &self.veth]);
        quiet(&["netns", "del", &self.netns]);
    }
}

/// Whether any address or route on the machine overlaps `10.213.<subnet>.0/24`.
fn subnet_in_use(subnet: u8) -> bool {
    let ours = u32::from(Ipv4Addr::new(10, 213, subnet, 0));
    let routes = Command::new("ip").args(["-o", "-4", "route", "show", "table", "all"]).output();
    let addresses = Command::new("ip").args(["-o", "-4", "addr", "show"]).output();
    let mut text = String::new();
    for output in [routes, addresses].into_iter().flatten() {
        text.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    text.split_whitespace().filter_map(parse_prefix).any(|(network, length)| {
        // Two prefixes overlap when they agree on the bits of the shorter one.
        let length = length.min(24);
        let mask = if length == 0 { 0 } else { u32::MAX << (32 - length) };
        length > 0 && (network & mask) == (ours & mask)
    })
}

/// `A.B.C.D/L` or `A.B.C.D` as (address, prefix length).
fn parse_prefix(token: &str) -> Option<(u32, u32)> {
    let (address, length) = match token.split_once('/') {
        Some((address, length)) => (address, length.parse().ok()?),
        None => (token, 32),
    };
    Some((u32::from(address.parse::<Ipv4Addr>().ok()?), length))
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) is installed; scripts/test-env up installs it");
    assert!(
        output.status.success(),
        "ip {}: {} (the netns harness needs root)",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
