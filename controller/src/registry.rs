//! Registry checks without pulling: the digest a tag names now (a `HEAD` on the manifest) and a
//! repository's tags, straight against the registry's HTTP API (OCI distribution), with the
//! anonymous bearer-token dance, credentials from a Docker `config.json` (docker/auth.rs), the
//! registry's rate-limit headers respected, and one shared answer per image reference.
//!
//! Guarantees: a digest check sends `HEAD /v2/<name>/manifests/<tag>` and a `GET` only when the
//! `HEAD` fails (a registry that answers it without a digest or with an error); nothing is pulled.
//! Every container of an image reference shares one answer while it is younger than the asking
//! spec's interval, so N containers of one image cost one request per interval. A registry whose
//! rate limit is near its end (`ratelimit-remaining`) is not asked again until the spacing that
//! keeps the rest for the rest of its window has passed; a 429 waits for `Retry-After`.

pub mod challenge;
pub mod ratelimit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kedge_crds::ImageReference;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use sha2::Digest as _;

use crate::docker::RegistryAuth;
use challenge::Challenge;

/// Every manifest kind a tag can name: an OCI index, an OCI manifest, a Docker manifest list, a
/// Docker v2 manifest. Without these a registry answers with the digest of a converted manifest.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// What went wrong asking a registry, as the caller decides on it: keep the container either way,
/// and say why.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry {registry} is not reachable: {message}")]
    Unreachable { registry: String, message: String },
    #[error("registry {registry} refused the credentials for {repository} ({status})")]
    Unauthorized { registry: String, repository: String, status: u16 },
    #[error("registry {registry} has no {what}")]
    NotFound { registry: String, what: String },
    #[error("registry {registry} is rate limited: not asked again for {}s", retry_in.as_secs())]
    RateLimited { registry: String, retry_in: Duration },
    #[error("registry {registry}: {message}")]
    Unexpected { registry: String, message: String },
}

/// A registry client shared by every check of an agent (or a `kedge check` run).
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    auth: Option<Arc<RegistryAuth>>,
    /// Bearer tokens by `registry/repository`, with when they stop being good.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    /// Per registry: not asked before this instant (rate limit, or unreachable a moment ago: the
    /// other containers of a registry that is down fail at once instead of each waiting for its
    /// own connect timeout).
    not_before: Mutex<HashMap<String, (Instant, Pause)>>,
    /// Answers by key (`digest REF`, `tags REPO`): one in flight at a time, then shared.
    answers: Mutex<HashMap<String, AnswerSlot>>,
}

/// One key's answer and when it was fetched; its lock is held while it is being fetched.
type AnswerSlot = Arc<tokio::sync::Mutex<Option<(Instant, Answer)>>>;

/// Why a registry is left alone for a while.
#[derive(Clone, Copy, Debug)]
enum Pause {
    RateLimit,
    Unreachable,
}

/// How long a registry that could not be reached is not asked again.
const UNREACHABLE_PAUSE: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Answer {
    Digest(String),
    Tags(Vec<String>),
}

