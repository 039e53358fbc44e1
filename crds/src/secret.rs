//! The `Secret` resource: named values (passwords, tokens) that containers take as environment
//! variables through `spec.secretEnv`, and that the API never shows back.
//!
//! `data` maps a key to its value as a plain UTF-8 string, not base64 as in Kubernetes: the only
//! consumer is a container's environment, which is text, and base64 would protect nothing while
//! suggesting it does (docs/secrets.md). A value is shown only as [`REDACTED`], with a keyed
//! fingerprint when the shower holds the store's fingerprint key ([`redact_object`]): the one form
//! in which the API, the CLI's diff and Debug output may carry it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::container::SecretKeyRef;
use crate::container::API_VERSION;
use crate::located::FieldError;
use crate::meta::{ObjectMeta, DEFAULT_NAMESPACE};

/// The `kind` of a [`Secret`].
pub const KIND_SECRET: &str = "Secret";

/// The most keys a secret holds: a secret is a handful of credentials, and each key becomes an
/// environment variable of every container that names it.
pub const MAX_SECRET_KEYS: usize = 1000;

/// The most bytes of keys and values a secret holds (128 KiB). Under the API's 256 KiB body limit
/// with room for JSON escaping, and the most one environment string may have on Linux
/// (`MAX_ARG_STRLEN`): a larger value could be stored but no container could start with it.
pub const MAX_SECRET_BYTES: usize = 128 << 10;

/// What stands for a value that must not be shown.
pub const REDACTED: &str = "<redacted>";

/// A secret: keys and their values, in one namespace. Its `Debug` shows the keys, never the values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    /// Key to value. Keys as Kubernetes has them: letters, digits, `-`, `_` and `.`.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// No controller reports on a secret; the slot exists because every resource has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SecretStatus>,
}

/// Nothing is reported on a secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretStatus {}

/// A value read from a secret: shown by `Debug` and `Display` as [`REDACTED`] only; [`Self::expose`]
/// is the one way to the text, for the container's environment.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> SecretValue {
        SecretValue(value.into())
    }

    /// The value itself: only for what hands it to the engine.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data: BTreeMap<&str, &str> = self.data.keys().map(|key| (key.as_str(), REDACTED)).collect();
        f.debug_struct("Secret")
            .field("api_version", &self.api_version)
            .field("kind", &self.kind)
            .field("metadata", &self.metadata)
            .field("data", &data)
            .finish()
    }
}

impl Secret {
    /// A secret of this crate's apiVersion in the default namespace.
    pub fn new(name: impl Into<String>, data: BTreeMap<String, String>) -> Secret {
        Secret {
            api_version: API_VERSION.to_owned(),
            kind: KIND_SECRET.to_owned(),
            metadata: ObjectMeta {
                name: name.into(),
                namespace: DEFAULT_NAMESPACE.to_owned(),
                ..ObjectMeta::default()
            },
            data,
            status: None,
        }
    }

    /// The value of `key`, if the secret has it.
    pub fn value(&self, key: &str) -> Option<SecretValue> {
        self.data.get(key).map(|value| SecretValue::new(value.clone()))
    }
}

/// The digest of one value that goes into the spec hash on the container (`io.kedge.spec-hash`):
/// SHA-256 over the value salted with where it is stored (namespace, object name, field path), so
/// that a new value makes a new hash and the container is recreated. Never shown by the API or the
/// CLI (they show [`redact_object`]'s keyed fingerprint): a short value could be guessed from it
/// offline, and the label it reaches is read only through the engine, which shows the value itself
/// in the container's env.
pub fn hash_digest(namespace: &str, name: &str, path: &str, value: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"kedge.io/v1 secret fingerprint\0");
    for part in [namespace, name, path, value] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

/// How a value is shown: [`REDACTED`] and its fingerprint.
pub fn redacted_value(fingerprint: &str) -> String {
    format!("{REDACTED} fingerprint:{fingerprint}")
}

