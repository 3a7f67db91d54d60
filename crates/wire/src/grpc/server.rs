use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::{ClientStreamingService, Grpc, NamedService, UnaryService};
use tonic::{Code, Request, Response, Status, Streaming};

use super::codec::BytesCodec;
use super::frames::{FrameWatch, Oversized};
use super::{CHECK_PATH, REPORT_PATH, SERVICE_NAME};
use crate::decode::DEFAULT_MAX_MESSAGE_BYTES;
use crate::dedup::{Deduplicator, ReportId, Verdict, REPORT_ID_HEADER};
use crate::proto::{CheckRequest, CheckResponse, Duration, PreconditionResult, RpcStatus};

/// How long a client may cache an OK `Check` answer (Mixer's default: 10 s).
pub const CHECK_VALID_DURATION: std::time::Duration = std::time::Duration::from_secs(10);
/// For how many calls a client may reuse an OK `Check` answer (Mixer's default: 200).
pub const CHECK_VALID_USE_COUNT: i32 = 200;

/// What a Mixer server does with calls.
///
/// `report` gets the raw `ReportRequest` bytes (decode them with [`crate::BagDecoder`]) and
/// the call's metadata. Deduplication by [`REPORT_ID_HEADER`] happens before it is called
/// (see [`MixerServer::with_dedup`]). `check` answers OK unless overridden.
pub trait MixerService: Send + Sync + 'static {
    /// Handles a `Report` call.
    fn report(
        &self,
        request: Bytes,
        metadata: &MetadataMap,
    ) -> impl Future<Output = Result<(), Status>> + Send;

    /// Handles a `Check` call: OK, valid for [`CHECK_VALID_DURATION`] and
    /// [`CHECK_VALID_USE_COUNT`] uses.
    fn check(
        &self,
        _request: CheckRequest,
        _metadata: &MetadataMap,
    ) -> impl Future<Output = Result<CheckResponse, Status>> + Send {
        std::future::ready(Ok(check_ok()))
    }
}

/// The `Check` answer that lets everything through.
pub fn check_ok() -> CheckResponse {
    CheckResponse {
        precondition: Some(PreconditionResult {
            status: Some(RpcStatus::default()),
            valid_duration: Some(Duration {
                seconds: CHECK_VALID_DURATION.as_secs() as i64,
                nanos: 0,
            }),
            valid_use_count: CHECK_VALID_USE_COUNT,
            referenced_attributes: Some(Default::default()),
        }),
        quotas: Default::default(),
    }
}

/// The `istio.mixer.v1.Mixer` service over a [`MixerService`], as tonic's generated code
/// would provide it: a `tower::Service` and `NamedService` to run with
/// [`MixerServer::serve`] or a `tonic::transport::Server`.
#[derive(Debug)]
pub struct MixerServer<S> {
    inner: Arc<S>,
    max_message_bytes: usize,
    dedup: Option<Arc<Deduplicator>>,
}

impl<S> Clone for MixerServer<S> {
    fn clone(&self) -> Self {
        MixerServer {
            inner: Arc::clone(&self.inner),
            max_message_bytes: self.max_message_bytes,
            dedup: self.dedup.clone(),
        }
    }
}

impl<S: MixerService> MixerServer<S> {
    /// Serves `service` with the default 4 MiB message limit and no deduplication.
    pub fn new(service: S) -> Self {
        Self::from_arc(Arc::new(service))
    }

    /// Serves a shared `service`.
    pub fn from_arc(service: Arc<S>) -> Self {
        MixerServer {
            inner: service,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            dedup: None,
        }
    }

    /// Refuses requests over `limit` bytes with RESOURCE_EXHAUSTED (before reading them).
    pub fn max_message_bytes(mut self, limit: usize) -> Self {
        self.max_message_bytes = limit;
        self
    }

    /// Serves on `listener` until `shutdown` completes, then waits for open calls to finish.
    ///
    /// (With tonic's `router` feature the service can also join other services through
    /// `Server::add_service`.)
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        // Replies are small: without TCP_NODELAY they wait for the client's delayed ACK (~40 ms).
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(self, incoming, shutdown)
            .await
    }

    /// Serves the connections `incoming` yields (already accepted; set `TCP_NODELAY` on
    /// them) until `shutdown` completes or `incoming` ends, then waits for open calls to
    /// finish. This is how a server spreads connections over several runtimes.
    pub async fn serve_connections<I>(
        self,
        incoming: I,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error>
    where
        I: futures_util::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>>,
    {
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(self, incoming, shutdown)
            .await
    }

    /// Acknowledges without calling the service any report whose [`REPORT_ID_HEADER`] the
    /// deduplicator has already seen counted.
    pub fn with_dedup(mut self, dedup: Arc<Deduplicator>) -> Self {
        self.dedup = Some(dedup);
        self
    }
}

