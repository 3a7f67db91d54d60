//! Go's `time.Duration`: the text form Istio's configuration and values use (`"10s"`,
//! `"1m30.5s"`, `"1.5µs"`), parsed and printed exactly as Go does.

use std::fmt;
use std::str::FromStr;

/// A signed length of time in nanoseconds, the range of Go's `time.Duration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Duration(i64);

/// Why a duration's text was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    /// Not of the form `[-+]?([0-9]*(\.[0-9]*)?unit)+` (or a bare `0`).
    #[error("invalid duration '{0}'")]
    Invalid(String),
    /// A unit that is not one of ns, us, µs, ms, s, m, h.
    #[error("unknown unit '{unit}' in duration '{text}'")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole text.
        text: String,
    },
    /// A number without a unit, such as `"10"`.
    #[error("missing unit in duration '{0}'")]
    MissingUnit(String),
    /// Longer than about 292 years.
    #[error("duration '{0}' is out of range")]
    Overflow(String),
}

const NANOS_PER_SEC: u64 = 1_000_000_000;

impl Duration {
    /// Zero length.
    pub const ZERO: Duration = Duration(0);

    /// From nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        Duration(nanos)
    }

    /// From whole seconds, saturating at the range's ends.
    pub const fn from_secs(secs: i64) -> Self {
        Duration(secs.saturating_mul(NANOS_PER_SEC as i64))
    }

    /// Nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Seconds as a float (how Prometheus wants durations).
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_SEC as f64
    }

    /// From a standard library duration, saturating at Go's maximum.
    pub fn from_std(d: std::time::Duration) -> Self {
        Duration(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    }

    /// To a standard library duration; `None` when negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.0)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// The sum, or `None` on overflow.
    pub fn checked_add(self, other: Duration) -> Option<Duration> {
        self.0.checked_add(other.0).map(Duration)
    }
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3600 * NANOS_PER_SEC,
        _ => return None,
    })
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseDurationError::Invalid(text.to_owned());
        let overflow = || ParseDurationError::Overflow(text.to_owned());
        let mut s = text.as_bytes();
        let mut negative = false;
        if let Some((&c, rest)) = s.split_first() {
            if c == b'-' || c == b'+' {
                negative = c == b'-';
                s = rest;
            }
        }
        if s == b"0" {
            return Ok(Duration(0));
        }
        if s.is_empty() {
            return Err(invalid());
        }
        // Accumulated in u128 so that only the final range check can overflow.
        let mut total: u128 = 0;
        while !s.is_empty() {
            if !(s[0] == b'.' || s[0].is_ascii_digit()) {
                return Err(invalid());
            }
            let int_len = s.iter().take_while(|c| c.is_ascii_digit()).count();
            let mut whole: u128 = 0;
            for &d in &s[..int_len] {
                whole = whole * 10 + u128::from(d - b'0');
                if whole > 1 << 63 {
                    return Err(overflow());
                }
            }
            s = &s[int_len..];
            let mut frac: u128 = 0;
            let mut scale: u128 = 1;
            let mut frac_len = 0;
            if s.first() == Some(&b'.') {
                s = &s[1..];
                frac_len = s.iter().take_while(|c| c.is_ascii_digit()).count();
                for &d in &s[..frac_len] {
                    // Digits beyond what nanoseconds can hold are ignored, as Go does.
                    if scale < 10u128.pow(30) {
                        frac = frac * 10 + u128::from(d - b'0');
                        scale *= 10;
                    }
                }
                s = &s[frac_len..];
            }
            if int_len == 0 && frac_len == 0 {
                return Err(invalid());
            }
            let unit_len = s
                .iter()
                .take_while(|c| !(**c == b'.' || c.is_ascii_digit()))
                .count();
            if unit_len == 0 {
                return Err(ParseDurationError::MissingUnit(text.to_owned()));
            }
            let unit = std::str::from_utf8(&s[..unit_len]).map_err(|_| invalid())?;
            let nanos = unit_nanos(unit).ok_or_else(|| ParseDurationError::UnknownUnit {
                unit: unit.to_owned(),
                text: text.to_owned(),
            })?;
            s = &s[unit_len..];
            total += whole * u128::from(nanos) + frac * u128::from(nanos) / scale;
            if total > 1 << 63 {
                return Err(overflow());
            }
        }
        if negative {
            Ok(Duration((-(total as i128)) as i64))
        } else if total > i64::MAX as u128 {
            Err(overflow())
        } else {
            Ok(Duration(total as i64))
        }
    }
}

