//! Trusting an ssh:// server: its host key checked against the source's `spec.ssh.knownHosts` the
//! way OpenSSH reads `known_hosts` (patterns, `[host]:port`, hashed names, `@revoked`), before
//! libgit2 sends any credential.

use base64::Engine as _;
use kedge_crds::gitsource::KnownHost;
use ring::hmac;

/// What the known hosts say of the key a server showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostKeyVerdict {
    /// A line for this host lists this key.
    Known,
    /// No line names this host.
    UnknownHost { fingerprint: String },
    /// Lines name this host, with other keys: the key changed, or someone is in the middle.
    Changed { fingerprint: String },
    /// An `@revoked` line lists this key.
    Revoked { fingerprint: String },
}

/// Checks `key` (the SSH wire-format blob the server showed) of `host` on `port` against `known`.
pub(crate) fn check_host_key(known: &[KnownHost], host: &str, port: u16, key: &[u8]) -> HostKeyVerdict {
    let name = if port == 22 { host.to_owned() } else { format!("[{host}]:{port}") };
    let fingerprint = fingerprint(key);
    let lines: Vec<&KnownHost> = known.iter().filter(|line| names(&line.hosts, &name)).collect();
    if lines.iter().any(|line| line.revoked && line.key == key) {
        return HostKeyVerdict::Revoked { fingerprint };
    }
    let listed: Vec<&&KnownHost> = lines.iter().filter(|line| !line.revoked).collect();
    if listed.iter().any(|line| line.key == key) {
        HostKeyVerdict::Known
    } else if listed.is_empty() {
        HostKeyVerdict::UnknownHost { fingerprint }
    } else {
        HostKeyVerdict::Changed { fingerprint }
    }
}

/// `TYPE SHA256:BASE64`, as `ssh-keygen -lf` shows a key.
pub(crate) fn fingerprint(key: &[u8]) -> String {
    let key_type = key
        .get(..4)
        .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .and_then(|len| key.get(4..4 + len))
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    format!("{key_type} SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref()))
}

/// The host and port of `ssh://[user@]host[:port]/path` (port 22 when not given).
pub(crate) fn host_and_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("ssh://")?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None => 22,
        };
        return Some((host.to_owned(), port));
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((host_port.to_owned(), 22)),
    }
}

/// Whether a line's host patterns name `name`: one pattern matches and no negated one does.
fn names(patterns: &[String], name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(&negated.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
                return false;
            }
        } else if let Some(hashed) = pattern.strip_prefix("|1|") {
            matched |= hashed_names(hashed, name);
        } else {
            matched |= glob(&pattern.to_ascii_lowercase(), &name.to_ascii_lowercase());
        }
    }
    matched
}