impl<S> NamedService for MixerServer<S> {
    const NAME: &'static str = SERVICE_NAME;
}

struct ReportSvc<S> {
    inner: Arc<S>,
    dedup: Option<Arc<Deduplicator>>,
}

/// Reads the one message of a unary call: tonic's unary path would ignore a second one
/// silently, and its content would be lost without the client knowing.
async fn only_message(stream: &mut Streaming<Bytes>) -> Result<Bytes, Status> {
    let Some(first) = stream.message().await? else {
        return Err(Status::invalid_argument(
            "the Report call carries no message",
        ));
    };
    if stream.message().await?.is_some() {
        return Err(Status::invalid_argument(
            "Report is a unary call: it carries exactly one ReportRequest, a second arrived",
        ));
    }
    Ok(first)
}

// A client-streaming service only to see a second message; the call is unary for clients.
impl<S: MixerService> ClientStreamingService<Bytes> for ReportSvc<S> {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        let dedup = self.dedup.clone();
        Box::pin(async move {
            let (metadata, _, mut stream) = request.into_parts();
            let body = only_message(&mut stream).await?;
            let id = match (&dedup, metadata.get(REPORT_ID_HEADER)) {
                (Some(_), Some(v)) => {
                    let text = v.to_str().map_err(|_| {
                        Status::invalid_argument(format!("{REPORT_ID_HEADER} is not ASCII text"))
                    })?;
                    let id: ReportId = text.parse().map_err(|e| {
                        Status::invalid_argument(format!("{REPORT_ID_HEADER}: {e}"))
                    })?;
                    Some(id)
                }
                _ => None,
            };
            if let (Some(d), Some(id)) = (&dedup, &id) {
                match d.check_and_insert(id) {
                    Verdict::New => {}
                    Verdict::Duplicate | Verdict::TooOld => {
                        tracing::debug!(report_id = %id, "duplicate report acknowledged, not counted");
                        return Ok(Response::new(Bytes::new()));
                    }
                }
            }
            let result = inner.report(body, &metadata).await;
            if let (Err(_), Some(d), Some(id)) = (&result, &dedup, &id) {
                // Not counted: a retry must be.
                d.forget(id);
            }
            result.map(|()| Response::new(Bytes::new()))
        })
    }
}

struct CheckSvc<S>(Arc<S>);

impl<S: MixerService> UnaryService<CheckRequest> for CheckSvc<S> {
    type Response = CheckResponse;
    type Future = Pin<Box<dyn Future<Output = Result<Response<CheckResponse>, Status>> + Send>>;

    fn call(&mut self, request: Request<CheckRequest>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move {
            let (metadata, _, body) = request.into_parts();
            inner.check(body, &metadata).await.map(Response::new)
        })
    }
}

/// Replaces tonic's OUT_OF_RANGE for an oversized message with RESOURCE_EXHAUSTED and a
/// message that names the size and the limit. The size comes from the frame header the body
/// carried (`oversized`), never from tonic's text.
fn oversized_to_resource_exhausted(
    response: http::Response<Body>,
    oversized: &Oversized,
    limit: usize,
) -> http::Response<Body> {
    let out_of_range = response
        .headers()
        .get(Status::GRPC_STATUS)
        .is_some_and(|v| v.as_bytes() == b"11"); // Code::OutOfRange
    match oversized.get() {
        Some(size) if out_of_range => Status::resource_exhausted(format!(
            "message of {size} bytes exceeds the limit of {limit} bytes"
        ))
        .into_http(),
        _ => response,
    }
}

impl<S, B> tower::Service<http::Request<B>> for MixerServer<S>
where
    S: MixerService,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limit = self.max_message_bytes;
        match req.uri().path() {
            REPORT_PATH => {
                let svc = ReportSvc {
                    inner: Arc::clone(&self.inner),
                    dedup: self.dedup.clone(),
                };
                Box::pin(async move {
                    let mut grpc = Grpc::new(BytesCodec).max_decoding_message_size(limit);
                    let (req, oversized) = FrameWatch::request(req, limit);
                    let response = grpc.client_streaming(svc, req).await;
                    Ok(oversized_to_resource_exhausted(response, &oversized, limit))
                })
            }
            CHECK_PATH => {
                let svc = CheckSvc(Arc::clone(&self.inner));
                Box::pin(async move {
                    let codec = tonic_prost::ProstCodec::<CheckResponse, CheckRequest>::default();
                    let mut grpc = Grpc::new(codec).max_decoding_message_size(limit);
                    let (req, oversized) = FrameWatch::request(req, limit);
                    let response = grpc.unary(svc, req).await;
                    Ok(oversized_to_resource_exhausted(response, &oversized, limit))
                })
            }
            _ => Box::pin(async move {
                let mut response = http::Response::new(Body::default());
                let headers = response.headers_mut();
                headers.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            }),
        }
    }
}
