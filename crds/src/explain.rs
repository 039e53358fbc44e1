//! `kedge explain KIND[.FIELD...]`: what a field is, read from the kind's JSON Schema, the one
//! `kedge schema` prints and validation follows, so the explanation cannot disagree with what is
//! accepted. Like `kubectl explain`: the field's type and documentation, then its own fields.
//!
//! The schemas are schemars' draft 2020-12 output: objects under `$defs` behind `$ref`, optional
//! fields as `anyOf [X, null]` or `type: [T, "null"]`, and fields written in two forms (a string or a
//! map: ports, mounts, restartPolicy) as `anyOf` of both. A path walks through arrays (`ports.hostPort`
//! is a field of each port) and into whichever form has fields.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use crate::container::API_VERSION;

/// The kinds `explain` knows, with the words that name them (as `kedge get` takes them).
const KINDS: [(&str, &[&str]); 3] = [
    ("Container", &["container", "containers", "c"]),
    ("ContainerSet", &["containerset", "containersets", "set", "sets", "cs"]),
    ("GitSource", &["gitsource", "gitsources", "gs"]),
];

/// How deep `--recursive` prints before it stops (a schema's `$ref`s could in principle cycle).
const MAX_DEPTH: usize = 12;

/// Why a path could not be explained.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    #[error("unknown kind {0:?}: explain takes container, containerset or gitsource")]
    UnknownKind(String),
    #[error("{kind} has no field {path:?}{hint}")]
    UnknownField { kind: &'static str, path: String, hint: String },
    #[error("{path:?} is {type_name}, which has no fields of its own")]
    NoFields { path: String, type_name: String },
}

/// The explanation of `path` (`container.spec.resources.memory`); with `recursive`, the names and
/// types of every field below it instead of one level with descriptions.
pub fn explain(path: &str, recursive: bool) -> Result<String, ExplainError> {
    let mut words = path.split('.');
    let kind_word = words.next().unwrap_or_default().to_ascii_lowercase();
    let (kind, root) = kind_schema(&kind_word).ok_or_else(|| ExplainError::UnknownKind(kind_word.clone()))?;
    let schema = Schema { root: &root };
    let fields: Vec<&str> = words.filter(|word| !word.is_empty()).collect();

    let mut node = &root;
    let mut walked = Vec::new();
    for field in &fields {
        let Some(object) = schema.object_form(node) else {
            return Err(ExplainError::NoFields { path: walked.join("."), type_name: schema.type_name(node) });
        };
        let properties = object.get("properties").and_then(Value::as_object);
        let Some(next) = properties.and_then(|properties| properties.get(*field)) else {
            let known: Vec<&str> =
                properties.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
            let hint = match crate::repair::closest(field, &known) {
                Some(close) => format!(", did you mean {close:?}?"),
                None if known.is_empty() => String::new(),
                None => format!("; its fields are {}", known.join(", ")),
            };
            walked.push(*field);
            return Err(ExplainError::UnknownField { kind, path: walked.join("."), hint });
        };
        walked.push(*field);
        node = next;
    }

    let mut out = String::new();
    let _ = writeln!(out, "KIND:     {kind}");
    let _ = writeln!(out, "VERSION:  {API_VERSION}");
    if let Some(last) = fields.last() {
        let _ = writeln!(out, "\nFIELD:    {last} <{}>", schema.type_name(node));
    }
    let description = schema.description(node);
    if !description.is_empty() {
        let _ = writeln!(out, "\nDESCRIPTION:");
        for line in description.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    let values = schema.enum_values(node);
    if !values.is_empty() {
        let _ = writeln!(out, "\nVALUES:   {}", values.join(", "));
    }
    if let Some(object) = schema.object_form(node) {
        let _ = writeln!(out, "\nFIELDS:");
        if recursive {
            schema.write_tree(&mut out, object, 1);
        } else {
            schema.write_fields(&mut out, object);
        }
    }
    Ok(out)
}

/// The kind named by `word`, and its schema as JSON.
fn kind_schema(word: &str) -> Option<(&'static str, Value)> {
    let (kind, _) = KINDS.iter().find(|(_, words)| words.contains(&word))?;
    let text = match *kind {
        "Container" => crate::schema::schema_json(),
        "ContainerSet" => crate::schema::set_schema_json(),
        _ => crate::schema::gitsource_schema_json(),
    };
    Some((kind, serde_json::from_str(&text).expect("kedge's own schemas are JSON")))
}

struct Schema<'a> {
    root: &'a Value,
}

