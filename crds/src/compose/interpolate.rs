//! Compose's variable interpolation, on one string value: `$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?error}` and `${VAR?error}` (the compose-spec's "Interpolation"). The
//! caller applies it to every string value of the file (never to keys), as Compose does.

use std::collections::BTreeMap;

/// How deep `${VAR:-${OTHER:-...}}` defaults may nest. Compose files nest two or three levels; a
/// limit keeps a hostile value from exhausting the stack or costing time quadratic in its length.
pub(crate) const MAX_NESTING: usize = 16;

/// What interpolating one string found besides its result.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Interpolated {
    pub value: String,
    /// Variables that were unset and had no default: each became the empty string (Compose warns).
    pub unset: Vec<String>,
}

/// Replaces every variable of `text` by its value in `environment`. An error is the message to show
/// at the value: a `${VAR:?message}` whose variable is unset, or a malformed `${...}`.
pub(crate) fn interpolate(
    text: &str,
    environment: &BTreeMap<String, String>,
) -> Result<Interpolated, String> {
    interpolate_nested(text, environment, 0)
}

/// [`interpolate`] of a default value `depth` levels inside `${...:-...}`.
fn interpolate_nested(
    text: &str,
    environment: &BTreeMap<String, String>,
    depth: usize,
) -> Result<Interpolated, String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "invalid interpolation format: defaults are nested deeper than {MAX_NESTING} levels"
        ));
    }
    let mut out = Interpolated::default();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.value.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.value.push('$');
            rest = tail;
        } else if let Some(braced) = after.strip_prefix('{') {
            let end = closing_brace(braced).ok_or_else(|| {
                format!("invalid interpolation format in {}: `${{` is not closed", quote(text))
            })?;
            let expression = &braced[..end];
            let value = expand(expression, environment, &mut out.unset, depth)
                .map_err(|message| message.replace("{text}", &quote(text)))?;
            out.value.push_str(&value);
            rest = &braced[end + 1..];
        } else {
            let name_len =
                after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            if name_len == 0 || after.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!(
                    "invalid interpolation format in {}: a `$` must start a variable; write `$$` for a literal `$`",
                    quote(text)
                ));
            }
            let name = &after[..name_len];
            match environment.get(name) {
                Some(value) => out.value.push_str(value),
                None => out.unset.push(name.to_owned()),
            }
            rest = &after[name_len..];
        }
    }
    out.value.push_str(rest);
    Ok(out)
}

/// `text` in backquotes for an error message, shortened to its first 60 characters.
fn quote(text: &str) -> String {
    const SHOWN: usize = 60;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("`{}...` ({} bytes)", &text[..cut], text.len()),
        None => format!("`{text}`"),
    }
}

/// The index of the `}` that closes a `${` whose text starts `braced`, counting nested `${...}` in a
/// default value.
fn closing_brace(braced: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = braced.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'$' if bytes.get(index + 1) == Some(&b'{') => {
                depth += 1;
                index += 1;
            }
            b'}' if depth == 0 => return Some(index),
            b'}' => depth -= 1,
            _ => {}
        }
        index += 1;
    }
    None
}

/// One `${...}` expression's value.
fn expand(
    expression: &str,
    environment: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
    depth: usize,
) -> Result<String, String> {
    let name_len =
        expression.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expression.len());
    let name = &expression[..name_len];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("invalid interpolation format in {text}: `${` must be followed by a variable name".into());
    }
    let operator = &expression[name_len..];
    let value = environment.get(name);
    let empty = value.is_none_or(String::is_empty);
    // The default's own variables are expanded only when it is used.
    let nested = |text: &str, unset: &mut Vec<String>| -> Result<String, String> {
        let inner = interpolate_nested(text, environment, depth + 1)?;
        unset.extend(inner.unset);
        Ok(inner.value)
    };
    if operator.is_empty() {
        return Ok(match value {
            Some(value) => value.clone(),
            None => {
                unset.push(name.to_owned());
                String::new()
            }
        });
    }
    if let Some(default) = operator.strip_prefix(":-") {
        return if empty { nested(default, unset) } else { Ok(value.cloned().unwrap_or_default()) };
    }
    if let Some(default) = operator.strip_prefix('-') {
        return match value {
            Some(value) => Ok(value.clone()),
            None => nested(default, unset),
        };
    }
    if let Some(message) = operator.strip_prefix(":?") {
        return if empty {
            Err(required(name, message, "unset or empty"))
        } else {
            Ok(value.cloned().unwrap_or_default())
        };
    }
    if let Some(message) = operator.strip_prefix('?') {
        return match value {
            Some(value) => Ok(value.clone()),
            None => Err(required(name, message, "unset")),
        };
    }
    Err(format!(
        "invalid interpolation format in {{text}}: unknown operator {} after `{name}`",
        quote(operator)
    ))
}

