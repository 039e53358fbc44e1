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
//! - With a user and password, the auth token is refreshed whenever etcd refuses it: etcd forgets a
//!   simple token after `--auth-token-ttl` of disuse (300 s by default) and every token when it
//!   restarts. etcd-client authenticates again and retries a unary call that met an invalid token
//!   ([`ConnectOptions::with_auto_token_refresh`]); what it does not cover is done here
//!   ([`Reauthenticator`]): a watch, whose refusal is a canceled watch rather than an error, a lease
//!   keep-alive stream, and etcd's "auth store is old" refusal. A request is retried once after a
//!   refresh: a refusal means etcd did not apply it, so even a conditional write may be sent again.
//! - Lists are paged at one pinned revision (every page reads the revision of the first), so a big
//!   prefix never mixes revisions. A page is sized by bytes, not only by keys: each next page asks for
//!   as many keys as fit [`LIST_PAGE_BYTES`] at the sizes seen so far, and a page that still comes back
//!   too large is asked again with half the keys. Responses may be up to [`MAX_RESPONSE_BYTES`] (gRPC's
//!   default of 4 MiB was what broke lists of a thousand 4 KiB specs), which leaves room for values up
//!   to etcd's own request limit (1.5 MiB by default) in any page.
//!
//! Not used because etcd 3.4 lacks it: the streaming range read (3.7).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use super::{
    DeleteCondition, DeleteRequest, EventKind, Fence, KeyValue, LeaseId, ListResult, PutCondition,
    PutRequest, Store, StoreError, StoreFuture, WatchEvent, WatchStream,
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

/// How to reach an etcd cluster. Its `Debug` shows neither the password nor the client key.
#[derive(Clone)]
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

/// TLS material, PEM encoded. Endpoints without a scheme get `https://` when this is set. Its `Debug`
/// shows whether each part is set, not the key.
#[derive(Clone, Default)]
pub struct EtcdTls {
    /// The CA that signed the servers' certificates; the platform roots are not used.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for clusters with `--client-cert-auth`.
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// The server name to verify, when it differs from the endpoint's host.
    pub domain: Option<String>,
}

/// What `Debug` shows in place of a secret.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("watch_reconnect_budget", &self.watch_reconnect_budget)
            .field("user", &self.user.as_ref().map(|(user, _)| (user, Redacted)))
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |pem: &Option<Vec<u8>>| pem.as_ref().map(|pem| format!("{} bytes of PEM", pem.len()));
        f.debug_struct("EtcdTls")
            .field("ca_pem", &size(&self.ca_pem))
            .field("client_cert_pem", &size(&self.client_cert_pem))
            .field("client_key_pem", &self.client_key_pem.as_ref().map(|_| Redacted))
            .field("domain", &self.domain)
            .finish()
    }
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
    reauth: Reauthenticator,
}

