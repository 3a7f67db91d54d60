//! Mixer v1 wire format: protobuf messages, compressed attributes, gRPC service and client.
//!
//! Istio 1.1's proxies report to Mixer with `istio.mixer.v1.Mixer/Report`, each request a
//! batch of attribute bags in `CompressedAttributes` form: names and text are word indexes
//! into Mixer's global dictionary (`i >= 0`) or into per-message words (`i < 0` is word
//! `-i - 1` of the bag's own `words`, or of the request's `default_words` when the bag has
//! none). This crate speaks that protocol byte for byte:
//!
//! - [`proto`]: the messages as prost structs (documented in `proto/mixer.proto`);
//! - [`BagDecoder`]: the server's zero-copy decoder from request bytes to [`Bag`]s;
//! - [`ReportEncoder`]: bags to requests, for meshmeter's own clients;
//! - [`MixerServer`] / [`MixerService`] / [`MixerClient`]: gRPC without code generation;
//! - [`ReportId`] / [`Deduplicator`]: idempotent retries (`x-meshmeter-report-id`).
//!
//! [`Bag`]: meshmeter_attributes::Bag

#![warn(missing_docs)]

mod decode;
mod dedup;
mod encode;
mod error;
mod grpc;
pub mod proto;
mod reader;

pub use decode::{
    BagDecoder, DecodeSummary, DEFAULT_MAX_BAGS_PER_REQUEST, DEFAULT_MAX_MESSAGE_BYTES,
    MAX_MAP_ENTRIES, MAX_MAP_ENTRIES_PER_REQUEST,
};
pub use dedup::{
    random_uuid, DedupWindow, Deduplicator, ParseReportIdError, ReportId, Verdict, REPORT_ID_HEADER,
};
pub use encode::{Encoding, ReportEncoder};
pub use error::{BadValue, DecodeError, Malformed, WireKind};
pub use grpc::{
    check_ok, BytesCodec, MixerClient, MixerServer, MixerService, ReportBody, CHECK_PATH,
    CHECK_VALID_DURATION, CHECK_VALID_USE_COUNT, REPORT_PATH, SERVICE_NAME,
};