/// Whether `text` is a value as [`redacted_value`] shows it (read back, not a real value).
pub fn is_redacted(text: &str) -> bool {
    text.starts_with(REDACTED)
}

/// Replaces every string of a sensitive object's JSON, except its envelope (`apiVersion`, `kind`,
/// `metadata`) and `status`, by its redacted form: [`REDACTED`] and `fingerprint(value)` when a
/// fingerprint is given (the API's, keyed by a key only the store holds: docs/secrets.md), else
/// [`REDACTED`] alone (the CLI, which has no key and so cannot fingerprint a local file). One rule
/// for every kind marked `Resource::SENSITIVE`; a kind needs no code of its own to be redacted.
pub fn redact_object(object: &mut Value, fingerprint: Option<&dyn Fn(&str) -> String>) {
    let Some(fields) = object.as_object_mut() else { return };
    for (field, value) in fields.iter_mut() {
        if matches!(field.as_str(), "apiVersion" | "kind" | "metadata" | "status") {
            continue;
        }
        redact_strings(value, &|text| match fingerprint {
            _ if is_redacted(text) => text.to_owned(),
            Some(fingerprint) => redacted_value(&fingerprint(text)),
            None => REDACTED.to_owned(),
        });
    }
}

fn redact_strings(value: &mut Value, redact: &dyn Fn(&str) -> String) {
    match value {
        Value::String(text) => *text = redact(text),
        Value::Array(items) => items.iter_mut().for_each(|item| redact_strings(item, redact)),
        Value::Object(fields) => fields.values_mut().for_each(|item| redact_strings(item, redact)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The shape errors of a secret document's `data` that serde would report quoting the value (a
/// number or boolean where a string belongs): checked before serde reads it, naming the key only.
pub fn data_shape_errors(document: &Value) -> Vec<FieldError> {
    let field = |path: String, message: &str| FieldError { path, message: message.to_owned(), on_key: false };
    match document.get("data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(data)) if data.len() > MAX_SECRET_KEYS => vec![field(
            "data".to_owned(),
            &format!("{} keys; a secret holds at most {MAX_SECRET_KEYS} keys", data.len()),
        )],
        Some(Value::Object(data)) => data
            .iter()
            .filter(|(_, value)| !value.is_string())
            .map(|(key, _)| field(format!("data.{key}"), "must be a string (quote numbers and booleans)"))
            .collect(),
        Some(_) => vec![field("data".to_owned(), "must be a map of keys to string values")],
    }
}

/// The limits of a secret's `data` ([`MAX_SECRET_KEYS`], [`MAX_SECRET_BYTES`]), as one message each
/// for the field `data`: how much there is and the limit, never a value.
pub fn data_limit_errors(data: &BTreeMap<String, String>) -> Vec<String> {
    let mut errors = Vec::new();
    if data.len() > MAX_SECRET_KEYS {
        errors.push(format!("{} keys; a secret holds at most {MAX_SECRET_KEYS} keys", data.len()));
    }
    let bytes: usize = data.iter().map(|(key, value)| key.len() + value.len()).sum();
    if bytes > MAX_SECRET_BYTES {
        errors.push(format!(
            "{} KiB of keys and values; a secret holds at most {} KiB",
            bytes.div_ceil(1024),
            MAX_SECRET_BYTES >> 10
        ));
    }
    errors
}

/// A key of a secret's `data`: letters, digits, `-`, `_` and `.`, at most 253 characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 253 {
        return Err(format!("`{key}` is not a valid key: it must have 1 to 253 characters"));
    }
    if let Some(bad) = key.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("`{key}` is not a valid key: `{bad}` is not a letter, digit, `-`, `_` or `.`"));
    }
    Ok(())
}

