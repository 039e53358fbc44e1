//! Optional TLS for the API's TCP listener: a certificate chain and key in PEM, optionally a CA whose
//! client certificates are required (mutual TLS). TLS 1.2 and 1.3 only. Handshakes run concurrently (a
//! slow client cannot hold up others) with a deadline, and a client speaking plain HTTP to the TLS port
//! gets a plain `400` saying so instead of a handshake error it cannot read.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first byte of every TLS record that starts a handshake.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a plain-HTTP client gets from the TLS port before the connection is closed: the API's error
/// body, so that `kedge` and curl show the reason.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
Connection: close\r\nContent-Length: 86\r\n\r\n{\"error\":\"this port speaks HTTPS: use an https:// server URL\",\"reason\":\"TlsRequired\"}\n";

/// The server's certificate and key, ready to accept TLS connections.
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
    client_auth: bool,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The acceptor holds the private key: never print it.
        f.debug_struct("TlsConfig").field("client_auth", &self.client_auth).finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no PEM certificate found in the certificate file")]
    NoCertificate,
    #[error("no usable PEM certificate in the client CA file: {0}")]
    ClientCa(String),
    #[error("no usable PEM private key: {0}")]
    Key(String),
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

impl TlsConfig {
    /// From PEM text: the certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig, TlsError> {
        TlsConfig::build(cert_chain_pem, key_pem, None)
    }

    /// As [`TlsConfig::from_pem`], and every client must present a certificate signed by one of the CAs
    /// in `client_ca_pem` (mutual TLS); a client without one fails the handshake.
    pub fn from_pem_with_client_ca(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: &[u8],
    ) -> Result<TlsConfig, TlsError> {
        TlsConfig::build(cert_chain_pem, key_pem, Some(client_ca_pem))
    }

    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> Result<TlsConfig, TlsError> {
        TlsConfig::from_files(cert_chain, key, None)
    }

    /// The files of `kedge agent --tls-cert --tls-key [--tls-client-ca]`.
    pub fn from_files(
        cert_chain: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsConfig, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
        };
        let client_ca = client_ca.map(read).transpose()?;
        TlsConfig::build(&read(cert_chain)?, &read(key)?, client_ca.as_deref())
    }

    /// Whether clients must present a certificate (mutual TLS).
    pub fn requires_client_certificate(&self) -> bool {
        self.client_auth
    }

    fn build(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: Option<&[u8]>,
    ) -> Result<TlsConfig, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::NoCertificate)?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The safe defaults are TLS 1.2 and 1.3; nothing older is offered.
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for certificate in CertificateDer::pem_slice_iter(pem) {
                    let certificate = certificate.map_err(|e| TlsError::ClientCa(e.to_string()))?;
                    roots.add(certificate).map_err(|e| TlsError::ClientCa(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(TlsError::ClientCa("the file holds no certificate".to_owned()));
                }
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(chain, key).map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(TlsConfig { acceptor: TlsAcceptor::from(Arc::new(config)), client_auth: client_ca_pem.is_some() })
    }
}

/// A TCP listener whose connections come out TLS-terminated, for `axum::serve`.
pub(crate) struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, tls: TlsConfig) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (sender, ready) = tokio::sync::mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, address) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(%error, "API accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = tls.acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(acceptor, tcp)).await {
                        Ok(Ok(Some(stream))) => {
                            let _ = sender.send((stream, address)).await;
                        }
                        Ok(Ok(None)) => tracing::debug!(%address, "plain HTTP on the TLS port, answered 400"),
                        Ok(Err(error)) => tracing::debug!(%address, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%address, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local, accepting })
    }
}

/// Completes the handshake, or answers a client that sent something other than a TLS handshake
/// (plain HTTP, most likely) with a readable `400` and returns `None`.
async fn handshake(acceptor: TlsAcceptor, mut tcp: TcpStream) -> io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the handshake"));
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        use tokio::io::AsyncWriteExt;
        tcp.write_all(PLAIN_HTTP_ANSWER).await?;
        tcp.shutdown().await?;
        return Ok(None);
    }
    acceptor.accept(tcp).await.map(Some)
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (aborted): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_is_well_formed() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(length, body.len());
        let error: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(error["reason"], "TlsRequired");
        assert!(head.starts_with("HTTP/1.1 400 "));
    }

    #[test]
    fn a_client_ca_file_without_certificates_is_refused() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tests/api_support/tls");
        let cert = std::fs::read(fixtures.join("server.pem")).unwrap();
        let key = std::fs::read(fixtures.join("server.key")).unwrap();
        let error = TlsConfig::from_pem_with_client_ca(&cert, &key, b"no PEM here").unwrap_err();
        assert!(matches!(error, TlsError::ClientCa(_)), "{error}");
        let ca = std::fs::read(fixtures.join("ca.pem")).unwrap();
        assert!(TlsConfig::from_pem_with_client_ca(&cert, &key, &ca).unwrap().requires_client_certificate());
        assert!(!TlsConfig::from_pem(&cert, &key).unwrap().requires_client_certificate());
        assert!(!format!("{:?}", TlsConfig::from_pem(&cert, &key).unwrap()).contains("PRIVATE"));
    }
}
