//! A Docker Engine a test owns: its own socket, data and exec roots and bridge, so the test may stop,
//! kill or restart it without disturbing the shared engine other tests use. Stopped and removed when
//! dropped, also when the test fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateEngine {
    /// `unix://...`, for `DOCKER_HOST`.
    pub host: String,
    dir: PathBuf,
    bridge: String,
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
        let mut engine =
            PrivateEngine { host: format!("unix://{}/d.sock", dir.display()), dir, bridge, child: None };
        engine.spawn().await;
        for image in images {
            let mut save =
                Command::new("docker").args(["save", image]).stdout(Stdio::piped()).spawn().unwrap();
            let status = Command::new("docker")
                .args(["load", "-q"])
                .env("DOCKER_HOST", &engine.host)
                .stdin(save.stdout.take().unwrap())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(save.wait().unwrap().success(), "saving {image} from the test engine");
            assert!(status.success(), "loading {image} into the private engine");
        }
        engine
    }

    async fn spawn(&mut self) {
        let dir = &self.dir;
        // A killed engine leaves a pid file and containerd's socket behind, which stop the next start.
        let _ = std::fs::remove_file(dir.join("d.pid"));
        let _ = std::fs::remove_file(dir.join("x/containerd/containerd.sock"));
        let _ = std::fs::remove_file(dir.join("x/containerd/containerd.sock.ttrpc"));
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(&self.host)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("x"))
            .arg("--pidfile")
            .arg(dir.join("d.pid"))
            .args(["--bridge", &self.bridge, "--iptables=false", "--ip-masq=false"])
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
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}
