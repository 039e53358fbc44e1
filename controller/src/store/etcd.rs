//! The etcd store: etcd's own KV, watch and lease API through `etcd-client`, kept to what etcd 3.4 serves.
//!
//! - Several endpoints are balanced by the client; a dead member is routed around by the channel.
//! - Every request runs under [`EtcdOptions::request_timeout`]; running out of it is [`StoreError::Timeout`].
//! - Reads, unconditional writes and lease calls are retried with exponential backoff and jitter inside
//!   that budget when the error is transient. Conditional writes are not retried: a retry after a lost
//!   response would report a conflict with the caller's own write.
//! - A watch reconnects by itself (with backoff, for up to [`EtcdOptions::watch_reconnect_budget`] of
//!   continuous failure) and resumes from the revision after the last one it delivered, so a leader
//!   change or a member restart neither loses nor repeats an event.
//! - Lists are paged at one pinned revision (every page reads the revision of the first), so a big
//!   prefix never mixes revisions. A page is sized by bytes, not only by keys: each next page asks for
//!   as many keys as fit [`LIST_PAGE_BYTES`] at the sizes seen so far, and a page that still comes back
//!   too large is asked again with half the keys. Responses may be up to [`MAX_RESPONSE_BYTES`] (gRPC's
//!   default of 4 MiB was what broke lists of a thousand 4 KiB specs), which leaves room for values up
//!   to etcd's own request limit (1.5 MiB by default) in any page.
//!
//! Not used because etcd 3.4 lacks it: the streaming range read (3.7).

use std::collections::VecDeque;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use super::{
    BoxFuture, DeleteCondition, EventKind, Fence, KeyValue, LeaseId, ListResult, PutCondition, Store,
    StoreError, WatchEvent, WatchStream,
};

/// The most keys one list page asks for.
const LIST_PAGE_MAX_KEYS: i64 = 1000;
/// The first page of a list asks for this many keys, before any size is known.
const LIST_PAGE_FIRST_KEYS: i64 = 100;
/// What a list page aims at, in bytes of keys and values.
pub const LIST_PAGE_BYTES: usize = 4 << 20;
/// The largest response kedge accepts from etcd (lists, watches): well above a page, bounded so that a
/// misbehaving server cannot make the agent allocate without limit.
pub const MAX_RESPONSE_BYTES: usize = 32 << 20;
// Room for a page whose average was misjudged, before it has to be asked again.
const _: () = assert!(MAX_RESPONSE_BYTES >= 4 * LIST_PAGE_BYTES);

/// How to reach an etcd cluster.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// `host:port` or `http(s)://host:port`, one per member.
    pub endpoints: Vec<String>,
    /// The budget of one store call, retries included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long a watch keeps trying to reconnect before it ends with [`StoreError::Unavailable`].
    pub watch_reconnect_budget: Duration,
    /// User and password, for a cluster with authentication enabled.
    pub user: Option<(String, String)>,
    pub tls: Option<EtcdTls>,
}

/// TLS material, PEM encoded. Endpoints without a scheme get `https://` when this is set.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// The CA that signed the servers' certificates; the platform roots are not used.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for clusters with `--client-cert-auth`.
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// The server name to verify, when it differs from the endpoint's host.
    pub domain: Option<String>,
}

impl EtcdOptions {
    /// Options with default timeouts for these endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            watch_reconnect_budget: Duration::from_secs(60),
            user: None,
            tls: None,
        }
    }

    /// Parses the CLI's `etcd://h1:2379,h2:2379` form (or a bare comma-separated list).
    pub fn from_url(url: &str) -> Result<EtcdOptions, StoreError> {
        let list = url.strip_prefix("etcd://").unwrap_or(url);
        let endpoints: Vec<String> =
            list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if endpoints.is_empty() {
            return Err(StoreError::Invalid(format!("no etcd endpoints in {url:?}")));
        }
        Ok(EtcdOptions::new(endpoints))
    }
}

/// The etcd store. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// The KV and watch clients with the receive limit raised to [`MAX_RESPONSE_BYTES`].
    kv: etcd_client::KvClient,
    watch: etcd_client::WatchClient,
    options: EtcdOptions,
}