/// `SALT|HASH` (both base64): HASH is the HMAC-SHA1 of the name under SALT, as `ssh-keygen -H` writes.
fn hashed_names(hashed: &str, name: &str) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else { return false };
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// `*` (any run) and `?` (one character) wildcards.
fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use kedge_crds::gitsource::parse_known_hosts;

    /// Two real ed25519 public keys (`ssh-keygen -t ed25519`).
    const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDhsAYgafhpiGmisgHS22pbI4x0L/2cB2UtmyYgJgCZW";
    const KEY_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDdm14UOONYF0PM7mvcgoPwyK5IMJpygYUDjZx1dpr+K";

    fn blob(line: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(line.split_whitespace().nth(1).unwrap()).unwrap()
    }

    fn check(known_hosts: &str, host: &str, port: u16, key: &str) -> HostKeyVerdict {
        let known = parse_known_hosts(known_hosts).unwrap();
        match check_host_key(&known, host, port, &blob(key)) {
            HostKeyVerdict::Known => HostKeyVerdict::Known,
            HostKeyVerdict::UnknownHost { .. } => HostKeyVerdict::UnknownHost { fingerprint: String::new() },
            HostKeyVerdict::Changed { .. } => HostKeyVerdict::Changed { fingerprint: String::new() },
            HostKeyVerdict::Revoked { .. } => HostKeyVerdict::Revoked { fingerprint: String::new() },
        }
    }

    const KNOWN: HostKeyVerdict = HostKeyVerdict::Known;

    fn unknown() -> HostKeyVerdict {
        HostKeyVerdict::UnknownHost { fingerprint: String::new() }
    }

    fn changed() -> HostKeyVerdict {
        HostKeyVerdict::Changed { fingerprint: String::new() }
    }

    #[test]
    fn host_keys_as_openssh_reads_them() {
        assert_eq!(check(&format!("git.example {KEY_A}"), "git.example", 22, KEY_A), KNOWN);
        assert_eq!(check(&format!("GIT.example {KEY_A}"), "git.example", 22, KEY_A), KNOWN);
        assert_eq!(check(&format!("git.example {KEY_A}"), "git.example", 22, KEY_B), changed());
        assert_eq!(check(&format!("git.example {KEY_A}"), "other.example", 22, KEY_A), unknown());
        // Another port is another name: `[host]:port`.
        assert_eq!(check(&format!("git.example {KEY_A}"), "git.example", 2222, KEY_A), unknown());
        assert_eq!(check(&format!("[git.example]:2222 {KEY_A}"), "git.example", 2222, KEY_A), KNOWN);
        // Lists, wildcards and negations.
        assert_eq!(check(&format!("a.example,git.example {KEY_A}"), "git.example", 22, KEY_A), KNOWN);
        assert_eq!(check(&format!("*.example {KEY_A}"), "git.example", 22, KEY_A), KNOWN);
        assert_eq!(check(&format!("gi?.example {KEY_A}"), "git.example", 22, KEY_A), KNOWN);
        assert_eq!(check(&format!("*.example,!git.example {KEY_A}"), "git.example", 22, KEY_A), unknown());
        // Two keys for a host: either is known.
        let two = format!("git.example {KEY_A}\ngit.example {KEY_B}");
        assert_eq!(check(&two, "git.example", 22, KEY_B), KNOWN);
        // A revoked key is refused even when another line lists it.
        let revoked = format!("git.example {KEY_A}\n@revoked * {KEY_A}\ngit.example {KEY_B}");
        assert_eq!(
            check(&revoked, "git.example", 22, KEY_A),
            HostKeyVerdict::Revoked { fingerprint: String::new() }
        );
    }

    #[test]
    fn hashed_host_names() {
        // `|1|SALT|HMAC-SHA1(SALT, "[127.0.0.1]:2222")`, as `ssh-keygen -H` writes it.
        let salt = b"0123456789abcdefghij";
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
        let hash = hmac::sign(&key, b"[127.0.0.1]:2222");
        let engine = base64::engine::general_purpose::STANDARD;
        let line = format!("|1|{}|{} {KEY_A}", engine.encode(salt), engine.encode(hash.as_ref()));
        assert_eq!(check(&line, "127.0.0.1", 2222, KEY_A), KNOWN);
        assert_eq!(check(&line, "127.0.0.1", 22, KEY_A), unknown());
        assert_eq!(check(&line, "127.0.0.1", 2222, KEY_B), changed());
    }

    #[test]
    fn urls_and_fingerprints() {
        assert_eq!(host_and_port("ssh://git@host/a.git"), Some(("host".into(), 22)));
        assert_eq!(host_and_port("ssh://git@127.0.0.1:2222/srv/a.git"), Some(("127.0.0.1".into(), 2222)));
        assert_eq!(host_and_port("ssh://[::1]:2222/a.git"), Some(("::1".into(), 2222)));
        assert_eq!(host_and_port("ssh://host:x/a.git"), None);
        // What `ssh-keygen -lf` prints for KEY_A.
        assert_eq!(
            fingerprint(&blob(KEY_A)),
            "ssh-ed25519 SHA256:ptJlXrMY1w3W2pAPgKVqyZN6FxB+ISIHqz7xMjqtS/w"
        );
    }
}