/// Writes `value / 10^prec` with the fraction's trailing zeros (and a bare point) dropped.
fn write_scaled(f: &mut fmt::Formatter<'_>, value: u64, prec: u32) -> fmt::Result {
    let div = 10u64.pow(prec);
    let (whole, frac) = (value / div, value % div);
    if frac == 0 {
        return write!(f, "{whole}");
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    write!(f, "{whole}.{}", digits.trim_end_matches('0'))
}

impl fmt::Display for Duration {
    /// Go's `Duration.String()`: `0s`, `1.5µs`, `10ms`, `1m30.5s`, `2h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        if self.0 < 0 {
            f.write_str("-")?;
        }
        let u = self.0.unsigned_abs();
        if u < NANOS_PER_SEC {
            let (prec, unit) = match u {
                0..=999 => (0, "ns"),
                1_000..=999_999 => (3, "\u{b5}s"),
                _ => (6, "ms"),
            };
            write_scaled(f, u, prec)?;
            return f.write_str(unit);
        }
        let secs = u / NANOS_PER_SEC;
        let (hours, minutes) = (secs / 3600, (secs / 60) % 60);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write_scaled(f, (secs % 60) * NANOS_PER_SEC + u % NANOS_PER_SEC, 9)?;
        f.write_str("s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        s.parse().unwrap()
    }

    #[test]
    fn parses_go_forms() {
        assert_eq!(d("0"), Duration(0));
        assert_eq!(d("0ms"), Duration(0));
        assert_eq!(d("10s"), Duration::from_secs(10));
        assert_eq!(d("1h2m"), Duration::from_secs(3720));
        assert_eq!(d("1.5s"), Duration(1_500_000_000));
        assert_eq!(d(".5ms"), Duration(500_000));
        assert_eq!(d("-1m30s"), Duration::from_secs(-90));
        assert_eq!(d("+3us"), Duration(3_000));
        assert_eq!(d("2µs"), Duration(2_000));
        assert_eq!(d("2μs"), Duration(2_000));
        assert_eq!(d("1.000000001s"), Duration(1_000_000_001));
        assert_eq!(d("9223372036854775807ns"), Duration(i64::MAX));
        assert_eq!(d("-9223372036854775808ns"), Duration(i64::MIN));
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "",
            "-",
            "10",
            "s",
            ".s",
            "1x",
            "1.2.3s",
            "9223372036854775808ns",
            "3000000h",
            "1s 2s",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} should fail");
        }
        assert_eq!(
            "10".parse::<Duration>(),
            Err(ParseDurationError::MissingUnit("10".into()))
        );
    }

    #[test]
    fn prints_as_go_does() {
        let cases = [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (90_500_000_000, "1m30.5s"),
            (7_200_000_000_000, "2h0m0s"),
            (-19_000_000, "-19ms"),
            (3_723_000_000_001, "1h2m3.000000001s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ];
        for (nanos, text) in cases {
            assert_eq!(Duration(nanos).to_string(), text);
            assert_eq!(d(text), Duration(nanos), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn display_parse_round_trip(nanos in proptest::num::i64::ANY) {
            let text = Duration(nanos).to_string();
            proptest::prop_assert_eq!(text.parse::<Duration>(), Ok(Duration(nanos)));
        }
    }
}