impl EtcdStore {
    /// Connects (lazily: an unreachable cluster shows up as errors of the first requests, not here,
    /// except when authentication is configured, which needs a round trip).
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore, StoreError> {
        if options.endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints".into()));
        }
        let mut connect = ConnectOptions::new()
            .with_timeout(options.request_timeout)
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // Requests served by a member that lost its leader fail instead of answering stale data or
            // (for watches) silently hanging; the watch then reconnects elsewhere.
            .with_require_leader(true);
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &options.tls {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            match (&tls.client_cert_pem, &tls.client_key_pem) {
                (Some(cert), Some(key)) => t = t.identity(etcd_client::Identity::from_pem(cert, key)),
                (None, None) => {}
                _ => return Err(StoreError::Invalid("TLS client certificate and key go together".into())),
            }
            if let Some(domain) = &tls.domain {
                t = t.domain_name(domain.clone());
            }
            connect = connect.with_tls(t);
        }
        let budget = options.connect_timeout + options.request_timeout;
        let client = tokio::time::timeout(budget, Client::connect(&options.endpoints, Some(connect)))
            .await
            .map_err(|_| StoreError::Timeout(budget))?
            .map_err(map_err)?;
        let kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        let watch = client.watch_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        Ok(EtcdStore { client, kv, watch, options })
    }

    /// The underlying client, for tests and tools that need etcd-specific calls (e.g. member status).
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn with_timeout<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let d = self.options.request_timeout;
        tokio::time::timeout(d, fut).await.map_err(|_| StoreError::Timeout(d))?
    }

    /// Runs `op` with retries on transient errors, all within the request timeout.
    async fn retrying<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        // The first retries come quickly: the usual transient error is a request the balancer sent to a
        // dead member ("tcp connect error"), and the next attempt most likely goes to a live one.
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_secs(1))
            .with_jitter()
            .without_max_times();
        self.with_timeout(op.retry(backoff).when(StoreError::is_transient)).await
    }

    async fn list_once(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let mut kv_client = self.kv.clone();
        let end = prefix_end(prefix.as_bytes());
        let mut kvs = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut limit = LIST_PAGE_FIRST_KEYS;
        let mut bytes_seen = 0usize;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(limit);
            if revision != 0 {
                opts = opts.with_revision(revision);
            }
            let resp = match kv_client.get(from.clone(), Some(opts)).await {
                Ok(resp) => resp,
                Err(e) if is_too_large(&e) && limit > 1 => {
                    limit = (limit / 2).max(1);
                    tracing::debug!(prefix, limit, "etcd list page too large; asking for fewer keys");
                    continue;
                }
                Err(e) => return Err(map_err(e)),
            };
            if revision == 0 {
                revision = header_revision(resp.header())?;
            }
            for kv in resp.kvs() {
                bytes_seen = bytes_seen.saturating_add(kv.key().len() + kv.value().len());
                kvs.push(convert_kv(kv));
            }
            if !resp.more() {
                break;
            }
            let Some(last) = resp.kvs().last() else { break };
            from = last.key().to_vec();
            from.push(0);
            limit = next_page_limit(bytes_seen, kvs.len());
        }
        Ok(ListResult { kvs, revision })
    }
}

/// How many keys the next list page asks for: as many as fit [`LIST_PAGE_BYTES`] at the average size
/// of the keys read so far, between 1 and [`LIST_PAGE_MAX_KEYS`].
fn next_page_limit(bytes_seen: usize, keys_seen: usize) -> i64 {
    let average = (bytes_seen / keys_seen.max(1)).max(1);
    let fits = LIST_PAGE_BYTES / average;
    i64::try_from(fits).unwrap_or(LIST_PAGE_MAX_KEYS).clamp(1, LIST_PAGE_MAX_KEYS)
}

