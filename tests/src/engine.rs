//! A Docker Engine a test owns: its own socket, data and exec roots and bridge, so the test may stop,
//! kill or restart it without disturbing the shared engine other tests use. Stopped and removed when
//! dropped, also when the test fails. [`PrivateEngine::start_in_netns`] runs one inside a network
//! namespace, as one emulated host of [`crate::netns::Cluster`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateEngine {
    /// `unix://...`, for `DOCKER_HOST`.
    pub host: String,
    dir: PathBuf,
    /// The bridge this engine's containers use, made by [`PrivateEngine::start`] in the root network
    /// namespace. `None` in a namespace of its own, where the engine makes its own `docker0`.
    bridge: Option<String>,
    /// The network namespace dockerd runs in (`/var/run/netns/<name>`), or `None` for the root one.
    netns: Option<String>,
    child: Option<Child>,
}

impl PrivateEngine {
    /// Starts an engine and loads `images` into it from the shared test engine.
    pub async fn start(images: &[&str]) -> PrivateEngine {
        let id = crate::run_id();
        // Short: unix socket paths are limited to 107 bytes and containerd nests its own below.
        let dir = PathBuf::from(format!("/tmp/kpe-{}", &id[..8]));
        std::fs::create_dir_all(&dir).unwrap();
        let bridge = format!("kpe{}", &id[..8]);
        let octet = 100 + u8::from_str_radix(&id[..2], 16).unwrap() % 150;
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run("ip", &["addr", "add", &format!("172.31.{octet}.1/24"), "dev", &bridge]);
        run("ip", &["link", "set", &bridge, "up"]);
        let mut engine = PrivateEngine {
            host: format!("unix://{}/d.sock", dir.display()),
            dir,
            bridge: Some(bridge),
            netns: None,
            child: None,
        };
        engine.spawn().await;
        engine.load_images(images);
        engine
    }

    /// Starts an engine inside the existing network namespace `netns`, its socket, roots and log in
    /// `dir` (keep it short: unix socket paths are limited to 107 bytes and containerd nests its own
    /// below), and loads `images` into it from the shared test engine.
    ///
    /// dockerd runs under `nsenter --net=...`, which changes only the network namespace: `ip netns
    /// exec` would also make a mount namespace, in which dockerd fails ("Devices cgroup isn't
    /// mounted"). The engine makes its own `docker0` in the namespace and leaves iptables alone.
    pub async fn start_in_netns(netns: &str, dir: PathBuf, images: &[&str]) -> PrivateEngine {
        std::fs::create_dir_all(&dir).unwrap();
        let mut engine = PrivateEngine {
            host: format!("unix://{}/d.sock", dir.display()),
            dir,
            bridge: None,
            netns: Some(netns.to_owned()),
            child: None,
        };
        engine.spawn().await;
        engine.load_images(images);
        engine
    }

    /// Copies `images` from the shared test engine (`DOCKER_HOST`) into this one (`docker save |
    /// docker load`): no registry is needed.
    pub fn load_images(&self, images: &[&str]) {
        for image in images {
            let mut save =
                Command::new("docker").args(["save", image]).stdout(Stdio::piped()).spawn().unwrap();
            let status = Command::new("docker")
                .args(["load", "-q"])
                .env("DOCKER_HOST", &self.host)
                .stdin(save.stdout.take().unwrap())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(save.wait().unwrap().success(), "saving {image} from the test engine");
            assert!(status.success(), "loading {image} into the private engine");
        }
    }

    /// The directory holding the engine's socket, roots and `dockerd.log`.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    async fn spawn(&mut self) {
        let dir = &self.dir;
        // A killed engine leaves a pid file and containerd's socket behind, which stop the next start.
        let _ = std::fs::remove_file(dir.join("d.pid"));
        let _ = std::fs::remove_file(dir.join("x/containerd/containerd.sock"));
        let _ = std::fs::remove_file(dir.join("x/containerd/containerd.sock.ttrpc"));
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dockerd.log")).unwrap();
        let mut command = match &self.netns {
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command.arg(format!("--net=/var/run/netns/{netns}")).arg("dockerd");
                command
            }
            None => Command::new("dockerd"),
        };
        match &self.bridge {
            Some(bridge) => command.args(["--bridge", bridge]),
            None => &mut command,
        };
        let child = command
            .arg("--host")
            .arg(&self.host)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("x"))
            .arg("--pidfile")
            .arg(dir.join("d.pid"))
            .args(["--iptables=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd is installed (scripts/test-env up installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ping = Command::new("docker")
                .args(["info", "-f", "{{.ID}}"])
                .env("DOCKER_HOST", &self.host)
                .output();
            if ping.is_ok_and(|out| out.status.success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private engine did not answer; see {}/dockerd.log",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the engine (SIGTERM, as a service manager would) and starts it again on the same roots.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // Containers first, while the engine can still unmount them cleanly.
        let _ = Command::new("sh")
            .args(["-c", "ids=$(docker ps -aq); [ -z \"$ids\" ] || docker rm -f $ids"])
            .env("DOCKER_HOST", &self.host)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        self.stop();
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "grep -o ' {}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                    self.dir.display()
                ),
            ])
            .status();
        if let Some(bridge) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", bridge]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}
