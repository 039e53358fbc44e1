//! The web dashboard's files (`GET /ui/`, docs/dashboard.md): one HTML page, its script and its
//! style sheet, compiled into the binary (no build step, no CDN).
//!
//! The files hold no data, so they are served without a token; every figure the page shows comes
//! from the JSON API with the caller's own credentials (a token the page asks for and keeps in the
//! tab's session storage, or none through `kedge dashboard`, whose proxy adds the CLI's). The same
//! files and headers are served by that proxy ([`asset`], [`SECURITY_HEADERS`]).

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// A file of the dashboard.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

/// The headers every dashboard file is served with: scripts only from this origin (so no inline
/// script, and nothing a value could smuggle in runs), no framing (clickjacking), no content-type
/// guessing, no referrer leaving the page.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
];

/// The file at `path` under `/ui/` (`""` is the page), if the dashboard has one.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body): (&str, &[u8]) = match path {
        "" | "index.html" => ("text/html; charset=utf-8", include_bytes!("ui/index.html")),
        "app.js" => ("text/javascript; charset=utf-8", include_bytes!("ui/app.js")),
        "style.css" => ("text/css; charset=utf-8", include_bytes!("ui/style.css")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

/// The answer for `/ui/{path}`: the file with [`SECURITY_HEADERS`], or 404.
pub fn response(path: &str) -> Response {
    let Some(asset) = asset(path) else {
        return (StatusCode::NOT_FOUND, "no such dashboard file").into_response();
    };
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    for (name, value) in SECURITY_HEADERS {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    response
}

/// `/ui` (redirected to `/ui/`), `/ui/` and `/ui/{file}`, outside the access check.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| async { response("") }))
        .route("/ui/{file}", get(|Path(file): Path<String>| async move { response(&file) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files_and_has_no_inline_script() {
        let page = std::str::from_utf8(asset("").unwrap().body).unwrap();
        assert!(page.contains(r#"<script src="/ui/app.js" defer></script>"#), "{page}");
        // The only script tag is the one with a src: an inline one would be refused by the policy.
        assert_eq!(page.matches("<script").count(), 1, "{page}");
        assert!(!page.contains("http://") && !page.contains("https://"), "no CDN: {page}");
        assert!(!page.contains(" style="), "no inline style: {page}");
    }

    #[test]
    fn the_script_never_puts_values_in_as_html() {
        let script = std::str::from_utf8(asset("app.js").unwrap().body).unwrap();
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!script.contains(sink), "app.js uses {sink}");
        }
        // Tokens stay in the tab's session.
        assert!(!script.contains("localStorage"));
    }

    #[test]
    fn unknown_files_are_404_and_known_ones_carry_the_security_headers() {
        assert_eq!(response("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(response("secret").status(), StatusCode::NOT_FOUND);
        let page = response("app.js");
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()["content-type"], "text/javascript; charset=utf-8");
        assert_eq!(page.headers()["x-frame-options"], "DENY");
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'"));
    }
}
