//! The Mixer v1 messages as hand-written prost structs (no build script, no `protoc`).
//!
//! Field numbers follow Istio 1.1's `istio.mixer.v1` package; `proto/mixer.proto` in this
//! crate documents the same messages as protobuf text. Maps are `BTreeMap`s so that encoding
//! is deterministic (tests pin exact bytes). The server's hot path does not use these structs
//! for `Report`: it walks the request bytes with [`crate::BagDecoder`].

use std::collections::BTreeMap;

/// `istio.mixer.v1.CompressedAttributes`: one attribute bag with names and text values as
/// word indexes (`i >= 0`: global dictionary word `i`; `i < 0`: per-message word `-i - 1`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct CompressedAttributes {
    /// The per-message words; when empty, the request's `default_words` apply.
    #[prost(string, repeated, tag = "1")]
    pub words: Vec<String>,
    /// STRING, DNS_NAME, EMAIL_ADDRESS and URI attributes: name index -> text index.
    #[prost(btree_map = "sint32, sint32", tag = "2")]
    pub strings: BTreeMap<i32, i32>,
    /// INT64 attributes.
    #[prost(btree_map = "sint32, int64", tag = "3")]
    pub int64s: BTreeMap<i32, i64>,
    /// DOUBLE attributes.
    #[prost(btree_map = "sint32, double", tag = "4")]
    pub doubles: BTreeMap<i32, f64>,
    /// BOOL attributes.
    #[prost(btree_map = "sint32, bool", tag = "5")]
    pub bools: BTreeMap<i32, bool>,
    /// TIMESTAMP attributes: the map's entries written out (see [`TimestampEntry`]).
    #[prost(message, repeated, tag = "6")]
    pub timestamps: Vec<TimestampEntry>,
    /// DURATION attributes: the map's entries written out (see [`DurationEntry`]).
    #[prost(message, repeated, tag = "7")]
    pub durations: Vec<DurationEntry>,
    /// BYTES attributes, and IP_ADDRESS ones (4 or 16 bytes, as Envoy sends them).
    #[prost(btree_map = "sint32, bytes", tag = "8")]
    pub bytes: BTreeMap<i32, Vec<u8>>,
    /// STRING_MAP attributes.
    #[prost(btree_map = "sint32, message", tag = "9")]
    pub string_maps: BTreeMap<i32, StringMap>,
}

/// `istio.mixer.v1.StringMap`: keys and values are word indexes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringMap {
    /// Key index -> value index.
    #[prost(btree_map = "sint32, sint32", tag = "1")]
    pub entries: BTreeMap<i32, i32>,
}

/// `istio.mixer.v1.ReportRequest.RepeatedAttributesSemantics`: how the bags of one request
/// relate to each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum RepeatedAttributesSemantics {
    /// Each bag updates the previous one (adds or overrides; removal cannot be expressed).
    DeltaEncoding = 0,
    /// Each bag is complete on its own.
    IndependentEncoding = 1,
}

/// `istio.mixer.v1.ReportRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReportRequest {
    /// The bags, in order.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<CompressedAttributes>,
    /// Words for bags that carry none of their own.
    #[prost(string, repeated, tag = "2")]
    pub default_words: Vec<String>,
    /// How many global dictionary words the client knows (a consistency check).
    #[prost(uint32, tag = "3")]
    pub global_word_count: u32,
    /// DELTA_ENCODING (0, the default) or INDEPENDENT_ENCODING (1).
    #[prost(enumeration = "RepeatedAttributesSemantics", tag = "4")]
    pub repeated_attributes_semantics: i32,
}

/// `istio.mixer.v1.ReportResponse` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReportResponse {}

/// `istio.mixer.v1.CheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    /// The one bag checked.
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<CompressedAttributes>,
    /// How many global dictionary words the client knows.
    #[prost(uint32, tag = "2")]
    pub global_word_count: u32,
    /// The client's id for this call, kept across retries.
    #[prost(string, tag = "3")]
    pub deduplication_id: String,
    /// Quotas to allocate, by name.
    #[prost(btree_map = "string, message", tag = "4")]
    pub quotas: BTreeMap<String, QuotaParams>,
}

/// `istio.mixer.v1.CheckRequest.QuotaParams`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QuotaParams {
    /// Amount to allocate.
    #[prost(int64, tag = "1")]
    pub amount: i64,
    /// Whether less than `amount` may be granted.
    #[prost(bool, tag = "2")]
    pub best_effort: bool,
}

/// `istio.mixer.v1.CheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResponse {
    /// The precondition verdict.
    #[prost(message, optional, tag = "2")]
    pub precondition: Option<PreconditionResult>,
    /// One result per requested quota.
    #[prost(btree_map = "string, message", tag = "3")]
    pub quotas: BTreeMap<String, QuotaResult>,
}

