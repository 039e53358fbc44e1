//! etcd processes a test owns: a single member or a cluster on loopback ports, in a temporary
//! directory, killed when dropped (also when the test fails). For tests that stop, kill or compact
//! etcd, which they must not do to the shared test environment's member.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A CA, a server certificate for 127.0.0.1, a client certificate, and an unrelated CA, with openssl.
pub fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "other-ca"] {
        let (key, crt, subj) = (format!("{ca}.key"), format!("{ca}.crt"), format!("/CN=kedge-test-{ca}"));
        let mut args = vec!["req", "-x509", "-days", "1", "-subj", &subj, "-keyout", &key, "-out", &crt];
        args.extend(ec);
        run(&args);
    }
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        let (key, csr, crt, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        let subj = format!("/CN=kedge-test-{name}");
        let mut args = vec!["req", "-subj", &subj, "-keyout", &key, "-out", &csr];
        args.extend(ec);
        run(&args);
        run(&[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-extfile",
            &ext,
        ]);
    }
}

// ---------------------------------------------------------------------------------------------------
// etcd processes owned by a test: started on free loopback ports in a private directory, killed on drop
// (also when the test panics).

/// The etcd binary a test's own members run: `$KEDGE_ETCD_BIN` (the compatibility pass points it at
/// etcd 3.5, see docs/compatibility.md), else `etcd` on the PATH.
pub fn etcd_bin() -> String {
    std::env::var("KEDGE_ETCD_BIN").ok().filter(|bin| !bin.is_empty()).unwrap_or_else(|| "etcd".to_owned())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
    /// Extra flags for every member, and the scheme its client URLs use.
    tls_args: Vec<String>,
    scheme: &'static str,
    /// Addresses besides 127.0.0.1 every member serves clients on (the hub of the test's network namespaces).
    extra_addresses: Vec<String>,
}

impl EtcdCluster {
    pub async fn start(n: usize) -> EtcdCluster {
        Self::start_listening_on(n, &[]).await
    }

    /// [`EtcdCluster::start`], every member also serving clients on each of `addresses` (on the same
    /// port as on loopback), so that clients in other network namespaces reach it; see
    /// [`EtcdCluster::endpoints_on`].
    pub async fn start_listening_on(n: usize, addresses: &[&str]) -> EtcdCluster {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let dir = std::env::temp_dir().join(format!("kedge-etcd-{}", &token[..12]));
        std::fs::create_dir_all(&dir).unwrap();
        let members = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            dir,
            token,
            members,
            tls_args: Vec::new(),
            scheme: "http",
            extra_addresses: addresses.iter().map(|a| a.to_string()).collect(),
        };
        for i in 0..n {
            cluster.spawn(i, "new");
        }
        cluster.wait_healthy(&(0..n).collect::<Vec<_>>()).await;
        cluster
    }

    /// One member serving clients over TLS and requiring a client certificate signed by its CA.
    /// Returns the cluster and the PEM files' directory (ca.crt, client.crt, client.key, ...).
    pub async fn start_tls() -> (EtcdCluster, PathBuf) {
        let dir = std::env::temp_dir()
            .join(format!("kedge-etcd-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]));
        std::fs::create_dir_all(&dir).unwrap();
        make_certificates(&dir);
        let pem = |f: &str| dir.join(f).display().to_string();
        let flags = vec![
            "--cert-file".into(),
            pem("server.crt"),
            "--key-file".into(),
            pem("server.key"),
            "--trusted-ca-file".into(),
            pem("ca.crt"),
            "--client-cert-auth".into(),
        ];
        (Self::start_https_in(dir.clone(), flags), dir)
    }

    /// One member in `dir` (which it removes when dropped) serving clients over https with `flags`
    /// (its certificate files, `--client-cert-auth`, auth token settings, ...). Not waited for: the
    /// test polls a secured member with its own credentials.
    pub fn start_https_in(dir: PathBuf, flags: Vec<String>) -> EtcdCluster {
        let members =
            vec![Member { name: "m0".into(), client_port: free_port(), peer_port: free_port(), child: None }];
        let mut cluster = EtcdCluster {
            dir,
            token: uuid::Uuid::new_v4().simple().to_string(),
            members,
            tls_args: flags,
            scheme: "https",
            extra_addresses: Vec::new(),
        };
        cluster.spawn(0, "new");
        cluster
    }

    /// A store client on this cluster.
    pub async fn store(&self) -> kedge_controller::store::SharedStore {
        crate::etcd_store(self.endpoints()).await
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("{}://127.0.0.1:{}", self.scheme, m.client_port)).collect()
    }

    /// The directory holding the members' data and logs (`<member>.log`).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The client endpoints on `address`, one of those the cluster was started listening on.
    pub fn endpoints_on(&self, address: &str) -> Vec<String> {
        assert!(self.extra_addresses.iter().any(|a| a == address), "etcd does not listen on {address}");
        self.members.iter().map(|m| format!("{}://{address}:{}", self.scheme, m.client_port)).collect()
    }

    pub fn spawn(&mut self, i: usize, state: &str) {
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port)).collect();
        let m = &self.members[i];
        let client_urls: Vec<String> = std::iter::once("127.0.0.1")
            .chain(self.extra_addresses.iter().map(String::as_str))
            .map(|address| format!("{}://{address}:{}", self.scheme, m.client_port))
            .collect();
        let client_urls = client_urls.join(",");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", m.name)))
            .unwrap();
        let child = Command::new(etcd_bin())
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .arg("--listen-client-urls")
            .arg(&client_urls)
            .arg("--advertise-client-urls")
            .arg(&client_urls)
            .args(&self.tls_args)
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer_port))
            .arg("--initial-cluster")
            .arg(initial.join(","))
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--initial-cluster-state")
            .arg(state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e} (scripts/test-env up installs etcd)", etcd_bin()));
        self.members[i].child = Some(child);
    }

    /// Polls until the given members answer a status call with a known leader.
    pub async fn wait_healthy(&self, members: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &i in members {
            let ep = format!("http://127.0.0.1:{}", self.members[i].client_port);
            loop {
                let fut = async {
                    let mut c = etcd_client::Client::connect([ep.as_str()], None).await.ok()?;
                    let s = c.status().await.ok()?;
                    (s.leader() != 0).then_some(())
                };
                if tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten().is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} did not become healthy; see {}",
                    self.members[i].name,
                    self.dir.display()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// SIGKILLs the current leader; returns its index.
    pub async fn kill_leader(&mut self) -> usize {
        let mut leader_id = None;
        let mut ids = Vec::new();
        for m in &self.members {
            let ep = format!("http://127.0.0.1:{}", m.client_port);
            let mut c = etcd_client::Client::connect([ep.as_str()], None).await.unwrap();
            let s = c.status().await.unwrap();
            ids.push(s.header().unwrap().member_id());
            leader_id = Some(s.leader());
        }
        let leader = ids.iter().position(|id| Some(*id) == leader_id).expect("a leader among the members");
        self.kill(leader);
        leader
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
        self.wait_healthy(&[i]).await;
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
