//! The CSR service: authenticate the caller, sign its CSR for its own identity only.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use meshmeter_certs::rustls::pki_types::pem::PemObject;
use meshmeter_certs::rustls::pki_types::CertificateSigningRequestDer;
use meshmeter_certs::{certificates_to_pem, Authority, IssueError, SpiffeId};
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Code, Request, Response, Status};

use crate::auth::{AuthError, Authenticator};
use crate::proto::{
    CertificateRequest, CertificateResponse, CREATE_CERTIFICATE_PATH, SERVICE_NAME,
};

/// Workload certificate lifetime when the caller asks for none (Istio's default: 24 h).
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a request was refused, as a fixed label set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No or unknown token.
    Unauthenticated,
    /// A malformed CSR.
    BadRequest,
    /// The CSR asks for another identity.
    PermissionDenied,
    /// The token could not be checked, or signing failed.
    Unavailable,
}

impl Refusal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::BadRequest => "bad_request",
            Refusal::PermissionDenied => "permission_denied",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// The CA's counters (`meshmeter_ca_*`).
#[derive(Debug, Default)]
pub struct CaStats {
    /// Certificates issued.
    pub issued: AtomicU64,
    refused: [AtomicU64; 4],
}

const REFUSALS: [Refusal; 4] = [
    Refusal::Unauthenticated,
    Refusal::BadRequest,
    Refusal::PermissionDenied,
    Refusal::Unavailable,
];

impl CaStats {
    fn refuse(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests refused for `why`.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Ordering::Relaxed)
    }

    /// Appends the metrics in Prometheus' text format.
    pub fn render_prometheus(&self, out: &mut String) {
        let mut snapshot = meshmeter_selfmetrics::Snapshot::new();
        snapshot.counter(
            "meshmeter_ca_certificates_issued_total",
            "Workload certificates issued.",
            &[],
            self.issued.load(Ordering::Relaxed),
        );
        for why in REFUSALS {
            snapshot.counter(
                "meshmeter_ca_requests_refused_total",
                "Certificate requests refused, by reason.",
                &[("reason", why.as_str())],
                self.refused(why),
            );
        }
        snapshot.encode(out);
    }
}

/// Lifetimes the CA grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    /// When the caller asks for none.
    pub default: Duration,
    /// The most granted, whatever is asked.
    pub max: Duration,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        TtlPolicy {
            default: DEFAULT_WORKLOAD_TTL,
            max: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

struct Inner {
    authority: Authority,
    auth: Arc<dyn Authenticator>,
    ttl: TtlPolicy,
    stats: Arc<CaStats>,
}

/// The `IstioCertificateService` as a `tower::Service` (what tonic's generated code would
/// provide), to run with [`CaServer::serve`].
#[derive(Clone)]
pub struct CaServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaServer")
            .field("authority", &self.inner.authority)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

impl CaServer {
    /// A service issuing from `authority` to callers `auth` accepts.
    pub fn new(
        authority: Authority,
        auth: Arc<dyn Authenticator>,
        ttl: TtlPolicy,
        stats: Arc<CaStats>,
    ) -> Self {
        CaServer {
            inner: Arc::new(Inner {
                authority,
                auth,
                ttl,
                stats,
            }),
        }
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(self, incoming, shutdown)
            .await
    }
}

impl CaServer {
    /// Serves over TLS 1.3 with `config` (see `meshmeter_certs::service_server_config`, with
    /// a certificate for [`crate::ca_identity`]) until `shutdown` completes.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        config: Arc<meshmeter_certs::rustls::ServerConfig>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(self, crate::tls::incoming(listener, config), shutdown)
            .await
    }
}

impl NamedService for CaServer {
    const NAME: &'static str = SERVICE_NAME;
}

fn bearer(request: &Request<CertificateRequest>) -> Result<&str, AuthError> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or(AuthError::MissingToken)?;
    let text = value.to_str().map_err(|_| AuthError::MissingToken)?;
    let token = text
        .strip_prefix("Bearer ")
        .ok_or(AuthError::MissingToken)?
        .trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

