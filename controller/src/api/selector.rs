//! Label selectors as kubectl writes them: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`,
//! joined by commas; every requirement must hold.

use std::collections::BTreeMap;

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Why a selector does not parse; the message names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

impl LabelSelector {
    /// Parses a selector; an empty or all-blank string is the selector that matches everything.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        let fail = |reason: String| SelectorError { selector: text.to_owned(), reason };
        let mut requirements = Vec::new();
        for part in split_top_level(text).map_err(|reason| fail(reason.to_owned()))? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(fail("empty requirement between commas".to_owned()));
            }
            requirements.push(parse_requirement(part).map_err(fail)?);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::NotExists(key) => !labels.contains_key(key),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, &'static str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("nested parentheses"),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("unbalanced `)`"),
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unclosed `(`");
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(check_key(key.trim())?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(check_key(key.trim())?, check_value(value.trim())?));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(check_key(key.trim())?, check_value(value.trim())?));
    }
    if let Some(open) = part.find('(') {
        let head = part[..open].trim();
        let Some(values) = part[open + 1..].trim().strip_suffix(')') else {
            return Err(format!("`{part}`: text after `)`"));
        };
        let values = values.split(',').map(|v| check_value(v.trim())).collect::<Result<Vec<_>, _>>()?;
        let mut words = head.split_whitespace();
        let (Some(key), Some(operator), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("`{part}`: expected `KEY in (V1,V2)` or `KEY notin (V1,V2)`"));
        };
        let key = check_key(key)?;
        return match operator {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            other => Err(format!("`{part}`: unknown operator `{other}`, expected `in` or `notin`")),
        };
    }
    Ok(Requirement::Exists(check_key(part)?))
}

fn check_key(key: &str) -> Result<String, String> {
    let valid = !key.is_empty()
        && key.len() <= 253
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(format!("`{key}` is not a label key"))
    }
}

fn check_value(value: &str) -> Result<String, String> {
    let valid =
        value.len() <= 63 && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!("`{value}` is not a label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[track_caller]
    fn check(selector: &str, pairs: &[(&str, &str)], expected: bool) {
        let parsed = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.matches(&labels(pairs)), expected, "{selector} against {pairs:?}");
    }

    #[test]
    fn selectors_match_like_kubectl() {
        check("", &[], true);
        check("app=web", &[("app", "web")], true);
        check("app==web", &[("app", "web")], true);
        check("app=web", &[("app", "db")], false);
        check("app!=web", &[("app", "db")], true);
        check("app!=web", &[], true);
        check("app!=web", &[("app", "web")], false);
        check("app", &[("app", "")], true);
        check("app", &[], false);
        check("!app", &[], true);
        check("!app", &[("app", "x")], false);
        check("tier in (a, b)", &[("tier", "b")], true);
        check("tier in (a,b)", &[("tier", "c")], false);
        check("tier in (a,b)", &[], false);
        check("tier notin (a,b)", &[], true);
        check("tier notin (a,b)", &[("tier", "a")], false);
        check("app=web, tier in (a,b),!legacy", &[("app", "web"), ("tier", "a")], true);
        check("app=web,tier in (a,b)", &[("app", "web"), ("tier", "z")], false);
        check("kedge.io/applyset=abc", &[("kedge.io/applyset", "abc")], true);
    }

    #[test]
    fn bad_selectors_are_refused_with_a_reason() {
        for bad in
            ["app=web,,x", "tier in (a,b", "tier in a,b)", "tier within (a)", "a b", "=x", "app=we b", "!"]
        {
            let error = LabelSelector::parse(bad).expect_err(bad);
            assert!(!error.reason.is_empty());
        }
    }
}
