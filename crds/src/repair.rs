//! Every shape error of a document, not only serde's first: after a failed typed deserialization the
//! offending value is recorded, set aside in the parsed tree and the document is read again, until it
//! reads or a bound is reached.
//!
//! serde stops at the first error it meets, so a file with a wrong type in `spec.ports` and an unknown
//! field in `spec.resources` would show one of them per run. Here each error is repaired in a copy of the
//! tree before trying again: an unknown field is removed, a missing field gets a placeholder, a value of
//! the wrong type is removed when its field is optional or replaced by a placeholder of a type that reads.
//! Nothing moves in the tree (list items are replaced, never removed), so the positions of the YAML
//! reader still point at the right lines. Errors that only follow from a repair (inside a placeholder,
//! or at a repaired path) are not reported: the repaired paths are returned so that later rules can
//! leave them out too.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use crate::yaml::{child_index_path, child_key_path};

/// At most this many errors are repaired in one document; past it the document reports a note that
/// more may follow. A real file has a handful; the bound keeps a hostile one from taking long.
pub(crate) const MAX_REPAIRS: usize = 256;

/// Deserializations allowed per document, counted in what they read ([`read_cost`]): each repair tries
/// one to a few candidates, each a full read of the document, so a large document gets fewer tries.
const WORK_BUDGET: usize = 1 << 30;

/// A shape error: its field path, whether it is about a map key rather than a value, and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShapeError {
    pub path: String,
    pub on_key: bool,
    pub message: String,
}

/// What [`read_all`] found.
pub(crate) struct Repaired<T> {
    /// The document as it reads after the repairs, when every error could be repaired.
    pub value: Option<T>,
    /// The errors, in the order serde met them.
    pub errors: Vec<ShapeError>,
    /// The paths whose values were repaired: rules checked later must not report them again.
    pub repaired: Vec<String>,
    /// A bound ([`MAX_REPAIRS`] or the work budget) was reached: more errors may follow.
    pub gave_up: bool,
}

/// Reads `value` as `T`. `first` is the error an earlier plain read gave (so valid documents pay
/// nothing extra); every error is collected as the module header describes.
pub(crate) fn read_all<T: DeserializeOwned>(
    value: &Value,
    first: serde_path_to_error::Error<serde_json::Error>,
) -> Repaired<T> {
    let mut tree = value.clone();
    let mut tries_left = (WORK_BUDGET / read_cost(&tree).max(1)).clamp(8, MAX_REPAIRS * 8);
    let mut outcome = Repaired { value: None, errors: Vec::new(), repaired: Vec::new(), gave_up: false };
    // Fields an unknown field's suggestion names (`imgae`, did you mean `image`): their "missing"
    // error would say the same thing twice.
    let mut suggested: Vec<String> = Vec::new();
    let mut failure = first;
    loop {
        if outcome.repaired.len() >= MAX_REPAIRS {
            outcome.gave_up = true;
            return outcome;
        }
        let (steps, path, message) = describe(&failure);
        let error = rewrite_serde_message(path, message);
        let kind = ErrorKind::of(&error);
        let follows_from_repair = outcome.repaired.iter().any(|repaired| is_within(&error.path, repaired))
            || (kind == ErrorKind::Missing && suggested.contains(&error.path));
        if !follows_from_repair {
            if let Some(name) =
                error.message.split("did you mean `").nth(1).and_then(|rest| rest.split('`').next())
            {
                suggested.push(child_key_path(crate::yaml::parent_path(&error.path), name));
            }
            outcome.errors.push(error.clone());
        }
        let Some((parent, field)) = repair_site(&error, kind, steps) else {
            return outcome;
        };
        outcome.repaired.push(error.path.clone());
        let mut next = None;
        for candidate in kind.candidates(&field) {
            if tries_left == 0 {
                outcome.gave_up = true;
                return outcome;
            }
            tries_left -= 1;
            if !replace(&mut tree, &parent, &field, candidate) {
                break;
            }
            match serde_path_to_error::deserialize::<_, T>(&tree) {
                Ok(read) => {
                    outcome.value = Some(read);
                    return outcome;
                }
                Err(again) => {
                    // A candidate that fails at the same place does not read; one that fails elsewhere does.
                    let (_, path, message) = describe(&again);
                    if rewrite_serde_message(path, message).path != error.path {
                        next = Some(again);
                        break;
                    }
                }
            }
        }
        // No candidate reads: nothing more can be learned from this document.
        match next {
            Some(again) => failure = again,
            None => return outcome,
        }
    }
}

/// Whether `path` is `ancestor` or lies inside it.
pub(crate) fn is_within(path: &str, ancestor: &str) -> bool {
    match path.strip_prefix(ancestor) {
        Some(rest) => rest.is_empty() || rest.starts_with(['.', '[']),
        None => false,
    }
}

/// What a shape error asks of its repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorKind {
    /// A field the type does not have: removed.
    Unknown,
    /// A required field that is not there: given a placeholder.
    Missing,
    /// A value of the wrong type or an invalid one: removed when its field may be left out, else
    /// replaced by a placeholder.
    Invalid,
}

