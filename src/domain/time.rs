//! Wall-clock instants. Stored as integer milliseconds since the Unix epoch (sortable, and
//! portable across SQLite and Postgres), shown as RFC 3339 in UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since.as_millis() as i64)
    }

    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub const fn millis(self) -> i64 {
        self.0
    }

    pub fn plus_seconds(self, seconds: u32) -> Self {
        Timestamp(self.0 + i64::from(seconds) * 1000)
    }

    /// How long from `self` until `later`; zero when `later` is not later.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0).max(0) as u64)
    }

    /// An RFC 3339 instant, to the millisecond.
    pub fn parse_rfc3339(raw: &str) -> Option<Timestamp> {
        let t = OffsetDateTime::parse(raw, &Rfc3339).ok()?;
        Some(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    pub fn to_rfc3339(self) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| {
                // Fixed width (always milliseconds) so the strings also sort as text.
                t.format(format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                ))
                .ok()
            })
            .unwrap_or_default()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

/// Times in stored JSON (a sandbox's history) are read back from their RFC 3339 form.
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&raw)
            .ok_or_else(|| serde::de::Error::custom(format!("{raw:?} is not an RFC 3339 time")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let t = Timestamp::from_millis(1_795_000_000_123);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }

    #[test]
    fn formats_as_rfc3339_utc() {
        assert_eq!(
            Timestamp::from_millis(1_795_000_000_123).to_rfc3339(),
            "2026-11-18T11:06:40.123Z"
        );
    }

    #[test]
    fn always_shows_milliseconds() {
        assert_eq!(
            Timestamp::from_millis(1_795_000_000_000).to_rfc3339(),
            "2026-11-18T11:06:40.000Z"
        );
    }

    #[test]
    fn until_never_goes_negative() {
        let t = Timestamp::from_millis(10_000);
        assert_eq!(t.until(t.plus_seconds(2)), Duration::from_secs(2));
        assert_eq!(t.plus_seconds(2).until(t), Duration::ZERO);
    }
}
