use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use prost::Message;
use tonic::client::Grpc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::codec::BytesCodec;
use super::{CHECK_PATH, REPORT_PATH};
use crate::dedup::{random_uuid, ReportId, REPORT_ID_HEADER};
use crate::proto::{CheckRequest, CheckResponse, ReportRequest};

/// A `Report` payload: a message to encode, or bytes already encoded.
#[derive(Clone, Debug)]
pub enum ReportBody {
    /// Encoded when sent.
    Request(ReportRequest),
    /// Sent as they are.
    Bytes(Bytes),
}

impl From<ReportRequest> for ReportBody {
    fn from(r: ReportRequest) -> Self {
        ReportBody::Request(r)
    }
}

impl From<Bytes> for ReportBody {
    fn from(b: Bytes) -> Self {
        ReportBody::Bytes(b)
    }
}

impl From<Vec<u8>> for ReportBody {
    fn from(b: Vec<u8>) -> Self {
        ReportBody::Bytes(Bytes::from(b))
    }
}

/// A client of `istio.mixer.v1.Mixer`. Cheap to clone (clones share the connection, the
/// client id and the sequence counter).
///
/// Each client process picks a random id; [`MixerClient::next_report_id`] numbers requests.
/// To retry a report safely, send it again with the same [`ReportId`].
#[derive(Clone, Debug)]
pub struct MixerClient {
    grpc: Grpc<Channel>,
    client_id: Arc<str>,
    seq: Arc<AtomicU64>,
}

impl MixerClient {
    /// Connects to `addr` (`host:port`, or a URI such as `http://host:port`).
    pub async fn connect(addr: &str) -> Result<Self, tonic::transport::Error> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let channel = Endpoint::from_shared(uri)?.connect().await?;
        Ok(Self::new(channel))
    }

    /// A client over an existing channel (for custom timeouts, lazy connection, TLS).
    pub fn new(channel: Channel) -> Self {
        MixerClient {
            grpc: Grpc::new(channel).max_decoding_message_size(usize::MAX),
            client_id: Arc::from(random_uuid()),
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// This client's id, as sent in [`REPORT_ID_HEADER`].
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// A fresh id for a new request (numbers start at 1).
    pub fn next_report_id(&self) -> ReportId {
        ReportId {
            client: self.client_id.to_string(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    async fn ready(&self) -> Result<Grpc<Channel>, Status> {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("mixer connection not ready: {e}")))?;
        Ok(grpc)
    }

    /// Sends a `Report`. With `id`, the server counts it at most once however often it is
    /// sent; without, it is never deduplicated (as Istio's clients are not).
    pub async fn report(
        &self,
        body: impl Into<ReportBody>,
        id: Option<&ReportId>,
    ) -> Result<(), Status> {
        let bytes = match body.into() {
            ReportBody::Request(r) => Bytes::from(r.encode_to_vec()),
            ReportBody::Bytes(b) => b,
        };
        let mut request = Request::new(bytes);
        if let Some(id) = id {
            let value = MetadataValue::try_from(id.to_string())
                .map_err(|_| Status::invalid_argument(format!("report id '{id}' is not ASCII")))?;
            request.metadata_mut().insert(REPORT_ID_HEADER, value);
        }
        let mut grpc = self.ready().await?;
        grpc.unary(request, PathAndQuery::from_static(REPORT_PATH), BytesCodec)
            .await
            .map(drop)
    }

    /// Sends a `Check`.
    pub async fn check(&self, request: CheckRequest) -> Result<CheckResponse, Status> {
        let mut grpc = self.ready().await?;
        let codec = tonic_prost::ProstCodec::<CheckRequest, CheckResponse>::default();
        grpc.unary(
            Request::new(request),
            PathAndQuery::from_static(CHECK_PATH),
            codec,
        )
        .await
        .map(tonic::Response::into_inner)
    }
}
