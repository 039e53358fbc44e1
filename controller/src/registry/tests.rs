use std::time::Duration;

use super::challenge::Challenge;
use super::next_link;
use super::ratelimit::{pause, RateLimit};

#[test]
fn bearer_challenge_with_quoted_values() {
    let challenge = Challenge::parse(
        r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
    );
    assert_eq!(
        challenge,
        Some(Challenge::Bearer {
            realm: "https://auth.docker.io/token".into(),
            service: Some("registry.docker.io".into()),
            scope: Some("repository:library/nginx:pull,push".into()),
        })
    );
}

#[test]
fn bearer_challenge_unquoted_and_spaced() {
    let challenge = Challenge::parse("bearer realm=http://127.0.0.1:5001/auth , service=local");
    assert_eq!(
        challenge,
        Some(Challenge::Bearer {
            realm: "http://127.0.0.1:5001/auth".into(),
            service: Some("local".into()),
            scope: None
        })
    );
}

#[test]
fn basic_and_unknown_challenges() {
    assert_eq!(Challenge::parse(r#"Basic realm="kedge-test""#), Some(Challenge::Basic));
    assert_eq!(Challenge::parse("Negotiate abc"), None);
    assert_eq!(Challenge::parse(r#"Bearer service="x""#), None, "a bearer without realm is unusable");
}

fn limit(remaining: u64, limit: u64) -> Option<RateLimit> {
    RateLimit::from_headers(Some(&format!("{remaining};w=21600")), Some(&format!("{limit};w=21600")))
}

#[test]
fn rate_limit_headers_read() {
    assert_eq!(
        limit(76, 100),
        Some(RateLimit { limit: 100, remaining: 76, window: Duration::from_secs(21600) })
    );
    assert_eq!(
        RateLimit::from_headers(Some("5"), Some("100")),
        Some(RateLimit { limit: 100, remaining: 5, window: Duration::from_secs(21600) })
    );
    assert_eq!(RateLimit::from_headers(Some("many"), Some("100")), None);
    assert_eq!(RateLimit::from_headers(None, Some("100")), None);
}

#[test]
fn rate_limit_backs_off_only_near_the_end() {
    assert_eq!(pause(false, None, limit(76, 100)), None);
    assert_eq!(pause(false, None, limit(11, 100)), None);
    // A tenth left: what remains is spread over the window.
    assert_eq!(pause(false, None, limit(10, 100)), Some(Duration::from_secs(2160)));
    assert_eq!(pause(false, None, limit(1, 100)), Some(Duration::from_secs(21600)));
    assert_eq!(pause(false, None, limit(0, 100)), Some(Duration::from_secs(21600)));
    assert_eq!(pause(false, None, None), None);
}

#[test]
fn too_many_requests_waits_for_retry_after() {
    assert_eq!(pause(true, Some(30), limit(50, 100)), Some(Duration::from_secs(30)));
    assert_eq!(pause(true, None, None), Some(Duration::from_secs(60)));
}

#[test]
fn link_header_pagination() {
    assert_eq!(
        next_link(r#"</v2/app/tags/list?last=b&n=2>; rel="next""#).as_deref(),
        Some("/v2/app/tags/list?last=b&n=2")
    );
    assert_eq!(
        next_link(r#"<https://r.example/v2/app/tags/list?last=b>; rel="next""#).as_deref(),
        Some("/v2/app/tags/list?last=b")
    );
    assert_eq!(next_link(r#"</v2/app/tags/list?last=b>; rel="prev""#), None);
}
