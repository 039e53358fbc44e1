//! Human-written quantities: byte sizes (`512Mi`), CPU counts (`1.5`) and durations (`1m30s`).
//!
//! Each type keeps a typed value (bytes, nano-CPUs, a `std::time::Duration`), accepts the forms Docker,
//! Compose and Kubernetes users write, and serializes back to one canonical string, so that parsing the
//! canonical form gives the same value again.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes. Units are binary, as Docker reads them: `b`, `k`/`Ki`/`kb`, `m`/`Mi`/`mb`, `g`/`Gi`,
/// `t`/`Ti`, `p`/`Pi` (any case), with an optional fraction (`1.5Gi`). A bare number is bytes.
///
/// The canonical form uses the largest binary unit that divides the value exactly: `512Mi`, `1536Mi`, `1000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// A number of CPUs, stored as nano-CPUs as Docker's `NanoCpus` does: `1.5`, `0.25`, `2` or `500m` (milli-CPUs).
///
/// The canonical form is a decimal string without trailing zeros: `1.5`, `2`, `0.001`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NanoCpus(pub u64);

/// `memorySwap`: a byte size that must cover `memory`, or `-1` for unlimited swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemorySwap {
    /// `-1`: no swap limit.
    Unlimited,
    /// The total of memory and swap the container may use.
    Limit(ByteSize),
}

/// A duration written as Go and Docker write them: `30s`, `1m30s`, `500ms`, `1.5h`, `2h45m`. Units: `ns`, `us`
/// (or `µs`), `ms`, `s`, `m`, `h`. A bare `0` is allowed.
///
/// The canonical form is hours, minutes, seconds and one sub-second unit: `1h30m`, `1m30s`, `1s500ms`, `0s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub std::time::Duration);

const BINARY_UNITS: [(&str, u64); 5] =
    [("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl NanoCpus {
    /// The value Docker's `HostConfig.NanoCpus` takes.
    pub fn nanos(self) -> u64 {
        self.0
    }
}

impl HumanDuration {
    /// Builds one from whole seconds.
    pub fn from_secs(secs: u64) -> Self {
        HumanDuration(std::time::Duration::from_secs(secs))
    }

    /// The duration.
    pub fn duration(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!("invalid byte size `{text}`: expected a number with an optional unit such as `512Mi`, `1g` or `1048576`")
        };
        let trimmed = text.trim();
        let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let mut unit = unit.trim().to_ascii_lowercase();
        if unit.len() > 1 && unit.ends_with('b') {
            unit.pop();
        }
        let multiplier: u64 = match unit.as_str() {
            "" | "b" => 1,
            "k" | "ki" => 1 << 10,
            "m" | "mi" => 1 << 20,
            "g" | "gi" => 1 << 30,
            "t" | "ti" => 1 << 40,
            "p" | "pi" => 1 << 50,
            _ => return Err(invalid()),
        };
        let value = parse_decimal_scaled(number, multiplier).ok_or_else(invalid)?;
        Ok(ByteSize(value))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 {
            for (suffix, size) in BINARY_UNITS {
                if self.0 % size == 0 {
                    return write!(f, "{}{suffix}", self.0 / size);
                }
            }
        }
        write!(f, "{}", self.0)
    }
}

impl FromStr for NanoCpus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!("invalid CPU count `{text}`: expected a decimal number such as `1.5` or milli-CPUs such as `500m`")
        };
        let trimmed = text.trim();
        let value = match trimmed.strip_suffix('m') {
            Some(millis) => parse_decimal_scaled(millis, 1_000_000),
            None => parse_decimal_scaled(trimmed, 1_000_000_000),
        };
        value.map(NanoCpus).ok_or_else(invalid)
    }
}

impl fmt::Display for NanoCpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000_000;
        let fraction = self.0 % 1_000_000_000;
        if fraction == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{fraction:09}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for MemorySwap {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "-1" {
            return Ok(MemorySwap::Unlimited);
        }
        text.parse::<ByteSize>().map(MemorySwap::Limit)
    }
}

