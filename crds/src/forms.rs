//! Serde plumbing for fields users may write in a short string form or a long map form, and for string
//! fields that YAML users fill with numbers (`command: [sleep, 3600]`, `PORT: 8080`).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A type with a short string form (`8080:80/tcp`) besides its long map form.
pub(crate) trait ShortForm: Sized {
    /// The map form, deserialized with `deny_unknown_fields`.
    type Long: DeserializeOwned + Into<Self>;
    /// What the short form looks like, for error messages: "a port such as `8080:80/tcp`".
    const EXPECTING: &'static str;
    fn parse_short(text: &str) -> Result<Self, String>;
}

/// Deserializes a [`ShortForm`] type from either form.
pub(crate) fn short_or_long<'de, D: Deserializer<'de>, T: ShortForm>(deserializer: D) -> Result<T, D::Error> {
    struct ShortOrLongVisitor<T>(PhantomData<T>);

    impl<'de, T: ShortForm> Visitor<'de> for ShortOrLongVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} or a map", T::EXPECTING)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            T::parse_short(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, number: u64) -> Result<T, E> {
            self.visit_str(&number.to_string())
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::Long::deserialize(de::value::MapAccessDeserializer::new(map)).map(Into::into)
        }
    }

    deserializer.deserialize_any(ShortOrLongVisitor(PhantomData))
}

/// The schema of a [`ShortForm`] type: a string (described) or the long form's object.
pub(crate) fn short_or_long_schema<L: JsonSchema>(generator: &mut SchemaGenerator, short: &str) -> Schema {
    let long = generator.subschema_for::<L>();
    json_schema!({
        "anyOf": [
            { "type": "string", "description": short },
            long
        ]
    })
}

/// A string that YAML may have typed as a number or a boolean; the scalar's text is kept.
struct LenientString;

impl Visitor<'_> for LenientString {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<String, E> {
        Ok(text.to_owned())
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<String, E> {
        Ok(text)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<String, E> {
        Ok(value.to_string())
    }
}

struct LenientStringSeed;

impl<'de> de::DeserializeSeed<'de> for LenientStringSeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(LenientString)
    }
}

/// `Option<String>` accepting numbers: `user: 1000`.
pub(crate) fn lenient_opt_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    deserializer.deserialize_any(LenientString).map(Some)
}

/// `Vec<String>` accepting numbers: `command: [sleep, 3600]`.
pub(crate) fn lenient_vec<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct VecVisitor;

    impl<'de> Visitor<'de> for VecVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element_seed(LenientStringSeed)? {
                items.push(item);
            }
            Ok(items)
        }
    }

    deserializer.deserialize_seq(VecVisitor)
}

/// `Option<Vec<String>>` accepting numbers.
pub(crate) fn lenient_opt_vec<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    lenient_vec(deserializer).map(Some)
}

/// A string-to-string map accepting numbers and booleans as values (`PORT: 8080`), or, as Compose allows for
/// `environment`, a list of `KEY=VALUE` strings.
pub(crate) fn lenient_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct MapVisitor;

    impl<'de> Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings or a list of `KEY=VALUE` strings")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            lenient_entries(map)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some(item) = seq.next_element::<String>()? {
                let (key, value) = key_value(&item)?;
                entries.insert(key, value);
            }
            Ok(entries)
        }
    }

    deserializer.deserialize_any(MapVisitor)
}

/// A map's entries, values lenient (numbers and booleans as strings).
fn lenient_entries<'de, A: MapAccess<'de>>(mut map: A) -> Result<BTreeMap<String, String>, A::Error> {
    let mut entries = BTreeMap::new();
    while let Some(key) = map.next_key::<String>()? {
        let value = map.next_value_seed(LenientStringSeed)?;
        entries.insert(key, value);
    }
    Ok(entries)
}

/// `KEY=VALUE` split at its first `=`.
fn key_value<E: de::Error>(item: &str) -> Result<(String, String), E> {
    match item.split_once('=') {
        Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
        None => Err(E::custom(format!("`{item}` is not of the form KEY=VALUE"))),
    }
}

