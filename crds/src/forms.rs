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

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(LenientStringSeed)?;
                entries.insert(key, value);
            }
            Ok(entries)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some(item) = seq.next_element::<String>()? {
                match item.split_once('=') {
                    Some((key, value)) => entries.insert(key.to_owned(), value.to_owned()),
                    None => return Err(de::Error::custom(format!("`{item}` is not of the form KEY=VALUE"))),
                };
            }
            Ok(entries)
        }
    }

    deserializer.deserialize_any(MapVisitor)
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