impl fmt::Display for MemorySwap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemorySwap::Unlimited => f.write_str("-1"),
            MemorySwap::Limit(size) => size.fmt(f),
        }
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid duration `{text}`: expected a number with a unit such as `30s`, `1m30s` or `500ms`"
            )
        };
        let mut rest = text.trim();
        if rest == "0" {
            return Ok(HumanDuration::default());
        }
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total: u64 = 0;
        while !rest.is_empty() {
            let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
            let (number, after) = rest.split_at(number_end);
            let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
            let (unit, after) = after.split_at(unit_end);
            let nanos_per_unit: u64 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(invalid()),
            };
            let nanos = parse_decimal_scaled(number, nanos_per_unit).ok_or_else(invalid)?;
            total =
                total.checked_add(nanos).filter(|total| i64::try_from(*total).is_ok()).ok_or_else(invalid)?;
            rest = after;
        }
        Ok(HumanDuration(std::time::Duration::from_nanos(total)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if total_secs == 0 && nanos == 0 {
            return f.write_str("0s");
        }
        let (hours, minutes, seconds) = (total_secs / 3600, total_secs / 60 % 60, total_secs % 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        if seconds > 0 {
            write!(f, "{seconds}s")?;
        }
        if nanos > 0 {
            if nanos % 1_000_000 == 0 {
                write!(f, "{}ms", nanos / 1_000_000)?;
            } else if nanos % 1_000 == 0 {
                write!(f, "{}us", nanos / 1_000)?;
            } else {
                write!(f, "{nanos}ns")?;
            }
        }
        Ok(())
    }
}

/// Parses a non-negative decimal (`12`, `1.5`, `.5`) and multiplies it by `scale`, rounding down, without
/// going through floating point. `None` when the text is not such a number or the result does not fit in
/// an `i64`: Docker's API takes every quantity (bytes, nano-CPUs, nanoseconds) as a signed 64-bit integer,
/// so a larger one could only wrap to a negative value on its way there.
fn parse_decimal_scaled(number: &str, scale: u64) -> Option<u64> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole_value: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    let mut result = whole_value.checked_mul(u128::from(scale))?;
    // Digits past the 19th cannot matter at any scale that fits in u64; they are rounded down away.
    let fraction = &fraction[..fraction.len().min(19)];
    if !fraction.is_empty() {
        let fraction_value: u128 = fraction.parse().ok()?;
        result += fraction_value * u128::from(scale) / 10u128.pow(fraction.len() as u32);
    }
    i64::try_from(result).ok().and_then(|value| u64::try_from(value).ok())
}

