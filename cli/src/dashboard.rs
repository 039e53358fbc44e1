//! `kedge dashboard`: the agent's web dashboard on a local port, through a proxy that adds the
//! CLI's credentials (as `kubectl proxy` does), so that the browser never holds a token
//! (docs/dashboard.md).
//!
//! The proxy serves the dashboard's files itself (the ones compiled into this binary) and forwards
//! `/api/...` and `/version`, streams included, to the configured server. Anything that can reach a
//! loopback port could use the CLI's credentials through it, so it binds only loopback addresses
//! and refuses, before forwarding anything:
//! - a request whose `Host` is not the address it listens on (`127.0.0.1:P`, or `localhost:P` for
//!   a loopback address): a page of another site whose name an attacker points at 127.0.0.1 (DNS
//!   rebinding) sends its own name;
//! - a state-changing request (anything but `GET`, `HEAD`, `OPTIONS`) whose `Origin` is not this
//!   proxy's own: another site's page can send a form to 127.0.0.1 (CSRF), and browsers name the
//!   sending page's origin on every such request.

use std::net::{IpAddr, SocketAddr};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use serde_json::json;

use crate::base::connect;
use crate::client::Client;
use crate::error::{CliError, CliResult, Exit};
use crate::GlobalArgs;

/// The largest request body forwarded: the API's own limit on one object.
const MAX_BODY_BYTES: usize = kedge_controller::api::MAX_BODY_BYTES;

/// `kedge dashboard`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct DashboardArgs {
    /// The local port; 0 picks a free one (printed).
    #[arg(long, default_value_t = 8001)]
    pub port: u16,
    /// The local address to listen on; only loopback addresses are allowed (the proxy carries your
    /// credentials).
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Do not open a browser; only print the address.
    #[arg(long)]
    pub no_browser: bool,
}

pub async fn run(args: DashboardArgs, global: &GlobalArgs) -> CliResult<Exit> {
    if !args.address.is_loopback() {
        return Err(CliError::usage(format!(
            "--address {} is not a loopback address: the dashboard's proxy adds your credentials to every \
             request, so it listens only on this machine",
            args.address
        ))
        .hint("use 127.0.0.1 or ::1, and an SSH tunnel to reach it from elsewhere"));
    }
    let (resolved, client) = connect(global)?;
    // Fail now, with the CLI's own hints, rather than in the browser.
    let identity = client.get("/api/v1/whoami").await?;
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::new(args.address, args.port)).await.map_err(|e| {
            CliError::usage(format!("cannot listen on {}:{}: {e}", args.address, args.port))
                .hint("choose another --port, or --port 0 for a free one")
        })?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::new(Exit::Server, format!("cannot read the bound address: {e}")))?;
    let url = format!("http://{}/ui/", host_of(bound));
    println!("Dashboard at {url}");
    println!(
        "Proxying to {} as role `{}`; stop with Ctrl-C.",
        resolved.server,
        identity.get("role").and_then(|r| r.as_str()).unwrap_or("unknown")
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    if !args.no_browser {
        open_browser(&url);
    }
    let proxy = Proxy { client: std::sync::Arc::new(client), allowed: Allowed::new(bound) };
    axum::serve(listener, app(proxy))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| CliError::new(Exit::Server, format!("the dashboard's proxy failed: {e}")))?;
    Ok(Exit::Ok)
}

/// `ADDRESS:PORT` as a URL's host writes it (`[::1]:8001`).
fn host_of(address: SocketAddr) -> String {
    match address.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", address.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", address.port()),
    }
}

/// Opens `url` with `xdg-open` (or `open` on macOS); failing to is a hint, not an error.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let opened = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Err(error) = opened {
        eprintln!("hint: could not start {opener} ({error}); open {url} in a browser");
    }
}

#[derive(Clone)]
struct Proxy {
    client: std::sync::Arc<Client>,
    allowed: Allowed,
}

/// The `Host` values and origins the proxy answers: its own address, and `localhost` on its port.
#[derive(Debug, Clone)]
pub struct Allowed {
    hosts: Vec<String>,
}

impl Allowed {
    pub fn new(bound: SocketAddr) -> Allowed {
        let mut hosts = vec![host_of(bound)];
        if bound.ip().is_loopback() {
            hosts.push(format!("localhost:{}", bound.port()));
        }
        Allowed { hosts }
    }

