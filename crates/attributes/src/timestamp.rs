use std::fmt;
use std::str::FromStr;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An instant, held as seconds and nanoseconds since the Unix epoch (UTC), like
/// `google.protobuf.Timestamp`. Two timestamps written with different offsets are equal when
/// they name the same instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

/// Text that is not an RFC 3339 timestamp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp '{0}'")]
pub struct ParseTimestampError(pub String);

impl Timestamp {
    /// The earliest second that RFC 3339 can write: 0001-01-01T00:00:00Z.
    pub const MIN_SECS: i64 = -62_135_596_800;
    /// The last second that RFC 3339 can write: 9999-12-31T23:59:59Z.
    pub const MAX_SECS: i64 = 253_402_300_799;

    /// Whether `secs` lies in years 0001-9999, the range RFC 3339 text can hold (decoders
    /// refuse instants outside it).
    pub const fn secs_in_range(secs: i64) -> bool {
        secs >= Self::MIN_SECS && secs <= Self::MAX_SECS
    }

    /// From seconds and nanoseconds since the epoch; nanoseconds beyond a second carry over.
    pub fn new(secs: i64, nanos: u32) -> Self {
        Timestamp {
            secs: secs.saturating_add(i64::from(nanos / 1_000_000_000)),
            nanos: nanos % 1_000_000_000,
        }
    }

    /// Seconds since the epoch.
    pub const fn secs(self) -> i64 {
        self.secs
    }

    /// Nanoseconds within the second.
    pub const fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// The current time.
    pub fn now() -> Self {
        Self::from(std::time::SystemTime::now())
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp::new(d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let (secs, nanos) = (d.as_secs() as i64, d.subsec_nanos());
                if nanos == 0 {
                    Timestamp::new(-secs, 0)
                } else {
                    Timestamp::new(-secs - 1, 1_000_000_000 - nanos)
                }
            }
        }
    }
}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t =
            OffsetDateTime::parse(s, &Rfc3339).map_err(|_| ParseTimestampError(s.to_owned()))?;
        Ok(Timestamp::new(t.unix_timestamp(), t.nanosecond()))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, with as many fractional digits as needed (`2015-01-02T15:04:35Z`,
    /// `2015-01-02T15:04:35.5Z`). An instant outside years 0001-9999 (which RFC 3339 cannot
    /// write) is written as seconds since the epoch, `@253402300800s`: formatting never fails,
    /// because a failing `Display` panics in `to_string`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match OffsetDateTime::from_unix_timestamp(self.secs) {
            Ok(t) if Self::secs_in_range(self.secs) => {
                t.replace_nanosecond(self.nanos).unwrap_or(t)
            }
            _ => {
                write!(f, "@{}", self.secs)?;
                if self.nanos != 0 {
                    let digits = format!("{:09}", self.nanos);
                    write!(f, ".{}", digits.trim_end_matches('0'))?;
                }
                return f.write_str("s");
            }
        };
        let (date, clock) = (t.date(), t.time());
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            date.year(),
            u8::from(date.month()),
            date.day(),
            clock.hour(),
            clock.minute(),
            clock.second()
        )?;
        if self.nanos != 0 {
            let digits = format!("{:09}", self.nanos);
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn display_never_fails_out_of_range() {
        assert_eq!(
            Timestamp::new(i64::MAX, 0).to_string(),
            format!("@{}s", i64::MAX)
        );
        assert_eq!(
            Timestamp::new(i64::MIN, 500_000_000).to_string(),
            format!("@{}.5s", i64::MIN)
        );
        assert_eq!(
            Timestamp::new(Timestamp::MAX_SECS + 1, 0).to_string(),
            "@253402300800s"
        );
        assert_eq!(
            Timestamp::new(Timestamp::MAX_SECS, 0).to_string(),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            Timestamp::new(Timestamp::MIN_SECS, 0).to_string(),
            "0001-01-01T00:00:00Z"
        );
    }

    use super::*;

    #[test]
    fn parses_offsets_as_instants() {
        let a: Timestamp = "2015-01-02T15:04:35Z".parse().unwrap();
        let b: Timestamp = "2015-01-02T16:04:35+01:00".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.secs(), 1_420_211_075);
        assert_eq!(a.to_string(), "2015-01-02T15:04:35Z");
        let c: Timestamp = "2015-01-02T15:04:35.250Z".parse().unwrap();
        assert_eq!(c.to_string(), "2015-01-02T15:04:35.25Z");
        assert!("2015-01-02 15:04:35".parse::<Timestamp>().is_err());
    }

    #[test]
    fn before_the_epoch() {
        let t = Timestamp::from(std::time::UNIX_EPOCH - std::time::Duration::from_millis(1500));
        assert_eq!(t, Timestamp::new(-2, 500_000_000));
        assert_eq!(t.to_string(), "1969-12-31T23:59:58.5Z");
    }
}
