//! The JSON Schema of the `Container` resource, generated from the types. A copy is checked in at
//! `crds/schema/container.schema.json`; a test fails when that copy is stale.

use crate::container::Container;

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