/// Whether the client refused a response for being larger than its receive limit (tonic reports
/// that as OUT_OF_RANGE "decoded message length too large").
fn is_too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status) if status.message().contains("message length too large"))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64, StoreError> {
    header.map(|h| h.revision()).ok_or_else(|| StoreError::Corrupt("etcd response without a header".into()))
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

/// Maps a client error to the store's error kinds.
pub(crate) fn map_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    // gRPC status codes, numerically (tonic's `Code` is not a dependency of ours).
    const INVALID_ARGUMENT: i32 = 3;
    const DEADLINE_EXCEEDED: i32 = 4;
    const NOT_FOUND: i32 = 5;
    const PERMISSION_DENIED: i32 = 7;
    const FAILED_PRECONDITION: i32 = 9;
    const OUT_OF_RANGE: i32 = 11;
    const UNAUTHENTICATED: i32 = 16;
    match e {
        E::GRpcStatus(status) => {
            let msg = status.message().to_owned();
            let code = i32::from(status.code());
            match code {
                UNAUTHENTICATED | PERMISSION_DENIED => StoreError::Auth(msg),
                INVALID_ARGUMENT if msg.contains("authentication") || msg.contains("user name") => {
                    StoreError::Auth(msg)
                }
                NOT_FOUND => StoreError::NotFound(msg),
                OUT_OF_RANGE if msg.contains("compacted") => StoreError::Compacted { compact_revision: 0 },
                INVALID_ARGUMENT | FAILED_PRECONDITION | OUT_OF_RANGE => StoreError::Invalid(msg),
                DEADLINE_EXCEEDED => StoreError::Unavailable(format!("deadline exceeded: {msg}")),
                _ => StoreError::Unavailable(format!("{:?}: {msg}", status.code())),
            }
        }
        E::LeaseKeepAliveError(msg) if msg.contains("not found") => StoreError::NotFound(msg),
        E::InvalidArgs(msg) => StoreError::Invalid(msg),
        E::InvalidUri(e) => StoreError::Invalid(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        Box::pin(self.retrying(move || {
            let mut client = self.client.clone();
            async move {
                let resp = client.get(key, None).await.map_err(map_err)?;
                Ok(resp.kvs().first().map(convert_kv))
            }
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<ListResult, StoreError>> {
        Box::pin(self.retrying(move || async move {
            match self.list_once(prefix).await {
                // A compaction between two pages of one list: the caller did not ask for an old
                // revision, so start over at the current one (as a transient failure, retried).
                Err(StoreError::Compacted { .. }) => {
                    Err(StoreError::Unavailable("compacted while paging a list; retrying".into()))
                }
                other => other,
            }
        }))
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        condition: PutCondition,
        lease: LeaseId,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(async move {
            if key.is_empty() {
                return Err(StoreError::Invalid("empty key".into()));
            }
            let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
            let compare = match condition {
                PutCondition::Always => {
                    return self
                        .retrying(|| {
                            let mut client = self.client.clone();
                            let (value, opts) = (value.clone(), opts.clone());
                            async move {
                                let resp = client.put(key, value, opts).await.map_err(map_err)?;
                                header_revision(resp.header())
                            }
                        })
                        .await;
                }
                PutCondition::Absent | PutCondition::ModRevision(0) => {
                    Compare::create_revision(key, CompareOp::Equal, 0)
                }
                PutCondition::ModRevision(r) => Compare::mod_revision(key, CompareOp::Equal, r),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key, value, opts)])
                .or_else([TxnOp::get(key, None)]);
            self.with_timeout(self.conditional(key, txn)).await
        })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        condition: DeleteCondition,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            match condition {
                DeleteCondition::Always => {
                    self.retrying(|| {
                        let mut client = self.client.clone();
                        async move {
                            let resp = client.delete(key, None).await.map_err(map_err)?;
                            let rev = header_revision(resp.header())?;
                            Ok((resp.deleted() > 0).then_some(rev))
                        }
                    })
                    .await
                }
                DeleteCondition::ModRevision(0) => {
                    // "Delete if absent": succeed without a write when absent, conflict otherwise.
                    match self.get(key).await? {
                        None => Ok(None),
                        Some(kv) => Err(StoreError::Conflict {
                            key: key.to_owned(),
                            current_mod_revision: kv.mod_revision,
                        }),
                    }
                }
                DeleteCondition::ModRevision(r) => {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(key, CompareOp::Equal, r)])
                        .and_then([TxnOp::delete(key, None::<DeleteOptions>)])
                        .or_else([TxnOp::get(key, None)]);
                    self.with_timeout(self.conditional(key, txn)).await.map(Some)
                }
            }
        })
    }

    fn put_fenced<'a>(
        &'a self,
        fence: Fence<'a>,
        key: &'a str,
        value: Vec<u8>,
        condition: PutCondition,
    ) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(async move {
            if key.is_empty() {
                return Err(StoreError::Invalid("empty key".into()));
            }
            let mut compares = vec![Compare::mod_revision(fence.key, CompareOp::Equal, fence.mod_revision)];
            match condition {
                PutCondition::Always => {}
                PutCondition::Absent | PutCondition::ModRevision(0) => {
                    compares.push(Compare::create_revision(key, CompareOp::Equal, 0))
                }
                PutCondition::ModRevision(r) => {
                    compares.push(Compare::mod_revision(key, CompareOp::Equal, r))
                }
            }
            let txn = Txn::new()
                .when(compares)
                .and_then([TxnOp::put(key, value, None)])
                .or_else([TxnOp::get(fence.key, None), TxnOp::get(key, None)]);
            self.with_timeout(self.fenced(fence, key, txn)).await.map(|(revision, _)| revision)
        })
    }

    fn delete_fenced<'a>(
        &'a self,
        fence: Fence<'a>,
        key: &'a str,
        condition: DeleteCondition,
    ) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            let mut compares = vec![Compare::mod_revision(fence.key, CompareOp::Equal, fence.mod_revision)];
            if let DeleteCondition::ModRevision(r) = condition {
                compares.push(Compare::mod_revision(key, CompareOp::Equal, r));
            }
            let txn = Txn::new()
                .when(compares)
                .and_then([TxnOp::delete(key, None::<DeleteOptions>)])
                .or_else([TxnOp::get(fence.key, None), TxnOp::get(key, None)]);
            let (revision, deleted) = self.with_timeout(self.fenced(fence, key, txn)).await?;
            Ok((deleted > 0).then_some(revision))
        })
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        start_revision: i64,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        Box::pin(async move {
            let next = if start_revision > 0 {
                start_revision
            } else {
                // "From now": pin it to a revision so that a reconnect resumes correctly.
                self.retrying(|| {
                    let mut client = self.client.clone();
                    async move {
                        let resp = client
                            .get(prefix, Some(GetOptions::new().with_prefix().with_count_only()))
                            .await
                            .map_err(map_err)?;
                        header_revision(resp.header())
                    }
                })
                .await?
                    + 1
            };
            let mut watch = EtcdWatch {
                client: self.watch.clone(),
                prefix: prefix.to_owned(),
                next,
                stream: None,
                buffer: VecDeque::new(),
                done: false,
                reconnect_budget: self.options.watch_reconnect_budget,
            };
            // Open the first stream now so that an unreachable cluster is an error of `watch` itself.
            watch.open().await?;
            let stream = futures::stream::unfold(watch, |mut w| async move {
                let item = w.next_event().await?;
                Some((item, w))
            });
            Ok(Box::pin(stream) as WatchStream)
        })
    }

    fn lease_grant(&self, ttl_seconds: i64) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        Box::pin(self.retrying(move || {
            let mut client = self.client.clone();
            async move {
                let resp = client.lease_grant(ttl_seconds, None).await.map_err(map_err)?;
                if !resp.error().is_empty() {
                    return Err(StoreError::Invalid(resp.error().to_owned()));
                }
                Ok(resp.id())
            }
        }))
    }

    fn lease_keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<i64, StoreError>> {
        Box::pin(self.retrying(move || {
            let mut client = self.client.clone();
            async move {
                // The client's keep_alive sends one renewal and checks it; a second one reports the TTL.
                let (mut keeper, mut stream) = client.lease_keep_alive(lease).await.map_err(map_err)?;
                keeper.keep_alive().await.map_err(map_err)?;
                match stream.message().await.map_err(map_err)? {
                    Some(resp) if resp.ttl() > 0 => Ok(resp.ttl()),
                    Some(_) => Err(StoreError::NotFound(format!("lease {lease:x}"))),
                    None => Err(StoreError::Unavailable("lease keep-alive stream closed".into())),
                }
            }
        }))
    }

    fn lease_revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.retrying(move || {
            let mut client = self.client.clone();
            async move {
                client.lease_revoke(lease).await.map_err(map_err)?;
                Ok(())
            }
        }))
    }

    fn compact(&self, revision: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut client = self.client.clone();
            match self.with_timeout(async { client.compact(revision, None).await.map_err(map_err) }).await {
                Ok(_) => Ok(()),
                Err(StoreError::Compacted { .. }) => {
                    Err(StoreError::Compacted { compact_revision: revision })
                }
                Err(e) => Err(e),
            }
        })
    }
}

