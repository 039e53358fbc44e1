//! The embedded store: one file, crash-safe, with etcd's revision, watch and lease semantics.
//!
//! # File format
//!
//! `<path>` starts with the 8-byte magic `KEDGEST1`, followed by records. Each record is framed as
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload: JSON]`. A record is one of: a snapshot
//! (the whole state at a revision: keys, leases, next lease id), a write transaction (its revision and
//! its puts and deletes, and the lease it revokes, if any), a lease grant, a compaction mark.
//! Opening the store replays the records in order.
//!
//! # Crash safety
//!
//! - A write is applied in memory, framed and queued; a single committer thread appends queued frames
//!   and `fdatasync`s, and only then acknowledges the writers and publishes the events to watchers
//!   (group commit: writers that queue while a sync runs share the next one). Reads wait until what they
//!   read is durable, so nobody observes a write that a crash could take back.
//! - A crash can only damage the last batch appended after the last completed sync. One batch is at most
//!   [`MAX_BATCH_BYTES`] (or a single larger record). On open, an invalid record (short, bad CRC,
//!   undecodable) within that distance of the end of the file is a torn tail: the file is truncated to
//!   the last valid record. An invalid record further from the end is corruption, and opening fails
//!   with [`StoreError::Corrupt`] rather than silently dropping acknowledged writes.
//! - When the log has grown past the snapshot threshold, the committer rewrites the file: the snapshot
//!   goes to `<path>.tmp`, which is fsync'd, renamed over `<path>`, and the directory fsync'd. A crash
//!   at any point leaves either the old or the new file complete.
//! - `<path>.lock` is held with an exclusive `flock` for as long as the store is open, so a second
//!   process (or a second open in this one) gets [`StoreError::Locked`]. A sibling file is locked
//!   rather than the data file because the data file is replaced by rename.
//!
//! # History, watches and leases
//!
//! Watch history lives in memory: every event since the compaction revision. It is compacted
//! automatically to the newest half when it grows past `history_events` events or `history_bytes`
//! bytes of keys and values (an idle agent's memory is then bounded whatever it wrote before), and on
//! reopen it starts at the revision after the last snapshot. A watcher reads history at its own pace
//! (writers never wait for watchers); a watcher that falls behind the compaction point gets
//! [`StoreError::Compacted`] and must re-list. Leases are persisted with their TTL; as in etcd, a lease
//! gets a fresh TTL when the store is reopened. Expiry deletes the lease's keys in one revision.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::crc::crc32;
use super::{
    DeleteCondition, DeleteRequest, EventKind, Fence, KeyValue, LeaseId, ListResult, PutCondition,
    PutRequest, Store, StoreError, StoreFuture, WatchEvent, WatchStream,
};

const MAGIC: &[u8; 8] = b"KEDGEST1";
const FRAME_HEADER: usize = 8;
/// The most bytes one group commit appends before it syncs (a single larger record is appended alone).
/// This bounds how much of the file's end a crash can leave torn; see the module docs.
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// How many events a watcher takes from history per lock acquisition.
const WATCH_CHUNK: usize = 1024;

/// The mode of every file the store creates (data, snapshot, lock): the owner's only, since specs
/// carry environment values.
const PRIVATE: u32 = 0o600;

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Rewrite the file as a snapshot once the log exceeds this many bytes and twice the last snapshot.
    pub snapshot_threshold_bytes: u64,
    /// Keep at most this many events of watch history in memory (see the module docs).
    pub history_events: usize,
    /// ... and at most this many bytes of their keys and values. Each event holds a copy of the value
    /// written, so this, not the count, is what bounds the memory history takes.
    pub history_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            snapshot_threshold_bytes: 16 << 20,
            history_events: 100_000,
            history_bytes: 4 << 20,
        }
    }
}

/// The embedded store. Cheap to clone; the file stays open (and locked) until the last clone is dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    committer: Option<std::thread::JoinHandle<()>>,
    expiry: tokio::task::JoinHandle<()>,
    /// Held (locked) for the store's lifetime; released when dropped after the committer has stopped.
    _lock_file: File,
}

struct Shared {
    path: PathBuf,
    state: Mutex<State>,
    /// Wakes the committer when frames are queued or on shutdown.
    commit_wanted: Condvar,
    /// The sequence number of the last durable queued item; also wakes watchers after each commit.
    durable: tokio::sync::watch::Sender<u64>,
    failed: AtomicBool,
    lease_changed: tokio::sync::Notify,
    options: EmbeddedOptions,
}

struct Lease {
    ttl: i64,
    deadline: Instant,
    keys: BTreeSet<String>,
}

struct PendingFrame {
    bytes: Vec<u8>,
    seq: u64,
    events: Vec<WatchEvent>,
}

struct State {
    kvs: BTreeMap<String, KeyValue>,
    /// The revision including writes not yet durable.
    revision: i64,
    /// The revision of the last durable write: where a watch "from now" starts.
    durable_revision: i64,
    /// History holds every event with revision >= compact_revision.
    compact_revision: i64,
    history: VecDeque<WatchEvent>,
    /// The bytes of keys and values the events in `history` hold ([`event_bytes`]).
    history_bytes: usize,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    pending: VecDeque<PendingFrame>,
    /// The sequence number of the last queued frame.
    queued_seq: u64,
    log_bytes: u64,
    snapshot_bytes: u64,
    failure: Option<String>,
    shutdown: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Record {
    Snapshot { revision: i64, compact_revision: i64, next_lease: i64, kvs: Vec<KvRec>, leases: Vec<LeaseRec> },
    Txn { revision: i64, ops: Vec<OpRec>, revoke: LeaseId },
    Grant { id: LeaseId, ttl: i64 },
    Compact { revision: i64 },
}

#[derive(Serialize, Deserialize)]
struct KvRec {
    k: String,
    v: String,
    c: i64,
    m: i64,
    n: i64,
    l: LeaseId,
}

#[derive(Serialize, Deserialize)]
struct LeaseRec {
    id: LeaseId,
    ttl: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "o", rename_all = "snake_case")]
enum OpRec {
    Put { k: String, v: String, l: LeaseId },
    Del { k: String },
}

enum Op {
    Put { key: String, value: Vec<u8>, lease: LeaseId },
    Delete { key: String },
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store at `path`. Must be called within a tokio runtime.
    pub async fn open(path: impl AsRef<Path>, options: EmbeddedOptions) -> Result<EmbeddedStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| StoreError::Io { path: path.clone(), source };
        let lock_path = sibling(&path, ".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PRIVATE)
            .open(&lock_path)
            .map_err(|source| StoreError::Io { path: lock_path.clone(), source })?;
        if fs2::FileExt::try_lock_exclusive(&lock_file).is_err() {
            return Err(StoreError::Locked { path });
        }
        let tmp = sibling(&path, ".tmp");
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(io)?;
        }

        let mut state = State {
            kvs: BTreeMap::new(),
            revision: 1,
            durable_revision: 1,
            compact_revision: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            leases: HashMap::new(),
            next_lease: 1,
            pending: VecDeque::new(),
            queued_seq: 0,
            log_bytes: 0,
            snapshot_bytes: 0,
            failure: None,
            shutdown: false,
        };
        let file = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() >= MAGIC.len() as u64 => {
                // Made by an older kedge with the umask's mode (0644): specs and env values are secrets.
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(PRIVATE)).map_err(io)?;
                }
                let valid_len = replay(&path, &mut state, &options)?;
                let file = OpenOptions::new().read(true).append(true).open(&path).map_err(io)?;
                if valid_len < meta.len() {
                    tracing::warn!(
                        path = %path.display(),
                        dropped_bytes = meta.len() - valid_len,
                        "embedded store: cutting a torn tail left by a crash"
                    );
                    file.set_len(valid_len).map_err(io)?;
                    file.sync_all().map_err(io)?;
                }
                state.log_bytes = valid_len;
                file
            }
            // Missing, or shorter than the magic: a crash during creation, before anything was acknowledged.
            Ok(_) | Err(_) => {
                let mut file = OpenOptions::new()
                    .create(true)
                    .read(true)
                    .write(true)
                    .truncate(true)
                    .mode(PRIVATE)
                    .open(&path)
                    .map_err(io)?;
                file.write_all(MAGIC).map_err(io)?;
                file.sync_all().map_err(io)?;
                sync_dir(&path).map_err(io)?;
                drop(file);
                state.log_bytes = MAGIC.len() as u64;
                OpenOptions::new().read(true).append(true).open(&path).map_err(io)?
            }
        };
        state.durable_revision = state.revision;

        let (durable, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            path: path.clone(),
            state: Mutex::new(state),
            commit_wanted: Condvar::new(),
            durable,
            failed: AtomicBool::new(false),
            lease_changed: tokio::sync::Notify::new(),
            options,
        });
        let committer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("kedge-store-commit".into())
                .spawn(move || commit_loop(shared, file))
                .map_err(io)?
        };
        let expiry = tokio::spawn(expiry_loop(Arc::downgrade(&shared)));
        Ok(EmbeddedStore {
            handle: Arc::new(Handle { shared, committer: Some(committer), expiry, _lock_file: lock_file }),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.handle.shared.path
    }

    /// Why the store stopped, once a write to its file failed (a full disk, an I/O error). From then
    /// on every call fails: the process should exit and be restarted, which replays the file (cutting
    /// a torn tail) and serves again once the condition has cleared.
    pub fn failure(&self) -> Option<String> {
        self.handle.shared.lock().failure.clone()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.expiry.abort();
        self.shared.lock().shutdown = true;
        self.shared.commit_wanted.notify_all();
        if let Some(committer) = self.committer.take() {
            // The committer flushes what is queued and exits; this waits at most one fsync.
            let _ = committer.join();
        }
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

fn frame(record: &Record) -> Vec<u8> {
    let payload = serde_json::to_vec(record).expect("records always serialize");
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Replays the file into `state`; returns the length of its valid prefix.
fn replay(path: &Path, state: &mut State, options: &EmbeddedOptions) -> Result<u64, StoreError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
    if &data[..MAGIC.len()] != MAGIC {
        return Err(StoreError::Corrupt(format!("{}: not a kedge store file (bad magic)", path.display())));
    }
    let mut offset = MAGIC.len();
    let now = Instant::now();
    while offset < data.len() {
        let rest = data.len() - offset;
        let decoded = decode_frame(&data[offset..]);
        let (record, len) = match decoded {
            Ok(ok) => ok,
            Err(why) => {
                if rest <= MAX_BATCH_BYTES || why == FrameError::PastEnd {
                    return Ok(offset as u64);
                }
                return Err(StoreError::Corrupt(format!(
                    "{}: invalid record ({why:?}) at offset {offset}, {rest} bytes before the end; \
                     this is not a torn tail, refusing to drop acknowledged writes",
                    path.display()
                )));
            }
        };
        state.replay_record(record, now)?;
        state.trim_history(options);
        offset += len;
    }
    Ok(offset as u64)
}

#[derive(Debug, PartialEq, Eq)]
enum FrameError {
    PastEnd,
    Crc,
    Decode,
}

fn decode_frame(data: &[u8]) -> Result<(Record, usize), FrameError> {
    if data.len() < FRAME_HEADER {
        return Err(FrameError::PastEnd);
    }
    let len = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    if data.len() - FRAME_HEADER < len {
        return Err(FrameError::PastEnd);
    }
    let payload = &data[FRAME_HEADER..FRAME_HEADER + len];
    if crc32(payload) != crc {
        return Err(FrameError::Crc);
    }
    let record = serde_json::from_slice(payload).map_err(|_| FrameError::Decode)?;
    Ok((record, FRAME_HEADER + len))
}

fn decode_value(hex_value: &str) -> Result<Vec<u8>, StoreError> {
    hex::decode(hex_value).map_err(|e| StoreError::Corrupt(format!("bad value encoding: {e}")))
}

/// What one event of history holds in memory, near enough: its key and value and a fixed part.
fn event_bytes(event: &WatchEvent) -> usize {
    event.kv.key.len() + event.kv.value.len() + std::mem::size_of::<WatchEvent>()
}

impl State {
    fn replay_record(&mut self, record: Record, now: Instant) -> Result<(), StoreError> {
        match record {
            Record::Snapshot { revision, compact_revision, next_lease, kvs, leases } => {
                self.kvs.clear();
                self.leases.clear();
                self.history.clear();
                self.history_bytes = 0;
                for l in leases {
                    self.leases.insert(
                        l.id,
                        Lease { ttl: l.ttl, deadline: now + secs(l.ttl), keys: BTreeSet::new() },
                    );
                }
                for kv in kvs {
                    if kv.l != 0 {
                        if let Some(lease) = self.leases.get_mut(&kv.l) {
                            lease.keys.insert(kv.k.clone());
                        }
                    }
                    let value = decode_value(&kv.v)?;
                    self.kvs.insert(
                        kv.k.clone(),
                        KeyValue {
                            key: kv.k,
                            value,
                            create_revision: kv.c,
                            mod_revision: kv.m,
                            version: kv.n,
                            lease: kv.l,
                        },
                    );
                }
                self.revision = revision;
                // Events up to the snapshot's revision are gone: only later ones can be replayed.
                self.compact_revision = compact_revision.max(revision + 1);
                self.next_lease = next_lease;
            }
            Record::Txn { revision, ops, revoke } => {
                let ops = ops
                    .into_iter()
                    .map(|op| match op {
                        OpRec::Put { k, v, l } => Ok(Op::Put { key: k, value: decode_value(&v)?, lease: l }),
                        OpRec::Del { k } => Ok(Op::Delete { key: k }),
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                let events = self.apply(revision, ops, revoke);
                self.push_history(events);
            }
            Record::Grant { id, ttl } => {
                self.leases.insert(id, Lease { ttl, deadline: now + secs(ttl), keys: BTreeSet::new() });
                self.next_lease = self.next_lease.max(id + 1);
            }
            Record::Compact { revision } => self.compact_history(revision),
        }
        Ok(())
    }

    /// Applies one write transaction in memory and returns its events. With no ops, the revision stays.
    fn apply(&mut self, revision: i64, ops: Vec<Op>, revoke: LeaseId) -> Vec<WatchEvent> {
        let mut events = Vec::with_capacity(ops.len());
        if !ops.is_empty() {
            self.revision = revision;
        }
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let (create_revision, version, old_lease) = match self.kvs.get(&key) {
                        Some(old) => (old.create_revision, old.version + 1, old.lease),
                        None => (revision, 1, 0),
                    };
                    if old_lease != 0 && old_lease != lease {
                        if let Some(l) = self.leases.get_mut(&old_lease) {
                            l.keys.remove(&key);
                        }
                    }
                    if lease != 0 {
                        if let Some(l) = self.leases.get_mut(&lease) {
                            l.keys.insert(key.clone());
                        }
                    }
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: revision,
                        version,
                        lease,
                    };
                    events.push(WatchEvent { kind: EventKind::Put, kv: kv.clone(), revision });
                    self.kvs.insert(key, kv);
                }
                Op::Delete { key } => {
                    if let Some(old) = self.kvs.remove(&key) {
                        if old.lease != 0 {
                            if let Some(l) = self.leases.get_mut(&old.lease) {
                                l.keys.remove(&key);
                            }
                        }
                        events.push(WatchEvent {
                            kind: EventKind::Delete,
                            kv: deleted_kv(key, revision),
                            revision,
                        });
                    }
                }
            }
        }
        if revoke != 0 {
            self.leases.remove(&revoke);
        }
        events
    }

    fn compact_history(&mut self, revision: i64) {
        if revision <= self.compact_revision {
            return;
        }
        self.compact_revision = revision;
        while self.history.front().is_some_and(|e| e.revision < revision) {
            if let Some(gone) = self.history.pop_front() {
                self.history_bytes -= event_bytes(&gone);
            }
        }
    }

    fn push_history(&mut self, events: impl IntoIterator<Item = WatchEvent>) {
        for event in events {
            self.history_bytes += event_bytes(&event);
            self.history.push_back(event);
        }
    }

    /// Past either bound, keeps the newest half of it (whole revisions: a transaction's events go
    /// together, so a watcher never sees part of one).
    fn trim_history(&mut self, options: &EmbeddedOptions) {
        if self.history.len() > options.history_events {
            let keep_from = self.history[self.history.len() - options.history_events / 2].revision;
            self.compact_history(keep_from);
        }
        if self.history_bytes > options.history_bytes {
            let mut kept = 0;
            let mut keep_from = None;
            for event in self.history.iter().rev() {
                kept += event_bytes(event);
                if kept > options.history_bytes / 2 {
                    break;
                }
                keep_from = Some(event.revision);
            }
            // Even the newest event alone is over half the bound: keep that one revision.
            let newest = self.history.back().map(|e| e.revision);
            if let Some(keep_from) = keep_from.or(newest) {
                self.compact_history(keep_from);
            }
        }
    }

    /// Refuses a fenced write whose fence key moved (see [`Fence`]).
    fn check_fence(&self, fence: Fence<'_>) -> Result<(), StoreError> {
        let current = self.kvs.get(fence.key).map_or(0, |kv| kv.mod_revision);
        if current != fence.mod_revision {
            return Err(StoreError::Conflict { key: fence.key.to_owned(), current_mod_revision: current });
        }
        Ok(())
    }

    /// What every write checks first, under the lock: the store is usable and `fence` (if any)
    /// holds. Answers `key`'s current revision (0: absent).
    fn begin_write(&self, fence: Option<Fence<'_>>, key: &str) -> Result<i64, StoreError> {
        self.check_usable()?;
        if let Some(fence) = fence {
            self.check_fence(fence)?;
        }
        Ok(self.kvs.get(key).map_or(0, |kv| kv.mod_revision))
    }

    fn check_usable(&self) -> Result<(), StoreError> {
        match &self.failure {
            Some(why) => Err(StoreError::Unavailable(format!("embedded store failed earlier: {why}"))),
            None => Ok(()),
        }
    }

    fn enqueue(&mut self, record: &Record, events: Vec<WatchEvent>) -> u64 {
        self.queued_seq += 1;
        self.pending.push_back(PendingFrame { bytes: frame(record), seq: self.queued_seq, events });
        self.queued_seq
    }

    fn snapshot_record(&self) -> Record {
        Record::Snapshot {
            revision: self.revision,
            compact_revision: self.compact_revision,
            next_lease: self.next_lease,
            kvs: self
                .kvs
                .values()
                .map(|kv| KvRec {
                    k: kv.key.clone(),
                    v: hex::encode(&kv.value),
                    c: kv.create_revision,
                    m: kv.mod_revision,
                    n: kv.version,
                    l: kv.lease,
                })
                .collect(),
            leases: self.leases.iter().map(|(id, l)| LeaseRec { id: *id, ttl: l.ttl }).collect(),
        }
    }

    /// Queues a transaction: applies it in memory now, makes it durable (and visible to watchers) later.
    fn write_txn(&mut self, ops: Vec<Op>, revoke: LeaseId) -> (i64, u64) {
        let revision = if ops.is_empty() { self.revision } else { self.revision + 1 };
        let record = Record::Txn {
            revision,
            ops: ops
                .iter()
                .map(|op| match op {
                    Op::Put { key, value, lease } => {
                        OpRec::Put { k: key.clone(), v: hex::encode(value), l: *lease }
                    }
                    Op::Delete { key } => OpRec::Del { k: key.clone() },
                })
                .collect(),
            revoke,
        };
        let events = self.apply(revision, ops, revoke);
        let seq = self.enqueue(&record, events);
        (revision, seq)
    }
}

fn deleted_kv(key: String, revision: i64) -> KeyValue {
    KeyValue { key, value: Vec::new(), create_revision: 0, mod_revision: revision, version: 0, lease: 0 }
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would leave the state half-applied; nothing here panics by design,
        // and continuing with the inner value is what every reader would do anyway.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until queued item `seq` is durable.
    async fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        if seq == 0 {
            return Ok(());
        }
        let mut rx = self.durable.subscribe();
        let failed = &self.failed;
        let reached = rx.wait_for(|d| *d >= seq || failed.load(Ordering::SeqCst)).await.map(|d| *d >= seq);
        match reached {
            Ok(true) => Ok(()),
            _ => Err(self.lock().check_usable().err().unwrap_or_else(|| {
                StoreError::Unavailable("embedded store closed before the write was durable".into())
            })),
        }
    }
}

fn commit_loop(shared: Arc<Shared>, mut file: File) {
    let path = shared.path.clone();
    loop {
        enum Work {
            Append(Vec<u8>),
            Snapshot(Vec<u8>),
        }
        let (work, seq, events) = {
            let mut st = shared.lock();
            while st.pending.is_empty() && !st.shutdown {
                st = shared.commit_wanted.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.pending.is_empty() {
                return;
            }
            let threshold = shared.options.snapshot_threshold_bytes;
            if st.log_bytes > threshold && st.log_bytes > 2 * st.snapshot_bytes {
                // The in-memory state already includes every queued write: the snapshot supersedes them.
                let bytes = frame(&st.snapshot_record());
                let mut events = Vec::new();
                let mut seq = 0;
                for f in st.pending.drain(..) {
                    events.extend(f.events);
                    seq = f.seq;
                }
                (Work::Snapshot(bytes), seq, events)
            } else {
                let mut bytes = Vec::new();
                let mut events = Vec::new();
                let mut seq = 0;
                while let Some(f) = st.pending.front() {
                    if !bytes.is_empty() && bytes.len() + f.bytes.len() > MAX_BATCH_BYTES {
                        break;
                    }
                    let f = st.pending.pop_front().expect("front exists");
                    bytes.extend_from_slice(&f.bytes);
                    events.extend(f.events);
                    seq = f.seq;
                }
                (Work::Append(bytes), seq, events)
            }
        };

        let result = match &work {
            Work::Append(bytes) => file.write_all(bytes).and_then(|()| file.sync_data()),
            Work::Snapshot(bytes) => write_snapshot(&path, bytes).map(|f| file = f),
        };

        let mut st = shared.lock();
        match result {
            Ok(()) => {
                match work {
                    Work::Append(bytes) => st.log_bytes += bytes.len() as u64,
                    Work::Snapshot(bytes) => {
                        let len = (MAGIC.len() + bytes.len()) as u64;
                        st.log_bytes = len;
                        st.snapshot_bytes = len;
                    }
                }
                if let Some(last) = events.last() {
                    st.durable_revision = st.durable_revision.max(last.revision);
                }
                let compact = st.compact_revision;
                st.push_history(events.into_iter().filter(|e| e.revision >= compact));
                st.trim_history(&shared.options);
                drop(st);
                shared.durable.send_replace(seq);
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "embedded store: write failed; store unusable");
                st.failure = Some(format!("{}: {e}", path.display()));
                st.pending.clear();
                drop(st);
                shared.failed.store(true, Ordering::SeqCst);
                shared.durable.send_modify(|_| {});
                return;
            }
        }
    }
}

/// Writes a snapshot file next to `path` and renames it over `path`; returns the new file, for appending.
fn write_snapshot(path: &Path, snapshot_frame: &[u8]) -> std::io::Result<File> {
    let tmp = sibling(path, ".tmp");
    let mut f = OpenOptions::new().create(true).write(true).truncate(true).mode(PRIVATE).open(&tmp)?;
    f.write_all(MAGIC)?;
    f.write_all(snapshot_frame)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    OpenOptions::new().read(true).append(true).open(path)
}

async fn expiry_loop(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let notified = s.lease_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = Instant::now();
        let (expired, next): (Vec<LeaseId>, Option<Instant>) = {
            let st = s.lock();
            let expired = st.leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
            (expired, st.leases.values().map(|l| l.deadline).filter(|d| *d > now).min())
        };
        for id in expired {
            // Expiry goes through the ordinary write path, so the deletes are durable before they are seen.
            match revoke(&s, id, true).await {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => tracing::warn!(lease = id, error = %e, "embedded store: lease expiry failed"),
            }
        }
        let sleep_until = next.unwrap_or(now + Duration::from_secs(3600));
        // Holding `s` while asleep is fine: dropping the store aborts this task.
        tokio::select! {
            _ = tokio::time::sleep_until(sleep_until) => {}
            _ = notified => {}
        }
    }
}

async fn revoke(shared: &Shared, id: LeaseId, only_if_expired: bool) -> Result<(), StoreError> {
    let seq = {
        let mut st = shared.lock();
        st.check_usable()?;
        let Some(lease) = st.leases.get(&id) else {
            return Err(StoreError::NotFound(format!("lease {id:x}")));
        };
        if only_if_expired && lease.deadline > Instant::now() {
            return Ok(()); // kept alive meanwhile
        }
        let ops = lease.keys.iter().map(|k| Op::Delete { key: k.clone() }).collect();
        st.write_txn(ops, id).1
    };
    shared.commit_wanted.notify_one();
    shared.wait_durable(seq).await
}

/// The one write path of puts and deletes, fenced or not: under the state lock, the fence (if any)
/// and the key's condition are checked, the transaction is queued, and the caller waits until it is
/// durable.
impl EmbeddedStore {
    async fn write_put(
        &self,
        fence: Option<Fence<'_>>,
        key: &str,
        value: Vec<u8>,
        condition: PutCondition,
        lease: LeaseId,
    ) -> Result<i64, StoreError> {
        if key.is_empty() {
            return Err(StoreError::Invalid("empty key".into()));
        }
        let s = &self.handle.shared;
        let (revision, seq) = {
            let mut st = s.lock();
            let current = st.begin_write(fence, key)?;
            let ok = match condition {
                PutCondition::Always => true,
                PutCondition::Absent => current == 0,
                PutCondition::ModRevision(r) => current == r,
            };
            if !ok {
                return Err(StoreError::Conflict { key: key.to_owned(), current_mod_revision: current });
            }
            if lease != 0 && !st.leases.contains_key(&lease) {
                return Err(StoreError::NotFound(format!("lease {lease:x}")));
            }
            st.write_txn(vec![Op::Put { key: key.to_owned(), value, lease }], 0)
        };
        s.commit_wanted.notify_one();
        s.wait_durable(seq).await?;
        Ok(revision)
    }

    async fn write_delete(
        &self,
        fence: Option<Fence<'_>>,
        key: &str,
        condition: DeleteCondition,
    ) -> Result<Option<i64>, StoreError> {
        let s = &self.handle.shared;
        let (revision, seq) = {
            let mut st = s.lock();
            let current = st.begin_write(fence, key)?;
            if let DeleteCondition::ModRevision(r) = condition {
                if current != r {
                    return Err(StoreError::Conflict { key: key.to_owned(), current_mod_revision: current });
                }
            }
            if current == 0 {
                (None, st.queued_seq)
            } else {
                let (rev, seq) = st.write_txn(vec![Op::Delete { key: key.to_owned() }], 0);
                (Some(rev), seq)
            }
        };
        s.commit_wanted.notify_one();
        s.wait_durable(seq).await?;
        Ok(revision)
    }
}

impl Store for EmbeddedStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        Box::pin(async move {
            let s = &self.handle.shared;
            let (kv, seq) = {
                let st = s.lock();
                st.check_usable()?;
                (st.kvs.get(key).cloned(), st.queued_seq)
            };
            s.wait_durable(seq).await?;
            Ok(kv)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ListResult> {
        Box::pin(async move {
            let s = &self.handle.shared;
            let (kvs, revision, seq) = {
                let st = s.lock();
                st.check_usable()?;
                let kvs: Vec<KeyValue> = st
                    .kvs
                    .range(prefix.to_owned()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(_, kv)| kv.clone())
                    .collect();
                (kvs, st.revision, st.queued_seq)
            };
            s.wait_durable(seq).await?;
            Ok(ListResult { kvs, revision })
        })
    }

    fn put_request<'a>(&'a self, request: PutRequest<'a>) -> StoreFuture<'a, i64> {
        let PutRequest { key, value, condition, lease, fence } = request;
        Box::pin(self.write_put(fence, key, value, condition, lease))
    }

    fn delete_request<'a>(&'a self, request: DeleteRequest<'a>) -> StoreFuture<'a, Option<i64>> {
        Box::pin(self.write_delete(request.fence, request.key, request.condition))
    }

    fn watch<'a>(&'a self, prefix: &'a str, start_revision: i64) -> StoreFuture<'a, WatchStream> {
        Box::pin(async move {
            let s = &self.handle.shared;
            let rx = s.durable.subscribe();
            let next = {
                let st = s.lock();
                st.check_usable()?;
                if start_revision <= 0 {
                    st.durable_revision + 1
                } else {
                    start_revision
                }
            };
            let watcher = Watcher {
                shared: Arc::downgrade(s),
                prefix: prefix.to_owned(),
                next,
                buffer: VecDeque::new(),
                rx,
                done: false,
            };
            let stream = futures::stream::unfold(watcher, |mut w| async move {
                let item = w.next_event().await?;
                Some((item, w))
            });
            Ok(Box::pin(stream) as WatchStream)
        })
    }

    fn lease_grant(&self, ttl_seconds: i64) -> StoreFuture<'_, LeaseId> {
        Box::pin(async move {
            if ttl_seconds < 1 {
                return Err(StoreError::Invalid(format!("lease TTL {ttl_seconds}s; it must be at least 1s")));
            }
            let s = &self.handle.shared;
            let (id, seq) = {
                let mut st = s.lock();
                st.check_usable()?;
                let id = st.next_lease;
                st.next_lease += 1;
                st.leases.insert(
                    id,
                    Lease {
                        ttl: ttl_seconds,
                        deadline: Instant::now() + secs(ttl_seconds),
                        keys: BTreeSet::new(),
                    },
                );
                (id, st.enqueue(&Record::Grant { id, ttl: ttl_seconds }, Vec::new()))
            };
            s.commit_wanted.notify_one();
            s.lease_changed.notify_one();
            s.wait_durable(seq).await?;
            Ok(id)
        })
    }

    fn lease_keep_alive(&self, lease: LeaseId) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let s = &self.handle.shared;
            let mut st = s.lock();
            st.check_usable()?;
            let now = Instant::now();
            match st.leases.get_mut(&lease) {
                Some(l) if l.deadline > now => {
                    l.deadline = now + secs(l.ttl);
                    Ok(l.ttl)
                }
                _ => Err(StoreError::NotFound(format!("lease {lease:x}"))),
            }
        })
    }

    fn lease_revoke(&self, lease: LeaseId) -> StoreFuture<'_, ()> {
        Box::pin(async move { revoke(&self.handle.shared, lease, false).await })
    }

    fn compact(&self, revision: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let s = &self.handle.shared;
            let seq = {
                let mut st = s.lock();
                st.check_usable()?;
                if revision > st.revision {
                    return Err(StoreError::Invalid(format!(
                        "cannot compact to {revision}, beyond the current revision {}",
                        st.revision
                    )));
                }
                if revision <= st.compact_revision {
                    return Err(StoreError::Compacted { compact_revision: st.compact_revision });
                }
                st.compact_history(revision);
                st.enqueue(&Record::Compact { revision }, Vec::new())
            };
            s.commit_wanted.notify_one();
            s.wait_durable(seq).await
        })
    }
}

struct Watcher {
    shared: std::sync::Weak<Shared>,
    prefix: String,
    /// The next revision this watcher has to deliver.
    next: i64,
    buffer: VecDeque<WatchEvent>,
    rx: tokio::sync::watch::Receiver<u64>,
    done: bool,
}

impl Watcher {
    async fn next_event(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(ev) = self.buffer.pop_front() {
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            self.rx.borrow_and_update();
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
            if self.buffer.is_empty() && self.rx.changed().await.is_err() {
                self.done = true;
                return Some(Err(StoreError::Unavailable("embedded store closed".into())));
            }
        }
    }

    fn fill(&mut self) -> Result<(), StoreError> {
        let Some(shared) = self.shared.upgrade() else {
            return Err(StoreError::Unavailable("embedded store closed".into()));
        };
        let st = shared.lock();
        st.check_usable()?;
        if self.next < st.compact_revision {
            return Err(StoreError::Compacted { compact_revision: st.compact_revision });
        }
        let start = st.history.partition_point(|e| e.revision < self.next);
        let mut scanned_to = None;
        for ev in st.history.range(start..) {
            if self.buffer.len() >= WATCH_CHUNK && Some(ev.revision) != scanned_to {
                break;
            }
            scanned_to = Some(ev.revision);
            if ev.kv.key.starts_with(&self.prefix) {
                self.buffer.push_back(ev.clone());
            }
        }
        if let Some(rev) = scanned_to {
            self.next = rev + 1;
        }
        Ok(())
    }
}
