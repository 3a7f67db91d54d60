use std::fmt;
use std::str::FromStr;

/// The twelve value types of Istio's attribute vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Int64,
    /// 64-bit float.
    Double,
    /// `true` or `false`.
    Bool,
    /// An instant, compared as an instant whatever its offset.
    Timestamp,
    /// A signed length of time with nanosecond resolution (Go's `time.Duration`).
    Duration,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// Raw bytes.
    Bytes,
    /// A map from text to text (labels, headers).
    StringMap,
    /// An email address, compared by meaning.
    EmailAddress,
    /// A DNS name, compared case-insensitively and without a trailing dot.
    DnsName,
    /// A URI, compared by meaning.
    Uri,
}

impl ValueType {
    /// All types, in declaration order.
    pub const ALL: [ValueType; 12] = [
        ValueType::String,
        ValueType::Int64,
        ValueType::Double,
        ValueType::Bool,
        ValueType::Timestamp,
        ValueType::Duration,
        ValueType::IpAddress,
        ValueType::Bytes,
        ValueType::StringMap,
        ValueType::EmailAddress,
        ValueType::DnsName,
        ValueType::Uri,
    ];

    /// The name Istio's manifests use, e.g. `STRING_MAP`.
    pub const fn name(self) -> &'static str {
        match self {
            ValueType::String => "STRING",
            ValueType::Int64 => "INT64",
            ValueType::Double => "DOUBLE",
            ValueType::Bool => "BOOL",
            ValueType::Timestamp => "TIMESTAMP",
            ValueType::Duration => "DURATION",
            ValueType::IpAddress => "IP_ADDRESS",
            ValueType::Bytes => "BYTES",
            ValueType::StringMap => "STRING_MAP",
            ValueType::EmailAddress => "EMAIL_ADDRESS",
            ValueType::DnsName => "DNS_NAME",
            ValueType::Uri => "URI",
        }
    }

    /// Whether values of this type are text underneath (and so built from string words on the
    /// wire).
    pub const fn is_textual(self) -> bool {
        matches!(
            self,
            ValueType::String | ValueType::EmailAddress | ValueType::DnsName | ValueType::Uri
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A type name that is not one of the twelve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown value type '{0}' (expected one of STRING, INT64, DOUBLE, BOOL, TIMESTAMP, DURATION, IP_ADDRESS, BYTES, STRING_MAP, EMAIL_ADDRESS, DNS_NAME, URI)")]
pub struct UnknownType(pub String);

impl FromStr for ValueType {
    type Err = UnknownType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ValueType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownType(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ValueType::ALL {
            assert_eq!(t.name().parse::<ValueType>(), Ok(t));
        }
        assert_eq!(
            "STRNG".parse::<ValueType>(),
            Err(UnknownType("STRNG".into()))
        );
    }
}
