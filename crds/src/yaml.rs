//! YAML (and so JSON) text to positioned JSON values: every value and every map key keeps its line and
//! column, indexed by its field path, so that errors found later can point back into the file.
//!
//! Built on saphyr-parser's event stream rather than a DOM, so that limits (nesting depth, alias
//! expansion) are enforced while reading and no input can make the reader recurse deeply or blow up.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Number, Value};

/// A 1-based line and column in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One YAML document: its value and where each of its parts is.
#[derive(Clone, Debug)]
pub(crate) struct PositionedDocument {
    pub value: Value,
    /// Where the document's root node starts.
    pub start: Position,
    pub positions: PositionIndex,
}

/// Field path (`spec.ports[1].hostPort`) to the position of its value and, for map entries, of its key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PositionIndex {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

/// A YAML syntax or structure error, at a position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub position: Position,
    pub path: String,
    pub message: String,
}

/// Deeper nesting than this is refused: no spec needs it, and it bounds the recursion of later stages.
pub(crate) const MAX_DEPTH: usize = 64;
/// Aliases may not expand a document past this many nodes (the "billion laughs" bound).
pub(crate) const MAX_NODES: usize = 200_000;
/// Nor past this much scalar text (values and map keys, counted once per copy): a few nodes that each
/// copy a long string would otherwise pass the node bound and still fill the memory.
pub(crate) const MAX_TEXT_BYTES: usize = 16 * 1024 * 1024;

impl PositionIndex {
    /// The position of the value at `path`, or of its nearest ancestor that is in the file.
    pub fn value_position(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(position) = self.values.get(path) {
                return Some(*position);
            }
            if path.is_empty() {
                return None;
            }
            path = parent_path(path);
        }
    }

    /// Places the value at `path` (a generated document's field, at the Compose key it came from).
    pub(crate) fn set_value(&mut self, path: String, position: Position) {
        self.values.insert(path, position);
    }

    /// The position of the key of the map entry at `path`, falling back as [`Self::value_position`] does.
    pub fn key_position(&self, path: &str) -> Option<Position> {
        self.keys.get(path).copied().or_else(|| self.value_position(path))
    }
}

/// `spec.ports[1].hostPort` -> `spec.ports[1]` -> `spec.ports` -> `spec` -> ``.
pub(crate) fn parent_path(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(index) => &path[..index],
        None => "",
    }
}

pub(crate) fn child_key_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

pub(crate) fn child_index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Reads every document of a YAML stream. A syntax error ends the stream (nothing after it can be trusted);
/// the documents read before it are returned along with it.
pub(crate) fn read_documents(text: &str) -> (Vec<PositionedDocument>, Option<YamlError>) {
    let mut reader =
        Reader { parser: Parser::new_from_str(text), anchors: HashMap::new(), nodes: 0, text_bytes: 0 };
    let mut documents = Vec::new();
    loop {
        match reader.next_document() {
            Ok(Some(Some(document))) => documents.push(document),
            Ok(Some(None)) => {}
            Ok(None) => return (documents, None),
            Err(error) => return (documents, Some(error)),
        }
    }
}

struct Reader<'input> {
    parser: Parser<'input, saphyr_parser::StrInput<'input>>,
    /// Anchored nodes by anchor id, for aliases.
    anchors: HashMap<usize, Anchored>,
    /// Nodes produced in the current document, counting alias expansions.
    nodes: usize,
    /// Bytes of scalar text produced in the current document, counting alias expansions.
    text_bytes: usize,
}

/// An anchored node and what one more copy of it costs, checked before it is copied.
struct Anchored {
    value: Value,
    nodes: usize,
    text_bytes: usize,
}

impl<'input> Reader<'input> {
    fn next_event(&mut self) -> Result<(Event<'input>, Span), YamlError> {
        match self.parser.next_event() {
            Some(Ok(event)) => Ok(event),
            Some(Err(error)) => Err(YamlError {
                position: Position { line: error.marker().line(), column: error.marker().col() + 1 },
                path: String::new(),
                message: format!("YAML syntax error: {}", error.info()),
            }),
            None => Err(YamlError {
                position: Position::default(),
                path: String::new(),
                message: "YAML syntax error: unexpected end of input".to_owned(),
            }),
        }
    }

