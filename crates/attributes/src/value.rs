use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use crate::{Duration, StringMap, Timestamp, ValueType};

/// One typed attribute value.
///
/// Text, bytes and maps may borrow (from a decoded request, a workload registry, or another
/// value) so that building a bag and evaluating expressions over it need not allocate; use
/// [`Value::into_owned`] to keep a value beyond what it borrows from.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// STRING
    String(Cow<'a, str>),
    /// INT64
    Int64(i64),
    /// DOUBLE
    Double(f64),
    /// BOOL
    Bool(bool),
    /// TIMESTAMP
    Timestamp(Timestamp),
    /// DURATION
    Duration(Duration),
    /// IP_ADDRESS
    IpAddress(IpAddr),
    /// BYTES
    Bytes(Cow<'a, [u8]>),
    /// STRING_MAP
    StringMap(Cow<'a, StringMap<'a>>),
    /// EMAIL_ADDRESS
    EmailAddress(Cow<'a, str>),
    /// DNS_NAME
    DnsName(Cow<'a, str>),
    /// URI
    Uri(Cow<'a, str>),
}

impl<'a> Value<'a> {
    /// This value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::String(_) => ValueType::String,
            Value::Int64(_) => ValueType::Int64,
            Value::Double(_) => ValueType::Double,
            Value::Bool(_) => ValueType::Bool,
            Value::Timestamp(_) => ValueType::Timestamp,
            Value::Duration(_) => ValueType::Duration,
            Value::IpAddress(_) => ValueType::IpAddress,
            Value::Bytes(_) => ValueType::Bytes,
            Value::StringMap(_) => ValueType::StringMap,
            Value::EmailAddress(_) => ValueType::EmailAddress,
            Value::DnsName(_) => ValueType::DnsName,
            Value::Uri(_) => ValueType::Uri,
        }
    }

    /// A value of type `t` built from text (STRING, EMAIL_ADDRESS, DNS_NAME or URI); `None`
    /// for other types.
    pub fn textual(t: ValueType, text: impl Into<Cow<'a, str>>) -> Option<Self> {
        let text = text.into();
        Some(match t {
            ValueType::String => Value::String(text),
            ValueType::EmailAddress => Value::EmailAddress(text),
            ValueType::DnsName => Value::DnsName(text),
            ValueType::Uri => Value::Uri(text),
            _ => return None,
        })
    }

    /// The text of a STRING, EMAIL_ADDRESS, DNS_NAME or URI value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::EmailAddress(s) | Value::DnsName(s) | Value::Uri(s) => {
                Some(s)
            }
            _ => None,
        }
    }

    /// A value that borrows from this one instead of copying it.
    pub fn borrowed(&self) -> Value<'_> {
        fn b<T: ?Sized + ToOwned>(c: &T) -> Cow<'_, T> {
            Cow::Borrowed(c)
        }
        match self {
            Value::String(s) => Value::String(b(s)),
            Value::Int64(v) => Value::Int64(*v),
            Value::Double(v) => Value::Double(*v),
            Value::Bool(v) => Value::Bool(*v),
            Value::Timestamp(v) => Value::Timestamp(*v),
            Value::Duration(v) => Value::Duration(*v),
            Value::IpAddress(v) => Value::IpAddress(*v),
            Value::Bytes(v) => Value::Bytes(b(v)),
            Value::StringMap(m) => Value::StringMap(Cow::Borrowed(&**m)),
            Value::EmailAddress(s) => Value::EmailAddress(b(s)),
            Value::DnsName(s) => Value::DnsName(b(s)),
            Value::Uri(s) => Value::Uri(b(s)),
        }
    }

    /// A copy that borrows nothing.
    pub fn into_owned(self) -> Value<'static> {
        fn o<T: ?Sized + ToOwned>(c: Cow<'_, T>) -> Cow<'static, T> {
            Cow::Owned(c.into_owned())
        }
        match self {
            Value::String(s) => Value::String(o(s)),
            Value::Int64(v) => Value::Int64(v),
            Value::Double(v) => Value::Double(v),
            Value::Bool(v) => Value::Bool(v),
            Value::Timestamp(v) => Value::Timestamp(v),
            Value::Duration(v) => Value::Duration(v),
            Value::IpAddress(v) => Value::IpAddress(v),
            Value::Bytes(v) => Value::Bytes(o(v)),
            Value::StringMap(m) => Value::StringMap(Cow::Owned(m.into_owned().into_owned())),
            Value::EmailAddress(s) => Value::EmailAddress(o(s)),
            Value::DnsName(s) => Value::DnsName(o(s)),
            Value::Uri(s) => Value::Uri(o(s)),
        }
    }
}

impl fmt::Display for Value<'_> {
    /// The text Istio gave a value used as a label or log field: strings as they are, numbers
    /// in decimal, durations in Go's form, timestamps in RFC 3339, maps as `k=v&k=v`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) | Value::EmailAddress(s) | Value::DnsName(s) | Value::Uri(s) => {
                f.write_str(s)
            }
            Value::Int64(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Timestamp(v) => write!(f, "{v}"),
            Value::Duration(v) => write!(f, "{v}"),
            Value::IpAddress(v) => write!(f, "{v}"),
            Value::Bytes(v) => {
                for byte in v.iter() {
                    write!(f, "{byte:02x}")?;
                }
                Ok(())
            }
            Value::StringMap(m) => write!(f, "{m}"),
        }
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int64(v)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::String(Cow::Borrowed(v))
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::String(Cow::Owned(v))
    }
}

impl From<IpAddr> for Value<'_> {
    fn from(v: IpAddr) -> Self {
        Value::IpAddress(v)
    }
}

impl From<Duration> for Value<'_> {
    fn from(v: Duration) -> Self {
        Value::Duration(v)
    }
}

impl From<Timestamp> for Value<'_> {
    fn from(v: Timestamp) -> Self {
        Value::Timestamp(v)
    }
}

impl<'a> From<StringMap<'a>> for Value<'a> {
    fn from(v: StringMap<'a>) -> Self {
        Value::StringMap(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_label_text() {
        let map: StringMap<'_> = [("version", "v1"), ("app", "db")].into_iter().collect();
        assert_eq!(Value::from(map).to_string(), "app=db&version=v1");
        assert_eq!(
            Value::Duration(Duration::from_nanos(90_500_000_000)).to_string(),
            "1m30.5s"
        );
        assert_eq!(Value::Double(0.5).to_string(), "0.5");
        assert_eq!(Value::Double(1e21).to_string(), "1000000000000000000000");
        assert_eq!(Value::Bool(true).to_string(), "true");
        assert_eq!(Value::IpAddress("::1".parse().unwrap()).to_string(), "::1");
    }

    #[test]
    fn borrowed_equals_original() {
        let v = Value::from(String::from("x"));
        let owned: Value<'static> = v.clone().into_owned();
        assert_eq!(owned, v);
        assert_eq!(v.borrowed(), Value::from("x"));
    }
}
