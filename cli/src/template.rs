//! kubectl's `-o jsonpath=TEMPLATE`, `-o custom-columns=SPEC` and `--sort-by=PATH`.
//!
//! A template is text with `{...}` blocks, as kubectl writes them: a path (`{.status.containerId}`,
//! `{.items[*].metadata.name}`, `{.items[?(@.spec.image=="redis:7")].metadata.name}`), `@` (the
//! current object), a quoted string (`{"\n"}`), and `{range PATH}...{end}`. Paths are evaluated
//! with `serde_json_path` (RFC 9535 JSONPath); this module only translates kubectl's dialect
//! (no leading `$`, names with `-`, `/` or escaped dots such as `labels.io\.kedge\.app`) into it.
//! As in kubectl (whose `--allow-missing-template-keys` defaults to true), a path that matches
//! nothing prints nothing; several matches print separated by a space; strings print bare and
//! everything else as compact JSON.

use std::cmp::Ordering;

use serde_json::Value;
use serde_json_path::JsonPath;

/// A parsed `-o jsonpath=` template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Path(Path),
    Range(Path, Vec<Node>),
}

/// One kubectl path, translated: evaluated against the current object (`.x`, `@.x`) or the root (`$.x`).
#[derive(Debug, Clone)]
pub struct Path {
    from_root: bool,
    /// `None` for `@` or `$` alone: the object itself.
    path: Option<JsonPath>,
    written: String,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut stack: Vec<(Option<Path>, Vec<Node>)> = vec![(None, Vec::new())];
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                push(&mut stack, Node::Text(rest.to_owned()));
                break;
            };
            if open > 0 {
                push(&mut stack, Node::Text(rest[..open].to_owned()));
            }
            let close = block_end(&rest[open + 1..]).ok_or_else(|| {
                format!("unclosed `{{` at character {} of the template", text.len() - rest.len() + open + 1)
            })?;
            let block = rest[open + 1..open + 1 + close].trim();
            rest = &rest[open + 1 + close + 1..];
            if block == "end" {
                let (Some(path), nodes) = stack.pop().unwrap_or((None, Vec::new())) else {
                    return Err("`{end}` without a `{range ...}` before it".to_owned());
                };
                push(&mut stack, Node::Range(path, nodes));
            } else if let Some(path) = block.strip_prefix("range ") {
                stack.push((Some(Path::parse(path.trim())?), Vec::new()));
            } else if block.starts_with('"') || block.starts_with('\'') {
                push(&mut stack, Node::Text(unquote(block)?));
            } else {
                push(&mut stack, Node::Path(Path::parse(block)?));
            }
        }
        if stack.len() > 1 {
            return Err("a `{range ...}` has no `{end}`".to_owned());
        }
        Ok(Template { nodes: stack.pop().map(|(_, nodes)| nodes).unwrap_or_default() })
    }

    /// The template applied to `root`.
    pub fn render(&self, root: &Value) -> String {
        let mut out = String::new();
        render_nodes(&self.nodes, root, root, &mut out);
        out
    }
}

fn push(stack: &mut [(Option<Path>, Vec<Node>)], node: Node) {
    if let Some((_, nodes)) = stack.last_mut() {
        nodes.push(node);
    }
}

fn render_nodes(nodes: &[Node], root: &Value, current: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Path(path) => {
                let words: Vec<String> = path.matches(root, current).into_iter().map(show).collect();
                out.push_str(&words.join(" "));
            }
            Node::Range(path, body) => {
                for item in path.matches(root, current) {
                    render_nodes(body, root, item, out);
                }
            }
        }
    }
}

/// A value as kubectl prints it: a string bare, anything else as compact JSON.
fn show(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Where the block that starts after a `{` ends: the first `}` outside quotes.
fn block_end(text: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (index, c) in text.char_indices() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some(_) if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '}' => return Some(index),
            None => {}
        }
    }
    None
}

/// A quoted string block's text, with `\n`, `\t`, `\r`, `\\` and the quote itself unescaped.
fn unquote(block: &str) -> Result<String, String> {
    let quote = block.chars().next().unwrap_or('"');
    let inner = block
        .strip_prefix(quote)
        .and_then(|b| b.strip_suffix(quote))
        .ok_or_else(|| format!("unterminated string {block}"))?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    Ok(out)
}

impl Path {
    /// Parses a kubectl path: `.a.b`, `@.a`, `$.a`, `.items[*].x`, `[0]`, `..name`, `@`, `$`.
    pub fn parse(written: &str) -> Result<Path, String> {
        let written = written.trim();
        let (from_root, rest) = match written.strip_prefix('$') {
            Some(rest) => (true, rest),
            None => (false, written.strip_prefix('@').unwrap_or(written)),
        };
        if rest.is_empty() {
            return Ok(Path { from_root, path: None, written: written.to_owned() });
        }
        if !rest.starts_with('.') && !rest.starts_with('[') {
            return Err(format!("`{written}` is not a path: a path starts with `.`, `[`, `@` or `$`"));
        }
        let translated = format!("${}", translate(rest)?);
        let path =
            JsonPath::parse(&translated).map_err(|e| format!("`{written}` is not a valid path: {e}"))?;
        Ok(Path { from_root, path: Some(path), written: written.to_owned() })
    }

