//! The checked-in JSON Schema matches the types. To regenerate it:
//! `KEDGE_UPDATE_SCHEMA=1 cargo test -p kedge-crds --test schema`.

use std::path::Path;

#[test]
fn checked_in_schema_is_current() {
    check_schema("schema/container.schema.json", kedge_crds::schema_json());
}

#[test]
fn checked_in_set_schema_is_current() {
    check_schema("schema/containerset.schema.json", kedge_crds::set_schema_json());
}

fn check_schema(file: &str, generated: String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    if std::env::var_os("KEDGE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write the schema");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{} is stale; regenerate it with `KEDGE_UPDATE_SCHEMA=1 cargo test -p kedge-crds --test schema`",
        path.display()
    );
}

#[test]
fn schema_rejects_unknown_fields_and_names_required_ones() {
    let schema: serde_json::Value = serde_json::from_str(&kedge_crds::schema_json()).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], serde_json::json!(["apiVersion", "kind", "metadata", "spec"]));
    let spec = &schema["$defs"]["ContainerSpec"];
    assert_eq!(spec["additionalProperties"], false);
    assert_eq!(spec["required"], serde_json::json!(["image"]));
    assert!(spec["properties"]["ports"]["items"]["$ref"].as_str().is_some());
}