fn required(name: &str, message: &str, state: &str) -> String {
    const SHOWN: usize = 200;
    let message = match message.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &message[..cut]),
        None => message.to_owned(),
    };
    if message.is_empty() {
        format!("required variable `{name}` is {state}")
    } else {
        format!("required variable `{name}` is {state}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, &str>) {
        let environment: BTreeMap<String, String> = [("SET", "value"), ("EMPTY", ""), ("TAG", "1.2")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let got = interpolate(text, &environment).map(|out| out.value);
        match expected {
            Ok(value) => assert_eq!(got, Ok(value.to_owned()), "{text}"),
            Err(fragment) => {
                let error = got.expect_err(text);
                assert!(error.contains(fragment), "{text}: {error}");
            }
        }
    }

    #[test]
    fn every_form() {
        check("plain", Ok("plain"));
        check("$SET", Ok("value"));
        check("a-${SET}-b", Ok("a-value-b"));
        check("img:$TAG", Ok("img:1.2"));
        check("$$SET", Ok("$SET"));
        check("cost $$5", Ok("cost $5"));
        check("${UNSET}", Ok(""));
        check("$UNSET/x", Ok("/x"));
        check("${UNSET:-dflt}", Ok("dflt"));
        check("${EMPTY:-dflt}", Ok("dflt"));
        check("${EMPTY-dflt}", Ok(""));
        check("${UNSET-dflt}", Ok("dflt"));
        check("${SET:-dflt}", Ok("value"));
        check("${UNSET:-${SET}}", Ok("value"));
        check("${UNSET:-a:b}", Ok("a:b"));
        check("${SET:?need it}", Ok("value"));
        check("${SET?need it}", Ok("value"));
        check("${EMPTY?need it}", Ok(""));
        check("${UNSET:?need it}", Err("required variable `UNSET` is unset or empty: need it"));
        check("${EMPTY:?need it}", Err("`EMPTY` is unset or empty"));
        check("${UNSET?}", Err("required variable `UNSET` is unset"));
        check("${SET", Err("is not closed"));
        check("${}", Err("must be followed by a variable name"));
        check("${SET!x}", Err("unknown operator `!x`"));
        check("50$", Err("write `$$`"));
    }

    #[test]
    fn unset_variables_are_reported() {
        let out = interpolate("${A}-$B-${C:-x}-${D-y}", &BTreeMap::new()).unwrap();
        assert_eq!(out.value, "--x-y");
        assert_eq!(out.unset, ["A", "B"]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let depth = 200_000;
        let text = format!("{}x{}", "${UNSET:-".repeat(depth), "}".repeat(depth));
        let started = std::time::Instant::now();
        let error = interpolate(&text, &BTreeMap::new()).expect_err("nested 200,000 deep");
        assert!(error.contains(&format!("nested deeper than {MAX_NESTING}")), "{error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
        // Nesting up to the limit still works.
        let text = format!("{}x{}", "${UNSET:-".repeat(MAX_NESTING), "}".repeat(MAX_NESTING));
        assert_eq!(interpolate(&text, &BTreeMap::new()).map(|out| out.value), Ok("x".to_owned()));
    }

    #[test]
    fn errors_quote_a_long_value_shortened() {
        let text = format!("{}${{", "é".repeat(1_000_000));
        let error = interpolate(&text, &BTreeMap::new()).expect_err("unclosed");
        assert!(error.len() < 300, "{} bytes: {}", error.len(), &error[..300.min(error.len())]);
        assert!(error.contains("is not closed"), "{error}");
        let text = format!("${{NEED:?{}}}", "m".repeat(100_000));
        let error = interpolate(&text, &BTreeMap::new()).expect_err("required");
        assert!(error.len() < 600, "{} bytes", error.len());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "[$a-zA-Z_{}:?\\-é0-9 ]{0,200}") {
            let environment: BTreeMap<String, String> =
                [("a".to_owned(), "1".to_owned()), ("B".to_owned(), String::new())].into();
            let _ = interpolate(&text, &environment);
        }
    }
}
