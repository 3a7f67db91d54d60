//! Why a report could not be decoded.

use meshmeter_attributes::ValueType;

/// What is wrong with bytes that are not a well-formed protobuf message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The message ends inside a field.
    #[error("truncated field")]
    Truncated,
    /// A varint longer than ten bytes.
    #[error("varint longer than 10 bytes")]
    VarintTooLong,
    /// A wire type that is not 0, 1, 2 or 5 (groups are not supported).
    #[error("unsupported wire type {0}")]
    WireType(u8),
    /// Field number 0 or beyond protobuf's range.
    #[error("invalid field number {0}")]
    FieldNumber(u64),
    /// A known field with a wire type its declaration does not allow.
    #[error("field {field} has the wrong wire type")]
    FieldWireType {
        /// The field number.
        field: u32,
    },
    /// A word index or map key that does not fit in a `sint32`.
    #[error("sint32 value out of range")]
    Sint32Range,
    /// A string field that is not UTF-8.
    #[error("string is not valid UTF-8")]
    Utf8,
}

/// The kind of wire map a value arrived in (the transport type of `CompressedAttributes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireKind {
    /// `strings` (field 2).
    Strings,
    /// `int64s` (field 3).
    Int64s,
    /// `doubles` (field 4).
    Doubles,
    /// `bools` (field 5).
    Bools,
    /// `timestamps` (field 6).
    Timestamps,
    /// `durations` (field 7).
    Durations,
    /// `bytes` (field 8).
    Bytes,
    /// `string_maps` (field 9).
    StringMaps,
}

impl WireKind {
    /// The field's name in `CompressedAttributes`.
    pub const fn name(self) -> &'static str {
        match self {
            WireKind::Strings => "strings",
            WireKind::Int64s => "int64s",
            WireKind::Doubles => "doubles",
            WireKind::Bools => "bools",
            WireKind::Timestamps => "timestamps",
            WireKind::Durations => "durations",
            WireKind::Bytes => "bytes",
            WireKind::StringMaps => "string_maps",
        }
    }

    /// Whether an attribute declared as `t` may arrive in this map.
    pub const fn carries(self, t: ValueType) -> bool {
        match self {
            WireKind::Strings => t.is_textual(),
            WireKind::Int64s => matches!(t, ValueType::Int64),
            WireKind::Doubles => matches!(t, ValueType::Double),
            WireKind::Bools => matches!(t, ValueType::Bool),
            WireKind::Timestamps => matches!(t, ValueType::Timestamp),
            WireKind::Durations => matches!(t, ValueType::Duration),
            WireKind::Bytes => matches!(t, ValueType::Bytes | ValueType::IpAddress),
            WireKind::StringMaps => matches!(t, ValueType::StringMap),
        }
    }
}

impl std::fmt::Display for WireKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A value whose wire form is well-formed protobuf but not a valid value of its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    /// IP_ADDRESS bytes that are neither 4 nor 16 long.
    #[error("an IP address is 4 or 16 bytes, not {0}")]
    IpLength(usize),
    /// Timestamp nanoseconds outside 0..1e9.
    #[error("timestamp nanos {0} outside 0..=999999999")]
    TimestampNanos(i32),
    /// Timestamp seconds outside years 0001-9999 (RFC 3339's range).
    #[error("timestamp of {0}s since the epoch is outside years 0001-9999")]
    TimestampRange(i64),
    /// A duration beyond Go's range (about 292 years) or with nanos outside ±1e9.
    #[error("duration of {seconds}s and {nanos}ns is out of range")]
    DurationRange {
        /// Seconds as sent.
        seconds: i64,
        /// Nanoseconds as sent.
        nanos: i32,
    },
    /// A STRING_MAP with more entries than allowed (per map, or in all for the request).
    #[error("string map beyond the limit of {0} entries per map (65536 per request)")]
    MapTooLarge(usize),
}

/// Why a `ReportRequest` (or a `CompressedAttributes` bag) was rejected.
///
/// `bag` is the bag's position in the request; `offset` is a byte offset in the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a well-formed message.
    #[error("malformed protobuf at byte {offset}{}: {kind}", bag.map(|b| format!(" (bag {b})")).unwrap_or_default())]
    Malformed {
        /// What is wrong.
        kind: Malformed,
        /// Where, in the request.
        offset: usize,
        /// The bag being decoded, when inside one.
        bag: Option<usize>,
    },
    /// A word index that names no word.
    #[error("bag {bag}: word index {index} is not defined ({words} per-message words, {globals} global words)")]
    WordIndex {
        /// The index as sent.
        index: i32,
        /// The bag.
        bag: usize,
        /// How many per-message words the bag had (its own or the defaults).
        words: usize,
        /// How many global words the server knows.
        globals: usize,
    },
    /// A declared attribute sent in a map its type does not use.
    #[error("bag {bag}: attribute '{attribute}' is declared {declared} but was sent in '{wire}'")]
    TypeMismatch {
        /// The attribute's name.
        attribute: String,
        /// The bag.
        bag: usize,
        /// The type the manifest declares.
        declared: ValueType,
        /// The map it arrived in.
        wire: WireKind,
    },
    /// A value that cannot be a value of its type.
    #[error("bag {bag}: attribute '{attribute}': {reason}")]
    BadValue {
        /// The attribute's name.
        attribute: String,
        /// The bag.
        bag: usize,
        /// What is wrong.
        reason: BadValue,
    },
    /// The client uses a larger global dictionary than the server knows.
    #[error(
        "inconsistent global dictionary: the client knows {client} words, the server {server}"
    )]
    GlobalWordCount {
        /// `global_word_count` as sent.
        client: u32,
        /// The server's dictionary size.
        server: usize,
    },
    /// A `repeated_attributes_semantics` value that is neither DELTA (0) nor INDEPENDENT (1).
    #[error(
        "unknown repeated_attributes_semantics {0} (0 is DELTA_ENCODING, 1 INDEPENDENT_ENCODING)"
    )]
    Semantics(i32),
    /// More bags than one request may hold (each bag costs a dispatch, however few bytes it
    /// takes: with DELTA_ENCODING an empty bag repeats the previous one).
    #[error("request holds more than {limit} bags")]
    TooManyBags {
        /// The limit.
        limit: usize,
    },
    /// The message exceeds the configured size limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl DecodeError {
    pub(crate) fn malformed((kind, offset): (Malformed, usize), bag: Option<usize>) -> Self {
        DecodeError::Malformed { kind, offset, bag }
    }
}

impl DecodeError {
    /// The gRPC status a server answers with: RESOURCE_EXHAUSTED for an oversized message or too many bags,
    /// FAILED_PRECONDITION for a dictionary mismatch, INVALID_ARGUMENT otherwise; the message
    /// is this error's text.
    pub fn to_status(&self) -> tonic::Status {
        let code = match self {
            DecodeError::TooLarge { .. } | DecodeError::TooManyBags { .. } => {
                tonic::Code::ResourceExhausted
            }
            DecodeError::GlobalWordCount { .. } => tonic::Code::FailedPrecondition,
            _ => tonic::Code::InvalidArgument,
        };
        tonic::Status::new(code, self.to_string())
    }
}

impl From<DecodeError> for tonic::Status {
    fn from(e: DecodeError) -> Self {
        e.to_status()
    }
}
