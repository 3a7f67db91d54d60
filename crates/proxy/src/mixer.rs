//! The Mixer v1 transport: batches encoded as `ReportRequest`s (compressed attributes, delta
//! encoding) and sent with an idempotency key, so that a retried batch is counted once.

use meshmeter_attributes::Manifest;
use meshmeter_wire::{Encoding, MixerClient, ReportEncoder, ReportId};
use tonic::Code;

use crate::report::ReportSchema;
use crate::sender::{ReportBatch, ReportTransport, TransportError};

/// An address that is not a usable gRPC endpoint.
#[derive(Debug, thiserror::Error)]
#[error("invalid telemetry server address '{addr}': {source}")]
pub struct MixerAddrError {
    /// The address as given.
    pub addr: String,
    /// Why tonic refused it.
    #[source]
    pub source: tonic::transport::Error,
}

/// Sends report batches to a Mixer-compatible telemetry server.
///
/// Each batch carries `x-meshmeter-report-id: <client id>/<batch seq>`; the sender reuses the
/// sequence number on every retry of a batch, and meshmeter's server skips a key it has
/// already counted. Istio's Mixer ignores the header.
#[derive(Debug)]
pub struct MixerTransport {
    client: MixerClient,
    encoder: ReportEncoder,
}

impl MixerTransport {
    /// A transport over `client`, encoding bags of `manifest`.
    pub fn new(client: MixerClient, manifest: &Manifest) -> Self {
        MixerTransport {
            client,
            encoder: ReportEncoder::new(manifest, Encoding::Delta),
        }
    }

    /// A transport to `addr` (`host:port` or `http://host:port`) that connects on first use
    /// and reconnects by itself, so a telemetry server that is down at start-up (or restarts)
    /// costs retries, never the proxy's start. Call it within a tokio runtime (the channel
    /// starts a background task).
    pub fn lazy(addr: &str, manifest: &Manifest) -> Result<Self, MixerAddrError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = tonic::transport::Endpoint::from_shared(uri)
            .map_err(|source| MixerAddrError {
                addr: addr.to_owned(),
                source,
            })?
            .connect_timeout(std::time::Duration::from_secs(5));
        Ok(Self::new(
            MixerClient::new(endpoint.connect_lazy()),
            manifest,
        ))
    }

    /// The id that prefixes this transport's idempotency keys.
    pub fn client_id(&self) -> &str {
        self.client.client_id()
    }
}

impl ReportTransport for MixerTransport {
    async fn send(&self, batch: &ReportBatch, schema: &ReportSchema) -> Result<(), TransportError> {
        let request = self.encoder.encode(&batch.bags(schema));
        let id = ReportId {
            client: self.client.client_id().to_owned(),
            seq: batch.seq,
        };
        self.client
            .report(request, Some(&id))
            .await
            .map_err(|status| classify(&status))
    }
}

/// RESOURCE_EXHAUSTED is what gRPC servers (meshmeter's and Mixer's) answer for a message over
/// their size limit, so the batch is split. Statuses that say "this content will never be
/// accepted" drop the batch; everything else
/// (unavailable, timeouts, overload, internal errors) may succeed later, and the key makes a
/// retry after an ambiguous failure safe.
fn classify(status: &tonic::Status) -> TransportError {
    let reason = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::NotFound => TransportError::Rejected { reason },
        Code::ResourceExhausted => TransportError::TooLarge { reason },
        _ => TransportError::Retryable { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(matches!(
            classify(&tonic::Status::unavailable("down")),
            TransportError::Retryable { .. }
        ));
        assert!(matches!(
            classify(&tonic::Status::deadline_exceeded("slow")),
            TransportError::Retryable { .. }
        ));
        assert!(matches!(
            classify(&tonic::Status::resource_exhausted("4 MiB")),
            TransportError::TooLarge { .. }
        ));
        assert_eq!(
            classify(&tonic::Status::invalid_argument("bad word")),
            TransportError::Rejected {
                reason: "InvalidArgument: bad word".into()
            }
        );
    }
}
