//! The API client: requests over TCP (`http://`, `https://`) or the agent's Unix socket (`unix:///PATH`),
//! and HTTP answers turned into `CliError`s with exit codes and hints.

use std::path::PathBuf;
use std::pin::Pin;

use futures::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Resolved;
use crate::error::{CliError, CliResult, Exit};

/// One line of a watch stream: `{"type": "ADDED|MODIFIED|DELETED", "object": ...}`, or an `ERROR`
/// whose object is an error body.
#[derive(Debug, Clone, Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub object: Value,
}

impl WatchEvent {
    /// The object as its type.
    pub fn object<T: DeserializeOwned>(&self) -> CliResult<T> {
        crate::error::from_server(self.object.clone())
    }

    fn error(&self) -> Option<String> {
        serde_json::from_value::<ErrorBody>(self.object.clone()).ok()?.error
    }
}

/// The body of an error answer: `{"error": MESSAGE, ...details}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    /// A conflict's two versions.
    #[serde(default)]
    your_resource_version: Option<String>,
    #[serde(default)]
    current_resource_version: Option<String>,
    /// The refused fields of an invalid or policy-denied object.
    #[serde(default)]
    details: Vec<FieldDetail>,
}

/// One entry of an error answer's `details`.
#[derive(Debug, Default, Deserialize)]
struct FieldDetail {
    #[serde(default)]
    field: String,
    #[serde(default)]
    message: String,
}

pub struct Client {
    transport: Transport,
    server: String,
    token: Option<String>,
}

enum Transport {
    Tcp(reqwest::Client),
    /// One connection per request: the socket is local and requests are few.
    Unix(PathBuf),
}

/// A successful answer: its body and the `X-Kedge-Outcome` header of writes.
pub struct Answer {
    pub body: Value,
    pub outcome: Option<String>,
}

pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, String>> + Send>>;

/// An answer of either transport, before its status is judged.
pub struct Response {
    pub status: StatusCode,
    pub outcome: Option<String>,
    /// The answer's `Content-Type` (JSON, or newline-delimited JSON for watches and logs).
    pub content_type: Option<String>,
    pub body: BodyStream,
}