impl EtcdStore {
    /// Runs a `fence and compare ? write : get fence, get key` transaction; returns the revision and
    /// how many keys a delete removed. On failure the conflict names the fence's key when the fence
    /// moved, else the written key.
    async fn fenced(&self, fence: Fence<'_>, key: &str, txn: Txn) -> Result<(i64, i64), StoreError> {
        let mut client = self.client.clone();
        let resp = client.txn(txn).await.map_err(map_err)?;
        let revision = header_revision(resp.header())?;
        let responses = resp.op_responses();
        if resp.succeeded() {
            let deleted = responses
                .iter()
                .find_map(|r| match r {
                    TxnOpResponse::Delete(d) => Some(d.deleted()),
                    _ => None,
                })
                .unwrap_or(0);
            return Ok((revision, deleted));
        }
        let mut currents = responses.iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map_or(0, |kv| kv.mod_revision())),
            _ => None,
        });
        let fence_current = currents.next().unwrap_or(0);
        let key_current = currents.next().unwrap_or(0);
        if fence_current != fence.mod_revision {
            return Err(StoreError::Conflict {
                key: fence.key.to_owned(),
                current_mod_revision: fence_current,
            });
        }
        Err(StoreError::Conflict { key: key.to_owned(), current_mod_revision: key_current })
    }

    /// Runs a `compare ? write : get` transaction; on failure reports the key's current mod_revision.
    async fn conditional(&self, key: &str, txn: Txn) -> Result<i64, StoreError> {
        let mut client = self.client.clone();
        let resp = client.txn(txn).await.map_err(map_err)?;
        let revision = header_revision(resp.header())?;
        if resp.succeeded() {
            return Ok(revision);
        }
        let current = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map_or(0, |kv| kv.mod_revision())),
                _ => None,
            })
            .unwrap_or(0);
        Err(StoreError::Conflict { key: key.to_owned(), current_mod_revision: current })
    }
}

