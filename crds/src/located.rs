//! Where a document of a spec file came from, and the errors that point into it: the parsed
//! documents of both kinds, [`SpecError`] (file, line, column, field path) and [`FieldError`] (a rule
//! broken by one field, before it is placed). Shared by `parse` (which makes them) and `validate`
//! (which reports on them), so neither depends on the other for them.

use std::collections::HashMap;
use std::fmt;

use crate::container::Container;
use crate::container_set::ContainerSet;
use crate::yaml::{Position, PositionIndex};

/// A `Container` read from a file, with where it came from.
#[derive(Clone, Debug)]
pub struct ParsedContainer {
    pub container: Container,
    /// The file as it was named (or `<stdin>`, or what the caller passed to [`crate::parse_str`]).
    pub file: String,
    /// Where the document starts.
    pub position: Position,
    /// Where each field of the document is, to point errors found later at it.
    pub(crate) positions: PositionIndex,
}

/// A `ContainerSet` read from a file, with where it came from.
#[derive(Clone, Debug)]
pub struct ParsedContainerSet {
    pub set: ContainerSet,
    pub file: String,
    pub position: Position,
    pub(crate) positions: PositionIndex,
}

/// One problem in a spec file. Displays as `FILE:LINE:COL: PATH: MESSAGE`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecError {
    pub file: String,
    /// 1-based; 0 when the error is about the file as a whole (it cannot be read).
    pub line: usize,
    /// 1-based; 0 when the error is about the file as a whole.
    pub column: usize,
    /// The field path (`spec.ports[1].hostPort`); empty for errors about the document or file as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        // A message may quote the value it is about, and a hostile value can be megabytes long: one
        // error stays one readable line.
        match self.message.char_indices().nth(MAX_MESSAGE_CHARS) {
            Some((cut, _)) => write!(
                f,
                ": {}... (the message is {} bytes; shortened)",
                &self.message[..cut],
                self.message.len()
            ),
            None => write!(f, ": {}", self.message),
        }
    }
}

/// How much of a [`SpecError`]'s message is displayed.
const MAX_MESSAGE_CHARS: usize = 500;

impl std::error::Error for SpecError {}

/// A rule broken by one field of one container, before it is placed in a file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldError {
    /// `spec.ports[1].hostPort`.
    pub path: String,
    pub message: String,
    /// The error is about a map key (an environment variable's or label's name), not its value.
    pub on_key: bool,
}

/// A parsed document: its file, where it starts, and where each of its fields is.
pub(crate) trait Located {
    fn origin(&self) -> Origin<'_>;

    /// The position of the field at `path` (`spec.ports[1]`), or of its nearest ancestor in the file.
    fn position_of(&self, path: &str) -> Position {
        let origin = self.origin();
        origin.positions.value_position(path).unwrap_or(origin.start)
    }

    /// An error about the field at `path` of this document.
    fn error_at(&self, path: &str, message: impl Into<String>) -> SpecError {
        error_in(self.origin().file, self.position_of(path), path, message)
    }

    /// An error about the key of the map entry at `path` (`spec.env.FOO`: the name `FOO` itself).
    fn error_at_key(&self, path: &str, message: impl Into<String>) -> SpecError {
        let origin = self.origin();
        error_in(origin.file, origin.positions.key_position(path).unwrap_or(origin.start), path, message)
    }

    /// A rule broken by one of this document's fields, placed at the field (or its key).
    fn field_error(&self, error: FieldError) -> SpecError {
        if error.on_key {
            self.error_at_key(&error.path, error.message)
        } else {
            self.error_at(&error.path, error.message)
        }
    }
}

impl ParsedContainer {
    /// An error about one of this document's fields (found later, by a server, say), placed in the
    /// file at the field: `FILE:LINE:COL: PATH: MESSAGE`.
    pub fn place(&self, error: FieldError) -> SpecError {
        self.field_error(error)
    }
}

impl ParsedContainerSet {
    /// An error about one of this document's fields, placed in the file at the field.
    pub fn place(&self, error: FieldError) -> SpecError {
        self.field_error(error)
    }
}

/// What [`Located`] needs of a document.
pub(crate) struct Origin<'a> {
    file: &'a str,
    start: Position,
    positions: &'a PositionIndex,
}

impl Located for ParsedContainer {
    fn origin(&self) -> Origin<'_> {
        Origin { file: &self.file, start: self.position, positions: &self.positions }
    }
}

impl Located for ParsedContainerSet {
    fn origin(&self) -> Origin<'_> {
        Origin { file: &self.file, start: self.position, positions: &self.positions }
    }
}

/// The first document of each key; every later one with the same key is a `duplicate {what}` error
/// pointing at the first.
pub(crate) fn first_of_each_key<'a, T: Located>(
    documents: &'a [T],
    what: &str,
    key: impl Fn(&T) -> String,
    errors: &mut Vec<SpecError>,
) -> HashMap<String, &'a T> {
    let mut first_by_key: HashMap<String, &T> = HashMap::new();
    for document in documents {
        let key = key(document);
        match first_by_key.get(&key) {
            Some(first) => {
                let position = first.position_of("metadata.name");
                let first_file = first.origin().file;
                errors.push(document.error_at(
                    "metadata.name",
                    format!(
                        "duplicate {what} `{key}`, first defined at {first_file}:{}:{}",
                        position.line, position.column
                    ),
                ));
            }
            None => {
                first_by_key.insert(key, document);
            }
        }
    }
    first_by_key
}

/// An error about the field at `path` of a document of `file`, found at `position`.
fn error_in(file: &str, position: Position, path: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        file: file.to_owned(),
        line: position.line,
        column: position.column,
        path: path.to_owned(),
        message: message.into(),
    }
}