    /// Whether a request with these `Host` and `Origin` headers may go through; `Err` says why not.
    pub fn check(&self, method: &Method, host: Option<&str>, origin: Option<&str>) -> Result<(), String> {
        let host = host.unwrap_or_default();
        if !self.hosts.iter().any(|own| own.eq_ignore_ascii_case(host)) {
            return Err(format!(
                "Host `{host}` is not this proxy's address ({}): refused (DNS rebinding guard)",
                self.hosts.join(" or ")
            ));
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let own =
            |origin: &str| self.hosts.iter().any(|own| origin.eq_ignore_ascii_case(&format!("http://{own}")));
        match origin {
            Some(origin) if own(origin) => Ok(()),
            Some(origin) => Err(format!("{method} from origin `{origin}` refused: only this dashboard's own page may change things (CSRF guard)")),
            None => Err(format!("{method} without an Origin header refused: only this dashboard's own page may change things through the proxy (CSRF guard); scripts use the kedge CLI")),
        }
    }
}

fn app(proxy: Proxy) -> Router {
    Router::new().fallback(handle).with_state(proxy)
}

async fn handle(State(proxy): State<Proxy>, request: Request) -> Response {
    // Read before any await: a `&Request` is not `Send`.
    let (host, origin) = {
        let header_text = |name: header::HeaderName| -> Option<String> {
            request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
        };
        (header_text(header::HOST), header_text(header::ORIGIN))
    };
    if let Err(message) = proxy.allowed.check(request.method(), host.as_deref(), origin.as_deref()) {
        return refuse(StatusCode::FORBIDDEN, &message);
    }
    let path = request.uri().path().to_owned();
    if path == "/" || path == "/ui" {
        return axum::response::Redirect::temporary("/ui/").into_response();
    }
    if let Some(file) = path.strip_prefix("/ui/") {
        return kedge_controller::api::ui::response(file);
    }
    if !(path.starts_with("/api/") || path == "/version") {
        return refuse(StatusCode::NOT_FOUND, "the dashboard's proxy forwards only /api/ and /version");
    }
    let path_and_query = request.uri().path_and_query().map_or(path.clone(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let body = match axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, "the request body is larger than one object may be")
        }
    };
    let body = (!body.is_empty()).then(|| body.to_vec());
    let answer = match proxy.client.forward(method, &path_and_query, body).await {
        Ok(answer) => answer,
        Err(error) => return refuse(StatusCode::BAD_GATEWAY, &error.message),
    };
    let stream = answer.body.map(|chunk| chunk.map(Bytes::from).map_err(std::io::Error::other));
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    if let Some(value) = answer.content_type.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Some(value) = answer.outcome.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert("x-kedge-outcome", value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bound: &str, method: Method, host: Option<&str>, origin: Option<&str>) -> Result<(), String> {
        Allowed::new(bound.parse().unwrap()).check(&method, host, origin)
    }

    #[test]
    fn reads_need_the_proxys_own_host() {
        assert_eq!(check("127.0.0.1:8001", Method::GET, Some("127.0.0.1:8001"), None), Ok(()));
        assert_eq!(check("127.0.0.1:8001", Method::GET, Some("localhost:8001"), None), Ok(()));
        assert_eq!(check("127.0.0.1:8001", Method::GET, Some("LOCALHOST:8001"), None), Ok(()));
        assert_eq!(check("[::1]:9000", Method::GET, Some("[::1]:9000"), None), Ok(()));
        // DNS rebinding: another name resolving to 127.0.0.1, or another port, or none.
        for host in [Some("evil.example:8001"), Some("127.0.0.1:8002"), Some("127.0.0.1"), None] {
            let refused = check("127.0.0.1:8001", Method::GET, host, None).unwrap_err();
            assert!(refused.contains("DNS rebinding"), "{refused}");
        }
    }

    #[test]
    fn writes_need_the_proxys_own_origin() {
        let own = Some("127.0.0.1:8001");
        assert_eq!(check("127.0.0.1:8001", Method::POST, own, Some("http://127.0.0.1:8001")), Ok(()));
        assert_eq!(check("127.0.0.1:8001", Method::DELETE, own, Some("http://localhost:8001")), Ok(()));
        for origin in [Some("http://evil.example"), Some("https://127.0.0.1:8001"), Some("null"), None] {
            for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
                let refused = check("127.0.0.1:8001", method, own, origin).unwrap_err();
                assert!(refused.contains("CSRF"), "{refused}");
            }
        }
        // Reads do not need an origin (a top-level navigation sends none).
        assert_eq!(check("127.0.0.1:8001", Method::GET, own, Some("http://evil.example")), Ok(()));
    }
}