/// Implements Serialize (the canonical string), Deserialize (a string or, where it makes sense, a number)
/// and JsonSchema for a quantity type.
macro_rules! quantity_serde {
    ($type:ty, $name:literal, $expecting:literal, $schema:tt) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct QuantityVisitor;

                impl Visitor<'_> for QuantityVisitor {
                    type Value = $type;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_str<E: de::Error>(self, text: &str) -> Result<$type, E> {
                        text.parse().map_err(E::custom)
                    }

                    fn visit_u64<E: de::Error>(self, number: u64) -> Result<$type, E> {
                        self.visit_str(&number.to_string())
                    }

                    fn visit_i64<E: de::Error>(self, number: i64) -> Result<$type, E> {
                        self.visit_str(&number.to_string())
                    }

                    fn visit_f64<E: de::Error>(self, number: f64) -> Result<$type, E> {
                        self.visit_str(&number.to_string())
                    }
                }

                deserializer.deserialize_any(QuantityVisitor)
            }
        }

        impl JsonSchema for $type {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

quantity_serde!(ByteSize, "ByteSize", "a byte size such as `512Mi` or a number of bytes", {
    "description": "A byte size: a number of bytes, or a number with a binary unit (`512Mi`, `1g`, `1.5Gi`).",
    "type": ["string", "integer"],
    "pattern": "^\\s*[0-9]*\\.?[0-9]*\\s*([kKmMgGtTpP][iI]?[bB]?|[bB])?\\s*$",
    "minimum": 0
});

quantity_serde!(NanoCpus, "NanoCpus", "a CPU count such as `1.5` or `500m`", {
    "description": "A number of CPUs: a decimal (`1.5`) or milli-CPUs (`500m`).",
    "type": ["string", "number"],
    "pattern": "^\\s*[0-9]*\\.?[0-9]*m?\\s*$",
    "minimum": 0
});

quantity_serde!(MemorySwap, "MemorySwap", "a byte size such as `1Gi`, or -1 for unlimited swap", {
    "description": "Memory plus swap: a byte size as for `memory`, or -1 for unlimited swap.",
    "type": ["string", "integer"],
    "minimum": -1
});

quantity_serde!(HumanDuration, "Duration", "a duration such as `30s` or `1m30s`", {
    "description": "A duration: numbers with units `ns`, `us`, `ms`, `s`, `m`, `h`, as in `30s` or `1m30s`.",
    "type": "string",
    "pattern": "^\\s*(0|([0-9]*\\.?[0-9]+(ns|us|µs|μs|ms|s|m|h))+)\\s*$"
});

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: FromStr<Err = String> + fmt::Display>(input: &str, expected: &str) {
        let actual = match input.parse::<T>() {
            Ok(value) => value.to_string(),
            Err(message) => format!("error: {message}"),
        };
        assert_eq!(actual, expected, "input `{input}`");
    }

    #[test]
    fn byte_sizes() {
        for (input, expected) in [
            ("512Mi", "512Mi"),
            ("512m", "512Mi"),
            ("512MB", "512Mi"),
            ("1.5Gi", "1536Mi"),
            ("1g", "1Gi"),
            ("1048576", "1Mi"),
            ("1000", "1000"),
            ("0", "0"),
            ("6Mi", "6Mi"),
            ("2KiB", "2Ki"),
            (" 3 k ", "3Ki"),
            ("1b", "1"),
            ("0.1k", "102"),
            ("16Pi", "16Pi"),
            ("16384Pi", "error: invalid byte size `16384Pi`: expected a number with an optional unit such as `512Mi`, `1g` or `1048576`"),
            ("12x", "error: invalid byte size `12x`: expected a number with an optional unit such as `512Mi`, `1g` or `1048576`"),
            ("", "error: invalid byte size ``: expected a number with an optional unit such as `512Mi`, `1g` or `1048576`"),
            ("-1", "error: invalid byte size `-1`: expected a number with an optional unit such as `512Mi`, `1g` or `1048576`"),
            ("1.2.3m", "error: invalid byte size `1.2.3m`: expected a number with an optional unit such as `512Mi`, `1g` or `1048576`"),
        ] {
            check::<ByteSize>(input, expected);
        }
    }

    #[test]
    fn cpus() {
        for (input, expected) in [
            ("1.5", "1.5"),
            ("2", "2"),
            ("0.25", "0.25"),
            ("500m", "0.5"),
            ("0.000000001", "0.000000001"),
            (".5", "0.5"),
            ("1.", "1"),
            ("abc", "error: invalid CPU count `abc`: expected a decimal number such as `1.5` or milli-CPUs such as `500m`"),
            (".", "error: invalid CPU count `.`: expected a decimal number such as `1.5` or milli-CPUs such as `500m`"),
        ] {
            check::<NanoCpus>(input, expected);
        }
    }

    #[test]
    fn quantities_past_docker_s_signed_64_bits_are_refused() {
        // Docker takes bytes, nano-CPUs and nanoseconds as i64: one past its largest would arrive negative.
        assert_eq!("9223372036854775807".parse::<ByteSize>(), Ok(ByteSize(i64::MAX as u64)));
        assert!("9223372036854775808".parse::<ByteSize>().is_err());
        assert!("18446744073709551615".parse::<ByteSize>().is_err());
        assert!("8192Pi".parse::<ByteSize>().is_err());
        assert!("9223372037".parse::<NanoCpus>().is_err());
        assert!("9223372036s".parse::<HumanDuration>().is_ok());
        assert!("9223372037s".parse::<HumanDuration>().is_err());
        assert!("2562047h47m16s854775807ns".parse::<HumanDuration>().is_ok());
        assert!("2562047h47m16s854775808ns".parse::<HumanDuration>().is_err());
        assert!("99999999999999999999h".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn durations() {
        for (input, expected) in [
            ("30s", "30s"),
            ("90s", "1m30s"),
            ("1m30s", "1m30s"),
            ("1.5s", "1s500ms"),
            ("500ms", "500ms"),
            ("2h45m", "2h45m"),
            ("1.5h", "1h30m"),
            ("0", "0s"),
            ("0s", "0s"),
            ("10us", "10us"),
            ("7ns", "7ns"),
            ("1h1ns", "1h1ns"),
            ("30", "error: invalid duration `30`: expected a number with a unit such as `30s`, `1m30s` or `500ms`"),
            ("s", "error: invalid duration `s`: expected a number with a unit such as `30s`, `1m30s` or `500ms`"),
            ("5d", "error: invalid duration `5d`: expected a number with a unit such as `30s`, `1m30s` or `500ms`"),
            ("", "error: invalid duration ``: expected a number with a unit such as `30s`, `1m30s` or `500ms`"),
        ] {
            check::<HumanDuration>(input, expected);
        }
    }

    #[test]
    fn memory_swap() {
        check::<MemorySwap>("-1", "-1");
        check::<MemorySwap>("1g", "1Gi");
    }
}
