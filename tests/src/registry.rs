//! A private registry a test owns: `docker-registry` on a free loopback port (the engine trusts
//! 127.0.0.0/8 without TLS) with htpasswd basic authentication, its storage in a temporary
//! directory. Killed and removed when dropped, also when the test fails, together with the local
//! image tags [`AuthRegistry::push`] made.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct AuthRegistry {
    /// `127.0.0.1:PORT`, the registry part of image references.
    pub address: String,
    pub user: String,
    pub password: String,
    dir: tempfile::TempDir,
    child: Child,
    /// Local tags made by `push`, untagged on drop.
    tags: Vec<String>,
}

impl AuthRegistry {
    /// Starts a registry that accepts `user` / `password` only, and waits until it answers.
    /// `htpasswd` (apache2-utils, installed by scripts/test-env) makes the bcrypt entry the
    /// registry requires; a missing one fails the test.
    pub async fn start(user: &str, password: &str) -> AuthRegistry {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let entry = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("htpasswd runs (apt-get install apache2-utils; scripts/test-env up installs it)");
        assert!(entry.status.success(), "htpasswd: {}", String::from_utf8_lossy(&entry.stderr));
        std::fs::write(dir.path().join("htpasswd"), &entry.stdout).unwrap();
        let port = crate::etcd::free_port();
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {data}\nhttp:\n  addr: 127.0.0.1:{port}\n\
             auth:\n  htpasswd:\n    realm: kedge-test\n    path: {htpasswd}\n",
            data = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry runs (scripts/test-env up installs it)");
        let registry = AuthRegistry {
            address: format!("127.0.0.1:{port}"),
            user: user.to_owned(),
            password: password.to_owned(),
            dir,
            child,
            tags: Vec::new(),
        };
        let url = format!("http://{}/v2/", registry.address);
        crate::eventually(
            "the auth registry answers (401 without credentials)",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let code = Command::new("curl")
                        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                        .output()
                        .ok()?;
                    (String::from_utf8_lossy(&code.stdout) == "401").then_some(())
                }
            },
        )
        .await;
        registry
    }

    /// A Docker `config.json` with this registry's credentials in `auths` (`auth`: base64 of
    /// `user:password`, as `docker login` writes it), written into the registry's directory.
    pub fn config_file(&self) -> PathBuf {
        let path = self.dir.path().join("config.json");
        let login = Command::new("docker")
            .arg("--config")
            .arg(self.docker_config_dir())
            .args(["login", &self.address, "-u", &self.user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().expect("stdin").write_all(self.password.as_bytes())?;
                child.wait_with_output()
            })
            .expect("docker login runs");
        assert!(login.status.success(), "docker login: {}", String::from_utf8_lossy(&login.stderr));
        std::fs::copy(self.docker_config_dir().join("config.json"), &path)
            .expect("docker login wrote config.json");
        path
    }

    /// Tags the local image `image` as `ADDRESS/repository:tag`, pushes it with this registry's
    /// credentials, and removes the local tag again, so that using the reference needs a pull.
    pub fn push(&mut self, image: &str, repository_and_tag: &str) -> String {
        let reference = format!("{}/{repository_and_tag}", self.address);
        self.config_file();
        let config_dir = self.docker_config_dir();
        let docker = |args: &[&str]| {
            let output = Command::new("docker")
                .arg("--config")
                .arg(&config_dir)
                .args(args)
                .output()
                .expect("the docker CLI runs");
            assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        docker(&["tag", image, &reference]);
        self.tags.push(reference.clone());
        docker(&["push", &reference]);
        docker(&["rmi", &reference]);
        reference
    }

    /// The registry's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A `docker --config` directory of the test's own, so `docker login` never touches the
    /// user's `~/.docker/config.json`.
    fn docker_config_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("docker-cli");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for AuthRegistry {
    fn drop(&mut self) {
        for tag in &self.tags {
            let _ = Command::new("docker").args(["rmi", tag]).output();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
