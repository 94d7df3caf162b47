//! Timestamps: microsecond instants in UTC, parsed leniently (what Python wrote) and written
//! strictly (RFC 3339, `Z`).

use serde::{Serialize, Serializer};
use std::fmt;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// An instant with microsecond precision, stored as microseconds since the Unix epoch (UTC).
///
/// Ordering and equality are those of the instant, whatever offset the text it came from had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a timestamp could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {text:?}: {reason}")]
pub struct TimestampError {
    text: String,
    reason: &'static str,
}

impl Timestamp {
    /// The instant `micros` microseconds after 1970-01-01T00:00:00Z.
    pub fn from_unix_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// The earliest instant a backup can hold: 0001-01-01T00:00:00Z.
    pub const MIN: Timestamp = Timestamp(-62_135_596_800_000_000);
    /// The latest instant a backup can hold: 9999-12-31T23:59:59.999999Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);

    /// The instant `micros` microseconds after the Unix epoch, when it lies within
    /// [`Timestamp::MIN`]..=[`Timestamp::MAX`] (the years a backup can write).
    pub fn checked_from_unix_micros(micros: i64) -> Option<Self> {
        let t = Timestamp(micros);
        (Self::MIN..=Self::MAX).contains(&t).then_some(t)
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0
    }

    /// The current time, truncated to microseconds.
    pub fn now() -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Timestamp((nanos / 1000) as i64)
    }

    /// Parses the forms found in format-1.0 files:
    ///
    /// * RFC 3339 / ISO 8601: `2025-11-15T08:20:00Z`, `2025-11-15T08:20:00.123456+00:00`;
    /// * Python's `str(datetime)`: a space instead of the `T`;
    /// * no offset at all (Python's naive datetimes), taken as UTC.
    ///
    /// Fractions of up to 9 digits are accepted as long as they carry nothing below a microsecond.
    pub fn parse(text: &str) -> Result<Self, TimestampError> {
        Self::parse_in(text, &WallClock::utc())
    }

    /// Like [`Timestamp::parse`], but a time without an offset is a wall-clock time in `zone`
    /// (an application's naive column kept in local time).
    pub fn parse_in(text: &str, zone: &WallClock) -> Result<Self, TimestampError> {
        let (t, offset_given) = Self::parse_parts(text)?;
        if offset_given {
            return Ok(t);
        }
        zone.instant_of(t).ok_or(TimestampError {
            text: text.to_owned(),
            reason: "outside the years 0001–9999 in the mapping's time zone",
        })
    }

    /// The instant `text` names, taking a time without an offset as UTC, and whether it had an
    /// offset.
    fn parse_parts(text: &str) -> Result<(Self, bool), TimestampError> {
        let fail = |reason| TimestampError {
            text: text.to_owned(),
            reason,
        };
        let b = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = b.get(range)?;
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(part.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
        };
        if b.len() < 19 {
            return Err(fail("expected YYYY-MM-DDTHH:MM:SS"));
        }
        let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10))
        else {
            return Err(fail("expected YYYY-MM-DD"));
        };
        if b[4] != b'-' || b[7] != b'-' {
            return Err(fail("expected YYYY-MM-DD"));
        }
        if !matches!(b[10], b'T' | b't' | b' ') {
            return Err(fail("expected 'T' or a space between date and time"));
        }
        let (Some(hour), Some(minute), Some(second)) =
            (digits(11..13), digits(14..16), digits(17..19))
        else {
            return Err(fail("expected HH:MM:SS"));
        };
        if b[13] != b':' || b[16] != b':' {
            return Err(fail("expected HH:MM:SS"));
        }
        let mut pos = 19;
        let mut micros = 0u32;
        if b.get(pos) == Some(&b'.') {
            let start = pos + 1;
            let mut end = start;
            while end < b.len() && b[end].is_ascii_digit() {
                end += 1;
            }
            let frac = &b[start..end];
            if frac.is_empty() || frac.len() > 9 {
                return Err(fail("the fraction of a second needs 1 to 9 digits"));
            }
            if frac.iter().skip(6).any(|&d| d != b'0') {
                return Err(fail("precision finer than a microsecond is not supported"));
            }
            for i in 0..6 {
                micros = micros * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'));
            }
            pos = end;
        }
        let offset_given = pos < b.len();
        let offset_seconds: i32 = match &b[pos..] {
            [] | [b'Z'] | [b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let (Some(h), Some(m)) = (digits(pos + 1..pos + 3), digits(pos + 4..pos + 6))
                else {
                    return Err(fail("expected an offset like +00:00"));
                };
                if h > 23 || m > 59 {
                    return Err(fail("offset out of range"));
                }
                let s = (h * 3600 + m * 60) as i32;
                if *sign == b'-' {
                    -s
                } else {
                    s
                }
            }
            _ => {
                return Err(fail(
                    "expected 'Z', an offset like +00:00, or nothing after the time",
                ))
            }
        };
        let month = Month::try_from(month as u8).map_err(|_| fail("month out of range"))?;
        let date = Date::from_calendar_date(year as i32, month, day as u8)
            .map_err(|_| fail("no such date"))?;
        let time = Time::from_hms_micro(hour as u8, minute as u8, second as u8, micros)
            .map_err(|_| fail("time of day out of range"))?;
        let offset = UtcOffset::from_whole_seconds(offset_seconds)
            .map_err(|_| fail("offset out of range"))?;
        let instant = PrimitiveDateTime::new(date, time).assume_offset(offset);
        Ok((
            Timestamp((instant.unix_timestamp_nanos() / 1000) as i64),
            offset_given,
        ))
    }
}