    /// `Ok(None)` at the end of the stream, `Ok(Some(None))` for an empty document.
    #[allow(clippy::option_option)]
    fn next_document(&mut self) -> Result<Option<Option<PositionedDocument>>, YamlError> {
        loop {
            let (event, span) = self.next_event()?;
            match event {
                Event::StreamStart | Event::Nothing => continue,
                Event::StreamEnd => return Ok(None),
                Event::DocumentStart(_) => break,
                _ => return Err(error_at(span, "", "YAML syntax error: expected a document")),
            }
        }
        self.anchors.clear();
        self.nodes = 0;
        self.text_bytes = 0;
        let (event, span) = self.next_event()?;
        let start = position(span);
        let mut positions = PositionIndex::default();
        let value = self.read_node(event, span, "", 0, &mut positions)?;
        let (end, end_span) = self.next_event()?;
        if !matches!(end, Event::DocumentEnd) {
            return Err(error_at(end_span, "", "YAML syntax error: expected the end of the document"));
        }
        if value.is_null() {
            return Ok(Some(None));
        }
        Ok(Some(Some(PositionedDocument { value, start, positions })))
    }

    fn read_node(
        &mut self,
        event: Event<'input>,
        span: Span,
        path: &str,
        depth: usize,
        positions: &mut PositionIndex,
    ) -> Result<Value, YamlError> {
        if depth > MAX_DEPTH {
            return Err(error_at(span, path, &format!("nesting is deeper than {MAX_DEPTH} levels")));
        }
        let (nodes_before, text_before) = (self.nodes, self.text_bytes);
        self.count(1, 0, span, path)?;
        positions.values.entry(path.to_owned()).or_insert_with(|| position(span));
        let (value, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(0, text.len(), span, path)?;
                (scalar_value(&text, style, tag.as_deref(), span, path)?, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq", span, path)?;
                let mut items = Vec::new();
                loop {
                    let (event, item_span) = self.next_event()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    let item_path = child_index_path(path, items.len());
                    items.push(self.read_node(event, item_span, &item_path, depth + 1, positions)?);
                }
                (Value::Array(items), anchor)
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map", span, path)?;
                let mut entries = Map::new();
                loop {
                    let (event, key_span) = self.next_event()?;
                    if matches!(event, Event::MappingEnd) {
                        break;
                    }
                    let key = match event {
                        Event::Scalar(text, ..) => {
                            self.count(0, text.len(), key_span, path)?;
                            text.into_owned()
                        }
                        _ => return Err(error_at(key_span, path, "map keys must be plain strings")),
                    };
                    let entry_path = child_key_path(path, &key);
                    if entries.contains_key(&key) {
                        return Err(error_at(key_span, &entry_path, &format!("duplicate key `{key}`")));
                    }
                    positions.keys.insert(entry_path.clone(), position(key_span));
                    let (event, value_span) = self.next_event()?;
                    let value = self.read_node(event, value_span, &entry_path, depth + 1, positions)?;
                    entries.insert(key, value);
                }
                (Value::Object(entries), anchor)
            }
            Event::Alias(anchor) => {
                let Some(anchored) = self.anchors.get(&anchor) else {
                    return Err(error_at(span, path, "alias to an unknown anchor"));
                };
                // The alias node itself was counted above; its copy is counted before it is made.
                let (nodes, text_bytes) = (anchored.nodes.saturating_sub(1), anchored.text_bytes);
                self.count(nodes, text_bytes, span, path)?;
                let value =
                    self.anchors.get(&anchor).map(|anchored| anchored.value.clone()).unwrap_or_default();
                (value, 0)
            }
            _ => return Err(error_at(span, path, "YAML syntax error: unexpected event")),
        };
        if anchor != 0 {
            let anchored = Anchored {
                value: value.clone(),
                nodes: self.nodes - nodes_before,
                text_bytes: self.text_bytes - text_before,
            };
            self.anchors.insert(anchor, anchored);
        }
        Ok(value)
    }

