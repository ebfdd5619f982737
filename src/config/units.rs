//! Durations (`500ms`, `30s`, `15d`) and sizes (`64KiB`, `1GiB`) as written in the config.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Deserializer, de};

/// A duration written as a string such as `500ms`, `30s`, `5m`, `15d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Duration(StdDuration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Duration(StdDuration::from_secs(s))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// The longest duration the config takes: beyond it a deadline (`now + d`) could overflow the
/// clock, and no interval, delay or retention of a gateway needs more.
const MAX_DURATION: StdDuration = StdDuration::from_secs(100 * 365 * 86_400);

/// Why a duration or a size as written in the config is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitError {
    #[error("expected a duration such as \"500ms\", \"30s\" or \"15d\", found {text:?} ({error})")]
    Duration {
        text: String,
        error: humantime::DurationError,
    },
    #[error("expected a duration of at most 100 years, found {0:?}")]
    DurationTooLong(String),
    #[error("expected a size such as \"64KiB\" or \"1GiB\", found {0:?}")]
    Size(String),
    #[error("unknown size unit {unit:?} in {text:?}: use B, KB, MB, GB, KiB, MiB, GiB or TiB")]
    SizeUnit { unit: String, text: String },
}

impl std::str::FromStr for Duration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let d = humantime::parse_duration(s.trim()).map_err(|error| UnitError::Duration {
            text: s.to_string(),
            error,
        })?;
        if d > MAX_DURATION {
            return Err(UnitError::DurationTooLong(s.to_string()));
        }
        Ok(Duration(d))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\", \"30s\" or \"15d\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "expected a duration string with a unit such as \"{n}s\", found the bare number {n}"
                )))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
                self.visit_i64(n as i64)
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes written as `64KiB`, `1GiB`, `500MB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| UnitError::Size(s.to_string()))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            other => {
                return Err(UnitError::SizeUnit {
                    unit: other.to_string(),
                    text: s.to_string(),
                });
            }
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64KiB\" or \"1GiB\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom("expected a non-negative size"))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(
            "500ms".parse::<Duration>().unwrap().0,
            StdDuration::from_millis(500)
        );
        assert_eq!(
            "15d".parse::<Duration>().unwrap().0,
            StdDuration::from_secs(15 * 86400)
        );
        assert!("fast".parse::<Duration>().is_err());
        assert_eq!("64KiB".parse::<ByteSize>().unwrap().0, 65536);
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert!("12 parsecs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn a_duration_past_a_century_is_refused_not_an_overflow_later() {
        assert!("36500d".parse::<Duration>().is_ok());
        let e = "500000000000y".parse::<Duration>().unwrap_err().to_string();
        assert!(e.contains("at most 100 years"), "{e}");
    }
}
