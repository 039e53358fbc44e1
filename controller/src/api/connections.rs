//! The API's accept loop: axum's router on hyper connections with the limits a server open to a
//! network needs before anyone has authenticated.
//!
//! - A client has [`HEADER_READ_TIMEOUT`] to send a request's headers, from the moment it connects
//!   and while a kept-alive connection waits for its next request: idle and slowloris connections are
//!   closed, not kept. (HTTP/1 only; the API serves no HTTP/2.)
//! - At most [`MAX_CONNECTIONS`] connections are served at once per listener; more wait in the
//!   kernel's backlog until one closes. With idle connections reaped, a flood of them delays
//!   `/healthz` by at most one header timeout instead of stopping it.
//! - On TLS, the handshake has its own deadline (`tls.rs`).
//!
//! Shutdown: stop accepting, let hyper finish in-flight requests and close idle connections, then
//! return (watch streams end through the router's own cancellation token).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

/// How long a client may take to send a request's headers (and how long a kept-alive connection may
/// sit idle between requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once on one listener.
pub const MAX_CONNECTIONS: usize = 4096;

/// Limits of one listener; tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { header_read_timeout: HEADER_READ_TIMEOUT, max_connections: MAX_CONNECTIONS }
    }
}

/// Serves `app` on every connection `listener` yields until `shutdown` completes.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: axum::serve::Listener,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // HTTP/1 only: hyper's protocol-detecting builder waits for a client's first bytes with no deadline,
    // so a connection that never sends one would escape the header timeout.
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
        let (io, _address) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!(%error, "API connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