    /// Adds to the document's node and text counts, refusing the document past either bound.
    fn count(&mut self, nodes: usize, text_bytes: usize, span: Span, path: &str) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.text_bytes = self.text_bytes.saturating_add(text_bytes);
        if self.nodes > MAX_NODES {
            return Err(error_at(span, path, &format!("the document has more than {MAX_NODES} nodes")));
        }
        if self.text_bytes > MAX_TEXT_BYTES {
            let mib = MAX_TEXT_BYTES / (1024 * 1024);
            return Err(error_at(
                span,
                path,
                &format!(
                    "the document expands to more than {mib} MiB of text (aliases counted once per use)"
                ),
            ));
        }
        Ok(())
    }
}

fn position(span: Span) -> Position {
    Position { line: span.start.line(), column: span.start.col() + 1 }
}

fn error_at(span: Span, path: &str, message: &str) -> YamlError {
    YamlError { position: position(span), path: path.to_owned(), message: message.to_owned() }
}

fn tag_name(tag: &Tag) -> String {
    if tag.is_yaml_core_schema() {
        format!("!!{}", tag.suffix)
    } else {
        tag.to_string()
    }
}

fn check_collection_tag(tag: Option<&Tag>, expected: &str, span: Span, path: &str) -> Result<(), YamlError> {
    match tag {
        None => Ok(()),
        Some(tag) if tag.is_yaml_core_schema() && tag.suffix == expected => Ok(()),
        Some(tag) => Err(error_at(span, path, &format!("unsupported YAML tag `{}`", tag_name(tag)))),
    }
}

/// Resolves a scalar by the YAML 1.2 core schema: plain `true`, `null`, `12`, `1.5` are typed; quoted and
/// block scalars are strings; `!!str`, `!!int`, ... tags force a type.
fn scalar_value(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    span: Span,
    path: &str,
) -> Result<Value, YamlError> {
    if let Some(tag) = tag {
        if !tag.is_yaml_core_schema() {
            return Err(error_at(span, path, &format!("unsupported YAML tag `{}`", tag_name(tag))));
        }
        let resolved = match tag.suffix.as_str() {
            "str" => Some(Value::String(text.to_owned())),
            "null" => resolve_null(text),
            "bool" => resolve_bool(text),
            "int" => resolve_int(text),
            "float" => resolve_int(text).or_else(|| resolve_float(text)),
            _ => return Err(error_at(span, path, &format!("unsupported YAML tag `{}`", tag_name(tag)))),
        };
        return resolved
            .ok_or_else(|| error_at(span, path, &format!("`{text}` is not a valid `{}`", tag_name(tag))));
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    // A number is only a number when it is written the way it prints (`8080`, `1.5`); `1.10`, `007`,
    // `0x1F` or `1e3` stay strings. No field of a spec is a float, and string fields that take numbers
    // (`env`, `command`) must keep the text as written: `VERSION: 1.10` is "1.10", not "1.1". Fields that
    // want an integer then refuse such text instead of silently reading it in another base.
    let number = resolve_int(text)
        .or_else(|| resolve_float(text))
        .filter(|number| matches!(number, Value::Number(n) if n.to_string().as_str() == text));
    Ok(resolve_null(text)
        .or_else(|| resolve_bool(text))
        .or(number)
        .unwrap_or_else(|| Value::String(text.to_owned())))
}

fn resolve_null(text: &str) -> Option<Value> {
    matches!(text, "" | "~" | "null" | "Null" | "NULL").then_some(Value::Null)
}

fn resolve_bool(text: &str) -> Option<Value> {
    match text {
        "true" | "True" | "TRUE" => Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => Some(Value::Bool(false)),
        _ => None,
    }
}

fn resolve_int(text: &str) -> Option<Value> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(hex) = digits.strip_prefix("0x") {
        (16, hex)
    } else if let Some(octal) = digits.strip_prefix("0o") {
        (8, octal)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        let value = 0i64.checked_sub_unsigned(magnitude)?;
        Some(Value::Number(value.into()))
    } else {
        Some(Value::Number(magnitude.into()))
    }
}

