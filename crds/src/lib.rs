//! kedge's API types: the `Container` resource, its JSON Schema, parsing and validation.
//!
//! This crate is the API boundary. It holds plain data with serde and schemars derives and the rules
//! that decide whether a document is valid. It does no IO beyond reading the files it is asked to parse
//! and knows nothing of tokio, Docker or the store.