impl<'a> Schema<'a> {
    /// `node` with its `$ref` followed (to the end of a chain).
    fn resolve(&self, mut node: &'a Value) -> &'a Value {
        for _ in 0..MAX_DEPTH {
            let Some(target) = node.get("$ref").and_then(Value::as_str) else { break };
            let Some(found) = target.strip_prefix('#').and_then(|pointer| self.root.pointer(pointer)) else {
                break;
            };
            node = found;
        }
        node
    }

    /// The forms a value may take: the variants of an `anyOf`/`oneOf` (resolved, `null` dropped), or
    /// the node itself.
    fn forms(&self, node: &'a Value) -> Vec<&'a Value> {
        let node = self.resolve(node);
        let variants = node.get("anyOf").or_else(|| node.get("oneOf")).and_then(Value::as_array);
        match variants {
            Some(variants) => variants
                .iter()
                .map(|variant| self.resolve(variant))
                .filter(|variant| variant.get("type").and_then(Value::as_str) != Some("null"))
                .flat_map(|variant| self.forms(variant))
                .collect(),
            None => vec![node],
        }
    }

    /// The form of `node` that has fields, looking through arrays: what a path continues into.
    fn object_form(&self, node: &'a Value) -> Option<&'a Map<String, Value>> {
        self.forms(node).into_iter().find_map(|form| {
            if form.get("properties").is_some() {
                form.as_object()
            } else {
                form.get("items").and_then(|items| self.object_form(items))
            }
        })
    }

    /// A short type: `string`, `integer`, `[]PortMapping`, `map[string]string`, `Resources`,
    /// `string | PortMappingObject`.
    fn type_name(&self, node: &Value) -> String {
        if let Some(target) = node.get("$ref").and_then(Value::as_str) {
            let name = target.rsplit('/').next().unwrap_or(target);
            let resolved = self.resolve(node);
            // A name for an object or for a choice of forms; a plain alias (Duration, ByteSize) shows
            // what it is written as, with its name.
            return if resolved.get("properties").is_some() || resolved.get("anyOf").is_some() {
                name.to_owned()
            } else {
                format!("{} ({name})", self.type_name(resolved))
            };
        }
        if let Some(variants) = node.get("anyOf").or_else(|| node.get("oneOf")).and_then(Value::as_array) {
            let names: Vec<String> = variants
                .iter()
                .filter(|variant| variant.get("type").and_then(Value::as_str) != Some("null"))
                .map(|variant| self.type_name(variant))
                .collect();
            return names.join(" | ");
        }
        let types: Vec<&str> = match node.get("type") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => {
                many.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect()
            }
            _ => Vec::new(),
        };
        let named: Vec<String> = types
            .iter()
            .map(|kind| match *kind {
                "array" => {
                    format!("[]{}", node.get("items").map(|items| self.type_name(items)).unwrap_or_default())
                }
                "object" if node.get("properties").is_none() => match node.get("additionalProperties") {
                    Some(value @ Value::Object(_)) => format!("map[string]{}", self.type_name(value)),
                    _ => "object".to_owned(),
                },
                other => other.to_owned(),
            })
            .collect();
        if named.is_empty() {
            "any".to_owned()
        } else {
            named.join("|")
        }
    }

    /// The field's documentation, then its type's when that says something more.
    fn description(&self, node: &Value) -> String {
        let own = node.get("description").and_then(Value::as_str).unwrap_or_default();
        let mut parts = vec![own.to_owned()];
        let resolved = self.resolve(node);
        if let Some(text) = resolved.get("description").and_then(Value::as_str) {
            parts.push(text.to_owned());
        }
        for form in self.forms(node) {
            if let Some(text) = form.get("description").and_then(Value::as_str) {
                parts.push(text.to_owned());
            }
        }
        let mut seen = Vec::new();
        for part in parts {
            if !part.is_empty() && !seen.contains(&part) {
                seen.push(part);
            }
        }
        seen.join("\n\n")
    }

    /// The values an enum field takes.
    fn enum_values(&self, node: &'a Value) -> Vec<String> {
        self.forms(node)
            .into_iter()
            .filter_map(|form| form.get("enum").and_then(Value::as_array))
            .flatten()
            .filter_map(|value| value.as_str().map(str::to_owned))
            .collect()
    }

    /// One level: each field with its type and the first paragraph of its documentation.
    fn write_fields(&self, out: &mut String, object: &Map<String, Value>) {
        let required = required_of(object);
        for (name, field) in object.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let mark = if required.contains(&name.as_str()) { " -required-" } else { "" };
            let _ = writeln!(out, "  {name}\t<{}>{mark}", self.type_name(field));
            let description = self.description(field);
            let first = description.split("\n\n").next().unwrap_or_default();
            for line in first.lines() {
                let _ = writeln!(out, "    {line}");
            }
            let _ = writeln!(out);
        }
    }

    /// Every field below `object`, indented by depth, names and types only.
    fn write_tree(&self, out: &mut String, object: &Map<String, Value>, depth: usize) {
        for (name, field) in object.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let _ = writeln!(out, "{}{name}\t<{}>", "  ".repeat(depth), self.type_name(field));
            if depth < MAX_DEPTH {
                if let Some(inner) = self.object_form(field) {
                    self.write_tree(out, inner, depth + 1);
                }
            }
        }
    }
}

