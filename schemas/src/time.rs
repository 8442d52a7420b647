//! Timestamps: Avro `timestamp-millis` on the wire, RFC 3339 in JSON.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: std::time::Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// This time minus `d` (saturating).
    pub fn minus(self, d: std::time::Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// RFC 3339 with millisecond precision, e.g. `2026-11-21T10:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        match Utc.timestamp_millis_opt(self.0) {
            chrono::LocalResult::Single(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
            _ => self.0.to_string(),
        }
    }

    /// Parses RFC 3339 (any offset).
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp(t.timestamp_millis()))
            .map_err(|e| format!("not an RFC 3339 timestamp ({e})"))
    }
}

/// How far an event's `occurred_at` may lie after the instant it is judged against (its Kafka
/// record's timestamp in the projector; the service clock in ingest) before it is refused as
/// `future_occurred_at`.
pub const DEFAULT_FUTURE_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Whether `occurred_at` lies more than `tolerance` after `reference`: such an event is dated
/// in the future and would pin views and defeat every freshness window. The one definition
/// ingest (against its clock) and the projector (against the record timestamp, so that a replay
/// decides the same) both use.
pub fn dated_in_future(
    occurred_at: Timestamp,
    reference: Timestamp,
    tolerance: std::time::Duration,
) -> bool {
    occurred_at > reference.plus(tolerance)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// RFC 3339 in human-readable formats (JSON), milliseconds in binary ones (storage).
impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_rfc3339())
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp string or milliseconds since the epoch")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(s).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
                Ok(Timestamp(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
                i64::try_from(v)
                    .map(Timestamp)
                    .map_err(|_| E::custom("timestamp out of range"))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            i64::deserialize(d).map(Timestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_rfc3339_and_round_trips() {
        let t = Timestamp(1_763_719_200_123);
        let j = serde_json::to_string(&t).unwrap();
        assert_eq!(j, "\"2025-11-21T10:00:00.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&j).unwrap(), t);
        assert_eq!(
            serde_json::from_str::<Timestamp>("\"2025-11-21T11:00:00.123+01:00\"").unwrap(),
            t
        );
        assert_eq!(
            serde_json::from_str::<Timestamp>("1763719200123").unwrap(),
            t
        );
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }

    #[test]
    fn future_dating_is_judged_against_the_reference_with_a_tolerance() {
        let at = Timestamp(1_000_000);
        let tol = std::time::Duration::from_millis(300);
        assert!(!dated_in_future(Timestamp(1_000_300), at, tol));
        assert!(dated_in_future(Timestamp(1_000_301), at, tol));
        assert!(!dated_in_future(Timestamp(0), at, tol));
    }
}
