//! The API client: requests, and HTTP answers turned into `CliError`s with exit codes and hints.

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::config::Resolved;
use crate::error::{CliError, CliResult, Exit};

pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

/// A successful answer: its body and the `X-Kedge-Outcome` header of writes.
pub struct Answer {
    pub body: Value,
    pub outcome: Option<String>,
}

impl Client {
    pub fn new(resolved: &Resolved) -> CliResult<Client> {
        let server = resolved.server.trim_end_matches('/').to_owned();
        if !(server.starts_with("http://") || server.starts_with("https://")) {
            return Err(CliError::usage(format!("server `{server}` is not an http:// or https:// URL"))
                .hint("e.g. --server http://127.0.0.1:7443"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| CliError::new(Exit::Server, format!("cannot build HTTP client: {e}")))?;
        Ok(Client { http, server, token: resolved.token.clone() })
    }

    pub async fn get(&self, path: &str) -> CliResult<Value> {
        Ok(self.send(Method::GET, path, None).await?.body)
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Answer> {
        let response = self.request(method, path, body).await?;
        let outcome =
            response.headers().get("x-kedge-outcome").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { body, outcome })
    }

    /// Opens a newline-delimited JSON stream; `on_line` gets each object until it returns `false`.
    pub async fn stream(
        &self,
        path: &str,
        mut on_line: impl FnMut(Value) -> CliResult<bool>,
    ) -> CliResult<()> {
        let response = self.request(Method::GET, path, None).await?;
        let mut chunks = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(chunk) = chunks.next().await {
            buffer.extend_from_slice(&chunk.map_err(|e| self.unreachable(e))?);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let Ok(value) = serde_json::from_slice::<Value>(&line) else { continue };
                if value["type"] == "ERROR" {
                    let message = value["object"]["error"].as_str().unwrap_or("watch failed").to_owned();
                    return Err(CliError::new(Exit::Server, format!("watch ended: {message}")));
                }
                if !on_line(value)? {
                    return Ok(());
                }
            }
        }
        Err(CliError::new(Exit::Server, "the server closed the watch")
            .hint("run the command again to resume"))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> CliResult<reqwest::Response> {
        let mut request = self.http.request(method, format!("{}{path}", self.server));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(http_error(status, &body))
    }

    fn unreachable(&self, error: reqwest::Error) -> CliError {
        let mut cause: &dyn std::error::Error = &error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        CliError::new(Exit::Server, format!("cannot reach the kedge API at {}: {cause}", self.server))
            .hint("is an agent running there? Set --server, KEDGE_SERVER or a context (`kedge config`)")
    }
}

/// Turns an error answer into a one-line error with the exit code of its class.
pub fn http_error(status: StatusCode, body: &Value) -> CliError {
    let message =
        body["error"].as_str().map(str::to_owned).unwrap_or_else(|| format!("the server answered {status}"));
    match status {
        StatusCode::NOT_FOUND => {
            CliError::new(Exit::NotFound, message).hint("list what exists with `kedge get containers`")
        }
        StatusCode::CONFLICT => {
            let detail = match (body["yourResourceVersion"].as_str(), body["currentResourceVersion"].as_str())
            {
                (Some(yours), Some(current)) => format!(" (yours: {yours}, current: {current})"),
                _ => String::new(),
            };
            CliError::new(Exit::Conflict, format!("{message}{detail}"))
                .hint("read the current object again (`kedge get container NAME -o yaml`) and retry")
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CliError::new(Exit::Server, message)
            .hint("set KEDGE_TOKEN or a context's token; the agent keeps it in STATE_DIR/api-token"),
        status if status.is_client_error() => CliError::new(Exit::Usage, message),
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
