//! `spec_hash`: a stable fingerprint of a spec, which the controller puts on containers as a label.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::container::ContainerSpec;

/// The SHA-256 (lowercase hex) of the spec's canonical JSON: fields in sorted order, quantities in their
/// canonical form, fields that are not declared left out. Two specs that parse to the same value hash the
/// same, however their files were written (key order, short or long forms, `512m` or `512Mi`).
pub fn spec_hash(spec: &ContainerSpec) -> String {
    spec_hash_with_secrets(spec, &BTreeMap::new())
}

/// [`spec_hash`] with the fingerprint of each `secretEnv` variable's value (by variable name) in
/// its entry, so that a changed secret value changes the hash, which never holds the value itself.
/// With no fingerprints, equal to [`spec_hash`].
pub fn spec_hash_with_secrets(spec: &ContainerSpec, fingerprints: &BTreeMap<String, String>) -> String {
    let mut value = serde_json::to_value(spec).expect("a ContainerSpec always serializes to JSON");
    for (variable, fingerprint) in fingerprints {
        if let Some(entry) =
            value.pointer_mut(&format!("/secretEnv/{}", variable.replace('~', "~0").replace('/', "~1")))
        {
            entry["fingerprint"] = serde_json::Value::String(fingerprint.clone());
        }
    }
    // The run state says whether the container runs, not what it is: stopping is not a new container.
    if let Some(fields) = value.as_object_mut() {
        fields.remove("runState");
    }
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Writes JSON with object keys sorted, whatever map type serde_json was built with.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_sensitive() {
        let spec = ContainerSpec { image: "kedge-test/app:v1".parse().unwrap(), ..ContainerSpec::default() };
        let same = spec.clone();
        let other = ContainerSpec { image: "kedge-test/app:v2".parse().unwrap(), ..ContainerSpec::default() };
        assert_eq!(spec_hash(&spec), spec_hash(&same));
        assert_ne!(spec_hash(&spec), spec_hash(&other));
        assert_eq!(spec_hash(&spec).len(), 64);
    }

    #[test]
    fn a_secret_fingerprint_changes_the_hash_and_its_value_is_not_in_it() {
        let mut spec =
            ContainerSpec { image: "kedge-test/app:v1".parse().unwrap(), ..ContainerSpec::default() };
        let reference = crate::SecretKeyRef { secret: "db".into(), key: "password".into() };
        spec.secret_env.insert("DB_PASSWORD".into(), reference);
        let none = BTreeMap::new();
        assert_eq!(spec_hash_with_secrets(&spec, &none), spec_hash(&spec));
        let one: BTreeMap<String, String> = [("DB_PASSWORD".to_owned(), "aaaa".to_owned())].into();
        let two: BTreeMap<String, String> = [("DB_PASSWORD".to_owned(), "bbbb".to_owned())].into();
        assert_ne!(spec_hash_with_secrets(&spec, &one), spec_hash(&spec));
        assert_ne!(spec_hash_with_secrets(&spec, &one), spec_hash_with_secrets(&spec, &two));
    }
}
