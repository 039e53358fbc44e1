//! The embedded store keeps every acknowledged write across `kill -9` of the writing process.
//!
//! The test re-executes its own binary as the writer (selected by an environment variable). The writer
//! runs several concurrent tasks (so group commit is exercised), prints `ACK <key> <revision>` after each
//! write returns, and is SIGKILLed mid-stream. The parent then reopens the file and checks every
//! acknowledged write, and that the store goes on (three kill/reopen rounds on the same file).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kedge_controller::store::{EmbeddedOptions, EmbeddedStore, PutCondition, Store};

const CHILD_ENV: &str = "KEDGE_STORE_CRASH_CHILD";
/// The full name in the one test binary (`tests/tests/main.rs`), which `--exact` needs.
const TEST_NAME: &str = "store_embedded_crash::embedded_store_keeps_acknowledged_writes_across_kill_9";
const WRITERS: usize = 8;

#[test]
fn embedded_store_keeps_acknowledged_writes_across_kill_9() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (path, round) = spec.split_once('|').expect("path|round");
        child_writer(PathBuf::from(path), round.to_owned());
        return;
    }
    let dir = std::env::temp_dir().join(format!("kedge-crash-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kedge.db");
    // A small snapshot threshold so that kills also land around file rewrites.
    let mut all_acked: Vec<(String, i64)> = Vec::new();
    for (round, acks_before_kill) in [(0, 300), (1, 1500), (2, 700)] {
        let acked = run_and_kill(&path, round, acks_before_kill);
        assert!(acked.len() >= acks_before_kill, "round {round}: only {} acks", acked.len());
        all_acked.extend(acked);
        verify(&path, &all_acked);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts a writer child, reads its acknowledgements, SIGKILLs it after `n`; returns every ack it printed.
fn run_and_kill(path: &std::path::Path, round: usize, n: usize) -> Vec<(String, i64)> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{round}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < n {
        assert!(Instant::now() < deadline, "the writer acknowledged only {} writes in 60 s", acked.len());
        let line = lines.next().expect("writer output").unwrap();
        if let Some(ack) = parse_ack(&line) {
            acked.push(ack);
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush, nothing of the writer's runs.
    child.wait().unwrap();
    // Acks already in the pipe were acknowledged before the kill: they count too.
    for line in lines {
        if let Some(ack) = parse_ack(&line.unwrap()) {
            acked.push(ack);
        }
    }
    acked
}

fn parse_ack(line: &str) -> Option<(String, i64)> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?))
}

fn verify(path: &std::path::Path, acked: &[(String, i64)]) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(path, options()).await.expect("the store reopens after kill -9");
        for (key, rev) in acked {
            let kv = store.get(key).await.unwrap().unwrap_or_else(|| panic!("acknowledged {key}@{rev} lost"));
            assert_eq!(kv.mod_revision, *rev, "{key}");
            assert_eq!(kv.value, key.as_bytes(), "{key}");
        }
        let list = store.list("/crash/").await.unwrap();
        let max_acked = acked.iter().map(|(_, r)| *r).max().unwrap();
        assert!(list.revision >= max_acked);
        // Revisions are dense: every revision up to the current one belongs to exactly one key
        // (each write creates a new key), so nothing got a revision twice or skipped one.
        let mut revs: Vec<i64> = list.kvs.iter().map(|kv| kv.mod_revision).collect();
        revs.sort();
        assert_eq!(revs, (2..=list.revision).collect::<Vec<_>>());
    });
}

fn options() -> EmbeddedOptions {
    EmbeddedOptions { snapshot_threshold_bytes: 64 * 1024, ..EmbeddedOptions::default() }
}

/// The child: writes new keys from several tasks forever, printing each acknowledgement.
fn child_writer(path: PathBuf, round: String) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let store = EmbeddedStore::open(&path, options()).await.expect("writer opens the store");
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = store.clone();
                let round = round.clone();
                tokio::spawn(async move {
                    for i in 0u64.. {
                        let key = format!("/crash/r{round}/w{w}/{i:08}");
                        let rev =
                            store.put(&key, key.clone().into_bytes(), PutCondition::Absent, 0).await.unwrap();
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {key} {rev}").unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
}