    fn matches<'v>(&self, root: &'v Value, current: &'v Value) -> Vec<&'v Value> {
        let start = if self.from_root { root } else { current };
        match &self.path {
            None => vec![start],
            Some(path) => path.query(start).all(),
        }
    }

    /// The first value the path finds in `object`.
    pub fn first<'v>(&self, object: &'v Value) -> Option<&'v Value> {
        self.matches(object, object).into_iter().next()
    }

    /// Every value the path finds in `object`, shown as kubectl shows them.
    pub fn words(&self, object: &Value) -> Vec<String> {
        self.matches(object, object).into_iter().map(show).collect()
    }
}

/// kubectl's dotted names to RFC 9535: `.name` stays where the name is a plain identifier, and
/// becomes `['name']` where it holds `-`, `/`, an escaped dot or starts with a digit. Brackets are
/// copied as written (quotes respected).
fn translate(path: &str) -> Result<String, String> {
    let chars: Vec<char> = path.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '[' => {
                let start = i;
                let mut quote: Option<char> = None;
                let mut depth = 0usize;
                while i < chars.len() {
                    let c = chars[i];
                    match quote {
                        Some(_) if c == '\\' => i += 1,
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None if c == '\'' || c == '"' => quote = Some(c),
                        None if c == '[' => depth += 1,
                        None if c == ']' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        None => {}
                    }
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(format!("`{path}` has an unclosed `[`"));
                }
                out.extend(&chars[start..=i]);
                i += 1;
            }
            '.' => {
                out.push('.');
                i += 1;
                if chars.get(i) == Some(&'.') {
                    out.push('.');
                    i += 1;
                }
                if chars.get(i) == Some(&'*') {
                    out.push('*');
                    i += 1;
                    continue;
                }
                let mut name = String::new();
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        i += 1;
                    }
                    name.push(chars[i]);
                    i += 1;
                }
                if name.is_empty() {
                    // `.[0]` or `..[0]`: RFC 9535 writes the bracket straight after.
                    if out.ends_with("..") {
                        continue;
                    }
                    out.pop();
                    continue;
                }
                let plain = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if plain {
                    out.push_str(&name);
                } else {
                    if !out.ends_with("..") {
                        out.pop();
                    }
                    out.push_str(&format!("['{}']", name.replace('\\', "\\\\").replace('\'', "\\'")));
                }
            }
            other => return Err(format!("`{path}`: unexpected `{other}`")),
        }
    }
    Ok(out)
}

/// A parsed `-o custom-columns=HEADER:PATH,...`.
#[derive(Debug, Clone)]
pub struct Columns {
    pub columns: Vec<(String, Path)>,
}

impl Columns {
    pub fn parse(spec: &str) -> Result<Columns, String> {
        let mut columns = Vec::new();
        for part in split_columns(spec) {
            let (header, path) = part.split_once(':').ok_or_else(|| {
                format!("`{part}` is not HEADER:PATH (custom-columns=NAME:.metadata.name,...)")
            })?;
            if header.trim().is_empty() {
                return Err(format!("`{part}` has no header"));
            }
            let path = path.trim();
            let path = path.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(path);
            columns.push((header.trim().to_owned(), Path::parse(path)?));
        }
        if columns.is_empty() {
            return Err("custom-columns needs at least one HEADER:PATH".to_owned());
        }
        Ok(Columns { columns })
    }

    pub fn header(&self) -> Vec<&str> {
        self.columns.iter().map(|(header, _)| header.as_str()).collect()
    }

    /// One object's row: several matches joined by `,`, none shown as `<none>`.
    pub fn row(&self, object: &Value) -> Vec<String> {
        self.columns
            .iter()
            .map(|(_, path)| {
                let words = path.words(object);
                if words.is_empty() {
                    "<none>".to_owned()
                } else {
                    words.join(",")
                }
            })
            .collect()
    }
}