/// The time zone in which a column without offsets (PostgreSQL `timestamp`, naive text) keeps
/// wall-clock times: a mapping's `time_zone`, an IANA name; UTC when the mapping names none.
///
/// A wall-clock time is handled as a [`Timestamp`] read as if it were UTC. Where a zone's clocks
/// go back, a wall-clock time names two instants, and goldset takes the later one; where they
/// jump forward, a skipped time is read with the offset before the jump. Both are what
/// PostgreSQL's `AT TIME ZONE` does, so goldset and the database agree on every row.
#[derive(Clone)]
pub struct WallClock {
    name: String,
    zone: jiff::tz::TimeZone,
}

impl WallClock {
    /// UTC: wall-clock time and instant are the same.
    pub fn utc() -> Self {
        WallClock {
            name: "UTC".into(),
            zone: jiff::tz::TimeZone::UTC,
        }
    }

    /// The zone of this IANA name (`Europe/Berlin`, `America/New_York`, `UTC`).
    pub fn named(name: &str) -> Result<Self, String> {
        let zone = jiff::tz::TimeZone::get(name).map_err(|_| {
            format!("{name:?} is not a time zone goldset knows (an IANA name such as \"Europe/Berlin\", or \"UTC\")")
        })?;
        Ok(WallClock {
            name: name.to_owned(),
            zone,
        })
    }

    /// The zone's name as the mapping gives it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether wall-clock times are UTC.
    pub fn is_utc(&self) -> bool {
        self.name == "UTC"
    }

    /// The wall-clock time of instant `t` in this zone (as a timestamp read as UTC): what a
    /// naive column holds for it.
    pub fn wall_of(&self, t: Timestamp) -> Timestamp {
        if self.is_utc() {
            return t;
        }
        let Ok(instant) = jiff::Timestamp::from_microsecond(t.0) else {
            return t;
        };
        let wall = self.zone.to_datetime(instant);
        match jiff::tz::TimeZone::UTC.to_timestamp(wall) {
            Ok(as_utc) => Timestamp(as_utc.as_microsecond()),
            Err(_) => t,
        }
    }

    /// The instant that wall-clock time `wall` (a timestamp read as UTC) names in this zone,
    /// or `None` when it falls outside the years a backup can hold.
    pub fn instant_of(&self, wall: Timestamp) -> Option<Timestamp> {
        if self.is_utc() {
            return Timestamp::checked_from_unix_micros(wall.0);
        }
        let as_utc = jiff::Timestamp::from_microsecond(wall.0).ok()?;
        let civil = jiff::tz::TimeZone::UTC.to_datetime(as_utc);
        let instant = self.zone.to_ambiguous_timestamp(civil).later().ok()?;
        Timestamp::checked_from_unix_micros(instant.as_microsecond())
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::utc()
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WallClock({})", self.name)
    }
}

impl PartialEq for WallClock {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for WallClock {}

impl Serialize for WallClock {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> serde::Deserialize<'de> for WallClock {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        WallClock::named(&name).map_err(serde::de::Error::custom)
    }
}