struct EtcdWatch {
    client: etcd_client::WatchClient,
    prefix: String,
    /// The next revision to deliver: where a reconnect resumes.
    next: i64,
    stream: Option<etcd_client::WatchStream>,
    buffer: VecDeque<WatchEvent>,
    done: bool,
    reconnect_budget: Duration,
}

impl EtcdWatch {
    async fn open(&mut self) -> Result<(), StoreError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(self.next);
        let stream = self.client.watch(self.prefix.as_str(), Some(opts)).await.map_err(map_err)?;
        self.stream = Some(stream);
        Ok(())
    }

    /// Reopens the stream with backoff until it works or the budget is spent.
    async fn reopen(&mut self) -> Result<(), StoreError> {
        self.stream = None;
        let deadline = tokio::time::Instant::now() + self.reconnect_budget;
        let mut delay = Duration::from_millis(50);
        loop {
            match self.open().await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_transient() && tokio::time::Instant::now() + delay < deadline => {
                    tracing::debug!(prefix = %self.prefix, error = %e, "etcd watch: reconnecting");
                    let jitter = rand::random_range(0..=delay.as_millis() as u64 / 2);
                    tokio::time::sleep(delay + Duration::from_millis(jitter)).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn next_event(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(ev) = self.buffer.pop_front() {
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            if self.stream.is_none() {
                if let Err(e) = self.reopen().await {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            let stream = self.stream.as_mut().expect("opened above");
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.compact_revision() > 0 {
                        self.done = true;
                        return Some(Err(StoreError::Compacted {
                            compact_revision: resp.compact_revision(),
                        }));
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let revision = kv.mod_revision();
                        if revision < self.next {
                            continue; // already delivered before a reconnect
                        }
                        let event = match ev.event_type() {
                            EventType::Put => {
                                WatchEvent { kind: EventKind::Put, kv: convert_kv(kv), revision }
                            }
                            EventType::Delete => WatchEvent {
                                kind: EventKind::Delete,
                                kv: KeyValue {
                                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                                    value: Vec::new(),
                                    create_revision: 0,
                                    mod_revision: revision,
                                    version: 0,
                                    lease: 0,
                                },
                                revision,
                            },
                        };
                        self.buffer.push_back(event);
                    }
                    if let Some(last) = self.buffer.back() {
                        self.next = last.revision + 1;
                    }
                    if resp.canceled() {
                        tracing::debug!(
                            reason = resp.cancel_reason(),
                            "etcd watch canceled by the server; resuming"
                        );
                        self.stream = None;
                    }
                }
                Ok(None) | Err(_) => {
                    // The connection or the member went away; resume from `next` on any member.
                    self.stream = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_pages_fit_the_byte_budget() {
        // Small specs: the most keys a page may ask for.
        assert_eq!(next_page_limit(100 * 500, 100), LIST_PAGE_MAX_KEYS);
        // 4 KiB specs: 1,024 would fit 4 MiB, so still the key cap.
        assert_eq!(next_page_limit(100 * 4096, 100), LIST_PAGE_MAX_KEYS);
        // 256 KiB objects: 16 a page.
        assert_eq!(next_page_limit(10 * (256 << 10), 10), 16);
        // Values larger than a whole page: one at a time, never zero.
        assert_eq!(next_page_limit(8 << 20, 1), 1);
        assert_eq!(next_page_limit(0, 0), LIST_PAGE_MAX_KEYS);
    }
}
