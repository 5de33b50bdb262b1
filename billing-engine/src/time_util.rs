//! Timestamps as the engine stores and prints them: UTC, millisecond precision.

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Cuts `t` to whole milliseconds in UTC, the precision of the store, so that a value
/// read back compares equal to the one written.
pub fn truncate(t: OffsetDateTime) -> OffsetDateTime {
    from_millis(to_millis(t))
}

pub fn to_millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH + Duration::milliseconds(ms)
}

/// ISO 8601 / RFC 3339 in UTC with milliseconds, `2026-01-31T12:00:00.000Z`, as every
/// JSON view prints times: the precision of the store, in the form every JavaScript
/// client parses.
pub fn iso(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.to_offset(time::UtcOffset::UTC).format(FORMAT).unwrap_or_default()
}

pub fn parse_iso(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Serde for times in public types: RFC 3339 strings in UTC.
pub mod serde_iso {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::iso(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_iso(&text).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(text) => super::super::parse_iso(&text)
                    .map(Some)
                    .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time")),
                None => Ok(None),
            }
        }
    }
}