impl Timestamp {
    /// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC without an offset: how SQLAlchemy keeps a naive
    /// datetime in a text column (and what an application reading such a column expects).
    pub fn naive_utc_text(self) -> String {
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000) else {
            return self.to_string();
        };
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        )
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with `Z`; microseconds as six digits, or none when they are zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000) else {
            return write!(f, "<out of range: {} µs>", self.0);
        };
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )?;
        if t.microsecond() != 0 {
            write!(f, ".{:06}", t.microsecond())?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    #[test]
    fn wall_clock_times_convert_both_ways() {
        let berlin = WallClock::named("Europe/Berlin").unwrap();
        // Summer (+02:00) and winter (+01:00).
        let summer = berlin.instant_of(wall("2025-07-01 12:00:00")).unwrap();
        assert_eq!(summer.to_string(), "2025-07-01T10:00:00Z");
        assert_eq!(berlin.wall_of(summer), wall("2025-07-01 12:00:00"));
        let winter = berlin.instant_of(wall("2025-01-15 08:30:00.25")).unwrap();
        assert_eq!(winter.to_string(), "2025-01-15T07:30:00.250000Z");
        assert_eq!(berlin.wall_of(winter), wall("2025-01-15 08:30:00.25"));
        // Clocks go back: 02:30 happens twice; the later (standard time) is taken.
        let fold = berlin.instant_of(wall("2025-10-26 02:30:00")).unwrap();
        assert_eq!(fold.to_string(), "2025-10-26T01:30:00Z");
        // Clocks jump forward: 02:30 never happens; read with the offset before the jump.
        let gap = berlin.instant_of(wall("2025-03-30 02:30:00")).unwrap();
        assert_eq!(gap.to_string(), "2025-03-30T01:30:00Z");
        // Text with an offset names its instant whatever the zone.
        let explicit = Timestamp::parse_in("2025-07-01 12:00:00+00:00", &berlin).unwrap();
        assert_eq!(explicit.to_string(), "2025-07-01T12:00:00Z");
        let naive = Timestamp::parse_in("2025-07-01 12:00:00", &berlin).unwrap();
        assert_eq!(naive, summer);
    }

    #[test]
    fn unknown_zones_are_named() {
        let e = WallClock::named("Mars/Olympus").unwrap_err();
        assert!(e.contains("Mars/Olympus") && e.contains("IANA"), "{e}");
        assert!(WallClock::utc().is_utc());
        let utc = WallClock::utc();
        assert_eq!(utc.wall_of(Timestamp::MAX), Timestamp::MAX);
        assert_eq!(utc.instant_of(Timestamp::MIN), Some(Timestamp::MIN));
        // Near the end of the range, a zone east of UTC still converts; one step past is refused.
        let tokyo = WallClock::named("Asia/Tokyo").unwrap();
        assert!(tokyo.instant_of(Timestamp::MIN).is_none());
    }

    #[test]
    fn naive_text_reads_back_as_the_same_instant() {
        let t = Timestamp::parse("2025-01-14T09:26:53.5+02:00").unwrap();
        assert_eq!(t.naive_utc_text(), "2025-01-14 07:26:53.500000");
        assert_eq!(Timestamp::parse(&t.naive_utc_text()).unwrap(), t);
    }

    #[test]
    fn the_file_range_is_years_1_to_9999() {
        assert_eq!(Timestamp::MIN.to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999999Z");
        let min = Timestamp::MIN.unix_micros();
        let max = Timestamp::MAX.unix_micros();
        assert!(Timestamp::checked_from_unix_micros(min).is_some());
        assert!(Timestamp::checked_from_unix_micros(min - 1).is_none());
        assert!(Timestamp::checked_from_unix_micros(max).is_some());
        assert!(Timestamp::checked_from_unix_micros(max + 1).is_none());
    }

    fn round(text: &str) -> String {
        Timestamp::parse(text).unwrap().to_string()
    }

    #[test]
    fn accepts_python_forms() {
        assert_eq!(
            round("2024-03-01 09:30:00.123456+00:00"),
            "2024-03-01T09:30:00.123456Z"
        );
        assert_eq!(round("2025-11-15T08:20:00+00:00"), "2025-11-15T08:20:00Z");
        assert_eq!(round("2025-11-15T08:20:00"), "2025-11-15T08:20:00Z");
        assert_eq!(
            round("2024-03-04 09:30:00.000001+00:00"),
            "2024-03-04T09:30:00.000001Z"
        );
        assert_eq!(
            round("2024-03-05T09:30:00.5Z"),
            "2024-03-05T09:30:00.500000Z"
        );
        assert_eq!(round("2024-03-05T10:30:00+01:00"), "2024-03-05T09:30:00Z");
        assert_eq!(
            round("2024-03-05T09:30:00.123456000Z"),
            "2024-03-05T09:30:00.123456Z"
        );
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "yesterday",
            "2024-02-30T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T25:00:00Z",
            "2024-01-01T00:00:00.1234567Z",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00 UTC",
            "2024-01-01X00:00:00Z",
            "2024-01-01T00:00:00.Z",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn orders_by_instant() {
        let a = Timestamp::parse("2024-03-05T10:30:00+01:00").unwrap();
        let b = Timestamp::parse("2024-03-05T09:30:00.000001Z").unwrap();
        assert!(a < b);
    }
}
