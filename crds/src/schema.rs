//! The JSON Schemas of the `Container` and `ContainerSet` resources, generated from the types. Copies
//! are checked in at `crds/schema/container.schema.json` and `crds/schema/containerset.schema.json`; a
//! test fails when a copy is stale.

use crate::container::Container;
use crate::container_set::ContainerSet;

/// The JSON Schema (draft 2020-12) of a `Container` document.
pub fn schema() -> schemars::Schema {
    let mut schema = schemars::schema_for!(Container);
    schema.insert("$id".to_owned(), "https://kedge.io/schemas/v1/container.schema.json".into());
    schema
}

/// [`schema`] as pretty-printed JSON with a final newline: what `kedge schema` prints and the checked-in
/// file holds.
pub fn schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).expect("a schema always serializes");
    text.push('\n');
    text
}

/// The JSON Schema (draft 2020-12) of a `ContainerSet` document.
pub fn set_schema() -> schemars::Schema {
    let mut schema = schemars::schema_for!(ContainerSet);
    schema.insert("$id".to_owned(), "https://kedge.io/schemas/v1/containerset.schema.json".into());
    schema
}

/// The JSON Schema of a GitSource (`kedge schema gitsource`).
pub fn gitsource_schema_json() -> String {
    let mut schema = schemars::schema_for!(crate::gitsource::GitSource);
    schema.insert("$id".to_owned(), "https://kedge.io/schemas/v1/gitsource.schema.json".into());
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
    text.push('\n');
    text
}

/// [`set_schema`] as pretty-printed JSON with a final newline (the checked-in file).
pub fn set_schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&set_schema()).expect("a schema always serializes");
    text.push('\n');
    text
}
