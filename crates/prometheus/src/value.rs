//! Instance values to sample numbers, dimension values to label text, and the escaping and
//! number formats of the text exposition format.

use std::borrow::Cow;
use std::fmt::Write as _;

use meshmeter_attributes::{Timestamp, Value, ValueType};

use super::gofloat::parse_go_float;

/// An instance value that cannot become a sample.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A STRING value that is not a number.
    #[error("metric value '{0}' is not a number")]
    NotANumber(String),
    /// A type with no numeric meaning.
    #[error("a {0} value cannot be a metric value")]
    Unsupported(ValueType),
}

/// The sample number of an instance value: INT64 and DOUBLE as they are, DURATION in
/// (fractional) seconds, STRING parsed as Go's `strconv.ParseFloat` reads it; anything else is an error for that instance.
pub fn metric_value(value: &Value<'_>) -> Result<f64, ValueError> {
    match value {
        Value::Int64(v) => Ok(*v as f64),
        Value::Double(v) => Ok(*v),
        Value::Duration(d) => Ok(d.as_secs_f64()),
        Value::String(s) => parse_go_float(s).ok_or_else(|| ValueError::NotANumber(truncated(s))),
        other => Err(ValueError::Unsupported(other.value_type())),
    }
}

/// Keeps hostile instance values from making error text (and logs) unbounded.
fn truncated(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

/// Appends the label text of a dimension value, unescaped, as Mixer's adapter printed it: text
/// as it is, numbers in decimal (doubles in the shortest form, no exponent), BOOL
/// `true`/`false`, IP addresses as text, timestamps in UTC with exactly six truncated fractional
/// digits, durations in Go's form, STRING_MAP as Go printed Mixer's map type
/// (`stringmap[a:2 z:1]`, keys sorted), BYTES as hex.
pub fn label_text(value: &Value<'_>, out: &mut String) {
    match value {
        // Go's spelling, which Mixer used, rather than Rust's `inf`.
        Value::Double(d) if d.is_infinite() => write_f64(*d, out),
        Value::StringMap(m) => {
            out.push_str("stringmap[");
            for (n, (k, v)) in m.sorted().into_iter().enumerate() {
                if n > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                out.push_str(v);
            }
            out.push(']');
        }
        Value::Timestamp(t) => timestamp_text(*t, out),
        other => match other.as_text() {
            Some(text) => out.push_str(text),
            // Writing to a String cannot fail.
            None => {
                let _ = write!(out, "{other}");
            }
        },
    }
}

/// `2019-05-16T10:00:00.123456Z`: Mixer formatted timestamps with a fixed microsecond layout,
/// so the fraction is always six digits and cut, not rounded.
fn timestamp_text(t: Timestamp, out: &mut String) {
    let whole = Timestamp::new(t.secs(), 0).to_string();
    let date_time = whole.strip_suffix('Z').unwrap_or(&whole);
    let _ = write!(out, "{date_time}.{:06}Z", t.subsec_nanos() / 1000);
}

/// The longest label value kept, in bytes of unescaped text; longer values are cut at the last
/// character boundary within it (and counted), so that megabyte dimension values cannot make
/// series, memory and `/metrics` unbounded.
pub const MAX_LABEL_VALUE_BYTES: usize = 1024;

/// `value` cut to [`MAX_LABEL_VALUE_BYTES`] of label text, as a STRING; `None` when it fits.
///
/// Text values are sliced without copying; maps and bytes (the other unbounded types) are
/// rendered first. The cut value is also the series' identity, so two long values sharing the
/// kept prefix are one series rather than two with the same label text.
pub(crate) fn capped<'v>(value: &'v Value<'_>) -> Option<Value<'v>> {
    let cut = |text: &str| -> usize {
        let mut end = MAX_LABEL_VALUE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        end
    };
    if let Some(text) = value.as_text() {
        return (text.len() > MAX_LABEL_VALUE_BYTES)
            .then(|| Value::String(Cow::Borrowed(&text[..cut(text)])));
    }
    if !matches!(value, Value::StringMap(_) | Value::Bytes(_)) {
        return None;
    }
    let mut text = String::new();
    label_text(value, &mut text);
    (text.len() > MAX_LABEL_VALUE_BYTES).then(|| {
        text.truncate(cut(&text));
        Value::String(Cow::Owned(text))
    })
}

/// Appends `text` escaped for a label value: `\`, `"` and newline.
pub(crate) fn escape_label_value(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `text` escaped for a `# HELP` line: `\` and newline.
pub(crate) fn escape_help(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends a sample value or `le` bound as Go's `strconv.FormatFloat(v, 'g', -1, 64)` prints
/// it (what Mixer's Prometheus client wrote): shortest round-trip digits, exponent form when the
/// decimal exponent is below -4 or at least 6 (`1e+06`, `1.234567e+06`, `1e-07`),
/// `+Inf`/`-Inf`/`NaN` as Prometheus spells them. `le` is a label value, so the text must be
/// Mixer's exactly or histograms split into two series.
pub(crate) fn write_f64(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    // Rust's `{:e}` gives the same shortest digits as Go, as `d.ddde<exp>`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if v == 0.0 || (-4..6).contains(&exp) {
        let _ = write!(out, "{v}");
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:02}", exp.unsigned_abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshmeter_attributes::{Duration, StringMap};
    use proptest::prelude::*;

    fn unescape(s: &str) -> Option<String> {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next()? {
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    'n' => out.push('\n'),
                    _ => return None,
                },
                '"' | '\n' => return None,
                c => out.push(c),
            }
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn label_escaping_round_trips(text in any::<String>()) {
            let mut escaped = String::new();
            escape_label_value(&text, &mut escaped);
            prop_assert_eq!(unescape(&escaped), Some(text));
        }
    }

    #[test]
    fn values() {
        assert_eq!(metric_value(&Value::Int64(-3)), Ok(-3.0));
        assert_eq!(metric_value(&Value::Double(0.25)), Ok(0.25));
        assert_eq!(
            metric_value(&Value::Duration(Duration::from_nanos(1_500_000_000))),
            Ok(1.5)
        );
        assert_eq!(metric_value(&Value::from("12.5")), Ok(12.5));
        assert_eq!(metric_value(&Value::from("0x1p-2")), Ok(0.25));
        assert_eq!(
            metric_value(&Value::from(" 2")),
            Err(ValueError::NotANumber(" 2".into()))
        );
        assert_eq!(
            metric_value(&Value::from("1e400")),
            Err(ValueError::NotANumber("1e400".into()))
        );
        assert_eq!(
            metric_value(&Value::from("abc")),
            Err(ValueError::NotANumber("abc".into()))
        );
        assert_eq!(
            metric_value(&Value::Bool(true)),
            Err(ValueError::Unsupported(ValueType::Bool))
        );
        let long = "x".repeat(100);
        assert_eq!(
            metric_value(&Value::from(long.as_str())),
            Err(ValueError::NotANumber(format!("{}…", "x".repeat(64))))
        );
    }

    #[test]
    fn label_texts() {
        let text = |v: Value<'_>| {
            let mut s = String::new();
            label_text(&v, &mut s);
            s
        };
        assert_eq!(text(Value::from("v1")), "v1");
        assert_eq!(text(Value::Int64(42)), "42");
        assert_eq!(text(Value::Double(0.1)), "0.1");
        assert_eq!(text(Value::Double(1e21)), "1000000000000000000000");
        assert_eq!(text(Value::Bool(false)), "false");
        assert_eq!(text(Value::Double(f64::NEG_INFINITY)), "-Inf");
        assert_eq!(
            text(Value::IpAddress("10.0.0.1".parse().unwrap())),
            "10.0.0.1"
        );
        assert_eq!(
            text(Value::Duration(Duration::from_nanos(90_500_000_000))),
            "1m30.5s"
        );
        let map: StringMap<'_> = [("version", "v1"), ("app", "db")].into_iter().collect();
        assert_eq!(text(Value::from(map)), "stringmap[app:db version:v1]");
        assert_eq!(text(Value::from(StringMap::default())), "stringmap[]");
        let ts = |s: &str| text(Value::Timestamp(s.parse().unwrap()));
        assert_eq!(
            ts("2019-05-16T10:00:00.1234569Z"),
            "2019-05-16T10:00:00.123456Z"
        );
        assert_eq!(
            ts("2019-01-01T02:00:00+02:00"),
            "2019-01-01T00:00:00.000000Z"
        );
        assert_eq!(ts("1969-12-31T23:59:58.5Z"), "1969-12-31T23:59:58.500000Z");
    }

    #[test]
    fn escaping_and_numbers() {
        let mut s = String::new();
        escape_label_value("a\\b\"c\nd", &mut s);
        assert_eq!(s, r#"a\\b\"c\nd"#);
        let num = |v: f64| {
            let mut s = String::new();
            write_f64(v, &mut s);
            s
        };
        assert_eq!(num(128_000_000.0), "1.28e+08");
        assert_eq!(num(250.0), "250");
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(999_999.0), "999999");
        assert_eq!(num(1e6), "1e+06");
        assert_eq!(num(1_234_567.0), "1.234567e+06");
        assert_eq!(num(9.223372036854776e18), "9.223372036854776e+18");
        assert_eq!(num(9_007_199_254_740_994.0), "9.007199254740994e+15");
        assert_eq!(num(1e-7), "1e-07");
        assert_eq!(num(0.0001), "0.0001");
        assert_eq!(num(0.00001234), "1.234e-05");
        assert_eq!(num(-2.5e-10), "-2.5e-10");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(0.005), "0.005");
        assert_eq!(num(f64::INFINITY), "+Inf");
        assert_eq!(num(f64::NEG_INFINITY), "-Inf");
        assert_eq!(num(f64::NAN), "NaN");
        assert_eq!(num(1e300), "1e+300");
        assert_eq!(num(-1e6), "-1e+06");
        assert_eq!(num(-0.0), "-0");
    }
}