impl Inner {
    async fn create(
        &self,
        request: Request<CertificateRequest>,
    ) -> Result<CertificateResponse, (Refusal, Status)> {
        let caller = match bearer(&request) {
            Ok(token) => self.auth.authenticate(token).await,
            Err(e) => Err(e),
        }
        .map_err(|e| match e {
            AuthError::Unavailable(_) => (Refusal::Unavailable, Status::unavailable(e.to_string())),
            AuthError::NotServiceAccount(_) => (
                Refusal::PermissionDenied,
                Status::permission_denied(e.to_string()),
            ),
            _ => (
                Refusal::Unauthenticated,
                Status::unauthenticated(e.to_string()),
            ),
        })?;
        let identity = SpiffeId::new(
            self.authority.trust_domain(),
            &caller.namespace,
            &caller.service_account,
        )
        .map_err(|e| {
            (
                Refusal::PermissionDenied,
                Status::permission_denied(e.to_string()),
            )
        })?;
        let body = request.into_inner();
        let csr =
            CertificateSigningRequestDer::from_pem_slice(body.csr.as_bytes()).map_err(|e| {
                (
                    Refusal::BadRequest,
                    Status::invalid_argument(format!("csr: not a PEM certificate request: {e}")),
                )
            })?;
        let ttl = match u64::try_from(body.validity_duration) {
            Ok(0) => self.ttl.default,
            Ok(secs) => Duration::from_secs(secs).min(self.ttl.max),
            Err(_) => {
                return Err((
                    Refusal::BadRequest,
                    Status::invalid_argument(format!(
                        "validity_duration: {} is negative",
                        body.validity_duration
                    )),
                ))
            }
        };
        let issued = self
            .authority
            .issue(csr.as_ref(), &identity, ttl)
            .map_err(|e| match e {
                IssueError::NameMismatch { .. } | IssueError::ForeignTrustDomain { .. } => (
                    Refusal::PermissionDenied,
                    Status::permission_denied(e.to_string()),
                ),
                IssueError::BadCsr(_) | IssueError::ZeroLifetime => {
                    (Refusal::BadRequest, Status::invalid_argument(e.to_string()))
                }
                IssueError::Sign(_) => (Refusal::Unavailable, Status::internal(e.to_string())),
            })?;
        let mut cert_chain: Vec<String> = issued
            .chain
            .iter()
            .map(|c| certificates_to_pem(std::slice::from_ref(c)))
            .collect();
        cert_chain.push(certificates_to_pem(std::slice::from_ref(&issued.root)));
        tracing::info!(identity = %identity, ttl = ?ttl, "certificate issued");
        Ok(CertificateResponse { cert_chain })
    }
}

struct CreateSvc(Arc<Inner>);

impl UnaryService<CertificateRequest> for CreateSvc {
    type Response = CertificateResponse;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<CertificateResponse>, Status>> + Send>>;

    fn call(&mut self, request: Request<CertificateRequest>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move {
            match inner.create(request).await {
                Ok(response) => {
                    inner.stats.issued.fetch_add(1, Ordering::Relaxed);
                    Ok(Response::new(response))
                }
                Err((why, status)) => {
                    inner.stats.refuse(why);
                    tracing::warn!(reason = why.as_str(), error = %status.message(), "certificate request refused");
                    Err(status)
                }
            }
        })
    }
}

impl<B> tower::Service<http::Request<B>> for CaServer
where
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
        if req.uri().path() == CREATE_CERTIFICATE_PATH {
            let svc = CreateSvc(Arc::clone(&self.inner));
            return Box::pin(async move {
                let codec =
                    tonic_prost::ProstCodec::<CertificateResponse, CertificateRequest>::default();
                // A CSR is a few hundred bytes; nothing legitimate comes near this.
                let mut grpc = Grpc::new(codec).max_decoding_message_size(64 * 1024);
                Ok(grpc.unary(svc, req).await)
            });
        }
        Box::pin(async move {
            let mut response = http::Response::new(Body::default());
            let headers = response.headers_mut();
            headers.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
            headers.insert(
                http::header::CONTENT_TYPE,
                tonic::metadata::GRPC_CONTENT_TYPE,
            );
            Ok(response)
        })
    }
}
