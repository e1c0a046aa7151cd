//! Sizes and durations as people write them in configuration files:
//! `"64 MiB"`, `"5s"`, `"250ms"`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A number of bytes: an integer, or a string such as `"64 MiB"` or `"512KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ByteSize(pub u64);

/// A duration written as a string such as `"5s"`, `"250ms"`, `"2m"` or `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HumanDuration(pub Duration);

/// A size or duration that does not parse; it quotes the text, which
/// configuration errors keep out of secret keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UnitError {
    /// No number where one was expected.
    #[error("{text:?} is not a {kind} like {example}")]
    NotANumber {
        /// The text.
        text: String,
        /// "size" or "duration".
        kind: &'static str,
        /// How one is written.
        example: &'static str,
    },
    /// A unit that is not known.
    #[error("{text:?}: {hint}")]
    UnknownUnit {
        /// The text.
        text: String,
        /// The units there are.
        hint: &'static str,
    },
    /// More than fits.
    #[error("{text:?} is too large")]
    TooLarge {
        /// The text.
        text: String,
    },
}

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let (number, unit) = split_number(text);
        let number: u64 = number.parse().map_err(|_| UnitError::NotANumber {
            text: text.into(),
            kind: "size",
            example: "\"64 MiB\"",
        })?;
        let scale: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            _ => {
                return Err(UnitError::UnknownUnit {
                    text: text.into(),
                    hint: "unknown size unit (use B, KiB, MiB or GiB)",
                });
            }
        };
        number
            .checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| UnitError::TooLarge { text: text.into() })
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (scale, unit) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
            if bytes >= scale && bytes.is_multiple_of(scale) {
                return write!(f, "{} {unit}", bytes / scale);
            }
        }
        write!(f, "{bytes} B")
    }
}

impl FromStr for HumanDuration {
    type Err = UnitError;

    fn from_str(text: &str) -> Result<Self, UnitError> {
        let (number, unit) = split_number(text);
        let number: u64 = number.parse().map_err(|_| UnitError::NotANumber {
            text: text.into(),
            kind: "duration",
            example: "\"5s\" or \"250ms\"",
        })?;
        let seconds = |scale: u64| {
            number
                .checked_mul(scale)
                .map(Duration::from_secs)
                .ok_or_else(|| UnitError::TooLarge { text: text.into() })
        };
        let duration = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" | "min" => seconds(60)?,
            "h" => seconds(3600)?,
            "d" => seconds(86400)?,
            _ => {
                return Err(UnitError::UnknownUnit {
                    text: text.into(),
                    hint: "give a unit: ms, s, m, h or d",
                });
            }
        };
        Ok(HumanDuration(duration))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 || d.is_zero() {
            write!(f, "{} ms", d.as_millis())
        } else {
            write!(f, "{} s", d.as_secs())
        }
    }
}

fn split_number(text: &str) -> (&str, &str) {
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    (&text[..end], text[end..].trim())
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or a string like \"64 MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{}ms", self.0.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!("64 MiB".parse::<ByteSize>(), Ok(ByteSize(64 << 20)));
        assert_eq!("512KiB".parse::<ByteSize>(), Ok(ByteSize(512 << 10)));
        assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
        assert_eq!("2 GB".parse::<ByteSize>(), Ok(ByteSize(2_000_000_000)));
        assert!("lots".parse::<ByteSize>().is_err());
        assert!("3 parsecs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!("5s".parse(), Ok(HumanDuration(Duration::from_secs(5))));
        assert_eq!(
            "250 ms".parse(),
            Ok(HumanDuration(Duration::from_millis(250)))
        );
        assert_eq!("2m".parse(), Ok(HumanDuration(Duration::from_secs(120))));
        assert_eq!("10h".parse(), Ok(HumanDuration(Duration::from_secs(36000))));
        assert!("5".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn refuses_durations_that_overflow() {
        // 300000000000000 days is more seconds than a u64 holds.
        assert!(matches!(
            "300000000000000d".parse::<HumanDuration>(),
            Err(UnitError::TooLarge { .. })
        ));
        assert!("99999999999999999h".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn displays_in_the_largest_exact_unit() {
        assert_eq!(ByteSize(64 << 20).to_string(), "64 MiB");
        assert_eq!(ByteSize(1500).to_string(), "1500 B");
        assert_eq!(HumanDuration(Duration::from_secs(5)).to_string(), "5 s");
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500 ms"
        );
    }
}