/// The values of a spec's `secretEnv`, read from the secrets of its namespace, by variable name,
/// with each value's [`hash_digest`] (what the spec hash takes instead of the value). `Debug` shows
/// the variables' names only: a digest is not keyed, so a log line must not carry it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedEnv {
    pub values: BTreeMap<String, SecretValue>,
    pub fingerprints: BTreeMap<String, String>,
}

impl fmt::Debug for ResolvedEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedEnv").field("variables", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

impl ResolvedEnv {
    /// Whether `variable` takes its value from a secret.
    pub fn is_secret(&self, variable: &str) -> bool {
        self.values.contains_key(variable)
    }
}

/// A `secretEnv` entry whose secret or key does not exist (yet): names, never values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingSecret {
    pub variable: String,
    pub secret: String,
    pub key: String,
    /// The secret exists but has no such key.
    pub secret_exists: bool,
}

impl fmt::Display for MissingSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let MissingSecret { variable, secret, key, secret_exists } = self;
        if *secret_exists {
            write!(f, "secret `{secret}` has no key `{key}` (for env {variable})")
        } else {
            write!(f, "secret `{secret}` not found (for env {variable}, key `{key}`)")
        }
    }
}

/// Reads every `secretEnv` entry of a spec in `namespace` through `lookup` (a secret by name): all
/// values, or the first entry (by variable name) whose secret or key is missing.
pub fn resolve_env(
    namespace: &str,
    secret_env: &BTreeMap<String, SecretKeyRef>,
    lookup: impl Fn(&str) -> Option<Secret>,
) -> Result<ResolvedEnv, MissingSecret> {
    let mut resolved = ResolvedEnv::default();
    for (variable, reference) in secret_env {
        let secret = lookup(&reference.secret);
        let Some(value) = secret.as_ref().and_then(|secret| secret.data.get(&reference.key)) else {
            return Err(MissingSecret {
                variable: variable.clone(),
                secret: reference.secret.clone(),
                key: reference.key.clone(),
                secret_exists: secret.is_some(),
            });
        };
        let path = format!("data.{}", reference.key);
        resolved
            .fingerprints
            .insert(variable.clone(), hash_digest(namespace, &reference.secret, &path, value));
        resolved.values.insert(variable.clone(), SecretValue::new(value.clone()));
    }
    Ok(resolved)
}

/// One mistake in an env file: its line (1-based) and what is wrong, never the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvFileError {
    pub line: usize,
    pub message: String,
}

