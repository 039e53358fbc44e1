//! Image references (`registry:5000/team/app:v1@sha256:...`), parsed with the grammar of Docker's
//! distribution/reference package.
//!
//! The reference keeps what the user wrote: `nginx` stays `nginx` and is not expanded to
//! `docker.io/library/nginx:latest`; the helpers give the defaults Docker would apply.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A parsed image reference: `[registry/]repository[:tag][@digest]`.
///
/// `Default` is the empty (invalid) reference, there only so that specs can be built with struct-update syntax.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct ImageReference {
    /// The registry host and optional port (`127.0.0.1:5000`, `ghcr.io`), when the reference names one.
    pub registry: Option<String>,
    /// The path inside the registry (`library/nginx`, `kedge-test/web`), as written.
    pub repository: String,
    /// The tag (`v1`), when written.
    pub tag: Option<String>,
    /// The content digest (`sha256:<64 hex>`), when written.
    pub digest: Option<String>,
}

/// The registry Docker uses when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag Docker uses when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

impl ImageReference {
    /// The registry, or `docker.io`.
    pub fn registry_or_default(&self) -> &str {
        self.registry.as_deref().unwrap_or(DEFAULT_REGISTRY)
    }

    /// The tag, or `latest` (also when only a digest is given: Docker ignores the tag then anyway).
    pub fn tag_or_default(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }

    /// The reference with Docker's defaults filled in: `docker.io/library/nginx:latest`.
    pub fn normalized(&self) -> String {
        let registry = self.registry_or_default();
        let repository = if self.registry.is_none() && !self.repository.contains('/') {
            format!("library/{}", self.repository)
        } else {
            self.repository.clone()
        };
        let mut text = format!("{registry}/{repository}");
        if self.tag.is_some() || self.digest.is_none() {
            text.push(':');
            text.push_str(self.tag_or_default());
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(digest);
        }
        text
    }

    /// `[registry/]repository`, without tag or digest: the name Docker lists images under.
    pub fn name(&self) -> String {
        match &self.registry {
            Some(registry) => format!("{registry}/{}", self.repository),
            None => self.repository.clone(),
        }
    }
}

impl FromStr for ImageReference {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let shown = match text.char_indices().nth(100) {
            Some((cut, _)) => format!("{}...", &text[..cut]),
            None => text.to_owned(),
        };
        let fail = |why: &str| Err(format!("invalid image reference `{shown}`: {why}"));
        if text.is_empty() {
            return fail("it is empty");
        }
        let (name_and_tag, digest) = match text.split_once('@') {
            Some((before, digest)) => (before, Some(digest)),
            None => (text, None),
        };
        if let Some(digest) = digest {
            if let Err(why) = check_digest(digest) {
                return fail(&why);
            }
        }
        let last_slash = name_and_tag.rfind('/').map_or(0, |index| index + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                (&name_and_tag[..colon], Some(&name_and_tag[colon + 1..]))
            }
            None => (name_and_tag, None),
        };
        if let Some(tag) = tag {
            if !is_valid_tag(tag) {
                return fail(&format!(
                    "tag `{tag}` must be 1 to 128 letters, digits, `_`, `.` or `-`, and not start with `.` or `-`"
                ));
            }
        }
        if name.len() > 255 {
            return fail("the name is longer than 255 characters");
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), rest),
            _ => (None, name),
        };
        if let Some(registry) = registry {
            if !is_valid_registry(registry) {
                return fail(&format!("registry `{registry}` is not a valid host[:port]"));
            }
        }
        if repository.is_empty() {
            return fail("the repository name is empty");
        }
        for component in repository.split('/') {
            if !is_valid_path_component(component) {
                return fail(&format!(
                    "repository component `{component}` must be lowercase letters and digits separated by `.`, `_`, `__` or `-`"
                ));
            }
        }
        Ok(ImageReference {
            registry: registry.map(str::to_owned),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
            digest: digest.map(str::to_owned),
        })
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl Serialize for ImageReference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageReference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for ImageReference {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("ImageReference")
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An image reference: `[registry/]repository[:tag][@digest]`, as `docker pull` takes it.",
            "type": "string",
            "minLength": 1
        })
    }
}

fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok && tag.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `host[:port]`, where host is DNS labels separated by dots, an IPv4 address or a bracketed IPv6 address.
fn is_valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((ipv6, after)) = rest.split_once(']') else { return false };
        if ipv6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after.strip_prefix(':') {
            Some(port) => ("", Some(port)),
            None if after.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if registry.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `[a-z0-9]+` runs joined by one of `.`, `_`, `__` or a run of `-`.
fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut index = 0;
    while index < bytes.len() {
        if alnum(bytes[index]) {
            index += 1;
            continue;
        }
        let start = index;
        while index < bytes.len() && !alnum(bytes[index]) {
            index += 1;
        }
        let separator = &component[start..index];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return Err(format!("digest `{digest}` must be `algorithm:hex`"));
    };
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|part| {
        part.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && part.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !algorithm_ok {
        return Err(format!("digest algorithm `{algorithm}` is not valid"));
    }
    if algorithm == "sha256"
        && !(encoded.len() == 64 && encoded.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err("a sha256 digest must be 64 lowercase hex digits".to_owned());
    }
    if encoded.len() < 32 || !encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("digest `{digest}` must have at least 32 hex digits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let actual = match input.parse::<ImageReference>() {
            Ok(reference) => format!(
                "registry={} repository={} tag={} digest={} | {} | {}",
                reference.registry.as_deref().unwrap_or("-"),
                reference.repository,
                reference.tag.as_deref().unwrap_or("-"),
                reference.digest.as_deref().unwrap_or("-"),
                reference,
                reference.normalized()
            ),
            Err(message) => message,
        };
        assert_eq!(actual, expected, "input `{input}`");
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references() {
        check("nginx", "registry=- repository=nginx tag=- digest=- | nginx | docker.io/library/nginx:latest");
        check(
            "nginx:1.27-alpine",
            "registry=- repository=nginx tag=1.27-alpine digest=- | nginx:1.27-alpine | docker.io/library/nginx:1.27-alpine",
        );
        check(
            "kedge-test/web:latest",
            "registry=- repository=kedge-test/web tag=latest digest=- | kedge-test/web:latest | docker.io/kedge-test/web:latest",
        );
        check(
            "127.0.0.1:5000/kedge-test/web:latest",
            "registry=127.0.0.1:5000 repository=kedge-test/web tag=latest digest=- | 127.0.0.1:5000/kedge-test/web:latest | 127.0.0.1:5000/kedge-test/web:latest",
        );
        check(
            "localhost/app",
            "registry=localhost repository=app tag=- digest=- | localhost/app | localhost/app:latest",
        );
        check(
            "ghcr.io/org/sub/app:v1.2.3",
            "registry=ghcr.io repository=org/sub/app tag=v1.2.3 digest=- | ghcr.io/org/sub/app:v1.2.3 | ghcr.io/org/sub/app:v1.2.3",
        );
        check(
            &format!("alpine@{DIGEST}"),
            &format!("registry=- repository=alpine tag=- digest={DIGEST} | alpine@{DIGEST} | docker.io/library/alpine@{DIGEST}"),
        );
        check(
            &format!("[::1]:5000/app:v1@{DIGEST}"),
            &format!("registry=[::1]:5000 repository=app tag=v1 digest={DIGEST} | [::1]:5000/app:v1@{DIGEST} | [::1]:5000/app:v1@{DIGEST}"),
        );
        check("my__app/a-b--c", "registry=- repository=my__app/a-b--c tag=- digest=- | my__app/a-b--c | docker.io/my__app/a-b--c:latest");
    }

    #[test]
    fn invalid_references() {
        check("", "invalid image reference ``: it is empty");
        check("Nginx", "invalid image reference `Nginx`: repository component `Nginx` must be lowercase letters and digits separated by `.`, `_`, `__` or `-`");
        check("nginx:", "invalid image reference `nginx:`: tag `` must be 1 to 128 letters, digits, `_`, `.` or `-`, and not start with `.` or `-`");
        check("nginx:-x", "invalid image reference `nginx:-x`: tag `-x` must be 1 to 128 letters, digits, `_`, `.` or `-`, and not start with `.` or `-`");
        check(
            "nginx@sha256:abc",
            "invalid image reference `nginx@sha256:abc`: a sha256 digest must be 64 lowercase hex digits",
        );
        check("nginx@abc", "invalid image reference `nginx@abc`: digest `abc` must be `algorithm:hex`");
        check("a//b", "invalid image reference `a//b`: repository component `` must be lowercase letters and digits separated by `.`, `_`, `__` or `-`");
        check(
            "reg.io:abc/app",
            "invalid image reference `reg.io:abc/app`: registry `reg.io:abc` is not a valid host[:port]",
        );
        check("reg.io/", "invalid image reference `reg.io/`: the repository name is empty");
        check("app_", "invalid image reference `app_`: repository component `app_` must be lowercase letters and digits separated by `.`, `_`, `__` or `-`");
        check("a___b", "invalid image reference `a___b`: repository component `a___b` must be lowercase letters and digits separated by `.`, `_`, `__` or `-`");
        check("has space", "invalid image reference `has space`: repository component `has space` must be lowercase letters and digits separated by `.`, `_`, `__` or `-`");
    }
}