/// Splits a custom-columns spec at the commas that are not inside brackets or quotes.
fn split_columns(spec: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0);
    for (index, c) in spec.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | '{' | '(') => depth += 1,
            (None, ']' | '}' | ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&spec[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&spec[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// `--sort-by=PATH`: the order of two objects by the first value the path finds in each. Numbers
/// compare as numbers, strings as strings; an object where the path finds nothing sorts first.
pub fn compare_by(path: &Path, a: &Value, b: &Value) -> Ordering {
    match (path.first(a), path.first(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Some(x), Some(y)) => show(x).cmp(&show(y)),
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.written)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn list() -> Value {
        json!({"kind": "List", "items": [
            {"metadata": {"name": "web", "labels": {"io.kedge/app": "shop", "tier-x": "front"}},
             "spec": {"image": "nginx:1.27", "ports": [{"containerPort": 80}, {"containerPort": 443}]},
             "status": {"containerId": "abc", "restarts": 10}},
            {"metadata": {"name": "db", "labels": {}},
             "spec": {"image": "postgres:16"},
             "status": {"containerId": "def", "restarts": 9}},
        ]})
    }

    fn render(template: &str, value: &Value) -> String {
        Template::parse(template).unwrap().render(value)
    }

    #[test]
    fn paths_print_like_kubectl() {
        let web = &list()["items"][0];
        assert_eq!(render("{.status.containerId}", web), "abc");
        assert_eq!(render("{.items[*].metadata.name}", &list()), "web db");
        assert_eq!(render("{.items[0].spec.image}", &list()), "nginx:1.27");
        assert_eq!(render("{.items[-1].metadata.name}", &list()), "db");
        assert_eq!(render("{.spec.ports[*].containerPort}", web), "80 443");
        assert_eq!(render("{.status.restarts}", web), "10");
        assert_eq!(render("{.spec.ports[0]}", web), r#"{"containerPort":80}"#);
        assert_eq!(render("name={.metadata.name}!", web), "name=web!");
        assert_eq!(render("{.metadata.labels.io\\.kedge/app}", web), "shop");
        assert_eq!(render("{.metadata.labels.tier-x}", web), "front");
        assert_eq!(render("{.metadata.labels['tier-x']}", web), "front");
        assert_eq!(render("{..containerId}", &list()), "abc def");
        assert_eq!(render("{@.metadata.name}", web), "web");
    }

    #[test]
    fn a_missing_field_prints_nothing() {
        assert_eq!(render("[{.status.nothing}]", &list()["items"][0]), "[]");
    }

    #[test]
    fn range_and_strings_make_lines() {
        let text = render(r#"{range .items[*]}{.metadata.name}{"\t"}{.spec.image}{"\n"}{end}"#, &list());
        assert_eq!(text, "web\tnginx:1.27\ndb\tpostgres:16\n");
        let nested = render(
            r#"{range .items[*]}{.metadata.name}:{range .spec.ports[*]} {.containerPort}{end};{end}"#,
            &list(),
        );
        assert_eq!(nested, "web: 80 443;db:;");
        // `$` inside a range is the root.
        assert_eq!(render(r#"{range .items[*]}{$.kind} {end}"#, &list()), "List List ");
    }

    #[test]
    fn filters_select_items() {
        let text = render(r#"{.items[?(@.spec.image=="postgres:16")].metadata.name}"#, &list());
        assert_eq!(text, "db");
        let text = render("{.items[?(@.status.restarts > 9)].metadata.name}", &list());
        assert_eq!(text, "web");
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for bad in ["{.a", "{range .items[*]}{.x}", "{end}", "{metadata.name}", "{.items[}", "{\"open}"] {
            let error = Template::parse(bad).expect_err(bad);
            assert!(!error.is_empty(), "{bad}");
        }
    }

    #[test]
    fn custom_columns_are_rows() {
        let columns = Columns::parse(
            "NAME:.metadata.name,IMAGE:{.spec.image},PORTS:.spec.ports[*].containerPort,X:.nope",
        )
        .unwrap();
        assert_eq!(columns.header(), ["NAME", "IMAGE", "PORTS", "X"]);
        assert_eq!(columns.row(&list()["items"][0]), ["web", "nginx:1.27", "80,443", "<none>"]);
        assert_eq!(columns.row(&list()["items"][1]), ["db", "postgres:16", "<none>", "<none>"]);
        let filtered = Columns::parse(r#"A:.spec.ports[?(@.containerPort==80)].containerPort"#).unwrap();
        assert_eq!(filtered.row(&list()["items"][0]), ["80"]);
        for bad in ["", "NAME", ":.x", "NAME:metadata"] {
            assert!(Columns::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sort_by_compares_numbers_as_numbers() {
        let items = list()["items"].as_array().unwrap().clone();
        let path = Path::parse(".status.restarts").unwrap();
        assert_eq!(compare_by(&path, &items[0], &items[1]), Ordering::Greater);
        let by_name = Path::parse(".metadata.name").unwrap();
        assert_eq!(compare_by(&by_name, &items[0], &items[1]), Ordering::Greater);
        let missing = Path::parse(".status.nothing").unwrap();
        assert_eq!(compare_by(&missing, &items[0], &items[1]), Ordering::Equal);
        assert_eq!(compare_by(&by_name, &json!({}), &items[0]), Ordering::Less);
    }
}