fn required_of(object: &Map<String, Value>) -> Vec<&str> {
    object.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_alone_lists_its_top_level_fields() {
        let text = explain("container", false).unwrap();
        assert!(text.starts_with("KIND:     Container\nVERSION:  kedge.io/v1\n"), "{text}");
        for field in ["apiVersion", "kind", "metadata", "spec", "status"] {
            assert!(text.contains(&format!("\n  {field}\t<")), "{field} missing:\n{text}");
        }
        assert!(text.contains("spec\t<ContainerSpec> -required-"), "{text}");
    }

    #[test]
    fn a_nested_field_shows_its_type_description_and_fields() {
        let text = explain("container.spec.resources", false).unwrap();
        assert!(text.contains("FIELD:    resources <Resources>"), "{text}");
        assert!(text.contains("without a recreate"), "the field's own description:\n{text}");
        assert!(text.contains("\n  memory\t<string|integer (ByteSize)>"), "{text}");
        assert!(text.contains("\n  blkioWeight\t<integer>"), "{text}");
    }

    #[test]
    fn a_leaf_has_no_fields_section() {
        let text = explain("container.spec.resources.memory", false).unwrap();
        assert!(text.contains("FIELD:    memory <string|integer (ByteSize)>"), "{text}");
        assert!(text.contains("binary unit"), "the type's description:\n{text}");
        assert!(!text.contains("FIELDS:"), "{text}");
    }

    #[test]
    fn paths_go_through_arrays_and_into_the_form_with_fields() {
        // ports are `8080:80` strings or maps; a port's hostPort is a field of the map form.
        let text = explain("container.spec.ports.hostPort", false).unwrap();
        assert!(text.contains("FIELD:    hostPort <integer>"), "{text}");
        let ports = explain("container.spec.ports", false).unwrap();
        assert!(ports.contains("FIELD:    ports <[]PortMapping>"), "{ports}");
        assert!(ports.contains("\n  containerPort\t<integer> -required-"), "{ports}");
    }

    #[test]
    fn enums_list_their_values() {
        let text = explain("container.spec.ports.protocol", false).unwrap();
        assert!(text.contains("VALUES:   tcp, udp, sctp"), "{text}");
    }

    #[test]
    fn other_kinds_and_their_aliases() {
        assert!(explain("sets.spec.replicas", false).unwrap().starts_with("KIND:     ContainerSet"));
        assert!(explain("GS.spec.url", false).unwrap().starts_with("KIND:     GitSource"));
        assert_eq!(explain("pod", false), Err(ExplainError::UnknownKind("pod".to_owned())));
    }

    #[test]
    fn a_typo_is_named_with_the_field_it_likely_meant() {
        let error = explain("container.spec.resorces.memory", false).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Container has no field \"spec.resorces\", did you mean \"resources\"?"
        );
        let far = explain("container.spec.resources.zzzzzzzzz", false).unwrap_err().to_string();
        assert!(far.contains("its fields are blkioWeight, "), "{far}");
    }

    #[test]
    fn a_scalar_has_no_fields_to_walk_into() {
        let error = explain("container.spec.image.tag", false).unwrap_err();
        assert_eq!(
            error,
            ExplainError::NoFields {
                path: "spec.image".to_owned(),
                type_name: "string (ImageReference)".to_owned()
            }
        );
    }

    #[test]
    fn recursive_prints_every_field_below_indented_by_depth() {
        let text = explain("container.spec.healthcheck", true).unwrap();
        let fields = text.split("\nFIELDS:\n").nth(1).unwrap();
        assert!(fields.contains("  test\t<"), "{text}");
        assert!(fields.contains("  startPeriod\t<"), "{text}");
        assert!(
            fields.lines().all(|line| !line.starts_with("    ")),
            "healthcheck's fields are flat: {text}"
        );
        let all = explain("container", true).unwrap();
        assert!(all.contains("\n      hostPort\t<integer>"), "spec.ports.hostPort at depth 3:\n{all}");
    }

    #[test]
    fn every_field_of_every_kind_can_be_explained() {
        // Walks the recursive tree and explains each path it prints: no field the tree shows is
        // unreachable by its path.
        for kind in ["container", "containerset", "gitsource"] {
            let tree = explain(kind, true).unwrap();
            let mut path: Vec<String> = Vec::new();
            for line in tree.lines().skip_while(|line| *line != "FIELDS:").skip(1) {
                let depth = (line.len() - line.trim_start().len()) / 2;
                let name = line.trim_start().split('\t').next().unwrap().to_owned();
                path.truncate(depth - 1);
                path.push(name);
                let full = format!("{kind}.{}", path.join("."));
                explain(&full, false).unwrap_or_else(|error| panic!("{full}: {error}"));
            }
        }
    }
}