impl Client {
    pub fn new(resolved: &Resolved) -> CliResult<Client> {
        let server = resolved.server.trim_end_matches('/').to_owned();
        let transport = if let Some(path) =
            server.strip_prefix("unix://").or_else(|| server.strip_prefix("unix:"))
        {
            Transport::Unix(PathBuf::from(path))
        } else if server.starts_with("http://") || server.starts_with("https://") {
            let mut builder = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(5));
            if let Some(path) = &resolved.certificate_authority {
                let pem = std::fs::read(path).map_err(|e| {
                    CliError::usage(format!("cannot read CA certificate {}: {e}", path.display()))
                })?;
                let certificate = reqwest::Certificate::from_pem(&pem)
                    .map_err(|e| CliError::usage(format!("CA certificate {}: {e}", path.display())))?;
                builder = builder.add_root_certificate(certificate);
            }
            if let Some((certificate, key)) = &resolved.client_identity {
                let read = |path: &PathBuf, what: &str| {
                    std::fs::read(path).map_err(|e| {
                        CliError::usage(format!("cannot read client {what} {}: {e}", path.display()))
                    })
                };
                let mut pem = read(certificate, "certificate")?;
                pem.push(b'\n');
                pem.extend(read(key, "key")?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    CliError::usage(format!(
                        "client certificate {} and key {}: {e}",
                        certificate.display(),
                        key.display()
                    ))
                })?;
                builder = builder.identity(identity);
            }
            let http = builder
                .build()
                .map_err(|e| CliError::new(Exit::Server, format!("cannot build HTTP client: {e}")))?;
            Transport::Tcp(http)
        } else {
            return Err(CliError::usage(format!(
                "server `{server}` is not an http://, https:// or unix:// URL"
            ))
            .hint("e.g. --server http://127.0.0.1:7443 or --server unix:///var/lib/kedge/kedge.sock"));
        };
        Ok(Client { transport, server, token: resolved.token.clone() })
    }

    pub async fn get(&self, path: &str) -> CliResult<Value> {
        Ok(self.send(Method::GET, path, None).await?.body)
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Answer> {
        let mut response = self.request(method, path, body).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.body.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| self.unreachable(e))?);
        }
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { body, outcome: response.outcome })
    }

    /// Opens a newline-delimited JSON stream; `on_line` gets each object until it returns `false`.
    pub async fn stream(
        &self,
        path: &str,
        mut on_line: impl FnMut(WatchEvent) -> CliResult<bool>,
    ) -> CliResult<()> {
        let mut response = self.request(Method::GET, path, None).await?;
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(chunk) = response.body.next().await {
            buffer.extend_from_slice(&chunk.map_err(|e| self.unreachable(e))?);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<WatchEvent>(&line) else { continue };
                if event.kind == "ERROR" {
                    let message = event.error().unwrap_or_else(|| "watch failed".to_owned());
                    return Err(CliError::new(Exit::Server, format!("watch ended: {message}")));
                }
                if !on_line(event)? {
                    return Ok(());
                }
            }
        }
        Err(CliError::new(Exit::Server, "the server closed the watch")
            .hint("run the command again to resume"))
    }

    /// Reads a newline-delimited JSON answer to its end (a finite stream, such as logs without
    /// follow); `on_line` gets each object. An `ERROR` line ends it with that error.
    pub async fn lines(&self, path: &str, on_line: impl FnMut(Value) -> CliResult<()>) -> CliResult<()> {
        self.lines_of(Method::GET, path, None, on_line).await
    }

    /// [`Self::lines`] of the answer to any request (`POST .../exec`).
    pub async fn lines_of(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        mut on_line: impl FnMut(Value) -> CliResult<()>,
    ) -> CliResult<()> {
        let mut response = self.request(method, path, body).await?;
        let mut buffer: Vec<u8> = Vec::new();
        let mut handle = |line: &[u8]| -> CliResult<()> {
            let Ok(value) = serde_json::from_slice::<Value>(line) else { return Ok(()) };
            if let Ok(event) = serde_json::from_value::<WatchEvent>(value.clone()) {
                if event.kind == "ERROR" {
                    let message = event.error().unwrap_or_else(|| "the stream failed".to_owned());
                    return Err(CliError::new(Exit::Server, message));
                }
            }
            on_line(value)
        };
        while let Some(chunk) = response.body.next().await {
            buffer.extend_from_slice(&chunk.map_err(|e| self.unreachable(e))?);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                handle(&line)?;
            }
        }
        if !buffer.is_empty() {
            handle(&buffer)?;
        }
        Ok(())
    }

    /// Any answer, its status and JSON body as they are (`Null` when not JSON): for a caller that
    /// judges error answers itself. Only an unreachable server is an error.
    pub async fn answer(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> CliResult<(StatusCode, Value)> {
        let mut response = self.transport_request(method, path, body).await?;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.body.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| self.unreachable(e))?);
        }
        Ok((response.status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    async fn transport_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> CliResult<Response> {
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON values serialize"));
        self.forward(method, path, body).await
    }

    /// Sends `body` (JSON bytes, when any) as it is and answers the response unjudged, its body a
    /// stream: for `kedge dashboard`'s proxy, which passes answers and streams on to the browser.
    /// Only an unreachable server is an error.
    pub async fn forward(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> CliResult<Response> {
        match &self.transport {
            Transport::Tcp(http) => self.tcp_request(http, method, path, body).await,
            Transport::Unix(socket) => self.unix_request(socket, method, path, body).await,
        }
    }

    async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Response> {
        let mut response = self.transport_request(method, path, body).await?;
        if response.status.is_success() {
            return Ok(response);
        }
        let mut bytes = Vec::new();
        while let Some(Ok(chunk)) = response.body.next().await {
            bytes.extend_from_slice(&chunk);
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Err(http_error(response.status, &body))
    }

    async fn tcp_request(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> CliResult<Response> {
        let mut request = http.request(method, format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(root_cause(&e)))?;
        Ok(Response {
            status: response.status(),
            outcome: outcome_header(response.headers()),
            content_type: content_type(response.headers()),
            body: Box::pin(
                response.bytes_stream().map(|chunk| chunk.map(|b| b.to_vec()).map_err(|e| root_cause(&e))),
            ),
        })
    }

    async fn unix_request(
        &self,
        socket: &std::path::Path,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> CliResult<Response> {
        let stream =
            tokio::net::UnixStream::connect(socket).await.map_err(|e| self.unreachable(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| self.unreachable(root_cause(&e)))?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CliError::usage(format!("bad request: {e}")))?;
        let response = sender.send_request(request).await.map_err(|e| self.unreachable(root_cause(&e)))?;
        let status = response.status();
        let outcome = outcome_header(response.headers());
        let content_type = content_type(response.headers());
        let body = http_body_util::BodyStream::new(response.into_body()).filter_map(|frame| async move {
            match frame {
                Ok(frame) => frame.into_data().ok().map(|data| Ok(data.to_vec())),
                Err(error) => Some(Err(root_cause(&error))),
            }
        });
        Ok(Response { status, outcome, content_type, body: Box::pin(body) })
    }

    fn unreachable(&self, cause: String) -> CliError {
        CliError::new(Exit::Server, format!("cannot reach the kedge API at {}: {cause}", self.server))
            .hint("is an agent running there? Set --server, KEDGE_SERVER or a context (`kedge config`)")
    }
}

fn outcome_header(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get("x-kedge-outcome").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn content_type(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The innermost cause of an error: "Connection refused", not "error sending request".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Turns an error answer into a one-line error with the exit code of its class.
pub fn http_error(status: StatusCode, body: &Value) -> CliError {
    let body: ErrorBody = serde_json::from_value(body.clone()).unwrap_or_default();
    let message = body.error.unwrap_or_else(|| format!("the server answered {status}"));
    match status {
        StatusCode::NOT_FOUND => {
            CliError::new(Exit::NotFound, message).hint("list what exists with `kedge get containers`")
        }
        StatusCode::CONFLICT => {
            let detail = match (body.your_resource_version, body.current_resource_version) {
                (Some(yours), Some(current)) => format!(" (yours: {yours}, current: {current})"),
                _ => String::new(),
            };
            CliError::new(Exit::Conflict, format!("{message}{detail}"))
                .hint("read the current object again (`kedge get container NAME -o yaml`) and retry")
        }
        // The access check names the role it refused (`(role `viewer`) lacks ...`); other 403s (an
        // upgrade's refused repository) carry their own reason.
        StatusCode::FORBIDDEN if message.contains("(role `") => CliError::new(Exit::Server, message).hint(
            "this token's role does not allow it; ask an admin for one that does (`kedge token create`)",
        ),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CliError::new(Exit::Server, message)
            .hint("set KEDGE_TOKEN or a context's token; the agent keeps it in STATE_DIR/api-token"),
        status if status.is_client_error() => CliError {
            fields: body.details.into_iter().map(|detail| (detail.field, detail.message)).collect(),
            ..CliError::new(Exit::Usage, message)
        },
        _ => CliError::new(Exit::Server, message).hint("see the agent's log"),
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