impl ErrorKind {
    fn of(error: &ShapeError) -> ErrorKind {
        if error.message.starts_with("unknown field `") {
            ErrorKind::Unknown
        } else if error.message.starts_with("missing required field `") {
            ErrorKind::Missing
        } else {
            ErrorKind::Invalid
        }
    }

    /// The values to try in turn at the error's place; `None` removes the field.
    fn candidates(self, field: &Step) -> Vec<Option<Value>> {
        let placeholders = placeholders().into_iter().map(Some);
        match self {
            ErrorKind::Unknown => vec![None],
            ErrorKind::Missing => placeholders.collect(),
            // A list item is replaced, never removed: the items after it would move.
            ErrorKind::Invalid if matches!(field, Step::Index(_)) => placeholders.collect(),
            ErrorKind::Invalid => std::iter::once(None).chain(placeholders).collect(),
        }
    }
}

/// Where an error is repaired: the steps to the map or list holding the field, and the field. `None`
/// for an error about the document as a whole.
fn repair_site(error: &ShapeError, kind: ErrorKind, mut steps: Vec<Step>) -> Option<(Vec<Step>, Step)> {
    if error.path.is_empty() {
        return None;
    }
    match kind {
        ErrorKind::Unknown | ErrorKind::Missing => {
            let field = error.message.split('`').nth(1)?.to_owned();
            // serde names an unknown field's path with or without the field itself.
            if kind == ErrorKind::Unknown && steps.last() == Some(&Step::Key(field.clone())) {
                steps.pop();
            }
            Some((steps, Step::Key(field)))
        }
        ErrorKind::Invalid => {
            let field = steps.pop()?;
            Some((steps, field))
        }
    }
}

/// One step of a path into the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// Values of each JSON type that the placeholder of a field is chosen from, the first that reads.
fn placeholders() -> Vec<Value> {
    vec![
        Value::Object(Map::new()),
        Value::String(String::new()),
        Value::from(0u8),
        Value::Bool(false),
        Value::Array(Vec::new()),
        Value::Null,
    ]
}

/// The error's steps into the tree, its field path as errors print it, and serde's message.
fn describe(failure: &serde_path_to_error::Error<serde_json::Error>) -> (Vec<Step>, String, String) {
    let mut steps = Vec::new();
    let mut path = String::new();
    for segment in failure.path().iter() {
        match segment {
            Segment::Seq { index } => {
                path = child_index_path(&path, *index);
                steps.push(Step::Index(*index));
            }
            Segment::Map { key } => {
                path = child_key_path(&path, key);
                steps.push(Step::Key(key.clone()));
            }
            // An externally tagged enum's variant is a map key in the tree too.
            Segment::Enum { variant } => {
                path = child_key_path(&path, variant);
                steps.push(Step::Key(variant.clone()));
            }
            Segment::Unknown => {
                path = child_key_path(&path, "?");
                steps.push(Step::Key(String::from("?")));
            }
        }
    }
    (steps, path, failure.inner().to_string())
}

/// Sets `field` of the node at `parent` to `value`, or removes it (`None`); whether the node was found.
fn replace(tree: &mut Value, parent: &[Step], field: &Step, value: Option<Value>) -> bool {
    let mut at = tree;
    for step in parent {
        let next = match (step, at) {
            (Step::Key(key), Value::Object(map)) => map.get_mut(key),
            (Step::Index(index), Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    match (field, at, value) {
        (Step::Key(key), Value::Object(map), Some(value)) => {
            map.insert(key.clone(), value);
            true
        }
        (Step::Key(key), Value::Object(map), None) => {
            map.remove(key);
            true
        }
        (Step::Index(index), Value::Array(items), Some(value)) => match items.get_mut(*index) {
            Some(item) => {
                *item = value;
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Roughly the bytes one read of `value` touches and copies: its text, and a node's worth per node.
fn read_cost(value: &Value) -> usize {
    const NODE: usize = 32;
    match value {
        Value::Array(items) => NODE + items.iter().map(read_cost).sum::<usize>(),
        Value::Object(entries) => {
            NODE + entries.iter().map(|(key, value)| key.len() + read_cost(value)).sum::<usize>()
        }
        Value::String(text) => NODE + text.len(),
        _ => NODE,
    }
}

/// Makes serde's messages say where and what, briefly: a missing field's path names the field, and an
/// unknown field suggests the closest known name instead of listing all of them.
fn rewrite_serde_message(path: String, message: String) -> ShapeError {
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        return ShapeError {
            path: child_key_path(&path, field),
            on_key: false,
            message: format!("missing required field `{field}`"),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let suggestion =
            closest(field, &known).map(|name| format!(", did you mean `{name}`?")).unwrap_or_default();
        return ShapeError { path, on_key: true, message: format!("unknown field `{field}`{suggestion}") };
    }
    ShapeError { path, on_key: false, message }
}

/// The known name closest to `field` by edit distance, when it is close enough to be a likely typo.
pub(crate) fn closest<'a>(field: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = field.to_ascii_lowercase();
    known
        .iter()
        .map(|name| (edit_distance(&lower, &name.to_ascii_lowercase()), *name))
        .filter(|(distance, name)| *distance <= 2.max(name.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}
