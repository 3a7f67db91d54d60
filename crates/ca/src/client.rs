//! The sidecar's side of the CSR API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use meshmeter_certs::rustls::pki_types::CertificateDer;
use meshmeter_certs::{certificates_from_pem, PendingKey, WorkloadCert, WorkloadCertError};
use tonic::client::Grpc;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use crate::proto::{CertificateRequest, CertificateResponse, CREATE_CERTIFICATE_PATH};

/// A certificate request that failed.
#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    /// The CA address is not usable.
    #[error("CA address '{addr}': {reason}")]
    Address {
        /// The address given.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The token is not valid metadata.
    #[error("the bootstrap token holds characters that cannot be sent as gRPC metadata")]
    BadToken,
    /// The CA could not be reached, or it refused.
    #[error("the CA answered {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The CA answered with something unusable.
    #[error("the CA's answer is unusable: {0}")]
    BadReply(String),
    /// The key or CSR could not be made, or the certificate does not fit the key.
    #[error(transparent)]
    Cert(#[from] WorkloadCertError),
}

/// A workload certificate as issued, with the root it chains to.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The key and chain, ready to install.
    pub cert: WorkloadCert,
    /// The chain's root.
    pub root: CertificateDer<'static>,
}

/// A client of the CA. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CaClient {
    grpc: Grpc<Channel>,
    token: MetadataValue<tonic::metadata::Ascii>,
    /// Read again before every request (see [`CaClient::reread_token_from`]).
    token_file: Option<Arc<PathBuf>>,
}

impl CaClient {
    /// A client of the CA at `addr` (`host:port` or `http://host:port`), connecting on first
    /// use; `token` authenticates it. Each call times out after 10 s.
    pub fn lazy(addr: &str, token: &str) -> Result<Self, CaClientError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|e| CaClientError::Address {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        let token = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| CaClientError::BadToken)?;
        Ok(CaClient {
            grpc: Grpc::new(channel),
            token,
            token_file: None,
        })
    }

    /// Like [`CaClient::lazy`], over TLS with `config` (see
    /// `meshmeter_certs::service_client_config`, expecting [`crate::ca_identity`]): the CA is
    /// verified before the token is sent.
    pub fn lazy_tls(
        addr: &str,
        token: &str,
        config: Arc<meshmeter_certs::rustls::ClientConfig>,
    ) -> Result<Self, CaClientError> {
        let uri = format!(
            "http://{}",
            addr.trim_start_matches("https://")
                .trim_start_matches("http://")
        );
        let endpoint = Endpoint::from_shared(uri).map_err(|e| CaClientError::Address {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect_with_connector_lazy(crate::tls::connector(config));
        let token = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .map_err(|_| CaClientError::BadToken)?;
        Ok(CaClient {
            grpc: Grpc::new(channel),
            token,
            token_file: None,
        })
    }

    /// Reads the token from `path` again before every request: Kubernetes replaces a
    /// projected service-account token in place before it expires, and a renewal must send
    /// the current one. While the file cannot be read (or holds no usable token), the token
    /// given at construction is sent.
    pub fn reread_token_from(mut self, path: PathBuf) -> Self {
        self.token_file = Some(Arc::new(path));
        self
    }

    fn current_token(&self) -> MetadataValue<tonic::metadata::Ascii> {
        let Some(path) = &self.token_file else {
            return self.token.clone();
        };
        // A blocking read: a token is a few hundred bytes on a local (tmpfs) volume, read
        // once per certificate renewal.
        std::fs::read_to_string(path.as_path())
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
            .and_then(|text| MetadataValue::try_from(format!("Bearer {text}")).ok())
            .unwrap_or_else(|| self.token.clone())
    }

    /// Sends one raw request.
    pub async fn create_certificate(
        &self,
        request: CertificateRequest,
    ) -> Result<CertificateResponse, CaClientError> {
        let status = |s: tonic::Status| CaClientError::Status {
            code: s.code(),
            message: s.message().to_owned(),
        };
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| status(tonic::Status::unavailable(e.to_string())))?;
        let mut request = Request::new(request);
        request
            .metadata_mut()
            .insert("authorization", self.current_token());
        let codec = tonic_prost::ProstCodec::<CertificateRequest, CertificateResponse>::default();
        grpc.unary(
            request,
            PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
            codec,
        )
        .await
        .map(tonic::Response::into_inner)
        .map_err(status)
    }

    /// Generates a key for `key`'s identity here, sends only its CSR, and pairs the key with
    /// the certificate that comes back. `ttl`: the lifetime to ask for (`None`: the CA's
    /// default).
    pub async fn issue(
        &self,
        key: PendingKey,
        ttl: Option<Duration>,
    ) -> Result<IssuedCert, CaClientError> {
        let csr = key.csr_der()?;
        let request = CertificateRequest {
            csr: csr_pem(&csr),
            validity_duration: ttl
                .map_or(0, |t| i64::try_from(t.as_secs().max(1)).unwrap_or(i64::MAX)),
        };
        let response = self.create_certificate(request).await?;
        let mut chain = Vec::new();
        for (i, pem) in response.cert_chain.iter().enumerate() {
            let mut certs = certificates_from_pem(pem, &format!("cert_chain[{i}]"))
                .map_err(|e| CaClientError::BadReply(e.to_string()))?;
            chain.append(&mut certs);
        }
        if chain.len() < 2 {
            return Err(CaClientError::BadReply(format!(
                "expected the workload certificate and the root, got {} certificate(s)",
                chain.len()
            )));
        }
        let root = chain
            .pop()
            .ok_or_else(|| CaClientError::BadReply("empty chain".into()))?;
        let cert = key.into_workload_cert(chain)?;
        Ok(IssuedCert { cert, root })
    }
}

fn csr_pem(der: &[u8]) -> String {
    certificates_block(der, "CERTIFICATE REQUEST")
}

fn certificates_block(der: &[u8], label: &str) -> String {
    // The certificate encoder writes CERTIFICATE blocks; only the label differs.
    let cert = meshmeter_certs::certificates_to_pem(&[CertificateDer::from(der)]);
    cert.replace("CERTIFICATE", label)
}
