//! The CSR API's messages as hand-written prost structs (no build script, no `protoc`), shaped
//! like Istio's `istio.v1.auth.IstioCertificateService` so that its clients can call it.
//!
//! ```text
//! service IstioCertificateService {
//!   rpc CreateCertificate(IstioCertificateRequest) returns (IstioCertificateResponse);
//! }
//! message IstioCertificateRequest { string csr = 1; int64 validity_duration = 3; }
//! message IstioCertificateResponse { repeated string cert_chain = 1; }
//! ```

/// `IstioCertificateRequest`: a PEM CSR and the lifetime asked for.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CertificateRequest {
    /// The PKCS#10 certificate signing request, PEM.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds; 0 asks for the CA's default. Capped by the CA.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
}

/// `IstioCertificateResponse`: the issued chain.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CertificateResponse {
    /// One PEM certificate per entry: the workload certificate first, then intermediates,
    /// the root last.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// The service's full name.
pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";
/// The `CreateCertificate` method's path.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";