fn resolve_float(text: &str) -> Option<Value> {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let looks_numeric = body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && body.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && body.chars().any(|c| c.is_ascii_digit());
    if !looks_numeric {
        // `.inf` and `.nan` have no JSON value; they stay strings and fail as such where a number is wanted.
        return None;
    }
    let number: f64 = text.parse().ok()?;
    Number::from_f64(number).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let (documents, error) = read_documents(input);
        let mut actual: Vec<String> = documents
            .iter()
            .map(|document| {
                let mut positions: Vec<_> = document
                    .positions
                    .values
                    .iter()
                    .map(|(path, p)| format!("{path}@{}:{}", p.line, p.column))
                    .collect();
                positions.sort();
                format!("{} {}", document.value, positions.join(" "))
            })
            .collect();
        if let Some(error) = error {
            actual.push(format!(
                "error {}:{} {}: {}",
                error.position.line, error.position.column, error.path, error.message
            ));
        }
        assert_eq!(actual.join("\n"), expected, "input:\n{input}");
    }

    #[test]
    fn scalars_and_positions() {
        check(
            "a: 1\nb: [x, 'y', 2.5]\n",
            r#"{"a":1,"b":["x","y",2.5]} @1:1 a@1:4 b@2:4 b[0]@2:5 b[1]@2:8 b[2]@2:13"#,
        );
        check(
            "a: yes\nb: no\nc: ~\nd: 0x10\ne: '1'\nf: -3\ng: .inf\nh: 1.10\ni: 007\nj: 1.5\nk: 1e3\n",
            r#"{"a":"yes","b":"no","c":null,"d":"0x10","e":"1","f":-3,"g":".inf","h":"1.10","i":"007","j":1.5,"k":"1e3"} @1:1 a@1:4 b@2:4 c@3:4 d@4:4 e@5:4 f@6:4 g@7:4 h@8:4 i@9:4 j@10:4 k@11:4"#,
        );
        check("a: !!str 12\n", r#"{"a":"12"} @1:1 a@1:4"#);
        check("a: !!int 0x10\n", r#"{"a":16} @1:1 a@1:4"#);
        check("{\"a\": {\"b\": [1, 2]}}", r#"{"a":{"b":[1,2]}} @1:1 a.b@1:13 a.b[0]@1:14 a.b[1]@1:17 a@1:7"#);
    }

    #[test]
    fn documents() {
        check("a: 1\n---\n---\nb: 2\n", "{\"a\":1} @1:1 a@1:4\n{\"b\":2} @4:1 b@4:4");
        check("# only a comment\n", "");
        check("a: &x [1, 2]\nb: *x\n", r#"{"a":[1,2],"b":[1,2]} @1:1 a@1:4 a[0]@1:8 a[1]@1:11 b@2:4"#);
    }

    #[test]
    fn errors() {
        check("a: 1\na: 2\n", "error 2:1 a: duplicate key `a`");
        check("a: [1\n", "error 2:1 : YAML syntax error: while parsing a flow sequence, expected ',' or ']'");
        check("a: !custom 1\n", "error 1:4 a: unsupported YAML tag `!custom`");
        check("a: !!int x\n", "error 1:4 a: `x` is not a valid `!!int`");
        check("? [a]\n: 1\n", "error 1:3 : map keys must be plain strings");
        check(&format!("{}{}", "[".repeat(70), "]".repeat(70)), "error 1:66 [0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]: nesting is deeper than 64 levels");
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..10 {
            let previous = level - 1;
            text.push_str(&format!("a{level}: &a{level} [*a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}]\n"));
        }
        let (_, error) = read_documents(&text);
        assert!(error.unwrap().message.contains("more than 200000 nodes"));
    }

    #[test]
    fn a_bomb_of_long_strings_is_refused_by_its_text() {
        // 111 nodes per copy of `l2`, far below the node bound, but 64 KiB of text in each leaf.
        let mut text = format!("s: &s {}\n", "x".repeat(64 * 1024));
        text.push_str("l1: &l1 [*s, *s, *s, *s, *s, *s, *s, *s, *s, *s]\n");
        text.push_str("l2: &l2 [*l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1]\n");
        text.push_str("l3: &l3 [*l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2]\n");
        let (_, error) = read_documents(&text);
        let error = error.expect("refused");
        assert_eq!(
            error.message,
            "the document expands to more than 16 MiB of text (aliases counted once per use)"
        );
        assert_eq!((error.position.line, error.path.as_str()), (4, "l3[1]"));
        // Two copies of the long string are fine.
        let (documents, error) = read_documents(&format!("s: &s {}\nt: *s\n", "x".repeat(64 * 1024)));
        assert!(error.is_none() && documents.len() == 1);
    }
}