/// `istio.mixer.v1.CheckResponse.PreconditionResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreconditionResult {
    /// OK when every precondition holds.
    #[prost(message, optional, tag = "1")]
    pub status: Option<RpcStatus>,
    /// How long the client may cache this result.
    #[prost(message, optional, tag = "2")]
    pub valid_duration: Option<Duration>,
    /// For how many calls the client may reuse this result.
    #[prost(int32, tag = "3")]
    pub valid_use_count: i32,
    /// The attributes the result depended on (for the client's cache key).
    #[prost(message, optional, tag = "5")]
    pub referenced_attributes: Option<ReferencedAttributes>,
}

/// `istio.mixer.v1.CheckResponse.QuotaResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QuotaResult {
    /// How long the grant is valid.
    #[prost(message, optional, tag = "1")]
    pub valid_duration: Option<Duration>,
    /// The amount granted.
    #[prost(int64, tag = "2")]
    pub granted_amount: i64,
    /// The attributes the result depended on.
    #[prost(message, optional, tag = "5")]
    pub referenced_attributes: Option<ReferencedAttributes>,
}

/// `istio.mixer.v1.ReferencedAttributes`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReferencedAttributes {
    /// Per-message words for the indexes below.
    #[prost(string, repeated, tag = "1")]
    pub words: Vec<String>,
    /// The matches.
    #[prost(message, repeated, tag = "2")]
    pub attribute_matches: Vec<AttributeMatch>,
}

/// `istio.mixer.v1.ReferencedAttributes.AttributeMatch`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeMatch {
    /// The attribute's name as a word index.
    #[prost(sint32, tag = "1")]
    pub name: i32,
    /// ABSENCE (1), EXACT (2) or REGEX (3).
    #[prost(int32, tag = "2")]
    pub condition: i32,
    /// The regex for REGEX matches on map keys.
    #[prost(string, tag = "3")]
    pub regex: String,
    /// The map key as a word index, for STRING_MAP attributes.
    #[prost(sint32, tag = "4")]
    pub map_key: i32,
}

/// One entry of the TIMESTAMP map, as the wire carries it. Written out rather than as a prost
/// map because prost leaves out a value equal to the default: a timestamp at the Unix epoch would
/// travel as an absent value, which Mixer reads as year 1, not 1970.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct TimestampEntry {
    /// The attribute name's word index.
    #[prost(sint32, tag = "1")]
    pub key: i32,
    /// The value; `Some` is always written, even when zero.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Timestamp>,
}

/// One entry of the DURATION map, always carrying its value (see [`TimestampEntry`]).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct DurationEntry {
    /// The attribute name's word index.
    #[prost(sint32, tag = "1")]
    pub key: i32,
    /// The value; `Some` is always written, even when zero.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Duration>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second, 0 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Duration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds with the sign of `seconds`, -999,999,999 to 999,999,999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// A `google.rpc.Code` value; 0 is OK.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// A developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Error details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// The type of `value`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The serialized message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

impl From<meshmeter_attributes::Timestamp> for Timestamp {
    fn from(t: meshmeter_attributes::Timestamp) -> Self {
        Timestamp {
            seconds: t.secs(),
            nanos: t.subsec_nanos() as i32,
        }
    }
}

impl From<meshmeter_attributes::Duration> for Duration {
    /// Seconds and nanoseconds with one sign, as `google.protobuf.Duration` requires.
    fn from(d: meshmeter_attributes::Duration) -> Self {
        let nanos = d.as_nanos();
        Duration {
            seconds: nanos / 1_000_000_000,
            nanos: (nanos % 1_000_000_000) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn field_numbers_match_the_wire() {
        let mut bag = CompressedAttributes {
            words: vec!["w".into()],
            ..Default::default()
        };
        bag.strings.insert(-1, 3);
        bag.int64s.insert(1, -2);
        let req = ReportRequest {
            attributes: vec![bag],
            default_words: vec!["d".into()],
            global_word_count: 7,
            repeated_attributes_semantics: RepeatedAttributesSemantics::IndependentEncoding as i32,
        };
        // Field 1 (bag: words=1, strings=2 with zigzag keys, int64s=3), default_words=2,
        // global_word_count=3, semantics=4.
        assert_eq!(
            req.encode_to_vec(),
            [
                0x0a, 0x18, 0x0a, 0x01, b'w', 0x12, 0x04, 0x08, 0x01, 0x10, 0x06, 0x1a, 0x0d, 0x08,
                0x02, 0x10, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x12, 0x01,
                b'd', 0x18, 0x07, 0x20, 0x01
            ]
        );
    }

    #[test]
    fn negative_durations_keep_one_sign() {
        let d = Duration::from(meshmeter_attributes::Duration::from_nanos(-1_500_000_000));
        assert_eq!((d.seconds, d.nanos), (-1, -500_000_000));
    }
}
