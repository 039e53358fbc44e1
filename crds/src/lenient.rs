//! Reading what another kedge stored: fields this version does not know are set aside and named
//! instead of failing the read.
//!
//! The API refuses unknown fields (a typo must not be applied silently), but the store may hold a
//! spec or status written by a newer kedge during a rolling upgrade, or by hand. An older reader that
//! refused those would stop working on the whole list; this one reads what it understands and reports
//! the rest, so the caller can say so.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// A value read leniently, and the paths of the fields that were set aside (`spec.newThing`).
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient<T> {
    pub value: T,
    pub ignored: Vec<String>,
}

/// At most this many unknown fields are set aside before the value is called unreadable.
const MAX_IGNORED: usize = 64;

/// Decodes JSON `bytes` as `T`, dropping each field `T` does not know (one at a time, as serde names
/// them). Any other error (a wrong type, a missing field, not JSON) is an error with its field path.
pub fn from_json_lenient<T: DeserializeOwned>(bytes: &[u8]) -> Result<Lenient<T>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    from_value_lenient(value)
}

/// [`from_json_lenient`] of a JSON value already parsed (an API answer, say).
pub fn from_value_lenient<T: DeserializeOwned>(mut value: Value) -> Result<Lenient<T>, String> {
    let mut ignored = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(decoded) => return Ok(Lenient { value: decoded, ignored }),
            Err(error) => error,
        };
        let path = error.path().to_string();
        let message = error.inner().to_string();
        let unknown = message.strip_prefix("unknown field `").and_then(|rest| rest.split('`').next());
        let removed = match unknown {
            Some(field) if ignored.len() < MAX_IGNORED => remove_field(&mut value, error.path(), field),
            _ => false,
        };
        if !removed {
            return Err(if path == "." { message } else { format!("{path}: {message}") });
        }
        ignored.push(path);
    }
}

/// Removes `field` from the object at `path` (or at its parent, when the path ends in the field
/// itself); whether something was removed.
fn remove_field(value: &mut Value, path: &serde_path_to_error::Path, field: &str) -> bool {
    let mut segments: Vec<&serde_path_to_error::Segment> = path.iter().collect();
    if matches!(segments.last(), Some(serde_path_to_error::Segment::Map { key }) if key == field) {
        segments.pop();
    }
    let mut at = value;
    for segment in segments {
        at = match (segment, at) {
            (serde_path_to_error::Segment::Map { key }, Value::Object(map)) => match map.get_mut(key) {
                Some(next) => next,
                None => return false,
            },
            (serde_path_to_error::Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index)
            {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match at {
        Value::Object(map) => map.remove(field).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Container, ContainerStatus};

    #[test]
    fn unknown_fields_anywhere_are_set_aside_and_named() {
        let json = br#"{"apiVersion":"kedge.io/v1","kind":"Container","futureTop":1,
            "metadata":{"name":"web","futureMeta":"x"},
            "spec":{"image":"nginx:1.27","ports":[{"containerPort":80,"futurePort":true}],"futureSpec":{"a":1}}}"#;
        let read = from_json_lenient::<Container>(json).unwrap();
        assert_eq!(read.value.metadata.name, "web");
        assert_eq!(read.value.spec.ports.len(), 1);
        let mut ignored = read.ignored.clone();
        ignored.sort();
        assert_eq!(ignored.len(), 4, "{ignored:?}");
        assert!(ignored.iter().any(|p| p.contains("futureSpec")), "{ignored:?}");
        assert!(ignored.iter().any(|p| p.contains("futurePort")), "{ignored:?}");
    }

    #[test]
    fn a_wrong_type_is_still_an_error_with_its_path() {
        let json = br#"{"apiVersion":"kedge.io/v1","kind":"Container","metadata":{"name":"web"},
            "spec":{"image":"nginx","ports":[{"containerPort":"eighty"}]}}"#;
        let error = from_json_lenient::<Container>(json).unwrap_err();
        assert!(error.contains("spec.ports[0].containerPort"), "{error}");
        assert!(from_json_lenient::<Container>(b"{not json").is_err());
    }

    #[test]
    fn a_status_from_a_newer_agent_reads() {
        let json = br#"{"conditions":[],"restartCount":0,"futureField":{"x":1}}"#;
        let read = from_json_lenient::<ContainerStatus>(json).unwrap();
        assert_eq!(read.ignored.len(), 1, "{:?}", read.ignored);
    }
}