/// Authenticates again when etcd refuses the client's token, once for all the requests that were
/// refused with the same token (each authentication costs etcd a bcrypt comparison).
#[derive(Clone)]
struct Reauthenticator {
    client: Client,
    /// Only a client with a user and password has a token to refresh.
    enabled: bool,
    /// How many times the token was refreshed here. A request refused with an older token than the
    /// current one retries without authenticating again.
    generation: Arc<AtomicU64>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Reauthenticator {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Gets a new token, unless one was got since `seen` (the generation the refused request was
    /// sent under).
    async fn refresh(&self, seen: u64, refusal: &str) -> Result<(), StoreError> {
        let _one_at_a_time = self.lock.lock().await;
        if self.generation() != seen {
            return Ok(());
        }
        tracing::info!(refusal, "etcd refused the auth token; authenticating again");
        self.client.refresh_token().await.map_err(map_err)?;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
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
            connect = connect.with_user(user.clone(), password.clone()).with_auto_token_refresh(true);
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
        let reauth = Reauthenticator {
            client: client.clone(),
            enabled: options.user.is_some(),
            generation: Arc::default(),
            lock: Arc::default(),
        };
        Ok(EtcdStore { client, kv, watch, options, reauth })
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

    /// Runs `op` with retries on transient errors, and once more after authenticating again when etcd
    /// refused the token, all within the request timeout.
    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T, StoreError>
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
        self.with_timeout(async {
            let seen = self.reauth.generation();
            match (&mut op).retry(backoff).when(StoreError::is_transient).await {
                Err(StoreError::Auth(refusal)) if self.reauth.enabled => {
                    self.reauth.refresh(seen, &refusal).await?;
                    op.retry(backoff).when(StoreError::is_transient).await
                }
                other => other,
            }
        })
        .await
    }

    /// Runs `op` (one request, not retried), and once more after authenticating again when etcd
    /// refused the token: a refused request was not applied, so sending it again is safe.
    async fn authenticated<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let seen = self.reauth.generation();
        match op().await {
            Err(StoreError::Auth(refusal)) if self.reauth.enabled => {
                self.reauth.refresh(seen, &refusal).await?;
                op().await
            }
            other => other,
        }
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

// gRPC status codes, numerically (tonic's `Code` is not a dependency of ours).
const INVALID_ARGUMENT: i32 = 3;
const DEADLINE_EXCEEDED: i32 = 4;
const NOT_FOUND: i32 = 5;
const PERMISSION_DENIED: i32 = 7;
const FAILED_PRECONDITION: i32 = 9;
const OUT_OF_RANGE: i32 = 11;
const UNAUTHENTICATED: i32 = 16;

/// Whether a gRPC status is etcd refusing the credentials or the token: a wrong password or user
/// name, an invalid or expired token, a denied permission, or "revision of auth store is old" (users
/// or roles changed since the token was issued; a new token fixes it).
fn is_auth_refusal(code: i32, message: &str) -> bool {
    match code {
        UNAUTHENTICATED | PERMISSION_DENIED => true,
        INVALID_ARGUMENT => {
            message.contains("authentication")
                || message.contains("user name")
                || message.contains("auth store is old")
        }
        _ => false,
    }
}

/// Maps a client error to the store's error kinds.
pub(crate) fn map_err(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => {
            let msg = status.message().to_owned();
            let code = i32::from(status.code());
            match code {
                _ if is_auth_refusal(code, &msg) => StoreError::Auth(msg),
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
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<KeyValue>> {
        Box::pin(self.retrying(move || {
            let mut client = self.client.clone();
            async move {
                let resp = client.get(key, None).await.map_err(map_err)?;
                Ok(resp.kvs().first().map(convert_kv))
            }
        }))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, ListResult> {
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

    fn put_request<'a>(&'a self, request: PutRequest<'a>) -> StoreFuture<'a, i64> {
        Box::pin(async move {
            let PutRequest { key, value, condition, lease, fence } = request;
            if key.is_empty() {
                return Err(StoreError::Invalid("empty key".into()));
            }
            let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
            let mut compares: Vec<Compare> = fence
                .iter()
                .map(|fence| Compare::mod_revision(fence.key, CompareOp::Equal, fence.mod_revision))
                .collect();
            match condition {
                PutCondition::Always => {}
                PutCondition::Absent | PutCondition::ModRevision(0) => {
                    compares.push(Compare::create_revision(key, CompareOp::Equal, 0))
                }
                PutCondition::ModRevision(r) => {
                    compares.push(Compare::mod_revision(key, CompareOp::Equal, r))
                }
            }
            if compares.is_empty() {
                // Unconditional: a plain put, retried (writing the same value again is harmless).
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
            let txn = Txn::new().when(compares).and_then([TxnOp::put(key, value, opts)]);
            match fence {
                None => {
                    let txn = txn.or_else([TxnOp::get(key, None)]);
                    self.with_timeout(self.authenticated(|| self.conditional(key, txn.clone()))).await
                }
                Some(fence) => {
                    let txn = txn.or_else([TxnOp::get(fence.key, None), TxnOp::get(key, None)]);
                    self.with_timeout(self.authenticated(|| self.fenced(fence, key, txn.clone())))
                        .await
                        .map(|(revision, _)| revision)
                }
            }
        })
    }

    fn delete_request<'a>(&'a self, request: DeleteRequest<'a>) -> StoreFuture<'a, Option<i64>> {
        Box::pin(async move {
            let DeleteRequest { key, condition, fence } = request;
            if let Some(fence) = fence {
                let mut compares =
                    vec![Compare::mod_revision(fence.key, CompareOp::Equal, fence.mod_revision)];
                if let DeleteCondition::ModRevision(r) = condition {
                    compares.push(Compare::mod_revision(key, CompareOp::Equal, r));
                }
                let txn = Txn::new()
                    .when(compares)
                    .and_then([TxnOp::delete(key, None::<DeleteOptions>)])
                    .or_else([TxnOp::get(fence.key, None), TxnOp::get(key, None)]);
                let (revision, deleted) =
                    self.with_timeout(self.authenticated(|| self.fenced(fence, key, txn.clone()))).await?;
                return Ok((deleted > 0).then_some(revision));
            }
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
                    self.with_timeout(self.authenticated(|| self.conditional(key, txn.clone())))
                        .await
                        .map(Some)
                }
            }
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, start_revision: i64) -> StoreFuture<'a, WatchStream> {
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
                reauth: self.reauth.clone(),
                prefix: prefix.to_owned(),
                next,
                stream: None,
                pending: None,
                buffer: VecDeque::new(),
                done: false,
                reconnect_budget: self.options.watch_reconnect_budget,
                open_timeout: self.options.request_timeout,
            };
            // Open the first stream now so that an unreachable cluster (or a refused token, after one
            // more authentication) is an error of `watch` itself.
            watch.open_authenticated().await?;
            let stream = futures::stream::unfold(watch, |mut w| async move {
                let item = w.next_event().await?;
                Some((item, w))
            });
            Ok(Box::pin(stream) as WatchStream)
        })
    }

    fn lease_grant(&self, ttl_seconds: i64) -> StoreFuture<'_, LeaseId> {
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

    fn lease_keep_alive(&self, lease: LeaseId) -> StoreFuture<'_, i64> {
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

    fn lease_revoke(&self, lease: LeaseId) -> StoreFuture<'_, ()> {
        Box::pin(self.retrying(move || {
            let mut client = self.client.clone();
            async move {
                client.lease_revoke(lease).await.map_err(map_err)?;
                Ok(())
            }
        }))
    }

    fn compact(&self, revision: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let compact = || {
                let mut client = self.client.clone();
                async move { client.compact(revision, None).await.map_err(map_err) }
            };
            match self.with_timeout(self.authenticated(compact)).await {
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
    reauth: Reauthenticator,
    prefix: String,
    /// The next revision to deliver: where a reconnect resumes.
    next: i64,
    stream: Option<etcd_client::WatchStream>,
    /// The stream's first response, read by [`EtcdWatch::open`], still to be taken apart.
    pending: Option<etcd_client::WatchResponse>,
    buffer: VecDeque<WatchEvent>,
    done: bool,
    reconnect_budget: Duration,
    /// How long opening a stream may take, until etcd's answer to the watch's creation.
    open_timeout: Duration,
}

impl EtcdWatch {
    /// Opens a stream from `next`. etcd checks a watch's permission (and so its token) when it creates
    /// the watch and answers a refusal as a canceled watch, not as an error, so the first answer is
    /// read here: a refusal is [`StoreError::Auth`].
    async fn open(&mut self) -> Result<(), StoreError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(self.next);
        let created = async {
            let mut stream = self.client.watch(self.prefix.as_str(), Some(opts)).await.map_err(map_err)?;
            let first = stream.message().await.map_err(map_err)?;
            Ok::<_, StoreError>((stream, first))
        };
        let (stream, first) = tokio::time::timeout(self.open_timeout, created)
            .await
            .map_err(|_| StoreError::Timeout(self.open_timeout))??;
        match first {
            None => Err(StoreError::Unavailable("etcd closed the watch stream at once".into())),
            Some(resp) if resp.canceled() && resp.compact_revision() == 0 => {
                Err(watch_refusal(resp.cancel_reason()))
            }
            Some(resp) => {
                self.stream = Some(stream);
                self.pending = Some(resp);
                Ok(())
            }
        }
    }

    /// [`EtcdWatch::open`], and once more after authenticating again when etcd refused the token.
    async fn open_authenticated(&mut self) -> Result<(), StoreError> {
        let seen = self.reauth.generation();
        match self.open().await {
            Err(StoreError::Auth(refusal)) if self.reauth.enabled => {
                self.reauth.refresh(seen, &refusal).await?;
                self.open().await
            }
            other => other,
        }
    }

    /// Reopens the stream with backoff until it works or the budget is spent.
    async fn reopen(&mut self) -> Result<(), StoreError> {
        self.stream = None;
        self.pending = None;
        let deadline = tokio::time::Instant::now() + self.reconnect_budget;
        let mut delay = Duration::from_millis(50);
        loop {
            match self.open_authenticated().await {
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
            let message = match self.pending.take() {
                Some(first) => Ok(Some(first)),
                None => self.stream.as_mut().expect("opened above").message().await,
            };
            match message {
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

/// What a watch canceled at its creation means: a refused token or permission is
/// [`StoreError::Auth`] (after one more authentication, final), anything else a reason to reconnect.
fn watch_refusal(reason: &str) -> StoreError {
    if reason.contains("permission denied") || reason.contains("auth") {
        StoreError::Auth(format!("etcd refused the watch: {reason}"))
    } else {
        StoreError::Unavailable(format!("etcd canceled the watch: {reason}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_password_and_no_client_key() {
        let mut options = EtcdOptions::new(["https://10.0.0.1:2379"]);
        options.user = Some(("kedge".into(), "s3cret-password".into()));
        options.tls = Some(EtcdTls {
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            client_cert_pem: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            client_key_pem: Some(b"-----BEGIN PRIVATE KEY----- s3cret-key".to_vec()),
            domain: None,
        });
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("\"kedge\"") && shown.contains("<redacted>"), "{shown}");
        assert!(shown.contains("10.0.0.1:2379"), "{shown}");
    }

    #[test]
    fn refused_watches_and_stale_auth_revisions_are_auth_errors() {
        assert!(matches!(watch_refusal("etcdserver: permission denied"), StoreError::Auth(_)));
        assert!(matches!(watch_refusal("etcdserver: invalid auth token"), StoreError::Auth(_)));
        assert!(watch_refusal("etcdserver: no leader").is_transient());
        assert!(is_auth_refusal(INVALID_ARGUMENT, "etcdserver: revision of auth store is old"));
        assert!(is_auth_refusal(
            INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password"
        ));
        assert!(is_auth_refusal(UNAUTHENTICATED, "etcdserver: invalid auth token"));
        assert!(!is_auth_refusal(INVALID_ARGUMENT, "etcdserver: key is not provided"));
    }

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
