//! The `WWW-Authenticate` challenge of a registry's 401: `Basic realm="..."` or
//! `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull"`.

/// What the registry asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Send the user name and password with every request.
    Basic,
    /// Get a token from `realm` (anonymously or with the user name and password) and send it.
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

impl Challenge {
    /// Parses a challenge; `None` for a scheme kedge does not speak or a Bearer without a realm.
    pub fn parse(text: &str) -> Option<Challenge> {
        let text = text.trim();
        let (scheme, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => {
                let params = parameters(rest);
                let get = |name: &str| {
                    params
                        .iter()
                        .find(|(key, _)| key.eq_ignore_ascii_case(name))
                        .map(|(_, value)| value.clone())
                };
                Some(Challenge::Bearer { realm: get("realm")?, service: get("service"), scope: get("scope") })
            }
            _ => None,
        }
    }
}

/// `key="value",key2=value2`, values quoted or not; a quoted value may hold commas
/// (`scope="repository:a:pull,push"`) and escaped quotes.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect::<String>().trim().to_owned();
        }
        params.push((key.trim().to_owned(), value));
    }
    params
}