/// An env map ([`lenient_map`]'s forms), or a list whose items are `KEY=VALUE` strings or, as
/// Kubernetes writes env, `{name: KEY, value: VALUE}` maps (which kubectl users type first). A
/// Kubernetes `valueFrom` is refused with the kedge way to say it (`secretEnv`).
pub(crate) fn env_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct EnvVisitor;

    impl<'de> Visitor<'de> for EnvVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map of strings, or a list of `KEY=VALUE` strings or `{name, value}` maps")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            lenient_entries(map)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some((key, value)) = seq.next_element_seed(EnvItemSeed)? {
                entries.insert(key, value);
            }
            Ok(entries)
        }
    }

    deserializer.deserialize_any(EnvVisitor)
}

/// One item of an env list: `KEY=VALUE`, or `{name: KEY, value: VALUE}` (`value` may be left out:
/// an empty value, as in Kubernetes).
struct EnvItemSeed;

impl<'de> de::DeserializeSeed<'de> for EnvItemSeed {
    type Value = (String, String);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EnvItemSeed {
    type Value = (String, String);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a `KEY=VALUE` string or a `{name, value}` map")
    }

    fn visit_str<E: de::Error>(self, item: &str) -> Result<Self::Value, E> {
        key_value(item)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut value) = (None, None);
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "name" => name = Some(map.next_value::<String>()?),
                "value" => value = Some(map.next_value_seed(LenientStringSeed)?),
                "valueFrom" => {
                    return Err(de::Error::custom(
                        "`valueFrom` is Kubernetes'; take a value from a kedge secret with \
                         `secretEnv: {NAME: {secret: SECRET, key: KEY}}` (docs/secrets.md)",
                    ))
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown field `{other}` in an env item; expected `name` and `value`"
                    )))
                }
            }
        }
        let name = name.ok_or_else(|| de::Error::custom("an env item without `name`"))?;
        Ok((name, value.unwrap_or_default()))
    }
}

/// Schema of [`env_map`].
pub(crate) fn env_map_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } },
            { "type": "array", "items": { "anyOf": [
                { "type": "string", "pattern": "=" },
                {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "value": { "type": ["string", "number", "boolean"] }
                    },
                    "required": ["name"],
                    "additionalProperties": false
                }
            ] } }
        ]
    })
}

/// Schema for string fields that also accept numbers and booleans.
pub(crate) fn lenient_string_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": ["string", "number", "boolean"] })
}

pub(crate) fn lenient_vec_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": ["string", "number", "boolean"] } })
}

pub(crate) fn lenient_map_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } },
            { "type": "array", "items": { "type": "string", "pattern": "=" } }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct WithEnv {
        #[serde(deserialize_with = "env_map")]
        env: BTreeMap<String, String>,
    }

    fn env(json: &str) -> BTreeMap<String, String> {
        serde_json::from_str::<WithEnv>(json).expect(json).env
    }

    #[test]
    fn env_takes_a_map_key_value_strings_and_the_kubernetes_form_alike() {
        let expected: BTreeMap<String, String> =
            [("MODE", "prod"), ("PORT", "8080"), ("EMPTY", "")].map(|(k, v)| (k.into(), v.into())).into();
        assert_eq!(env(r#"{"env": {"MODE": "prod", "PORT": 8080, "EMPTY": ""}}"#), expected);
        assert_eq!(env(r#"{"env": ["MODE=prod", "PORT=8080", "EMPTY="]}"#), expected);
        assert_eq!(
            env(
                r#"{"env": [{"name": "MODE", "value": "prod"}, {"name": "PORT", "value": 8080}, {"name": "EMPTY"}]}"#
            ),
            expected
        );
        assert_eq!(env(r#"{"env": ["MODE=prod", {"name": "PORT", "value": 8080}, "EMPTY="]}"#), expected);
        // As a user writes it in YAML.
        let yaml =
            "apiVersion: kedge.io/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  image: app:v1\n  \
                    env:\n  - name: MODE\n    value: prod\n  - {name: PORT, value: 8080}\n  - name: EMPTY\n";
        let specs = crate::parse::load_str("web.yaml", yaml).expect("the Kubernetes env form is accepted");
        assert_eq!(specs[0].spec.env, expected);
    }
}
