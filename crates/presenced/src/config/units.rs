//! Durations and byte sizes in the reference homeserver's notation.
//!
//! A duration is an integer number of milliseconds or a string made of an integer and a
//! unit (`500ms`, `30s`, `5m`, `1h`, `2d`, `1w`, `1y`; no unit means milliseconds). A size is
//! an integer number of bytes or a string with an optional `K`, `M`, `G` or `T` suffix
//! (powers of 1024, any case). Fractions and negative values are rejected rather than
//! rounded, so a typo never becomes a surprising value.

use std::{fmt, time::Duration};

use serde::{
    Deserialize, Deserializer,
    de::{self, Visitor},
};

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const WEEK_MS: u64 = 7 * DAY_MS;
const YEAR_MS: u64 = 365 * DAY_MS;

/// Duration units, longest suffix first so `ms` wins over `s`.
const DURATION_UNITS: [(&str, u64); 7] = [
    ("ms", 1),
    ("s", SECOND_MS),
    ("m", MINUTE_MS),
    ("h", HOUR_MS),
    ("d", DAY_MS),
    ("w", WEEK_MS),
    ("y", YEAR_MS),
];

const SIZE_UNITS: [(char, u64); 4] = [
    ('K', 1 << 10),
    ('M', 1 << 20),
    ('G', 1 << 30),
    ('T', 1 << 40),
];

/// Parses a duration string such as `30s` or `500ms` (a bare integer is milliseconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    let (digits, unit_ms) = DURATION_UNITS
        .iter()
        .find_map(|(suffix, ms)| trimmed.strip_suffix(suffix).map(|rest| (rest, *ms)))
        .unwrap_or((trimmed, 1));
    let amount = parse_unsigned(digits).ok_or_else(|| bad_duration(text))?;
    amount
        .checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// Parses a size string such as `10M` or `512K` (a bare integer is bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some(last) => match SIZE_UNITS.iter().find(|(suffix, _)| *suffix == last) {
            Some((_, unit)) => (&trimmed[..trimmed.len() - 1], *unit),
            None => (trimmed, 1),
        },
        None => (trimmed, 1),
    };
    let amount = parse_unsigned(digits).ok_or_else(|| bad_size(text))?;
    amount
        .checked_mul(unit)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

fn parse_unsigned(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn bad_duration(text: &str) -> String {
    format!(
        "invalid duration {text:?}: expected whole milliseconds or a number with a unit \
         (ms, s, m, h, d, w, y), e.g. \"30s\" or \"5m\""
    )
}

fn bad_size(text: &str) -> String {
    format!(
        "invalid size {text:?}: expected whole bytes or a number with a unit (K, M, G, T), \
         e.g. \"512K\" or \"10M\""
    )
}

/// A duration read from the configuration (see the module docs for the accepted forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigDuration(pub(crate) Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: whole milliseconds or a string such as \"30s\" or \"5m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ConfigDuration(Duration::from_millis(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|ms| ConfigDuration(Duration::from_millis(ms)))
                    .map_err(|_| E::custom(format!("duration must not be negative, found {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size read from the configuration (see the module docs for the accepted forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigSize(pub(crate) u64);

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: whole bytes or a string such as \"512K\" or \"10M\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ConfigSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ConfigSize)
                    .map_err(|_| E::custom(format!("size must not be negative, found {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(ConfigSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Formats a duration the way an operator would write it in the file (`1m`, `90s`, `250ms`).
pub(crate) fn display_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (suffix, unit) in DURATION_UNITS.iter().rev() {
        let unit = u128::from(*unit);
        if ms != 0 && ms.is_multiple_of(unit) {
            return format!("{}{suffix}", ms / unit);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        let cases = [
            ("500ms", 500),
            ("500", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("1w", 604_800_000),
            ("1y", 31_536_000_000),
            (" 10s ", 10_000),
            ("0s", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in [
            "",
            "s",
            "1.5s",
            "-5s",
            "5 m",
            "5M",
            "5min",
            "ten",
            "1e3",
            "99999999999999999y",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn sizes_in_every_unit() {
        let cases = [
            ("1024", 1024),
            ("1K", 1024),
            ("1k", 1024),
            ("10M", 10 << 20),
            ("2G", 2 << 30),
            ("1T", 1 << 40),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for text in ["", "M", "1.5M", "-1K", "10MB", "10 X"] {
            assert!(parse_size(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn serde_accepts_integers_and_strings() {
        let d: ConfigDuration = serde_json::from_str("1500").unwrap();
        assert_eq!(d.0, Duration::from_millis(1500));
        let d: ConfigDuration = serde_json::from_str("\"2m\"").unwrap();
        assert_eq!(d.0, Duration::from_secs(120));
        assert!(serde_json::from_str::<ConfigDuration>("-1").is_err());
        assert!(serde_json::from_str::<ConfigDuration>("1.5").is_err());
        assert!(serde_json::from_str::<ConfigDuration>("true").is_err());
        let s: ConfigSize = serde_json::from_str("\"1M\"").unwrap();
        assert_eq!(s.0, 1 << 20);
        assert!(serde_json::from_str::<ConfigSize>("2.5").is_err());
    }

    #[test]
    fn durations_display_in_the_largest_whole_unit() {
        assert_eq!(display_duration(Duration::from_secs(60)), "1m");
        assert_eq!(display_duration(Duration::from_secs(90)), "90s");
        assert_eq!(display_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(display_duration(Duration::ZERO), "0ms");
    }
}
