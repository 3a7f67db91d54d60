//! gRPC plumbing for `istio.mixer.v1.Mixer` without code generation: a codec that hands over
//! raw message bytes, the server-side service, and a client.

mod client;
mod codec;
mod frames;
mod server;

pub use client::{MixerClient, ReportBody};
pub use codec::BytesCodec;
pub use server::{
    check_ok, MixerServer, MixerService, CHECK_VALID_DURATION, CHECK_VALID_USE_COUNT,
};

/// The service's full name.
pub const SERVICE_NAME: &str = "istio.mixer.v1.Mixer";
/// The `Report` method's path.
pub const REPORT_PATH: &str = "/istio.mixer.v1.Mixer/Report";
/// The `Check` method's path.
pub const CHECK_PATH: &str = "/istio.mixer.v1.Mixer/Check";