impl RegistryClient {
    /// A client with the credentials of `auth` (a Docker `config.json`), if any.
    pub fn new(auth: Option<Arc<RegistryAuth>>) -> RegistryClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("kedge/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        RegistryClient {
            inner: Arc::new(Inner {
                http,
                auth,
                tokens: Mutex::default(),
                not_before: Mutex::default(),
                answers: Mutex::default(),
            }),
        }
    }

    /// The digest `reference`'s tag names in its registry now, from a `HEAD` on the manifest. An
    /// answer younger than `max_age` (another container's check of the same reference) is reused.
    pub async fn digest(
        &self,
        reference: &ImageReference,
        max_age: Duration,
    ) -> Result<String, RegistryError> {
        let key = format!("digest {}", reference.normalized());
        let answer = self
            .shared(&key, max_age, || async {
                let tag = reference.tag_or_default().to_owned();
                self.fetch_digest(reference, &tag).await.map(Answer::Digest)
            })
            .await?;
        match answer {
            Answer::Digest(digest) => Ok(digest),
            Answer::Tags(_) => unreachable_answer(reference),
        }
    }

    /// Every tag of `reference`'s repository (`/v2/<name>/tags/list`, all pages), shared like
    /// [`RegistryClient::digest`].
    pub async fn tags(
        &self,
        reference: &ImageReference,
        max_age: Duration,
    ) -> Result<Vec<String>, RegistryError> {
        let key = format!("tags {}/{}", registry_host(reference), repository_path(reference));
        let answer = self.shared(&key, max_age, || self.fetch_tags(reference)).await?;
        match answer {
            Answer::Tags(tags) => Ok(tags),
            Answer::Digest(_) => unreachable_answer(reference),
        }
    }

    async fn shared<F, Fut>(&self, key: &str, max_age: Duration, fetch: F) -> Result<Answer, RegistryError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Answer, RegistryError>>,
    {
        let slot = {
            let mut answers = self.inner.answers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            answers.entry(key.to_owned()).or_default().clone()
        };
        // One check of a reference at a time: the second caller waits and takes the first's answer.
        let mut slot = slot.lock().await;
        if let Some((at, answer)) = slot.as_ref() {
            if at.elapsed() < max_age {
                return Ok(answer.clone());
            }
        }
        let answer = fetch().await?;
        *slot = Some((Instant::now(), answer.clone()));
        Ok(answer)
    }

    async fn fetch_digest(&self, reference: &ImageReference, tag: &str) -> Result<String, RegistryError> {
        let path = format!("/v2/{}/manifests/{tag}", repository_path(reference));
        let head = self.send(reference, Method::HEAD, &path).await;
        match head {
            Ok(response) if response.status().is_success() => {
                if let Some(digest) = header(response.headers(), "docker-content-digest") {
                    return Ok(digest);
                }
                tracing::debug!(%path, "the registry answered HEAD without a digest: asking with GET");
            }
            Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                return Err(RegistryError::NotFound {
                    registry: registry_host(reference),
                    what: format!("{}:{tag}", repository_path(reference)),
                });
            }
            Err(error @ (RegistryError::RateLimited { .. } | RegistryError::Unauthorized { .. })) => {
                return Err(error);
            }
            Ok(response) => {
                tracing::debug!(%path, status = %response.status(), "HEAD failed: asking with GET")
            }
            Err(error) => tracing::debug!(%path, %error, "HEAD failed: asking with GET"),
        }
        let response = self.send(reference, Method::GET, &path).await?;
        let response =
            self.expect_success(reference, response, &format!("{}:{tag}", repository_path(reference)))?;
        let from_header = header(response.headers(), "docker-content-digest");
        let body = response.bytes().await.map_err(|error| unreachable(reference, &error))?;
        Ok(from_header.unwrap_or_else(|| format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)))))
    }

    async fn fetch_tags(&self, reference: &ImageReference) -> Result<Answer, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut tags = Vec::new();
        let mut path = format!("/v2/{}/tags/list?n=1000", repository_path(reference));
        // A bound on pages, so a registry whose Link loops cannot keep the check forever.
        for _ in 0..100 {
            let response = self.send(reference, Method::GET, &path).await?;
            let response = self.expect_success(reference, response, &repository_path(reference))?;
            let next = header(response.headers(), "link").and_then(|link| next_link(&link));
            let page: TagList = response.json().await.map_err(|error| RegistryError::Unexpected {
                registry: registry_host(reference),
                message: format!("tags list of {} is not JSON: {error}", repository_path(reference)),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) => path = next,
                None => break,
            }
        }
        Ok(Answer::Tags(tags))
    }

    fn expect_success(
        &self,
        reference: &ImageReference,
        response: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let registry = registry_host(reference);
        Err(match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound { registry, what: what.to_owned() },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
                registry,
                repository: repository_path(reference),
                status: status.as_u16(),
            },
            _ => RegistryError::Unexpected { registry, message: format!("{what}: HTTP {status}") },
        })
    }

    /// Sends one request with the credentials this registry wants, answering a 401 challenge
    /// once (bearer token or basic), and notes the rate-limit headers.
    async fn send(
        &self,
        reference: &ImageReference,
        method: Method,
        path: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let registry = registry_host(reference);
        self.check_rate_limit(&registry)?;
        let url = format!("{}{path}", base_url(&registry));
        let token_key = format!("{registry}/{}", repository_path(reference));
        let token = self.cached_token(&token_key);
        let response =
            self.request(&registry, &method, &url, token.as_deref().map(Authorization::Bearer)).await?;
        self.note_limits(&registry, response.status(), response.headers());
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = header(response.headers(), WWW_AUTHENTICATE.as_str())
            .and_then(|text| Challenge::parse(&text))
            .ok_or_else(|| RegistryError::Unauthorized {
                registry: registry.clone(),
                repository: repository_path(reference),
                status: 401,
            })?;
        let credentials = self.inner.auth.as_ref().and_then(|auth| auth.for_image(&reference.name()));
        let basic = credentials.and_then(|credentials| credentials.basic());
        let authorization = match &challenge {
            Challenge::Basic => match basic {
                Some((user, password)) => Authorization::Basic(user, password),
                None => {
                    return Err(RegistryError::Unauthorized {
                        registry,
                        repository: repository_path(reference),
                        status: 401,
                    })
                }
            },
            Challenge::Bearer { .. } => {
                let scope = format!("repository:{}:pull", repository_path(reference));
                let token = self.fetch_token(&registry, &challenge, &scope, basic).await?;
                let (token, lifetime) = token;
                self.inner
                    .tokens
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(token_key, (token, Instant::now() + lifetime));
                let token = self.cached_token(&format!("{registry}/{}", repository_path(reference)));
                let response = self
                    .request(&registry, &method, &url, token.as_deref().map(Authorization::Bearer))
                    .await?;
                self.note_limits(&registry, response.status(), response.headers());
                return Ok(response);
            }
        };
        let response = self.request(&registry, &method, &url, Some(authorization)).await?;
        self.note_limits(&registry, response.status(), response.headers());
        Ok(response)
    }

    async fn request(
        &self,
        registry: &str,
        method: &Method,
        url: &str,
        authorization: Option<Authorization<'_>>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut request = self.inner.http.request(method.clone(), url).header(ACCEPT, MANIFEST_ACCEPT);
        request = match authorization {
            Some(Authorization::Bearer(token)) => request.header(AUTHORIZATION, format!("Bearer {token}")),
            Some(Authorization::Basic(user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        };
        request.send().await.map_err(|error| {
            if error.is_connect() || error.is_timeout() {
                self.pause(registry, UNREACHABLE_PAUSE, Pause::Unreachable);
            }
            RegistryError::Unreachable { registry: registry.to_owned(), message: without_url(&error) }
        })
    }

    fn pause(&self, registry: &str, pause: Duration, why: Pause) {
        self.inner
            .not_before
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(registry.to_owned(), (Instant::now() + pause, why));
    }

    /// A token from the challenge's realm (anonymous unless the config has credentials).
    async fn fetch_token(
        &self,
        registry: &str,
        challenge: &Challenge,
        scope: &str,
        basic: Option<(&str, &str)>,
    ) -> Result<(String, Duration), RegistryError> {
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let Challenge::Bearer { realm, service, .. } = challenge else {
            return Err(RegistryError::Unexpected {
                registry: registry.to_owned(),
                message: "no bearer realm".into(),
            });
        };
        let mut query = vec![("scope", scope.to_owned())];
        if let Some(service) = service {
            query.push(("service", service.clone()));
        }
        let mut request = self.inner.http.get(realm).query(&query);
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|error| RegistryError::Unreachable {
            registry: registry.to_owned(),
            message: without_url(&error),
        })?;
        if !response.status().is_success() {
            return Err(RegistryError::Unauthorized {
                registry: registry.to_owned(),
                repository: scope.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let answer: TokenAnswer = response.json().await.map_err(|error| RegistryError::Unexpected {
            registry: registry.to_owned(),
            message: format!("the token service's answer is not JSON: {error}"),
        })?;
        let token = answer.token.or(answer.access_token).ok_or_else(|| RegistryError::Unexpected {
            registry: registry.to_owned(),
            message: "the token service answered without a token".into(),
        })?;
        // The spec's default lifetime is 60 s; keep a margin.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).saturating_sub(10).max(10));
        Ok((token, lifetime))
    }

    fn cached_token(&self, key: &str) -> Option<String> {
        let tokens = self.inner.tokens.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tokens.get(key).filter(|(_, until)| Instant::now() < *until).map(|(token, _)| token.clone())
    }

    fn check_rate_limit(&self, registry: &str) -> Result<(), RegistryError> {
        let not_before = self.inner.not_before.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match not_before.get(registry) {
            Some((until, Pause::RateLimit)) if Instant::now() < *until => Err(RegistryError::RateLimited {
                registry: registry.to_owned(),
                retry_in: until.saturating_duration_since(Instant::now()),
            }),
            Some((until, Pause::Unreachable)) if Instant::now() < *until => Err(RegistryError::Unreachable {
                registry: registry.to_owned(),
                message: format!(
                    "not reachable a moment ago; asked again in {}s",
                    until.saturating_duration_since(Instant::now()).as_secs()
                ),
            }),
            _ => Ok(()),
        }
    }

    fn note_limits(&self, registry: &str, status: StatusCode, headers: &HeaderMap) {
        let limits = ratelimit::RateLimit::from_headers(
            header(headers, "ratelimit-remaining").as_deref(),
            header(headers, "ratelimit-limit").as_deref(),
        );
        let retry_after = header(headers, "retry-after").and_then(|text| text.trim().parse::<u64>().ok());
        let pause = ratelimit::pause(status == StatusCode::TOO_MANY_REQUESTS, retry_after, limits);
        if let Some(pause) = pause {
            tracing::warn!(
                registry,
                pause_seconds = pause.as_secs(),
                "registry rate limit near: pausing checks"
            );
            self.pause(registry, pause, Pause::RateLimit);
        }
    }
}

enum Authorization<'a> {
    Bearer(&'a str),
    Basic(&'a str, &'a str),
}

fn unreachable_answer<T>(reference: &ImageReference) -> Result<T, RegistryError> {
    Err(RegistryError::Unexpected {
        registry: registry_host(reference),
        message: "mixed cached answers".into(),
    })
}

fn unreachable(reference: &ImageReference, error: &reqwest::Error) -> RegistryError {
    RegistryError::Unreachable { registry: registry_host(reference), message: without_url(error) }
}

/// reqwest's message without the URL (which could carry a query with a token).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "(url)");
    }
    text
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
}

/// The registry host: `docker.io` for Docker Hub.
pub fn registry_host(reference: &ImageReference) -> String {
    reference.registry_or_default().to_owned()
}

/// The repository as the registry API names it: `library/nginx` for Docker Hub's official images.
pub fn repository_path(reference: &ImageReference) -> String {
    if reference.registry.is_none() && !reference.repository.contains('/') {
        format!("library/{}", reference.repository)
    } else {
        reference.repository.clone()
    }
}

/// `http://` for loopback registries (as the engine trusts 127.0.0.0/8 without TLS), `https://`
/// for every other; Docker Hub's API lives at `registry-1.docker.io`.
fn base_url(registry: &str) -> String {
    if registry == "docker.io" {
        return "https://registry-1.docker.io".to_owned();
    }
    let host = registry.rsplit_once(':').map_or(registry, |(host, _)| host);
    let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
    format!("{}://{registry}", if loopback { "http" } else { "https" })
}

/// The next page of a paginated list from an RFC 5988 `Link` header: `</v2/x/tags/list?last=a&n=2>; rel="next"`.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params.split(';').any(|param| {
            let param = param.trim().replace(' ', "");
            param == "rel=\"next\"" || param == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        // An absolute URL keeps only its path and query: the host is the registry's.
        let target = match target.split_once("://") {
            Some((_, rest)) => rest.find('/').map_or("/", |slash| &rest[slash..]),
            None => target,
        };
        is_next.then(|| target.to_owned())
    })
}

#[cfg(test)]
mod tests;