/// Reads a `.env` file as Docker's `--env-file` and Compose read it: `KEY=VALUE` a line, blank lines
/// and lines starting with `#` skipped, an optional `export ` before the key, a value in matching
/// single or double quotes taken without them. Every bad line is reported, by number.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, Vec<EnvFileError>> {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            errors.push(EnvFileError {
                line: index + 1,
                message: "expected KEY=VALUE (a line without `=`)".to_owned(),
            });
            continue;
        };
        let key = key.trim();
        if let Err(why) = check_key(key) {
            errors.push(EnvFileError { line: index + 1, message: why });
            continue;
        }
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|quote| value.strip_prefix(*quote).and_then(|rest| rest.strip_suffix(*quote)))
            .filter(|_| value.len() >= 2);
        if unquoted.is_none() && (value.starts_with(['"', '\''])) {
            errors.push(EnvFileError {
                line: index + 1,
                message: format!("the value of `{key}` opens a quote it does not close"),
            });
            continue;
        }
        entries.push((key.to_owned(), unquoted.unwrap_or(value).to_owned()));
    }
    if errors.is_empty() {
        Ok(entries)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret::new("db", data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn debug_never_shows_a_value() {
        let secret = secret(&[("password", "hunter2-distinctive")]);
        let shown = format!(
            "{secret:?} {:?} {}",
            secret.value("password").unwrap(),
            secret.value("password").unwrap()
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("password") && shown.contains(REDACTED), "{shown}");
    }

    #[test]
    fn redaction_keeps_keys_and_tells_changes_apart() {
        // A stand-in for the API's keyed fingerprint (api/fingerprints.rs): any function of the value.
        let keyed = |text: &str| hex::encode(&Sha256::digest(format!("key:{text}"))[..8]);
        let redacted = |secret: &Secret, fingerprint: Option<&dyn Fn(&str) -> String>| {
            let mut value = serde_json::to_value(secret).unwrap();
            redact_object(&mut value, fingerprint);
            value
        };
        let one = redacted(&secret(&[("password", "hunter2"), ("user", "app")]), Some(&keyed));
        let text = one.to_string();
        assert!(!text.contains("hunter2") && !text.contains("\"app\""), "{text}");
        assert_eq!(one["metadata"]["name"], json!("db"), "the envelope is kept");
        assert_eq!(one["data"]["password"], json!(redacted_value(&keyed("hunter2"))));
        let changed = redacted(&secret(&[("password", "hunter3"), ("user", "app")]), Some(&keyed));
        assert_ne!(one["data"]["password"], changed["data"]["password"]);
        assert_eq!(one["data"]["user"], changed["data"]["user"]);
        // Without a key, the value alone is held back.
        let unkeyed = redacted(&secret(&[("password", "hunter2")]), None);
        assert_eq!(unkeyed["data"]["password"], json!(REDACTED));
        // Redacting twice changes nothing.
        let mut again = one.clone();
        redact_object(&mut again, Some(&keyed));
        assert_eq!(again, one);
        let debug = format!("{:?}", resolve_env("default", &BTreeMap::new(), |_| None).unwrap());
        assert_eq!(debug, "ResolvedEnv { variables: [] }");
    }

    #[test]
    fn a_secret_past_its_limits_is_one_error_naming_the_limit() {
        let check = |data: BTreeMap<String, String>, expected: &[&str]| {
            let errors = crate::validate::validate_secret(&Secret::new("big", data));
            let messages: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
            assert_eq!(messages, expected);
        };
        let keys = |count: usize| (0..count).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        check(keys(MAX_SECRET_KEYS), &[]);
        check(
            keys(100_000),
            &[
                "data: 100000 keys; a secret holds at most 1000 keys",
                "data: 673 KiB of keys and values; a secret holds at most 128 KiB",
            ],
        );
        check([("blob".to_owned(), "x".repeat(MAX_SECRET_BYTES - 4))].into(), &[]);
        check(
            [("blob".to_owned(), "x".repeat(10 << 20))].into(),
            &["data: 10241 KiB of keys and values; a secret holds at most 128 KiB"],
        );
        let document = serde_json::json!({"data": (0..2000).map(|i| (format!("k{i}"), json!(i))).collect::<serde_json::Map<_, _>>()});
        let shape: Vec<String> = data_shape_errors(&document).into_iter().map(|e| e.message).collect();
        assert_eq!(
            shape,
            ["2000 keys; a secret holds at most 1000 keys"],
            "one error, before any per-key one"
        );
    }

    #[test]
    fn validation_names_the_field_and_never_the_value() {
        let check = |data: &[(&str, &str)], expected: &[&str]| {
            let errors = crate::validate::validate_secret(&secret(data));
            let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(paths, expected, "{errors:?}");
            for error in &errors {
                assert!(!error.message.contains("hunter2"), "{error:?}");
            }
        };
        check(&[("password", "hunter2")], &[]);
        check(&[("pass word", "hunter2")], &["data.pass word"]);
        check(&[("password", "<redacted> fingerprint:0011")], &["data.password"]);
        let mut bad = secret(&[]);
        bad.metadata.name = "Not_A_Name".into();
        bad.kind = "Secrets".into();
        let paths: Vec<String> = crate::validate::validate_secret(&bad).into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["kind", "metadata.name"]);
    }

    #[test]
    fn resolving_names_what_is_missing_and_fingerprints_what_is_found() {
        let refs: BTreeMap<String, SecretKeyRef> =
            [("DB_PASSWORD".to_owned(), SecretKeyRef { secret: "db".into(), key: "password".into() })].into();
        let stored = secret(&[("password", "hunter2")]);
        let resolved = resolve_env("default", &refs, |name| (name == "db").then(|| stored.clone())).unwrap();
        assert_eq!(resolved.values["DB_PASSWORD"].expose(), "hunter2");
        assert_eq!(
            resolved.fingerprints["DB_PASSWORD"],
            hash_digest("default", "db", "data.password", "hunter2")
        );
        assert!(!format!("{resolved:?}").contains("hunter2"));
        let missing = resolve_env("default", &refs, |_| None).unwrap_err();
        assert_eq!(missing.to_string(), "secret `db` not found (for env DB_PASSWORD, key `password`)");
        let other = secret(&[("user", "app")]);
        let missing = resolve_env("default", &refs, |_| Some(other.clone())).unwrap_err();
        assert_eq!(missing.to_string(), "secret `db` has no key `password` (for env DB_PASSWORD)");
    }

    #[test]
    fn secret_env_errors_name_file_line_and_field() {
        let text = "apiVersion: kedge.io/v1\nkind: Container\nmetadata: {name: web}\nspec:\n  image: nginx\n  env: {A: '1'}\n  secretEnv:\n    A: {secret: db, key: password}\n    B: {secret: Bad_Name, key: 'a b'}\n    C: {secret: db}\n";
        let errors = crate::load_str("web.yaml", text).unwrap_err().to_string();
        let expected = [
            "web.yaml:8:5: spec.secretEnv.A: `A` is also in `spec.env`",
            "web.yaml:9:17: spec.secretEnv.B.secret: `Bad_Name` is not a valid secret name",
            "web.yaml:9:32: spec.secretEnv.B.key: `a b` is not a valid key",
            "web.yaml:10:8: spec.secretEnv.C.key: missing required field `key`",
        ];
        for line in expected {
            assert!(errors.contains(line), "{line}\nnot in\n{errors}");
        }
    }

    #[test]
    fn secret_files_parse_and_their_errors_never_quote_a_value() {
        let good =
            "apiVersion: kedge.io/v1\nkind: Secret\nmetadata: {name: db}\ndata:\n  password: hunter2\n";
        let (objects, errors) = crate::parse_objects_str("db.yaml", good);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(objects.secrets[0].secret.data["password"], "hunter2");
        let bad =
            "apiVersion: kedge.io/v1\nkind: Secret\nmetadata: {name: db}\ndata:\n  pin: 918273\n  ok: x\n";
        let (_, errors) = crate::parse_objects_str("db.yaml", bad);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["db.yaml:5:8: data.pin: must be a string (quote numbers and booleans)"]);
        let redacted = "apiVersion: kedge.io/v1\nkind: Secret\nmetadata: {name: db}\ndata:\n  password: '<redacted> fingerprint:00'\n";
        let (_, errors) = crate::parse_objects_str("db.yaml", redacted);
        assert_eq!(errors[0].path, "data.password", "{errors:?}");
        assert_eq!(errors[0].line, 5, "{errors:?}");
    }

    #[test]
    fn env_files_read_as_docker_reads_them_and_errors_name_the_line() {
        let text = "# comment\n\nA=1\nexport B = two words \nC=\"quoted=\"\nD='x'\nE=\n";
        let entries = parse_env_file(text).unwrap();
        let expected = [("A", "1"), ("B", "two words"), ("C", "quoted="), ("D", "x"), ("E", "")];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(entries, expected);
        let errors = parse_env_file("A=1\nno equals sign\nB=\"s3cr3t\nbad key=1\n").unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4], "{errors:?}");
        assert!(errors.iter().all(|e| !e.message.contains("s3cr3t")), "never the value: {errors:?}");
    }
}
